//! `goten serve` and `goten query`: private prediction over the Open Inference Protocol.
//!
//! Where it sits: `serve` starts a serving cluster (`goten_runtime::serve`) and its HTTP front
//! end on S0's host; `query` is the querying user's side, which verifies the enclaves before
//! it sends any image and opens the answers on the user's machine.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::json;

use goten_runtime::serve::client::{self, Pin};
use goten_runtime::serve::cluster::{ServePlan, Status};
use goten_runtime::serve::http::{HttpLimits, HttpServer};
use goten_runtime::serve::local::{LocalServe, LocalServer};

use crate::predictions;

/// Options of `goten serve`.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Run S0, S1 and S2 in this process.
    #[arg(long, conflicts_with_all = ["id", "cluster"])]
    local: bool,
    /// Which party of a deployment this process is: 0 (S0, with the HTTP API), 1 (S1) or 2
    /// (S2, the dealer), as with `goten party`.
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..=2), requires = "cluster")]
    id: Option<u8>,
    /// The cluster file of the deployment (`goten keygen`).
    #[arg(long)]
    cluster: Option<PathBuf>,
    /// This party's key file (default: party-ID.key next to the cluster file).
    #[arg(long)]
    key: Option<PathBuf>,
    /// Listen for the other parties here instead of at the cluster file's address.
    #[arg(long)]
    listen: Option<String>,
    /// The --out folder of a goten-mode training run (its sealed checkpoints of E0 and E1;
    /// S0 reads E0's, S1 E1's; S2 needs none). With --await-model: the folder where the
    /// enclaves store their sealed copies of the owner's model.
    #[arg(long, required_unless_present = "id")]
    checkpoint: Option<PathBuf>,
    /// Serve a model the model owner provisions (goten provision-model), of this architecture
    /// (a built-in model name), when the --checkpoint folder holds no sealed checkpoints yet.
    #[arg(long)]
    await_model: Option<String>,
    /// Derive every key from this public seed (tests only; the cluster's keys must have been
    /// made with it).
    #[arg(long, hide = true)]
    danger_deterministic_keys: Option<u64>,
    /// Where the HTTP API listens (S0).
    #[arg(long, default_value = "127.0.0.1:8000")]
    http: String,
    /// The model's name in URLs (default: its kind, e.g. `small`).
    #[arg(long)]
    name: Option<String>,
    /// Most images per forward pass: requests arriving together are batched up to this.
    #[arg(long, default_value_t = 64)]
    max_batch: usize,
    /// Milliseconds to wait for more requests after the first of a batch.
    #[arg(long, default_value_t = 5)]
    max_wait_ms: u64,
    /// Largest request body in bytes.
    #[arg(long, default_value_t = 16 << 20)]
    max_body: usize,
    /// Most requests answered at once; more get 429.
    #[arg(long, default_value_t = 64)]
    max_in_flight: usize,
    /// Seconds a request waits for the cluster before a 503; also a party's wait for another.
    #[arg(long, default_value_t = 60)]
    timeout: u64,
    /// CPU threads per party's device (0: automatic; with `--local` the three devices share one
    /// pool of the machine's cores, or of three times this count).
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

fn plan(a: &ServeArgs) -> Result<ServePlan> {
    let await_owner = a
        .await_model
        .as_deref()
        .map(|k| {
            goten_enclave::nn::ModelKind::parse(k).with_context(|| {
                format!(
                    "--await-model {k:?}: choose one of {}",
                    goten_enclave::nn::ModelKind::names()
                )
            })
        })
        .transpose()?;
    Ok(ServePlan {
        checkpoint: a.checkpoint.clone().unwrap_or_default(),
        name: a.name.clone(),
        max_batch: a.max_batch,
        max_wait: Duration::from_millis(a.max_wait_ms),
        await_owner,
    })
}

fn limits(a: &ServeArgs) -> HttpLimits {
    HttpLimits {
        max_body: a.max_body,
        max_in_flight: a.max_in_flight.max(1),
        reply_timeout: Duration::from_secs(a.timeout.max(1)),
        ..HttpLimits::default()
    }
}

