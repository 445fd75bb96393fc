//! Attestation for goten: evidence that a party's enclave is genuine TEE hardware running the
//! expected program, verified **offline** against pinned measurements and an acceptance policy.
//!
//! Where it sits: between a party's hello (or a client's request for the service key) and the
//! decision to trust it. The key exchange ([`goten_enclave::keys`]) asks an
//! [`goten_enclave::attest::EvidenceVerifier`]; [`verifier::HardwareVerifier`] is the one for real
//! TEEs. Clients (data owner, model owner, `goten attestation verify`) call [`verify_evidence`]
//! directly.
//!
//! Backends:
//! - [`dcap`]: Intel SGX and TDX DCAP quotes with the `dcap-qvl` crate (chain to Intel's root,
//!   CRLs, TCB info and QE identity, TCB status and advisories);
//! - [`snp`]: AMD SEV-SNP attestation reports with the `sev` crate (ARK -> ASK -> VCEK, report
//!   signature, the VCEK's TCB against the report's, validity at the given time);
//! - simulation stays in `goten_enclave::attest` and says so on every run.
//!
//! Evidence generation on hardware ([`generate`]) uses the Linux configfs-tsm report interface
//! (TDX, SEV-SNP) and Gramine's `/dev/attestation` (SGX). Nothing here fetches collateral from the
//! network: a verifier that can be made to fetch can be made to wait, or be fed by whoever
//! controls the network.

pub mod dcap;
mod error;
pub mod generate;
mod kind;
pub mod measure;
pub mod policy;
pub mod snp;
mod verified;
pub mod verifier;

pub use error::AttestationError;
pub use kind::{TeeKind, format_time, parse_time, read_evidence};
pub use verified::{Measurements, Verified};

/// Verifies `evidence` (raw, or hex text as [`read_evidence`] reads it) of `kind` with its `collateral` (DCAP collateral JSON for `sgx`/`tdx`,
/// the VCEK certificate for `sev-snp`) at `at` (Unix seconds). Succeeds when the signatures, the
/// certificate chain and the collateral verify and the TCB is not revoked; whether the TCB status
/// and measurement are acceptable is the [`policy::Policy`]'s decision.
pub fn verify_evidence(
    kind: TeeKind,
    evidence: &[u8],
    collateral: &[u8],
    at: u64,
) -> Result<Verified, AttestationError> {
    let evidence = &read_evidence(evidence);
    match kind {
        TeeKind::Sgx | TeeKind::Tdx => dcap::verify(kind, evidence, collateral, at),
        TeeKind::SevSnp => snp::verify(evidence, collateral, at),
        TeeKind::Simulated => Err(AttestationError::Unsupported(
            "simulated evidence is verified by the simulated platform key inside a run, not offline"
                .into(),
        )),
    }
}
