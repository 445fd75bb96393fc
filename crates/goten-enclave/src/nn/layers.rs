//! The layers: conv and dense (linear, through a [`LinearBackend`]), ReLU, MaxPool2d,
//! BatchNorm2d and Flatten (non-linear, float32 inside the enclave, PyTorch semantics).
//!
//! Each layer caches what its backward pass needs during a training forward pass. Reductions
//! run in a fixed order (f64 accumulators where sums are long), so results are deterministic.

use goten_field::{BilinearOp, Conv2dParams};
use rayon::prelude::*;

use super::{LinearBackend, NnError};
use crate::SecretTensor;

/// A trainable tensor with its gradient and momentum buffer. Debug shows the shape only.
pub struct Param {
    /// Current value.
    pub value: SecretTensor,
    /// Gradient of the last backward pass.
    pub grad: SecretTensor,
    /// SGD momentum buffer (created at the first update).
    pub momentum: Option<SecretTensor>,
}

impl Param {
    /// A parameter with the given value.
    pub fn new(value: SecretTensor) -> Self {
        let grad = SecretTensor::zeros(value.shape());
        Param {
            value,
            grad,
            momentum: None,
        }
    }
}

/// Batch-norm statistics cached by a training forward pass. Debug shows nothing.
pub struct BnCache {
    /// The layer's input: backward recomputes x-hat from it exactly as forward did (one buffer
    /// and one pass fewer than storing x-hat).
    x: SecretTensor,
    /// Per channel: batch mean and 1 / sqrt(variance + eps).
    stats: Vec<(f64, f64)>,
}

/// Normalised input `(x - mean) * inv_std`, rounded to f32 the same way in both passes.
#[inline(always)]
fn xhat(x: f32, (mean, inv): (f64, f64)) -> f32 {
    ((f64::from(x) - mean) * inv) as f32
}

/// One layer of a sequential model. Debug shows its kind and shapes, never values (weights,
/// statistics, masks and pooling choices are all secret).
pub enum Layer {
    /// 2-D convolution without bias: weight `[out, in, k, k]`.
    Conv {
        /// Weight.
        w: Param,
        /// Stride and padding.
        params: Conv2dParams,
        /// False for the first layer: nobody needs the gradient of the input images.
        input_grad: bool,
        /// Input of the last training forward pass.
        cache: Option<SecretTensor>,
    },
    /// Fully connected without bias: weight `[out, in]`.
    Dense {
        /// Weight.
        w: Param,
        /// Whether to compute the input gradient.
        input_grad: bool,
        /// Input of the last training forward pass.
        cache: Option<SecretTensor>,
    },
    /// max(x, 0).
    Relu {
        /// Which inputs were positive.
        mask: Option<Vec<bool>>,
    },
    /// Max pooling with a square window and stride, no padding.
    MaxPool {
        /// Window size.
        k: usize,
        /// Stride.
        s: usize,
        /// Input shape and the flat input index of each output's maximum.
        cache: Option<(Vec<usize>, Vec<usize>)>,
    },
    /// BatchNorm2d (eps 1e-5, momentum 0.1).
    BatchNorm {
        /// Scale.
        gamma: Param,
        /// Shift.
        beta: Param,
        /// Running mean (evaluation).
        running_mean: Vec<f32>,
        /// Running unbiased variance (evaluation).
        running_var: Vec<f32>,
        /// Cache of the last training forward pass.
        cache: Option<BnCache>,
    },
    /// `[n, ...] -> [n, prod(...)]`.
    Flatten {
        /// Input shape of the last forward pass.
        in_shape: Option<Vec<usize>>,
    },
}

impl std::fmt::Debug for Param {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Param(shape {:?}, <redacted>)", self.value.shape())
    }
}

impl std::fmt::Debug for BnCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BnCache(<redacted>)")
    }
}

