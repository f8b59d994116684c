//! Llama-shaped models with realistic weight statistics, generated from a seed where they run.
//!
//! Benchmarks on large shapes (Llama-3-8B: 16 GB of BF16) cannot carry their weights to a lent
//! GPU machine, and no model hub is reachable; so the weights are made on that machine instead.
//! Matrices follow what trained Llama projections look like to a codec: Gaussian values with a
//! per-row spread (std 0.012–0.028) and 0.1% of 8× outliers, which gives BF16 exponents the same
//! entropy as real checkpoints (lossless ≈ 66% of BF16, as DFloat11 reports ≈ 70%). Norm weights
//! sit around 1. Every tensor is seeded by its name, so each one is reproducible on its own.
//!
//! A synthetic container has the config (`ember.llama.config`) and no tokenizer: prompts and
//! scored text are token ids drawn from the seed.
//!
//! ```no_run
//! use ember::codec::SchemeKind;
//! use ember_llama::synthetic::{write_container, Preset};
//!
//! let preset = Preset::parse("tinyllama")?;
//! write_container(preset, 7, SchemeKind::Lossless, "tinyllama.lossless.ember".as_ref(), |_, _| {})?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::path::Path;

use ember::codec::synthetic::SplitMix;
use ember::codec::{encode_tensor, ContainerWriter, Dtype, EncodeOptions, SchemeKind};
use rayon::prelude::*;

use crate::config::{ConfigError, LlamaConfig};

/// Rows generated from one seed: large enough to amortise the seeding, small enough to spread
/// a matrix over every core.
const ROWS_PER_CHUNK: usize = 64;

/// The shapes `--synthetic` offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Preset {
    /// Meta Llama-3-8B: 32 layers, width 4096, GQA 32/8, vocabulary 128256 (8.0 B parameters).
    Llama3_8b,
    /// Meta Llama-3.2-1B: 16 layers, width 2048, GQA 32/8, tied head (1.24 B parameters).
    Llama3_2_1b,
    /// TinyLlama-1.1B: 22 layers, width 2048, GQA 32/4, vocabulary 32000 (1.1 B parameters).
    TinyLlama,
    /// SmolLM2-135M's shapes: 30 layers, width 576, GQA 9/3 (0.13 B parameters).
    Smollm2_135m,
    /// A 2-layer, width-128 Llama (0.2 M parameters): rehearsals of the GPU script and tests,
    /// where only the plumbing is measured.
    Tiny,
}

impl Preset {
    /// Every preset.
    pub const ALL: [Preset; 5] =
        [Preset::Llama3_8b, Preset::Llama3_2_1b, Preset::TinyLlama, Preset::Smollm2_135m, Preset::Tiny];

    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Preset::Llama3_8b => "llama3-8b",
            Preset::Llama3_2_1b => "llama3.2-1b",
            Preset::TinyLlama => "tinyllama",
            Preset::Smollm2_135m => "smollm2-135m",
            Preset::Tiny => "tiny",
        }
    }

    /// The preset called `name`.
    pub fn parse(name: &str) -> Result<Self, SyntheticError> {
        Self::ALL.into_iter().find(|p| p.name() == name).ok_or_else(|| SyntheticError::UnknownPreset(name.to_string()))
    }

    /// The Hugging Face `config.json` of the architecture (what the container stores).
    pub fn hf_config_json(self) -> serde_json::Value {
        let llama3_scaling = serde_json::json!({
            "rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192
        });
        let (hidden, inter, layers, heads, kv, vocab, theta, tied, scaling, eps) = match self {
            Preset::Llama3_8b => (4096, 14336, 32, 32, 8, 128256, 500000.0, false, None, 1e-5),
            Preset::Llama3_2_1b => (2048, 8192, 16, 32, 8, 128256, 500000.0, true, Some(llama3_scaling), 1e-5),
            Preset::TinyLlama => (2048, 5632, 22, 32, 4, 32000, 10000.0, false, None, 1e-5),
            Preset::Smollm2_135m => (576, 1536, 30, 9, 3, 49152, 100000.0, true, None, 1e-5),
            Preset::Tiny => (128, 256, 2, 4, 2, 512, 10000.0, true, None, 1e-5),
        };
        serde_json::json!({
            "model_type": "llama",
            "hidden_size": hidden,
            "intermediate_size": inter,
            "num_hidden_layers": layers,
            "num_attention_heads": heads,
            "num_key_value_heads": kv,
            "vocab_size": vocab,
            "rope_theta": theta,
            "rms_norm_eps": eps,
            "tie_word_embeddings": tied,
            "rope_scaling": scaling,
            "max_position_embeddings": 8192,
            "bos_token_id": 1,
            "eos_token_id": 2,
        })
    }

    /// The parsed config.
    pub fn config(self) -> Result<LlamaConfig, ConfigError> {
        LlamaConfig::from_hf_json(&self.hf_config_json().to_string())
    }
}

