//! S0 or S1 with its enclave in a child process: the key exchange through ecalls, then the
//! caller's body, in a local run or as one process of a deployment.
//!
//! Where it sits: the process-mode twin of `cluster::run_enclave_party`. The host relays the
//! enclave's hello and wrapped key exactly as it relays an in-process enclave's; the keys stay
//! in the child.

use goten_device::Device;
use goten_enclave::Role;

use super::codec::{HardwareParams, InitParams};
use super::remote::RemoteEnclave;
use crate::PartyError;
use crate::cluster::{
    ClusterConfig, LocalRun, PartyReport, Trusts, drive, exchange_hellos, missing_secret,
    recv_wrapped, run_three,
};
use crate::host::EnclaveHost;
use crate::transport::{Message, Transport};
use goten_enclave::attest::Evidence;

/// S0 or S1 during a process-mode run: its enclave process and its host.
pub struct RemoteParty {
    /// The enclave in its child process, keys established.
    pub enclave: RemoteEnclave,
    /// The host.
    pub host: EnclaveHost,
}

/// Starts the enclave process of a role (the caller knows how: the `goten` binary).
pub type SpawnEnclave<'a> = dyn Fn(Role) -> Result<RemoteEnclave, PartyError> + Sync + 'a;

fn key_exchange(
    role: Role,
    cfg: &ClusterConfig,
    trusts: &Trusts,
    enclave: &mut RemoteEnclave,
    host: &mut EnclaveHost,
) -> Result<(), PartyError> {
    let i = role.index();
    let report_data = enclave.init(InitParams {
        role: i as u8,
        ring_bits: cfg.enclave.ring.bits(),
        quant_bits: cfg.enclave.quant.bits,
        stochastic: cfg.enclave.quant.rounding == goten_enclave::quant::Rounding::Stochastic,
        danger_ephemeral: trusts.danger_ephemeral_secret(role),
        trusted_platforms: trusts.trusted_platforms.clone(),
        expected_measurement: trusts.expected_measurement,
        pinned_dealer: trusts.pinned_dealer,
        session_nonces: trusts.session_nonces,
        hardware: match &trusts.hardware {
            None => None,
            Some(h) => Some(HardwareParams {
                tee: h.kind.tag(),
                policy: toml::to_string(&h.policy).map_err(|e| {
                    PartyError::Enclave(goten_enclave::EnclaveError::Config(e.to_string()))
                })?,
                collateral: h.collateral.clone(),
            }),
        },
    })?;
    let evidence = match &trusts.hardware {
        // Under a TEE the enclave program attests itself (an SGX quote comes from inside the
        // enclave): an empty quote asks it to.
        Some(h) => Evidence::Hardware {
            tee: h.kind.tag(),
            quote: Vec::new(),
        },
        None => trusts.platforms[i]
            .as_ref()
            .ok_or_else(|| missing_secret(role, "platform"))?
            .attest(trusts.measurements[i], report_data),
    };
    let hello = enclave.hello(evidence)?;
    let hellos = exchange_hellos(host.transport(), hello)?;
    if role == Role::S0 {
        let wrapped = enclave.finish(hellos, None)?.ok_or(PartyError::Session(
            goten_enclave::session::SessionError::State("E0 returned no wrapped key"),
        ))?;
        host.transport()
            .send(Role::S1, Message::WrappedKey(wrapped))?;
    } else {
        let wrapped = recv_wrapped(host.transport())?;
        enclave.finish(hellos, Some(wrapped))?;
    }
    Ok(())
}

/// Runs S0 or S1 with `enclave` (a child process already connected): key exchange, `body`,
/// then tells S2 it is done.
pub fn run_remote_enclave_party<R>(
    role: Role,
    cfg: &ClusterConfig,
    trusts: &Trusts,
    device: Box<dyn Device>,
    transport: Box<dyn Transport>,
    mut enclave: RemoteEnclave,
    body: &(dyn Fn(&mut RemoteParty) -> Result<R, PartyError> + Sync),
) -> Result<(R, PartyReport), PartyError> {
    let mut host = EnclaveHost::new(device, transport);
    key_exchange(role, cfg, trusts, &mut enclave, &mut host)?;
    let mut party = RemoteParty { enclave, host };
    drive(&mut party, |p| &mut p.host, body)
}

/// Runs S0, S1 (each with an enclave process from `spawn`) and S2 as threads of this process.
pub fn run_local_remote<R: Send>(
    cfg: &ClusterConfig,
    trusts: &Trusts,
    devices: [Box<dyn Device>; 3],
    transports: [Box<dyn Transport>; 3],
    spawn: &SpawnEnclave<'_>,
    body: &(dyn Fn(&mut RemoteParty) -> Result<R, PartyError> + Sync),
) -> Result<LocalRun<R>, PartyError> {
    run_three(cfg, trusts, devices, transports, &|role, d, t| {
        let enclave = spawn(role)?;
        run_remote_enclave_party(role, cfg, trusts, d, t, enclave, body)
    })
}
