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

/// Calls `f(p, i)` for every output position `p` that tap `t = (ki, kj)` connects to an input
/// position `i` inside the plane (padding contributes nothing). Each `p` and each `i` appears at
/// most once per tap, which is what bounds the lazy accumulations below.
fn for_tap(d: &ConvDims, t: usize, mut f: impl FnMut(usize, usize)) {
    let (sh, sw) = d.params.stride;
    let (ph, pw) = d.params.padding;
    let (ki, kj) = (t / d.kw, t % d.kw);
    for oh in 0..d.ho {
        let ih = (oh * sh + ki).wrapping_sub(ph);
        if ih >= d.h {
            continue;
        }
        for ow in 0..d.wo {
            let iw = (ow * sw + kj).wrapping_sub(pw);
            if iw < d.w {
                f(oh * d.wo + ow, ih * d.w + iw);
            }
        }
    }
}

/// Field products summed in u128 and reduced lazily: every accumulator receives at most one
/// product (< 2^122) per [`Lazy::tap`], and is folded back below 2^61 every [`FLUSH`] taps, so
/// it stays below 2^126 ([`reduce`]'s range). One multiply and a 128-bit add per product
/// instead of a reduction per product: this side of the check runs once per op whatever the
/// batch, which on private prediction's one-image batches is most of its cost.
struct Lazy {
    acc: Vec<u128>,
    taps: usize,
}

impl Lazy {
    fn new(len: usize) -> Self {
        Lazy {
            acc: vec![0; len],
            taps: 0,
        }
    }

    /// One tap's products: `f` adds at most one product to each accumulator.
    fn tap(&mut self, f: impl FnOnce(&mut [u128])) {
        f(&mut self.acc);
        self.taps += 1;
        if self.taps == FLUSH {
            self.acc
                .iter_mut()
                .for_each(|a| *a = u128::from(reduce(*a)));
            self.taps = 0;
        }
    }

    fn finish(self) -> Vec<u64> {
        self.acc.into_iter().map(reduce).collect()
    }
}

