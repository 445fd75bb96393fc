//! A serving cluster in this process (`goten serve --local`, `goten predict --mode goten`):
//! S0, S1 and S2 on threads over the in-process transport, restarted after a failure.
//!
//! Where it sits: under the HTTP front end and the batch scorer. One simulated platform (the
//! same keys across restarts, as a machine's would be); every start runs a fresh key exchange,
//! so a restarted cluster has a new service key and clients fetch its evidence again.

use std::sync::mpsc::{Sender, TryRecvError, channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use goten_device::Device;
use goten_enclave::attest::Evidence;
use goten_enclave::quant::QuantConfig;
use goten_enclave::service::service_report_data;
use goten_enclave::{EnclaveConfig, Role};
use goten_field::Ring;
use goten_party::{ClusterConfig, Party, PartyError, Transport, Trusts, run_local};

use super::cluster::{
    ServePlan, ServeStats, SharedStats, SharedStatus, Status, Work, serve_s0, serve_s1,
};
use crate::RuntimeError;
use crate::config::DeviceKind;

/// Wraps a party's device and transport (privacy audits record what they receive).
pub type Wrap = Arc<
    dyn Fn(Role, Box<dyn Device>, Box<dyn Transport>) -> (Box<dyn Device>, Box<dyn Transport>)
        + Send
        + Sync,
>;

/// Settings of a local serving cluster.
#[derive(Clone)]
pub struct LocalServe {
    /// Model, batching.
    pub plan: ServePlan,
    /// Each party's device.
    pub device: DeviceKind,
    /// Worker threads per party's device (0: the cores shared by the three).
    pub threads: usize,
    /// Seconds a party waits for another before declaring it gone.
    pub timeout: Duration,
    /// Every key from a public seed (tests only; loud).
    pub danger_deterministic_keys: Option<u64>,
    /// Wraps each party's device and transport on every start (audits; `None` in use).
    pub wrap: Option<Wrap>,
}

/// A running local serving cluster: submit work, read its status, ask for evidence.
pub struct LocalServer {
    queue: Option<Sender<Work>>,
    /// Where the cluster stands.
    pub status: SharedStatus,
    stats: SharedStats,
    trusts: Arc<Trusts>,
    thread: Option<JoinHandle<()>>,
}

impl LocalServer {
    /// Starts the cluster on a background thread; it publishes [`Status::Ready`] once E0 and E1
    /// hold the same model.
    pub fn start(c: LocalServe) -> Result<Self, RuntimeError> {
        if c.plan.max_batch == 0 {
            return Err(RuntimeError::config("--max-batch must be at least 1"));
        }
        if !c.plan.checkpoint.is_dir() {
            return Err(RuntimeError::config(format!(
                "{} is not a run folder (pass the --out folder of a goten-mode training run)",
                c.plan.checkpoint.display()
            )));
        }
        for role in ["e0", "e1"] {
            let p = c.plan.checkpoint.join(format!("checkpoint-{role}.sealed"));
            if !p.exists() {
                return Err(RuntimeError::config(format!(
                    "{} is missing: serving needs the sealed checkpoints of both enclaves of a goten-mode run (train with --mode goten)",
                    p.display()
                )));
            }
        }
        let trusts = Arc::new(match c.danger_deterministic_keys {
            Some(seed) => {
                eprintln!("{}", crate::party_run::DANGER_KEYS);
                Trusts::danger_deterministic(seed)
            }
            None => Trusts::generate(),
        });
        let (tx, rx) = channel::<Work>();
        let queue = Arc::new(Mutex::new(rx));
        let status: SharedStatus = Arc::new(Mutex::new(Status::Starting));
        let sealing = crate::store::platform_sealing_key()?;
        let stats = SharedStats::default();
        let (st, tr, sx) = (status.clone(), trusts.clone(), stats.clone());
        let thread = std::thread::Builder::new()
            .name("goten-serve".into())
            .spawn(move || supervise(&c, &tr, &sealing, &queue, (&st, &sx)))
            .map_err(|e| RuntimeError::config(format!("cannot start the serving thread: {e}")))?;
        Ok(LocalServer {
            queue: Some(tx),
            status,
            stats,
            trusts,
            thread: Some(thread),
        })
    }

    /// A handle for submitting work.
    pub fn queue(&self) -> Sender<Work> {
        self.queue.clone().expect("open until dropped")
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

    /// The evidence of `role`'s enclave for a client's nonce over the current service key.
    pub fn evidence(&self, role: Role, nonce: &[u8; 32]) -> Result<Evidence, String> {
        let Status::Ready(r) = self.status() else {
            return Err("the serving cluster is not ready".into());
        };
        let rd = service_report_data(role, &r.service_key, nonce);
        self.trusts.evidence(role, rd).map_err(|e| e.to_string())
    }

    /// The simulated platform keys and the measurement a client checks simulated evidence
    /// against.
    pub fn simulated_roots(&self) -> (Vec<[u8; 32]>, [u8; 32]) {
        (
            self.trusts.simulated_platform_keys().to_vec(),
            self.trusts.expected_measurement(),
        )
    }
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        // Closing the queue ends S0's loop, which tells S1 and S2 it is done.
        self.queue = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Runs the cluster until the queue closes; restarts it a second after any failure.
fn supervise(
    c: &LocalServe,
    trusts: &Trusts,
    sealing: &goten_field::SecretKey,
    queue: &Mutex<std::sync::mpsc::Receiver<Work>>,
    (status, stats): (&SharedStatus, &SharedStats),
) {
    let cfg = ClusterConfig {
        enclave: EnclaveConfig {
            ring: Ring::default(),
            quant: QuantConfig::default(),
        },
        timeout: c.timeout,
    };
    loop {
        *status.lock().expect("status lock") = Status::Starting;
        let body = |p: &mut Party| -> Result<(), PartyError> {
            if p.enclave.role() == Role::S0 {
                serve_s0(p, &c.plan, sealing, queue, (status, stats), c.timeout)
            } else {
                serve_s1(p, &c.plan, sealing)
            }
        };
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let threads = if c.threads == 0 {
            (cores / 3).max(1)
        } else {
            c.threads
        };
        let r = crate::devices::local_parts(c.device, threads, c.timeout)
            .map_err(PartyError::from)
            .and_then(|(devices, nets)| {
                let (devices, nets) = match &c.wrap {
                    None => (devices, nets),
                    Some(w) => {
                        let [d0, d1, d2] = devices;
                        let [t0, t1, t2] = nets;
                        let (d0, t0) = w(Role::S0, d0, t0);
                        let (d1, t1) = w(Role::S1, d1, t1);
                        let (d2, t2) = w(Role::S2, d2, t2);
                        ([d0, d1, d2], [t0, t1, t2])
                    }
                };
                run_local(&cfg, trusts, devices, nets, &body)
            });
        match r {
            Ok(_) => return,
            Err(e) => {
                eprintln!("serving cluster stopped: {e}; restarting");
                *status.lock().expect("status lock") = Status::Failed(e.to_string());
            }
        }
        // Stop when the front end is gone; otherwise answer waiting work with the failure
        // and try again.
        let q = queue.lock().expect("queue lock");
        loop {
            match q.try_recv() {
                Ok(w) => {
                    let why = match &*status.lock().expect("status lock") {
                        Status::Failed(why) => why.clone(),
                        _ => "the serving cluster restarted".into(),
                    };
                    let _ = w.reply.send(Err(why));
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return,
            }
        }
        drop(q);
        std::thread::sleep(Duration::from_secs(1));
    }
}

impl LocalServer {
    /// Batch scoring without HTTP (`goten predict --mode goten`): seals `images` to the
    /// service key, `per_query` per query, submits them all, and opens the answers with a
    /// reply key of this process. Returns the logits, image-major.
    pub fn score(&self, images: &[&[u8]], per_query: usize) -> Result<Vec<f32>, RuntimeError> {
        let ready = match self.wait_ready(Duration::from_secs(600)) {
            Status::Ready(r) => r,
            Status::Failed(why) => {
                return Err(RuntimeError::Party(PartyError::Storage(format!(
                    "the serving cluster failed to start: {why}"
                ))));
            }
            Status::Starting => {
                return Err(RuntimeError::config("the serving cluster did not start"));
            }
        };
        let reply = goten_enclave::hpke::KeyPair::generate();
        let mut pending = Vec::new();
        for chunk in images.chunks(per_query.max(1)) {
            let q = goten_enclave::query::seal_query(
                &ready.service_key,
                &ready.name,
                &reply.public_key(),
                ready.info.input,
                chunk,
            )
            .map_err(|e| RuntimeError::config(format!("cannot seal a query: {e}")))?;
            let (tx, rx) = channel();
            self.queue()
                .send(Work {
                    queries: vec![q.clone()],
                    images: chunk.len(),
                    reply: tx,
                })
                .map_err(|_| RuntimeError::config("the serving cluster has stopped"))?;
            pending.push((q, rx));
        }
        let mut logits = Vec::with_capacity(images.len() * ready.info.classes);
        for (q, rx) in pending {
            let fail = |why: String| RuntimeError::Party(PartyError::Storage(why));
            let replies = rx
                .recv()
                .map_err(|_| fail("the serving cluster stopped".into()))?
                .map_err(fail)?;
            let sealed = replies
                .into_iter()
                .next()
                .ok_or_else(|| fail("no reply".into()))?
                .map_err(|e| RuntimeError::config(e.to_string()))?;
            let a = goten_enclave::query::open_answer(&reply, &q, &sealed)
                .map_err(|e| fail(format!("an answer does not open: {e}")))?;
            logits.extend_from_slice(&a.logits);
        }
        Ok(logits)
    }
}
