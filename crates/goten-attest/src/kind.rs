//! TEE kinds, evidence files and times: the small vocabulary shared by verification, generation
//! and the command line.

use std::fmt;
use std::str::FromStr;

use crate::AttestationError;

/// The kind of trusted execution environment that produced evidence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TeeKind {
    /// No TEE: software enclaves and a simulated platform key (loud on every run).
    Simulated,
    /// Intel SGX enclave (DCAP ECDSA quote, version 3).
    Sgx,
    /// Intel TDX trust domain (DCAP quote, version 4 or 5).
    Tdx,
    /// AMD SEV-SNP guest (attestation report signed by the VCEK).
    SevSnp,
}

impl TeeKind {
    /// Every kind, in the order help texts list them.
    pub const ALL: [TeeKind; 4] = [
        TeeKind::Simulated,
        TeeKind::Sgx,
        TeeKind::Tdx,
        TeeKind::SevSnp,
    ];

    /// The spelling used on the command line and in cluster files.
    pub fn name(self) -> &'static str {
        match self {
            TeeKind::Simulated => "simulated",
            TeeKind::Sgx => "sgx",
            TeeKind::Tdx => "tdx",
            TeeKind::SevSnp => "sev-snp",
        }
    }

    /// The byte that tags this kind on the wire.
    pub fn tag(self) -> u8 {
        match self {
            TeeKind::Simulated => 0,
            TeeKind::Sgx => 1,
            TeeKind::Tdx => 2,
            TeeKind::SevSnp => 3,
        }
    }

    /// The kind a wire tag names.
    pub fn from_tag(tag: u8) -> Option<TeeKind> {
        TeeKind::ALL.into_iter().find(|k| k.tag() == tag)
    }
}

impl fmt::Display for TeeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for TeeKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        TeeKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                format!("unknown TEE kind {s:?}: expected simulated, sgx, tdx or sev-snp")
            })
    }
}

/// Evidence as stored in a file: raw binary, or hex text (whitespace and a `0x` prefix allowed),
/// which is how tools often print quotes and reports.
pub fn read_evidence(bytes: &[u8]) -> Vec<u8> {
    let text = match std::str::from_utf8(bytes) {
        Ok(t) => t.trim(),
        Err(_) => return bytes.to_vec(),
    };
    let text = text.strip_prefix("0x").unwrap_or(text);
    let digits: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    if digits.is_empty()
        || !digits.len().is_multiple_of(2)
        || !digits.chars().all(|c| c.is_ascii_hexdigit())
    {
        return bytes.to_vec();
    }
    (0..digits.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&digits[i..i + 2], 16).expect("checked hex digits"))
        .collect()
}

/// Unix seconds of an RFC 3339 time such as `2025-06-20T00:00:00Z`.
pub fn parse_time(s: &str) -> Result<u64, AttestationError> {
    let t = chrono::DateTime::parse_from_rfc3339(s).map_err(|e| {
        AttestationError::Unsupported(format!(
            "time {s:?} is not RFC 3339 (for example 2025-06-20T00:00:00Z): {e}"
        ))
    })?;
    u64::try_from(t.timestamp())
        .map_err(|_| AttestationError::Unsupported(format!("time {s:?} is before 1970")))
}

/// An RFC 3339 rendering of Unix seconds (UTC), for messages.
pub fn format_time(secs: u64) -> String {
    i64::try_from(secs)
        .ok()
        .and_then(|s| chrono::DateTime::from_timestamp(s, 0))
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| format!("{secs} (Unix seconds)"))
}

/// Lower-case hex.
pub(crate) fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_and_unknown_is_named() {
        for k in TeeKind::ALL {
            assert_eq!(k.name().parse::<TeeKind>().unwrap(), k);
            assert_eq!(TeeKind::from_tag(k.tag()), Some(k));
        }
        assert!("sev".parse::<TeeKind>().unwrap_err().contains("sev-snp"));
    }

    #[test]
    fn evidence_files_may_be_hex_or_binary() {
        assert_eq!(read_evidence(b"0x0a0B\n ff\n"), vec![0x0a, 0x0b, 0xff]);
        assert_eq!(read_evidence(&[0, 159, 146, 150]), vec![0, 159, 146, 150]);
        // Not hex (odd length): taken as raw bytes, and then refused by the parser.
        assert_eq!(read_evidence(b"abc"), b"abc".to_vec());
    }

    #[test]
    fn times_parse_or_say_why() {
        assert_eq!(parse_time("1970-01-01T00:01:00Z").unwrap(), 60);
        assert_eq!(format_time(1750377600), "2025-06-20T00:00:00Z");
        assert!(
            parse_time("2025-06-20")
                .unwrap_err()
                .to_string()
                .contains("RFC 3339")
        );
    }
}
