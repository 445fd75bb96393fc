//! The enclave's side of the process boundary: a loop that answers ecalls.
//!
//! Where it sits: the whole program of an enclave process (`goten enclave-process`). It
//! creates the enclave, runs its half of the key exchange (the host relays hellos), starts the
//! training session, then serves ecalls one at a time. During "step" and "evaluate" the
//! session's ocalls (announce a part, run a device job) become frames to the host, answered
//! before the ecall returns. Errors go back to the host as frames with their fault class; the
//! loop ends when the host says so or the socket closes.

use goten_enclave::attest::{Evidence, hardware_report_data};
use goten_enclave::keys::KeyExchange;
use goten_enclave::linear::{DeviceJob, HostServices, JobReply, OpHeader};
use goten_enclave::quant::{QuantConfig, Rounding};
use goten_enclave::session::{Fault, SessionEcalls, SessionError, TrainSession};
use goten_enclave::{Enclave, EnclaveConfig, KeyedEnclave, Role};
use goten_field::Ring;

use super::codec::{
    FromEnclave, InitParams, ToEnclave, decode_to_enclave, encode_from_enclave_into,
};
use super::{Channel, ChannelError};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why the enclave process stops.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The host went away or sent garbage.
    #[error("host {0}")]
    Channel(#[from] ChannelError),
    /// The start-up sequence failed (reported to the host first).
    #[error("{0}")]
    Setup(String),
}

fn recv(ch: &mut Channel) -> Result<ToEnclave, ChannelError> {
    let ring = ch.ring();
    let (kind, body) = ch.recv()?;
    Ok(decode_to_enclave(kind, body, ring)?)
}

fn send(ch: &mut Channel, m: &FromEnclave) -> Result<(), ChannelError> {
    ch.send_with(|buf| encode_from_enclave_into(m, buf))
}

/// The session's host services, as ocalls over the channel.
struct Ocalls<'a>(&'a mut Channel);

impl HostServices for Ocalls<'_> {
    fn announce(&mut self, header: &OpHeader) -> Result<(), BoxError> {
        send(self.0, &FromEnclave::Announce(header.clone()))?;
        match recv(self.0)? {
            ToEnclave::Announced => Ok(()),
            ToEnclave::OcallFailed(msg) => Err(msg.into()),
            _ => Err(ChannelError::Unexpected("another ecall during an ocall").into()),
        }
    }

    fn run_job(&mut self, job: DeviceJob) -> Result<JobReply, BoxError> {
        send(self.0, &FromEnclave::RunJob(job))?;
        match recv(self.0)? {
            ToEnclave::JobDone(reply) => Ok(reply),
            ToEnclave::OcallFailed(msg) => Err(msg.into()),
            _ => Err(ChannelError::Unexpected("another ecall during an ocall").into()),
        }
    }
}

fn fail(ch: &mut Channel, fault: Fault, msg: String) -> ServeError {
    // Best effort: the host may already be gone.
    let _ = send(ch, &FromEnclave::Error(fault, msg.clone()));
    ServeError::Setup(msg)
}

fn expect<T>(
    ch: &mut Channel,
    what: &'static str,
    f: impl FnOnce(ToEnclave) -> Option<T>,
) -> Result<T, ServeError> {
    let m = recv(ch)?;
    match f(m) {
        Some(t) => Ok(t),
        None => Err(fail(ch, Fault::Internal, format!("expected {what}"))),
    }
}

/// The TEE kind and the peers' verifier of hardware start-up parameters.
fn hardware_verifier(
    h: &super::codec::HardwareParams,
) -> Result<
    (
        goten_attest::TeeKind,
        goten_attest::verifier::HardwareVerifier,
    ),
    String,
> {
    let kind = goten_attest::TeeKind::from_tag(h.tee).ok_or(format!("TEE kind {}", h.tee))?;
    let policy: goten_attest::policy::Policy =
        toml::from_str(&h.policy).map_err(|e| format!("the attestation policy: {e}"))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let v = goten_attest::verifier::HardwareVerifier::new(kind, policy, h.collateral.clone(), now)
        .map_err(|e| e.to_string())?;
    Ok((kind, v))
}

