//! Evidence generation on TEE hardware, through the operating system's file interfaces.
//!
//! Where it sits: a party started with `--tee tdx|sev-snp|sgx` asks here for evidence binding its
//! 64 bytes of report data; the evidence goes into its hello (or to a client), and peers verify it
//! with [`crate::verify_evidence`].
//!
//! - **TDX and SEV-SNP guests**: the Linux configfs-tsm report interface (Linux 6.7 and later):
//!   `mkdir /sys/kernel/config/tsm/report/NAME`, write the report data to `inblob`, read the quote
//!   or report from `outblob`, check that `generation` is 1 (our one write; another writer would have
//!   changed the request under us) and that `provider` is the expected TEE (`tdx_guest`,
//!   `sev_guest`), then `rmdir`.
//! - **SGX under Gramine**: write the report data to `/dev/attestation/user_report_data`, read the
//!   DCAP quote from `/dev/attestation/quote` (`attestation_type` must be `dcap`).
//!
//! Neither has run on hardware here (no machine with a TEE): the tests drive both protocols
//! against directories laid out like the kernel's and Gramine's.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::{AttestationError, TeeKind};

/// Where the kernel mounts configfs-tsm.
pub const TSM_ROOT: &str = "/sys/kernel/config/tsm";
/// Gramine's pseudo-filesystem for attestation.
pub const GRAMINE_ROOT: &str = "/dev/attestation";

fn gen_err(msg: String) -> AttestationError {
    AttestationError::Generate(msg)
}

fn read_text(path: &Path) -> Result<String, AttestationError> {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .map_err(|e| gen_err(format!("{}: {e}", path.display())))
}

/// The configfs-tsm provider name of a TEE kind.
fn tsm_provider(kind: TeeKind) -> Result<&'static str, AttestationError> {
    match kind {
        TeeKind::Tdx => Ok("tdx_guest"),
        TeeKind::SevSnp => Ok("sev_guest"),
        other => Err(gen_err(format!(
            "{other} evidence does not come from configfs-tsm (TDX and SEV-SNP guests only)"
        ))),
    }
}

/// Runs the report protocol in a fresh report entry `entry` (as the kernel creates it on
/// `mkdir`, generation 0): returns the raw quote (TDX) or report (SEV-SNP).
pub fn tsm_report_in(
    entry: &Path,
    kind: TeeKind,
    report_data: &[u8; 64],
) -> Result<Vec<u8>, AttestationError> {
    let want = tsm_provider(kind)?;
    std::fs::write(entry.join("inblob"), report_data)
        .map_err(|e| gen_err(format!("writing {}: {e}", entry.join("inblob").display())))?;
    let out = std::fs::read(entry.join("outblob"))
        .map_err(|e| gen_err(format!("reading {}: {e}", entry.join("outblob").display())))?;
    // A fresh entry starts at generation 0 and our single write makes it 1; anything else means
    // another writer changed the request, so the report may not bind our data.
    let generation = read_text(&entry.join("generation"))?;
    if generation != "1" {
        return Err(gen_err(format!(
            "{}: generation is {generation}, not 1: another process wrote to this report entry, so the report may not bind our data",
            entry.display()
        )));
    }
    let provider = read_text(&entry.join("provider"))?;
    if provider != want {
        return Err(gen_err(format!(
            "{}: the TSM provider is {provider:?}, not {want:?}: this guest is not a {kind} guest",
            entry.display()
        )));
    }
    if out.is_empty() {
        return Err(gen_err(format!("{}: empty outblob", entry.display())));
    }
    Ok(out)
}

/// Evidence from configfs-tsm under `root` (normally [`TSM_ROOT`]).
pub fn tsm_report(
    root: &Path,
    kind: TeeKind,
    report_data: &[u8; 64],
) -> Result<Vec<u8>, AttestationError> {
    tsm_provider(kind)?;
    let reports = root.join("report");
    if !reports.is_dir() {
        return Err(gen_err(format!(
            "no configfs-tsm report interface at {}: {kind} evidence needs Linux 6.7 or later inside a {kind} guest, with configfs mounted (mount -t configfs none /sys/kernel/config)",
            reports.display()
        )));
    }
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let entry: PathBuf = reports.join(format!(
        "goten-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir(&entry).map_err(|e| match e.kind() {
        ErrorKind::PermissionDenied => gen_err(format!(
            "creating {}: permission denied (configfs-tsm needs root or CAP_SYS_ADMIN)",
            entry.display()
        )),
        _ => gen_err(format!("creating {}: {e}", entry.display())),
    })?;
    let result = tsm_report_in(&entry, kind, report_data);
    // The kernel removes the entry's attributes with it; a plain directory (tests) needs them
    // removed first. Failing to clean up must not hide the result.
    let _ = std::fs::remove_dir(&entry).or_else(|_| std::fs::remove_dir_all(&entry));
    result
}

/// An SGX DCAP quote from Gramine's attestation files under `root` (normally [`GRAMINE_ROOT`]).
pub fn gramine_quote(root: &Path, report_data: &[u8; 64]) -> Result<Vec<u8>, AttestationError> {
    let kind_file = root.join("attestation_type");
    if !kind_file.exists() {
        return Err(gen_err(format!(
            "no Gramine attestation interface at {}: sgx evidence needs goten to run under Gramine-SGX with sgx.remote_attestation = \"dcap\"",
            root.display()
        )));
    }
    let kind = read_text(&kind_file)?;
    if kind != "dcap" {
        return Err(gen_err(format!(
            "{}: Gramine's attestation type is {kind:?}, not \"dcap\" (set sgx.remote_attestation = \"dcap\" in the manifest)",
            kind_file.display()
        )));
    }
    let urd = root.join("user_report_data");
    std::fs::write(&urd, report_data)
        .map_err(|e| gen_err(format!("writing {}: {e}", urd.display())))?;
    let quote = std::fs::read(root.join("quote"))
        .map_err(|e| gen_err(format!("reading {}: {e}", root.join("quote").display())))?;
    if quote.is_empty() {
        return Err(gen_err(format!(
            "{}: empty quote",
            root.join("quote").display()
        )));
    }
    Ok(quote)
}

/// Evidence of `kind` on this machine, from the standard locations.
pub fn generate(kind: TeeKind, report_data: &[u8; 64]) -> Result<Vec<u8>, AttestationError> {
    match kind {
        TeeKind::Tdx | TeeKind::SevSnp => tsm_report(Path::new(TSM_ROOT), kind, report_data),
        TeeKind::Sgx => gramine_quote(Path::new(GRAMINE_ROOT), report_data),
        TeeKind::Simulated => Err(gen_err(
            "simulated evidence is signed by the simulated platform key, not generated by hardware"
                .into(),
        )),
    }
}
