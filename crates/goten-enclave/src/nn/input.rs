//! Input preparation inside the enclave: per-channel normalisation and the training
//! augmentation (random crop of the image zero-padded by `pad`, horizontal flip with
//! probability 1/2), drawn from a stream keyed by the job secret so E0 and E1 agree.
//!
//! Where it sits: between the opened records (8-bit, channel-major) and the model's first
//! layer. [`InputSpec`] says what an image is for a dataset format: its shape, its
//! normalisation statistics and its augmentation.

use goten_field::{Prg, SecretKey};

use crate::SecretTensor;

/// CIFAR-10 per-channel mean of pixel/255.
pub const MEAN: [f32; 3] = [0.4914, 0.4822, 0.4465];
/// CIFAR-10 per-channel standard deviation of pixel/255.
pub const STD: [f32; 3] = [0.2470, 0.2435, 0.2616];

/// What one input image is: `[channels, height, width]` 8-bit pixels, normalised per channel
/// as `(pixel / 255 - mean) / std`, and augmented in training by a random crop of the image
/// zero-padded by `pad` (0: none) and, with `flip`, a horizontal flip.
///
/// With `from_training`, the statistics are not given: the session computes them inside the
/// enclave from the opened training images ([`channel_stats`]) before the first step, so
/// neither the host nor sealed data need to reveal them.
#[derive(Clone, Debug, PartialEq)]
pub struct InputSpec {
    /// Channels, height, width.
    pub shape: [usize; 3],
    /// Per-channel mean of pixel / 255 (empty with `from_training`).
    pub mean: Vec<f32>,
    /// Per-channel standard deviation of pixel / 255 (empty with `from_training`).
    pub std: Vec<f32>,
    /// The statistics are to be computed from the training images, inside the enclave.
    pub from_training: bool,
    /// Padding of the random crop (0: no crop).
    pub pad: usize,
    /// Random horizontal flips.
    pub flip: bool,
}

impl Default for InputSpec {
    fn default() -> Self {
        Self::cifar10()
    }
}

impl InputSpec {
    /// CIFAR-10: 3x32x32, its training-set statistics, crop with padding 4 and flips.
    pub fn cifar10() -> Self {
        InputSpec {
            shape: [3, 32, 32],
            mean: MEAN.to_vec(),
            std: STD.to_vec(),
            from_training: false,
            pad: 4,
            flip: true,
        }
    }

    /// CIFAR-100: as CIFAR-10 with CIFAR-100's training-set statistics.
    pub fn cifar100() -> Self {
        InputSpec {
            mean: vec![0.5071, 0.4865, 0.4409],
            std: vec![0.2673, 0.2564, 0.2762],
            ..Self::cifar10()
        }
    }

    /// MNIST: 1x28x28, mean 0.1307 and deviation 0.3081, no augmentation (digits must not
    /// flip, and the classic recipes do not crop).
    pub fn mnist() -> Self {
        InputSpec {
            shape: [1, 28, 28],
            mean: vec![0.1307],
            std: vec![0.3081],
            from_training: false,
            pad: 0,
            flip: false,
        }
    }

    /// Fashion-MNIST: 1x28x28, mean 0.2860 and deviation 0.3530, no augmentation.
    pub fn fashion_mnist() -> Self {
        InputSpec {
            mean: vec![0.2860],
            std: vec![0.3530],
            ..Self::mnist()
        }
    }

    /// Bytes of one image.
    pub fn image_bytes(&self) -> usize {
        self.shape.iter().product()
    }

    /// This spec with its statistics to be computed from the training images.
    pub fn stats_from_training(self) -> Self {
        InputSpec {
            mean: Vec::new(),
            std: Vec::new(),
            from_training: true,
            ..self
        }
    }

    /// This spec with the statistics of `images` (concatenated images of this shape) in
    /// place of the ones it asked to compute.
    pub fn with_stats_of(self, images: &[u8]) -> Self {
        let (mean, std) = channel_stats(images, self.shape);
        InputSpec {
            mean,
            std,
            from_training: false,
            ..self
        }
    }

    /// Whether the statistics fit the shape and are usable (one positive finite deviation and
    /// one finite mean per channel, or none yet with `from_training`; an augmentation that
    /// fits the image).
    pub fn check(&self) -> Result<(), String> {
        let c = self.shape[0];
        if self.image_bytes() == 0 {
            return Err(format!("image shape {:?} is empty", self.shape));
        }
        if self.from_training {
            if !(self.mean.is_empty() && self.std.is_empty()) {
                return Err("statistics both given and to be computed".into());
            }
        } else if self.mean.len() != c || self.std.len() != c {
            return Err(format!(
                "{c} channels need {c} means and deviations, got {} and {}",
                self.mean.len(),
                self.std.len()
            ));
        }
        if self.std.iter().any(|s| !(s.is_finite() && *s > 0.0))
            || self.mean.iter().any(|m| !m.is_finite())
        {
            return Err("normalisation statistics must be finite, deviations positive".into());
        }
        if self.pad > self.shape[1].min(self.shape[2]) {
            return Err(format!("crop padding {} exceeds the image", self.pad));
        }
        Ok(())
    }
}

