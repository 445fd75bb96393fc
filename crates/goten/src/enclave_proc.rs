//! `--enclave process` on the command line: the option, and this binary as the enclave
//! program (`goten enclave-process`, started by `goten_runtime::enclave_process`).

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::ValueEnum;
use goten_enclave::Role;
use goten_party::PartyError;
use goten_party::ecall::remote::RemoteEnclave;

/// Where an enclave runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum EnclaveKind {
    /// In the party's own process (called directly).
    InProcess,
    /// In a child process of the party, over a Unix socket (the shape of an SGX deployment).
    Process,
}

impl EnclaveKind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            EnclaveKind::InProcess => "in-process",
            EnclaveKind::Process => "process",
        }
    }
}

/// Starts `role`'s enclave process from this binary.
pub(crate) fn spawn(role: Role, timeout: Duration) -> Result<RemoteEnclave, PartyError> {
    let exe = std::env::current_exe().map_err(|e| {
        PartyError::Storage(format!(
            "cannot find this program to start E{}: {e}",
            role.index()
        ))
    })?;
    goten_runtime::enclave_process::spawn(&exe, role, timeout)
}

/// `goten enclave-process --socket PATH`: the child's whole life.
pub(crate) fn run_child(socket: &Path) -> Result<()> {
    goten_runtime::enclave_process::run_child(socket).context("enclave process")
}
