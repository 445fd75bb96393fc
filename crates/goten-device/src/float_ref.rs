//! Plain floating-point products of the same shapes and the same algorithm (im2col + GEMM):
//! the baseline every modular-kernel benchmark is divided by. Not used on shares.

use goten_field::{BilinearOp, ShapeError};
pub use goten_linalg::Float;
use goten_linalg::FloatArith;

use crate::DeviceError;

/// A CPU float engine with its own worker pool.
pub struct FloatRef {
    pool: rayon::ThreadPool,
}

impl FloatRef {
    /// An engine with `threads` workers (0: one per core).
    pub fn new(threads: usize) -> Result<Self, DeviceError> {
        Ok(FloatRef {
            pool: crate::cpu::pool(threads)?,
        })
    }

    /// Number of worker threads.
    pub fn threads(&self) -> usize {
        self.pool.current_num_threads()
    }

    /// `f(a, b)` in plain floating point; shapes are validated as for shares.
    pub fn bilinear<T: Float>(
        &self,
        op: &BilinearOp,
        (sa, a): (&[usize], &[T]),
        (sb, b): (&[usize], &[T]),
    ) -> Result<Vec<T>, ShapeError> {
        op.output_shape(sa, sb)?;
        check_len(sa, a.len(), "a")?;
        check_len(sb, b.len(), "b")?;
        let arith = FloatArith::<T>::new(self.pool.current_num_threads());
        self.pool
            .install(|| goten_linalg::dispatch(&arith, op, (sa, a), (sb, b)))
    }
}

fn check_len(shape: &[usize], len: usize, what: &str) -> Result<(), ShapeError> {
    let want: usize = shape.iter().product();
    if want != len {
        return Err(ShapeError::new(format!(
            "operand {what}: shape {shape:?} needs {want} elements, got {len}"
        )));
    }
    Ok(())
}
