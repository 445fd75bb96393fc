//! The neural network inside the enclave: layers, models, loss, optimizer, initialisation.
//!
//! Where it sits: the training program E0 and E1 run in lock-step (and that plain and enclave
//! modes run too: ARCHITECTURE.md principle 3, one model in three modes). Only the backend of
//! the linear ops differs between modes ([`LinearBackend`]): plain float32 products, or the
//! three-party protocol of [`crate::linear`]. Everything here is float32 and reduces in a fixed
//! order (parallel passes over fixed partitions), so two enclaves given the same inputs stay
//! bit-identical whatever their thread counts.

pub mod backend;
pub mod batchnorm;
pub mod builder;
pub mod checkpoint;
pub mod elementwise;
pub mod export;
pub mod init;
pub mod input;
pub mod layers;
pub mod loss;
pub mod model;
pub mod optim;
pub mod pool;
pub mod spec;
pub mod spec_codec;
pub mod summary;
pub mod zoo;

pub use backend::{FloatBackend, LinearBackend, Prepared, ProtocolBackend, Reusable};
pub use builder::Builder;
pub use model::Model;
pub use spec::{Arch, LayerSpec, NetSpec};
pub use summary::LayerInfo;
pub use zoo::ModelKind;

/// Errors of the network code.
#[derive(Debug, thiserror::Error)]
pub enum NnError {
    /// Shapes do not fit (a model definition or input error).
    #[error(transparent)]
    Shape(#[from] goten_field::ShapeError),
    /// The secure linear op failed.
    #[error(transparent)]
    Enclave(#[from] crate::EnclaveError),
    /// Training diverged or input is not finite.
    #[error("{0}")]
    Numeric(String),
    /// A backward pass without a matching forward pass.
    #[error("backward called before forward (layer {0})")]
    NoCache(usize),
}
