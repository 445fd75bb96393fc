//! `goten bench train` rows for whole training sessions: goten mode driven through the
//! session's ecalls with the enclaves in this process (`goten-session`) or in child processes
//! (`goten-process`), and each enclave's peak memory.
//!
//! Where it sits: beside `bench_train.rs`, whose rows time the model's steps directly with a
//! breakdown; these rows measure what `goten train` runs, including the process boundary.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use goten_enclave::nn::ModelKind;
use goten_enclave::nn::optim::Schedule;
use goten_enclave::session::{Protection, SessionEcalls, Split, TrainConfig, TrainSession};
use goten_party::ecall::party::{RemoteParty, run_local_remote};
use goten_party::{ClusterConfig, Party, PartyError, Trusts, run_local};

/// Seconds per timed step, and the peak resident memory (kB) of E0 and E1: of each enclave
/// process, or (in-process) of this whole process, which holds all three parties.
pub(crate) struct SessionRow {
    pub(crate) secs_per_step: f64,
    pub(crate) peak_kb: [Option<u64>; 2],
}

/// Peak resident set (VmHWM) of a process, in kB.
pub(crate) fn peak_kb(pid: Option<u32>) -> Option<u64> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/status"),
        None => "/proc/self/status".into(),
    };
    std::fs::read_to_string(path)
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn config(kind: ModelKind, n: usize, steps: u64) -> TrainConfig {
    TrainConfig {
        model: kind.into(),
        classes: goten_data::CLASSES,
        input: goten_enclave::nn::input::InputSpec::cifar10(),
        init: None,
        seed: 1,
        epochs: 1,
        batch: n,
        lr: 0.01,
        schedule: Schedule::Constant,
        total_steps: steps + 1,
        loss_window: 8,
        protection: Protection::Protected,
        fingerprint: [0; 32],
        model_owner: None,
        danger_plaintext_export: false,
    }
}

fn splits(n: usize, steps: u64) -> (Split, Split) {
    let (d, t) = goten_data::synthetic(n * (steps as usize + 1), n, 1);
    let s = |d: goten_data::Dataset| Split::Plain {
        images: d.images,
        labels: d.labels,
    };
    (s(d), s(t))
}

/// One warm-up step, then `steps` timed ones.
fn drive(
    s: &mut dyn SessionEcalls,
    host: &mut goten_party::host::EnclaveHost,
) -> Result<f64, PartyError> {
    s.step(Some(host))?;
    let t = Instant::now();
    while !s.done() {
        s.step(Some(host))?;
    }
    Ok(t.elapsed().as_secs_f64())
}

pub(crate) fn run(
    kind: ModelKind,
    n: usize,
    steps: u64,
    process: bool,
    threads: usize,
    device: goten_runtime::devices::DeviceKind,
) -> Result<SessionRow> {
    let cfg = ClusterConfig {
        enclave: goten_enclave::EnclaveConfig::default(),
        timeout: Duration::from_secs(600),
    };
    let (devices, nets) = goten_runtime::devices::local_parts(device, threads, cfg.timeout)?;
    let trusts = Trusts::generate();
    let sealing = goten_field::SecretKey::from_bytes([7u8; 32]);
    let (secs, peak_kb) = if process {
        let spawn = |role| goten_runtime::enclave_process::spawn_self(role, cfg.timeout);
        let body = |p: &mut RemoteParty| -> Result<(f64, Option<u64>), PartyError> {
            p.enclave.start(config(kind, n, steps), splits(n, steps))?;
            let secs = drive(&mut p.enclave, &mut p.host)?;
            Ok((secs, peak_kb(p.enclave.child_pid())))
        };
        let run = run_local_remote(&cfg, &trusts, devices, nets, &spawn, &body)
            .context("benchmark with enclave processes failed")?;
        let ((s0, m0), (_, m1)) = run.results;
        (s0, [m0, m1])
    } else {
        let body = |p: &mut Party| -> Result<f64, PartyError> {
            let mut s = TrainSession::goten(
                &mut p.enclave,
                config(kind, n, steps),
                splits(n, steps),
                sealing.clone(),
            )?;
            drive(&mut s, &mut p.host)
        };
        let run = run_local(&cfg, &trusts, devices, nets, &body)
            .context("benchmark with in-process enclaves failed")?;
        let me = peak_kb(None);
        (run.results.0, [me, me])
    };
    Ok(SessionRow {
        secs_per_step: secs / steps as f64,
        peak_kb,
    })
}
