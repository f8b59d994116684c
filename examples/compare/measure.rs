//! One configuration measured in its own process: a warm-up generation, then a measured one,
//! with one memory meter for every configuration (dense included): the device allocator on a
//! GPU, sampled after every decode and at the end of every pass; the process on the CPU path.
//! Peaks cover the measured generation only.

use std::sync::Arc;

use anyhow::{Context, Result};
use ember::{Meter, MeterSource, Store};
use ember_llama::{generate_with, offload, GenerateOptions, Sampler};
use serde::{Deserialize, Serialize};

use crate::common::{self, ModelSource};
use crate::configs::Setup;

/// A fixed prompt of about 32 tokens.
pub const PROMPT: &str = "The history of the printing press begins in the fifteenth century, when a goldsmith in \
                          Mainz combined movable metal type with an oil-based ink and a";

/// Prompt length of a synthetic model (about that of [`PROMPT`]).
const SYNTHETIC_PROMPT_TOKENS: usize = 32;

/// What one configuration measured. The parent adds the ratios.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Row {
    /// Configuration name (see `configs::Setup::name`).
    pub name: String,
    pub scheme: String,
    pub policy: String,
    pub residency: String,
    pub prefetch: bool,
    /// Products of small batches ran fused, from the weights' fast form.
    #[serde(default)]
    pub fused: bool,
    pub prompt_tokens: usize,
    pub new_tokens: usize,
    /// Prompt tokens per second of the prefill forward.
    pub prefill_tok_s: f64,
    /// Generated tokens per second after the prefill.
    pub decode_tok_s: f64,
    /// Time to first token (prefill forward and its sampling), milliseconds.
    pub ttft_ms: f64,
    /// Where the memory figures come from: `rss` (CPU path: process resident set) or
    /// `allocator` (device allocator, bytes in use). Ratios only join rows of one source.
    pub memory_source: String,
    /// Peak memory over the measured generation: the process's peak RSS (VmHWM, reset after
    /// warm-up) on the CPU path; on a GPU the allocator's bytes in use, sampled after every
    /// decode and at the end of every pass.
    pub device_peak_bytes: u64,
    /// Peak bytes the device allocator reserved (what `nvidia-smi` shows); RSS on the CPU path.
    #[serde(default)]
    pub reserved_peak_bytes: u64,
    /// Highest figure sampled at the end of a forward pass (inside it, before per-forward frees).
    pub forward_peak_bytes: u64,
    /// After generation, prefetch dropped: what the configuration holds between requests.
    pub device_idle_bytes: u64,
    /// Compressed bytes kept in host RAM.
    pub host_bytes: u64,
    /// Compressed bytes kept in device memory.
    pub compressed_device_bytes: u64,
    /// Stored size of the compressed weights (0 for dense).
    pub compressed_bytes: u64,
    /// Decoded size of the weights.
    pub weight_bytes: u64,
    /// The two largest decoded weights together (the `none` memory goal allows that much).
    pub two_largest_decoded_bytes: u64,
    /// Decodes during the measured generation.
    pub decode_count: u64,
    /// Decoded bytes over decode seconds, GB/s (decode throughput seen by the model).
    pub decode_gbps: f64,
    /// Seconds spent decoding during the measured generation (exact: `sync_timing`).
    pub decode_secs: f64,
    /// `decode_secs` over the measured generation's wall time.
    pub decode_share: f64,
    /// The generated ids (to check which configurations reproduce dense).
    pub tokens: Vec<u32>,
    /// Ratios, filled by the parent.
    pub decode_vs_dense: Option<f64>,
    pub decode_vs_plain: Option<f64>,
    pub peak_vs_dense: Option<f64>,
    pub peak_vs_plain: Option<f64>,
    pub same_tokens_as_dense: Option<bool>,
    /// Set when the configuration failed.
    pub error: Option<String>,
    /// The store's counters after the measured generation.
    pub stats: serde_json::Value,
}

