//! Canonical binary encodings of ring vectors, with strict decoding.
//!
//! Where it sits: shares leave a party as bytes (to a peer, to disk as part of a sealed
//! checkpoint); these functions are the only way back from bytes to residues, and they accept
//! exactly one encoding per vector, so a corrupt or tampered buffer is an error, never
//! silently different values.
//!
//! Two forms:
//! - **packed** (the wire form): `version: u8 = 1`, `bits: u8`, `count: u64 LE`, then the
//!   canonical residues (in [0, 2^k)) as a little-endian bit stream of exactly
//!   `ceil(count * bits / 8)` bytes; unused bits of the last byte must be zero;
//! - **u32**: each canonical residue as a `u32` LE; values >= 2^k are rejected.

use thiserror::Error;

use crate::ring::Ring;
use crate::tensor::RingTensor;

/// Why a buffer is not a valid encoding.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum CodecError {
    /// Fewer bytes than the header needs.
    #[error("truncated header: {0} bytes, need 10")]
    TruncatedHeader(usize),
    /// Unknown format version.
    #[error("unsupported encoding version {0} (expected 1)")]
    Version(u8),
    /// Encoded for another ring.
    #[error("encoded for Z_2^{found}, expected Z_2^{expected}")]
    RingMismatch {
        /// Bits in the buffer.
        found: u8,
        /// Bits expected.
        expected: u32,
    },
    /// Element count differs from what the caller expects at this point of the protocol.
    #[error("holds {found} elements, expected {expected}")]
    CountMismatch {
        /// Count in the buffer.
        found: u64,
        /// Count expected.
        expected: usize,
    },
    /// Payload length does not match the count.
    #[error("payload is {found} bytes, {expected} expected for the element count")]
    PayloadLength {
        /// Bytes present.
        found: usize,
        /// Bytes the count implies.
        expected: usize,
    },
    /// Padding bits of the last byte are not zero (non-canonical).
    #[error("non-zero padding bits in the last byte (non-canonical encoding)")]
    Padding,
    /// An element is not below 2^k.
    #[error("element {index} = {value} is out of range for Z_2^{bits}")]
    OutOfRange {
        /// Position.
        index: usize,
        /// Value read.
        value: u32,
        /// Ring width.
        bits: u32,
    },
}

const VERSION: u8 = 1;
const HEADER: usize = 10;

/// Bytes of the packed encoding of `count` elements of `ring`.
pub fn packed_len(ring: Ring, count: usize) -> usize {
    HEADER + (count as u128 * ring.bits() as u128).div_ceil(8) as usize
}

/// Encodes residues in the packed form.
pub fn encode_packed(ring: Ring, data: &[i32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(packed_len(ring, data.len()));
    out.push(VERSION);
    out.push(ring.bits() as u8);
    out.extend_from_slice(&(data.len() as u64).to_le_bytes());
    let bits = ring.bits();
    let mut acc: u64 = 0;
    let mut nbits = 0u32;
    for &x in data {
        acc |= u64::from(ring.to_canonical(x)) << nbits;
        nbits += bits;
        while nbits >= 8 {
            out.push(acc as u8);
            acc >>= 8;
            nbits -= 8;
        }
    }
    if nbits > 0 {
        out.push(acc as u8);
    }
    out
}

/// Decodes the packed form, requiring exactly `expected` elements of `ring`.
pub fn decode_packed(ring: Ring, bytes: &[u8], expected: usize) -> Result<Vec<i32>, CodecError> {
    if bytes.len() < HEADER {
        return Err(CodecError::TruncatedHeader(bytes.len()));
    }
    if bytes[0] != VERSION {
        return Err(CodecError::Version(bytes[0]));
    }
    if u32::from(bytes[1]) != ring.bits() {
        return Err(CodecError::RingMismatch {
            found: bytes[1],
            expected: ring.bits(),
        });
    }
    let count = u64::from_le_bytes(bytes[2..HEADER].try_into().expect("8 header bytes"));
    if count != expected as u64 {
        return Err(CodecError::CountMismatch {
            found: count,
            expected,
        });
    }
    // Only now, with the count known to be the caller's, is it used to size anything.
    let want = packed_len(ring, expected) - HEADER;
    let payload = &bytes[HEADER..];
    if payload.len() != want {
        return Err(CodecError::PayloadLength {
            found: payload.len(),
            expected: want,
        });
    }
    let bits = ring.bits();
    let mask = (1u64 << bits) - 1;
    let mut out = Vec::with_capacity(expected);
    let mut acc: u64 = 0;
    let mut nbits = 0u32;
    let mut it = payload.iter();
    for _ in 0..expected {
        while nbits < bits {
            let b = *it.next().expect("payload length checked above");
            acc |= u64::from(b) << nbits;
            nbits += 8;
        }
        out.push(ring.reduce_u32((acc & mask) as u32));
        acc >>= bits;
        nbits -= bits;
    }
    if acc != 0 {
        return Err(CodecError::Padding);
    }
    Ok(out)
}

/// Encodes residues as canonical u32 LE words.
pub fn encode_u32(ring: Ring, data: &[i32]) -> Vec<u8> {
    data.iter()
        .flat_map(|&x| ring.to_canonical(x).to_le_bytes())
        .collect()
}

/// Elements of `shape`, or a length error naming the overflow.
fn numel(shape: &[usize], found: usize) -> Result<usize, CodecError> {
    crate::tensor::checked_numel(shape).map_err(|_| CodecError::PayloadLength {
        found,
        expected: usize::MAX,
    })
}

/// A tensor of `shape` from canonical u32 words ([`decode_u32`]): each element checked once.
pub fn decode_u32_tensor(
    ring: Ring,
    shape: &[usize],
    bytes: &[u8],
) -> Result<RingTensor, CodecError> {
    let data = decode_u32(ring, bytes, numel(shape, bytes.len())?)?;
    Ok(RingTensor::from_valid(ring, shape, data))
}

/// A tensor of `shape` from a packed encoding ([`decode_packed`]): each element checked once.
pub fn decode_packed_tensor(
    ring: Ring,
    shape: &[usize],
    bytes: &[u8],
) -> Result<RingTensor, CodecError> {
    let data = decode_packed(ring, bytes, numel(shape, bytes.len())?)?;
    Ok(RingTensor::from_valid(ring, shape, data))
}

/// Decodes canonical u32 LE words, requiring exactly `expected` of them, each below 2^k.
pub fn decode_u32(ring: Ring, bytes: &[u8], expected: usize) -> Result<Vec<i32>, CodecError> {
    if bytes.len() as u128 != expected as u128 * 4 {
        return Err(CodecError::PayloadLength {
            found: bytes.len(),
            expected: expected.saturating_mul(4),
        });
    }
    // One pass without early exit (it vectorises: shares cross here by the gigabyte); the
    // offending index is looked up only when something was out of range.
    let limit = ring.modulus();
    let mut out_of_range = false;
    let data: Vec<i32> = bytes
        .chunks_exact(4)
        .map(|c| {
            let value = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            out_of_range |= u64::from(value) >= limit;
            ring.reduce_u32(value)
        })
        .collect();
    if out_of_range {
        let (index, value) = bytes
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .enumerate()
            .find(|&(_, v)| u64::from(v) >= limit)
            .expect("an out-of-range word was seen");
        return Err(CodecError::OutOfRange {
            index,
            value,
            bits: ring.bits(),
        });
    }
    Ok(data)
}
