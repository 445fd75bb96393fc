//! [`Builder`]: a model as a few lines of calls, checked as it is written.
//!
//! Where it sits: the built-in models ([`super::ModelKind`]) and model files are built with
//! it; it tracks the activation shape (and a stack of shapes inside residual blocks), so a layer
//! that does not fit its input is refused with the reason before any data is seen. Weights are
//! initialised from the job's seed (Xavier normal; BN scale 1 and shift 0; biases 0), each layer
//! from its own stream, so adding a layer does not change the others' starting weights.

use goten_field::Conv2dParams;

use super::NnError;
use super::init;
use super::layers::{Layer, Param};
use super::model::Model;
use super::pool::pooled;
use crate::SecretTensor;

/// Adds layers while tracking the activation shape (without the batch dimension).
pub struct Builder {
    input: [usize; 3],
    layers: Vec<Layer>,
    names: Vec<Option<String>>,
    shape: Vec<usize>,
    /// Shapes saved by `fork` (and exchanged by `swap`) of the residual blocks in progress.
    stack: Vec<Vec<usize>>,
    seed: u64,
    error: Option<String>,
    linear_seen: bool,
}

impl Builder {
    /// An empty model for inputs of `[channels, height, width]`.
    pub fn new(input: [usize; 3], seed: u64) -> Self {
        Builder {
            input,
            layers: Vec::new(),
            names: Vec::new(),
            shape: input.to_vec(),
            stack: Vec::new(),
            seed,
            error: None,
            linear_seen: false,
        }
    }

    /// The activation shape after the layers so far (without the batch dimension).
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    fn fail(mut self, msg: String) -> Self {
        let at = self.layers.len();
        self.error.get_or_insert(format!("layer {at}: {msg}"));
        self
    }

    fn push(mut self, layer: Layer) -> Self {
        self.layers.push(layer);
        self.names.push(None);
        self
    }

    fn stream(&self) -> u64 {
        self.layers.len() as u64
    }

    fn chw(&self, what: &str) -> Result<[usize; 3], String> {
        match *self.shape.as_slice() {
            [c, h, w] => Ok([c, h, w]),
            _ => Err(format!(
                "{what} needs a [channels, height, width] input, got {:?}",
                self.shape
            )),
        }
    }

    /// Names the last layer (its export prefix, e.g. `layer1.0.conv1`).
    pub fn named(mut self, name: impl Into<String>) -> Self {
        match self.names.last_mut() {
            Some(n) => *n = Some(name.into()),
            None => return self.fail("a name before any layer".into()),
        }
        self
    }

    /// 3x3 convolution, stride 1, padding 1, `out` channels.
    pub fn conv(self, out: usize) -> Self {
        self.conv_with(out, 3, Conv2dParams::new(1, 1))
    }

    /// Convolution with a square kernel and the given stride and padding.
    pub fn conv_with(mut self, out: usize, k: usize, params: Conv2dParams) -> Self {
        let [c, h, w] = match self.chw("conv") {
            Ok(d) => d,
            Err(e) => return self.fail(e),
        };
        if out == 0 || k == 0 {
            return self.fail(format!("conv with {out} channels and kernel {k}"));
        }
        let Ok((ho, wo)) = params.output_hw((h, w), (k, k)) else {
            return self.fail(format!("conv {k}x{k} does not fit {h}x{w}"));
        };
        let mut wt = SecretTensor::zeros(&[out, c, k, k]);
        init::normal(
            self.seed,
            self.stream(),
            wt.expose_mut(),
            init::xavier_std(c * k * k, out * k * k),
        );
        let input_grad = std::mem::replace(&mut self.linear_seen, true);
        self.shape = vec![out, ho, wo];
        self.push(Layer::Conv {
            w: Param::new(wt),
            b: None,
            params,
            input_grad,
            cache: None,
        })
    }

