//! A prepared job: the validated configuration with its data loaded, its schedule planned and
//! its fingerprint taken.
//!
//! Where it sits: between [`crate::config`] and the executors ([`crate::local`],
//! [`crate::party_run`]). Loading happens once per party; each enclave receives its own copy of
//! the splits when its session starts.

use goten_data::DataFormat;
use goten_enclave::EnclaveConfig;
use goten_enclave::nn::export::Named;
use goten_enclave::nn::input::InputSpec;
use goten_enclave::nn::optim::Schedule;
use goten_enclave::nn::{Arch, ModelKind};
use goten_enclave::quant::QuantConfig;
use goten_enclave::session::{Protection, Split, TrainConfig};
use goten_field::{Ring, SecretKey};
use goten_party::cluster::SIMULATION_NOTICE;
use sha2::{Digest, Sha256};

use crate::RuntimeError;
use crate::config::{JobConfig, Mode, Sched};
use crate::data::Source;
use crate::store::platform_sealing_key;

/// Everything a run needs besides the execution: settings and the loaded data.
pub struct Setup {
    /// The network: a built-in model or a model file's.
    pub arch: Arch,
    /// Goten mode: the enclaves hold keys of a key exchange, and sealed data's key reaches them
    /// only by provisioning.
    pub protocol: bool,
    pub enclave: EnclaveConfig,
    pub train: Source,
    pub test: Source,
    /// The dataset's format (CIFAR-10 for synthetic and sealed data).
    pub format: DataFormat,
    /// What an input image is: shape, normalisation statistics, augmentation.
    pub input: InputSpec,
    /// Output classes (the format's, or an image folder's subfolders).
    pub classes: usize,
    /// Starting weights from `--init` (public inputs of the job).
    pub init: Option<Vec<Named>>,
    pub schedule: Schedule,
    pub total_steps: u64,
    /// Hash of everything a checkpoint and the other parties must agree with.
    pub fingerprint: [u8; 32],
    /// The simulated platform's sealing key.
    pub sealing: SecretKey,
    /// The model owner's public key: the export is sealed to it.
    pub model_owner: Option<[u8; 32]>,
    /// The data key of a sealed dataset, where this process is the data owner (`--data-key`);
    /// `None` for plaintext data, or for a party whose enclave the owner provisions.
    pub data_key: Option<zeroize::Zeroizing<[u8; 32]>>,
    /// The data owner's job seed, provisioned with the data key.
    pub job_seed: Option<zeroize::Zeroizing<[u8; 32]>>,
    /// What the user must be told before the run (simulation, synthetic data, danger flags).
    pub notices: Vec<String>,
}

impl Setup {
    /// The session's view of the job.
    pub fn session_config(&self, c: &JobConfig) -> TrainConfig {
        TrainConfig {
            model: self.arch.clone(),
            classes: self.classes,
            input: self.input.clone(),
            init: self.init.clone(),
            seed: c.seed,
            epochs: c.epochs as u64,
            batch: c.batch as usize,
            lr: c.lr,
            schedule: self.schedule,
            total_steps: self.total_steps,
            loss_window: c.loss_window_or_default(),
            protection: if c.mode == Mode::Plain {
                Protection::None
            } else {
                Protection::Protected
            },
            fingerprint: self.fingerprint,
            model_owner: self.model_owner,
            danger_plaintext_export: c.danger_plaintext_export,
        }
    }

    /// A fresh copy of both splits for one enclave. Goten mode's enclaves get no data key with
    /// them: the owner provisions it through their attested service key.
    pub fn splits(&self) -> (Split, Split) {
        let key = if self.protocol {
            None
        } else {
            self.data_key.as_ref()
        };
        (self.train.to_split(key), self.test.to_split(key))
    }

    /// Whether the data is sealed (its key must reach the enclaves).
    pub fn sealed(&self) -> bool {
        matches!(self.train, Source::Sealed(_))
    }
}

