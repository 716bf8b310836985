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
//! [`LoadingHeap::drop`] gives the free memory back and restores the usual
//! settings.

/// How far the heap is grown, and advised, up front: more than loading
/// ever holds at once.
const HEAP_BYTES: usize = 40 << 20;
/// Blocks below this come from the heap while loading (the raw BTF is 6 MB).
const LOADING_MMAP_THRESHOLD: libc::c_int = 80 << 20;
/// The heap is not trimmed while loading.
const LOADING_TRIM_THRESHOLD: libc::c_int = 160 << 20;
/// A transparent huge page.
const HUGE_PAGE: usize = 2 << 20;
/// glibc's defaults for both thresholds.
const DEFAULT_THRESHOLD: libc::c_int = 128 * 1024;

/// The loading settings, in force while this lives.
pub struct LoadingHeap(());

impl LoadingHeap {
    #[must_use]
    pub fn prepare() -> Self {
        // SAFETY: mallopt only sets allocator parameters; the block is
        // allocated, advised (an address range of our own heap) and freed
        // without being touched.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, LOADING_MMAP_THRESHOLD);
            libc::mallopt(libc::M_TRIM_THRESHOLD, LOADING_TRIM_THRESHOLD);
            let block = libc::malloc(HEAP_BYTES);
            if !block.is_null() {
                let start = (block as usize).next_multiple_of(HUGE_PAGE);
                // Not every kernel has THP: without it this does nothing.
                let _ = libc::madvise(
                    start as *mut libc::c_void,
                    HEAP_BYTES - HUGE_PAGE,
                    libc::MADV_HUGEPAGE,
                );
                libc::free(block);
            }
        }
        Self(())
    }
}

impl Drop for LoadingHeap {
    fn drop(&mut self) {
        // SAFETY: as in `prepare`; malloc_trim only returns free memory.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, DEFAULT_THRESHOLD);
            libc::mallopt(libc::M_TRIM_THRESHOLD, DEFAULT_THRESHOLD);
            libc::malloc_trim(0);
        }
    }
}