    /// Fully connected layer (no bias) to `out` features.
    pub fn dense(mut self, out: usize) -> Self {
        let &[i] = self.shape.as_slice() else {
            let msg = format!("dense after {:?}: flatten first", self.shape);
            return self.fail(msg);
        };
        if out == 0 {
            return self.fail("dense with 0 outputs".into());
        }
        let mut wt = SecretTensor::zeros(&[out, i]);
        init::normal(
            self.seed,
            self.stream(),
            wt.expose_mut(),
            init::xavier_std(i, out),
        );
        let input_grad = std::mem::replace(&mut self.linear_seen, true);
        self.shape = vec![out];
        self.push(Layer::Dense {
            w: Param::new(wt),
            b: None,
            input_grad,
            cache: None,
        })
    }

    /// Gives the last layer (a conv or dense layer) a bias, initially 0.
    pub fn bias(mut self) -> Self {
        match self.layers.last_mut() {
            Some(Layer::Conv { w, b, .. } | Layer::Dense { w, b, .. }) => {
                *b = Some(Param::new(SecretTensor::zeros(&[w.value.shape()[0]])));
                self
            }
            _ => self.fail("a bias needs a conv or dense layer before it".into()),
        }
    }

    /// Batch norm over the current channels.
    pub fn bn(self) -> Self {
        if let Err(e) = self.chw("batchnorm") {
            return self.fail(e);
        }
        let c = self.shape[0];
        let mut gamma = SecretTensor::zeros(&[c]);
        gamma.expose_mut().fill(1.0);
        self.push(Layer::BatchNorm {
            gamma: Param::new(gamma),
            beta: Param::new(SecretTensor::zeros(&[c])),
            running_mean: vec![0.0; c],
            running_var: vec![1.0; c],
            cache: None,
        })
    }

    /// ReLU.
    pub fn relu(self) -> Self {
        self.push(Layer::Relu { mask: None })
    }

    /// 2x2 max pooling, stride 2.
    pub fn pool(self) -> Self {
        self.maxpool(2, 2, 0)
    }

    /// Max pooling with window `k`, stride `s` and padding `p`.
    pub fn maxpool(mut self, k: usize, s: usize, p: usize) -> Self {
        let [c, h, w] = match self.chw("maxpool") {
            Ok(d) => d,
            Err(e) => return self.fail(e),
        };
        let (Some(ho), Some(wo)) = (pooled(h, k, s, p), pooled(w, k, s, p)) else {
            return self.fail(format!("maxpool {k}x{k}/{s} pad {p} on {h}x{w}"));
        };
        self.shape = vec![c, ho, wo];
        self.push(Layer::MaxPool {
            k,
            s,
            p,
            cache: None,
        })
    }

    /// Average pooling with window `k` and stride `s`, no padding.
    pub fn avgpool(mut self, k: usize, s: usize) -> Self {
        let [c, h, w] = match self.chw("avgpool") {
            Ok(d) => d,
            Err(e) => return self.fail(e),
        };
        let (Some(ho), Some(wo)) = (pooled(h, k, s, 0), pooled(w, k, s, 0)) else {
            return self.fail(format!("avgpool {k}x{k}/{s} on {h}x{w}"));
        };
        self.shape = vec![c, ho, wo];
        self.push(Layer::AvgPool {
            k,
            s,
            in_shape: None,
        })
    }

    /// Global average pooling to one feature per channel (flattens too).
    pub fn global_avgpool(mut self) -> Self {
        let [c, h, w] = match self.chw("global average pooling") {
            Ok(d) => d,
            Err(e) => return self.fail(e),
        };
        if h * w == 0 {
            return self.fail("global average pooling of an empty plane".into());
        }
        self.shape = vec![c];
        self.push(Layer::GlobalAvgPool { in_shape: None })
    }

    /// Dropout with drop probability `p` in [0, 1).
    pub fn dropout(self, p: f32) -> Self {
        if !(0.0..1.0).contains(&p) {
            return self.fail(format!("dropout probability {p} is not in [0, 1)"));
        }
        self.push(Layer::Dropout { p, mask: None })
    }

    /// Flatten to features.
    pub fn flatten(mut self) -> Self {
        self.shape = vec![self.shape.iter().product()];
        self.push(Layer::Flatten { in_shape: None })
    }

