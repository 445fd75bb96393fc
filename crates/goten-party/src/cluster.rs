//! The key exchange between the three servers and a runner that puts them in one process.
//!
//! Where it sits: session setup. [`run_local`] starts S0, S1 and S2 as threads, each with its own
//! device and transport endpoint, runs the authenticated key exchange, then runs the caller's
//! body on S0 and S1 while S2 serves dealer requests. Any party's failure ends the others with
//! an error naming who failed (a dropped endpoint disconnects its peers), never a hang.
//!
//! Attestation here is **simulated** unless the cluster asks for a TEE (`--tee`):
//! [`Trusts::generate`] makes a simulated platform key; [`SIMULATION_NOTICE`] is what every run must tell its user.

use std::time::{Duration, Instant};

use goten_device::{Device, DeviceError};
use goten_enclave::keys::{Hello, KeyError, WrappedKey};
use goten_enclave::quant::Quantized;
use goten_enclave::{Enclave, EnclaveConfig, EnclaveError, KeyedEnclave, Role, SecretTensor};
use goten_field::{BilinearOp, ShapeError};
use thiserror::Error;

use crate::dealer;
use crate::host::EnclaveHost;
use crate::transport::{Message, NetError, Traffic, Transport};
pub use crate::trusts::{
    HardwareSetup, Trusts, attestation_public_key, danger_deterministic_ephemeral,
    danger_deterministic_secret, local_measurement,
};

/// What every run prints while enclaves are software and attestation is simulated.
pub const SIMULATION_NOTICE: &str = "SIMULATION: enclaves run as ordinary code and attestation evidence is simulated; \
this run demonstrates the protocol but gives no hardware guarantee against a malicious host";

/// Settings of a local cluster.
#[derive(Clone, Copy, Debug)]
pub struct ClusterConfig {
    /// Enclave settings (ring, quantization), identical for E0 and E1.
    pub enclave: EnclaveConfig,
    /// Receive timeout of every message.
    pub timeout: Duration,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            enclave: EnclaveConfig::default(),
            timeout: Duration::from_secs(120),
        }
    }
}

