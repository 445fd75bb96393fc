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

/// Workers of the CPU device pool the three parties of one machine share: the machine's cores,
/// or three times the per-party `threads` when given.
pub fn shared_cpu_pool(threads: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if threads == 0 { cores } else { 3 * threads }
}

/// Three devices of `kind` and a connected in-process mesh (a single-machine run); `threads`:
/// each party's device workers, 0 for automatic.
///
/// CPU devices of one machine share one pool of workers: the machine's cores by default, three
/// times `threads` when given. Three pools of their own (a third of the cores each, at least
/// one) oversubscribed small machines and left a party's cores idle while another party still
/// computed; one pool lets whichever party has work use every core (DESIGN.md section 6). A
/// party's device still sees only its own party's jobs. CUDA devices get `threads` host
/// workers each (a third of the cores by default).
pub fn local_parts(
    kind: DeviceKind,
    threads: usize,
    timeout: Duration,
) -> Result<LocalParts, DeviceError> {
    let devices: [Box<dyn Device>; 3] = match kind {
        DeviceKind::Cpu => {
            let [a, b, c] = goten_device::CpuDevice::sharing::<3>(shared_cpu_pool(threads))?;
            [Box::new(a), Box::new(b), Box::new(c)]
        }
        DeviceKind::Cuda => {
            let per_party = if threads == 0 {
                let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
                (cores / 3).max(1)
            } else {
                threads
            };
            [
                make(kind, per_party)?,
                make(kind, per_party)?,
                make(kind, per_party)?,
            ]
        }
    };
    let nets = goten_party::in_process_mesh(timeout)
        .map(|t| Box::new(t) as Box<dyn goten_party::Transport>);
    Ok((devices, nets))
}
