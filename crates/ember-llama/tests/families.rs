//! Qwen3 and Gemma 3 against an independent implementation: tiny seeded models made with
//! Hugging Face `transformers` on CPU (`tests/fixtures/make_tiny_references.py`, versions and
//! command in each `logits.json`), every weight drawn with std 0.3 so norms, q/k norms, the
//! `(1 + w)` offset, the attention scale, the sliding window and both RoPE bases all move the
//! logits. Each model runs from its Hugging Face directory, densely and compressed.

use std::path::{Path, PathBuf};

use burn::tensor::{Device, Int, Tensor, TensorData};
use ember::{Config, Store};
use ember_llama::{generate, load_hf_dir, offload, GenerateOptions, KvCache, LayerType, Llama, LlamaConfig, Sampler};

struct Reference {
    input_ids: Vec<u32>,
    /// `[position][vocab]`.
    logits: Vec<Vec<f32>>,
    greedy_ids: Vec<u32>,
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn reference(dir: &Path) -> Reference {
    let text = std::fs::read_to_string(dir.join("logits.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let ids = |key: &str| -> Vec<u32> {
        v[key].as_array().unwrap().iter().map(|x| u32::try_from(x.as_u64().unwrap()).unwrap()).collect()
    };
    let logits = v["logits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect())
        .collect();
    Reference { input_ids: ids("input_ids"), logits, greedy_ids: ids("greedy_ids") }
}

fn logits(model: &Llama, ids: &[u32], cache: &mut KvCache, device: &Device) -> Vec<f32> {
    let ids: Vec<i32> = ids.iter().map(|&x| x as i32).collect();
    let tokens = Tensor::<2, Int>::from_data(TensorData::new(ids.clone(), [1, ids.len()]), device);
    model.forward(tokens, cache).into_data().try_to_vec::<f32>().unwrap()
}

/// Largest |ours − reference| over every position, relative to the largest reference logit.
fn max_rel_error(ours: &[f32], reference: &[Vec<f32>]) -> f32 {
    let flat: Vec<f32> = reference.iter().flatten().copied().collect();
    assert_eq!(ours.len(), flat.len());
    let scale = flat.iter().fold(1.0f32, |m, x| m.max(x.abs()));
    ours.iter().zip(&flat).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max) / scale
}

/// Full forward, token-by-token decoding through the KV cache, greedy generation, and the same
/// from a lossless `.ember` attached with the per-forward policy.
fn check_family(name: &str, check_config: impl Fn(&LlamaConfig)) {
    let device = Device::flex();
    let dir = fixture(name);
    let want = reference(&dir);
    let (model, config) = load_hf_dir(&dir, &device).unwrap();
    check_config(&config);

    let full = logits(&model, &want.input_ids, &mut KvCache::new(&config), &device);
    let err = max_rel_error(&full, &want.logits);
    eprintln!("{name}: max |Δlogit| / max |logit| = {err:e}");
    assert!(err <= 1e-5, "{name}: logits differ from transformers by {err} (relative)");

    // One token at a time: the cache and the sliding-window mask of decoding steps.
    let mut cache = KvCache::new(&config);
    let stepped: Vec<f32> = want.input_ids.iter().flat_map(|&id| logits(&model, &[id], &mut cache, &device)).collect();
    let err = max_rel_error(&stepped, &want.logits);
    assert!(err <= 1e-5, "{name}: token-by-token logits differ by {err} (relative)");

    let options = GenerateOptions { max_tokens: want.greedy_ids.len(), sampler: Sampler::greedy(), stop_ids: vec![] };
    let out = generate(&model, &want.input_ids, &options, |_| {}).unwrap();
    assert_eq!(out.tokens, want.greedy_ids, "{name}: greedy continuation");

    // The same directory compressed losslessly and attached: identical logits.
    let tmp = tempfile::tempdir().unwrap();
    let container = tmp.path().join(format!("{name}.ember"));
    let args: Vec<std::ffi::OsString> =
        vec!["ember".into(), "compress".into(), dir.clone().into(), "-o".into(), container.clone().into()];
    ember_cli::run(args).unwrap();
    let store = Store::open(&container).unwrap();
    let (attached, attached_config) = offload::attach(&store, &device, Config::new(ember::policy::PerForward)).unwrap();
    assert_eq!(attached_config, config);
    let compressed = store.forward(|| logits(&attached, &want.input_ids, &mut KvCache::new(&config), &device));
    // Bit-exact weights; the fused products sum in another order than the dense matmul.
    let rows: Vec<Vec<f32>> = full.chunks(config.vocab_size).map(<[f32]>::to_vec).collect();
    let err = max_rel_error(&compressed, &rows);
    assert!(err <= 1e-5, "{name}: lossless + per-forward differs from dense by {err} (relative)");
}

#[test]
fn qwen3_matches_transformers() {
    check_family("tiny-qwen3", |c| {
        assert!(c.qk_norm && c.norm_weight_offset == 0.0 && !c.sandwich_norms);
        assert_eq!(c.head_dim(), 32, "head_dim is set apart from hidden / heads");
        assert!(c.layer_types.iter().all(|t| *t == LayerType::Global) && c.sliding_window.is_none());
    });
}

#[test]
fn gemma3_matches_transformers() {
    check_family("tiny-gemma3", |c| {
        assert!(c.qk_norm && c.sandwich_norms && c.tie_word_embeddings);
        assert_eq!(c.norm_weight_offset, 1.0);
        assert_eq!(c.embedding_scale, Some(8.0));
        assert_eq!(c.query_pre_attn_scalar, Some(24.0));
        assert_eq!(c.sliding_window, Some(4));
        assert_eq!(c.layer_types, vec![LayerType::Local, LayerType::Local, LayerType::Global]);
        assert_eq!((c.rope_theta, c.rope_local_theta), (1_000_000.0, 10_000.0));
    });
}

#[test]
fn gemma3_configs_without_layer_types_use_the_pattern() {
    let dir = fixture("tiny-gemma3");
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let obj = json.as_object_mut().unwrap();
    obj.remove("layer_types");
    obj.insert("num_hidden_layers".into(), 7.into());
    obj.insert("sliding_window_pattern".into(), 6.into());
    let c = LlamaConfig::from_hf_json(&json.to_string()).unwrap();
    let globals: Vec<usize> = (0..7).filter(|&i| c.layer_type(i) == LayerType::Global).collect();
    assert_eq!(globals, vec![5], "every sixth layer is global");
}

/// The GGUF name llama.cpp's converter gives a Qwen3 tensor.
fn gguf_name(hf: &str) -> String {
    let fixed = [
        ("model.embed_tokens.weight", "token_embd.weight"),
        ("model.norm.weight", "output_norm.weight"),
        ("lm_head.weight", "output.weight"),
    ];
    if let Some((_, g)) = fixed.iter().find(|(h, _)| *h == hf) {
        return g.to_string();
    }
    let rest = hf.strip_prefix("model.layers.").unwrap();
    let (layer, module) = rest.split_once('.').unwrap();
    let (module, suffix) = module.rsplit_once('.').unwrap();
    let g = match module {
        "input_layernorm" => "attn_norm",
        "post_attention_layernorm" => "ffn_norm",
        "self_attn.q_proj" => "attn_q",
        "self_attn.k_proj" => "attn_k",
        "self_attn.v_proj" => "attn_v",
        "self_attn.o_proj" => "attn_output",
        "self_attn.q_norm" => "attn_q_norm",
        "self_attn.k_norm" => "attn_k_norm",
        "mlp.gate_proj" => "ffn_gate",
        "mlp.up_proj" => "ffn_up",
        "mlp.down_proj" => "ffn_down",
        other => panic!("unexpected tensor {other}"),
    };
    format!("blk.{layer}.{g}.{suffix}")
}

#[test]
fn qwen3_from_gguf_metadata_matches_transformers() {
    let dir = fixture("tiny-qwen3");
    let want = reference(&dir);
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let n = |k: &str| u32::try_from(config[k].as_u64().unwrap()).unwrap();
    let mut w = ember_gguf::GgufWriter::new(3);
    w.kv_str("general.architecture", "qwen3")
        .kv_u32("qwen3.block_count", n("num_hidden_layers"))
        .kv_u32("qwen3.embedding_length", n("hidden_size"))
        .kv_u32("qwen3.feed_forward_length", n("intermediate_size"))
        .kv_u32("qwen3.attention.head_count", n("num_attention_heads"))
        .kv_u32("qwen3.attention.head_count_kv", n("num_key_value_heads"))
        .kv_u32("qwen3.attention.key_length", n("head_dim"))
        .kv_u32("qwen3.attention.value_length", n("head_dim"))
        .kv_u32("qwen3.context_length", n("max_position_embeddings"))
        .kv_f32("qwen3.attention.layer_norm_rms_epsilon", config["rms_norm_eps"].as_f64().unwrap() as f32)
        .kv_f32("qwen3.rope.freq_base", config["rope_theta"].as_f64().unwrap() as f32);
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut names: Vec<String> = st.names().into_iter().map(str::to_owned).collect();
    names.sort();
    for name in &names {
        let t = st.tensor(name).unwrap();
        let values: Vec<f32> = t.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        w.tensor_f32(&gguf_name(name), t.shape(), &values);
    }
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("tiny-qwen3.gguf");
    w.write(&path).unwrap();

    let device = Device::flex();
    let weights = ember_llama::GgufWeights::open(&path).unwrap();
    let (_, hf_config) = load_hf_dir(&dir, &device).unwrap();
    let c = weights.config();
    assert!(c.qk_norm && c.head_dim() == 32 && !c.tie_word_embeddings);
    assert_eq!((c.num_hidden_layers, c.vocab_size), (hf_config.num_hidden_layers, hf_config.vocab_size));
    let model = weights.load(&device).unwrap();
    let ours = logits(&model, &want.input_ids, &mut KvCache::new(c), &device);
    let err = max_rel_error(&ours, &want.logits);
    assert!(err <= 1e-5, "Qwen3 from GGUF differs from transformers by {err} (relative)");
}
