//! Pooling inside the enclave: max pooling (square window, stride, padding that never wins, as
//! PyTorch's `MaxPool2d`), average pooling (no padding, as `AvgPool2d` with its defaults) and
//! global average pooling (`AdaptiveAvgPool2d(1)` followed by a flatten: `[n, c, h, w] -> [n, c]`).
//!
//! Where it sits: between a convolution block and the next one (max/avg) or before the
//! classifier (global). Every plane is handled by one task and scattered back in a fixed order,
//! so results do not depend on the thread count.

use rayon::prelude::*;

use super::NnError;
use super::layers::nchw;
use crate::SecretTensor;

/// Output side of a pooling window: `(side + 2 pad - k) / s + 1`, or an error when it does not
/// fit (PyTorch also requires `pad <= k / 2`).
pub fn pooled(side: usize, k: usize, s: usize, pad: usize) -> Option<usize> {
    if k == 0 || s == 0 || pad > k / 2 || side + 2 * pad < k {
        return None;
    }
    Some((side + 2 * pad - k) / s + 1)
}

fn fit_error(what: &str, k: usize, s: usize, p: usize, h: usize, w: usize) -> NnError {
    goten_field::ShapeError::new(format!("{what} {k}x{k}/{s} pad {p} does not fit {h}x{w}")).into()
}

/// Max pooling; returns the output and, per output, the flat index of the chosen input (the
/// first maximum in scan order; padded positions are never chosen).
pub fn maxpool(
    x: &SecretTensor,
    k: usize,
    s: usize,
    pad: usize,
) -> Result<(SecretTensor, Vec<usize>), NnError> {
    let (n, c, h, w) = nchw(x, "maxpool")?;
    let (Some(ho), Some(wo)) = (pooled(h, k, s, pad), pooled(w, k, s, pad)) else {
        return Err(fit_error("maxpool", k, s, pad, h, w));
    };
    let mut y = SecretTensor::zeros(&[n, c, ho, wo]);
    let mut arg = vec![0usize; n * c * ho * wo];
    let xs = x.expose();
    let plane_out = ho * wo;
    if plane_out == 0 {
        return Ok((y, arg));
    }
    y.expose_mut()
        .par_chunks_mut(plane_out)
        .zip(arg.par_chunks_mut(plane_out))
        .enumerate()
        .for_each(|(plane, (ys, arg))| {
            let base = plane * h * w;
            let xp = &xs[base..base + h * w];
            for oh in 0..ho {
                // The window's rows and columns clipped to the input (padding never wins).
                let r0 = (oh * s).saturating_sub(pad);
                let r1 = (oh * s + k - pad).min(h);
                for ow in 0..wo {
                    let c0 = (ow * s).saturating_sub(pad);
                    let c1 = (ow * s + k - pad).min(w);
                    let first = r0 * w + c0;
                    let (mut best, mut top) = (first, xp[first]);
                    for r in r0..r1 {
                        for (j, &v) in xp[r * w + c0..r * w + c1].iter().enumerate() {
                            if v > top {
                                (best, top) = (r * w + c0 + j, v);
                            }
                        }
                    }
                    ys[oh * wo + ow] = top;
                    arg[oh * wo + ow] = base + best;
                }
            }
        });
    Ok((y, arg))
}

/// Backward of [`maxpool`]: each output's gradient goes to its chosen input.
pub fn maxpool_backward(dy: &SecretTensor, shape: &[usize], arg: &[usize]) -> SecretTensor {
    let mut dx = SecretTensor::zeros(shape);
    let plane_in = shape[2] * shape[3];
    let planes = shape[0] * shape[1];
    let plane_out = arg.len().checked_div(planes).unwrap_or(0);
    if plane_in > 0 && plane_out > 0 {
        dx.expose_mut()
            .par_chunks_mut(plane_in)
            .zip(
                arg.par_chunks(plane_out)
                    .zip(dy.expose().par_chunks(plane_out)),
            )
            .enumerate()
            .for_each(|(p, (d, (arg, g)))| {
                for (&i, &g) in arg.iter().zip(g) {
                    d[i - p * plane_in] += g;
                }
            });
    }
    dx
}

