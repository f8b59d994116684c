//! The model's shape, read from a Hugging Face `config.json`.
//!
//! Only the fields a Llama-family decoder needs are read; unknown fields are ignored so that
//! configs of Llama 2/3/3.1, SmolLM, Qwen2, Qwen3 and Gemma 3 (text) all parse. What sets the
//! families apart is spelled out as features of the one decoder (per-head q/k norms, `(1 + w)`
//! norms, sandwich norms, GELU, sliding-window layers, an embedding scale), each set from the
//! checkpoint's `model_type` and fields, so the model code never asks which family it runs. Fields that change the arithmetic
//! (`rope_theta`, `rms_norm_eps`, `rope_scaling`, biases) are explicit here rather than
//! defaulted silently inside the model, so a reader sees which numbers a checkpoint brings.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Why a config could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Io {
        /// The config file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The text is not JSON, or a field is missing or has the wrong type.
    #[error("invalid config.json{}: {source}", path_suffix(.path))]
    Json {
        /// The config file, when read from one.
        path: Option<PathBuf>,
        /// serde's message names the field and the line.
        source: serde_json::Error,
    },
    /// The fields parse but describe no valid model (e.g. heads do not divide the hidden size).
    #[error("invalid config.json{}: {message}", path_suffix(.path))]
    Invalid {
        /// The config file, when read from one.
        path: Option<PathBuf>,
        /// What is wrong.
        message: String,
    },
}

fn path_suffix(path: &Option<PathBuf>) -> String {
    path.as_ref().map(|p| format!(" ({})", p.display())).unwrap_or_default()
}

/// Llama 3.1 RoPE frequency scaling (`rope_scaling` with `rope_type: "llama3"`).
///
/// Long wavelengths (low frequencies) are divided by `factor`, short ones are kept, and the band
/// between is interpolated smoothly; this stretches the context without retraining the high
/// frequencies that encode local order.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
pub struct Llama3RopeScaling {
    /// How much the context is stretched (8.0 for Llama 3.1).
    pub factor: f32,
    /// Wavelengths longer than `original_max_position_embeddings / low_freq_factor` are scaled fully.
    pub low_freq_factor: f32,
    /// Wavelengths shorter than `original_max_position_embeddings / high_freq_factor` are not scaled.
    pub high_freq_factor: f32,
    /// The context length the model was pre-trained with (8192 for Llama 3.1).
    pub original_max_position_embeddings: usize,
}

/// The MLP's gate activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// SiLU (`x·σ(x)`): SwiGLU, as in Llama and Qwen.
    Silu,
    /// GELU with the tanh approximation (`gelu_pytorch_tanh`): GeGLU, as in Gemma.
    GeluTanh,
}

/// What a decoder layer attends to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerType {
    /// Every earlier position (HF `full_attention`), with the global RoPE base and scaling.
    Global,
    /// The last `sliding_window` positions, itself included (HF `sliding_attention`), with the
    /// local RoPE base and no scaling.
    Local,
}

