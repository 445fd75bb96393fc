//! Reading and writing exported models as safetensors files (PyTorch-compatible names).
//!
//! Where it sits: the model owner's side of export (`goten train --export`) and the input of
//! `goten predict`. Names and layouts come from `goten_enclave::nn::export`.

use std::collections::HashMap;
use std::path::Path;

use goten_enclave::nn::Model;
use goten_enclave::nn::export::{Named, import};
use goten_enclave::session::{Export, ModelRelease};
use safetensors::tensor::{Dtype, TensorView};

use crate::RuntimeError;

fn corrupt(path: &Path, why: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::data(path.display().to_string(), why.to_string())
}

/// Writes an export to `path` (once, through a temporary file and a rename); BN layers get
/// `num_batches_tracked = steps` as PyTorch expects.
pub fn write(export: &Export, path: &Path) -> Result<(), RuntimeError> {
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
                TensorView::new(*t, s.clone(), d)
                    .map_err(|e| RuntimeError::config(format!("export tensor {n}: {e}")))?,
            ))
        })
        .collect::<Result<Vec<_>, RuntimeError>>()?;
    // One metadata entry only: safetensors writes the map in hash order, and identical weights
    // must give identical files (runs are compared byte for byte).
    let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    let buf = safetensors::tensor::serialize(views, Some(meta))
        .map_err(|e| RuntimeError::config(format!("cannot encode the model: {e}")))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| RuntimeError::storage(format!("cannot create {}", dir.display()), e))?;
    }
    crate::store::write_durably(path, &buf)
        .map_err(|e| RuntimeError::storage(format!("cannot write {}", path.display()), e))
}

/// Writes what the export ecall released: a sealed model file as it is (only its owner can
/// open it), or plaintext weights as safetensors.
pub fn write_release(r: &ModelRelease, path: &Path) -> Result<(), RuntimeError> {
    match r {
        ModelRelease::Plain(e) => write(e, path),
        ModelRelease::Sealed(bytes) => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| {
                    RuntimeError::storage(format!("cannot create {}", dir.display()), e)
                })?;
            }
            crate::store::write_durably(path, bytes)
                .map_err(|e| RuntimeError::storage(format!("cannot write {}", path.display()), e))
        }
    }
}

/// The float32 tensors of a safetensors file under their names (`num_batches_tracked` and
/// other integer buffers are skipped): starting weights for `goten train --init`.
pub fn read_named(path: &Path) -> Result<Vec<Named>, RuntimeError> {
    let bytes = std::fs::read(path)
        .map_err(|e| RuntimeError::storage(format!("cannot read {}", path.display()), e))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| corrupt(path, format!("not a valid safetensors file: {e}")))?;
    let mut names: Vec<String> = st.names().into_iter().map(str::to_string).collect();
    names.sort();
    let mut out = Vec::new();
    for name in names {
        let t = st.tensor(&name).map_err(|e| corrupt(path, e))?;
        if t.dtype() != Dtype::F32 {
            if name.ends_with("num_batches_tracked") {
                continue;
            }
            return Err(corrupt(
                path,
                format!("tensor {name} is {:?}, expected F32", t.dtype()),
            ));
        }
        out.push(Named {
            shape: t.shape().to_vec(),
            data: t
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            name,
        });
    }
    Ok(out)
}

/// Loads weights from `path` into `model` (which fixes the architecture).
pub fn read(model: &mut Model, path: &Path) -> Result<(), RuntimeError> {
    let bytes = std::fs::read(path)
        .map_err(|e| RuntimeError::storage(format!("cannot read {}", path.display()), e))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| corrupt(path, format!("not a valid safetensors file: {e}")))?;
    for name in st.names() {
        let t = st.tensor(name).map_err(|e| corrupt(path, e))?;
        if t.dtype() != Dtype::F32 && !name.ends_with("num_batches_tracked") {
            return Err(corrupt(
                path,
                format!("tensor {name} is {:?}, expected F32", t.dtype()),
            ));
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
    let kind = model.arch_name().to_string();
    import(model, &get).map_err(|e| corrupt(path, format!("does not fit the {kind} model: {e}")))
}
