//! Reading and writing exported models as safetensors files (PyTorch-compatible names).
//!
//! Where it sits: the model owner's side of export (`goten train --export`) and the input of
//! `goten predict`. Names and layouts come from `goten_enclave::nn::export`.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use goten_enclave::nn::Model;
use goten_enclave::nn::export::import;
use goten_enclave::session::Export;
use safetensors::tensor::{Dtype, TensorView};

/// Writes an export to `path` (once, through a temporary file and a rename); BN layers get
/// `num_batches_tracked = steps` as PyTorch expects.
pub fn write(export: &Export, path: &Path) -> Result<()> {
    let steps = export.steps;
    let bytes: Vec<(String, Vec<usize>, Vec<u8>, Dtype)> = export
        .tensors
        .iter()
        .map(|t| {
            (
                t.name.clone(),
                t.shape.clone(),
                t.data.iter().flat_map(|x| x.to_le_bytes()).collect(),
                Dtype::F32,
            )
        })
        .chain(export.batchnorm.iter().map(|p| {
            (
                format!("{p}.num_batches_tracked"),
                vec![],
                (steps as i64).to_le_bytes().to_vec(),
                Dtype::I64,
            )
        }))
        .collect();
    let views = bytes
        .iter()
        .map(|(n, s, d, t)| {
            Ok((
                n.clone(),
                TensorView::new(*t, s.clone(), d).map_err(|e| anyhow::anyhow!("{n}: {e}"))?,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    // One metadata entry only: safetensors writes the map in hash order, and identical weights
    // must give identical files (runs are compared byte for byte).
    let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    let buf =
        safetensors::tensor::serialize(views, Some(meta)).context("cannot encode the model")?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    goten_runtime::store::write_durably(path, &buf)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Loads weights from `path` into `model` (which fixes the architecture).
pub fn read(model: &mut Model, path: &Path) -> Result<()> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .with_context(|| format!("{} is not a valid safetensors file", path.display()))?;
    for name in st.names() {
        let t = st.tensor(name)?;
        if t.dtype() != Dtype::F32 && !name.ends_with("num_batches_tracked") {
            bail!(
                "{}: tensor {name} is {:?}, expected F32",
                path.display(),
                t.dtype()
            );
        }
    }
    let get = |name: &str| {
        let t = st.tensor(name).ok()?;
        (t.dtype() == Dtype::F32).then(|| {
            (
                t.shape().to_vec(),
                t.data()
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            )
        })
    };
    import(model, &get).with_context(|| {
        format!(
            "{} does not fit the {} model",
            path.display(),
            model.kind().name()
        )
    })
}
