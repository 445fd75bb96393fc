//! `goten bench op`: one secure bilinear op end to end, three parties in this process, against
//! the plain float products of the same shapes measured in the same run.
//!
//! `overhead = secure_secs / (device_products * ref_f64_product_secs)`: the cost of everything
//! around the five unavoidable modular products (S0: 2, S1: 2, S2: 1): quantization, PRG,
//! masks, transport, reconstruction, and the modular arithmetic's own premium over f64.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use goten_device::float_ref::FloatRef;
use goten_enclave::quant::QuantConfig;
use goten_enclave::{EnclaveConfig, SecretTensor};
use goten_field::{Prg, Ring};
use goten_party::cluster::SIMULATION_NOTICE;
use goten_party::{ClusterConfig, Party, PartyError, Trusts, run_local};
use serde_json::json;

use crate::shapes::{Job, vgg_jobs};
use crate::util::{bench_key, shape_str, time_best};

/// Modular products per op: S0 computes two, S1 two, S2 one.
const DEVICE_PRODUCTS: f64 = 5.0;

/// Options of `goten bench op`.
#[derive(Args, Debug)]
pub struct OpArgs {
    /// Print one JSON object per line instead of a table.
    #[arg(long)]
    json: bool,
    /// Batch size of the VGG-11 shapes.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=4096))]
    batch: u32,
    /// Worker threads of the float reference (0: one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Device worker threads of each of the three parties (0: automatic). CPU devices share one
    /// pool: the machine's cores, or three times this count.
    #[arg(long, default_value_t = 0)]
    party_threads: usize,
    /// Device: `cpu` or `cuda` (a build with `--features cuda` and an NVIDIA GPU).
    #[arg(long, default_value = "cpu")]
    device: goten_runtime::devices::DeviceKind,
    /// Timed repetitions per op (the fastest is reported), after one warm-up run.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    reps: u32,
    /// Width k of the share ring Z_2^k.
    #[arg(long, default_value_t = Ring::DEFAULT_BITS)]
    ring_bits: u32,
    /// Quantization width in bits.
    #[arg(long, default_value_t = 8)]
    quant_bits: u32,
    /// Only ops whose layer or name contains this text (e.g. `conv4`, `dw`).
    #[arg(long)]
    filter: Option<String>,
}

/// Roughly normal operands (sum of four uniforms), the shape of real activations and gradients.
/// The benchmark's own copy of the values (it made them; they are no one's secret) and the
/// same values as the enclave's operand.
fn operand(shape: &[usize], id: u64) -> (Vec<f32>, SecretTensor) {
    let n: usize = shape.iter().product();
    let mut u = vec![0f32; 4 * n];
    Prg::new(&bench_key(), "bench/op-operand", id).fill_unit_f32(0, 0, &mut u);
    let v: Vec<f32> = u
        .chunks_exact(4)
        .map(|c| c.iter().sum::<f32>() - 2.0)
        .collect();
    (
        v.clone(),
        SecretTensor::new(shape, v).expect("length matches"),
    )
}

#[derive(Clone, Copy, Default)]
struct Timing {
    secs: f64,
    device: f64,
    transport: f64,
    parts: u32,
}

fn time_op(
    p: &mut Party,
    id: u64,
    reps: u32,
    job: &Job,
    a: &SecretTensor,
    b: &SecretTensor,
) -> Result<Timing, PartyError> {
    let mut best = Timing {
        secs: f64::INFINITY,
        ..Timing::default()
    };
    for rep in 0..=reps {
        let (d0, n0) = (p.host.device_secs(), p.host.transport_secs());
        let t = Instant::now();
        let _c = p.linear((id, u64::from(rep)), &job.op, a, b)?;
        let secs = t.elapsed().as_secs_f64();
        if rep > 0 && secs < best.secs {
            best = Timing {
                secs,
                device: p.host.device_secs() - d0,
                transport: p.host.transport_secs() - n0,
                parts: p.host.jobs_run() as u32,
            };
        }
        p.host.reset_jobs_run();
    }
    Ok(best)
}

