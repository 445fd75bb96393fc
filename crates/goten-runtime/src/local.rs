//! Running a prepared job in this process: plain and enclave mode on one session, goten mode
//! as three party threads (E0 and E1 in-process or as child processes).
//!
//! Where it sits: the executors under `goten train` (in-process transport) and any other front
//! end. [`party_body`] and [`remote_party_body`] are also what one party of a deployment runs
//! ([`crate::party_run`]).

use std::sync::Mutex;
use std::time::Duration;

use goten_enclave::Role;
use goten_enclave::service::seal_provision;
use goten_enclave::session::{LocalSecret, TrainSession};
use goten_party::ecall::party::{RemoteParty, run_local_remote};
use goten_party::provision::Provisionable;
use goten_party::{ClusterConfig, Party, PartyError, PartyReport, Traffic, Trusts, run_local};

use crate::RuntimeError;
use crate::config::{EnclaveKind, JobConfig, Mode, TransportKind};
use crate::job::Setup;
use crate::{CkptStore, LocalHost, LoopPlan, Observer, PartyHost, Summary, train_loop};

/// Who sees S0's and S1's releases (plain and enclave mode use the first).
pub type Observers<'a> = [Option<&'a Mutex<dyn Observer + 'a>>; 2];

/// What a finished run returns besides the session's summary.
pub struct Outcome {
    /// S0's summary (the single session's in plain and enclave mode).
    pub summary: Summary,
    /// Every party's time and traffic (goten mode).
    pub reports: Vec<(Role, PartyReport)>,
    /// S2's traffic per protocol iteration (goten mode).
    pub dealer_iterations: Vec<(u64, Traffic)>,
}

/// E0's or E1's checkpoint store.
fn party_store(c: &JobConfig, role: Role) -> CkptStore {
    CkptStore {
        dir: c.out.clone(),
        role: if role == Role::S0 { "e0" } else { "e1" },
    }
}

/// The loop's plan from the configuration; `exporter`: this host writes the export.
fn loop_plan(c: &JobConfig, exporter: bool) -> LoopPlan<'_> {
    let export = c.export.as_ref().filter(|_| exporter).map(|path| {
        Box::new(move |r: &goten_enclave::session::ModelRelease| {
            crate::model_io::write_release(r, path)
                .map_err(|err| PartyError::Storage(err.to_string()))
        }) as Box<crate::train_loop::ExportSink<'_>>
    });
    LoopPlan {
        resume: c.resume,
        allow_rollback: c.allow_rollback,
        eval_every: c.eval_every,
        checkpoint_every: c.checkpoint_every,
        export,
    }
}

/// S0's or S1's loop over its session (in this process or behind an enclave process): the
/// same plan, store and observer either way; S0's host writes the export.
fn drive<'a>(
    c: &'a JobConfig,
    role: Role,
    s: &mut dyn goten_enclave::session::SessionEcalls,
    host: &mut goten_party::host::EnclaveHost,
    observers: Observers<'a>,
) -> Result<Summary, PartyError> {
    let plan = loop_plan(c, role == Role::S0);
    let store = party_store(c, role);
    train_loop(
        s,
        &mut PartyHost(host),
        &plan,
        &store,
        observers[role.index()],
    )
}

/// How a party's enclave gets a sealed dataset's key: from the data owner, through its
/// attested service key (called before the session starts, only for sealed data).
pub type Provisioner<'a> = dyn Fn(&mut dyn Provisionable) -> Result<(), PartyError> + Sync + 'a;

/// The provisioner of a run whose data owner is this process (`--data-key`): it seals the key
/// to the enclave's service key itself, so the key enters the enclave only as HPKE ciphertext,
/// the same path a remote data owner takes.
pub fn owner_provisioner(
    setup: &Setup,
) -> impl Fn(&mut dyn Provisionable) -> Result<(), PartyError> + Sync + '_ {
    move |e: &mut dyn Provisionable| {
        let role = e.role();
        let key = setup.data_key.as_ref().ok_or_else(|| {
            PartyError::Storage(format!(
                "{role}: a sealed dataset and no data key to provision"
            ))
        })?;
        let fail = |why: String| {
            PartyError::Enclave(goten_enclave::EnclaveError::Config(format!(
                "provisioning {role}'s enclave: {why}"
            )))
        };
        let (public, _) = e.service(&[0; 32]).map_err(fail)?;
        let sealed = seal_provision(&public, key, setup.job_seed.as_deref())
            .map_err(|err| fail(err.to_string()))?;
        e.provision(&sealed).map_err(fail)
    }
}

