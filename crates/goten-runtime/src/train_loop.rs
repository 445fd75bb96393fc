//! The host's training loop: it drives the enclave's session through its ecalls and hands
//! what the session releases to an [`Observer`].
//!
//! Where it sits: host-side, the same for every mode. It decides nothing secret: when to
//! evaluate and checkpoint depends on public step counts; the batches, the order, the model
//! and the loss of single steps stay inside the session.

use std::sync::Mutex;
use std::time::Instant;

use goten_enclave::session::{SessionEcalls, SessionError};
use goten_party::PartyError;

use goten_enclave::session::{EvalReport, ModelRelease, StepReport, WindowLoss};
use goten_party::Traffic;

use crate::session_host::SessionHost;
use crate::store::{CkptStore, storage};

/// What a finished run reports.
pub struct Summary {
    pub steps: u64,
    pub images: u64,
    pub secs: f64,
    /// The last released loss window's mean (NaN when none was long enough to release).
    pub train_loss: f32,
    pub test_accuracy: f64,
}

/// What the loop does besides stepping: all public choices of the caller.
pub struct LoopPlan<'a> {
    /// Continue from the sealed checkpoints in the store.
    pub resume: bool,
    /// On resume, accept a peer whose checkpoints were rolled back.
    pub allow_rollback: bool,
    /// Evaluate every N steps (0: at the end of each epoch).
    pub eval_every: u64,
    /// Seal a checkpoint every N steps (0: at every evaluation).
    pub checkpoint_every: u64,
    /// Where the model owner's export goes, if anywhere (one party writes it).
    pub export: Option<Box<ExportSink<'a>>>,
}

/// Receives the model owner's export at the end of a run.
pub type ExportSink<'a> = dyn Fn(&ModelRelease) -> Result<(), PartyError> + Sync + 'a;

/// Sees what a session releases, as it happens (a progress display, a metrics file, a
/// server's status page). Called from the party's thread.
pub trait Observer: Send {
    /// A training step; `traffic`: this party's bytes during it.
    fn step(&mut self, r: &StepReport, traffic: Option<Traffic>);
    /// The loss window released at the end of a run (`step`: steps done).
    fn window(&mut self, w: &WindowLoss, step: u64);
    /// An evaluation.
    fn eval(&mut self, e: &EvalReport);
    /// The run resumed after `step`: forget anything recorded for later steps.
    fn resumed_at(&mut self, step: u64);
}

/// Resumes from the newest checkpoint that opens and that the peer can match; a checkpoint
/// that fails to open is reported loudly and the older one tried.
fn resume(
    s: &mut dyn SessionEcalls,
    h: &mut dyn SessionHost,
    ck: &CkptStore,
    allow_rollback: bool,
) -> Result<u64, PartyError> {
    let mut opened = Vec::new();
    let mut failed = Vec::new();
    for (path, bytes) in ck.read()? {
        match s.open_checkpoint(&bytes) {
            Ok(step) => opened.push((path, step)),
            Err(e) => {
                if opened.is_empty() {
                    eprintln!(
                        "WARNING: {}: {e}; trying the previous checkpoint",
                        path.display()
                    );
                }
                failed.push((path, e));
            }
        }
    }
    let Some(newest) = opened.iter().map(|&(_, step)| step).max() else {
        let (path, e) = failed
            .into_iter()
            .next()
            .expect("read returns at least one");
        return Err(storage(e, &path));
    };
    if let Some(recorded) = ck.newest_recorded().filter(|&r| r > newest) {
        if !allow_rollback {
            return Err(storage(
                format!(
                    "this folder last stored step {recorded}, but its checkpoints that open reach only step {newest}: older checkpoint files were copied over newer ones, or the newest was damaged; pass --allow-rollback to resume from step {newest}"
                ),
                &ck.path(),
            ));
        }
        eprintln!(
            "WARNING: resuming from step {newest} although step {recorded} was stored here (--allow-rollback)"
        );
    }
    let step = h.agree_resume(newest)?;
    let steps: Vec<u64> = opened.iter().map(|&(_, step)| step).collect();
    let Some((path, _)) = opened.into_iter().find(|&(_, s)| s == step) else {
        // The enclave judges a rolled-back peer first: its refusal says what happened.
        if let Err(e @ SessionError::Reported { .. }) = s.resume_at(step, allow_rollback) {
            return Err(e.into());
        }
        return Err(storage(
            format!(
                "the other enclave can resume only from step {step}, this one holds steps {steps:?}; restore matching checkpoints or start over"
            ),
            &ck.path(),
        ));
    };
    s.resume_at(step, allow_rollback)?;
    eprintln!(
        "{}: resuming from the checkpoint of step {step} ({})",
        ck.role,
        path.display()
    );
    Ok(step)
}

