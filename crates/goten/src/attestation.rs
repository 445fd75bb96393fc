//! `goten attestation`: verify one piece of TEE evidence offline, and print the simulated
//! measurement of this build for pinning in a cluster file.
//!
//! Where it sits: an operator's and a data or model owner's tool, outside any run. Verification
//! itself is `goten-attest`'s; this only reads files, picks the time and prints.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use goten_attest::{TeeKind, parse_time, verify_evidence};

/// What `goten attestation` does.
#[derive(Subcommand, Debug)]
pub(crate) enum AttestationCommand {
    /// Verify a quote or report offline: signatures, certificate chain, collateral, TCB.
    /// Exit 0 only when it verifies; prints status, measurements, TCB status and report data.
    Verify(VerifyArgs),
    /// Print this build's simulated enclave measurement (a hash of the program), to pin in the
    /// cluster file's [attestation] table.
    Measure {
        /// Print one JSON object instead of the hex digest.
        #[arg(long)]
        json: bool,
    },
}

/// Arguments of `goten attestation verify`.
#[derive(Args, Debug)]
pub(crate) struct VerifyArgs {
    /// Kind of evidence: sgx or tdx (DCAP quotes), sev-snp (attestation report).
    #[arg(long, value_parser = parse_kind)]
    kind: TeeKind,
    /// The raw quote or report (binary, or hex text).
    #[arg(long)]
    evidence: PathBuf,
    /// sgx/tdx: the DCAP collateral JSON (dcap-qvl's layout); sev-snp: the VCEK certificate
    /// (DER or PEM). Required: verification never fetches anything from the network.
    #[arg(long)]
    collateral: PathBuf,
    /// The time to verify at, RFC 3339 (default: now).
    #[arg(long)]
    at: Option<String>,
    /// Print one JSON object on stdout instead of the table.
    #[arg(long)]
    json: bool,
}

fn parse_kind(s: &str) -> Result<TeeKind, String> {
    match s.parse::<TeeKind>()? {
        TeeKind::Simulated => Err(
            "simulated evidence has no offline verifier (it is checked inside a run against the platform keys of the cluster file)"
                .into(),
        ),
        k => Ok(k),
    }
}

fn read(path: &PathBuf, what: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path)
        .map_err(|e| {
            goten_attest::AttestationError::Malformed(format!("{what} {}: {e}", path.display()))
        })
        .map_err(anyhow::Error::from)
}

pub(crate) fn run(cmd: AttestationCommand) -> anyhow::Result<()> {
    match cmd {
        AttestationCommand::Measure { json } => {
            let m = goten_attest::measure::program_measurement()?;
            let hex: String = m.iter().map(|b| format!("{b:02x}")).collect();
            if json {
                println!(
                    "{}",
                    serde_json::json!({"kind": "simulated", "measurement": hex})
                );
            } else {
                println!("{hex}");
            }
            Ok(())
        }
        AttestationCommand::Verify(a) => verify(a),
    }
}

fn verify(a: VerifyArgs) -> anyhow::Result<()> {
    let evidence = read(&a.evidence, "evidence")?;
    let collateral = read(&a.collateral, "collateral")?;
    let at = match &a.at {
        Some(t) => parse_time(t)?,
        None => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .context("the system clock is before 1970")?
            .as_secs(),
    };
    let verified = verify_evidence(a.kind, &evidence, &collateral, at)
        .with_context(|| format!("{} does not verify", a.evidence.display()))?;
    if a.json {
        let mut j = verified.to_json();
        j["status"] = "verified".into();
        j["verified_at"] = goten_attest::format_time(at).into();
        println!("{j}");
    } else {
        println!(
            "status       verified (signatures, certificate chain, collateral at {})",
            goten_attest::format_time(at)
        );
        for (k, v) in verified.fields() {
            println!("{k:<12} {}", if v.is_empty() { "-" } else { &v });
        }
        if verified.tcb_status != "UpToDate" {
            println!(
                "note: TCB status {} is accepted only where the cluster's policy lists it (accept_tcb, allow_advisories)",
                verified.tcb_status
            );
        }
    }
    Ok(())
}