impl std::fmt::Debug for Layer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Layer::Conv { w, params, .. } => {
                write!(f, "Conv(w {:?}, {params:?}, <redacted>)", w.value.shape())
            }
            Layer::Dense { w, .. } => write!(f, "Dense(w {:?}, <redacted>)", w.value.shape()),
            Layer::Relu { .. } => f.write_str("Relu(<redacted>)"),
            Layer::MaxPool { k, s, .. } => write!(f, "MaxPool(k {k}, stride {s}, <redacted>)"),
            Layer::BatchNorm { running_mean, .. } => {
                write!(f, "BatchNorm({} channels, <redacted>)", running_mean.len())
            }
            Layer::Flatten { .. } => f.write_str("Flatten"),
        }
    }
}

const BN_EPS: f64 = 1e-5;
const BN_MOMENTUM: f32 = 0.1;
/// Elements per parallel task in elementwise passes.
const ELEMENTWISE_CHUNK: usize = 1 << 14;

/// Eight-lane f64 accumulator: `lanes[i]` sums the terms at positions `i mod 8` of each slice,
/// and the lanes are added in a fixed order, so sums are the same whatever the threads, and
/// the loops vectorize (one running sum would be a chain of dependent additions).
#[derive(Clone, Copy, Default)]
struct Lanes([f64; 8]);

impl Lanes {
    fn total(&self) -> f64 {
        let l = &self.0;
        ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7]))
    }
}

/// Adds the sums of `a` and of `a * f(b)` over `a` and `b` (equal lengths), in f64.
fn sum_and_dot(acc: &mut (Lanes, Lanes), a: &[f32], b: &[f32], f: impl Fn(f32) -> f32) {
    let (s, d) = (&mut acc.0.0, &mut acc.1.0);
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ar, br) = (ac.remainder(), bc.remainder());
    for (a, b) in ac.zip(bc) {
        for l in 0..8 {
            s[l] += f64::from(a[l]);
            d[l] += f64::from(a[l]) * f64::from(f(b[l]));
        }
    }
    for (l, (&a, &b)) in ar.iter().zip(br).enumerate() {
        s[l] += f64::from(a);
        d[l] += f64::from(a) * f64::from(f(b));
    }
}

