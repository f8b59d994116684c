//! The model with compressed weights against the dense model: on the real SmolLM2 container
//! (lossless: every policy and residency generates exactly the dense token ids) and on a tiny
//! random Llama on Vulkan (lavapipe in CI).

#[path = "../../../examples/common/mod.rs"]
#[allow(dead_code)]
mod common;

#[path = "../../../tests/support/forge.rs"]
mod forge;

use burn::tensor::{Device, Tensor};
use ember::policy::CachePolicy;
use ember::{Config, FusedForm, FusedMode, Residency, Store};
use ember_codec::synthetic::{llama_like_f32, to_bf16_bytes};
use ember_codec::{encode_tensor, ContainerWriter, Dtype, EncodeOptions, SchemeKind};
use ember_llama::{generate_with, offload, GenerateOptions, Generation, Llama, LlamaConfig, Sampler};

/// "The capital of France is Paris. The capital of Germany is" (no BOS).
const PROMPT: [u32; 12] = [504, 3575, 282, 4649, 314, 7042, 30, 378, 3575, 282, 4521, 314];

fn run(model: &Llama, store: &Store, prompt: &[u32], n: usize) -> Generation {
    let opts = GenerateOptions { max_tokens: n, sampler: Sampler::greedy(), stop_ids: vec![] };
    generate_with(model, prompt, &opts, |_| {}, |f| store.forward(f)).expect("generation")
}

const POLICIES: [&str; 4] = ["none", "per-forward", "full", "adaptive"];

/// A fresh built-in policy (policies hold per-attachment state).
fn policy(name: &str, budget: u64) -> Box<dyn CachePolicy> {
    ember::policy::by_name(name, Some(budget)).expect("a built-in policy")
}

#[test]
fn smollm2_lossless_generates_the_dense_tokens_with_every_policy() {
    let device = Device::flex();
    let path = common::container_for(None, "lossless").expect("the default model container");
    let store = Store::open(&path).unwrap();
    let tokenizer = offload::tokenizer_of(&store).unwrap();
    let text = "The capital of France is Paris. The capital of Germany is";
    assert_eq!(tokenizer.encode(text, false).unwrap(), PROMPT, "the stored tokenizer");
    let (dense, config) = offload::dense(&store, &device).unwrap();
    let want = run(&dense, &store, &PROMPT, 6).tokens;
    assert_eq!(want[0], 11452, "dense continues with \" Berlin\"");
    assert_eq!(tokenizer.decode(&want[..1]).unwrap(), " Berlin");
    drop(dense);
    let decoded: u64 = store.container().tensors().iter().map(|t| 4 * t.elements()).sum();
    for (i, label) in POLICIES.into_iter().enumerate() {
        for residency in [Residency::Host, Residency::Device] {
            let prefetch = i % 2 == usize::from(residency == Residency::Host);
            let store = Store::open(&path).unwrap();
            let cfg = Config::new(policy(label, decoded / 2)).residency(residency).prefetch(prefetch);
            let (model, c) = offload::attach(&store, &device, cfg).unwrap();
            assert_eq!(c, config);
            let got = run(&model, &store, &PROMPT, 6).tokens;
            assert_eq!(got, want, "{label} {residency:?} prefetch={prefetch}");
            let s = store.stats();
            assert!(s.decode_count > 0 && s.compressed_weights > 200, "{label}: {s}");
        }
    }
}

