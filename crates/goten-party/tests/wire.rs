//! The frame codec: every message round-trips; random, truncated, oversized or inconsistent
//! frames are errors, never panics or huge allocations.

use goten_enclave::attest::{DealerIdentity, SimulatedAttester};
use goten_enclave::keys::{KeyExchange, WrappedKey};
use goten_enclave::{OpHeader, Role};
use goten_field::{BilinearOp, Conv2dParams, Ring, RingTensor};
use goten_party::Message;
use goten_party::wire::{MAX_BODY, WireError, body_len, decode, encode};
use proptest::prelude::*;

fn header() -> OpHeader {
    OpHeader {
        op_id: 7,
        iteration: 3,
        attempt: 1,
        part: 2,
        parts: 4,
        op: BilinearOp::Conv2dInputGrad {
            params: Conv2dParams {
                stride: (2, 1),
                padding: (1, 0),
            },
            input_hw: (7, 6),
        },
        a_shape: vec![2, 4, 4, 4],
        b_shape: vec![4, 3, 3, 3],
    }
}

fn samples() -> Vec<Message> {
    let kx = KeyExchange::from_secret(Role::S1, [5; 32]);
    let sim = SimulatedAttester::from_secret([6; 32]).attest([0x5a; 32], kx.report_data());
    let kx2 = KeyExchange::from_secret(Role::S2, [8; 32]);
    let dealer = DealerIdentity::from_secret([7; 32]).sign(kx2.report_data());
    let h = header();
    let out = h.output_shape().unwrap();
    let n: usize = out.iter().product();
    let ring = Ring::DEFAULT;
    let t = RingTensor::from_i64(
        ring,
        &out,
        &(0..n as i64).map(|i| i * 7919 - 50_000).collect::<Vec<_>>(),
    )
    .unwrap();
    let mut mm = h.clone();
    mm.op = BilinearOp::MatmulWeightGrad;
    mm.a_shape = vec![5, 3];
    mm.b_shape = vec![5, 2];
    vec![
        Message::Hello(kx.hello(sim)),
        Message::Hello(kx2.hello(dealer)),
        Message::WrappedKey(WrappedKey {
            ciphertext: [1; 32],
            tag: [2; 32],
        }),
        Message::DealerRequest(h.clone()),
        Message::DealerRequest(mm),
        Message::Product {
            header: h,
            tensor: t,
        },
        Message::StateDigest {
            step: 99,
            digest: [3; 32],
        },
        Message::Done,
        Message::Job {
            ring_bits: 23,
            digest: [4; 32],
            deployment: [5; 32],
            nonce: [6; 32],
        },
        Message::Resume { step: 1 << 40 },
        Message::Queries(vec![vec![7; 80], Vec::new(), vec![8; 3]]),
        Message::Queries(Vec::new()),
        Message::Idle,
        Message::Model(vec![4; 100]),
        Message::Evidence {
            nonce: [9; 32],
            evidence: vec![1, 2, 3],
        },
    ]
}

#[test]
fn a_hostile_query_count_is_refused_without_allocating_it() {
    let mut f = encode(&Message::Queries(vec![vec![1; 4]]), 0);
    // Claim four billion queries in a frame that holds one.
    f[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(
        decode(&f, Ring::DEFAULT),
        Err(WireError::Limit(_))
    ));
    // A query longer than the frame.
    let mut f = encode(&Message::Queries(vec![vec![1; 4]]), 0);
    f[20..24].copy_from_slice(&1000u32.to_le_bytes());
    assert!(decode(&f, Ring::DEFAULT).is_err());
}

#[test]
fn every_message_round_trips() {
    for (i, m) in samples().into_iter().enumerate() {
        let f = encode(&m, 1000 + i as u64);
        let (seq, back) = decode(&f, Ring::DEFAULT).unwrap();
        assert_eq!(seq, 1000 + i as u64);
        assert_eq!(back, m);
        // In-memory transports count the same bytes as the TCP one sends.
        assert_eq!(goten_party::wire::frame_len(&m), f.len());
    }
}

#[test]
fn products_travel_at_the_ring_width() {
    // A product frame is its op header plus the packed codec: 21 bits per element at k = 21
    // (2.625 bytes, against 4-byte floats in the prototype), plus a 10-byte codec header.
    let m = &samples()[5];
    let Message::Product { header, tensor } = m else {
        unreachable!()
    };
    let f = encode(m, 0);
    let header_only = encode(&Message::DealerRequest(header.clone()), 0).len();
    assert_eq!(f.len(), header_only + 10 + (tensor.len() * 21).div_ceil(8));
}

#[test]
fn inconsistent_frames_are_rejected() {
    let ring = Ring::DEFAULT;
    let good = encode(&samples()[5], 1);
    // Truncated body, trailing byte, wrong magic, unknown kind, wrong ring.
    assert!(matches!(
        decode(&good[..good.len() - 1], ring),
        Err(WireError::Truncated(_))
    ));
    let mut long = good.clone();
    long.push(0);
    assert!(decode(&long, ring).is_err());
    let mut bad = good.clone();
    bad[0] = b'X';
    assert_eq!(decode(&bad, ring), Err(WireError::Magic));
    let mut old = good.clone();
    old[2] = 1;
    let e = decode(&old, ring).unwrap_err();
    assert_eq!(
        e,
        WireError::Version {
            found: 1,
            expected: goten_party::wire::VERSION
        }
    );
    assert!(e.to_string().contains("different goten build"), "{e}");
    let mut bad = good.clone();
    bad[3] = 42;
    assert_eq!(decode(&bad, ring), Err(WireError::Kind(42)));
    assert!(
        decode(&good, Ring::new(20).unwrap()).is_err(),
        "a product of another ring"
    );
    // A header announcing more than the limit is refused from the 16 header bytes alone.
    let mut huge = good[..16].to_vec();
    huge[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
    let head: [u8; 16] = huge.clone().try_into().unwrap();
    assert!(matches!(body_len(&head), Err(WireError::Limit(_))));
    assert!(MAX_BODY < u32::MAX as usize);
    // A product whose op header implies another output size than the payload carries.
    let Message::Product { mut header, tensor } = samples()[5].clone() else {
        unreachable!()
    };
    header.a_shape[0] = 3;
    let f = encode(&Message::Product { header, tensor }, 1);
    assert!(decode(&f, ring).is_err());
}

proptest! {
    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = decode(&bytes, Ring::DEFAULT);
    }

    #[test]
    fn random_bodies_behind_a_valid_header_never_panic(kind in 0u8..8, body in prop::collection::vec(any::<u8>(), 0..400)) {
        let mut f = b"GT\x01".to_vec();
        f.push(kind);
        f.extend_from_slice(&0u64.to_le_bytes());
        f.extend_from_slice(&(body.len() as u32).to_le_bytes());
        f.extend_from_slice(&body);
        let _ = decode(&f, Ring::DEFAULT);
    }

    #[test]
    fn corrupted_frames_never_panic(which in 0usize..8, pos in any::<prop::sample::Index>(), bit in 0u8..8, cut in any::<prop::sample::Index>()) {
        let f = encode(&samples()[which], 5);
        let mut g = f.clone();
        let i = pos.index(g.len());
        g[i] ^= 1 << bit;
        let _ = decode(&g, Ring::DEFAULT);
        // A strict prefix of a frame is never a frame.
        let cut = cut.index(f.len());
        prop_assert!(decode(&f[..cut], Ring::DEFAULT).is_err(), "a frame cut at {} of {} bytes decoded", cut, f.len());
    }
}
