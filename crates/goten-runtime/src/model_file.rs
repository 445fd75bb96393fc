//! Model files: a network described in TOML (`goten train --model-file net.toml`, `goten model
//! show net.toml`), parsed here into the enclave's [`NetSpec`].
//!
//! Where it sits: on the host, before the job starts; the enclave receives the parsed
//! description with the job and builds the network itself. The format:
//!
//! ```toml
//! name = "my-net"            # optional: defaults to the file's stem
//! input = [3, 32, 32]        # channels, height, width
//!
//! [[layers]]
//! type = "conv"              # out, kernel (3), stride (1), padding (kernel / 2), bias (false), name
//! out = 16
//! [[layers]]
//! type = "batchnorm"         # name
//! [[layers]]
//! type = "relu"
//! [[layers]]
//! type = "basic-block"       # ResNet block: out, stride (1), name (e.g. "layer1.0")
//! out = 32
//! stride = 2
//! name = "layer2.0"
//! [[layers]]
//! type = "residual"          # body = [...], shortcut = [...] (empty: identity)
//! body = [{ type = "conv", out = 32 }, { type = "batchnorm" }]
//! [[layers]]
//! type = "global-avgpool"    # also: maxpool / avgpool (kernel, stride, padding), flatten,
//! [[layers]]                 # dropout (p)
//! type = "dense"             # out (default: the data's classes), bias (false), name
//! bias = true
//! ```
//!
//! Unknown keys and layer types are errors naming the line; shape errors name the layer.

use std::path::Path;
use std::sync::Arc;

use goten_enclave::nn::{Arch, LayerSpec, NetSpec};
use serde::Deserialize;

use crate::RuntimeError;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    name: Option<String>,
    input: [usize; 3],
    layers: Vec<Layer>,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
enum Layer {
    Conv {
        out: usize,
        kernel: Option<usize>,
        stride: Option<usize>,
        padding: Option<usize>,
        #[serde(default)]
        bias: bool,
        name: Option<String>,
    },
    Dense {
        out: Option<usize>,
        #[serde(default)]
        bias: bool,
        name: Option<String>,
    },
    #[serde(alias = "bn")]
    Batchnorm {
        name: Option<String>,
    },
    Relu,
    Maxpool {
        kernel: Option<usize>,
        stride: Option<usize>,
        #[serde(default)]
        padding: usize,
    },
    Avgpool {
        kernel: Option<usize>,
        stride: Option<usize>,
    },
    GlobalAvgpool,
    Dropout {
        p: f32,
    },
    Flatten,
    BasicBlock {
        out: usize,
        #[serde(default = "one")]
        stride: usize,
        name: String,
    },
    Residual {
        body: Vec<Layer>,
        #[serde(default)]
        shortcut: Vec<Layer>,
    },
}

fn one() -> usize {
    1
}

fn convert(l: Layer) -> LayerSpec {
    match l {
        Layer::Conv {
            out,
            kernel,
            stride,
            padding,
            bias,
            name,
        } => {
            let kernel = kernel.unwrap_or(3);
            LayerSpec::Conv {
                out,
                kernel,
                stride: stride.unwrap_or(1),
                padding: padding.unwrap_or(kernel / 2),
                bias,
                name,
            }
        }
        Layer::Dense { out, bias, name } => LayerSpec::Dense { out, bias, name },
        Layer::Batchnorm { name } => LayerSpec::BatchNorm { name },
        Layer::Relu => LayerSpec::Relu,
        Layer::Maxpool {
            kernel,
            stride,
            padding,
        } => {
            let kernel = kernel.unwrap_or(2);
            LayerSpec::MaxPool {
                kernel,
                stride: stride.unwrap_or(kernel),
                padding,
            }
        }
        Layer::Avgpool { kernel, stride } => {
            let kernel = kernel.unwrap_or(2);
            LayerSpec::AvgPool {
                kernel,
                stride: stride.unwrap_or(kernel),
            }
        }
        Layer::GlobalAvgpool => LayerSpec::GlobalAvgPool,
        Layer::Dropout { p } => LayerSpec::Dropout { p },
        Layer::Flatten => LayerSpec::Flatten,
        Layer::BasicBlock { out, stride, name } => LayerSpec::BasicBlock { out, stride, name },
        Layer::Residual { body, shortcut } => LayerSpec::Residual {
            body: body.into_iter().map(convert).collect(),
            shortcut: shortcut.into_iter().map(convert).collect(),
        },
    }
}

