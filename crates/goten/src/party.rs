//! `goten keygen` and `goten party`: one party of a deployment on separate machines.
//!
//! Where it sits: the front end of `goten_runtime::party_run`. `keygen` writes a party's secret
//! key file and its public cluster entry; `party` takes its job from flags (as `goten train`)
//! or from a job file (`--job`, what `goten train --transport tcp` writes for each party),
//! and shows S0/S1's progress or S2's traffic.

use std::path::PathBuf;
use std::sync::Mutex;

use anyhow::{Context, Result, bail};
use clap::Args;
use goten_enclave::Role;
use goten_runtime::party_run::{Deployment, run_dealer, run_trainer};
use goten_runtime::{JobConfig, Observer};
use serde_json::json;

use crate::options::TrainArgs;
use crate::report::{DealerLog, Reporter, report_traffic};

/// Options of `goten keygen`.
#[derive(Args, Debug)]
pub struct KeygenArgs {
    /// Which party: 0 (S0), 1 (S1) or 2 (S2, the dealer).
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..=2), required_unless_present_any = ["owner", "job_seed"], conflicts_with_all = ["owner", "job_seed"])]
    pub(crate) id: Option<u8>,
    /// Instead of a party's keys: a data owner's job secret seed (job.seed, secret), for
    /// goten provision --job-seed.
    #[arg(long, conflicts_with = "owner")]
    pub(crate) job_seed: bool,
    /// Instead of a party's keys: the model owner's key pair (owner.key, secret; owner.pub,
    /// for the job's --model-owner). Open sealed exports with goten decrypt-model.
    #[arg(long)]
    pub(crate) owner: bool,
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
    /// The job as a JSON file (fields as the training options, e.g. `"epochs": 5`; missing
    /// ones take their defaults) instead of training options.
    #[arg(long, conflicts_with = "TrainArgs")]
    pub(crate) job: Option<PathBuf>,
    /// The TEE this party runs in: simulated (no TEE; the default), sgx (under Gramine), tdx or
    /// sev-snp (a confidential VM, Linux 6.7+ configfs-tsm). Must match the cluster file's
    /// [attestation] tee; hardware kinds attest with quotes or reports the peers verify.
    #[arg(long, value_parser = parse_tee)]
    pub(crate) tee: Option<goten_attest::TeeKind>,
    /// Where this party takes the data owner's provisioned data key (default: the cluster
    /// entry's provision_address); needed for a sealed dataset without --data-key.
    #[arg(long)]
    pub(crate) provision_listen: Option<String>,
    /// Print one JSON object with the results as the last stdout line.
    #[arg(long)]
    pub(crate) json: bool,
    /// Training options: S0 and S1 must be given the same ones (S2 ignores them except
    /// --timeout, --threads, --device, --out and --resume).
    #[command(flatten)]
    pub(crate) train: TrainArgs,
}

pub fn keygen(a: KeygenArgs) -> Result<()> {
    if a.job_seed {
        let path = goten_runtime::owner::write_job_seed(&a.out)?;
        eprintln!(
            "wrote {} (SECRET: it fixes a run's rounding noise, batch order and initial weights; keep it with the data key). Use: goten provision --job-seed {}",
            path.display(),
            path.display()
        );
        return Ok(());
    }
    let Some(id) = a.id else {
        let (key, public, pk) = goten_runtime::owner::write_owner_keys(&a.out)?;
        let fp: String = pk[..8].iter().map(|b| format!("{b:02x}")).collect();
        eprintln!(
            "wrote {} (SECRET: it opens every model sealed to you; keep it here) and {} (public key {fp}..).\n\
             Give owner.pub to whoever runs the job: goten train ... --export model.sealed --model-owner owner.pub\n\
             Then: goten decrypt-model --key {} --input model.sealed --out model.safetensors",
            key.display(),
            public.display(),
            key.display()
        );
        return Ok(());
    };
    let role = Role::ALL[usize::from(id)];
    if role != Role::S2 && a.address.is_none() {
        bail!("{role} needs --address HOST:PORT: the other parties connect to it");
    }
    if a.danger_deterministic_keys.is_some() {
        eprintln!("{}", goten_runtime::party_run::DANGER_KEYS);
    }
    let (key_path, entry) =
        goten_runtime::keys::write_keys(&a.out, role, a.address, a.danger_deterministic_keys)?;
    let i = id;
    eprintln!(
        "wrote {} (SECRET: keep it on this machine) and {}.\n\
         Give party-{i}.toml to the other parties; every party then uses the same cluster file:\n  \
         cat party-0.toml party-1.toml party-2.toml > cluster.toml\n\
         {role} key fingerprint {} (the others compare it with what goten party prints for {role})",
        key_path.display(),
        a.out.join(format!("party-{i}.toml")).display(),
        entry.fingerprint()
    );
    Ok(())
}

