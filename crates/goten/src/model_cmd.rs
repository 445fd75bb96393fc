//! `goten model show NAME`: a built-in model's layers, output shapes, parameters and
//! multiply-accumulates per image.
//!
//! Where it sits: a user's tool outside any run. The model is built from a fixed seed only to
//! read its structure (`goten_enclave::nn::summary`); no weights are printed.

use clap::{Args, Subcommand};
use goten_enclave::nn::ModelKind;

/// What `goten model` does.
#[derive(Subcommand, Debug)]
pub(crate) enum ModelCommand {
    /// Print a model's layers, output shapes, parameters and multiply-accumulates per image.
    Show(ShowArgs),
}

/// Arguments of `goten model show`.
#[derive(Args, Debug)]
pub(crate) struct ShowArgs {
    /// Built-in model: `small` or `vgg11`.
    #[arg(value_parser = parse_model)]
    name: ModelKind,
    /// Output classes of the last layer.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    classes: u32,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

fn parse_model(s: &str) -> Result<ModelKind, String> {
    ModelKind::parse(s)
        .ok_or_else(|| format!("unknown model {s:?}: built-in models are small and vgg11"))
}

pub(crate) fn run(cmd: ModelCommand) -> anyhow::Result<()> {
    let ModelCommand::Show(a) = cmd;
    let input = a.name.input_shape();
    let model = a.name.build(0, a.classes as usize)?;
    let rows = model.summary(&input)?;
    let params: usize = rows.iter().map(|r| r.params).sum();
    let macs: u64 = rows.iter().map(|r| r.macs).sum();
    let dims = |s: &[usize]| {
        s.iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join("x")
    };
    if a.json {
        let layers: Vec<_> = rows
            .iter()
            .map(|r| {
                serde_json::json!({"layer": r.layer, "output": r.output, "params": r.params, "macs": r.macs})
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "model": a.name.name(), "input": input, "classes": a.classes,
                "layers": layers, "params": params, "macs_per_image": macs,
            })
        );
        return Ok(());
    }
    println!(
        "model {}: input {}, {} classes",
        a.name.name(),
        dims(&input),
        a.classes
    );
    println!(
        "{:>3}  {:<16} {:>12} {:>12} {:>15}",
        "#", "layer", "output", "params", "MACs/image"
    );
    for (i, r) in rows.iter().enumerate() {
        println!(
            "{i:>3}  {:<16} {:>12} {:>12} {:>15}",
            r.layer,
            dims(&r.output),
            r.params,
            r.macs
        );
    }
    println!("total: {params} parameters, {macs} multiply-accumulates per image");
    Ok(())
}
