//! PRG properties: determinism across parties, separation by key / purpose / op / iteration,
//! slice independence, and uniformity of the ring mapping (chi-square at a fixed seed).

use goten_field::{Prg, Ring, SecretKey};

fn key(b: u8) -> SecretKey {
    let mut k = [0u8; 32];
    k[0] = b;
    SecretKey::from_bytes(k)
}

fn ring_stream(prg: &Prg, ring: Ring, it: u64, off: u64, n: usize) -> Vec<i32> {
    let mut v = vec![0; n];
    prg.fill_ring(ring, it, off, &mut v);
    v
}

#[test]
fn two_parties_with_one_key_expand_identical_tensors() {
    let r = Ring::DEFAULT;
    // Each "party" derives its own Prg from its own copy of the key.
    let e0 = Prg::new(&key(1), "dealer/U", 42);
    let e1 = Prg::new(&key(1).clone(), "dealer/U", 42);
    assert_eq!(
        ring_stream(&e0, r, 3, 0, 10_000),
        ring_stream(&e1, r, 3, 0, 10_000)
    );
}

#[test]
fn key_purpose_op_and_iteration_separate_streams() {
    let r = Ring::DEFAULT;
    let base = ring_stream(&Prg::new(&key(1), "pair/A0", 7), r, 0, 0, 64);
    for other in [
        ring_stream(&Prg::new(&key(2), "pair/A0", 7), r, 0, 0, 64),
        ring_stream(&Prg::new(&key(1), "pair/B0", 7), r, 0, 0, 64),
        ring_stream(&Prg::new(&key(1), "pair/A0", 8), r, 0, 0, 64),
        ring_stream(&Prg::new(&key(1), "pair/A0", 7), r, 1, 0, 64),
    ] {
        let same = base.iter().zip(&other).filter(|(a, b)| a == b).count();
        assert!(same < 4, "streams overlap in {same} of 64 elements");
    }
    // Purpose and op id are length-prefixed: "ab" + op 1 vs "a" + something cannot collide.
    let a = ring_stream(&Prg::new(&key(1), "ab", 1), r, 0, 0, 8);
    let b = ring_stream(&Prg::new(&key(1), "a", 1), r, 0, 0, 8);
    assert_ne!(a, b);
}

#[test]
fn any_slice_equals_the_same_slice_of_the_whole() {
    let prg = Prg::new(&key(3), "slice", 0);
    let r = Ring::new(24).unwrap();
    let whole = ring_stream(&prg, r, 5, 0, 5000);
    for (off, len) in [
        (0, 1),
        (1, 3),
        (3, 5),
        (4, 4),
        (255, 257),
        (1023, 1),
        (4097, 903),
        (0, 5000),
    ] {
        assert_eq!(
            ring_stream(&prg, r, 5, off as u64, len),
            &whole[off..off + len],
            "slice {off}+{len}"
        );
    }
    // Far away offsets work without producing what precedes them (this would take hours).
    let far = ring_stream(&prg, r, 5, 1 << 50, 8);
    assert_eq!(ring_stream(&prg, r, 5, (1 << 50) + 3, 5), &far[3..]);
    let mut words = vec![0u32; 16];
    prg.fill_u32(5, 0, &mut words);
    assert_eq!(r.reduce_u32(words[7]), whole[7]);
}

#[test]
fn ring_elements_are_uniform_chi_square() {
    // 2^20 samples of Z_2^8 (256 cells, 255 degrees of freedom). At a fixed seed the statistic
    // is deterministic; the 99.99th percentile of chi2(255) is about 356.
    let r = Ring::new(8).unwrap();
    let v = ring_stream(&Prg::new(&key(4), "chi", 0), r, 0, 0, 1 << 20);
    let mut counts = [0u64; 256];
    for x in v {
        counts[r.to_canonical(x) as usize] += 1;
    }
    let e = (1u64 << 20) as f64 / 256.0;
    let chi2: f64 = counts.iter().map(|&c| (c as f64 - e).powi(2) / e).sum();
    assert!(chi2 < 356.0, "chi2 = {chi2}");
    assert!(chi2 > 170.0, "suspiciously regular: chi2 = {chi2}");
    // Top bits of the default ring (where a biased mapping would show) are balanced too.
    let r = Ring::DEFAULT;
    let v = ring_stream(&Prg::new(&key(4), "chi", 1), r, 0, 0, 1 << 20);
    let neg = v.iter().filter(|&&x| x < 0).count() as f64 / (1u64 << 20) as f64;
    assert!((neg - 0.5).abs() < 0.003, "P(x < 0) = {neg}");
}

#[test]
fn unit_floats_are_in_range_and_spread() {
    let prg = Prg::new(&key(5), "pair/round", 0);
    let mut v = vec![0f32; 100_000];
    prg.fill_unit_f32(0, 0, &mut v);
    assert!(v.iter().all(|&x| (0.0..1.0).contains(&x)));
    let mean = v.iter().map(|&x| f64::from(x)).sum::<f64>() / v.len() as f64;
    assert!((mean - 0.5).abs() < 0.005, "mean {mean}");
}

/// A wrapped key opens only under its key-encryption key, nonce and context, and comes back
/// whole; the AEAD and MAC constructors key what they are given.
#[test]
fn wrapped_keys_open_only_in_their_context() {
    use goten_field::prg::{WRAPPED_KEY_BYTES, danger_derive_public};
    let key = SecretKey::from_bytes([1; 32]);
    let kek = SecretKey::from_bytes([2; 32]);
    let w = key.wrap(&kek, &[3; 12], b"ctx");
    assert_eq!(w.len(), WRAPPED_KEY_BYTES);
    assert!(
        !w.windows(32).any(|x| x == [1; 32]),
        "the key appears in the clear"
    );
    let back = SecretKey::unwrap(&kek, &[3; 12], b"ctx", &w).expect("opens");
    // Same key: same PRG stream.
    let stream = |k: &SecretKey| {
        let mut v = [0u32; 8];
        goten_field::Prg::new(k, "t", 0).fill_u32(0, 0, &mut v);
        v
    };
    assert_eq!(stream(&back), stream(&key));
    let other = SecretKey::from_bytes([9; 32]);
    assert!(SecretKey::unwrap(&other, &[3; 12], b"ctx", &w).is_none());
    assert!(SecretKey::unwrap(&kek, &[4; 12], b"ctx", &w).is_none());
    assert!(SecretKey::unwrap(&kek, &[3; 12], b"other", &w).is_none());
    for i in 0..w.len() {
        let mut bad = w;
        bad[i] ^= 1;
        assert!(
            SecretKey::unwrap(&kek, &[3; 12], b"ctx", &bad).is_none(),
            "byte {i}"
        );
    }
    assert!(SecretKey::unwrap(&kek, &[3; 12], b"ctx", &w[..40]).is_none());
    // Public-seed derivation is the key derivation, as bytes.
    let d = danger_derive_public([5; 32], b"x");
    assert_eq!(
        stream(&SecretKey::from_bytes(d)),
        stream(&SecretKey::from_bytes([5; 32]).derive(b"x"))
    );
}
