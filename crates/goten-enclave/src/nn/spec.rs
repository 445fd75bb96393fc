//! Networks described as data: [`NetSpec`] (what a model file says, parsed outside the enclave)
//! and [`Arch`], the architecture a job names: a built-in [`ModelKind`] or a model file.
//!
//! Where it sits: the job's `TrainConfig::model`. The runtime parses a TOML model file into a
//! `NetSpec` (this crate has no parser); the enclave builds the network from it with the same
//! [`Builder`] the built-in models use, so every layer is checked against its input shape and
//! every conv and linear product goes through the backend as in any other model.

use std::sync::Arc;

use goten_field::Conv2dParams;

use super::NnError;
use super::builder::Builder;
use super::model::Model;
use super::zoo::ModelKind;

/// Most layers a model file may describe (residual bodies included), and the deepest nesting.
pub const MAX_LAYERS: usize = 10_000;
/// Deepest nesting of residual blocks inside residual blocks.
pub const MAX_DEPTH: usize = 8;

/// One layer of a model file.
#[derive(Clone, Debug, PartialEq)]
pub enum LayerSpec {
    /// Convolution with a square kernel.
    Conv {
        /// Output channels.
        out: usize,
        /// Kernel side.
        kernel: usize,
        /// Stride.
        stride: usize,
        /// Padding.
        padding: usize,
        /// With a bias.
        bias: bool,
        /// Export prefix.
        name: Option<String>,
    },
    /// Fully connected; `out: None` means the job's number of classes.
    Dense {
        /// Output features (`None`: the classes).
        out: Option<usize>,
        /// With a bias.
        bias: bool,
        /// Export prefix.
        name: Option<String>,
    },
    /// BatchNorm2d.
    BatchNorm {
        /// Export prefix.
        name: Option<String>,
    },
    /// ReLU.
    Relu,
    /// Max pooling.
    MaxPool {
        /// Window.
        kernel: usize,
        /// Stride.
        stride: usize,
        /// Padding.
        padding: usize,
    },
    /// Average pooling (no padding).
    AvgPool {
        /// Window.
        kernel: usize,
        /// Stride.
        stride: usize,
    },
    /// Global average pooling to one feature per channel.
    GlobalAvgPool,
    /// Dropout with drop probability `p`.
    Dropout {
        /// Drop probability.
        p: f32,
    },
    /// Flatten.
    Flatten,
    /// A ResNet basic block (torchvision names under `name`).
    BasicBlock {
        /// Output channels.
        out: usize,
        /// Stride of the first conv (and of the projection).
        stride: usize,
        /// Export prefix of the block (e.g. `layer2.0`).
        name: String,
    },
    /// `body(x) + shortcut(x)`; an empty shortcut is the identity.
    Residual {
        /// The block's main path.
        body: Vec<LayerSpec>,
        /// The projection (empty: identity).
        shortcut: Vec<LayerSpec>,
    },
}

/// A network from a model file.
#[derive(Clone, Debug, PartialEq)]
pub struct NetSpec {
    /// Its name (reports, checkpoints, export metadata).
    pub name: String,
    /// Input `[channels, height, width]`.
    pub input: [usize; 3],
    /// The layers, in order.
    pub layers: Vec<LayerSpec>,
}

fn count(layers: &[LayerSpec], depth: usize) -> Result<usize, String> {
    if depth > MAX_DEPTH {
        return Err(format!("residual blocks nested deeper than {MAX_DEPTH}"));
    }
    let mut n = 0;
    for l in layers {
        n += match l {
            LayerSpec::Residual { body, shortcut } => {
                3 + count(body, depth + 1)? + count(shortcut, depth + 1)?
            }
            LayerSpec::BasicBlock { .. } => 12,
            _ => 1,
        };
    }
    Ok(n)
}

fn add(b: Builder, l: &LayerSpec, classes: usize) -> Builder {
    let named = |b: Builder, n: &Option<String>| match n {
        Some(n) => b.named(n.clone()),
        None => b,
    };
    match l {
        LayerSpec::Conv {
            out,
            kernel,
            stride,
            padding,
            bias,
            name,
        } => {
            let b = b.conv_with(*out, *kernel, Conv2dParams::new(*stride, *padding));
            named(if *bias { b.bias() } else { b }, name)
        }
        LayerSpec::Dense { out, bias, name } => {
            let b = b.dense(out.unwrap_or(classes));
            named(if *bias { b.bias() } else { b }, name)
        }
        LayerSpec::BatchNorm { name } => named(b.bn(), name),
        LayerSpec::Relu => b.relu(),
        LayerSpec::MaxPool {
            kernel,
            stride,
            padding,
        } => b.maxpool(*kernel, *stride, *padding),
        LayerSpec::AvgPool { kernel, stride } => b.avgpool(*kernel, *stride),
        LayerSpec::GlobalAvgPool => b.global_avgpool(),
        LayerSpec::Dropout { p } => b.dropout(*p),
        LayerSpec::Flatten => b.flatten(),
        LayerSpec::BasicBlock { out, stride, name } => b.basic_block(*out, *stride, name),
        LayerSpec::Residual { body, shortcut } => {
            let mut b = b.fork();
            for l in body {
                b = add(b, l, classes);
            }
            if !shortcut.is_empty() {
                b = b.swap();
                for l in shortcut {
                    b = add(b, l, classes);
                }
            }
            b.add()
        }
    }
}