/// Validates `c` and loads its data.
pub fn prepare(c: &JobConfig) -> Result<Setup, RuntimeError> {
    c.validate()?;
    let ring = Ring::new(c.ring_bits).expect("validated");
    let quant = QuantConfig {
        bits: c.quant_bits,
        ..QuantConfig::default()
    };
    let mut notices = Vec::new();
    let mut data_key = None;
    let data_path = std::path::Path::new(&c.data);
    let mut format = DataFormat::Cifar10;
    let (mut train, mut test) = if c.synthetic() {
        let (tr, te) = goten_data::synthetic(c.synthetic_train, c.test_limit.min(10_000), c.seed);
        (Source::Plain(tr), Source::Plain(te))
    } else if data_path.join("train.sealed").exists() {
        let sealed = crate::data::load_sealed(data_path)?;
        match &c.data_key {
            Some(key) => {
                data_key = Some(crate::data::read_data_key(data_path, key)?);
                notices.push(format!(
                    "note: sealed dataset; this process is its data owner and releases the key {} {}",
                    key.display(),
                    if c.mode == Mode::Goten {
                        "only to the enclaves' attested service key (sealed with HPKE)"
                    } else {
                        "to the enclave in this process"
                    }
                ));
            }
            None if c.mode == Mode::Goten => notices.push(
                "note: sealed dataset; no data key here: the data owner provisions it to the enclaves (goten provision)".into(),
            ),
            None => {
                return Err(RuntimeError::config(format!(
                    "{} is a sealed dataset: pass its data key with --data-key FILE (the data owner's key, kept outside the data folder)",
                    data_path.display()
                )));
            }
        }
        if let Source::Sealed(s) = &sealed.0 {
            format = DataFormat::parse(&s.meta.format).ok_or_else(|| {
                RuntimeError::data(
                    data_path.display().to_string(),
                    format!(
                        "was sealed from data format {:?}, which this goten does not know (one of {})",
                        s.meta.format,
                        DataFormat::names()
                    ),
                )
            })?;
            if let Some(f) = c.data_format.as_deref().and_then(DataFormat::parse)
                && f != format
            {
                return Err(RuntimeError::config(format!(
                    "--data-format {} but {} was sealed from {} data",
                    f.name(),
                    data_path.display(),
                    format.name()
                )));
            }
        }
        sealed
    } else {
        let named = c.data_format.as_deref().and_then(DataFormat::parse);
        let size = c
            .image_size
            .map_or(goten_data::DEFAULT_SIDE, |s| s as usize);
        let (f, tr, te) = goten_data::load(data_path, named, size)
            .map_err(|e| RuntimeError::data("cannot load the dataset", e))?;
        format = f;
        (Source::Plain(tr), Source::Plain(te))
    };
    let (shape, classes) = match &train {
        Source::Plain(d) => (d.shape, format.classes().unwrap_or(d.classes)),
        Source::Sealed(s) => (s.meta.shape, s.meta.classes),
    };
    let mut input = crate::data::input_spec(format, shape, c.normalize.as_deref())?;
    if format.classes().is_none() {
        notices.push(format!(
            "note: {} data: {classes} classes of {}x{}x{} images, normalisation {}",
            format.name(),
            shape[0],
            shape[1],
            shape[2],
            if c.normalize.is_some() {
                format!("mean {:?} std {:?} (--normalize)", input.mean, input.std)
            } else {
                "statistics computed inside the enclave from the training images (sealed into checkpoints; goten predict computes the same from the folder's training images)".into()
            }
        ));
    }
    if c.no_augment {
        (input.pad, input.flip) = (0, false);
    }
    let arch = match &c.model_file {
        Some(path) => crate::model_file::read(path, classes)?,
        None => Arch::Builtin(ModelKind::parse(&c.model).expect("validated")),
    };
    let init = match &c.init {
        None => None,
        Some(path) => {
            let tensors = crate::model_io::read_named(path)?;
            // Checked here, before any party starts: every problem listed at once.
            let mut m = arch
                .build(c.seed, classes)
                .map_err(|e| RuntimeError::config(e.to_string()))?;
            goten_enclave::nn::export::import_named(&mut m, &tensors).map_err(|e| {
                RuntimeError::data(
                    path.display().to_string(),
                    format!("does not fit the {} model: {e}", arch.name()),
                )
            })?;
            notices.push(format!(
                "note: starting from the weights in {} (--init): they are inputs of the job that every party's host holds, like a public dataset",
                path.display()
            ));
            Some(tensors)
        }
    };
    if arch.input_shape() != input.shape {
        let d = |s: [usize; 3]| format!("{}x{}x{}", s[0], s[1], s[2]);
        return Err(RuntimeError::config(format!(
            "model {} takes {} images but the {} data has {} images; choose a model for it (goten model list)",
            arch.name(),
            d(arch.input_shape()),
            format.name(),
            d(input.shape)
        )));
    }
    if let Some(n) = c.train_limit {
        train.truncate(n);
    }
    test.truncate(c.test_limit);
    if train.is_empty() || test.is_empty() {
        return Err(RuntimeError::config(
            "the dataset is empty after the train and test limits",
        ));
    }
    if c.synthetic() {
        notices.push(format!(
            "note: training on SYNTHETIC data ({} images generated in memory); pass --data DIR for CIFAR-10",
            train.len()
        ));
    }
    if c.mode != Mode::Plain {
        notices.push(format!("note: {SIMULATION_NOTICE}"));
    }
    if c.danger_deterministic_keys.is_some() {
        notices.push(crate::party_run::DANGER_KEYS.into());
    }
    let model_owner = c
        .model_owner
        .as_deref()
        .map(crate::owner::read_owner_public)
        .transpose()?;
    if c.danger_plaintext_export && c.mode != Mode::Plain && c.export.is_some() {
        notices.push(
            "WARNING: --danger-plaintext-export: the trained model is written in the clear on this host instead of sealed to its owner".into(),
        );
    }
    let per_epoch = train.len().div_ceil(c.batch as usize) as u64;
    let total_steps = c.steps.unwrap_or(u64::MAX).min(per_epoch * c.epochs as u64);
    let schedule = match c.schedule {
        Sched::Constant => Schedule::Constant,
        Sched::Step => Schedule::Step {
            every: c.step_epochs,
            gamma: 0.5,
        },
        // The planned length, not the step limit: stopping early and resuming must see the
        // same rates.
        Sched::Cosine => Schedule::Cosine {
            total: per_epoch * c.epochs as u64,
        },
    };
    let sealing = platform_sealing_key()?;
    Ok(Setup {
        fingerprint: fingerprint(
            c,
            &arch,
            (&train, &test),
            model_owner.as_ref(),
            init.as_deref(),
        ),
        format,
        input,
        classes,
        init,
        sealing,
        model_owner,
        data_key,
        job_seed: c
            .job_seed
            .as_deref()
            .map(crate::data::read_key)
            .transpose()?,
        protocol: c.mode == Mode::Goten,
        arch: arch.clone(),
        enclave: EnclaveConfig { ring, quant },
        train,
        test,
        schedule,
        total_steps,
        notices,
    })
}

