//! `goten model list` (the built-in models with their sizes) and `goten model show NAME|FILE`: a
//! built-in model's or a model file's layers, export names, output shapes, parameters and
//! multiply-accumulates per image.
//!
//! Where it sits: a user's tool outside any run. The model is built from a fixed seed only to
//! read its structure (`goten_enclave::nn::summary`); no weights are printed.

use clap::{Args, Subcommand};
use goten_enclave::nn::{Arch, LayerInfo, ModelKind};

/// What `goten model` does.
#[derive(Subcommand, Debug)]
pub(crate) enum ModelCommand {
    /// List the built-in models: input shape, parameters and multiply-accumulates per image.
    List {
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print a model's layers, output shapes, parameters and multiply-accumulates per image.
    Show(ShowArgs),
}

/// Arguments of `goten model show`.
#[derive(Args, Debug)]
pub(crate) struct ShowArgs {
    /// A built-in model (see `goten model list`) or a model file (TOML; format in DESIGN.md
    /// section 11).
    #[arg(value_parser = parse_model)]
    name: ModelRef,
    /// Output classes of the last layer.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    classes: u32,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

/// What `goten model show` describes.
#[derive(Clone, Debug)]
pub(crate) enum ModelRef {
    Builtin(ModelKind),
    File(std::path::PathBuf),
}

fn parse_model(s: &str) -> Result<ModelRef, String> {
    if let Some(k) = ModelKind::parse(s) {
        return Ok(ModelRef::Builtin(k));
    }
    let p = std::path::Path::new(s);
    if p.is_file() || s.ends_with(".toml") {
        return Ok(ModelRef::File(p.to_path_buf()));
    }
    Err({
        format!(
            "unknown model {s:?} (and no such model file): built-in models are {}",
            ModelKind::names()
        )
    })
}

fn dims(s: &[usize]) -> String {
    s.iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join("x")
}

/// Rows and totals (parameters, MACs per image) of a network.
fn summarise(arch: &Arch, classes: usize) -> anyhow::Result<(Vec<LayerInfo>, usize, u64)> {
    let model = arch.build(0, classes)?;
    let rows = model.summary(&arch.input_shape())?;
    let params = rows.iter().map(|r| r.params).sum();
    let macs = rows.iter().map(|r| r.macs).sum();
    Ok((rows, params, macs))
}

fn list(json: bool) -> anyhow::Result<()> {
    let mut entries = Vec::new();
    if !json {
        println!(
            "{:<18} {:>8} {:>12} {:>15}",
            "model", "input", "params", "MACs/image"
        );
    }
    for kind in goten_enclave::nn::zoo::ALL {
        let (_, params, macs) = summarise(&kind.into(), 10)?;
        let input = kind.input_shape();
        if json {
            entries.push(serde_json::json!({
                "model": kind.name(), "input": input, "params": params, "macs_per_image": macs,
            }));
        } else {
            println!(
                "{:<18} {:>8} {:>12} {:>15}",
                kind.name(),
                dims(&input),
                params,
                macs
            );
        }
    }
    if json {
        println!("{}", serde_json::json!({"classes": 10, "models": entries}));
    } else {
        println!("(10 classes; `goten model show NAME` lists the layers)");
    }
    Ok(())
}

pub(crate) fn run(cmd: ModelCommand) -> anyhow::Result<()> {
    let a = match cmd {
        ModelCommand::List { json } => return list(json),
        ModelCommand::Show(a) => a,
    };
    let arch = match &a.name {
        ModelRef::Builtin(k) => Arch::Builtin(*k),
        ModelRef::File(p) => goten_runtime::model_file::read(p, a.classes as usize)?,
    };
    let input = arch.input_shape();
    let (rows, params, macs) = summarise(&arch, a.classes as usize)?;
    if a.json {
        let layers: Vec<_> = rows
            .iter()
            .map(|r| {
                serde_json::json!({"name": r.name, "layer": r.layer, "output": r.output, "params": r.params, "macs": r.macs})
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "model": arch.name(), "input": input, "classes": a.classes,
                "layers": layers, "params": params, "macs_per_image": macs,
            })
        );
        return Ok(());
    }
    println!(
        "model {}: input {}, {} classes",
        arch.name(),
        dims(&input),
        a.classes
    );
    println!(
        "{:>3}  {:<16} {:<24} {:>12} {:>12} {:>15}",
        "#", "layer", "name", "output", "params", "MACs/image"
    );
    for (i, r) in rows.iter().enumerate() {
        println!(
            "{i:>3}  {:<16} {:<24} {:>12} {:>12} {:>15}",
            r.layer,
            r.name,
            dims(&r.output),
            r.params,
            r.macs
        );
    }
    println!("total: {params} parameters, {macs} multiply-accumulates per image");
    Ok(())
}
