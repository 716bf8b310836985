//! What a program could not do: counted by cause, and told in words when
//! the probe log is on.
//!
//! Every program has the shape
//! `fn prog(ctx) -> u32 { finish(&ctx, "prog", try_prog(&ctx)) }`: the body
//! returns the first [`Failure`] that stops it, and [`finish`] counts it.
//! A failure a program degrades past (a field left unknown) goes to [`note`]
//! on the spot.
//!
//! The log (`cgtrace check --probe-log`) uses aya-log, whose level is a
//! read-only global: the collector sets it to 0 unless asked, the verifier
//! then knows every log call is dead and removes it, and the programs cost
//! what they cost without it.

use aya_ebpf::EbpfContext;
use aya_log_ebpf::warn;
use cgtrace_common::stats::{LossCounter, ReadChain};

use crate::{
    kernel::ReadError,
    maps::{READ_FAILURES, count},
};

/// Why a program stopped short: a chain of kernel fields that could not be
/// read (and why), a full ring buffer, or a full map. Plain integers, for
/// the reason [`ReadError`] gives.
#[derive(Clone, Copy)]
pub struct Failure {
    /// A [`ReadChain`] value, or [`RING_BUF_FULL`] / [`MAP_FULL`].
    what: u32,
    error: ReadError,
}

const RING_BUF_FULL: u32 = u32::MAX;
const MAP_FULL: u32 = u32::MAX - 1;

impl Failure {
    /// The ring buffer had no room for a record.
    pub const RING_BUF_FULL: Self = Self {
        what: RING_BUF_FULL,
        error: ReadError(0),
    };
    /// A map had no room for a new key.
    pub const MAP_FULL: Self = Self {
        what: MAP_FULL,
        error: ReadError(0),
    };

    /// `chain` could not be read.
    #[inline(always)]
    pub fn read(chain: ReadChain, error: ReadError) -> Self {
        Self {
            what: chain as u32,
            error,
        }
    }
}

/// Names the chain a failed read belongs to.
pub trait Chain<T> {
    fn chain(self, chain: ReadChain) -> Result<T, Failure>;
}

impl<T> Chain<T> for Result<T, ReadError> {
    #[inline(always)]
    fn chain(self, chain: ReadChain) -> Result<T, Failure> {
        self.map_err(|error| Failure::read(chain, error))
    }
}

/// A program's return value, once its failure (if any) is counted.
#[inline(always)]
pub fn finish<C: EbpfContext>(ctx: &C, program: &'static str, result: Result<(), Failure>) -> u32 {
    if let Err(failure) = result {
        note(ctx, program, failure);
    }
    0
}

/// Counts a failure by cause, and logs it when the probe log is on.
#[inline(always)]
pub fn note<C: EbpfContext>(ctx: &C, program: &'static str, failure: Failure) {
    match failure.what {
        RING_BUF_FULL => {
            count(LossCounter::RingBufFull);
            warn!(ctx, "{}: ring buffer full", program);
        }
        MAP_FULL => {
            count(LossCounter::MapFull);
            warn!(ctx, "{}: map full", program);
        }
        chain => {
            count_slot(chain);
            match failure.error {
                ReadError::ABSENT => warn!(
                    ctx,
                    "{}: {}: an offset BTF did not give",
                    program,
                    chain_name(chain)
                ),
                ReadError::NULL => warn!(
                    ctx,
                    "{}: {}: a null pointer on the way",
                    program,
                    chain_name(chain)
                ),
                ReadError(errno) => warn!(
                    ctx,
                    "{}: {}: read fault {}",
                    program,
                    chain_name(chain),
                    errno
                ),
            }
        }
    }
}

/// Counts a failed read of `chain` where no context is at hand to log it.
#[inline(always)]
pub fn count_read(chain: ReadChain) {
    count_slot(chain as u32);
}

#[inline(always)]
fn count_slot(chain: u32) {
    if let Some(slot) = READ_FAILURES.get_ptr_mut(chain) {
        // SAFETY: this CPU's slot of a per-CPU array, which only programs
        // on this CPU write, one at a time.
        unsafe { *slot += 1 };
    }
}

/// The chain's name, as the log prints it.
#[inline(always)]
fn chain_name(chain: u32) -> &'static str {
    let Some(chain) = ReadChain::from_u32(chain) else {
        return "?";
    };
    match chain {
        ReadChain::CgroupIdentity => "cgroup->kn->id / level / root->hierarchy_id",
        ReadChain::CgroupPath => "cgroup_mkdir path",
        ReadChain::CgroupParent => "cgroup->self.parent->cgroup",
        ReadChain::FolioOwner => "folio->memcg_data / flags",
        ReadChain::FolioFile => "folio->mapping->host (inode)",
        ReadChain::TaskMemcg => "task->cgroups->subsys[memory]",
        ReadChain::MemcgIdentity => "memcg->css.cgroup",
        ReadChain::ReclaimStat => "reclaim_stat nr_dirty / nr_writeback",
        ReadChain::OomVictim => "OOM victim task (pid, comm, cred, signal)",
        ReadChain::OomVictimMm => "OOM victim mm (total_vm, rss, pgtables)",
        ReadChain::OomControl => "oom_control and its memcg's page counter",
        ReadChain::RunQueue => "task->se.cfs_rq throttle state",
        ReadChain::RunQueueGroup => "cfs_rq->tg->css",
    }
}

/// The value, or `default` with the failure noted: for a field a program
/// goes on without.
#[inline(always)]
pub fn or_note<C: EbpfContext, T>(
    ctx: &C,
    program: &'static str,
    result: Result<T, Failure>,
    default: T,
) -> T {
    match result {
        Ok(value) => value,
        Err(failure) => {
            note(ctx, program, failure);
            default
        }
    }
}