impl NetSpec {
    /// The network with weights from `seed` and `classes` outputs where the file leaves the
    /// last layer's width open; shape errors name the layer.
    pub fn build(&self, seed: u64, classes: usize) -> Result<Model, NnError> {
        let n = count(&self.layers, 0).map_err(goten_field::ShapeError::new)?;
        if n > MAX_LAYERS {
            return Err(goten_field::ShapeError::new(format!(
                "{n} layers; a model file may describe at most {MAX_LAYERS}"
            ))
            .into());
        }
        if self.input.contains(&0) {
            return Err(goten_field::ShapeError::new(format!(
                "input shape {:?} is empty",
                self.input
            ))
            .into());
        }
        let mut b = Builder::new(self.input, seed);
        for l in &self.layers {
            b = add(b, l, classes);
        }
        b.build(self.name.as_str())
    }
}

/// The architecture of a job: a built-in model or a model file.
#[derive(Clone, Debug, PartialEq)]
pub enum Arch {
    /// `--model NAME`.
    Builtin(ModelKind),
    /// `--model-file FILE`.
    File(Arc<NetSpec>),
}

impl From<ModelKind> for Arch {
    fn from(k: ModelKind) -> Self {
        Arch::Builtin(k)
    }
}

impl Arch {
    /// The name reports and checkpoints use.
    pub fn name(&self) -> &str {
        match self {
            Arch::Builtin(k) => k.name(),
            Arch::File(s) => &s.name,
        }
    }

    /// Input `[channels, height, width]`.
    pub fn input_shape(&self) -> [usize; 3] {
        match self {
            Arch::Builtin(k) => k.input_shape(),
            Arch::File(s) => s.input,
        }
    }

    /// The network with weights from `seed`.
    pub fn build(&self, seed: u64, classes: usize) -> Result<Model, NnError> {
        match self {
            Arch::Builtin(k) => k.build(seed, classes),
            Arch::File(s) => s
                .build(seed, classes)
                .map(|m| m.with_file_spec(Arc::clone(s))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conv(out: usize, stride: usize, name: &str) -> LayerSpec {
        LayerSpec::Conv {
            out,
            kernel: 3,
            stride,
            padding: 1,
            bias: false,
            name: Some(name.into()),
        }
    }

    fn bn(name: &str) -> LayerSpec {
        LayerSpec::BatchNorm {
            name: Some(name.into()),
        }
    }

    /// resnet20 written as a model file is resnet20: same names, shapes and initial weights.
    #[test]
    fn a_file_resnet20_equals_the_built_in_one() {
        let mut layers = vec![conv(16, 1, "conv1"), bn("bn1"), LayerSpec::Relu];
        for (s, (ch, stride)) in [(16, 1), (32, 2), (64, 2)].into_iter().enumerate() {
            for i in 0..3 {
                layers.push(LayerSpec::BasicBlock {
                    out: ch,
                    stride: if i == 0 { stride } else { 1 },
                    name: format!("layer{}.{i}", s + 1),
                });
            }
        }
        layers.push(LayerSpec::GlobalAvgPool);
        layers.push(LayerSpec::Dense {
            out: None,
            bias: true,
            name: Some("fc".into()),
        });
        let spec = NetSpec {
            name: "my-resnet".into(),
            input: [3, 32, 32],
            layers,
        };
        let a = Arch::File(Arc::new(spec)).build(5, 10).unwrap();
        let b = ModelKind::Resnet20.build(5, 10).unwrap();
        assert_eq!(a.state_digest(), b.state_digest());
        assert_eq!(a.arch_name(), "my-resnet");
    }

    #[test]
    fn explicit_residual_blocks_and_errors() {
        let block = LayerSpec::Residual {
            body: vec![conv(8, 2, "b.conv"), bn("b.bn")],
            shortcut: vec![
                LayerSpec::Conv {
                    out: 8,
                    kernel: 1,
                    stride: 2,
                    padding: 0,
                    bias: false,
                    name: Some("b.proj".into()),
                },
                bn("b.proj_bn"),
            ],
        };
        let spec = NetSpec {
            name: "tiny".into(),
            input: [3, 8, 8],
            layers: vec![
                conv(4, 1, "stem"),
                block,
                LayerSpec::GlobalAvgPool,
                LayerSpec::Dense {
                    out: None,
                    bias: false,
                    name: Some("fc".into()),
                },
            ],
        };
        let m = spec.build(1, 3).unwrap();
        assert_eq!(m.outputs(), 3);
        // Without its projection the block's output (8x4x4) cannot be added to its input.
        let mut bad = spec.clone();
        if let LayerSpec::Residual { shortcut, .. } = &mut bad.layers[1] {
            shortcut.clear();
        }
        let err = bad.build(1, 3).unwrap_err().to_string();
        assert!(err.contains("residual add"), "{err}");
        // Too deep.
        let mut deep = LayerSpec::Relu;
        for _ in 0..10 {
            deep = LayerSpec::Residual {
                body: vec![deep],
                shortcut: vec![],
            };
        }
        let err = NetSpec {
            layers: vec![deep],
            ..spec
        }
        .build(1, 3)
        .unwrap_err()
        .to_string();
        assert!(err.contains("nested deeper"), "{err}");
    }
}
