//! Sealed checkpoints in goten mode: a job resumed in a new session (fresh keys, fresh masks)
//! continues bit for bit where its checkpoint left off, and a tampered or swapped checkpoint
//! is refused.

mod common;

use common::run;
use goten_enclave::SecretTensor;
use goten_enclave::nn::checkpoint::Progress;
use goten_enclave::nn::init::normal;
use goten_enclave::nn::optim::Sgd;
use goten_enclave::nn::{Model, ModelKind, ProtocolBackend};
use goten_field::SecretKey;
use goten_party::{Party, Trusts};

fn batch(step: u64) -> (SecretTensor, Vec<u8>) {
    let mut x = SecretTensor::zeros(&[4, 3, 32, 32]);
    normal(100 + step, 0, x.expose_mut(), 1.0);
    (x, (0..4).map(|i| ((i + step) % 10) as u8).collect())
}

/// Trains steps `from..to`, returning the losses and the PRG step reached.
fn train(p: &mut Party, m: &mut Model, prg_step: u64, from: u64, to: u64) -> (Vec<f32>, u64) {
    let mut be = ProtocolBackend::new(&p.enclave, &mut p.host, prg_step);
    let losses = (from..to)
        .map(|s| {
            let (x, y) = batch(s);
            m.train_step(&mut be, x, &y, &Sgd::default(), 0.02)
                .unwrap()
                .loss
        })
        .collect();
    (losses, be.step())
}

const FP: [u8; 32] = [7; 32];

fn key() -> SecretKey {
    SecretKey::from_bytes([3; 32])
}

#[test]
fn resumed_goten_training_is_bit_exact() {
    // Session 1: 3 steps, seal, 3 more steps.
    let first = run(&Trusts::generate(), &|p| {
        let mut m = ModelKind::Small.build(9, 10).unwrap();
        let (_, prg) = train(p, &mut m, 0, 0, 3);
        let sealed = p
            .enclave
            .seal_checkpoint(
                &mut m,
                Progress {
                    step: 3,
                    epoch: 0,
                    prg_step: prg,
                    images: 12,
                    peer_sealed: 0,
                },
                FP,
                &key(),
            )
            .unwrap();
        let (losses, _) = train(p, &mut m, prg, 3, 6);
        Ok((sealed, losses, m.state_digest()))
    })
    .unwrap();
    let (sealed0, losses, digest) = first.results.0.clone();
    let sealed1 = first.results.1.0.clone();
    assert_eq!(losses, first.results.1.1, "E0 and E1 agree");
    // Session 2: new keys; each enclave restores its own checkpoint and trains the same 3 steps.
    let second = run(&Trusts::generate(), &|p| {
        let bytes = if p.role() == goten_enclave::Role::S0 {
            &sealed0
        } else {
            &sealed1
        };
        let (mut m, prog) = p
            .enclave
            .unseal_checkpoint(bytes, &key(), FP, (ModelKind::Small, 9, 10))
            .unwrap();
        assert_eq!(prog.step, 3);
        let (l, _) = train(p, &mut m, prog.prg_step, 3, 6);
        Ok((l, m.state_digest()))
    })
    .unwrap();
    assert_eq!(
        second.results.0.0, losses,
        "the resumed run's losses equal the uninterrupted run's, bit for bit"
    );
    assert_eq!(second.results.0.1, digest, "and so does the final state");
}

#[test]
fn tampered_or_swapped_checkpoints_are_refused() {
    let out = run(&Trusts::generate(), &|p| {
        let mut m = ModelKind::Small.build(9, 10).unwrap();
        let (_, prg) = train(p, &mut m, 0, 0, 1);
        let sealed = p
            .enclave
            .seal_checkpoint(
                &mut m,
                Progress {
                    step: 1,
                    epoch: 0,
                    prg_step: prg,
                    images: 4,
                    peer_sealed: 0,
                },
                FP,
                &key(),
            )
            .unwrap();
        let mut flipped = sealed.clone();
        let mid = flipped.len() / 2;
        flipped[mid] ^= 1;
        let tampered = p
            .enclave
            .unseal_checkpoint(&flipped, &key(), FP, (ModelKind::Small, 9, 10))
            .err()
            .map(|e| e.to_string());
        let wrong_key = p
            .enclave
            .unseal_checkpoint(
                &sealed,
                &SecretKey::from_bytes([4; 32]),
                FP,
                (ModelKind::Small, 9, 10),
            )
            .err()
            .map(|e| e.to_string());
        let other_job = p
            .enclave
            .unseal_checkpoint(&sealed, &key(), [8; 32], (ModelKind::Small, 9, 10))
            .err()
            .map(|e| e.to_string());
        let truncated = p
            .enclave
            .unseal_checkpoint(&sealed[..10], &key(), FP, (ModelKind::Small, 9, 10))
            .err()
            .map(|e| e.to_string());
        Ok((sealed, tampered, wrong_key, other_job, truncated))
    })
    .unwrap();
    let (sealed0, tampered, wrong_key, other_job, truncated) = out.results.0;
    assert!(tampered.unwrap().contains("fails authentication"));
    assert!(wrong_key.unwrap().contains("fails authentication"));
    assert!(other_job.unwrap().contains("different job"));
    assert!(truncated.unwrap().contains("not a goten checkpoint"));
    // E1 refuses E0's checkpoint: the role is bound into the authenticated data.
    let swapped = run(&Trusts::generate(), &|p| {
        Ok(if p.role() == goten_enclave::Role::S1 {
            p.enclave
                .unseal_checkpoint(&sealed0, &key(), FP, (ModelKind::Small, 9, 10))
                .err()
                .map(|e| e.to_string())
        } else {
            None
        })
    })
    .unwrap();
    assert!(swapped.results.1.unwrap().contains("fails authentication"));
}
