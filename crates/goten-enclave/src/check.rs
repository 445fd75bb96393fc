//! Freivalds-style integrity check of a reconstructed result, inside the enclave.
//!
//! Where it sits: around the device job in [`crate::linear`]: the operand side ([`expected`])
//! is computed on the enclave's background pool while the devices compute the products, the
//! result side ([`Expected::matches`]) after reconstruction. The enclave holds the quantized
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
    expected(op, a, b, r)?.matches(c)
}

/// The operand side of the check for one op: what its result must contract to, with the
/// challenge it was computed under. It needs no result, so the enclave computes it while the
/// devices compute the products; [`Expected::matches`] then takes the result side.
#[derive(Clone, PartialEq, Eq)]
pub struct Expected {
    op: BilinearOp,
    out_len: usize,
    side: Side,
}

#[derive(Clone, PartialEq, Eq)]
enum Side {
    /// The challenge over the result's columns, and the operands' contraction.
    Matmul { r: Vec<i128>, rhs: Vec<i128> },
    /// The conv dimensions, the two challenge vectors (field elements) and the contraction.
    Conv {
        d: goten_field::ops::ConvDims,
        r: Vec<u64>,
        s: Vec<u64>,
        rhs: Vec<u64>,
    },
}

impl std::fmt::Debug for Expected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A secret challenge and a contraction of secret operands: never printed.
        f.write_str("Expected(..)")
    }
}

/// The operand side of [`verify`] for `f(a, b)` under challenge `r`.
pub fn expected(
    op: &BilinearOp,
    (sa, a): (&[usize], &[i32]),
    (sb, b): (&[usize], &[i32]),
    r: &[u32],
) -> Result<Expected, ShapeError> {
    if r.len() != challenge_len(op, sa, sb)? {
        return Err(ShapeError::new(
            "integrity check: the challenge has the wrong length",
        ));
    }
    let out_len = op.output_shape(sa, sb)?.iter().product();
    let side = match op {
        BilinearOp::MatmulForward | BilinearOp::MatmulInputGrad | BilinearOp::MatmulWeightGrad => {
            let r: Vec<i128> = r.iter().map(|&v| i128::from(v)).collect();
            let (m, n, k) = op.matmul_dims(sa, sb)?;
            let rhs = match op {
                // v = W^T r (length k), then x v.
                BilinearOp::MatmulForward => rows_dot(a, (m, k), &weighted_rows(b, (n, k), &r)),
                // v = W r (length n), then dy v.
                BilinearOp::MatmulInputGrad => rows_dot(a, (m, n), &rows_dot(b, (n, k), &r)),
                // v = x r (length m), then dy^T v.
                _ => weighted_rows(a, (m, n), &rows_dot(b, (m, k), &r)),
            };
            Side::Matmul { r, rhs }
        }
        _ => {
            let d = op.conv_dims(sa, sb)?;
            let (lr, _) = crate::check_conv::lens(op, &d);
            let (rw, sw) = r.split_at(2 * lr);
            let (r, s) = (
                crate::check_conv::elements(rw),
                crate::check_conv::elements(sw),
            );
            let rhs = crate::check_conv::rhs(op, &d, a, b, &r, &s);
            Side::Conv { d, r, s, rhs }
        }
    };
    Ok(Expected {
        op: *op,
        out_len,
        side,
    })
}

/// Each of the `rows` rows of the row-major `mat` (rows of length `cols`) dotted with `v`.
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

/// `sum_i w[i] * row_i` over the `rows` rows of the row-major `mat` (length `cols`).
fn weighted_rows(mat: &[i32], (rows, cols): (usize, usize), w: &[i128]) -> Vec<i128> {
    let mut out = vec![0i128; cols];
    for (i, &wi) in w.iter().enumerate().take(rows) {
        mat[i * cols..(i + 1) * cols]
            .iter()
            .zip(out.iter_mut())
            .for_each(|(&x, o)| *o += i128::from(x) * wi);
    }
    out
}

impl Expected {
    /// The result side: whether `c` (the op's reconstructed result, as residues or wide sums)
    /// contracts to what the operands predict.
    pub fn matches<T: Copy + Into<i64> + Sync>(&self, c: &[T]) -> Result<bool, ShapeError> {
        if c.len() != self.out_len {
            return Err(ShapeError::new(
                "integrity check: the result has the wrong length",
            ));
        }
        Ok(match &self.side {
            Side::Conv { d, r, s, rhs } => crate::check_conv::lhs(&self.op, d, c, r, s) == *rhs,
            Side::Matmul { r, rhs } => {
                let lhs: Vec<i128> = c
                    .chunks_exact(r.len().max(1))
                    .map(|row| {
                        row.iter()
                            .zip(r)
                            .map(|(&x, &y)| i128::from(x.into()) * y)
                            .sum()
                    })
                    .collect();
                lhs == *rhs
            }
        })
    }
}
