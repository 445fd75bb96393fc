//! The share ring Z_{2^k}, elements stored as centered `i32` residues.
//!
//! Every value that crosses the trust boundary is an element of this ring. The modulus is a power
//! of two so that (a) mapping PRG words to elements is unbiased by masking, with no rejection;
//! (b) reduction is a shift pair, exact in integers and in f64; (c) integer accelerators that wrap
//! modulo 2^32 reduce correctly for free, since 2^k divides 2^32. Secret sharing and Beaver
//! products need no division, so a ring serves as well as a field. `docs/DESIGN.md` explains
//! why k defaults to 21 and what the headroom means for the protocol.

use thiserror::Error;

/// Errors from constructing rings or ring elements.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum RingError {
    /// The requested width is outside what the exact kernels support.
    #[error("ring width {0} bits is unsupported: choose {min} to {max} bits", min = Ring::MIN_BITS, max = Ring::MAX_BITS)]
    UnsupportedBits(u32),
    /// A canonical residue was not below 2^k.
    #[error("value {value} is not a canonical residue of Z_2^{bits} (must be < 2^{bits})")]
    OutOfRange {
        /// The offending value.
        value: u64,
        /// Ring width.
        bits: u32,
    },
}

/// The ring Z_{2^k}. Elements are `i32` in the centered range [-2^(k-1), 2^(k-1)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ring {
    bits: u32,
}

impl Ring {
    /// Smallest supported width.
    pub const MIN_BITS: u32 = 2;
    /// Largest supported width: above 26 bits a single f64 product of two residues leaves fewer
    /// than 8 exact terms per chunk, and the f64 kernels stop making sense (see DESIGN.md).
    pub const MAX_BITS: u32 = 26;
    /// The default width (DESIGN.md, "Choice of modulus").
    pub const DEFAULT_BITS: u32 = 21;

    /// The default ring, Z_{2^21}.
    pub const DEFAULT: Ring = Ring {
        bits: Self::DEFAULT_BITS,
    };

    /// The ring Z_{2^bits}.
    pub fn new(bits: u32) -> Result<Ring, RingError> {
        if (Self::MIN_BITS..=Self::MAX_BITS).contains(&bits) {
            Ok(Ring { bits })
        } else {
            Err(RingError::UnsupportedBits(bits))
        }
    }

    /// k, the number of bits.
    #[inline]
    pub fn bits(self) -> u32 {
        self.bits
    }

    /// The modulus 2^k.
    #[inline]
    pub fn modulus(self) -> u64 {
        1u64 << self.bits
    }

    /// Largest centered representative, 2^(k-1) - 1.
    #[inline]
    pub fn max_centered(self) -> i32 {
        ((1u64 << (self.bits - 1)) - 1) as i32
    }

    /// Smallest centered representative, -2^(k-1).
    #[inline]
    pub fn min_centered(self) -> i32 {
        -(1i64 << (self.bits - 1)) as i32
    }

    #[inline]
    fn shift(self) -> u32 {
        32 - self.bits
    }

    /// Reduces a 32-bit word (any value, taken modulo 2^32) to its centered residue mod 2^k.
    #[inline(always)]
    pub fn reduce_u32(self, w: u32) -> i32 {
        ((w << self.shift()) as i32) >> self.shift()
    }

    /// Reduces any integer to its centered residue.
    #[inline(always)]
    pub fn reduce_i64(self, v: i64) -> i32 {
        self.reduce_u32(v as u32)
    }

    /// Reduces any integer to its centered residue.
    #[inline]
    pub fn reduce_i128(self, v: i128) -> i32 {
        self.reduce_u32(v as u32)
    }

    /// Largest magnitude an integer result may have and still be recovered exactly from its
    /// residue: 2^(k-1) - 1. A bilinear result `c` with `|c| <= headroom()` reconstructs to
    /// itself; anything larger wraps, which the protocol must rule out (DESIGN.md).
    #[inline]
    pub fn headroom(self) -> u64 {
        (1u64 << (self.bits - 1)) - 1
    }

    /// Whether `x` is a valid centered residue.
    #[inline]
    pub fn contains(self, x: i32) -> bool {
        x >= self.min_centered() && x <= self.max_centered()
    }

    /// `a + b`.
    #[inline(always)]
    pub fn add(self, a: i32, b: i32) -> i32 {
        self.reduce_u32((a as u32).wrapping_add(b as u32))
    }

    /// `a - b`.
    #[inline(always)]
    pub fn sub(self, a: i32, b: i32) -> i32 {
        self.reduce_u32((a as u32).wrapping_sub(b as u32))
    }

    /// `-a`.
    #[inline(always)]
    pub fn neg(self, a: i32) -> i32 {
        self.reduce_u32((a as u32).wrapping_neg())
    }

