//! The process's memory allocator: mimalloc, told to keep freed memory for reuse.
//!
//! Where it sits: under everything in the `goten` binary (enclave programs, hosts, devices,
//! S2). Training and serving repeat the same large allocations every step (operand shares,
//! masks, products, im2col buffers, tens of MiB each at batch 64). glibc's malloc serves blocks
//! above 32 MiB with fresh `mmap`s and returns them on free, so every step paid for faulting
//! and zeroing those pages again: about 11 % of all CPU time while serving VGG-11
//! (`perf`, docs/PERFORMANCE.md). mimalloc with purging off keeps freed pages mapped and
//! reuses them; the resident size stays at the peak of a step instead of falling between
//! steps. `MIMALLOC_PURGE_DELAY` (milliseconds, `-1` never) overrides the choice, as do
//! mimalloc's other `MIMALLOC_*` variables.
#![allow(unsafe_code)]

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's option index of `purge_delay` (`mi_option_purge_delay` in mimalloc.h, v3).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Turns purging off unless the environment already chose a delay. Called first thing in
/// `main`, before any thread exists (mimalloc's option setters are not thread safe).
pub fn configure() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: a plain FFI setter of an integer option, called while the process has one
        // thread; any value is valid for this option (-1: never purge).
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn purge_delay() -> std::os::raw::c_long {
        // SAFETY: a plain FFI getter of an integer option.
        unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) }
    }

    /// Index 15 is `purge_delay` (its default, 1000 ms in mimalloc v3, identifies it; a new
    /// mimalloc that renumbers its options fails here), and `configure` turns purging off.
    #[test]
    fn configure_turns_purging_off() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            return;
        }
        assert_eq!(
            purge_delay(),
            1000,
            "option 15 is not mimalloc's purge_delay"
        );
        configure();
        assert_eq!(purge_delay(), -1);
    }
}