/// Average pooling over `k x k` windows with stride `s`, no padding.
pub fn avgpool(x: &SecretTensor, k: usize, s: usize) -> Result<SecretTensor, NnError> {
    let (n, c, h, w) = nchw(x, "avgpool")?;
    let (Some(ho), Some(wo)) = (pooled(h, k, s, 0), pooled(w, k, s, 0)) else {
        return Err(fit_error("avgpool", k, s, 0, h, w));
    };
    let mut y = SecretTensor::zeros(&[n, c, ho, wo]);
    let xs = x.expose();
    let scale = 1.0 / (k * k) as f32;
    if ho * wo > 0 {
        y.expose_mut()
            .par_chunks_mut(ho * wo)
            .zip(xs.par_chunks(h * w))
            .for_each(|(ys, xp)| {
                for oh in 0..ho {
                    for ow in 0..wo {
                        let mut acc = 0f32;
                        for r in oh * s..oh * s + k {
                            acc += xp[r * w + ow * s..][..k].iter().sum::<f32>();
                        }
                        ys[oh * wo + ow] = acc * scale;
                    }
                }
            });
    }
    Ok(y)
}

/// Backward of [`avgpool`] for an input of `shape`.
pub fn avgpool_backward(dy: &SecretTensor, shape: &[usize], k: usize, s: usize) -> SecretTensor {
    let (h, w) = (shape[2], shape[3]);
    let mut dx = SecretTensor::zeros(shape);
    let (ho, wo) = (dy.shape()[2], dy.shape()[3]);
    let scale = 1.0 / (k * k) as f32;
    if ho * wo > 0 && h * w > 0 {
        dx.expose_mut()
            .par_chunks_mut(h * w)
            .zip(dy.expose().par_chunks(ho * wo))
            .for_each(|(d, g)| {
                for oh in 0..ho {
                    for ow in 0..wo {
                        let v = g[oh * wo + ow] * scale;
                        for r in oh * s..oh * s + k {
                            d[r * w + ow * s..][..k].iter_mut().for_each(|d| *d += v);
                        }
                    }
                }
            });
    }
    dx
}

/// Mean of every plane: `[n, c, h, w] -> [n, c]`.
pub fn global_avgpool(x: &SecretTensor) -> Result<SecretTensor, NnError> {
    let (n, c, h, w) = nchw(x, "global average pooling")?;
    if h * w == 0 {
        return Err(fit_error("global average pooling", h, 1, 0, h, w));
    }
    let mut y = SecretTensor::zeros(&[n, c]);
    let inv = 1.0 / (h * w) as f64;
    y.expose_mut()
        .par_iter_mut()
        .zip(x.expose().par_chunks(h * w))
        .for_each(|(y, p)| {
            let mut acc = super::batchnorm::Lanes::default();
            acc.add(p);
            *y = (acc.total() * inv) as f32;
        });
    Ok(y)
}

/// Backward of [`global_avgpool`] for an input of `shape`.
pub fn global_avgpool_backward(dy: &SecretTensor, shape: &[usize]) -> SecretTensor {
    let hw = shape[2] * shape[3];
    let mut dx = SecretTensor::zeros(shape);
    let inv = 1.0 / hw as f32;
    if hw > 0 {
        dx.expose_mut()
            .par_chunks_mut(hw)
            .zip(dy.expose().par_iter())
            .for_each(|(d, &g)| d.fill(g * inv));
    }
    dx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padded_maxpool_matches_a_hand_example() {
        // 1x1x3x3 input, 3x3 window, stride 2, padding 1: four outputs, each the maximum of the
        // clipped window around a corner.
        let x = SecretTensor::new(&[1, 1, 3, 3], vec![1., 9., 2., 3., 4., 5., 8., 6., 7.]).unwrap();
        let (y, arg) = maxpool(&x, 3, 2, 1).unwrap();
        assert_eq!(y.shape(), &[1, 1, 2, 2]);
        assert_eq!(y.expose(), &[9., 9., 8., 7.]);
        assert_eq!(arg, vec![1, 1, 6, 8]);
        assert!(maxpool(&x, 3, 2, 2).is_err(), "padding above k/2");
        assert!(maxpool(&x, 5, 1, 0).is_err(), "window larger than input");
    }

    #[test]
    fn average_pools_match_hand_sums() {
        let x = SecretTensor::new(&[1, 1, 2, 4], vec![1., 2., 3., 4., 5., 6., 7., 8.]).unwrap();
        let y = avgpool(&x, 2, 2).unwrap();
        assert_eq!(y.expose(), &[3.5, 5.5]);
        let g = global_avgpool(&x).unwrap();
        assert_eq!(g.shape(), &[1, 1]);
        assert_eq!(g.expose(), &[4.5]);
        assert_eq!(pooled(7, 3, 2, 1), Some(4));
        assert_eq!(pooled(32, 2, 2, 0), Some(16));
    }
}
