//! `goten bench train`: training throughput of a model in each mode, measured in one run, with
//! the time split into linear products, non-linear layers, quantization/PRG/masks and transport.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;
use goten_enclave::nn::optim::Sgd;
use goten_enclave::nn::{
    FloatBackend, LinearBackend, ModelKind, NnError, Prepared, ProtocolBackend, Reusable, input,
};
use goten_enclave::{EnclaveConfig, SecretTensor};
use goten_field::BilinearOp;
use goten_party::cluster::SIMULATION_NOTICE;
use goten_party::{ClusterConfig, Party, PartyError, Trusts, run_local};
use serde_json::json;

/// Options of `goten bench train`.
#[derive(Args, Debug)]
pub struct TrainBenchArgs {
    /// Model: a built-in model name (see `goten model list`).
    #[arg(long, default_value = "vgg11")]
    model: String,
    /// Batch size.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=4096))]
    batch: u32,
    /// Timed steps per mode (after one warm-up step).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    steps: u64,
    /// Modes to measure, comma-separated.
    #[arg(long, default_value = "plain,enclave,goten")]
    modes: String,
    /// CPU threads for float products and for each party's device (0: automatic).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Device: `cpu` or `cuda` (a build with `--features cuda` and an NVIDIA GPU).
    #[arg(long, default_value = "cpu")]
    device: goten_runtime::devices::DeviceKind,
    /// Print JSON lines instead of a table.
    #[arg(long)]
    json: bool,
    /// `process`: add rows for whole goten sessions with enclaves in this process
    /// (`goten-session`) and in child processes (`goten-process`), with each enclave's peak
    /// memory (also selectable in --modes).
    #[arg(long, default_value = "in-process")]
    enclave: goten_runtime::config::EnclaveKind,
    /// Rounds of the session rows, run alternately (session, process, session, ...); each row
    /// reports its fastest round, and a last line the process / session ratio: on a noisy
    /// machine, alternating rounds compare like with like.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=20))]
    rounds: u32,
}

/// Times every linear op that passes through it.
struct Timed<'a> {
    inner: &'a mut dyn LinearBackend,
    secs: f64,
}

impl Timed<'_> {
    /// Runs `f` on the inner backend, adding its time to the total.
    fn time<R>(&mut self, f: impl FnOnce(&mut dyn LinearBackend) -> R) -> R {
        let t = Instant::now();
        let r = f(&mut *self.inner);
        self.secs += t.elapsed().as_secs_f64();
        r
    }
}

impl LinearBackend for Timed<'_> {
    fn bilinear(
        &mut self,
        op_id: u64,
        op: &BilinearOp,
        a: &SecretTensor,
        b: &SecretTensor,
    ) -> Result<SecretTensor, NnError> {
        self.time(|be| be.bilinear(op_id, op, a, b))
    }
    fn bilinear_reusing(
        &mut self,
        op_id: u64,
        op: &BilinearOp,
        a: (&SecretTensor, Option<&Prepared>),
        b: (&SecretTensor, Option<&Prepared>),
    ) -> Result<Reusable, NnError> {
        self.time(|be| be.bilinear_reusing(op_id, op, a, b))
    }
    fn next_step(&mut self) {
        self.inner.next_step();
    }
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn host_busy(&self) -> (f64, f64) {
        self.inner.host_busy()
    }
}

#[derive(Clone, Copy, Default)]
struct Split {
    secs: f64,
    linear: f64,
    device: f64,
    transport: f64,
    /// Goten mode: bytes all parties sent, and share elements in them, per step.
    wire: Option<(f64, f64)>,
}

fn batch(n: usize, step: u64) -> (SecretTensor, Vec<u8>) {
    let (d, _) = goten_data::synthetic(n, 1, step);
    let imgs: Vec<&[u8]> = (0..n).map(|i| d.image(i)).collect();
    let key = goten_field::SecretKey::from_bytes([1; 32]);
    (
        input::batch(&input::InputSpec::cifar10(), &imgs, Some((&key, step))),
        d.labels,
    )
}

