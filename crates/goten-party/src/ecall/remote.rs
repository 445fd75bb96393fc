//! The host's side of the process boundary: an enclave in a child process, driven by ecalls.
//!
//! Where it sits: in S0's or S1's host, in place of an enclave in this process. It spawns
//! nothing itself (the caller starts the child and hands over the connected socket); it
//! encodes each ecall, serves the enclave's ocalls with the host's own services until the
//! ecall returns, and turns a dead, silent or misbehaving child into an error naming the
//! party.

use std::process::Child;
use std::time::Duration;

use goten_enclave::Role;
use goten_enclave::attest::Evidence;
use goten_enclave::keys::{Hello, WrappedKey};
use goten_enclave::linear::HostServices;
use goten_enclave::session::{
    EvalReport, Fault, ModelRelease, Receipt, SealedCheckpoint, SessionEcalls, SessionError, Split,
    StateTag, StepReport, TrainConfig, WindowLoss,
};

use super::codec::{
    FromEnclave, InitParams, ToEnclave, decode_from_enclave, encode_to_enclave,
    encode_to_enclave_into,
};
use super::{Channel, ChannelError};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// E0 or E1 running in a child process.
pub struct RemoteEnclave {
    role: Role,
    ch: Channel,
    child: Option<Child>,
    /// Steps done, planned steps, steps per epoch (public; mirrored from the reports).
    step: u64,
    total: u64,
    per_epoch: u64,
    /// The host's own error behind the last failed ocall: the real cause of the ecall's error.
    ocall_error: Option<BoxError>,
}

impl std::fmt::Debug for RemoteEnclave {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "RemoteEnclave(E{}, step {})",
            self.role.index(),
            self.step
        )
    }
}

