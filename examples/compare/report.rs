//! The three outputs: JSON (everything), Markdown (the table), SVG (decode speed vs peak memory).

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;
use plotters::prelude::*;
use serde::{Deserialize, Serialize};

use crate::measure::Row;
use crate::quality::Quality;

/// The whole run.
#[derive(Serialize, Deserialize)]
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
    /// The goals, checked against this run.
    pub goals: Vec<Goal>,
    pub rows: Vec<Row>,
}

/// One goal of the benchmark, against what this run measured.
#[derive(Serialize, Deserialize)]
pub struct Goal {
    pub goal: String,
    pub target: String,
    /// The configuration the figure comes from.
    pub config: String,
    pub measured: String,
    /// `None` where this run cannot tell (a configuration missing or failed).
    pub met: Option<bool>,
    /// By how much, and what bounds it (from the decode share and throughput of the same row).
    pub why: String,
}

fn ok(rows: &[Row]) -> impl Iterator<Item = &Row> {
    rows.iter().filter(|r| r.error.is_none())
}

fn why_decode_bound(r: &Row) -> String {
    format!(
        "decoding takes {:.0}% of generation time at {:.2} GB/s of decoded weights ({} decodes)",
        100.0 * r.decode_share,
        r.decode_gbps,
        r.decode_count
    )
}

