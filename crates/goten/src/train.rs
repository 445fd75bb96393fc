//! `goten train`: trains a model in plain, enclave or goten mode and reports progress, metrics
//! and the final accuracy.
//!
//! Where it sits: host-side orchestration. The data owner's reader (`goten-data`) supplies raw
//! images; everything that touches their values (normalisation, augmentation, the model,
//! the loss, evaluation) runs in enclave code (`goten_enclave::nn`). In goten mode the three
//! parties run as threads of this process and E0/E1 compare state digests at every evaluation.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::devices::DeviceKind;
use crate::exec::{
    Ckpt, Exec, FloatExec, PartyExec, ck_err, fingerprint, nn, platform_sealing_key,
};
use crate::source::Source;
use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use goten_enclave::nn::checkpoint::Progress;
use goten_enclave::nn::model::StepStats;
use goten_enclave::nn::optim::{Schedule, Sgd};
use goten_enclave::nn::{FloatBackend, Model, ModelKind};
use goten_enclave::quant::QuantConfig;
use goten_enclave::{EnclaveConfig, Role};
use goten_field::Ring;
use goten_party::cluster::SIMULATION_NOTICE;
use goten_party::{ClusterConfig, Party, PartyError, Traffic, Trusts, run_local};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;

/// Execution mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Float32, no protection: the accuracy and cost reference.
    Plain,
    /// Everything inside one enclave on the CPU, linear layers in float32 (the pure-TEE baseline).
    Enclave,
    /// Three parties: linear layers outsourced on secret shares.
    Goten,
}

/// How the parties of goten mode talk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TransportKind {
    /// Threads of this process.
    InProcess,
    /// Separate processes over TLS on loopback.
    Tcp,
}

impl TransportKind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            TransportKind::InProcess => "in-process",
            TransportKind::Tcp => "tcp",
        }
    }
}

/// Learning-rate schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Sched {
    /// Constant rate.
    Constant,
    /// Halve every `--step-epochs` epochs.
    Step,
    /// Cosine decay to zero over the run.
    Cosine,
}

/// Options of `goten train`.
#[derive(Args, Debug, Clone)]
pub struct TrainArgs {
    /// Model: `small` (two conv blocks, quick) or `vgg11` (VGG-11-BN).
    #[arg(long, default_value = "small")]
    pub(crate) model: String,
    /// `synthetic` (generated in memory, no download) or a CIFAR-10 binary folder.
    /// (A folder holding `train.sealed` / `test.sealed` from `goten seal-data` is read sealed.)
    #[arg(long, default_value = "synthetic")]
    pub(crate) data: String,
    /// Execution mode.
    #[arg(long, value_enum, default_value_t = Mode::Goten)]
    pub(crate) mode: Mode,
    /// Passes over the training set.
    #[arg(long, default_value_t = 1)]
    pub(crate) epochs: usize,
    /// Stop after this many steps (default: all steps of all epochs).
    #[arg(long)]
    pub(crate) steps: Option<u64>,
    /// Batch size.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub(crate) batch: u32,
    /// Base learning rate.
    #[arg(long, default_value_t = 0.02)]
    pub(crate) lr: f32,
    /// Learning-rate schedule.
    #[arg(long, value_enum, default_value_t = Sched::Cosine)]
    pub(crate) schedule: Sched,
    /// Epochs between halvings for `--schedule step`.
    #[arg(long, default_value_t = 30)]
    pub(crate) step_epochs: usize,
    /// Seed of weights, data order and augmentation (and of the synthetic data).
    #[arg(long, default_value_t = 1)]
    pub(crate) seed: u64,
    /// Evaluate every N steps (0: at the end of each epoch).
    #[arg(long, default_value_t = 0)]
    pub(crate) eval_every: u64,
    /// Use at most this many training images.
    #[arg(long)]
    pub(crate) train_limit: Option<usize>,
    /// Use at most this many test images.
    #[arg(long, default_value_t = 1000)]
    pub(crate) test_limit: usize,
    /// Images of the synthetic training set.
    #[arg(long, default_value_t = 1024)]
    pub(crate) synthetic_train: usize,
    /// Folder for metrics.jsonl (created if needed).
    #[arg(long, default_value = "goten-run")]
    pub(crate) out: PathBuf,
    /// CPU threads for float products and for each party's device (0: automatic).
    #[arg(long, default_value_t = 0)]
    pub(crate) threads: usize,
    /// Width k of the share ring Z_2^k (goten mode).
    #[arg(long, default_value_t = Ring::DEFAULT_BITS)]
    pub(crate) ring_bits: u32,
    /// Quantization width in bits (goten mode).
    #[arg(long, default_value_t = 8)]
    pub(crate) quant_bits: u32,
    /// Print one JSON object with the results as the last stdout line.
    #[arg(long)]
    pub(crate) json: bool,
    /// Write the trained model to this safetensors file (PyTorch names) for the model owner.
    #[arg(long)]
    pub(crate) export: Option<PathBuf>,
    /// Data key for a sealed dataset (from `goten seal-data`); default: `DATA/data.key`.
    #[arg(long)]
    pub(crate) data_key: Option<PathBuf>,
    /// Continue from the sealed checkpoint in `--out` (same settings required).
    #[arg(long)]
    pub(crate) resume: bool,
    /// Goten mode: `in-process` (three threads, the default) or `tcp` (three processes on
    /// loopback, mutually authenticated TLS, as on separate machines).
    #[arg(long, value_enum, default_value_t = TransportKind::InProcess)]
    pub(crate) transport: TransportKind,
    /// Seconds to wait for any message from another party before giving up (goten mode).
    #[arg(long, default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub(crate) timeout: u64,
    /// Untrusted device of the parties in goten mode: `cpu` or `cuda` (a build with
    /// `--features cuda` and an NVIDIA GPU).
    #[arg(long, value_enum, default_value_t = DeviceKind::Cpu)]
    pub(crate) device: DeviceKind,
    /// Derive every key and mask from this public seed: reproducible runs for tests only.
    #[arg(long, hide = true)]
    pub(crate) danger_deterministic_keys: Option<u64>,
    /// Seal a checkpoint every N steps (0: at every evaluation); one is always sealed at the end.
    #[arg(long, default_value_t = 0)]
    pub(crate) checkpoint_every: u64,
}

