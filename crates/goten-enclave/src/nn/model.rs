//! Sequential models, a small builder, and the two reference networks.
//!
//! A new model is a few lines of [`Builder`] calls; shapes are checked as layers are added and
//! weights are initialised (Xavier normal, BN gamma 1 and beta 0) from the job's seed.

use goten_field::Conv2dParams;
use sha2::{Digest, Sha256};

use super::layers::{Layer, Param};
use super::loss::cross_entropy;
use super::optim::Sgd;
use super::{LinearBackend, NnError, init};
use crate::SecretTensor;

/// The built-in models.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelKind {
    /// Three conv-BN-ReLU-pool blocks (16, 32, 32 channels) and one fc layer over 512
    /// features: quick runs and tests.
    Small,
    /// VGG-11 with batch norm for 32x32 inputs (PROTOCOL.md section 5).
    Vgg11,
}

impl ModelKind {
    /// Name as used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            ModelKind::Small => "small",
            ModelKind::Vgg11 => "vgg11",
        }
    }

    /// Parses a command-line name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "small" => Some(ModelKind::Small),
            "vgg11" => Some(ModelKind::Vgg11),
            _ => None,
        }
    }

    /// Input shape `[channels, height, width]` of the built-in models.
    pub fn input_shape(self) -> [usize; 3] {
        [3, 32, 32]
    }

    /// The model with weights from `seed`, for 3x32x32 inputs and `classes` outputs.
    pub fn build(self, seed: u64, classes: usize) -> Result<Model, NnError> {
        let b = Builder::new(self.input_shape(), seed);
        match self {
            ModelKind::Small => b
                .conv(16)
                .bn()
                .relu()
                .pool()
                .conv(32)
                .bn()
                .relu()
                .pool()
                .conv(32)
                .bn()
                .relu()
                .pool()
                .flatten()
                .dense(classes)
                .build(self),
            ModelKind::Vgg11 => {
                let mut b = b;
                for v in [64, 0, 128, 0, 256, 256, 0, 512, 512, 0, 512, 512, 0] {
                    b = if v == 0 {
                        b.pool()
                    } else {
                        b.conv(v).bn().relu()
                    };
                }
                b.flatten()
                    .dense(512)
                    .relu()
                    .dense(512)
                    .relu()
                    .dense(classes)
                    .build(self)
            }
        }
    }
}

/// Adds layers while tracking the activation shape (without the batch dimension).
pub struct Builder {
    layers: Vec<Layer>,
    shape: Vec<usize>,
    seed: u64,
    error: Option<String>,
    linear_seen: bool,
}

impl Builder {
    /// An empty model for inputs of `[channels, height, width]`.
    pub fn new(input: [usize; 3], seed: u64) -> Self {
        Builder {
            layers: Vec::new(),
            shape: input.to_vec(),
            seed,
            error: None,
            linear_seen: false,
        }
    }

    fn fail(mut self, msg: String) -> Self {
        self.error.get_or_insert(msg);
        self
    }

    fn stream(&self) -> u64 {
        self.layers.len() as u64
    }

    /// 3x3 convolution, stride 1, padding 1, `out` channels.
    pub fn conv(self, out: usize) -> Self {
        self.conv_with(out, 3, Conv2dParams::new(1, 1))
    }

    /// Convolution with a square kernel and the given stride and padding.
    pub fn conv_with(mut self, out: usize, k: usize, params: Conv2dParams) -> Self {
        let &[c, h, w] = self.shape.as_slice() else {
            let msg = format!("conv after {:?}: needs [c, h, w]", self.shape);
            return self.fail(msg);
        };
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
        self.layers.push(Layer::Conv {
            w: Param::new(wt),
            params,
            input_grad,
            cache: None,
        });
        self.shape = vec![out, ho, wo];
        self
    }

    /// Batch norm over the current channels.
    pub fn bn(mut self) -> Self {
        let c = self.shape[0];
        let mut gamma = SecretTensor::zeros(&[c]);
        gamma.expose_mut().fill(1.0);
        self.layers.push(Layer::BatchNorm {
            gamma: Param::new(gamma),
            beta: Param::new(SecretTensor::zeros(&[c])),
            running_mean: vec![0.0; c],
            running_var: vec![1.0; c],
            cache: None,
        });
        self
    }

    /// ReLU.
    pub fn relu(mut self) -> Self {
        self.layers.push(Layer::Relu { mask: None });
        self
    }

