//! No silent wraparound: a per-op magnitude bound and a split plan (DESIGN.md section 6).
//!
//! Where it sits: inside E0/E1, between quantization and sharing. Before an op is outsourced,
//! the enclave bounds every output entry of aQ (x) bQ by Cauchy-Schwarz,
//! |c_out| <= sqrt(sum a^2) * sqrt(sum b^2) over the terms of that entry, maximised over
//! entries. If the bound can exceed the ring's headroom, the reduction is split into 2, 4, 8 ...
//! equal slices (input channels for conv forward, output channels for conv input gradients,
//! the batch for weight gradients, the inner dimension for matmuls) until every slice's bound
//! fits. Each slice is then an op of the same kind whose result reconstructs exactly, and the
//! enclave adds the slices in i64. Only the number of slices (a power of two) is visible to hosts.
//!
//! The bound is computed on the quantized integers in u128, so it is itself exact.

use goten_field::{BilinearOp, ShapeError};
use thiserror::Error;

/// Why an op cannot be made exact.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum PlanError {
    /// Shapes do not fit the op.
    #[error(transparent)]
    Shape(#[from] ShapeError),
    /// Even a single term of the reduction can exceed the headroom (ring too small for the
    /// quantization width).
    #[error(
        "even the finest split of this op can exceed the ring's headroom: widen the ring or narrow the quantization"
    )]
    Unsplittable,
    /// The plan needs more parts than op headers can number.
    #[error("exactness would need {0} parts, more than the {max} an op may have", max = MAX_PARTS)]
    TooManyParts(usize),
}

/// Most parts one op may be split into (the part index has 16 bits in PRG stream ids).
pub const MAX_PARTS: usize = 1 << 16;

/// The axes of operand a and b that an op sums over (see [`BilinearOp::reduction_axes`]).
pub fn reduction_axes(op: &BilinearOp) -> (usize, usize) {
    op.reduction_axes()
}

fn sq(v: i32) -> u128 {
    let v = i128::from(v);
    (v * v) as u128
}

/// max over rows of the row's sum of squares, for a `[rows, cols]` matrix.
fn max_row(d: &[i32], cols: usize) -> u128 {
    if cols == 0 {
        return 0;
    }
    d.chunks_exact(cols)
        .map(|r| r.iter().map(|&v| sq(v)).sum())
        .max()
        .unwrap_or(0)
}

/// max over columns of the column's sum of squares, for a `[rows, cols]` matrix.
fn max_col(d: &[i32], cols: usize) -> u128 {
    let mut acc = vec![0u128; cols];
    if cols > 0 {
        for r in d.chunks_exact(cols) {
            acc.iter_mut().zip(r).for_each(|(a, &v)| *a += sq(v));
        }
    }
    acc.into_iter().max().unwrap_or(0)
}

/// max over channels ch of sum of squares over `[outer, ch, inner]` (all outer and inner).
fn max_channel(d: &[i32], ch: usize, inner: usize) -> u128 {
    let mut acc = vec![0u128; ch];
    if ch > 0 && inner > 0 {
        for (i, blk) in d.chunks_exact(inner).enumerate() {
            acc[i % ch] += blk.iter().map(|&v| sq(v)).sum::<u128>();
        }
    }
    acc.into_iter().max().unwrap_or(0)
}

/// Per (image, position) sum of squares over channels of an NCHW tensor: `[n, h*w]`.
fn channel_sums(d: &[i32], n: usize, c: usize, hw: usize) -> Vec<u128> {
    let mut s = vec![0u128; n * hw];
    for i in 0..n {
        for ch in 0..c {
            let plane = &d[(i * c + ch) * hw..][..hw];
            s[i * hw..(i + 1) * hw]
                .iter_mut()
                .zip(plane)
                .for_each(|(a, &v)| *a += sq(v));
        }
    }
    s
}

