//! [`Model`]: a flat list of layers (residual blocks included, see [`super::layers`]) with its
//! forward and backward passes, a training step, evaluation and the state digest.
//!
//! Where it sits: inside the enclave session (training, evaluation, serving) and, with the
//! owner's plaintext weights, in `goten predict`. Models are made by [`Builder`] (the built-in
//! ones by [`ModelKind::build`]).

use goten_field::SecretKey;
use sha2::{Digest, Sha256};

pub use super::builder::Builder;
use super::layers::{GradStack, Layer, Pass};
use super::loss::cross_entropy;
use super::optim::Sgd;
pub use super::zoo::ModelKind;
use super::{LinearBackend, NnError};
use crate::SecretTensor;

/// A model. Debug shows the layer kinds and shapes, never values.
pub struct Model {
    /// The architecture's name (a built-in model's, or a model file's).
    arch: String,
    /// Input `[channels, height, width]`.
    input: [usize; 3],
    layers: Vec<Layer>,
    /// Export prefix of each layer (empty for unnamed layers without parameters).
    names: Vec<String>,
    out: Vec<usize>,
    /// Dropout's stream: a key and the step of the next training pass. Derived from the
    /// (public) init seed until the session sets its secret one ([`Model::set_noise`]).
    noise: (SecretKey, u64),
    /// The per-channel input statistics the model was trained with (sealed in checkpoints, so
    /// serving normalises queries as training normalised images).
    norm: Option<(Vec<f32>, Vec<f32>)>,
    /// A model file's description, for networks built from one (sealed in checkpoints, so
    /// serving rebuilds the network without the file).
    file: Option<std::sync::Arc<super::NetSpec>>,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("arch", &self.arch)
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
    pub(super) fn from_parts(
        (arch, input): (String, [usize; 3]),
        layers: Vec<Layer>,
        names: Vec<String>,
        out: Vec<usize>,
        seed: u64,
    ) -> Self {
        let mut s = [0u8; 32];
        s[..8].copy_from_slice(&seed.to_le_bytes());
        let key = goten_field::prg::danger_derive_public(s, b"goten/dropout-unset");
        Model {
            arch,
            input,
            layers,
            names,
            out,
            noise: (SecretKey::from_bytes(key), 0),
            norm: None,
            file: None,
        }
    }

    /// Records the model file this network was built from.
    pub(super) fn with_file_spec(mut self, spec: std::sync::Arc<super::NetSpec>) -> Self {
        self.file = Some(spec);
        self
    }

    /// The model file's description, for networks built from one.
    pub fn file_spec(&self) -> Option<&super::NetSpec> {
        self.file.as_deref()
    }

    /// Records the input statistics (mean, std of pixel/255 per channel) of the training data.
    pub fn set_input_norm(&mut self, mean: Vec<f32>, std: Vec<f32>) {
        self.norm = Some((mean, std));
    }

    /// The input statistics the model was trained with, where known.
    pub fn input_norm(&self) -> Option<(&[f32], &[f32])> {
        self.norm
            .as_ref()
            .map(|(m, s)| (m.as_slice(), s.as_slice()))
    }

    /// Sets the dropout stream for the next training step: a key derived from the job secret
    /// (so hosts cannot predict which units drop) and the step number (so a resumed run draws
    /// the same masks).
    pub fn set_noise(&mut self, key: SecretKey, step: u64) {
        self.noise = (key, step);
    }

    /// Export prefix of layer `i` (`features.0`, `layer1.0.conv1`, ...; empty when unnamed).
    pub fn layer_name(&self, i: usize) -> &str {
        self.names.get(i).map_or("", String::as_str)
    }

    /// The architecture's name: a built-in model's (`resnet20`) or a model file's.
    pub fn arch_name(&self) -> &str {
        &self.arch
    }

    /// Input `[channels, height, width]`.
    pub fn input_shape(&self) -> [usize; 3] {
        self.input
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

    /// The model owner's classifier: the logits of each 8-bit image of `spec` (image-major), in
    /// evaluation mode with float32 products. For `goten predict` on the owner's own machine,
    /// where the weights are the owner's plaintext.
    pub fn predict_logits(
        &mut self,
        spec: &super::input::InputSpec,
        images: &[&[u8]],
    ) -> Result<Vec<f32>, NnError> {
        let mut be = super::FloatBackend::new(0);
        let mut out = Vec::with_capacity(images.len() * self.outputs());
        for chunk in images.chunks(256) {
            be.next_step();
            let x = super::input::batch(spec, chunk, None);
            let logits = self.forward(x, false, &mut be)?;
            out.extend_from_slice(logits.expose());
        }
        Ok(out)
    }

    /// The most likely class of each image (see [`Self::predict_logits`]).
    pub fn predict_classes(
        &mut self,
        spec: &super::input::InputSpec,
        images: &[&[u8]],
    ) -> Result<Vec<u8>, NnError> {
        let k = self.outputs();
        Ok(self
            .predict_logits(spec, images)?
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
        let mut pass = Pass::with_noise(train, &self.noise.0, self.noise.1);
        let mut h = x;
        for (i, l) in self.layers.iter_mut().enumerate() {
            h = l.forward(h, &mut pass, be, 3 * i as u64)?;
        }
        if pass.pending() != 0 {
            return Err(NnError::Numeric(format!(
                "{} residual block(s) left open",
                pass.pending()
            )));
        }
        Ok(h)
    }

    /// Backward pass from d(loss)/d(output); fills every parameter's gradient.
    pub fn backward(
        &mut self,
        dy: SecretTensor,
        be: &mut dyn LinearBackend,
    ) -> Result<(), NnError> {
        let mut grads = GradStack::new();
        let mut g = Some(dy);
        for (i, l) in self.layers.iter_mut().enumerate().rev() {
            g = l.backward(g, &mut grads, be, 3 * i as u64, i)?;
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
        self.noise.1 += 1;
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
            for p in l.params() {
                put(p.value.expose());
                if let Some(m) = &p.momentum {
                    put(m.expose());
                }
            }
            if let Layer::BatchNorm {
                running_mean,
                running_var,
                ..
            } = l
            {
                put(running_mean);
                put(running_var);
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
    use crate::nn::init;

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