    /// 2x2 max pooling, stride 2.
    pub fn pool(mut self) -> Self {
        let &[c, h, w] = self.shape.as_slice() else {
            let msg = format!("pool after {:?}", self.shape);
            return self.fail(msg);
        };
        if h < 2 || w < 2 {
            return self.fail(format!("pool on {h}x{w}"));
        }
        self.layers.push(Layer::MaxPool {
            k: 2,
            s: 2,
            cache: None,
        });
        self.shape = vec![c, h / 2, w / 2];
        self
    }

    /// Flatten to features.
    pub fn flatten(mut self) -> Self {
        self.layers.push(Layer::Flatten { in_shape: None });
        self.shape = vec![self.shape.iter().product()];
        self
    }

    /// Fully connected layer (no bias) to `out` features.
    pub fn dense(mut self, out: usize) -> Self {
        let &[i] = self.shape.as_slice() else {
            let msg = format!("dense after {:?}: flatten first", self.shape);
            return self.fail(msg);
        };
        let mut wt = SecretTensor::zeros(&[out, i]);
        init::normal(
            self.seed,
            self.stream(),
            wt.expose_mut(),
            init::xavier_std(i, out),
        );
        let input_grad = std::mem::replace(&mut self.linear_seen, true);
        self.layers.push(Layer::Dense {
            w: Param::new(wt),
            input_grad,
            cache: None,
        });
        self.shape = vec![out];
        self
    }

    /// The model, or the first shape error.
    pub fn build(self, kind: ModelKind) -> Result<Model, NnError> {
        if let Some(e) = self.error {
            return Err(goten_field::ShapeError::new(e).into());
        }
        Ok(Model {
            kind,
            layers: self.layers,
            out: self.shape,
        })
    }
}

/// A sequential model. Debug shows the layer kinds and shapes, never values.
pub struct Model {
    kind: ModelKind,
    layers: Vec<Layer>,
    out: Vec<usize>,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("kind", &self.kind)
            .field("layers", &self.layers)
            .finish()
    }
}

/// Result of one training step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepStats {
    /// Mean cross-entropy of the batch.
    pub loss: f32,
    /// Correct predictions in the batch.
    pub correct: usize,
}

impl Model {
    /// Which built-in model this is.
    pub fn kind(&self) -> ModelKind {
        self.kind
    }

    /// The layers (public only with the test-only feature `danger-test-expose`: their fields
    /// hold weights and statistics).
    #[cfg(feature = "danger-test-expose")]
    pub fn layers(&self) -> &[Layer] {
        &self.layers
    }

    /// The layers, for trusted code only.
    #[cfg(not(feature = "danger-test-expose"))]
    pub(crate) fn layers(&self) -> &[Layer] {
        &self.layers
    }

    /// Layer kinds and shapes (no values): what `Debug` shows, as a list.
    pub fn describe(&self) -> Vec<String> {
        self.layers.iter().map(|l| format!("{l:?}")).collect()
    }

    /// Mutable layers (public only with the test-only feature `danger-test-expose`).
    #[cfg(feature = "danger-test-expose")]
    pub fn layers_mut(&mut self) -> &mut [Layer] {
        &mut self.layers
    }

    /// Mutable layers, for trusted code only.
    #[cfg(not(feature = "danger-test-expose"))]
    pub(crate) fn layers_mut(&mut self) -> &mut [Layer] {
        &mut self.layers
    }

    /// The model owner's classifier: the logits of each 8-bit 3x32x32 image (image-major), in
    /// evaluation mode with float32 products. For `goten predict` on the owner's own machine,
    /// where the weights are the owner's plaintext.
    pub fn predict_logits(&mut self, images: &[&[u8]]) -> Result<Vec<f32>, NnError> {
        let mut be = super::FloatBackend::new(0);
        let mut out = Vec::with_capacity(images.len() * self.outputs());
        for chunk in images.chunks(256) {
            be.next_step();
            let logits = self.forward(super::input::batch(chunk, None), false, &mut be)?;
            out.extend_from_slice(logits.expose());
        }
        Ok(out)
    }

    /// The most likely class of each image (see [`Self::predict_logits`]).
    pub fn predict_classes(&mut self, images: &[&[u8]]) -> Result<Vec<u8>, NnError> {
        let k = self.outputs();
        Ok(self
            .predict_logits(images)?
            .chunks_exact(k)
            .map(|row| argmax(row) as u8)
            .collect())
    }

    /// Output features per example.
    pub fn outputs(&self) -> usize {
        self.out.iter().product()
    }

