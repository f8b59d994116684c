//! Llama-family hyper-parameters read from GGUF metadata (`{arch}.*` keys), and their HF
//! `config.json` equivalent, so a model converted from GGUF can be built by code that reads HF
//! configs.

use serde_json::{json, Value};

use crate::{GgufError, GgufFile, MetaValue};

/// Architectures whose converter permutes the Q/K rows for interleaved RoPE (`LlamaModel` and its
/// subclasses in `convert_hf_to_gguf.py`); `qwen2` and others keep the HF order.
const QK_PERMUTED_ARCHS: &[&str] = &["llama", "granite", "granitemoe"];

/// RoPE scaling as recorded in GGUF metadata (`{arch}.rope.scaling.*`).
#[derive(Clone, Debug, PartialEq)]
pub struct RopeScaling {
    /// `linear`, `yarn`, ... (GGUF's `rope.scaling.type`).
    pub rope_type: String,
    /// The scaling factor.
    pub factor: f32,
    /// Context length the model was trained with before scaling.
    pub original_max_position_embeddings: Option<usize>,
}

/// The hyper-parameters of a Llama-family decoder.
#[derive(Clone, Debug, PartialEq)]
pub struct LlamaHParams {
    /// `general.architecture` (`llama`, `qwen2`, ...).
    pub architecture: String,
    /// Decoder blocks.
    pub n_layers: usize,
    /// Model width.
    pub hidden_size: usize,
    /// Query heads.
    pub n_heads: usize,
    /// Key/value heads (grouped-query attention when fewer than `n_heads`).
    pub n_kv_heads: usize,
    /// Per-head width (`{arch}.attention.key_length`, else `hidden_size / n_heads`).
    pub head_dim: usize,
    /// MLP width.
    pub intermediate_size: usize,
    /// Vocabulary size (the tokenizer's token count, else `{arch}.vocab_size`, else the
    /// embedding's rows).
    pub vocab_size: usize,
    /// RoPE base.
    pub rope_theta: f32,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f32,
    /// Training context length.
    pub max_position_embeddings: usize,
    /// No `output.weight`: the LM head reuses the token embedding.
    pub tie_word_embeddings: bool,
    /// `blk.0.attn_q.bias` exists (Qwen2-style QKV biases).
    pub attention_bias: bool,
    /// RoPE scaling, if the metadata records one.
    pub rope_scaling: Option<RopeScaling>,
    /// The file carries `rope_freqs.weight` (Llama 3.1-style precomputed frequency factors). Its
    /// HF parameters (low/high frequency factors) are not in the metadata, so
    /// [`LlamaHParams::to_hf_config_json`] cannot express it; model code must use the tensor.
    pub rope_freqs_tensor: bool,
    /// Q/K rows are stored permuted for interleaved RoPE (see [`crate::unpermute_qk`]).
    pub qk_permuted: bool,
    /// `{arch}.attention.sliding_window` (Gemma 3's local layers).
    pub sliding_window: Option<usize>,
    /// `tokenizer.ggml.bos_token_id`.
    pub bos_token_id: Option<u32>,
    /// `tokenizer.ggml.eos_token_id`.
    pub eos_token_id: Option<u32>,
}

