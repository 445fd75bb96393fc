//! The options of `goten train` (and of `goten party`, which takes the same): modes,
//! transports, schedules, and the defaults that depend on them.
//!
//! Where it sits: at the top of the CLI; `train.rs`, `spawn.rs`, `party.rs` and the job
//! fingerprint read these, and nothing here depends on them.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use goten_field::Ring;

use crate::devices::DeviceKind;
use crate::enclave_proc::EnclaveKind;

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

impl Mode {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Mode::Plain => "plain",
            Mode::Enclave => "enclave",
            Mode::Goten => "goten",
        }
    }
}

impl TrainArgs {
    /// `--loss-window`, or the mode's default.
    pub(crate) fn loss_window_or_default(&self) -> u64 {
        self.loss_window
            .unwrap_or(if self.mode == Mode::Plain { 1 } else { 10 })
    }
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
    /// Goten mode: where E0 and E1 run: `in-process` (called directly, the default) or
    /// `process` (each a child process of its party, talking over a Unix socket only in the
    /// ecall codec: the shape of an SGX deployment).
    #[arg(long, value_enum, default_value_t = EnclaveKind::InProcess)]
    pub(crate) enclave: EnclaveKind,
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
    /// Release the training loss as a mean over windows of N steps (default: 1 in plain mode,
    /// 10 in enclave and goten modes, which accept no fewer than 8: single-step losses would
    /// tell a host too much about single batches).
    #[arg(long)]
    pub(crate) loss_window: Option<u64>,
    /// On --resume, accept that the other enclave's checkpoints are older than a step it
    /// confirmed it had sealed (its files were rolled back or lost); refused without this.
    #[arg(long)]
    pub(crate) allow_rollback: bool,
    /// Seal a checkpoint every N steps (0: at every evaluation); one is always sealed at the end.
    #[arg(long, default_value_t = 0)]
    pub(crate) checkpoint_every: u64,
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
