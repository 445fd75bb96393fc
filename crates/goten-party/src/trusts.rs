//! The key material a party holds: its own attestation secret (or, in one process, all of
//! them), the public keys and measurement it trusts, the session's nonces, and with `--tee` the
//! hardware attestation settings.
//!
//! Where it sits: session setup, before the key exchange in [`crate::cluster`]. [`Trusts`]
//! produces this party's evidence ([`Trusts::evidence`]) and the verifiers of the others'
//! ([`Trusts::trust`]); the deterministic helpers exist for tests only.

use std::sync::Arc;

use goten_enclave::Role;
use goten_enclave::attest::{
    DealerIdentity, DealerVerifier, Measurement, SimulatedAttester, SimulatedVerifier,
};
use goten_enclave::keys::{KeyError, KeyExchange, Trust};

use crate::cluster::{PartyError, missing_secret};

/// Key material of a simulated deployment, as one party holds it: its own secrets (a platform
/// key for S0/S1, the identity key for S2) and the public keys it trusts. A local run holds all
/// of them; a process of a separate-machines deployment only its own ([`Trusts::for_party`]).
pub struct Trusts {
    /// Platform keys that sign E0's and E1's evidence (`None`: not held by this process).
    pub platforms: [Option<Arc<SimulatedAttester>>; 2],
    /// Platform public keys every party trusts.
    pub trusted_platforms: Vec<[u8; 32]>,
    /// Measurement every party expects.
    pub expected_measurement: Measurement,
    /// Measurement E0 and E1 actually report.
    pub measurements: [Measurement; 2],
    /// S2's identity key (`None`: not held by this process).
    pub dealer: Option<Arc<DealerIdentity>>,
    /// S2 public key pinned by the others.
    pub pinned_dealer: [u8; 32],
    /// Derive the ephemeral X25519 keys from this seed instead of fresh entropy: reproducible
    /// masks for tests and benchmarks only. Never set in a deployment.
    pub danger_fixed_ephemeral: Option<[u8; 32]>,
    /// Hardware attestation (`--tee sgx|tdx|sev-snp`): E0 and E1 present quotes or reports
    /// from the TEE instead of simulated evidence, verified under the cluster's policy.
    pub hardware: Option<Arc<HardwareSetup>>,
    /// This session's nonces of S0, S1 and S2, bound into every hello (exchanged in the job
    /// handshake of a deployment; zero within one process).
    pub session_nonces: [[u8; 32]; 3],
}

/// What hardware attestation needs: the TEE kind, the cluster's policy and the collateral
/// files it names.
pub struct HardwareSetup {
    /// The TEE kind of E0 and E1.
    pub kind: goten_attest::TeeKind,
    /// Pinned measurements and accepted TCB statuses.
    pub policy: goten_attest::policy::Policy,
    /// Collateral (DCAP JSON, or VCEK certificates), one per platform.
    pub collateral: Vec<Vec<u8>>,
}

impl HardwareSetup {
    /// The verifier of this policy over this collateral, checked at the current time.
    pub fn verifier(
        &self,
    ) -> Result<goten_attest::verifier::HardwareVerifier, goten_attest::AttestationError> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        goten_attest::verifier::HardwareVerifier::new(
            self.kind,
            self.policy.clone(),
            self.collateral.clone(),
            now,
        )
    }
}

fn random32() -> [u8; 32] {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).expect("OS entropy");
    b
}

/// Secrets that derive from a test seed (see [`Trusts::danger_deterministic`]).
fn danger_derive(seed: u64, label: &str) -> [u8; 32] {
    let mut s = [0u8; 32];
    s[..8].copy_from_slice(&seed.to_le_bytes());
    goten_field::prg::danger_derive_public(s, label.as_bytes())
}