    /// Forward pass.
    pub fn forward(
        &mut self,
        x: SecretTensor,
        train: bool,
        be: &mut dyn LinearBackend,
    ) -> Result<SecretTensor, NnError> {
        let mut h = x;
        for (i, l) in self.layers.iter_mut().enumerate() {
            h = l.forward(h, train, be, 3 * i as u64)?;
        }
        Ok(h)
    }

    /// Backward pass from d(loss)/d(output); fills every parameter's gradient.
    pub fn backward(
        &mut self,
        dy: SecretTensor,
        be: &mut dyn LinearBackend,
    ) -> Result<(), NnError> {
        let mut g = Some(dy);
        for (i, l) in self.layers.iter_mut().enumerate().rev() {
            let Some(d) = g.take() else { break };
            g = l.backward(d, be, 3 * i as u64, i)?;
        }
        Ok(())
    }

    /// One SGD step on a batch: forward, loss, backward, update.
    pub fn train_step(
        &mut self,
        be: &mut dyn LinearBackend,
        x: SecretTensor,
        labels: &[u8],
        sgd: &Sgd,
        lr: f32,
    ) -> Result<StepStats, NnError> {
        be.next_step();
        let logits = self.forward(x, true, be)?;
        let (loss, correct, dlogits) = cross_entropy(&logits, labels)?;
        self.backward(dlogits, be)?;
        for l in &mut self.layers {
            for p in l.params_mut() {
                sgd.update(p, lr);
            }
        }
        Ok(StepStats { loss, correct })
    }

    /// Correct predictions on a batch in evaluation mode.
    pub fn evaluate(
        &mut self,
        be: &mut dyn LinearBackend,
        x: SecretTensor,
        labels: &[u8],
    ) -> Result<(f32, usize), NnError> {
        be.next_step();
        let logits = self.forward(x, false, be)?;
        let (loss, correct, _) = cross_entropy(&logits, labels)?;
        Ok((loss, correct))
    }

    /// SHA-256 of the full training state (weights, momentum buffers, BN statistics), for
    /// tests; enclaves compare a keyed MAC of the same bytes (`session::StateTag`).
    pub fn state_digest(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        self.feed_state(&mut |b| h.update(b));
        h.finalize().into()
    }

    /// Feeds the full training state, in a fixed order, to `put`.
    pub(crate) fn feed_state(&self, put: &mut dyn FnMut(&[u8])) {
        let mut put = |v: &[f32]| {
            // In blocks: one call per value would dominate the cost of a MAC.
            let mut buf = Vec::with_capacity(4096);
            for c in v.chunks(1024) {
                buf.clear();
                c.iter()
                    .for_each(|x| buf.extend_from_slice(&x.to_le_bytes()));
                put(&buf);
            }
        };
        for l in &self.layers {
            match l {
                Layer::Conv { w, .. } | Layer::Dense { w, .. } => {
                    put(w.value.expose());
                    if let Some(m) = &w.momentum {
                        put(m.expose());
                    }
                }
                Layer::BatchNorm {
                    gamma,
                    beta,
                    running_mean,
                    running_var,
                    ..
                } => {
                    for p in [gamma, beta] {
                        put(p.value.expose());
                        if let Some(m) = &p.momentum {
                            put(m.expose());
                        }
                    }
                    put(running_mean);
                    put(running_var);
                }
                _ => {}
            }
        }
    }
}

/// The index of the largest value (the first on ties).
pub fn argmax(row: &[f32]) -> usize {
    row.iter()
        .enumerate()
        .fold(0, |b, (j, &v)| if v > row[b] { j } else { b })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_shows_no_values() {
        let mut m = ModelKind::Small.build(3, 10).unwrap();
        let mut be = crate::nn::FloatBackend::new(1);
        let mut x = SecretTensor::zeros(&[2, 3, 32, 32]);
        init::normal(4, 0, x.expose_mut(), 1.0);
        m.train_step(&mut be, x, &[1, 2], &Sgd::default(), 0.1)
            .unwrap();
        let text = format!("{m:?}");
        assert!(
            text.contains("BatchNorm(16 channels, <redacted>)"),
            "{text}"
        );
        let mut values = Vec::new();
        for l in m.layers() {
            if let Layer::BatchNorm { running_mean, .. } = l {
                values.extend(running_mean.iter().copied());
            }
        }
        if let Layer::Conv { w, .. } = &m.layers()[0] {
            values.extend(w.value.expose().iter().take(16).copied());
        }
        assert!(!values.is_empty());
        for v in values {
            assert!(!text.contains(&format!("{v:?}")), "{v} appears in {text}");
        }
    }
}
