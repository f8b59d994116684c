//! KV-cached decoding must reproduce a full-sequence forward: same logits at every position,
//! whether the sequence arrives at once, token by token, or in chunks.

use burn::tensor::{Device, Int, Tensor, TensorData};
use ember_llama::{load_tensors, KvCache, Llama, Llama3RopeScaling, LlamaConfig};

/// A model with deterministic pseudo-random weights (norm gains near 1, the rest small).
fn seeded_model(config: &LlamaConfig, device: &Device) -> Llama {
    let mut state = 0x1234_5678_9abc_def0u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5 // [-0.5, 0.5)
    };
    let model = Llama::init(config, device);
    // Shapes in HF layout follow from the names and the config.
    let c = config.clone();
    let hd = c.head_dim();
    load_tensors(
        model,
        |name| {
            let shape = hf_shape(&c, hd, name);
            let n: usize = shape.iter().product();
            let data = if name.ends_with("layernorm.weight") || name == "model.norm.weight" {
                (0..n).map(|_| 1.0 + 0.2 * next()).collect()
            } else {
                (0..n).map(|_| 0.4 * next()).collect()
            };
            Ok(Some((data, shape)))
        },
        device,
    )
    .expect("seeded weights fit the config")
}

fn hf_shape(c: &LlamaConfig, hd: usize, name: &str) -> Vec<usize> {
    let (h, kv) = (c.num_attention_heads * hd, c.num_key_value_heads * hd);
    let last = name.rsplit('.').nth(1).unwrap_or("");
    let bias = name.ends_with(".bias");
    match (last, bias) {
        ("embed_tokens", _) => vec![c.vocab_size, c.hidden_size],
        ("lm_head", _) => vec![c.vocab_size, c.hidden_size],
        ("q_proj", false) => vec![h, c.hidden_size],
        ("q_proj", true) => vec![h],
        ("k_proj" | "v_proj", false) => vec![kv, c.hidden_size],
        ("k_proj" | "v_proj", true) => vec![kv],
        ("o_proj", _) => vec![c.hidden_size, h],
        ("gate_proj" | "up_proj", _) => vec![c.intermediate_size, c.hidden_size],
        ("down_proj", _) => vec![c.hidden_size, c.intermediate_size],
        _ => vec![c.hidden_size], // norms
    }
}

fn tokens(ids: &[i32], device: &Device) -> Tensor<2, Int> {
    Tensor::from_data(TensorData::new(ids.to_vec(), [1, ids.len()]), device)
}

fn rows(t: Tensor<3>) -> Vec<Vec<f32>> {
    let [_, s, v] = t.dims();
    let data = t.into_data().try_to_vec::<f32>().unwrap();
    (0..s).map(|i| data[i * v..(i + 1) * v].to_vec()).collect()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

fn check_incremental_matches_full(config: &LlamaConfig) {
    let device = Device::flex();
    let model = seeded_model(config, &device);
    let ids = [3, 17, 42, 8, 91, 0, 55, 23, 64];

    let full = rows(model.forward(tokens(&ids, &device), &mut KvCache::new(config)));
    assert_eq!(full.len(), ids.len());
    assert!(full.iter().flatten().all(|x| x.is_finite()));

    // Prefill 3, one at a time for 3, then a chunk of 3 (the mask must continue from the cache).
    let mut cache = KvCache::new(config);
    let mut incremental = rows(model.forward(tokens(&ids[..3], &device), &mut cache));
    for i in 3..6 {
        incremental.extend(rows(model.forward(tokens(&ids[i..i + 1], &device), &mut cache)));
    }
    incremental.extend(rows(model.forward(tokens(&ids[6..], &device), &mut cache)));
    assert_eq!(cache.len(), ids.len());

    for (pos, (a, b)) in full.iter().zip(&incremental).enumerate() {
        let d = max_diff(a, b);
        assert!(d <= 1e-4, "position {pos}: max |Δlogit| = {d}");
    }

    // forward_last is the last row of forward.
    let mut cache = KvCache::new(config);
    let last = rows(model.forward_last(tokens(&ids, &device), &mut cache));
    assert_eq!(last.len(), 1);
    assert!(max_diff(&last[0], &full[ids.len() - 1]) <= 1e-5);

    // The test can fail: a different history changes the last logits.
    let mut other = ids;
    other[0] = 4;
    let changed = rows(model.forward(tokens(&other, &device), &mut KvCache::new(config)));
    assert!(max_diff(&changed[ids.len() - 1], &full[ids.len() - 1]) > 1e-3);
}

#[test]
fn kv_cache_matches_full_forward() {
    check_incremental_matches_full(&LlamaConfig::tiny());
}

#[test]
fn kv_cache_matches_full_forward_tied_biased_scaled() {
    let config = LlamaConfig {
        tie_word_embeddings: true,
        attention_bias: true,
        rope_scaling: Some(Llama3RopeScaling {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 64,
        }),
        ..LlamaConfig::tiny()
    };
    check_incremental_matches_full(&config);
}

#[test]
fn init_allocates_no_weights_and_names_every_parameter() {
    let config = LlamaConfig { attention_bias: true, ..LlamaConfig::tiny() };
    let model = Llama::init(&config, &Device::flex());
    assert!(!model.embedding.weight.is_initialized());
    assert!(!model.layers[0].attention.wq.weight.is_initialized());
    let paths = ember_llama::param_paths(&model);
    assert!(paths.contains(&"layers.1.attention.wq.bias".to_string()));
    assert!(paths.contains(&"layers.0.attention_norm.gamma".to_string()));
    for p in &paths {
        assert!(ember_llama::hf_name_of(p).is_some(), "{p}");
    }
}

#[test]
fn shape_mismatch_is_an_error() {
    let config = LlamaConfig::tiny();
    let device = Device::flex();
    let err = load_tensors(Llama::init(&config, &device), |_| Ok(Some((vec![0.0; 6], vec![2, 3]))), &device)
        .unwrap_err()
        .to_string();
    assert!(err.contains("model.embed_tokens.weight") && err.contains("[2, 3]"), "{err}");

    let err = load_tensors(Llama::init(&config, &device), |_| Ok(None), &device).unwrap_err().to_string();
    assert!(err.contains("not found"), "{err}");
}
