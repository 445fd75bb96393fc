//! Attestation evidence: who is on the other end of a key exchange.
//!
//! Where it sits: the key exchange ([`crate::keys`]) binds each party's X25519 public key into
//! the `report_data` of its evidence, and accepts a peer only when an [`EvidenceVerifier`]
//! vouches for it. Hardware evidence (SGX DCAP quotes, TDX or SEV-SNP reports) will be another
//! `Evidence` variant verified through the same trait.
//!
//! **Simulation.** No machine here has TEE hardware. [`SimulatedAttester`] signs
//! `(measurement, report_data)` with an Ed25519 key that stands in for the platform's quoting
//! key, and [`SimulatedVerifier`] checks it. Whoever holds the simulated platform key can forge
//! evidence, so simulation proves the protocol's plumbing, not an enclave's integrity:
//! [`Evidence::is_simulated`] says so and every run reports it.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use thiserror::Error;

/// SHA-256 measurement of enclave code (MRENCLAVE-like). In simulation it is the hash of the
/// running program (`goten_attest::measure`), which this I/O-free crate does not compute.
pub type Measurement = [u8; 32];

/// Evidence a party presents in its hello.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Evidence {
    /// Simulated enclave attestation: a platform-key signature over measurement and report data.
    Simulated {
        /// Claimed measurement of the enclave code.
        measurement: Measurement,
        /// Data bound by the evidence (hash of role and public key).
        report_data: [u8; 32],
        /// Ed25519 signature by the simulated platform key.
        signature: [u8; 64],
    },
    /// Hardware evidence: an SGX or TDX DCAP quote or an SEV-SNP report whose 64 bytes of
    /// report data are [`hardware_report_data`] of the hello's report data. Verified by
    /// `goten_attest::verifier::HardwareVerifier` (this crate parses none of it).
    Hardware {
        /// The TEE kind's tag (`goten_attest::TeeKind::tag`).
        tee: u8,
        /// The raw quote or report.
        quote: Vec<u8>,
    },
    /// The dealer S2 (no TEE): a signature by its long-term identity key, pinned in the job.
    Dealer {
        /// Data bound by the signature.
        report_data: [u8; 32],
        /// Ed25519 signature by S2's identity key.
        signature: [u8; 64],
    },
}

impl Evidence {
    /// Whether this is simulated (not hardware) enclave evidence.
    pub fn is_simulated(&self) -> bool {
        matches!(self, Evidence::Simulated { .. })
    }

    /// The data the evidence binds, where it is visible without parsing a quote.
    pub fn report_data(&self) -> Option<&[u8; 32]> {
        match self {
            Evidence::Simulated { report_data, .. } | Evidence::Dealer { report_data, .. } => {
                Some(report_data)
            }
            Evidence::Hardware { .. } => None,
        }
    }
}

/// The 64 bytes a hardware quote's REPORTDATA must hold for a hello's 32 bytes of report data
/// (which already hash the role and the ephemeral key): those bytes, then their SHA-256 under
/// a label, so a quote made for goten cannot be mistaken for another protocol's.
pub fn hardware_report_data(report_data: &[u8; 32]) -> [u8; 64] {
    use sha2::{Digest, Sha256};
    let mut out = [0u8; 64];
    out[..32].copy_from_slice(report_data);
    let mut h = Sha256::new();
    h.update(b"goten/hardware-report-data/v1\0");
    h.update(report_data);
    out[32..].copy_from_slice(&h.finalize());
    out
}

/// Why evidence was refused.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum AttestError {
    /// Evidence of a kind this verifier does not accept.
    #[error("evidence of the wrong kind for this peer ({0})")]
    WrongKind(&'static str),
    /// Signature does not verify.
    #[error("evidence signature does not verify: forged, corrupted or signed by an unknown key")]
    BadSignature,
    /// Genuine evidence for other code.
    #[error("enclave measurement {found} is not the expected {expected}")]
    WrongMeasurement {
        /// Hex of what the evidence claims.
        found: String,
        /// Hex of what was expected.
        expected: String,
    },
    /// Evidence for another key or role (replayed or redirected).
    #[error("evidence binds different report data (replayed or not for this key)")]
    ReportDataMismatch,
    /// Hardware evidence refused by its verifier (signatures, chain, collateral, TCB policy,
    /// pinned measurement or report data).
    #[error("hardware evidence refused: {0}")]
    Hardware(String),
}

/// Verifies a peer's evidence for the report data it must bind.
pub trait EvidenceVerifier: Send + Sync {
    /// Ok when `evidence` is acceptable and binds exactly `report_data`.
    fn verify(&self, evidence: &Evidence, report_data: &[u8; 32]) -> Result<(), AttestError>;
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn signed_message(measurement: &Measurement, report_data: &[u8; 32]) -> Vec<u8> {
    [b"goten/sim-attest/v1".as_slice(), measurement, report_data].concat()
}

/// The simulated platform: signs evidence for enclaves it "hosts".
pub struct SimulatedAttester {
    key: SigningKey,
}

impl std::fmt::Debug for SimulatedAttester {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SimulatedAttester(<redacted>)")
    }
}

