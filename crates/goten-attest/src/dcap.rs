//! Intel SGX and TDX quotes (DCAP), verified offline with the `dcap-qvl` crate.
//!
//! `dcap-qvl` checks the PCK certificate chain up to Intel's SGX root CA, the CRLs, the signed
//! TCB info and QE identity, the QE report and the quote's ECDSA signature, and the validity
//! window of every piece of collateral at the given time; it refuses debug enclaves and TDs.
//! What it returns (TCB status, advisories, the enclave's or TD's report) is mapped to
//! [`Verified`] here.

use dcap_qvl::QuoteCollateralV3;
use dcap_qvl::configs::RingConfig;
use dcap_qvl::quote::Report;
use dcap_qvl::verify::QuoteVerifier;

use crate::{AttestationError, Measurements, TeeKind, Verified};

/// The collateral JSON (the layout `dcap-qvl` serialises, as in its sample files).
pub fn parse_collateral(json: &[u8]) -> Result<QuoteCollateralV3, AttestationError> {
    serde_json::from_slice(json).map_err(|e| {
        AttestationError::Collateral(format!(
            "not DCAP collateral JSON (fields pck_crl_issuer_chain, tcb_info, qe_identity, ...): {e}"
        ))
    })
}

/// Verifies a quote of `kind` (SGX or TDX) against its collateral at `at` (Unix seconds).
pub fn verify(
    kind: TeeKind,
    quote: &[u8],
    collateral_json: &[u8],
    at: u64,
) -> Result<Verified, AttestationError> {
    let collateral = parse_collateral(collateral_json)?;
    // Parse first, so a truncated file or a quote of the other kind gets its own message
    // rather than a signature failure.
    let parsed = dcap_qvl::quote::Quote::parse(quote)
        .map_err(|e| AttestationError::Malformed(format!("not a DCAP quote: {e}")))?;
    let found = if parsed.report.is_sgx() {
        TeeKind::Sgx
    } else {
        TeeKind::Tdx
    };
    if found != kind {
        return Err(AttestationError::WrongKind {
            expected: kind.name().into(),
            found: found.name().into(),
        });
    }
    let report = QuoteVerifier::new_prod()
        .with_config::<RingConfig>()
        .verify(quote, &collateral, at)
        .map_err(|e| AttestationError::Invalid(format!("{e:#}")))?;
    if report.status == "Revoked" {
        return Err(AttestationError::Revoked);
    }
    let (measurements, report_data, debug) = match &report.report {
        Report::SgxEnclave(r) => (
            Measurements::Sgx {
                mr_enclave: r.mr_enclave,
                mr_signer: r.mr_signer,
                isv_prod_id: r.isv_prod_id,
                isv_svn: r.isv_svn,
            },
            r.report_data,
            // SGX ATTRIBUTES bit 1 is DEBUG.
            r.attributes[0] & 0x02 != 0,
        ),
        other => {
            let td = other
                .as_td10()
                .ok_or_else(|| AttestationError::Malformed("unknown report body".into()))?;
            (
                Measurements::Tdx {
                    mr_td: td.mr_td,
                    rtmr: [td.rt_mr0, td.rt_mr1, td.rt_mr2, td.rt_mr3],
                },
                td.report_data,
                // TD_ATTRIBUTES bit 0 is DEBUG (TUD).
                td.td_attributes[0] & 0x01 != 0,
            )
        }
    };
    Ok(Verified {
        kind,
        tcb_status: report.status,
        advisories: report.advisory_ids,
        measurements,
        report_data,
        debug,
    })
}