pub fn serve(a: ServeArgs) -> Result<()> {
    if let Some(n) = &a.name
        && !goten_enclave::session::serve::valid_name(n)
    {
        bail!("--name {n:?}: use 1 to 64 letters, digits, '-', '_' or '.'");
    }
    if a.max_batch == 0 {
        bail!("--max-batch must be at least 1");
    }
    eprintln!("note: {}", goten_party::cluster::SIMULATION_NOTICE);
    if let Some(id) = a.id {
        return serve_party(&a, id);
    }
    if !a.local {
        bail!(
            "say where the parties run: --local (all three in this process) or --id N --cluster FILE (one party of a deployment)"
        );
    }
    let timeout = Duration::from_secs(a.timeout.max(1));
    let server = LocalServer::start(LocalServe {
        plan: plan(&a)?,
        device: goten_runtime::devices::DeviceKind::Cpu,
        threads: a.threads,
        timeout,
        danger_deterministic_keys: a.danger_deterministic_keys,
        wrap: None,
    })?;
    let http = HttpServer::start(&a.http, server.handle(), limits(&a), 2)?;
    match server.wait_ready(Duration::from_secs(600)) {
        Status::Ready(r) => eprintln!(
            "serving {} ({}) at http://{}/v2/models/{}: queries sealed to service key {}",
            r.name,
            r.info.kind,
            http.addr(),
            r.name,
            goten_runtime::serve::oip::hex(&r.service_key[..8])
        ),
        Status::Failed(why) => eprintln!("the serving cluster failed to start: {why}; retrying"),
        Status::AwaitingModel(r) => eprintln!(
            "awaiting the model owner's {} model at http://{}/v2/models/{} (goten provision-model)",
            r.info.kind,
            http.addr(),
            r.name
        ),
        Status::Starting => {}
    }
    http.wait();
    Ok(())
}

/// One party of a serving deployment.
fn serve_party(a: &ServeArgs, id: u8) -> Result<()> {
    let role = goten_enclave::Role::ALL[usize::from(id)];
    let cluster = a.cluster.clone().context("--id needs --cluster FILE")?;
    if role != goten_enclave::Role::S2 && a.checkpoint.is_none() {
        bail!("{role} serves its enclave's sealed checkpoint: pass --checkpoint RUN_DIR");
    }
    if a.danger_deterministic_keys.is_some() {
        eprintln!("{}", goten_runtime::party_run::DANGER_KEYS);
    }
    let d = goten_runtime::party_run::Deployment {
        role,
        cluster,
        key: a.key.clone(),
        listen: a.listen.clone(),
        provision_listen: None,
        tee: None,
    };
    let c = goten_runtime::JobConfig {
        timeout: a.timeout.max(1),
        threads: a.threads,
        danger_deterministic_keys: a.danger_deterministic_keys,
        ..goten_runtime::JobConfig::default()
    };
    for line in d.describe(&c)? {
        eprintln!("{role}: {line}");
    }
    let http = (role == goten_enclave::Role::S0).then(|| (a.http.as_str(), limits(a)));
    goten_runtime::serve::deploy::serve_party(&d, &c, &plan(a)?, http)?;
    Ok(())
}

/// Options of `goten query`.
#[derive(Args, Debug)]
pub struct QueryArgs {
    /// The server's base URL, e.g. http://127.0.0.1:8000.
    #[arg(long)]
    server: String,
    /// The model's name.
    #[arg(long)]
    model: String,
    /// A file of CIFAR-10 binary records (label byte + 3072 pixel bytes each), or a dataset
    /// folder in any format `goten train` reads (its test split is sent).
    #[arg(long)]
    data: PathBuf,
    /// Dataset format instead of detection (as for goten train).
    #[arg(long)]
    data_format: Option<String>,
    /// Image folders: resize and centre-crop to N x N (default 32).
    #[arg(long, value_parser = clap::value_parser!(u32).range(4..=1024))]
    image_size: Option<u32>,
    /// Trust the enclaves this cluster file pins (its platform keys and measurement, or its
    /// TEE policy and collateral).
    #[arg(long, conflicts_with = "expect_measurement")]
    cluster: Option<PathBuf>,
    /// Trust enclaves reporting this measurement (64 hex digits; `goten attestation measure`).
    #[arg(long)]
    expect_measurement: Option<String>,
    /// Send at most this many images.
    #[arg(long)]
    limit: Option<usize>,
    /// Images per request.
    #[arg(long, default_value_t = 1)]
    per_request: usize,
    /// Classes shown per image.
    #[arg(long, default_value_t = 3)]
    top: usize,
    /// Image lines shown (text output).
    #[arg(long, default_value_t = 10)]
    show: usize,
    /// Seconds to wait for the server.
    #[arg(long, default_value_t = 60)]
    timeout: u64,
    /// Print one JSON object with every prediction as the last stdout line.
    #[arg(long)]
    json: bool,
}

fn pin(a: &QueryArgs) -> Result<Pin> {
    pin_from(a.cluster.as_deref(), a.expect_measurement.as_deref())
}

fn pin_from(cluster: Option<&std::path::Path>, expect: Option<&str>) -> Result<Pin> {
    if let Some(path) = cluster {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the cluster file {}", path.display()))?;
        let cluster = goten_party::deploy::ClusterFile::parse(&text, &path.display().to_string())?;
        let base = path.parent().unwrap_or(std::path::Path::new("."));
        return Ok(Pin::Verifier(goten_party::deploy::enclave_verifier(
            &cluster, base,
        )?));
    }
    let Some(m) = expect else {
        bail!("say which enclaves to trust: --cluster FILE or --expect-measurement HEX");
    };
    let m: [u8; 32] = goten_runtime::serve::oip::unhex(m.trim())
        .and_then(|b| b.try_into().ok())
        .context("--expect-measurement takes 64 hex digits")?;
    Ok(Pin::Measurement(m))
}

