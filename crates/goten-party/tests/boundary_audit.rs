//! Audit at the enclave boundary: every value that crosses from E0 or E1 to its host during a
//! real goten-mode training run (steps, evaluations, state tags, checkpoints, the key
//! exchange's products aside) is recorded and checked: shares are statistically uniform, alone
//! and summed or subtracted with any other buffer of the same job; checkpoints are ciphertext
//! holding none of the trained weights' bytes; the released reports carry only what the
//! release policy allows. Then a deliberate leak (E0 hands its host the plaintext operand as a
//! share, `goten_enclave::danger`) must make the audit fail.
//!
//! The run goes twice: enclaves called in this process, and enclaves behind the ecall codec on
//! a socket (recording the raw frames each enclave writes, then decoding them). One test
//! function on purpose: the leak switch is process-wide.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::chi2_top6;
use goten_enclave::linear::{DeviceJob, HostServices, JobReply, OpHeader};
use goten_enclave::nn::ModelKind;
use goten_enclave::nn::optim::Schedule;
use goten_enclave::session::SessionEcalls;
use goten_enclave::session::{Protection, Split, StepReport, TrainConfig, TrainSession};
use goten_enclave::{Role, danger};
use goten_field::{Ring, SecretKey};
use goten_party::cluster::local_cpu_parts;
use goten_party::ecall::child;
use goten_party::ecall::codec::{self, FromEnclave};
use goten_party::ecall::party::{RemoteParty, run_local_remote};
use goten_party::ecall::remote::RemoteEnclave;
use goten_party::host::EnclaveHost;
use goten_party::transport::Message;
use goten_party::{ClusterConfig, Party, PartyError, Trusts, run_local};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What crossed from one enclave to its host.
enum Crossing {
    /// One buffer of a device job: (role, op stream id, which buffer, ring values).
    Share(Role, u64, usize, Vec<i32>),
    /// Bytes returned by an ecall: (role, what, bytes).
    Bytes(Role, &'static str, Vec<u8>),
    /// A step report.
    Step(StepReport),
}

/// The host services of one enclave, recording each job before running it.
struct Recording<'a> {
    inner: &'a mut dyn HostServices,
    role: Role,
    log: &'a Mutex<Vec<Crossing>>,
}

impl HostServices for Recording<'_> {
    fn announce(&mut self, header: &OpHeader) -> Result<(), BoxError> {
        self.inner.announce(header)
    }
    fn busy_secs(&self) -> (f64, f64) {
        self.inner.busy_secs()
    }
    fn run_job(&mut self, job: DeviceJob) -> Result<JobReply, BoxError> {
        let id = job.header.stream_id() ^ (job.header.iteration << 48);
        let mut log = self.log.lock().unwrap();
        let bufs = job.terms.iter().flat_map(|(a, b)| [a, b]).chain([&job.pad]);
        for (i, s) in bufs.enumerate() {
            log.push(Crossing::Share(
                self.role,
                id,
                i,
                s.tensor().data().to_vec(),
            ));
        }
        drop(log);
        self.inner.run_job(job)
    }
}

fn config() -> TrainConfig {
    TrainConfig {
        model: ModelKind::Small.into(),
        classes: 10,
        seed: 3,
        epochs: 2,
        batch: 16,
        lr: 0.05,
        schedule: Schedule::Constant,
        total_steps: 8,
        loss_window: 8,
        protection: Protection::Protected,
        fingerprint: [1; 32],
        model_owner: Some(owner().public_key()),
        danger_plaintext_export: false,
        input: goten_enclave::nn::input::InputSpec::cifar10(),
        init: None,
    }
}

/// The model owner, whose key the export is sealed to.
fn owner() -> goten_enclave::hpke::KeyPair {
    goten_enclave::hpke::KeyPair::derive(&[42; 32])
}

