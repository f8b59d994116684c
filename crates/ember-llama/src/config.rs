//! The model's shape, read from a Hugging Face `config.json`.
//!
//! Only the fields a Llama-family decoder needs are read; unknown fields are ignored so that
//! configs of Llama 2/3/3.1, SmolLM and Qwen2 all parse. Fields that change the arithmetic
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
    #[serde(default = "default_rope_theta")]
    rope_theta: f32,
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

fn default_rope_theta() -> f32 {
    10_000.0
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

        let rope_scaling = match raw.rope_scaling {
            None | Some(serde_json::Value::Null) => None,
            Some(value) => {
                let kind = value.get("rope_type").or_else(|| value.get("type")).and_then(|v| v.as_str());
                match kind {
                    Some("llama3") => Some(
                        serde_json::from_value::<Llama3RopeScaling>(value)
                            .map_err(|e| invalid(format!("rope_scaling: {e}")))?,
                    ),
                    // "default" is the unscaled rotation that some exporters write out explicitly.
                    Some("default") => None,
                    other => {
                        return Err(invalid(format!("rope_scaling type {other:?} is not supported (only \"llama3\")")))
                    }
                }
            }
        };
        if let Some(act) = raw.hidden_act.as_deref().filter(|a| *a != "silu") {
            return Err(invalid(format!("hidden_act {act:?} is not supported (the MLP is SwiGLU, \"silu\")")));
        }
        // Some families decouple the head width from hidden/heads; this model does not.
        if let Some(hd) =
            raw.head_dim.filter(|&hd| raw.num_attention_heads == 0 || hd * raw.num_attention_heads != raw.hidden_size)
        {
            return Err(invalid(format!(
                "head_dim {hd} differs from hidden_size / num_attention_heads ({} / {}); not supported",
                raw.hidden_size, raw.num_attention_heads
            )));
        }
        let attention_bias = raw.attention_bias.unwrap_or(raw.model_type.as_deref() == Some("qwen2"));
        let eos_token_ids = match raw.eos_token_id {
            None => Vec::new(),
            Some(EosIds::One(id)) => vec![id],
            Some(EosIds::Many(ids)) => ids,
        };
        let config = LlamaConfig {
            hidden_size: raw.hidden_size,
            num_hidden_layers: raw.num_hidden_layers,
            num_attention_heads: raw.num_attention_heads,
            num_key_value_heads: raw.num_key_value_heads.unwrap_or(raw.num_attention_heads),
            intermediate_size: raw.intermediate_size,
            vocab_size: raw.vocab_size,
            rope_theta: raw.rope_theta,
            rms_norm_eps: raw.rms_norm_eps,
            max_position_embeddings: raw.max_position_embeddings,
            tie_word_embeddings: raw.tie_word_embeddings,
            rope_scaling,
            attention_bias,
            bos_token_id: raw.bos_token_id,
            eos_token_ids,
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
        if self.hidden_size % self.num_attention_heads != 0 {
            return Err(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if self.num_attention_heads % self.num_key_value_heads != 0 {
            return Err(format!(
                "num_attention_heads {} is not a multiple of num_key_value_heads {}",
                self.num_attention_heads, self.num_key_value_heads
            ));
        }
        if self.head_dim() % 2 != 0 {
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

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
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
        }
    }

    /// The inverse RoPE frequencies `1 / theta^(2i/d)` for one head, with Llama 3.1 scaling applied.
    ///
    /// Computed in f32 as `transformers` does, so positions rotate by the same angles as the
    /// reference implementation.
    pub fn rope_inv_freq(&self) -> Vec<f32> {
        let d = self.head_dim();
        let inv: Vec<f32> = (0..d / 2).map(|i| 1.0 / self.rope_theta.powf((2 * i) as f32 / d as f32)).collect();
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

        let odd_head = SMOLLM.replace("\"rms_norm_eps\"", "\"head_dim\": 128, \"rms_norm_eps\"");
        let err = LlamaConfig::from_hf_json(&odd_head).unwrap_err().to_string();
        assert!(err.contains("head_dim 128"), "{err}");
        let gelu = SMOLLM.replace("\"rms_norm_eps\"", "\"hidden_act\": \"gelu\", \"rms_norm_eps\"");
        assert!(LlamaConfig::from_hf_json(&gelu).unwrap_err().to_string().contains("gelu"));

        let err = LlamaConfig::from_hf_file("/nonexistent/config.json").unwrap_err().to_string();
        assert!(err.contains("/nonexistent/config.json"), "{err}");

        assert!(LlamaConfig::from_hf_json("not json").is_err());
    }
}
