//! Serving a model the model owner provisions: E0 and E1 wait with their keys established,
//! the owner verifies their evidence and seals the model to the attested service key, both
//! enclaves open it, store their own sealed copies (so a restart needs no owner), and serve.
//!
//! Where it sits: the start of the serving loops ([`super::cluster`]) when the serving folder
//! has no sealed checkpoint and the plan says which architecture to expect. The hosts relay
//! the sealed model (S0's front end to S0's loop to S1) and never read it.

use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Duration;

use goten_enclave::nn::ModelKind;
use goten_enclave::session::serve::{ModelInfo, ServeSession};
use goten_enclave::{KeyedEnclave, Role};
use goten_field::SecretKey;
use goten_party::host::EnclaveHost;
use goten_party::transport::Message;
use goten_party::{NetError, PartyError};

use super::cluster::{Cmd, EvidenceFn, Ready, ServePlan, SharedStatus, Status, same_model, store};
use super::relay::{attest, ping, relay_idle, send_evidence};

/// One enclave's attempt at the owner's model: the session, after storing its sealed copy.
fn load<'p>(
    enclave: &'p KeyedEnclave,
    (plan, sealing, kind): (&ServePlan, &SecretKey, ModelKind),
    sealed: &[u8],
) -> Result<ServeSession<'p>, String> {
    let (s, ckpt) = ServeSession::from_owner(
        enclave,
        sealing,
        sealed,
        kind,
        (goten_data::CLASSES, plan.name.as_deref(), plan.max_batch),
    )
    .map_err(|e| e.to_string())?;
    store(plan, enclave.role())
        .write(&ckpt)
        .map_err(|e| e.to_string())?;
    Ok(s)
}

/// S0: publishes the awaited model and the service key, answers evidence requests, and loads
/// the first sealed model that opens in both enclaves. `None`: the front end stopped.
pub(super) fn await_s0<'p>(
    enclave: &'p KeyedEnclave,
    host: &mut EnclaveHost,
    job: (&ServePlan, &SecretKey, ModelKind),
    queue: &Receiver<Cmd>,
    status: &SharedStatus,
    (evidence, tick): (&EvidenceFn<'_>, Duration),
) -> Result<Option<ServeSession<'p>>, PartyError> {
    let (plan, _, kind) = job;
    let name = plan.name.clone().unwrap_or_else(|| kind.name().to_string());
    *status.lock().expect("status lock") = Status::AwaitingModel(Ready {
        info: ModelInfo {
            kind: kind.name(),
            input: kind.input_shape(),
            classes: goten_data::CLASSES,
        },
        name: name.clone(),
        service_key: enclave.service_public_key(),
    });
    eprintln!(
        "S0: awaiting the model owner's {} model as {name} (goten provision-model); service key {}..",
        kind.name(),
        super::oip::hex(&enclave.service_public_key()[..8])
    );
    loop {
        match queue.recv_timeout(tick) {
            Ok(Cmd::Infer(w)) => {
                let _ = w.reply.send(Err(
                    "no model yet: the model owner has not provisioned it".into()
                ));
            }
            Ok(Cmd::Attest { nonce, reply }) => {
                let r = attest(&|n| enclave.service_report_data(n), host, evidence, nonce)?;
                let _ = reply.send(r);
            }
            Ok(Cmd::Provision { sealed, reply }) => {
                host.transport()
                    .send(Role::S1, Message::Model(sealed.clone()))?;
                // Both enclaves open the same bytes with the same key: they succeed or fail
                // together (a storage failure on one side shows at the tag exchange).
                match load(enclave, job, &sealed) {
                    // The owner hears success only once E1 holds the same model.
                    Ok(s) => match same_model(&s, host) {
                        Ok(()) => {
                            // Ready before the owner hears it: a query right after succeeds.
                            *status.lock().expect("status lock") = Status::Ready(Ready::of(&s));
                            let _ = reply.send(Ok(()));
                            return Ok(Some(s));
                        }
                        Err(e) => {
                            let _ = reply.send(Err(e.to_string()));
                            return Err(e);
                        }
                    },
                    Err(why) => {
                        let _ = reply.send(Err(why));
                    }
                }
            }
            Err(RecvTimeoutError::Timeout) => ping(host)?,
            Err(RecvTimeoutError::Disconnected) => {
                host.transport().send(Role::S1, Message::Done)?;
                return Ok(None);
            }
        }
    }
}

/// S1: follows S0 while the model is awaited (evidence, heartbeats) and loads the sealed model
/// S0 relays. `None`: S0 stopped.
pub(super) fn await_s1<'p>(
    enclave: &'p KeyedEnclave,
    host: &mut EnclaveHost,
    job: (&ServePlan, &SecretKey, ModelKind),
    evidence: &EvidenceFn<'_>,
) -> Result<Option<ServeSession<'p>>, PartyError> {
    loop {
        match host.transport().recv(Role::S0)? {
            Message::Model(sealed) => match load(enclave, job, &sealed) {
                Ok(s) => {
                    same_model(&s, host)?;
                    return Ok(Some(s));
                }
                Err(why) => eprintln!("S1: the model owner's model was refused: {why}"),
            },
            Message::Evidence { nonce, .. } => {
                send_evidence(&|n| enclave.service_report_data(n), host, evidence, nonce)?;
            }
            Message::Idle => relay_idle(host)?,
            Message::Done => return Ok(None),
            m => {
                return Err(NetError::Unexpected {
                    peer: Role::S0,
                    expected: "the owner's sealed model, an evidence request, idle or done".into(),
                    got: m.kind().into(),
                }
                .into());
            }
        }
    }
}
