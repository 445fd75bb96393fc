//! `goten predict`: classifies images from a CIFAR-format file, with the model owner's
//! exported model (plain) or privately through a local serving cluster (goten).
//!
//! Where it sits: plain mode runs on the model owner's machine (the owner holds the model in
//! the clear). Goten mode scores a whole file through the same engine as `goten serve`: the
//! model stays in E0's and E1's sealed checkpoints, each batch is sealed to the enclaves'
//! service key and the logits come back under each query's exported answer key; only the
//! aggregate accuracy and this user's own predictions are printed. With `--server URL
//! --cluster FILE` the same batches go to a serving deployment, verified first.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use goten_data::DataFormat;
use goten_enclave::nn::{Arch, ModelKind};
use serde_json::json;

use goten_runtime::model_io;
use goten_runtime::serve::client;
use goten_runtime::serve::cluster::ServePlan;
use goten_runtime::serve::local::{LocalServe, LocalServer};

use crate::predictions;

/// Options of `goten predict`.
#[derive(Args, Debug)]
pub struct PredictArgs {
    /// `plain`: the exported model in the clear on this machine (--weights); `goten`: the
    /// sealed checkpoints of a goten-mode run, scored privately by a local serving cluster
    /// (--checkpoint).
    #[arg(long, default_value = "plain")]
    mode: String,
    /// Exported model (safetensors, from `goten train --export`), for plain mode.
    #[arg(long)]
    weights: Option<PathBuf>,
    /// The --out folder of a goten-mode training run, for goten mode on a local serving
    /// cluster.
    #[arg(long, conflicts_with = "server")]
    checkpoint: Option<PathBuf>,
    /// Goten mode through a serving deployment instead (`goten serve --id 0`'s HTTP API),
    /// whose enclaves must verify against --cluster FILE.
    #[arg(long, requires = "cluster")]
    server: Option<String>,
    /// The deployment's cluster file (what its enclaves' evidence is checked against).
    #[arg(long)]
    cluster: Option<PathBuf>,
    /// The model's name on the server.
    #[arg(long, default_value = "small")]
    name: String,
    /// Architecture of the exported model (plain mode): a built-in model name.
    #[arg(long, default_value = "small")]
    model: String,
    /// A file of CIFAR-10 binary records (label byte + 3072 pixel bytes each), e.g.
    /// test_batch.bin, or a dataset folder (its test split; formats as for `goten train`).
    #[arg(long)]
    data: PathBuf,
    /// Format of a --data folder instead of detection (cifar10, cifar100, cifar100-coarse,
    /// mnist, fashion-mnist, image-folder, npy, safetensors).
    #[arg(long)]
    data_format: Option<String>,
    /// The exported model's model file (TOML), for a network trained with --model-file.
    #[arg(long, conflicts_with = "model")]
    model_file: Option<PathBuf>,
    /// Image folders: the side images are resized and cropped to (as in training; default 32).
    #[arg(long, value_parser = clap::value_parser!(u32).range(4..=1024))]
    image_size: Option<u32>,
    /// Normalisation statistics MEAN,../STD,.. as given to `goten train --normalize`.
    #[arg(long)]
    normalize: Option<String>,
    /// Classify at most this many images.
    #[arg(long)]
    limit: Option<usize>,
    /// Print how many predictions per image line (the rest are summarised).
    #[arg(long, default_value_t = 10)]
    show: usize,
    /// Images per forward pass (goten mode).
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Seconds a party waits for another (goten mode).
    #[arg(long, default_value_t = 60)]
    timeout: u64,
    /// Print one JSON object with every prediction as the last stdout line.
    #[arg(long)]
    json: bool,
}

/// The images to classify: one CIFAR-10 record file (e.g. `test_batch.bin`), or the test split
/// of a dataset folder in any format `goten train` reads, with the training split that
/// `goten train` would have computed an image folder's statistics from.
type Loaded = (DataFormat, Option<goten_data::Dataset>, goten_data::Dataset);

pub(crate) fn load(
    data: &std::path::Path,
    format: Option<&str>,
    image_size: Option<u32>,
) -> Result<Loaded> {
    let named = match format {
        Some(f) => Some(DataFormat::parse(f).with_context(|| {
            format!(
                "unknown data format {f:?}: choose one of {}",
                DataFormat::names()
            )
        })?),
        None => None,
    };
    if data.is_file() && matches!(named, None | Some(DataFormat::Cifar10)) {
        let d = goten_data::load_cifar_file(data).context("cannot load images")?;
        return Ok((DataFormat::Cifar10, None, d));
    }
    let size = image_size.map_or(goten_data::DEFAULT_SIDE, |s| s as usize);
    let (format, train, test) =
        goten_data::load(data, named, size).context("cannot load images")?;
    Ok((format, Some(train), test))
}

