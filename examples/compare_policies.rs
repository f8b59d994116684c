//! Compares dense, plain offload (uncompressed weights copied from host RAM at every use) and
//! ember's cache policies × residencies × schemes × prefetch on one device: speed, memory, decode
//! share and perplexity, written as JSON, a Markdown table and an SVG chart.
//!
//! ```text
//! cargo run --release -p ember-llama --example compare_policies -- --device cpu --quick
//! ```
//!
//! Each configuration runs in a child process (this example re-executed with `--single NAME`),
//! so its peak memory is its own: on the CPU path the peak is the child's peak RSS, because
//! Burn's CPU backend has no allocator statistics.

/// Burn's CPU backend frees each decoded weight at the end of its pass and allocates the next
/// one fresh. glibc serves buffers over 32 MiB with newly mapped pages every time, and faulting
/// them in costs more than decoding into them (3.4× slower on `decode-bench`); jemalloc reuses
/// freed pages. GPU runs are unaffected: decoded weights live in the device's own pool.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[path = "common/mod.rs"]
mod common;
#[path = "compare/configs.rs"]
mod configs;
#[path = "compare/measure.rs"]
mod measure;
#[path = "compare/quality.rs"]
mod quality;
#[path = "compare/report.rs"]
mod report;

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};
use clap::Parser;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use common::ModelSource;
use configs::{Setup, PLAIN_OFFLOAD};
use measure::Row;
use report::{Machine, QualitySection, Report};

#[derive(Parser, Debug)]
#[command(about = "Compare dense, plain offload and ember's policies on one device")]
struct Args {
    /// A `.gguf` file or Hugging Face model directory (compressed per scheme, cached) or an `.ember`
    /// file; default: SmolLM2-135M-Instruct.
    #[arg(long, conflicts_with = "synthetic")]
    model: Option<PathBuf>,
    /// A Llama-shaped model generated here from `--seed` instead of a file: llama3-8b,
    /// llama3.2-1b, tinyllama or smollm2-135m (cached once generated).
    #[arg(long)]
    synthetic: Option<String>,
    /// Seed of the synthetic model.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Scored tokens of a synthetic model's quality pass (it has no tokenizer: seeded ids).
    #[arg(long, default_value_t = 2048)]
    synthetic_text_tokens: usize,
    /// auto, vulkan or cpu.
    #[arg(long, default_value = "auto")]
    device: String,
    /// Output folder.
    #[arg(long, default_value = "benches/results")]
    out: PathBuf,
    /// New tokens per generation.
    #[arg(long, default_value_t = 32)]
    max_tokens: usize,
    /// A reduced set of configurations (see `configs::all`).
    #[arg(long)]
    quick: bool,
    /// Prefix of the output files (default: `cpu` on the CPU path, `vulkan` otherwise; e.g. `h100`).
    #[arg(long)]
    tag: Option<String>,
    /// Tokens per perplexity chunk.
    #[arg(long, default_value_t = 256)]
    chunk: usize,
    /// Re-render the Markdown, chart and goals of an earlier run's JSON (no measuring).
    #[arg(long, value_name = "JSON")]
    render: Option<PathBuf>,
    /// Measure one configuration in this process and print its row as JSON (used by the parent).
    #[arg(long, hide = true)]
    single: Option<String>,
    /// Adaptive budget in bytes (passed to children).
    #[arg(long, hide = true)]
    budget: Option<u64>,
}

const ROW_PREFIX: &str = "EMBER_ROW ";

fn main() -> Result<()> {
    let args = Args::parse();
    if let Some(name) = &args.single {
        let setup = Setup::parse(name)?;
        let source = ModelSource::from_args(args.model.clone(), args.synthetic.as_deref(), args.seed)?;
        let row = measure::run(&setup, &source, &args.device, args.max_tokens, args.budget.unwrap_or(0))?;
        println!("{ROW_PREFIX}{}", serde_json::to_string(&row)?);
        return Ok(());
    }
    if let Some(json) = &args.render {
        return render(json);
    }
    run_all(&args)
}

