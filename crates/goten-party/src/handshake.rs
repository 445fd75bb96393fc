//! Agreements between the parties outside the key exchange: that they run the same job, and
//! from which checkpoint they resume.
//!
//! Where it sits: session setup, on the transport, before [`crate::cluster`]'s key exchange
//! (job) and before the first training step (resume point). Parties started by three
//! organisations with hand-typed options must refuse to start on a mismatch rather than train
//! garbage; parties restarted after a crash must pick a checkpoint both enclaves hold.

use goten_enclave::Role;

use crate::cluster::PartyError;
use crate::transport::{Message, NetError, Transport};

/// What the parties must agree on before anything else.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JobId {
    /// Width of the share ring.
    pub ring_bits: u32,
    /// Hash of model, data and hyper-parameters (all zero from S2, which does not know them).
    pub digest: [u8; 32],
    /// Hash of the deployment every party must share: the cluster file (parties, pinned
    /// measurement) and the `--danger-deterministic-keys` setting, so a party started with
    /// another cluster file or a mixed danger setting is refused by name.
    pub deployment: [u8; 32],
    /// The sender's fresh nonce for this session's hellos (not compared: each party draws its
    /// own, and every hello's evidence binds all three).
    pub nonce: [u8; 32],
}

impl JobId {
    fn same_job(&self, other: &JobId) -> bool {
        self.ring_bits == other.ring_bits
            && self.digest == other.digest
            && self.deployment == other.deployment
    }
}

fn hex8(d: &[u8; 32]) -> String {
    d[..8].iter().map(|b| format!("{b:02x}")).collect()
}

fn recv_job(t: &mut dyn Transport, from: Role) -> Result<JobId, PartyError> {
    match t.recv(from)? {
        Message::Job {
            ring_bits,
            digest,
            deployment,
            nonce,
        } => Ok(JobId {
            ring_bits,
            digest,
            deployment,
            nonce,
        }),
        m => Err(NetError::Unexpected {
            peer: from,
            expected: "a job description".into(),
            got: m.kind().into(),
        }
        .into()),
    }
}

fn send_job(t: &mut dyn Transport, to: Role, j: JobId) -> Result<(), PartyError> {
    Ok(t.send(
        to,
        Message::Job {
            ring_bits: j.ring_bits,
            digest: j.digest,
            deployment: j.deployment,
            nonce: j.nonce,
        },
    )?)
}

fn other_deployment(peer: Role, theirs: &[u8; 32], ours: &[u8; 32]) -> PartyError {
    PartyError::Disagree(format!(
        "{peer} was started with a different deployment ({}.. against our {}..): another cluster file, or --danger-deterministic-keys on one party and not the other; every party needs the same cluster file and danger setting",
        hex8(theirs),
        hex8(ours)
    ))
}

fn mismatch(peer: Role, theirs: JobId, ours: JobId) -> PartyError {
    if theirs.deployment != ours.deployment {
        return other_deployment(peer, &theirs.deployment, &ours.deployment);
    }
    let what = if theirs.ring_bits != ours.ring_bits {
        format!(
            "ring Z_2^{} against our Z_2^{}",
            theirs.ring_bits, ours.ring_bits
        )
    } else {
        format!(
            "job {}.. against our {}.. (model, data, mode or hyper-parameters differ)",
            hex8(&theirs.digest),
            hex8(&ours.digest)
        )
    };
    PartyError::Disagree(format!(
        "{peer} was started for a different job: {what}; start every party with the same options"
    ))
}

/// Exchanges job descriptions and session nonces. S0 and S1 pass `Some(job)`: each sends it
/// to the other two and checks the other enclave host's and S2's deployment. S2 passes `None`
/// and its `deployment`: it sends that to S0 and S1, checks that they sent the same job and
/// deployment, and returns the job (S2 takes its ring from it). Every party sends `nonce`;
/// all return the three nonces in role order, for the hellos' evidence to bind.
pub fn agree_job(
    t: &mut dyn Transport,
    job: Option<JobId>,
    deployment: [u8; 32],
    nonce: [u8; 32],
) -> Result<(JobId, [[u8; 32]; 3]), PartyError> {
    let me = t.me();
    let mut nonces = [[0u8; 32]; 3];
    nonces[me.index()] = nonce;
    match (me, job) {
        (Role::S2, _) => {
            let mine = JobId {
                ring_bits: 0,
                digest: [0; 32],
                deployment,
                nonce,
            };
            // Best effort: a party that already refused the job (and left) is reported by the
            // checks below, which read what it sent before leaving.
            for to in [Role::S0, Role::S1] {
                let _ = send_job(t, to, mine);
            }
            let a = recv_job(t, Role::S0)?;
            let b = recv_job(t, Role::S1)?;
            for (peer, j) in [(Role::S0, a), (Role::S1, b)] {
                if j.deployment != deployment {
                    return Err(other_deployment(peer, &j.deployment, &deployment));
                }
            }
            if !a.same_job(&b) {
                return Err(mismatch(Role::S1, b, a));
            }
            nonces[0] = a.nonce;
            nonces[1] = b.nonce;
            Ok((a, nonces))
        }
        (_, Some(ours)) => {
            let ours = JobId {
                deployment,
                nonce,
                ..ours
            };
            let peer = if me == Role::S0 { Role::S1 } else { Role::S0 };
            for to in [peer, Role::S2] {
                send_job(t, to, ours)?;
            }
            let theirs = recv_job(t, peer)?;
            if !theirs.same_job(&ours) {
                return Err(mismatch(peer, theirs, ours));
            }
            let dealer = recv_job(t, Role::S2)?;
            if dealer.deployment != deployment {
                return Err(other_deployment(Role::S2, &dealer.deployment, &deployment));
            }
            nonces[peer.index()] = theirs.nonce;
            nonces[2] = dealer.nonce;
            Ok((ours, nonces))
        }
        (_, None) => Err(PartyError::Disagree(format!(
            "{me} needs a job description to start"
        ))),
    }
}

