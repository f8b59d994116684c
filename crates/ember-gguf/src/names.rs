//! GGUF tensor names → Hugging Face (transformers Llama-family) names, so weights read from a
//! GGUF file can be looked up by the names the model code and `.ember` containers use.

/// Per-block GGUF names and their HF module paths under `model.layers.N.`.
const BLOCK: &[(&str, &str)] = &[
    ("attn_norm", "input_layernorm"),
    ("ffn_norm", "post_attention_layernorm"),
    ("attn_q_norm", "self_attn.q_norm"),
    ("attn_k_norm", "self_attn.k_norm"),
    ("attn_q", "self_attn.q_proj"),
    ("attn_k", "self_attn.k_proj"),
    ("attn_v", "self_attn.v_proj"),
    ("attn_output", "self_attn.o_proj"),
    ("ffn_gate", "mlp.gate_proj"),
    ("ffn_up", "mlp.up_proj"),
    ("ffn_down", "mlp.down_proj"),
];

/// Gemma's blocks norm both branches before and after ("sandwich" norms): llama.cpp's `ffn_norm`
/// is the norm before the MLP, which Gemma calls `pre_feedforward_layernorm`, and Gemma's
/// `post_attention_layernorm` is the norm of the attention output.
const GEMMA_BLOCK: &[(&str, &str)] = &[
    ("ffn_norm", "pre_feedforward_layernorm"),
    ("post_attention_norm", "post_attention_layernorm"),
    ("post_ffw_norm", "post_feedforward_layernorm"),
];

/// Whether `architecture` is a Gemma (`gemma`, `gemma2`, `gemma3`, …).
fn is_gemma(architecture: &str) -> bool {
    architecture.starts_with("gemma")
}

/// What llama.cpp's converter added to every `*norm.weight` of `architecture`: 1 for Gemma, which
/// multiplies by `1 + w` (the GGUF stores `1 + w`, the Hugging Face checkpoint `w`), else 0.
/// Subtract it from a norm tensor to get the Hugging Face value.
pub fn norm_weight_shift(architecture: &str, gguf_name: &str) -> f32 {
    if is_gemma(architecture) && gguf_name.ends_with("norm.weight") {
        1.0
    } else {
        0.0
    }
}

/// The HF name of GGUF tensor `gguf_name` in a Llama-architecture file; see [`hf_name_for`].
pub fn hf_name(gguf_name: &str) -> Option<String> {
    hf_name_for("llama", gguf_name)
}

/// The HF name of GGUF tensor `gguf_name` in a file of `architecture` (`general.architecture`),
/// or `None` for a name outside the Llama-family table (callers keep such tensors under their
/// GGUF name).
pub fn hf_name_for(architecture: &str, gguf_name: &str) -> Option<String> {
    match gguf_name {
        "token_embd.weight" => return Some("model.embed_tokens.weight".into()),
        "output_norm.weight" => return Some("model.norm.weight".into()),
        "output.weight" => return Some("lm_head.weight".into()),
        _ => {}
    }
    let rest = gguf_name.strip_prefix("blk.")?;
    let (layer, rest) = rest.split_once('.')?;
    // A layer index is plain decimal digits (no sign, no leading `+`).
    if layer.is_empty() || !layer.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (module, suffix) = rest.rsplit_once('.')?;
    if suffix != "weight" && suffix != "bias" {
        return None;
    }
    let gemma = if is_gemma(architecture) { GEMMA_BLOCK } else { &[] };
    let hf = gemma.iter().chain(BLOCK).find(|(g, _)| *g == module)?.1;
    Some(format!("model.layers.{layer}.{hf}.{suffix}"))
}

#[cfg(test)]
mod tests {
    use super::{hf_name, hf_name_for, norm_weight_shift};

    #[test]
    fn gemma_norms_map_to_their_sandwich_names() {
        let cases = [
            ("blk.0.attn_norm.weight", "model.layers.0.input_layernorm.weight"),
            ("blk.0.post_attention_norm.weight", "model.layers.0.post_attention_layernorm.weight"),
            ("blk.0.ffn_norm.weight", "model.layers.0.pre_feedforward_layernorm.weight"),
            ("blk.0.post_ffw_norm.weight", "model.layers.0.post_feedforward_layernorm.weight"),
            ("blk.0.attn_q_norm.weight", "model.layers.0.self_attn.q_norm.weight"),
            ("blk.0.attn_k_norm.weight", "model.layers.0.self_attn.k_norm.weight"),
        ];
        for (g, h) in cases {
            assert_eq!(hf_name_for("gemma3", g).as_deref(), Some(h), "{g}");
        }
        assert_eq!(
            hf_name_for("qwen3", "blk.1.attn_q_norm.weight").as_deref(),
            Some("model.layers.1.self_attn.q_norm.weight")
        );
        assert_eq!(hf_name("blk.0.post_ffw_norm.weight"), None);
        assert_eq!(norm_weight_shift("gemma3", "blk.3.post_ffw_norm.weight"), 1.0);
        assert_eq!(norm_weight_shift("gemma3", "blk.3.ffn_up.weight"), 0.0);
        assert_eq!(norm_weight_shift("llama", "output_norm.weight"), 0.0);
    }

    #[test]
    fn maps_the_llama_table() {
        let cases = [
            ("token_embd.weight", "model.embed_tokens.weight"),
            ("output_norm.weight", "model.norm.weight"),
            ("output.weight", "lm_head.weight"),
            ("blk.0.attn_norm.weight", "model.layers.0.input_layernorm.weight"),
            ("blk.12.ffn_norm.weight", "model.layers.12.post_attention_layernorm.weight"),
            ("blk.3.attn_q.weight", "model.layers.3.self_attn.q_proj.weight"),
            ("blk.3.attn_q.bias", "model.layers.3.self_attn.q_proj.bias"),
            ("blk.3.attn_k.weight", "model.layers.3.self_attn.k_proj.weight"),
            ("blk.3.attn_v.bias", "model.layers.3.self_attn.v_proj.bias"),
            ("blk.29.attn_output.weight", "model.layers.29.self_attn.o_proj.weight"),
            ("blk.1.ffn_gate.weight", "model.layers.1.mlp.gate_proj.weight"),
            ("blk.1.ffn_up.weight", "model.layers.1.mlp.up_proj.weight"),
            ("blk.1.ffn_down.weight", "model.layers.1.mlp.down_proj.weight"),
        ];
        for (g, h) in cases {
            assert_eq!(hf_name(g).as_deref(), Some(h), "{g}");
        }
    }

    #[test]
    fn unknown_names_are_none() {
        for g in [
            "rope_freqs.weight",
            "blk.x.attn_q.weight",
            "blk.-1.attn_q.weight",
            "blk..attn_q.weight",
            "blk.0.attn_q.scale",
            "blk.0.attn_qkv.weight",
            "blk.0",
            "token_embd",
            "",
        ] {
            assert_eq!(hf_name(g), None, "{g}");
        }
    }
}