/// SHA-256 of everything a checkpoint must agree with: model, data, hyper-parameters, mode.
fn fingerprint(
    c: &JobConfig,
    arch: &Arch,
    (train, test): (&Source, &Source),
    model_owner: Option<&[u8; 32]>,
    init: Option<&[Named]>,
) -> [u8; 32] {
    let mut h = Sha256::new();
    let desc = format!(
        "goten/job/v3|{}|{:?}|{}|{}|{}|{:?}|{}|{}|{}|{}|{}|{}",
        c.model,
        c.mode,
        c.epochs,
        c.batch,
        c.lr.to_bits(),
        c.schedule,
        c.step_epochs,
        c.seed,
        c.ring_bits,
        c.quant_bits,
        c.loss_window_or_default(),
        // The data's content is hashed below; its path may differ between parties.
        c.synthetic()
    );
    // The format decides the labels' meaning (CIFAR-100 fine or coarse) and the statistics.
    let mut desc = match c.data_format.as_deref() {
        None => desc,
        Some(f) => format!("{desc}|format {f}"),
    };
    if c.no_augment {
        desc.push_str("|no augmentation");
    }
    if let Arch::File(spec) = arch {
        // The whole description: a changed layer is another job.
        desc.push_str(&format!("|model file {spec:?}"));
    }
    if let Some(n) = &c.normalize {
        desc.push_str(&format!("|normalize {n}"));
    }
    if let Some(s) = c.image_size {
        desc.push_str(&format!("|image size {s}"));
    }
    h.update(desc.as_bytes());
    for d in [train, test] {
        d.identify(&mut h);
    }
    // The starting weights are part of the job (a resume must not switch them).
    if let Some(ts) = init {
        h.update(b"|init|");
        for t in ts {
            h.update(t.name.as_bytes());
            h.update(format!("{:?}", t.shape).as_bytes());
            t.data.iter().for_each(|x| h.update(x.to_le_bytes()));
        }
    }
    // Whom the model is sealed to is part of the job: parties and resumes must agree on it.
    match model_owner {
        Some(k) => {
            h.update(b"|owner|");
            h.update(k);
        }
        None => h.update(b"|no owner|"),
    }
    h.finalize().into()
}
