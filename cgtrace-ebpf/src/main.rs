//! cgtrace's eBPF programs: one module per probe family.
//!
//! Every program is `fn prog(ctx) -> u32 { finish(&ctx, "prog", try_prog(&ctx)) }`
//! (see [`failure`]): what it could not do is counted by cause, never
//! dropped silently.
#![no_std]
#![no_main]

mod cgroups;
mod charges;
mod failure;
mod filter;
mod floor;
mod kernel;
mod maps;
mod oom;
mod pagecache;
mod throttle;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // SAFETY: the verifier rejects any program that could reach this, so it
    // is never executed; `unreachable_unchecked` keeps it out of the object.
    unsafe { core::hint::unreachable_unchecked() }
}

/// GPL-compatible: `bpf_probe_read_kernel` and BTF tracepoints require it.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
