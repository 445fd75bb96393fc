//! The PNG of loss and accuracy curves written at the end of `goten train`.
//!
//! Where it sits: host side, after training; it reads only `metrics.jsonl` (the numbers that
//! leave the enclave anyway). The font is bundled (DejaVu Sans Mono, Bitstream Vera license in
//! `assets/`), so no system font library is needed.

use std::path::Path;

use anyhow::{Context, Result, anyhow};
use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};

static FONT: &[u8] = include_bytes!("../assets/DejaVuSansMono.ttf");

/// (step, value) points.
type Points = Vec<(f64, f64)>;

fn series(metrics: &Path) -> Result<(Points, Points)> {
    let text = std::fs::read_to_string(metrics)
        .with_context(|| format!("cannot read {}", metrics.display()))?;
    let (mut loss, mut acc) = (Vec::new(), Vec::new());
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let Some(step) = v["step"].as_f64() else {
            continue;
        };
        if let Some(l) = v["loss"].as_f64().filter(|l| l.is_finite()) {
            loss.push((step, l));
        }
        if let Some(a) = v["test_accuracy"].as_f64() {
            acc.push((step, 100.0 * a));
        }
    }
    Ok((loss, acc))
}

/// Draws training loss and test accuracy against the step into `png`.
pub fn draw(metrics: &Path, png: &Path, title: &str) -> Result<()> {
    register_font("sans-serif", FontStyle::Normal, FONT)
        .map_err(|_| anyhow!("bundled font is invalid"))?;
    let (loss, acc) = series(metrics)?;
    let last = loss.iter().chain(&acc).map(|p| p.0).fold(1.0, f64::max);
    let root = BitMapBackend::new(png, (1000, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let root = root
        .titled(title, ("sans-serif", 20))
        .map_err(|e| anyhow!("{e}"))?;
    let (left, right) = root.split_horizontally(500);
    let max_loss = loss.iter().map(|p| p.1).fold(0.1, f64::max) * 1.05;
    let mut c = ChartBuilder::on(&left)
        .margin(12)
        .x_label_area_size(32)
        .y_label_area_size(48)
        .caption("training loss", ("sans-serif", 16))
        .build_cartesian_2d(0f64..last, 0f64..max_loss)
        .map_err(|e| anyhow!("{e}"))?;
    c.configure_mesh()
        .x_desc("step")
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    c.draw_series(LineSeries::new(loss, &BLUE))
        .map_err(|e| anyhow!("{e}"))?;
    let mut c = ChartBuilder::on(&right)
        .margin(12)
        .x_label_area_size(32)
        .y_label_area_size(48)
        .caption("test accuracy (%)", ("sans-serif", 16))
        .build_cartesian_2d(0f64..last, 0f64..100f64)
        .map_err(|e| anyhow!("{e}"))?;
    c.configure_mesh()
        .x_desc("step")
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    c.draw_series(LineSeries::new(acc.clone(), &RED))
        .map_err(|e| anyhow!("{e}"))?;
    c.draw_series(acc.into_iter().map(|p| Circle::new(p, 3, RED.filled())))
        .map_err(|e| anyhow!("{e}"))?;
    root.present()
        .with_context(|| format!("cannot write {}", png.display()))?;
    Ok(())
}