/// What a finished run reports.
pub(crate) struct Summary {
    pub(crate) steps: u64,
    images: u64,
    secs: f64,
    train_loss: f32,
    test_accuracy: f64,
}

/// Progress bar, metrics file and running numbers; only E0's thread (or the single plain /
/// enclave run) reports.
pub(crate) struct Reporter {
    bar: ProgressBar,
    metrics: std::fs::File,
    start: Instant,
    images: u64,
    /// Traffic of this party's training steps (not evaluation) and how many steps it covers.
    step_traffic: (Traffic, u64),
    silent: bool,
}

impl Reporter {
    /// `silent`: no progress bar and no messages, only the metrics file (the second enclave
    /// host of a run in this process, whose terminal is S0's).
    pub(crate) fn new(
        total: u64,
        out: &std::path::Path,
        append: bool,
        silent: bool,
    ) -> Result<Self> {
        let metrics = open_metrics(out, append)?;
        let hidden = silent || !std::io::stderr().is_terminal() || std::env::var_os("CI").is_some();
        let bar = ProgressBar::with_draw_target(
            Some(total),
            if hidden {
                ProgressDrawTarget::hidden()
            } else {
                ProgressDrawTarget::stderr()
            },
        );
        bar.set_style(
            ProgressStyle::with_template("{bar:30} {pos}/{len} steps  {msg}  ETA {eta}")
                .expect("valid template"),
        );
        Ok(Reporter {
            bar,
            metrics,
            start: Instant::now(),
            images: 0,
            step_traffic: (Traffic::default(), 0),
            silent,
        })
    }

    /// A message above the progress bar, or on stderr when there is no bar (nothing when silent).
    fn say(&self, msg: String) {
        if self.silent {
            return;
        }
        if self.bar.is_hidden() {
            eprintln!("{msg}");
        } else {
            self.bar.println(msg);
        }
    }

    fn line(&mut self, v: serde_json::Value) {
        // Metrics are best effort: a full disk must not kill a training run.
        let _ = writeln!(self.metrics, "{v}");
    }