/// Measures `setup` in this process.
pub fn run(setup: &Setup, source: &ModelSource, device: &str, max_tokens: usize, budget: u64) -> Result<Row> {
    let (device, _) = common::pick_device(device)?;
    let path = source.container(setup.scheme())?;
    let store = Store::open(&path).with_context(|| format!("opening {}", path.display()))?;
    let (llama, _) = match setup.config(budget) {
        None => offload::dense(&store, &device)?,
        Some(config) => offload::attach(&store, &device, config)?,
    };
    let prompt = source.tokens(&store, PROMPT, true, SYNTHETIC_PROMPT_TOKENS, 0)?;
    let options = GenerateOptions { max_tokens, sampler: Sampler::greedy(), stop_ids: vec![] };

    let meter = Arc::new(Meter::new(&device));
    generate_with(&llama, &prompt, &options, |_| {}, |f| store.forward(f))?;
    store.reset_stats();
    store.drop_prefetch();
    store.set_meter(Some(Arc::clone(&meter)));
    meter.reset_peaks();

    let mut forward_peak = 0u64;
    let generation = generate_with(
        &llama,
        &prompt,
        &options,
        |_| {},
        |f| {
            store.forward(|| {
                let logits = f();
                forward_peak = forward_peak.max(meter.sample().map_or(0, |m| m.in_use));
                logits
            })
        },
    )?;
    store.drop_prefetch();
    let peak = meter.peaks();
    let idle = meter.sample().map_or(0, |m| m.in_use);
    let source = match meter.source() {
        MeterSource::DeviceAllocator => "allocator",
        MeterSource::ProcessResidentSet => "rss",
    };
    let mut stats = store.stats();
    let wall = generation.prefill_secs + generation.decode_secs;
    let (scheme, policy, residency, prefetch, fused) = match setup {
        Setup::Dense => ("dense".to_string(), "-".to_string(), "-".to_string(), false, false),
        Setup::Offload { scheme, policy, residency, prefetch, fused } => {
            (scheme.to_string(), policy.name().to_string(), residency.name().to_string(), *prefetch, *fused)
        }
    };
    Ok(Row {
        name: setup.name(),
        scheme,
        policy,
        residency,
        prefetch,
        fused,
        prompt_tokens: generation.prompt_tokens,
        new_tokens: generation.tokens.len(),
        prefill_tok_s: generation.prompt_tokens as f64 / generation.prefill_secs.max(f64::MIN_POSITIVE),
        decode_tok_s: generation.decode_tokens_per_sec(),
        ttft_ms: generation.prefill_secs * 1e3,
        memory_source: source.to_string(),
        device_peak_bytes: peak.in_use,
        reserved_peak_bytes: peak.reserved,
        forward_peak_bytes: forward_peak,
        device_idle_bytes: idle,
        host_bytes: stats.compressed_resident_host_bytes,
        compressed_device_bytes: stats.compressed_resident_device_bytes,
        compressed_bytes: stats.weights_compressed_bytes,
        weight_bytes: stats.weights_decoded_bytes + stats.dense_weight_bytes,
        two_largest_decoded_bytes: {
            let mut sizes: Vec<u64> = stats.weights.iter().map(|w| w.decoded_bytes).collect();
            sizes.sort_unstable_by(|a, b| b.cmp(a));
            sizes.iter().take(2).sum()
        },
        decode_count: stats.decode_count,
        decode_gbps: if stats.decode_seconds > 0.0 {
            stats.bytes_decoded as f64 / stats.decode_seconds / 1e9
        } else {
            0.0
        },
        decode_secs: stats.decode_seconds,
        decode_share: if wall > 0.0 { stats.decode_seconds / wall } else { 0.0 },
        tokens: generation.tokens.clone(),
        stats: {
            stats.weights.clear(); // per-weight counters: too long for a comparison
            serde_json::to_value(&stats)?
        },
        ..Row::default()
    })
}
