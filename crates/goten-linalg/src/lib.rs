//! Dense linear algebra shared by the device backends and the enclave's float layers: the six
//! bilinear ops as im2col / col2im around one GEMM, generic over the arithmetic.
//!
//! Where it sits: under `goten-device` (exact modular products on shares, [`RingArith`]) and
//! under the enclave's plain and enclave modes (float32 products inside the trust boundary,
//! [`FloatArith`]). It holds no secrets of its own; its only state is per-thread scratch buffers
//! that its kernels overwrite before reading ([`scratch`]). Its `unsafe` code is the call into
//! the `gemm` crate, behind a bounds-checked wrapper, and the AVX-512 VNNI kernel of the
//! modular products ([`vnni`]: loads from packed buffers whose bounds it asserts, and one
//! register-only instruction).

pub mod algo;
pub mod arith;
pub mod gemm;
pub mod scratch;
pub mod vnni;

use goten_field::{BilinearOp, Ring};

pub use algo::Arith;
use gemm::View;

/// GEMM columns per convolution group on CPUs: measured on VGG-11 shapes (DESIGN.md), large
/// enough for the GEMM's blocking, small enough that a group's im2col buffer stays in L2.
pub const CPU_GROUP_COLS: usize = 256;

/// Modular arithmetic on centered residues: lifted to f64, exact chunked GEMM.
pub struct RingArith {
    /// The ring.
    pub ring: Ring,
    /// Worker threads the GEMM may use.
    pub threads: usize,
}

impl Arith for RingArith {
    type Elem = i32;
    type F = f64;

    #[inline(always)]
    fn lift(&self, x: i32) -> f64 {
        f64::from(x)
    }

    fn gemm(
        &self,
        mnk: (usize, usize, usize),
        lhs: View<'_, f64>,
        rhs: View<'_, f64>,
        threads: usize,
    ) -> Vec<i32> {
        crate::gemm::mod_gemm(self.ring, mnk, lhs, rhs, threads)
    }

    fn prepare<'v>(&self, lhs: View<'v, f64>, (m, k): (usize, usize)) -> algo::Prepared<'v, f64> {
        let packed = crate::gemm::uses_vnni(self.ring)
            .then(|| vnni::PackedLhs::new(self.ring, (m, k), lhs, self.threads));
        algo::Prepared { view: lhs, packed }
    }

    fn gemm_prepared(
        &self,
        (m, n, k): (usize, usize, usize),
        lhs: &algo::Prepared<'_, f64>,
        rhs: View<'_, f64>,
        threads: usize,
    ) -> Vec<i32> {
        match &lhs.packed {
            Some(p) if vnni::packs_fast(rhs, n) => {
                assert_eq!(p.shape(), (m, k), "prepared operand of another shape");
                vnni::mod_gemm_packed(p, n, rhs, threads)
            }
            _ => self.gemm((m, n, k), lhs.view, rhs, threads),
        }
    }

    fn threads(&self) -> usize {
        self.threads
    }

    fn group_cols(&self) -> Option<usize> {
        Some(CPU_GROUP_COLS)
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
pub fn dispatch<A: Arith>(
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

/// Plain floating-point arithmetic (no modular reduction).
pub struct FloatArith<T> {
    threads: usize,
    _t: std::marker::PhantomData<T>,
}

impl<T> FloatArith<T> {
    /// Arithmetic whose GEMM may use `threads` workers of the current rayon pool.
    pub fn new(threads: usize) -> Self {
        FloatArith {
            threads,
            _t: std::marker::PhantomData,
        }
    }
}

impl<T: Float> Arith for FloatArith<T> {
    type Elem = T;
    type F = T;

    #[inline(always)]
    fn lift(&self, x: T) -> T {
        x
    }

    fn gemm(
        &self,
        (m, n, k): (usize, usize, usize),
        lhs: View<'_, T>,
        rhs: View<'_, T>,
        threads: usize,
    ) -> Vec<T> {
        let mut out = vec![T::default(); m * n];
        crate::gemm::gemm_into(&mut out, (m, n, k), lhs, rhs, false, T::ONE, threads);
        out
    }

    fn gemm_acc(
        &self,
        dst: &mut [T],
        mnk: (usize, usize, usize),
        lhs: View<'_, T>,
        rhs: View<'_, T>,
        threads: usize,
    ) {
        crate::gemm::gemm_into(dst, mnk, lhs, rhs, true, T::ONE, threads);
    }

    fn threads(&self) -> usize {
        self.threads
    }

    fn group_cols(&self) -> Option<usize> {
        Some(CPU_GROUP_COLS)
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
