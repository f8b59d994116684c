//! The three outputs: JSON (everything), Markdown (the table), SVG (decode speed vs peak memory).

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;
use plotters::prelude::*;
use serde::Serialize;

use crate::measure::Row;
use crate::quality::Quality;

/// The whole run.
#[derive(Serialize)]
pub struct Report {
    pub machine: Machine,
    pub device: String,
    pub commit: String,
    pub command: String,
    pub model: String,
    pub max_tokens: usize,
    pub quick: bool,
    pub adaptive_budget_bytes: u64,
    pub memory_note: String,
    pub quality: QualitySection,
    pub rows: Vec<Row>,
}

#[derive(Serialize)]
pub struct QualitySection {
    pub text: String,
    pub text_tokens: usize,
    pub chunk_tokens: usize,
    pub lossless_equals_dense: bool,
    pub schemes: Vec<Quality>,
}

/// Where it ran.
#[derive(Serialize)]
pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub memory_bytes: u64,
    pub os: String,
}

impl Machine {
    pub fn probe() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map_or_else(|| "unknown".to_string(), |(_, v)| v.trim().to_string());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory_bytes = meminfo
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024);
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        Machine {
            cpu,
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            memory_bytes,
            os: format!("{} {}", std::env::consts::OS, release.trim()),
        }
    }
}

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

fn ratio(r: Option<f64>) -> String {
    r.map_or_else(|| "–".into(), |r| format!("{r:.2}×"))
}

/// The Markdown table and the quality table.
pub fn markdown(report: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# compare_policies — {}\n", report.model);
    let _ = writeln!(
        s,
        "Device: {} · machine: {} ({} cores, {:.0} GiB) · commit `{}`\n",
        report.device,
        report.machine.cpu,
        report.machine.cores,
        mib(report.machine.memory_bytes) / 1024.0,
        report.commit
    );
    let _ = writeln!(s, "Command: `{}`\n", report.command);
    let _ = writeln!(s, "{}\n", report.memory_note);
    let _ = writeln!(
        s,
        "| config | prefill tok/s | decode tok/s | TTFT ms | peak MiB | idle MiB | host MiB | compressed MiB | decode share | decode ×dense | decode ×plain | peak ×dense | peak ×plain | = dense tokens |"
    );
    let _ = writeln!(s, "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|:-:|");
    for r in &report.rows {
        if let Some(e) = &r.error {
            let _ = writeln!(s, "| {} | failed: {} |||||||||||||", r.name, e.replace('|', "/").replace('\n', " "));
            continue;
        }
        let _ = writeln!(
            s,
            "| {} | {:.1} | {:.2} | {:.0} | {:.0} | {:.0} | {:.1} | {:.1} | {:.0}% | {} | {} | {} | {} | {} |",
            r.name,
            r.prefill_tok_s,
            r.decode_tok_s,
            r.ttft_ms,
            mib(r.device_peak_bytes),
            mib(r.device_idle_bytes),
            mib(r.host_bytes),
            mib(r.compressed_bytes),
            100.0 * r.decode_share,
            ratio(r.decode_vs_dense),
            ratio(r.decode_vs_plain),
            ratio(r.peak_vs_dense),
            ratio(r.peak_vs_plain),
            match r.same_tokens_as_dense {
                Some(true) => "yes",
                Some(false) => "no",
                None => "–",
            }
        );
    }
    let q = &report.quality;
    let _ = writeln!(
        s,
        "\n## Quality\n\nPerplexity on `{}` ({} tokens, chunks of {} tokens, each from an empty KV cache). Lossless equals dense bit for bit: **{}**.\n",
        q.text,
        q.text_tokens,
        q.chunk_tokens,
        if q.lossless_equals_dense { "yes" } else { "NO" }
    );
    let _ = writeln!(s, "| scheme | perplexity | mean NLL | scored tokens | max abs logit diff vs dense | bit-exact |");
    let _ = writeln!(s, "|---|--:|--:|--:|--:|:-:|");
    for r in &q.schemes {
        let _ = writeln!(
            s,
            "| {} | {:.3} | {:.4} | {} | {:.3e} | {} |",
            r.scheme,
            r.perplexity,
            r.nll,
            r.scored_tokens,
            r.max_abs_logit_diff_vs_dense,
            if r.bit_exact_vs_dense { "yes" } else { "no" }
        );
    }
    s
}

/// Decode tokens/s against peak device memory, one labelled point per configuration.
pub fn svg(report: &Report, path: &Path) -> Result<()> {
    let points: Vec<(f64, f64, &str)> = report
        .rows
        .iter()
        .filter(|r| r.error.is_none())
        .map(|r| (mib(r.device_peak_bytes), r.decode_tok_s, r.name.as_str()))
        .collect();
    let x_max = points.iter().map(|p| p.0).fold(1.0, f64::max) * 1.1;
    let y_max = points.iter().map(|p| p.1).fold(1.0, f64::max) * 1.15;
    let root = SVGBackend::new(path, (1100, 720)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let x_label = if report.rows.iter().any(|r| r.memory_source == "allocator") {
        "peak device memory, MiB (allocator bytes in use)"
    } else {
        "peak memory, MiB (process peak RSS; CPU path)"
    };
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("{} on {}: decode speed vs peak memory", report.model, report.device), ("sans-serif", 20))
        .margin(20)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    chart.configure_mesh().x_desc(x_label).y_desc("decode tokens/s").draw().map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let palette = [RED, BLUE, GREEN, MAGENTA, CYAN, BLACK];
    for (i, (x, y, name)) in points.iter().enumerate() {
        let color = palette[i % palette.len()];
        chart
            .draw_series(std::iter::once(
                EmptyElement::at((*x, *y))
                    + Circle::new((0, 0), 4, color.filled())
                    + Text::new(
                        name.to_string(),
                        (6, -6 - 11 * (i as i32 % 3)),
                        ("sans-serif", 11).into_font().color(&color),
                    ),
            ))
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    }
    root.present().map_err(|e| anyhow::anyhow!("writing {}: {e:?}", path.display()))?;
    Ok(())
}
