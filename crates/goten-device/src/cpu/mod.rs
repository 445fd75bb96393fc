//! The CPU backend: a dedicated rayon pool running the generic algorithms of [`algo`] in exact
//! modular arithmetic.
//!
//! Where it sits: the default device of every party's host, and the reference the GPU backend
//! must agree with bit for bit.

pub(crate) mod algo;
pub(crate) mod gemm;

use goten_field::{BilinearOp, Ring, RingTensor};

use crate::{Device, DeviceError, common_ring};
use algo::Arith;
use gemm::View;

/// Modular arithmetic on centered residues: lifted to f64, exact chunked GEMM.
pub(crate) struct RingArith {
    pub ring: Ring,
    pub threads: usize,
}

impl Arith for RingArith {
    type Elem = i32;
    type F = f64;

    #[inline(always)]
    fn lift(&self, x: i32) -> f64 {
        f64::from(x)
    }

    fn gemm(&self, mnk: (usize, usize, usize), lhs: View<'_, f64>, rhs: View<'_, f64>) -> Vec<i32> {
        gemm::mod_gemm(self.ring, mnk, lhs, rhs, self.threads)
    }

    #[inline(always)]
    fn acc(&self, a: i32, b: i32) -> i32 {
        // Wrapping in 32 bits is exact modulo 2^k because 2^k divides 2^32.
        a.wrapping_add(b)
    }

    #[inline(always)]
    fn finish(&self, a: i32) -> i32 {
        self.ring.reduce_u32(a as u32)
    }
}

/// Runs `op` with arithmetic `a` on raw operand slices whose shapes were validated.
pub(crate) fn dispatch<A: Arith>(
    a: &A,
    op: &BilinearOp,
    (sa, xa): (&[usize], &[A::Elem]),
    (sb, xb): (&[usize], &[A::Elem]),
) -> Result<Vec<A::Elem>, goten_field::ShapeError> {
    Ok(match op {
        BilinearOp::MatmulForward => algo::matmul_forward(a, op.matmul_dims(sa, sb)?, xa, xb),
        BilinearOp::MatmulInputGrad => algo::matmul_input_grad(a, op.matmul_dims(sa, sb)?, xa, xb),
        BilinearOp::MatmulWeightGrad => {
            algo::matmul_weight_grad(a, op.matmul_dims(sa, sb)?, xa, xb)
        }
        BilinearOp::Conv2dForward(_) => algo::conv_forward(a, &op.conv_dims(sa, sb)?, xa, xb),
        BilinearOp::Conv2dInputGrad { .. } => {
            algo::conv_input_grad(a, &op.conv_dims(sa, sb)?, xa, xb)
        }
        BilinearOp::Conv2dWeightGrad { .. } => {
            algo::conv_weight_grad(a, &op.conv_dims(sa, sb)?, xa, xb)
        }
    })
}

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
