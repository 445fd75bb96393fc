//! `goten bench`: measurements that print a table, or JSON lines with `--json`.
//!
//! Where it sits: beside the runtime, above every library it measures; the `goten` binary
//! mounts [`BenchCommand`] as its `bench` subcommand. Every modular-kernel line carries its
//! float references (f32 and f64 products of the same shape, same algorithm, same run, same
//! threads), so ratios stay meaningful on noisy machines.
//!
//! - this file: `goten bench kernels` and the command itself;
//! - [`op`]: one secure op end to end against plain float products;
//! - [`train`], [`session`]: training throughput per mode, whole sessions, enclave memory;
//! - [`serve`]: private prediction throughput and serving latency;
//! - [`shapes`], [`util`]: the VGG-11 shapes and shared helpers.

mod op;
mod serve;
mod session;
mod shapes;
mod train;
mod util;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use goten_device::CpuDevice;
use goten_device::float_ref::{Float, FloatRef};
use goten_field::{Prg, Ring, RingTensor};
use serde_json::json;

use crate::op::OpArgs;
use crate::shapes::{Job, vgg_jobs};
use crate::util::{bench_key, shape_str, time_best};

/// What to measure.
#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Exact modular kernels (VGG-11 conv and fc shapes) against f32/f64 products, and the PRG.
    Kernels(KernelArgs),
    /// One secure op end to end (three parties in this process) against plain float products.
    Op(OpArgs),
    /// Training throughput per mode, with the time split into its parts.
    Train(crate::train::TrainBenchArgs),
    /// Private prediction against plain float32 inference, and serving latency over HTTP.
    Serve(crate::serve::ServeBenchArgs),
}

/// Options of `goten bench kernels`.
#[derive(Args, Debug)]
pub struct KernelArgs {
    /// Print one JSON object per line instead of a table.
    #[arg(long)]
    json: bool,
    /// Batch size of the VGG-11 shapes.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=4096))]
    batch: u32,
    /// Worker threads (0: one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Device: `cpu` or `cuda` (a build with `--features cuda` and an NVIDIA GPU).
    #[arg(long, default_value = "cpu")]
    device: goten_runtime::devices::DeviceKind,
    /// Timed repetitions per kernel (the fastest is reported), after one warm-up run.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    reps: u32,
    /// Width k of the share ring Z_2^k.
    #[arg(long, default_value_t = Ring::DEFAULT_BITS)]
    ring_bits: u32,
    /// Only kernels whose name or layer contains this text (e.g. `conv4`, `dw`, `prg`).
    #[arg(long)]
    filter: Option<String>,
}

pub fn run(cmd: BenchCommand) -> Result<()> {
    match cmd {
        BenchCommand::Kernels(a) => kernels(a),
        BenchCommand::Op(a) => op::run(a),
        BenchCommand::Train(a) => crate::train::run(a),
        BenchCommand::Serve(a) => crate::serve::run(a),
    }
}

fn random_ring(ring: Ring, shape: &[usize], op_id: u64) -> Result<RingTensor> {
    let mut t = RingTensor::zeros(ring, shape)?;
    Prg::new(&bench_key(), "bench/operand", op_id).fill_ring(ring, 0, 0, t.data_mut());
    Ok(t)
}

fn random_float<T: Float>(shape: &[usize], op_id: u64, conv: impl Fn(f32) -> T) -> Vec<T> {
    let n: usize = shape.iter().product();
    let mut v = vec![0f32; n];
    Prg::new(&bench_key(), "bench/float", op_id).fill_unit_f32(0, 0, &mut v);
    v.into_iter().map(|x| conv(x - 0.5)).collect()
}

