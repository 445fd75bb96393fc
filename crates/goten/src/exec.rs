//! How each mode runs a training step, and the sealed checkpoints behind `--resume`.
//!
//! Where it sits: between the shared training loop (`train.rs`) and the enclave code. Plain and
//! enclave modes run float32 products in this process ([`FloatExec`]); goten mode drives the
//! enclave and its host ([`PartyExec`]). Checkpoints are sealed inside the enclave code and
//! written atomically, so a crash never destroys the last good one.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::source::Source;
use anyhow::{Context, Result};
use goten_enclave::nn::checkpoint::{self, Progress};
use goten_enclave::nn::model::StepStats;
use goten_enclave::nn::optim::Sgd;
use goten_enclave::nn::{FloatBackend, Model, NnError, ProtocolBackend};
use goten_enclave::{Role, SecretTensor};
use goten_field::SecretKey;
use goten_party::{Party, PartyError};
use sha2::{Digest, Sha256};

use crate::train::{Job, TrainArgs};

/// How one mode runs a step; the loop is shared by all modes.
pub(crate) trait Exec {
    fn step(
        &mut self,
        m: &mut Model,
        x: SecretTensor,
        labels: &[u8],
        lr: f32,
    ) -> Result<StepStats, PartyError>;
    fn eval(
        &mut self,
        m: &mut Model,
        x: SecretTensor,
        labels: &[u8],
    ) -> Result<(f32, usize), PartyError>;
    fn sync(&mut self, _step: u64, _m: &Model) -> Result<(), PartyError> {
        Ok(())
    }
    /// Bytes this party has sent and received so far (`None`: no transport).
    fn traffic(&mut self) -> Option<goten_party::Traffic> {
        None
    }
    /// Seals the state (model and progress) to this executor's checkpoint file.
    fn checkpoint(&mut self, m: &mut Model, p: Progress, ck: &Ckpt<'_>) -> Result<(), PartyError>;
    /// The state of the checkpoint to resume from.
    fn restore(&mut self, ck: &Ckpt<'_>, job: &Job<'_>) -> Result<(Model, Progress), PartyError>;
}

/// Where checkpoints go and what they are bound to.
pub(crate) struct Ckpt<'a> {
    pub(crate) dir: &'a Path,
    pub(crate) key: SecretKey,
    pub(crate) fingerprint: [u8; 32],
}

pub(crate) fn ck_err(e: impl std::fmt::Display, path: &Path) -> PartyError {
    PartyError::Enclave(goten_enclave::EnclaveError::Config(format!(
        "checkpoint {}: {e}",
        path.display()
    )))
}

impl Ckpt<'_> {
    fn path(&self, role: &str) -> PathBuf {
        self.dir.join(format!("checkpoint-{role}.sealed"))
    }

    fn prev_path(&self, role: &str) -> PathBuf {
        self.dir.join(format!("checkpoint-{role}.prev.sealed"))
    }

    /// Writes atomically and keeps the previous checkpoint: a crash mid-write leaves a good
    /// one, and a party restarted one checkpoint ahead of its peer can step back to the
    /// peer's (see [`goten_party::handshake::agree_resume`]).
    fn write(&self, role: &str, bytes: &[u8]) -> Result<(), PartyError> {
        let path = self.path(role);
        let tmp = path.with_extension("sealed.tmp");
        std::fs::write(&tmp, bytes).map_err(|e| ck_err(e, &tmp))?;
        if path.exists() {
            std::fs::rename(&path, self.prev_path(role)).map_err(|e| ck_err(e, &path))?;
        }
        std::fs::rename(&tmp, &path).map_err(|e| ck_err(e, &path))
    }

    /// The sealed checkpoints on disk (newest file first): at least one, or an error.
    fn read(&self, role: &str) -> Result<Vec<(PathBuf, Vec<u8>)>, PartyError> {
        let found: Vec<(PathBuf, Vec<u8>)> = [self.path(role), self.prev_path(role)]
            .into_iter()
            .filter_map(|p| std::fs::read(&p).ok().map(|b| (p, b)))
            .collect();
        if found.is_empty() {
            let path = self.path(role);
            return Err(ck_err(
                "cannot read it (missing?); nothing to resume",
                &path,
            ));
        }
        Ok(found)
    }
}

pub(crate) fn nn(e: NnError) -> PartyError {
    match e {
        NnError::Enclave(e) => PartyError::Enclave(e),
        other => PartyError::Enclave(goten_enclave::EnclaveError::Config(other.to_string())),
    }
}

pub(crate) struct FloatExec(pub(crate) FloatBackend, pub(crate) Sgd);

impl Exec for FloatExec {
    fn checkpoint(&mut self, m: &mut Model, p: Progress, ck: &Ckpt<'_>) -> Result<(), PartyError> {
        let bytes = checkpoint::seal(m, p, ck.fingerprint, None, &ck.key, "enclave")
            .map_err(|e| ck_err(e, &ck.path("enclave")))?;
        ck.write("enclave", &bytes)
    }
    fn restore(&mut self, ck: &Ckpt<'_>, job: &Job<'_>) -> Result<(Model, Progress), PartyError> {
        let (path, bytes) = ck.read("enclave")?.swap_remove(0);
        let r = checkpoint::unseal(
            &bytes,
            &ck.key,
            "enclave",
            ck.fingerprint,
            job.kind,
            job.args.seed,
            goten_data::CLASSES,
        )
        .map_err(|e| ck_err(e, &path))?;
        Ok((r.model, r.progress))
    }
    fn step(
        &mut self,
        m: &mut Model,
        x: SecretTensor,
        labels: &[u8],
        lr: f32,
    ) -> Result<StepStats, PartyError> {
        m.train_step(&mut self.0, x, labels, &self.1, lr)
            .map_err(nn)
    }
    fn eval(
        &mut self,
        m: &mut Model,
        x: SecretTensor,
        labels: &[u8],
    ) -> Result<(f32, usize), PartyError> {
        m.evaluate(&mut self.0, x, labels).map_err(nn)
    }
}

