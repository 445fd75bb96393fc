//! The integrity check for convolutions: a two-sided Freivalds contraction over the prime field
//! F_p, p = 2^61 - 1.
//!
//! Where it sits: called by [`crate::check`] for the three conv ops ([`rhs`] from the operands
//! while the devices compute, [`lhs`] from the reconstructed result). Contracting only one
//! channel axis (as the matmul check does) still costs 1/channels of the op; contracting the batch
//! (or a second channel axis) as well, with a second secret vector, removes the batch factor, so
//! the check costs about one pass over the operands and the result:
//!
//! | op | lhs (per position) | rhs |
//! | --- | --- | --- |
//! | forward `y[n,o,p]` | `sum_n s_n sum_o r_o y` | `conv(sum_n s_n x[n], sum_o r_o W[o])` |
//! | input grad `dx[n,c,i]` | `sum_n s_n sum_c r_c dx` | `conv_T(sum_n s_n dy[n], sum_c r_c W[:,c])` |
//! | weight grad `dW[o,c,t]` | `sum_o r_o sum_c s_c dW` | `corr(sum_o r_o dy[:,o], sum_c s_c x[:,c])` |
//!
//! Soundness: if some entry of the reconstructed result differs from the true product by e != 0
//! (|e| < 2^62, so e is nonzero mod p), lhs - rhs at that position is a nonzero polynomial of
//! degree 2 in the challenges, which are uniform in F_p (two PRG words each); by Schwartz-Zippel
//! it vanishes with probability at most 2/p < 2^-59.

use goten_field::BilinearOp;
use goten_field::ops::ConvDims;
use rayon::prelude::*;

/// The Mersenne prime 2^61 - 1.
const P: u64 = (1 << 61) - 1;

#[inline(always)]
fn reduce(x: u128) -> u64 {
    // x < 2^126: fold twice (below 2^61 + 2^65, then below 2^61 + 2^4), then one
    // conditional subtraction.
    let y = (x & P as u128) + (x >> 61);
    let y = (y & P as u128) + (y >> 61);
    let y = y as u64;
    if y >= P { y - P } else { y }
}

#[inline(always)]
fn mul(a: u64, b: u64) -> u64 {
    reduce(u128::from(a) * u128::from(b))
}

#[inline(always)]
fn add(a: u64, b: u64) -> u64 {
    let s = a + b;
    if s >= P { s - P } else { s }
}

/// `v mod p` by folding (no division: this runs on every entry of every checked result).
#[inline(always)]
fn field(v: i64) -> u64 {
    let m = v.unsigned_abs();
    let y = (m & P) + (m >> 61);
    let y = if y >= P { y - P } else { y };
    if v >= 0 || y == 0 { y } else { P - y }
}

/// Challenge lengths (r, s) in field elements.
pub(crate) fn lens(op: &BilinearOp, d: &ConvDims) -> (usize, usize) {
    match op {
        BilinearOp::Conv2dForward(_) => (d.o, d.n),
        BilinearOp::Conv2dInputGrad { .. } => (d.c, d.n),
        _ => (d.o, d.c),
    }
}

/// Field elements from pairs of PRG words.
pub(crate) fn elements(words: &[u32]) -> Vec<u64> {
    words
        .chunks_exact(2)
        .map(|w| ((u64::from(w[0]) << 32) | u64::from(w[1])) % P)
        .collect()
}

/// A representative of `v mod p` below 2^61 in magnitude: `v` itself unless it is huge (never for
/// honest results, whose entries stay far below 2^61; a hostile host can send anything).
#[inline(always)]
fn small(v: i64) -> i64 {
    if v.unsigned_abs() < P {
        v
    } else {
        field(v) as i64
    }
}

/// `v mod p` for |v| < 2^127.
#[inline(always)]
fn reduce_signed(v: i128) -> u64 {
    let m = reduce(v.unsigned_abs());
    if v >= 0 || m == 0 { m } else { P - m }
}

/// Blocks accumulated in i128 before a reduction: each product is below 2^61 * 2^61 = 2^122
/// in magnitude, so 15 of them and a reduced carry stay below 2^126 ([`reduce`]'s two folds
/// cover that).
const FLUSH: usize = 15;