impl Layer {
    /// Short name (for state descriptions and errors).
    pub fn name(&self) -> &'static str {
        match self {
            Layer::Conv { .. } => "conv",
            Layer::Dense { .. } => "dense",
            Layer::Relu { .. } => "relu",
            Layer::MaxPool { .. } => "maxpool",
            Layer::BatchNorm { .. } => "batchnorm",
            Layer::Flatten { .. } => "flatten",
        }
    }

    /// Trainable parameters.
    pub fn params_mut(&mut self) -> Vec<&mut Param> {
        match self {
            Layer::Conv { w, .. } | Layer::Dense { w, .. } => vec![w],
            Layer::BatchNorm { gamma, beta, .. } => vec![gamma, beta],
            _ => vec![],
        }
    }

    /// Forward pass; `train` selects batch statistics and caching. `op` numbers this layer's
    /// linear ops (forward `op`, input gradient `op + 1`, weight gradient `op + 2`).
    pub fn forward(
        &mut self,
        x: SecretTensor,
        train: bool,
        be: &mut dyn LinearBackend,
        op: u64,
    ) -> Result<SecretTensor, NnError> {
        match self {
            Layer::Conv {
                w, params, cache, ..
            } => {
                let y = be.bilinear(op, &BilinearOp::Conv2dForward(*params), &x, &w.value)?;
                *cache = train.then_some(x);
                Ok(y)
            }
            Layer::Dense { w, cache, .. } => {
                let y = be.bilinear(op, &BilinearOp::MatmulForward, &x, &w.value)?;
                *cache = train.then_some(x);
                Ok(y)
            }
            Layer::Relu { mask } => {
                let mut y = x;
                let mut m = vec![false; y.len()];
                y.expose_mut()
                    .par_chunks_mut(ELEMENTWISE_CHUNK)
                    .zip(m.par_chunks_mut(ELEMENTWISE_CHUNK))
                    .for_each(|(y, m)| {
                        for (v, p) in y.iter_mut().zip(m) {
                            *p = *v > 0.0;
                            *v = if *p { *v } else { 0.0 };
                        }
                    });
                *mask = train.then_some(m);
                Ok(y)
            }
            Layer::MaxPool { k, s, cache } => {
                let (y, arg) = maxpool(&x, *k, *s)?;
                *cache = train.then(|| (x.shape().to_vec(), arg));
                Ok(y)
            }
            Layer::BatchNorm {
                gamma,
                beta,
                running_mean,
                running_var,
                cache,
            } => {
                let (y, c) = batchnorm_forward(x, gamma, beta, running_mean, running_var, train)?;
                *cache = c;
                Ok(y)
            }
            Layer::Flatten { in_shape } => {
                let s = x.shape().to_vec();
                let n = s.first().copied().unwrap_or(0);
                let rest = s[1..].iter().product::<usize>();
                *in_shape = Some(s);
                Ok(x.reshaped(&[n, rest]).expect("same element count"))
            }
        }
    }

    /// Backward pass: stores parameter gradients, returns the input gradient (`None` where no
    /// one needs it).
    pub fn backward(
        &mut self,
        dy: SecretTensor,
        be: &mut dyn LinearBackend,
        op: u64,
        index: usize,
    ) -> Result<Option<SecretTensor>, NnError> {
        match self {
            Layer::Conv {
                w,
                params,
                input_grad,
                cache,
            } => {
                let x = cache.take().ok_or(NnError::NoCache(index))?;
                let ks = (w.value.shape()[2], w.value.shape()[3]);
                w.grad = be.bilinear(
                    op + 2,
                    &BilinearOp::Conv2dWeightGrad {
                        params: *params,
                        kernel_hw: ks,
                    },
                    &dy,
                    &x,
                )?;
                if !*input_grad {
                    return Ok(None);
                }
                let hw = (x.shape()[2], x.shape()[3]);
                Ok(Some(be.bilinear(
                    op + 1,
                    &BilinearOp::Conv2dInputGrad {
                        params: *params,
                        input_hw: hw,
                    },
                    &dy,
                    &w.value,
                )?))
            }
            Layer::Dense {
                w,
                input_grad,
                cache,
            } => {
                let x = cache.take().ok_or(NnError::NoCache(index))?;
                w.grad = be.bilinear(op + 2, &BilinearOp::MatmulWeightGrad, &dy, &x)?;
                if !*input_grad {
                    return Ok(None);
                }
                Ok(Some(be.bilinear(
                    op + 1,
                    &BilinearOp::MatmulInputGrad,
                    &dy,
                    &w.value,
                )?))
            }
            Layer::Relu { mask } => {
                let m = mask.take().ok_or(NnError::NoCache(index))?;
                let mut dx = dy;
                dx.expose_mut()
                    .par_chunks_mut(ELEMENTWISE_CHUNK)
                    .zip(m.par_chunks(ELEMENTWISE_CHUNK))
                    .for_each(|(d, m)| {
                        for (v, &p) in d.iter_mut().zip(m) {
                            *v = if p { *v } else { 0.0 };
                        }
                    });
                Ok(Some(dx))
            }
            Layer::MaxPool { cache, .. } => {
                let (shape, arg) = cache.take().ok_or(NnError::NoCache(index))?;
                let mut dx = SecretTensor::zeros(&shape);
                // Every plane scatters into its own input plane, in a fixed order: the same
                // sums whatever the number of threads.
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
                Ok(Some(dx))
            }
            Layer::BatchNorm {
                gamma, beta, cache, ..
            } => {
                let c = cache.take().ok_or(NnError::NoCache(index))?;
                Ok(Some(batchnorm_backward(dy, &c, gamma, beta)))
            }
            Layer::Flatten { in_shape } => {
                let s = in_shape.take().ok_or(NnError::NoCache(index))?;
                Ok(Some(dy.reshaped(&s).expect("same element count")))
            }
        }
    }
}

