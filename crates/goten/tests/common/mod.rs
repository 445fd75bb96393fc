//! Helpers shared by the CLI tests: running the real binary, scratch folders, output text and
//! a small CIFAR-layout dataset.
#![allow(dead_code)] // each test binary uses its own subset

pub mod datasets;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `goten` binary, with progress bars off.
pub fn exe() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_goten"));
    c.env("CI", "1");
    c
}

/// Runs `goten` with `args` to completion.
pub fn goten(args: &[&str]) -> Output {
    exe().args(args).output().expect("run goten")
}

/// A fresh scratch folder for test `name` of suite `suite`, under Cargo's `target/tmp` (a rerun
/// replaces it, so repeated test runs do not pile folders up in /tmp).
pub fn tmp(suite: &str, name: &str) -> PathBuf {
    let d = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("goten-{suite}-{name}"));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Stdout and stderr of a finished command, for assertions and failure messages.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Writes `data_batch_1.bin` (`train` records) and `test_batch.bin` (`test` records) in the
/// CIFAR-10 binary layout: learnable labels, deterministic pixels.
pub fn small_cifar(dir: &Path, train: usize, test: usize) {
    std::fs::create_dir_all(dir).unwrap();
    let make =
        |n: usize, salt: usize| -> Vec<u8> {
            (0..n)
                .flat_map(|i| {
                    let label = ((i * 7 + salt) % 10) as u8;
                    std::iter::once(label).chain((0..3072).map(move |j| {
                        (u32::from(label) * 20 + ((i * 31 + j * 17) % 40) as u32) as u8
                    }))
                })
                .collect()
        };
    std::fs::write(dir.join("data_batch_1.bin"), make(train, 0)).unwrap();
    std::fs::write(dir.join("test_batch.bin"), make(test, 3)).unwrap();
}

/// Keys and a cluster file for three parties on free loopback ports, through `goten keygen`.
pub fn keygen_cluster(d: &Path) -> PathBuf {
    let keys = d.join("keys");
    for id in 0..3 {
        let addr = free_addr();
        let id_s = id.to_string();
        let mut args = vec![
            "keygen",
            "--id",
            &id_s,
            "--out",
            keys.to_str().unwrap(),
            "--danger-deterministic-keys",
            "5",
        ];
        if id < 2 {
            args.extend(["--address", &addr]);
        }
        let r = goten(&args);
        assert!(r.status.success(), "{}", text(&r));
    }
    let cluster: String = (0..3)
        .map(|i| std::fs::read_to_string(keys.join(format!("party-{i}.toml"))).unwrap())
        .collect();
    let path = keys.join("cluster.toml");
    std::fs::write(&path, cluster).unwrap();
    path
}

/// A loopback address with a port that is free and that no other cluster of this process gets
/// (outside the ephemeral range: see `goten_runtime::ports`).
pub fn free_addr() -> String {
    let port = goten_runtime::ports::reserve_loopback_port().unwrap();
    format!("127.0.0.1:{port}")
}

/// The lines of a run's `metrics.jsonl`.
pub fn metrics(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The (step, loss) pairs a run released, from its `metrics.jsonl`.
pub fn losses(dir: &Path) -> Vec<(u64, f64)> {
    metrics(dir)
        .iter()
        .filter_map(|v| Some((v["step"].as_u64()?, v["loss"].as_f64()?)))
        .collect()
}
