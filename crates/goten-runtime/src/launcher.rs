//! The tcp transport on one machine: the three parties as separate `goten party` processes on
//! loopback, exactly as on three machines.
//!
//! Where it sits: a launcher above [`crate::party_run`]. It generates a fresh key file per
//! party and a cluster file with two free loopback ports in `OUT/cluster/`, writes each
//! party's validated job file there (ports from [`crate::ports`]) (`job-N.json`: the same job, with the party's own output
//! folder and share of the cores), starts the processes (S0 writes into `OUT` and talks to
//! this terminal; S1 and S2 write into `OUT/party-1` and `OUT/party-2`, their stderr into
//! `party.log` there), and waits. When one party fails the others are stopped after a short
//! grace period, so a party that fails while its peers wait to connect does not leave them
//! waiting for the whole timeout.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use goten_enclave::Role;
use goten_party::deploy::ClusterFile;

use crate::RuntimeError;
use crate::config::{JobConfig, TransportKind};

/// The job as party `role` of a local launch runs it, writing into `out`.
pub fn party_job(c: &JobConfig, role: Role, out: &Path) -> JobConfig {
    JobConfig {
        out: out.to_path_buf(),
        // Three processes share this machine, as three threads of an in-process run do.
        threads: c.party_threads(3),
        transport: TransportKind::Tcp,
        // S0's host writes the model owner's file, once.
        export: c.export.clone().filter(|_| role == Role::S0),
        // No party gets the data key or the job seed: the launcher, as the data owner,
        // provisions them to the enclaves' attested service key.
        data_key: None,
        job_seed: None,
        ..c.clone()
    }
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> RuntimeError {
    move |e| RuntimeError::storage(what, e)
}

/// Fresh keys and a cluster file in `dir` (old ones replaced: keys are per run; checkpoints
/// do not depend on them).
fn make_cluster(dir: &Path, danger_seed: Option<u64>) -> Result<PathBuf, RuntimeError> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(io(format!("cannot clear {}", dir.display())))?;
    }
    let mut entries = Vec::new();
    for role in Role::ALL {
        let addr = if role == Role::S2 {
            None
        } else {
            Some(format!(
                "127.0.0.1:{}",
                crate::ports::reserve_loopback_port()?
            ))
        };
        let mut entry = crate::keys::write_keys(dir, role, addr, danger_seed)?.1;
        if role != Role::S2 {
            entry.provision_address = Some(format!(
                "127.0.0.1:{}",
                crate::ports::reserve_loopback_port()?
            ));
        }
        entries.push(entry);
    }
    let path = dir.join("cluster.toml");
    // Every party runs this executable: pin its measurement, as an operator would.
    let cluster = ClusterFile::new(entries, Some(goten_party::cluster::local_measurement()));
    std::fs::write(&path, cluster.to_toml())
        .map_err(io(format!("cannot write {}", path.display())))?;
    Ok(path)
}

fn last_error(log: &Path) -> String {
    std::fs::read_to_string(log)
        .ok()
        .and_then(|t| {
            t.lines()
                .rev()
                .find(|l| l.starts_with("error:"))
                .map(str::to_string)
        })
        .unwrap_or_else(|| format!("no error message (see {})", log.display()))
}

/// Runs `c` as three `goten party` processes of `program` on loopback; `json`: S0 prints its
/// JSON result line.
pub fn run(c: &JobConfig, program: &Path, json: bool) -> Result<(), RuntimeError> {
    // Also refuses a tcp launch of plain or enclave mode.
    c.validate()?;
    if Path::new(&c.data).join("train.sealed").exists() && c.data_key.is_none() {
        return Err(RuntimeError::config(
            "a sealed dataset needs --data-key: the launcher is its data owner and provisions the key to the enclaves",
        ));
    }
    std::fs::create_dir_all(&c.out).map_err(io(format!(
        "cannot create output folder {}",
        c.out.display()
    )))?;
    let cluster_dir = c.out.join("cluster");
    let cluster = make_cluster(&cluster_dir, c.danger_deterministic_keys)?;
    let mut children: Vec<(Role, Child, Option<PathBuf>)> = Vec::new();
    for role in Role::ALL {
        let i = role.index();
        let (out, log) = if role == Role::S0 {
            (c.out.clone(), None)
        } else {
            let d = c.out.join(format!("party-{i}"));
            std::fs::create_dir_all(&d).map_err(io(format!("cannot create {}", d.display())))?;
            (d.clone(), Some(d.join("party.log")))
        };
        let job = cluster_dir.join(format!("job-{i}.json"));
        party_job(c, role, &out).write(&job)?;
        let mut cmd = Command::new(program);
        cmd.arg("party")
            .args(["--id", &i.to_string()])
            .arg("--cluster")
            .arg(&cluster)
            .arg("--job")
            .arg(&job);
        if json && role == Role::S0 {
            cmd.arg("--json");
        }
        if let Some(log) = &log {
            let f = std::fs::File::create(log)
                .map_err(io(format!("cannot create {}", log.display())))?;
            cmd.stdout(Stdio::null()).stderr(f);
        }
        let child = cmd
            .spawn()
            .map_err(io(format!("cannot start {role} ({})", program.display())))?;
        children.push((role, child, log));
    }
    eprintln!(
        "note: S0, S1 and S2 run as separate processes over TLS on loopback (cluster and job files in {}; S1/S2 logs in {}/party-N/party.log)",
        cluster_dir.display(),
        c.out.display()
    );
    if let Some(key_path) = &c.data_key {
        // This process is the data owner: it checks both enclaves' evidence and seals the key
        // to their service key, as `goten provision` would from the owner's machine.
        let provisioned =
            crate::data::read_data_key(Path::new(&c.data), key_path).and_then(|key| {
                let seed = c
                    .job_seed
                    .as_deref()
                    .map(crate::data::read_key)
                    .transpose()?;
                provision_data_key(
                    &cluster,
                    (&key, seed.as_deref()),
                    Duration::from_secs(c.timeout),
                )
            });
        if provisioned.is_ok() {
            eprintln!(
                "note: the launcher is the data owner: it verified both enclaves' evidence and sealed the data key to their attested service key"
            );
        }
        if let Err(e) = provisioned {
            for (_, child, _) in children.iter_mut() {
                let _ = child.kill();
            }
            return Err(e);
        }
    }
    wait_all(children)
}