impl LlamaHParams {
    /// Reads the hyper-parameters; a missing or ill-typed required key is an error naming it.
    pub fn from_gguf(f: &GgufFile) -> Result<Self, GgufError> {
        let err = |key: &str, msg: &str| GgufError::Metadata {
            path: f.path().to_path_buf(),
            key: key.to_owned(),
            msg: msg.to_owned(),
        };
        let arch = f
            .meta("general.architecture")
            .ok_or_else(|| err("general.architecture", "missing"))?
            .as_str()
            .ok_or_else(|| err("general.architecture", "not a string"))?
            .to_owned();
        let key = |k: &str| format!("{arch}.{k}");
        let opt_usize = |k: &str| -> Result<Option<usize>, GgufError> {
            match f.meta(k) {
                None => Ok(None),
                Some(v) => match v.as_u64().and_then(|n| usize::try_from(n).ok()) {
                    Some(n) => Ok(Some(n)),
                    None => Err(err(k, &format!("{v:?} is not a non-negative integer"))),
                },
            }
        };
        let usize_key = |k: &str| -> Result<usize, GgufError> { opt_usize(k)?.ok_or_else(|| err(k, "missing")) };
        let opt_f32 = |k: &str| -> Result<Option<f32>, GgufError> {
            match f.meta(k) {
                None => Ok(None),
                Some(v) => v.as_f32().map(Some).ok_or_else(|| err(k, &format!("{v:?} is not a number"))),
            }
        };

        let n_layers = usize_key(&key("block_count"))?;
        let hidden_size = usize_key(&key("embedding_length"))?;
        let intermediate_size = usize_key(&key("feed_forward_length"))?;
        let n_heads = usize_key(&key("attention.head_count"))?;
        let n_kv_heads = opt_usize(&key("attention.head_count_kv"))?.unwrap_or(n_heads);
        if n_heads == 0 || n_kv_heads == 0 || n_heads % n_kv_heads != 0 {
            return Err(err(
                &key("attention.head_count_kv"),
                &format!("{n_kv_heads} KV heads do not divide {n_heads} query heads"),
            ));
        }
        let head_dim = match opt_usize(&key("attention.key_length"))? {
            Some(d) => d,
            None if hidden_size % n_heads == 0 => hidden_size / n_heads,
            None => {
                return Err(err(
                    &key("attention.head_count"),
                    &format!("{n_heads} heads do not divide the width {hidden_size}"),
                ))
            }
        };
        let vocab_size = match f.meta("tokenizer.ggml.tokens").and_then(MetaValue::as_array) {
            Some(tokens) => tokens.len(),
            None => match opt_usize(&key("vocab_size"))? {
                Some(n) => n,
                None => {
                    f.tensor("token_embd.weight").ok().and_then(|t| t.shape.first().copied()).ok_or_else(|| {
                        err("tokenizer.ggml.tokens", "missing, and no vocab_size or token_embd.weight")
                    })?
                }
            },
        };
        let rope_theta = opt_f32(&key("rope.freq_base"))?.unwrap_or(10_000.0);
        let rms_norm_eps = opt_f32(&key("attention.layer_norm_rms_epsilon"))?
            .ok_or_else(|| err(&key("attention.layer_norm_rms_epsilon"), "missing"))?;
        let max_position_embeddings = opt_usize(&key("context_length"))?.unwrap_or(2048);
        let rope_scaling = match f.meta(&key("rope.scaling.type")).and_then(MetaValue::as_str) {
            None | Some("none") => None,
            Some(t) => Some(RopeScaling {
                rope_type: t.to_owned(),
                factor: opt_f32(&key("rope.scaling.factor"))?.unwrap_or(1.0),
                original_max_position_embeddings: opt_usize(&key("rope.scaling.original_context_length"))?,
            }),
        };
        let sliding_window = opt_usize(&key("attention.sliding_window"))?;
        let id = |k: &str| -> Result<Option<u32>, GgufError> {
            match f.meta(k) {
                None => Ok(None),
                Some(v) => v.as_u32().map(Some).ok_or_else(|| err(k, &format!("{v:?} is not a token id"))),
            }
        };
        Ok(LlamaHParams {
            qk_permuted: QK_PERMUTED_ARCHS.contains(&arch.as_str()),
            architecture: arch,
            n_layers,
            hidden_size,
            n_heads,
            n_kv_heads,
            head_dim,
            intermediate_size,
            vocab_size,
            rope_theta,
            rms_norm_eps,
            max_position_embeddings,
            tie_word_embeddings: f.tensor("output.weight").is_err(),
            attention_bias: f.tensor("blk.0.attn_q.bias").is_ok(),
            rope_scaling,
            rope_freqs_tensor: f.tensor("rope_freqs.weight").is_ok(),
            sliding_window,
            bos_token_id: id("tokenizer.ggml.bos_token_id")?,
            eos_token_id: id("tokenizer.ggml.eos_token_id")?,
        })
    }

