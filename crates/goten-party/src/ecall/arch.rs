//! The job's architecture in the ecall codec: a built-in model's name, or a model file's network
//! ([`NetSpec`]) layer by layer.
//!
//! Where it sits: under [`super::body`]'s training configuration. The reader bounds the number
//! of layers and the nesting before it allocates, so a hostile host cannot make the enclave
//! process build an enormous or endlessly nested description.

use std::sync::Arc;

use goten_enclave::nn::spec::{MAX_DEPTH, MAX_LAYERS};
use goten_enclave::nn::{Arch, LayerSpec, ModelKind, NetSpec};

use super::body::bad;
use crate::wire::{R, W, WireError};

fn put_name(w: &mut W, n: &Option<String>) {
    match n {
        Some(n) => {
            w.u8(1);
            w.str(n);
        }
        None => w.u8(0),
    }
}

fn put_layers(w: &mut W, layers: &[LayerSpec]) {
    w.u64(layers.len() as u64);
    for l in layers {
        match l {
            LayerSpec::Conv {
                out,
                kernel,
                stride,
                padding,
                bias,
                name,
            } => {
                w.u8(0);
                [*out, *kernel, *stride, *padding]
                    .iter()
                    .for_each(|&v| w.u64(v as u64));
                w.u8(u8::from(*bias));
                put_name(w, name);
            }
            LayerSpec::Dense { out, bias, name } => {
                w.u8(1);
                w.u64(out.map_or(0, |o| o as u64 + 1));
                w.u8(u8::from(*bias));
                put_name(w, name);
            }
            LayerSpec::BatchNorm { name } => {
                w.u8(2);
                put_name(w, name);
            }
            LayerSpec::Relu => w.u8(3),
            LayerSpec::MaxPool {
                kernel,
                stride,
                padding,
            } => {
                w.u8(4);
                [*kernel, *stride, *padding]
                    .iter()
                    .for_each(|&v| w.u64(v as u64));
            }
            LayerSpec::AvgPool { kernel, stride } => {
                w.u8(5);
                [*kernel, *stride].iter().for_each(|&v| w.u64(v as u64));
            }
            LayerSpec::GlobalAvgPool => w.u8(6),
            LayerSpec::Dropout { p } => {
                w.u8(7);
                w.f32(*p);
            }
            LayerSpec::Flatten => w.u8(8),
            LayerSpec::BasicBlock { out, stride, name } => {
                w.u8(9);
                [*out, *stride].iter().for_each(|&v| w.u64(v as u64));
                w.str(name);
            }
            LayerSpec::Residual { body, shortcut } => {
                w.u8(10);
                put_layers(w, body);
                put_layers(w, shortcut);
            }
        }
    }
}

/// Writes `arch`.
pub(super) fn put_arch(w: &mut W, arch: &Arch) {
    match arch {
        Arch::Builtin(k) => {
            w.u8(0);
            w.str(k.name());
        }
        Arch::File(s) => {
            w.u8(1);
            w.str(&s.name);
            s.input.iter().for_each(|&d| w.u64(d as u64));
            put_layers(w, &s.layers);
        }
    }
}

fn get_name(r: &mut R<'_>) -> Result<Option<String>, WireError> {
    Ok(if r.flag("layer name")? {
        Some(r.str("layer name")?)
    } else {
        None
    })
}

fn size(r: &mut R<'_>) -> Result<usize, WireError> {
    let v = r.u64("layer size")?;
    usize::try_from(v)
        .ok()
        .filter(|&v| v <= 1 << 24)
        .ok_or_else(|| bad("layer size", format!("{v}")))
}

fn get_layers(r: &mut R<'_>, depth: usize, total: &mut usize) -> Result<Vec<LayerSpec>, WireError> {
    if depth > MAX_DEPTH {
        return Err(bad("model file", "residual blocks nested too deep"));
    }
    let n = r.u64("layers")?;
    if n > (MAX_LAYERS - *total) as u64 {
        return Err(bad("model file", format!("more than {MAX_LAYERS} layers")));
    }
    let mut out = Vec::with_capacity(n as usize);
    for _ in 0..n {
        *total += 1;
        out.push(match r.u8("layer kind")? {
            0 => LayerSpec::Conv {
                out: size(r)?,
                kernel: size(r)?,
                stride: size(r)?,
                padding: size(r)?,
                bias: r.flag("bias")?,
                name: get_name(r)?,
            },
            1 => LayerSpec::Dense {
                out: match size(r)? {
                    0 => None,
                    o => Some(o - 1),
                },
                bias: r.flag("bias")?,
                name: get_name(r)?,
            },
            2 => LayerSpec::BatchNorm { name: get_name(r)? },
            3 => LayerSpec::Relu,
            4 => LayerSpec::MaxPool {
                kernel: size(r)?,
                stride: size(r)?,
                padding: size(r)?,
            },
            5 => LayerSpec::AvgPool {
                kernel: size(r)?,
                stride: size(r)?,
            },
            6 => LayerSpec::GlobalAvgPool,
            7 => LayerSpec::Dropout {
                p: r.f32("dropout")?,
            },
            8 => LayerSpec::Flatten,
            9 => LayerSpec::BasicBlock {
                out: size(r)?,
                stride: size(r)?,
                name: r.str("block name")?,
            },
            10 => LayerSpec::Residual {
                body: get_layers(r, depth + 1, total)?,
                shortcut: get_layers(r, depth + 1, total)?,
            },
            k => return Err(bad("layer kind", format!("{k}"))),
        });
    }
    Ok(out)
}

/// Reads an architecture written by [`put_arch`].
pub(super) fn get_arch(r: &mut R<'_>) -> Result<Arch, WireError> {
    match r.u8("model")? {
        0 => {
            let name = r.str("model")?;
            ModelKind::parse(&name)
                .map(Arch::Builtin)
                .ok_or_else(|| bad("config", format!("model {name:?}")))
        }
        1 => {
            let name = r.str("model")?;
            let input = [size(r)?, size(r)?, size(r)?];
            let layers = get_layers(r, 0, &mut 0)?;
            Ok(Arch::File(Arc::new(NetSpec {
                name,
                input,
                layers,
            })))
        }
        k => Err(bad("model", format!("kind {k}"))),
    }
}