pub fn run(args: OpArgs) -> Result<()> {
    let ring = Ring::new(args.ring_bits).context("--ring-bits")?;
    let quant = QuantConfig {
        bits: args.quant_bits,
        ..QuantConfig::default()
    };
    let cfg = ClusterConfig {
        enclave: EnclaveConfig { ring, quant },
        timeout: Duration::from_secs(600),
    };
    let matches = |s: &str| args.filter.as_deref().is_none_or(|f| s.contains(f));
    let jobs: Vec<Job> = vgg_jobs(args.batch as usize)
        .into_iter()
        .filter(|j| matches(&format!("{} {}", j.layer, j.op.name())))
        .collect();
    if jobs.is_empty() {
        bail!(
            "--filter {:?} selects no op",
            args.filter.unwrap_or_default()
        );
    }
    eprintln!("note: {SIMULATION_NOTICE}");
    type Pair<T> = Vec<(T, T)>;
    let (plain, operands): (Pair<Vec<f32>>, Pair<SecretTensor>) = jobs
        .iter()
        .enumerate()
        .map(|(i, j)| {
            let (pa, a) = operand(&j.a, 2 * i as u64);
            let (pb, b) = operand(&j.b, 2 * i as u64 + 1);
            ((pa, pb), (a, b))
        })
        .unzip();
    let party_threads = args.party_threads;
    let device_pool = goten_runtime::devices::shared_cpu_pool(party_threads);
    let (devices, nets) =
        goten_runtime::devices::local_parts(args.device, party_threads, cfg.timeout)?;
    let reps = args.reps;
    let body = |p: &mut Party| -> Result<Vec<Timing>, PartyError> {
        jobs.iter()
            .zip(&operands)
            .enumerate()
            .map(|(i, (j, (a, b)))| time_op(p, i as u64, reps, j, a, b))
            .collect()
    };
    let out =
        run_local(&cfg, &Trusts::generate(), devices, nets, &body).context("secure run failed")?;
    let (t0, t1) = out.results;
    let fref = FloatRef::new(args.threads)?;
    if !args.json {
        println!(
            "goten bench op: three parties in one process, ring {ring}, {}-bit quantization, batch {}, best of {}, exact products on {}",
            quant.bits,
            args.batch,
            reps,
            goten_linalg::vnni::describe(ring)
        );
        println!(
            "{:<6} {:<11} {:<28} {:>8} {:>5} {:>9} {:>9} {:>8} | {:>21} | {:>21}",
            "layer",
            "op",
            "shape",
            "secure s",
            "parts",
            "f64 prod",
            "f32 prod",
            "overhead",
            "S0 encl/dev/net s",
            "S1 encl/dev/net s"
        );
    }
    let mut overheads = Vec::new();
    for (((j, (fa, fb)), s0), s1) in jobs.iter().zip(&plain).zip(&t0).zip(&t1) {
        let f32s = time_best(reps, || {
            std::hint::black_box(fref.bilinear::<f32>(&j.op, (&j.a, fa), (&j.b, fb))?);
            Ok(())
        })?;
        let (da, db): (Vec<f64>, Vec<f64>) = (
            fa.iter().map(|&x| f64::from(x)).collect(),
            fb.iter().map(|&x| f64::from(x)).collect(),
        );
        let f64s = time_best(reps, || {
            std::hint::black_box(fref.bilinear::<f64>(&j.op, (&j.a, &da), (&j.b, &db))?);
            Ok(())
        })?;
        let secure = s0.secs.max(s1.secs);
        let overhead = secure / (DEVICE_PRODUCTS * f64s);
        overheads.push(overhead);
        let encl = |t: &Timing| (t.secs - t.device - t.transport).max(0.0);
        if args.json {
            println!(
                "{}",
                json!({
                    "op": j.op.name(), "layer": j.layer, "shape": shape_str(j), "secure_secs": secure,
                    "device_products": DEVICE_PRODUCTS, "parts": s0.parts, "ref_f64_product_secs": f64s, "ref_f32_secs": f32s,
                    "overhead": overhead,
                    "s0": {"enclave_secs": encl(s0), "device_secs": s0.device, "transport_secs": s0.transport},
                    "s1": {"enclave_secs": encl(s1), "device_secs": s1.device, "transport_secs": s1.transport},
                    "ring_bits": ring.bits(), "quant_bits": quant.bits, "batch": args.batch, "party_threads": party_threads, "device_pool_threads": device_pool, "ref_threads": fref.threads(), "simulated_attestation": true,
                })
            );
        } else {
            println!(
                "{:<6} {:<11} {:<28} {:>8.4} {:>5} {:>9.4} {:>9.4} {:>8.2} | {:>6.3} {:>6.3} {:>6.3} | {:>6.3} {:>6.3} {:>6.3}",
                j.layer,
                j.op.name(),
                shape_str(j),
                secure,
                s0.parts,
                f64s,
                f32s,
                overhead,
                encl(s0),
                s0.device,
                s0.transport,
                encl(s1),
                s1.device,
                s1.transport
            );
        }
    }
    overheads.sort_by(f64::total_cmp);
    let median = overheads[overheads.len() / 2];
    let names = ["S0", "S1", "S2"];
    if args.json {
        let parties: Vec<_> = out.reports.iter().zip(names).map(|(r, n)| json!({"party": n, "total_secs": r.total_secs, "enclave_secs": r.enclave_secs, "device_secs": r.device_secs, "transport_secs": r.transport_secs, "elements_sent": r.elements_sent})).collect();
        println!(
            "{}",
            json!({"op": "summary", "ops": overheads.len(), "median_overhead": median, "max_overhead": overheads[overheads.len() - 1], "parties": parties, "cpu_kernel": goten_linalg::vnni::describe(ring)})
        );
    } else {
        println!(
            "median overhead over {} ops: {median:.3} (max {:.3})",
            overheads.len(),
            overheads[overheads.len() - 1]
        );
        for (r, n) in out.reports.iter().zip(names) {
            println!(
                "{n}: total {:.2} s = enclave {:.2} + device {:.2} + transport/wait {:.2}; {} ring elements sent",
                r.total_secs, r.enclave_secs, r.device_secs, r.transport_secs, r.elements_sent
            );
        }
    }
    Ok(())
}
