//! AMD SEV-SNP attestation reports, verified offline with the `sev` crate.
//!
//! The chain is AMD's root key (ARK, built into `sev` for Milan, Genoa and Turin) -> the SEV
//! signing key (ASK) -> the chip's versioned endorsement key (VCEK, the collateral file), then the
//! report's ECDSA P-384 signature by the VCEK. `sev` does not look at the VCEK's validity window
//! or at the TCB it was issued for, so this module does: the VCEK must be valid at the given time,
//! and its TCB extensions (boot loader, TEE, SNP firmware, microcode SPLs; AMD's VCEK
//! specification) must equal the report's reported TCB, otherwise a VCEK from an older,
//! vulnerable firmware could vouch for a report claiming a newer one.

use sev::certs::snp::{Certificate, Chain, Verifiable, builtin, ca};
use sev::firmware::guest::AttestationReport;
use sev::parser::ByteParser;
use x509_cert::der::{Decode, Encode};

use crate::{AttestationError, Measurements, TeeKind, Verified, format_time};

/// Size of an SEV-SNP attestation report.
pub const REPORT_BYTES: usize = 1184;

/// AMD's object identifiers of the VCEK's TCB extensions: boot loader, TEE, SNP, microcode.
const TCB_OIDS: [(&str, &str); 4] = [
    ("1.3.6.1.4.1.3704.1.3.1", "boot loader"),
    ("1.3.6.1.4.1.3704.1.3.2", "TEE"),
    ("1.3.6.1.4.1.3704.1.3.3", "SNP firmware"),
    ("1.3.6.1.4.1.3704.1.3.8", "microcode"),
];

fn parse_vcek(bytes: &[u8]) -> Result<(Certificate, x509_cert::Certificate), AttestationError> {
    let bad = |e: String| AttestationError::Collateral(format!("the VCEK certificate: {e}"));
    let cert = if bytes.starts_with(b"-----BEGIN") {
        Certificate::from_pem(bytes).map_err(|e| bad(e.to_string()))?
    } else {
        Certificate::from_der(bytes).map_err(|e| bad(e.to_string()))?
    };
    let der = cert.to_der().map_err(|e| bad(e.to_string()))?;
    let x509 = x509_cert::Certificate::from_der(&der).map_err(|e| bad(e.to_string()))?;
    Ok((cert, x509))
}

/// The VCEK's TCB (boot loader, TEE, SNP, microcode), from its extensions.
fn vcek_tcb(x509: &x509_cert::Certificate) -> Result<[u8; 4], AttestationError> {
    let exts = x509.tbs_certificate.extensions.as_deref().unwrap_or(&[]);
    let mut tcb = [0u8; 4];
    for (slot, (oid, what)) in tcb.iter_mut().zip(TCB_OIDS) {
        let ext = exts
            .iter()
            .find(|e| e.extn_id.to_string() == oid)
            .ok_or_else(|| {
                AttestationError::Collateral(format!(
                    "the VCEK certificate has no {what} SPL extension ({oid}): not a VCEK"
                ))
            })?;
        *slot = u8::from_der(ext.extn_value.as_bytes()).map_err(|e| {
            AttestationError::Collateral(format!(
                "the VCEK's {what} SPL is not a small integer: {e}"
            ))
        })?;
    }
    Ok(tcb)
}

fn check_validity(x509: &x509_cert::Certificate, at: u64) -> Result<(), AttestationError> {
    let v = &x509.tbs_certificate.validity;
    let from = v.not_before.to_unix_duration().as_secs();
    let until = v.not_after.to_unix_duration().as_secs();
    if at < from || at > until {
        return Err(AttestationError::Invalid(format!(
            "the VCEK certificate is valid from {} to {}, not at {}: expired or not yet valid collateral",
            format_time(from),
            format_time(until),
            format_time(at)
        )));
    }
    Ok(())
}

/// Verifies an SEV-SNP report against the VCEK certificate (DER or PEM) at `at`.
pub fn verify(report: &[u8], vcek: &[u8], at: u64) -> Result<Verified, AttestationError> {
    if report.len() != REPORT_BYTES {
        return Err(AttestationError::Malformed(format!(
            "an SEV-SNP report is {REPORT_BYTES} bytes, this one {}",
            report.len()
        )));
    }
    let parsed = AttestationReport::from_bytes(report)
        .map_err(|e| AttestationError::Malformed(format!("not an SEV-SNP report: {e}")))?;
    let (cert, x509) = parse_vcek(vcek)?;
    check_validity(&x509, at)?;

    // The VCEK must chain to one of AMD's built-in roots (Milan, Genoa, Turin).
    let roots = [
        (builtin::milan::ark(), builtin::milan::ask()),
        (builtin::genoa::ark(), builtin::genoa::ask()),
        (builtin::turin::ark(), builtin::turin::ask()),
    ];
    let chain = roots
        .into_iter()
        .filter_map(|(ark, ask)| Some((ark.ok()?, ask.ok()?)))
        .map(|(ark, ask)| Chain {
            ca: ca::Chain { ark, ask },
            vek: cert.clone(),
        })
        .find(|chain| chain.verify().is_ok())
        .ok_or_else(|| {
            AttestationError::Invalid(
                "the VCEK certificate does not chain to AMD's root (Milan, Genoa or Turin ARK)"
                    .into(),
            )
        })?;
    (&chain, &parsed).verify().map_err(|e| {
        AttestationError::Invalid(format!(
            "the report's signature does not verify with this VCEK ({e}): tampered, or another chip's VCEK"
        ))
    })?;

    let t = &parsed.reported_tcb;
    let reported = [t.bootloader, t.tee, t.snp, t.microcode];
    let issued = vcek_tcb(&x509)?;
    if reported != issued {
        return Err(AttestationError::Invalid(format!(
            "the report's TCB {reported:?} is not the TCB {issued:?} its VCEK was issued for (boot loader, TEE, SNP, microcode)"
        )));
    }
    Ok(Verified {
        kind: TeeKind::SevSnp,
        tcb_status: "UpToDate".into(),
        advisories: Vec::new(),
        measurements: Measurements::SevSnp {
            measurement: parsed.measurement,
            policy: u64::from(parsed.policy),
            reported_tcb: reported,
        },
        report_data: parsed.report_data,
        debug: parsed.policy.debug_allowed(),
    })
}

/// The certificate as DER (PEM accepted), for callers that store it.
pub fn vcek_der(bytes: &[u8]) -> Result<Vec<u8>, AttestationError> {
    let (_, x509) = parse_vcek(bytes)?;
    x509.to_der()
        .map_err(|e| AttestationError::Collateral(format!("the VCEK certificate: {e}")))
}
