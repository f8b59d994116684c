//! The real model (SmolLM2-135M-Instruct, Q4_1 GGUF): greedy generation against the reference
//! continuation, and the safetensors path against the GGUF path.

use std::collections::BTreeMap;

use burn::tensor::{Device, Int, Tensor, TensorData};
use ember_llama::{generate, load_hf_dir, GenerateOptions, GgufWeights, KvCache, Sampler};

/// "The capital of France is Paris. The capital of Germany is", byte-level BPE, no BOS.
const PROMPT: [u32; 12] = [504, 3575, 282, 4649, 314, 7042, 30, 378, 3575, 282, 4521, 314];
/// " Berlin. The capital of the" — greedy reference (HF half-split RoPE on un-permuted Q/K).
const REFERENCE: [u32; 6] = [11452, 30, 378, 3575, 282, 260];

fn gguf() -> GgufWeights {
    let path = ember_gguf::fetch::default_model_gguf().expect("the SmolLM2 GGUF (cached or downloadable)");
    GgufWeights::open(&path).expect("a loadable GGUF")
}

#[test]
fn greedy_generation_matches_reference() {
    let device = Device::flex();
    let weights = gguf();
    let config = weights.config().clone();
    assert_eq!((config.num_hidden_layers, config.hidden_size, config.num_key_value_heads), (30, 576, 3));
    assert!(config.tie_word_embeddings);
    let model = weights.load(&device).unwrap();

    let options = GenerateOptions { max_tokens: REFERENCE.len(), sampler: Sampler::greedy(), stop_ids: vec![] };
    let mut streamed = Vec::new();
    let out = generate(&model, &PROMPT, &options, |id| streamed.push(id)).unwrap();
    eprintln!(
        "generated {:?}; prefill {:.2}s, decode {:.2}s ({:.1} tok/s)",
        out.tokens,
        out.prefill_secs,
        out.decode_secs,
        out.decode_tokens_per_sec()
    );
    assert_eq!(out.tokens.first(), Some(&11452), "first token must be \" Berlin\"");
    assert_eq!(out.tokens, REFERENCE);
    assert_eq!(streamed, out.tokens);
    assert_eq!(out.prompt_tokens, PROMPT.len());
}

#[test]
fn safetensors_and_gguf_give_the_same_logits() {
    let device = Device::flex();
    let weights = gguf();

    // Export the dequantized GGUF as a Hugging Face checkpoint.
    let dir = tempfile::tempdir().unwrap();
    let mut tensors: BTreeMap<String, (Vec<u8>, Vec<usize>)> = BTreeMap::new();
    for name in weights.hf_names() {
        let (data, shape) = weights.tensor(name).unwrap().unwrap();
        let bytes: Vec<u8> = data.iter().flat_map(|x| x.to_le_bytes()).collect();
        tensors.insert(name.to_string(), (bytes, shape));
    }
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(name, (bytes, shape))| {
            (name.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), bytes).unwrap())
        })
        .collect();
    safetensors::serialize_to_file(views, None, &dir.path().join("model.safetensors")).unwrap();
    std::fs::write(dir.path().join("config.json"), weights.hf_config_json().to_string()).unwrap();
    drop(tensors);

    let (st_model, st_config) = load_hf_dir(dir.path(), &device).unwrap();
    assert_eq!(&st_config, weights.config());
    let gguf_model = weights.load(&device).unwrap();

    let ids: Vec<i32> = PROMPT[..5].iter().map(|&x| x as i32).collect();
    let logits = |model: &ember_llama::Llama| {
        let tokens = Tensor::<2, Int>::from_data(TensorData::new(ids.clone(), [1, ids.len()]), &device);
        model.forward(tokens, &mut KvCache::new(&st_config)).into_data().try_to_vec::<f32>().unwrap()
    };
    let (a, b) = (logits(&st_model), logits(&gguf_model));
    assert_eq!(a.len(), ids.len() * st_config.vocab_size);
    let max = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
    eprintln!("max |Δlogit| safetensors vs GGUF: {max:e}");
    assert!(max <= 1e-5, "max |Δlogit| = {max}");
}