/// The decoder's hyper-parameters.
///
/// Build it with [`LlamaConfig::from_hf_json`] / [`LlamaConfig::from_hf_file`], or by hand for tests.
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaConfig {
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Number of decoder blocks.
    pub num_hidden_layers: usize,
    /// Query heads per block.
    pub num_attention_heads: usize,
    /// Key/value heads per block (grouped-query attention); equals `num_attention_heads` for MHA.
    pub num_key_value_heads: usize,
    /// Width of the SwiGLU hidden layer.
    pub intermediate_size: usize,
    /// Rows of the token embedding (and of the output projection).
    pub vocab_size: usize,
    /// RoPE base.
    pub rope_theta: f32,
    /// Epsilon inside every RMSNorm.
    pub rms_norm_eps: f64,
    /// Longest context the checkpoint claims; informative only, the KV cache grows as needed.
    pub max_position_embeddings: usize,
    /// Logits reuse the token embedding (`logits = x · embeddingᵀ`); there is no `lm_head`.
    pub tie_word_embeddings: bool,
    /// Llama 3.1 frequency scaling, when the checkpoint uses it.
    pub rope_scaling: Option<Llama3RopeScaling>,
    /// Biases on the q/k/v projections (Qwen2 has them, Llama does not).
    pub attention_bias: bool,
    /// Beginning-of-sequence token, if the checkpoint names one.
    pub bos_token_id: Option<u32>,
    /// End-of-sequence tokens (Llama 3 lists several).
    pub eos_token_ids: Vec<u32>,
    /// Width of one attention head where the checkpoint sets it apart from `hidden / heads`
    /// (Qwen3, Gemma 3); see [`LlamaConfig::head_dim`].
    pub explicit_head_dim: Option<usize>,
    /// RMSNorm over each query and key head before RoPE (Qwen3, Gemma 3: `q_norm`, `k_norm`).
    pub qk_norm: bool,
    /// The MLP's gate activation.
    pub activation: Activation,
    /// Added to every norm weight before it multiplies: 0, or 1 for Gemma's `x̂ · (1 + w)`.
    pub norm_weight_offset: f32,
    /// Norms after attention and after the MLP too, before each residual add (Gemma's
    /// `post_attention_layernorm` / `pre_feedforward_layernorm` / `post_feedforward_layernorm`).
    pub sandwich_norms: bool,
    /// The token embedding is multiplied by this (Gemma: `√hidden_size`).
    pub embedding_scale: Option<f32>,
    /// Attention scores are scaled by `1/√query_pre_attn_scalar` (Gemma) instead of `1/√head_dim`.
    pub query_pre_attn_scalar: Option<f32>,
    /// Keys a [`LayerType::Local`] layer sees, itself included.
    pub sliding_window: Option<usize>,
    /// Per layer, global or local attention; empty means every layer is global.
    pub layer_types: Vec<LayerType>,
    /// RoPE base of local layers (Gemma 3: `rope_local_base_freq`).
    pub rope_local_theta: f32,
    /// Linear RoPE scaling of global layers (`rope_scaling.rope_type: "linear"`): positions are
    /// divided by this factor.
    pub rope_linear_factor: Option<f32>,
}

/// The raw JSON, before validation.
#[derive(Deserialize)]
struct HfConfig {
    model_type: Option<String>,
    hidden_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    intermediate_size: usize,
    vocab_size: usize,
    #[serde(default)]
    rope_theta: Option<f32>,
    #[serde(default = "default_rms_norm_eps")]
    rms_norm_eps: f64,
    #[serde(default = "default_max_positions")]
    max_position_embeddings: usize,
    #[serde(default)]
    tie_word_embeddings: bool,
    #[serde(default)]
    rope_scaling: Option<serde_json::Value>,
    attention_bias: Option<bool>,
    #[serde(default)]
    head_dim: Option<usize>,
    #[serde(default)]
    hidden_act: Option<String>,
    #[serde(default)]
    hidden_activation: Option<String>,
    #[serde(default)]
    query_pre_attn_scalar: Option<f32>,
    #[serde(default)]
    sliding_window: Option<usize>,
    #[serde(default)]
    sliding_window_pattern: Option<usize>,
    #[serde(default)]
    use_sliding_window: Option<bool>,
    #[serde(default)]
    layer_types: Option<Vec<String>>,
    #[serde(default)]
    rope_local_base_freq: Option<f32>,
    /// transformers ≥ 5 writes the RoPE bases here (per layer type for Gemma 3).
    #[serde(default)]
    rope_parameters: Option<serde_json::Value>,
    #[serde(default)]
    final_logit_softcapping: Option<f64>,
    #[serde(default)]
    attn_logit_softcapping: Option<f64>,
    #[serde(default)]
    bos_token_id: Option<u32>,
    #[serde(default)]
    eos_token_id: Option<EosIds>,
}

/// `eos_token_id` is a number in most configs and a list in Llama 3's.
#[derive(Deserialize)]
#[serde(untagged)]
enum EosIds {
    One(u32),
    Many(Vec<u32>),
}

