//! Safe wrappers around the `gemm` crate, and the exact modular GEMM built on them.
//!
//! Exactness argument (DESIGN.md): operands are centered residues |x| <= 2^(k-1), so one product
//! is at most 2^(2k-2). [`Ring::f64_exact_chunk`] terms of them, plus a residue carried from the
//! previous chunk, sum to at most 2^53 in magnitude; every partial sum in any order is then an
//! integer that f64 represents exactly, whatever blocking or FMA use the GEMM chooses. Between
//! chunks the accumulator is reduced (exactly) back to a centered residue.
#![allow(unsafe_code)]

use gemm::Parallelism;
use goten_field::Ring;
use rayon::prelude::*;

use crate::scratch::Scratch;

/// A strided read-only matrix view: element (i, j) is `data[off + i * rs + j * cs]`.
#[derive(Clone, Copy)]
pub struct View<'a, T> {
    /// The buffer.
    pub data: &'a [T],
    /// Offset of element (0, 0).
    pub off: usize,
    /// Row stride.
    pub rs: usize,
    /// Column stride.
    pub cs: usize,
}

impl<'a, T> View<'a, T> {
    /// A row-major matrix with `cols` columns.
    pub fn rows(data: &'a [T], cols: usize) -> Self {
        View {
            data,
            off: 0,
            rs: cols,
            cs: 1,
        }
    }

    /// The transpose of a row-major matrix with `cols` columns.
    pub fn transposed(data: &'a [T], cols: usize) -> Self {
        View {
            data,
            off: 0,
            rs: 1,
            cs: cols,
        }
    }

    /// The sub-view starting at column `j0`.
    fn skip_cols(self, j0: usize) -> Self {
        View {
            off: self.off + j0 * self.cs,
            ..self
        }
    }

    /// The sub-view starting at row `i0`.
    fn skip_rows(self, i0: usize) -> Self {
        View {
            off: self.off + i0 * self.rs,
            ..self
        }
    }

    /// Panics unless every element of a `rows x cols` matrix lies inside `data` (an internal
    /// invariant: shapes were validated before any kernel runs).
    pub(crate) fn check(&self, rows: usize, cols: usize) {
        if rows > 0 && cols > 0 {
            let last = self.off + (rows - 1) * self.rs + (cols - 1) * self.cs;
            assert!(last < self.data.len(), "gemm view out of bounds");
        }
    }
}

pub fn parallelism(threads: usize) -> Parallelism {
    if threads <= 1 {
        Parallelism::None
    } else {
        Parallelism::Rayon(threads)
    }
}

/// `dst (m x n, row-major) = [dst +] lhs (m x k) * rhs (k x n)` in plain floating point.
pub fn gemm_into<T: Copy + 'static>(
    dst: &mut [T],
    (m, n, k): (usize, usize, usize),
    lhs: View<'_, T>,
    rhs: View<'_, T>,
    accumulate: bool,
    one: T,
    threads: usize,
) {
    assert_eq!(dst.len(), m * n, "gemm destination size");
    lhs.check(m, k);
    rhs.check(k, n);
    if m == 0 || n == 0 {
        return;
    }
    // SAFETY: bounds of all three matrices were checked above; dst is exclusively borrowed and
    // does not alias lhs or rhs (shared borrows); strides fit isize because the buffers exist.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            lhs.data.as_ptr().add(lhs.off),
            lhs.cs as isize,
            lhs.rs as isize,
            rhs.data.as_ptr().add(rhs.off),
            rhs.cs as isize,
            rhs.rs as isize,
            one,
            one,
            false,
            false,
            false,
            parallelism(threads),
        );
    }
}

/// Elements per parallel task in the elementwise passes.
pub const PAR_CHUNK: usize = 1 << 14;

/// `lhs (m x k) * rhs (k x n)` modulo 2^bits, exactly, as centered residues (row-major m x n).
/// Operands hold centered residues of `ring` as f64.
pub fn mod_gemm(
    ring: Ring,
    (m, n, k): (usize, usize, usize),
    lhs: View<'_, f64>,
    rhs: View<'_, f64>,
    threads: usize,
) -> Vec<i32> {
    // The VNNI kernel packs a row-major `rhs` with vector loads and a transposed one by
    // vector transposition; any other stride would be packed element by element, which costs
    // more than the kernel gains (docs/PERFORMANCE.md).
    if crate::vnni::packs_fast(rhs, n) && uses_vnni(ring) {
        return crate::vnni::mod_gemm(ring, (m, n, k), lhs, rhs, threads);
    }
    mod_gemm_f64(ring, (m, n, k), lhs, rhs, threads)
}

/// Whether this process computes products modulo `ring` on the VNNI kernel (for right operands
/// that [`crate::vnni::packs_fast`] accepts).
pub fn uses_vnni(ring: Ring) -> bool {
    crate::vnni::kernel() == crate::vnni::Kernel::Vnni && crate::vnni::supports(ring)
}

/// [`mod_gemm`] on the `gemm` crate's f64 kernels, for any CPU: centered residues in chunks
/// whose partial sums stay exact, reduced between chunks.
pub fn mod_gemm_f64(
    ring: Ring,
    (m, n, k): (usize, usize, usize),
    lhs: View<'_, f64>,
    rhs: View<'_, f64>,
    threads: usize,
) -> Vec<i32> {
    let chunk = ring.f64_exact_chunk();
    let mut acc = Scratch::<f64>::take();
    let acc = acc.get(m * n);
    if k == 0 {
        // No product writes the reused accumulator: the empty sum is zero.
        acc.fill(0.0);
    }
    let mut k0 = 0;
    while k0 < k {
        let kc = chunk.min(k - k0);
        if k0 > 0 {
            acc.par_chunks_mut(PAR_CHUNK)
                .for_each(|c| c.iter_mut().for_each(|v| *v = ring.reduce_f64(*v)));
        }
        gemm_into(
            acc,
            (m, n, kc),
            lhs.skip_cols(k0),
            rhs.skip_rows(k0),
            k0 > 0,
            1.0,
            threads,
        );
        k0 += kc;
    }
    // Collected in place: no zero-filled output buffer.
    acc.par_iter()
        .with_min_len(PAR_CHUNK)
        .map(|&a| ring.reduce_exact_f64(a))
        .collect()
}
