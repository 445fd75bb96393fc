//! Freivalds-style integrity check of a reconstructed result, inside the enclave.
//!
//! Where it sits: after reconstruction in [`crate::linear`]. The enclave holds the quantized
//! operands aQ, bQ and the reconstructed integer result c. It contracts c with secret random
//! vectors (from the pair key, unknown to every host) and compares with the same contraction
//! computed directly from the operands:
//!
//! | op | contracted | right-hand side | cost |
//! | --- | --- | --- | --- |
//! | matmul `y = x W^T` | columns of y | `x (W^T r)` | O(mk + nk + mn) |
//! | matmul `dx = dy W` | columns of dx | `dy (W r)` | O(mn + nk + mk) |
//! | matmul `dW = dy^T x` | columns of dW | `dy^T (x r)` | O(mk + mn + nk) |
//! | conv (all three) | two axes, see [`crate::check_conv`] | | about one pass over operands and result |
//!
//! Matmuls are checked in i128 with r in [0, 2^32): both sides exact, a wrong entry escapes with
//! probability at most 2^-32. Convolutions are checked over F_(2^61-1) with two challenge
//! vectors: a wrong entry escapes with probability below 2^-59. Either way any difference between
//! c and aQ (x) bQ (a wrapped reduction, a device or peer that returned a wrong share) is caught.

use goten_field::{BilinearOp, ShapeError};

/// Number of PRG words the challenge of `op` needs.
pub fn challenge_len(op: &BilinearOp, sa: &[usize], sb: &[usize]) -> Result<usize, ShapeError> {
    Ok(match op {
        BilinearOp::MatmulForward | BilinearOp::MatmulInputGrad | BilinearOp::MatmulWeightGrad => {
            *op.output_shape(sa, sb)?.last().expect("rank 2")
        }
        _ => {
            // Two field elements vectors, two words per element (check_conv).
            let (r, s) = crate::check_conv::lens(op, &op.conv_dims(sa, sb)?);
            2 * (r + s)
        }
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
    if !matches!(
        op,
        BilinearOp::MatmulForward | BilinearOp::MatmulInputGrad | BilinearOp::MatmulWeightGrad
    ) {
        let d = op.conv_dims(sa, sb)?;
        let (lr, _) = crate::check_conv::lens(op, &d);
        let (rw, sw) = r.split_at(2 * lr);
        let (re, se) = (
            crate::check_conv::elements(rw),
            crate::check_conv::elements(sw),
        );
        return crate::check_conv::verify(op, &d, a, b, c, &re, &se);
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
        _ => unreachable!("convolutions are checked by check_conv above"),
    };
    Ok(lhs == rhs)
}