/// Sum over `outer` blocks of `k[block] * block` for a `[outer, inner]` array, on all cores:
/// groups of blocks are summed apart and the partial sums added, which is exact in any order
/// (field arithmetic), so the result does not depend on the thread count. The products are
/// summed in i128 and reduced once per [`FLUSH`] blocks, not once per entry: one 64-bit
/// multiply and a 128-bit add per entry.
fn contract<T: Copy + Into<i64> + Sync>(
    data: &[T],
    outer: usize,
    inner: usize,
    k: &[u64],
    pick: impl Fn(usize) -> usize + Sync,
) -> Vec<u64> {
    if inner == 0 || outer == 0 {
        return vec![0u64; inner];
    }
    // About 16 Ki entries per task; one task runs on the calling thread (see crate::par).
    let per_task = ((1 << 14) / inner).max(1);
    let task = |g: usize, blocks: &[T]| {
        let mut acc = vec![0i128; inner];
        for (j, blk) in blocks.chunks_exact(inner).enumerate() {
            // k < p < 2^61 fits i64.
            let kk = k[pick(g * per_task + j)] as i64;
            for (a, &v) in acc.iter_mut().zip(blk) {
                *a += i128::from(kk) * i128::from(small(v.into()));
            }
            if (j + 1) % FLUSH == 0 {
                acc.iter_mut()
                    .for_each(|a| *a = i128::from(reduce_signed(*a)));
            }
        }
        acc.into_iter().map(reduce_signed).collect::<Vec<u64>>()
    };
    let data = &data[..outer * inner];
    if outer <= per_task {
        return task(0, data);
    }
    data.par_chunks(per_task * inner)
        .enumerate()
        .map(|(g, blocks)| task(g, blocks))
        .reduce(
            || vec![0u64; inner],
            |mut a, b| {
                a.iter_mut().zip(b).for_each(|(x, y)| *x = add(*x, y));
                a
            },
        )
}

fn taps(d: &ConvDims, mut f: impl FnMut(usize, usize, usize)) {
    let (sh, sw) = d.params.stride;
    let (ph, pw) = d.params.padding;
    for oh in 0..d.ho {
        for ki in 0..d.kh {
            let ih = (oh * sh + ki).wrapping_sub(ph);
            if ih >= d.h {
                continue;
            }
            for ow in 0..d.wo {
                for kj in 0..d.kw {
                    let iw = (ow * sw + kj).wrapping_sub(pw);
                    if iw < d.w {
                        f(oh * d.wo + ow, ki * d.kw + kj, ih * d.w + iw);
                    }
                }
            }
        }
    }
}

/// The result side of the check: `c` contracted under challenges `r`, `s` (field elements);
/// equal to [`rhs`] exactly when the check passes.
pub(crate) fn lhs<T: Copy + Into<i64> + Sync>(
    op: &BilinearOp,
    d: &ConvDims,
    c: &[T],
    r: &[u64],
    s: &[u64],
) -> Vec<u64> {
    let (hw, howo, taps_n) = (d.h * d.w, d.ho * d.wo, d.kh * d.kw);
    match op {
        // lhs[p] = sum_{n,o} s_n r_o y[n,o,p]; blocks of y are (n, o) planes.
        BilinearOp::Conv2dForward(_) => contract(c, d.n * d.o, howo, &mix(s, r, d.o), |blk| blk),
        // lhs[i] = sum_{n,c} s_n r_c dx[n,c,i].
        BilinearOp::Conv2dInputGrad { .. } => {
            contract(c, d.n * d.c, hw, &mix(s, r, d.c), |blk| blk)
        }
        // lhs[t] = sum_{o,c} r_o s_c dW[o,c,t].
        _ => contract(c, d.o * d.c, taps_n, &mix(r, s, d.c), |blk| blk),
    }
}

