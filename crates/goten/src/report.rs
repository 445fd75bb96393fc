//! What the user sees of a run: progress bar, metrics file, traffic summary, plot and the
//! final line.
//!
//! Where it sits: host-side display. It records only what a session releases (step reports,
//! loss windows, evaluations) and what the host measures itself (time, traffic), so the
//! metrics file is as public as the host's own view.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{Context, Result};
use goten_enclave::Role;
use goten_enclave::session::{EvalReport, StepReport, WindowLoss};
use goten_party::Traffic;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;

use goten_runtime::Observer;

/// Progress bar, metrics file and running numbers; only E0's thread (or the single plain /
/// enclave run) reports.
pub(crate) struct Reporter {
    bar: ProgressBar,
    metrics: std::fs::File,
    start: Instant,
    images: u64,
    /// Traffic of this party's training steps (not evaluation) and how many steps it covers.
    step_traffic: (Traffic, u64),
    silent: bool,
    /// The metrics file's path (rewritten on resume).
    path: std::path::PathBuf,
    /// The last released loss mean, for the progress bar.
    last_loss: Option<f32>,
}

impl Reporter {
    /// `silent`: no progress bar and no messages, only the metrics file (the second enclave
    /// host of a run in this process, whose terminal is S0's).
    pub(crate) fn new(
        total: u64,
        out: &std::path::Path,
        append: bool,
        silent: bool,
    ) -> Result<Self> {
        let metrics = open_metrics(out, append)?;
        let path = out.join("metrics.jsonl");
        let hidden = silent || !std::io::stderr().is_terminal() || std::env::var_os("CI").is_some();
        let bar = ProgressBar::with_draw_target(
            Some(total),
            if hidden {
                ProgressDrawTarget::hidden()
            } else {
                ProgressDrawTarget::stderr()
            },
        );
        bar.set_style(
            ProgressStyle::with_template("{bar:30} {pos}/{len} steps  {msg}  ETA {eta}")
                .expect("valid template"),
        );
        Ok(Reporter {
            bar,
            metrics,
            start: Instant::now(),
            images: 0,
            step_traffic: (Traffic::default(), 0),
            silent,
            path,
            last_loss: None,
        })
    }

    /// A message above the progress bar, or on stderr when there is no bar (nothing when silent).
    pub(crate) fn say(&self, msg: String) {
        if self.silent {
            return;
        }
        if self.bar.is_hidden() {
            eprintln!("{msg}");
        } else {
            self.bar.println(msg);
        }
    }

    pub(crate) fn line(&mut self, v: serde_json::Value) {
        // Metrics are best effort: a full disk must not kill a training run.
        let _ = writeln!(self.metrics, "{v}");
    }

    pub(crate) fn step(&mut self, r: &StepReport, traffic: Option<Traffic>) {
        self.images += r.images as u64;
        let ips = self.images as f64 / self.start.elapsed().as_secs_f64().max(1e-9);
        self.bar.set_position(r.step);
        let mut v = json!({"step": r.step, "epoch": r.epoch, "lr": r.lr, "img_per_s": ips});
        if let Some(w) = &r.loss {
            self.last_loss = Some(w.mean);
            v["loss"] = w.mean.into();
            v["loss_steps"] = json!([w.first_step, w.last_step]);
        }
        let loss = self
            .last_loss
            .map_or_else(|| "loss -".to_string(), |l| format!("loss {l:.3}"));
        self.bar.set_message(format!("{loss}  {ips:.1} img/s"));
        if let Some(t) = traffic {
            let (sum, n) = &mut self.step_traffic;
            sum.sent += t.sent;
            sum.received += t.received;
            *n += 1;
            v["bytes_sent"] = t.sent.into();
            v["bytes_received"] = t.received.into();
        }
        self.line(v);
    }

    /// The loss window released at the end of a run.
    pub(crate) fn window(&mut self, w: &WindowLoss, step: u64) {
        self.last_loss = Some(w.mean);
        self.line(json!({"step": step, "loss": w.mean, "loss_steps": [w.first_step, w.last_step]}));
    }