    fn step(
        &mut self,
        step: u64,
        epoch: usize,
        lr: f32,
        batch: usize,
        s: &StepStats,
        traffic: Option<Traffic>,
    ) {
        self.images += batch as u64;
        let ips = self.images as f64 / self.start.elapsed().as_secs_f64().max(1e-9);
        self.bar.set_position(step);
        self.bar
            .set_message(format!("loss {:.3}  {:.1} img/s", s.loss, ips));
        let mut v =
            json!({"step": step, "epoch": epoch, "loss": s.loss, "lr": lr, "img_per_s": ips});
        if let Some(t) = traffic {
            let (sum, n) = &mut self.step_traffic;
            sum.sent += t.sent;
            sum.received += t.received;
            *n += 1;
            v["bytes_sent"] = t.sent.into();
            v["bytes_received"] = t.received.into();
        }
        self.line(v);
    }

    fn eval(&mut self, step: u64, epoch: usize, loss: f32, acc: f64) {
        self.say(format!(
            "step {step} (epoch {epoch}): test accuracy {:.2} %, test loss {loss:.3}",
            100.0 * acc
        ));
        self.line(json!({"step": step, "epoch": epoch, "test_loss": loss, "test_accuracy": acc}));
    }
}

pub(crate) struct Job<'a> {
    pub(crate) args: &'a TrainArgs,
    pub(crate) kind: ModelKind,
    pub(crate) train: &'a Source,
    pub(crate) test: &'a Source,
    pub(crate) schedule: Schedule,
    pub(crate) total_steps: u64,
}

/// A permutation of 0..n for `epoch`, from the seed.
fn order(n: usize, seed: u64, epoch: usize) -> Vec<usize> {
    let mut k = [0u8; 32];
    k[..8].copy_from_slice(&seed.to_le_bytes());
    let mut r = vec![0u32; n];
    goten_field::Prg::new(
        &goten_field::SecretKey::from_bytes(k),
        "train/order",
        epoch as u64,
    )
    .fill_u32(0, 0, &mut r);
    let mut p: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        p.swap(i, (r[i] as usize) % (i + 1));
    }
    p
}

fn evaluate(exec: &mut dyn Exec, m: &mut Model, job: &Job<'_>) -> Result<(f32, f64), PartyError> {
    let (mut loss, mut correct) = (0f64, 0usize);
    let b = job.args.batch as usize;
    let n = job.test.len();
    for start in (0..n).step_by(b) {
        let idx: Vec<usize> = (start..(start + b).min(n)).collect();
        let (x, labels) = job.test.batch(&idx, None)?;
        let (l, c) = exec.eval(m, x, &labels)?;
        loss += f64::from(l) * idx.len() as f64;
        correct += c;
    }
    Ok((
        (loss / n.max(1) as f64) as f32,
        correct as f64 / n.max(1) as f64,
    ))
}