pub(crate) struct PartyExec<'a> {
    pub(crate) party: &'a mut Party,
    pub(crate) counter: u64,
    pub(crate) sgd: Sgd,
}

impl PartyExec<'_> {
    /// Runs `f` with a protocol backend that continues this session's PRG step counter.
    fn with_backend<R>(
        &mut self,
        f: impl FnOnce(&mut ProtocolBackend<'_>, &Sgd) -> Result<R, NnError>,
    ) -> Result<R, PartyError> {
        let mut be = ProtocolBackend::new(&self.party.enclave, &mut self.party.host, self.counter);
        let r = f(&mut be, &self.sgd).map_err(nn);
        self.counter = be.step();
        r
    }

    fn role(&self) -> &'static str {
        if self.party.role() == Role::S0 {
            "e0"
        } else {
            "e1"
        }
    }
}

impl Exec for PartyExec<'_> {
    fn checkpoint(
        &mut self,
        m: &mut Model,
        mut p: Progress,
        ck: &Ckpt<'_>,
    ) -> Result<(), PartyError> {
        p.prg_step = self.counter;
        let role = self.role();
        let bytes = self
            .party
            .enclave
            .seal_checkpoint(m, p, ck.fingerprint, &ck.key)
            .map_err(|e| ck_err(e, &ck.path(role)))?;
        ck.write(role, &bytes)
    }
    fn restore(&mut self, ck: &Ckpt<'_>, job: &Job<'_>) -> Result<(Model, Progress), PartyError> {
        let role = self.role();
        let mut held = Vec::new();
        for (path, bytes) in ck.read(role)? {
            // A checkpoint that fails to open is an error, not a reason to fall back quietly:
            // it was tampered with or belongs to another job.
            let (m, p) = self
                .party
                .enclave
                .unseal_checkpoint(
                    &bytes,
                    &ck.key,
                    ck.fingerprint,
                    (job.kind, job.args.seed, goten_data::CLASSES),
                )
                .map_err(|e| ck_err(e, &path))?;
            held.push((m, p));
        }
        let newest = held
            .iter()
            .map(|(_, p)| p.step)
            .max()
            .expect("at least one");
        let step = goten_party::handshake::agree_resume(self.party.host.transport(), newest)?;
        let steps: Vec<u64> = held.iter().map(|(_, p)| p.step).collect();
        let (m, p) = held
            .into_iter()
            .find(|(_, p)| p.step == step)
            .ok_or_else(|| {
                ck_err(
                    format!(
                        "the other enclave can resume only from step {step}, this one holds steps {steps:?}; restore matching checkpoints or start over"
                    ),
                    &ck.path(role),
                )
            })?;
        self.counter = p.prg_step;
        eprintln!("{role}: resuming from the checkpoint of step {step}");
        Ok((m, p))
    }
    fn step(
        &mut self,
        m: &mut Model,
        x: SecretTensor,
        labels: &[u8],
        lr: f32,
    ) -> Result<StepStats, PartyError> {
        self.with_backend(|be, sgd| m.train_step(be, x, labels, sgd, lr))
    }
    fn eval(
        &mut self,
        m: &mut Model,
        x: SecretTensor,
        labels: &[u8],
    ) -> Result<(f32, usize), PartyError> {
        self.with_backend(|be, _| m.evaluate(be, x, labels))
    }
    fn sync(&mut self, step: u64, m: &Model) -> Result<(), PartyError> {
        self.party.compare_state(step, m.state_digest())
    }
    fn traffic(&mut self) -> Option<goten_party::Traffic> {
        Some(self.party.host.transport().traffic())
    }
}

/// SHA-256 of everything a checkpoint must agree with: model, data, hyper-parameters, mode.
pub(crate) fn fingerprint(a: &TrainArgs, train: &Source, test: &Source) -> [u8; 32] {
    let mut h = Sha256::new();
    let desc = format!(
        "goten/job/v2|{}|{:?}|{}|{}|{}|{:?}|{}|{}|{}|{}|{}",
        a.model,
        a.mode,
        a.epochs,
        a.batch,
        a.lr.to_bits(),
        a.schedule,
        a.step_epochs,
        a.seed,
        a.ring_bits,
        a.quant_bits,
        // The data's content is hashed below; its path may differ between parties.
        a.data == "synthetic"
    );
    h.update(desc.as_bytes());
    for d in [train, test] {
        d.identify(&mut h);
    }
    h.finalize().into()
}

/// The simulated platform's sealing key, kept in the output folder. On TEE hardware this is the
/// enclave's sealing key, which never leaves the CPU; here, whoever can read the folder can read
/// checkpoints, and the run says it is a simulation.
pub(crate) fn platform_sealing_key(out: &Path) -> Result<SecretKey> {
    std::fs::create_dir_all(out)
        .with_context(|| format!("cannot create output folder {}", out.display()))?;
    let path = out.join("simulated-platform-sealing.key");
    if let Ok(b) = std::fs::read(&path) {
        let arr: [u8; 32] = b
            .as_slice()
            .try_into()
            .map_err(|_| anyhow::anyhow!("{} is corrupt (expected 32 bytes)", path.display()))?;
        return Ok(SecretKey::from_bytes(arr));
    }
    let mut k = [0u8; 32];
    getrandom::fill(&mut k).map_err(|e| anyhow::anyhow!("no entropy: {e}"))?;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    opts.open(&path)
        .and_then(|mut f| f.write_all(&k))
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(SecretKey::from_bytes(k))
}
