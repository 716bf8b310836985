//! Exists so that `cgtrace` can name this crate as a build-dependency, which
//! makes cargo rebuild the eBPF object whenever these sources change.
#![no_std]
