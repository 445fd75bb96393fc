//! Serving across separate machines (`goten serve --id N --cluster FILE`): each party
//! connects to the other two over mutually authenticated TLS, like `goten party`, and keeps
//! serving until stopped, reconnecting after any failure.
//!
//! Where it sits: an executor beside [`super::local`]. S0's host also runs the HTTP front end
//! ([`super::http`]) over a [`Handle`]; E1's evidence reaches it through S1's host. While the
//! parties reconnect, S0's front end answers 503 with the reason of the last failure.

use std::sync::Arc;
use std::time::Duration;

use goten_enclave::Role;
use goten_party::{Party, PartyError, Trusts};
use sha2::{Digest, Sha256};

use super::cluster::{ServePlan, Status, serve_s0, serve_s1};
use super::handle::Handle;
use super::http::{HttpLimits, HttpServer};
use super::local::{drain, prepare_folder};
use crate::party_run::{Deployment, run_dealer, run_enclave_job};
use crate::{JobConfig, RuntimeError};

/// Pause between a failure and the next attempt to connect.
const RETRY: Duration = Duration::from_secs(1);

/// What S0 and S1 must agree on before serving: the plan's name and batch (they decide the
/// enclaves' op shapes).
fn serve_digest(plan: &ServePlan) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"goten/serve/v1\0");
    h.update(plan.name.as_deref().unwrap_or("").as_bytes());
    h.update([0]);
    h.update((plan.max_batch as u64).to_le_bytes());
    h.finalize().into()
}

fn evidence(
    t: &Trusts,
) -> impl Fn(Role, [u8; 32]) -> Result<goten_enclave::attest::Evidence, String> + Sync + '_ {
    move |role, rd| t.evidence(role, rd).map_err(|e| e.to_string())
}

/// Runs this party of a serving deployment until the process is stopped. `http`: S0's front
/// end (address and limits); `c`: the party settings (timeout, device, threads, danger seed).
pub fn serve_party(
    d: &Deployment,
    c: &JobConfig,
    plan: &ServePlan,
    http: Option<(&str, HttpLimits)>,
) -> Result<(), RuntimeError> {
    let timeout = Duration::from_secs(c.timeout);
    match d.role {
        Role::S2 => loop {
            match run_dealer(d, c, &mut |_, _| {}) {
                Ok(_) => eprintln!("S2: S0 and S1 stopped serving; waiting for them again"),
                Err(e) => eprintln!("S2: serving stopped: {e}; reconnecting"),
            }
            std::thread::sleep(RETRY);
        },
        Role::S1 => {
            prepare_folder(plan, &["e1"])?;
            let sealing = crate::store::platform_sealing_key()?;
            loop {
                let body = |p: &mut Party, t: &Trusts| -> Result<(), PartyError> {
                    serve_s1(p, plan, &sealing, &evidence(t))
                };
                match run_enclave_job(d, c, serve_digest(plan), &body) {
                    Ok(()) => eprintln!("S1: S0 stopped serving; waiting for it again"),
                    Err(e) => eprintln!("S1: serving stopped: {e}; reconnecting"),
                }
                std::thread::sleep(RETRY);
            }
        }
        Role::S0 => {
            prepare_folder(plan, &["e0"])?;
            let sealing = crate::store::platform_sealing_key()?;
            let (handle, queue) = Handle::new(&d.trusts(c)?);
            let handle = Arc::new(handle);
            let front = match http {
                Some((addr, limits)) => {
                    let s = HttpServer::start(addr, handle.clone(), limits, 2)?;
                    eprintln!(
                        "S0: HTTP API at http://{}/v2 (waiting for S1 and S2)",
                        s.addr()
                    );
                    Some(s)
                }
                None => None,
            };
            loop {
                let body = |p: &mut Party, t: &Trusts| -> Result<(), PartyError> {
                    serve_s0(
                        p,
                        plan,
                        &sealing,
                        &queue,
                        (&handle.status, &handle.stats),
                        (&evidence(t), timeout),
                    )
                };
                let why = match run_enclave_job(d, c, serve_digest(plan), &body) {
                    Ok(()) => "S0 stopped serving".to_string(),
                    Err(e) => e.to_string(),
                };
                eprintln!("S0: serving stopped: {why}; reconnecting");
                *handle.status.lock().expect("status lock") = Status::Failed(why.clone());
                if !drain(&queue, &why) {
                    break;
                }
                std::thread::sleep(RETRY);
            }
            drop(front);
            Ok(())
        }
    }
}
