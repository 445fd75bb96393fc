//! Private prediction through the real binary: `goten predict --mode goten`, `goten serve
//! --local` and `goten query`, with the JSON shape scripts rely on.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
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
    serve_with(&["--checkpoint", run.to_str().unwrap()], "serving small")
}

/// Starts `goten serve --local` with `args` on a free port; returns once stderr shows `ready`.
fn serve_with(args: &[&str], ready: &str) -> (Server, String) {
    let addr = common::free_addr();
    let mut child = exe()
        .args(["serve", "--local", "--http", &addr])
        .args(args)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let err = child.stderr.take().unwrap();
    let t = Instant::now();
    let mut lines = BufReader::new(err).lines();
    loop {
        let line = lines.next().expect("serve exited").unwrap();
        if line.contains(ready) {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(60), "no start: {line}");
    }
    // Keep draining stderr so the server never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
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
    let scores = |p: &serde_json::Value| -> Vec<f64> {
        p["scores"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect()
    };
    let scale = qp
        .iter()
        .chain(preds)
        .flat_map(scores)
        .fold(1f64, |m, x| m.max(x.abs()));
    for (i, (a, b)) in qp.iter().zip(preds).enumerate() {
        for (x, y) in scores(a).iter().zip(scores(b)) {
            // Two evaluations with their own rounding noise (crates/goten-runtime/tests/serve.rs).
            assert!((x - y).abs() < 0.4 * scale, "image {i}: {a} vs {b}");
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

/// A `goten serve` party of a deployment whose stderr is collected in the background.
struct Party {
    child: Child,
    log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Party {
    fn start(cluster: &Path, id: u32, extra: &[&str]) -> Party {
        let mut child = exe()
            .args(["serve", "--id", &id.to_string(), "--cluster"])
            .arg(cluster)
            .args(["--danger-deterministic-keys", "5", "--timeout", "4"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let err = child.stderr.take().unwrap();
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let l = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let mut g = l.lock().unwrap();
                g.push_str(&line);
                g.push('\n');
            }
        });
        Party { child, log }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Party {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn http_get(url: &str) -> (u16, String) {
    // A bare HTTP/1.1 GET over a socket: the test needs no HTTP client crate.
    use std::io::{Read, Write};
    let rest = url.trim_start_matches("http://");
    let (host, path) = rest.split_once('/').unwrap();
    let Ok(mut s) = std::net::TcpStream::connect(host) else {
        return (0, "connection refused".into());
    };
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    let code = buf
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, buf)
}

fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < limit, "{what} within {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_deployment_serves_verified_queries_and_a_dead_or_stalled_party_turns_into_503_then_recovers() {
    let dir = tmp("deploy");
    train(&dir);
    let run = dir.join("run");
    let test = dir.join("data/test_batch.bin");
    let cluster = common::keygen_cluster(&dir);
    let addr = common::free_addr();
    let url = format!("http://{addr}");
    let run_s = run.to_str().unwrap();
    let s2 = Party::start(&cluster, 2, &[]);
    let mut s1 = Party::start(&cluster, 1, &["--checkpoint", run_s]);
    let s0 = Party::start(&cluster, 0, &["--checkpoint", run_s, "--http", &addr]);
    let ready = || http_get(&format!("{url}/v2/health/ready")).0 == 200;
    wait_for("the deployment serves", Duration::from_secs(60), ready);
    // The line may reach the log reader just after the status turns ready.
    wait_for("S0 announces the model", Duration::from_secs(10), || {
        s0.log().contains("E0 and E1 serve small")
    });
    // The client trusts what the cluster file pins (platform keys and measurement).
    let query = || {
        goten(&[
            "query",
            "--server",
            &url,
            "--model",
            "small",
            "--data",
            test.to_str().unwrap(),
            "--cluster",
            cluster.to_str().unwrap(),
            "--limit",
            "6",
            "--json",
        ])
    };
    let q = query();
    assert!(q.status.success(), "{}\nS0: {}", text(&q), s0.log());
    assert_eq!(
        last_json(&q.stdout)["predictions"]
            .as_array()
            .unwrap()
            .len(),
        6
    );
    // Batch scoring of a whole file through the deployment: the same JSON shape.
    let p = goten(&[
        "predict",
        "--mode",
        "goten",
        "--server",
        &url,
        "--cluster",
        cluster.to_str().unwrap(),
        "--data",
        test.to_str().unwrap(),
        "--json",
    ]);
    assert!(p.status.success(), "{}", text(&p));
    let n = last_json(&p.stdout)["predictions"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(n, 24);
    // S1 dies while the cluster is idle: the heartbeat notices within the timeout and S0's
    // API answers 503 with the reason.
    let _ = s1.child.kill();
    let _ = s1.child.wait();
    let t = Instant::now();
    wait_for("a 503 after S1 died", Duration::from_secs(30), || {
        http_get(&format!("{url}/v2/health/ready")).0 == 503
    });
    let (_, body) = http_get(&format!("{url}/v2/health/ready"));
    assert!(body.contains("down and restarting"), "{body}");
    eprintln!("503 after {:.1} s", t.elapsed().as_secs_f64());
    // Restarting S1 recovers the deployment.
    let _s1 = Party::start(&cluster, 1, &["--checkpoint", run_s]);
    wait_for(
        "the deployment serves again",
        Duration::from_secs(60),
        ready,
    );
    let q = query();
    assert!(q.status.success(), "{}\nS0: {}", text(&q), s0.log());
    // S2 stalls (stopped, its connections open): a timeout, 503 with the reason, no hang;
    // once it continues, the parties reconnect and serve again.
    let pid = s2.child.id().to_string();
    let stop = Command::new("kill").args(["-STOP", &pid]).status();
    if stop.is_ok_and(|s| s.success()) {
        wait_for("a 503 while S2 stalls", Duration::from_secs(30), || {
            http_get(&format!("{url}/v2/health/ready")).0 == 503
        });
        let _ = Command::new("kill").args(["-CONT", &pid]).status();
        wait_for("serving after S2 continues", Duration::from_secs(60), ready);
        let q = query();
        assert!(q.status.success(), "{}", text(&q));
    }
}

#[test]
fn the_model_owner_provisions_a_plain_export_to_an_awaiting_server() {
    let dir = tmp("owner");
    small_cifar(&dir.join("data"), 64, 8);
    let model = dir.join("model.safetensors");
    let out = goten(&[
        "train",
        "--mode",
        "plain",
        "--data",
        dir.join("data").to_str().unwrap(),
        "--steps",
        "2",
        "--export",
        model.to_str().unwrap(),
        "--out",
        dir.join("plain").to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let serving = dir.join("serving");
    let (_server, url) = serve_with(
        &[
            "--checkpoint",
            serving.to_str().unwrap(),
            "--await-model",
            "small",
        ],
        "awaiting the model owner",
    );
    let m = measurement();
    let p = goten(&[
        "provision-model",
        "--server",
        &url,
        "--model",
        "small",
        "--weights",
        model.to_str().unwrap(),
        "--expect-measurement",
        &m,
    ]);
    assert!(p.status.success(), "{}", text(&p));
    assert!(text(&p).contains("provisioned"), "{}", text(&p));
    let q = goten(&[
        "query",
        "--server",
        &url,
        "--model",
        "small",
        "--data",
        dir.join("data/test_batch.bin").to_str().unwrap(),
        "--expect-measurement",
        &m,
        "--json",
    ]);
    assert!(q.status.success(), "{}", text(&q));
    assert_eq!(
        last_json(&q.stdout)["predictions"]
            .as_array()
            .unwrap()
            .len(),
        8
    );
    // A weights file of another architecture is refused on the owner's side.
    let bad = goten(&[
        "provision-model",
        "--server",
        &url,
        "--model",
        "small",
        "--weights",
        model.to_str().unwrap(),
        "--kind",
        "vgg11",
        "--expect-measurement",
        &m,
    ]);
    assert!(!bad.status.success());
    assert!(text(&bad).contains("vgg11"), "{}", text(&bad));
}

/// A model that does not take CIFAR images: LeNet-5 trained on MNIST files is served 1x28x28
/// queries (its metadata says so), and `goten query` sends a dataset folder's test split and
/// names the digits.
#[test]
fn lenet5_on_mnist_is_served_and_queried_from_its_folder() {
    let dir = tmp("lenet5");
    let data = dir.join("mnist");
    std::fs::create_dir_all(&data).unwrap();
    common::datasets::mnist_like(&data, 64, 12);
    let run = dir.join("run");
    let out = goten(&[
        "train",
        "--model",
        "lenet5",
        "--data",
        data.to_str().unwrap(),
        "--batch",
        "32",
        "--steps",
        "2",
        "--out",
        run.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let (_server, url) = serve_with(&["--checkpoint", run.to_str().unwrap()], "serving lenet5");
    let meta = http_get(&format!("{url}/v2/models/lenet5")).1;
    assert!(
        meta.contains("[1,28,28]") || meta.contains("[1, 28, 28]"),
        "{meta}"
    );
    let q = goten(&[
        "query",
        "--server",
        &url,
        "--model",
        "lenet5",
        "--data",
        data.to_str().unwrap(),
        "--expect-measurement",
        &measurement(),
        "--per-request",
        "4",
        "--json",
    ]);
    assert!(q.status.success(), "{}", text(&q));
    let v = last_json(&q.stdout);
    let preds = v["predictions"].as_array().unwrap();
    assert_eq!(preds.len(), 12);
    assert_eq!(preds[0]["scores"].as_array().unwrap().len(), 10);
    let digits = goten_data::DataFormat::Mnist.class_names().unwrap();
    assert!(
        preds
            .iter()
            .all(|p| digits.contains(&p["name"].as_str().unwrap())),
        "{v}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
