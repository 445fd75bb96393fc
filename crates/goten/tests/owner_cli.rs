//! The model owner's channel through the real binary: `goten keygen --owner`, a protected run
//! that seals its export to the owner's public key (enclaves in-process and as processes), and
//! `goten decrypt-model` giving exactly the safetensors file a plaintext export gives. Without
//! an owner key a protected run refuses to export unless told `--danger-plaintext-export`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::{goten, text};

fn tmp(name: &str) -> PathBuf {
    common::tmp("owner", name)
}

/// A short deterministic goten-mode run in `dir` with `extra` options.
fn train(dir: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "train",
        "--synthetic-train",
        "128",
        "--test-limit",
        "32",
        "--batch",
        "32",
        "--steps",
        "3",
        "--danger-deterministic-keys",
        "4",
        "--out",
        dir.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    goten(&args)
}

fn decrypt(key: &Path, input: &Path, out: &Path) -> Output {
    goten(&[
        "decrypt-model",
        "--key",
        key.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ])
}

#[test]
fn the_export_is_sealed_to_the_owner_and_opens_to_the_plaintext_file() {
    let d = tmp("seal");
    let owner = d.join("owner");
    let r = goten(&["keygen", "--owner", "--out", owner.to_str().unwrap()]);
    assert!(r.status.success(), "{}", text(&r));
    let (key, public) = (owner.join("owner.key"), owner.join("owner.pub"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "owner.key is readable by others");
    }
    // The reference: the same run, exported in the clear (loudly).
    let plain = d.join("plain.safetensors");
    let r = train(
        &d.join("plain"),
        &[
            "--export",
            plain.to_str().unwrap(),
            "--danger-plaintext-export",
        ],
    );
    assert!(r.status.success(), "{}", text(&r));
    assert!(text(&r).contains("WARNING: --danger-plaintext-export"));
    let reference = std::fs::read(&plain).unwrap();
    for kind in ["in-process", "process"] {
        let sealed = d.join(format!("{kind}.sealed"));
        let r = train(
            &d.join(kind),
            &[
                "--enclave",
                kind,
                "--export",
                sealed.to_str().unwrap(),
                "--model-owner",
                public.to_str().unwrap(),
            ],
        );
        assert!(r.status.success(), "{kind}: {}", text(&r));
        let bytes = std::fs::read(&sealed).unwrap();
        assert!(bytes.starts_with(b"goten-model/v1"), "{kind}");
        // Nothing of the safetensors file is visible: no header, no 8-byte run of weights.
        assert!(!bytes.windows(6).any(|w| w == b"weight" || w == b"\"F32\""));
        let probes: Vec<&[u8]> = reference[reference.len() - 4096..].chunks(8).collect();
        assert!(
            !probes.iter().any(|p| bytes.windows(8).any(|w| w == *p)),
            "{kind}: trained weights visible in the sealed export"
        );
        let opened = d.join(format!("{kind}.safetensors"));
        let r = decrypt(&key, &sealed, &opened);
        assert!(r.status.success(), "{kind}: {}", text(&r));
        assert!(
            std::fs::read(&opened).unwrap() == reference,
            "{kind}: the opened model differs from the plaintext export of the same run"
        );
    }
    // Another owner's key cannot open it (input data fault, exit 5) and says why.
    let other = d.join("other");
    assert!(
        goten(&["keygen", "--owner", "--out", other.to_str().unwrap()])
            .status
            .success()
    );
    let r = decrypt(
        &other.join("owner.key"),
        &d.join("in-process.sealed"),
        &d.join("x"),
    );
    assert_eq!(r.status.code(), Some(5), "{}", text(&r));
    assert!(text(&r).contains("another owner key"), "{}", text(&r));
    // A tampered file too.
    let mut t = std::fs::read(d.join("process.sealed")).unwrap();
    let n = t.len();
    t[n / 2] ^= 1;
    std::fs::write(d.join("t.sealed"), &t).unwrap();
    assert_eq!(
        decrypt(&key, &d.join("t.sealed"), &d.join("y"))
            .status
            .code(),
        Some(5)
    );
    // keygen never overwrites an owner key.
    let r = goten(&["keygen", "--owner", "--out", owner.to_str().unwrap()]);
    assert!(!r.status.success() && text(&r).contains("must not exist"));
}

#[test]
fn a_protected_run_exports_only_to_an_owner_or_with_the_danger_flag() {
    let d = tmp("refuse");
    // Refused before any training: exit 2, naming both ways out.
    let r = train(&d.join("a"), &["--export", d.join("m").to_str().unwrap()]);
    assert_eq!(r.status.code(), Some(2), "{}", text(&r));
    assert!(
        text(&r).contains("--model-owner") && text(&r).contains("--danger-plaintext-export"),
        "{}",
        text(&r)
    );
    assert!(
        !d.join("a/metrics.jsonl").exists(),
        "it trained before refusing"
    );
    // The owner's SECRET key is not a public key, and is refused as one.
    let owner = d.join("owner");
    assert!(
        goten(&["keygen", "--owner", "--out", owner.to_str().unwrap()])
            .status
            .success()
    );
    let secret = owner.join("owner.key");
    let r = train(
        &d.join("b"),
        &[
            "--export",
            d.join("m").to_str().unwrap(),
            "--model-owner",
            secret.to_str().unwrap(),
        ],
    );
    assert_eq!(r.status.code(), Some(2), "{}", text(&r));
    assert!(text(&r).contains("SECRET key"), "{}", text(&r));
    // Plain mode protects nothing, so its export stays a plain safetensors file.
    let m = d.join("plain.safetensors");
    let r = goten(&[
        "train",
        "--mode",
        "plain",
        "--synthetic-train",
        "64",
        "--test-limit",
        "16",
        "--steps",
        "1",
        "--out",
        d.join("c").to_str().unwrap(),
        "--export",
        m.to_str().unwrap(),
    ]);
    assert!(r.status.success(), "{}", text(&r));
    let b = std::fs::read(&m).unwrap();
    let header = u64::from_le_bytes(b[..8].try_into().unwrap()) as usize;
    assert!(
        std::str::from_utf8(&b[8..8 + header])
            .unwrap()
            .contains("\"F32\"")
    );
}
