//! `goten train`: trains a model in plain, enclave or goten mode and reports progress, metrics
//! and the final accuracy.
//!
//! Where it sits: host-side orchestration. The data owner's reader (`goten-data`) supplies raw
//! images; everything that touches their values (normalisation, augmentation, the model,
//! the loss, evaluation) runs in enclave code (`goten_enclave::nn`). In goten mode the three
//! parties run as threads of this process and E0/E1 compare state digests at every evaluation.

use std::sync::Mutex;
use std::time::Duration;

use crate::devices::DeviceKind;
use crate::enclave_proc::EnclaveKind;
use crate::exec::fingerprint;
use crate::options::Sched;
pub(crate) use crate::options::{Mode, TrainArgs, TransportKind, party_threads};
use crate::report::{DealerLog, Reporter, report_traffic};
use crate::source::Source;
use anyhow::{Context, Result, bail};
use goten_enclave::nn::ModelKind;
use goten_enclave::nn::optim::Schedule;
use goten_enclave::quant::QuantConfig;
use goten_enclave::session::{
    LocalSecret, MIN_PROTECTED_WINDOW, Protection, TrainConfig, TrainSession,
};
use goten_enclave::{EnclaveConfig, Role};
use goten_field::{Ring, SecretKey};
use goten_party::cluster::SIMULATION_NOTICE;
use goten_party::ecall::party::{RemoteParty, run_local_remote};
use goten_party::{ClusterConfig, Party, PartyError, Trusts, run_local};
use goten_runtime::store::platform_sealing_key;
use goten_runtime::{CkptStore, LocalHost, LoopPlan, PartyHost, Summary, train_loop};
use serde_json::json;

/// Everything a run needs besides the execution: parsed settings and the loaded data.
pub(crate) struct Setup {
    pub(crate) kind: ModelKind,
    pub(crate) enclave: EnclaveConfig,
    pub(crate) train: Source,
    pub(crate) test: Source,
    pub(crate) schedule: Schedule,
    pub(crate) total_steps: u64,
    pub(crate) synthetic: bool,
    /// Hash of everything a checkpoint must agree with.
    pub(crate) fingerprint: [u8; 32],
    /// The simulated platform's sealing key.
    pub(crate) sealing: SecretKey,
}

impl Setup {
    /// The session's view of the job.
    pub(crate) fn session_config(&self, a: &TrainArgs) -> TrainConfig {
        TrainConfig {
            model: self.kind,
            classes: goten_data::CLASSES,
            seed: a.seed,
            epochs: a.epochs as u64,
            batch: a.batch as usize,
            lr: a.lr,
            schedule: self.schedule,
            total_steps: self.total_steps,
            loss_window: a.loss_window_or_default(),
            protection: if a.mode == Mode::Plain {
                Protection::None
            } else {
                Protection::Protected
            },
            fingerprint: self.fingerprint,
        }
    }

