//! `goten train --transport tcp`: the three parties as separate `goten party` processes on
//! loopback, exactly as on three machines.
//!
//! Where it sits: a launcher above `party.rs`. It generates a fresh key file per party and a
//! cluster file with two free loopback ports in `OUT/cluster/`, starts the processes (S0 writes
//! into `OUT` like an in-process run and talks to this terminal; S1 and S2 write into
//! `OUT/party-1` and `OUT/party-2`, their stderr into `party.log` there), and waits. When one
//! party fails the others are stopped after a short grace period, so a party that fails while
//! its peers wait to connect does not leave them waiting for the whole timeout.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use goten_enclave::Role;
use goten_party::deploy::ClusterFile;

use crate::options::{Mode, Sched, TrainArgs};

/// The command-line form of `a`, for a party process writing into `out`.
pub(crate) fn to_argv(a: &TrainArgs, out: &Path, lead: bool) -> Vec<String> {
    let mut v: Vec<String> = Vec::new();
    let mut kv = |k: &str, val: String| {
        v.push(format!("--{k}"));
        v.push(val);
    };
    kv("model", a.model.clone());
    kv("data", a.data.clone());
    kv("mode", "goten".into());
    kv("epochs", a.epochs.to_string());
    if let Some(s) = a.steps {
        kv("steps", s.to_string());
    }
    kv("batch", a.batch.to_string());
    kv("lr", a.lr.to_string());
    let sched = match a.schedule {
        Sched::Constant => "constant",
        Sched::Step => "step",
        Sched::Cosine => "cosine",
    };
    kv("schedule", sched.into());
    kv("step-epochs", a.step_epochs.to_string());
    kv("seed", a.seed.to_string());
    kv("eval-every", a.eval_every.to_string());
    if let Some(n) = a.train_limit {
        kv("train-limit", n.to_string());
    }
    kv("test-limit", a.test_limit.to_string());
    kv("synthetic-train", a.synthetic_train.to_string());
    kv("out", out.display().to_string());
    // Three processes share this machine, as three threads of an in-process run do.
    kv("threads", crate::options::party_threads(a, 3).to_string());
    kv("ring-bits", a.ring_bits.to_string());
    kv("quant-bits", a.quant_bits.to_string());
    kv("checkpoint-every", a.checkpoint_every.to_string());
    kv("transport", "tcp".into());
    kv("enclave", a.enclave.name().into());
    kv("device", a.device.name().into());
    kv("timeout", a.timeout.to_string());
    if let Some(k) = &a.data_key {
        kv("data-key", k.display().to_string());
    }
    if let Some(w) = a.loss_window {
        kv("loss-window", w.to_string());
    }
    if let Some(s) = a.danger_deterministic_keys {
        kv("danger-deterministic-keys", s.to_string());
    }
    if let (true, Some(e)) = (lead, &a.export) {
        kv("export", e.display().to_string());
    }
    if a.resume {
        v.push("--resume".into());
    }
    if a.allow_rollback {
        v.push("--allow-rollback".into());
    }
    if a.json && lead {
        v.push("--json".into());
    }
    v
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .context("cannot find a free loopback port")?
        .port())
}

/// Fresh keys and a cluster file in `dir` (old ones replaced: keys are per run; checkpoints
/// do not depend on them).
fn make_cluster(dir: &Path, danger_seed: Option<u64>) -> Result<PathBuf> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("cannot clear {}", dir.display()))?;
    }
    let mut entries = Vec::new();
    for role in Role::ALL {
        let addr = if role == Role::S2 {
            None
        } else {
            Some(format!("127.0.0.1:{}", free_port()?))
        };
        entries.push(crate::keys::write_keys(dir, role, addr, danger_seed)?.1);
    }
    let path = dir.join("cluster.toml");
    std::fs::write(&path, ClusterFile { party: entries }.to_toml())
        .with_context(|| format!("cannot write {}", path.display()))?;
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