impl SimulatedAttester {
    /// A platform with the given (secret) signing key bytes.
    pub fn from_secret(bytes: [u8; 32]) -> Self {
        SimulatedAttester {
            key: SigningKey::from_bytes(&bytes),
        }
    }

    /// The public key verifiers must trust.
    pub fn public_key(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }

    /// Evidence that code with `measurement` bound `report_data`.
    pub fn attest(&self, measurement: Measurement, report_data: [u8; 32]) -> Evidence {
        let sig = self.key.sign(&signed_message(&measurement, &report_data));
        Evidence::Simulated {
            measurement,
            report_data,
            signature: sig.to_bytes(),
        }
    }
}

/// Accepts simulated evidence signed by one of the trusted platform keys for one measurement.
pub struct SimulatedVerifier {
    platforms: Vec<VerifyingKey>,
    expected: Measurement,
}

impl SimulatedVerifier {
    /// A verifier trusting `platform_key` and expecting `measurement`.
    pub fn new(platform_key: [u8; 32], measurement: Measurement) -> Result<Self, AttestError> {
        Self::any_of(&[platform_key], measurement)
    }

    /// A verifier trusting each of `platform_keys` (one per machine of a deployment whose
    /// simulated platforms each have their own key) and expecting `measurement`.
    pub fn any_of(
        platform_keys: &[[u8; 32]],
        measurement: Measurement,
    ) -> Result<Self, AttestError> {
        let platforms = platform_keys
            .iter()
            .map(|k| VerifyingKey::from_bytes(k).map_err(|_| AttestError::BadSignature))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(SimulatedVerifier {
            platforms,
            expected: measurement,
        })
    }
}

impl EvidenceVerifier for SimulatedVerifier {
    fn verify(&self, evidence: &Evidence, report_data: &[u8; 32]) -> Result<(), AttestError> {
        let Evidence::Simulated {
            measurement,
            report_data: rd,
            signature,
        } = evidence
        else {
            return Err(AttestError::WrongKind("expected enclave evidence"));
        };
        let msg = signed_message(measurement, rd);
        let sig = Signature::from_bytes(signature);
        if !self
            .platforms
            .iter()
            .any(|p| p.verify_strict(&msg, &sig).is_ok())
        {
            return Err(AttestError::BadSignature);
        }
        if *measurement != self.expected {
            return Err(AttestError::WrongMeasurement {
                found: hex(measurement),
                expected: hex(&self.expected),
            });
        }
        if rd != report_data {
            return Err(AttestError::ReportDataMismatch);
        }
        Ok(())
    }
}

/// S2's long-term identity: signs its hello.
pub struct DealerIdentity {
    key: SigningKey,
}

impl std::fmt::Debug for DealerIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DealerIdentity(<redacted>)")
    }
}

impl DealerIdentity {
    /// An identity from secret key bytes.
    pub fn from_secret(bytes: [u8; 32]) -> Self {
        DealerIdentity {
            key: SigningKey::from_bytes(&bytes),
        }
    }

    /// The public key the enclaves pin.
    pub fn public_key(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }

    /// Evidence binding `report_data`.
    pub fn sign(&self, report_data: [u8; 32]) -> Evidence {
        let sig = self
            .key
            .sign(&[b"goten/dealer/v1".as_slice(), &report_data].concat());
        Evidence::Dealer {
            report_data,
            signature: sig.to_bytes(),
        }
    }
}

/// Accepts the dealer whose identity key is pinned.
pub struct DealerVerifier {
    key: VerifyingKey,
}

impl DealerVerifier {
    /// A verifier pinning S2's public key.
    pub fn new(public_key: [u8; 32]) -> Result<Self, AttestError> {
        Ok(DealerVerifier {
            key: VerifyingKey::from_bytes(&public_key).map_err(|_| AttestError::BadSignature)?,
        })
    }
}

impl EvidenceVerifier for DealerVerifier {
    fn verify(&self, evidence: &Evidence, report_data: &[u8; 32]) -> Result<(), AttestError> {
        let Evidence::Dealer {
            report_data: rd,
            signature,
        } = evidence
        else {
            return Err(AttestError::WrongKind("expected the dealer's signature"));
        };
        self.key
            .verify_strict(
                &[b"goten/dealer/v1".as_slice(), rd].concat(),
                &Signature::from_bytes(signature),
            )
            .map_err(|_| AttestError::BadSignature)?;
        if rd != report_data {
            return Err(AttestError::ReportDataMismatch);
        }
        Ok(())
    }
}