/// The run's loop, the same in both arrangements: steps, and every 4 steps an evaluation, a
/// tag comparison and a checkpoint. With `rec`, what the session returns and every device job
/// are recorded (in-process; through the codec the tap records the raw frames instead).
/// Returns the model owner's export.
fn drive(
    s: &mut dyn SessionEcalls,
    host: &mut EnclaveHost,
    rec: Option<(Role, &Mutex<Vec<Crossing>>)>,
) -> Result<Vec<f32>, PartyError> {
    let push = |c: Crossing| {
        if let Some((_, log)) = rec {
            log.lock().unwrap().push(c);
        }
    };
    let bytes = |what, b: Vec<u8>| {
        if let Some((role, _)) = rec {
            push(Crossing::Bytes(role, what, b));
        }
    };
    while !s.done() {
        let mut recording;
        let h: &mut dyn HostServices = match rec {
            Some((role, log)) => {
                recording = Recording {
                    inner: &mut *host,
                    role,
                    log,
                };
                &mut recording
            }
            None => &mut *host,
        };
        let r = s.step(Some(&mut *h))?;
        push(Crossing::Step(r));
        if r.step % 4 == 0 {
            let e = s.evaluate(Some(h))?;
            bytes("evaluation", format!("{e:?}").into_bytes());
            let tag = s.state_tag()?;
            bytes("state tag", tag.0.to_vec());
            let peer = host.peer();
            let t = host.transport();
            t.send(
                peer,
                Message::StateDigest {
                    step: r.step,
                    digest: tag.0,
                },
            )?;
            let Message::StateDigest { digest, .. } = t.recv(peer)? else {
                panic!("expected the peer's tag");
            };
            s.check_peer_tag(&goten_enclave::session::StateTag(digest))?;
            bytes("checkpoint", s.checkpoint()?.0);
        }
    }
    // The export reaches the host sealed to the model owner: it is audited like any other
    // release, and only the owner's key opens it.
    let goten_enclave::session::ModelRelease::Sealed(sealed) = s.export_for_model_owner()? else {
        panic!("a protected run with a model owner must seal its export");
    };
    bytes("sealed export", sealed.clone());
    let export = goten_enclave::session::model_out::open_model(&sealed, &owner())
        .expect("the owner opens the export");
    Ok(export.tensors.into_iter().flat_map(|t| t.data).collect())
}

/// A goten-mode run of 8 steps with an evaluation, a tag comparison and a checkpoint every 4
/// steps; returns everything that crossed and S0's export (the model owner's copy).
fn audited_run() -> (Vec<Crossing>, Vec<f32>) {
    let (train, test) = goten_data::synthetic(64, 32, 5);
    let split = |d: &goten_data::Dataset| Split::Plain {
        images: d.images.clone(),
        labels: d.labels.clone(),
    };
    let log = Mutex::new(Vec::new());
    let sealing = SecretKey::from_bytes([9; 32]);
    let (devices, nets) = local_cpu_parts(1, Duration::from_secs(60)).unwrap();
    let body = |p: &mut Party| -> Result<Vec<f32>, PartyError> {
        let role = p.enclave.role();
        let mut s = TrainSession::goten(
            &mut p.enclave,
            config(),
            (split(&train), split(&test)),
            sealing.clone(),
        )?;
        drive(&mut s, &mut p.host, Some((role, &log)))
    };
    let run = run_local(
        &ClusterConfig::default(),
        &Trusts::danger_deterministic(11),
        devices,
        nets,
        &body,
    )
    .expect("the audited run trains");
    (log.into_inner().unwrap(), run.results.0)
}

/// Chi-square statistic of byte values (256 cells).
fn chi2_bytes(x: &[u8]) -> f64 {
    let mut counts = [0f64; 256];
    x.iter().for_each(|&b| counts[usize::from(b)] += 1.0);
    let e = x.len() as f64 / 256.0;
    counts.iter().map(|c| (c - e).powi(2) / e).sum()
}