/// The training loop every mode shares.
pub(crate) fn train_loop(
    exec: &mut dyn Exec,
    job: &Job<'_>,
    ck: &Ckpt<'_>,
    reporter: Option<&Mutex<Reporter>>,
) -> Result<Summary, PartyError> {
    let a = job.args;
    let (mut model, start_at) = if a.resume {
        exec.restore(ck, job)?
    } else {
        (
            job.kind.build(a.seed, goten_data::CLASSES).map_err(nn)?,
            Progress::default(),
        )
    };
    let b = a.batch as usize;
    let per_epoch = job.train.len().div_ceil(b) as u64;
    let (mut step, mut images, mut last_loss) = (start_at.step, start_at.images, f32::NAN);
    let first_images = images;
    let start = Instant::now();
    let report = |f: &mut dyn FnMut(&mut Reporter)| {
        if let Some(r) = reporter {
            f(&mut r.lock().expect("reporter lock"));
        }
    };
    // The epoch of the next step, for the checkpoint.
    let next_epoch = |step: u64| step / per_epoch;
    let save = |exec: &mut dyn Exec, model: &mut Model, step: u64, images: u64| {
        exec.checkpoint(
            model,
            Progress {
                step,
                epoch: next_epoch(step),
                prg_step: 0,
                images,
            },
            ck,
        )
    };
    'epochs: for epoch in (start_at.epoch as usize)..a.epochs {
        let ord = order(job.train.len(), a.seed, epoch);
        // On resume, skip the batches of this epoch that were already trained.
        let done_here = step.saturating_sub(epoch as u64 * per_epoch) as usize;
        for chunk in ord.chunks(b).skip(done_here) {
            if step >= job.total_steps {
                break 'epochs;
            }
            let (x, labels) = job.train.batch(chunk, Some((a.seed, step)))?;
            let lr = job.schedule.lr(a.lr, step, epoch);
            let before = exec.traffic();
            let s = exec.step(&mut model, x, &labels, lr)?;
            let traffic = before.zip(exec.traffic()).map(|(b, a)| a - b);
            step += 1;
            images += chunk.len() as u64;
            last_loss = s.loss;
            report(&mut |r| r.step(step, epoch, lr, chunk.len(), &s, traffic));
            let more = step < job.total_steps;
            if a.eval_every > 0 && step % a.eval_every == 0 && more {
                let (l, ac) = evaluate(exec, &mut model, job)?;
                exec.sync(step, &model)?;
                report(&mut |r| r.eval(step, epoch, l, ac));
                if a.checkpoint_every == 0 {
                    save(exec, &mut model, step, images)?;
                }
            }
            if a.checkpoint_every > 0 && step % a.checkpoint_every == 0 && more {
                save(exec, &mut model, step, images)?;
            }
        }
        if a.eval_every == 0 && epoch + 1 < a.epochs && step < job.total_steps {
            let (l, ac) = evaluate(exec, &mut model, job)?;
            exec.sync(step, &model)?;
            report(&mut |r| r.eval(step, epoch, l, ac));
            if a.checkpoint_every == 0 {
                save(exec, &mut model, step, images)?;
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    save(exec, &mut model, step, images)?;
    let (l, ac) = evaluate(exec, &mut model, job)?;
    exec.sync(step, &model)?;
    report(&mut |r| r.eval(step, a.epochs.saturating_sub(1), l, ac));
    if let (Some(path), Some(_)) = (&a.export, reporter) {
        crate::model_io::write(&model, step, path).map_err(|e| ck_err(format!("{e:#}"), path))?;
    }
    Ok(Summary {
        steps: step,
        images: images - first_images,
        secs,
        train_loss: last_loss,
        test_accuracy: ac,
    })
}

/// Everything a run needs besides the execution: parsed settings and the loaded data.
pub(crate) struct Setup {
    pub(crate) kind: ModelKind,
    pub(crate) enclave: EnclaveConfig,
    pub(crate) train: Source,
    pub(crate) test: Source,
    pub(crate) schedule: Schedule,
    pub(crate) total_steps: u64,
    pub(crate) synthetic: bool,
}

impl Setup {
    pub(crate) fn job<'a>(&'a self, a: &'a TrainArgs) -> Job<'a> {
        Job {
            args: a,
            kind: self.kind,
            train: &self.train,
            test: &self.test,
            schedule: self.schedule,
            total_steps: self.total_steps,
        }
    }

    /// Checkpoint folder, sealing key and the job fingerprint.
    pub(crate) fn ckpt<'a>(&self, a: &'a TrainArgs) -> Result<Ckpt<'a>> {
        Ok(Ckpt {
            dir: &a.out,
            key: platform_sealing_key(&a.out)?,
            fingerprint: fingerprint(a, &self.train, &self.test),
        })
    }
}