/// An upper bound on (max |c_out|)^2 for `c = f(a, b)`: the largest product of the two
/// Cauchy-Schwarz factors over output entries (each factor maximised separately).
pub fn bound_sq(
    op: &BilinearOp,
    (sa, a): (&[usize], &[i32]),
    (sb, b): (&[usize], &[i32]),
) -> Result<u128, ShapeError> {
    let (na, nb) = match op {
        BilinearOp::MatmulForward => (max_row(a, sa[1]), max_row(b, sb[1])),
        BilinearOp::MatmulInputGrad => (max_row(a, sa[1]), max_col(b, sb[1])),
        BilinearOp::MatmulWeightGrad => (max_col(a, sa[1]), max_col(b, sb[1])),
        BilinearOp::Conv2dForward(_) => {
            let d = op.conv_dims(sa, sb)?;
            let s = channel_sums(a, d.n, d.c, d.h * d.w);
            let (sh, sw) = d.params.stride;
            let (ph, pw) = d.params.padding;
            let mut na = 0u128;
            for i in 0..d.n {
                for oh in 0..d.ho {
                    for ow in 0..d.wo {
                        let mut t = 0u128;
                        for ki in 0..d.kh {
                            let ih = (oh * sh + ki).wrapping_sub(ph);
                            if ih >= d.h {
                                continue;
                            }
                            for kj in 0..d.kw {
                                let iw = (ow * sw + kj).wrapping_sub(pw);
                                if iw < d.w {
                                    t += s[i * d.h * d.w + ih * d.w + iw];
                                }
                            }
                        }
                        na = na.max(t);
                    }
                }
            }
            (na, max_row(b, d.c * d.kh * d.kw))
        }
        BilinearOp::Conv2dInputGrad { .. } => {
            let d = op.conv_dims(sa, sb)?;
            let s = channel_sums(a, d.n, d.o, d.ho * d.wo);
            let (sh, sw) = d.params.stride;
            let (ph, pw) = d.params.padding;
            let mut t = vec![0u128; d.n * d.h * d.w];
            for i in 0..d.n {
                for oh in 0..d.ho {
                    for ow in 0..d.wo {
                        let v = s[i * d.ho * d.wo + oh * d.wo + ow];
                        for ki in 0..d.kh {
                            let ih = (oh * sh + ki).wrapping_sub(ph);
                            if ih >= d.h {
                                continue;
                            }
                            for kj in 0..d.kw {
                                let iw = (ow * sw + kj).wrapping_sub(pw);
                                if iw < d.w {
                                    t[i * d.h * d.w + ih * d.w + iw] += v;
                                }
                            }
                        }
                    }
                }
            }
            // b = W [o, c, kh, kw]: per input channel c, the sum over o and taps.
            (
                t.into_iter().max().unwrap_or(0),
                max_channel(b, d.c, d.kh * d.kw),
            )
        }
        BilinearOp::Conv2dWeightGrad { .. } => {
            let d = op.conv_dims(sa, sb)?;
            (
                max_channel(a, d.o, d.ho * d.wo),
                max_channel(b, d.c, d.h * d.w),
            )
        }
    };
    Ok(na.saturating_mul(nb))
}

/// Copies `[start, end)` of `axis` out of a row-major tensor.
pub fn slice_axis(
    d: &[i32],
    shape: &[usize],
    axis: usize,
    start: usize,
    end: usize,
) -> (Vec<i32>, Vec<usize>) {
    let outer: usize = shape[..axis].iter().product();
    let inner: usize = shape[axis + 1..].iter().product();
    let len = shape[axis];
    let mut out = Vec::with_capacity(outer * (end - start) * inner);
    for o in 0..outer {
        out.extend_from_slice(&d[(o * len + start) * inner..(o * len + end) * inner]);
    }
    let mut s = shape.to_vec();
    s[axis] = end - start;
    (out, s)
}

/// Rewrites a conv weight gradient over a batch of one-output-row bands: band (image i, row oh)
/// holds dy[i, :, oh, :] and the kh input rows that row reads (zero-padded explicitly, so the new
/// op has padding 0). The result is the same dW, but the batch axis now splits down to single
/// output rows instead of whole images: the finer split exact results may need when one image
/// alone can exceed the headroom.
pub type Operands = (BilinearOp, Vec<usize>, Vec<i32>, Vec<usize>, Vec<i32>);

/// See [`Operands`]; other ops are returned unchanged.
pub fn conv_dw_bands(
    op: &BilinearOp,
    (sa, a): (&[usize], &[i32]),
    (sb, b): (&[usize], &[i32]),
) -> Result<Operands, ShapeError> {
    let BilinearOp::Conv2dWeightGrad { params, kernel_hw } = *op else {
        return Ok((*op, sa.to_vec(), a.to_vec(), sb.to_vec(), b.to_vec()));
    };
    let d = op.conv_dims(sa, sb)?;
    let (sh, _) = params.stride;
    let (ph, pw) = params.padding;
    let wp = d.w + 2 * pw;
    let bands = d.n * d.ho;
    let mut dy = vec![0i32; bands * d.o * d.wo];
    let mut x = vec![0i32; bands * d.c * d.kh * wp];
    for i in 0..d.n {
        for oh in 0..d.ho {
            let band = i * d.ho + oh;
            for o in 0..d.o {
                dy[(band * d.o + o) * d.wo..][..d.wo]
                    .copy_from_slice(&a[((i * d.o + o) * d.ho + oh) * d.wo..][..d.wo]);
            }
            for ch in 0..d.c {
                for ki in 0..d.kh {
                    let ih = (oh * sh + ki).wrapping_sub(ph);
                    if ih < d.h {
                        let dst = &mut x[((band * d.c + ch) * d.kh + ki) * wp + pw..][..d.w];
                        dst.copy_from_slice(&b[((i * d.c + ch) * d.h + ih) * d.w..][..d.w]);
                    }
                }
            }
        }
    }
    let params = goten_field::Conv2dParams {
        stride: params.stride,
        padding: (0, 0),
    };
    let op = BilinearOp::Conv2dWeightGrad { params, kernel_hw };
    let (sa, sb) = (vec![bands, d.o, 1, d.wo], vec![bands, d.c, d.kh, wp]);
    op.output_shape(&sa, &sb)?;
    Ok((op, sa, dy, sb, x))
}