/// Every finding of the audit; empty when the boundary kept everything secret.
fn audit(crossings: &[Crossing], weights: &[f32]) -> Vec<String> {
    let ring = Ring::DEFAULT;
    let mut findings = Vec::new();
    // 63 degrees of freedom: mean 63, standard deviation 11.2; 160 is 8.7 deviations out, and
    // the run is deterministic (fixed keys), so this never flakes.
    let uniform = |x: &[i32]| x.len() < 1024 || chi2_top6(ring, x) < 160.0;
    let mut jobs: std::collections::BTreeMap<(u8, u64), Vec<&Vec<i32>>> = Default::default();
    let mut shares = 0;
    for c in crossings {
        if let Crossing::Share(role, id, i, v) = c {
            shares += 1;
            if !uniform(v) {
                findings.push(format!(
                    "{role} job {id:#x} buffer {i}: not uniform (chi2 {:.0} over {} values)",
                    chi2_top6(ring, v),
                    v.len()
                ));
            }
            jobs.entry((role.index() as u8, *id)).or_default().push(v);
        }
    }
    assert!(shares > 100, "the run recorded only {shares} share buffers");
    for ((role, id), bufs) in &jobs {
        for (i, x) in bufs.iter().enumerate() {
            for y in &bufs[i + 1..] {
                if x.len() != y.len() {
                    continue;
                }
                let sum: Vec<i32> = x
                    .iter()
                    .zip(y.iter())
                    .map(|(&a, &b)| ring.add(a, b))
                    .collect();
                let diff: Vec<i32> = x
                    .iter()
                    .zip(y.iter())
                    .map(|(&a, &b)| ring.sub(a, b))
                    .collect();
                if !uniform(&sum) || !uniform(&diff) {
                    findings.push(format!(
                        "S{role} job {id:#x}: a sum or difference of two buffers is not uniform"
                    ));
                }
            }
        }
    }
    // Weight bytes (pairs of consecutive trained weights) must not appear in anything
    // released; checkpoints must look like ciphertext.
    let probes: Vec<[u8; 8]> = weights
        .chunks_exact(2)
        .step_by(97)
        .map(|w| {
            let mut b = [0u8; 8];
            b[..4].copy_from_slice(&w[0].to_le_bytes());
            b[4..].copy_from_slice(&w[1].to_le_bytes());
            b
        })
        .collect();
    assert!(probes.len() > 20);
    let mut released = 0;
    for c in crossings {
        match c {
            Crossing::Bytes(role, what, b) => {
                released += 1;
                if probes.iter().any(|p| b.windows(8).any(|w| w == p)) {
                    findings.push(format!(
                        "{role}'s {what} holds trained weights in the clear"
                    ));
                }
                if *what == "checkpoint" && chi2_bytes(b) > 400.0 {
                    findings.push(format!("{role}'s checkpoint does not look like ciphertext"));
                }
            }
            Crossing::Step(r) => {
                if let Some(w) = r.loss
                    && w.last_step + 1 - w.first_step < 8
                {
                    findings.push(format!(
                        "a loss over {} steps was released",
                        w.last_step + 1 - w.first_step
                    ));
                }
            }
            Crossing::Share(..) => {}
        }
    }
    assert!(
        released >= 6,
        "evaluations, tags and checkpoints were recorded"
    );
    findings
}

/// Copies frames from `from` to `to`, recording each (kind, body): what crossed the socket.
/// Frames one enclave wrote: (kind, body).
type FrameLog = Arc<Mutex<Vec<(u8, Vec<u8>)>>>;

fn tap(mut from: UnixStream, mut to: UnixStream, log: FrameLog) {
    std::thread::spawn(move || {
        loop {
            let mut head = [0u8; codec::HEADER];
            if from.read_exact(&mut head).is_err() {
                break;
            }
            let n = u32::from_le_bytes(head[4..8].try_into().unwrap()) as usize;
            let mut body = vec![0u8; n];
            if from.read_exact(&mut body).is_err() {
                break;
            }
            log.lock().unwrap().push((head[3], body.clone()));
            if to
                .write_all(&head)
                .and_then(|_| to.write_all(&body))
                .is_err()
            {
                break;
            }
        }
        let _ = to.shutdown(std::net::Shutdown::Both);
    });
}

