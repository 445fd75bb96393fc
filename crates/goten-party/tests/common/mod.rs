//! Shared helpers of the protocol tests: a local cluster on CPU devices.
#![allow(dead_code)]

use std::time::Duration;

use goten_device::{CpuDevice, Device};
use goten_enclave::quant::Quantized;
use goten_field::Ring;
use goten_party::cluster::LocalRun;
use goten_party::{
    ClusterConfig, Party, PartyError, Transport, Trusts, in_process_mesh, run_local,
};

pub fn devices() -> [Box<dyn Device>; 3] {
    [0, 1, 2].map(|_| Box::new(CpuDevice::new(1).unwrap()) as Box<dyn Device>)
}

pub fn mesh() -> [Box<dyn Transport>; 3] {
    in_process_mesh(Duration::from_secs(60)).map(|t| Box::new(t) as Box<dyn Transport>)
}

pub fn run<R: Send>(
    trusts: &Trusts,
    body: &(dyn Fn(&mut Party) -> Result<R, PartyError> + Sync),
) -> Result<LocalRun<R>, PartyError> {
    run_local(&ClusterConfig::default(), trusts, devices(), mesh(), body)
}

pub fn quantized(values: Vec<i32>) -> Quantized {
    Quantized { values, shift: 0 }
}

/// Deterministic values in [lo, hi].
pub fn values(n: usize, seed: u64, lo: i32, hi: i32) -> Vec<i32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            lo + (s % (hi - lo + 1) as u64) as i32
        })
        .collect()
}

/// Deterministic floats, roughly normal (sum of uniforms), scaled.
pub fn floats(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let v = values(4 * n, seed, -1000, 1000);
    v.chunks_exact(4)
        .map(|c| c.iter().map(|&x| x as f32).sum::<f32>() / 2000.0 * scale)
        .collect()
}

/// Chi-square statistic of the top 6 bits (64 cells).
pub fn chi2_top6(ring: Ring, x: &[i32]) -> f64 {
    let mut counts = [0f64; 64];
    for &v in x {
        counts[(ring.to_canonical(v) >> (ring.bits() - 6)) as usize] += 1.0;
    }
    let e = x.len() as f64 / 64.0;
    counts.iter().map(|c| (c - e).powi(2) / e).sum()
}