/// Parses a model file's text (`origin` names it in errors).
pub fn parse(text: &str, origin: &str, default_name: &str) -> Result<NetSpec, RuntimeError> {
    let f: File = toml::from_str(text)
        .map_err(|e| RuntimeError::config(format!("model file {origin}: {e}")))?;
    let name = f.name.unwrap_or_else(|| default_name.to_string());
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(RuntimeError::config(format!(
            "model file {origin}: name {name:?}: use 1 to 64 letters, digits, '-', '_' or '.'"
        )));
    }
    if goten_enclave::nn::ModelKind::parse(&name).is_some() {
        return Err(RuntimeError::config(format!(
            "model file {origin}: name {name:?} is a built-in model's; choose another"
        )));
    }
    Ok(NetSpec {
        name,
        input: f.input,
        layers: f.layers.into_iter().map(convert).collect(),
    })
}

/// Reads and parses a model file, and checks that it builds for `classes` outputs.
pub fn read(path: &Path, classes: usize) -> Result<Arch, RuntimeError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        RuntimeError::storage(format!("cannot read the model file {}", path.display()), e)
    })?;
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    let spec = parse(&text, &path.display().to_string(), &stem)?;
    spec.build(0, classes)
        .map_err(|e| RuntimeError::config(format!("model file {}: {e}", path.display())))?;
    Ok(Arch::File(Arc::new(spec)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NET: &str = r#"
input = [3, 16, 16]
[[layers]]
type = "conv"
out = 8
name = "stem"
[[layers]]
type = "bn"
name = "stem_bn"
[[layers]]
type = "relu"
[[layers]]
type = "basic-block"
out = 16
stride = 2
name = "layer1.0"
[[layers]]
type = "residual"
body = [{ type = "conv", out = 16, name = "r.conv" }, { type = "batchnorm", name = "r.bn" }]
[[layers]]
type = "global-avgpool"
[[layers]]
type = "dropout"
p = 0.2
[[layers]]
type = "dense"
bias = true
name = "fc"
"#;

    #[test]
    fn parses_defaults_and_builds() {
        let spec = parse(NET, "net.toml", "net").unwrap();
        assert_eq!(spec.name, "net");
        assert_eq!(
            spec.layers[0],
            LayerSpec::Conv {
                out: 8,
                kernel: 3,
                stride: 1,
                padding: 1,
                bias: false,
                name: Some("stem".into())
            }
        );
        let m = spec.build(1, 7).unwrap();
        assert_eq!(m.outputs(), 7);
        assert_eq!(m.input_shape(), [3, 16, 16]);
    }

    #[test]
    fn errors_name_the_problem() {
        for (text, want) in [
            ("input = [3, 8, 8]\n[[layers]]\ntype = \"swish\"\n", "swish"),
            (
                "input = [3, 8, 8]\n[[layers]]\ntype = \"conv\"\nout = 4\nsize = 3\n",
                "size",
            ),
            ("input = [3, 8]\nlayers = []\n", "input"),
            (
                "name = \"vgg11\"\ninput = [3, 8, 8]\nlayers = []\n",
                "built-in",
            ),
            (
                "name = \"a b\"\ninput = [3, 8, 8]\nlayers = []\n",
                "letters",
            ),
        ] {
            let err = parse(text, "bad.toml", "bad").unwrap_err().to_string();
            assert!(
                err.contains("bad.toml") && err.contains(want),
                "{want}: {err}"
            );
        }
        // Parses, but a dense layer before any flatten does not fit [c, h, w].
        let spec = parse(
            "input = [3, 8, 8]\n[[layers]]\ntype = \"dense\"\n",
            "f.toml",
            "f",
        )
        .unwrap();
        assert!(
            spec.build(0, 10)
                .unwrap_err()
                .to_string()
                .contains("flatten first")
        );
    }
}
