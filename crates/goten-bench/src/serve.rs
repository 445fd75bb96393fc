//! `goten bench serve`: private prediction against plain float32 inference of the same model
//! in the same run, and the serving latency and batching over HTTP on loopback.
//!
//! Where it sits: beside `goten bench train`. It trains a one-step goten-mode run of each model
//! it needs (sealed checkpoints plus a plaintext export for the reference; the weights' quality
//! does not matter for speed), then measures (1) throughput: batches of `--batch` images scored
//! privately through the serving cluster (no HTTP) against `Model::predict_logits` on the
//! exported weights; (2) latency: one image per request through the HTTP API and the verifying
//! client, at concurrency 1 and `--concurrency`.

use goten_enclave::nn::input::InputSpec;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use goten_enclave::nn::ModelKind;
use goten_runtime::JobConfig;
use goten_runtime::serve::client::{self, Pin};
use goten_runtime::serve::cluster::{ServePlan, ServeStats, Status};
use goten_runtime::serve::http::{HttpLimits, HttpServer};
use goten_runtime::serve::local::{LocalServe, LocalServer};
use serde_json::json;

/// Options of `goten bench serve`.
#[derive(Args, Debug)]
pub struct ServeBenchArgs {
    /// Model of the throughput part: a built-in model name (the latency part uses `small`).
    #[arg(long, default_value = "vgg11")]
    model: String,
    /// Images per batch in the throughput part.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=1024))]
    batch: u32,
    /// Timed batches per side in the throughput part (after one warm-up batch; the plain side
    /// repeats them for at least two seconds).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=100))]
    batches: u32,
    /// Requests per client in the latency part.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    requests: u32,
    /// Clients of the concurrent latency row.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(2..=256))]
    concurrency: u32,
    /// Parts to run, comma-separated: `throughput`, `latency`.
    #[arg(long, default_value = "throughput,latency")]
    parts: String,
    /// Worker threads of each party's device (0: the cores shared by the three parties).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Milliseconds S0 waits for more requests after the first of a batch.
    #[arg(long, default_value_t = 2)]
    max_wait_ms: u64,
    /// Print JSON lines instead of a table.
    #[arg(long)]
    json: bool,
}

/// The benchmark's one-step training run: a scratch folder removed when the benchmark ends
/// (also on errors), holding the sealed checkpoints and the plaintext export.
struct Run {
    dir: tempfile::TempDir,
}

