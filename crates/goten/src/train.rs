//! `goten train`: trains a model in plain, enclave or goten mode and reports progress, metrics
//! and the final accuracy.
//!
//! Where it sits: the command's front end. The runtime validates the job, loads the data and
//! runs it (`goten_runtime::local`, or `goten_runtime::launcher` for the tcp transport); this
//! file shows what the enclaves release: the progress bar and metrics file of each enclave host
//! (`report.rs`), S2's traffic log, the plot and the closing line.

use std::sync::Mutex;

use anyhow::{Context, Result};
use clap::Args;
use goten_runtime::config::{Choice, Mode, TransportKind};
use goten_runtime::job::{Setup, prepare};
use goten_runtime::{JobConfig, Observer, Summary};
use serde_json::json;

use crate::options::TrainArgs;
use crate::report::{DealerLog, Reporter, report_traffic};

/// `goten train`'s command line: the job's options and how to show the result.
#[derive(Args, Debug)]
pub struct TrainCmd {
    #[command(flatten)]
    pub(crate) job: TrainArgs,
    /// Print one JSON object with the results as the last stdout line.
    #[arg(long)]
    pub(crate) json: bool,
}

/// Prepares `c` and prints what the user must know before it runs.
pub(crate) fn prepare_loudly(c: &JobConfig) -> Result<Setup> {
    let setup = prepare(c)?;
    for n in &setup.notices {
        eprintln!("{n}");
    }
    Ok(setup)
}

pub fn run(a: TrainCmd) -> Result<()> {
    let c = a.job.to_config();
    if c.transport == TransportKind::Tcp {
        let exe = std::env::current_exe().context("cannot find the goten executable")?;
        return Ok(goten_runtime::launcher::run(&c, &exe, a.json)?);
    }
    let setup = prepare_loudly(&c)?;
    let reporter = Mutex::new(Reporter::new(setup.total_steps, &c.out, c.resume, false)?);
    // S1 keeps its own metrics (its traffic per step) in OUT/party-1, S2 its traffic per
    // protocol iteration in OUT/party-2: the layout of a `--transport tcp` run.
    let reporter1 = if c.mode == Mode::Goten {
        let dir = c.out.join("party-1");
        Some(Mutex::new(Reporter::new(
            setup.total_steps,
            &dir,
            c.resume,
            true,
        )?))
    } else {
        None
    };
    let observers = [
        Some(&reporter as &Mutex<dyn Observer>),
        reporter1.as_ref().map(|r| r as &Mutex<dyn Observer>),
    ];
    let outcome = goten_runtime::local::run(&c, &setup, observers).context("training failed")?;
    if c.mode == Mode::Goten {
        let mut dealer_log = DealerLog::open(&c.out.join("party-2"), c.resume)?;
        for &(i, t) in &outcome.dealer_iterations {
            dealer_log.iteration(i, t);
        }
        report_traffic(&reporter, &outcome.reports);
    }
    finish(&c, &setup, outcome.summary, reporter, a.json)
}

/// Plot, summary line and the `--json` object of a finished run.
pub(crate) fn finish(
    c: &JobConfig,
    setup: &Setup,
    summary: Summary,
    reporter: Mutex<Reporter>,
    json: bool,
) -> Result<()> {
    let kind = &setup.arch;
    let rep = reporter.into_inner().expect("reporter lock");
    rep.clear_bar();
    let mode = c.mode.name();
    let png = c.out.join("curves.png");
    // The plot is a convenience: failing to draw it must not fail a finished run.
    if let Err(e) = crate::plot::draw(
        &c.out.join("metrics.jsonl"),
        &png,
        &format!("goten train: {} ({mode} mode)", kind.name()),
    ) {
        eprintln!("warning: could not draw {}: {e:#}", png.display());
    }
    let ips = summary.images as f64 / summary.secs.max(1e-9);
    let loss = if summary.train_loss.is_finite() {
        format!("last released train loss {:.3}", summary.train_loss)
    } else {
        "no train loss released (fewer than half a loss window since the start)".to_string()
    };
    eprintln!(
        "{mode} {}: {} steps, {} images in {:.1} s ({ips:.1} img/s), {loss}, test accuracy {:.2} % on {} images; metrics in {}",
        kind.name(),
        summary.steps,
        summary.images,
        summary.secs,
        100.0 * summary.test_accuracy,
        setup.test.len(),
        c.out.join("metrics.jsonl").display()
    );
    if json {
        println!(
            "{}",
            json!({"mode": mode, "model": kind.name(), "steps": summary.steps, "images": summary.images, "img_per_s": ips,
                   "train_loss": summary.train_loss, "test_accuracy": summary.test_accuracy, "synthetic_data": c.synthetic(),
                   "simulated_attestation": c.mode != Mode::Plain, "loss_window": c.loss_window_or_default(), "transport": c.transport.name()})
        );
    }
    Ok(())
}