/// The training body of S0 or S1: a session on the keyed enclave, driven through its host.
pub fn party_body<'a: 'p, 'p>(
    c: &'a JobConfig,
    setup: &'a Setup,
    observers: Observers<'a>,
    provision: &'p Provisioner<'p>,
) -> impl Fn(&mut Party) -> Result<Summary, PartyError> + Sync + 'p {
    move |p: &mut Party| {
        let role = p.enclave.role();
        if setup.sealed() {
            provision(&mut p.enclave)?;
        }
        let mut s = TrainSession::goten(
            &mut p.enclave,
            setup.session_config(c),
            setup.splits(),
            setup.sealing.clone(),
        )?;
        drive(c, role, &mut s, &mut p.host, observers)
    }
}

/// The training body of S0 or S1 with its enclave in a child process: the same loop, the
/// session's ecalls sent over the process boundary.
pub fn remote_party_body<'a: 'p, 'p>(
    c: &'a JobConfig,
    setup: &'a Setup,
    observers: Observers<'a>,
    provision: &'p Provisioner<'p>,
) -> impl Fn(&mut RemoteParty) -> Result<Summary, PartyError> + Sync + 'p {
    move |p: &mut RemoteParty| {
        let role = p.enclave.role();
        if setup.sealed() {
            provision(&mut p.enclave)?;
        }
        p.enclave.start(setup.session_config(c), setup.splits())?;
        drive(c, role, &mut p.enclave, &mut p.host, observers)
    }
}

/// Runs `c` (transport in-process) on this machine.
pub fn run<'a>(
    c: &'a JobConfig,
    setup: &'a Setup,
    observers: Observers<'a>,
) -> Result<Outcome, RuntimeError> {
    if c.transport != TransportKind::InProcess {
        return Err(RuntimeError::config(
            "the tcp transport runs the parties as separate processes: use the launcher",
        ));
    }
    if setup.sealed() && setup.data_key.is_none() {
        return Err(RuntimeError::config(
            "a sealed dataset needs its data key here (--data-key): in one process this process is the data owner",
        ));
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if c.mode != Mode::Goten {
        let threads = if c.threads == 0 { cores } else { c.threads };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .map_err(|e| {
                RuntimeError::config(format!("cannot start {threads} worker threads: {e}"))
            })?;
        let secret = if c.mode == Mode::Plain || c.danger_deterministic_keys.is_some() {
            LocalSecret::DangerFromSeed
        } else {
            LocalSecret::Fresh
        };
        let mut s = TrainSession::local(
            setup.session_config(c),
            setup.splits(),
            setup.sealing.clone(),
            secret,
            threads,
        )
        .map_err(PartyError::from)?;
        let ck = CkptStore {
            dir: c.out.clone(),
            role: "enclave",
        };
        let plan = loop_plan(c, true);
        let summary =
            pool.install(|| train_loop(&mut s, &mut LocalHost, &plan, &ck, observers[0]))?;
        return Ok(Outcome {
            summary,
            reports: Vec::new(),
            dealer_iterations: Vec::new(),
        });
    }
    let cfg = ClusterConfig {
        enclave: setup.enclave,
        timeout: Duration::from_secs(c.timeout),
    };
    let (devices, nets) = crate::devices::local_parts(c.device, c.threads, cfg.timeout)?;
    let trusts = match c.danger_deterministic_keys {
        Some(seed) => Trusts::danger_deterministic(seed),
        None => Trusts::generate(),
    };
    let owner = owner_provisioner(setup);
    let run = if c.enclave == EnclaveKind::Process {
        let body = remote_party_body(c, setup, observers, &owner);
        let spawn = |role| crate::enclave_process::spawn_self(role, cfg.timeout);
        run_local_remote(&cfg, &trusts, devices, nets, &spawn, &body)
    } else {
        run_local(
            &cfg,
            &trusts,
            devices,
            nets,
            &party_body(c, setup, observers, &owner),
        )
    }?;
    Ok(Outcome {
        summary: run.results.0,
        reports: Role::ALL.into_iter().zip(run.reports).collect(),
        dealer_iterations: run.dealer_iterations,
    })
}
