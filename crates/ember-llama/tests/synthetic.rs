//! Synthetic containers (what `compare_policies --synthetic` measures on large shapes) are real
//! models: they attach, run, and lossless reproduces the dense logits bit for bit.

use burn::tensor::{Device, Int, Tensor, TensorData};
use ember::codec::{Container, SchemeKind};
use ember::policy::NoCache;
use ember::{Config, Store};
use ember_llama::synthetic::{tensors, token_ids, write_config_container};
use ember_llama::{offload, KvCache, LlamaConfig};

fn tiny() -> serde_json::Value {
    serde_json::json!({
        "model_type": "llama", "hidden_size": 64, "intermediate_size": 160, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 300, "rope_theta": 10000.0,
        "rms_norm_eps": 1e-5, "tie_word_embeddings": false
    })
}

fn logits(model: &ember_llama::Llama, store: &Store, ids: &[u32], device: &Device) -> Vec<f32> {
    let input = ids.iter().map(|&t| t as i32).collect::<Vec<_>>();
    let input = Tensor::<2, Int>::from_data(TensorData::new(input, [1, ids.len()]), device);
    let mut cache = KvCache::new(model.config());
    store.forward(|| model.forward(input, &mut cache)).into_data().try_to_vec::<f32>().unwrap()
}

#[test]
fn a_synthetic_model_runs_and_lossless_equals_dense() {
    let dir = tempfile::tempdir().unwrap();
    let device = Device::flex();
    let config = LlamaConfig::from_hf_json(&tiny().to_string()).unwrap();
    let ids = token_ids(config.vocab_size, 12, 5);

    let lossless = dir.path().join("tiny.lossless.ember");
    let mut last = (0, 0);
    write_config_container(&tiny(), "tiny", 5, SchemeKind::Lossless, &lossless, |d, t| last = (d, t)).unwrap();
    let total: u64 = tensors(&config).iter().map(|s| s.elements() as u64).sum();
    assert_eq!(last, (total, total), "progress reaches the parameter count");

    let file = Container::open(&lossless).unwrap();
    assert_eq!(file.tensors().len(), tensors(&config).len());
    let ratio = file.tensors().iter().map(|t| t.stored_bytes()).sum::<u64>() as f64 / (2 * total) as f64;
    assert!((0.55..0.8).contains(&ratio), "lossless stores {ratio:.3} of BF16; trained weights give about 0.67");

    let store = Store::open(&lossless).unwrap();
    assert_eq!(offload::config_of(&store).unwrap(), config);
    let (dense, _) = offload::dense(&store, &device).unwrap();
    let want = logits(&dense, &store, &ids, &device);
    assert!(want.iter().all(|v| v.is_finite()));
    let (attached, _) = offload::attach(&store, &device, Config::new(NoCache)).unwrap();
    assert_eq!(logits(&attached, &store, &ids, &device), want, "lossless must give the dense logits");

    // int8 is close to, not equal to, the lossless model.
    let int8 = dir.path().join("tiny.int8.ember");
    write_config_container(&tiny(), "tiny", 5, SchemeKind::Int8, &int8, |_, _| {}).unwrap();
    let store = Store::open(&int8).unwrap();
    let (model, _) = offload::attach(&store, &device, Config::new(NoCache)).unwrap();
    let got = logits(&model, &store, &ids, &device);
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    let err = got.iter().zip(&want).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(err > 0.0 && err < 0.05 * scale, "int8 logits differ by {err} (scale {scale})");
}

#[test]
fn another_seed_is_another_model() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.ember"), dir.path().join("b.ember"));
    write_config_container(&tiny(), "tiny", 1, SchemeKind::Lossless, &a, |_, _| {}).unwrap();
    write_config_container(&tiny(), "tiny", 2, SchemeKind::Lossless, &b, |_, _| {}).unwrap();
    let (a, b) = (Container::open(&a).unwrap(), Container::open(&b).unwrap());
    let first = |c: &Container| c.decode(c.get("model.layers.0.mlp.up_proj.weight").unwrap()).unwrap().data;
    assert_ne!(first(&a), first(&b));
}