/// Splits `0..len` into `parts` near-equal ranges.
fn ranges(len: usize, parts: usize) -> Vec<(usize, usize)> {
    (0..parts)
        .map(|p| (p * len / parts, (p + 1) * len / parts))
        .collect()
}

/// The slices of the reduction axis such that each slice's result fits `headroom`.
pub fn plan(
    op: &BilinearOp,
    (sa, a): (&[usize], &[i32]),
    (sb, b): (&[usize], &[i32]),
    headroom: u64,
) -> Result<Vec<(usize, usize)>, PlanError> {
    op.output_shape(sa, sb)?;
    let limit = u128::from(headroom) * u128::from(headroom);
    let (ax_a, ax_b) = reduction_axes(op);
    let len = sa[ax_a];
    let mut parts = 1usize;
    loop {
        let rs = ranges(len, parts);
        let fits = |&(s, e): &(usize, usize)| -> Result<bool, ShapeError> {
            if parts == 1 {
                return Ok(bound_sq(op, (sa, a), (sb, b))? <= limit);
            }
            let (pa, psa) = slice_axis(a, sa, ax_a, s, e);
            let (pb, psb) = slice_axis(b, sb, ax_b, s, e);
            Ok(bound_sq(op, (&psa, &pa), (&psb, &pb))? <= limit)
        };
        let mut all = true;
        for r in &rs {
            if !fits(r)? {
                all = false;
                break;
            }
        }
        if all {
            return if rs.len() > MAX_PARTS {
                Err(PlanError::TooManyParts(rs.len()))
            } else {
                Ok(rs)
            };
        }
        if parts >= len {
            return Err(PlanError::Unsplittable);
        }
        parts = (parts * 2).min(len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use goten_field::Conv2dParams;

    /// Brute force: the exact maximum |c| must never exceed sqrt(bound_sq).
    #[test]
    fn bound_dominates_the_true_maximum() {
        let p = Conv2dParams::new(2, 1);
        let ops = [
            (BilinearOp::MatmulForward, vec![3, 5], vec![4, 5]),
            (BilinearOp::MatmulInputGrad, vec![3, 4], vec![4, 5]),
            (BilinearOp::MatmulWeightGrad, vec![3, 4], vec![3, 5]),
            (
                BilinearOp::Conv2dForward(p),
                vec![2, 3, 5, 5],
                vec![4, 3, 3, 3],
            ),
            (
                BilinearOp::Conv2dInputGrad {
                    params: p,
                    input_hw: (5, 5),
                },
                vec![2, 4, 3, 3],
                vec![4, 3, 3, 3],
            ),
            (
                BilinearOp::Conv2dWeightGrad {
                    params: p,
                    kernel_hw: (3, 3),
                },
                vec![2, 4, 3, 3],
                vec![2, 3, 5, 5],
            ),
        ];
        let mut seed = 1u64;
        let mut next = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((seed >> 33) % 255) as i32 - 127
        };
        for (op, sa, sb) in ops {
            for _ in 0..20 {
                let a: Vec<i32> = (0..sa.iter().product::<usize>()).map(|_| next()).collect();
                let b: Vec<i32> = (0..sb.iter().product::<usize>()).map(|_| next()).collect();
                let bound = bound_sq(&op, (&sa, &a), (&sb, &b)).unwrap();
                let c = direct(&op, &sa, &a, &sb, &b);
                let max = c.iter().map(|v| v.unsigned_abs()).max().unwrap() as u128;
                assert!(max * max <= bound, "{op:?}: max {max} bound^2 {bound}");
            }
        }
    }

    /// Direct definition of each op (test only; tiny shapes, no overflow in i32).
    fn direct(op: &BilinearOp, sa: &[usize], a: &[i32], sb: &[usize], b: &[i32]) -> Vec<i32> {
        let out: usize = op.output_shape(sa, sb).unwrap().iter().product();
        let mut c = vec![0i32; out];
        match op {
            BilinearOp::MatmulForward => {
                let (m, n, k) = op.matmul_dims(sa, sb).unwrap();
                for i in 0..m {
                    for j in 0..n {
                        for t in 0..k {
                            c[i * n + j] += a[i * k + t] * b[j * k + t];
                        }
                    }
                }
            }
            BilinearOp::MatmulInputGrad => {
                let (m, n, k) = op.matmul_dims(sa, sb).unwrap();
                for i in 0..m {
                    for j in 0..k {
                        for t in 0..n {
                            c[i * k + j] += a[i * n + t] * b[t * k + j];
                        }
                    }
                }
            }
            BilinearOp::MatmulWeightGrad => {
                let (m, n, k) = op.matmul_dims(sa, sb).unwrap();
                for i in 0..n {
                    for j in 0..k {
                        for t in 0..m {
                            c[i * k + j] += a[t * n + i] * b[t * k + j];
                        }
                    }
                }
            }
            _ => {
                let d = op.conv_dims(sa, sb).unwrap();
                let (sh, sw) = d.params.stride;
                let (ph, pw) = d.params.padding;
                for n in 0..d.n {
                    for o in 0..d.o {
                        for oh in 0..d.ho {
                            for ow in 0..d.wo {
                                for ch in 0..d.c {
                                    for ki in 0..d.kh {
                                        for kj in 0..d.kw {
                                            let ih = (oh * sh + ki).wrapping_sub(ph);
                                            let iw = (ow * sw + kj).wrapping_sub(pw);
                                            if ih >= d.h || iw >= d.w {
                                                continue;
                                            }
                                            let xi = ((n * d.c + ch) * d.h + ih) * d.w + iw;
                                            let yi = ((n * d.o + o) * d.ho + oh) * d.wo + ow;
                                            let wi = ((o * d.c + ch) * d.kh + ki) * d.kw + kj;
                                            match op {
                                                BilinearOp::Conv2dForward(_) => {
                                                    c[yi] += a[xi] * b[wi]
                                                }
                                                BilinearOp::Conv2dInputGrad { .. } => {
                                                    c[xi] += a[yi] * b[wi]
                                                }
                                                _ => c[wi] += a[yi] * b[xi],
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        c
    }

    #[test]
    fn bands_compute_the_same_weight_gradient() {
        for p in [
            goten_field::Conv2dParams::new(1, 1),
            goten_field::Conv2dParams::new(2, 0),
            goten_field::Conv2dParams {
                stride: (2, 1),
                padding: (2, 1),
            },
        ] {
            let op = BilinearOp::Conv2dWeightGrad {
                params: p,
                kernel_hw: (3, 3),
            };
            let sb = vec![2, 3, 7, 6];
            let (ho, wo) = p.output_hw((7, 6), (3, 3)).unwrap();
            let sa = vec![2, 4, ho, wo];
            let a: Vec<i32> = (0..sa.iter().product::<usize>())
                .map(|i| (i as i32 * 7) % 11 - 5)
                .collect();
            let b: Vec<i32> = (0..sb.iter().product::<usize>())
                .map(|i| (i as i32 * 5) % 13 - 6)
                .collect();
            let (op2, sa2, a2, sb2, b2) = conv_dw_bands(&op, (&sa, &a), (&sb, &b)).unwrap();
            assert_eq!(
                direct(&op, &sa, &a, &sb, &b),
                direct(&op2, &sa2, &a2, &sb2, &b2),
                "{p:?}"
            );
        }
    }

    #[test]
    fn plan_splits_until_it_fits() {
        let op = BilinearOp::MatmulForward;
        let (sa, sb) = (vec![2, 1000], vec![3, 1000]);
        let a = vec![-128i32; 2000];
        let b = vec![-128i32; 3000];
        // Each part of L terms at the limit has bound L * 2^14: headroom 2^20 - 1 needs L <= 63.
        let r = plan(&op, (&sa, &a), (&sb, &b), (1 << 20) - 1).unwrap();
        assert_eq!(r.len(), 16);
        assert!(r.iter().all(|(s, e)| (e - s) * (1 << 14) < 1 << 20));
        assert_eq!(
            plan(&op, (&sa, &a), (&sb, &b), 1 << 40).unwrap(),
            vec![(0, 1000)]
        );
        assert_eq!(
            plan(&op, (&sa, &a), (&sb, &b), 1000),
            Err(PlanError::Unsplittable)
        );
    }
}