fn nchw(x: &SecretTensor, what: &str) -> Result<(usize, usize, usize, usize), NnError> {
    match *x.shape() {
        [n, c, h, w] => Ok((n, c, h, w)),
        _ => Err(goten_field::ShapeError::new(format!(
            "{what} needs an NCHW input, got {:?}",
            x.shape()
        ))
        .into()),
    }
}

/// Max pooling; returns the output and, per output, the flat index of the chosen input (the
/// first maximum in scan order).
fn maxpool(x: &SecretTensor, k: usize, s: usize) -> Result<(SecretTensor, Vec<usize>), NnError> {
    let (n, c, h, w) = nchw(x, "maxpool")?;
    if k == 0 || s == 0 || h < k || w < k {
        return Err(goten_field::ShapeError::new(format!(
            "maxpool {k}x{k}/{s} does not fit {h}x{w}"
        ))
        .into());
    }
    let (ho, wo) = ((h - k) / s + 1, (w - k) / s + 1);
    let mut y = SecretTensor::zeros(&[n, c, ho, wo]);
    let mut arg = vec![0usize; n * c * ho * wo];
    let xs = x.expose();
    let plane_out = ho * wo;
    y.expose_mut()
        .par_chunks_mut(plane_out)
        .zip(arg.par_chunks_mut(plane_out))
        .enumerate()
        .for_each(|(plane, (ys, arg))| {
            let base = plane * h * w;
            let xp = &xs[base..base + h * w];
            for oh in 0..ho {
                for ow in 0..wo {
                    let first = oh * s * w + ow * s;
                    let (mut best, mut top) = (first, xp[first]);
                    for i in 0..k {
                        let row = first + i * w;
                        for (j, &v) in xp[row..row + k].iter().enumerate() {
                            if v > top {
                                (best, top) = (row + j, v);
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

fn batchnorm_forward(
    x: SecretTensor,
    gamma: &Param,
    beta: &Param,
    running_mean: &mut [f32],
    running_var: &mut [f32],
    train: bool,
) -> Result<(SecretTensor, Option<BnCache>), NnError> {
    let (n, c, h, w) = nchw(&x, "batchnorm")?;
    if gamma.value.len() != c {
        return Err(goten_field::ShapeError::new(format!(
            "batchnorm over {} channels got {c}",
            gamma.value.len()
        ))
        .into());
    }
    let hw = h * w;
    let count = n * hw;
    let (g, b) = (gamma.value.expose(), beta.value.expose());
    let mut y = SecretTensor::zeros(x.shape());
    if hw == 0 || c == 0 {
        // Nothing to normalise; keep a cache so that backward works on empty batches too.
        let cache = train.then(|| BnCache {
            x,
            stats: vec![(0.0, 0.0); c],
        });
        return Ok((y, cache));
    }
    let xs = x.expose();
    let ys = y.expose_mut();
    if !train {
        let affine: Vec<(f32, f32)> = (0..c)
            .map(|ch| {
                let inv = 1.0 / (f64::from(running_var[ch]) + BN_EPS).sqrt();
                (
                    (f64::from(g[ch]) * inv) as f32,
                    (f64::from(b[ch]) - f64::from(g[ch]) * f64::from(running_mean[ch]) * inv)
                        as f32,
                )
            })
            .collect();
        ys.par_chunks_mut(hw)
            .zip(xs.par_chunks(hw))
            .enumerate()
            .for_each(|(blk, (y, x))| {
                let (scale, shift) = affine[blk % c];
                y.iter_mut()
                    .zip(x)
                    .for_each(|(y, &x)| *y = x * scale + shift);
            });
        return Ok((y, None));
    }
    // Per-channel statistics, each summed by one thread in a fixed order (E0 and E1 must agree
    // bit for bit whatever their thread counts); then the elementwise pass over (image,
    // channel) blocks in parallel.
    let moments: Vec<(f64, f64)> = (0..c)
        .into_par_iter()
        .map(|ch| {
            let mut acc = (Lanes::default(), Lanes::default());
            for i in 0..n {
                let plane = &xs[(i * c + ch) * hw..][..hw];
                sum_and_dot(&mut acc, plane, plane, |v| v);
            }
            let mean = acc.0.total() / count as f64;
            (mean, (acc.1.total() / count as f64 - mean * mean).max(0.0))
        })
        .collect();
    let stats: Vec<(f64, f64)> = moments
        .iter()
        .map(|&(mean, var)| (mean, 1.0 / (var + BN_EPS).sqrt()))
        .collect();
    ys.par_chunks_mut(hw)
        .zip(xs.par_chunks(hw))
        .enumerate()
        .for_each(|(blk, (y, x))| {
            let ch = blk % c;
            for (y, &x) in y.iter_mut().zip(x) {
                *y = g[ch] * xhat(x, stats[ch]) + b[ch];
            }
        });
    for (ch, &(mean, var)) in moments.iter().enumerate() {
        // Running statistics use the unbiased variance, as PyTorch does.
        let unbiased = if count > 1 {
            var * count as f64 / (count - 1) as f64
        } else {
            var
        };
        running_mean[ch] = (1.0 - BN_MOMENTUM) * running_mean[ch] + BN_MOMENTUM * mean as f32;
        running_var[ch] = (1.0 - BN_MOMENTUM) * running_var[ch] + BN_MOMENTUM * unbiased as f32;
    }
    Ok((y, Some(BnCache { x, stats })))
}

/// Backward of a training-mode batch norm, computed in place in `dy`'s buffer.
fn batchnorm_backward(
    mut dy: SecretTensor,
    cache: &BnCache,
    gamma: &mut Param,
    beta: &mut Param,
) -> SecretTensor {
    let s = dy.shape().to_vec();
    let (n, c, hw) = (s[0], s[1], s[2] * s[3]);
    let count = (n * hw) as f64;
    let xs = cache.x.expose();
    let stats = &cache.stats;
    let g = gamma.value.expose().to_vec();
    let (dg, db) = (gamma.grad.expose_mut(), beta.grad.expose_mut());
    if hw == 0 || c == 0 {
        return dy;
    }
    let d = dy.expose();
    let sums: Vec<(f64, f64)> = (0..c)
        .into_par_iter()
        .map(|ch| {
            let mut acc = (Lanes::default(), Lanes::default());
            for i in 0..n {
                let o = (i * c + ch) * hw;
                sum_and_dot(&mut acc, &d[o..o + hw], &xs[o..o + hw], |x| {
                    xhat(x, stats[ch])
                });
            }
            (acc.0.total(), acc.1.total())
        })
        .collect();
    for (ch, &(sum_d, sum_dx)) in sums.iter().enumerate() {
        dg[ch] = sum_dx as f32;
        db[ch] = sum_d as f32;
    }
    // dx = gamma * inv_std / N * (N dy - sum(dy) - xhat * sum(dy xhat))
    dy.expose_mut()
        .par_chunks_mut(hw)
        .zip(xs.par_chunks(hw))
        .enumerate()
        .for_each(|(blk, (d, x))| {
            let ch = blk % c;
            let (sum_d, sum_dx) = sums[ch];
            let k = f64::from(g[ch]) * stats[ch].1 / count;
            for (d, &x) in d.iter_mut().zip(x) {
                let xh = f64::from(xhat(x, stats[ch]));
                *d = (k * (count * f64::from(*d) - sum_d - xh * sum_dx)) as f32;
            }
        });
    dy
}