/// The same run with each enclave behind the ecall codec on a socket (the process boundary
/// without the process: the enclave's serve loop on a thread), recording every frame the
/// enclave writes; returns the crossings decoded from those bytes and S0's export.
fn audited_run_through_the_codec() -> (Vec<Crossing>, Vec<f32>) {
    let (train, test) = goten_data::synthetic(64, 32, 5);
    let frames: [FrameLog; 2] = Default::default();
    let spawn = |role: Role| -> Result<RemoteEnclave, PartyError> {
        let (enclave_end, tap_in) = UnixStream::pair().unwrap();
        let (tap_out, host_end) = UnixStream::pair().unwrap();
        std::thread::spawn(move || child::serve(enclave_end, SecretKey::from_bytes([9; 32])));
        tap(
            tap_in.try_clone().unwrap(),
            tap_out.try_clone().unwrap(),
            frames[role.index()].clone(),
        );
        // The host's direction is copied as it is.
        let (mut a, mut b) = (tap_out, tap_in);
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut a, &mut b);
            let _ = b.shutdown(std::net::Shutdown::Both);
        });
        Ok(RemoteEnclave::new(role, host_end, None, Duration::from_secs(60)).unwrap())
    };
    let body = |p: &mut RemoteParty| -> Result<Vec<f32>, PartyError> {
        let host = |d: &goten_data::Dataset| Split::Plain {
            images: d.images.clone(),
            labels: d.labels.clone(),
        };
        p.enclave.start(config(), (host(&train), host(&test)))?;
        drive(&mut p.enclave, &mut p.host, None)
    };
    let (devices, nets) = local_cpu_parts(1, Duration::from_secs(60)).unwrap();
    let run = run_local_remote(
        &ClusterConfig::default(),
        &Trusts::danger_deterministic(11),
        devices,
        nets,
        &spawn,
        &body,
    )
    .expect("the audited run trains through the codec");
    let weights = run.results.0;
    // The enclaves have shut down (their proxies dropped): every frame is in the logs.
    std::thread::sleep(Duration::from_millis(100));
    let mut crossings = Vec::new();
    for (role, log) in Role::ALL.into_iter().zip(&frames) {
        for (kind, body) in log.lock().unwrap().iter() {
            let m = codec::decode_from_enclave(*kind, body, Ring::DEFAULT)
                .expect("the enclave writes only valid frames");
            match m {
                FromEnclave::RunJob(job) => {
                    let id = job.header.stream_id() ^ (job.header.iteration << 48);
                    let bufs = job.terms.iter().flat_map(|(a, b)| [a, b]).chain([&job.pad]);
                    for (i, b) in bufs.enumerate() {
                        crossings.push(Crossing::Share(role, id, i, b.tensor().data().to_vec()));
                    }
                }
                FromEnclave::Step(r) => crossings.push(Crossing::Step(r)),
                FromEnclave::Sealed(b) => crossings.push(Crossing::Bytes(role, "checkpoint", b)),
                // The model owner's export is the one plaintext release (only on request).
                FromEnclave::Export(_) => {}
                FromEnclave::Error(_, msg) => panic!("the enclave failed: {msg}"),
                other => crossings.push(Crossing::Bytes(role, "frame", body_of(&other, body))),
            }
        }
    }
    (crossings, weights)
}

/// The raw body of any other frame (report data, hello, tag, evaluation, loss, done).
fn body_of(_: &FromEnclave, body: &[u8]) -> Vec<u8> {
    body.to_vec()
}

#[test]
fn nothing_but_shares_ciphertext_and_released_reports_crosses() {
    let (crossings, weights) = audited_run();
    let findings = audit(&crossings, &weights);
    assert!(
        findings.is_empty(),
        "the audit found leaks:\n{}",
        findings.join("\n")
    );
    let losses = crossings
        .iter()
        .filter(|c| matches!(c, Crossing::Step(r) if r.loss.is_some()))
        .count();
    assert_eq!(losses, 2, "one loss window of 8 steps per enclave");

    // The same through the ecall codec: every byte the enclave writes to its socket.
    let (through, weights2) = audited_run_through_the_codec();
    let findings = audit(&through, &weights2);
    assert!(
        findings.is_empty(),
        "the codec audit found leaks:\n{}",
        findings.join("\n")
    );
    assert_eq!(weights, weights2, "the process boundary changes the result");

    // A deliberate leak of a plaintext operand into a share must be caught, in both.
    danger::set_leak_operand(true);
    let (crossings, weights) = audited_run();
    let (through, weights2) = audited_run_through_the_codec();
    danger::set_leak_operand(false);
    for (c, w) in [(&crossings, &weights), (&through, &weights2)] {
        let findings = audit(c, w);
        assert!(
            findings.iter().any(|f| f.contains("not uniform")),
            "the audit missed a plaintext operand handed to the host: {findings:?}"
        );
    }
}