fn parse_tee(s: &str) -> std::result::Result<goten_attest::TeeKind, String> {
    s.parse()
}

/// Options of `goten provision`.
#[derive(Args, Debug)]
pub struct ProvisionArgs {
    /// The cluster file of the deployment (its platform keys, pinned measurement and the
    /// provision_address of S0 and S1).
    #[arg(long)]
    pub(crate) cluster: PathBuf,
    /// The data key from goten seal-data (it never leaves this machine unsealed).
    #[arg(long)]
    pub(crate) data_key: PathBuf,
    /// A job secret seed (goten keygen --job-seed) to release with the key: it keys the run's
    /// rounding noise, batch order and initial weights, so you can reproduce the run and no
    /// host can predict them.
    #[arg(long)]
    pub(crate) job_seed: Option<PathBuf>,
    /// Seconds to wait for the parties to finish their key exchange and open their ports.
    #[arg(long, default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub(crate) timeout: u64,
}

/// `goten provision`: the data owner's step.
pub fn provision(a: ProvisionArgs) -> Result<()> {
    let key = goten_runtime::data::read_key(&a.data_key)?;
    let seed = a
        .job_seed
        .as_deref()
        .map(goten_runtime::data::read_key)
        .transpose()?;
    eprintln!("note: {}", goten_party::cluster::SIMULATION_NOTICE);
    let service = goten_runtime::launcher::provision_data_key(
        &a.cluster,
        (&key, seed.as_deref()),
        std::time::Duration::from_secs(a.timeout),
    )?;
    let fp: String = service[..8].iter().map(|b| format!("{b:02x}")).collect();
    eprintln!(
        "provisioned the data key to S0's and S1's enclaves (evidence verified; service key {fp}..)"
    );
    Ok(())
}

pub fn run(a: PartyArgs) -> Result<()> {
    let role = Role::ALL[usize::from(a.id)];
    let c = match &a.job {
        Some(path) => JobConfig::read(path)?,
        None => a.train.to_config(),
    };
    let d = Deployment {
        role,
        cluster: a.cluster,
        key: a.key,
        listen: a.listen,
        provision_listen: a.provision_listen,
        tee: a.tee,
    };
    for line in d.describe(&c)? {
        eprintln!("{line}");
    }
    if role == Role::S2 {
        // S0 and S1 print it with the job's other notices; S2 prepares no job.
        if c.danger_deterministic_keys.is_some() {
            eprintln!("{}", goten_runtime::party_run::DANGER_KEYS);
        }
        eprintln!("note: {}", goten_party::cluster::SIMULATION_NOTICE);
        let mut log = DealerLog::open(&c.out, c.resume)?;
        let r = run_dealer(&d, &c, &mut |i, b| log.iteration(i, b))?.report;
        eprintln!(
            "S2 done: {:.1} s on the device, sent {:.1} MB, received {:.1} MB",
            r.device_secs,
            r.traffic.sent as f64 / 1e6,
            r.traffic.received as f64 / 1e6
        );
        if a.json {
            println!(
                "{}",
                json!({"party": "S2", "bytes_sent": r.traffic.sent, "bytes_received": r.traffic.received})
            );
        }
        return Ok(());
    }
    let setup = crate::train::prepare_loudly(&c)?;
    // Each party reports in its own terminal (a launcher sends S1's to its log file).
    let reporter = Mutex::new(Reporter::new(setup.total_steps, &c.out, c.resume, false)?);
    let (summary, report) = run_trainer(&d, &c, &setup, Some(&reporter as &Mutex<dyn Observer>))
        .context("training failed")?;
    report_traffic(&reporter, &[(role, report)]);
    crate::train::finish(&c, &setup, summary, reporter, a.json)
}