pub fn run(a: PredictArgs) -> Result<()> {
    let (format, train, mut data) = load(&a.data, a.data_format.as_deref(), a.image_size)?;
    let shape = train.as_ref().map_or(data.shape, |t| t.shape);
    let mut spec = goten_runtime::data::input_spec(format, shape, a.normalize.as_deref())?;
    if spec.from_training {
        // As the enclave computed them in training: from this folder's training images.
        let t = train
            .as_ref()
            .context("this data format's statistics come from its training images")?;
        spec = spec.with_stats_of(&t.images);
    }
    drop(train);
    let folder = std::mem::take(&mut data.names);
    let folder_names: Vec<&str> = folder.iter().map(String::as_str).collect();
    let names = format.class_names().unwrap_or(&folder_names);
    let classes = format.classes().unwrap_or(data.classes);
    if let Some(n) = a.limit {
        data.truncate(n);
    }
    let imgs: Vec<&[u8]> = (0..data.len()).map(|i| data.image(i)).collect();
    let (logits, classes) = match a.mode.as_str() {
        "plain" => {
            let Some(weights) = &a.weights else {
                bail!(
                    "plain mode classifies with an exported model: pass --weights FILE (or --mode goten --checkpoint RUN_DIR)"
                );
            };
            let arch = match &a.model_file {
                Some(p) => goten_runtime::model_file::read(p, classes)?,
                None => Arch::Builtin(ModelKind::parse(&a.model).with_context(|| {
                    format!(
                        "unknown model {:?}: choose one of {}",
                        a.model,
                        ModelKind::names()
                    )
                })?),
            };
            if arch.input_shape() != data.shape {
                bail!(
                    "model {} takes {:?} images; {} holds {:?} images",
                    arch.name(),
                    arch.input_shape(),
                    a.data.display(),
                    data.shape
                );
            }
            let mut model = arch.build(0, classes)?;
            model_io::read(&mut model, weights)?;
            (model.predict_logits(&spec, &imgs)?, model.outputs())
        }
        "goten" if a.server.is_some() => {
            let (Some(url), Some(cluster)) = (&a.server, &a.cluster) else {
                bail!("--server needs --cluster FILE to verify the deployment's enclaves");
            };
            let text = std::fs::read_to_string(cluster)
                .with_context(|| format!("cannot read the cluster file {}", cluster.display()))?;
            let file =
                goten_party::deploy::ClusterFile::parse(&text, &cluster.display().to_string())?;
            let base = cluster.parent().unwrap_or(std::path::Path::new("."));
            let pin = client::Pin::Verifier(goten_party::deploy::enclave_verifier(&file, base)?);
            let v = client::connect(url, &a.name, &pin, Duration::from_secs(a.timeout))?;
            let scored = v.score(&imgs, a.batch)?;
            let logits: Vec<f32> = scored
                .answers
                .iter()
                .flat_map(|x| x.logits.clone())
                .collect();
            (logits, v.params.classes)
        }
        "goten" => {
            let Some(dir) = &a.checkpoint else {
                bail!(
                    "goten mode scores privately: pass --checkpoint RUN_DIR (a local serving cluster) or --server URL --cluster FILE (a deployment)"
                );
            };
            eprintln!("note: {}", goten_party::cluster::SIMULATION_NOTICE);
            let server = LocalServer::start(LocalServe {
                plan: ServePlan {
                    checkpoint: dir.clone(),
                    name: None,
                    max_batch: a.batch,
                    max_wait: Duration::from_millis(1),
                    await_owner: None,
                },
                device: goten_runtime::devices::DeviceKind::Cpu,
                threads: 0,
                timeout: Duration::from_secs(a.timeout),
                danger_deterministic_keys: None,
                wrap: None,
            })?;
            let logits = server.score(&imgs, a.batch)?;
            // The served model's class count (sealed in its checkpoint): rows are image-major.
            let served = logits.len().checked_div(imgs.len()).unwrap_or(classes);
            (logits, served)
        }
        m => bail!("unknown mode {m:?}: choose plain or goten"),
    };
    let rows: Vec<&[f32]> = logits.chunks_exact(classes).collect();
    if a.json {
        let acc = predictions::accuracy(&rows, &data.labels);
        let preds: Vec<_> = rows.iter().map(|r| predictions::entry(names, r)).collect();
        println!(
            "{}",
            json!({"images": data.len(), "accuracy": acc, "predictions": preds})
        );
    } else {
        predictions::print_text(names, &rows, &data.labels, a.show, 1);
    }
    Ok(())
}