/// Rewrites `json`'s goals, and the `.md` and `.svg` beside it, from its rows.
fn render(json: &std::path::Path) -> Result<()> {
    let text = std::fs::read_to_string(json).with_context(|| format!("reading {}", json.display()))?;
    let mut report: Report = serde_json::from_str(&text).with_context(|| format!("parsing {}", json.display()))?;
    report.goals = report::goals(&report.rows, !report.device.starts_with("cpu"));
    write_outputs(&report, &|ext: &str| json.with_extension(ext))
}

/// Writes the JSON, Markdown and SVG of `report` and prints the table.
fn write_outputs(report: &Report, out_file: &dyn Fn(&str) -> PathBuf) -> Result<()> {
    let json = out_file("json");
    crate::common::write_atomic(&json, (serde_json::to_string_pretty(report)? + "\n").as_bytes())?;
    let md = out_file("md");
    let table = report::markdown(report);
    crate::common::write_atomic(&md, table.as_bytes())?;
    let chart = out_file("svg");
    report::svg(report, &chart)?;
    println!("{table}");
    println!("wrote {}, {}, {}", json.display(), md.display(), chart.display());
    Ok(())
}

/// Runs one configuration in a child process and reads its row back; a failure becomes a row
/// with `error` set, so one broken configuration does not lose the others.
fn run_child(args: &Args, source: &ModelSource, device: &str, setup: &Setup, budget: u64) -> Row {
    let name = setup.name();
    child_row(args, source, device, &name, budget).unwrap_or_else(|e| Row {
        name,
        error: Some(format!("{e:#}")),
        ..Row::default()
    })
}

fn child_row(args: &Args, source: &ModelSource, device: &str, name: &str, budget: u64) -> Result<Row> {
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.args(["--single", name, "--device", device, "--max-tokens", &args.max_tokens.to_string()]);
    cmd.args(["--budget", &budget.to_string()]);
    cmd.args(source.child_args());
    let out = cmd.output().context("starting the child process")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    match stdout.lines().find_map(|l| l.strip_prefix(ROW_PREFIX)) {
        Some(json) if out.status.success() => Ok(serde_json::from_str(json)?),
        _ => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let mut tail: Vec<&str> = stderr.lines().rev().take(3).collect();
            tail.reverse();
            bail!("{} ({})", out.status, tail.join(" / "))
        }
    }
}

fn ratio(a: f64, b: f64) -> Option<f64> {
    (b > 0.0 && a > 0.0).then(|| a / b)
}

