//! End-to-end tests of `goten train` through the real binary: help, errors with clear messages
//! and non-zero exits, and short real runs in every mode.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod common;
use common::{losses, metrics, small_cifar};

fn goten(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_goten"))
        .args(args)
        .env("CI", "1")
        .output()
        .expect("run goten")
}

fn shared_data() -> Option<PathBuf> {
    let d =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/cifar-10-batches-bin");
    // CI sets GOTEN_REQUIRE_DATA: there a missing folder is a failure, not a skip.
    assert!(
        d.exists() || std::env::var_os("GOTEN_REQUIRE_DATA").is_none(),
        "{} is missing but GOTEN_REQUIRE_DATA is set",
        d.display()
    );
    d.exists().then_some(d)
}

fn tmp(name: &str) -> PathBuf {
    let d = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("goten-train-{name}"));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn last_json(out: &Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.lines().last().expect("a JSON line")).expect("last line is JSON")
}

#[test]
fn help_describes_the_options() {
    let out = goten(&["train", "--help"]);
    assert!(out.status.success());
    let s = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--model",
        "--data",
        "--mode",
        "--epochs",
        "--steps",
        "--batch",
        "--lr",
        "--seed",
        "--eval-every",
        "--out",
        "--threads",
        "--json",
    ] {
        assert!(s.contains(flag), "help lacks {flag}");
    }
}

