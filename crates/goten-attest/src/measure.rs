//! The simulated measurement: a hash of the program as built.
//!
//! Where it sits: without TEE hardware nothing measures the enclave's code, so the simulation
//! measures the executable that runs it (the `goten` binary holds the enclave program; its
//! enclave processes are the same file). Any change to the code, the dependencies or the build
//! settings changes it, so peers built from other code are refused, and `goten attestation
//! measure` prints it for pinning in the cluster file. It proves nothing against a host that
//! lies about it: that is what hardware measurement (MRENCLAVE, MRTD, SNP MEASUREMENT) adds.

use std::sync::OnceLock;

use sha2::{Digest, Sha256};

use crate::AttestationError;

/// Domain separation for the simulated measurement (version 2: a hash of the program).
const LABEL: &[u8] = b"goten/simulated-measurement/v2\0";

/// The measurement of a program image.
pub fn measure_bytes(program: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(LABEL);
    h.update(program);
    h.finalize().into()
}

/// The measurement of the running executable, computed once per process.
pub fn program_measurement() -> Result<[u8; 32], AttestationError> {
    static CACHE: OnceLock<Result<[u8; 32], AttestationError>> = OnceLock::new();
    CACHE
        .get_or_init(|| {
            let exe = std::env::current_exe().map_err(|e| {
                AttestationError::Generate(format!("cannot locate the running program: {e}"))
            })?;
            let bytes = std::fs::read(&exe).map_err(|e| {
                AttestationError::Generate(format!(
                    "cannot read the running program {} to measure it: {e}",
                    exe.display()
                ))
            })?;
            Ok(measure_bytes(&bytes))
        })
        .clone()
}
