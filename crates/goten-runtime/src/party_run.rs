//! One party of a deployment on separate machines (`goten party`): S0 or S1 with its enclave,
//! or S2, the dealer.
//!
//! Where it sits: an executor beside [`crate::local`]. It reads the cluster and key files,
//! connects to the other two parties over mutually authenticated TLS (`goten_party::deploy`),
//! checks that all run the same job, then runs the training loop or the dealer loop.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use goten_enclave::quant::QuantConfig;
use goten_enclave::{EnclaveConfig, Role};
use goten_field::Ring;
use goten_party::cluster::{danger_deterministic_ephemeral, run_dealer_party, run_enclave_party};
use goten_party::deploy::{self, ClusterFile, KeyFile};
use goten_party::ecall::party::run_remote_enclave_party;
use goten_party::handshake::{JobId, agree_job};
use goten_party::provision::{self, Provisionable};
use goten_party::{ClusterConfig, PartyError, PartyReport, Traffic};

use crate::config::{EnclaveKind, JobConfig, Mode};
use crate::job::Setup;
use crate::local::{Provisioner, owner_provisioner, party_body, remote_party_body};
use crate::{Observer, RuntimeError, Summary};

/// Where a party finds its deployment.
pub struct Deployment {
    /// This party.
    pub role: Role,
    /// The cluster file: the three parties' public entries.
    pub cluster: PathBuf,
    /// This party's key file (default: `party-ID.key` next to the cluster file).
    pub key: Option<PathBuf>,
    /// Listen here instead of at the cluster file's address.
    pub listen: Option<String>,
    /// Take the data owner's provisioned key here instead of at the cluster file's
    /// `provision_address`.
    pub provision_listen: Option<String>,
    /// The TEE this party expects to run in (`--tee`); it must be the cluster file's.
    pub tee: Option<goten_attest::TeeKind>,
}

fn read(path: &Path, what: &str) -> Result<String, RuntimeError> {
    std::fs::read_to_string(path)
        .map_err(|e| RuntimeError::storage(format!("cannot read the {what} {}", path.display()), e))
}

fn at(role: Role) -> impl Fn(PartyError) -> RuntimeError {
    move |e| {
        RuntimeError::Party(PartyError::At {
            role,
            source: Box::new(e),
        })
    }
}

/// A failure to connect: the network's is the peers' (or the network's), the rest the files'.
fn reach(role: Role) -> impl Fn(deploy::DeployError) -> RuntimeError {
    move |e| match e {
        deploy::DeployError::Net(n) => at(role)(PartyError::Net(n)),
        other => RuntimeError::Deploy(other),
    }
}

impl Deployment {
    /// The cluster, this party's key file, and the trust they establish.
    fn open(
        &self,
        c: &JobConfig,
    ) -> Result<(ClusterFile, KeyFile, goten_party::Trusts), RuntimeError> {
        let cluster = ClusterFile::parse(
            &read(&self.cluster, "cluster file")?,
            &self.cluster.display().to_string(),
        )?;
        let i = self.role.index();
        let key_path = self.key.clone().unwrap_or_else(|| {
            self.cluster
                .parent()
                .unwrap_or(Path::new("."))
                .join(format!("party-{i}.key"))
        });
        let key = KeyFile::parse(
            &read(&key_path, "key file")?,
            &key_path.display().to_string(),
        )?;
        if key.role() != self.role {
            return Err(RuntimeError::config(format!(
                "{} is the key of {}, but this party is {}",
                key_path.display(),
                key.role(),
                self.role
            )));
        }
        if key.danger_deterministic && c.danger_deterministic_keys.is_none() {
            return Err(RuntimeError::config(format!(
                "{} was made with --danger-deterministic-keys: its attestation secret derives from a public seed, so a run without that flag would rest on it; make a fresh key with goten keygen",
                key_path.display()
            )));
        }
        let ephemeral = c
            .danger_deterministic_keys
            .map(danger_deterministic_ephemeral);
        let mut trusts = deploy::trusts(&cluster, &key, ephemeral)?;
        let kind = cluster
            .attestation
            .as_ref()
            .map_or(Ok(goten_attest::TeeKind::Simulated), |a| a.kind())
            .map_err(RuntimeError::config)?;
        if let Some(asked) = self.tee
            && asked != kind
        {
            return Err(RuntimeError::config(format!(
                "--tee {asked}, but {} says tee = \"{kind}\": every party uses the cluster file's TEE kind",
                self.cluster.display()
            )));
        }
        let base = self.cluster.parent().unwrap_or(Path::new("."));
        trusts.hardware = deploy::hardware_setup(&cluster, base)?;
        Ok((cluster, key, trusts))
    }

