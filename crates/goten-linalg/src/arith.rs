//! The arithmetic the bilinear ops of [`crate::algo`] run in: what a kernel family (exact
//! modular products on shares, float products inside the enclave or the benchmarks' reference,
//! a GPU) must provide, and the left operand it may prepare once for several products.

use crate::gemm::View;

/// The arithmetic an algorithm runs in.
pub trait Arith: Sync {
    /// Storage element of operands and results.
    type Elem: Copy + Send + Sync + Default + 'static;
    /// GEMM element the operands are lifted to.
    type F: Copy + Send + Sync + Default + 'static;
    /// Lifts one operand element.
    fn lift(&self, x: Self::Elem) -> Self::F;
    /// `lhs (m x k) * rhs (k x n)`, row-major m x n, on at most `threads` workers (a hint).
    fn gemm(
        &self,
        mnk: (usize, usize, usize),
        lhs: View<'_, Self::F>,
        rhs: View<'_, Self::F>,
        threads: usize,
    ) -> Vec<Self::Elem>;
    /// `dst (m x n) += lhs (m x k) * rhs (k x n)` with `acc`.
    fn gemm_acc(
        &self,
        dst: &mut [Self::Elem],
        mnk: (usize, usize, usize),
        lhs: View<'_, Self::F>,
        rhs: View<'_, Self::F>,
        threads: usize,
    ) {
        let part = self.gemm(mnk, lhs, rhs, threads);
        dst.iter_mut()
            .zip(&part)
            .for_each(|(t, &v)| *t = self.acc(*t, v));
    }
    /// Prepares `lhs` (m x k) for several products with different right operands, packing it
    /// once where the kernel packs (the default keeps the view).
    fn prepare<'v>(&self, lhs: View<'v, Self::F>, _mk: (usize, usize)) -> Prepared<'v, Self::F> {
        Prepared {
            view: lhs,
            packed: None,
        }
    }
    /// `lhs (m x k) * rhs (k x n)` with a prepared `lhs`: the same result as [`Arith::gemm`].
    fn gemm_prepared(
        &self,
        mnk: (usize, usize, usize),
        lhs: &Prepared<'_, Self::F>,
        rhs: View<'_, Self::F>,
        threads: usize,
    ) -> Vec<Self::Elem> {
        self.gemm(mnk, lhs.view, rhs, threads)
    }
    /// Worker threads this arithmetic may use.
    fn threads(&self) -> usize {
        1
    }
    /// How a convolution splits its batch. `Some(cols)`: groups of images with about `cols`
    /// GEMM columns (images x output positions), run in parallel, so that each group's im2col
    /// buffer stays in cache between its write and the GEMM that reads it (CPUs). `None`: the
    /// largest groups the memory budget allows, one after another (a GPU, whose calls are
    /// expensive).
    fn group_cols(&self) -> Option<usize> {
        None
    }
    /// Accumulates two results (for the ring: wrapping, reduced later by `finish`).
    fn acc(&self, a: Self::Elem, b: Self::Elem) -> Self::Elem;
    /// Final normalisation of accumulated results.
    fn finish(&self, a: Self::Elem) -> Self::Elem;
}

/// A left operand prepared by [`Arith::prepare`].
pub struct Prepared<'v, F> {
    /// The operand.
    pub view: View<'v, F>,
    /// Its packed form, where the kernel packs once (the exact products' VNNI kernel).
    pub packed: Option<crate::vnni::PackedLhs>,
}
