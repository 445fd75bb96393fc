//! The serving cluster's control messages between S0's and S1's hosts: E1's evidence for a
//! client's nonce, and the idle heartbeat through all three parties.
//!
//! Where it sits: under the serving loops ([`super::cluster`], [`super::owner`]). Everything
//! here is public: evidence, nonces, heartbeats.

use goten_enclave::Role;
use goten_enclave::attest::Evidence;
use goten_party::host::EnclaveHost;
use goten_party::transport::Message;
use goten_party::{NetError, PartyError};

use super::cluster::EvidenceFn;

/// E0's evidence from this host, E1's through S1's host.
pub(super) fn attest(
    report_data: &dyn Fn(&[u8; 32]) -> [u8; 32],
    host: &mut EnclaveHost,
    evidence: &EvidenceFn<'_>,
    nonce: [u8; 32],
) -> Result<Result<Vec<(Role, Evidence)>, String>, PartyError> {
    let t = host.transport();
    t.send(
        Role::S1,
        Message::Evidence {
            nonce,
            evidence: Vec::new(),
        },
    )?;
    let theirs = match t.recv(Role::S1)? {
        Message::Evidence { nonce: n, evidence } if n == nonce => evidence,
        m => {
            return Err(NetError::Unexpected {
                peer: Role::S1,
                expected: "E1's evidence".into(),
                got: m.kind().into(),
            }
            .into());
        }
    };
    if theirs.is_empty() {
        return Ok(Err("S1 could not produce its enclave's evidence".into()));
    }
    let theirs = match goten_party::wire::decode_evidence(&theirs) {
        Ok(e) => e,
        Err(e) => return Ok(Err(format!("S1 sent malformed evidence: {e}"))),
    };
    Ok(evidence(Role::S0, report_data(&nonce))
        .map(|mine| vec![(Role::S0, mine), (Role::S1, theirs)]))
}

/// The idle heartbeat, a round through all three: S0 to S1 and S2, S1 on to S2, S2 back to
/// both, S1 back to S0. A party that died or stalled while the cluster was idle shows up as
/// an error within the receive timeout, not at the next query.
pub(super) fn ping(host: &mut EnclaveHost) -> Result<(), PartyError> {
    let t = host.transport();
    t.send(Role::S1, Message::Idle)?;
    t.send(Role::S2, Message::Idle)?;
    for from in [Role::S2, Role::S1] {
        expect_idle(t.recv(from)?, from)?;
    }
    Ok(())
}

pub(super) fn expect_idle(m: Message, from: Role) -> Result<(), PartyError> {
    match m {
        Message::Idle => Ok(()),
        m => Err(NetError::Unexpected {
            peer: from,
            expected: "the idle heartbeat".into(),
            got: m.kind().into(),
        }
        .into()),
    }
}

/// S1's side of an evidence request: its enclave's evidence for `nonce`, encoded (empty when
/// it cannot produce any: S0 then answers its client with the failure; serving goes on).
pub(super) fn send_evidence(
    report_data: &dyn Fn(&[u8; 32]) -> [u8; 32],
    host: &mut EnclaveHost,
    evidence: &EvidenceFn<'_>,
    nonce: [u8; 32],
) -> Result<(), PartyError> {
    let e = evidence(Role::S1, report_data(&nonce))
        .map(|e| goten_party::wire::encode_evidence(&e))
        .unwrap_or_default();
    Ok(host
        .transport()
        .send(Role::S0, Message::Evidence { nonce, evidence: e })?)
}

/// S1's side of the heartbeat: on to S2, S2's answer, back to S0.
pub(super) fn relay_idle(host: &mut EnclaveHost) -> Result<(), PartyError> {
    let t = host.transport();
    t.send(Role::S2, Message::Idle)?;
    expect_idle(t.recv(Role::S2)?, Role::S2)?;
    Ok(t.send(Role::S0, Message::Idle)?)
}
