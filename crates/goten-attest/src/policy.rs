//! What a cluster accepts: pinned measurements per TEE kind and the TCB acceptance policy.
//!
//! Where it sits: the `[attestation]` table of the cluster file deserialises into [`Policy`];
//! every party (and every client) checks each peer's [`Verified`] evidence with
//! [`Policy::check`]. Verification proves the evidence is genuine; the policy decides whether it
//! is *this* program on a platform patched well enough.

use serde::{Deserialize, Serialize};

use crate::kind::hex;
use crate::{AttestationError, Measurements, TeeKind, Verified};

/// Acceptance policy and pins for one TEE kind.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// TCB statuses accepted (Intel's names, for example `UpToDate`, `SWHardeningNeeded`).
    #[serde(default = "up_to_date")]
    pub accept_tcb: Vec<String>,
    /// Advisories tolerated: evidence is refused if it lists one that is not here.
    #[serde(default)]
    pub allow_advisories: Vec<String>,
    /// Accept debug enclaves and guests (whose host can read them). Never in production.
    #[serde(default)]
    pub danger_allow_debug: bool,
    /// SGX: pinned MRENCLAVE (hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mr_enclave: Option<String>,
    /// SGX: pinned MRSIGNER (hex); with `isv_prod_id` and `min_isv_svn` accepts signed updates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mr_signer: Option<String>,
    /// SGX: the product id that must go with `mr_signer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub isv_prod_id: Option<u16>,
    /// SGX: the lowest security version accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_isv_svn: Option<u16>,
    /// TDX: pinned MRTD (hex, 48 bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mr_td: Option<String>,
    /// TDX: pinned RTMR0..RTMR3 (hex, 48 bytes each; an empty string leaves one unpinned).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rtmr: Vec<String>,
    /// SEV-SNP: pinned launch MEASUREMENT (hex, 48 bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measurement: Option<String>,
    /// SEV-SNP: the exact guest policy bits required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_policy: Option<u64>,
    /// SEV-SNP: the lowest reported TCB accepted (boot loader, TEE, SNP, microcode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_tcb: Option<[u8; 4]>,
}

fn up_to_date() -> Vec<String> {
    vec!["UpToDate".into()]
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            accept_tcb: up_to_date(),
            allow_advisories: Vec::new(),
            danger_allow_debug: false,
            mr_enclave: None,
            mr_signer: None,
            isv_prod_id: None,
            min_isv_svn: None,
            mr_td: None,
            rtmr: Vec::new(),
            measurement: None,
            guest_policy: None,
            min_tcb: None,
        }
    }
}

fn pinned<const N: usize>(field: &str, hex_value: &str) -> Result<[u8; N], String> {
    let s = hex_value.trim();
    if s.len() != 2 * N || !s.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!(
            "{field} must be {N} bytes of hex ({} digits)",
            2 * N
        ));
    }
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|e| e.to_string())?;
    }
    Ok(out)
}

fn compare<const N: usize>(
    field: &str,
    found: &[u8; N],
    expected: &Option<String>,
) -> Result<(), AttestationError> {
    let Some(want) = expected else { return Ok(()) };
    let want: [u8; N] = pinned(field, want).map_err(AttestationError::Unsupported)?;
    if &want != found {
        return Err(AttestationError::WrongMeasurement {
            field: field.into(),
            found: hex(found),
            expected: hex(&want),
        });
    }
    Ok(())
}

impl Policy {
    /// Checks that the policy pins an identity for `kind` and that every pin is well formed.
    /// A policy that pins nothing would accept any program on genuine hardware.
    pub fn validate(&self, kind: TeeKind) -> Result<(), String> {
        let pins_identity = match kind {
            TeeKind::Simulated => true,
            TeeKind::Sgx => {
                self.mr_enclave.is_some()
                    || (self.mr_signer.is_some() && self.isv_prod_id.is_some())
            }
            TeeKind::Tdx => self.mr_td.is_some(),
            TeeKind::SevSnp => self.measurement.is_some(),
        };
        if !pins_identity {
            return Err(match kind {
                TeeKind::Sgx => "sgx: pin mr_enclave, or mr_signer with isv_prod_id".into(),
                TeeKind::Tdx => "tdx: pin mr_td (and the rtmr values of the goten image)".into(),
                _ => "sev-snp: pin measurement".into(),
            });
        }
        for (field, v) in [
            ("mr_enclave", &self.mr_enclave),
            ("mr_signer", &self.mr_signer),
        ] {
            if let Some(v) = v {
                pinned::<32>(field, v)?;
            }
        }
        for (field, v) in [("mr_td", &self.mr_td), ("measurement", &self.measurement)] {
            if let Some(v) = v {
                pinned::<48>(field, v)?;
            }
        }
        if self.rtmr.len() > 4 {
            return Err("rtmr: at most four values (RTMR0..RTMR3)".into());
        }
        for r in self.rtmr.iter().filter(|r| !r.is_empty()) {
            pinned::<48>("rtmr", r)?;
        }
        if self.accept_tcb.is_empty() {
            return Err("accept_tcb is empty: no evidence could ever be accepted".into());
        }
        Ok(())
    }