/// The attestation secret of `role` that [`Trusts::danger_deterministic`] uses: the platform key
/// for S0 and S1, the identity key for S2. Tests only.
pub fn danger_deterministic_secret(seed: u64, role: Role) -> [u8; 32] {
    // One per role, as separate machines have: a cluster file refuses one key for two roles.
    danger_derive(
        seed,
        match role {
            Role::S0 => "platform",
            Role::S1 => "platform-s1",
            Role::S2 => "dealer",
        },
    )
}

/// The ephemeral-key seed that [`Trusts::danger_deterministic`] uses. Tests only.
pub fn danger_deterministic_ephemeral(seed: u64) -> [u8; 32] {
    danger_derive(seed, "ephemeral")
}

/// The simulated measurement of the enclave program in a run whose parties all live in this
/// process (or its enclave processes, which run this same executable): the hash of the running
/// program (`goten attestation measure`). Should the executable be unreadable, every party of
/// such a run still computes the same stand-in, and the run says so.
pub fn local_measurement() -> Measurement {
    goten_attest::measure::program_measurement().unwrap_or_else(|e| {
        eprintln!("warning: {e}; the simulated enclave measurement falls back to a fixed label");
        goten_attest::measure::measure_bytes(b"goten: unmeasured program")
    })
}

/// The public key of an attestation secret of `role` (what a cluster file lists).
pub fn attestation_public_key(role: Role, secret: [u8; 32]) -> [u8; 32] {
    if role == Role::S2 {
        DealerIdentity::from_secret(secret).public_key()
    } else {
        SimulatedAttester::from_secret(secret).public_key()
    }
}

impl Trusts {
    /// A consistent simulated deployment from the platform keys of E0's and E1's machines, S2's
    /// identity key and, for tests only, a seed for the ephemeral keys.
    fn from_secrets(
        platforms: [[u8; 32]; 2],
        dealer: [u8; 32],
        ephemeral: Option<[u8; 32]>,
    ) -> Self {
        let platforms = platforms.map(|k| Arc::new(SimulatedAttester::from_secret(k)));
        let dealer = Arc::new(DealerIdentity::from_secret(dealer));
        Trusts {
            trusted_platforms: platforms.iter().map(|p| p.public_key()).collect(),
            platforms: platforms.map(Some),
            expected_measurement: local_measurement(),
            measurements: [local_measurement(); 2],
            pinned_dealer: dealer.public_key(),
            dealer: Some(dealer),
            danger_fixed_ephemeral: ephemeral,
            hardware: None,
            session_nonces: [[0; 32]; 3],
        }
    }

    /// A consistent simulated deployment with fresh random keys.
    pub fn generate() -> Self {
        let platform = random32();
        Self::from_secrets([platform; 2], random32(), None)
    }

    /// A deployment whose keys (platform, dealer identity and ephemeral keys) all derive from
    /// `seed`, the same as a cluster made by `goten keygen --danger-deterministic-keys`: every
    /// run with the same seed, in one process or over TCP, uses the same masks. Tests only.
    pub fn danger_deterministic(seed: u64) -> Self {
        Self::from_secrets(
            [
                danger_deterministic_secret(seed, Role::S0),
                danger_deterministic_secret(seed, Role::S1),
            ],
            danger_deterministic_secret(seed, Role::S2),
            Some(danger_deterministic_ephemeral(seed)),
        )
    }

    /// What `role` holds in a deployment on separate machines: its own attestation secret
    /// and the public keys of the others' (`public[i]` is party i's; S0's and S1's are trusted
    /// platform keys, S2's is the pinned dealer identity), the measurement its own enclave
    /// reports (`own`) and the one the cluster pins (`expected`).
    pub fn for_party(
        role: Role,
        secret: [u8; 32],
        public: [[u8; 32]; 3],
        measurement: (Measurement, Measurement),
        danger_fixed_ephemeral: Option<[u8; 32]>,
    ) -> Self {
        let (own, expected) = measurement;
        let mut platforms = [None, None];
        let mut dealer = None;
        if role == Role::S2 {
            dealer = Some(Arc::new(DealerIdentity::from_secret(secret)));
        } else {
            platforms[role.index()] = Some(Arc::new(SimulatedAttester::from_secret(secret)));
        }
        Trusts {
            platforms,
            trusted_platforms: vec![public[0], public[1]],
            expected_measurement: expected,
            measurements: [own; 2],
            dealer,
            pinned_dealer: public[2],
            danger_fixed_ephemeral,
            hardware: None,
            session_nonces: [[0; 32]; 3],
        }
    }

