//! The CPU backend: a rayon pool (its own, or one shared by the parties of one machine:
//! [`CpuDevice::sharing`]) running `goten-linalg`'s im2col + GEMM algorithms in
//! exact modular arithmetic.
//!
//! Where it sits: the default device of every party's host, and the reference the GPU backend
//! must agree with bit for bit.

use goten_field::{BilinearOp, RingTensor};
use goten_linalg::{RingArith, dispatch};

use crate::{Device, DeviceError, common_ring};

/// Builds a rayon pool of `threads` workers (0: one per core).
pub(crate) fn pool(threads: usize) -> Result<rayon::ThreadPool, DeviceError> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("goten-cpu-{i}"))
        .build()
        .map_err(|e| DeviceError::Unavailable(format!("cannot start CPU worker threads: {e}")))
}

/// The multi-threaded CPU backend.
pub struct CpuDevice {
    pool: std::sync::Arc<rayon::ThreadPool>,
}

impl CpuDevice {
    /// A backend with `threads` workers (0: one per available core).
    pub fn new(threads: usize) -> Result<Self, DeviceError> {
        Ok(CpuDevice {
            pool: std::sync::Arc::new(pool(threads)?),
        })
    }

    /// `N` devices that run on one pool of `threads` workers (0: one per core): parties that
    /// share a machine's cores, as a single-machine run's three parties do, without each
    /// keeping its own workers (which would oversubscribe the cores).
    pub fn sharing<const N: usize>(threads: usize) -> Result<[Self; N], DeviceError> {
        let pool = std::sync::Arc::new(pool(threads)?);
        Ok(std::array::from_fn(|_| CpuDevice { pool: pool.clone() }))
    }

    /// Number of worker threads.
    pub fn threads(&self) -> usize {
        self.pool.current_num_threads()
    }
}

impl Device for CpuDevice {
    fn name(&self) -> String {
        format!("cpu ({} threads)", self.threads())
    }

    fn bilinear(
        &self,
        op: &BilinearOp,
        a: &RingTensor,
        b: &RingTensor,
    ) -> Result<RingTensor, DeviceError> {
        let ring = common_ring(a, b)?;
        let shape = op.output_shape(a.shape(), b.shape())?;
        let arith = RingArith {
            ring,
            threads: self.threads(),
        };
        let data = self
            .pool
            .install(|| dispatch(&arith, op, (a.shape(), a.data()), (b.shape(), b.data())))?;
        // The modular GEMM returns reduced residues.
        Ok(RingTensor::from_reduced(ring, &shape, data)?)
    }

    /// Fused step 4: the products are summed inside one GEMM by concatenating the operand
    /// pairs along the reduction axes (`f(a1, b1) + f(a2, b2) = f([a1 a2], [b1; b2])`), which
    /// saves the output-side passes of the extra products. Exactness is unaffected: the longer
    /// reduction is chunked like any other.
    fn combine(
        &self,
        op: &BilinearOp,
        terms: &[(&RingTensor, &RingTensor)],
        pad: Option<&RingTensor>,
    ) -> Result<RingTensor, DeviceError> {
        let Some(&(a0, b0)) = terms.first() else {
            return Err(goten_field::ShapeError::new("combine needs at least one product").into());
        };
        let mut acc = if terms.len() == 1 {
            self.bilinear(op, a0, b0)?
        } else {
            // Every term must produce the same output shape, or concatenation would be wrong.
            let want = op.output_shape(a0.shape(), b0.shape())?;
            for (a, b) in terms {
                if op.output_shape(a.shape(), b.shape())? != want {
                    return Err(goten_field::ShapeError::new(
                        "combine: products of different output shapes",
                    )
                    .into());
                }
            }
            let (ax_a, ax_b) = op.reduction_axes();
            let a: Vec<&RingTensor> = terms.iter().map(|t| t.0).collect();
            let b: Vec<&RingTensor> = terms.iter().map(|t| t.1).collect();
            self.bilinear(
                op,
                &RingTensor::concat(&a, ax_a)?,
                &RingTensor::concat(&b, ax_b)?,
            )?
        };
        if let Some(p) = pad {
            acc.sub_assign(p)?;
        }
        Ok(acc)
    }
}
