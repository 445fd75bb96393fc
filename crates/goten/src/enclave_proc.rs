//! `goten enclave-process`: this binary as the enclave program of `--enclave process`
//! (started by `goten_runtime::enclave_process`, never by hand).

use std::path::Path;

use anyhow::{Context, Result};

/// The child's whole life.
pub(crate) fn run_child(socket: &Path) -> Result<()> {
    goten_runtime::enclave_process::run_child(socket).context("enclave process")
}