impl Drop for RemoteEnclave {
    fn drop(&mut self) {
        // Best effort: ask it to exit, then make sure it does.
        let _ = self.ch.send(&encode_to_enclave(&ToEnclave::Shutdown));
        if let Some(mut c) = self.child.take() {
            for _ in 0..50 {
                if matches!(c.try_wait(), Ok(Some(_))) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl RemoteEnclave {
    /// The enclave of `role` behind `stream`; `child` is its process (waited for on drop);
    /// the host waits at most `timeout` for any answer.
    pub fn new(
        role: Role,
        stream: std::os::unix::net::UnixStream,
        child: Option<Child>,
        timeout: Duration,
    ) -> Result<Self, std::io::Error> {
        stream.set_read_timeout(Some(timeout))?;
        Ok(RemoteEnclave {
            role,
            ch: Channel::new(stream, goten_field::Ring::DEFAULT),
            child,
            step: 0,
            total: 0,
            per_epoch: 1,
            ocall_error: None,
        })
    }

    /// Bytes the host has sent to the enclave so far.
    pub fn bytes_sent(&self) -> u64 {
        self.ch.bytes_sent
    }

    /// The child's process id, if this side started it (for memory reports).
    pub fn child_pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// This enclave's role.
    pub fn role(&self) -> Role {
        self.role
    }

    fn dead(&mut self, e: ChannelError) -> SessionError {
        let status = self
            .child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
            .map(|s| format!(" ({s})"))
            .unwrap_or_default();
        SessionError::Reported {
            fault: Fault::Internal,
            message: format!("E{}'s enclave process {e}{status}", self.role.index()),
        }
    }

    /// One ecall: sends `m`, serves ocalls with `host` until the answer comes.
    fn call(
        &mut self,
        m: ToEnclave,
        mut host: Option<&mut dyn HostServices>,
    ) -> Result<FromEnclave, SessionError> {
        self.ocall_error = None;
        if let Err(e) = self.ch.send_with(|buf| encode_to_enclave_into(&m, buf)) {
            return Err(self.dead(e));
        }
        loop {
            let ring = self.ch.ring();
            let decoded = match self.ch.recv() {
                Ok((kind, body)) => decode_from_enclave(kind, body, ring),
                Err(e) => return Err(self.dead(e)),
            };
            let msg = match decoded {
                Ok(m) => m,
                Err(e) => return Err(self.dead(ChannelError::Malformed(e))),
            };
            let answer = match msg {
                FromEnclave::Announce(h) => match host.as_deref_mut() {
                    Some(h2) => match h2.announce(&h) {
                        Ok(()) => ToEnclave::Announced,
                        Err(e) => self.ocall_failed(e),
                    },
                    None => return Err(self.dead(ChannelError::Unexpected("an ocall"))),
                },
                FromEnclave::RunJob(job) => match host.as_deref_mut() {
                    Some(h2) => match h2.run_job(job) {
                        Ok(r) => ToEnclave::JobDone(r),
                        Err(e) => self.ocall_failed(e),
                    },
                    None => return Err(self.dead(ChannelError::Unexpected("an ocall"))),
                },
                FromEnclave::Error(fault, message) => {
                    // An ocall's failure is the host's own error: report that, with its cause.
                    if let Some(e) = self.ocall_error.take() {
                        return Err(SessionError::Nn(goten_enclave::nn::NnError::Enclave(
                            goten_enclave::EnclaveError::Linear(
                                goten_enclave::linear::LinearError::Host {
                                    op_id: 0,
                                    part: 0,
                                    source: e,
                                },
                            ),
                        )));
                    }
                    return Err(SessionError::Reported { fault, message });
                }
                other => return Ok(other),
            };
            if let Err(e) = self
                .ch
                .send_with(|buf| encode_to_enclave_into(&answer, buf))
            {
                return Err(self.dead(e));
            }
        }
    }

    fn ocall_failed(&mut self, e: BoxError) -> ToEnclave {
        let msg = e.to_string();
        self.ocall_error = Some(e);
        ToEnclave::OcallFailed(msg)
    }

    fn unexpected(&mut self, what: &'static str) -> SessionError {
        self.dead(ChannelError::Unexpected(what))
    }

    /// Creates the enclave; returns the report data its evidence must bind.
    pub fn init(&mut self, p: InitParams) -> Result<[u8; 32], SessionError> {
        if let Ok(r) = goten_field::Ring::new(p.ring_bits) {
            self.ch.set_ring(r);
        }
        match self.call(ToEnclave::Init(p), None)? {
            FromEnclave::ReportData(d) => Ok(d),
            _ => Err(self.unexpected("something other than report data")),
        }
    }

    /// The enclave's hello carrying `evidence`.
    pub fn hello(&mut self, evidence: Evidence) -> Result<Hello, SessionError> {
        match self.call(ToEnclave::Hello(evidence), None)? {
            FromEnclave::Hello(h) if h.role == self.role => Ok(h),
            _ => Err(self.unexpected("something other than its hello")),
        }
    }

    /// Finishes the key exchange inside the enclave (E0 returns the wrapped dealer key).
    pub fn finish(
        &mut self,
        hellos: [Hello; 3],
        wrapped: Option<WrappedKey>,
    ) -> Result<Option<WrappedKey>, SessionError> {
        let hellos = Box::new(hellos);
        match self.call(ToEnclave::FinishKx { hellos, wrapped }, None)? {
            FromEnclave::Finished(w) => Ok(w),
            _ => Err(self.unexpected("something other than the end of the key exchange")),
        }
    }

    /// Starts the training session with the job and both splits (the enclave process seals
    /// with its own platform's key).
    pub fn start(
        &mut self,
        cfg: TrainConfig,
        (train, test): (Split, Split),
    ) -> Result<(), SessionError> {
        self.total = cfg.total_steps;
        self.per_epoch = (train.len().div_ceil(cfg.batch.max(1)) as u64).max(1);
        let m = ToEnclave::Start { cfg, train, test };
        match self.call(m, None)? {
            FromEnclave::Done => Ok(()),
            _ => Err(self.unexpected("something other than the session start")),
        }
    }

    /// Before the session: the service key and the report data for a data owner's nonce.
    pub fn service(&mut self, nonce: &[u8; 32]) -> Result<([u8; 32], [u8; 32]), SessionError> {
        match self.call(ToEnclave::ServiceKey(*nonce), None)? {
            FromEnclave::Service {
                public,
                report_data,
            } => Ok((public, report_data)),
            _ => Err(self.unexpected("something other than its service key")),
        }
    }

    /// Before the session: the data owner's sealed data key.
    pub fn provision(&mut self, sealed: &[u8]) -> Result<(), SessionError> {
        self.done_call(ToEnclave::Provision(sealed.to_vec()))
    }

    fn done_call(&mut self, m: ToEnclave) -> Result<(), SessionError> {
        match self.call(m, None)? {
            FromEnclave::Done => Ok(()),
            _ => Err(self.unexpected("a result where none was due")),
        }
    }
}

impl SessionEcalls for RemoteEnclave {
    fn step(&mut self, host: Option<&mut dyn HostServices>) -> Result<StepReport, SessionError> {
        match self.call(ToEnclave::Step, host)? {
            FromEnclave::Step(r) if r.step == self.step + 1 => {
                self.step = r.step;
                Ok(r)
            }
            _ => Err(self.unexpected("a wrong step report")),
        }
    }
    fn evaluate(
        &mut self,
        host: Option<&mut dyn HostServices>,
    ) -> Result<EvalReport, SessionError> {
        match self.call(ToEnclave::Evaluate, host)? {
            FromEnclave::Eval(r) => Ok(r),
            _ => Err(self.unexpected("something other than an evaluation")),
        }
    }
    fn state_tag(&mut self) -> Result<StateTag, SessionError> {
        match self.call(ToEnclave::StateTag, None)? {
            FromEnclave::Tag(t) => Ok(StateTag(t)),
            _ => Err(self.unexpected("something other than a state tag")),
        }
    }
    fn check_peer_tag(&mut self, peer: &StateTag) -> Result<(), SessionError> {
        self.done_call(ToEnclave::CheckPeerTag(peer.0))
    }
    fn checkpoint(&mut self) -> Result<SealedCheckpoint, SessionError> {
        match self.call(ToEnclave::Checkpoint, None)? {
            FromEnclave::Sealed(b) => Ok(SealedCheckpoint(b)),
            _ => Err(self.unexpected("something other than a sealed checkpoint")),
        }
    }
    fn open_checkpoint(&mut self, sealed: &[u8]) -> Result<u64, SessionError> {
        match self.call(ToEnclave::OpenCheckpoint(sealed.to_vec()), None)? {
            FromEnclave::Opened(s) => Ok(s),
            _ => Err(self.unexpected("something other than a checkpoint's step")),
        }
    }
    fn resume_at(&mut self, step: u64, allow_rollback: bool) -> Result<(), SessionError> {
        self.done_call(ToEnclave::ResumeAt(step, allow_rollback))?;
        self.step = step;
        Ok(())
    }
    fn sealed_receipt(&mut self) -> Result<Receipt, SessionError> {
        match self.call(ToEnclave::SealedReceipt, None)? {
            FromEnclave::Receipt(r) => Ok(r),
            _ => Err(self.unexpected("something other than a receipt")),
        }
    }
    fn accept_peer_receipt(&mut self, r: &Receipt) -> Result<(), SessionError> {
        self.done_call(ToEnclave::AcceptReceipt(*r))
    }
    fn flush_loss(&mut self) -> Result<Option<WindowLoss>, SessionError> {
        match self.call(ToEnclave::FlushLoss, None)? {
            FromEnclave::Loss(l) => Ok(l),
            _ => Err(self.unexpected("something other than a loss window")),
        }
    }
    fn export_for_model_owner(&mut self) -> Result<ModelRelease, SessionError> {
        match self.call(ToEnclave::Export, None)? {
            FromEnclave::Export(e) => Ok(e),
            _ => Err(self.unexpected("something other than the export")),
        }
    }
    fn step_count(&self) -> u64 {
        self.step
    }
    fn done(&self) -> bool {
        self.step >= self.total
    }
    fn at_epoch_end(&self) -> bool {
        self.step > 0 && self.step.is_multiple_of(self.per_epoch)
    }
}

impl crate::provision::Provisionable for RemoteEnclave {
    fn role(&self) -> Role {
        self.role
    }
    fn service(&mut self, nonce: &[u8; 32]) -> Result<([u8; 32], [u8; 32]), String> {
        RemoteEnclave::service(self, nonce).map_err(|e| e.to_string())
    }
    fn provision(&mut self, sealed: &[u8]) -> Result<(), String> {
        RemoteEnclave::provision(self, sealed).map_err(|e| e.to_string())
    }
}
