//! The allocator's settings while the probes load. Loading parses the
//! kernel's BTF three times over (aya's loader makes a copy cgtrace cannot
//! use, then cgtrace's index, then aya's parse), allocating and freeing
//! about 20 MB; on a fresh process most of that time goes to first-touch
//! page faults. So, while loading:
//!
//! * freed memory stays in the heap for the next parse instead of going
//!   back to the kernel (large blocks are not mapped on their own, and the
//!   heap is not trimmed), so each page is faulted in once;
//! * the heap is on transparent huge pages where the kernel allows them
//!   (`madvise` mode, the usual default), so it faults 2 MB at a time.
//!
//! [`LoadingHeap::drop`] gives the free memory back, takes the huge-page
//! advice back (a heap that grows and shrinks each interval must not fault
//! 2 MB at a time), and sets the thresholds glibc's own adjustment would
//! have reached after freeing the raw BTF: setting them at all turns that
//! adjustment off, and its 128 KiB starting values would have every
//! interval's larger buffers mapped, faulted in and unmapped again.

/// How far the heap is grown, and advised, up front: more than loading
/// ever holds at once.
const HEAP_BYTES: usize = 40 << 20;
/// A transparent huge page.
const HUGE_PAGE: usize = 2 << 20;
/// Blocks below this come from the heap while loading (the raw BTF is 6 MB).
const LOADING_MMAP_THRESHOLD: libc::c_int = 80 << 20;
/// The heap is not trimmed while loading.
const LOADING_TRIM_THRESHOLD: libc::c_int = 160 << 20;
/// Once running: blocks from 8 MB up are mapped on their own, and the heap
/// is trimmed when 16 MB at its top are free (glibc's dynamic thresholds
/// after an 8 MB block is freed).
const RUNNING_MMAP_THRESHOLD: libc::c_int = 8 << 20;
const RUNNING_TRIM_THRESHOLD: libc::c_int = 16 << 20;

/// The loading settings, in force while this lives.
pub struct LoadingHeap {
    /// The huge-page-advised range of the heap (empty if none).
    advised: (usize, usize),
}

impl LoadingHeap {
    #[must_use]
    pub fn prepare() -> Self {
        let mut advised = (0, 0);
        // SAFETY: mallopt only sets allocator parameters; the block is
        // allocated, advised (an address range of our own heap) and freed
        // without being touched.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, LOADING_MMAP_THRESHOLD);
            libc::mallopt(libc::M_TRIM_THRESHOLD, LOADING_TRIM_THRESHOLD);
            let block = libc::malloc(HEAP_BYTES);
            if !block.is_null() {
                let start = (block as usize).next_multiple_of(HUGE_PAGE);
                let len = HEAP_BYTES - HUGE_PAGE;
                // Not every kernel has THP: without it this does nothing.
                if libc::madvise(start as *mut libc::c_void, len, libc::MADV_HUGEPAGE) == 0 {
                    advised = (start, len);
                }
                libc::free(block);
            }
        }
        Self { advised }
    }
}

impl Drop for LoadingHeap {
    fn drop(&mut self) {
        // SAFETY: as in `prepare`; malloc_trim only returns free memory, and
        // the advice is taken back from the same range it was given to.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, RUNNING_MMAP_THRESHOLD);
            libc::mallopt(libc::M_TRIM_THRESHOLD, RUNNING_TRIM_THRESHOLD);
            let (start, len) = self.advised;
            if len > 0 {
                let _ = libc::madvise(start as *mut libc::c_void, len, libc::MADV_NOHUGEPAGE);
            }
            libc::malloc_trim(0);
        }
    }
}
