//! The job fingerprint: what a checkpoint and the other parties must agree with.
//!
//! Where it sits: host-side, computed from the command's options and the data before a
//! session starts (the session seals it into checkpoints; parties compare it in the job
//! handshake).

use crate::source::Source;
use sha2::{Digest, Sha256};

use crate::options::TrainArgs;

/// SHA-256 of everything a checkpoint must agree with: model, data, hyper-parameters, mode.
pub(crate) fn fingerprint(a: &TrainArgs, train: &Source, test: &Source) -> [u8; 32] {
    let mut h = Sha256::new();
    let desc = format!(
        "goten/job/v3|{}|{:?}|{}|{}|{}|{:?}|{}|{}|{}|{}|{}|{}",
        a.model,
        a.mode,
        a.epochs,
        a.batch,
        a.lr.to_bits(),
        a.schedule,
        a.step_epochs,
        a.seed,
        a.ring_bits,
        a.quant_bits,
        a.loss_window_or_default(),
        // The data's content is hashed below; its path may differ between parties.
        a.data == "synthetic"
    );
    h.update(desc.as_bytes());
    for d in [train, test] {
        d.identify(&mut h);
    }
    h.finalize().into()
}
