//! Helpers shared by the benchmarks: best-of timing, the public benchmark key, shape labels.
//!
//! Where it sits: under `bench.rs` and `bench_op.rs` (host-side measurement, no secrets: the
//! benchmark key is public on purpose).

use std::time::Instant;

use anyhow::Result;
use goten_field::SecretKey;

use crate::shapes::Job;

/// Fastest of `reps` timed runs after one warm-up.
pub(crate) fn time_best(reps: u32, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?;
    let mut best = f64::INFINITY;
    for _ in 0..reps {
        let t = Instant::now();
        f()?;
        best = best.min(t.elapsed().as_secs_f64());
    }
    Ok(best)
}

pub(crate) fn bench_key() -> SecretKey {
    // Benchmark data only: a fixed key keeps runs reproducible. Never used for real shares.
    SecretKey::from_bytes([0x5A; 32])
}

pub(crate) fn shape_str(j: &Job) -> String {
    let d = |s: &[usize]| {
        s.iter()
            .map(|x| x.to_string())
            .collect::<Vec<_>>()
            .join("x")
    };
    format!("{} * {}", d(&j.a), d(&j.b))
}
