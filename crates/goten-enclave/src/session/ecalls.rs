//! [`SessionEcalls`]: the session's ecalls as one interface, for a session in this process
//! and for a proxy to one in another process.
//!
//! Where it sits: what the host's training loop calls. The in-process implementation adds the
//! resume rule that refuses rolled-back peer checkpoints (DESIGN.md section 15).

use super::{
    EvalReport, Fault, ModelRelease, Receipt, SealedCheckpoint, SessionError, StateTag, StepReport,
    TrainSession, WindowLoss,
};
use crate::linear::HostServices;

/// The ecalls of a training session, as the host's loop sees them: implemented by
/// [`TrainSession`] in this process and by a proxy to an enclave in another process, so the
/// loop is the same in both (and results are bit for bit the same).
pub trait SessionEcalls {
    /// Trains on the next batch.
    fn step(&mut self, host: Option<&mut dyn HostServices>) -> Result<StepReport, SessionError>;
    /// Evaluates on the whole test split.
    fn evaluate(&mut self, host: Option<&mut dyn HostServices>)
    -> Result<EvalReport, SessionError>;
    /// The state tag for the peer enclave.
    fn state_tag(&mut self) -> Result<StateTag, SessionError>;
    /// Fails unless the peer's tag equals this enclave's.
    fn check_peer_tag(&mut self, peer: &StateTag) -> Result<(), SessionError>;
    /// Seals the full state.
    fn checkpoint(&mut self) -> Result<SealedCheckpoint, SessionError>;
    /// Opens a sealed checkpoint and keeps it for [`Self::resume_at`]; returns its step.
    fn open_checkpoint(&mut self, sealed: &[u8]) -> Result<u64, SessionError>;
    /// Continues from the opened checkpoint of `step`; refuses a step older than one the peer
    /// confirmed it had sealed (its files were rolled back) unless `allow_rollback`.
    fn resume_at(&mut self, step: u64, allow_rollback: bool) -> Result<(), SessionError>;
    /// This enclave's receipt for the checkpoint it just had stored.
    fn sealed_receipt(&mut self) -> Result<Receipt, SessionError>;
    /// Records the peer's receipt.
    fn accept_peer_receipt(&mut self, r: &Receipt) -> Result<(), SessionError>;
    /// The open loss window at the end of a run, when long enough to release.
    fn flush_loss(&mut self) -> Result<Option<WindowLoss>, SessionError>;
    /// The trained model for its owner.
    fn export_for_model_owner(&mut self) -> Result<ModelRelease, SessionError>;
    /// Steps done.
    fn step_count(&self) -> u64;
    /// Whether every planned step is done.
    fn done(&self) -> bool;
    /// Whether the last step ended an epoch.
    fn at_epoch_end(&self) -> bool;
}

impl SessionEcalls for TrainSession<'_> {
    fn step(&mut self, host: Option<&mut dyn HostServices>) -> Result<StepReport, SessionError> {
        TrainSession::step(self, host)
    }
    fn evaluate(
        &mut self,
        host: Option<&mut dyn HostServices>,
    ) -> Result<EvalReport, SessionError> {
        TrainSession::evaluate(self, host)
    }
    fn state_tag(&mut self) -> Result<StateTag, SessionError> {
        TrainSession::state_tag(self)
    }
    fn check_peer_tag(&mut self, peer: &StateTag) -> Result<(), SessionError> {
        TrainSession::check_peer_tag(self, peer)
    }
    fn checkpoint(&mut self) -> Result<SealedCheckpoint, SessionError> {
        TrainSession::checkpoint(self)
    }
    fn open_checkpoint(&mut self, sealed: &[u8]) -> Result<u64, SessionError> {
        let o = TrainSession::open_checkpoint(self, sealed)?;
        let step = o.step();
        self.opened.push(o);
        Ok(step)
    }
    fn resume_at(&mut self, step: u64, allow_rollback: bool) -> Result<(), SessionError> {
        let vouched = self
            .opened
            .iter()
            .map(|o| o.progress.peer_sealed)
            .max()
            .unwrap_or(0);
        if step < vouched {
            if !allow_rollback {
                return Err(SessionError::Reported {
                    fault: Fault::Storage,
                    message: format!(
                        "refusing to resume from step {step}: the other enclave confirmed it had sealed step {vouched}, so its checkpoint files were rolled back or lost; pass --allow-rollback to resume from the older step anyway"
                    ),
                });
            }
            eprintln!(
                "WARNING: resuming from step {step} although the other enclave had sealed step {vouched} (--allow-rollback)"
            );
        }
        let i = self
            .opened
            .iter()
            .position(|o| o.step() == step)
            .ok_or(SessionError::State("no opened checkpoint of that step"))?;
        let o = self.opened.swap_remove(i);
        self.opened.clear();
        self.resume(o)
    }
    fn sealed_receipt(&mut self) -> Result<Receipt, SessionError> {
        TrainSession::sealed_receipt(self)
    }
    fn accept_peer_receipt(&mut self, r: &Receipt) -> Result<(), SessionError> {
        TrainSession::accept_peer_receipt(self, r)
    }
    fn flush_loss(&mut self) -> Result<Option<WindowLoss>, SessionError> {
        Ok(TrainSession::flush_loss(self))
    }
    fn export_for_model_owner(&mut self) -> Result<ModelRelease, SessionError> {
        TrainSession::export_for_model_owner(self)
    }
    fn step_count(&self) -> u64 {
        TrainSession::step_count(self)
    }
    fn done(&self) -> bool {
        TrainSession::done(self)
    }
    fn at_epoch_end(&self) -> bool {
        TrainSession::at_epoch_end(self)
    }
}
