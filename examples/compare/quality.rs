//! Perplexity of each coding scheme on a fixed public-domain text. Policies do not change
//! values, so one configuration per scheme is enough: dense, then `full` (decode once) for
//! lossless, int8 and int4. Lossless must give the dense logits bit for bit.

use anyhow::{ensure, Context, Result};
use burn::tensor::{Device, Int, Tensor, TensorData};
use ember::policy::Full;
use ember::{Config, Store};
use ember_llama::{offload, KvCache, Llama};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

use crate::common::ModelSource;

/// The scored text: everything after its first line (a comment naming the source).
pub const TEXT: &str = include_str!("../../benches/data/public-domain.txt");

/// One scheme's perplexity.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Quality {
    pub scheme: String,
    pub perplexity: f64,
    /// Mean negative log-likelihood per token (nats).
    pub nll: f64,
    pub scored_tokens: usize,
    /// Largest |logit − dense logit| over every scored position.
    pub max_abs_logit_diff_vs_dense: f32,
    /// Whether every logit equals the dense one bit for bit.
    pub bit_exact_vs_dense: bool,
}

/// What the quality pass found, and the dense weight size (the adaptive budget's base).
pub struct QualityReport {
    pub rows: Vec<Quality>,
    pub dense_weight_bytes: u64,
    pub text_tokens: usize,
    pub chunk: usize,
}

fn scored_text() -> &'static str {
    TEXT.split_once('\n').map_or(TEXT, |(_, rest)| rest)
}

/// Logits of every chunk of `tokens` (each chunk from an empty KV cache), flattened.
fn chunk_logits(model: &Llama, store: &Store, tokens: &[u32], chunk: usize, device: &Device) -> Result<Vec<Vec<f32>>> {
    let mut out = Vec::new();
    for piece in tokens.chunks(chunk).filter(|c| c.len() > 1) {
        let ids: Vec<i32> = piece.iter().map(|&t| t as i32).collect();
        let input = Tensor::<2, Int>::from_data(TensorData::new(ids, [1, piece.len()]), device);
        let mut cache = KvCache::new(model.config());
        let logits = store.forward(|| model.forward(input, &mut cache));
        let data = logits.into_data().try_to_vec::<f32>().map_err(|e| anyhow::anyhow!("reading logits: {e:?}"))?;
        out.push(data);
    }
    Ok(out)
}

/// Mean NLL of predicting token `i + 1` from position `i` inside each chunk.
fn mean_nll(logits: &[Vec<f32>], tokens: &[u32], chunk: usize, vocab: usize) -> (f64, usize) {
    let mut total = 0.0f64;
    let mut n = 0usize;
    for (c, piece) in tokens.chunks(chunk).filter(|c| c.len() > 1).enumerate() {
        for (i, &next) in piece.iter().enumerate().skip(1) {
            let row = &logits[c][(i - 1) * vocab..i * vocab];
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
            let sum: f64 = row.iter().map(|&l| (l as f64 - max).exp()).sum();
            total += max + sum.ln() - row[next as usize] as f64;
            n += 1;
        }
    }
    (total / n.max(1) as f64, n)
}

/// Scores dense, lossless, int8 and int4 on [`TEXT`] (a synthetic model: `synthetic_tokens`
/// seeded ids) in chunks of `chunk` tokens.
pub fn run(
    source: &ModelSource,
    device: &Device,
    chunk: usize,
    synthetic_tokens: usize,
    bar: &ProgressBar,
) -> Result<QualityReport> {
    let schemes = ["dense", "lossless", "int8", "int4"];
    bar.set_style(ProgressStyle::with_template("{prefix:>10} [{bar:30}] {pos}/{len} {msg}")?.progress_chars("=> "));
    bar.set_prefix("quality");
    bar.set_length(schemes.len() as u64);
    let mut rows = Vec::new();
    let mut dense_logits: Option<Vec<Vec<f32>>> = None;
    let mut dense_weight_bytes = 0;
    let mut text_tokens = 0;
    for scheme in schemes {
        bar.set_message(scheme);
        let container = source.container(if scheme == "dense" { "lossless" } else { scheme })?;
        let store = Store::open(&container).with_context(|| format!("opening {}", container.display()))?;
        let (llama, config) = if scheme == "dense" {
            offload::dense(&store, device)?
        } else {
            offload::attach(&store, device, Config::new(Full))?
        };
        let tokens = source.tokens(&store, scored_text(), false, synthetic_tokens, 1)?;
        text_tokens = tokens.len();
        let logits = chunk_logits(&llama, &store, &tokens, chunk, device)?;
        let (nll, scored) = mean_nll(&logits, &tokens, chunk, config.vocab_size);
        let (max_diff, exact) = match &dense_logits {
            None => (0.0, true),
            Some(d) => {
                let mut pairs = d.iter().flatten().zip(logits.iter().flatten());
                let max = pairs.clone().map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
                (max, pairs.all(|(a, b)| a.to_bits() == b.to_bits()))
            }
        };
        rows.push(Quality {
            scheme: scheme.into(),
            perplexity: nll.exp(),
            nll,
            scored_tokens: scored,
            max_abs_logit_diff_vs_dense: max_diff,
            bit_exact_vs_dense: exact,
        });
        if scheme == "dense" {
            dense_weight_bytes = store.stats().dense_weight_bytes;
            dense_logits = Some(logits);
        }
        bar.inc(1);
    }
    bar.finish_with_message("done");
    ensure!(dense_weight_bytes > 0, "the dense model reported no weight bytes");
    Ok(QualityReport { rows, dense_weight_bytes, text_tokens, chunk })
}