fn run_all(args: &Args) -> Result<()> {
    let (device, description) = common::pick_device(&args.device)?;
    let on_cpu = description.starts_with("cpu");
    // Children must land on the same device the parent picked.
    let child_device = if on_cpu { "cpu" } else { "vulkan" };
    let tag = args.tag.clone().unwrap_or_else(|| child_device.to_string());
    let source = ModelSource::from_args(args.model.clone(), args.synthetic.as_deref(), args.seed)?;
    let model_name = source.name();
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let stem = format!("{tag}-{model_name}");
    let out_file = |ext: &str| args.out.join(format!("{stem}.{ext}"));

    // Compress every container first, so no child pays for it (or races another for the cache).
    for scheme in ["raw", "lossless", "int8", "int4"] {
        source.container(scheme)?;
    }

    let bars = MultiProgress::new();
    let quality_bar = bars.add(ProgressBar::new(0));
    let quality = quality::run(&source, &device, args.chunk, args.synthetic_text_tokens, &quality_bar)?;
    // Half the dense weights, at least the largest decoded tensor (which must fit to be used).
    let lossless = ember::Store::open(source.container("lossless")?)?;
    let budget = (quality.dense_weight_bytes / 2).max(ember_llama::offload::default_adaptive_budget(&lossless));
    drop(lossless);

    let setups = configs::all(args.quick);
    let bar = bars.add(ProgressBar::new(setups.len() as u64));
    bar.set_style(
        ProgressStyle::with_template("{prefix:>10} [{bar:30}] {pos}/{len} {elapsed_precise} {msg}")?
            .progress_chars("=> "),
    );
    bar.set_prefix("configs");
    let mut rows = Vec::new();
    for setup in &setups {
        bar.set_message(setup.name());
        let row = run_child(args, &source, child_device, setup, budget);
        if let Some(e) = &row.error {
            say(&bars, format!("{}: failed: {e}", row.name))?;
        } else {
            say(
                &bars,
                format!(
                    "{:<32} decode {:>7.2} tok/s · prefill {:>7.1} tok/s · peak {:>6.0} MiB · decode share {:>3.0}%",
                    row.name,
                    row.decode_tok_s,
                    row.prefill_tok_s,
                    row.device_peak_bytes as f64 / 1048576.0,
                    100.0 * row.decode_share
                ),
            )?;
        }
        rows.push(row);
        bar.inc(1);
    }
    bar.finish_with_message("done");

    let find = |name: &str| rows.iter().find(|r| r.name == name && r.error.is_none()).cloned();
    let (dense, plain) = (find("dense"), find(&PLAIN_OFFLOAD.name()));
    for row in rows.iter_mut().filter(|r| r.error.is_none()) {
        // Memory ratios only between rows read from the same meter.
        if let Some(d) = &dense {
            row.decode_vs_dense = ratio(row.decode_tok_s, d.decode_tok_s);
            if row.memory_source == d.memory_source {
                row.peak_vs_dense = ratio(row.device_peak_bytes as f64, d.device_peak_bytes as f64);
            }
            row.same_tokens_as_dense = Some(row.tokens == d.tokens);
        }
        if let Some(p) = &plain {
            row.decode_vs_plain = ratio(row.decode_tok_s, p.decode_tok_s);
            if row.memory_source == p.memory_source {
                row.peak_vs_plain = ratio(row.device_peak_bytes as f64, p.device_peak_bytes as f64);
            }
        }
    }

    let lossless_equals_dense =
        quality.rows.iter().find(|q| q.scheme == "lossless").is_some_and(|q| q.bit_exact_vs_dense);
    let memory_note = if on_cpu {
        "Memory on the CPU path is the process resident set (RSS): Burn's CPU backend has no allocator statistics. \
         Peak = the configuration's own child process peak RSS over the measured generation (VmHWM, reset after \
         warm-up); idle = RSS after generation."
    } else {
        "Memory is the device allocator's bytes in use, one meter for every row (dense included): peak = the highest \
         figure over the measured generation, sampled after every decode and at the end of every pass; idle = after \
         generation. Peak reserved bytes (what nvidia-smi shows) are in the JSON."
    };
    let report = Report {
        machine: Machine::probe(),
        device: description,
        commit: commit(),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        model: model_name,
        max_tokens: args.max_tokens,
        quick: args.quick,
        adaptive_budget_bytes: budget,
        memory_note: memory_note.to_string(),
        goals: report::goals(&rows, !on_cpu),
        quality: QualitySection {
            text: if source.is_synthetic() {
                format!("{} seeded token ids (synthetic model: no tokenizer, random weights)", quality.text_tokens)
            } else {
                "benches/data/public-domain.txt".into()
            },
            text_tokens: quality.text_tokens,
            chunk_tokens: quality.chunk,
            lossless_equals_dense,
            schemes: quality.rows,
        },
        rows,
    };
    write_outputs(&report, &out_file)?;
    if !lossless_equals_dense {
        bail!("lossless logits differ from dense (see the quality table)");
    }
    Ok(())
}

/// A line above the progress bars, or on stdout when they are hidden (not a terminal: a log file
/// or CI), so a long run always shows each finished configuration.
fn say(bars: &MultiProgress, line: String) -> std::io::Result<()> {
    if bars.is_hidden() {
        println!("{line}");
        Ok(())
    } else {
        bars.println(line)
    }
}

/// `EMBER_COMMIT`, else `git rev-parse HEAD`, else `unknown`.
fn commit() -> String {
    if let Ok(c) = std::env::var("EMBER_COMMIT") {
        return c;
    }
    Command::new("git")
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map_or_else(|| "unknown".into(), |o| String::from_utf8_lossy(&o.stdout).trim().to_string())
}
