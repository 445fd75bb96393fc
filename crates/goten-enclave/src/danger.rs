//! Deliberate leaks for the boundary audit's negative test: compiled only with the test-only
//! feature `danger-test-expose`, never in a release build (`scripts/check-tcb.sh`).
//!
//! Where it sits: one switch read where the enclave forms its shares (`linear`). Turned on, E0
//! hands its host the quantized operand aQ itself as the share A0 (and E1 hands a zero A1), so
//! results stay correct and training runs on, but a host sees a plaintext activation: exactly
//! the kind of leak the audit of `goten-party/tests/boundary_audit.rs` must catch.

use std::sync::atomic::{AtomicBool, Ordering};

static LEAK_OPERAND: AtomicBool = AtomicBool::new(false);

/// Turns the operand leak on or off for every enclave of this process.
pub fn set_leak_operand(on: bool) {
    if on {
        eprintln!("DANGER: enclaves now leak a plaintext operand to their hosts (audit test)");
    }
    LEAK_OPERAND.store(on, Ordering::SeqCst);
}

pub(crate) fn leak_operand() -> bool {
    LEAK_OPERAND.load(Ordering::SeqCst)
}
