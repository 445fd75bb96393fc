//! The cluster file's attestation settings: what E0 and E1 must prove, and where the data
//! owner reaches them.
//!
//! Where it sits: read with the cluster file (`crate::deploy`) by every party and by the data
//! owner's `goten provision`. Simulation (the default) pins the program's measurement; a TEE
//! kind (`tee = "sgx" | "tdx" | "sev-snp"`) pins its measurements and TCB policy in
//! `[attestation.policy]` and names each platform's collateral in its `[[party]]` entry.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use goten_attest::TeeKind;
use goten_attest::policy::Policy;
use goten_enclave::Role;
use serde::{Deserialize, Serialize};

use crate::cluster::HardwareSetup;
use crate::deploy::{ClusterFile, DeployError, key32, resolve};

/// The `[attestation]` table of a cluster file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttestationPins {
    /// The simulated enclave measurement (hex), as `goten attestation measure` prints it on
    /// the build every party runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measurement: Option<String>,
    /// The TEE kind of E0 and E1: `simulated` (the default), `sgx`, `tdx` or `sev-snp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tee: Option<String>,
    /// For a hardware kind: pinned measurements and accepted TCB statuses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<Policy>,
}

impl AttestationPins {
    /// The TEE kind (simulated when absent).
    pub fn kind(&self) -> Result<TeeKind, String> {
        self.tee
            .as_deref()
            .map_or(Ok(TeeKind::Simulated), str::parse)
    }

    /// Checks the table against the cluster it belongs to (`file` names it in errors).
    pub(crate) fn validate(&self, c: &ClusterFile, file: &str) -> Result<(), DeployError> {
        let invalid = |detail: String| DeployError::Invalid {
            file: file.into(),
            detail: format!("[attestation] {detail}"),
        };
        if let Some(m) = &self.measurement {
            key32(m, file, "[attestation] measurement")?;
        }
        let kind = self.kind().map_err(invalid)?;
        if kind == TeeKind::Simulated {
            return Ok(());
        }
        let policy = self.policy.as_ref().ok_or_else(|| {
            invalid(format!(
                "tee = \"{kind}\" needs an [attestation.policy] table"
            ))
        })?;
        policy
            .validate(kind)
            .map_err(|e| invalid(format!("policy: {e}")))?;
        for role in [Role::S0, Role::S1] {
            if c.entry(role).collateral.is_none() {
                return Err(invalid(format!(
                    "tee = \"{kind}\": {role}'s [[party]] entry needs collateral = \"FILE\" (its platform's DCAP collateral JSON, or VCEK certificate)"
                )));
            }
        }
        Ok(())
    }
}

/// The measurement every party requires of E0 and E1: the cluster's pin, or this program's.
pub fn expected_measurement(cluster: &ClusterFile) -> Result<[u8; 32], DeployError> {
    match cluster
        .attestation
        .as_ref()
        .and_then(|a| a.measurement.as_ref())
    {
        Some(m) => key32(m, "cluster file", "[attestation] measurement"),
        None => goten_attest::measure::program_measurement().map_err(|e| DeployError::Invalid {
            file: "this program".into(),
            detail: e.to_string(),
        }),
    }
}

/// The hardware attestation a cluster asks for, with its collateral files read (paths relative
/// to `base`, the cluster file's folder); `None` for simulation.
pub fn hardware_setup(
    cluster: &ClusterFile,
    base: &Path,
) -> Result<Option<Arc<HardwareSetup>>, DeployError> {
    let Some(a) = &cluster.attestation else {
        return Ok(None);
    };
    let invalid = |detail: String| DeployError::Invalid {
        file: "cluster file".into(),
        detail,
    };
    let kind = a.kind().map_err(invalid)?;
    if kind == TeeKind::Simulated {
        return Ok(None);
    }
    let mut collateral = Vec::new();
    for role in [Role::S0, Role::S1] {
        let rel = cluster.entry(role).collateral.clone().unwrap_or_default();
        let path = base.join(&rel);
        collateral.push(std::fs::read(&path).map_err(|e| {
            invalid(format!(
                "cannot read {role}'s collateral {}: {e}",
                path.display()
            ))
        })?);
    }
    Ok(Some(Arc::new(HardwareSetup {
        kind,
        policy: a.policy.clone().unwrap_or_default(),
        collateral,
    })))
}

/// What a client (the data owner) trusts of a cluster's enclaves: with a TEE kind, the
/// cluster's policy over its collateral (paths relative to `base`, the cluster file's folder),
/// checked now; otherwise the simulated platforms' keys and the expected measurement.
pub fn enclave_verifier(
    cluster: &ClusterFile,
    base: &Path,
) -> Result<Box<dyn goten_enclave::attest::EvidenceVerifier>, DeployError> {
    if let Some(h) = hardware_setup(cluster, base)? {
        let v = h.verifier().map_err(|e| DeployError::Invalid {
            file: "cluster file".into(),
            detail: format!("[attestation]: {e}"),
        })?;
        return Ok(Box::new(v));
    }
    Ok(Box::new(simulated_verifier(cluster)?))
}

fn simulated_verifier(
    cluster: &ClusterFile,
) -> Result<goten_enclave::attest::SimulatedVerifier, DeployError> {
    let mut platforms = Vec::new();
    for r in [Role::S0, Role::S1] {
        platforms.push(key32(
            &cluster.entry(r).attestation_key,
            "cluster file",
            "attestation_key",
        )?);
    }
    goten_enclave::attest::SimulatedVerifier::any_of(&platforms, expected_measurement(cluster)?)
        .map_err(|e| DeployError::Invalid {
            file: "cluster file".into(),
            detail: format!("attestation_key: {e}"),
        })
}

/// Where S0's or S1's host takes the data owner's key: `listen` if given, else its entry's
/// `provision_address`.
pub fn provision_address(
    cluster: &ClusterFile,
    role: Role,
    listen: Option<&str>,
) -> Result<SocketAddr, DeployError> {
    let addr = listen
        .map(str::to_string)
        .or_else(|| cluster.entry(role).provision_address.clone())
        .ok_or_else(|| DeployError::Invalid {
            file: "cluster file".into(),
            detail: format!(
                "{role} has no provision_address: the data owner needs one to provision the data key (or pass --data-key on a trusted setup)"
            ),
        })?;
    resolve(&addr, role)
}