/// Checks the goals against the rows (ratios must be filled in).
pub fn goals(rows: &[Row], on_gpu: bool) -> Vec<Goal> {
    let mut goals = Vec::new();
    let best = |pred: &dyn Fn(&Row) -> bool, key: &dyn Fn(&Row) -> Option<f64>| {
        ok(rows).filter(|r| pred(r)).filter_map(|r| key(r).map(|k| (k, r))).max_by(|a, b| a.0.total_cmp(&b.0))
    };
    // 1. per-forward + lossless at ≥ 0.8 × dense decode speed, weights at ≈ 67%.
    let dense = ok(rows).find(|r| r.name == "dense");
    let g1 = best(&|r| r.scheme == "lossless" && r.policy == "per-forward", &|r| r.decode_vs_dense);
    goals.push(match g1 {
        Some((x, r)) => Goal {
            goal: "per-forward + lossless: decode speed vs dense at batch 1".into(),
            target: format!("≥ 0.80× dense{}", if on_gpu { "" } else { " (a GPU goal; CPU figure for reference)" }),
            config: r.name.clone(),
            measured: format!(
                "{x:.2}× dense, weights stored at {:.1}% of BF16",
                100.0 * r.compressed_bytes as f64 / (r.weight_bytes as f64 / 2.0).max(1.0)
            ),
            met: Some(x >= 0.8),
            why: if x >= 0.8 {
                "met".into()
            } else {
                format!("{:.0}% short: {}", 100.0 * (0.8 - x) / 0.8, why_decode_bound(r))
            },
        },
        None => missing("per-forward + lossless: decode speed vs dense", "≥ 0.80× dense"),
    });
    // 2. host-resident compressed weights with prefetch vs plain offload. Only policies that
    //    keep weights compressed count (`full` decodes everything once and keeps it).
    let offloads = |r: &Row, scheme: &str| r.scheme == scheme && r.residency == "host" && r.policy != "full";
    for (scheme, target) in [("lossless", 1.4), ("int8", 2.5)] {
        let goal = format!("host-resident {scheme} with prefetch vs plain offload (none, per-forward or adaptive)");
        let g = best(&|r| offloads(r, scheme) && r.prefetch, &|r| r.decode_vs_plain);
        let without_best = best(&|r| offloads(r, scheme) && !r.prefetch, &|r| r.decode_vs_plain);
        let without =
            without_best.map_or_else(String::new, |(x, r)| format!("; best without prefetch {x:.2}× (`{}`)", r.name));
        goals.push(match g {
            Some((x, r)) => Goal {
                goal,
                target: format!("≥ {target}× plain offload"),
                config: r.name.clone(),
                measured: format!("{x:.2}× plain offload{without}"),
                met: Some(x >= target),
                why: if x >= target {
                    "met".into()
                } else if on_gpu {
                    format!("{:.0}% short: {}", 100.0 * (target - x) / target, why_decode_bound(r))
                } else {
                    // Prefetch is only blamed where it measurably cost speed in this run.
                    let prefetch = match without_best {
                        Some((w, _)) if w > x => ", and prefetch competes with the decoder for the same cores",
                        Some(_) => "; prefetch overlaps the decode with the rest of the layer but cannot remove it",
                        None => "",
                    };
                    format!(
                        "{:.0}% short: {}. On the CPU path there is no bus for compression to save: plain \
                         offload only widens BF16 to f32 at memory speed{}",
                        100.0 * (target - x) / target,
                        why_decode_bound(r),
                        prefetch
                    )
                },
            },
            None => missing(&goal, &format!("≥ {target}×")),
        });
    }
    // 3. fused products: the fused rows against the dense row of the same run (runs made
    //    before fused rows existed have none, and no such goals).
    let fused_run = rows.iter().any(|r| r.fused);
    for (scheme, target) in [("lossless", 1.0), ("int8", 1.5), ("int4", 2.0)].into_iter().filter(|_| fused_run) {
        let goal = format!("{scheme} fused vs dense decode speed at batch 1");
        goals.push(match best(&|r| r.scheme == scheme && r.fused, &|r| r.decode_vs_dense) {
            Some((x, r)) => Goal {
                goal,
                target: format!("≥ {target:.1}× dense"),
                config: r.name.clone(),
                measured: format!(
                    "{x:.2}× dense ({:.1} vs {:.1} tok/s)",
                    r.decode_tok_s,
                    dense.map_or(0.0, |d| d.decode_tok_s)
                ),
                met: Some(x >= target),
                why: if x >= target {
                    "met".into()
                } else {
                    format!(
                        "{:.0}% short: batch-1 decoding also runs attention, norms and sampling, which \
                         do not shrink with the weights",
                        100.0 * (target - x) / target
                    )
                },
            },
            None => missing(&goal, &format!("≥ {target:.1}× dense")),
        });
    }
    // 4. `none`: peak ≤ non-weight memory + resident compressed + the two largest decoded weights.
    if let Some(d) = dense {
        let non_weight = d.device_peak_bytes.saturating_sub(d.weight_bytes);
        let worst = ok(rows)
            .filter(|r| r.policy == "none" && r.scheme != "raw")
            .map(|r| {
                let bound = non_weight + r.compressed_bytes + r.two_largest_decoded_bytes;
                (r.device_peak_bytes as f64 / bound as f64, r, bound)
            })
            .max_by(|a, b| a.0.total_cmp(&b.0));
        if let Some((x, r, bound)) = worst {
            goals.push(Goal {
                goal: "`none`: peak memory within non-weight + compressed + two largest decoded weights".into(),
                target: format!("≤ {:.0} MiB (worst `none` configuration)", mib(bound)),
                config: r.name.clone(),
                measured: format!("{:.0} MiB peak ({x:.2}× the bound)", mib(r.device_peak_bytes)),
                met: Some(x <= 1.0),
                why: if x <= 1.0 {
                    format!("met; non-weight memory taken as dense peak − dense weights = {:.0} MiB", mib(non_weight))
                } else {
                    format!(
                        "{:.0} MiB over; non-weight memory taken as dense peak − dense weights = {:.0} MiB{}",
                        mib(r.device_peak_bytes - bound),
                        mib(non_weight),
                        if r.memory_source == "rss" {
                            "; on the CPU path the peak is RSS, which keeps freed pages the allocator has not returned"
                        } else {
                            ""
                        }
                    )
                },
            });
        }
    }
    goals
}

fn missing(goal: &str, target: &str) -> Goal {
    Goal {
        goal: goal.into(),
        target: target.into(),
        config: "–".into(),
        measured: "not measured in this run".into(),
        met: None,
        why: "the configuration was not part of this run or failed".into(),
    }
}

#[derive(Serialize, Deserialize)]
pub struct QualitySection {
    pub text: String,
    pub text_tokens: usize,
    pub chunk_tokens: usize,
    pub lossless_equals_dense: bool,
    pub schemes: Vec<Quality>,
}

