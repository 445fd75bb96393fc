//! Deterministic Xavier/Glorot-normal initialisation from a seed (PROTOCOL.md section 5).
//!
//! Both enclaves derive the same weights from the job's seed, so they start bit-identical.

use goten_field::{Prg, SecretKey};

/// Standard normal samples from an AES-CTR stream (Box-Muller on 24-bit uniforms, in f64).
pub fn normal(seed: u64, stream: u64, out: &mut [f32], std: f32) {
    let mut k = [0u8; 32];
    k[..8].copy_from_slice(&seed.to_le_bytes());
    let prg = Prg::new(&SecretKey::from_bytes(k), "init/normal", stream);
    let mut u = vec![0f32; out.len() + out.len() % 2];
    prg.fill_unit_f32(0, 0, &mut u);
    for (i, pair) in u.chunks_exact(2).enumerate() {
        // u1 in (0, 1]: avoid log(0).
        let u1 = 1.0 - f64::from(pair[0]);
        let u2 = f64::from(pair[1]);
        let r = (-2.0 * u1.ln()).sqrt();
        let t = 2.0 * std::f64::consts::PI * u2;
        out[2 * i] = (r * t.cos()) as f32 * std;
        if 2 * i + 1 < out.len() {
            out[2 * i + 1] = (r * t.sin()) as f32 * std;
        }
    }
}

/// Xavier-normal standard deviation, gain 1: sqrt(2 / (fan_in + fan_out)).
pub fn xavier_std(fan_in: usize, fan_out: usize) -> f32 {
    (2.0 / (fan_in + fan_out) as f64).sqrt() as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_has_the_right_moments_and_is_deterministic() {
        let mut a = vec![0f32; 100_001];
        normal(1, 2, &mut a, 0.5);
        let mean = a.iter().map(|&x| f64::from(x)).sum::<f64>() / a.len() as f64;
        let var = a
            .iter()
            .map(|&x| (f64::from(x) - mean).powi(2))
            .sum::<f64>()
            / a.len() as f64;
        assert!(
            mean.abs() < 0.01 && (var.sqrt() - 0.5).abs() < 0.01,
            "{mean} {var}"
        );
        let mut b = vec![0f32; 100_001];
        normal(1, 2, &mut b, 0.5);
        assert_eq!(a, b);
        normal(1, 3, &mut b, 0.5);
        assert_ne!(a, b);
    }
}
