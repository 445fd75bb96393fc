//! Elementwise layers inside the enclave: ReLU, dropout, bias addition and the residual add.
//!
//! Where it sits: between the linear products (from the backend) and the next layer. Every pass
//! runs over fixed chunks, so the values never depend on the thread count; dropout's mask comes
//! from a stream keyed by a secret of the enclave (the host cannot predict which units drop).

use goten_field::{Prg, SecretKey};
use rayon::prelude::*;

use super::NnError;
use super::batchnorm::Lanes;
use crate::SecretTensor;

/// Elements per parallel task in elementwise passes.
const CHUNK: usize = 1 << 14;

/// max(x, 0) in place; returns which inputs were positive.
pub fn relu(y: &mut SecretTensor) -> Vec<bool> {
    let mut m = vec![false; y.len()];
    y.expose_mut()
        .par_chunks_mut(CHUNK)
        .zip(m.par_chunks_mut(CHUNK))
        .for_each(|(y, m)| {
            for (v, p) in y.iter_mut().zip(m) {
                *p = *v > 0.0;
                *v = if *p { *v } else { 0.0 };
            }
        });
    m
}

/// Zeroes the gradient where `keep` is false.
pub fn mask(d: &mut SecretTensor, keep: &[bool]) {
    d.expose_mut()
        .par_chunks_mut(CHUNK)
        .zip(keep.par_chunks(CHUNK))
        .for_each(|(d, m)| {
            for (v, &p) in d.iter_mut().zip(m) {
                *v = if p { *v } else { 0.0 };
            }
        });
}

/// Inverted dropout: each element is kept with probability `1 - p` and scaled by `1 / (1 - p)`.
/// The draws are `(stream, step)`'s 32-bit words for purpose `nn/dropout`, op `op`: E0 and E1
/// draw the same mask; a new step draws a new one. Returns the mask.
pub fn dropout(y: &mut SecretTensor, p: f32, key: &SecretKey, step: u64, op: u64) -> Vec<bool> {
    let mut draws = vec![0u32; y.len()];
    Prg::new(key, "nn/dropout", op).fill_u32(step, 0, &mut draws);
    // Keep when the draw is at or above p * 2^32 (exact for p a multiple of 2^-32).
    let cut = (f64::from(p) * 4_294_967_296.0) as u64;
    let keep: Vec<bool> = draws.iter().map(|&d| u64::from(d) >= cut).collect();
    mask(y, &keep);
    scale(y, 1.0 / (1.0 - p));
    keep
}

/// Multiplies every element by `s`.
pub fn scale(y: &mut SecretTensor, s: f32) {
    y.expose_mut()
        .par_chunks_mut(CHUNK)
        .for_each(|y| y.iter_mut().for_each(|v| *v *= s));
}

/// Adds `b[o]` to every element of channel `o` of `y` (`[n, o, ...]`).
pub fn add_bias(y: &mut SecretTensor, b: &[f32]) {
    let o = b.len();
    let inner = y.shape().get(2..).map_or(1, |s| s.iter().product());
    if o == 0 || inner == 0 {
        return;
    }
    y.expose_mut()
        .par_chunks_mut(inner)
        .enumerate()
        .for_each(|(blk, y)| {
            let v = b[blk % o];
            y.iter_mut().for_each(|y| *y += v);
        });
}

/// The gradient of a bias over `[n, o, ...]`: per channel, the sum over images and positions,
/// in a fixed order (f64 lanes).
pub fn bias_grad(dy: &SecretTensor, out: &mut [f32]) {
    let o = out.len();
    let n = dy.shape().first().copied().unwrap_or(0);
    let inner = dy
        .shape()
        .get(2..)
        .map_or(1, |s| s.iter().product::<usize>());
    let d = dy.expose();
    out.par_iter_mut().enumerate().for_each(|(ch, g)| {
        let mut acc = Lanes::default();
        for i in 0..n {
            acc.add(&d[(i * o + ch) * inner..][..inner]);
        }
        *g = acc.total() as f32;
    });
}

/// `a += b` for tensors of equal shapes (the residual add).
pub fn add_into(a: &mut SecretTensor, b: &SecretTensor) -> Result<(), NnError> {
    if a.shape() != b.shape() {
        return Err(goten_field::ShapeError::new(format!(
            "residual add of {:?} and {:?}: a block's output must match its shortcut",
            a.shape(),
            b.shape()
        ))
        .into());
    }
    a.expose_mut()
        .par_chunks_mut(CHUNK)
        .zip(b.expose().par_chunks(CHUNK))
        .for_each(|(a, b)| a.iter_mut().zip(b).for_each(|(a, &b)| *a += b));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropout_keeps_about_one_minus_p_and_scales() {
        let key = SecretKey::from_bytes([3; 32]);
        let mut y = SecretTensor::new(&[4, 5000], vec![1.0; 20_000]).unwrap();
        let keep = dropout(&mut y, 0.25, &key, 7, 1);
        let kept = keep.iter().filter(|&&k| k).count();
        assert!((14_500..15_500).contains(&kept), "{kept} kept of 20000");
        for (v, k) in y.expose().iter().zip(&keep) {
            assert_eq!(*v, if *k { 1.0 / 0.75 } else { 0.0 });
        }
        // Same stream, same mask; another step or op, another mask.
        let mut again = SecretTensor::new(&[4, 5000], vec![1.0; 20_000]).unwrap();
        assert_eq!(dropout(&mut again, 0.25, &key, 7, 1), keep);
        let mut other = SecretTensor::new(&[4, 5000], vec![1.0; 20_000]).unwrap();
        assert_ne!(dropout(&mut other, 0.25, &key, 8, 1), keep);
    }

    #[test]
    fn bias_add_and_gradient_follow_channels() {
        let mut y = SecretTensor::zeros(&[2, 3, 2, 1]);
        add_bias(&mut y, &[1.0, 2.0, 3.0]);
        assert_eq!(
            y.expose(),
            &[1., 1., 2., 2., 3., 3., 1., 1., 2., 2., 3., 3.]
        );
        let mut g = [0f32; 3];
        bias_grad(&y, &mut g);
        assert_eq!(g, [4.0, 8.0, 12.0]);
        let mut d = SecretTensor::zeros(&[2, 3]);
        add_bias(&mut d, &[1.0, 2.0, 3.0]);
        assert_eq!(d.expose(), &[1., 2., 3., 1., 2., 3.]);
    }
}