    /// A fresh copy of both splits for one enclave.
    pub(crate) fn splits(&self) -> (goten_enclave::session::Split, goten_enclave::session::Split) {
        (self.train.to_split(), self.test.to_split())
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
    if a.enclave == EnclaveKind::Process && a.mode != Mode::Goten {
        bail!(
            "--enclave process runs E0 and E1 of goten mode as child processes; {} mode has no parties (use --mode goten)",
            a.mode.name()
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
    if a.mode != Mode::Plain {
        eprintln!("note: {SIMULATION_NOTICE}");
    }
    if a.mode != Mode::Plain && a.loss_window_or_default() < MIN_PROTECTED_WINDOW {
        bail!(
            "--loss-window {}: {} mode releases the training loss as a mean over at least {MIN_PROTECTED_WINDOW} steps",
            a.loss_window_or_default(),
            a.mode.name()
        );
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
    let fingerprint = fingerprint(a, &train, &test);
    Ok(Setup {
        fingerprint,
        sealing: platform_sealing_key().context("the simulated platform's sealing key")?,
        kind,
        enclave: EnclaveConfig { ring, quant },
        train,
        test,
        schedule,
        total_steps,
        synthetic,
    })
}

/// E0's or E1's checkpoint store, and its loop plan (S0's host writes the export).
fn party_store_and_plan(a: &TrainArgs, role: Role) -> (CkptStore, LoopPlan<'_>) {
    let ck = CkptStore {
        dir: a.out.clone(),
        role: if role == Role::S0 { "e0" } else { "e1" },
    };
    (ck, loop_plan(a, role == Role::S0))
}

/// The loop's plan from the options; `exporter`: this host writes `--export`.
fn loop_plan(a: &TrainArgs, exporter: bool) -> LoopPlan<'_> {
    let export = a.export.as_ref().filter(|_| exporter).map(|path| {
        Box::new(move |e: &goten_enclave::session::Export| {
            crate::model_io::write(e, path)
                .map_err(|err| PartyError::Storage(format!("{}: {err:#}", path.display())))
        }) as Box<goten_runtime::train_loop::ExportSink<'_>>
    });
    LoopPlan {
        resume: a.resume,
        allow_rollback: a.allow_rollback,
        eval_every: a.eval_every,
        checkpoint_every: a.checkpoint_every,
        export,
    }
}

/// The training body of S0 or S1: a session on the keyed enclave, driven through its host.
pub(crate) fn party_body<'a>(
    a: &'a TrainArgs,
    setup: &'a Setup,
    reporters: [Option<&'a Mutex<Reporter>>; 2],
) -> impl Fn(&mut Party) -> Result<Summary, PartyError> + Sync + 'a {
    move |p: &mut Party| {
        let role = p.enclave.role();
        let i = role.index();
        let mut s = TrainSession::goten(
            &mut p.enclave,
            setup.session_config(a),
            setup.splits(),
            setup.sealing.clone(),
        )?;
        let (ck, plan) = party_store_and_plan(a, role);
        train_loop(
            &mut s,
            &mut PartyHost(&mut p.host),
            &plan,
            &ck,
            reporters[i].map(|r| r as &Mutex<dyn goten_runtime::Observer>),
        )
    }
}

/// The training body of S0 or S1 with its enclave in a child process: the same loop, the
/// session's ecalls sent over the process boundary.
pub(crate) fn remote_party_body<'a>(
    a: &'a TrainArgs,
    setup: &'a Setup,
    reporters: [Option<&'a Mutex<Reporter>>; 2],
) -> impl Fn(&mut RemoteParty) -> Result<Summary, PartyError> + Sync + 'a {
    move |p: &mut RemoteParty| {
        let role = p.enclave.role();
        p.enclave.start(
            setup.session_config(a),
            setup.splits(),
            setup.sealing.clone(),
        )?;
        let (ck, plan) = party_store_and_plan(a, role);
        train_loop(
            &mut p.enclave,
            &mut PartyHost(&mut p.host),
            &plan,
            &ck,
            reporters[role.index()].map(|r| r as &Mutex<dyn goten_runtime::Observer>),
        )
    }
}

pub fn run(a: TrainArgs) -> Result<()> {
    if a.transport == TransportKind::Tcp {
        return crate::spawn::run(a);
    }
    let setup = prepare(&a)?;
    let reporter = Mutex::new(Reporter::new(setup.total_steps, &a.out, a.resume, false)?);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let summary = match a.mode {
        Mode::Plain | Mode::Enclave => {
            let threads = if a.threads == 0 { cores } else { a.threads };
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .context("worker threads")?;
            let secret = if a.mode == Mode::Plain || a.danger_deterministic_keys.is_some() {
                LocalSecret::DangerFromSeed
            } else {
                LocalSecret::Fresh
            };
            let mut s = TrainSession::local(
                setup.session_config(&a),
                setup.splits(),
                setup.sealing.clone(),
                secret,
                threads,
            )
            .map_err(PartyError::from)?;
            let ck = CkptStore {
                dir: a.out.clone(),
                role: "enclave",
            };
            let plan = loop_plan(&a, true);
            pool.install(|| train_loop(&mut s, &mut LocalHost, &plan, &ck, Some(&reporter)))?
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
            let reporters = [Some(&reporter), Some(&reporter1)];
            let run = if a.enclave == EnclaveKind::Process {
                let body = remote_party_body(&a, &setup, reporters);
                let spawn = |role| crate::enclave_proc::spawn(role, cfg.timeout);
                run_local_remote(&cfg, &trusts, devices, nets, &spawn, &body)
            } else {
                run_local(
                    &cfg,
                    &trusts,
                    devices,
                    nets,
                    &party_body(&a, &setup, reporters),
                )
            }
            .context("secure training failed")?;
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

/// Plot, summary line and the `--json` object of a finished run.
pub(crate) fn finish(
    a: &TrainArgs,
    setup: &Setup,
    summary: Summary,
    reporter: Mutex<Reporter>,
) -> Result<()> {
    let kind = setup.kind;
    let rep = reporter.into_inner().expect("reporter lock");
    rep.clear_bar();
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
    let loss = if summary.train_loss.is_finite() {
        format!("last released train loss {:.3}", summary.train_loss)
    } else {
        "no train loss released (fewer than half a loss window since the start)".to_string()
    };
    eprintln!(
        "{mode} {}: {} steps, {} images in {:.1} s ({ips:.1} img/s), {loss}, test accuracy {:.2} % on {} images; metrics in {}",
        kind.name(),
        summary.steps,
        summary.images,
        summary.secs,
        100.0 * summary.test_accuracy,
        setup.test.len(),
        a.out.join("metrics.jsonl").display()
    );
    if a.json {
        println!(
            "{}",
            json!({"mode": mode, "model": kind.name(), "steps": summary.steps, "images": summary.images, "img_per_s": ips,
                   "train_loss": summary.train_loss, "test_accuracy": summary.test_accuracy, "synthetic_data": setup.synthetic,
                   "simulated_attestation": a.mode != Mode::Plain, "loss_window": a.loss_window_or_default(), "transport": a.transport.name()})
        );
    }
    Ok(())
}
