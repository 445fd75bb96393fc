//! [`Handle`]: what the front ends hold of a serving cluster whose S0 runs in this process.
//!
//! Where it sits: between S0's serving loop ([`super::cluster::serve_s0`], fed through a
//! queue) and its users: the HTTP front end ([`super::http`]) and the batch scorer
//! (`goten predict --mode goten`). The same handle serves a local cluster
//! ([`super::local`]) and S0 of a deployment ([`super::deploy`]).

use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use goten_enclave::Role;
use goten_enclave::attest::Evidence;
use goten_party::{PartyError, Trusts};

use super::cluster::{Cmd, ServeStats, SharedStats, SharedStatus, Status, Work};
use super::http::ServeBackend;
use crate::RuntimeError;

/// How long a client's request for evidence may take.
const ATTEST_SECS: u64 = 30;

/// S0's serving loop as its front ends see it. Closing it ([`Self::close`]) ends the loop.
pub struct Handle {
    queue: Mutex<Option<Sender<Cmd>>>,
    /// Where the cluster stands.
    pub status: SharedStatus,
    /// S0's serving counters.
    pub stats: SharedStats,
    roots: (Vec<[u8; 32]>, [u8; 32]),
}

impl Handle {
    /// A handle and the queue S0's loop reads; `trusts`: S0's (for the simulated roots).
    pub fn new(trusts: &Trusts) -> (Self, Mutex<Receiver<Cmd>>) {
        let (tx, rx) = channel();
        (
            Handle {
                queue: Mutex::new(Some(tx)),
                status: Arc::new(Mutex::new(Status::Starting)),
                stats: SharedStats::default(),
                roots: (
                    trusts.simulated_platform_keys().to_vec(),
                    trusts.expected_measurement(),
                ),
            },
            Mutex::new(rx),
        )
    }

    fn send(&self, c: Cmd) -> Result<(), String> {
        self.queue
            .lock()
            .expect("queue lock")
            .as_ref()
            .ok_or("the serving cluster is shutting down")?
            .send(c)
            .map_err(|_| "the serving cluster has stopped".to_string())
    }

    /// Closes the queue: S0's loop tells S1 and S2 it is done and returns.
    pub fn close(&self) {
        self.queue.lock().expect("queue lock").take();
    }

    /// S0's serving counters so far.
    pub fn stats(&self) -> ServeStats {
        *self.stats.lock().expect("stats lock")
    }

    /// The current status.
    pub fn status(&self) -> Status {
        self.status.lock().expect("status lock").clone()
    }

    /// Waits until the cluster is ready (or failed, or `limit` passed).
    pub fn wait_ready(&self, limit: Duration) -> Status {
        let t = std::time::Instant::now();
        loop {
            let s = self.status();
            if !matches!(s, Status::Starting) || t.elapsed() > limit {
                return s;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The simulated platform keys and the measurement a client checks simulated evidence
    /// against (S0's trust).
    pub fn simulated_roots(&self) -> (Vec<[u8; 32]>, [u8; 32]) {
        self.roots.clone()
    }

    /// E0's and E1's evidence over the current service key for a client's nonce.
    pub fn attest(&self, nonce: &[u8; 32]) -> Result<Vec<(Role, Evidence)>, String> {
        let (tx, rx) = channel();
        self.send(Cmd::Attest {
            nonce: *nonce,
            reply: tx,
        })?;
        rx.recv_timeout(Duration::from_secs(ATTEST_SECS))
            .map_err(|_| "the serving cluster did not produce its evidence in time".to_string())?
    }

    /// Batch scoring without HTTP (`goten predict --mode goten`): seals `images` to the
    /// service key, `per_query` per query, submits them all, and opens the answers with the
    /// key exported from each query's HPKE context. Returns the logits, image-major.
    pub fn score(&self, images: &[&[u8]], per_query: usize) -> Result<Vec<f32>, RuntimeError> {
        let fail = |why: String| RuntimeError::Party(PartyError::Storage(why));
        let ready = match self.wait_ready(Duration::from_secs(600)) {
            Status::Ready(r) => r,
            Status::Failed(why) => {
                return Err(fail(format!("the serving cluster failed to start: {why}")));
            }
            Status::Starting | Status::AwaitingModel(_) => {
                return Err(RuntimeError::config(
                    "the serving cluster did not start serving (no model yet?)",
                ));
            }
        };
        let mut pending = Vec::new();
        for chunk in images.chunks(per_query.max(1)) {
            let (q, key) = goten_enclave::query::seal_query(
                &ready.service_key,
                &ready.name,
                ready.info.input,
                chunk,
            )
            .map_err(|e| RuntimeError::config(format!("cannot seal a query: {e}")))?;
            let (tx, rx) = tokio::sync::oneshot::channel();
            self.send(Cmd::Infer(Work {
                queries: vec![q.clone()],
                images: chunk.len(),
                reply: tx,
            }))
            .map_err(fail)?;
            pending.push((q, key, rx));
        }
        let mut logits = Vec::with_capacity(images.len() * ready.info.classes);
        for (q, key, rx) in pending {
            let replies = rx
                .blocking_recv()
                .map_err(|_| fail("the serving cluster stopped".into()))?
                .map_err(fail)?;
            let sealed = replies
                .into_iter()
                .next()
                .ok_or_else(|| fail("no reply".into()))?
                .map_err(|e| RuntimeError::config(e.to_string()))?;
            let a = goten_enclave::query::open_answer(&key, &q, &sealed)
                .map_err(|e| fail(format!("an answer does not open: {e}")))?;
            logits.extend_from_slice(&a.logits);
        }
        Ok(logits)
    }
}

impl ServeBackend for Handle {
    fn status(&self) -> Status {
        Handle::status(self)
    }
    fn submit(&self, w: Work) -> Result<(), String> {
        self.send(Cmd::Infer(w))
    }
    fn provision(&self, sealed: Vec<u8>) -> Result<Result<(), String>, String> {
        let (tx, rx) = channel();
        self.send(Cmd::Provision { sealed, reply: tx })?;
        rx.recv_timeout(Duration::from_secs(600))
            .map_err(|_| "the serving cluster did not load the model in time".to_string())
    }
    fn attestation(
        &self,
        nonce: &[u8; 32],
    ) -> Result<(Vec<(Role, Evidence)>, Option<(Vec<[u8; 32]>, [u8; 32])>), String> {
        let ev = self.attest(nonce)?;
        let simulated = ev.iter().any(|(_, e)| e.is_simulated());
        Ok((ev, simulated.then(|| self.simulated_roots())))
    }
}