/// `goten provision`: the data owner checks S0's and S1's enclaves against `cluster` and
/// releases `key` to them, waiting up to `timeout` for the parties to come up. Returns the
/// service key the enclaves attested.
pub fn provision_data_key(
    cluster: &Path,
    key: (&[u8; 32], Option<&[u8; 32]>),
    timeout: Duration,
) -> Result<[u8; 32], RuntimeError> {
    let text = std::fs::read_to_string(cluster).map_err(io(format!(
        "cannot read the cluster file {}",
        cluster.display()
    )))?;
    let base = cluster.parent().unwrap_or(Path::new(".")).to_path_buf();
    let cluster = ClusterFile::parse(&text, &cluster.display().to_string())?;
    let verifier = goten_party::deploy::enclave_verifier(&cluster, &base)?;
    let mut parties = Vec::new();
    for role in [Role::S0, Role::S1] {
        parties.push((
            role,
            goten_party::deploy::provision_address(&cluster, role, None)?,
        ));
    }
    let parties: [(Role, std::net::SocketAddr); 2] = parties.try_into().expect("two parties");
    goten_party::provision::provision(parties, verifier.as_ref(), key, timeout)
        .map_err(|e| RuntimeError::Party(goten_party::PartyError::Provision(e)))
}

/// Waits for every party; once one fails, stops the rest after a grace period and reports.
fn wait_all(mut children: Vec<(Role, Child, Option<PathBuf>)>) -> Result<(), RuntimeError> {
    let mut status: Vec<Option<std::process::ExitStatus>> = vec![None; children.len()];
    let mut failed_at: Option<Instant> = None;
    let mut first_failed = None;
    let grace = Duration::from_secs(5);
    while status.iter().any(Option::is_none) {
        for (k, (_, child, _)) in children.iter_mut().enumerate() {
            if status[k].is_some() {
                continue;
            }
            if let Some(s) = child
                .try_wait()
                .map_err(io("cannot wait for a party".into()))?
            {
                status[k] = Some(s);
                if !s.success() && failed_at.is_none() {
                    failed_at = Some(Instant::now());
                    first_failed = Some(k);
                }
            }
        }
        if failed_at.is_some_and(|t| t.elapsed() > grace) {
            for (k, (_, child, _)) in children.iter_mut().enumerate() {
                if status[k].is_none() {
                    let _ = child.kill();
                }
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let failures: Vec<String> = children
        .iter()
        .zip(&status)
        .filter(|(_, s)| !s.is_some_and(|s| s.success()))
        .map(|((role, _, log), s)| {
            let why = log
                .as_deref()
                .map(last_error)
                .unwrap_or_else(|| "its error is above".into());
            format!("{role} exited with {}: {why}", s.expect("all waited"))
        })
        .collect();
    if failures.is_empty() {
        return Ok(());
    }
    // The first party to fail names the cause; the others mostly failed because it left.
    let code = first_failed.and_then(|k| status[k].and_then(|s| s.code()));
    Err(RuntimeError::Launch {
        message: failures.join("; "),
        code,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A party's job file holds the launch's job except what the launcher sets on purpose.
    #[test]
    fn party_jobs_differ_only_where_meant() {
        let c = JobConfig {
            export: Some("m.st".into()),
            model_owner: Some("owner.pub".into()),
            data_key: Some("k".into()),
            steps: Some(3),
            resume: true,
            ..JobConfig::default()
        };
        for role in Role::ALL {
            let p = party_job(&c, role, Path::new("o"));
            let want = JobConfig {
                out: "o".into(),
                threads: c.party_threads(3),
                transport: TransportKind::Tcp,
                export: if role == Role::S0 {
                    c.export.clone()
                } else {
                    None
                },
                data_key: None,
                job_seed: None,
                ..c.clone()
            };
            assert_eq!(p, want);
            p.validate().unwrap();
        }
    }
}
