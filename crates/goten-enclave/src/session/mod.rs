//! The training session: the whole training program behind a few ecalls.
//!
//! Where it sits: inside E0 and E1 (goten mode) or the single enclave (plain and enclave
//! modes). The host creates a [`TrainSession`] from the finished key exchange
//! ([`KeyedEnclave`], so a session before keys exist does not type-check) or, for the local
//! modes, from nothing but the configuration; it hands over the data once; then it only says
//! "step", "evaluate", "checkpoint", "export". The session owns the model, the optimizer, the
//! data key, the batch order (from the job secret), augmentation, loss and evaluation, the
//! state tag E0 and E1 compare, and sealing. What comes back is a [`release`] report, sealed
//! ciphertext, or (through the host services of [`crate::linear`]) one-time-padded shares.

mod config;
mod data;
mod ecalls;
mod fault;
pub mod model_out;
pub mod release;
pub mod serve;

use goten_field::SecretKey;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::linear::HostServices;
use crate::nn::checkpoint::{self, CheckpointError, Progress};
use crate::nn::export::{self, Named};
use crate::nn::optim::Sgd;
use crate::nn::{FloatBackend, Model, NnError, ProtocolBackend};
use crate::{KeyedEnclave, Role};
pub use config::{LocalSecret, Protection, SessionError, TrainConfig};
pub use data::Split;
pub use ecalls::SessionEcalls;
pub use fault::Fault;
pub use model_out::ModelRelease;
use release::LossWindow;
pub use release::{EvalReport, MIN_PROTECTED_WINDOW, StepReport, WindowLoss};

/// A checkpoint sealed under the platform sealing key: ciphertext the host stores.
pub struct SealedCheckpoint(pub Vec<u8>);

/// A MAC of the full training state under a key only E0 and E1 hold: equal tags mean equal
/// states, and a host that has no key learns nothing from a tag (no equality oracle).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct StateTag(pub [u8; 32]);

impl std::fmt::Debug for StateTag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StateTag(..)")
    }
}

/// An enclave's word, under the pair key, that it has sealed and stored its checkpoint of
/// `step`: the peer seals it into its own checkpoints, so a host that rolls back its own
/// enclave's files behind the newest receipt is caught on resume (DESIGN.md section 15).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Receipt {
    /// The step sealed.
    pub step: u64,
    /// HMAC-SHA256 under a key derived from the pair key, bound to the sender's role.
    pub mac: [u8; 32],
}

/// A checkpoint opened inside the enclave, waiting to be adopted; the host sees its step only.
pub struct Opened {
    model: Model,
    progress: Progress,
    job: Option<SecretKey>,
}

impl std::fmt::Debug for Opened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Opened(step {}, <redacted>)", self.progress.step)
    }
}

impl Opened {
    /// The step the checkpoint was sealed at.
    pub fn step(&self) -> u64 {
        self.progress.step
    }
}

/// The trained model for its owner (safetensors names, see `nn::export`).
pub struct Export {
    /// Weights and statistics under PyTorch names.
    pub tensors: Vec<Named>,
    /// Prefixes of the batch-norm layers (for `num_batches_tracked`).
    pub batchnorm: Vec<String>,
    /// Steps trained.
    pub steps: u64,
}

impl std::fmt::Debug for Export {
    /// Names and sizes only: weights never appear in Debug output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Export({} tensors, {} steps, <weights redacted>)",
            self.tensors.len(),
            self.steps
        )
    }
}

enum Linear<'k> {
    Float(FloatBackend),
    Protocol {
        enclave: &'k mut KeyedEnclave,
        counter: u64,
    },
}

/// One training job inside an enclave. Debug output is redacted.
pub struct TrainSession<'k> {
    cfg: TrainConfig,
    train: data::Records,
    test: data::Records,
    model: Model,
    sgd: Sgd,
    linear: Linear<'k>,
    job: SecretKey,
    sealing: SecretKey,
    progress: Progress,
    window: LossWindow,
    /// The permutation of the current epoch: (epoch, order).
    order: Option<(u64, Vec<usize>)>,
    /// Checkpoints opened for a resume, not yet adopted.
    opened: Vec<Opened>,
}

impl std::fmt::Debug for TrainSession<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "TrainSession({}, step {}, <redacted>)",
            self.cfg.model.name(),
            self.progress.step
        )
    }
}

/// Runs `f` with the session's linear backend: float products inside, or the protocol through
/// `host`, continuing the session's PRG step counter.
fn with_backend<'o, R>(
    linear: &mut Linear<'_>,
    host: Option<&mut (dyn HostServices + 'o)>,
    f: impl FnOnce(&mut dyn crate::nn::LinearBackend) -> Result<R, NnError>,
) -> Result<R, SessionError> {
    match linear {
        Linear::Float(be) => Ok(f(be)?),
        Linear::Protocol { enclave, counter } => {
            let host = host.ok_or(SessionError::State("goten mode needs its host"))?;
            let mut be = ProtocolBackend::new(enclave, host, *counter);
            let r = f(&mut be);
            *counter = be.step();
            Ok(r?)
        }
    }
}

