//! Why evidence was refused, naming the check that failed.

use thiserror::Error;

/// Why a piece of evidence does not verify or is not acceptable.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum AttestationError {
    /// The evidence could not be parsed (truncated, wrong format, not this TEE's kind).
    #[error("malformed evidence: {0}")]
    Malformed(String),
    /// The collateral could not be parsed.
    #[error("malformed collateral: {0}")]
    Collateral(String),
    /// A signature, certificate chain, CRL or the collateral's validity window failed.
    #[error("evidence does not verify: {0}")]
    Invalid(String),
    /// The platform's TCB is revoked.
    #[error("the platform's TCB is revoked")]
    Revoked,
    /// Genuine evidence, but its TCB status is not accepted by the policy.
    #[error(
        "TCB status {status} (advisories: {advisories}) is not accepted by the policy ({accepted})"
    )]
    TcbNotAccepted {
        /// The status found.
        status: String,
        /// Its advisories, comma-separated.
        advisories: String,
        /// What the policy accepts.
        accepted: String,
    },
    /// Genuine evidence for other code or another configuration.
    #[error("{field} is {found}, but the cluster pins {expected}")]
    WrongMeasurement {
        /// Which field (MRENCLAVE, MRTD, RTMR2, MEASUREMENT, ...).
        field: String,
        /// Hex of what the evidence says.
        found: String,
        /// Hex (or bound) of what is pinned.
        expected: String,
    },
    /// A debug enclave or guest, which its host can read.
    #[error("the evidence is from a debug {0}: its host can read its memory; refused")]
    Debug(&'static str),
    /// The evidence binds other report data (replayed, or for another key or nonce).
    #[error("the evidence binds different report data (replayed, or for another key or nonce)")]
    ReportData,
    /// Evidence of another TEE kind than the one expected.
    #[error("expected {expected} evidence, got {found}")]
    WrongKind {
        /// Expected kind.
        expected: String,
        /// Found kind.
        found: String,
    },
    /// The operation is not available for this kind.
    #[error("{0}")]
    Unsupported(String),
    /// Generating evidence on this machine failed (no TEE interface, or it misbehaved).
    #[error("{0}")]
    Generate(String),
}
