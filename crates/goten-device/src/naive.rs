//! Independent reference for the bilinear ops: textbook loops in i128, straight from the
//! definitions (no im2col, no GEMM, no chunking). Slow by design; every backend is tested
//! against it, and the enclave's exactness tests compare reconstructed results to
//! [`exact`]'s unreduced integers.

use goten_field::{BilinearOp, Ring, RingTensor, ShapeError};

/// `f(a, b)` over the integers (operands taken as their centered values), not reduced.
pub fn exact(
    op: &BilinearOp,
    (sa, a): (&[usize], &[i64]),
    (sb, b): (&[usize], &[i64]),
) -> Result<Vec<i128>, ShapeError> {
    let out_len: usize = op.output_shape(sa, sb)?.iter().product();
    let mut out = vec![0i128; out_len];
    let m = |x: i64, y: i64| i128::from(x) * i128::from(y);
    match op {
        BilinearOp::MatmulForward => {
            let (mm, n, k) = op.matmul_dims(sa, sb)?;
            for i in 0..mm {
                for j in 0..n {
                    out[i * n + j] = (0..k).map(|t| m(a[i * k + t], b[j * k + t])).sum();
                }
            }
        }
        BilinearOp::MatmulInputGrad => {
            let (mm, n, k) = op.matmul_dims(sa, sb)?;
            for i in 0..mm {
                for j in 0..k {
                    out[i * k + j] = (0..n).map(|t| m(a[i * n + t], b[t * k + j])).sum();
                }
            }
        }
        BilinearOp::MatmulWeightGrad => {
            let (mm, n, k) = op.matmul_dims(sa, sb)?;
            for i in 0..n {
                for j in 0..k {
                    out[i * k + j] = (0..mm).map(|t| m(a[t * n + i], b[t * k + j])).sum();
                }
            }
        }
        _ => {
            let d = op.conv_dims(sa, sb)?;
            let (sh, sw) = d.params.stride;
            let (ph, pw) = (d.params.padding.0 as isize, d.params.padding.1 as isize);
            let xi =
                |n: usize, c: usize, ih: usize, iw: usize| ((n * d.c + c) * d.h + ih) * d.w + iw;
            let yi =
                |n: usize, o: usize, oh: usize, ow: usize| ((n * d.o + o) * d.ho + oh) * d.wo + ow;
            let wi =
                |o: usize, c: usize, ki: usize, kj: usize| ((o * d.c + c) * d.kh + ki) * d.kw + kj;
            // One loop nest visits every (output position, kernel tap) pair once; each op kind
            // accumulates the product its definition names.
            for n in 0..d.n {
                for o in 0..d.o {
                    for oh in 0..d.ho {
                        for ow in 0..d.wo {
                            for c in 0..d.c {
                                for ki in 0..d.kh {
                                    let ih = (oh * sh + ki) as isize - ph;
                                    if ih < 0 || ih >= d.h as isize {
                                        continue;
                                    }
                                    for kj in 0..d.kw {
                                        let iw = (ow * sw + kj) as isize - pw;
                                        if iw < 0 || iw >= d.w as isize {
                                            continue;
                                        }
                                        let (ih, iw) = (ih as usize, iw as usize);
                                        match op {
                                            BilinearOp::Conv2dForward(_) => {
                                                out[yi(n, o, oh, ow)] +=
                                                    m(a[xi(n, c, ih, iw)], b[wi(o, c, ki, kj)])
                                            }
                                            BilinearOp::Conv2dInputGrad { .. } => {
                                                out[xi(n, c, ih, iw)] +=
                                                    m(a[yi(n, o, oh, ow)], b[wi(o, c, ki, kj)])
                                            }
                                            _ => {
                                                out[wi(o, c, ki, kj)] +=
                                                    m(a[yi(n, o, oh, ow)], b[xi(n, c, ih, iw)])
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
    }
    Ok(out)
}

/// `f(a, b)` reduced into the ring: what every device must return, bit for bit.
pub fn bilinear(op: &BilinearOp, a: &RingTensor, b: &RingTensor) -> Result<RingTensor, ShapeError> {
    let ring: Ring = crate::common_ring(a, b)?;
    let shape = op.output_shape(a.shape(), b.shape())?;
    let widen = |t: &RingTensor| t.data().iter().map(|&v| i64::from(v)).collect::<Vec<_>>();
    let (wa, wb) = (widen(a), widen(b));
    let out = exact(op, (a.shape(), &wa), (b.shape(), &wb))?;
    RingTensor::from_residues(
        ring,
        &shape,
        out.into_iter().map(|v| ring.reduce_i128(v)).collect(),
    )
}
