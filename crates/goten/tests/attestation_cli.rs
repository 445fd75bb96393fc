//! `goten attestation verify` and `goten attestation measure` as an operator runs them: exit 0
//! only for evidence that verifies, a clear message and exit 5 for evidence that does not, exit 2
//! for bad usage.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::goten;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../goten-attest/tests/fixtures")
}

fn verify(kind: &str, evidence: &Path, collateral: &str, extra: &[&str]) -> Output {
    let f = fixtures();
    let mut a = vec![
        "attestation",
        "verify",
        "--kind",
        kind,
        "--evidence",
        evidence.to_str().unwrap(),
        "--collateral",
    ];
    let col = f.join(collateral);
    a.push(col.to_str().unwrap());
    a.extend_from_slice(extra);
    goten(&a)
}

const AT: &[&str] = &["--at", "2025-06-20T00:00:00Z"];

#[test]
fn genuine_evidence_verifies_and_prints_its_measurements() {
    let f = fixtures();
    let out = verify("tdx", &f.join("tdx_quote"), "tdx_quote_collateral.json", AT);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("mr_td        91eb2b44"), "{text}");

    let json_at = [AT[0], AT[1], "--json"];
    let out = verify(
        "sgx",
        &f.join("sgx_quote"),
        "sgx_quote_collateral.json",
        &json_at,
    );
    assert!(out.status.success());
    let line = String::from_utf8_lossy(&out.stdout);
    let j: serde_json::Value = serde_json::from_str(line.lines().last().unwrap()).unwrap();
    assert_eq!(j["status"], "verified");
    assert_eq!(j["tcb_status"], "ConfigurationAndSWHardeningNeeded");
    assert_eq!(j["advisories"][1], "INTEL-SA-00615");

    let out = verify("sev-snp", &f.join("report_milan.hex"), "vcek_milan.der", AT);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn evidence_that_does_not_verify_exits_5_with_the_reason() {
    let f = fixtures();
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("goten-attest-cli");
    std::fs::create_dir_all(&dir).unwrap();
    let mut q = std::fs::read(f.join("tdx_quote")).unwrap();
    q[200] ^= 1;
    let bad = dir.join("tdx_flipped");
    std::fs::write(&bad, &q).unwrap();
    let out = verify("tdx", &bad, "tdx_quote_collateral.json", AT);
    assert_eq!(out.status.code(), Some(5));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("tdx_flipped does not verify"), "{err}");

    let late = ["--at", "2040-01-01T00:00:00Z"];
    let out = verify(
        "tdx",
        &f.join("tdx_quote"),
        "tdx_quote_collateral.json",
        &late,
    );
    assert_eq!(out.status.code(), Some(5));
    let out = verify("sgx", &f.join("tdx_quote"), "tdx_quote_collateral.json", AT);
    assert_eq!(out.status.code(), Some(5));
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected sgx evidence, got tdx"));
    let out = verify("tdx", &dir.join("missing"), "tdx_quote_collateral.json", AT);
    assert_eq!(out.status.code(), Some(5));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_usage_exits_2() {
    let f = fixtures();
    let out = verify(
        "tdx",
        &f.join("tdx_quote"),
        "tdx_quote_collateral.json",
        &["--at", "yesterday"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("RFC 3339"));
    let out = verify(
        "simulated",
        &f.join("tdx_quote"),
        "tdx_quote_collateral.json",
        AT,
    );
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn measure_prints_a_stable_hash_of_this_build() {
    let a = goten(&["attestation", "measure"]);
    let b = goten(&["attestation", "measure", "--json"]);
    assert!(a.status.success() && b.status.success());
    let hex = String::from_utf8_lossy(&a.stdout).trim().to_string();
    assert_eq!(hex.len(), 64);
    let j: serde_json::Value = serde_json::from_slice(&b.stdout).unwrap();
    assert_eq!(j["measurement"], hex.as_str());
    // It is the hash of the binary itself: any change to the program changes it.
    let bin = std::fs::read(env!("CARGO_BIN_EXE_goten")).unwrap();
    let want: String = goten_attest::measure::measure_bytes(&bin)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(hex, want);
}

/// A cluster whose enclaves must present TDX quotes, with the sample collateral for both.
fn tdx_cluster(d: &Path, policy: &str) -> PathBuf {
    let keys = d.join("keys");
    let mut cluster = String::new();
    for id in 0..3 {
        let id_s = id.to_string();
        let mut args = vec!["keygen", "--id", &id_s, "--out", keys.to_str().unwrap()];
        let addr = common::free_addr();
        if id < 2 {
            args.extend(["--address", &addr]);
        }
        assert!(goten(&args).status.success());
        cluster.push_str(&std::fs::read_to_string(keys.join(format!("party-{id}.toml"))).unwrap());
        if id < 2 {
            cluster.push_str("collateral = \"tdx_collateral.json\"\n");
        }
    }
    std::fs::copy(
        fixtures().join("tdx_quote_collateral.json"),
        keys.join("tdx_collateral.json"),
    )
    .unwrap();
    cluster.push_str(&format!("\n[attestation]\ntee = \"tdx\"\n{policy}"));
    let path = keys.join("cluster.toml");
    std::fs::write(&path, cluster).unwrap();
    path
}

#[test]
fn a_party_asked_for_hardware_evidence_without_a_tee_says_what_it_needs() {
    let d = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("goten-tee-cli");
    let _ = std::fs::remove_dir_all(&d);
    let pinned = format!("[attestation.policy]\nmr_td = \"{}\"\n", "91".repeat(48));
    let cluster = tdx_cluster(&d, &pinned);
    let s0 = d.join("s0");
    let party = |extra: &[&str]| {
        let mut a = vec!["party", "--id", "0", "--cluster", cluster.to_str().unwrap()];
        a.extend_from_slice(extra);
        a.extend([
            "--steps",
            "1",
            "--timeout",
            "5",
            "--out",
            s0.to_str().unwrap(),
        ]);
        goten(&a)
    };
    // No TDX guest here: a configuration error naming the interface, before any waiting.
    let t = std::time::Instant::now();
    let r = party(&["--tee", "tdx"]);
    assert_eq!(
        r.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&r.stderr)
    );
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(
        err.contains("configfs-tsm") && err.contains("Linux 6.7"),
        "{err}"
    );
    assert!(t.elapsed().as_secs() < 5, "it waited for peers first");
    // With enclave processes the enclave program attests itself: it fails the same way, once
    // the parties are connected, and the party reports its reason.
    let kids: Vec<std::process::Child> = (0..3)
        .map(|i| {
            let out = d.join(format!("p{i}"));
            std::process::Command::new(env!("CARGO_BIN_EXE_goten"))
                .env("CI", "1")
                .args(["party", "--id", &i.to_string(), "--cluster"])
                .arg(&cluster)
                .args([
                    "--enclave",
                    "process",
                    "--steps",
                    "1",
                    "--timeout",
                    "20",
                    "--out",
                ])
                .arg(out)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outs: Vec<std::process::Output> = kids
        .into_iter()
        .map(|k| k.wait_with_output().unwrap())
        .collect();
    let s0 = String::from_utf8_lossy(&outs[0].stderr);
    assert!(!outs[0].status.success());
    assert!(s0.contains("configfs-tsm"), "{s0}");
    // Another kind than the cluster's is refused by name.
    let r = party(&["--tee", "sev-snp"]);
    assert_eq!(r.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&r.stderr).contains("tee = \"tdx\""));
    // A hardware kind without a policy that pins an identity is a cluster file error.
    let unpinned = tdx_cluster(
        &d.join("b"),
        "[attestation.policy]\naccept_tcb = [\"UpToDate\"]\n",
    );
    let r = goten(&[
        "party",
        "--id",
        "0",
        "--cluster",
        unpinned.to_str().unwrap(),
    ]);
    assert_eq!(r.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&r.stderr).contains("pin mr_td"),
        "{}",
        String::from_utf8_lossy(&r.stderr)
    );
    let _ = std::fs::remove_dir_all(&d);
}