fn kernels(args: KernelArgs) -> Result<()> {
    let ring = Ring::new(args.ring_bits).context("--ring-bits")?;
    let dev = goten_runtime::devices::make(args.device, args.threads)?;
    let fref = FloatRef::new(args.threads)?;
    let threads = CpuDevice::new(args.threads)?.threads();
    let matches = |s: &str| args.filter.as_deref().is_none_or(|f| s.contains(f));
    let jobs: Vec<Job> = vgg_jobs(args.batch as usize)
        .into_iter()
        .filter(|j| matches(&format!("{} {}", j.layer, j.op.name())))
        .collect();
    let prg_selected = matches("prg");
    if jobs.is_empty() && !prg_selected {
        bail!(
            "--filter {:?} selects no kernel",
            args.filter.unwrap_or_default()
        );
    }
    if !args.json && !jobs.is_empty() {
        println!(
            "goten bench kernels: ring {ring}, batch {}, {} threads on {}, best of {}, exact products on {}",
            args.batch,
            threads,
            dev.name(),
            args.reps,
            goten_linalg::vnni::describe(ring)
        );
        println!(
            "{:<6} {:<11} {:<28} {:>9} {:>10} {:>10} {:>10} {:>7}",
            "layer", "kernel", "shape", "secs", "mod GMAC/s", "f32 GMAC/s", "f64 GMAC/s", "mod/f64"
        );
    }
    let mut ratios = Vec::new();
    for (i, j) in jobs.iter().enumerate() {
        let macs = j.op.macs(&j.a, &j.b)? as f64;
        let (ra, rb) = (
            random_ring(ring, &j.a, 2 * i as u64)?,
            random_ring(ring, &j.b, 2 * i as u64 + 1)?,
        );
        let secs = time_best(args.reps, || {
            std::hint::black_box(dev.bilinear(&j.op, &ra, &rb)?);
            Ok(())
        })?;
        let (fa, fb) = (random_float(&j.a, 1, |x| x), random_float(&j.b, 2, |x| x));
        let f32s = time_best(args.reps, || {
            std::hint::black_box(fref.bilinear::<f32>(&j.op, (&j.a, &fa), (&j.b, &fb))?);
            Ok(())
        })?;
        drop((fa, fb));
        let (da, db) = (
            random_float(&j.a, 1, f64::from),
            random_float(&j.b, 2, f64::from),
        );
        let f64s = time_best(args.reps, || {
            std::hint::black_box(fref.bilinear::<f64>(&j.op, (&j.a, &da), (&j.b, &db))?);
            Ok(())
        })?;
        let ratio = f64s / secs;
        ratios.push(ratio);
        let shape = shape_str(j);
        if args.json {
            println!(
                "{}",
                json!({
                    "kernel": j.op.name(), "layer": j.layer, "shape": shape, "macs": macs as u64,
                    "reduction_len": j.op.reduction_len(&j.a, &j.b)?, "secs": secs,
                    "mod_macs_per_s": macs / secs, "ref_f32_macs_per_s": macs / f32s,
                    "ref_f64_macs_per_s": macs / f64s, "ratio_mod_f64": ratio,
                    "ring_bits": ring.bits(), "threads": threads, "batch": args.batch,
                })
            );
        } else {
            println!(
                "{:<6} {:<11} {:<28} {:>9.5} {:>10.2} {:>10.2} {:>10.2} {:>7.2}",
                j.layer,
                j.op.name(),
                shape,
                secs,
                macs / secs / 1e9,
                macs / f32s / 1e9,
                macs / f64s / 1e9,
                ratio
            );
        }
    }
    if !ratios.is_empty() {
        ratios.sort_by(f64::total_cmp);
        let median = ratios[ratios.len() / 2];
        if args.json {
            println!(
                "{}",
                json!({"kernel": "summary", "kernels": ratios.len(), "median_ratio_mod_f64": median, "min_ratio_mod_f64": ratios[0], "ring_bits": ring.bits(), "threads": threads, "cpu_kernel": goten_linalg::vnni::describe(ring)})
            );
        } else {
            println!(
                "median mod/f64 over {} kernels: {median:.3} (min {:.3})",
                ratios.len(),
                ratios[0]
            );
        }
    }
    if prg_selected {
        prg_line(ring, args.json, args.reps)?;
    }
    Ok(())
}

/// Single-thread PRG throughput: uniform ring elements per second.
fn prg_line(ring: Ring, json_out: bool, reps: u32) -> Result<()> {
    let prg = Prg::new(&bench_key(), "bench/prg", 0);
    let n = 1usize << 24;
    let mut out = vec![0i32; n];
    let mut it = 0u64;
    let secs = time_best(reps, || {
        prg.fill_ring(ring, it, 0, &mut out);
        it += 1;
        std::hint::black_box(&out);
        Ok(())
    })?;
    let rate = n as f64 / secs;
    if json_out {
        println!(
            "{}",
            json!({"kernel": "prg", "cipher": "aes128-ctr", "elems": n, "secs": secs, "elems_per_s": rate, "bytes_per_s": rate * 4.0, "threads": 1, "ring_bits": ring.bits()})
        );
    } else {
        println!(
            "prg (AES-128-CTR, 1 thread): {:.0} M ring elements/s ({:.2} GB/s of keystream)",
            rate / 1e6,
            rate * 4.0 / 1e9
        );
    }
    Ok(())
}