    /// What an operator should compare out of band before trusting a run: each party's key
    /// fingerprint (as `goten keygen` printed it on that party's machine) and the deployment
    /// hash (the same on all three parties).
    pub fn describe(&self, c: &JobConfig) -> Result<Vec<String>, RuntimeError> {
        let (cluster, _, _) = self.open(c)?;
        let mut lines = Vec::new();
        for r in Role::ALL {
            let me = if r == self.role { " (this party)" } else { "" };
            lines.push(format!(
                "{r} key fingerprint {}{me}",
                cluster.entry(r).fingerprint()
            ));
        }
        let h = cluster.deployment_hash(c.danger_deterministic_keys);
        let short: String = h[..8].iter().map(|b| format!("{b:02x}")).collect();
        lines.push(format!(
            "deployment {short} (compare with the other parties: same cluster file and settings)"
        ));
        Ok(lines)
    }
}

/// This party's nonce for the session's hellos: fresh, except in a deterministic test run
/// (whose every key and mask is fixed by a public seed anyway).
fn session_nonce(c: &JobConfig) -> Result<[u8; 32], RuntimeError> {
    if c.danger_deterministic_keys.is_some() {
        return Ok([0; 32]);
    }
    let mut n = [0u8; 32];
    getrandom::fill(&mut n)
        .map_err(|e| RuntimeError::storage("no entropy", std::io::Error::other(e.to_string())))?;
    Ok(n)
}

/// The warning every command taking `--danger-deterministic-keys` prints.
pub const DANGER_KEYS: &str = "WARNING: --danger-deterministic-keys: every key and mask derives from a public seed; this run protects nothing (tests only)";

/// A party connected to the other two, with its device.
struct Connected {
    deployment: [u8; 32],
    trusts: goten_party::Trusts,
    device: Box<dyn goten_device::Device>,
    net: goten_party::tcp::TcpTransport,
    timeout: Duration,
}

impl Deployment {
    /// Reads the files, makes the device and connects over TLS (shares of `ring`).
    fn connect(&self, c: &JobConfig, ring: Ring) -> Result<Connected, RuntimeError> {
        let (cluster, key, trusts) = self.open(c)?;
        // Fail before waiting for peers when this machine cannot produce the evidence the
        // cluster asks for (no TEE, or no interface to it).
        // (With enclave processes the enclave program attests itself, inside the TEE.)
        if let (Some(h), true) = (
            &trusts.hardware,
            self.role != Role::S2 && c.enclave == EnclaveKind::InProcess,
        ) {
            goten_attest::generate::generate(h.kind, &[0; 64]).map_err(|e| {
                RuntimeError::config(format!(
                    "{} cannot attest as the cluster asks: {e}",
                    self.role
                ))
            })?;
        }
        let deployment = cluster.deployment_hash(c.danger_deterministic_keys);
        let timeout = Duration::from_secs(c.timeout);
        let device = crate::devices::make(c.device, c.party_threads(1))?;
        let net = deploy::connect(&cluster, &key, self.listen.as_deref(), timeout, ring)
            .map_err(reach(self.role))?;
        Ok(Connected {
            deployment,
            trusts,
            device,
            net,
            timeout,
        })
    }
}

/// Connects to the other two and agrees on the job: S0 and S1 offer `digest` (the job's
/// fingerprint), S2 (`None`) adopts theirs. The trust then holds this session's nonces.
fn join(
    d: &Deployment,
    c: &JobConfig,
    ring: Ring,
    digest: Option<[u8; 32]>,
) -> Result<(Connected, JobId), RuntimeError> {
    let mut conn = d.connect(c, ring)?;
    let ours = digest.map(|digest| JobId {
        ring_bits: ring.bits(),
        digest,
        deployment: conn.deployment,
        nonce: [0; 32],
    });
    let (job, nonces) =
        agree_job(&mut conn.net, ours, conn.deployment, session_nonce(c)?).map_err(at(d.role))?;
    conn.trusts.session_nonces = nonces;
    Ok((conn, job))
}

/// S2's result.
pub struct DealerOutcome {
    /// Its time and traffic.
    pub report: PartyReport,
}