/// Options of `goten provision-model`.
#[derive(Args, Debug)]
pub struct ProvisionModelArgs {
    /// The server's base URL, e.g. http://127.0.0.1:8000.
    #[arg(long)]
    server: String,
    /// The model's name on the server.
    #[arg(long)]
    model: String,
    /// Your model: a safetensors file with goten's export names (goten decrypt-model, a plain
    /// export, or PyTorch with the same names).
    #[arg(long)]
    weights: PathBuf,
    /// Its architecture: a built-in model name.
    #[arg(long, default_value = "small")]
    kind: String,
    /// Trust the enclaves this cluster file pins.
    #[arg(long, conflicts_with = "expect_measurement")]
    cluster: Option<PathBuf>,
    /// Trust enclaves reporting this measurement (64 hex digits).
    #[arg(long)]
    expect_measurement: Option<String>,
    /// Seconds to wait for the server.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
}

/// `goten provision-model`: the model owner verifies the serving enclaves and hands them the
/// model sealed to their attested service key.
pub fn provision_model(a: ProvisionModelArgs) -> Result<()> {
    let pin = pin_from(a.cluster.as_deref(), a.expect_measurement.as_deref())?;
    let kind = goten_enclave::nn::ModelKind::parse(&a.kind).with_context(|| {
        format!(
            "unknown model {:?}: choose one of {}",
            a.kind,
            goten_enclave::nn::ModelKind::names()
        )
    })?;
    let export = goten_runtime::owner::read_export(kind, &a.weights)?;
    let v = client::connect(&a.server, &a.model, &pin, Duration::from_secs(a.timeout))?;
    if v.simulated {
        eprintln!(
            "WARNING: the server's evidence is SIMULATED: it shows which program runs, but no hardware vouches for it"
        );
    }
    v.provision_model(&export)?;
    eprintln!(
        "provisioned {} to E0 and E1 of {} (sealed to their service key); it now serves at {}/v2/models/{}",
        a.weights.display(),
        v.model,
        v.base,
        v.model
    );
    Ok(())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

pub fn query(a: QueryArgs) -> Result<()> {
    let pin = pin(&a)?;
    let (format, _, mut data) =
        crate::predict::load(&a.data, a.data_format.as_deref(), a.image_size)?;
    if let Some(n) = a.limit {
        data.truncate(n);
    }
    if data.is_empty() {
        bail!("{} holds no images", a.data.display());
    }
    let v = client::connect(&a.server, &a.model, &pin, Duration::from_secs(a.timeout))?;
    if v.simulated {
        eprintln!(
            "WARNING: the server's evidence is SIMULATED: it shows which program runs, but no hardware vouches for it"
        );
    }
    eprintln!(
        "verified E0 and E1 of {} at {}; sending {} sealed images",
        v.model,
        v.base,
        data.len()
    );
    let imgs: Vec<&[u8]> = (0..data.len()).map(|i| data.image(i)).collect();
    let scored = v.score(&imgs, a.per_request)?;
    let logits: Vec<f32> = scored
        .answers
        .iter()
        .flat_map(|x| x.logits.clone())
        .collect();
    let classes = v.params.classes;
    let rows: Vec<&[f32]> = logits.chunks_exact(classes).collect();
    let folder = std::mem::take(&mut data.names);
    let folder_names: Vec<&str> = folder.iter().map(String::as_str).collect();
    let names = format.class_names().unwrap_or(&folder_names);
    let mut lat = scored.latencies.clone();
    lat.sort_by(f64::total_cmp);
    let (p50, p99) = (percentile(&lat, 0.5), percentile(&lat, 0.99));
    let mean = lat.iter().sum::<f64>() / lat.len() as f64;
    if a.json {
        let acc = predictions::accuracy(&rows, &data.labels);
        let preds: Vec<_> = rows.iter().map(|r| predictions::entry(names, r)).collect();
        println!(
            "{}",
            json!({
                "predictions": preds,
                "images": data.len(),
                "accuracy": acc,
                "requests": lat.len(),
                "latency_ms": {"p50": p50 * 1e3, "p99": p99 * 1e3, "mean": mean * 1e3},
                "simulated": v.simulated,
            })
        );
    } else {
        predictions::print_text(names, &rows, &data.labels, a.show, a.top);
        println!(
            "{} requests: latency p50 {:.1} ms, p99 {:.1} ms, mean {:.1} ms",
            lat.len(),
            p50 * 1e3,
            p99 * 1e3,
            mean * 1e3
        );
    }
    Ok(())
}
