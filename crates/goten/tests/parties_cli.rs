//! End-to-end tests of the separate-process deployment through the real binary: `goten keygen`,
//! `goten party` and `goten train --transport tcp` on loopback. Same weights as the in-process
//! run, a killed or stalled party stops the others with its name, resume after a kill
//! reproduces the uninterrupted run, and parties started for different jobs refuse to start.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{exe, goten, keygen_cluster, text};

fn tmp(name: &str) -> PathBuf {
    common::tmp("parties", name)
}

/// A short deterministic job: small model, synthetic data.
const JOB: &[&str] = &[
    "--synthetic-train",
    "256",
    "--test-limit",
    "64",
    "--batch",
    "16",
    "--danger-deterministic-keys",
    "5",
];

#[test]
fn tcp_processes_reach_the_same_weights_as_the_in_process_run() {
    let d = tmp("same");
    let (a, b) = (d.join("a.safetensors"), d.join("b.safetensors"));
    let mut args: Vec<&str> = vec!["train", "--steps", "4", "--json"];
    args.extend(JOB);
    let out_a = d.join("inproc");
    let mut a_args = args.clone();
    a_args.extend([
        "--out",
        out_a.to_str().unwrap(),
        "--export",
        a.to_str().unwrap(),
        "--danger-plaintext-export",
    ]);
    // The TCP run seals its export to the model owner, through S0's party process.
    let owner = d.join("owner");
    let r = goten(&["keygen", "--owner", "--out", owner.to_str().unwrap()]);
    assert!(r.status.success(), "{}", text(&r));
    let sealed = d.join("b.sealed");
    let r = goten(&a_args);
    assert!(r.status.success(), "{}", text(&r));
    let out_b = d.join("tcp");
    let mut b_args = args.clone();
    let owner_pub = owner.join("owner.pub");
    b_args.extend([
        "--out",
        out_b.to_str().unwrap(),
        "--export",
        sealed.to_str().unwrap(),
        "--model-owner",
        owner_pub.to_str().unwrap(),
        "--transport",
        "tcp",
    ]);
    let r = goten(&b_args);
    assert!(r.status.success(), "{}", text(&r));
    let last = String::from_utf8_lossy(&r.stdout)
        .lines()
        .last()
        .unwrap()
        .to_string();
    let v: serde_json::Value = serde_json::from_str(&last).unwrap();
    assert_eq!(v["transport"], "tcp");
    assert_eq!(v["steps"], 4);
    let r = goten(&[
        "decrypt-model",
        "--key",
        owner.join("owner.key").to_str().unwrap(),
        "--input",
        sealed.to_str().unwrap(),
        "--out",
        b.to_str().unwrap(),
    ]);
    assert!(r.status.success(), "{}", text(&r));
    assert!(
        std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap(),
        "weights differ between in-process and TCP runs"
    );
    // Each step's traffic is in S0's metrics, and S1 kept its own.
    let m = std::fs::read_to_string(out_b.join("metrics.jsonl")).unwrap();
    let step: serde_json::Value = serde_json::from_str(m.lines().next().unwrap()).unwrap();
    assert!(step["bytes_sent"].as_u64().unwrap() > 100_000, "{step}");
    assert!(step["bytes_received"].as_u64().unwrap() > 100_000, "{step}");
    assert!(m.contains("traffic_total"));
    assert!(out_b.join("party-1/checkpoint-e1.sealed").exists());
    // The launcher handed each party its job as a file, not as re-spelled flags: the same
    // job, each with its own folder, only S0 exporting.
    let job = |i: usize| -> serde_json::Value {
        let p = out_b.join(format!("cluster/job-{i}.json"));
        serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap()
    };
    let (j0, j1) = (job(0), job(1));
    assert_eq!(j0["steps"], 4);
    assert_eq!(j0["transport"], "tcp");
    assert_eq!(j0["export"], sealed.to_str().unwrap());
    assert_eq!(j0["model_owner"], owner_pub.to_str().unwrap());
    assert!(j1["export"].is_null());
    assert_eq!(j1["out"], out_b.join("party-1").to_str().unwrap());
    for k in [
        "model",
        "batch",
        "seed",
        "lr",
        "synthetic_train",
        "danger_deterministic_keys",
    ] {
        assert_eq!(j0[k], j1[k], "{k}");
    }
    // Every party's traffic per iteration, in both layouts: S1's steps and S2's protocol
    // iterations (4 training steps and the evaluation batches).
    for out in [&out_a, &out_b] {
        let s1 = std::fs::read_to_string(out.join("party-1/metrics.jsonl")).unwrap();
        let first: serde_json::Value = serde_json::from_str(s1.lines().next().unwrap()).unwrap();
        assert!(first["bytes_sent"].as_u64().unwrap() > 100_000, "{first}");
        let s2 = std::fs::read_to_string(out.join("party-2/metrics.jsonl")).unwrap();
        let iters: Vec<serde_json::Value> = s2
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert!(iters.len() >= 5, "{s2}");
        assert!(
            iters
                .iter()
                .all(|v| v["bytes_sent"].as_u64().unwrap() > 100_000)
        );
        assert_eq!(iters[0]["iteration"], 1);
    }
}

