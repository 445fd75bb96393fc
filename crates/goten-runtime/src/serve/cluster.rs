//! The serving cluster's hosts: S0 batches sealed queries and relays them to S1, both
//! enclaves answer through the protocol with S2, and S0 hands the sealed answers back.
//!
//! Where it sits: under the HTTP front end ([`super::http`]) and `goten predict --mode goten`.
//! The hosts see sealed queries, sealed answers, refusal reasons and shares; the model stays
//! in the enclaves' sealed checkpoints and inside E0 and E1.

use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use goten_enclave::Role;
use goten_enclave::attest::Evidence;
use goten_enclave::session::serve::{ModelInfo, Reply, ServeSession};
use goten_party::transport::Message;
use goten_party::{NetError, Party, PartyError};

use super::relay::{attest, ping, relay_idle, send_evidence};
use crate::SessionHost;
use crate::session_host::PartyHost;
use crate::store::{CkptStore, storage};

/// Sealed queries from one client request, and where their replies go.
pub struct Work {
    /// The sealed queries, in request order.
    pub queries: Vec<Vec<u8>>,
    /// Images they claim to hold (for batching; the enclave checks the real count).
    pub images: usize,
    /// Receives one reply per query, or the reason the cluster could not answer.
    /// (A oneshot: the HTTP front end awaits it without a blocked thread per request.)
    pub reply: tokio::sync::oneshot::Sender<Result<Vec<Reply>, String>>,
}

/// What S0's serving loop is asked to do.
pub enum Cmd {
    /// Answer sealed queries.
    Infer(Work),
    /// E0's and E1's evidence over the service key for a client's nonce.
    Attest {
        /// The client's nonce.
        nonce: [u8; 32],
        /// Receives both pieces of evidence, or why not.
        reply: Sender<Result<Vec<(Role, Evidence)>, String>>,
    },
    /// Load the model owner's model, sealed to the service key (while awaiting it).
    Provision {
        /// The sealed model (`model_out::seal_model_to_service`).
        sealed: Vec<u8>,
        /// Receives whether both enclaves loaded it, or why not.
        reply: Sender<Result<(), String>>,
    },
}

/// How a host obtains its enclave's evidence for report data (`goten_party::Trusts::evidence`).
pub type EvidenceFn<'a> = dyn Fn(Role, [u8; 32]) -> Result<Evidence, String> + Sync + 'a;

/// What the serving cluster publishes once E0 and E1 hold the same model.
#[derive(Clone, Debug)]
pub struct Ready {
    /// The model's public description.
    pub info: ModelInfo,
    /// The name queries are sealed for.
    pub name: String,
    /// The attested service key queries are sealed to.
    pub service_key: [u8; 32],
}

impl Ready {
    /// What a session that serves publishes.
    pub(super) fn of(s: &ServeSession<'_>) -> Self {
        Ready {
            info: s.info(),
            name: s.name().to_string(),
            service_key: s.service_public_key(),
        }
    }
}

/// E0 and E1 compare their state tags: both loaded the same model (on every path, checkpoint
/// or owner, before the cluster reports ready).
pub(super) fn same_model(
    s: &ServeSession<'_>,
    host: &mut goten_party::host::EnclaveHost,
) -> Result<(), PartyError> {
    if let Some(peer) = PartyHost(host).exchange_tag(0, s.state_tag())? {
        s.check_peer_tag(&peer)?;
    }
    Ok(())
}

/// Where the cluster stands, for the health endpoints.
#[derive(Clone, Debug)]
pub enum Status {
    /// Key exchange and model loading under way.
    Starting,
    /// Serving.
    Ready(Ready),
    /// Keys established, waiting for the model owner to provision the model (the description
    /// is the expected model's; the service key is the one to seal it to).
    AwaitingModel(Ready),
    /// Stopped by a failure; the reason is public (no plaintext) and the cluster restarts.
    Failed(String),
}

/// Shared status of a serving cluster.
pub type SharedStatus = Arc<Mutex<Status>>;

/// Where S0's serving time went (public counters, for benchmarks and status).
#[derive(Clone, Copy, Debug, Default)]
pub struct ServeStats {
    /// Batches answered.
    pub batches: u64,
    /// Sealed queries in them.
    pub queries: u64,
    /// Seconds inside the infer ecall (enclave work, device jobs and transport waits).
    pub infer_secs: f64,
    /// Of which in S0's device jobs.
    pub device_secs: f64,
    /// Of which sending to and waiting for S1 and S2.
    pub transport_secs: f64,
}

/// Shared counters of a serving cluster.
pub type SharedStats = Arc<Mutex<ServeStats>>;