/// Checks the options and loads the data.
pub(crate) fn prepare(a: &TrainArgs) -> Result<Setup> {
    let kind = ModelKind::parse(&a.model)
        .with_context(|| format!("unknown model {:?}: choose small or vgg11", a.model))?;
    let ring = Ring::new(a.ring_bits).context("--ring-bits")?;
    let quant = QuantConfig {
        bits: a.quant_bits,
        ..QuantConfig::default()
    };
    quant.validate().context("--quant-bits")?;
    if a.device != DeviceKind::Cpu && a.mode != Mode::Goten {
        bail!(
            "--device {} applies to goten mode's untrusted devices; plain and enclave modes compute inside the (CPU) enclave",
            a.device.name()
        );
    }
    if a.epochs == 0 || a.steps == Some(0) {
        bail!("nothing to train: --epochs and --steps must be at least 1");
    }
    let synthetic = a.data == "synthetic";
    let data_path = std::path::Path::new(&a.data);
    let sealed = !synthetic && data_path.join("train.sealed").exists();
    let (mut train, mut test) = if synthetic {
        let (tr, te) = goten_data::synthetic(a.synthetic_train, a.test_limit.min(10_000), a.seed);
        (Source::Plain(tr), Source::Plain(te))
    } else if sealed {
        let key = a
            .data_key
            .clone()
            .unwrap_or_else(|| data_path.join("data.key"));
        eprintln!(
            "note: sealed dataset; the data key {} is handed to the enclaves (simulation: in a deployment the data owner releases it only to attested enclaves)",
            key.display()
        );
        crate::source::load_sealed(data_path, &key)?
    } else {
        let (tr, te) = goten_data::load_cifar(data_path).context("cannot load the dataset")?;
        (Source::Plain(tr), Source::Plain(te))
    };
    if let Some(n) = a.train_limit {
        train.truncate(n);
    }
    test.truncate(a.test_limit);
    if train.len() == 0 || test.len() == 0 {
        bail!("the dataset is empty after --train-limit / --test-limit");
    }
    if synthetic {
        eprintln!(
            "note: training on SYNTHETIC data ({} images generated in memory); pass --data DIR for CIFAR-10",
            train.len()
        );
    }
    if a.mode == Mode::Goten {
        eprintln!("note: {SIMULATION_NOTICE}");
    }
    if a.danger_deterministic_keys.is_some() {
        eprintln!(
            "WARNING: --danger-deterministic-keys: every key and mask derives from a public seed; this run protects nothing (tests only)"
        );
    }
    let per_epoch = train.len().div_ceil(a.batch as usize) as u64;
    let total_steps = a.steps.unwrap_or(u64::MAX).min(per_epoch * a.epochs as u64);
    let schedule = match a.schedule {
        Sched::Constant => Schedule::Constant,
        Sched::Step => Schedule::Step {
            every: a.step_epochs,
            gamma: 0.5,
        },
        // The planned length, not --steps: stopping early and resuming must see the same rates.
        Sched::Cosine => Schedule::Cosine {
            total: per_epoch * a.epochs as u64,
        },
    };
    Ok(Setup {
        kind,
        enclave: EnclaveConfig { ring, quant },
        train,
        test,
        schedule,
        total_steps,
        synthetic,
    })
}

/// Threads of each party's device.
pub(crate) fn party_threads(a: &TrainArgs, parties_here: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if a.threads == 0 {
        (cores / parties_here).max(1)
    } else {
        a.threads
    }
}

/// The training body of S0 or S1 (`reporter`: this party's progress and metrics).
pub(crate) fn party_body<'a>(
    job: &'a Job<'a>,
    ck: &'a Ckpt<'a>,
    reporter: Option<&'a Mutex<Reporter>>,
) -> impl Fn(&mut Party) -> Result<Summary, PartyError> + Sync + 'a {
    move |p: &mut Party| {
        train_loop(
            &mut PartyExec {
                party: p,
                counter: 0,
                sgd: Sgd::default(),
            },
            job,
            ck,
            reporter,
        )
    }
}

pub fn run(a: TrainArgs) -> Result<()> {
    if a.transport == TransportKind::Tcp {
        return crate::spawn::run(a);
    }
    let setup = prepare(&a)?;
    let job = setup.job(&a);
    let reporter = Mutex::new(Reporter::new(setup.total_steps, &a.out, a.resume, false)?);
    let ck = setup.ckpt(&a)?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let summary = match a.mode {
        Mode::Plain | Mode::Enclave => {
            let threads = if a.threads == 0 { cores } else { a.threads };
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .context("worker threads")?;
            pool.install(|| {
                train_loop(
                    &mut FloatExec(FloatBackend::new(threads), Sgd::default()),
                    &job,
                    &ck,
                    Some(&reporter),
                )
            })?
        }
        Mode::Goten => {
            let cfg = ClusterConfig {
                enclave: setup.enclave,
                timeout: Duration::from_secs(a.timeout),
            };
            let (devices, nets) =
                crate::devices::local_parts(a.device, party_threads(&a, 3), cfg.timeout)?;
            let trusts = match a.danger_deterministic_keys {
                Some(seed) => Trusts::danger_deterministic(seed),
                None => Trusts::generate(),
            };
            // S1 keeps its own metrics (its traffic per step) in OUT/party-1, S2 its traffic per
            // protocol iteration in OUT/party-2, the layout of a `--transport tcp` run.
            let reporter1 = Mutex::new(Reporter::new(
                setup.total_steps,
                &a.out.join("party-1"),
                a.resume,
                true,
            )?);
            let body = |p: &mut Party| {
                let r = if p.role() == Role::S0 {
                    &reporter
                } else {
                    &reporter1
                };
                party_body(&job, &ck, Some(r))(p)
            };
            let run =
                run_local(&cfg, &trusts, devices, nets, &body).context("secure training failed")?;
            let mut dealer_log = DealerLog::open(&a.out.join("party-2"), a.resume)?;
            for &(i, t) in &run.dealer_iterations {
                dealer_log.iteration(i, t);
            }
            let reports: Vec<_> = Role::ALL.into_iter().zip(run.reports).collect();
            report_traffic(&reporter, &reports);
            run.results.0
        }
    };
    finish(&a, &setup, summary, reporter)
}

