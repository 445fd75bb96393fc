//! Private prediction end to end, in one process: a goten-mode run's sealed checkpoints served
//! over the Open Inference Protocol, queried by the verifying client; load, bad input,
//! failure and recovery, and what the hosts and devices see.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use goten_enclave::Role;
use goten_enclave::nn::model::argmax;
use goten_party::record::{Recorder, RecordingDevice, RecordingTransport};
use goten_runtime::JobConfig;
use goten_runtime::serve::client::{self, Pin, Verified};
use goten_runtime::serve::cluster::{ServePlan, Status};
use goten_runtime::serve::http::{HttpLimits, HttpServer};
use goten_runtime::serve::local::{LocalServe, LocalServer, Wrap};

/// A trained goten-mode run (sealed checkpoints of E0 and E1) and its plaintext export.
fn run() -> &'static (PathBuf, PathBuf) {
    static RUN: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    RUN.get_or_init(|| {
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("goten-serve-run");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("run")).unwrap();
        let export = dir.join("model.safetensors");
        let c = JobConfig {
            synthetic_train: 256,
            test_limit: 64,
            steps: Some(8),
            out: dir.join("run"),
            export: Some(export.clone()),
            danger_plaintext_export: true,
            ..JobConfig::default()
        };
        let setup = goten_runtime::job::prepare(&c).unwrap();
        goten_runtime::local::run(&c, &setup, [None, None]).unwrap();
        (dir.join("run"), export)
    })
}

/// Query images (the synthetic test split's first `n`).
fn images(n: usize) -> Vec<Vec<u8>> {
    let (_, test) = goten_data::synthetic(8, n, 9);
    (0..n).map(|i| test.image(i).to_vec()).collect()
}

fn serve_config(checkpoint: &Path, wrap: Option<Wrap>) -> LocalServe {
    LocalServe {
        plan: ServePlan {
            checkpoint: checkpoint.to_path_buf(),
            name: None,
            max_batch: 16,
            max_wait: Duration::from_millis(5),
            await_owner: None,
        },
        device: goten_runtime::devices::DeviceKind::Cpu,
        threads: 1,
        timeout: Duration::from_secs(20),
        danger_deterministic_keys: None,
        wrap,
    }
}

struct Served {
    server: Arc<LocalServer>,
    http: HttpServer,
}

impl Served {
    fn start(c: LocalServe, limits: HttpLimits) -> Self {
        let server = Arc::new(LocalServer::start(c).unwrap());
        let http = HttpServer::start("127.0.0.1:0", server.handle(), limits, 2).unwrap();
        Served { server, http }
    }

    fn url(&self) -> String {
        format!("http://{}", self.http.addr())
    }

    fn connect(&self) -> Verified {
        // Through failures and restarts, until ready.
        let t = std::time::Instant::now();
        while !matches!(self.server.status(), Status::Ready(_)) {
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "not ready: {:?}",
                self.server.status()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let (_, m) = self.server.simulated_roots();
        client::connect(
            &self.url(),
            "small",
            &Pin::Measurement(m),
            Duration::from_secs(30),
        )
        .unwrap()
    }
}

/// Float32 logits of the exported model (the plain reference).
fn plain_logits(export: &Path, imgs: &[&[u8]]) -> Vec<f32> {
    let mut m = goten_enclave::nn::ModelKind::Small.build(0, 10).unwrap();
    goten_runtime::model_io::read(&mut m, export).unwrap();
    m.predict_logits(&goten_enclave::nn::input::InputSpec::cifar10(), imgs)
        .unwrap()
}

#[test]
fn serving_computes_what_goten_mode_computes_within_the_quantization_bound() {
    let (ckpt, export) = run();
    let s = Served::start(serve_config(ckpt, None), HttpLimits::default());
    let v = s.connect();
    assert!(v.simulated);
    let imgs = images(24);
    let refs: Vec<&[u8]> = imgs.iter().map(|v| &v[..]).collect();
    // Over HTTP, in requests of 1 and of 5 images; and the batch scorer without HTTP.
    let one: Vec<f32> = v
        .score(&refs, 1)
        .unwrap()
        .answers
        .iter()
        .flat_map(|a| a.logits.clone())
        .collect();
    let five: Vec<f32> = v
        .score(&refs, 5)
        .unwrap()
        .answers
        .iter()
        .flat_map(|a| a.logits.clone())
        .collect();
    let batch = s.server.score(&refs, 16).unwrap();
    let plain = plain_logits(export, &refs);
    let scale = plain.iter().fold(0f32, |m, x| m.max(x.abs())).max(1.0);
    // 8-bit operands with stochastic rounding through every layer, keyed per session (the
    // trained model differs per run too): the worst entry was 0.018-0.089 of the logits' range
    // over 12 runs; a wrong weight or a swapped image is off by the order of the range itself.
    let tol = 0.2 * scale;
    for (name, got) in [("http/1", &one), ("http/5", &five), ("batch", &batch)] {
        assert_eq!(got.len(), 24 * 10, "{name}");
        let worst = got
            .iter()
            .zip(&plain)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(
            worst <= tol,
            "{name}: |goten - plain| up to {worst} (bound {tol})"
        );
        // The same predictions, except where the plain margin is within the bound.
        for (i, (g, p)) in got.chunks(10).zip(plain.chunks(10)).enumerate() {
            let mut sorted = p.to_vec();
            sorted.sort_by(|a, b| b.total_cmp(a));
            if sorted[0] - sorted[1] > 2.0 * tol {
                assert_eq!(argmax(g), argmax(p), "{name}: image {i}");
            }
        }
    }
}

fn post(url: &str, body: &[u8]) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    let mut r = agent
        .post(url)
        .header("content-type", "application/json")
        .send(body)
        .unwrap();
    (r.status().as_u16(), r.body_mut().read_to_string().unwrap())
}

