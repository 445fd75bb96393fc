//! A party that fails makes the others stop with an error naming it, never a hang.

mod common;

use std::time::{Duration, Instant};

use common::{mesh, quantized};
use goten_device::{CpuDevice, Device, DeviceError};
use goten_field::{BilinearOp, RingTensor};
use goten_party::{ClusterConfig, Trusts, run_local};

struct BrokenDevice;

impl Device for BrokenDevice {
    fn name(&self) -> String {
        "broken".into()
    }
    fn bilinear(
        &self,
        _: &BilinearOp,
        _: &RingTensor,
        _: &RingTensor,
    ) -> Result<RingTensor, DeviceError> {
        Err(DeviceError::Backend("simulated GPU fault".into()))
    }
}

#[test]
fn a_failing_dealer_device_is_named() {
    let devs: [Box<dyn Device>; 3] = [
        Box::new(CpuDevice::new(1).unwrap()),
        Box::new(CpuDevice::new(1).unwrap()),
        Box::new(BrokenDevice),
    ];
    let t = Instant::now();
    let err = run_local(
        &ClusterConfig {
            timeout: Duration::from_secs(30),
            ..ClusterConfig::default()
        },
        &Trusts::generate(),
        devs,
        mesh(),
        &|p| {
            p.linear_quantized(
                (0, 0),
                &BilinearOp::MatmulForward,
                (&[2, 3], &quantized(vec![1; 6])),
                (&[2, 3], &quantized(vec![1; 6])),
            )
        },
    )
    .err()
    .unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "the others must not wait for the timeout"
    );
    let msg = err.to_string();
    assert!(
        msg.starts_with("S2: ") && msg.contains("simulated GPU fault"),
        "{msg}"
    );
}

#[test]
fn a_silent_peer_times_out_with_its_name() {
    // S1 never runs an op: S0 waits for its product and must give up after the timeout.
    let cfg = ClusterConfig {
        timeout: Duration::from_millis(300),
        ..ClusterConfig::default()
    };
    let devs: [Box<dyn Device>; 3] =
        [0, 1, 2].map(|_| Box::new(CpuDevice::new(1).unwrap()) as Box<dyn Device>);
    let err = run_local(
        &cfg,
        &Trusts::generate(),
        devs,
        goten_party::in_process_mesh(cfg.timeout)
            .map(|t| Box::new(t) as Box<dyn goten_party::Transport>),
        &|p| {
            if p.role() == goten_enclave::Role::S1 {
                std::thread::sleep(Duration::from_secs(2));
                return Ok(vec![]);
            }
            p.linear_quantized(
                (0, 0),
                &BilinearOp::MatmulForward,
                (&[2, 3], &quantized(vec![1; 6])),
                (&[2, 3], &quantized(vec![1; 6])),
            )
        },
    )
    .err()
    .unwrap();
    let msg = err.to_string();
    assert!(
        msg.contains("timed out") && msg.contains("waiting for S"),
        "{msg}"
    );
}
