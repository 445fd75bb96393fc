//! Hardware evidence in the parties' key exchange: the [`EvidenceVerifier`] for
//! `Evidence::Hardware`.
//!
//! Where it sits: E0's and E1's hellos carry a quote (SGX, TDX) or report (SEV-SNP) whose 64
//! bytes of report data are `hardware_report_data` of the hello's report data (role and
//! ephemeral key); every peer verifies it offline with the cluster's collateral files, applies
//! the cluster's policy (pinned measurements, accepted TCB statuses) and checks the binding. The
//! verification time is taken once, when the verifier is made, so a run's peers are judged at
//! one instant.

use goten_enclave::attest::{AttestError, Evidence, EvidenceVerifier, hardware_report_data};

use crate::policy::Policy;
use crate::{AttestationError, TeeKind, verify_evidence};

/// Verifies hardware hellos of one TEE kind.
pub struct HardwareVerifier {
    kind: TeeKind,
    policy: Policy,
    /// The collateral files the cluster names (one per platform; a quote is checked against
    /// each until one verifies, since collateral is signed by the vendor, not by a party).
    collateral: Vec<Vec<u8>>,
    at: u64,
}

impl HardwareVerifier {
    /// A verifier for `kind` evidence under `policy`, with the cluster's collateral, at Unix
    /// time `at`. The policy must pin an identity.
    pub fn new(
        kind: TeeKind,
        policy: Policy,
        collateral: Vec<Vec<u8>>,
        at: u64,
    ) -> Result<Self, AttestationError> {
        if kind == TeeKind::Simulated {
            return Err(AttestationError::Unsupported(
                "simulated evidence has its own verifier".into(),
            ));
        }
        policy
            .validate(kind)
            .map_err(AttestationError::Unsupported)?;
        if collateral.is_empty() {
            return Err(AttestationError::Unsupported(format!(
                "{kind} evidence needs collateral files (verification never fetches them)"
            )));
        }
        Ok(HardwareVerifier {
            kind,
            policy,
            collateral,
            at,
        })
    }

    /// Verifies `quote` and checks that it binds `report_data` (the hello's 32 bytes).
    pub fn check(&self, quote: &[u8], report_data: &[u8; 32]) -> Result<(), AttestationError> {
        let mut first_error = None;
        for c in &self.collateral {
            match verify_evidence(self.kind, quote, c, self.at) {
                Ok(v) => return self.policy.check(&v, &hardware_report_data(report_data)),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        Err(first_error.expect("at least one collateral file"))
    }
}

impl EvidenceVerifier for HardwareVerifier {
    fn verify(&self, evidence: &Evidence, report_data: &[u8; 32]) -> Result<(), AttestError> {
        let Evidence::Hardware { tee, quote } = evidence else {
            return Err(AttestError::WrongKind(match self.kind {
                TeeKind::Sgx => "expected an SGX quote",
                TeeKind::Tdx => "expected a TDX quote",
                _ => "expected an SEV-SNP report",
            }));
        };
        if TeeKind::from_tag(*tee) != Some(self.kind) {
            return Err(AttestError::Hardware(format!(
                "expected {} evidence, got kind {tee}",
                self.kind
            )));
        }
        self.check(quote, report_data)
            .map_err(|e| AttestError::Hardware(e.to_string()))
    }
}