/// How the serving hosts batch and wait.
#[derive(Clone, Debug)]
pub struct ServePlan {
    /// The run folder holding `checkpoint-e0.sealed` and `checkpoint-e1.sealed`.
    pub checkpoint: PathBuf,
    /// The name queries are sealed for (default: the model kind).
    pub name: Option<String>,
    /// Images per forward pass.
    pub max_batch: usize,
    /// How long S0 waits for more requests after the first of a batch.
    pub max_wait: Duration,
    /// Without sealed checkpoints in the folder: wait for the model owner to provision a model
    /// of this kind (then store the enclaves' sealed copies there).
    pub await_owner: Option<goten_enclave::nn::ModelKind>,
}

/// This enclave's store in the serving folder.
pub(super) fn store(plan: &ServePlan, role: Role) -> CkptStore {
    CkptStore {
        dir: plan.checkpoint.clone(),
        role: if role == Role::S0 { "e0" } else { "e1" },
    }
}

/// This enclave's sealed checkpoint, or `None` when the folder has none yet.
fn sealed_checkpoint(plan: &ServePlan, role: Role) -> Result<Option<Vec<u8>>, PartyError> {
    let store = store(plan, role);
    if !store.path().exists() && plan.await_owner.is_some() {
        return Ok(None);
    }
    let (_, bytes) = store
        .read()?
        .into_iter()
        .next()
        .ok_or_else(|| storage("no sealed checkpoint", &store.path()))?;
    Ok(Some(bytes))
}

/// Gathers work until `max_images` images or `max_wait` after the first arrived; requests for
/// evidence that arrive meanwhile are kept for after the batch.
fn gather(
    first: Work,
    queue: &Receiver<Cmd>,
    plan: &ServePlan,
    deferred: &mut Vec<Cmd>,
) -> Vec<Work> {
    let deadline = Instant::now() + plan.max_wait;
    let mut images = first.images;
    let mut batch = vec![first];
    while images < plan.max_batch {
        let left = deadline.saturating_duration_since(Instant::now());
        match queue.recv_timeout(left) {
            Ok(Cmd::Infer(w)) => {
                images += w.images;
                batch.push(w);
            }
            Ok(other) => deferred.push(other),
            Err(_) => break,
        }
    }
    batch
}

/// How a party waits for the model owner's model when its folder holds no checkpoint.
pub(super) enum Await<'a> {
    /// S0 takes the sealed model from its front end's queue.
    S0 {
        queue: &'a Receiver<Cmd>,
        status: &'a SharedStatus,
        evidence: &'a EvidenceFn<'a>,
        tick: Duration,
    },
    /// S1 takes it from S0.
    S1 { evidence: &'a EvidenceFn<'a> },
}

/// Opens the model in this party's enclave (its sealed checkpoint, or the owner's model through
/// `wait`) and checks with the peer that both serve the same. `None`: stopped while waiting.
fn open<'p>(
    p: &'p mut Party,
    plan: &ServePlan,
    sealing: &goten_field::SecretKey,
    wait: Await<'_>,
) -> Result<Option<(ServeSession<'p>, &'p mut goten_party::host::EnclaveHost)>, PartyError> {
    let role = p.enclave.role();
    let Party { enclave, host } = p;
    let enclave: &'p goten_enclave::KeyedEnclave = enclave;
    // The owner's path compares tags itself (before telling the owner it succeeded).
    let s = match (sealed_checkpoint(plan, role)?, plan.await_owner) {
        (Some(bytes), _) => {
            let s = ServeSession::from_checkpoint(
                enclave,
                sealing,
                &bytes,
                goten_data::CLASSES,
                plan.name.as_deref(),
                plan.max_batch,
            )?;
            same_model(&s, host)?;
            s
        }
        (None, Some(kind)) => {
            let job = (plan, sealing, kind);
            let s = match wait {
                Await::S0 {
                    queue,
                    status,
                    evidence,
                    tick,
                } => super::owner::await_s0(enclave, host, job, queue, status, (evidence, tick))?,
                Await::S1 { evidence } => super::owner::await_s1(enclave, host, job, evidence)?,
            };
            match s {
                Some(s) => s,
                None => return Ok(None),
            }
        }
        (None, None) => unreachable!("sealed_checkpoint reads or fails without await_owner"),
    };
    Ok(Some((s, host)))
}

/// The idle heartbeat: often enough that no peer's receive times out between queries.
pub(super) fn heartbeat(timeout: Duration) -> Duration {
    (timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(2))
}

