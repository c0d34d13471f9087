//! The agent's heap: kept while traffic flows, handed back after a burst.
//!
//! Recording allocates and frees large blocks all the time (RocksDB memtable arenas,
//! write batches, frame payloads, per-connection buffers). By default glibc unmaps and
//! trims them at once, so each new block starts as fresh pages that the kernel must
//! fault in and zero (and, in VMs that report free memory to the host, that the host
//! must back again): [`keep_freed_memory`] makes glibc keep them. The price is that a
//! burst of connections would keep its memory forever after it closed;
//! [`BurstTrim`] decides when the open connections have fallen far enough from
//! their peak that the heap is handed back ([`trim`]).

/// Blocks up to the largest memtable arena block come from the heap, not mmap.
const MMAP_THRESHOLD: libc::c_int = 32 << 20;
/// Free memory at the top of a heap is returned only beyond this.
const TRIM_THRESHOLD: libc::c_int = 256 << 20;

/// Keep freed heap memory in the process. Call before any thread starts.
pub fn keep_freed_memory() {
    // SAFETY: mallopt only changes allocator parameters; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
    }
}

/// Hands free heap memory of every arena back to the kernel (glibc `malloc_trim`:
/// the tops of the heaps, and the whole pages inside free chunks).
pub fn trim() {
    // SAFETY: malloc_trim has no preconditions; it takes the arenas' locks itself.
    unsafe { libc::malloc_trim(0) };
}

/// Decides from the count of open descriptors (two per relayed connection) when a
/// burst has closed: the count fell to half its peak or less, and by at least
/// [`BurstTrim::MIN_DROP`]. Sans-IO: counts in, decisions out.
#[derive(Debug, Default)]
pub struct BurstTrim {
    peak: u64,
}

impl BurstTrim {
    /// Fewer closed descriptors than this (a few hundred connections) are not worth
    /// a trim: the write path would fault the pages in again.
    pub const MIN_DROP: u64 = 512;

    /// `open` descriptors now; true when the heap should be trimmed now.
    pub fn observe(&mut self, open: u64) -> bool {
        self.peak = self.peak.max(open);
        let burst_closed = self.peak - open >= Self::MIN_DROP && open <= self.peak / 2;
        if burst_closed {
            // The next burst is measured from here.
            self.peak = open;
        }
        burst_closed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closed_burst_trims_once() {
        let mut t = BurstTrim::default();
        assert!(!t.observe(80));
        assert!(!t.observe(16_000));
        // Falling, but still above half the peak.
        assert!(!t.observe(9_000));
        assert!(t.observe(8_000));
        // Measured from the trim now: not again for the next few hundred closing...
        assert!(!t.observe(7_000));
        // ...but once the rest of the burst has closed too.
        assert!(t.observe(80));
        assert!(!t.observe(80));
    }

    #[test]
    fn small_swings_never_trim() {
        let mut t = BurstTrim::default();
        for _ in 0..10 {
            assert!(!t.observe(600));
            assert!(!t.observe(100));
        }
    }

    #[test]
    fn a_second_burst_trims_again() {
        let mut t = BurstTrim::default();
        t.observe(4_000);
        assert!(t.observe(100));
        t.observe(3_000);
        assert!(t.observe(90));
    }

    #[test]
    fn trimming_is_safe_at_any_time() {
        let held: Vec<Vec<u8>> = (0..64).map(|i| vec![i as u8; 64 << 10]).collect();
        drop(held);
        trim();
    }
}
