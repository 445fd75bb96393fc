//! Dynamic block-floating-point quantization (PROTOCOL.md section 3, SWALP-style).
//!
//! Where it sits: the first and last step of every outsourced linear op inside E0/E1. Operands
//! are quantized afresh for each op; the integer result of the secure product is scaled back.
//!
//! For a tensor x with m = max |x| and e = floor(log2 m) (e = 0 when m = 0), the integer is
//! `clamp(floor(x * 2^s + r), -2^(bits-1), 2^(bits-1) - 1)` with s = bits - 2 - e: the largest
//! entry lands in [2^(bits-2), 2^(bits-1)], so at most one step of clamping. `r` is uniform in
//! [0, 1) from the rounding-noise stream only E0 and E1 hold (never a mask stream: the prototype
//! drew it from U/V's words, which made E = aQ - U depend on the secret), or 0.5 for nearest
//! rounding. All arithmetic is exact in f64 (x is f32, 2^s a power of two, r on a 2^-24 grid),
//! so E0 and E1 get bit-identical integers.
//!
//! Error: every entry satisfies |x - xQ * 2^-s| <= u = 2^-s in both modes (nearest rounding is
//! within half a step except where the maximum is clamped from 2^(bits-1), a full step). A product of quantized operands then differs from the float product by at most
//! `sum_t (|a_t| u_b + |b_t| u_a + u_a u_b)` over the terms of each output entry, plus f32
//! rounding of the result (`docs/DESIGN.md`, fidelity bound).

use goten_field::Prg;

use crate::par::{self, CHUNK};
use thiserror::Error;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// How values are rounded to integers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Rounding {
    /// floor(x + r), r uniform in [0, 1): unbiased in expectation (the default).
    Stochastic,
    /// Round half up (floor(x + 0.5)): deterministic.
    Nearest,
}

/// Quantizer settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct QuantConfig {
    /// Integer width including sign, 2 to 16 (default 8).
    pub bits: u32,
    /// Rounding mode.
    pub rounding: Rounding,
}

impl Default for QuantConfig {
    fn default() -> Self {
        QuantConfig {
            bits: 8,
            rounding: Rounding::Stochastic,
        }
    }
}

/// Why a tensor cannot be quantized.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum QuantError {
    /// NaN or infinity in an operand: training has diverged.
    #[error("operand holds a non-finite value at index {0} (training diverged?)")]
    NonFinite(usize),
    /// Unsupported width.
    #[error("quantization width {0} bits is unsupported (2 to 16)")]
    Bits(u32),
}

/// Quantized integers and the scale exponent: value ~= q * 2^-shift.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Quantized {
    /// The integers, each within [-2^(bits-1), 2^(bits-1) - 1].
    pub values: Vec<i32>,
    /// s in value = q * 2^-s.
    pub shift: i32,
}

impl std::fmt::Debug for Quantized {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Quantized({} values, shift {}, <redacted>)",
            self.values.len(),
            self.shift
        )
    }
}

/// floor(log2 m) for a finite m > 0, exactly (from the f64 exponent, no `log2` rounding).
fn floor_log2(m: f32) -> i32 {
    let b = f64::from(m).to_bits();
    ((b >> 52) & 0x7ff) as i32 - 1023
}

impl QuantConfig {
    /// Checks the width.
    pub fn validate(&self) -> Result<(), QuantError> {
        if (2..=16).contains(&self.bits) {
            Ok(())
        } else {
            Err(QuantError::Bits(self.bits))
        }
    }

    /// Largest magnitude of a quantized entry, 2^(bits-1).
    pub fn max_abs(&self) -> i64 {
        1i64 << (self.bits - 1)
    }

    /// Quantizes `x`. `noise` must hold one value in [0, 1) per element for stochastic
    /// rounding; it is ignored for nearest rounding.
    pub fn quantize(&self, x: &[f32], noise: &[f32]) -> Result<Quantized, QuantError> {
        if self.rounding == Rounding::Stochastic {
            assert_eq!(noise.len(), x.len(), "one noise value per element");
        }
        self.quantize_with(x, |k, buf| {
            buf.copy_from_slice(&noise[k * CHUNK..][..buf.len()])
        })
    }