/// Runs `steps + 1` steps, timing the last `steps`.
fn run_steps(
    kind: ModelKind,
    n: usize,
    steps: u64,
    be: &mut dyn LinearBackend,
) -> Result<Split, NnError> {
    let mut m = kind.build(1, goten_data::CLASSES)?;
    let sgd = Sgd::default();
    let data: Vec<_> = (0..=steps).map(|s| batch(n, s)).collect();
    let mut timed = Timed {
        inner: be,
        secs: 0.0,
    };
    let mut split = Split::default();
    for (s, (x, y)) in data.into_iter().enumerate() {
        let (lin0, (d0, n0)) = (timed.secs, timed.host_busy());
        let t = Instant::now();
        m.train_step(&mut timed, x, &y, &sgd, 0.01)?;
        if s > 0 {
            let (d1, n1) = timed.host_busy();
            split.secs += t.elapsed().as_secs_f64();
            split.linear += timed.secs - lin0;
            split.device += d1 - d0;
            split.transport += n1 - n0;
        }
    }
    Ok(split)
}

pub fn run(a: TrainBenchArgs) -> Result<()> {
    let kind = ModelKind::parse(&a.model).with_context(|| {
        format!(
            "unknown model {:?}: choose one of {}",
            a.model,
            ModelKind::names()
        )
    })?;
    let n = a.batch as usize;
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    if !a.json {
        println!(
            "goten bench train: {} at batch {n}, {} timed steps per mode, synthetic data",
            kind.name(),
            a.steps
        );
        println!(
            "{:<8} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "mode", "img/s", "s/step", "linear", "nonlin", "quant/prg", "transport"
        );
    }
    let mut modes: Vec<&str> = a.modes.split(',').map(str::trim).collect();
    if a.enclave == goten_runtime::config::EnclaveKind::Process {
        modes.extend(["goten-session", "goten-process"]);
    }
    let session_modes: Vec<bool> = modes
        .iter()
        .filter_map(|m| match *m {
            "goten-session" => Some(false),
            "goten-process" => Some(true),
            _ => None,
        })
        .collect();
    if !session_modes.is_empty() {
        let threads = a.threads;
        let mut best: Vec<Option<crate::session::SessionRow>> = vec![None, None];
        for _ in 0..a.rounds {
            for &process in &session_modes {
                let r = crate::session::run(kind, n, a.steps, process, threads, a.device)?;
                let slot = &mut best[usize::from(process)];
                if slot
                    .as_ref()
                    .is_none_or(|b| r.secs_per_step < b.secs_per_step)
                {
                    *slot = Some(r);
                }
            }
        }
        for (process, r) in best.iter().enumerate() {
            let Some(r) = r else { continue };
            let process = process == 1;
            let mode = if process {
                "goten-process"
            } else {
                "goten-session"
            };
            let ips = n as f64 / r.secs_per_step;
            let [m0, m1] = r.peak_kb.map(|m| m.map_or(f64::NAN, |k| k as f64 / 1024.0));
            if a.json {
                println!(
                    "{}",
                    json!({"mode": mode, "model": kind.name(), "batch": n, "img_per_s": ips,
                           "secs_per_step": r.secs_per_step, "rounds": a.rounds, "e0_peak_mib": m0,
                           "e1_peak_mib": m1, "peak_is_whole_process": !process})
                );
            } else {
                println!(
                    "{mode:<8} {ips:>8.2} {:>9.3}   peak memory: E0 {m0:.0} MiB, E1 {m1:.0} MiB{}",
                    r.secs_per_step,
                    if process { "" } else { " (this whole process)" }
                );
            }
        }
        if let [Some(sess), Some(proc_)] = &best[..] {
            let ratio = proc_.secs_per_step / sess.secs_per_step;
            if a.json {
                println!(
                    "{}",
                    json!({"process_over_session": ratio, "rounds": a.rounds})
                );
            } else {
                println!(
                    "process / session: {ratio:.3} (fastest of {} rounds each)",
                    a.rounds
                );
            }
        }
    }
    for mode in modes {
        if matches!(mode, "goten-session" | "goten-process") {
            continue;
        }
        let split = match mode {
            "plain" | "enclave" => {
                let threads = if a.threads == 0 { cores } else { a.threads };
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()?;
                let mut be = FloatBackend::new(threads);
                let s = pool.install(|| run_steps(kind, n, a.steps, &mut be))?;
                Split {
                    device: s.linear,
                    ..s
                }
            }
            "goten" => {
                eprintln!("note: {SIMULATION_NOTICE}");
                let threads = a.threads;
                let cfg = ClusterConfig {
                    enclave: EnclaveConfig::default(),
                    timeout: Duration::from_secs(600),
                };
                let (devices, nets) =
                    goten_runtime::devices::local_parts(a.device, threads, cfg.timeout)?;
                let body = |p: &mut Party| -> Result<Split, PartyError> {
                    let mut be = ProtocolBackend::new(&p.enclave, &mut p.host, 0);
                    let r = run_steps(kind, n, a.steps, &mut be);
                    r.map_err(|e| {
                        PartyError::Enclave(goten_enclave::EnclaveError::Config(e.to_string()))
                    })
                };
                let run = run_local(&cfg, &Trusts::generate(), devices, nets, &body)
                    .context("secure run failed")?;
                // Every step moves the same shapes; the key exchange adds a few kilobytes.
                let per = 1.0 / (a.steps + 1) as f64;
                let bytes: u64 = run.reports.iter().map(|r| r.traffic.sent).sum();
                let elems: u64 = run.reports.iter().map(|r| r.elements_sent).sum();
                Split {
                    wire: Some((bytes as f64 * per, elems as f64 * per)),
                    ..run.results.0
                }
            }
            other => anyhow::bail!("unknown mode {other:?} in --modes (plain, enclave, goten)"),
        };
        let steps = a.steps as f64;
        let ips = n as f64 * steps / split.secs;
        let nonlin = split.secs - split.linear;
        let quant = (split.linear - split.device - split.transport).max(0.0);
        if a.json {
            let mut v = json!({"mode": mode, "model": kind.name(), "batch": n, "img_per_s": ips, "secs_per_step": split.secs / steps,
                       "linear_secs_per_step": split.device / steps, "nonlinear_secs_per_step": nonlin / steps,
                       "quant_prg_secs_per_step": quant / steps, "transport_secs_per_step": split.transport / steps});
            if let Some((bytes, elems)) = split.wire {
                v["enclave_ms_per_image"] = (1e3 * quant / steps / n as f64).into();
                v["enclave_threads"] = rayon::current_num_threads().into();
                v["wire_bytes_per_step"] = bytes.round().into();
                v["share_elements_per_step"] = elems.round().into();
                v["bytes_per_element"] = (bytes / elems.max(1.0)).into();
                // The prototype sent the same four output-sized messages per op as 32-bit floats.
                v["prototype_bytes_per_step"] = (4.0 * elems).round().into();
            }
            println!("{v}");
        } else {
            println!(
                "{mode:<8} {ips:>8.2} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3}",
                split.secs / steps,
                split.device / steps,
                nonlin / steps,
                quant / steps,
                split.transport / steps
            );
            if let Some((bytes, elems)) = split.wire {
                println!(
                    "         enclave: {:.2} ms per image (quant/prg per step / batch), {} enclave threads (RAYON_NUM_THREADS)",
                    1e3 * quant / steps / n as f64,
                    rayon::current_num_threads()
                );
                println!(
                    "         wire: {:.1} MB/step by all parties, {:.3} bytes per share element (prototype: {:.1} MB/step as float32)",
                    bytes / 1e6,
                    bytes / elems.max(1.0),
                    4.0 * elems / 1e6
                );
            }
        }
    }
    Ok(())
}
