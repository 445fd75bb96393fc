//! The data owner's channel through the real binary: the data key reaches goten mode's
//! enclaves only sealed to their attested service key. In one process (enclaves in-process and
//! as processes), through the TCP launcher, and in a deployment where no party has the key:
//! `goten provision` verifies both enclaves and releases it, and a cluster that pins another
//! measurement makes the owner refuse.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use common::{exe, goten, small_cifar, text};

fn tmp(name: &str) -> PathBuf {
    common::tmp("provision", name)
}

/// A small CIFAR-layout dataset, sealed; returns (plain folder, sealed folder, key file).
fn sealed_data(d: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let plain = d.join("plain");
    small_cifar(&plain, 64, 32);
    let sealed = d.join("sealed");
    let r = goten(&[
        "seal-data",
        "--data",
        plain.to_str().unwrap(),
        "--out",
        sealed.to_str().unwrap(),
    ]);
    assert!(r.status.success(), "{}", text(&r));
    (plain, sealed, d.join("sealed.key"))
}

/// Training options shared by every run here.
const JOB: &[&str] = &[
    "--batch",
    "16",
    "--steps",
    "3",
    "--test-limit",
    "32",
    "--danger-deterministic-keys",
    "6",
    "--json",
];

fn loss(o: &Output) -> serde_json::Value {
    let line = String::from_utf8_lossy(&o.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .to_string();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
    v["test_accuracy"].clone()
}

#[test]
fn goten_mode_takes_the_key_only_through_the_service_key() {
    let d = tmp("local");
    let (plain, sealed, key) = sealed_data(&d);
    let run = |data: &Path, name: &str, extra: &[&str]| {
        let mut a = vec!["train", "--data", data.to_str().unwrap(), "--out"];
        let out = d.join(name);
        a.push(out.to_str().unwrap());
        a.extend_from_slice(JOB);
        a.extend_from_slice(extra);
        goten(&a)
    };
    let reference = run(&plain, "ref", &[]);
    assert!(reference.status.success(), "{}", text(&reference));
    assert!(loss(&reference).is_number(), "{}", text(&reference));
    let k = key.to_str().unwrap();
    for extra in [
        vec!["--data-key", k],
        vec!["--data-key", k, "--enclave", "process"],
        vec!["--data-key", k, "--transport", "tcp"],
    ] {
        let r = run(&sealed, "sealed-out", &extra);
        assert!(r.status.success(), "{extra:?}: {}", text(&r));
        assert!(text(&r).contains("service key"), "{extra:?}: {}", text(&r));
        assert_eq!(
            loss(&r),
            loss(&reference),
            "{extra:?}: sealed data trains differently"
        );
        if !extra.contains(&"tcp") {
            let _ = std::fs::remove_dir_all(d.join("sealed-out"));
        }
    }
    // The launcher's parties got no key: their job files name none.
    for i in 0..3 {
        let p = d.join(format!("sealed-out/cluster/job-{i}.json"));
        let job: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        assert!(job["data_key"].is_null(), "{job}");
    }
    // Without a key in one process: refused before training.
    let r = run(&sealed, "nokey", &[]);
    assert_eq!(r.status.code(), Some(2), "{}", text(&r));
}

fn keygen_cluster(d: &Path, pin: Option<&str>) -> PathBuf {
    let keys = d.join("keys");
    let port = || goten_runtime::ports::reserve_loopback_port().unwrap();
    let mut cluster = String::new();
    for id in 0..3 {
        let addr = format!("127.0.0.1:{}", port());
        let id_s = id.to_string();
        let mut args = vec!["keygen", "--id", &id_s, "--out", keys.to_str().unwrap()];
        if id < 2 {
            args.extend(["--address", &addr]);
        }
        let r = goten(&args);
        assert!(r.status.success(), "{}", text(&r));
        let mut entry = std::fs::read_to_string(keys.join(format!("party-{id}.toml"))).unwrap();
        if id < 2 {
            entry.push_str(&format!("provision_address = \"127.0.0.1:{}\"\n", port()));
        }
        cluster.push_str(&entry);
    }
    if let Some(m) = pin {
        cluster.push_str(&format!("\n[attestation]\nmeasurement = \"{m}\"\n"));
    }
    let path = keys.join("cluster.toml");
    std::fs::write(&path, cluster).unwrap();
    path
}

fn party(cluster: &Path, id: u32, out: &Path, data: &Path) -> Child {
    exe()
        .args(["party", "--id", &id.to_string(), "--cluster"])
        .arg(cluster)
        .arg("--out")
        .arg(out)
        .args([
            "--data",
            data.to_str().unwrap(),
            "--batch",
            "16",
            "--steps",
            "2",
        ])
        .args(["--test-limit", "32", "--timeout", "60"])
        // Nothing in the environment hands a party the key either.
        .env_remove("GOTEN_DATA_KEY")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start a party")
}

fn finish(mut c: Child, limit: Duration) -> (bool, String) {
    let t = Instant::now();
    loop {
        if c.try_wait().unwrap().is_some() {
            let out = c.wait_with_output().unwrap();
            return (
                out.status.success(),
                String::from_utf8_lossy(&out.stderr).into(),
            );
        }
        if t.elapsed() > limit {
            let _ = c.kill();
            let out = c.wait_with_output().unwrap();
            return (false, String::from_utf8_lossy(&out.stderr).into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_data_owner_provisions_parties_that_hold_no_key() {
    let d = tmp("deploy");
    let (_, sealed, key) = sealed_data(&d);
    // The owner keeps the key away from every party: move it out of everyone's reach.
    let owner_dir = d.join("owner-only");
    std::fs::create_dir_all(&owner_dir).unwrap();
    let owner_key = owner_dir.join("data.key");
    std::fs::rename(&key, &owner_key).unwrap();
    let cluster = keygen_cluster(&d, None);
    let kids: Vec<Child> = (0..3)
        .map(|i| party(&cluster, i, &d.join(format!("s{i}")), &sealed))
        .collect();
    let r = goten(&[
        "provision",
        "--cluster",
        cluster.to_str().unwrap(),
        "--data-key",
        owner_key.to_str().unwrap(),
        "--timeout",
        "60",
    ]);
    assert!(r.status.success(), "{}", text(&r));
    assert!(text(&r).contains("evidence verified"), "{}", text(&r));
    for (i, c) in kids.into_iter().enumerate() {
        let (ok, err) = finish(c, Duration::from_secs(120));
        assert!(ok, "S{i}: {err}");
        assert!(
            !err.contains(owner_key.to_str().unwrap()),
            "S{i} names the owner's key file"
        );
    }
    // No party folder holds a key.
    for i in 0..3 {
        for e in std::fs::read_dir(d.join(format!("s{i}"))).unwrap() {
            let name = e.unwrap().file_name().into_string().unwrap();
            assert!(
                !name.contains("data.key") && !name.ends_with(".key"),
                "S{i}: {name}"
            );
        }
    }
}

#[test]
fn the_owner_refuses_enclaves_the_cluster_does_not_pin() {
    let d = tmp("refuse");
    let (_, sealed, key) = sealed_data(&d);
    // The parties pin this build; the owner's copy of the cluster pins another program.
    let cluster = keygen_cluster(&d, None);
    let owner_view = d.join("owner-cluster.toml");
    let mut text_c = std::fs::read_to_string(&cluster).unwrap();
    text_c.push_str(&format!(
        "\n[attestation]\nmeasurement = \"{}\"\n",
        "cd".repeat(32)
    ));
    std::fs::write(&owner_view, text_c).unwrap();
    let kids: Vec<Child> = (0..3)
        .map(|i| party(&cluster, i, &d.join(format!("s{i}")), &sealed))
        .collect();
    let r = goten(&[
        "provision",
        "--cluster",
        owner_view.to_str().unwrap(),
        "--data-key",
        key.to_str().unwrap(),
        "--timeout",
        "60",
    ]);
    assert_eq!(r.status.code(), Some(3), "{}", text(&r));
    assert!(
        text(&r).contains("not trusted") && text(&r).contains("measurement"),
        "{}",
        text(&r)
    );
    for c in kids {
        let mut c = c;
        let _ = c.kill();
        let _ = c.wait();
    }
}

#[test]
fn the_owners_job_seed_reproduces_a_run_that_no_public_seed_predicts() {
    let d = tmp("seed");
    let (_, sealed, key) = sealed_data(&d);
    let seeds = d.join("seeds");
    for sub in ["a", "b"] {
        let r = goten(&[
            "keygen",
            "--job-seed",
            "--out",
            seeds.join(sub).to_str().unwrap(),
        ]);
        assert!(r.status.success(), "{}", text(&r));
    }
    let (a, b) = (seeds.join("a/job.seed"), seeds.join("b/job.seed"));
    // Fresh keys in every run (no danger flag): only the owner's seed can make runs agree.
    let run = |name: &str, job_seed: &Path, public_seed: &str, extra: &[&str]| -> Vec<u8> {
        let out = d.join(name);
        let model = d.join(format!("{name}.safetensors"));
        let mut args = vec![
            "train",
            "--data",
            sealed.to_str().unwrap(),
            "--data-key",
            key.to_str().unwrap(),
            "--job-seed",
            job_seed.to_str().unwrap(),
            "--seed",
            public_seed,
            "--batch",
            "16",
            "--steps",
            "3",
            "--test-limit",
            "32",
            "--out",
            out.to_str().unwrap(),
            "--export",
            model.to_str().unwrap(),
            "--danger-plaintext-export",
        ];
        args.extend_from_slice(extra);
        let r = goten(&args);
        assert!(r.status.success(), "{name}: {}", text(&r));
        std::fs::read(&model).unwrap()
    };
    let first = run("a1", &a, "1", &[]);
    assert!(
        first == run("a2", &a, "2", &[]),
        "the same job seed gave another model"
    );
    assert!(
        first == run("a3", &a, "3", &["--transport", "tcp"]),
        "through the launcher"
    );
    assert!(
        first != run("b1", &b, "1", &[]),
        "another job seed gave the same model"
    );
    // The seed goes with a sealed dataset's key in goten mode only.
    let r = goten(&["train", "--job-seed", a.to_str().unwrap(), "--steps", "1"]);
    assert_eq!(r.status.code(), Some(2), "{}", text(&r));
    assert!(text(&r).contains("--data-key"), "{}", text(&r));
}
