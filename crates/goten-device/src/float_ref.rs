//! Plain floating-point products of the same shapes and the same algorithm (im2col + GEMM):
//! the baseline every modular-kernel benchmark is divided by. Not used on shares.

use gemm_impl::View;
use goten_field::{BilinearOp, ShapeError};

use crate::DeviceError;
use crate::cpu::algo::Arith;
use crate::cpu::gemm as gemm_impl;

/// f32 or f64.
pub trait Float: Copy + Send + Sync + Default + 'static + std::ops::Add<Output = Self> {
    /// The multiplicative identity.
    const ONE: Self;
}

impl Float for f32 {
    const ONE: f32 = 1.0;
}

impl Float for f64 {
    const ONE: f64 = 1.0;
}

struct FloatArith<T> {
    threads: usize,
    _t: std::marker::PhantomData<T>,
}

impl<T: Float> Arith for FloatArith<T> {
    type Elem = T;
    type F = T;

    #[inline(always)]
    fn lift(&self, x: T) -> T {
        x
    }

    fn gemm(&self, (m, n, k): (usize, usize, usize), lhs: View<'_, T>, rhs: View<'_, T>) -> Vec<T> {
        let mut out = vec![T::default(); m * n];
        gemm_impl::gemm_into(&mut out, (m, n, k), lhs, rhs, false, T::ONE, self.threads);
        out
    }

    #[inline(always)]
    fn acc(&self, a: T, b: T) -> T {
        a + b
    }

    #[inline(always)]
    fn finish(&self, a: T) -> T {
        a
    }
}

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
        let arith = FloatArith::<T> {
            threads: self.pool.current_num_threads(),
            _t: std::marker::PhantomData,
        };
        self.pool
            .install(|| crate::cpu::dispatch(&arith, op, (sa, a), (sb, b)))
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