/// What a forger does to a tile, and the error text that names it.
type Craft = (&'static str, Box<dyn Fn(&mut [u8])>);

/// The default SmolLM2 container with the lane states of one tile of
/// `model.layers.3.mlp.down_proj.weight` set to 0 and every checksum recomputed: it opens (the
/// checksums pass), but the model — dense or compressed, fused or not, on the CPU path or on
/// Vulkan — is refused when it is attached, with an error naming the file, tensor and tile,
/// before any forward pass. A lane state nudged within the valid range (only a decode can tell)
/// is refused the same way.
#[test]
fn a_crafted_smollm2_container_is_an_error_not_a_panic() {
    let path = common::container_for(None, "lossless").expect("the default model container");
    let good = std::fs::read(&path).unwrap();
    let tensor = "model.layers.3.mlp.down_proj.weight";
    let lanes = Store::open(&path).unwrap().container().get(tensor).unwrap().scheme.coder().unwrap().lanes as usize;
    let dir = tempfile::tempdir().unwrap();
    let crafts: [Craft; 2] = [
        ("lane 0 starts with a denormalised state", Box::new(move |p| forge::set_states(p, lanes, 0))),
        ("exact end", Box::new(forge::nudge_first_state)),
    ];
    let vulkan = ember_kernels::device::vulkan_device().expect("a Vulkan device (lavapipe in CI)");
    for (why, edit) in crafts {
        let crafted = dir.path().join("crafted.ember");
        std::fs::write(&crafted, forge::forge_tile(&good, tensor, 5, edit)).unwrap();
        let store = Store::open(&crafted).expect("the forged checksums pass");
        let check = |what: &str, e: ember_llama::offload::OffloadError| {
            let msg = e.to_string();
            assert!(msg.contains("crafted.ember") && msg.contains(tensor) && msg.contains("tile 5"), "{what}: {msg}");
            assert!(msg.contains(why) || msg.contains("did not decode"), "{what}: {msg}");
        };
        check("dense", offload::dense(&store, &Device::flex()).map(drop).unwrap_err());
        for fused in [FusedMode::Off, FusedMode::On] {
            for device in [Device::flex(), vulkan.clone()] {
                let cfg = Config::new(policy("none", 0)).fused(fused);
                check(
                    &format!("none {fused:?} {device:?}"),
                    offload::attach(&store, &device, cfg).map(drop).unwrap_err(),
                );
            }
        }
        // Kept entropy-coded for fused products (nothing transcoded): every tile is still
        // decoded once at attach.
        let cfg = Config::new(policy("none", 0)).fused(FusedMode::On).fused_form(FusedForm::Coded);
        check("none coded", offload::attach(&store, &Device::flex(), cfg).map(drop).unwrap_err());
    }
}

fn logits_of(model: &Llama, store: &Store, device: &Device, tokens: &[u32]) -> Vec<u32> {
    let ids: Vec<i32> = tokens.iter().map(|&t| t as i32).collect();
    let tokens =
        Tensor::<2, burn::tensor::Int>::from_data(burn::tensor::TensorData::new(ids, [1, tokens.len()]), device);
    let mut cache = ember_llama::KvCache::new(model.config());
    let l = store.forward(|| model.forward(tokens, &mut cache)).into_data().try_to_vec::<f32>().unwrap();
    l.iter().map(|v| v.to_bits()).collect()
}

#[test]
fn smollm2_fused_products_give_the_dense_logits_and_never_decode_a_matrix() {
    let device = Device::flex();
    let path = common::container_for(None, "lossless").expect("the default model container");
    let store = Store::open(&path).unwrap();
    let (dense, _) = offload::dense(&store, &device).unwrap();
    let want_logits = logits_of(&dense, &store, &device, &PROMPT);
    let want = run(&dense, &store, &PROMPT, 6).tokens;
    drop(dense);
    for (label, form) in [("none", FusedForm::Fast), ("per-forward", FusedForm::Fast), ("none", FusedForm::Coded)] {
        let store = Store::open(&path).unwrap();
        let cfg = Config::new(policy(label, 0)).residency(Residency::Host).fused(FusedMode::On).fused_form(form);
        let (model, _) = offload::attach(&store, &device, cfg).unwrap();
        let label = format!("{label} {}", form.name());
        // The fast form and the coded tiles decode to the dense values and every path sums in
        // the same order on the CPU path: the logits are the dense ones bit for bit.
        assert!(logits_of(&model, &store, &device, &PROMPT) == want_logits, "{label}: fused logits differ from dense");
        store.reset_stats();
        assert_eq!(run(&model, &store, &PROMPT, 6).tokens, want, "{label}: fused tokens");
        let s = store.stats();
        let matrices: Vec<_> = s.weights.iter().filter(|w| w.form != "entropy").collect();
        assert!(matrices.len() >= 210, "{label}: every matrix is kept for fused products ({} are)", matrices.len());
        let coded = matrices.iter().filter(|w| w.form == "entropy-coded").count();
        assert_eq!(coded == matrices.len(), form == FusedForm::Coded, "{label}: {coded} entropy-coded");
        for w in &matrices {
            assert_eq!(w.decodes, 0, "{label}: {} was decoded", w.tensor);
            assert!(w.fused_calls > 0, "{label}: {} never ran fused", w.tensor);
        }
        assert_eq!(s.cached_bytes, 0, "{label}: nothing decoded stays cached");
    }
}

/// HF-layout shapes of the tiny config's tensors.
fn tiny_tensors(c: &LlamaConfig) -> Vec<(String, Vec<u64>)> {
    let (h, i, v) = (c.hidden_size as u64, c.intermediate_size as u64, c.vocab_size as u64);
    let kv = (c.num_key_value_heads * c.head_dim()) as u64;
    let mut t = vec![("model.embed_tokens.weight".to_string(), vec![v, h]), ("model.norm.weight".into(), vec![h])];
    if !c.tie_word_embeddings {
        t.push(("lm_head.weight".into(), vec![v, h]));
    }
    for l in 0..c.num_hidden_layers {
        let p = format!("model.layers.{l}");
        t.extend([
            (format!("{p}.input_layernorm.weight"), vec![h]),
            (format!("{p}.post_attention_layernorm.weight"), vec![h]),
            (format!("{p}.self_attn.q_proj.weight"), vec![h, h]),
            (format!("{p}.self_attn.k_proj.weight"), vec![kv, h]),
            (format!("{p}.self_attn.v_proj.weight"), vec![kv, h]),
            (format!("{p}.self_attn.o_proj.weight"), vec![h, h]),
            (format!("{p}.mlp.gate_proj.weight"), vec![i, h]),
            (format!("{p}.mlp.up_proj.weight"), vec![i, h]),
            (format!("{p}.mlp.down_proj.weight"), vec![h, i]),
        ]);
    }
    t
}

fn tiny_container(dir: &std::path::Path, scheme: SchemeKind) -> std::path::PathBuf {
    let c = LlamaConfig::tiny();
    let path = dir.join(format!("tiny-{scheme}.ember"));
    let mut w = ContainerWriter::create(&path).unwrap();
    let config = serde_json::json!({
        "model_type": "llama", "hidden_size": c.hidden_size, "num_hidden_layers": c.num_hidden_layers,
        "num_attention_heads": c.num_attention_heads, "num_key_value_heads": c.num_key_value_heads,
        "intermediate_size": c.intermediate_size, "vocab_size": c.vocab_size, "rope_theta": c.rope_theta,
        "rms_norm_eps": c.rms_norm_eps, "max_position_embeddings": c.max_position_embeddings,
        "tie_word_embeddings": false,
    });
    w.set_metadata("ember.llama.config", config.to_string());
    for (k, (name, shape)) in tiny_tensors(&c).into_iter().enumerate() {
        let (rows, cols) =
            if shape.len() == 2 { (shape[0] as usize, shape[1] as usize) } else { (1, shape[0] as usize) };
        let mut values = llama_like_f32(rows, cols, 100 + k as u64);
        if name.contains("norm") {
            values.iter_mut().for_each(|v| *v += 1.0);
        } else {
            // Larger than a trained model's weights, so a random model's logits are not all ties.
            values.iter_mut().for_each(|v| *v *= 8.0);
        }
        let kind = if shape.len() == 2 { scheme } else { SchemeKind::Lossless };
        let opts = EncodeOptions { tile_elems: 1024, ..EncodeOptions::default() };
        w.add(encode_tensor(&name, Dtype::BF16, &shape, &to_bf16_bytes(&values), kind, &opts).unwrap()).unwrap();
    }
    w.finish().unwrap();
    path
}

fn logits(model: &Llama, store: &Store, device: &Device) -> Vec<f32> {
    let tokens = Tensor::<2, burn::tensor::Int>::from_data([[3i32, 14, 15, 92, 65, 35]], device);
    let mut cache = ember_llama::KvCache::new(model.config());
    store.forward(|| model.forward(tokens, &mut cache)).into_data().try_to_vec::<f32>().unwrap()
}

fn check_tiny(device: &Device) {
    let dir = tempfile::tempdir().unwrap();
    for scheme in [SchemeKind::Lossless, SchemeKind::Int8, SchemeKind::Int4] {
        let path = tiny_container(dir.path(), scheme);
        let store = Store::open(&path).unwrap();
        let (dense, _) = offload::dense(&store, device).unwrap();
        let want = logits(&dense, &store, device);
        let want_tokens = run(&dense, &store, &[1, 2, 3], 5).tokens;
        // Room for two of the largest matrices (the MLP projections, 128 × 64 f32).
        let budget = 2 * 4 * 128 * 64;
        for label in POLICIES {
            for residency in [Residency::Host, Residency::Device] {
                let store = Store::open(&path).unwrap();
                let (model, _) =
                    offload::attach(&store, device, Config::new(policy(label, budget)).residency(residency)).unwrap();
                let got = logits(&model, &store, device);
                let err = got.iter().zip(&want).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
                // The decoded parameters are the dense ones bit for bit (see the ember crate's
                // tests); the matmuls of a GPU may pick other kernels for them.
                assert!(err <= 1e-4, "{scheme} {label} {residency:?}: logits differ by {err}");
                assert_eq!(run(&model, &store, &[1, 2, 3], 5).tokens, want_tokens, "{scheme} {label} {residency:?}");
            }
        }
    }
}

#[test]
fn tiny_llama_matches_dense_on_vulkan() {
    let device = ember_kernels::device::vulkan_device()
        .expect("a Vulkan device (lavapipe: apt-get install mesa-vulkan-drivers libvulkan1)");
    check_tiny(&device);
}

#[test]
fn tiny_llama_matches_dense_on_the_cpu_path() {
    check_tiny(&Device::flex());
}