/// Equality of two MACs in constant time: a host should learn nothing from timing.
fn macs_equal(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

impl<'k> TrainSession<'k> {
    /// A session of plain or enclave mode: every product in float32 inside, `threads` workers.
    pub fn local(
        cfg: TrainConfig,
        (train, test): (Split, Split),
        sealing: SecretKey,
        secret: LocalSecret,
        threads: usize,
    ) -> Result<Self, SessionError> {
        let job = match secret {
            LocalSecret::DangerFromSeed => {
                let mut k = [0u8; 32];
                k[..8].copy_from_slice(&cfg.seed.to_le_bytes());
                SecretKey::from_bytes(k)
            }
            LocalSecret::Fresh => {
                let mut k = [0u8; 32];
                getrandom::fill(&mut k)
                    .map_err(|e| SessionError::Config(format!("no entropy: {e}")))?;
                SecretKey::from_bytes(k)
            }
        };
        let linear = Linear::Float(FloatBackend::new(threads));
        Self::start(cfg, (train, test), sealing, job, linear, None)
    }

    /// A session of goten mode on an enclave whose keys are established: every product goes
    /// through the three-party protocol.
    pub fn goten(
        enclave: &'k mut KeyedEnclave,
        cfg: TrainConfig,
        (train, test): (Split, Split),
        sealing: SecretKey,
    ) -> Result<Self, SessionError> {
        if cfg.protection != Protection::Protected {
            return Err(SessionError::Config(
                "goten mode is always protected".into(),
            ));
        }
        let mut cfg = cfg;
        // A data owner's job seed keys the rounding noise, the batch order and the initial
        // weights: reproducible by the owner, unpredictable for every host (the public --seed
        // no longer matters).
        if let Some((job, init)) = enclave.owner_job() {
            enclave.seeds_mut().set_job_secret(job);
            cfg.seed = init;
        }
        let job = enclave.seeds().job_secret().clone();
        let provisioned = enclave.provisioned_data_key().cloned();
        let linear = Linear::Protocol {
            enclave,
            counter: 0,
        };
        Self::start(cfg, (train, test), sealing, job, linear, provisioned)
    }

    fn start(
        cfg: TrainConfig,
        (train, test): (Split, Split),
        sealing: SecretKey,
        job: SecretKey,
        linear: Linear<'k>,
        provisioned: Option<zeroize::Zeroizing<[u8; 32]>>,
    ) -> Result<Self, SessionError> {
        if cfg.batch == 0 || cfg.epochs == 0 || cfg.total_steps == 0 {
            return Err(SessionError::Config(
                "batch, epochs and steps must be at least 1".into(),
            ));
        }
        if cfg.protection == Protection::Protected && cfg.loss_window < MIN_PROTECTED_WINDOW {
            return Err(SessionError::Config(format!(
                "a protected run releases the training loss as a mean over at least {MIN_PROTECTED_WINDOW} steps (asked for {})",
                cfg.loss_window
            )));
        }
        cfg.input
            .check()
            .map_err(|e| SessionError::Config(format!("input images: {e}")))?;
        let want = cfg.model.input_shape();
        if want != cfg.input.shape {
            let d = |s: [usize; 3]| format!("{}x{}x{}", s[0], s[1], s[2]);
            return Err(SessionError::Config(format!(
                "model {} takes {} images; the dataset's images are {}",
                cfg.model.name(),
                d(want),
                d(cfg.input.shape)
            )));
        }
        let mut cfg = cfg;
        let (input, train, test) =
            data::open_splits(&cfg.input, cfg.classes, (train, test), provisioned.as_ref())?;
        cfg.input = input;
        let mut model = cfg.model.build(cfg.seed, cfg.classes)?;
        model.set_input_norm(cfg.input.mean.clone(), cfg.input.std.clone());
        if let Some(init) = &cfg.init {
            export::import_named(&mut model, init)
                .map_err(|e| SessionError::Config(format!("--init weights: {e}")))?;
        }
        let window = LossWindow::new(cfg.loss_window);
        Ok(TrainSession {
            cfg,
            train,
            test,
            model,
            sgd: Sgd::default(),
            linear,
            job,
            sealing,
            progress: Progress::default(),
            window,
            order: None,
            opened: Vec::new(),
        })
    }

    fn steps_per_epoch(&self) -> u64 {
        self.train.len().div_ceil(self.cfg.batch) as u64
    }

    /// Steps done so far.
    pub fn step_count(&self) -> u64 {
        self.progress.step
    }

    /// Epoch of the next step (0-based).
    pub fn epoch(&self) -> u64 {
        self.progress.step / self.steps_per_epoch()
    }

    /// Whether every planned step is done.
    pub fn done(&self) -> bool {
        self.progress.step >= self.cfg.total_steps
    }

    /// Whether the step just done ended an epoch.
    pub fn at_epoch_end(&self) -> bool {
        self.progress.step > 0 && self.progress.step.is_multiple_of(self.steps_per_epoch())
    }

    /// Ecall "step": trains on the next batch of the secret order.
    pub fn step(
        &mut self,
        host: Option<&mut dyn HostServices>,
    ) -> Result<StepReport, SessionError> {
        if self.done() {
            return Err(SessionError::State("every planned step is done"));
        }
        let per_epoch = self.steps_per_epoch();
        let epoch = self.progress.step / per_epoch;
        if self.order.as_ref().map(|(e, _)| *e) != Some(epoch) {
            let key = self.job.derive(b"goten/batch-order");
            self.order = Some((epoch, data::order(&key, self.train.len(), epoch)));
        }
        let within = (self.progress.step % per_epoch) as usize * self.cfg.batch;
        let idx: Vec<usize> = {
            let ord = &self.order.as_ref().expect("set above").1;
            ord[within..(within + self.cfg.batch).min(ord.len())].to_vec()
        };
        let aug = self.job.derive(b"goten/augment");
        let (x, labels) = self.train.batch(&idx, Some((&aug, self.progress.step)));
        let lr = self
            .cfg
            .schedule
            .lr(self.cfg.lr, self.progress.step, epoch as usize);
        // Dropout masks come from the job secret: hosts cannot predict which units drop.
        self.model
            .set_noise(self.job.derive(b"goten/dropout"), self.progress.step);
        let (model, sgd) = (&mut self.model, &self.sgd);
        let stats = with_backend(&mut self.linear, host, |be| {
            model.train_step(be, x, &labels, sgd, lr)
        })?;
        if !stats.loss.is_finite() {
            return Err(SessionError::Nn(NnError::Numeric(format!(
                "training diverged at step {} (loss is not finite); lower --lr",
                self.progress.step + 1
            ))));
        }
        self.progress.step += 1;
        self.progress.images += idx.len() as u64;
        let step = self.progress.step;
        Ok(StepReport {
            step,
            epoch,
            images: idx.len(),
            lr,
            loss: self.window.push(step, stats.loss),
        })
    }

    /// The open loss window at the end of a run, when it is long enough to release.
    pub fn flush_loss(&mut self) -> Option<WindowLoss> {
        self.window.flush()
    }

    /// Ecall "evaluate": loss and accuracy over the whole test split.
    pub fn evaluate(
        &mut self,
        mut host: Option<&mut dyn HostServices>,
    ) -> Result<EvalReport, SessionError> {
        let (mut loss, mut correct) = (0f64, 0usize);
        let n = self.test.len();
        for start in (0..n).step_by(self.cfg.batch) {
            let idx: Vec<usize> = (start..(start + self.cfg.batch).min(n)).collect();
            let (x, labels) = self.test.batch(&idx, None);
            let model = &mut self.model;
            let (l, c) = with_backend(&mut self.linear, host.as_deref_mut(), |be| {
                model.evaluate(be, x, &labels)
            })?;
            loss += f64::from(l) * idx.len() as f64;
            correct += c;
        }
        Ok(EvalReport {
            step: self.progress.step,
            epoch: self.progress.step.saturating_sub(1) / self.steps_per_epoch(),
            loss: (loss / n as f64) as f32,
            accuracy: correct as f64 / n as f64,
            images: n,
        })
    }

    /// An HMAC under the key only E0 and E1 hold (from the pair key), started with `label`,
    /// and this enclave's role.
    fn pair_mac(&self, label: &[u8]) -> Result<(Hmac<Sha256>, Role), SessionError> {
        let Linear::Protocol { enclave, .. } = &self.linear else {
            return Err(SessionError::State("only goten mode has a peer enclave"));
        };
        let key = enclave.seeds().state_mac_key();
        let mut mac = key.hmac_sha256();
        mac.update(label);
        Ok((mac, enclave.role()))
    }

    fn receipt_mac(&self, from: Role, step: u64) -> Result<[u8; 32], SessionError> {
        let (mut mac, _) = self.pair_mac(b"goten/sealed-receipt/v1")?;
        mac.update(&[from.index() as u8]);
        mac.update(&step.to_le_bytes());
        Ok(mac.finalize().into_bytes().into())
    }

    /// Ecall "receipt": after this enclave's checkpoint of the current step is stored, a MAC
    /// (pair key) saying so, for the peer to seal into its own next checkpoint.
    pub fn sealed_receipt(&self) -> Result<Receipt, SessionError> {
        let (_, me) = self.pair_mac(b"")?;
        let step = self.progress.step;
        Ok(Receipt {
            step,
            mac: self.receipt_mac(me, step)?,
        })
    }

    /// Ecall "accept the peer's receipt": remembers the newest step the peer has sealed.
    pub fn accept_peer_receipt(&mut self, r: &Receipt) -> Result<(), SessionError> {
        let (_, me) = self.pair_mac(b"")?;
        let peer = if me == Role::S0 { Role::S1 } else { Role::S0 };
        if !macs_equal(&self.receipt_mac(peer, r.step)?, &r.mac) || r.step > self.progress.step {
            return Err(SessionError::Reported {
                fault: Fault::Peer,
                message: format!("{peer}'s receipt for step {} does not verify", r.step),
            });
        }
        self.progress.peer_sealed = self.progress.peer_sealed.max(r.step);
        Ok(())
    }

    /// Ecall "state tag": a MAC of the full state for the peer enclave (goten mode).
    pub fn state_tag(&self) -> Result<StateTag, SessionError> {
        let (mut mac, _) = self.pair_mac(b"goten/state-tag/v1")?;
        mac.update(&self.progress.step.to_le_bytes());
        self.model.feed_state(&mut |b| mac.update(b));
        Ok(StateTag(mac.finalize().into_bytes().into()))
    }

    /// Ecall "check the peer's tag": fails unless the peer's state equals this one's.
    pub fn check_peer_tag(&self, peer: &StateTag) -> Result<(), SessionError> {
        if macs_equal(&self.state_tag()?.0, &peer.0) {
            Ok(())
        } else {
            Err(SessionError::Diverged(self.progress.step))
        }
    }

    fn role_label(&self) -> &'static str {
        match &self.linear {
            Linear::Float(_) => "enclave",
            Linear::Protocol { enclave, .. } => enclave.role_label(),
        }
    }

    /// Ecall "checkpoint": the full state and the job secret, sealed for this enclave.
    pub fn checkpoint(&mut self) -> Result<SealedCheckpoint, SessionError> {
        let mut p = self.progress;
        p.epoch = self.epoch();
        if let Linear::Protocol { counter, .. } = &self.linear {
            p.prg_step = *counter;
        }
        let role = self.role_label();
        Ok(SealedCheckpoint(checkpoint::seal(
            &mut self.model,
            p,
            self.cfg.fingerprint,
            Some(&self.job),
            &self.sealing,
            role,
        )?))
    }

    /// Ecall "open a checkpoint": unseals and checks it without adopting it.
    pub fn open_checkpoint(&self, sealed: &[u8]) -> Result<Opened, SessionError> {
        let r = checkpoint::unseal(
            sealed,
            &self.sealing,
            self.role_label(),
            self.cfg.fingerprint,
            &self.cfg.model,
            self.cfg.seed,
            self.cfg.classes,
        )?;
        Ok(Opened {
            model: r.model,
            progress: r.progress,
            job: r.job_secret,
        })
    }

    /// Ecall "resume": continues from an opened checkpoint (its model, progress and job
    /// secret, so the run goes on bit for bit).
    pub fn resume(&mut self, o: Opened) -> Result<(), SessionError> {
        let job = o.job.ok_or(CheckpointError::Malformed(
            "no job secret in the checkpoint".into(),
        ))?;
        if let Linear::Protocol { enclave, counter } = &mut self.linear {
            enclave.seeds_mut().set_job_secret(job.clone());
            *counter = o.progress.prg_step;
        }
        self.job = job;
        self.model = o.model;
        self.progress = o.progress;
        self.order = None;
        self.window = LossWindow::new(self.cfg.loss_window);
        Ok(())
    }

    /// Ecall "export": the trained model for its owner (DESIGN.md section 15). Sealed to the
    /// owner's public key when the job names one; in plaintext only from an unprotected (plain
    /// mode) run or with the user's explicit danger flag; otherwise refused.
    pub fn export_for_model_owner(&self) -> Result<ModelRelease, SessionError> {
        let e = Export {
            tensors: export::export(&self.model),
            batchnorm: export::batchnorm_prefixes(&self.model),
            steps: self.progress.step,
        };
        match (&self.cfg.model_owner, self.cfg.protection) {
            (Some(owner), _) => Ok(ModelRelease::Sealed(model_out::seal_model(&e, owner)?)),
            (None, Protection::None) => Ok(ModelRelease::Plain(e)),
            (None, Protection::Protected) if self.cfg.danger_plaintext_export => {
                Ok(ModelRelease::Plain(e))
            }
            (None, Protection::Protected) => Err(SessionError::Config(
                "this run protects the model: the export needs the model owner's public key (--model-owner), or an explicit --danger-plaintext-export".into(),
            )),
        }
    }
}