fn get(url: &str) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut r = agent.get(url).call().unwrap();
    (r.status().as_u16(), r.body_mut().read_to_string().unwrap())
}

fn infer_body(datatype: &str, shape: &[i64], data: &[String]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "inputs": [{"name": "query", "datatype": datatype, "shape": shape, "data": data}]
    }))
    .unwrap()
}

#[test]
fn bad_requests_get_a_clear_4xx_and_the_server_keeps_serving() {
    let (ckpt, _) = run();
    let limits = HttpLimits {
        max_body: 64 << 10,
        ..HttpLimits::default()
    };
    let s = Served::start(serve_config(ckpt, None), limits);
    let v = s.connect();
    let infer = format!("{}/v2/models/small/infer", s.url());
    let img = images(1);
    let (sealed, _) =
        goten_enclave::query::seal_query(&v.service_key, "small", [3, 32, 32], &[&img[0]]).unwrap();
    let good = STANDARD.encode(&sealed);
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (
            "malformed JSON",
            b"{\"inputs\": [".to_vec(),
            400,
            "malformed",
        ),
        (
            "wrong datatype",
            infer_body("FP32", &[1], std::slice::from_ref(&good)),
            400,
            "BYTES",
        ),
        (
            "wrong shape",
            infer_body("BYTES", &[2], std::slice::from_ref(&good)),
            400,
            "shape",
        ),
        (
            "not base64",
            infer_body("BYTES", &[1], &["***".into()]),
            400,
            "base64",
        ),
        (
            "oversize body",
            infer_body("BYTES", &[1], &["A".repeat(100 << 10)]),
            413,
            "larger than",
        ),
        (
            "does not decrypt",
            infer_body("BYTES", &[1], &[STANDARD.encode(vec![7u8; 200])]),
            400,
            "does not decrypt",
        ),
    ];
    for (what, body, code, needle) in cases {
        let (got, text) = post(&infer, &body);
        assert_eq!(got, code, "{what}: {text}");
        assert!(text.contains(needle), "{what}: {text}");
    }
    // The good query is answered once; its replay is refused.
    let (code, text) = post(
        &infer,
        &infer_body("BYTES", &[1], std::slice::from_ref(&good)),
    );
    assert_eq!(code, 200, "{text}");
    let (code, text) = post(&infer, &infer_body("BYTES", &[1], &[good]));
    assert_eq!(code, 400, "{text}");
    assert!(text.contains("replayed"), "{text}");
    // Unknown model, endpoint and a bad nonce.
    let (code, text) = post(&format!("{}/v2/models/other/infer", s.url()), b"{}");
    assert_eq!(code, 404, "{text}");
    assert_eq!(get(&format!("{}/v3/nothing", s.url())).0, 404);
    let (code, text) = get(&format!("{}/v2/models/small/attestation?nonce=12", s.url()));
    assert_eq!(code, 400, "{text}");
    // Still serving.
    assert_eq!(get(&format!("{}/v2/health/ready", s.url())).0, 200);
    let refs: Vec<&[u8]> = img.iter().map(|v| &v[..]).collect();
    assert_eq!(v.score(&refs, 1).unwrap().answers.len(), 1);
}

