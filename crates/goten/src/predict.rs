//! `goten predict`: classifies images from a CIFAR-format file with an exported model.
//!
//! Where it sits: the model owner's side, after training. It runs the same model code in
//! evaluation mode (plain float32: the owner holds the model in the clear).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use goten_enclave::nn::ModelKind;
use serde_json::json;

use goten_runtime::model_io;

/// Options of `goten predict`.
#[derive(Args, Debug)]
pub struct PredictArgs {
    /// Exported model (safetensors, from `goten train --export`).
    #[arg(long)]
    weights: PathBuf,
    /// Architecture of the exported model: `small` or `vgg11`.
    #[arg(long, default_value = "small")]
    model: String,
    /// A file of CIFAR-10 binary records (label byte + 3072 pixel bytes each), e.g. test_batch.bin.
    #[arg(long)]
    data: PathBuf,
    /// Classify at most this many images.
    #[arg(long)]
    limit: Option<usize>,
    /// Print how many predictions per image line (the rest are summarised).
    #[arg(long, default_value_t = 10)]
    show: usize,
    /// Print one JSON object with every prediction instead of text.
    #[arg(long)]
    json: bool,
}

const CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

pub fn run(a: PredictArgs) -> Result<()> {
    let kind = ModelKind::parse(&a.model)
        .with_context(|| format!("unknown model {:?}: choose small or vgg11", a.model))?;
    let mut model = kind.build(0, goten_data::CLASSES)?;
    model_io::read(&mut model, &a.weights)?;
    let mut data = goten_data::load_cifar_file(&a.data).context("cannot load images")?;
    if let Some(n) = a.limit {
        data.truncate(n);
    }
    let imgs: Vec<&[u8]> = (0..data.len()).map(|i| data.image(i)).collect();
    let preds = model.predict_classes(&imgs)?;
    let correct = preds
        .iter()
        .zip(&data.labels)
        .filter(|(p, l)| p == l)
        .count();
    let acc = correct as f64 / data.len().max(1) as f64;
    if a.json {
        println!(
            "{}",
            json!({"images": data.len(), "accuracy": acc, "predictions": preds})
        );
    } else {
        for (i, (&p, &l)) in preds.iter().zip(&data.labels).enumerate().take(a.show) {
            println!(
                "image {i:>5}: predicted {:<10} (label {})",
                CLASSES[usize::from(p)],
                CLASSES[usize::from(l)]
            );
        }
        println!(
            "{} images, accuracy against the file's labels: {:.2} %",
            data.len(),
            100.0 * acc
        );
    }
    Ok(())
}
