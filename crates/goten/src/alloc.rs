//! How the process's allocator (glibc's malloc) treats large blocks: kept for reuse.
//!
//! Where it sits: under everything in the `goten` binary (enclave programs, hosts, devices,
//! S2). Training and serving repeat the same large allocations at every op (operand shares,
//! masks, products, tens of MiB each at batch 64). By default glibc serves every block above
//! its mmap threshold (at most 32 MiB) with a fresh `mmap` and unmaps it on free, so each op
//! faulted in and zeroed the same pages again: about 11 % of all CPU time while serving VGG-11
//! (`perf`, docs/PERFORMANCE.md). [`configure`] makes glibc carve large blocks from its heaps
//! and keep freed memory there (no `mmap` per block, no trimming), so a step reuses the last
//! step's pages; the resident size stays near a step's peak instead of falling between steps.
//! (A thread other than the main one still maps a block above 64 MiB, the most one of glibc's
//! thread heaps holds; at VGG-11's batch 64 the largest buffers are 32 MiB.)
//! An operator who sets `glibc.malloc.*` tunables in `GLIBC_TUNABLES` keeps them instead.
#![allow(unsafe_code)]

/// Applies the settings (first thing in `main`); returns whether glibc accepted them (always
/// false on other C libraries, where nothing is changed).
pub fn configure() -> bool {
    if std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains("glibc.malloc.")) {
        return false;
    }
    set()
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn set() -> bool {
    // SAFETY: mallopt takes the allocator's lock and only changes two tuning parameters; it
    // is safe to call at any time. M_MMAP_MAX 0: no block is served by its own mapping;
    // M_TRIM_THRESHOLD at its maximum: freed memory at a heap's top is kept.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0) == 1
            && libc::mallopt(libc::M_TRIM_THRESHOLD, libc::c_int::MAX) == 1
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set() -> bool {
    false
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    use super::*;

    /// Blocks glibc serves by their own mapping right now (mallinfo2's `hblks`).
    fn mapped_blocks() -> usize {
        // SAFETY: mallinfo2 only reads the allocator's statistics.
        unsafe { libc::mallinfo2() }.hblks
    }

    #[test]
    fn large_blocks_come_from_the_heap_after_configure() {
        if std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains("glibc.malloc.")) {
            return;
        }
        // Above the largest mmap threshold glibc allows (32 MiB), below the size of a thread
        // arena's heap (64 MiB), beyond which a thread's block is still mapped on its own.
        let big = 40 << 20;
        // black_box: the optimiser may remove an allocation nothing reads.
        let probe = std::hint::black_box(vec![1u8; big]);
        let before = mapped_blocks();
        assert!(before >= 1, "a 40 MiB block is mapped by default");
        drop(probe);
        assert!(configure(), "glibc accepts the settings");
        let v = std::hint::black_box(vec![1u8; big]);
        assert_eq!(
            mapped_blocks(),
            before - 1,
            "a 40 MiB block still got its own mapping"
        );
        drop(v);
    }
}