/// On resume: tells the other enclave host the newest checkpoint step this one holds and
/// returns the step both can restore (the older of the two newest; a party can be at most one
/// checkpoint ahead, because the next step needs its peer).
pub fn agree_resume(t: &mut dyn Transport, newest: u64) -> Result<u64, PartyError> {
    let peer = if t.me() == Role::S0 {
        Role::S1
    } else {
        Role::S0
    };
    t.send(peer, Message::Resume { step: newest })?;
    match t.recv(peer)? {
        Message::Resume { step } => Ok(step.min(newest)),
        m => Err(NetError::Unexpected {
            peer,
            expected: "its resume point".into(),
            got: m.kind().into(),
        }
        .into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::in_process_mesh;
    use std::time::Duration;

    fn run(jobs: [JobId; 2]) -> [Result<JobId, PartyError>; 3] {
        run_with(jobs, [jobs[0].deployment; 3])
    }

    fn run_with(jobs: [JobId; 2], deployments: [[u8; 32]; 3]) -> [Result<JobId, PartyError>; 3] {
        let [mut t0, mut t1, mut t2] = in_process_mesh(Duration::from_secs(5));
        type Agreed = Result<(JobId, [[u8; 32]; 3]), PartyError>;
        let r: [Agreed; 3] = std::thread::scope(|s| {
            let a = s.spawn(move || agree_job(&mut t0, Some(jobs[0]), deployments[0], [10; 32]));
            let b = s.spawn(move || agree_job(&mut t1, Some(jobs[1]), deployments[1], [11; 32]));
            let c = s.spawn(move || agree_job(&mut t2, None, deployments[2], [12; 32]));
            [a.join().unwrap(), b.join().unwrap(), c.join().unwrap()]
        });
        r.map(|x| {
            x.map(|(j, nonces)| {
                // Every party learns all three nonces, in role order.
                assert_eq!(nonces, [[10; 32], [11; 32], [12; 32]]);
                j
            })
        })
    }

    #[test]
    fn same_job_is_agreed_and_s2_learns_the_ring() {
        let j = JobId {
            ring_bits: 23,
            digest: [7; 32],
            deployment: [3; 32],
            nonce: [0; 32],
        };
        for r in run([j, j]) {
            assert!(r.unwrap().same_job(&j));
        }
    }

    #[test]
    fn different_jobs_are_refused_by_everyone() {
        let a = JobId {
            ring_bits: 21,
            digest: [1; 32],
            deployment: [3; 32],
            nonce: [0; 32],
        };
        let b = JobId {
            digest: [2; 32],
            ..a
        };
        let c = JobId { ring_bits: 22, ..a };
        for other in [b, c] {
            for r in run([a, other]) {
                let e = r.unwrap_err().to_string();
                assert!(e.contains("different job"), "{e}");
            }
        }
        let e = run([a, c])[0].as_ref().unwrap_err().to_string();
        assert!(e.contains("Z_2^22"), "{e}");
    }

    #[test]
    fn another_cluster_file_or_danger_setting_is_refused_by_name() {
        let j = JobId {
            ring_bits: 21,
            digest: [1; 32],
            deployment: [3; 32],
            nonce: [0; 32],
        };
        // S1 started with another cluster file: S0 and S2 name S1; S1 names S0.
        let r = run_with([j, j], [[3; 32], [4; 32], [3; 32]]);
        for (i, who) in [(0, "S1"), (1, "S0"), (2, "S1")] {
            let e = r[i].as_ref().unwrap_err().to_string();
            assert!(
                e.contains(&format!("{who} was started with a different deployment")),
                "{e}"
            );
        }
        // S2 alone differs: S0 and S1 name S2.
        let r = run_with([j, j], [[3; 32], [3; 32], [9; 32]]);
        for res in &r[..2] {
            let e = res.as_ref().unwrap_err().to_string();
            assert!(
                e.contains("S2 was started with a different deployment"),
                "{e}"
            );
        }
    }

    #[test]
    fn resume_picks_the_older_newest_checkpoint() {
        let [mut t0, mut t1, _t2] = in_process_mesh(Duration::from_secs(5));
        let (a, b) = std::thread::scope(|s| {
            let a = s.spawn(move || agree_resume(&mut t0, 20));
            let b = s.spawn(move || agree_resume(&mut t1, 10));
            (a.join().unwrap().unwrap(), b.join().unwrap().unwrap())
        });
        assert_eq!((a, b), (10, 10));
    }
}