/// What can go wrong making a synthetic model.
#[derive(Debug, thiserror::Error)]
pub enum SyntheticError {
    /// A preset name that does not exist.
    #[error("unknown synthetic model `{0}` (expected llama3-8b, llama3.2-1b, tinyllama, smollm2-135m or tiny)")]
    UnknownPreset(String),
    /// The preset's config does not parse (a bug, reported rather than hidden).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Encoding or writing the container failed.
    #[error(transparent)]
    Codec(#[from] ember::codec::CodecError),
}

/// One tensor of the model, in Hugging Face naming and layout (`[out, in]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorSpec {
    /// Hugging Face name.
    pub name: String,
    /// Shape as Hugging Face stores it.
    pub shape: Vec<usize>,
}

impl TensorSpec {
    fn new(name: impl Into<String>, shape: &[usize]) -> Self {
        Self { name: name.into(), shape: shape.to_vec() }
    }

    /// Element count.
    pub fn elements(&self) -> usize {
        self.shape.iter().product()
    }

    /// Whether it is a norm weight (a vector around 1) rather than a matrix.
    pub fn is_norm(&self) -> bool {
        self.name.ends_with("layernorm.weight") || self.name == "model.norm.weight"
    }
}

/// Every tensor of a Llama with `config`, in checkpoint order.
pub fn tensors(config: &LlamaConfig) -> Vec<TensorSpec> {
    let (h, i, v) = (config.hidden_size, config.intermediate_size, config.vocab_size);
    let kv = config.num_key_value_heads * config.head_dim();
    let mut out = vec![TensorSpec::new("model.embed_tokens.weight", &[v, h])];
    for l in 0..config.num_hidden_layers {
        let p = format!("model.layers.{l}");
        out.push(TensorSpec::new(format!("{p}.input_layernorm.weight"), &[h]));
        out.push(TensorSpec::new(format!("{p}.self_attn.q_proj.weight"), &[h, h]));
        out.push(TensorSpec::new(format!("{p}.self_attn.k_proj.weight"), &[kv, h]));
        out.push(TensorSpec::new(format!("{p}.self_attn.v_proj.weight"), &[kv, h]));
        out.push(TensorSpec::new(format!("{p}.self_attn.o_proj.weight"), &[h, h]));
        out.push(TensorSpec::new(format!("{p}.post_attention_layernorm.weight"), &[h]));
        out.push(TensorSpec::new(format!("{p}.mlp.gate_proj.weight"), &[i, h]));
        out.push(TensorSpec::new(format!("{p}.mlp.up_proj.weight"), &[i, h]));
        out.push(TensorSpec::new(format!("{p}.mlp.down_proj.weight"), &[h, i]));
    }
    out.push(TensorSpec::new("model.norm.weight", &[h]));
    if !config.tie_word_embeddings {
        out.push(TensorSpec::new("lm_head.weight", &[v, h]));
    }
    out
}

/// FNV-1a of a name, mixed with the model seed: every tensor has its own stream.
fn tensor_seed(seed: u64, name: &str) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    for b in name.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// A tensor's values as little-endian BF16 bytes, generated in parallel row chunks.
pub fn tensor_bf16(spec: &TensorSpec, seed: u64) -> Vec<u8> {
    let seed = tensor_seed(seed, &spec.name);
    let cols = *spec.shape.last().unwrap_or(&1);
    let norm = spec.is_norm();
    let mut out = vec![0u8; 2 * spec.elements()];
    out.par_chunks_mut(2 * cols * ROWS_PER_CHUNK).enumerate().for_each(|(chunk, bytes)| {
        let mut rng = SplitMix(seed ^ (chunk as u64).wrapping_mul(0xD1B5_4A32_D192_ED03));
        for row in bytes.chunks_mut(2 * cols) {
            let row_std = 0.02 * (0.6 + 0.8 * rng.uniform());
            for v in row.chunks_exact_mut(2) {
                let x = if norm {
                    // RMSNorm gains: around 1, a few well away from it.
                    1.0 + 0.1 * rng.normal()
                } else {
                    let x = rng.normal() * row_std;
                    if rng.uniform() < 0.001 {
                        8.0 * x
                    } else {
                        x
                    }
                };
                v.copy_from_slice(&half::bf16::from_f64(x).to_bits().to_le_bytes());
            }
        }
    });
    out
}