/// The operand side of the check: the conv op on `(a, b)` contracted under `r`, `s` (it
/// needs no result, so it runs while the devices compute).
pub(crate) fn rhs(
    op: &BilinearOp,
    d: &ConvDims,
    a: &[i32],
    b: &[i32],
    r: &[u64],
    s: &[u64],
) -> Vec<u64> {
    let (hw, howo, taps_n) = (d.h * d.w, d.ho * d.wo, d.kh * d.kw);
    match op {
        BilinearOp::Conv2dForward(_) => {
            let xs = contract(a, d.n, d.c * hw, s, |n| n); // [c, hw]
            let wr = contract(b, d.o, d.c * taps_n, r, |o| o); // [c, taps]
            let mut rhs = vec![0u64; howo];
            for ch in 0..d.c {
                let (x, w) = (
                    &xs[ch * hw..(ch + 1) * hw],
                    &wr[ch * taps_n..(ch + 1) * taps_n],
                );
                taps(d, |p, t, i| rhs[p] = add(rhs[p], mul(w[t], x[i])));
            }
            rhs
        }
        BilinearOp::Conv2dInputGrad { .. } => {
            let dys = contract(a, d.n, d.o * howo, s, |n| n); // [o, howo]
            // wr[o, t] = sum_c r_c W[o, c, t]: blocks of W are (o, c) kernels.
            let mut wr = vec![0u64; d.o * taps_n];
            for o in 0..d.o {
                let ker = contract(
                    &b[o * d.c * taps_n..(o + 1) * d.c * taps_n],
                    d.c,
                    taps_n,
                    r,
                    |ch| ch,
                );
                wr[o * taps_n..(o + 1) * taps_n].copy_from_slice(&ker);
            }
            let mut rhs = vec![0u64; hw];
            for o in 0..d.o {
                let (g, w) = (
                    &dys[o * howo..(o + 1) * howo],
                    &wr[o * taps_n..(o + 1) * taps_n],
                );
                taps(d, |p, t, i| rhs[i] = add(rhs[i], mul(w[t], g[p])));
            }
            rhs
        }
        _ => {
            let mut rhs = vec![0u64; taps_n];
            for n in 0..d.n {
                let dyr = contract(
                    &a[n * d.o * howo..(n + 1) * d.o * howo],
                    d.o,
                    howo,
                    r,
                    |o| o,
                );
                let xs = contract(&b[n * d.c * hw..(n + 1) * d.c * hw], d.c, hw, s, |ch| ch);
                taps(d, |p, t, i| rhs[t] = add(rhs[t], mul(dyr[p], xs[i])));
            }
            rhs
        }
    }
}

/// Coefficients of the blocks of an `[outer, inner_count, ...]` array: `u[blk / inner_count] *
/// v[blk % inner_count]`.
fn mix(u: &[u64], v: &[u64], inner_count: usize) -> Vec<u64> {
    (0..u.len() * inner_count)
        .map(|blk| mul(u[blk / inner_count], v[blk % inner_count]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lazily reduced contraction equals entry-by-entry field arithmetic, on extreme
    /// entries (a hostile host's i64::MIN / MAX, +-p), on block counts around the flush, and
    /// with several tasks whose partial sums are merged (over 5,461 blocks of 3 entries).
    #[test]
    fn contraction_equals_the_entrywise_reference() {
        let inner = 3;
        let per_task = (1 << 14) / inner;
        for outer in [
            1,
            FLUSH - 1,
            FLUSH,
            FLUSH + 1,
            3 * FLUSH + 2,
            3 * per_task + 7,
        ] {
            let data: Vec<i64> = (0..outer * inner)
                .map(|i| match i % 7 {
                    0 => i64::MAX,
                    1 => i64::MIN,
                    2 => P as i64,
                    3 => -(P as i64) - 1,
                    4 => -1,
                    5 => (i as i64).wrapping_mul(0x9E37_79B9_7F4A_7C15u64 as i64),
                    _ => 0,
                })
                .collect();
            let k: Vec<u64> = (0..outer as u64)
                .map(|i| {
                    if i % 2 == 0 {
                        P - 1
                    } else {
                        (i * 0x1234_5678_9ABC) % P
                    }
                })
                .collect();
            let mut want = vec![0u64; inner];
            for (b, blk) in data.chunks_exact(inner).enumerate() {
                for (w, &v) in want.iter_mut().zip(blk) {
                    *w = add(*w, mul(k[b], field(v)));
                }
            }
            assert_eq!(contract(&data, outer, inner, &k, |b| b), want, "{outer}");
        }
    }

    #[test]
    fn field_arithmetic() {
        assert_eq!(field(-1), P - 1);
        assert_eq!(add(P - 1, 1), 0);
        assert_eq!(mul(P - 1, P - 1), 1);
        assert_eq!(mul(1 << 40, 1 << 40), field(1 << 19));
        assert_eq!(reduce(u128::from(P) * 3), 0);
        // Folding equals the remainder on the edges of the range.
        for v in [
            0i64,
            1,
            -1,
            P as i64,
            -(P as i64),
            P as i64 + 5,
            -(P as i64) - 5,
            i64::MAX,
            i64::MIN,
            i64::MIN + 1,
            1 << 62,
            -(1 << 62),
        ] {
            let want = (i128::from(v)).rem_euclid(i128::from(P)) as u64;
            assert_eq!(field(v), want, "{v}");
        }
    }
}