/// E0 and E1 compare state tags (goten mode; nothing in the local modes).
fn sync(s: &mut dyn SessionEcalls, h: &mut dyn SessionHost) -> Result<(), PartyError> {
    let Some(_) = h.services() else {
        return Ok(());
    };
    let tag = s.state_tag()?;
    if let Some(peer) = h.exchange_tag(s.step_count(), tag)? {
        s.check_peer_tag(&peer)?;
    }
    Ok(())
}

/// The training loop every mode shares.
pub fn train_loop(
    s: &mut dyn SessionEcalls,
    h: &mut dyn SessionHost,
    plan: &LoopPlan<'_>,
    ck: &CkptStore,
    observer: Option<&Mutex<dyn Observer + '_>>,
) -> Result<Summary, PartyError> {
    let a = plan;
    let report = |f: &mut dyn FnMut(&mut dyn Observer)| {
        if let Some(r) = observer {
            f(&mut *r.lock().expect("observer lock"));
        }
    };
    if a.resume {
        let step = resume(s, h, ck, a.allow_rollback)?;
        report(&mut |r| r.resumed_at(step));
    }
    let (start, mut images, mut last_loss) = (Instant::now(), 0u64, f32::NAN);
    // After both enclaves stored a checkpoint they trade receipts for it: each seals the
    // other's into its next checkpoint, so a rolled-back peer is caught on resume.
    let save = |s: &mut dyn SessionEcalls, h: &mut dyn SessionHost| -> Result<(), PartyError> {
        let sealed = s.checkpoint()?;
        ck.write_step(&sealed.0, s.step_count())?;
        if h.services().is_some() {
            let mine = s.sealed_receipt()?;
            if let Some(peer) = h.exchange_receipt(mine)? {
                s.accept_peer_receipt(&peer)?;
            }
        }
        Ok(())
    };
    let evaluate = |s: &mut dyn SessionEcalls, h: &mut dyn SessionHost| {
        let e = s.evaluate(h.services())?;
        sync(s, h)?;
        report(&mut |r| r.eval(&e));
        Ok::<_, PartyError>(e)
    };
    while !s.done() {
        let before = h.traffic();
        let r = s.step(h.services())?;
        let traffic = before.zip(h.traffic()).map(|(b, a)| a - b);
        images += r.images as u64;
        if let Some(w) = r.loss {
            last_loss = w.mean;
        }
        report(&mut |rep| rep.step(&r, traffic));
        let step = r.step;
        let more = !s.done();
        let eval_now = if a.eval_every > 0 {
            step % a.eval_every == 0
        } else {
            s.at_epoch_end()
        };
        if eval_now && more {
            evaluate(s, h)?;
            if a.checkpoint_every == 0 {
                save(s, h)?;
            }
        }
        if a.checkpoint_every > 0 && step % a.checkpoint_every == 0 && more {
            save(s, h)?;
        }
    }
    if let Some(w) = s.flush_loss()? {
        last_loss = w.mean;
        report(&mut |r| r.window(&w, s.step_count()));
    }
    let secs = start.elapsed().as_secs_f64();
    save(s, h)?;
    let e = evaluate(s, h)?;
    if let Some(sink) = &plan.export {
        sink(&s.export_for_model_owner()?)?;
    }
    Ok(Summary {
        steps: s.step_count(),
        images,
        secs,
        train_loss: last_loss,
        test_accuracy: e.accuracy,
    })
}