/// Answers one batch: relays it to S1, runs the infer ecall, hands each request its replies.
fn answer(
    s: &mut ServeSession<'_>,
    host: &mut goten_party::host::EnclaveHost,
    mut batch: Vec<Work>,
    stats: &SharedStats,
) -> Result<(), PartyError> {
    // The queries move out of the requests; S1's copy is the one copy made.
    let counts: Vec<usize> = batch.iter().map(|w| w.queries.len()).collect();
    let all: Vec<Vec<u8>> = batch
        .iter_mut()
        .flat_map(|w| std::mem::take(&mut w.queries))
        .collect();
    let (t0, d0, n0) = (Instant::now(), host.device_secs(), host.transport_secs());
    let sent = host
        .transport()
        .send(Role::S1, Message::Queries(all.clone()));
    let replies = match sent
        .map_err(PartyError::from)
        .and_then(|()| s.infer(host, &all).map_err(PartyError::from))
    {
        Ok(r) => r,
        Err(e) => {
            let why = e.to_string();
            for w in batch {
                let _ = w.reply.send(Err(why.clone()));
            }
            return Err(e);
        }
    };
    {
        let mut st = stats.lock().expect("stats lock");
        st.batches += 1;
        st.queries += all.len() as u64;
        st.infer_secs += t0.elapsed().as_secs_f64();
        st.device_secs += host.device_secs() - d0;
        st.transport_secs += host.transport_secs() - n0;
    }
    let mut it = replies.into_iter();
    for (w, n) in batch.into_iter().zip(counts) {
        let mine: Vec<Reply> = it.by_ref().take(n).collect();
        // A client that gave up is not the cluster's problem.
        let _ = w.reply.send(Ok(mine));
    }
    Ok(())
}

/// S0's serving loop: batches work from `queue`, relays each batch to S1, answers it, and
/// gathers both enclaves' evidence when a client asks. Returns when the queue closes (the
/// front end stopped).
pub fn serve_s0(
    p: &mut Party,
    plan: &ServePlan,
    sealing: &goten_field::SecretKey,
    queue: &Mutex<Receiver<Cmd>>,
    (status, stats): (&SharedStatus, &SharedStats),
    (evidence, timeout): (&EvidenceFn<'_>, Duration),
) -> Result<(), PartyError> {
    let queue = queue.lock().expect("queue lock");
    let tick = heartbeat(timeout);
    let wait = Await::S0 {
        queue: &queue,
        status,
        evidence,
        tick,
    };
    let Some((mut s, host)) = open(p, plan, sealing, wait)? else {
        return Ok(());
    };
    eprintln!(
        "S0: E0 and E1 serve {} ({}) under service key {}..",
        s.name(),
        s.info().kind,
        super::oip::hex(&s.service_public_key()[..8])
    );
    *status.lock().expect("status lock") = Status::Ready(Ready::of(&s));
    let mut deferred = Vec::new();
    loop {
        let next = match deferred.pop() {
            Some(c) => Ok(c),
            None => queue.recv_timeout(tick),
        };
        match next {
            Ok(Cmd::Infer(first)) => {
                let batch = gather(first, &queue, plan, &mut deferred);
                answer(&mut s, host, batch, stats)?;
            }
            Ok(Cmd::Attest { nonce, reply }) => {
                let r = attest(&|n| s.service_report_data(n), host, evidence, nonce);
                match r {
                    Ok(ev) => {
                        let _ = reply.send(ev);
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e.to_string()));
                        return Err(e);
                    }
                }
            }
            Ok(Cmd::Provision { reply, .. }) => {
                let _ = reply.send(Err(format!(
                    "this cluster already serves {}; a new model needs a new serving folder",
                    s.name()
                )));
            }
            Err(RecvTimeoutError::Timeout) => ping(host)?,
            Err(RecvTimeoutError::Disconnected) => {
                host.transport().send(Role::S1, Message::Done)?;
                return Ok(());
            }
        }
    }
}

/// S1's serving loop: answers every batch S0 relays, passes S0's heartbeat on to S2, stops
/// when S0 is done.
pub fn serve_s1(
    p: &mut Party,
    plan: &ServePlan,
    sealing: &goten_field::SecretKey,
    evidence: &EvidenceFn<'_>,
) -> Result<(), PartyError> {
    let Some((mut s, host)) = open(p, plan, sealing, Await::S1 { evidence })? else {
        return Ok(());
    };
    loop {
        match host.transport().recv(Role::S0)? {
            Message::Evidence { nonce, .. } => {
                send_evidence(&|n| s.service_report_data(n), host, evidence, nonce)?;
            }
            Message::Queries(qs) => {
                // E1's sealed answers duplicate E0's; only S0 returns answers to clients.
                s.infer(host, &qs)?;
            }
            Message::Idle => relay_idle(host)?,
            Message::Done => return Ok(()),
            m => {
                return Err(NetError::Unexpected {
                    peer: Role::S0,
                    expected: "sealed queries, evidence request, idle or done".into(),
                    got: m.kind().into(),
                }
                .into());
            }
        }
    }
}
