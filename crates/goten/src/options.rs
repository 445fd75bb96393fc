//! The options of `goten train` (and of `goten party`, which takes the same): one flag per
//! field of the runtime's `JobConfig`, with help texts, converted by [`TrainArgs::to_config`].
//!
//! Where it sits: at the top of the CLI; `train.rs` and `party.rs` read these, and nothing
//! here depends on them. The choices (modes, transports, ...) are the runtime's, parsed by
//! name.

use std::path::PathBuf;

use clap::Args;
use goten_field::Ring;
use goten_runtime::JobConfig;
use goten_runtime::config::{DeviceKind, EnclaveKind, Mode, Sched, TransportKind};

/// Options of `goten train`.
#[derive(Args, Debug, Clone)]
pub struct TrainArgs {
    /// Model: small (three conv blocks, quick), vgg11, vgg16 (VGG-BN), resnet20, resnet18,
    /// resnet18-imagenet (see `goten model list`).
    #[arg(long, default_value = "small", conflicts_with = "model_file")]
    pub(crate) model: String,
    /// A model file (TOML) describing the network instead of a built-in model (format in
    /// DESIGN.md section 11; `goten model show FILE` checks one).
    #[arg(long)]
    pub(crate) model_file: Option<PathBuf>,
    /// `synthetic` (generated in memory, no download), or a dataset folder: CIFAR-10 binary
    /// (or its .tar.gz), CIFAR-100 binary, MNIST / Fashion-MNIST IDX (raw or .gz), PNG/JPEG
    /// images in train/CLASS/ and test/CLASS/ subfolders, or arrays (train_images.npy, ... or
    /// train.safetensors / test.safetensors); the format is detected from the file names or
    /// named by --data-format. (A folder holding
    /// `train.sealed` / `test.sealed` from `goten seal-data` is read sealed.)
    #[arg(long, default_value = "synthetic")]
    pub(crate) data: String,
    /// Dataset format instead of detection: cifar10, cifar100, cifar100-coarse, mnist,
    /// fashion-mnist (MNIST and Fashion-MNIST files look alike; the name picks the statistics),
    /// image-folder (train/CLASS/*.png|jpg and test/CLASS/*), npy, safetensors.
    #[arg(long)]
    pub(crate) data_format: Option<String>,
    /// Start from these weights (safetensors with the export's names, e.g. a torchvision-style
    /// state dict) instead of the seed's: fine-tuning. Every missing name and wrong shape is
    /// listed. The file is an input every party's host holds (like a public dataset).
    #[arg(long)]
    pub(crate) init: Option<PathBuf>,
    /// Train without random crops and flips (for step-by-step comparisons with PyTorch).
    #[arg(long)]
    pub(crate) no_augment: bool,
    /// Image folders: resize each image's shorter side to N and crop the centre N x N
    /// (default 32; the model must take that size).
    #[arg(long, value_parser = clap::value_parser!(u32).range(4..=1024))]
    pub(crate) image_size: Option<u32>,
    /// Normalisation statistics MEAN,../STD,.. of pixel/255, one per channel (default: the
    /// format's published ones; an image folder's or arrays' computed from the training images).
    #[arg(long)]
    pub(crate) normalize: Option<String>,
    /// Execution mode: `plain` (float32, no protection: the reference), `enclave` (everything
    /// in one enclave on the CPU) or `goten` (three parties, linear layers on secret shares).
    #[arg(long, default_value = "goten")]
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
    /// Learning-rate schedule: `constant`, `step` (halve every --step-epochs) or `cosine`.
    #[arg(long, default_value = "cosine")]
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
    /// CPU threads for float products and for each party's device (0: automatic; the three
    /// devices of a single-process goten run share one pool of the cores, or of 3x this count).
    #[arg(long, default_value_t = 0)]
    pub(crate) threads: usize,
    /// Width k of the share ring Z_2^k (goten mode).
    #[arg(long, default_value_t = Ring::DEFAULT_BITS)]
    pub(crate) ring_bits: u32,
    /// Quantization width in bits (goten mode).
    #[arg(long, default_value_t = 8)]
    pub(crate) quant_bits: u32,
    /// Write the trained model for its owner to this file: sealed to --model-owner's key in
    /// enclave and goten modes (open it with goten decrypt-model), safetensors (PyTorch names)
    /// in plain mode.
    #[arg(long)]
    pub(crate) export: Option<PathBuf>,
    /// The model owner's public key (owner.pub from goten keygen --owner): the export is sealed
    /// to it, so no host sees the trained weights.
    #[arg(long)]
    pub(crate) model_owner: Option<PathBuf>,
    /// Write a protected run's export in the clear on this host instead (loud; for trusted
    /// setups and tests).
    #[arg(long)]
    pub(crate) danger_plaintext_export: bool,
    /// Data key of a sealed dataset (from `goten seal-data`); required for one, and refused
    /// inside the data folder (the hosts receive that folder).
    #[arg(long)]
    pub(crate) data_key: Option<PathBuf>,
    /// The data owner's job secret seed (goten keygen --job-seed), provisioned with the data key:
    /// it keys the rounding noise, batch order and initial weights, so the owner can reproduce
    /// the run bit for bit and no host can predict them (goten mode, sealed data).
    #[arg(long)]
    pub(crate) job_seed: Option<PathBuf>,
    /// Continue from the sealed checkpoint in `--out` (same settings required).
    #[arg(long)]
    pub(crate) resume: bool,
    /// Goten mode: `in-process` (three threads, the default) or `tcp` (three processes on
    /// loopback, mutually authenticated TLS, as on separate machines).
    #[arg(long, default_value = "in-process")]
    pub(crate) transport: TransportKind,
    /// Goten mode: where E0 and E1 run: `in-process` (called directly, the default) or
    /// `process` (each a child process of its party, talking over a Unix socket only in the
    /// ecall codec: the shape of an SGX deployment).
    #[arg(long, default_value = "in-process")]
    pub(crate) enclave: EnclaveKind,
    /// Seconds to wait for any message from another party before giving up (goten mode).
    #[arg(long, default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub(crate) timeout: u64,
    /// Untrusted device of the parties in goten mode: `cpu` or `cuda` (a build with
    /// `--features cuda` and an NVIDIA GPU).
    #[arg(long, default_value = "cpu")]
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

impl TrainArgs {
    /// The runtime's job configuration (validated later, by the runtime).
    pub(crate) fn to_config(&self) -> JobConfig {
        JobConfig {
            model: self.model.clone(),
            data: self.data.clone(),
            data_format: self.data_format.clone(),
            init: self.init.clone(),
            model_file: self.model_file.clone(),
            no_augment: self.no_augment,
            image_size: self.image_size,
            normalize: self.normalize.clone(),
            mode: self.mode,
            epochs: self.epochs,
            steps: self.steps,
            batch: self.batch,
            lr: self.lr,
            schedule: self.schedule,
            step_epochs: self.step_epochs,
            seed: self.seed,
            eval_every: self.eval_every,
            train_limit: self.train_limit,
            test_limit: self.test_limit,
            synthetic_train: self.synthetic_train,
            out: self.out.clone(),
            threads: self.threads,
            ring_bits: self.ring_bits,
            quant_bits: self.quant_bits,
            export: self.export.clone(),
            model_owner: self.model_owner.clone(),
            danger_plaintext_export: self.danger_plaintext_export,
            data_key: self.data_key.clone(),
            job_seed: self.job_seed.clone(),
            resume: self.resume,
            transport: self.transport,
            enclave: self.enclave,
            timeout: self.timeout,
            device: self.device,
            danger_deterministic_keys: self.danger_deterministic_keys,
            loss_window: self.loss_window,
            allow_rollback: self.allow_rollback,
            checkpoint_every: self.checkpoint_every,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::FromArgMatches;

    fn parse(args: &[&str]) -> TrainArgs {
        let cmd = TrainArgs::augment_args(clap::Command::new("train"));
        let m = cmd
            .try_get_matches_from(std::iter::once("train").chain(args.iter().copied()))
            .unwrap();
        TrainArgs::from_arg_matches(&m).unwrap()
    }

    /// The command line's defaults are the runtime's: a job file that leaves a field out
    /// means what leaving out the flag means.
    #[test]
    fn defaults_match_the_runtime() {
        assert_eq!(parse(&[]).to_config(), JobConfig::default());
    }

    /// Every flag reaches the configuration (a flag left out of `to_config` would keep the
    /// default and fail here).
    #[test]
    fn every_flag_reaches_the_config() {
        let c = parse(&[
            "--model",
            "vgg11",
            "--data",
            "d",
            "--data-format",
            "mnist",
            "--init",
            "w.safetensors",
            "--no-augment",
            "--image-size",
            "64",
            "--normalize",
            "0.5/0.25",
            "--mode",
            "enclave",
            "--epochs",
            "2",
            "--steps",
            "3",
            "--batch",
            "4",
            "--lr",
            "0.5",
            "--schedule",
            "step",
            "--step-epochs",
            "5",
            "--seed",
            "6",
            "--eval-every",
            "7",
            "--train-limit",
            "8",
            "--test-limit",
            "9",
            "--synthetic-train",
            "10",
            "--out",
            "o",
            "--threads",
            "11",
            "--ring-bits",
            "20",
            "--quant-bits",
            "6",
            "--export",
            "e",
            "--model-owner",
            "owner.pub",
            "--danger-plaintext-export",
            "--data-key",
            "k",
            "--job-seed",
            "s",
            "--resume",
            "--transport",
            "tcp",
            "--enclave",
            "process",
            "--timeout",
            "12",
            "--device",
            "cuda",
            "--danger-deterministic-keys",
            "13",
            "--loss-window",
            "14",
            "--allow-rollback",
            "--checkpoint-every",
            "15",
        ])
        .to_config();
        let text = serde_json::to_value(&c).unwrap();
        let default = serde_json::to_value(JobConfig::default()).unwrap();
        for (k, v) in text.as_object().unwrap() {
            // --model-file excludes --model: checked on its own below.
            if k != "model_file" {
                assert_ne!(v, &default[k], "--{k} did not reach the job configuration");
            }
        }
        let c = parse(&["--model-file", "net.toml"]).to_config();
        assert_eq!(c.model_file, Some(PathBuf::from("net.toml")));
        assert!(
            TrainArgs::augment_args(clap::Command::new("train"))
                .try_get_matches_from(["t", "--model", "vgg11", "--model-file", "n.toml"])
                .is_err(),
            "--model and --model-file are exclusive"
        );
    }
}