    fn check_tcb(&self, v: &Verified) -> Result<(), AttestationError> {
        let status_ok = self.accept_tcb.iter().any(|s| s == &v.tcb_status);
        let advisories_ok = v
            .advisories
            .iter()
            .all(|a| self.allow_advisories.iter().any(|x| x == a));
        if status_ok && advisories_ok {
            return Ok(());
        }
        Err(AttestationError::TcbNotAccepted {
            status: v.tcb_status.clone(),
            advisories: if v.advisories.is_empty() {
                "none".into()
            } else {
                v.advisories.join(",")
            },
            accepted: format!(
                "accept_tcb = [{}], allow_advisories = [{}]",
                self.accept_tcb.join(", "),
                self.allow_advisories.join(", ")
            ),
        })
    }

    /// Whether verified evidence is acceptable and binds exactly `report_data`.
    pub fn check(&self, v: &Verified, report_data: &[u8; 64]) -> Result<(), AttestationError> {
        self.validate(v.kind)
            .map_err(AttestationError::Unsupported)?;
        if v.debug && !self.danger_allow_debug {
            return Err(AttestationError::Debug(match v.kind {
                TeeKind::Sgx => "SGX enclave",
                TeeKind::Tdx => "TDX trust domain",
                _ => "SEV-SNP guest",
            }));
        }
        self.check_tcb(v)?;
        match &v.measurements {
            Measurements::Sgx {
                mr_enclave,
                mr_signer,
                isv_prod_id,
                isv_svn,
            } => {
                compare("MRENCLAVE", mr_enclave, &self.mr_enclave)?;
                compare("MRSIGNER", mr_signer, &self.mr_signer)?;
                if let Some(want) = self.isv_prod_id
                    && want != *isv_prod_id
                {
                    return Err(AttestationError::WrongMeasurement {
                        field: "ISVPRODID".into(),
                        found: isv_prod_id.to_string(),
                        expected: want.to_string(),
                    });
                }
                if let Some(min) = self.min_isv_svn
                    && *isv_svn < min
                {
                    return Err(AttestationError::WrongMeasurement {
                        field: "ISVSVN".into(),
                        found: isv_svn.to_string(),
                        expected: format!(">= {min}"),
                    });
                }
            }
            Measurements::Tdx { mr_td, rtmr } => {
                compare("MRTD", mr_td, &self.mr_td)?;
                for (i, want) in self.rtmr.iter().enumerate() {
                    if !want.is_empty() {
                        compare(&format!("RTMR{i}"), &rtmr[i], &Some(want.clone()))?;
                    }
                }
            }
            Measurements::SevSnp {
                measurement,
                policy,
                reported_tcb,
            } => {
                compare("MEASUREMENT", measurement, &self.measurement)?;
                if let Some(want) = self.guest_policy
                    && want != *policy
                {
                    return Err(AttestationError::WrongMeasurement {
                        field: "guest POLICY".into(),
                        found: format!("{policy:#x}"),
                        expected: format!("{want:#x}"),
                    });
                }
                if let Some(min) = self.min_tcb
                    && reported_tcb
                        .iter()
                        .zip(min)
                        .any(|(have, want)| *have < want)
                {
                    return Err(AttestationError::WrongMeasurement {
                        field: "reported TCB".into(),
                        found: format!("{reported_tcb:?}"),
                        expected: format!(">= {min:?}"),
                    });
                }
            }
        }
        if &v.report_data != report_data {
            return Err(AttestationError::ReportData);
        }
        Ok(())
    }
}