fn party(cluster: &Path, id: u32, out: &Path, extra: &[&str]) -> Child {
    exe()
        .args(["party", "--id", &id.to_string(), "--cluster"])
        .arg(cluster)
        .arg("--out")
        .arg(out)
        .args(JOB)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start a party")
}

/// Waits for a child with a deadline; returns (success, stderr, seconds waited).
fn finish(mut c: Child, limit: Duration) -> (bool, String, f64) {
    let t = Instant::now();
    loop {
        if let Some(s) = c.try_wait().unwrap() {
            let out = c.wait_with_output().unwrap();
            return (
                s.success(),
                String::from_utf8_lossy(&out.stderr).into(),
                t.elapsed().as_secs_f64(),
            );
        }
        if t.elapsed() > limit {
            let _ = c.kill();
            panic!("a party did not stop within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn latest_step(out: &Path) -> u64 {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["step"].as_u64())
        .max()
        .unwrap_or(0)
}

#[test]
fn killed_party_stops_the_others_and_resume_reproduces_the_run() {
    let d = tmp("kill");
    let cluster = keygen_cluster(&d);
    let outs: Vec<PathBuf> = (0..3).map(|i| d.join(format!("s{i}"))).collect();
    let run: &[&str] = &[
        "--steps",
        "30",
        "--checkpoint-every",
        "2",
        "--timeout",
        "30",
    ];
    let mut kids: Vec<Child> = (0..3)
        .map(|i| party(&cluster, i, &outs[i as usize], run))
        .collect();
    // Kill S1 once S0 is past a few checkpoints.
    let t = Instant::now();
    while latest_step(&outs[0]) < 5 {
        assert!(t.elapsed() < Duration::from_secs(120), "no progress");
        std::thread::sleep(Duration::from_millis(10));
    }
    kids[1].kill().unwrap();
    let _ = kids[1].wait();
    let killed_at = latest_step(&outs[0]);
    assert!(killed_at < 30, "the run finished before the kill");
    // S0 names S1. S2 serves both and may notice S0's exit first, so it names whichever
    // peer it lost; either way both stop, non-zero, well within the timeout.
    for (i, c) in [(0, kids.remove(0)), (2, kids.remove(1))] {
        let (ok, err, secs) = finish(c, Duration::from_secs(40));
        assert!(!ok, "S{i} should fail when S1 dies");
        let named = if i == 0 {
            err.contains("S1 disconnected") && err.contains("error (another party)")
        } else {
            err.contains("disconnected")
        };
        assert!(named, "S{i} does not report the lost peer: {err}");
        assert!(secs < 35.0, "S{i} took {secs} s to stop");
    }
    // Restart all three with --resume: the run completes, with the weights of an uninterrupted
    // run.
    let export = d.join("resumed.safetensors");
    let exp = export.to_str().unwrap();
    let mut resume: Vec<&str> = run.to_vec();
    resume.push("--resume");
    let kids: Vec<Child> = (0..3)
        .map(|i| {
            let mut extra = resume.clone();
            if i == 0 {
                extra.extend(["--export", exp, "--danger-plaintext-export"]);
            }
            party(&cluster, i, &outs[i as usize], &extra)
        })
        .collect();
    let mut logs = String::new();
    for (i, c) in kids.into_iter().enumerate() {
        let (ok, err, _) = finish(c, Duration::from_secs(180));
        assert!(ok, "S{i} failed on resume: {err}");
        logs.push_str(&err);
    }
    let whole = d.join("whole.safetensors");
    let whole_out = d.join("whole");
    let mut args = vec![
        "train",
        "--steps",
        "30",
        "--out",
        whole_out.to_str().unwrap(),
    ];
    args.extend(JOB);
    let wo = whole.to_str().unwrap().to_string();
    args.extend(["--export", &wo, "--danger-plaintext-export"]);
    let r = goten(&args);
    assert!(r.status.success(), "{}", text(&r));
    assert!(
        std::fs::read(&export).unwrap() == std::fs::read(&whole).unwrap(),
        "resumed run (killed after step {killed_at}) differs from the uninterrupted one: {logs}"
    );
}

#[test]
fn stalled_party_times_out_with_its_name() {
    let d = tmp("stall");
    let cluster = keygen_cluster(&d);
    let outs: Vec<PathBuf> = (0..3).map(|i| d.join(format!("s{i}"))).collect();
    let run: &[&str] = &["--steps", "200", "--timeout", "3"];
    let mut kids: Vec<Child> = (0..3)
        .map(|i| party(&cluster, i, &outs[i as usize], run))
        .collect();
    let t = Instant::now();
    while latest_step(&outs[0]) < 2 {
        assert!(t.elapsed() < Duration::from_secs(120), "no progress");
        std::thread::sleep(Duration::from_millis(10));
    }
    let pid = kids[1].id().to_string();
    let stopped = Command::new("kill").args(["-STOP", &pid]).status();
    if !stopped.is_ok_and(|s| s.success()) {
        eprintln!("skipped: cannot send SIGSTOP here");
        kids.iter_mut().for_each(|k| drop(k.kill()));
        return;
    }
    let s0 = kids.remove(0);
    let (ok, err, secs) = finish(s0, Duration::from_secs(30));
    let _ = kids[0].kill();
    let _ = kids[0].wait();
    let _ = kids[1].kill();
    let _ = kids[1].wait();
    assert!(!ok);
    assert!(
        err.contains("timed out") && err.contains("S1"),
        "S0 does not report S1's stall: {err}"
    );
    assert!(secs < 15.0, "S0 took {secs} s");
}

#[test]
fn an_enclave_with_another_measurement_than_the_cluster_pins_is_refused() {
    let d = tmp("measure");
    let cluster = keygen_cluster(&d);
    // The operator pins a measurement that is not this build's (`goten attestation measure`).
    let mut text = std::fs::read_to_string(&cluster).unwrap();
    text.push_str(&format!(
        "\n[attestation]\nmeasurement = \"{}\"\n",
        "ab".repeat(32)
    ));
    std::fs::write(&cluster, text).unwrap();
    let kids: Vec<Child> = (0..3)
        .map(|i| {
            party(
                &cluster,
                i,
                &d.join(format!("s{i}")),
                &["--steps", "2", "--timeout", "20"],
            )
        })
        .collect();
    let mut refused = 0;
    for c in kids {
        let (ok, err, _) = finish(c, Duration::from_secs(40));
        assert!(!ok);
        if err.contains("measurement") && err.contains(&"ab".repeat(32)) {
            refused += 1;
        }
    }
    // Every party that checks enclave evidence (all three) names the measurement.
    assert!(refused >= 2, "no party named the measurement");
    // A malformed pin is a configuration error before anything starts.
    let mut text = std::fs::read_to_string(&cluster).unwrap();
    text = text.replace(&"ab".repeat(32), "abc");
    std::fs::write(&cluster, text).unwrap();
    let (ok, err, _) = finish(
        party(&cluster, 0, &d.join("bad"), &["--steps", "1"]),
        Duration::from_secs(20),
    );
    assert!(!ok && err.contains("[attestation] measurement"), "{err}");
}

#[test]
fn parties_of_different_jobs_refuse_to_start() {
    let d = tmp("mismatch");
    let cluster = keygen_cluster(&d);
    let kids: Vec<Child> = (0..3)
        .map(|i| {
            let lr = if i == 1 { "0.05" } else { "0.02" };
            party(
                &cluster,
                i,
                &d.join(format!("s{i}")),
                &["--steps", "2", "--lr", lr, "--timeout", "20"],
            )
        })
        .collect();
    for (i, c) in kids.into_iter().enumerate() {
        let (ok, err, _) = finish(c, Duration::from_secs(40));
        assert!(!ok, "S{i} started despite the mismatch");
        assert!(err.contains("different job"), "S{i}: {err}");
    }
}

#[test]
fn a_party_with_another_cluster_file_is_refused_by_name() {
    let d = tmp("deployment");
    let cluster = keygen_cluster(&d);
    // S1's copy differs (an address added to S2's entry): a different deployment.
    let text = std::fs::read_to_string(&cluster).unwrap();
    let other = d.join("other.toml");
    let marker = "id = 2\n";
    assert!(text.contains(marker), "{text}");
    std::fs::write(
        &other,
        text.replace(marker, "id = 2\naddress = \"127.0.0.1:9\"\n"),
    )
    .unwrap();
    let keys = cluster.parent().unwrap();
    let kids: Vec<Child> = (0..3)
        .map(|i| {
            let c = if i == 1 { &other } else { &cluster };
            let key = keys.join(format!("party-{i}.key"));
            party(
                c,
                i,
                &d.join(format!("s{i}")),
                &[
                    "--steps",
                    "2",
                    "--timeout",
                    "20",
                    "--key",
                    key.to_str().unwrap(),
                ],
            )
        })
        .collect();
    let errs: Vec<String> = kids
        .into_iter()
        .map(|c| {
            let (ok, err, _) = finish(c, Duration::from_secs(40));
            assert!(!ok);
            err
        })
        .collect();
    assert!(
        errs[0].contains("S1 was started with a different deployment"),
        "{}",
        errs[0]
    );
    assert!(
        errs[1].contains("S0 was started with a different deployment"),
        "{}",
        errs[1]
    );
    // Every party printed the fingerprints to compare, and its deployment hash.
    for e in &errs {
        assert!(
            e.contains("S0 key fingerprint") && e.contains("deployment "),
            "{e}"
        );
    }
}

#[test]
fn keygen_prints_the_fingerprint_parties_print_and_danger_is_loud() {
    let d = tmp("fingerprint");
    let r = goten(&[
        "keygen",
        "--id",
        "2",
        "--out",
        d.to_str().unwrap(),
        "--danger-deterministic-keys",
        "5",
    ]);
    assert!(r.status.success());
    let out = text(&r);
    assert!(
        out.contains("WARNING: --danger-deterministic-keys"),
        "{out}"
    );
    let fp = out
        .lines()
        .find_map(|l| l.split("S2 key fingerprint ").nth(1))
        .map(|rest| rest[..39].to_string())
        .expect("keygen prints the fingerprint");
    let key = std::fs::read_to_string(d.join("party-2.key")).unwrap();
    assert!(key.contains("DANGER"));
    let d2 = tmp("fingerprint-cluster");
    let cluster = keygen_cluster(&d2);
    // A deterministic key file without the flag is refused before anything starts.
    let mut args = vec!["party", "--id", "0", "--cluster", cluster.to_str().unwrap()];
    let r = goten(&args);
    assert_eq!(r.status.code(), Some(2), "{}", text(&r));
    assert!(
        text(&r).contains("made with --danger-deterministic-keys"),
        "{}",
        text(&r)
    );
    // The fingerprint keygen printed is what the party prints for that entry.
    let mut text_cluster = std::fs::read_to_string(&cluster).unwrap();
    let theirs = std::fs::read_to_string(d.join("party-2.toml")).unwrap();
    let start = text_cluster.rfind("[[party]]").unwrap();
    text_cluster.truncate(start);
    text_cluster.push_str(&theirs);
    std::fs::write(&cluster, text_cluster).unwrap();
    args.extend([
        "--danger-deterministic-keys",
        "5",
        "--timeout",
        "1",
        "--steps",
        "1",
    ]);
    let r = goten(&args);
    assert!(
        text(&r).contains(&format!("S2 key fingerprint {fp}")),
        "{}",
        text(&r)
    );
    assert!(text(&r).contains("WARNING: --danger-deterministic-keys"));
}

#[test]
fn party_errors_are_clear() {
    let d = tmp("errors");
    let cluster = keygen_cluster(&d);
    let keys = cluster.parent().unwrap();
    // Another party's key.
    let r = goten(&[
        "party",
        "--id",
        "0",
        "--cluster",
        cluster.to_str().unwrap(),
        "--key",
        keys.join("party-1.key").to_str().unwrap(),
    ]);
    assert!(!r.status.success());
    assert!(text(&r).contains("is the key of S1"), "{}", text(&r));
    // A missing cluster file.
    let r = goten(&[
        "party",
        "--id",
        "0",
        "--cluster",
        "/nonexistent/cluster.toml",
    ]);
    assert!(!r.status.success());
    assert!(
        text(&r).contains("cannot read the cluster file"),
        "{}",
        text(&r)
    );
    // A malformed one.
    let bad = d.join("bad.toml");
    std::fs::write(&bad, "[[party]]\nid = 7\n").unwrap();
    let r = goten(&["party", "--id", "0", "--cluster", bad.to_str().unwrap()]);
    assert!(!r.status.success());
    assert!(text(&r).contains("bad.toml"), "{}", text(&r));
    // keygen refuses to overwrite a key and requires an address for S0/S1.
    let r = goten(&["keygen", "--id", "2", "--out", keys.to_str().unwrap()]);
    assert!(!r.status.success());
    assert!(text(&r).contains("must not exist"), "{}", text(&r));
    let r = goten(&[
        "keygen",
        "--id",
        "0",
        "--out",
        d.join("k2").to_str().unwrap(),
    ]);
    assert!(!r.status.success());
    assert!(text(&r).contains("--address"), "{}", text(&r));
    // A job file that is not one, or holds a bad setting, names the file and the setting,
    // and the job file excludes training flags.
    let job = d.join("job.json");
    for (content, want) in [
        ("{\"epochs\": 2, \"bach\": 3}", "unknown field `bach`"),
        ("{\"mode\": \"goten\", \"loss_window\": 2}", "loss window 2"),
    ] {
        std::fs::write(&job, content).unwrap();
        let c = cluster.to_str().unwrap();
        let r = goten(&[
            "party",
            "--id",
            "0",
            "--cluster",
            c,
            "--job",
            job.to_str().unwrap(),
        ]);
        assert_eq!(r.status.code(), Some(2), "{}", text(&r));
        assert!(
            text(&r).contains("job.json") && text(&r).contains(want),
            "{}",
            text(&r)
        );
    }
    let c = cluster.to_str().unwrap();
    let r = goten(&[
        "party",
        "--id",
        "0",
        "--cluster",
        c,
        "--job",
        "j",
        "--epochs",
        "3",
    ]);
    assert_eq!(r.status.code(), Some(2), "{}", text(&r));
    assert!(text(&r).contains("cannot be used with"), "{}", text(&r));
    // Plain mode has no parties.
    let r = goten(&["train", "--mode", "plain", "--transport", "tcp"]);
    assert!(!r.status.success());
    assert!(text(&r).contains("needs goten mode"), "{}", text(&r));
}

/// `--device cuda` where it cannot work (a build without the `cuda` feature, or no GPU) is a
/// clear error, never a panic or a silent fall-back to the CPU.
#[test]
fn cuda_device_without_a_gpu_is_a_clear_error() {
    if std::env::var_os("GOTEN_REQUIRE_CUDA").is_some() {
        eprintln!("skipped: GOTEN_REQUIRE_CUDA is set, so a GPU is expected here");
        return;
    }
    for args in [
        &["train", "--device", "cuda", "--steps", "1"][..],
        &["bench", "kernels", "--device", "cuda", "--filter", "fc3"][..],
    ] {
        let r = goten(args);
        let t = text(&r);
        assert!(!r.status.success(), "{args:?} succeeded without a GPU: {t}");
        assert!(
            t.contains("CUDA") && !t.contains("panicked"),
            "{args:?}: {t}"
        );
    }
    let r = goten(&["train", "--mode", "plain", "--device", "cuda"]);
    assert!(!r.status.success());
    assert!(text(&r).contains("applies to goten mode"), "{}", text(&r));
}
