//! The evidence-generation file protocols (configfs-tsm, Gramine), driven against directories
//! laid out like the kernel's and Gramine's: what is written where, what is read back, and the
//! errors on a machine without the interface or with the wrong TEE.

use std::path::{Path, PathBuf};

use goten_attest::TeeKind;
use goten_attest::generate::{gramine_quote, tsm_report, tsm_report_in};

fn scratch(name: &str) -> PathBuf {
    let d = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("goten-attest-{name}"));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A report entry as the kernel presents it after `mkdir`, with its answer ready.
fn fake_entry(dir: &Path, provider: &str, outblob: &[u8]) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("provider"), format!("{provider}\n")).unwrap();
    std::fs::write(dir.join("generation"), "1\n").unwrap();
    std::fs::write(dir.join("outblob"), outblob).unwrap();
}

#[test]
fn tsm_writes_the_report_data_and_returns_the_outblob() {
    let d = scratch("tsm-ok");
    let entry = d.join("report/e0");
    fake_entry(&entry, "tdx_guest", b"QUOTE");
    let rd = [7u8; 64];
    assert_eq!(tsm_report_in(&entry, TeeKind::Tdx, &rd).unwrap(), b"QUOTE");
    assert_eq!(std::fs::read(entry.join("inblob")).unwrap(), rd);
    // The wrong TEE's provider is refused by name.
    let e = tsm_report_in(&entry, TeeKind::SevSnp, &rd).unwrap_err();
    assert!(
        e.to_string().contains("\"tdx_guest\", not \"sev_guest\""),
        "{e}"
    );
    // SGX evidence does not come from configfs-tsm.
    assert!(tsm_report_in(&entry, TeeKind::Sgx, &rd).is_err());
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn tsm_without_the_interface_says_what_is_needed() {
    let d = scratch("tsm-none");
    let e = tsm_report(&d, TeeKind::SevSnp, &[0; 64]).unwrap_err();
    assert!(e.to_string().contains("Linux 6.7"), "{e}");
    // An entry that is not a kernel one (no attributes) fails, and is cleaned up.
    std::fs::create_dir_all(d.join("report")).unwrap();
    let e = tsm_report(&d, TeeKind::Tdx, &[0; 64]).unwrap_err();
    assert!(e.to_string().contains("outblob"), "{e}");
    assert_eq!(std::fs::read_dir(d.join("report")).unwrap().count(), 0);
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn gramine_writes_user_report_data_and_reads_the_quote() {
    let d = scratch("gramine");
    let e = gramine_quote(&d, &[1; 64]).unwrap_err();
    assert!(e.to_string().contains("Gramine-SGX"), "{e}");
    std::fs::write(d.join("attestation_type"), "none\n").unwrap();
    let e = gramine_quote(&d, &[1; 64]).unwrap_err();
    assert!(e.to_string().contains("\"none\", not \"dcap\""), "{e}");
    std::fs::write(d.join("attestation_type"), "dcap\n").unwrap();
    std::fs::write(d.join("quote"), b"SGXQUOTE").unwrap();
    assert_eq!(gramine_quote(&d, &[1; 64]).unwrap(), b"SGXQUOTE");
    assert_eq!(std::fs::read(d.join("user_report_data")).unwrap(), [1; 64]);
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn tsm_refuses_a_report_entry_another_writer_touched() {
    let d = scratch("tsm-race");
    let entry = d.join("report/e1");
    fake_entry(&entry, "sev_guest", b"REPORT");
    std::fs::write(entry.join("generation"), "2\n").unwrap();
    let e = tsm_report_in(&entry, TeeKind::SevSnp, &[3; 64]).unwrap_err();
    assert!(e.to_string().contains("another process"), "{e}");
    let _ = std::fs::remove_dir_all(&d);
}