    /// The HF `model_type` and `architectures` entry for this architecture.
    fn hf_model_type(&self) -> (&str, String) {
        match self.architecture.as_str() {
            "llama" => ("llama", "LlamaForCausalLM".into()),
            "qwen2" => ("qwen2", "Qwen2ForCausalLM".into()),
            "qwen3" => ("qwen3", "Qwen3ForCausalLM".into()),
            "gemma3" => ("gemma3_text", "Gemma3ForCausalLM".into()),
            "mistral" => ("mistral", "MistralForCausalLM".into()),
            other => {
                let mut c = other.chars();
                let camel = c.next().map(|f| f.to_ascii_uppercase().to_string() + c.as_str()).unwrap_or_default();
                (other, format!("{camel}ForCausalLM"))
            }
        }
    }

    /// An HF `config.json` for these hyper-parameters (floats written as `f64` of the stored
    /// `f32`, rounded to what the `f32` means: `1e-5`, not `9.999999747378752e-6`).
    pub fn to_hf_config_json(&self) -> Value {
        let (model_type, architecture) = self.hf_model_type();
        let rope_scaling = match &self.rope_scaling {
            None => Value::Null,
            Some(s) => json!({
                "rope_type": s.rope_type,
                "type": s.rope_type,
                "factor": shortest_f64(s.factor),
                "original_max_position_embeddings": s.original_max_position_embeddings,
            }),
        };
        let mut config = json!({
            "architectures": [architecture],
            "model_type": model_type,
            "hidden_size": self.hidden_size,
            "num_hidden_layers": self.n_layers,
            "num_attention_heads": self.n_heads,
            "num_key_value_heads": self.n_kv_heads,
            "head_dim": self.head_dim,
            "intermediate_size": self.intermediate_size,
            "vocab_size": self.vocab_size,
            "rope_theta": shortest_f64(self.rope_theta),
            "rms_norm_eps": shortest_f64(self.rms_norm_eps),
            "max_position_embeddings": self.max_position_embeddings,
            "tie_word_embeddings": self.tie_word_embeddings,
            "attention_bias": self.attention_bias,
            "rope_scaling": rope_scaling,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id,
            "hidden_act": "silu",
            "torch_dtype": "bfloat16",
        });
        if self.architecture == "gemma3" {
            if let Some(obj) = config.as_object_mut() {
                for (k, v) in self.gemma3_config() {
                    obj.insert(k.into(), v);
                }
                obj.remove("hidden_act");
            }
        }
        config
    }

    /// The Gemma 3 fields of `config.json`, as llama.cpp runs a `gemma3` GGUF: every sixth layer
    /// global, the others sliding over `attention.sliding_window` keys with RoPE base 10000, and
    /// scores scaled by `1/√head_dim` — except the 62-layer 27B model, scaled by
    /// `1/√(hidden/heads)` (llama.cpp's `f_attention_scale`).
    fn gemma3_config(&self) -> Vec<(&'static str, Value)> {
        let layer_types: Vec<&str> =
            (0..self.n_layers).map(|i| if (i + 1) % 6 == 0 { "full_attention" } else { "sliding_attention" }).collect();
        let query_pre_attn_scalar =
            if self.n_layers == 62 { self.hidden_size / self.n_heads.max(1) } else { self.head_dim };
        vec![
            ("hidden_activation", json!("gelu_pytorch_tanh")),
            ("layer_types", json!(layer_types)),
            ("sliding_window", json!(self.sliding_window.unwrap_or(4096))),
            ("rope_local_base_freq", json!(10_000.0)),
            ("query_pre_attn_scalar", json!(query_pre_attn_scalar)),
        ]
    }
}

/// The `f64` whose shortest decimal form is the `f32`'s shortest decimal form.
fn shortest_f64(v: f32) -> f64 {
    v.to_string().parse().unwrap_or(v as f64)
}

#[cfg(test)]
mod tests {
    use super::shortest_f64;

    #[test]
    fn floats_keep_their_decimal_form() {
        assert_eq!(shortest_f64(1e-5), 1e-5);
        assert_eq!(shortest_f64(100000.0), 100000.0);
    }
}