    /// `a * b`.
    #[inline(always)]
    pub fn mul(self, a: i32, b: i32) -> i32 {
        self.reduce_u32((a as u32).wrapping_mul(b as u32))
    }

    /// The canonical residue in [0, 2^k), used by the codecs.
    #[inline(always)]
    pub fn to_canonical(self, x: i32) -> u32 {
        (x as u32) & (u32::MAX >> self.shift())
    }

    /// Parses a canonical residue, rejecting values >= 2^k.
    #[inline]
    pub fn from_canonical(self, v: u32) -> Result<i32, RingError> {
        if u64::from(v) < self.modulus() {
            Ok(self.reduce_u32(v))
        } else {
            Err(RingError::OutOfRange {
                value: u64::from(v),
                bits: self.bits,
            })
        }
    }

    /// Exact embedding of a small integer; `None` when it is not a centered residue
    /// (the caller asked for a value the ring cannot hold without wrapping).
    #[inline]
    pub fn from_small(self, v: i64) -> Option<i32> {
        (v >= i64::from(self.min_centered()) && v <= i64::from(self.max_centered()))
            .then_some(v as i32)
    }

    /// Number of products of two arbitrary residues whose sum (plus one reduced residue carried
    /// in from a previous chunk) is still an exact integer in f64, i.e. has magnitude <= 2^53.
    /// Kernels that compute in f64 cut their reduction into chunks of at most this length.
    pub fn f64_exact_chunk(self) -> usize {
        let max_product = 1u128 << (2 * (self.bits - 1));
        let carry = 1u128 << (self.bits - 1);
        (((1u128 << 53) - carry) / max_product) as usize
    }

    /// Reduces an exact integer held in an f64 (|v| <= 2^53) to its centered residue, still as
    /// f64. All steps are exact: scaling by a power of two, rounding, and a multiply and
    /// subtract whose operands and result stay below 2^53.
    #[inline(always)]
    pub fn reduce_f64(self, v: f64) -> f64 {
        let q = self.modulus() as f64;
        v - q * (v * (1.0 / q)).round()
    }

    /// Converts an exact integer held in an f64 (|v| < 2^63) to its centered residue.
    #[inline(always)]
    pub fn reduce_exact_f64(self, v: f64) -> i32 {
        self.reduce_i64(v as i64)
    }
}

impl Default for Ring {
    fn default() -> Self {
        Ring::DEFAULT
    }
}

impl std::fmt::Display for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Z_2^{}", self.bits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_and_reduction() {
        let r = Ring::new(21).unwrap();
        assert_eq!(r.max_centered(), (1 << 20) - 1);
        assert_eq!(r.min_centered(), -(1 << 20));
        assert_eq!(r.reduce_i64(1 << 20), -(1 << 20));
        assert_eq!(r.reduce_i64(-(1 << 21) - 3), -3);
        assert_eq!(r.reduce_i128((5i128 << 90) + 7), 7);
        assert!(Ring::new(1).is_err());
        assert!(Ring::new(27).is_err());
        assert_eq!(r.f64_exact_chunk(), 8191);
        assert_eq!(r.headroom(), (1 << 20) - 1);
        assert_eq!(r.reduce_i64(r.headroom() as i64), r.headroom() as i32);
        assert_ne!(
            r.reduce_i64(r.headroom() as i64 + 1),
            r.headroom() as i32 + 1
        );
        assert_eq!(Ring::new(24).unwrap().f64_exact_chunk(), 127);
    }

    #[test]
    fn canonical_rejects_out_of_range() {
        let r = Ring::new(21).unwrap();
        assert_eq!(r.from_canonical((1 << 21) - 1), Ok(-1));
        assert!(matches!(
            r.from_canonical(1 << 21),
            Err(RingError::OutOfRange { .. })
        ));
        assert_eq!(r.from_small(1 << 20), None);
        assert_eq!(r.from_small(-(1 << 20)), Some(-(1 << 20)));
    }

    #[test]
    fn f64_reduction_is_exact_at_the_limit() {
        for bits in [2, 8, 21, 24, 26] {
            let r = Ring::new(bits).unwrap();
            for v in [
                (1i64 << 53),
                -(1i64 << 53),
                (1i64 << 53) - 1,
                12345,
                -(1 << (bits - 1)),
            ] {
                let f = r.reduce_f64(v as f64);
                assert_eq!(f.fract(), 0.0);
                assert!(f.abs() <= (1u64 << (bits - 1)) as f64);
                assert_eq!(r.reduce_i64(f as i64), r.reduce_i64(v), "bits {bits} v {v}");
            }
        }
    }
}
