//! Strict decoding: every kind of malformed buffer is rejected with the right reason.

use goten_field::Ring;
use goten_field::codec::{CodecError, decode_packed, decode_u32, encode_packed, encode_u32};

fn r21() -> Ring {
    Ring::new(21).unwrap()
}

#[test]
fn packed_rejects_each_malformation() {
    let r = r21();
    let good = encode_packed(r, &[1, -1, 5]);
    assert_eq!(decode_packed(r, &good, 3).unwrap(), vec![1, -1, 5]);
    assert_eq!(
        decode_packed(r, &good[..5], 3),
        Err(CodecError::TruncatedHeader(5))
    );
    let mut v = good.clone();
    v[0] = 2;
    assert_eq!(decode_packed(r, &v, 3), Err(CodecError::Version(2)));
    assert!(matches!(
        decode_packed(Ring::new(20).unwrap(), &good, 3),
        Err(CodecError::RingMismatch {
            found: 21,
            expected: 20
        })
    ));
    assert!(matches!(
        decode_packed(r, &good, 4),
        Err(CodecError::CountMismatch {
            found: 3,
            expected: 4
        })
    ));
    assert!(matches!(
        decode_packed(r, &good[..good.len() - 1], 3),
        Err(CodecError::PayloadLength { .. })
    ));
    let mut long = good.clone();
    long.push(0);
    assert!(matches!(
        decode_packed(r, &long, 3),
        Err(CodecError::PayloadLength { .. })
    ));
    // 3 * 21 = 63 bits: the top bit of the last byte is padding and must be zero.
    let mut pad = good.clone();
    *pad.last_mut().unwrap() |= 0x80;
    assert_eq!(decode_packed(r, &pad, 3), Err(CodecError::Padding));
}

#[test]
fn packed_count_is_checked_before_it_sizes_anything() {
    // A header claiming 2^60 elements must fail on the count, not try to allocate.
    let r = r21();
    let mut v = vec![1u8, 21];
    v.extend_from_slice(&(1u64 << 60).to_le_bytes());
    assert!(matches!(
        decode_packed(r, &v, 3),
        Err(CodecError::CountMismatch { .. })
    ));
}

#[test]
fn u32_rejects_out_of_range_and_bad_length() {
    let r = r21();
    let good = encode_u32(r, &[-(1 << 20), (1 << 20) - 1, 0]);
    assert_eq!(
        decode_u32(r, &good, 3).unwrap(),
        vec![-(1 << 20), (1 << 20) - 1, 0]
    );
    let mut bad = good.clone();
    bad[4..8].copy_from_slice(&(1u32 << 21).to_le_bytes());
    assert_eq!(
        decode_u32(r, &bad, 3),
        Err(CodecError::OutOfRange {
            index: 1,
            value: 1 << 21,
            bits: 21
        })
    );
    assert!(matches!(
        decode_u32(r, &good[..11], 3),
        Err(CodecError::PayloadLength { .. })
    ));
    assert!(matches!(
        decode_u32(r, &good, 2),
        Err(CodecError::PayloadLength { .. })
    ));
}

#[test]
fn packed_is_no_wider_than_the_ring() {
    let r = r21();
    let n = 1000;
    let bytes = encode_packed(r, &vec![-1; n]);
    assert_eq!(bytes.len(), 10 + (n * 21).div_ceil(8));
}

/// The tensor decoders (each element checked once) keep every check of the slice decoders,
/// take the element count from the shape, and refuse a shape whose count overflows.
#[test]
fn tensor_decoders_check_once_and_fully() {
    use goten_field::codec::{decode_packed_tensor, decode_u32_tensor};
    let r = r21();
    let vals = [r.min_centered(), -1, 0, 5, r.max_centered(), 7];
    for (t, back) in [
        (decode_u32_tensor(r, &[2, 3], &encode_u32(r, &vals)), "u32"),
        (
            decode_packed_tensor(r, &[2, 3], &encode_packed(r, &vals)),
            "packed",
        ),
    ] {
        let t = t.unwrap_or_else(|e| panic!("{back}: {e}"));
        assert_eq!(
            (t.shape(), t.data(), t.ring()),
            (&[2usize, 3][..], &vals[..], r)
        );
    }
    // Wrong count for the shape, an out-of-range word, an overflowing shape.
    let words = encode_u32(r, &vals);
    assert!(decode_u32_tensor(r, &[7], &words).is_err());
    assert!(decode_packed_tensor(r, &[5], &encode_packed(r, &vals)).is_err());
    let mut bad = words.clone();
    bad[4..8].copy_from_slice(&(1u32 << 21).to_le_bytes());
    assert!(matches!(
        decode_u32_tensor(r, &[2, 3], &bad),
        Err(CodecError::OutOfRange { index: 1, .. })
    ));
    assert!(decode_u32_tensor(r, &[usize::MAX, 2], &words).is_err());
    assert!(decode_packed_tensor(r, &[usize::MAX, 2], &encode_packed(r, &vals)).is_err());
}