impl Run {
    /// The run folder with the sealed checkpoints.
    fn checkpoint(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    /// The plaintext export (safetensors).
    fn export(&self) -> PathBuf {
        self.dir.path().join("model.safetensors")
    }
}

/// A one-step goten-mode run of `model` in a fresh scratch folder.
fn make_run(model: &str, batch: u32) -> Result<Run> {
    let run = Run {
        dir: tempfile::Builder::new()
            .prefix(&format!("goten-bench-serve-{model}-"))
            .tempdir()
            .context("cannot create the benchmark's scratch folder")?,
    };
    std::fs::create_dir_all(run.checkpoint())?;
    let export = run.export();
    let c = JobConfig {
        model: model.into(),
        synthetic_train: batch as usize,
        test_limit: 16,
        batch,
        steps: Some(1),
        out: run.checkpoint(),
        export: Some(export),
        danger_plaintext_export: true,
        ..JobConfig::default()
    };
    let setup = goten_runtime::job::prepare(&c)?;
    goten_runtime::local::run(&c, &setup, [None, None])?;
    Ok(run)
}

fn images(n: usize) -> Vec<Vec<u8>> {
    let (_, test) = goten_data::synthetic(8, n, 17);
    (0..n).map(|i| test.image(i).to_vec()).collect()
}

fn server(run: &Path, max_batch: usize, a: &ServeBenchArgs) -> Result<LocalServer> {
    let s = LocalServer::start(LocalServe {
        plan: ServePlan {
            checkpoint: run.to_path_buf(),
            name: None,
            max_batch,
            max_wait: Duration::from_millis(a.max_wait_ms),
            await_owner: None,
        },
        device: goten_runtime::devices::DeviceKind::Cpu,
        threads: a.threads,
        timeout: Duration::from_secs(600),
        danger_deterministic_keys: None,
        wrap: None,
    })?;
    match s.wait_ready(Duration::from_secs(600)) {
        Status::Ready(_) => Ok(s),
        other => bail!("the serving cluster did not start: {other:?}"),
    }
}

fn delta(a: ServeStats, b: ServeStats) -> ServeStats {
    ServeStats {
        batches: b.batches - a.batches,
        queries: b.queries - a.queries,
        infer_secs: b.infer_secs - a.infer_secs,
        device_secs: b.device_secs - a.device_secs,
        transport_secs: b.transport_secs - a.transport_secs,
    }
}

/// The split of serving time per image: enclave (quantization, masks, reconstruction, checks,
/// non-linear layers, sealing), S0's device, S0's transport waits.
fn split(st: ServeStats, images: usize) -> serde_json::Value {
    let per = |s: f64| 1e3 * s / images.max(1) as f64;
    json!({
        "enclave_ms_per_image": per(st.infer_secs - st.device_secs - st.transport_secs),
        "device_ms_per_image": per(st.device_secs),
        "transport_ms_per_image": per(st.transport_secs),
        "batches": st.batches,
    })
}

/// Shortest time the plain reference of the throughput part is measured over.
const PLAIN_MIN_SECS: f64 = 2.0;

fn throughput(a: &ServeBenchArgs) -> Result<Vec<serde_json::Value>> {
    let kind =
        ModelKind::parse(&a.model).with_context(|| format!("unknown model {:?}", a.model))?;
    // Declared before the server, so the folder outlives it.
    let run = make_run(&a.model, a.batch)?;
    let b = a.batch as usize;
    let imgs = images(b * (a.batches as usize + 1));
    let refs: Vec<&[u8]> = imgs.iter().map(|v| &v[..]).collect();
    let mut model = kind.build(0, goten_data::CLASSES)?;
    goten_runtime::model_io::read(&mut model, &run.export())?;
    model.predict_logits(&InputSpec::cifar10(), &refs[..b])?;
    // The plain side takes well under a second per pass over the batches: repeat passes for
    // at least PLAIN_MIN_SECS, so that a neighbour's burst on a shared machine cannot swing
    // the ratio's denominator.
    let t = Instant::now();
    let mut scored = 0;
    while scored == 0 || t.elapsed().as_secs_f64() < PLAIN_MIN_SECS {
        for chunk in refs[b..].chunks(b) {
            model.predict_logits(&InputSpec::cifar10(), chunk)?;
        }
        scored += refs.len() - b;
    }
    let plain = scored as f64 / t.elapsed().as_secs_f64();
    let s = server(&run.checkpoint(), b, a)?;
    s.score(&refs[..b], b)?;
    let before = s.stats();
    let t = Instant::now();
    s.score(&refs[b..], b)?;
    let secs = t.elapsed().as_secs_f64();
    let private = (refs.len() - b) as f64 / secs;
    let st = delta(before, s.stats());
    Ok(vec![
        json!({"bench": "serve", "part": "throughput", "model": a.model, "batch": b,
               "side": "plain-f32", "img_per_s": plain}),
        json!({"bench": "serve", "part": "throughput", "model": a.model, "batch": b,
               "side": "goten", "img_per_s": private, "ratio_to_plain": private / plain,
               "split": split(st, refs.len() - b)}),
    ])
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn latency(a: &ServeBenchArgs) -> Result<Vec<serde_json::Value>> {
    let run = make_run("small", 32)?;
    let s = server(&run.checkpoint(), 64, a)?;
    let http = HttpServer::start("127.0.0.1:0", s.handle(), HttpLimits::default(), 2)?;
    let url = format!("http://{}", http.addr());
    let (_, m) = s.simulated_roots();
    let v = client::connect(
        &url,
        "small",
        &Pin::Measurement(m),
        Duration::from_secs(600),
    )?;
    let imgs = images(64);
    let mut out = Vec::new();
    let mut base = 0.0;
    for clients in [1, a.concurrency as usize] {
        v.query_once([3, 32, 32], &[&imgs[0]])?;
        let before = s.stats();
        let t = Instant::now();
        let lat: Vec<f64> = std::thread::scope(|sc| {
            let hs: Vec<_> = (0..clients)
                .map(|c| {
                    let (v, imgs) = (&v, &imgs);
                    sc.spawn(move || -> Result<Vec<f64>> {
                        let mut l = Vec::new();
                        for k in 0..a.requests as usize {
                            let t = Instant::now();
                            v.query_once([3, 32, 32], &[&imgs[(c + k) % 64]])?;
                            l.push(t.elapsed().as_secs_f64());
                        }
                        Ok(l)
                    })
                })
                .collect();
            let mut all = Vec::new();
            for h in hs {
                all.extend(h.join().expect("client thread")?);
            }
            Ok::<_, anyhow::Error>(all)
        })?;
        let secs = t.elapsed().as_secs_f64();
        let st = delta(before, s.stats());
        let mut sorted = lat.clone();
        sorted.sort_by(f64::total_cmp);
        let rps = lat.len() as f64 / secs;
        if clients == 1 {
            base = rps;
        }
        let in_cluster = st.infer_secs / lat.len() as f64;
        let mean = lat.iter().sum::<f64>() / lat.len() as f64;
        out.push(json!({
            "bench": "serve", "part": "latency", "model": "small", "concurrency": clients,
            "requests": lat.len(), "p50_ms": 1e3 * percentile(&sorted, 0.5),
            "p99_ms": 1e3 * percentile(&sorted, 0.99), "mean_ms": 1e3 * mean,
            "req_per_s": rps, "ratio_to_concurrency_1": rps / base,
            "images_per_batch": st.queries as f64 / st.batches.max(1) as f64,
            "split": split(st, lat.len()),
            // Client sealing and opening, HTTP and queueing: the rest of the mean latency.
            "http_and_client_ms_per_request": 1e3 * (mean - in_cluster * st.batches as f64 / st.batches.max(1) as f64).max(0.0),
        }));
    }
    Ok(out)
}

/// Runs `goten bench serve`.
pub fn run(a: ServeBenchArgs) -> Result<()> {
    eprintln!("note: {}", goten_party::cluster::SIMULATION_NOTICE);
    let mut rows = Vec::new();
    for part in a.parts.split(',').map(str::trim) {
        match part {
            "throughput" => rows.extend(throughput(&a)?),
            "latency" => rows.extend(latency(&a)?),
            p => bail!("unknown part {p:?}: choose throughput, latency"),
        }
    }
    for r in &rows {
        if a.json {
            println!("{r}");
        }
    }
    if !a.json {
        println!(
            "{:<11} {:<6} {:<12} {:>10} {:>9} {:>9} {:>8}",
            "part", "model", "side", "rate", "p50 ms", "p99 ms", "ratio"
        );
        for r in &rows {
            let side = r["side"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| format!("conc {}", r["concurrency"]));
            let rate = r["img_per_s"]
                .as_f64()
                .or(r["req_per_s"].as_f64())
                .unwrap_or(f64::NAN);
            let ratio = r["ratio_to_plain"]
                .as_f64()
                .or(r["ratio_to_concurrency_1"].as_f64());
            let f = |k: &str| r[k].as_f64().map_or("-".into(), |v| format!("{v:.1}"));
            println!(
                "{:<11} {:<6} {:<12} {:>10.1} {:>9} {:>9} {:>8}",
                r["part"].as_str().unwrap_or(""),
                r["model"].as_str().unwrap_or(""),
                side,
                rate,
                f("p50_ms"),
                f("p99_ms"),
                ratio.map_or("-".into(), |v| format!("{v:.3}"))
            );
        }
        for r in rows.iter().filter(|r| r.get("split").is_some()) {
            println!(
                "split {} {}: {}",
                r["part"],
                r.get("side").or(r.get("concurrency")).unwrap_or(&json!("")),
                r["split"]
            );
        }
    }
    Ok(())
}
