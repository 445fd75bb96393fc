//! Freivalds-style integrity check of a reconstructed result, inside the enclave.
//!
//! Where it sits: after reconstruction in [`crate::linear`]. The enclave holds the quantized
//! operands aQ, bQ and the reconstructed integer result c. It contracts one output axis of c with
//! a secret random vector r (from the pair key, unknown to every host) and compares with the same
//! contraction computed directly from the operands, which costs about 1/(axis length) of the op:
//!
//! | op | contracted axis | right-hand side |
//! | --- | --- | --- |
//! | matmul `y = x W^T` | columns of y | `x (W^T r)` |
//! | matmul `dx = dy W` | columns of dx | `dy (W r)` |
//! | matmul `dW = dy^T x` | columns of dW | `dy^T (x r)` |
//! | conv forward | output channels | `conv(x, sum_o r_o W[o])` |
//! | conv input gradient | input channels | `conv_transpose(dy, sum_c r_c W[:, c])` |
//! | conv weight gradient | output channels | `corr(sum_o r_o dy[:, o], x)` |
//!
//! Everything is computed in i128 with r in [0, 2^32), so both sides are exact. If c differs
//! from aQ (x) bQ anywhere (a wrapped reduction, a device or peer that returned a wrong share),
//! the two sides differ except with probability at most 2^-32 over r.

use goten_field::{BilinearOp, ShapeError};

/// Length of the challenge vector `op` needs.
pub fn challenge_len(op: &BilinearOp, sa: &[usize], sb: &[usize]) -> Result<usize, ShapeError> {
    Ok(match op {
        BilinearOp::MatmulForward | BilinearOp::MatmulInputGrad | BilinearOp::MatmulWeightGrad => {
            *op.output_shape(sa, sb)?.last().expect("rank 2")
        }
        BilinearOp::Conv2dForward(_) | BilinearOp::Conv2dWeightGrad { .. } => {
            op.conv_dims(sa, sb)?.o
        }
        BilinearOp::Conv2dInputGrad { .. } => op.conv_dims(sa, sb)?.c,
    })
}

/// Whether `c` equals `f(a, b)` on the contraction with `r` (see the module docs).
pub fn verify(
    op: &BilinearOp,
    (sa, a): (&[usize], &[i32]),
    (sb, b): (&[usize], &[i32]),
    c: &[i64],
    r: &[u32],
) -> Result<bool, ShapeError> {
    let want_len = challenge_len(op, sa, sb)?;
    if r.len() != want_len || c.len() != op.output_shape(sa, sb)?.iter().product::<usize>() {
        return Err(ShapeError::new(
            "integrity check: challenge or result has the wrong length",
        ));
    }
    let r: Vec<i128> = r.iter().map(|&v| i128::from(v)).collect();
    let w = |v: i32| i128::from(v);
    // lhs: the result contracted along its challenge axis; rhs: the same from the operands.
    let (lhs, rhs): (Vec<i128>, Vec<i128>) = match op {
        BilinearOp::MatmulForward | BilinearOp::MatmulInputGrad | BilinearOp::MatmulWeightGrad => {
            let (m, n, k) = op.matmul_dims(sa, sb)?;
            let cols = r.len();
            let lhs: Vec<i128> = c
                .chunks_exact(cols.max(1))
                .map(|row| row.iter().zip(&r).map(|(&x, &y)| i128::from(x) * y).sum())
                .collect();
            let rhs = match op {
                BilinearOp::MatmulForward => {
                    // v = W^T r (length k), then x v.
                    let mut v = vec![0i128; k];
                    for j in 0..n {
                        b[j * k..(j + 1) * k]
                            .iter()
                            .zip(v.iter_mut())
                            .for_each(|(&x, t)| *t += w(x) * r[j]);
                    }
                    (0..m)
                        .map(|i| {
                            a[i * k..(i + 1) * k]
                                .iter()
                                .zip(&v)
                                .map(|(&x, &y)| w(x) * y)
                                .sum()
                        })
                        .collect()
                }
                BilinearOp::MatmulInputGrad => {
                    // v = W r (length n), then dy v.
                    let v: Vec<i128> = (0..n)
                        .map(|t| {
                            b[t * k..(t + 1) * k]
                                .iter()
                                .zip(&r)
                                .map(|(&x, &y)| w(x) * y)
                                .sum()
                        })
                        .collect();
                    (0..m)
                        .map(|i| {
                            a[i * n..(i + 1) * n]
                                .iter()
                                .zip(&v)
                                .map(|(&x, &y)| w(x) * y)
                                .sum()
                        })
                        .collect()
                }
                _ => {
                    // v = x r (length m), then dy^T v.
                    let v: Vec<i128> = (0..m)
                        .map(|t| {
                            b[t * k..(t + 1) * k]
                                .iter()
                                .zip(&r)
                                .map(|(&x, &y)| w(x) * y)
                                .sum()
                        })
                        .collect();
                    let mut out = vec![0i128; n];
                    for t in 0..m {
                        a[t * n..(t + 1) * n]
                            .iter()
                            .zip(out.iter_mut())
                            .for_each(|(&x, o)| *o += w(x) * v[t]);
                    }
                    out
                }
            };
            (lhs, rhs)
        }
        _ => conv_sides(op, (sa, a), (sb, b), c, &r)?,
    };
    Ok(lhs == rhs)
}

