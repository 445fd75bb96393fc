//! BatchNorm2d inside the enclave: training mode (batch statistics, PyTorch's running-statistics
//! update) and evaluation mode (running statistics), forward and backward.
//!
//! Where it sits: called by [`super::layers::Layer`] between a convolution's product (from the
//! linear backend) and the next non-linearity. Per-channel sums are taken by one thread each in
//! a fixed order (eight f64 lanes), so E0 and E1 agree bit for bit on any thread count.

use rayon::prelude::*;

use super::NnError;
use super::layers::{Param, nchw};
use crate::SecretTensor;

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

impl std::fmt::Debug for BnCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BnCache(<redacted>)")
    }
}

const BN_EPS: f64 = 1e-5;
const BN_MOMENTUM: f32 = 0.1;

/// Eight-lane f64 accumulator: `lanes[i]` sums the terms at positions `i mod 8` of each slice,
/// and the lanes are added in a fixed order, so sums are the same whatever the threads, and
/// the loops vectorize (one running sum would be a chain of dependent additions).
#[derive(Clone, Copy, Default)]
pub(super) struct Lanes(pub(super) [f64; 8]);

impl Lanes {
    /// Adds the terms of `a`.
    pub(super) fn add(&mut self, a: &[f32]) {
        let c = a.chunks_exact(8);
        for (l, &v) in c.remainder().iter().enumerate() {
            self.0[l] += f64::from(v);
        }
        for a in c {
            for (s, &v) in self.0.iter_mut().zip(a) {
                *s += f64::from(v);
            }
        }
    }

    pub(super) fn total(&self) -> f64 {
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

pub(super) fn batchnorm_forward(
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
pub(super) fn batchnorm_backward(
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
