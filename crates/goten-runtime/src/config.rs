//! The training job's configuration: validated, serialisable, the same for every front end.
//!
//! Where it sits: at the top of the runtime. The command line builds a [`JobConfig`] from its
//! options, the local launcher writes it to a file for each party process (`goten party
//! --job FILE`), and a server or a binding can build one directly. [`JobConfig::validate`]
//! checks everything that can be checked before data is read; [`crate::job::prepare`] the rest.

use std::path::{Path, PathBuf};

use goten_enclave::quant::QuantConfig;
use goten_enclave::session::MIN_PROTECTED_WINDOW;
use goten_field::Ring;
use serde::{Deserialize, Serialize};

use crate::RuntimeError;

/// A closed set of named choices (modes, transports, ...), for option parsers and messages.
pub trait Choice: Copy + PartialEq + 'static {
    /// Every value, in the order help texts list them.
    const ALL: &'static [Self];
    /// The value's name on the command line and in configuration files.
    fn name(self) -> &'static str;
    /// The value called `name`.
    fn from_name(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|v| v.name() == name)
    }
}

macro_rules! choice {
    ($(#[$doc:meta])* $ty:ident { $($(#[$vdoc:meta])* $v:ident = $name:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
        pub enum $ty { $($(#[$vdoc])* #[serde(rename = $name)] $v),+ }
        impl Choice for $ty {
            const ALL: &'static [Self] = &[$($ty::$v),+];
            fn name(self) -> &'static str {
                match self { $($ty::$v => $name),+ }
            }
        }
        impl std::str::FromStr for $ty {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                Self::from_name(s).ok_or_else(|| {
                    let names: Vec<&str> = Self::ALL.iter().map(|v| v.name()).collect();
                    format!("{s:?} is not one of {}", names.join(", "))
                })
            }
        }
    };
}

choice!(
    /// Execution mode.
    Mode {
        /// Float32, no protection: the accuracy and cost reference.
        Plain = "plain",
        /// Everything inside one enclave on the CPU (the pure-TEE baseline).
        Enclave = "enclave",
        /// Three parties: linear layers outsourced on secret shares.
        Goten = "goten",
    }
);

choice!(
    /// How the parties of goten mode talk.
    TransportKind {
        /// Threads of this process.
        InProcess = "in-process",
        /// Separate processes over TLS on loopback.
        Tcp = "tcp",
    }
);

choice!(
    /// Where E0 and E1 run.
    EnclaveKind {
        /// In the party's own process (called directly).
        InProcess = "in-process",
        /// In a child process of the party, over a Unix socket (the shape of an SGX deployment).
        Process = "process",
    }
);

choice!(
    /// The parties' untrusted device.
    DeviceKind {
        /// The multi-threaded CPU backend.
        Cpu = "cpu",
        /// An NVIDIA GPU through CUDA (a build with the `cuda` feature).
        Cuda = "cuda",
    }
);

choice!(
    /// Learning-rate schedule.
    Sched {
        /// Constant rate.
        Constant = "constant",
        /// Halve every `step_epochs` epochs.
        Step = "step",
        /// Cosine decay to zero over the planned run.
        Cosine = "cosine",
    }
);

/// Everything a training job needs; the command line's `goten train` options, one for one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JobConfig {
    /// A built-in model: small, vgg11, vgg16, resnet20, resnet18, resnet18-imagenet.
    pub model: String,
    /// `synthetic`, a dataset folder (CIFAR-10, CIFAR-100, MNIST IDX), or a folder of
    /// `goten seal-data` output.
    pub data: String,
    /// The dataset's format (`goten_data::DataFormat` name); detected from the files if `None`.
    pub data_format: Option<String>,
    /// Starting weights (safetensors under the export's names) instead of the seed's.
    pub init: Option<PathBuf>,
    /// A model file (TOML) describing the network; used instead of `model` when set.
    pub model_file: Option<PathBuf>,
    /// Train without the random crops and flips (step-by-step comparisons with a reference).
    pub no_augment: bool,
    /// Side of an image folder's images after resizing and centre-cropping (default 32).
    pub image_size: Option<u32>,
    /// Normalisation statistics `MEAN,../STD,..` (of pixel/255, one per channel) instead of
    /// the format's.
    pub normalize: Option<String>,
    pub mode: Mode,
    pub epochs: usize,
    /// Stop after this many steps (default: all steps of all epochs).
    pub steps: Option<u64>,
    pub batch: u32,
    pub lr: f32,
    pub schedule: Sched,
    pub step_epochs: usize,
    /// Seed of weights, data order and augmentation (and of the synthetic data).
    pub seed: u64,
    /// Evaluate every N steps (0: at the end of each epoch).
    pub eval_every: u64,
    pub train_limit: Option<usize>,
    pub test_limit: usize,
    pub synthetic_train: usize,
    /// Folder for metrics and checkpoints.
    pub out: PathBuf,
    /// CPU threads (0: automatic).
    pub threads: usize,
    pub ring_bits: u32,
    pub quant_bits: u32,
    /// Where the model owner's export goes.
    pub export: Option<PathBuf>,
    /// The model owner's public key file (`owner.pub` from `goten keygen --owner`): the
    /// export is sealed to it.
    pub model_owner: Option<PathBuf>,
    /// Export a protected run's model in plaintext (loud; tests and trusted setups only).
    pub danger_plaintext_export: bool,
    /// Data key of a sealed dataset (required for one; must lie outside the data folder).
    pub data_key: Option<PathBuf>,
    /// The data owner's job secret seed (`goten keygen --job-seed`), provisioned with the data
    /// key: it keys the rounding noise, batch order and initial weights (goten mode).
    pub job_seed: Option<PathBuf>,
    pub resume: bool,
    pub transport: TransportKind,
    pub enclave: EnclaveKind,
    /// Seconds to wait for another party.
    pub timeout: u64,
    pub device: DeviceKind,
    /// Every key and mask from this public seed: tests only, protects nothing.
    pub danger_deterministic_keys: Option<u64>,
    /// Loss released as means over this many steps (default: 1 plain, 10 protected).
    pub loss_window: Option<u64>,
    pub allow_rollback: bool,
    /// Seal a checkpoint every N steps (0: at every evaluation).
    pub checkpoint_every: u64,
}

impl Default for JobConfig {
    fn default() -> Self {
        JobConfig {
            model: "small".into(),
            data: "synthetic".into(),
            mode: Mode::Goten,
            epochs: 1,
            steps: None,
            batch: 32,
            lr: 0.02,
            schedule: Sched::Cosine,
            step_epochs: 30,
            seed: 1,
            eval_every: 0,
            data_format: None,
            init: None,
            model_file: None,
            no_augment: false,
            image_size: None,
            normalize: None,
            train_limit: None,
            test_limit: 1000,
            synthetic_train: 1024,
            out: "goten-run".into(),
            threads: 0,
            ring_bits: Ring::DEFAULT_BITS,
            quant_bits: 8,
            export: None,
            model_owner: None,
            danger_plaintext_export: false,
            data_key: None,
            job_seed: None,
            resume: false,
            transport: TransportKind::InProcess,
            enclave: EnclaveKind::InProcess,
            timeout: 600,
            device: DeviceKind::Cpu,
            danger_deterministic_keys: None,
            loss_window: None,
            allow_rollback: false,
            checkpoint_every: 0,
        }
    }
}

impl JobConfig {
    /// The loss window, or the mode's default.
    pub fn loss_window_or_default(&self) -> u64 {
        self.loss_window
            .unwrap_or(if self.mode == Mode::Plain { 1 } else { 10 })
    }

    /// Whether the data is generated in memory.
    pub fn synthetic(&self) -> bool {
        self.data == "synthetic"
    }

    /// Threads of each party's device when `parties_here` parties share this machine.
    pub fn party_threads(&self, parties_here: usize) -> usize {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        if self.threads == 0 {
            (cores / parties_here).max(1)
        } else {
            self.threads
        }
    }

    /// Checks every setting that can be checked without reading data.
    pub fn validate(&self) -> Result<(), RuntimeError> {
        let bad = |m: String| Err(RuntimeError::Config(m));
        if goten_enclave::nn::ModelKind::parse(&self.model).is_none() {
            return bad(format!(
                "unknown model {:?}: choose one of {}",
                self.model,
                goten_enclave::nn::ModelKind::names()
            ));
        }
        if let Some(f) = &self.data_format
            && goten_data::DataFormat::parse(f).is_none()
        {
            return bad(format!(
                "unknown data format {f:?}: choose one of {}",
                goten_data::DataFormat::names()
            ));
        }
        Ring::new(self.ring_bits).map_err(|e| RuntimeError::config(format!("ring bits: {e}")))?;
        let quant = QuantConfig {
            bits: self.quant_bits,
            ..QuantConfig::default()
        };
        quant
            .validate()
            .map_err(|e| RuntimeError::config(format!("quant bits: {e}")))?;
        if !(1..=4096).contains(&self.batch) {
            return bad(format!("batch {} is not in 1..=4096", self.batch));
        }
        if !(1..=86_400).contains(&self.timeout) {
            return bad(format!("timeout {} s is not in 1..=86400", self.timeout));
        }
        if !self.lr.is_finite() || self.lr < 0.0 {
            return bad(format!(
                "learning rate {} is not a non-negative number",
                self.lr
            ));
        }
        if self.epochs == 0 || self.steps == Some(0) {
            return bad("nothing to train: epochs and steps must be at least 1".into());
        }
        if self.schedule == Sched::Step && self.step_epochs == 0 {
            return bad("the step schedule needs step epochs of at least 1".into());
        }
        let mode = self.mode.name();
        if self.device != DeviceKind::Cpu && self.mode != Mode::Goten {
            return bad(format!(
                "device {} applies to goten mode's untrusted devices; {mode} mode computes inside the (CPU) enclave",
                self.device.name()
            ));
        }
        if self.enclave == EnclaveKind::Process && self.mode != Mode::Goten {
            return bad(format!(
                "enclave processes run E0 and E1 of goten mode; {mode} mode has no parties (use mode goten)"
            ));
        }
        if self.transport == TransportKind::Tcp && self.mode != Mode::Goten {
            return bad(format!(
                "the tcp transport needs goten mode: it connects its parties, and {mode} mode has none"
            ));
        }
        if self.export.is_some()
            && self.mode != Mode::Plain
            && self.model_owner.is_none()
            && !self.danger_plaintext_export
        {
            return bad(format!(
                "--export in {mode} mode seals the model to its owner: pass --model-owner owner.pub (from goten keygen --owner), or --danger-plaintext-export to write it in the clear"
            ));
        }
        if self.job_seed.is_some() && (self.data_key.is_none() || self.mode != Mode::Goten) {
            return bad("--job-seed is provisioned with the data key to goten mode's enclaves: it needs goten mode, a sealed dataset and --data-key".into());
        }
        if self.model_owner.is_some() && self.danger_plaintext_export {
            return bad(
                "--model-owner and --danger-plaintext-export contradict each other: choose one"
                    .into(),
            );
        }
        if self.mode != Mode::Plain && self.loss_window_or_default() < MIN_PROTECTED_WINDOW {
            return bad(format!(
                "loss window {}: {mode} mode releases the training loss as a mean over at least {MIN_PROTECTED_WINDOW} steps",
                self.loss_window_or_default()
            ));
        }
        if self.loss_window == Some(0) {
            return bad("loss window 0: a window holds at least one step".into());
        }
        Ok(())
    }

    /// Reads and validates a configuration file (JSON).
    pub fn read(path: &Path) -> Result<Self, RuntimeError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| RuntimeError::storage(format!("cannot read {}", path.display()), e))?;
        let c: JobConfig = serde_json::from_str(&text).map_err(|e| {
            RuntimeError::config(format!("{} is not a goten job file: {e}", path.display()))
        })?;
        c.validate()
            .map_err(|e| RuntimeError::config(format!("{}: {e}", path.display())))?;
        Ok(c)
    }

    /// Writes this configuration as a JSON file.
    pub fn write(&self, path: &Path) -> Result<(), RuntimeError> {
        let text = serde_json::to_string_pretty(self).expect("a JobConfig always serialises");
        std::fs::write(path, text)
            .map_err(|e| RuntimeError::storage(format!("cannot write {}", path.display()), e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid_and_round_trips() {
        let c = JobConfig::default();
        c.validate().unwrap();
        let text = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<JobConfig>(&text).unwrap(), c);
        // Missing fields take their defaults; unknown ones are refused.
        let partial: JobConfig = serde_json::from_str(r#"{"mode":"plain","batch":8}"#).unwrap();
        assert_eq!(
            (partial.mode, partial.batch, partial.epochs),
            (Mode::Plain, 8, 1)
        );
        let err = serde_json::from_str::<JobConfig>(r#"{"bach":8}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
        let err = serde_json::from_str::<JobConfig>(r#"{"mode":"fast"}"#).unwrap_err();
        assert!(err.to_string().contains("unknown variant"), "{err}");
    }

    #[test]
    fn validate_names_the_setting() {
        let cases: [(&str, JobConfig); 7] = [
            (
                "unknown model",
                JobConfig {
                    model: "resnet".into(),
                    ..Default::default()
                },
            ),
            (
                "ring bits",
                JobConfig {
                    ring_bits: 40,
                    ..Default::default()
                },
            ),
            (
                "quant bits",
                JobConfig {
                    quant_bits: 0,
                    ..Default::default()
                },
            ),
            (
                "nothing to train",
                JobConfig {
                    steps: Some(0),
                    ..Default::default()
                },
            ),
            (
                "device cuda",
                JobConfig {
                    mode: Mode::Plain,
                    device: DeviceKind::Cuda,
                    ..Default::default()
                },
            ),
            (
                "loss window 4",
                JobConfig {
                    loss_window: Some(4),
                    ..Default::default()
                },
            ),
            (
                "tcp transport",
                JobConfig {
                    mode: Mode::Enclave,
                    transport: TransportKind::Tcp,
                    ..Default::default()
                },
            ),
        ];
        for (want, c) in cases {
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains(want), "{want:?} not in {e:?}");
        }
    }

    #[test]
    fn choices_round_trip_by_name() {
        for m in Mode::ALL {
            assert_eq!(Mode::from_name(m.name()), Some(*m));
            assert_eq!(
                serde_json::to_string(m).unwrap(),
                format!("\"{}\"", m.name())
            );
        }
        assert_eq!(
            EnclaveKind::from_name("process"),
            Some(EnclaveKind::Process)
        );
        assert_eq!(Sched::from_name("linear"), None);
        let e = "linear".parse::<Sched>().unwrap_err();
        assert_eq!(e, "\"linear\" is not one of constant, step, cosine");
    }

    #[test]
    fn files_round_trip_and_bad_files_name_the_file() {
        let dir = std::env::temp_dir().join(format!("goten-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("job.json");
        let c = JobConfig {
            epochs: 3,
            export: Some("m.st".into()),
            model_owner: Some("owner.pub".into()),
            ..Default::default()
        };
        c.write(&p).unwrap();
        assert_eq!(JobConfig::read(&p).unwrap(), c);
        std::fs::write(&p, r#"{"batch": 0}"#).unwrap();
        let e = JobConfig::read(&p).unwrap_err().to_string();
        assert!(e.contains("job.json") && e.contains("batch 0"), "{e}");
        std::fs::write(&p, "{").unwrap();
        assert!(matches!(JobConfig::read(&p), Err(RuntimeError::Config(_))));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