/// `dir/metrics.jsonl`, creating `dir`; a resumed run (`append`) keeps the lines of the steps
/// before its checkpoint, a new one starts the file afresh.
fn open_metrics(dir: &std::path::Path, append: bool) -> Result<std::fs::File> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create output folder {}", dir.display()))?;
    let path = dir.join("metrics.jsonl");
    std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(append)
        .truncate(!append)
        .open(&path)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// S2's metrics file: bytes sent and received per protocol iteration.
pub(crate) struct DealerLog(std::fs::File);

impl DealerLog {
    pub(crate) fn open(dir: &std::path::Path, append: bool) -> Result<Self> {
        open_metrics(dir, append).map(DealerLog)
    }

    pub(crate) fn iteration(&mut self, i: u64, t: Traffic) {
        // Best effort, like the other metrics.
        let _ = writeln!(
            self.0,
            "{}",
            json!({"party": "S2", "iteration": i, "bytes_sent": t.sent, "bytes_received": t.received})
        );
    }
}

/// Traffic of every party over the run, in the metrics file and on stderr.
pub(crate) fn report_traffic(
    reporter: &Mutex<Reporter>,
    reports: &[(Role, goten_party::PartyReport)],
) {
    let mut r = reporter.lock().expect("reporter lock");
    let mut parts = Vec::new();
    let mut obj = serde_json::Map::new();
    for (role, rep) in reports {
        let t = rep.traffic;
        obj.insert(
            role.to_string(),
            json!({"bytes_sent": t.sent, "bytes_received": t.received}),
        );
        parts.push(format!("{role} sent {:.1} MB", t.sent as f64 / 1e6));
    }
    let (sum, n) = r.step_traffic;
    let per_step =
        (n > 0).then(|| json!({"bytes_sent": sum.sent / n, "bytes_received": sum.received / n}));
    let reporting = reports.first().map_or(Role::S0, |(role, _)| *role);
    r.line(json!({"traffic_total": obj, "traffic_per_training_step": {reporting.to_string(): per_step}}));
    let mut msg = format!(
        "traffic (training, evaluation and key exchange): {}",
        parts.join(", ")
    );
    if n > 0 {
        msg.push_str(&format!(
            "; {reporting} per training step: sent {:.2} MB, received {:.2} MB",
            sum.sent as f64 / n as f64 / 1e6,
            sum.received as f64 / n as f64 / 1e6
        ));
    }
    r.say(msg);
}

/// Plot, summary line and the `--json` object of a finished run.
pub(crate) fn finish(
    a: &TrainArgs,
    setup: &Setup,
    summary: Summary,
    reporter: Mutex<Reporter>,
) -> Result<()> {
    let kind = setup.kind;
    let rep = reporter.into_inner().expect("reporter lock");
    rep.bar.finish_and_clear();
    let mode = format!("{:?}", a.mode).to_lowercase();
    let png = a.out.join("curves.png");
    // The plot is a convenience: failing to draw it must not fail a finished run.
    if let Err(e) = crate::plot::draw(
        &a.out.join("metrics.jsonl"),
        &png,
        &format!("goten train: {} ({mode} mode)", kind.name()),
    ) {
        eprintln!("warning: could not draw {}: {e:#}", png.display());
    }
    let ips = summary.images as f64 / summary.secs.max(1e-9);
    eprintln!(
        "{mode} {}: {} steps, {} images in {:.1} s ({ips:.1} img/s), final train loss {:.3}, test accuracy {:.2} % on {} images; metrics in {}",
        kind.name(),
        summary.steps,
        summary.images,
        summary.secs,
        summary.train_loss,
        100.0 * summary.test_accuracy,
        setup.test.len(),
        a.out.join("metrics.jsonl").display()
    );
    if a.json {
        println!(
            "{}",
            json!({"mode": mode, "model": kind.name(), "steps": summary.steps, "images": summary.images, "img_per_s": ips,
                   "train_loss": summary.train_loss, "test_accuracy": summary.test_accuracy, "synthetic_data": setup.synthetic,
                   "simulated_attestation": a.mode == Mode::Goten, "transport": a.transport.name()})
        );
    }
    Ok(())
}