    /// A resumed run continues from `step`: drops the lines of later steps (written after that
    /// checkpoint by the interrupted run) and its closing lines, so no step appears twice.
    pub(crate) fn forget_after(&mut self, step: u64) {
        let Ok(text) = std::fs::read_to_string(&self.path) else {
            return;
        };
        let kept: String = text
            .lines()
            .filter(|l| {
                serde_json::from_str::<serde_json::Value>(l)
                    .ok()
                    .and_then(|v| v.get("step").and_then(|s| s.as_u64()))
                    .is_some_and(|s| s <= step)
            })
            .map(|l| format!("{l}\n"))
            .collect();
        // Best effort, like every metrics write.
        let _ = goten_runtime::store::write_durably(&self.path, kept.as_bytes());
        if let Ok(f) = std::fs::OpenOptions::new().append(true).open(&self.path) {
            self.metrics = f;
        }
    }

    pub(crate) fn eval(&mut self, e: &EvalReport) {
        let (step, epoch, loss, acc) = (e.step, e.epoch, e.loss, e.accuracy);
        self.say(format!(
            "step {step} (epoch {epoch}): test accuracy {:.2} %, test loss {loss:.3}",
            100.0 * acc
        ));
        self.line(json!({"step": step, "epoch": epoch, "test_loss": loss, "test_accuracy": acc}));
    }
}

impl Reporter {
    /// Removes the progress bar (the run is over).
    pub(crate) fn clear_bar(&self) {
        self.bar.finish_and_clear();
    }
}

impl Observer for Reporter {
    fn step(&mut self, r: &StepReport, traffic: Option<Traffic>) {
        Reporter::step(self, r, traffic);
    }
    fn window(&mut self, w: &WindowLoss, step: u64) {
        Reporter::window(self, w, step);
    }
    fn eval(&mut self, e: &EvalReport) {
        Reporter::eval(self, e);
    }
    fn resumed_at(&mut self, step: u64) {
        self.forget_after(step);
    }
}

/// `dir/metrics.jsonl`, creating `dir`; a resumed run (`append`) keeps the lines of the steps
/// before its checkpoint, a new one starts the file afresh.
fn open_metrics(dir: &std::path::Path, append: bool) -> Result<std::fs::File> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create output folder {}", dir.display()))?;
    let path = dir.join("metrics.jsonl");
    std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(append)
        .truncate(!append)
        .open(&path)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// S2's metrics file: bytes sent and received per protocol iteration.
pub(crate) struct DealerLog(std::fs::File);

impl DealerLog {
    pub(crate) fn open(dir: &std::path::Path, append: bool) -> Result<Self> {
        open_metrics(dir, append).map(DealerLog)
    }

    pub(crate) fn iteration(&mut self, i: u64, t: Traffic) {
        // Best effort, like the other metrics.
        let _ = writeln!(
            self.0,
            "{}",
            json!({"party": "S2", "iteration": i, "bytes_sent": t.sent, "bytes_received": t.received})
        );
    }
}

/// Traffic of every party over the run, in the metrics file and on stderr.
pub(crate) fn report_traffic(
    reporter: &Mutex<Reporter>,
    reports: &[(Role, goten_party::PartyReport)],
) {
    let mut r = reporter.lock().expect("reporter lock");
    let mut parts = Vec::new();
    let mut obj = serde_json::Map::new();
    for (role, rep) in reports {
        let t = rep.traffic;
        obj.insert(
            role.to_string(),
            json!({"bytes_sent": t.sent, "bytes_received": t.received}),
        );
        parts.push(format!("{role} sent {:.1} MB", t.sent as f64 / 1e6));
    }
    let (sum, n) = r.step_traffic;
    let per_step =
        (n > 0).then(|| json!({"bytes_sent": sum.sent / n, "bytes_received": sum.received / n}));
    let reporting = reports.first().map_or(Role::S0, |(role, _)| *role);
    r.line(json!({"traffic_total": obj, "traffic_per_training_step": {reporting.to_string(): per_step}}));
    let mut msg = format!(
        "traffic (training, evaluation and key exchange): {}",
        parts.join(", ")
    );
    if n > 0 {
        msg.push_str(&format!(
            "; {reporting} per training step: sent {:.2} MB, received {:.2} MB",
            sum.sent as f64 / n as f64 / 1e6,
            sum.received as f64 / n as f64 / 1e6
        ));
    }
    r.say(msg);
}
