//! The six bilinear op kinds the protocol outsources, and their shape rules.
//!
//! Shared vocabulary of the enclave (which builds jobs) and every device backend (which runs
//! them): both sides validate shapes with the same code, so a malformed job is an error naming
//! the mismatch, never a panic or an out-of-bounds read.
//!
//! Layouts are row-major: matrices `[rows, cols]`, activations NCHW, conv weights
//! `[out_channels, in_channels, kh, kw]`.

use thiserror::Error;

/// A shape mismatch or an impossible shape, with a message naming it.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("shape error: {0}")]
pub struct ShapeError(String);

impl ShapeError {
    /// A new error with the given message.
    pub fn new(msg: impl Into<String>) -> Self {
        ShapeError(msg.into())
    }
}

/// Stride and zero padding of a 2-D convolution (no dilation, no groups).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Conv2dParams {
    /// Vertical and horizontal stride, both >= 1.
    pub stride: (usize, usize),
    /// Zero padding added on each side, vertical and horizontal.
    pub padding: (usize, usize),
}

impl Conv2dParams {
    /// Equal stride and padding in both directions.
    pub fn new(stride: usize, padding: usize) -> Self {
        Conv2dParams {
            stride: (stride, stride),
            padding: (padding, padding),
        }
    }

    /// Output spatial size of an input of `(h, w)` under a `(kh, kw)` kernel.
    pub fn output_hw(
        &self,
        (h, w): (usize, usize),
        (kh, kw): (usize, usize),
    ) -> Result<(usize, usize), ShapeError> {
        let (sh, sw) = self.stride;
        let (ph, pw) = self.padding;
        if sh == 0 || sw == 0 {
            return Err(ShapeError::new("conv2d stride must be at least 1"));
        }
        if kh == 0 || kw == 0 {
            return Err(ShapeError::new("conv2d kernel must be at least 1x1"));
        }
        let eh = h + 2 * ph;
        let ew = w + 2 * pw;
        if eh < kh || ew < kw {
            return Err(ShapeError::new(format!(
                "conv2d kernel {kh}x{kw} is larger than the padded input {eh}x{ew}"
            )));
        }
        Ok(((eh - kh) / sh + 1, (ew - kw) / sw + 1))
    }
}

/// One of the six bilinear ops of PROTOCOL.md section 2, `c = f(a, b)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BilinearOp {
    /// `y = x W^T`: a = x `[m, k]`, b = W `[n, k]`, c = y `[m, n]`.
    MatmulForward,
    /// `dx = dy W`: a = dy `[m, n]`, b = W `[n, k]`, c = dx `[m, k]`.
    MatmulInputGrad,
    /// `dW = dy^T x`: a = dy `[m, n]`, b = x `[m, k]`, c = dW `[n, k]`.
    MatmulWeightGrad,
    /// `y = conv(x, W)`: a = x `[N, C, H, W]`, b = W `[O, C, KH, KW]`, c = y `[N, O, HO, WO]`.
    Conv2dForward(Conv2dParams),
    /// `dx = conv_transpose(dy, W)`: a = dy `[N, O, HO, WO]`, b = W `[O, C, KH, KW]`,
    /// c = dx `[N, C, H, W]`. `input_hw` is (H, W): several inputs map to one output size.
    Conv2dInputGrad {
        /// Stride and padding of the forward convolution.
        params: Conv2dParams,
        /// Spatial size of the forward input.
        input_hw: (usize, usize),
    },
    /// `dW = corr(dy, x)`: a = dy `[N, O, HO, WO]`, b = x `[N, C, H, W]`, c = dW
    /// `[O, C, KH, KW]`.
    Conv2dWeightGrad {
        /// Stride and padding of the forward convolution.
        params: Conv2dParams,
        /// Kernel size (KH, KW).
        kernel_hw: (usize, usize),
    },
}

/// Resolved dimensions of a conv op: everything a kernel needs, validated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvDims {
    /// Batch.
    pub n: usize,
    /// Input channels.
    pub c: usize,
    /// Input height and width.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Output channels.
    pub o: usize,
    /// Kernel height.
    pub kh: usize,
    /// Kernel width.
    pub kw: usize,
    /// Output height.
    pub ho: usize,
    /// Output width.
    pub wo: usize,
    /// Stride and padding.
    pub params: Conv2dParams,
}

fn rank(shape: &[usize], r: usize, what: &str) -> Result<(), ShapeError> {
    if shape.len() != r {
        return Err(ShapeError::new(format!(
            "{what} must have rank {r}, got shape {shape:?}"
        )));
    }
    Ok(())
}

fn same(a: usize, b: usize, what: &str) -> Result<(), ShapeError> {
    if a != b {
        return Err(ShapeError::new(format!("{what}: {a} != {b}")));
    }
    Ok(())
}

