//! A serving cluster in this process (`goten serve --local`, `goten predict --mode goten`):
//! S0, S1 and S2 on threads over the in-process transport, restarted after a failure.
//!
//! Where it sits: under the HTTP front end and the batch scorer. One simulated platform (the
//! same keys across restarts, as a machine's would be); every start runs a fresh key exchange,
//! so a restarted cluster has a new service key and clients fetch its evidence again.

use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use goten_device::Device;
use goten_enclave::quant::QuantConfig;
use goten_enclave::{EnclaveConfig, Role};
use goten_field::Ring;
use goten_party::{ClusterConfig, Party, PartyError, Transport, Trusts, run_local};

use super::cluster::{Cmd, ServePlan, Status, serve_s0, serve_s1};
use super::handle::Handle;
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
    /// Worker threads per party's device (0: one pool of the machine's cores, shared by the
    /// three; see `devices::local_parts`).
    pub threads: usize,
    /// Seconds a party waits for another before declaring it gone.
    pub timeout: Duration,
    /// Every key from a public seed (tests only; loud).
    pub danger_deterministic_keys: Option<u64>,
    /// Wraps each party's device and transport on every start (audits; `None` in use).
    pub wrap: Option<Wrap>,
}

/// A running local serving cluster: a [`Handle`] (submit work, status, evidence, batch
/// scoring) and the thread running the three parties.
pub struct LocalServer {
    handle: Arc<Handle>,
    thread: Option<JoinHandle<()>>,
}

impl std::ops::Deref for LocalServer {
    type Target = Handle;
    fn deref(&self) -> &Handle {
        &self.handle
    }
}

/// Checks that `dir` holds a goten-mode run's sealed checkpoints of `roles` (`e0`, `e1`).
pub fn check_run_folder(dir: &std::path::Path, roles: &[&str]) -> Result<(), RuntimeError> {
    if !dir.is_dir() {
        return Err(RuntimeError::config(format!(
            "{} is not a run folder (pass the --out folder of a goten-mode training run)",
            dir.display()
        )));
    }
    for role in roles {
        let p = dir.join(format!("checkpoint-{role}.sealed"));
        if !p.exists() {
            return Err(RuntimeError::config(format!(
                "{} is missing: serving needs the sealed checkpoints of both enclaves of a goten-mode run (train with --mode goten)",
                p.display()
            )));
        }
    }
    Ok(())
}

/// The serving folder: with sealed checkpoints of `roles`, or (awaiting the owner's model)
/// created if missing, to receive them.
pub fn prepare_folder(
    plan: &super::cluster::ServePlan,
    roles: &[&str],
) -> Result<(), RuntimeError> {
    if plan.await_owner.is_none() {
        return check_run_folder(&plan.checkpoint, roles);
    }
    std::fs::create_dir_all(&plan.checkpoint).map_err(|e| {
        RuntimeError::storage(
            format!(
                "cannot create the serving folder {}",
                plan.checkpoint.display()
            ),
            e,
        )
    })
}

impl LocalServer {
    /// Starts the cluster on a background thread; it publishes [`Status::Ready`] once E0 and E1
    /// hold the same model.
    pub fn start(c: LocalServe) -> Result<Self, RuntimeError> {
        if c.plan.max_batch == 0 {
            return Err(RuntimeError::config("--max-batch must be at least 1"));
        }
        prepare_folder(&c.plan, &["e0", "e1"])?;
        let trusts = Arc::new(match c.danger_deterministic_keys {
            Some(seed) => {
                eprintln!("{}", crate::party_run::DANGER_KEYS);
                Trusts::danger_deterministic(seed)
            }
            None => Trusts::generate(),
        });
        let (handle, queue) = Handle::new(&trusts);
        let sealing = crate::store::platform_sealing_key()?;
        let (status, stats) = (handle.status.clone(), handle.stats.clone());
        let thread = std::thread::Builder::new()
            .name("goten-serve".into())
            .spawn(move || supervise(&c, &trusts, &sealing, &queue, (&status, &stats)))
            .map_err(|e| RuntimeError::config(format!("cannot start the serving thread: {e}")))?;
        Ok(LocalServer {
            handle: Arc::new(handle),
            thread: Some(thread),
        })
    }
}

impl LocalServer {
    /// What the HTTP front end serves from (the cluster stays up while this server lives).
    pub fn handle(&self) -> Arc<Handle> {
        self.handle.clone()
    }
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        // Closing the queue ends S0's loop, which tells S1 and S2 it is done.
        self.handle.close();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Answers the work waiting in `queue` with `why`; false when the front end is gone.
pub(crate) fn drain(queue: &Mutex<Receiver<Cmd>>, why: &str) -> bool {
    let q = queue.lock().expect("queue lock");
    loop {
        match q.try_recv() {
            Ok(Cmd::Infer(w)) => {
                let _ = w.reply.send(Err(why.to_string()));
            }
            Ok(Cmd::Attest { reply, .. }) => {
                let _ = reply.send(Err(why.to_string()));
            }
            Ok(Cmd::Provision { reply, .. }) => {
                let _ = reply.send(Err(why.to_string()));
            }
            Err(TryRecvError::Empty) => return true,
            Err(TryRecvError::Disconnected) => return false,
        }
    }
}

/// Runs the cluster until the queue closes; restarts it a second after any failure.
fn supervise(
    c: &LocalServe,
    trusts: &Trusts,
    sealing: &goten_field::SecretKey,
    queue: &Mutex<Receiver<Cmd>>,
    (status, stats): (&super::cluster::SharedStatus, &super::cluster::SharedStats),
) {
    let cfg = ClusterConfig {
        enclave: EnclaveConfig {
            ring: Ring::default(),
            quant: QuantConfig::default(),
        },
        timeout: c.timeout,
    };
    let evidence = |role: Role, rd: [u8; 32]| trusts.evidence(role, rd).map_err(|e| e.to_string());
    loop {
        *status.lock().expect("status lock") = Status::Starting;
        let body = |p: &mut Party| -> Result<(), PartyError> {
            if p.enclave.role() == Role::S0 {
                serve_s0(
                    p,
                    &c.plan,
                    sealing,
                    queue,
                    (status, stats),
                    (&evidence, c.timeout),
                )
            } else {
                serve_s1(p, &c.plan, sealing, &evidence)
            }
        };
        let r = crate::devices::local_parts(c.device, c.threads, c.timeout)
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
        let why = match r {
            Ok(_) => return,
            Err(e) => e.to_string(),
        };
        eprintln!("serving cluster stopped: {why}; restarting");
        *status.lock().expect("status lock") = Status::Failed(why.clone());
        // Stop when the front end is gone; otherwise answer waiting work with the failure
        // and try again.
        if !drain(queue, &why) {
            return;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}
