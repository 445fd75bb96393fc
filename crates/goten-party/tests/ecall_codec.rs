//! The ecall codec of `--enclave process`: messages round-trip, and random, truncated or
//! oversized bodies are errors, never panics (both ends treat the other as untrusted).

use goten_enclave::nn::optim::Schedule;
use goten_enclave::session::{Fault, Protection, Split, StepReport, TrainConfig, WindowLoss};
use goten_field::Ring;
use goten_party::ecall::codec::{
    FromEnclave, HEADER, ToEnclave, decode_from_enclave, decode_to_enclave, encode_from_enclave,
    encode_to_enclave, parse_header,
};
use proptest::prelude::*;

fn split(frame: &[u8]) -> (u8, &[u8]) {
    let (kind, n) = parse_header(frame[..HEADER].try_into().unwrap()).unwrap();
    assert_eq!(frame.len(), HEADER + n);
    (kind, &frame[HEADER..])
}

/// A model file's network with every kind of layer, nested residual blocks included.
fn file_model() -> goten_enclave::nn::Arch {
    use goten_enclave::nn::{Arch, LayerSpec as L, NetSpec};
    let conv = |out| L::Conv {
        out,
        kernel: 3,
        stride: 1,
        padding: 1,
        bias: true,
        name: Some(format!("c{out}")),
    };
    Arch::File(std::sync::Arc::new(NetSpec {
        name: "net".into(),
        input: [3, 16, 16],
        layers: vec![
            conv(4),
            L::BatchNorm { name: None },
            L::Relu,
            L::MaxPool {
                kernel: 3,
                stride: 2,
                padding: 1,
            },
            L::BasicBlock {
                out: 8,
                stride: 2,
                name: "layer1.0".into(),
            },
            L::Residual {
                body: vec![L::Residual {
                    body: vec![conv(8)],
                    shortcut: vec![],
                }],
                shortcut: vec![L::AvgPool {
                    kernel: 1,
                    stride: 1,
                }],
            },
            L::GlobalAvgPool,
            L::Dropout { p: 0.25 },
            L::Flatten,
            L::Dense {
                out: None,
                bias: false,
                name: Some("fc".into()),
            },
        ],
    }))
}

fn start() -> ToEnclave {
    ToEnclave::Start {
        cfg: TrainConfig {
            model: file_model(),
            classes: 10,
            seed: 7,
            epochs: 2,
            batch: 16,
            lr: 0.05,
            schedule: Schedule::Step {
                every: 3,
                gamma: 0.5,
            },
            total_steps: 9,
            loss_window: 8,
            protection: Protection::Protected,
            fingerprint: [3; 32],
            model_owner: Some([4; 32]),
            danger_plaintext_export: true,
            input: goten_enclave::nn::input::InputSpec::mnist().stats_from_training(),
            init: Some(vec![goten_enclave::nn::export::Named {
                name: "fc.bias".into(),
                shape: vec![2, 3],
                data: vec![1.0, 2.0, 3.0, 4.0, 5.0, -0.5],
            }]),
        },
        train: Split::Plain {
            images: vec![1; 3072 * 2],
            labels: vec![0, 9],
        },
        test: Split::Sealed {
            split: "test".into(),
            version: 2,
            records: vec![vec![5; 40], vec![6; 40]],
            key: Some(zeroize::Zeroizing::new([2; 32])),
        },
    }
}

