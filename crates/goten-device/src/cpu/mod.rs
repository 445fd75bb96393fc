//! The CPU backend: a dedicated rayon pool running `goten-linalg`'s im2col + GEMM algorithms in
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
    pool: rayon::ThreadPool,
}

impl CpuDevice {
    /// A backend with `threads` workers (0: one per available core).
    pub fn new(threads: usize) -> Result<Self, DeviceError> {
        Ok(CpuDevice {
            pool: pool(threads)?,
        })
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
        Ok(RingTensor::from_residues(ring, &shape, data)?)
    }
}
