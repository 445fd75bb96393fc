//! Freivalds-style integrity check of a reconstructed result, inside the enclave.
//!
//! Where it sits: around the device job in [`crate::linear`]: the operand side ([`expected`])
//! is computed on the enclave's worker pool while the devices compute the products, the result
//! side ([`result_matches`]) after reconstruction. The enclave holds the quantized
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
    a: (&[usize], &[i32]),
    b: (&[usize], &[i32]),
    c: &[i64],
    r: &[u32],
) -> Result<bool, ShapeError> {
    let want = expected(op, a, b, r)?;
    result_matches(op, (a.0, b.0), c, r, &want)
}

/// The operand side of the check: what the result must contract to. It needs no result, so
/// the enclave computes it while the devices compute the products.
#[derive(Clone, PartialEq, Eq)]
pub struct Expected(Side);

#[derive(Clone, PartialEq, Eq)]
enum Side {
    Matmul(Vec<i128>),
    Conv(Vec<u64>),
}

impl std::fmt::Debug for Expected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A contraction of secret operands: never printed.
        f.write_str("Expected(..)")
    }
}

fn is_matmul(op: &BilinearOp) -> bool {
    matches!(
        op,
        BilinearOp::MatmulForward | BilinearOp::MatmulInputGrad | BilinearOp::MatmulWeightGrad
    )
}

/// A convolution's dimensions and its two challenge vectors (field elements).
type ConvChallenge = (goten_field::ops::ConvDims, Vec<u64>, Vec<u64>);

/// Checks the challenge's length, and splits a convolution's into its two field vectors.
fn challenge(
    op: &BilinearOp,
    (sa, sb): (&[usize], &[usize]),
    r: &[u32],
) -> Result<Option<ConvChallenge>, ShapeError> {
    if r.len() != challenge_len(op, sa, sb)? {
        return Err(ShapeError::new(
            "integrity check: the challenge has the wrong length",
        ));
    }
    if is_matmul(op) {
        return Ok(None);
    }
    let d = op.conv_dims(sa, sb)?;
    let (lr, _) = crate::check_conv::lens(op, &d);
    let (rw, sw) = r.split_at(2 * lr);
    Ok(Some((
        d,
        crate::check_conv::elements(rw),
        crate::check_conv::elements(sw),
    )))
}

/// The operand side of [`verify`] for `f(a, b)` under challenge `r`.
pub fn expected(
    op: &BilinearOp,
    (sa, a): (&[usize], &[i32]),
    (sb, b): (&[usize], &[i32]),
    r: &[u32],
) -> Result<Expected, ShapeError> {
    if let Some((d, re, se)) = challenge(op, (sa, sb), r)? {
        return Ok(Expected(Side::Conv(crate::check_conv::rhs(
            op, &d, a, b, &re, &se,
        ))));
    }
    let r: Vec<i128> = r.iter().map(|&v| i128::from(v)).collect();
    let (m, n, k) = op.matmul_dims(sa, sb)?;
    let rhs = match op {
        BilinearOp::MatmulForward => {
            // v = W^T r (length k), then x v.
            let mut v = vec![0i128; k];
            for j in 0..n {
                b[j * k..(j + 1) * k]
                    .iter()
                    .zip(v.iter_mut())
                    .for_each(|(&x, t)| *t += i128::from(x) * r[j]);
            }
            rows_dot(a, (m, k), &v)
        }
        // v = W r (length n), then dy v.
        BilinearOp::MatmulInputGrad => rows_dot(a, (m, n), &rows_dot(b, (n, k), &r)),
        _ => {
            // v = x r (length m), then dy^T v.
            let v = rows_dot(b, (m, k), &r);
            let mut out = vec![0i128; n];
            for t in 0..m {
                a[t * n..(t + 1) * n]
                    .iter()
                    .zip(out.iter_mut())
                    .for_each(|(&x, o)| *o += i128::from(x) * v[t]);
            }
            out
        }
    };
    Ok(Expected(Side::Matmul(rhs)))
}

/// Each of the `rows` rows of the row-major `mat` (rows of length `cols`) dotted with `v`,
/// exactly.
fn rows_dot(mat: &[i32], (rows, cols): (usize, usize), v: &[i128]) -> Vec<i128> {
    (0..rows)
        .map(|i| {
            mat[i * cols..(i + 1) * cols]
                .iter()
                .zip(v)
                .map(|(&x, &y)| i128::from(x) * y)
                .sum()
        })
        .collect()
}

/// The result side of [`verify`]: whether `c` contracts under `r` to `want` (from
/// [`expected`] for the same op, shapes and challenge).
pub fn result_matches<T: Copy + Into<i64> + Sync>(
    op: &BilinearOp,
    (sa, sb): (&[usize], &[usize]),
    c: &[T],
    r: &[u32],
    want: &Expected,
) -> Result<bool, ShapeError> {
    if c.len() != op.output_shape(sa, sb)?.iter().product::<usize>() {
        return Err(ShapeError::new(
            "integrity check: the result has the wrong length",
        ));
    }
    match (challenge(op, (sa, sb), r)?, &want.0) {
        (Some((d, re, se)), Side::Conv(rhs)) => {
            Ok(crate::check_conv::lhs(op, &d, c, &re, &se) == *rhs)
        }
        (None, Side::Matmul(rhs)) => {
            let cols = r.len();
            let lhs: Vec<i128> = c
                .chunks_exact(cols.max(1))
                .map(|row| {
                    row.iter()
                        .zip(r)
                        .map(|(&x, &y)| i128::from(x.into()) * i128::from(y))
                        .sum()
                })
                .collect();
            Ok(lhs == *rhs)
        }
        _ => Err(ShapeError::new(
            "integrity check: the expected contraction belongs to another kind of op",
        )),
    }
}