fn default_rms_norm_eps() -> f64 {
    1e-6
}
fn default_max_positions() -> usize {
    2048
}

impl LlamaConfig {
    /// Parses the text of a Hugging Face `config.json`.
    ///
    /// Defaults follow `transformers`' `LlamaConfig`: `num_key_value_heads` = heads,
    /// `rope_theta` = 10000, `rms_norm_eps` = 1e-6; `model_type: "qwen2"` implies q/k/v biases.
    pub fn from_hf_json(json: &str) -> Result<Self, ConfigError> {
        Self::parse(json, None)
    }

    /// Reads and parses a `config.json` file.
    pub fn from_hf_file(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io { path: path.into(), source })?;
        Self::parse(&text, Some(path.into()))
    }

    fn parse(json: &str, path: Option<PathBuf>) -> Result<Self, ConfigError> {
        let raw: HfConfig =
            serde_json::from_str(json).map_err(|source| ConfigError::Json { path: path.clone(), source })?;
        let invalid = |message: String| ConfigError::Invalid { path: path.clone(), message };
        let model_type = raw.model_type.as_deref().unwrap_or("llama");
        let gemma3 = match model_type {
            "gemma3_text" => true,
            "gemma3" => {
                return Err(invalid(
                    "model_type \"gemma3\" is the multimodal checkpoint; use its text model (\"gemma3_text\")".into(),
                ))
            }
            t if t.starts_with("gemma") => {
                return Err(invalid(format!("model_type {t:?} is not supported (Gemma 3 is, as \"gemma3_text\")")))
            }
            _ => false,
        };
        for (name, cap) in [
            ("final_logit_softcapping", raw.final_logit_softcapping),
            ("attn_logit_softcapping", raw.attn_logit_softcapping),
        ] {
            if let Some(cap) = cap {
                return Err(invalid(format!("{name} {cap} is not supported")));
            }
        }

        let mut rope_linear_factor = None;
        let rope_scaling = match raw.rope_scaling {
            None | Some(serde_json::Value::Null) => None,
            Some(value) => {
                let kind = value.get("rope_type").or_else(|| value.get("type")).and_then(|v| v.as_str());
                match kind {
                    Some("llama3") => Some(
                        serde_json::from_value::<Llama3RopeScaling>(value)
                            .map_err(|e| invalid(format!("rope_scaling: {e}")))?,
                    ),
                    Some("linear") => {
                        let factor = value.get("factor").and_then(|f| f.as_f64()).filter(|f| *f > 0.0);
                        rope_linear_factor =
                            Some(factor.ok_or_else(|| {
                                invalid("rope_scaling: linear scaling needs a positive `factor`".into())
                            })? as f32);
                        None
                    }
                    // "default" is the unscaled rotation that some exporters write out explicitly.
                    Some("default") => None,
                    other => {
                        return Err(invalid(format!(
                            "rope_scaling type {other:?} is not supported (only \"llama3\" and \"linear\")"
                        )))
                    }
                }
            }
        };
        let activation = match raw.hidden_activation.as_deref().or(raw.hidden_act.as_deref()) {
            None if gemma3 => Activation::GeluTanh,
            None | Some("silu") => Activation::Silu,
            Some("gelu_pytorch_tanh" | "gelu_tanh") => Activation::GeluTanh,
            Some(act) => {
                return Err(invalid(format!(
                    "hidden activation {act:?} is not supported (\"silu\" or \"gelu_pytorch_tanh\")"
                )))
            }
        };
        if raw.use_sliding_window == Some(true) {
            return Err(invalid("use_sliding_window (Qwen2-style windowed layers) is not supported".into()));
        }

        // The RoPE bases: top-level keys, else transformers 5's `rope_parameters` (per layer type
        // for Gemma 3).
        let rope_param = |layer_type: Option<&str>| -> Option<f32> {
            let p = raw.rope_parameters.as_ref()?;
            let p = match layer_type {
                Some(t) => p.get(t).unwrap_or(p),
                None => p,
            };
            p.get("rope_theta").and_then(|v| v.as_f64()).map(|v| v as f32)
        };
        let rope_theta = raw
            .rope_theta
            .or_else(|| rope_param(gemma3.then_some("full_attention")))
            .unwrap_or(if gemma3 { 1_000_000.0 } else { 10_000.0 });
        let rope_local_theta =
            raw.rope_local_base_freq.or_else(|| rope_param(Some("sliding_attention"))).unwrap_or(10_000.0);

        let layer_types = match (&raw.layer_types, gemma3) {
            (Some(types), _) => types
                .iter()
                .map(|t| match t.as_str() {
                    "full_attention" => Ok(LayerType::Global),
                    "sliding_attention" => Ok(LayerType::Local),
                    other => Err(invalid(format!("layer type {other:?} is not supported"))),
                })
                .collect::<Result<Vec<_>, _>>()?,
            // Gemma 3 before `layer_types`: every `sliding_window_pattern`-th layer is global.
            (None, true) => {
                let pattern = raw.sliding_window_pattern.unwrap_or(6).max(1);
                (0..raw.num_hidden_layers)
                    .map(|i| if (i + 1) % pattern == 0 { LayerType::Global } else { LayerType::Local })
                    .collect()
            }
            (None, false) => Vec::new(),
        };
        // Qwen2/3 configs carry a `sliding_window` they do not use; it only matters where a layer
        // is local.
        let sliding_window =
            if layer_types.contains(&LayerType::Local) { Some(raw.sliding_window.unwrap_or(4096)) } else { None };

        let attention_bias = raw.attention_bias.unwrap_or(model_type == "qwen2");
        let eos_token_ids = match raw.eos_token_id {
            None => Vec::new(),
            Some(EosIds::One(id)) => vec![id],
            Some(EosIds::Many(ids)) => ids,
        };
        // A `head_dim` equal to hidden/heads says nothing new.
        let explicit_head_dim =
            raw.head_dim.filter(|&hd| raw.num_attention_heads == 0 || hd * raw.num_attention_heads != raw.hidden_size);
        let config = LlamaConfig {
            hidden_size: raw.hidden_size,
            num_hidden_layers: raw.num_hidden_layers,
            num_attention_heads: raw.num_attention_heads,
            num_key_value_heads: raw.num_key_value_heads.unwrap_or(raw.num_attention_heads),
            intermediate_size: raw.intermediate_size,
            vocab_size: raw.vocab_size,
            rope_theta,
            rms_norm_eps: raw.rms_norm_eps,
            max_position_embeddings: raw.max_position_embeddings,
            tie_word_embeddings: raw.tie_word_embeddings,
            rope_scaling,
            attention_bias,
            bos_token_id: raw.bos_token_id,
            eos_token_ids,
            explicit_head_dim,
            qk_norm: gemma3 || model_type == "qwen3",
            activation,
            norm_weight_offset: if gemma3 { 1.0 } else { 0.0 },
            sandwich_norms: gemma3,
            embedding_scale: gemma3.then(|| (raw.hidden_size as f32).sqrt()),
            query_pre_attn_scalar: if gemma3 { raw.query_pre_attn_scalar } else { None },
            sliding_window,
            layer_types,
            rope_local_theta,
            rope_linear_factor,
        };
        config.validate().map_err(invalid)?;
        Ok(config)
    }

    /// Checks the relations the model relies on, so that `Llama::init` cannot panic on a bad file.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("hidden_size", self.hidden_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.num_key_value_heads),
            ("intermediate_size", self.intermediate_size),
            ("vocab_size", self.vocab_size),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(format!("{name} must be positive"));
            }
        }
        if self.explicit_head_dim.is_none() && !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if !self.num_attention_heads.is_multiple_of(self.num_key_value_heads) {
            return Err(format!(
                "num_attention_heads {} is not a multiple of num_key_value_heads {}",
                self.num_attention_heads, self.num_key_value_heads
            ));
        }
        if self.explicit_head_dim == Some(0) {
            return Err("head_dim must be positive".into());
        }
        if !self.layer_types.is_empty() && self.layer_types.len() != self.num_hidden_layers {
            return Err(format!(
                "layer_types lists {} layers, num_hidden_layers is {}",
                self.layer_types.len(),
                self.num_hidden_layers
            ));
        }
        if self.layer_types.contains(&LayerType::Local) && self.sliding_window.is_none_or(|w| w == 0) {
            return Err("sliding-window layers need a positive sliding_window".into());
        }
        for (name, v) in [
            ("rope_local_base_freq", Some(self.rope_local_theta)),
            ("rope_scaling.factor", self.rope_linear_factor),
            ("query_pre_attn_scalar", self.query_pre_attn_scalar),
            ("embedding scale", self.embedding_scale),
        ] {
            if let Some(v) = v.filter(|v| !(v.is_finite() && *v > 0.0)) {
                return Err(format!("{name} {v} must be positive"));
            }
        }
        if !self.norm_weight_offset.is_finite() {
            return Err(format!("norm weight offset {} must be finite", self.norm_weight_offset));
        }
        if !self.head_dim().is_multiple_of(2) {
            return Err(format!("head dimension {} must be even for RoPE", self.head_dim()));
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 0.0) {
            return Err(format!("rope_theta {} must be positive", self.rope_theta));
        }
        if !(self.rms_norm_eps.is_finite() && self.rms_norm_eps > 0.0) {
            return Err(format!("rms_norm_eps {} must be positive", self.rms_norm_eps));
        }
        if let Some(s) = &self.rope_scaling {
            if !(s.factor > 0.0 && s.low_freq_factor > 0.0 && s.high_freq_factor > s.low_freq_factor) {
                return Err(format!(
                    "rope_scaling needs factor > 0 and high_freq_factor > low_freq_factor > 0, got {s:?}"
                ));
            }
            if s.original_max_position_embeddings == 0 {
                return Err("rope_scaling.original_max_position_embeddings must be positive".into());
            }
        }
        Ok(())
    }

    /// Width of one attention head: `explicit_head_dim`, else `hidden_size / num_attention_heads`.
    pub fn head_dim(&self) -> usize {
        self.explicit_head_dim.unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }

    /// Whether layer `layer` is global or local.
    pub fn layer_type(&self, layer: usize) -> LayerType {
        self.layer_types.get(layer).copied().unwrap_or(LayerType::Global)
    }

    /// Scale of the attention scores: `1/√query_pre_attn_scalar`, else `1/√head_dim`.
    pub fn attention_scale(&self) -> f64 {
        1.0 / f64::from(self.query_pre_attn_scalar.unwrap_or(self.head_dim() as f32)).sqrt()
    }

    /// The inverse RoPE frequencies of local layers: the local base, never scaled.
    pub fn rope_local_inv_freq(&self) -> Vec<f32> {
        let d = self.head_dim();
        (0..d / 2).map(|i| 1.0 / self.rope_local_theta.powf((2 * i) as f32 / d as f32)).collect()
    }

    /// A small random-weight shape for tests and examples: 2 layers, width 64, 4 heads, 2 KV heads.
    pub fn tiny() -> Self {
        LlamaConfig {
            hidden_size: 64,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            num_key_value_heads: 2,
            intermediate_size: 128,
            vocab_size: 97,
            rope_theta: 10_000.0,
            rms_norm_eps: 1e-5,
            max_position_embeddings: 256,
            tie_word_embeddings: false,
            rope_scaling: None,
            attention_bias: false,
            bos_token_id: None,
            eos_token_ids: Vec::new(),
            explicit_head_dim: None,
            qk_norm: false,
            activation: Activation::Silu,
            norm_weight_offset: 0.0,
            sandwich_norms: false,
            embedding_scale: None,
            query_pre_attn_scalar: None,
            sliding_window: None,
            layer_types: Vec::new(),
            rope_local_theta: 10_000.0,
            rope_linear_factor: None,
        }
    }

    /// The inverse RoPE frequencies `1 / theta^(2i/d)` of global layers, with Llama 3.1 or
    /// linear scaling applied.
    ///
    /// Computed in f32 as `transformers` does, so positions rotate by the same angles as the
    /// reference implementation.
    pub fn rope_inv_freq(&self) -> Vec<f32> {
        let d = self.head_dim();
        let mut inv: Vec<f32> = (0..d / 2).map(|i| 1.0 / self.rope_theta.powf((2 * i) as f32 / d as f32)).collect();
        if let Some(factor) = self.rope_linear_factor {
            inv.iter_mut().for_each(|f| *f /= factor);
        }
        match &self.rope_scaling {
            None => inv,
            Some(s) => {
                let old = s.original_max_position_embeddings as f32;
                let low_freq_wavelen = old / s.low_freq_factor;
                let high_freq_wavelen = old / s.high_freq_factor;
                inv.into_iter()
                    .map(|f| {
                        let wavelen = 2.0 * std::f32::consts::PI / f;
                        if wavelen < high_freq_wavelen {
                            f
                        } else if wavelen > low_freq_wavelen {
                            f / s.factor
                        } else {
                            let smooth = (old / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
                            (1.0 - smooth) * f / s.factor + smooth * f
                        }
                    })
                    .collect()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMOLLM: &str = r#"{
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": 576, "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3,
        "intermediate_size": 1536, "vocab_size": 49152, "rope_theta": 100000, "rms_norm_eps": 1e-05,
        "max_position_embeddings": 8192, "tie_word_embeddings": true, "rope_scaling": null,
        "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "bfloat16"
    }"#;

    #[test]
    fn parses_smollm() {
        let c = LlamaConfig::from_hf_json(SMOLLM).unwrap();
        assert_eq!((c.hidden_size, c.num_hidden_layers, c.num_attention_heads), (576, 30, 9));
        assert_eq!((c.num_key_value_heads, c.head_dim(), c.intermediate_size), (3, 64, 1536));
        assert_eq!(c.rope_theta, 100_000.0);
        assert_eq!(c.rms_norm_eps, 1e-5);
        assert!(c.tie_word_embeddings && !c.attention_bias && c.rope_scaling.is_none());
        assert_eq!((c.bos_token_id, c.eos_token_ids.as_slice()), (Some(1), &[2u32][..]));
    }

    #[test]
    fn parses_llama31_rope_scaling_and_eos_list() {
        let json = r#"{"model_type": "llama", "hidden_size": 4096, "num_hidden_layers": 32,
            "num_attention_heads": 32, "num_key_value_heads": 8, "intermediate_size": 14336,
            "vocab_size": 128256, "rope_theta": 500000.0, "rms_norm_eps": 1e-05,
            "max_position_embeddings": 131072, "bos_token_id": 128000,
            "eos_token_id": [128001, 128008, 128009],
            "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                             "original_max_position_embeddings": 8192, "rope_type": "llama3"}}"#;
        let c = LlamaConfig::from_hf_json(json).unwrap();
        let s = c.rope_scaling.unwrap();
        assert_eq!((s.factor, s.low_freq_factor, s.high_freq_factor), (8.0, 1.0, 4.0));
        assert_eq!(s.original_max_position_embeddings, 8192);
        assert_eq!(c.eos_token_ids, vec![128001, 128008, 128009]);
        assert!(!c.tie_word_embeddings);

        // High frequencies are untouched, the lowest are divided by the factor, the band between
        // lies in between.
        let plain = LlamaConfig { rope_scaling: None, ..c.clone() }.rope_inv_freq();
        let scaled = c.rope_inv_freq();
        assert_eq!(scaled[0], plain[0]);
        let last = plain.len() - 1;
        assert!((scaled[last] - plain[last] / 8.0).abs() <= plain[last] * 1e-6);
        assert!(scaled.iter().zip(&plain).all(|(s, p)| *s <= *p && *s >= p / 8.0 * (1.0 - 1e-6)));
        assert!(scaled.iter().zip(&plain).any(|(s, p)| *s < *p && *s > p / 8.0));
    }

    #[test]
    fn qwen2_implies_qkv_biases_and_defaults_apply() {
        let json = r#"{"model_type": "qwen2", "hidden_size": 896, "num_hidden_layers": 24,
            "num_attention_heads": 14, "num_key_value_heads": 2, "intermediate_size": 4864,
            "vocab_size": 151936, "rope_theta": 1000000.0, "rms_norm_eps": 1e-06,
            "tie_word_embeddings": true, "eos_token_id": 151645}"#;
        let c = LlamaConfig::from_hf_json(json).unwrap();
        assert!(c.attention_bias);
        assert_eq!(c.head_dim(), 64);

        let json = r#"{"hidden_size": 64, "num_hidden_layers": 1, "num_attention_heads": 4,
            "intermediate_size": 128, "vocab_size": 10}"#;
        let c = LlamaConfig::from_hf_json(json).unwrap();
        assert_eq!(c.num_key_value_heads, 4);
        assert_eq!((c.rope_theta, c.rms_norm_eps), (10_000.0, 1e-6));
        assert!(!c.attention_bias && c.bos_token_id.is_none());

        let explicit = json.replace("\"vocab_size\": 10", "\"vocab_size\": 10, \"attention_bias\": true");
        assert!(LlamaConfig::from_hf_json(&explicit).unwrap().attention_bias);
    }

    #[test]
    fn errors_name_the_problem() {
        let missing = r#"{"hidden_size": 64, "num_hidden_layers": 1, "num_attention_heads": 4, "vocab_size": 10}"#;
        let err = LlamaConfig::from_hf_json(missing).unwrap_err().to_string();
        assert!(err.contains("intermediate_size"), "{err}");

        let wrong_type = SMOLLM.replace("\"hidden_size\": 576", "\"hidden_size\": \"576\"");
        let err = LlamaConfig::from_hf_json(&wrong_type).unwrap_err().to_string();
        assert!(err.contains("invalid type"), "{err}");

        let bad_heads = SMOLLM.replace("\"num_key_value_heads\": 3", "\"num_key_value_heads\": 4");
        let err = LlamaConfig::from_hf_json(&bad_heads).unwrap_err().to_string();
        assert!(err.contains("num_key_value_heads 4"), "{err}");

        let bad_scaling =
            SMOLLM.replace("\"rope_scaling\": null", "\"rope_scaling\": {\"type\": \"yarn\", \"factor\": 4.0}");
        let err = LlamaConfig::from_hf_json(&bad_scaling).unwrap_err().to_string();
        assert!(err.contains("yarn"), "{err}");

        let wide_head = SMOLLM.replace("\"rms_norm_eps\"", "\"head_dim\": 128, \"rms_norm_eps\"");
        assert_eq!(LlamaConfig::from_hf_json(&wide_head).unwrap().head_dim(), 128);
        let gemma2 = SMOLLM.replace("\"model_type\": \"llama\"", "\"model_type\": \"gemma2\"");
        assert!(LlamaConfig::from_hf_json(&gemma2).unwrap_err().to_string().contains("gemma2"));
        let capped = SMOLLM.replace("\"rms_norm_eps\"", "\"final_logit_softcapping\": 30.0, \"rms_norm_eps\"");
        assert!(LlamaConfig::from_hf_json(&capped).unwrap_err().to_string().contains("final_logit_softcapping"));
        let gelu = SMOLLM.replace("\"rms_norm_eps\"", "\"hidden_act\": \"gelu\", \"rms_norm_eps\"");
        assert!(LlamaConfig::from_hf_json(&gelu).unwrap_err().to_string().contains("gelu"));

        let err = LlamaConfig::from_hf_file("/nonexistent/config.json").unwrap_err().to_string();
        assert!(err.contains("/nonexistent/config.json"), "{err}");

        assert!(LlamaConfig::from_hf_json("not json").is_err());
    }
}
