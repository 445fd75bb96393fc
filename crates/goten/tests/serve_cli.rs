//! Private prediction through the real binary: `goten predict --mode goten`, `goten serve
//! --local` and `goten query`, with the JSON shape scripts rely on.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::{exe, goten, small_cifar, text};

fn tmp(name: &str) -> PathBuf {
    common::tmp("serve", name)
}

/// A short goten-mode run on the small CIFAR-layout data in `dir`.
fn train(dir: &Path) {
    small_cifar(&dir.join("data"), 128, 24);
    let out = goten(&[
        "train",
        "--data",
        dir.join("data").to_str().unwrap(),
        "--test-limit",
        "24",
        "--batch",
        "32",
        "--steps",
        "4",
        "--out",
        dir.join("run").to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
}

fn last_json(stdout: &[u8]) -> serde_json::Value {
    let s = String::from_utf8_lossy(stdout);
    serde_json::from_str(s.lines().last().expect("a JSON line")).unwrap()
}

/// `goten serve` until dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `goten serve --local` on a free port; returns it and its URL once it serves.
fn serve(run: &Path) -> (Server, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut child = exe()
        .args([
            "serve",
            "--local",
            "--checkpoint",
            run.to_str().unwrap(),
            "--http",
            &addr,
        ])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let err = child.stderr.take().unwrap();
    let t = Instant::now();
    let mut lines = BufReader::new(err).lines();
    loop {
        let line = lines.next().expect("serve exited").unwrap();
        if line.contains("serving small") {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(60), "no start: {line}");
    }
    (Server(child), format!("http://{addr}"))
}

fn measurement() -> String {
    let out = goten(&["attestation", "measure"]);
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap()
        .trim()
        .to_string()
}

#[test]
fn serve_and_query_give_the_predictions_of_goten_mode_in_the_same_shape() {
    let dir = tmp("query");
    train(&dir);
    let run = dir.join("run");
    let test = dir.join("data/test_batch.bin");
    let p = goten(&[
        "predict",
        "--mode",
        "goten",
        "--checkpoint",
        run.to_str().unwrap(),
        "--data",
        test.to_str().unwrap(),
        "--json",
    ]);
    assert!(p.status.success(), "{}", text(&p));
    let pv = last_json(&p.stdout);
    let preds = pv["predictions"].as_array().unwrap();
    assert_eq!(preds.len(), 24);
    assert!(preds[0]["class"].is_u64() && preds[0]["name"].is_string());
    assert_eq!(preds[0]["scores"].as_array().unwrap().len(), 10);

    let (_server, url) = serve(&run);
    let m = measurement();
    let q = goten(&[
        "query",
        "--server",
        &url,
        "--model",
        "small",
        "--data",
        test.to_str().unwrap(),
        "--expect-measurement",
        &m,
        "--per-request",
        "5",
        "--json",
    ]);
    assert!(q.status.success(), "{}", text(&q));
    assert!(text(&q).contains("SIMULATED"), "{}", text(&q));
    let qv = last_json(&q.stdout);
    let qp = qv["predictions"].as_array().unwrap();
    assert_eq!(qp.len(), 24, "one entry per image, in file order");
    assert_eq!(qv["requests"], 5);
    assert!(qv["latency_ms"]["p50"].as_f64().unwrap() > 0.0);
    // Both ran the same model in goten mode: equal scores within the rounding noise, in
    // file order.
    for (i, (a, b)) in qp.iter().zip(preds).enumerate() {
        let (sa, sb) = (
            a["scores"].as_array().unwrap(),
            b["scores"].as_array().unwrap(),
        );
        for (x, y) in sa.iter().zip(sb) {
            let d = (x.as_f64().unwrap() - y.as_f64().unwrap()).abs();
            assert!(d < 0.5, "image {i}: {a} vs {b}");
        }
    }

    // A client pinning another measurement refuses the server before sending anything.
    let bad = goten(&[
        "query",
        "--server",
        &url,
        "--model",
        "small",
        "--data",
        test.to_str().unwrap(),
        "--expect-measurement",
        &"0".repeat(64),
    ]);
    assert_eq!(bad.status.code(), Some(3), "{}", text(&bad));
    assert!(text(&bad).contains("refusing the server"), "{}", text(&bad));
    // Nothing to trust: a usage error.
    let none = goten(&[
        "query",
        "--server",
        &url,
        "--model",
        "small",
        "--data",
        test.to_str().unwrap(),
    ]);
    assert_eq!(none.status.code(), Some(2), "{}", text(&none));
}

#[test]
fn serving_refuses_a_run_without_sealed_checkpoints() {
    let dir = tmp("empty");
    let out = goten(&["serve", "--local", "--checkpoint", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("checkpoint-e0.sealed"),
        "{}",
        text(&out)
    );
    let out = goten(&["serve", "--checkpoint", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("--local"), "{}", text(&out));
}
