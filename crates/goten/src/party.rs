//! `goten keygen` and `goten party`: one party of a deployment on separate machines.
//!
//! Where it sits: host-side orchestration, like `train.rs`, for one party instead of three.
//! `keygen` writes a party's secret key file and its public cluster entry; `party` connects to
//! the other two over mutually authenticated TLS (`goten_party::deploy`), checks that all run
//! the same job, then runs S0/S1's training loop or S2's dealer loop.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use goten_enclave::Role;
use goten_enclave::quant::QuantConfig;
use goten_field::Ring;
use goten_party::cluster::{
    SIMULATION_NOTICE, danger_deterministic_ephemeral, run_dealer_party, run_enclave_party,
};
use goten_party::deploy::{self, ClusterFile, KeyFile};
use goten_party::handshake::{JobId, agree_job};
use goten_party::{ClusterConfig, PartyError};
use serde_json::json;

use crate::options::{Mode, TrainArgs};
use crate::report::{DealerLog, Reporter, report_traffic};

/// Options of `goten keygen`.
#[derive(Args, Debug)]
pub struct KeygenArgs {
    /// Which party: 0 (S0), 1 (S1) or 2 (S2, the dealer).
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..=2))]
    pub(crate) id: u8,
    /// host:port where this party will listen (required for S0 and S1: the others connect).
    #[arg(long)]
    pub(crate) address: Option<String>,
    /// Folder for party-ID.key (secret) and party-ID.toml (public entry for the cluster file).
    #[arg(long, default_value = ".")]
    pub(crate) out: PathBuf,
    /// Derive the attestation key from this public seed (tests only).
    #[arg(long, hide = true)]
    pub(crate) danger_deterministic_keys: Option<u64>,
}

/// Options of `goten party`.
#[derive(Args, Debug)]
pub struct PartyArgs {
    /// Which party this process is: 0 (S0), 1 (S1) or 2 (S2, the dealer).
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..=2))]
    pub(crate) id: u8,
    /// The cluster file: the three parties' `[[party]]` entries from `goten keygen`.
    #[arg(long)]
    pub(crate) cluster: PathBuf,
    /// This party's key file (default: party-ID.key next to the cluster file).
    #[arg(long)]
    pub(crate) key: Option<PathBuf>,
    /// Listen here instead of at the cluster file's address (e.g. 0.0.0.0:7000).
    #[arg(long)]
    pub(crate) listen: Option<String>,
    /// Training options: S0 and S1 must be given the same ones (S2 ignores them except
    /// --timeout, --threads, --out and --json).
    #[command(flatten)]
    pub(crate) train: TrainArgs,
}

pub fn keygen(a: KeygenArgs) -> Result<()> {
    let role = Role::ALL[usize::from(a.id)];
    if role != Role::S2 && a.address.is_none() {
        bail!("{role} needs --address HOST:PORT: the other parties connect to it");
    }
    let (key_path, _) =
        crate::keys::write_keys(&a.out, role, a.address, a.danger_deterministic_keys)?;
    let i = a.id;
    eprintln!(
        "wrote {} (SECRET: keep it on this machine) and {}.\n\
         Give party-{i}.toml to the other parties; every party then uses the same cluster file:\n  \
         cat party-0.toml party-1.toml party-2.toml > cluster.toml",
        key_path.display(),
        a.out.join(format!("party-{i}.toml")).display()
    );
    Ok(())
}

fn read(path: &Path, what: &str) -> Result<String> {
    std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the {what} {}", path.display()))
}