/// Per-channel mean and standard deviation of pixel / 255 over `images` (concatenated,
/// channel-major, of `shape`), summed in f64 in a fixed order so E0, E1 and a resumed run get
/// the same bits; deviations are floored at 1e-3 so a constant channel cannot divide by zero.
pub fn channel_stats(images: &[u8], shape: [usize; 3]) -> (Vec<f32>, Vec<f32>) {
    let [c, h, w] = shape;
    let plane = h * w;
    let mut sums = vec![(0f64, 0f64); c];
    for img in images.chunks_exact(c * plane) {
        for (ch, s) in sums.iter_mut().enumerate() {
            for &p in &img[ch * plane..(ch + 1) * plane] {
                let v = f64::from(p) / 255.0;
                s.0 += v;
                s.1 += v * v;
            }
        }
    }
    let n = (images.len() / c.max(1)).max(1) as f64;
    sums.iter()
        .map(|&(s, q)| {
            let m = s / n;
            (m as f32, ((q / n - m * m).max(0.0).sqrt().max(1e-3)) as f32)
        })
        .unzip()
}

/// A normalised `[n, c, h, w]` batch from 8-bit channel-major images of `spec`; with `augment =
/// Some((key, step))`, each image is randomly cropped and flipped (as `spec` allows) by draws
/// from the session's augmentation key (secret in protected modes, so the host cannot predict
/// the crops).
pub fn batch(
    spec: &InputSpec,
    images: &[&[u8]],
    augment: Option<(&SecretKey, u64)>,
) -> SecretTensor {
    let [c, h, w] = spec.shape;
    let n = images.len();
    let mut out = SecretTensor::zeros(&[n, c, h, w]);
    let mut draws = vec![0u32; 3 * n];
    if let Some((key, step)) = augment {
        Prg::new(key, "input/augment", 0).fill_u32(step, 0, &mut draws);
    }
    let span = 2 * spec.pad as u32 + 1;
    let o = out.expose_mut();
    for (i, img) in images.iter().enumerate() {
        let (dy, dx, flip) = match augment {
            Some(_) => (
                (draws[3 * i] % span) as isize - spec.pad as isize,
                (draws[3 * i + 1] % span) as isize - spec.pad as isize,
                spec.flip && draws[3 * i + 2] & 1 == 1,
            ),
            None => (0, 0, false),
        };
        for ch in 0..c {
            let (mean, std) = (spec.mean[ch], spec.std[ch]);
            let zero = -mean / std;
            let plane = &img[ch * h * w..(ch + 1) * h * w];
            for y in 0..h {
                for x in 0..w {
                    let xs = if flip { w - 1 - x } else { x };
                    let (sy, sx) = (y as isize + dy, xs as isize + dx);
                    let v = if (0..h as isize).contains(&sy) && (0..w as isize).contains(&sx) {
                        (f32::from(plane[sy as usize * w + sx as usize]) / 255.0 - mean) / std
                    } else {
                        zero
                    };
                    o[((i * c + ch) * h + y) * w + x] = v;
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
        let spec = InputSpec::cifar10();
        let img: Vec<u8> = (0..3072).map(|i| (i % 256) as u8).collect();
        let plain = batch(&spec, &[&img], None);
        let v = plain.expose()[0];
        assert!((v - (0.0 - MEAN[0]) / STD[0]).abs() < 1e-6);
        let k = SecretKey::from_bytes([5; 32]);
        let a = batch(&spec, &[&img, &img], Some((&k, 1)));
        let b = batch(&spec, &[&img, &img], Some((&k, 1)));
        assert_eq!(a.expose(), b.expose());
        let c = batch(&spec, &[&img, &img], Some((&k, 2)));
        assert_ne!(a.expose(), c.expose());
    }

    #[test]
    fn grey_images_without_augmentation_are_only_normalised() {
        let spec = InputSpec::mnist();
        assert_eq!(spec.image_bytes(), 784);
        let img: Vec<u8> = (0..784).map(|i| (i % 251) as u8).collect();
        let k = SecretKey::from_bytes([5; 32]);
        let a = batch(&spec, &[&img], Some((&k, 1)));
        assert_eq!(a.shape(), &[1, 1, 28, 28]);
        for (v, &p) in a.expose().iter().zip(&img) {
            assert_eq!(*v, (f32::from(p) / 255.0 - 0.1307) / 0.3081);
        }
        assert!(spec.check().is_ok());
        let bad = InputSpec {
            std: vec![0.0],
            ..InputSpec::mnist()
        };
        assert!(bad.check().is_err());
    }

    #[test]
    fn channel_stats_match_a_two_pass_reference() {
        let shape = [2, 3, 5];
        let images: Vec<u8> = (0..4 * 30).map(|i| ((i * 37 + 11) % 256) as u8).collect();
        let (mean, std) = channel_stats(&images, shape);
        for ch in 0..2 {
            let vals: Vec<f64> = images
                .chunks(30)
                .flat_map(|img| img[ch * 15..(ch + 1) * 15].iter())
                .map(|&p| f64::from(p) / 255.0)
                .collect();
            let m = vals.iter().sum::<f64>() / vals.len() as f64;
            let var = vals.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / vals.len() as f64;
            assert!((f64::from(mean[ch]) - m).abs() < 1e-6, "{ch}");
            assert!((f64::from(std[ch]) - var.sqrt()).abs() < 1e-6, "{ch}");
        }
        // A constant channel gets the floor, not a division by zero.
        let (_, s) = channel_stats(&[7u8; 30], shape);
        assert_eq!(s, vec![1e-3, 1e-3]);
        let spec = InputSpec::mnist().stats_from_training();
        assert!(spec.check().is_ok());
        let done = spec.with_stats_of(&[0u8, 255].repeat(392));
        assert!(!done.from_training && done.check().is_ok());
        assert!((done.mean[0] - 0.5).abs() < 1e-6 && (done.std[0] - 0.5).abs() < 1e-6);
    }
}