    /// Starts a residual block: the current activation is saved for the shortcut.
    pub fn fork(mut self) -> Self {
        self.stack.push(self.shape.clone());
        self.push(Layer::Fork)
    }

    /// Ends a residual block's body; the layers up to `add` form its projection shortcut.
    pub fn swap(mut self) -> Self {
        let Some(top) = self.stack.last_mut() else {
            return self.fail("swap outside a residual block (fork first)".into());
        };
        std::mem::swap(top, &mut self.shape);
        self.push(Layer::Swap)
    }

    /// Ends a residual block: adds the body's output and the shortcut.
    pub fn add(mut self) -> Self {
        let Some(saved) = self.stack.pop() else {
            return self.fail("add outside a residual block (fork first)".into());
        };
        if saved != self.shape {
            let msg = format!(
                "residual add of {:?} and {saved:?}: give the block a projection shortcut (swap, 1x1 conv, bn)",
                self.shape
            );
            return self.fail(msg);
        }
        self.push(Layer::Add)
    }

    /// The ResNet basic block under torchvision's names (`{prefix}.conv1`, `.bn1`, `.conv2`,
    /// `.bn2`, and `.downsample.0/1` when the stride or width changes): two 3x3 conv-BN pairs,
    /// the shortcut added, then ReLU.
    pub fn basic_block(self, out: usize, stride: usize, prefix: &str) -> Self {
        let project = stride != 1 || self.shape.first() != Some(&out);
        let mut b = self
            .fork()
            .conv_with(out, 3, Conv2dParams::new(stride, 1))
            .named(format!("{prefix}.conv1"))
            .bn()
            .named(format!("{prefix}.bn1"))
            .relu()
            .conv(out)
            .named(format!("{prefix}.conv2"))
            .bn()
            .named(format!("{prefix}.bn2"));
        if project {
            b = b
                .swap()
                .conv_with(out, 1, Conv2dParams::new(stride, 0))
                .named(format!("{prefix}.downsample.0"))
                .bn()
                .named(format!("{prefix}.downsample.1"));
        }
        b.add().relu()
    }

    /// The model, or the first shape error. Layers without an explicit name are named as in
    /// torchvision's VGG (`features.{i}` before the flatten, `classifier.{j}` after it) when no
    /// layer is named; in a model with names, every layer with parameters needs one.
    pub fn build(self, arch: impl AsRef<str>) -> Result<Model, NnError> {
        let shape_err = |e: String| -> NnError { goten_field::ShapeError::new(e).into() };
        if let Some(e) = self.error {
            return Err(shape_err(e));
        }
        if !self.stack.is_empty() {
            return Err(shape_err(format!(
                "{} residual block(s) not closed by add",
                self.stack.len()
            )));
        }
        let named = self.names.iter().any(Option::is_some);
        let flat = self
            .layers
            .iter()
            .position(|l| matches!(l, Layer::Flatten { .. }))
            .unwrap_or(usize::MAX);
        let mut names = Vec::with_capacity(self.layers.len());
        for (i, (l, n)) in self.layers.iter().zip(self.names).enumerate() {
            let name = match n {
                Some(n) => n,
                None if named && !l.params().is_empty() => {
                    return Err(shape_err(format!(
                        "layer {i} ({}) has parameters but no name",
                        l.name()
                    )));
                }
                None if named => String::new(),
                None => match i.cmp(&flat) {
                    std::cmp::Ordering::Less => format!("features.{i}"),
                    std::cmp::Ordering::Equal => "flatten".into(),
                    std::cmp::Ordering::Greater => format!("classifier.{}", i - flat - 1),
                },
            };
            if !name.is_empty() && names.contains(&name) {
                return Err(shape_err(format!("two layers are named {name:?}")));
            }
            names.push(name);
        }
        Ok(Model::from_parts(
            (arch.as_ref().to_string(), self.input),
            self.layers,
            names,
            self.shape,
            self.seed,
        ))
    }
}