/// Seeded token ids below `vocab` (prompts and scored text of a synthetic model).
pub fn token_ids(vocab: usize, count: usize, seed: u64) -> Vec<u32> {
    let mut rng = SplitMix(tensor_seed(seed, "tokens"));
    (0..count).map(|_| (rng.next_u64() % vocab.max(1) as u64) as u32).collect()
}

/// Writes the `preset` model generated from `seed`, coded with `scheme`, to `path` (atomically:
/// the file appears only when complete). `progress(done, total)` counts parameters.
pub fn write_container(
    preset: Preset,
    seed: u64,
    scheme: SchemeKind,
    path: &Path,
    progress: impl FnMut(u64, u64),
) -> Result<u64, SyntheticError> {
    write_config_container(&preset.hf_config_json(), preset.name(), seed, scheme, path, progress)
}

/// [`write_container`] for any architecture given as a Hugging Face `config.json` value (tests
/// use tiny ones); `label` names it in the container's `source`.
pub fn write_config_container(
    hf_config: &serde_json::Value,
    label: &str,
    seed: u64,
    scheme: SchemeKind,
    path: &Path,
    mut progress: impl FnMut(u64, u64),
) -> Result<u64, SyntheticError> {
    let json = hf_config.to_string();
    let config = LlamaConfig::from_hf_json(&json)?;
    let specs = tensors(&config);
    let total: u64 = specs.iter().map(|s| s.elements() as u64).sum();
    let mut writer = ContainerWriter::create(path)?;
    writer.set_metadata("producer", format!("ember-llama {} synthetic", env!("CARGO_PKG_VERSION")));
    writer.set_metadata("source", format!("synthetic:{label}:seed={seed}"));
    writer.set_metadata("ember.source", "synthetic");
    writer.set_metadata("ember.llama.config", json);
    let options = EncodeOptions::default();
    let mut done = 0u64;
    progress(0, total);
    for spec in &specs {
        let data = tensor_bf16(spec, seed);
        let shape: Vec<u64> = spec.shape.iter().map(|&d| d as u64).collect();
        // Norm vectors stay lossless under the quantised schemes, as `ember compress` keeps them.
        let kind = if spec.is_norm() && scheme != SchemeKind::Raw { SchemeKind::Lossless } else { scheme };
        writer.add(encode_tensor(&spec.name, Dtype::BF16, &shape, &data, kind, &options)?)?;
        done += spec.elements() as u64;
        progress(done, total);
    }
    Ok(writer.finish()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_parse_and_have_the_published_parameter_counts() {
        let billions = |p: Preset| {
            let c = p.config().unwrap();
            tensors(&c).iter().map(|s| s.elements() as f64).sum::<f64>() / 1e9
        };
        // Published sizes: 8.03 B, 1.24 B, 1.10 B, 0.135 B.
        for (p, want) in [
            (Preset::Llama3_8b, 8.03),
            (Preset::Llama3_2_1b, 1.24),
            (Preset::TinyLlama, 1.10),
            (Preset::Smollm2_135m, 0.135),
        ] {
            let got = billions(p);
            assert!((got - want).abs() / want < 0.01, "{}: {got:.3} B parameters, published {want}", p.name());
            assert_eq!(Preset::parse(p.name()).unwrap(), p);
        }
        assert!(matches!(Preset::parse("gpt-5"), Err(SyntheticError::UnknownPreset(_))));
    }

    #[test]
    fn weights_are_reproducible_and_look_like_llama_weights() {
        let spec = TensorSpec::new("model.layers.0.mlp.up_proj.weight", &[300, 256]);
        let a = tensor_bf16(&spec, 7);
        assert_eq!(a, tensor_bf16(&spec, 7), "same seed, same bytes");
        assert_ne!(a, tensor_bf16(&spec, 8), "another seed, other bytes");
        let values: Vec<f64> =
            a.chunks_exact(2).map(|b| half::bf16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f64()).collect();
        let mean = values.iter().sum::<f64>() / values.len() as f64;
        let std = (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / values.len() as f64).sqrt();
        assert!(mean.abs() < 1e-3, "mean {mean}");
        assert!((0.015..0.025).contains(&std), "std {std}");
        let norm = tensor_bf16(&TensorSpec::new("model.norm.weight", &[512]), 7);
        let gains: Vec<f64> =
            norm.chunks_exact(2).map(|b| half::bf16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f64()).collect();
        let mean = gains.iter().sum::<f64>() / gains.len() as f64;
        assert!((mean - 1.0).abs() < 0.05, "norm gains average {mean}");
    }

    #[test]
    fn token_ids_stay_below_the_vocabulary() {
        let ids = token_ids(1000, 500, 3);
        assert!(ids.iter().all(|&t| t < 1000));
        assert_eq!(ids, token_ids(1000, 500, 3));
    }
}
