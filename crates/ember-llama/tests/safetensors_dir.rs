//! The Hugging Face directory loader on a tiny model: sharded bf16 files must give the same model
//! as handing the same (bf16-rounded) values to `load_tensors`; missing and misshapen tensors are
//! errors that name the tensor.

use std::collections::BTreeMap;
use std::path::Path;

use burn::tensor::{Device, Int, Tensor, TensorData};
use ember_llama::{hf_name_of, load_hf_dir, load_tensors, param_paths, KvCache, Llama, LlamaConfig};

const CONFIG: &str = r#"{"model_type": "qwen2", "hidden_size": 64, "num_hidden_layers": 2,
    "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 128, "vocab_size": 97,
    "rope_theta": 10000.0, "rms_norm_eps": 1e-5, "tie_word_embeddings": false}"#;

/// HF-layout tensors with bf16-exact values, keyed by HF name.
fn hf_tensors(config: &LlamaConfig) -> BTreeMap<String, (Vec<f32>, Vec<usize>)> {
    let model = Llama::init(config, &Device::flex());
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut out = BTreeMap::new();
    for path in param_paths(&model) {
        let name = hf_name_of(&path).unwrap();
        let shape = shape_of(config, &name);
        let n: usize = shape.iter().product();
        let data = (0..n)
            .map(|_| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let x = ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.4;
                f32::from_bits(x.to_bits() & 0xffff_0000) // exactly representable in bf16
            })
            .collect();
        out.insert(name, (data, shape));
    }
    out
}

fn shape_of(c: &LlamaConfig, name: &str) -> Vec<usize> {
    let hd = c.head_dim();
    let (q, kv) = (c.num_attention_heads * hd, c.num_key_value_heads * hd);
    let module = name.rsplit('.').nth(1).unwrap_or("");
    match (module, name.ends_with(".bias")) {
        ("embed_tokens" | "lm_head", _) => vec![c.vocab_size, c.hidden_size],
        ("q_proj", false) => vec![q, c.hidden_size],
        ("q_proj", true) => vec![q],
        ("k_proj" | "v_proj", false) => vec![kv, c.hidden_size],
        ("k_proj" | "v_proj", true) => vec![kv],
        ("o_proj", _) => vec![c.hidden_size, q],
        ("gate_proj" | "up_proj", _) => vec![c.intermediate_size, c.hidden_size],
        ("down_proj", _) => vec![c.hidden_size, c.intermediate_size],
        _ => vec![c.hidden_size],
    }
}

/// Writes the tensors as bf16, split over two shards with an index.
fn write_sharded(dir: &Path, tensors: &BTreeMap<String, (Vec<f32>, Vec<usize>)>) {
    std::fs::write(dir.join("config.json"), CONFIG).unwrap();
    let bytes: BTreeMap<&String, Vec<u8>> = tensors
        .iter()
        .map(|(k, (d, _))| (k, d.iter().flat_map(|x| ((x.to_bits() >> 16) as u16).to_le_bytes()).collect()))
        .collect();
    let mut weight_map = serde_json::Map::new();
    for (i, shard) in ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"].iter().enumerate() {
        let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
            .iter()
            .enumerate()
            .filter(|(j, _)| j % 2 == i)
            .map(|(_, (name, (_, shape)))| {
                let view = safetensors::tensor::TensorView::new(safetensors::Dtype::BF16, shape.clone(), &bytes[name])
                    .unwrap();
                weight_map.insert(name.clone(), serde_json::Value::String(shard.to_string()));
                (name.clone(), view)
            })
            .collect();
        safetensors::serialize_to_file(views, None, &dir.join(shard)).unwrap();
    }
    let index = serde_json::json!({"metadata": {}, "weight_map": weight_map});
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
}

fn logits(model: &Llama, config: &LlamaConfig) -> Vec<f32> {
    let ids = vec![5i32, 17, 3, 88, 41];
    let tokens = Tensor::<2, Int>::from_data(TensorData::new(ids.clone(), [1, ids.len()]), &Device::flex());
    model.forward(tokens, &mut KvCache::new(config)).into_data().try_to_vec::<f32>().unwrap()
}

#[test]
fn sharded_bf16_dir_matches_direct_load() {
    let device = Device::flex();
    let config = LlamaConfig::from_hf_json(CONFIG).unwrap();
    assert!(config.attention_bias);
    let tensors = hf_tensors(&config);
    let dir = tempfile::tempdir().unwrap();
    write_sharded(dir.path(), &tensors);

    let (from_dir, dir_config) = load_hf_dir(dir.path(), &device).unwrap();
    assert_eq!(dir_config, config);
    let direct = load_tensors(Llama::init(&config, &device), |name| Ok(tensors.get(name).cloned()), &device).unwrap();
    let (a, b) = (logits(&from_dir, &config), logits(&direct, &config));
    let max = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
    assert!(max <= 1e-5, "max |Δlogit| = {max}");
}

#[test]
fn missing_and_misshapen_tensors_are_named() {
    let device = Device::flex();
    let config = LlamaConfig::from_hf_json(CONFIG).unwrap();

    let mut tensors = hf_tensors(&config);
    tensors.remove("model.layers.1.mlp.up_proj.weight");
    let dir = tempfile::tempdir().unwrap();
    write_sharded(dir.path(), &tensors);
    let err = load_hf_dir(dir.path(), &device).unwrap_err().to_string();
    assert!(err.contains("model.layers.1.mlp.up_proj.weight"), "{err}");

    let mut tensors = hf_tensors(&config);
    tensors.insert("model.norm.weight".into(), (vec![1.0; 32], vec![32]));
    let dir = tempfile::tempdir().unwrap();
    write_sharded(dir.path(), &tensors);
    let err = load_hf_dir(dir.path(), &device).unwrap_err().to_string();
    assert!(err.contains("norm") && err.contains("32"), "{err}");

    let err = load_hf_dir("/nonexistent-model-dir", &device).unwrap_err().to_string();
    assert!(err.contains("/nonexistent-model-dir/config.json"), "{err}");
}