    /// Quantizes `x` with stochastic-rounding noise drawn from `prg`'s unit stream of
    /// `iteration` at elements `[offset, offset + x.len())`, expanded chunk by chunk beside the
    /// rounding (no full-size noise buffer): the same integers as [`Self::quantize`] given that
    /// slice of the stream. Nearest rounding ignores the stream.
    pub fn quantize_stream(
        &self,
        x: &[f32],
        (prg, iteration, offset): (&Prg, u64, u64),
    ) -> Result<Quantized, QuantError> {
        self.quantize_with(x, |k, buf| {
            prg.fill_unit_f32(iteration, offset + (k * CHUNK) as u64, buf)
        })
    }

    /// The quantizer; `noise(k, buf)` fills `buf` with the noise of chunk `k` (elements from
    /// `k * CHUNK`) and is called only for stochastic rounding.
    fn quantize_with(
        &self,
        x: &[f32],
        noise: impl Fn(usize, &mut [f32]) + Sync + Send,
    ) -> Result<Quantized, QuantError> {
        self.validate()?;
        // On all cores over fixed chunks; max and the elementwise map are exact, so the result
        // does not depend on the thread count.
        let m = par::fold_chunks(
            x,
            // NaN counts as infinite: `max` would skip it.
            |c| {
                c.iter().fold(0f32, |m, &v| {
                    m.max(if v.is_nan() { f32::INFINITY } else { v.abs() })
                })
            },
            f32::max,
            || 0f32,
        );
        if !m.is_finite() {
            let i = x
                .iter()
                .position(|v| !v.is_finite())
                .expect("a non-finite entry");
            return Err(QuantError::NonFinite(i));
        }
        let e = if m == 0.0 { 0 } else { floor_log2(m) };
        let shift = self.bits as i32 - 2 - e;
        let scale = 2f64.powi(shift);
        let (lo, hi) = (-(1i64 << (self.bits - 1)), (1i64 << (self.bits - 1)) - 1);
        let q = |y: f64| floor_small(y).clamp(lo, hi) as i32;
        let mut values = vec![0i32; x.len()];
        let stochastic = self.rounding == Rounding::Stochastic;
        par::chunks_mut_init(
            &mut values,
            || vec![0.5f32; if stochastic { CHUNK } else { 0 }],
            |buf, k, out| {
                let x = par::chunk(x, k);
                if stochastic {
                    let r = &mut buf[..x.len()];
                    noise(k, r);
                    for ((o, &v), &r) in out.iter_mut().zip(x).zip(r.iter()) {
                        *o = q(f64::from(v) * scale + f64::from(r));
                    }
                } else {
                    for (o, &v) in out.iter_mut().zip(x) {
                        *o = q(f64::from(v) * scale + 0.5);
                    }
                }
            },
        );
        Ok(Quantized { values, shift })
    }

    /// The rounding error bound u of one entry quantized with `shift` (see the module docs).
    pub fn unit_error(&self, shift: i32) -> f64 {
        // Nearest rounding is within half a step, but the clamp of the maximum can cost a full
        // step; stay with the simple, always-valid bound.
        2f64.powi(-shift)
    }
}

/// Scales an exact integer result back: c * 2^-(shift_a + shift_b), rounded once to f32.
pub fn dequantize<T: Copy + Into<i64> + Sync>(c: &[T], shift_a: i32, shift_b: i32) -> Vec<f32> {
    let scale = 2f64.powi(-(shift_a + shift_b));
    par::map_collect(c, |&v| (v.into() as f64 * scale) as f32)
}