pub fn run(a: TrainArgs) -> Result<()> {
    if a.mode != Mode::Goten {
        bail!("--transport tcp needs --mode goten (plain and enclave modes have no parties)");
    }
    let exe = std::env::current_exe().context("cannot find the goten executable")?;
    std::fs::create_dir_all(&a.out)
        .with_context(|| format!("cannot create output folder {}", a.out.display()))?;
    let cluster = make_cluster(&a.out.join("cluster"), a.danger_deterministic_keys)?;
    let mut children: Vec<(Role, Child, Option<PathBuf>)> = Vec::new();
    for role in Role::ALL {
        let i = role.index();
        let (out, log) = if role == Role::S0 {
            (a.out.clone(), None)
        } else {
            let d = a.out.join(format!("party-{i}"));
            std::fs::create_dir_all(&d)
                .with_context(|| format!("cannot create {}", d.display()))?;
            (d.clone(), Some(d.join("party.log")))
        };
        let mut cmd = Command::new(&exe);
        cmd.arg("party")
            .args(["--id", &i.to_string()])
            .arg("--cluster")
            .arg(&cluster)
            .args(to_argv(&a, &out, role == Role::S0));
        if let Some(log) = &log {
            let f = std::fs::File::create(log)
                .with_context(|| format!("cannot create {}", log.display()))?;
            cmd.stdout(Stdio::null()).stderr(f);
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {role} ({})", exe.display()))?;
        children.push((role, child, log));
    }
    eprintln!(
        "note: S0, S1 and S2 run as separate processes over TLS on loopback (cluster file {}; S1/S2 logs in {}/party-N/party.log)",
        cluster.display(),
        a.out.display()
    );
    wait_all(children)
}

/// Waits for every party; once one fails, stops the rest after a grace period and reports.
fn wait_all(mut children: Vec<(Role, Child, Option<PathBuf>)>) -> Result<()> {
    let mut status: Vec<Option<std::process::ExitStatus>> = vec![None; children.len()];
    let mut failed_at: Option<Instant> = None;
    let grace = Duration::from_secs(5);
    while status.iter().any(Option::is_none) {
        for (k, (_, child, _)) in children.iter_mut().enumerate() {
            if status[k].is_some() {
                continue;
            }
            if let Some(s) = child.try_wait().context("cannot wait for a party")? {
                status[k] = Some(s);
                if !s.success() && failed_at.is_none() {
                    failed_at = Some(Instant::now());
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
        Ok(())
    } else {
        bail!("{}", failures.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Args, FromArgMatches};

    /// Every `goten train` option reaches the party processes: a flag added to `TrainArgs`
    /// but not to `to_argv` would make a tcp run silently differ from an in-process one.
    #[test]
    fn every_training_option_is_forwarded() {
        let cmd = TrainArgs::augment_args(clap::Command::new("train"));
        let all_set = [
            "train",
            "--steps",
            "3",
            "--train-limit",
            "10",
            "--export",
            "m.st",
            "--data-key",
            "k",
            "--loss-window",
            "12",
            "--danger-deterministic-keys",
            "1",
            "--resume",
            "--allow-rollback",
            "--json",
        ];
        let m = cmd.clone().try_get_matches_from(all_set).unwrap();
        let a = TrainArgs::from_arg_matches(&m).unwrap();
        let argv = to_argv(&a, Path::new("out"), true);
        for arg in cmd.get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            assert!(
                argv.iter().any(|v| v == &format!("--{long}")),
                "--{long} is not passed to the parties"
            );
        }
        // And the forwarded line parses back to the same options, except those the launcher
        // sets on purpose: each party's folder, its share of the cores, the transport.
        let mut want = a.clone();
        want.out = "out".into();
        want.threads = crate::options::party_threads(&a, 3);
        want.transport = crate::options::TransportKind::Tcp;
        let back = TrainArgs::from_arg_matches(
            &cmd.try_get_matches_from(std::iter::once("train".to_string()).chain(argv))
                .unwrap(),
        )
        .unwrap();
        assert_eq!(format!("{want:?}"), format!("{back:?}"));
    }
}