#[test]
fn sixteen_concurrent_clients_each_get_their_own_answers() {
    let (ckpt, _) = run();
    let s = Served::start(serve_config(ckpt, None), HttpLimits::default());
    let v = s.connect();
    let imgs = images(16);
    let refs: Vec<&[u8]> = imgs.iter().map(|v| &v[..]).collect();
    let reference = s.server.score(&refs, 16).unwrap();
    let per_client = 6;
    let scale = reference.iter().fold(0f32, |m, x| m.max(x.abs())).max(1.0);
    // Two noisy evaluations of the same image (see the bound above).
    let tol = 0.4 * scale;
    let done = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|sc| {
        let handles: Vec<_> = (0..16)
            .map(|c| {
                let (v, refs, reference, done) = (&v, &refs, &reference, &done);
                sc.spawn(move || {
                    for k in 0..per_client {
                        // Client c asks about image (c + k) mod 16: answers must be its own.
                        let i = (c + k) % 16;
                        let a = v.query_once([3, 32, 32], &[refs[i]]).unwrap();
                        // The answer opened with this request's answer key and its query's
                        // binding (query_once), so it is this request's; its logits are this
                        // image's within the rounding noise.
                        let want = &reference[i * 10..(i + 1) * 10];
                        let close = a.row(0).iter().zip(want).all(|(x, y)| (x - y).abs() < tol);
                        assert!(close, "client {c} request {k}: {:?} vs {want:?}", a.row(0));
                        done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
    });
    // Every request answered, once each.
    assert_eq!(done.into_inner(), 16 * per_client);
}

#[test]
fn a_failing_cluster_answers_503_with_the_reason_and_recovers_when_repaired() {
    let (ckpt, _) = run();
    // A copy of the run whose E1 checkpoint is damaged: E1 cannot open it.
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("goten-serve-broken");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["checkpoint-e0.sealed", "checkpoint-e1.sealed"] {
        std::fs::copy(ckpt.join(f), dir.join(f)).unwrap();
    }
    let e1 = dir.join("checkpoint-e1.sealed");
    let mut bytes = std::fs::read(&e1).unwrap();
    let n = bytes.len();
    bytes[n - 5] ^= 1;
    std::fs::write(&e1, &bytes).unwrap();
    let s = Served::start(serve_config(&dir, None), HttpLimits::default());
    let t = std::time::Instant::now();
    let status = loop {
        let (code, text) = get(&format!("{}/v2/health/ready", s.url()));
        if code == 503 && text.contains("down") {
            break text;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "no 503: {code} {text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.contains("authentication"), "{status}");
    let (code, text) = post(&format!("{}/v2/models/small/infer", s.url()), b"{}");
    assert_eq!(code, 503, "{text}");
    // Repair the file: the supervisor restarts the parties and serving resumes.
    std::fs::copy(ckpt.join("checkpoint-e1.sealed"), &e1).unwrap();
    let v = s.connect();
    let img = images(1);
    assert_eq!(v.score(&[&img[0]], 1).unwrap().answers.len(), 1);
}

/// Centered ring elements of magnitude under 2^(k-4): about 1/8 of a uniform buffer, nearly
/// all of a plaintext (quantized) one.
fn small_fraction(t: &goten_field::RingTensor) -> f64 {
    let ring = t.ring();
    let half = 1i64 << (ring.bits() - 4);
    let small = t
        .data()
        .iter()
        .filter(|&&v| i64::from(v).abs() < half)
        .count();
    small as f64 / t.len() as f64
}

#[test]
fn hosts_and_devices_receive_only_uniform_shares_and_ciphertext() {
    let (ckpt, _) = run();
    let rec = Recorder::default();
    let r = rec.clone();
    let wrap: Wrap = Arc::new(move |role, d, t| {
        (
            Box::new(RecordingDevice::new(d, role, r.clone())) as Box<dyn goten_device::Device>,
            Box::new(RecordingTransport::new(t, r.clone())) as Box<dyn goten_party::Transport>,
        )
    });
    let s = Served::start(serve_config(ckpt, Some(wrap)), HttpLimits::default());
    let v = s.connect();
    let imgs = images(8);
    let refs: Vec<&[u8]> = imgs.iter().map(|v| &v[..]).collect();
    let answers = v.score(&refs, 2).unwrap().answers;
    drop(s);
    let records = rec.records();
    assert!(records.len() > 50, "recorded {} buffers", records.len());
    for who in Role::ALL {
        assert!(records.iter().any(|r| r.party == who), "{who} saw nothing");
    }
    // Every ring buffer a host or device received looks uniform: no quantized image,
    // activation or logit.
    for r in records.iter().filter(|r| r.tensor.len() >= 256) {
        let f = small_fraction(&r.tensor);
        assert!(
            f < 0.25,
            "{} {}: {f} of entries are small",
            r.party,
            r.source
        );
    }
    // The detector catches a plaintext buffer (the audit can fail).
    let ring = records[0].tensor.ring();
    let leak = goten_field::RingTensor::from_i64(
        ring,
        &[3072],
        &imgs[0]
            .iter()
            .map(|&p| i64::from(p) - 128)
            .collect::<Vec<_>>(),
    )
    .unwrap();
    assert!(small_fraction(&leak) > 0.9);
    // The sealed queries S1's host relayed carry no image bytes, and no logit bytes appear.
    let msgs = rec.messages();
    assert_eq!(msgs.len(), 4, "4 sealed queries of 2 images relayed to S1");
    for (who, m) in &msgs {
        assert_eq!(*who, Role::S1);
        for img in &imgs {
            assert!(!m.windows(32).any(|w| img.windows(32).any(|x| x == w)));
        }
        for a in &answers {
            let bytes: Vec<u8> = a.logits.iter().flat_map(|x| x.to_le_bytes()).collect();
            assert!(!m.windows(8).any(|w| bytes.windows(8).any(|x| x == w)));
        }
    }
}

#[test]
fn the_model_owner_provisions_a_model_sealed_to_the_attested_service_key() {
    let (_, export) = run();
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("goten-serve-owner");
    let _ = std::fs::remove_dir_all(&dir);
    let mut c = serve_config(&dir, None);
    c.plan.await_owner = Some(goten_enclave::nn::ModelKind::Small);
    let s = Served::start(c.clone(), HttpLimits::default());
    let t = std::time::Instant::now();
    while !matches!(s.server.status(), Status::AwaitingModel(_)) {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "{:?}",
            s.server.status()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let (code, text) = get(&format!("{}/v2/health/ready", s.url()));
    assert_eq!(code, 503, "{text}");
    assert!(text.contains("awaiting the model owner"), "{text}");
    // The owner verifies the enclaves (metadata and attestation answer while awaiting).
    let (_, m) = s.server.simulated_roots();
    let v = client::connect(
        &s.url(),
        "small",
        &Pin::Measurement(m),
        Duration::from_secs(30),
    )
    .unwrap();
    // Bytes that are not a model sealed to the service key are refused; still awaiting.
    let (code, text) = post(&format!("{}/v2/models/small/provision", s.url()), b"junk");
    assert_eq!(code, 400, "{text}");
    let model =
        goten_runtime::owner::read_export(goten_enclave::nn::ModelKind::Small, export).unwrap();
    v.provision_model(&model).unwrap();
    assert!(dir.join("checkpoint-e0.sealed").exists() && dir.join("checkpoint-e1.sealed").exists());
    // Serving the owner's model: the plain logits of the same weights within the bound.
    let v = s.connect();
    let imgs = images(4);
    let refs: Vec<&[u8]> = imgs.iter().map(|v| &v[..]).collect();
    let got: Vec<f32> = v
        .score(&refs, 4)
        .unwrap()
        .answers
        .iter()
        .flat_map(|a| a.logits.clone())
        .collect();
    let plain = plain_logits(export, &refs);
    let scale = plain.iter().fold(0f32, |m, x| m.max(x.abs())).max(1.0);
    for (a, b) in got.iter().zip(&plain) {
        assert!((a - b).abs() <= 0.2 * scale, "{a} vs {b}");
    }
    // A second model is refused while serving.
    let (code, text) = post(&format!("{}/v2/models/small/provision", s.url()), b"x");
    assert_eq!(code, 409, "{text}");
    // The enclaves stored sealed copies: a restarted cluster serves without the owner.
    drop(s);
    let s = Served::start(c, HttpLimits::default());
    let v = s.connect();
    assert_eq!(v.score(&refs[..1], 1).unwrap().answers.len(), 1);
}

#[test]
fn a_request_body_that_never_arrives_gets_408_and_the_server_keeps_serving() {
    let (ckpt, _) = run();
    let limits = HttpLimits {
        reply_timeout: Duration::from_secs(2),
        ..HttpLimits::default()
    };
    let s = Served::start(serve_config(ckpt, None), limits);
    s.connect();
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(s.http.addr()).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        c,
        "POST /v2/models/small/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"inputs\""
    )
    .unwrap();
    let mut buf = [0u8; 512];
    let n = c.read(&mut buf).unwrap();
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 408"), "{head}");
    assert_eq!(get(&format!("{}/v2/health/ready", s.url())).0, 200);
}