/// `floor(y)` as an integer for |y| < 2^62, without a libm call (the baseline x86-64 target
/// has no rounding instruction, and this runs on every operand entry): truncate, then step
/// down for negative non-integers.
#[inline(always)]
fn floor_small(y: f64) -> i64 {
    let t = y as i64;
    if (t as f64) > y { t - 1 } else { t }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn largest_entry_lands_in_the_top_binade() {
        let q = QuantConfig {
            bits: 8,
            rounding: Rounding::Nearest,
        };
        for m in [1e-30f32, 0.3, 1.0, 1.5, 2.0, 1000.0, 3e30] {
            let r = q.quantize(&[m, -m / 2.0, 0.0], &[]).unwrap();
            assert!((64..=127).contains(&r.values[0]), "{m}: {:?}", r.values);
            let back = r.values[0] as f64 * 2f64.powi(-r.shift);
            assert!(
                (back - m as f64).abs() <= 2f64.powi(-r.shift) + 1e-300,
                "{m} -> {back}"
            );
        }
        assert_eq!(q.quantize(&[0.0, 0.0], &[]).unwrap().values, vec![0, 0]);
    }

    #[test]
    fn stochastic_rounding_is_unbiased_and_uses_the_noise() {
        let q = QuantConfig::default();
        // 1.0 sets the scale (shift 6), 0.3 * 64 = 19.2 rounds to 19 or 20.
        let n = 10_000;
        let mut x = vec![0.3f32; n];
        x[0] = 1.0;
        let noise: Vec<f32> = (0..n).map(|i| (i as f32 + 0.5) / n as f32).collect();
        let r = q.quantize(&x, &noise).unwrap();
        let mean = r.values[1..].iter().map(|&v| v as f64).sum::<f64>() / (n - 1) as f64;
        assert!((mean - 19.2).abs() < 0.01, "{mean}");
        assert!(r.values[1..].iter().all(|&v| v == 19 || v == 20));
    }

    /// Noise drawn from the stream chunk by chunk gives the integers of the full-buffer path,
    /// at offsets and lengths around the chunk size, on 1 and 3 threads.
    #[test]
    fn stream_noise_equals_a_noise_buffer() {
        let prg = Prg::new(&goten_field::SecretKey::from_bytes([4; 32]), "test/q", 1);
        let q = QuantConfig::default();
        for n in [1, CHUNK - 1, CHUNK, 2 * CHUNK + 5] {
            let x: Vec<f32> = (0..n)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
                .collect();
            for offset in [0u64, 3, CHUNK as u64 + 1] {
                let mut noise = vec![0f32; n];
                prg.fill_unit_f32(9, offset, &mut noise);
                let want = q.quantize(&x, &noise).unwrap();
                for threads in [1, 3] {
                    let pool = rayon::ThreadPoolBuilder::new()
                        .num_threads(threads)
                        .build()
                        .unwrap();
                    let got = pool.install(|| q.quantize_stream(&x, (&prg, 9, offset)).unwrap());
                    assert_eq!(
                        (got.values.clone(), got.shift),
                        (want.values.clone(), want.shift)
                    );
                }
            }
        }
    }

    #[test]
    fn bad_inputs_are_errors() {
        let q = QuantConfig::default();
        assert_eq!(
            q.quantize(&[1.0, f32::NAN], &[0.0, 0.0]).unwrap_err(),
            QuantError::NonFinite(1)
        );
        assert!(
            QuantConfig {
                bits: 1,
                rounding: Rounding::Nearest
            }
            .quantize(&[1.0], &[])
            .is_err()
        );
        assert!(format!("{:?}", q.quantize(&[1.0], &[0.0]).unwrap()).contains("redacted"));
    }

    #[test]
    fn floor_small_is_floor() {
        for y in [
            0.0,
            -0.0,
            0.5,
            -0.5,
            1.0,
            -1.0,
            1.999,
            -1.999,
            127.5,
            -128.5,
            1e15 + 0.5,
            -1e15 - 0.5,
            f64::EPSILON,
            -f64::EPSILON,
        ] {
            assert_eq!(floor_small(y), y.floor() as i64, "{y}");
        }
    }

    #[test]
    fn dequantize_scales_exactly() {
        assert_eq!(dequantize(&[64 * 64, -3], 6, 6), vec![1.0, -3.0 / 4096.0]);
    }
}
