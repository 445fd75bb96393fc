//! Input preparation inside the enclave: per-channel normalisation and the training
//! augmentation (random 32x32 crop of the image zero-padded by 4, horizontal flip with
//! probability 1/2), drawn from a stream keyed by the job seed so E0 and E1 agree.

use goten_field::{Prg, SecretKey};

use crate::SecretTensor;

/// CIFAR-10 per-channel mean of pixel/255.
pub const MEAN: [f32; 3] = [0.4914, 0.4822, 0.4465];
/// CIFAR-10 per-channel standard deviation of pixel/255.
pub const STD: [f32; 3] = [0.2470, 0.2435, 0.2616];

const SIDE: usize = 32;
const PAD: usize = 4;

/// A normalised `[n, 3, 32, 32]` batch from 8-bit channel-major images; with `augment =
/// Some((key, step))`, each image is randomly cropped and flipped by draws from the session's
/// augmentation key (secret in protected modes, so the host cannot predict the crops).
pub fn batch(images: &[&[u8]], augment: Option<(&SecretKey, u64)>) -> SecretTensor {
    let n = images.len();
    let mut out = SecretTensor::zeros(&[n, 3, SIDE, SIDE]);
    let mut draws = vec![0u32; 3 * n];
    if let Some((key, step)) = augment {
        Prg::new(key, "input/augment", 0).fill_u32(step, 0, &mut draws);
    }
    let o = out.expose_mut();
    for (i, img) in images.iter().enumerate() {
        let (dy, dx, flip) = match augment {
            Some(_) => (
                (draws[3 * i] % 9) as isize - PAD as isize,
                (draws[3 * i + 1] % 9) as isize - PAD as isize,
                draws[3 * i + 2] & 1 == 1,
            ),
            None => (0, 0, false),
        };
        for ch in 0..3 {
            let zero = -MEAN[ch] / STD[ch];
            for y in 0..SIDE {
                for x in 0..SIDE {
                    let xs = if flip { SIDE - 1 - x } else { x };
                    let (sy, sx) = (y as isize + dy, xs as isize + dx);
                    let v = if (0..SIDE as isize).contains(&sy) && (0..SIDE as isize).contains(&sx)
                    {
                        (f32::from(img[ch * SIDE * SIDE + sy as usize * SIDE + sx as usize])
                            / 255.0
                            - MEAN[ch])
                            / STD[ch]
                    } else {
                        zero
                    };
                    o[((i * 3 + ch) * SIDE + y) * SIDE + x] = v;
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_and_augments_deterministically() {
        let img: Vec<u8> = (0..3072).map(|i| (i % 256) as u8).collect();
        let plain = batch(&[&img], None);
        let v = plain.expose()[0];
        assert!((v - (0.0 - MEAN[0]) / STD[0]).abs() < 1e-6);
        let k = SecretKey::from_bytes([5; 32]);
        let a = batch(&[&img, &img], Some((&k, 1)));
        let b = batch(&[&img, &img], Some((&k, 1)));
        assert_eq!(a.expose(), b.expose());
        let c = batch(&[&img, &img], Some((&k, 2)));
        assert_ne!(a.expose(), c.expose());
    }
}