/// Runs S2: serves S0 and S1 until both are done; `on_iteration` sees the traffic of each
/// protocol iteration. Of `c` only the timeout, threads, device and danger seed apply.
pub fn run_dealer(
    d: &Deployment,
    c: &JobConfig,
    on_iteration: &mut dyn FnMut(u64, Traffic),
) -> Result<DealerOutcome, RuntimeError> {
    let role = d.role;
    let (
        Connected {
            trusts,
            device,
            mut net,
            timeout,
            ..
        },
        job,
    ) = join(d, c, Ring::default(), None)?;
    let ring = Ring::new(job.ring_bits)
        .map_err(|e| RuntimeError::config(format!("the job's ring from S0 and S1: {e}")))?;
    net.set_ring(ring);
    let cfg = ClusterConfig {
        enclave: EnclaveConfig {
            ring,
            quant: QuantConfig::default(),
        },
        timeout,
    };
    let report =
        run_dealer_party(&cfg, &trusts, device, Box::new(net), on_iteration).map_err(at(role))?;
    Ok(DealerOutcome { report })
}

/// Runs S0 or S1 of `c` (prepared as `setup`): connects, agrees on the job, trains.
pub fn run_trainer<'a>(
    d: &Deployment,
    c: &'a JobConfig,
    setup: &'a Setup,
    observer: Option<&'a Mutex<dyn Observer + 'a>>,
) -> Result<(Summary, PartyReport), RuntimeError> {
    let role = d.role;
    if role == Role::S2 {
        return Err(RuntimeError::config(
            "S2 runs the dealer, not a training session",
        ));
    }
    if c.mode != Mode::Goten {
        return Err(RuntimeError::config(format!(
            "a party runs goten mode only (got mode {})",
            crate::config::Choice::name(c.mode)
        )));
    }
    // A sealed dataset without a key here: listen for the data owner before connecting, so a
    // wrong or busy address fails at once.
    let owner_listener = if setup.sealed() && setup.data_key.is_none() {
        let (cluster, _, _) = d.open(c)?;
        let addr = deploy::provision_address(&cluster, role, d.provision_listen.as_deref())?;
        Some(TcpListener::bind(addr).map_err(|e| {
            RuntimeError::config(format!("cannot listen for the data owner on {addr}: {e}"))
        })?)
    } else {
        None
    };
    let (
        Connected {
            trusts,
            device,
            net,
            timeout,
            ..
        },
        _,
    ) = join(d, c, setup.enclave.ring, Some(setup.fingerprint))?;
    let serve = |e: &mut dyn Provisionable| -> Result<(), PartyError> {
        let Some(listener) = owner_listener.as_ref() else {
            return Err(PartyError::Storage(format!(
                "{role}: a sealed dataset and neither a data key nor a provisioning listener"
            )));
        };
        // The same evidence as the key exchange's: simulated, or the TEE's quote or report.
        let evidence = |rd: &[u8; 32]| trusts.evidence(role, *rd).map_err(|e| e.to_string());
        Ok(provision::serve(listener, e, &evidence, timeout)?)
    };
    let owner = owner_provisioner(setup);
    let provision: &Provisioner<'_> = if setup.data_key.is_some() {
        &owner
    } else {
        &serve
    };
    let cfg = ClusterConfig {
        enclave: setup.enclave,
        timeout,
    };
    let observers = [observer, observer];
    if c.enclave == EnclaveKind::Process {
        let enclave = crate::enclave_process::spawn_self(role, timeout).map_err(at(role))?;
        let body = remote_party_body(c, setup, observers, provision);
        run_remote_enclave_party(role, &cfg, &trusts, device, Box::new(net), enclave, &body)
    } else {
        let body = party_body(c, setup, observers, provision);
        run_enclave_party(role, &cfg, &trusts, device, Box::new(net), &body)
    }
    .map_err(at(role))
}

impl Deployment {
    /// The trust this party's files establish (its front end's simulated roots).
    pub fn trusts(&self, c: &JobConfig) -> Result<goten_party::Trusts, RuntimeError> {
        Ok(self.open(c)?.2)
    }
}

/// Connects S0 or S1 to the other two for a job whose S0 and S1 agree on `digest` (serving),
/// and runs `body` on the keyed party with its trust (for its evidence).
pub fn run_enclave_job(
    d: &Deployment,
    c: &JobConfig,
    digest: [u8; 32],
    body: &(dyn Fn(&mut goten_party::Party, &goten_party::Trusts) -> Result<(), PartyError> + Sync),
) -> Result<(), RuntimeError> {
    let role = d.role;
    let ring = Ring::default();
    let (
        Connected {
            trusts,
            device,
            net,
            timeout,
            ..
        },
        _,
    ) = join(d, c, ring, Some(digest))?;
    let cfg = ClusterConfig {
        enclave: EnclaveConfig {
            ring,
            quant: QuantConfig::default(),
        },
        timeout,
    };
    let t = &trusts;
    run_enclave_party(role, &cfg, t, device, Box::new(net), &|p| body(p, t)).map_err(at(role))?;
    Ok(())
}
