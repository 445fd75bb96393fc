//! Property tests of the ring laws and of share -> reconstruct, against i128 arithmetic.

use goten_field::codec;
use goten_field::share::{reconstruct, share_with_prg};
use goten_field::{Prg, Ring, RingTensor, SecretKey};
use proptest::prelude::*;

fn ring() -> impl Strategy<Value = Ring> {
    (Ring::MIN_BITS..=Ring::MAX_BITS).prop_map(|b| Ring::new(b).unwrap())
}

/// (ring, three residues of it), residues drawn over the full range including the extremes.
fn ring_and_elems() -> impl Strategy<Value = (Ring, i32, i32, i32)> {
    ring().prop_flat_map(|r| {
        let e = prop_oneof![
            Just(r.min_centered()),
            Just(r.max_centered()),
            Just(0),
            r.min_centered()..=r.max_centered()
        ];
        (Just(r), e.clone(), e.clone(), e)
    })
}

/// Independent reference: the canonical residue computed with i128 `rem_euclid`.
fn canon(r: Ring, v: i128) -> i128 {
    v.rem_euclid(r.modulus() as i128)
}

proptest! {
    #[test]
    fn ops_match_i128((r, a, b, _c) in ring_and_elems()) {
        let (ai, bi) = (i128::from(a), i128::from(b));
        prop_assert_eq!(canon(r, r.add(a, b).into()), canon(r, ai + bi));
        prop_assert_eq!(canon(r, r.sub(a, b).into()), canon(r, ai - bi));
        prop_assert_eq!(canon(r, r.mul(a, b).into()), canon(r, ai * bi));
        prop_assert_eq!(canon(r, r.neg(a).into()), canon(r, -ai));
        for v in [r.add(a, b), r.sub(a, b), r.mul(a, b), r.neg(a)] {
            prop_assert!(r.contains(v), "{} not centered in {}", v, r);
        }
    }

    #[test]
    fn ring_axioms((r, a, b, c) in ring_and_elems()) {
        prop_assert_eq!(r.add(a, b), r.add(b, a));
        prop_assert_eq!(r.add(r.add(a, b), c), r.add(a, r.add(b, c)));
        prop_assert_eq!(r.mul(r.mul(a, b), c), r.mul(a, r.mul(b, c)));
        prop_assert_eq!(r.mul(a, r.add(b, c)), r.add(r.mul(a, b), r.mul(a, c)));
        prop_assert_eq!(r.add(a, 0), a);
        prop_assert_eq!(r.mul(a, 1), a);
        prop_assert_eq!(r.add(a, r.neg(a)), 0);
        prop_assert_eq!(r.sub(a, b), r.add(a, r.neg(b)));
    }

    #[test]
    fn reduction_of_wide_integers(r in ring(), v in any::<i64>()) {
        let got = r.reduce_i64(v);
        prop_assert!(r.contains(got));
        prop_assert_eq!(canon(r, got.into()), canon(r, v.into()));
        prop_assert_eq!(r.reduce_i128(i128::from(v) << 40 | 5), r.reduce_i64(5));
    }

    #[test]
    fn small_integers_embed_exactly(r in ring(), v in -100_000i64..100_000) {
        match r.from_small(v) {
            Some(x) => prop_assert_eq!(i64::from(x), v),
            None => prop_assert!(v > i64::from(r.max_centered()) || v < i64::from(r.min_centered())),
        }
    }

    #[test]
    fn share_then_reconstruct(r in ring(), vals in prop::collection::vec(any::<i64>(), 1..200), key in any::<[u8; 32]>(), it in any::<u64>(), off in 0u64..1_000_000) {
        let x = RingTensor::from_i64(r, &[vals.len()], &vals).unwrap();
        let prg = Prg::new(&SecretKey::from_bytes(key), "test/share", 0);
        let (s0, s1) = share_with_prg(&x, &prg, it, off);
        prop_assert_eq!(reconstruct(&[&s0, &s1]).unwrap(), x.clone());
        // Three-way sharing is just as exact.
        let (s10, s11) = share_with_prg(&s1, &Prg::new(&SecretKey::from_bytes(key), "test/share", 1), it, off);
        prop_assert_eq!(reconstruct(&[&s0, &s10, &s11]).unwrap(), x);
    }

    #[test]
    fn codecs_round_trip(r in ring(), vals in prop::collection::vec(any::<i64>(), 0..300)) {
        let x = RingTensor::from_i64(r, &[vals.len()], &vals).unwrap();
        let packed = codec::encode_packed(r, x.data());
        prop_assert_eq!(packed.len(), codec::packed_len(r, vals.len()));
        prop_assert_eq!(codec::decode_packed(r, &packed, vals.len()).unwrap(), x.data().to_vec());
        let words = codec::encode_u32(r, x.data());
        prop_assert_eq!(codec::decode_u32(r, &words, vals.len()).unwrap(), x.data().to_vec());
    }

    #[test]
    fn decoders_never_panic_on_random_bytes(r in ring(), bytes in prop::collection::vec(any::<u8>(), 0..64), n in 0usize..40) {
        let _ = codec::decode_packed(r, &bytes, n);
        let _ = codec::decode_u32(r, &bytes, n);
    }

    #[test]
    fn any_single_bit_flip_in_a_packed_payload_is_caught_or_changes_values(r in ring(), vals in prop::collection::vec(any::<i64>(), 1..50), bit in any::<prop::sample::Index>()) {
        let x = RingTensor::from_i64(r, &[vals.len()], &vals).unwrap();
        let mut packed = codec::encode_packed(r, x.data());
        let b = bit.index(packed.len() * 8);
        packed[b / 8] ^= 1 << (b % 8);
        // A flip never yields the original vector: the encoding is canonical.
        if let Ok(v) = codec::decode_packed(r, &packed, vals.len()) {
            prop_assert_ne!(v, x.data().to_vec());
        }
    }
}