pub fn run(a: PartyArgs) -> Result<()> {
    let role = Role::ALL[usize::from(a.id)];
    let cluster = ClusterFile::parse(
        &read(&a.cluster, "cluster file")?,
        &a.cluster.display().to_string(),
    )?;
    let key_path = a.key.clone().unwrap_or_else(|| {
        a.cluster
            .parent()
            .unwrap_or(Path::new("."))
            .join(format!("party-{}.key", a.id))
    });
    let key = KeyFile::parse(
        &read(&key_path, "key file")?,
        &key_path.display().to_string(),
    )?;
    if key.role() != role {
        bail!(
            "{} is the key of {}, but this is --id {} ({role})",
            key_path.display(),
            key.role(),
            a.id
        );
    }
    let t = &a.train;
    let ephemeral = t
        .danger_deterministic_keys
        .map(danger_deterministic_ephemeral);
    let trusts = deploy::trusts(&cluster, &key, ephemeral)
        .with_context(|| format!("{}", key_path.display()))?;
    let timeout = Duration::from_secs(t.timeout);
    let threads = crate::options::party_threads(t, 1);
    let device = crate::devices::make(t.device, threads)?;
    if role == Role::S2 {
        eprintln!("note: {SIMULATION_NOTICE}");
        let mut net = deploy::connect(
            &cluster,
            &key,
            a.listen.as_deref(),
            timeout,
            Ring::default(),
        )
        .context("S2 cannot reach S0 and S1")?;
        let job = agree_job(&mut net, None).map_err(|e| at(role, e))?;
        let ring = Ring::new(job.ring_bits).context("the job's ring")?;
        net.set_ring(ring);
        let cfg = ClusterConfig {
            enclave: goten_enclave::EnclaveConfig {
                ring,
                quant: QuantConfig::default(),
            },
            timeout,
        };
        let mut log = DealerLog::open(&t.out, t.resume)?;
        let r = run_dealer_party(&cfg, &trusts, device, Box::new(net), &mut |i, b| {
            log.iteration(i, b)
        })
        .map_err(|e| at(role, e))?;
        eprintln!(
            "S2 done: {:.1} s on the device, sent {:.1} MB, received {:.1} MB",
            r.device_secs,
            r.traffic.sent as f64 / 1e6,
            r.traffic.received as f64 / 1e6
        );
        if t.json {
            println!(
                "{}",
                json!({"party": "S2", "bytes_sent": r.traffic.sent, "bytes_received": r.traffic.received})
            );
        }
        return Ok(());
    }
    if t.mode != Mode::Goten {
        bail!("goten party runs goten mode only (got --mode {:?})", t.mode);
    }
    let setup = crate::train::prepare(t)?;
    let mut net = deploy::connect(
        &cluster,
        &key,
        a.listen.as_deref(),
        timeout,
        setup.enclave.ring,
    )
    .with_context(|| format!("{role} cannot reach the other parties"))?;
    let ours = JobId {
        ring_bits: setup.enclave.ring.bits(),
        digest: setup.fingerprint,
    };
    agree_job(&mut net, Some(ours)).map_err(|e| at(role, e))?;
    // Each party reports in its own terminal (a launcher sends S1's to its log file).
    let reporter = Mutex::new(Reporter::new(setup.total_steps, &t.out, t.resume, false)?);
    let cfg = ClusterConfig {
        enclave: setup.enclave,
        timeout,
    };
    let reporters = [Some(&reporter), Some(&reporter)];
    let (summary, report) = if t.enclave == crate::enclave_proc::EnclaveKind::Process {
        let enclave = crate::enclave_proc::spawn(role, timeout).map_err(|e| at(role, e))?;
        let body = crate::train::remote_party_body(t, &setup, reporters);
        goten_party::ecall::party::run_remote_enclave_party(
            role,
            &cfg,
            &trusts,
            device,
            Box::new(net),
            enclave,
            &body,
        )
    } else {
        let body = crate::train::party_body(t, &setup, reporters);
        run_enclave_party(role, &cfg, &trusts, device, Box::new(net), &body)
    }
    .map_err(|e| at(role, e))
    .context("secure training failed")?;
    report_traffic(&reporter, &[(role, report)]);
    crate::train::finish(t, &setup, summary, reporter)
}

fn at(role: Role, e: PartyError) -> PartyError {
    PartyError::At {
        role,
        source: Box::new(e),
    }
}