#[test]
fn bad_input_gives_clear_errors() {
    let out = goten(&["train", "--bogus"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("--bogus"));
    let out = goten(&["train", "--model", "resnet"]);
    assert!(
        !out.status.success()
            && String::from_utf8_lossy(&out.stderr).contains("unknown model \"resnet\"")
    );
    let out = goten(&["train", "--data", "/no/such/folder"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("/no/such/folder") && err.contains("no such folder"),
        "{err}"
    );
    // A truncated batch file is named with the offset of the broken record.
    let d = tmp("corrupt");
    std::fs::write(d.join("data_batch_1.bin"), vec![0u8; 3073 + 10]).unwrap();
    std::fs::write(d.join("test_batch.bin"), vec![0u8; 3073]).unwrap();
    let out = goten(&["train", "--data", d.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("data_batch_1.bin") && err.contains("offset 3073"),
        "{err}"
    );
    assert_eq!(out.status.code(), Some(5), "input data fault: exit 5");
    let out = goten(&["train", "--epochs", "0"]);
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("nothing to train")
    );
    assert_eq!(out.status.code(), Some(2), "configuration fault: exit 2");
}

fn quick_run(mode: &str, data: &[&str], name: &str) -> (serde_json::Value, Vec<serde_json::Value>) {
    let dir = tmp(name);
    let mut args = vec![
        "train",
        "--mode",
        mode,
        "--json",
        "--test-limit",
        "300",
        "--out",
        dir.to_str().unwrap(),
    ];
    args.extend_from_slice(data);
    if mode != "plain" {
        // Protected modes release the loss as window means; short windows give a curve.
        args.extend_from_slice(&["--loss-window", "8"]);
    }
    let out = goten(&args);
    assert!(
        out.status.success(),
        "{mode}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    if mode != "plain" {
        assert!(
            stderr.contains("SIMULATION"),
            "{mode} runs must say they are simulated"
        );
    }
    let png = std::fs::read(dir.join("curves.png")).expect("a loss/accuracy plot is written");
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let v = last_json(&out);
    for f in [
        "mode",
        "model",
        "steps",
        "images",
        "img_per_s",
        "train_loss",
        "test_accuracy",
    ] {
        assert!(v.get(f).is_some(), "missing {f} in {v}");
    }
    assert_eq!(v["mode"], mode);
    (v, metrics(&dir))
}

fn loss_decreases(mode: &str, m: &[serde_json::Value]) {
    let losses: Vec<f64> = m.iter().filter_map(|v| v["loss"].as_f64()).collect();
    assert!(losses.len() >= 2, "too few loss values: {losses:?}");
    let k = (losses.len() / 4).max(1);
    let first: f64 = losses[..k].iter().sum::<f64>() / k as f64;
    let last: f64 = losses[losses.len() - k..].iter().sum::<f64>() / k as f64;
    assert!(
        last < first,
        "{mode}: loss did not decrease: {first} -> {last} ({losses:?})"
    );
    assert!(
        m.iter().any(|v| v.get("test_accuracy").is_some()),
        "an evaluation is recorded"
    );
}

#[test]
fn synthetic_runs_in_every_mode() {
    for mode in ["plain", "enclave", "goten"] {
        // Two epochs: protected modes draw a fresh batch order each run, and a 12-step run's
        // two loss windows were occasionally too noisy to compare (a flaky failure in CI).
        let (v, m) = quick_run(
            mode,
            &["--synthetic-train", "384", "--batch", "32", "--epochs", "2"],
            &format!("syn-{mode}"),
        );
        assert_eq!(v["synthetic_data"], true);
        assert!(v["test_accuracy"].as_f64().unwrap() > 0.3, "{mode}: {v}");
        loss_decreases(mode, &m);
    }
}

#[test]
fn cifar_subset_runs_in_every_mode() {
    let Some(d) = shared_data() else {
        eprintln!("skipped: ../shared/data not present");
        return;
    };
    for mode in ["plain", "enclave", "goten"] {
        let (v, m) = quick_run(
            mode,
            &[
                "--data",
                d.to_str().unwrap(),
                "--train-limit",
                "512",
                "--epochs",
                "2",
            ],
            &format!("cifar-{mode}"),
        );
        assert_eq!(v["synthetic_data"], false);
        assert_eq!(v["steps"], 32);
        // Chance is 10 %; 300 test images put 18 % about 4.6 standard deviations above it.
        assert!(v["test_accuracy"].as_f64().unwrap() > 0.18, "{mode}: {v}");
        loss_decreases(mode, &m);
    }
}

/// Per-step training losses of a metrics file, by step.
fn train_in(dir: &Path, mode: &str, extra: &[&str]) -> Output {
    let mut args = vec![
        "train",
        "--mode",
        mode,
        "--synthetic-train",
        "256",
        "--test-limit",
        "64",
        "--batch",
        "32",
        "--out",
        dir.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    goten(&args)
}

#[test]
fn resume_continues_exactly_and_refuses_tampering() {
    // Plain mode: 4 steps + resume to 8 equals 8 steps straight.
    let (a, b) = (tmp("resume-a"), tmp("resume-b"));
    assert!(train_in(&a, "plain", &["--steps", "8"]).status.success());
    assert!(train_in(&b, "plain", &["--steps", "4"]).status.success());
    let out = train_in(&b, "plain", &["--steps", "8", "--resume"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        losses(&a),
        losses(&b),
        "resumed losses equal the uninterrupted run's"
    );
    // Goten mode: two resumes of one checkpoint (each a new session with fresh keys) end
    // with the same model bit for bit (single-step losses are not released in goten mode).
    let (c, d) = (tmp("resume-c"), tmp("resume-d"));
    assert!(train_in(&c, "goten", &["--steps", "3"]).status.success());
    // The checkpoints are files in the folder itself (party-N/ hold S1's and S2's metrics
    // only); the sealing key is the platform's, outside the folder.
    for f in std::fs::read_dir(&c).unwrap() {
        let f = f.unwrap().path();
        if f.is_file() {
            std::fs::copy(&f, d.join(f.file_name().unwrap())).unwrap();
        }
    }
    assert!(!c.join("simulated-platform-sealing.key").exists());
    for dir in [&c, &d] {
        let m = dir.join("m.safetensors");
        let out = train_in(
            dir,
            "goten",
            &[
                "--steps",
                "6",
                "--resume",
                "--export",
                m.to_str().unwrap(),
                "--danger-plaintext-export",
            ],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(
        std::fs::read(c.join("m.safetensors")).unwrap(),
        std::fs::read(d.join("m.safetensors")).unwrap()
    );
    // No step appears twice in the metrics after a resume.
    let steps: Vec<u64> = metrics(&c)
        .iter()
        .filter(|v| v.get("lr").is_some())
        .filter_map(|v| v["step"].as_u64())
        .collect();
    assert_eq!(steps, (1..=6).collect::<Vec<_>>());
    // A flipped byte in the newest sealed checkpoint: the resume says so loudly and falls back
    // to the previous one (step 3), which the peer also holds.
    let ck = c.join("checkpoint-e1.sealed");
    let flip = |p: &Path| {
        let mut bytes = std::fs::read(p).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] = bytes[mid].wrapping_add(1);
        std::fs::write(p, bytes).unwrap();
    };
    flip(&ck);
    // Falling back past a stored step needs the user's consent.
    let out = train_in(&c, "goten", &["--steps", "8", "--resume"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains("last stored step 6")
            && err.contains("--allow-rollback"),
        "{err}"
    );
    let out = train_in(
        &c,
        "goten",
        &["--steps", "8", "--resume", "--allow-rollback"],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success()
            && err.contains("WARNING")
            && err.contains("checkpoint-e1.sealed")
            && err.contains("fails authentication")
            && err.contains("step 3"),
        "{err}"
    );
    // Both of E1's checkpoints damaged: a clear error naming the file.
    flip(&c.join("checkpoint-e1.sealed"));
    flip(&c.join("checkpoint-e1.prev.sealed"));
    let out = train_in(&c, "goten", &["--steps", "9", "--resume"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains("checkpoint-e1")
            && err.contains("fails authentication"),
        "{err}"
    );
    assert_eq!(out.status.code(), Some(6), "local storage fault: exit 6");
    // Older checkpoint files copied over newer ones (plain mode: b stored step 8) are refused
    // unless the user asks for it.
    let old_ck = tmp("resume-old");
    assert!(
        train_in(&old_ck, "plain", &["--steps", "2"])
            .status
            .success()
    );
    for f in [
        "checkpoint-enclave.sealed",
        "checkpoint-enclave.prev.sealed",
    ] {
        let _ = std::fs::remove_file(b.join(f));
    }
    std::fs::copy(
        old_ck.join("checkpoint-enclave.sealed"),
        b.join("checkpoint-enclave.sealed"),
    )
    .unwrap();
    let out = train_in(&b, "plain", &["--steps", "8", "--resume"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("last stored step 8") && err.contains("copied over"),
        "{err}"
    );
    assert_eq!(out.status.code(), Some(6));
    let out = train_in(
        &b,
        "plain",
        &["--steps", "8", "--resume", "--allow-rollback"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Other settings than the checkpoint's are refused.
    let out = train_in(&b, "plain", &["--steps", "9", "--resume", "--lr", "0.1"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("different job"),
        "{err}"
    );
    // Nothing to resume.
    let e = tmp("resume-empty");
    let out = train_in(&e, "plain", &["--resume"]);
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("nothing to resume")
    );
}

#[test]
fn exported_model_predicts_like_the_trained_one() {
    let Some(d) = shared_data() else {
        eprintln!("skipped: ../shared/data not present");
        return;
    };
    let dir = tmp("export");
    let model = dir.join("model.safetensors");
    let out = goten(&[
        "train",
        "--mode",
        "plain",
        "--json",
        "--data",
        d.to_str().unwrap(),
        "--train-limit",
        "256",
        "--test-limit",
        "200",
        "--out",
        dir.to_str().unwrap(),
        "--export",
        model.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let trained = last_json(&out)["test_accuracy"].as_f64().unwrap();
    let test_file = d.join("test_batch.bin");
    let out = goten(&[
        "predict",
        "--weights",
        model.to_str().unwrap(),
        "--data",
        test_file.to_str().unwrap(),
        "--limit",
        "200",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = last_json(&out);
    assert_eq!(v["images"], 200);
    assert_eq!(v["predictions"].as_array().unwrap().len(), 200);
    // Plain-mode evaluation and prediction run the same float32 code on the same images.
    assert_eq!(v["accuracy"].as_f64().unwrap(), trained);
    // The file names its tensors as torchvision does.
    let bytes = std::fs::read(&model).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    assert_eq!(
        header["features.0.weight"]["shape"],
        serde_json::json!([16, 3, 3, 3])
    );
    assert_eq!(header["features.1.running_var"]["dtype"], "F32");
    assert_eq!(
        header["classifier.0.weight"]["shape"],
        serde_json::json!([10, 512])
    );
    // Errors: a missing file, and weights of another architecture.
    let out = goten(&[
        "predict",
        "--weights",
        "/no/model.safetensors",
        "--data",
        test_file.to_str().unwrap(),
    ]);
    assert!(
        !out.status.success()
            && String::from_utf8_lossy(&out.stderr).contains("/no/model.safetensors")
    );
    let out = goten(&[
        "predict",
        "--model",
        "vgg11",
        "--weights",
        model.to_str().unwrap(),
        "--data",
        test_file.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("does not fit the vgg11 model"),
        "{err}"
    );
}

/// A small CIFAR-format folder with learnable content (class k images have brightness ~ 20k).
#[test]
fn sealed_data_trains_like_plain_data_and_rejects_tampering() {
    let base = tmp("sealed");
    let plain = base.join("plain");
    small_cifar(&plain, 96, 40);
    let sealed = base.join("sealed");
    let out = goten(&[
        "seal-data",
        "--data",
        plain.to_str().unwrap(),
        "--out",
        sealed.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The key lands beside the sealed folder, never inside what the hosts receive.
    let key = base.join("sealed.key");
    assert!(key.exists() && !sealed.join("data.key").exists());
    let inside = goten(&[
        "seal-data",
        "--data",
        plain.to_str().unwrap(),
        "--out",
        base.join("sealed2").to_str().unwrap(),
        "--key-out",
        base.join("sealed2/k.key").to_str().unwrap(),
    ]);
    assert_eq!(inside.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&inside.stderr).contains("lies inside the sealed output folder")
    );
    // The sealed files hold no plaintext record: no 64-byte run of any image appears in them.
    let raw = std::fs::read(plain.join("data_batch_1.bin")).unwrap();
    let enc = std::fs::read(sealed.join("train.sealed")).unwrap();
    assert!(
        !enc.windows(64).any(|w| w == &raw[1..65]),
        "plaintext visible in the sealed file"
    );
    let run = |data: &Path, name: &str| {
        let o = tmp(name);
        let key_args: &[&str] = if data == sealed.as_path() {
            &["--data-key", key.to_str().unwrap()]
        } else {
            &[]
        };
        let mut args = vec![
            "train",
            "--mode",
            "plain",
            "--data",
            data.to_str().unwrap(),
            "--steps",
            "3",
            "--test-limit",
            "40",
            "--out",
            o.to_str().unwrap(),
            "--json",
        ];
        args.extend(key_args);
        (goten(&args), o)
    };
    let (a, da) = run(&plain, "sealed-a");
    let (b, db) = run(&sealed, "sealed-b");
    assert!(
        a.status.success() && b.status.success(),
        "{}",
        String::from_utf8_lossy(&b.stderr)
    );
    assert_eq!(
        losses(&da),
        losses(&db),
        "sealed and plaintext data give the same training"
    );
    assert_eq!(
        last_json(&a)["test_accuracy"],
        last_json(&b)["test_accuracy"]
    );
    // A flipped byte in one sealed record is caught when that record is opened.
    let mut t = enc.clone();
    let last = t.len() - 20;
    t[last] ^= 1;
    std::fs::write(sealed.join("train.sealed"), &t).unwrap();
    let (c, _) = run(&sealed, "sealed-c");
    let err = String::from_utf8_lossy(&c.stderr);
    assert!(
        !c.status.success() && err.contains("fails authentication"),
        "{err}"
    );
    assert_eq!(
        c.status.code(),
        Some(5),
        "a tampered record is an input data fault"
    );
    // Without --data-key, or with a key inside the data folder, training refuses to start.
    std::fs::write(sealed.join("train.sealed"), &enc).unwrap();
    let nokey = goten(&[
        "train",
        "--data",
        sealed.to_str().unwrap(),
        "--steps",
        "1",
        "--out",
        tmp("sealed-e").to_str().unwrap(),
    ]);
    assert_eq!(nokey.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&nokey.stderr).contains("--data-key"));
    std::fs::copy(&key, sealed.join("data.key")).unwrap();
    let stray = goten(&[
        "train",
        "--data",
        sealed.to_str().unwrap(),
        "--data-key",
        key.to_str().unwrap(),
        "--steps",
        "1",
        "--out",
        tmp("sealed-f").to_str().unwrap(),
    ]);
    assert_eq!(stray.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&stray.stderr).contains("inside the data folder"),
        "{}",
        String::from_utf8_lossy(&stray.stderr)
    );
    std::fs::remove_file(sealed.join("data.key")).unwrap();
    // A wrong data key is refused too.
    std::fs::write(sealed.join("train.sealed"), &enc).unwrap();
    std::fs::write(base.join("other.key"), [9u8; 32]).unwrap();
    let o = tmp("sealed-d");
    let out = goten(&[
        "train",
        "--mode",
        "plain",
        "--data",
        sealed.to_str().unwrap(),
        "--data-key",
        base.join("other.key").to_str().unwrap(),
        "--steps",
        "1",
        "--out",
        o.to_str().unwrap(),
    ]);
    assert!(
        !out.status.success()
            && String::from_utf8_lossy(&out.stderr).contains("fails authentication")
    );
}

/// The README's first command (`goten train` with its defaults) must keep working.
#[test]
fn the_readme_quickstart_command_trains_securely() {
    let dir = tmp("quickstart");
    let out = Command::new(env!("CARGO_BIN_EXE_goten"))
        .args(["train", "--json"])
        .current_dir(&dir)
        .env("CI", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("SYNTHETIC") && err.contains("SIMULATION"),
        "{err}"
    );
    let v = last_json(&out);
    assert_eq!(v["mode"], "goten");
    assert_eq!(v["model"], "small");
    assert!(v["test_accuracy"].as_f64().unwrap() > 0.5, "{v}");
    assert!(
        dir.join("goten-run/metrics.jsonl").exists() && dir.join("goten-run/curves.png").exists()
    );
}

/// Enclave-process pids of a goten run with pid `parent` (from /proc: their command line
/// names the socket in the parent's private folder).
fn enclave_children(parent: u32) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.contains("enclave-process") && cmd.contains(&format!("goten-enclave-{parent}-")) {
            out.push((pid, cmd));
        }
    }
    out
}

#[test]
fn enclave_processes_give_the_same_model_and_a_dead_one_is_named() {
    // Same seed and keys: enclaves in child processes train exactly what in-process ones do.
    let mut exports = Vec::new();
    for kind in ["in-process", "process"] {
        let dir = tmp(&format!("enclave-{kind}"));
        let m = dir.join("m.safetensors");
        let out = train_in(
            &dir,
            "goten",
            &[
                "--steps",
                "5",
                "--enclave",
                kind,
                "--danger-deterministic-keys",
                "4",
                "--export",
                m.to_str().unwrap(),
                "--danger-plaintext-export",
            ],
        );
        assert!(
            out.status.success(),
            "{kind}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        exports.push(std::fs::read(&m).unwrap());
    }
    assert_eq!(exports[0], exports[1], "process mode changes the result");
    // Plain mode has no parties to put enclaves in.
    let out = train_in(&tmp("enclave-plain"), "plain", &["--enclave", "process"]);
    assert_eq!(out.status.code(), Some(2));
    // Kill E1's process mid-run: the run stops at once with an error naming it.
    let dir = tmp("enclave-kill");
    let child = Command::new(env!("CARGO_BIN_EXE_goten"))
        .args([
            "train",
            "--enclave",
            "process",
            "--synthetic-train",
            "4096",
            "--test-limit",
            "64",
            "--out",
            dir.to_str().unwrap(),
        ])
        .env("CI", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let t = std::time::Instant::now();
    let e1 = loop {
        let kids = enclave_children(child.id());
        let started =
            std::fs::read_to_string(dir.join("metrics.jsonl")).is_ok_and(|m| m.contains("\"lr\""));
        if let (true, Some((pid, _))) = (started, kids.iter().find(|(_, c)| c.contains("e1.sock")))
        {
            break *pid;
        }
        assert!(
            t.elapsed().as_secs() < 120,
            "no enclave process or no progress"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    Command::new("kill")
        .args(["-9", &e1.to_string()])
        .status()
        .unwrap();
    let t = std::time::Instant::now();
    let parent = child.id();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("E1's enclave process closed the channel"),
        "{err}"
    );
    assert!(t.elapsed().as_secs() < 30, "took {:?} to stop", t.elapsed());
    // No enclave process outlives its party.
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(
        enclave_children(parent).is_empty(),
        "an enclave process outlived its party"
    );
}

#[test]
fn a_peer_rolled_back_behind_its_receipt_is_refused() {
    let d = tmp("rollback");
    let run = |extra: &[&str]| {
        let mut args = vec!["--epochs", "2", "--checkpoint-every", "2"];
        args.extend_from_slice(extra);
        train_in(&d, "goten", &args)
    };
    assert!(run(&["--steps", "2"]).status.success());
    let old = std::fs::read(d.join("checkpoint-e1.sealed")).unwrap();
    let out = run(&["--steps", "8", "--resume"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // S1's host puts back E1's checkpoint of step 2; E0 holds E1's receipt for step 6.
    for f in ["checkpoint-e1.sealed", "checkpoint-e1.prev.sealed"] {
        std::fs::write(d.join(f), &old).unwrap();
    }
    // A deliberate rollback also rewrites the host's own record of the newest step; only the
    // other enclave's receipt can catch it.
    std::fs::write(d.join("checkpoint-e1.newest"), "2\n").unwrap();
    let out = run(&["--steps", "10", "--resume"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains("refusing to resume from step 2")
            && err.contains("rolled back"),
        "{err}"
    );
    assert_eq!(out.status.code(), Some(6), "{err}");
}