#[inline(always)]
fn prod(a: u64, b: u64) -> u128 {
    u128::from(a) * u128::from(b)
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
            let mut rhs = Lazy::new(howo);
            for ch in 0..d.c {
                let (x, w) = (
                    &xs[ch * hw..(ch + 1) * hw],
                    &wr[ch * taps_n..(ch + 1) * taps_n],
                );
                for (t, &wt) in w.iter().enumerate() {
                    rhs.tap(|acc| for_tap(d, t, |p, i| acc[p] += prod(wt, x[i])));
                }
            }
            rhs.finish()
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
            let mut rhs = Lazy::new(hw);
            for o in 0..d.o {
                let (g, w) = (
                    &dys[o * howo..(o + 1) * howo],
                    &wr[o * taps_n..(o + 1) * taps_n],
                );
                for (t, &wt) in w.iter().enumerate() {
                    rhs.tap(|acc| for_tap(d, t, |p, i| acc[i] += prod(wt, g[p])));
                }
            }
            rhs.finish()
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
                // One dot product per tap over the output positions, reduced every FLUSH
                // products.
                for (t, r) in rhs.iter_mut().enumerate() {
                    let (mut sum, mut terms) = (0u128, 0);
                    for_tap(d, t, |p, i| {
                        sum += prod(dyr[p], xs[i]);
                        terms += 1;
                        if terms == FLUSH {
                            (sum, terms) = (u128::from(reduce(sum)), 0);
                        }
                    });
                    *r = add(*r, reduce(sum));
                }
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

    /// The exact result of a conv op in i64 (operands small enough not to overflow), by the
    /// definition: every (n, o, c, tap, output position) term, scattered to its result entry.
    fn naive(op: &BilinearOp, d: &ConvDims, a: &[i32], b: &[i32]) -> Vec<i64> {
        let (sh, sw) = d.params.stride;
        let (ph, pw) = d.params.padding;
        let len = match op {
            BilinearOp::Conv2dForward(_) => d.n * d.o * d.ho * d.wo,
            BilinearOp::Conv2dInputGrad { .. } => d.n * d.c * d.h * d.w,
            _ => d.o * d.c * d.kh * d.kw,
        };
        let mut out = vec![0i64; len];
        for n in 0..d.n {
            for o in 0..d.o {
                for c in 0..d.c {
                    for (oh, ow, ki, kj) in positions_and_taps(d) {
                        let (ih, iw) = (
                            (oh * sh + ki).wrapping_sub(ph),
                            (ow * sw + kj).wrapping_sub(pw),
                        );
                        if ih >= d.h || iw >= d.w {
                            continue;
                        }
                        let x = ((n * d.c + c) * d.h + ih) * d.w + iw;
                        let y = ((n * d.o + o) * d.ho + oh) * d.wo + ow;
                        let w = ((o * d.c + c) * d.kh + ki) * d.kw + kj;
                        let (at, u, v) = match op {
                            BilinearOp::Conv2dForward(_) => (y, a[x], b[w]),
                            BilinearOp::Conv2dInputGrad { .. } => (x, a[y], b[w]),
                            _ => (w, a[y], b[x]),
                        };
                        out[at] += i64::from(u) * i64::from(v);
                    }
                }
            }
        }
        out
    }

    fn positions_and_taps(d: &ConvDims) -> Vec<(usize, usize, usize, usize)> {
        let mut v = Vec::new();
        for oh in 0..d.ho {
            for ow in 0..d.wo {
                for ki in 0..d.kh {
                    for kj in 0..d.kw {
                        v.push((oh, ow, ki, kj));
                    }
                }
            }
        }
        v
    }

    /// The operand side (lazily reduced) equals the result side of the exact product, for all
    /// three ops, kernels of more taps than a flush (5x5, 7x7), strides and padding, and
    /// challenges at the top of the field (the accumulators' worst case).
    #[test]
    fn operand_side_equals_the_result_side_of_the_exact_product() {
        use goten_field::Conv2dParams;
        let mut seed = 1u64;
        let mut next = |lo: i64, hi: i64| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (lo + ((seed >> 33) as i64).rem_euclid(hi - lo + 1)) as i32
        };
        for (k, stride, pad, hw, worst) in [
            (3, 1, 1, (6, 5), false),
            // 360 output positions: a weight-gradient tap sums past 2^128 unflushed.
            (5, 1, 2, (20, 18), true),
            (7, 2, 3, (9, 8), true),
            (3, 2, 0, (7, 7), false),
        ] {
            let params = Conv2dParams::new(stride, pad);
            // Eight channels of 7x7 taps: 392 products per accumulator, past 2^128 unflushed.
            let (n, c, o) = (2, 8, 4);
            let fwd = BilinearOp::Conv2dForward(params);
            let x_shape = [n, c, hw.0, hw.1];
            let w_shape = [o, c, k, k];
            let y_shape = fwd.output_shape(&x_shape, &w_shape).unwrap();
            let ops = [
                (fwd, x_shape.to_vec(), w_shape.to_vec()),
                (
                    BilinearOp::Conv2dInputGrad {
                        params,
                        input_hw: hw,
                    },
                    y_shape.clone(),
                    w_shape.to_vec(),
                ),
                (
                    BilinearOp::Conv2dWeightGrad {
                        params,
                        kernel_hw: (k, k),
                    },
                    y_shape.clone(),
                    x_shape.to_vec(),
                ),
            ];
            for (op, sa, sb) in ops {
                let d = op.conv_dims(&sa, &sb).unwrap();
                let a: Vec<i32> = (0..sa.iter().product::<usize>())
                    .map(|_| next(-(1 << 20), 1 << 20))
                    .collect();
                let b: Vec<i32> = (0..sb.iter().product::<usize>())
                    .map(|_| next(-(1 << 20), 1 << 20))
                    .collect();
                let (rl, sl) = lens(&op, &d);
                let ch = |len: usize, next: &mut dyn FnMut() -> u64| -> Vec<u64> {
                    (0..len).map(|_| next()).collect()
                };
                let mut draw = || {
                    if worst {
                        P - 1 - (next(0, 3) as u64)
                    } else {
                        (next(0, i32::MAX as i64) as u64 * 0x9E37_79B9) % P
                    }
                };
                let (r, s) = (ch(rl, &mut draw), ch(sl, &mut draw));
                let c = naive(&op, &d, &a, &b);
                assert_eq!(
                    rhs(&op, &d, &a, &b, &r, &s),
                    lhs(&op, &d, &c, &r, &s),
                    "{op:?} k {k} stride {stride} pad {pad}"
                );
                // An error of one in the result is seen.
                let mut bad = c.clone();
                bad[c.len() / 2] += 1;
                assert_ne!(rhs(&op, &d, &a, &b, &r, &s), lhs(&op, &d, &bad, &r, &s));
            }
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