/// Creates the enclave and runs its key exchange.
fn key_exchange(ch: &mut Channel) -> Result<KeyedEnclave, ServeError> {
    let p: InitParams = expect(ch, "init", |m| match m {
        ToEnclave::Init(p) => Some(p),
        _ => None,
    })?;
    let role = Role::ALL[usize::from(p.role)];
    let ring = Ring::new(p.ring_bits).map_err(|e| fail(ch, Fault::Config, e.to_string()))?;
    ch.set_ring(ring);
    let quant = QuantConfig {
        bits: p.quant_bits,
        rounding: if p.stochastic {
            Rounding::Stochastic
        } else {
            Rounding::Nearest
        },
    };
    let kx = match p.danger_ephemeral {
        Some(k) => Ok(KeyExchange::from_secret(role, k)),
        None => KeyExchange::new(role),
    }
    .map_err(|e| fail(ch, Fault::Internal, e.to_string()))?
    .with_session_nonces(p.session_nonces);
    let mut trust = crate::trusts::trust_from(
        &p.trusted_platforms,
        p.expected_measurement,
        p.pinned_dealer,
    )
    .map_err(|e| fail(ch, Fault::Config, e.to_string()))?;
    let hardware = match &p.hardware {
        None => None,
        Some(h) => {
            let (kind, verifier) = hardware_verifier(h).map_err(|e| fail(ch, Fault::Config, e))?;
            trust.enclave = Box::new(verifier);
            Some(kind)
        }
    };
    let enclave = Enclave::with_key_exchange(kx, EnclaveConfig { ring, quant })
        .map_err(|e| fail(ch, Fault::Config, e.to_string()))?;
    send(ch, &FromEnclave::ReportData(enclave.report_data()))?;
    let evidence = expect(ch, "evidence", |m| match m {
        ToEnclave::Hello(e) => Some(e),
        _ => None,
    })?;
    // Under a TEE the enclave attests itself: its host asks with an empty hardware quote.
    let evidence = match (hardware, evidence) {
        (Some(kind), Evidence::Hardware { quote, .. }) if quote.is_empty() => {
            let rd = hardware_report_data(&enclave.report_data());
            let quote = goten_attest::generate::generate(kind, &rd)
                .map_err(|e| fail(ch, Fault::Config, e.to_string()))?;
            Evidence::Hardware {
                tee: kind.tag(),
                quote,
            }
        }
        (None, e @ Evidence::Simulated { .. }) => e,
        _ => {
            return Err(fail(
                ch,
                Fault::Internal,
                "the host's evidence request does not match the enclave's attestation settings"
                    .into(),
            ));
        }
    };
    send(ch, &FromEnclave::Hello(enclave.hello(evidence)))?;
    let (hellos, wrapped) = expect(ch, "hellos", |m| match m {
        ToEnclave::FinishKx { hellos, wrapped } => Some((hellos, wrapped)),
        _ => None,
    })?;
    let finished = match (role, wrapped) {
        (Role::S0, None) => enclave
            .finish_e0(&hellos, &trust)
            .map(|(k, w)| (k, Some(w))),
        (Role::S1, Some(w)) => enclave.finish_e1(&hellos, &trust, &w).map(|k| (k, None)),
        _ => {
            return Err(fail(
                ch,
                Fault::Internal,
                "a wrapped key goes to E1 only".into(),
            ));
        }
    };
    let (keyed, out) = finished.map_err(|e| fail(ch, Fault::Peer, e.to_string()))?;
    send(ch, &FromEnclave::Finished(out))?;
    Ok(keyed)
}

/// Answers one ecall of a running session.
fn ecall(
    s: &mut TrainSession<'_>,
    ch: &mut Channel,
    m: ToEnclave,
) -> Result<FromEnclave, SessionError> {
    Ok(match m {
        ToEnclave::Step => FromEnclave::Step(s.step(Some(&mut Ocalls(ch)))?),
        ToEnclave::Evaluate => FromEnclave::Eval(s.evaluate(Some(&mut Ocalls(ch)))?),
        ToEnclave::StateTag => FromEnclave::Tag(SessionEcalls::state_tag(s)?.0),
        ToEnclave::CheckPeerTag(t) => {
            SessionEcalls::check_peer_tag(s, &goten_enclave::session::StateTag(t))?;
            FromEnclave::Done
        }
        ToEnclave::Checkpoint => FromEnclave::Sealed(SessionEcalls::checkpoint(s)?.0),
        ToEnclave::OpenCheckpoint(b) => FromEnclave::Opened(SessionEcalls::open_checkpoint(s, &b)?),
        ToEnclave::ResumeAt(step, allow) => {
            s.resume_at(step, allow)?;
            FromEnclave::Done
        }
        ToEnclave::SealedReceipt => FromEnclave::Receipt(SessionEcalls::sealed_receipt(s)?),
        ToEnclave::AcceptReceipt(r) => {
            SessionEcalls::accept_peer_receipt(s, &r)?;
            FromEnclave::Done
        }
        ToEnclave::FlushLoss => FromEnclave::Loss(SessionEcalls::flush_loss(s)?),
        ToEnclave::Export => FromEnclave::Export(SessionEcalls::export_for_model_owner(s)?),
        _ => return Err(SessionError::State("not an ecall of a running session")),
    })
}

/// Serves one enclave over `stream` until the host shuts it down or goes away; `sealing`: the
/// platform's sealing key, which the enclave program obtains itself (simulation: from the
/// platform folder; on SGX from the CPU), never from its host.
pub fn serve(
    stream: std::os::unix::net::UnixStream,
    sealing: goten_field::SecretKey,
) -> Result<(), ServeError> {
    let mut ch = Channel::new(stream, Ring::DEFAULT);
    let mut keyed = key_exchange(&mut ch)?;
    // Before the session: a data owner may ask for the service key and provision the data key.
    let (cfg, train, test) = loop {
        match recv(&mut ch)? {
            ToEnclave::Start { cfg, train, test } => break (cfg, train, test),
            ToEnclave::ServiceKey(nonce) => send(
                &mut ch,
                &FromEnclave::Service {
                    public: keyed.service_public_key(),
                    report_data: keyed.service_report_data(&nonce),
                },
            )?,
            ToEnclave::Provision(sealed) => {
                let reply = match keyed.accept_provision(&sealed) {
                    Ok(()) => FromEnclave::Done,
                    Err(e) => FromEnclave::Error(Fault::Peer, e.to_string()),
                };
                send(&mut ch, &reply)?;
            }
            _ => {
                return Err(fail(
                    &mut ch,
                    Fault::Internal,
                    "expected the session start, the service key or a provisioned key".into(),
                ));
            }
        }
    };
    let splits = (train, test);
    let mut s = match TrainSession::goten(&mut keyed, cfg, splits, sealing) {
        Ok(s) => s,
        Err(e) => return Err(fail(&mut ch, e.fault(), e.to_string())),
    };
    send(&mut ch, &FromEnclave::Done)?;
    loop {
        let m = recv(&mut ch)?;
        if matches!(m, ToEnclave::Shutdown) {
            return Ok(());
        }
        let reply = match ecall(&mut s, &mut ch, m) {
            Ok(r) => r,
            Err(e) => FromEnclave::Error(e.fault(), e.to_string()),
        };
        send(&mut ch, &reply)?;
    }
}
