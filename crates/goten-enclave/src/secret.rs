//! [`SecretTensor`]: plaintext float data that lives only inside an enclave.
//!
//! It cannot be serialized, its `Debug` shows the shape only, and its memory is zeroized on drop.
//! Reading the values requires an explicit call whose name says what it is.

use zeroize::{Zeroize, ZeroizeOnDrop};

/// A plaintext float32 tensor of the enclave (row-major).
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct SecretTensor {
    shape: Vec<usize>,
    data: Vec<f32>,
}

impl std::fmt::Debug for SecretTensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretTensor(shape {:?}, <redacted>)", self.shape)
    }
}

impl SecretTensor {
    /// Wraps values; `None` when the length does not match the shape.
    pub fn new(shape: &[usize], data: Vec<f32>) -> Option<Self> {
        (shape.iter().product::<usize>() == data.len()).then(|| SecretTensor {
            shape: shape.to_vec(),
            data,
        })
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// A tensor of zeros.
    pub fn zeros(shape: &[usize]) -> Self {
        SecretTensor {
            shape: shape.to_vec(),
            data: vec![0.0; shape.iter().product()],
        }
    }

    /// The plaintext values: trusted code only (public only with the test-only feature
    /// `danger-test-expose`, which release builds never enable; CI checks).
    #[cfg(feature = "danger-test-expose")]
    pub fn expose(&self) -> &[f32] {
        &self.data
    }

    /// The plaintext values, for trusted code only.
    #[cfg(not(feature = "danger-test-expose"))]
    pub(crate) fn expose(&self) -> &[f32] {
        &self.data
    }

    /// Mutable plaintext values (public only with `danger-test-expose`).
    #[cfg(feature = "danger-test-expose")]
    pub fn expose_mut(&mut self) -> &mut [f32] {
        &mut self.data
    }

    /// Mutable plaintext values, for trusted code only.
    #[cfg(not(feature = "danger-test-expose"))]
    pub(crate) fn expose_mut(&mut self) -> &mut [f32] {
        &mut self.data
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The same values under another shape with as many elements; `None` otherwise.
    pub fn reshaped(mut self, shape: &[usize]) -> Option<Self> {
        if shape.iter().product::<usize>() != self.data.len() {
            return None;
        }
        self.shape = shape.to_vec();
        Some(self)
    }
}