#[test]
fn messages_round_trip_and_prefixes_are_errors() {
    let f = encode_to_enclave(&start());
    let (kind, body) = split(&f);
    let ToEnclave::Start { cfg, train, test } =
        decode_to_enclave(kind, body, Ring::DEFAULT).unwrap()
    else {
        panic!("wrong kind");
    };
    assert_eq!(
        cfg.schedule,
        Schedule::Step {
            every: 3,
            gamma: 0.5
        }
    );
    assert_eq!((cfg.total_steps, cfg.loss_window), (9, 8));
    assert_eq!(
        cfg.model,
        file_model(),
        "a model file's network round-trips"
    );
    assert_eq!(
        cfg.input,
        goten_enclave::nn::input::InputSpec::mnist().stats_from_training()
    );
    let init = cfg.init.expect("starting weights travel");
    assert_eq!(
        (init[0].name.as_str(), init[0].shape.as_slice()),
        ("fc.bias", &[2, 3][..])
    );
    assert_eq!(init[0].data, [1.0, 2.0, 3.0, 4.0, 5.0, -0.5]);
    // The data key the host was given reaches the enclave process; no sealing key travels.
    assert!(matches!(&test, Split::Sealed { key: Some(key), version: 2, .. } if **key == [2; 32]));
    assert_eq!((train.len(), test.len()), (2, 2));
    for cut in 0..body.len() {
        assert!(
            decode_to_enclave(kind, &body[..cut], Ring::DEFAULT).is_err(),
            "cut {cut}"
        );
    }
    let mut longer = body.to_vec();
    longer.push(0);
    assert!(
        decode_to_enclave(kind, &longer, Ring::DEFAULT).is_err(),
        "trailing byte"
    );
    let report = StepReport {
        step: 4,
        epoch: 1,
        images: 16,
        lr: 0.01,
        loss: Some(WindowLoss {
            first_step: 1,
            last_step: 4,
            mean: 2.5,
        }),
    };
    for m in [
        FromEnclave::Step(report),
        FromEnclave::Error(Fault::Data, "sealed record 3 fails".into()),
        FromEnclave::Tag([8; 32]),
    ] {
        let f = encode_from_enclave(&m);
        let (kind, body) = split(&f);
        let back = decode_from_enclave(kind, body, Ring::DEFAULT).unwrap();
        match (m, back) {
            (FromEnclave::Step(a), FromEnclave::Step(b)) => assert_eq!(a, b),
            (FromEnclave::Error(f1, m1), FromEnclave::Error(f2, m2)) => {
                assert_eq!((f1, m1), (f2, m2))
            }
            (FromEnclave::Tag(a), FromEnclave::Tag(b)) => assert_eq!(a, b),
            _ => panic!("kind changed"),
        }
        for cut in 0..body.len() {
            assert!(decode_from_enclave(kind, &body[..cut], Ring::DEFAULT).is_err());
        }
    }
    // The start-up parameters, with and without hardware attestation, and the pre-session
    // ecalls of the data owner's provisioning.
    use goten_party::ecall::codec::{HardwareParams, InitParams};
    for hardware in [
        None,
        Some(HardwareParams {
            tee: 2,
            policy: "mr_td = \"ab\"".into(),
            collateral: vec![vec![1, 2, 3], vec![]],
        }),
    ] {
        let p = InitParams {
            role: 1,
            ring_bits: 21,
            quant_bits: 8,
            stochastic: true,
            danger_ephemeral: None,
            trusted_platforms: vec![[3; 32], [4; 32]],
            expected_measurement: [5; 32],
            pinned_dealer: [6; 32],
            session_nonces: [[7; 32], [8; 32], [9; 32]],
            hardware,
        };
        let f = encode_to_enclave(&ToEnclave::Init(p.clone()));
        let (kind, body) = split(&f);
        let ToEnclave::Init(back) = decode_to_enclave(kind, body, Ring::DEFAULT).unwrap() else {
            panic!("wrong kind");
        };
        assert_eq!(back, p);
        for cut in 0..body.len() {
            assert!(decode_to_enclave(kind, &body[..cut], Ring::DEFAULT).is_err());
        }
    }
    let round = |m: &ToEnclave| {
        let f = encode_to_enclave(m);
        let (kind, body) = split(&f);
        decode_to_enclave(kind, body, Ring::DEFAULT).unwrap()
    };
    assert!(
        matches!(round(&ToEnclave::ServiceKey([1; 32])), ToEnclave::ServiceKey(n) if n == [1; 32])
    );
    assert!(
        matches!(round(&ToEnclave::Provision(vec![2; 80])), ToEnclave::Provision(b) if b == vec![2; 80])
    );
    // A header claiming more than the limit is refused before anything is read.
    let mut h = [0u8; HEADER];
    h[..4].copy_from_slice(b"GE\x01\x05");
    h[4..].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(parse_header(&h).is_err());
    h[2] = 2;
    assert!(parse_header(&h).is_err(), "another version");
}

proptest! {
    #[test]
    fn random_bodies_never_panic(kind in 0u8..20, body in prop::collection::vec(any::<u8>(), 0..600)) {
        let _ = decode_to_enclave(kind, &body, Ring::DEFAULT);
        let _ = decode_from_enclave(kind, &body, Ring::DEFAULT);
    }
}