/// Visits every (output position, tap, input position) triple of a convolution, rows outermost.
#[inline]
fn taps_of(d: &goten_field::ops::ConvDims, mut f: impl FnMut(usize, usize, usize)) {
    let (sh, sw) = d.params.stride;
    let (ph, pw) = d.params.padding;
    for oh in 0..d.ho {
        for ki in 0..d.kh {
            let ih = (oh * sh + ki).wrapping_sub(ph);
            if ih >= d.h {
                continue;
            }
            for ow in 0..d.wo {
                let p = oh * d.wo + ow;
                for kj in 0..d.kw {
                    let iw = (ow * sw + kj).wrapping_sub(pw);
                    if iw < d.w {
                        f(p, ki * d.kw + kj, ih * d.w + iw);
                    }
                }
            }
        }
    }
}

fn conv_sides(
    op: &BilinearOp,
    (sa, a): (&[usize], &[i32]),
    (sb, b): (&[usize], &[i32]),
    c: &[i64],
    r: &[i128],
) -> Result<(Vec<i128>, Vec<i128>), ShapeError> {
    let d = op.conv_dims(sa, sb)?;
    let (hw, howo, taps) = (d.h * d.w, d.ho * d.wo, d.kh * d.kw);
    let w = |v: i32| i128::from(v);
    Ok(match op {
        BilinearOp::Conv2dForward(_) => {
            // lhs[n, p] = sum_o r_o y[n, o, p]; rhs = conv(x, wr), wr[c, t] = sum_o r_o W[o, c, t].
            let mut lhs = vec![0i128; d.n * howo];
            for n in 0..d.n {
                for o in 0..d.o {
                    let plane = &c[(n * d.o + o) * howo..][..howo];
                    lhs[n * howo..(n + 1) * howo]
                        .iter_mut()
                        .zip(plane)
                        .for_each(|(t, &v)| *t += i128::from(v) * r[o]);
                }
            }
            let mut wr = vec![0i128; d.c * taps];
            for o in 0..d.o {
                b[o * d.c * taps..(o + 1) * d.c * taps]
                    .iter()
                    .zip(wr.iter_mut())
                    .for_each(|(&x, t)| *t += w(x) * r[o]);
            }
            let mut rhs = vec![0i128; d.n * howo];
            for n in 0..d.n {
                for ch in 0..d.c {
                    let plane = &a[(n * d.c + ch) * hw..][..hw];
                    let wk = &wr[ch * taps..(ch + 1) * taps];
                    let out = &mut rhs[n * howo..(n + 1) * howo];
                    taps_of(&d, |p, t, i| out[p] += wk[t] * w(plane[i]));
                }
            }
            (lhs, rhs)
        }
        BilinearOp::Conv2dInputGrad { .. } => {
            // lhs[n, i] = sum_c r_c dx[n, c, i]; rhs = conv_transpose(dy, wr), wr[o, t] = sum_c r_c W[o, c, t].
            let mut lhs = vec![0i128; d.n * hw];
            for n in 0..d.n {
                for ch in 0..d.c {
                    let plane = &c[(n * d.c + ch) * hw..][..hw];
                    lhs[n * hw..(n + 1) * hw]
                        .iter_mut()
                        .zip(plane)
                        .for_each(|(t, &v)| *t += i128::from(v) * r[ch]);
                }
            }
            let mut wr = vec![0i128; d.o * taps];
            for o in 0..d.o {
                for ch in 0..d.c {
                    b[(o * d.c + ch) * taps..][..taps]
                        .iter()
                        .zip(wr[o * taps..(o + 1) * taps].iter_mut())
                        .for_each(|(&x, t)| *t += w(x) * r[ch]);
                }
            }
            let mut rhs = vec![0i128; d.n * hw];
            for n in 0..d.n {
                for o in 0..d.o {
                    let plane = &a[(n * d.o + o) * howo..][..howo];
                    let wk = &wr[o * taps..(o + 1) * taps];
                    let out = &mut rhs[n * hw..(n + 1) * hw];
                    taps_of(&d, |p, t, i| out[i] += wk[t] * w(plane[p]));
                }
            }
            (lhs, rhs)
        }
        _ => {
            // lhs[c, t] = sum_o r_o dW[o, c, t]; rhs = corr(dyr, x), dyr[n, p] = sum_o r_o dy[n, o, p].
            let mut lhs = vec![0i128; d.c * taps];
            for o in 0..d.o {
                c[o * d.c * taps..(o + 1) * d.c * taps]
                    .iter()
                    .zip(lhs.iter_mut())
                    .for_each(|(&v, t)| *t += i128::from(v) * r[o]);
            }
            let mut dyr = vec![0i128; d.n * howo];
            for n in 0..d.n {
                for o in 0..d.o {
                    let plane = &a[(n * d.o + o) * howo..][..howo];
                    dyr[n * howo..(n + 1) * howo]
                        .iter_mut()
                        .zip(plane)
                        .for_each(|(t, &v)| *t += w(v) * r[o]);
                }
            }
            let mut rhs = vec![0i128; d.c * taps];
            for n in 0..d.n {
                let g = &dyr[n * howo..(n + 1) * howo];
                for ch in 0..d.c {
                    let plane = &b[(n * d.c + ch) * hw..][..hw];
                    let out = &mut rhs[ch * taps..(ch + 1) * taps];
                    taps_of(&d, |p, t, i| out[t] += g[p] * w(plane[i]));
                }
            }
            (lhs, rhs)
        }
    })
}
