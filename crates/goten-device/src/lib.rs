//! Untrusted accelerator seam of goten: exact modular bilinear kernels on share tensors.
//!
//! Where it sits: a party's host (S0, S1 or S2) hands the device the shares an enclave released
//! (all one-time padded, PROTOCOL.md section 2 step 4) and gets back their products. Nothing
//! here ever sees plaintext, and nothing here is trusted: an enclave can check results, but a
//! backend must still be *exact*, because a single wrong residue corrupts the reconstruction.
//!
//! - [`Device`]: the trait every backend implements (six bilinear ops, elementwise ops, and the
//!   fused step-4 combination);
//! - [`CpuDevice`]: the multi-threaded CPU backend, always compiled (im2col + f64 GEMM with
//!   the reduction cut into exact chunks, see `docs/DESIGN.md`);
//! - `cuda::CudaDevice` (feature `cuda`): the GPU backend, same lowering, GEMM and exact
//!   reduction on the GPU;
//! - [`naive`]: an independent i128 reference used by the conformance tests of every backend;
//! - [`float_ref`]: plain f32/f64 products of the same shapes, the benchmark baseline.

mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod float_ref;
pub mod naive;

pub use cpu::CpuDevice;
use goten_field::{BilinearOp, RingTensor, ShapeError};
use thiserror::Error;

/// Why a device job failed. Shape errors are the caller's fault; the rest are the device's.
#[derive(Debug, Error)]
pub enum DeviceError {
    /// Operands do not fit the op (caller error).
    #[error(transparent)]
    Shape(#[from] ShapeError),
    /// The backend is not available on this machine or build.
    #[error("device backend unavailable: {0}")]
    Unavailable(String),
    /// The backend failed while running a job.
    #[error("device failure: {0}")]
    Backend(String),
}

/// An accelerator that computes exact products of share tensors modulo the ring's modulus.
pub trait Device: Send + Sync {
    /// Backend name and configuration, e.g. `cpu (2 threads)`.
    fn name(&self) -> String;

    /// `f(a, b)` modulo 2^k, exact for every reduction length.
    fn bilinear(
        &self,
        op: &BilinearOp,
        a: &RingTensor,
        b: &RingTensor,
    ) -> Result<RingTensor, DeviceError>;

    /// `a + b`, elementwise.
    fn add(&self, a: &RingTensor, b: &RingTensor) -> Result<RingTensor, DeviceError> {
        Ok(a.add(b)?)
    }

    /// `a - b`, elementwise.
    fn sub(&self, a: &RingTensor, b: &RingTensor) -> Result<RingTensor, DeviceError> {
        Ok(a.sub(b)?)
    }

    /// The fused step 4 of PROTOCOL.md section 2: `sum_i f(a_i, b_i) - pad`. S0 calls it with
    /// `[(A0, F), (E, B0 - F)]` and CM0, S1 with `[(A1, F), (E, B1)]` and CM1, S2 with
    /// `[(U, V)]` and CMZ.
    fn combine(
        &self,
        op: &BilinearOp,
        terms: &[(&RingTensor, &RingTensor)],
        pad: Option<&RingTensor>,
    ) -> Result<RingTensor, DeviceError> {
        let ((a0, b0), rest) = terms
            .split_first()
            .ok_or_else(|| ShapeError::new("combine needs at least one product"))?;
        let mut acc = self.bilinear(op, a0, b0)?;
        for (a, b) in rest {
            acc.add_assign(&self.bilinear(op, a, b)?)?;
        }
        if let Some(p) = pad {
            acc.sub_assign(p)?;
        }
        Ok(acc)
    }
}

/// Checks that both operands share a ring and returns it.
pub(crate) fn common_ring(a: &RingTensor, b: &RingTensor) -> Result<goten_field::Ring, ShapeError> {
    if a.ring() != b.ring() {
        return Err(ShapeError::new(format!(
            "operands live in different rings ({} and {})",
            a.ring(),
            b.ring()
        )));
    }
    Ok(a.ring())
}