/// Where it ran.
#[derive(Serialize, Deserialize)]
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
    let _ = writeln!(s, "\n## Goals\n\n| goal | target | measured | config | met | by how much, why |");
    let _ = writeln!(s, "|---|---|---|---|:-:|---|");
    for g in &report.goals {
        let met = match g.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "–",
        };
        let _ = writeln!(s, "| {} | {} | {} | `{}` | {} | {} |", g.goal, g.target, g.measured, g.config, met, g.why);
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
    let mut text = String::new();
    draw(report, &mut text)?;
    crate::common::write_atomic(path, text.as_bytes())
}

fn draw(report: &Report, out: &mut String) -> Result<()> {
    let points: Vec<(f64, f64)> = ok(&report.rows).map(|r| (mib(r.device_peak_bytes), r.decode_tok_s)).collect();
    // Scaled to the points (a 1B model on a CPU makes 0.1–0.2 tokens/s), headroom for the legend.
    let x_max = points.iter().map(|p| p.0).fold(f64::MIN_POSITIVE, f64::max) * 1.1;
    let y_max = points.iter().map(|p| p.1).fold(f64::MIN_POSITIVE, f64::max) * 1.3;
    let root = SVGBackend::with_string(out, (1100, 720)).into_drawing_area();
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
    // Colour = scheme, marker = policy, filled = compressed weights on the device, hollow = in
    // host RAM; dense and plain offload are labelled, the rest is read from the legend.
    let colour = |scheme: &str| match scheme {
        "dense" => BLACK,
        "raw" => RGBColor(120, 120, 120),
        "lossless" => BLUE,
        "int8" => RGBColor(0, 150, 0),
        _ => RED,
    };
    let rows: Vec<&Row> = report.rows.iter().filter(|r| r.error.is_none()).collect();
    for r in &rows {
        let (x, y) = (mib(r.device_peak_bytes), r.decode_tok_s);
        let style = if r.residency == "host" { colour(&r.scheme).stroke_width(2) } else { colour(&r.scheme).filled() };
        let at = EmptyElement::at((x, y));
        let label = matches!(r.name.as_str(), "dense" | "plain-offload").then(|| r.name.clone());
        let text = |s: String| Text::new(s, (7, -7), ("sans-serif", 12).into_font().color(&colour(&r.scheme)));
        let result = match r.policy.as_str() {
            "none" => {
                chart.draw_series(std::iter::once(at + Circle::new((0, 0), 5, style) + text(label.unwrap_or_default())))
            }
            // plotters' TriangleMarker is always filled: outline host rows by hand.
            "per-forward" if r.residency == "host" => chart.draw_series(std::iter::once(
                at + PathElement::new(vec![(0, -6), (5, 4), (-5, 4), (0, -6)], style) + text(String::new()),
            )),
            "per-forward" => {
                chart.draw_series(std::iter::once(at + TriangleMarker::new((0, 0), 6, style) + text(String::new())))
            }
            "full" => {
                chart.draw_series(std::iter::once(at + Rectangle::new([(-4, -4), (4, 4)], style) + text(String::new())))
            }
            "adaptive" => chart.draw_series(std::iter::once(at + Cross::new((0, 0), 5, style) + text(String::new()))),
            _ => chart.draw_series(std::iter::once(
                at + Circle::new((0, 0), 6, BLACK.filled()) + text(label.unwrap_or_default()),
            )),
        };
        result.map_err(|e| anyhow::anyhow!("{e:?}"))?;
    }
    let legend = [
        "colour: black dense · grey raw (plain offload) · blue lossless · green int8 · red int4",
        "marker: circle none · triangle per-forward · square full · cross adaptive",
        "filled: compressed weights on the device · hollow: in host RAM (prefetch on and off both shown)",
    ];
    for (i, line) in legend.iter().enumerate() {
        root.draw(&Text::new(*line, (90, 60 + 16 * i as i32), ("sans-serif", 13).into_font()))
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    }
    root.present().map_err(|e| anyhow::anyhow!("drawing the chart: {e:?}"))?;
    Ok(())
}