/// Errors of a party, naming the cause.
#[derive(Debug, Error)]
pub enum PartyError {
    /// The enclave refused or failed.
    #[error(transparent)]
    Enclave(#[from] EnclaveError),
    /// Key exchange failed.
    #[error(transparent)]
    Keys(#[from] KeyError),
    /// Network failure.
    #[error(transparent)]
    Net(#[from] NetError),
    /// Device failure.
    #[error(transparent)]
    Device(#[from] DeviceError),
    /// Malformed op description.
    #[error(transparent)]
    Shape(#[from] ShapeError),
    /// S0 and S1 asked S2 for different work.
    #[error("S0 and S1 disagree: {0}")]
    Disagree(String),
    /// A party failed; `role` says which.
    #[error("{role}: {source}")]
    At {
        /// The failing party.
        role: Role,
        /// Why.
        #[source]
        source: Box<PartyError>,
    },
    /// E0 and E1 no longer hold the same training state.
    #[error(
        "E0 and E1 diverged at step {0}: their training states differ (non-deterministic code or a corrupted party); stopping"
    )]
    Diverged(u64),
    /// The training session inside the enclave refused or failed.
    #[error(transparent)]
    Session(#[from] goten_enclave::session::SessionError),
    /// Local storage (checkpoint files, output folder) failed.
    #[error("local storage: {0}")]
    Storage(String),
    /// The data owner's provisioning of the data key failed.
    #[error(transparent)]
    Provision(#[from] crate::provision::ProvisionError),
    /// A party thread panicked (a bug).
    #[error("{0} panicked")]
    Panic(Role),
}

/// S0 or S1 during a run: its enclave and its host.
pub struct Party {
    /// The enclave, its keys established.
    pub enclave: KeyedEnclave,
    /// The host.
    pub host: EnclaveHost,
}

impl Party {
    /// This party's role.
    pub fn role(&self) -> Role {
        self.enclave.role()
    }

    /// `f(a, b)` through the protocol (float in, float out, inside the enclave).
    pub fn linear(
        &mut self,
        ids: (u64, u64),
        op: &BilinearOp,
        a: &SecretTensor,
        b: &SecretTensor,
    ) -> Result<SecretTensor, PartyError> {
        Ok(self.enclave.linear(&mut self.host, ids, op, a, b)?)
    }

    /// The exact integer result for quantized operands.
    pub fn linear_quantized(
        &mut self,
        ids: (u64, u64),
        op: &BilinearOp,
        a: (&[usize], &Quantized),
        b: (&[usize], &Quantized),
    ) -> Result<Vec<i64>, PartyError> {
        Ok(self
            .enclave
            .linear_quantized(&mut self.host, ids, op, a, b)?)
    }
}

impl Party {
    /// Exchanges state digests with the peer enclave's host and fails unless they agree.
    pub fn compare_state(&mut self, step: u64, digest: [u8; 32]) -> Result<(), PartyError> {
        let peer = self.host.peer();
        let t = self.host.transport();
        t.send(peer, Message::StateDigest { step, digest })?;
        match t.recv(peer)? {
            Message::StateDigest { step: s, digest: d } if s == step => {
                if d == digest {
                    Ok(())
                } else {
                    Err(PartyError::Diverged(step))
                }
            }
            m => Err(NetError::Unexpected {
                peer,
                expected: format!("state digest of step {step}"),
                got: m.kind().into(),
            }
            .into()),
        }
    }
}

/// Where a party's time went.
#[derive(Clone, Copy, Debug, Default)]
pub struct PartyReport {
    /// Wall time of the party's thread after the key exchange.
    pub total_secs: f64,
    /// In device calls.
    pub device_secs: f64,
    /// Sending and waiting for messages.
    pub transport_secs: f64,
    /// The rest: enclave work (quantization, PRG, masks, reconstruction) and host glue.
    pub enclave_secs: f64,
    /// Ring elements sent.
    pub elements_sent: u64,
    /// Bytes sent and received over the whole run (key exchange included).
    pub traffic: Traffic,
}

/// Results of a local run.
pub struct LocalRun<R> {
    /// What the body returned on S0 and S1.
    pub results: (R, R),
    /// Time breakdown of S0, S1, S2.
    pub reports: [PartyReport; 3],
    /// S2's traffic per protocol iteration (training and evaluation steps).
    pub dealer_iterations: Vec<(u64, Traffic)>,
}

fn recv_hello(t: &mut dyn Transport, from: Role) -> Result<Hello, PartyError> {
    match t.recv(from)? {
        Message::Hello(h) => Ok(h),
        m => Err(NetError::Unexpected {
            peer: from,
            expected: "hello".into(),
            got: m.kind().into(),
        }
        .into()),
    }
}

/// Exchanges hellos: sends ours to the other two, returns all three in role order.
pub(crate) fn exchange_hellos(
    t: &mut dyn Transport,
    mine: Hello,
) -> Result<[Hello; 3], PartyError> {
    let me = t.me();
    for to in Role::ALL.into_iter().filter(|&r| r != me) {
        t.send(to, Message::Hello(mine.clone()))?;
    }
    let mut out = [None, None, None];
    for from in Role::ALL {
        out[from.index()] = Some(if from == me {
            mine.clone()
        } else {
            recv_hello(t, from)?
        });
    }
    Ok(out.map(|h| h.expect("all three filled")))
}

pub(crate) fn missing_secret(role: Role, what: &str) -> PartyError {
    PartyError::Enclave(goten_enclave::EnclaveError::Config(format!(
        "{role} was started without its {what} key"
    )))
}

/// E1's host: E0's wrapped dealer key, the message after the hellos.
pub(crate) fn recv_wrapped(t: &mut dyn Transport) -> Result<WrappedKey, PartyError> {
    match t.recv(Role::S0)? {
        Message::WrappedKey(w) => Ok(w),
        m => Err(NetError::Unexpected {
            peer: Role::S0,
            expected: "wrapped key".into(),
            got: m.kind().into(),
        }
        .into()),
    }
}

fn enclave_party(
    role: Role,
    cfg: &ClusterConfig,
    trusts: &Trusts,
    device: Box<dyn Device>,
    transport: Box<dyn Transport>,
) -> Result<Party, PartyError> {
    let trust = trusts.trust()?;
    let enclave = Enclave::with_key_exchange(trusts.key_exchange(role)?, cfg.enclave)?;
    let evidence = trusts.evidence(role, enclave.report_data())?;
    let mut host = EnclaveHost::new(device, transport);
    let hellos = exchange_hellos(host.transport(), enclave.hello(evidence))?;
    let enclave = if role == Role::S0 {
        let (keyed, wrapped) = enclave.finish_e0(&hellos, &trust)?;
        host.transport()
            .send(Role::S1, Message::WrappedKey(wrapped))?;
        keyed
    } else {
        enclave.finish_e1(&hellos, &trust, &recv_wrapped(host.transport())?)?
    };
    let party = Party { enclave, host };
    Ok(party)
}

/// Runs S0 or S1 (`role`) in this process: key exchange, then `body`, then tells S2 it is done.
/// Where the three parties are separate processes, each calls this or [`run_dealer_party`].
pub fn run_enclave_party<R>(
    role: Role,
    cfg: &ClusterConfig,
    trusts: &Trusts,
    device: Box<dyn Device>,
    transport: Box<dyn Transport>,
    body: &(dyn Fn(&mut Party) -> Result<R, PartyError> + Sync),
) -> Result<(R, PartyReport), PartyError> {
    let mut party = enclave_party(role, cfg, trusts, device, transport)?;
    drive(&mut party, |p| &mut p.host, body)
}

/// Runs `body` on a party whose keys are established, then tells S2 it is done and reports
/// where the time went (shared by enclaves in this process and in a child process).
pub(crate) fn drive<P, R>(
    party: &mut P,
    host: fn(&mut P) -> &mut EnclaveHost,
    body: &(dyn Fn(&mut P) -> Result<R, PartyError> + Sync),
) -> Result<(R, PartyReport), PartyError> {
    let (t0, d0, n0) = {
        let h = host(party);
        (Instant::now(), h.device_secs(), h.transport_secs())
    };
    let r = body(party)?;
    let h = host(party);
    h.transport().send(Role::S2, Message::Done)?;
    let total = t0.elapsed().as_secs_f64();
    let device = h.device_secs() - d0;
    let net = h.transport_secs() - n0;
    Ok((
        r,
        PartyReport {
            total_secs: total,
            device_secs: device,
            transport_secs: net,
            enclave_secs: (total - device - net).max(0.0),
            elements_sent: h.elements_sent(),
            traffic: h.transport().traffic(),
        },
    ))
}

/// Runs S2 in this process until both enclave hosts are done.
pub fn run_dealer_party(
    cfg: &ClusterConfig,
    trusts: &Trusts,
    device: Box<dyn Device>,
    mut t: Box<dyn Transport>,
    on_iteration: &mut dyn FnMut(u64, Traffic),
) -> Result<PartyReport, PartyError> {
    let trust = trusts.trust()?;
    let kx = trusts.key_exchange(Role::S2)?;
    let identity = trusts
        .dealer
        .as_ref()
        .ok_or_else(|| missing_secret(Role::S2, "identity"))?;
    let hello = kx.hello(identity.sign(kx.report_data()));
    let hellos = exchange_hellos(&mut *t, hello)?;
    let key = kx.finish_dealer(&hellos, &trust)?;
    let (t0, n0) = (Instant::now(), t.busy_secs());
    let device_secs = dealer::serve(cfg.enclave.ring, &key, &*device, &mut *t, on_iteration)?;
    let total = t0.elapsed().as_secs_f64();
    let net = t.busy_secs() - n0;
    Ok(PartyReport {
        total_secs: total,
        device_secs,
        transport_secs: net,
        enclave_secs: 0.0,
        elements_sent: t.elements_sent(),
        traffic: t.traffic(),
    })
}

/// Whether `e` (anywhere in its chain of causes) is a peer disconnecting: a consequence of
/// another party's failure rather than a cause.
fn lost_peer(e: &PartyError) -> bool {
    // `#[error(transparent)]` variants hand `source()` to the inner error's source, so the
    // walk below never sees a `NetError` held directly: match those first.
    match e {
        PartyError::Net(NetError::PeerGone { .. }) => return true,
        PartyError::At { source, .. } => return lost_peer(source),
        _ => {}
    }
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(x) = cur {
        if matches!(
            x.downcast_ref::<NetError>(),
            Some(NetError::PeerGone { .. })
        ) {
            return true;
        }
        cur = x.source();
    }
    false
}

/// Three CPU devices of `threads` workers each and a connected in-process mesh: everything
/// [`run_local`] needs for a single-machine run.
pub type LocalParts = ([Box<dyn Device>; 3], [Box<dyn Transport>; 3]);

/// See [`LocalParts`].
pub fn local_cpu_parts(threads: usize, timeout: Duration) -> Result<LocalParts, DeviceError> {
    let devices = [
        Box::new(goten_device::CpuDevice::new(threads)?) as Box<dyn Device>,
        Box::new(goten_device::CpuDevice::new(threads)?),
        Box::new(goten_device::CpuDevice::new(threads)?),
    ];
    let nets =
        crate::transport::in_process_mesh(timeout).map(|t| Box::new(t) as Box<dyn Transport>);
    Ok((devices, nets))
}

/// Runs S0, S1 and S2 as threads of this process and `body` on S0 and S1.
pub fn run_local<R: Send>(
    cfg: &ClusterConfig,
    trusts: &Trusts,
    devices: [Box<dyn Device>; 3],
    transports: [Box<dyn Transport>; 3],
    body: &(dyn Fn(&mut Party) -> Result<R, PartyError> + Sync),
) -> Result<LocalRun<R>, PartyError> {
    run_three(cfg, trusts, devices, transports, &|role, d, t| {
        run_enclave_party(role, cfg, trusts, d, t, body)
    })
}

/// What runs S0 or S1 in a local run: role, device and transport in, result and report out.
pub(crate) type PartyFn<'a, R> = dyn Fn(Role, Box<dyn Device>, Box<dyn Transport>) -> Result<(R, PartyReport), PartyError>
    + Sync
    + 'a;

/// S0 and S1 through `party`, S2 as the dealer, each on a thread of this process.
pub(crate) fn run_three<R: Send>(
    cfg: &ClusterConfig,
    trusts: &Trusts,
    devices: [Box<dyn Device>; 3],
    transports: [Box<dyn Transport>; 3],
    party: &PartyFn<'_, R>,
) -> Result<LocalRun<R>, PartyError> {
    let [d0, d1, d2] = devices;
    let [t0, t1, t2] = transports;
    let mut dealer_iterations = Vec::new();
    let (r0, r1, r2) = std::thread::scope(|s| {
        let h0 = s.spawn(|| party(Role::S0, d0, t0));
        let h1 = s.spawn(|| party(Role::S1, d1, t1));
        let iters = &mut dealer_iterations;
        let h2 =
            s.spawn(move || run_dealer_party(cfg, trusts, d2, t2, &mut |i, b| iters.push((i, b))));
        (
            h0.join().unwrap_or(Err(PartyError::Panic(Role::S0))),
            h1.join().unwrap_or(Err(PartyError::Panic(Role::S1))),
            h2.join().unwrap_or(Err(PartyError::Panic(Role::S2))),
        )
    });
    match (r0, r1, r2) {
        (Ok((a, ra)), Ok((b, rb)), Ok(rz)) => Ok(LocalRun {
            results: (a, b),
            reports: [ra, rb, rz],
            dealer_iterations,
        }),
        (r0, r1, r2) => {
            // Report the root cause: a party that failed for its own reason, not because a peer
            // it waited on went away.
            let errs: Vec<(Role, PartyError)> = [
                (Role::S0, r0.err()),
                (Role::S1, r1.err()),
                (Role::S2, r2.err()),
            ]
            .into_iter()
            .filter_map(|(r, e)| e.map(|e| (r, e)))
            .collect();
            let idx = errs.iter().position(|(_, e)| !lost_peer(e)).unwrap_or(0);
            let (role, e) = errs
                .into_iter()
                .nth(idx)
                .expect("at least one party failed");
            Err(PartyError::At {
                role,
                source: Box::new(e),
            })
        }
    }
}
