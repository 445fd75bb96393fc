//! What a training job is, as the session receives it ([`TrainConfig`]), how much it
//! protects, and why an ecall fails ([`SessionError`], with whose fault it is).
//!
//! Where it sits: the host builds a [`TrainConfig`] from its options and hands it to the
//! session with the data; every ecall answers with a [`SessionError`] on failure.

use crate::EnclaveError;
use crate::nn::checkpoint::CheckpointError;
use crate::nn::export::Named;
use crate::nn::input::InputSpec;
use crate::nn::optim::Schedule;
use crate::nn::{Arch, NnError};

use super::Fault;

/// How much the run protects, which decides what the session may release.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protection {
    /// No protection (plain mode): per-step losses may be released; the batch order is a
    /// public function of the seed.
    None,
    /// Protected (enclave and goten modes): the order and augmentation come from a secret,
    /// losses leave only as means over at least [`MIN_PROTECTED_WINDOW`] steps.
    Protected,
}

/// Where a local session's job secret comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LocalSecret {
    /// Fresh randomness (enclave mode).
    Fresh,
    /// A public function of the seed (plain mode, or a test run with deterministic keys):
    /// protects nothing.
    DangerFromSeed,
}

/// The job as the session sees it; the host builds it from its options.
#[derive(Clone, Debug)]
pub struct TrainConfig {
    /// The network: a built-in model or a model file's.
    pub model: Arch,
    /// Output classes.
    pub classes: usize,
    /// What an input image is (shape, normalisation, augmentation).
    pub input: InputSpec,
    /// Starting weights under the export's names (`--init`), instead of the seed's: public
    /// inputs of the job (for example torchvision's pretrained weights), like a public dataset.
    pub init: Option<Vec<Named>>,
    /// Public seed of the initial weights.
    pub seed: u64,
    /// Passes over the training split.
    pub epochs: u64,
    /// Images per step.
    pub batch: usize,
    /// Base learning rate.
    pub lr: f32,
    /// Learning-rate schedule.
    pub schedule: Schedule,
    /// Stop after this many steps (at most `epochs` passes).
    pub total_steps: u64,
    /// Steps per released loss mean.
    pub loss_window: u64,
    /// What the run protects.
    pub protection: Protection,
    /// Hash of everything a checkpoint must agree with (model, data, hyper-parameters, the
    /// model owner).
    pub fingerprint: [u8; 32],
    /// The model owner's HPKE public key: the export is sealed to it.
    pub model_owner: Option<[u8; 32]>,
    /// Release the export in plaintext from a protected run (the user's explicit danger flag).
    pub danger_plaintext_export: bool,
}

/// Why an ecall failed, and whose fault it is.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The caller's configuration is invalid.
    #[error("training configuration: {0}")]
    Config(String),
    /// The input data is malformed or fails authentication.
    #[error("input data: {0}")]
    Data(String),
    /// The network or the secure op failed.
    #[error(transparent)]
    Nn(#[from] NnError),
    /// A checkpoint cannot be used.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// The peer enclave's state differs from this one's.
    #[error("E0 and E1 diverged: their state tags differ at step {0}")]
    Diverged(u64),
    /// Called in a state where the call makes no sense.
    #[error("{0}")]
    State(&'static str),
    /// An error an enclave in another process reported, with whose fault it is.
    #[error("{message}")]
    Reported {
        /// Whose fault.
        fault: Fault,
        /// The enclave's message.
        message: String,
    },
}

impl From<EnclaveError> for SessionError {
    fn from(e: EnclaveError) -> Self {
        SessionError::Nn(NnError::Enclave(e))
    }
}