    /// The simulated platform keys this party trusts (what a client of a simulated local
    /// cluster checks evidence against; meaningless as a root of trust, see DESIGN.md).
    pub fn simulated_platform_keys(&self) -> &[[u8; 32]] {
        &self.trusted_platforms
    }

    /// The enclave measurement this party expects.
    pub fn expected_measurement(&self) -> Measurement {
        self.expected_measurement
    }

    /// Tests only: the fixed ephemeral secret of `role` (`None`: fresh entropy).
    pub(crate) fn danger_ephemeral_secret(&self, role: Role) -> Option<[u8; 32]> {
        self.danger_fixed_ephemeral
            .map(|seed| goten_field::prg::danger_derive_public(seed, &[role.index() as u8]))
    }

    pub(crate) fn key_exchange(&self, role: Role) -> Result<KeyExchange, KeyError> {
        let kx = match self.danger_ephemeral_secret(role) {
            None => KeyExchange::new(role)?,
            Some(k) => KeyExchange::from_secret(role, k),
        };
        Ok(kx.with_session_nonces(self.session_nonces))
    }

    pub(crate) fn trust(&self) -> Result<Trust, PartyError> {
        let mut trust = trust_from(
            &self.trusted_platforms,
            self.expected_measurement,
            self.pinned_dealer,
        )?;
        if let Some(h) = &self.hardware {
            let v = h.verifier().map_err(|e| {
                PartyError::Enclave(goten_enclave::EnclaveError::Config(e.to_string()))
            })?;
            trust.enclave = Box::new(v);
        }
        Ok(trust)
    }

    /// The evidence `role`'s enclave presents for `report_data`: a quote or report from the TEE
    /// with `--tee`, else the simulated platform's signature.
    pub fn evidence(
        &self,
        role: Role,
        report_data: [u8; 32],
    ) -> Result<goten_enclave::attest::Evidence, PartyError> {
        let i = role.index();
        if let Some(h) = &self.hardware {
            let rd = goten_enclave::attest::hardware_report_data(&report_data);
            let quote = goten_attest::generate::generate(h.kind, &rd).map_err(|e| {
                PartyError::Enclave(goten_enclave::EnclaveError::Config(e.to_string()))
            })?;
            return Ok(goten_enclave::attest::Evidence::Hardware {
                tee: h.kind.tag(),
                quote,
            });
        }
        let platform = self.platforms[i]
            .as_ref()
            .ok_or_else(|| missing_secret(role, "platform"))?;
        Ok(platform.attest(self.measurements[i], report_data))
    }
}

/// The verifiers of a party that trusts these platform keys, this measurement and this
/// dealer identity (also what an enclave process builds from its start-up parameters).
pub(crate) fn trust_from(
    trusted_platforms: &[[u8; 32]],
    expected_measurement: Measurement,
    pinned_dealer: [u8; 32],
) -> Result<Trust, PartyError> {
    let enclave =
        SimulatedVerifier::any_of(trusted_platforms, expected_measurement).map_err(|e| {
            KeyError::Attest {
                peer: Role::S0,
                source: e,
            }
        })?;
    let dealer = DealerVerifier::new(pinned_dealer).map_err(|e| KeyError::Attest {
        peer: Role::S2,
        source: e,
    })?;
    Ok(Trust {
        enclave: Box::new(enclave),
        dealer: Box::new(dealer),
    })
}
