//! What verified evidence says: the kind, the measurements, the TCB status and the report data.
//! The policy ([`crate::policy`]) decides whether that is acceptable.

use crate::TeeKind;
use crate::kind::hex;

/// The measured identity of the enclave or guest, per TEE kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Measurements {
    /// An SGX enclave.
    Sgx {
        /// Hash of the enclave's code and initial data.
        mr_enclave: [u8; 32],
        /// Hash of the key that signed the enclave.
        mr_signer: [u8; 32],
        /// Product id chosen by the signer.
        isv_prod_id: u16,
        /// Security version chosen by the signer.
        isv_svn: u16,
    },
    /// A TDX trust domain.
    Tdx {
        /// Initial contents of the TD (firmware).
        mr_td: [u8; 48],
        /// Runtime measurement registers 0..3 (kernel, command line, application).
        rtmr: [[u8; 48]; 4],
    },
    /// An SEV-SNP guest.
    SevSnp {
        /// Launch measurement of the guest.
        measurement: [u8; 48],
        /// Guest policy bits.
        policy: u64,
        /// The platform's reported TCB: boot loader, TEE, SNP firmware, microcode.
        reported_tcb: [u8; 4],
    },
}

/// Evidence whose signatures, chain and collateral verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    /// Which TEE.
    pub kind: TeeKind,
    /// TCB status (Intel's names). SEV-SNP has no status in its collateral: "UpToDate" there
    /// means the VCEK was issued for exactly the report's TCB; pin `min_tcb` for a floor.
    pub tcb_status: String,
    /// Intel security advisories that apply to this TCB.
    pub advisories: Vec<String>,
    /// Measured identity.
    pub measurements: Measurements,
    /// The 64 bytes the enclave bound into its evidence.
    pub report_data: [u8; 64],
    /// Whether the enclave or guest runs in debug mode (its host can read it).
    pub debug: bool,
}

impl Verified {
    /// The primary measurement as hex (MRENCLAVE, MRTD or the SNP MEASUREMENT).
    pub fn measurement_hex(&self) -> String {
        match &self.measurements {
            Measurements::Sgx { mr_enclave, .. } => hex(mr_enclave),
            Measurements::Tdx { mr_td, .. } => hex(mr_td),
            Measurements::SevSnp { measurement, .. } => hex(measurement),
        }
    }

    /// Field / value pairs for printing, primary measurement first.
    pub fn fields(&self) -> Vec<(&'static str, String)> {
        let mut v = vec![
            ("kind", self.kind.name().to_string()),
            ("tcb_status", self.tcb_status.clone()),
            ("advisories", self.advisories.join(",")),
        ];
        match &self.measurements {
            Measurements::Sgx {
                mr_enclave,
                mr_signer,
                isv_prod_id,
                isv_svn,
            } => {
                v.push(("mr_enclave", hex(mr_enclave)));
                v.push(("mr_signer", hex(mr_signer)));
                v.push(("isv_prod_id", isv_prod_id.to_string()));
                v.push(("isv_svn", isv_svn.to_string()));
            }
            Measurements::Tdx { mr_td, rtmr } => {
                v.push(("mr_td", hex(mr_td)));
                for (name, r) in ["rtmr0", "rtmr1", "rtmr2", "rtmr3"].into_iter().zip(rtmr) {
                    v.push((name, hex(r)));
                }
            }
            Measurements::SevSnp {
                measurement,
                policy,
                reported_tcb,
            } => {
                v.push(("measurement", hex(measurement)));
                v.push(("policy", format!("{policy:#x}")));
                v.push((
                    "reported_tcb",
                    format!(
                        "bootloader={} tee={} snp={} microcode={}",
                        reported_tcb[0], reported_tcb[1], reported_tcb[2], reported_tcb[3]
                    ),
                ));
            }
        }
        v.push(("debug", self.debug.to_string()));
        v.push(("report_data", hex(&self.report_data)));
        v
    }

    /// One JSON object with the same fields (advisories as an array).
    pub fn to_json(&self) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        for (k, v) in self.fields() {
            let value = match k {
                "advisories" => serde_json::json!(self.advisories),
                "debug" => serde_json::json!(self.debug),
                "isv_prod_id" | "isv_svn" => serde_json::json!(v.parse::<u16>().unwrap_or(0)),
                _ => serde_json::json!(v),
            };
            m.insert(k.to_string(), value);
        }
        serde_json::Value::Object(m)
    }
}