impl BilinearOp {
    /// Short name used in benchmarks and errors.
    pub fn name(&self) -> &'static str {
        match self {
            BilinearOp::MatmulForward => "matmul_fwd",
            BilinearOp::MatmulInputGrad => "matmul_dx",
            BilinearOp::MatmulWeightGrad => "matmul_dw",
            BilinearOp::Conv2dForward(_) => "conv_fwd",
            BilinearOp::Conv2dInputGrad { .. } => "conv_dx",
            BilinearOp::Conv2dWeightGrad { .. } => "conv_dw",
        }
    }

    /// Matmul dims `(m, n, k)` in the op's own naming (see the variants), validated.
    pub fn matmul_dims(
        &self,
        a: &[usize],
        b: &[usize],
    ) -> Result<(usize, usize, usize), ShapeError> {
        let name = self.name();
        rank(a, 2, &format!("{name} operand a"))?;
        rank(b, 2, &format!("{name} operand b"))?;
        match self {
            BilinearOp::MatmulForward => {
                same(a[1], b[1], "matmul_fwd: x columns vs W columns")?;
                Ok((a[0], b[0], a[1]))
            }
            BilinearOp::MatmulInputGrad => {
                same(a[1], b[0], "matmul_dx: dy columns vs W rows")?;
                Ok((a[0], a[1], b[1]))
            }
            BilinearOp::MatmulWeightGrad => {
                same(a[0], b[0], "matmul_dw: dy rows vs x rows")?;
                Ok((a[0], a[1], b[1]))
            }
            _ => Err(ShapeError::new(format!("{name} is not a matmul"))),
        }
    }

    /// Conv dims, validated against both operand shapes.
    pub fn conv_dims(&self, a: &[usize], b: &[usize]) -> Result<ConvDims, ShapeError> {
        let name = self.name();
        rank(a, 4, &format!("{name} operand a"))?;
        rank(b, 4, &format!("{name} operand b"))?;
        match *self {
            BilinearOp::Conv2dForward(params) => {
                same(a[1], b[1], "conv_fwd: input channels of x vs W")?;
                let (ho, wo) = params.output_hw((a[2], a[3]), (b[2], b[3]))?;
                Ok(ConvDims {
                    n: a[0],
                    c: a[1],
                    h: a[2],
                    w: a[3],
                    o: b[0],
                    kh: b[2],
                    kw: b[3],
                    ho,
                    wo,
                    params,
                })
            }
            BilinearOp::Conv2dInputGrad { params, input_hw } => {
                same(
                    a[1],
                    b[0],
                    "conv_dx: channels of dy vs output channels of W",
                )?;
                let (ho, wo) = params.output_hw(input_hw, (b[2], b[3]))?;
                same(a[2], ho, "conv_dx: height of dy vs forward output height")?;
                same(a[3], wo, "conv_dx: width of dy vs forward output width")?;
                Ok(ConvDims {
                    n: a[0],
                    c: b[1],
                    h: input_hw.0,
                    w: input_hw.1,
                    o: b[0],
                    kh: b[2],
                    kw: b[3],
                    ho,
                    wo,
                    params,
                })
            }
            BilinearOp::Conv2dWeightGrad { params, kernel_hw } => {
                same(a[0], b[0], "conv_dw: batch of dy vs batch of x")?;
                let (ho, wo) = params.output_hw((b[2], b[3]), kernel_hw)?;
                same(a[2], ho, "conv_dw: height of dy vs forward output height")?;
                same(a[3], wo, "conv_dw: width of dy vs forward output width")?;
                Ok(ConvDims {
                    n: a[0],
                    c: b[1],
                    h: b[2],
                    w: b[3],
                    o: a[1],
                    kh: kernel_hw.0,
                    kw: kernel_hw.1,
                    ho,
                    wo,
                    params,
                })
            }
            _ => Err(ShapeError::new(format!("{name} is not a conv2d"))),
        }
    }

    /// The shape of `f(a, b)`, or why the operands do not fit this op.
    pub fn output_shape(&self, a: &[usize], b: &[usize]) -> Result<Vec<usize>, ShapeError> {
        Ok(match self {
            BilinearOp::MatmulForward
            | BilinearOp::MatmulInputGrad
            | BilinearOp::MatmulWeightGrad => {
                let (m, n, k) = self.matmul_dims(a, b)?;
                match self {
                    BilinearOp::MatmulForward => vec![m, n],
                    BilinearOp::MatmulInputGrad => vec![m, k],
                    _ => vec![n, k],
                }
            }
            BilinearOp::Conv2dForward(_) => {
                let d = self.conv_dims(a, b)?;
                vec![d.n, d.o, d.ho, d.wo]
            }
            BilinearOp::Conv2dInputGrad { .. } => {
                let d = self.conv_dims(a, b)?;
                vec![d.n, d.c, d.h, d.w]
            }
            BilinearOp::Conv2dWeightGrad { .. } => {
                let d = self.conv_dims(a, b)?;
                vec![d.o, d.c, d.kh, d.kw]
            }
        })
    }

    /// Multiply-accumulates of the direct (im2col) algorithm, counting padded positions: the
    /// work figure used by benchmarks. Forward, input and weight gradient of one layer have the
    /// same count.
    pub fn macs(&self, a: &[usize], b: &[usize]) -> Result<u64, ShapeError> {
        Ok(match self {
            BilinearOp::MatmulForward
            | BilinearOp::MatmulInputGrad
            | BilinearOp::MatmulWeightGrad => {
                let (m, n, k) = self.matmul_dims(a, b)?;
                (m * n * k) as u64
            }
            _ => {
                let d = self.conv_dims(a, b)?;
                (d.n * d.o * d.ho * d.wo) as u64 * (d.c * d.kh * d.kw) as u64
            }
        })
    }

    /// The axes of operand a and of operand b that the op sums over. Slicing both operands
    /// along them splits the op into parts whose results add up; concatenating two operand
    /// pairs along them computes the sum of their two products.
    pub fn reduction_axes(&self) -> (usize, usize) {
        match self {
            BilinearOp::MatmulForward => (1, 1),
            BilinearOp::MatmulInputGrad => (1, 0),
            BilinearOp::MatmulWeightGrad => (0, 0),
            BilinearOp::Conv2dForward(_) => (1, 1),
            BilinearOp::Conv2dInputGrad { .. } => (1, 0),
            BilinearOp::Conv2dWeightGrad { .. } => (0, 0),
        }
    }

    /// Longest sum of products behind one output entry: what bounds |f(a, b)| and hence the
    /// headroom the ring must offer.
    pub fn reduction_len(&self, a: &[usize], b: &[usize]) -> Result<usize, ShapeError> {
        Ok(match self {
            BilinearOp::MatmulForward => self.matmul_dims(a, b)?.2,
            BilinearOp::MatmulInputGrad => self.matmul_dims(a, b)?.1,
            BilinearOp::MatmulWeightGrad => self.matmul_dims(a, b)?.0,
            BilinearOp::Conv2dForward(_) => {
                let d = self.conv_dims(a, b)?;
                d.c * d.kh * d.kw
            }
            BilinearOp::Conv2dInputGrad { .. } => {
                let d = self.conv_dims(a, b)?;
                d.o * d.kh.div_ceil(d.params.stride.0) * d.kw.div_ceil(d.params.stride.1)
            }
            BilinearOp::Conv2dWeightGrad { .. } => {
                let d = self.conv_dims(a, b)?;
                d.n * d.ho * d.wo
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_shapes() {
        let p = Conv2dParams::new(1, 1);
        let fwd = BilinearOp::Conv2dForward(p);
        assert_eq!(
            fwd.output_shape(&[2, 3, 32, 32], &[64, 3, 3, 3]).unwrap(),
            vec![2, 64, 32, 32]
        );
        let s2 = Conv2dParams::new(2, 0);
        let dx = BilinearOp::Conv2dInputGrad {
            params: s2,
            input_hw: (8, 8),
        };
        assert_eq!(
            dx.output_shape(&[1, 4, 3, 3], &[4, 2, 3, 3]).unwrap(),
            vec![1, 2, 8, 8]
        );
        let dw = BilinearOp::Conv2dWeightGrad {
            params: s2,
            kernel_hw: (3, 3),
        };
        assert_eq!(
            dw.output_shape(&[1, 4, 3, 3], &[1, 2, 8, 8]).unwrap(),
            vec![4, 2, 3, 3]
        );
        assert_eq!(
            BilinearOp::MatmulWeightGrad
                .output_shape(&[5, 3], &[5, 7])
                .unwrap(),
            vec![3, 7]
        );
    }

    #[test]
    fn mismatches_are_errors() {
        let p = Conv2dParams::new(1, 1);
        let e = BilinearOp::Conv2dForward(p).output_shape(&[2, 3, 32, 32], &[64, 4, 3, 3]);
        assert!(e.unwrap_err().to_string().contains("input channels"));
        assert!(
            BilinearOp::MatmulForward
                .output_shape(&[2, 3], &[4, 5])
                .is_err()
        );
        assert!(
            BilinearOp::MatmulForward
                .output_shape(&[2, 3, 1], &[4, 3])
                .is_err()
        );
        let bad = Conv2dParams {
            stride: (0, 1),
            padding: (0, 0),
        };
        assert!(
            BilinearOp::Conv2dForward(bad)
                .output_shape(&[1, 1, 4, 4], &[1, 1, 3, 3])
                .is_err()
        );
        assert!(
            BilinearOp::Conv2dForward(p)
                .output_shape(&[1, 1, 1, 1], &[1, 1, 5, 5])
                .is_err()
        );
        let dx = BilinearOp::Conv2dInputGrad {
            params: p,
            input_hw: (8, 8),
        };
        assert!(dx.output_shape(&[1, 4, 7, 8], &[4, 2, 3, 3]).is_err());
    }
}
