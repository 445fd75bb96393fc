//! Which untrusted device a party computes on: CPU or CUDA.
//!
//! Where it sits: host-side setup for every executor and the benchmarks. The CUDA backend
//! exists when the runtime is built with its `cuda` feature; a build without it, or a machine
//! without a usable GPU, gets a clear error naming what is missing.

use std::time::Duration;

use goten_device::{Device, DeviceError};
use goten_party::cluster::LocalParts;

pub use crate::config::DeviceKind;

/// A device of `kind`; `threads` host workers (for CUDA: convolution lowering on the host).
pub fn make(kind: DeviceKind, threads: usize) -> Result<Box<dyn Device>, DeviceError> {
    match kind {
        DeviceKind::Cpu => Ok(Box::new(goten_device::CpuDevice::new(threads)?)),
        DeviceKind::Cuda => cuda(threads),
    }
}

#[cfg(feature = "cuda")]
fn cuda(threads: usize) -> Result<Box<dyn Device>, DeviceError> {
    Ok(Box::new(goten_device::cuda::CudaDevice::new(0, threads)?))
}

#[cfg(not(feature = "cuda"))]
fn cuda(_threads: usize) -> Result<Box<dyn Device>, DeviceError> {
    Err(DeviceError::Unavailable(
        "this goten was built without CUDA support: rebuild with `cargo build --release -p goten --features cuda`"
            .into(),
    ))
}

/// Three devices of `kind` and a connected in-process mesh (a single-machine run).
pub fn local_parts(
    kind: DeviceKind,
    threads: usize,
    timeout: Duration,
) -> Result<LocalParts, DeviceError> {
    let devices = [
        make(kind, threads)?,
        make(kind, threads)?,
        make(kind, threads)?,
    ];
    let nets = goten_party::in_process_mesh(timeout)
        .map(|t| Box::new(t) as Box<dyn goten_party::Transport>);
    Ok((devices, nets))
}
