//! Writes a small seed corpus for every fuzz target under `<out>/<target>/` (default `corpus`):
//! valid inputs made with the crates' own writers, so fuzzing starts from files that get past
//! the first checks. `cargo run --release --example make_seeds -- corpus`.

use std::path::Path;

use ember_codec::container::PREAMBLE_LEN;
use ember_codec::synthetic::float_test_bytes;
use ember_codec::{encode_tensor, ContainerWriter, Dtype, EncodeOptions, SchemeKind};
use ember_gguf::{GgmlType, GgufWriter, MetaValue};

fn put(out: &Path, target: &str, name: &str, bytes: &[u8]) {
    let dir = out.join(target);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), bytes).unwrap();
}

/// Deterministic pseudo-random bytes.
fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 24) as u8
        })
        .collect()
}

/// Blocks of type `t` for `n` elements whose f16 scales are small and finite.
fn blocks(t: GgmlType, n: usize, seed: u64) -> Vec<u8> {
    let mut b = noise(t.bytes_for(n as u64).unwrap() as usize, seed);
    // Keep every f16 in the blocks moderate: clear the top exponent bits of odd bytes.
    for (i, x) in b.iter_mut().enumerate() {
        if i % 2 == 1 {
            *x &= 0x3b;
        }
    }
    b
}

const DEQUANT: &[GgmlType] = &[
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::F64,
    GgmlType::I8,
    GgmlType::I16,
    GgmlType::I32,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
    GgmlType::IQ4_NL,
];

fn byte_chars() -> Vec<char> {
    let printable = |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
    let mut extra = 0;
    (0u32..256)
        .map(|b| {
            if printable(b) {
                char::from_u32(b).unwrap()
            } else {
                extra += 1;
                char::from_u32(255 + extra).unwrap()
            }
        })
        .collect()
}

fn gpt2_tokenizer(w: &mut GgufWriter, pre: &str) {
    let mut tokens: Vec<String> = vec!["<|endoftext|>".into(), "<|im_start|>".into(), "<|im_end|>".into()];
    tokens.extend(byte_chars().iter().map(|c| c.to_string()));
    let merges = ["h e", "l l", "he ll", "hell o", "Ġ w", "o r", "Ġw or", "l d", "Ġwor ld", "1 2"];
    tokens.extend(merges.iter().map(|m| m.replace(' ', "")));
    let mut types = vec![MetaValue::I32(3); 3];
    types.extend(std::iter::repeat_n(MetaValue::I32(1), tokens.len() - 3));
    let tokens: Vec<&str> = tokens.iter().map(String::as_str).collect();
    w.kv_str("tokenizer.ggml.model", "gpt2")
        .kv_str("tokenizer.ggml.pre", pre)
        .kv_str_array("tokenizer.ggml.tokens", &tokens)
        .kv_str_array("tokenizer.ggml.merges", &merges)
        .kv("tokenizer.ggml.token_type", MetaValue::Array(types))
        .kv_u32("tokenizer.ggml.bos_token_id", 1)
        .kv_u32("tokenizer.ggml.eos_token_id", 2)
        .kv_str("tokenizer.chat_template", "{% for m in messages %}<|im_start|>{{ m.content }}<|im_end|>{% endfor %}");
}

fn llama_tokenizer(w: &mut GgufWriter) {
    let mut tokens: Vec<String> = vec!["<unk>".into(), "<s>".into(), "</s>".into()];
    let mut types = vec![2, 3, 3];
    for b in 0..=255u8 {
        tokens.push(format!("<0x{b:02X}>"));
        types.push(6);
    }
    let pieces = ["▁", "h", "e", "l", "o", "he", "ll", "hell", "hello", "▁hello", "▁w", "or", "ld", "▁world"];
    let mut scores = vec![0.0f32; tokens.len()];
    for p in pieces {
        tokens.push(p.into());
        types.push(1);
        scores.push(-10.0 + p.chars().count() as f32);
    }
    let tokens: Vec<&str> = tokens.iter().map(String::as_str).collect();
    w.kv_str("tokenizer.ggml.model", "llama")
        .kv_str_array("tokenizer.ggml.tokens", &tokens)
        .kv("tokenizer.ggml.scores", MetaValue::Array(scores.into_iter().map(MetaValue::F32).collect()))
        .kv("tokenizer.ggml.token_type", MetaValue::Array(types.into_iter().map(MetaValue::I32).collect()))
        .kv_u32("tokenizer.ggml.bos_token_id", 1)
        .kv_u32("tokenizer.ggml.eos_token_id", 2)
        .kv_u32("tokenizer.ggml.unknown_token_id", 0);
}

/// A one-block llama model with Q/K tensors (so un-permutation runs), in the given types.
fn llama_model(types: &[GgmlType], tokenizer: bool) -> GgufWriter {
    let mut w = GgufWriter::new(3);
    w.kv_str("general.architecture", "llama")
        .kv_u32("llama.block_count", 1)
        .kv_u32("llama.embedding_length", 32)
        .kv_u32("llama.feed_forward_length", 64)
        .kv_u32("llama.attention.head_count", 4)
        .kv_u32("llama.attention.head_count_kv", 2)
        .kv_f32("llama.rope.freq_base", 10000.0)
        .kv_f32("llama.attention.layer_norm_rms_epsilon", 1e-5)
        .kv_u32("llama.context_length", 256);
    if tokenizer {
        gpt2_tokenizer(&mut w, "smollm");
    }
    let pick = |i: usize| types[i % types.len()];
    let t = pick(0);
    w.tensor("blk.0.attn_q.weight", &[8, 256], t, blocks(t, 8 * 256, 1));
    let t = pick(1);
    w.tensor("blk.0.attn_k.weight", &[4, 256], t, blocks(t, 4 * 256, 2));
    let t = pick(2);
    w.tensor("blk.0.ffn_down.weight", &[2, 256], t, blocks(t, 2 * 256, 3));
    w.tensor_f32("output_norm.weight", &[32], &[1.0; 32]);
    w.tensor_f32("blk.0.attn_q.bias", &[8], &[0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0]);
    w
}

fn safetensors(tensors: &[(&str, safetensors::Dtype, Vec<usize>, Vec<u8>)]) -> Vec<u8> {
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(n, d, s, b)| (n.to_string(), safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize(views, None).unwrap()
}

/// A container with the tensors `(name, dtype, shape, scheme)`; returns its bytes.
fn ember_file(tensors: &[(&str, Dtype, Vec<u64>, SchemeKind)], opts: &EncodeOptions, specials: bool) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("seed.ember");
    let mut w = ContainerWriter::create(&path).unwrap();
    for (i, (name, dtype, shape, kind)) in tensors.iter().enumerate() {
        let n: u64 = shape.iter().product();
        let data = if dtype.float_layout().is_some() {
            float_test_bytes(*dtype, n as usize, i as u64 + 7, specials)
        } else {
            noise(n as usize * dtype.size(), i as u64)
        };
        w.add(encode_tensor(name, *dtype, shape, &data, *kind, opts).unwrap()).unwrap();
    }
    w.finish().unwrap();
    std::fs::read(&path).unwrap()
}

/// `decode_batch_flex`'s input for a container: flag, header length, header, data bytes.
fn batch_input(file: &[u8], flag: u8) -> Vec<u8> {
    let pre = ember_codec::container::Preamble::parse(file[..PREAMBLE_LEN].try_into().unwrap()).unwrap();
    let h0 = pre.header_offset as usize;
    // The target takes the header as JSON (the writer stores it compressed).
    let json = ember_codec::container::index::read_header_json(Path::new("seed.ember"), file).unwrap();
    let mut out = vec![flag];
    out.extend_from_slice(&(json.len() as u16).to_le_bytes());
    out.extend_from_slice(&json);
    out.extend_from_slice(&file[PREAMBLE_LEN..h0]);
    out
}

fn main() {
    let out = std::env::args().nth(1).unwrap_or_else(|| "corpus".into());
    let out = Path::new(&out);

    // gguf_dequant: [type id][mode][blocks].
    for (i, &t) in DEQUANT.iter().enumerate() {
        let mut s = vec![t.id() as u8, 0];
        s.extend(blocks(t, t.block_elems() * 2, i as u64));
        put(out, "gguf_dequant", &format!("{}", t.name()), &s);
    }

    // gguf_read: models in every dequantizable type, v2, an alignment, a tokenizer.
    for (i, &t) in DEQUANT.iter().enumerate() {
        let w = llama_model(&[t], false);
        put(out, "gguf_read", &format!("llama_{}", t.name()), &w.to_bytes());
        if i % 4 == 0 {
            put(out, "gguf_to_ember", &format!("llama_{}", t.name()), &[&[0u8][..], &w.to_bytes()].concat());
        }
    }
    let mut w = llama_model(&[GgmlType::Q4_K, GgmlType::Q8_0, GgmlType::F16], true);
    put(out, "gguf_read", "llama_tok", &w.to_bytes());
    put(out, "gguf_to_ember", "llama_tok_lossless", &[&[0u8][..], &w.to_bytes()].concat());
    put(out, "gguf_to_ember", "llama_tok_int8", &[&[2u8][..], &w.to_bytes()].concat());
    w.alignment(64);
    put(out, "gguf_read", "llama_align64", &w.to_bytes());
    let mut v2 = GgufWriter::new(2);
    v2.kv_str("general.architecture", "qwen2").kv("general.flag", MetaValue::Bool(true));
    v2.kv("x.nested", MetaValue::Array(vec![MetaValue::Array(vec![MetaValue::I64(-1), MetaValue::I64(2)])]));
    v2.kv("x.f64", MetaValue::F64(0.25)).kv("x.u8", MetaValue::U8(3)).kv("x.i16", MetaValue::I16(-3));
    v2.tensor("blk.0.attn_v.weight", &[2, 32], GgmlType::Q5_1, blocks(GgmlType::Q5_1, 64, 9));
    put(out, "gguf_read", "v2_qwen2", &v2.to_bytes());
    put(out, "gguf_to_ember", "v2_qwen2_int4", &[&[4u8][..], &v2.to_bytes()].concat());

    // gguf_tokenizer: files (even flag) and structured choices (odd flag).
    let mut w = GgufWriter::new(3);
    gpt2_tokenizer(&mut w, "smollm");
    put(out, "gguf_tokenizer", "gpt2_smollm", &[&[0u8][..], &w.to_bytes()].concat());
    let mut w = GgufWriter::new(3);
    gpt2_tokenizer(&mut w, "llama-bpe");
    put(out, "gguf_tokenizer", "gpt2_llama_bpe", &[&[0u8][..], &w.to_bytes()].concat());
    let mut w = GgufWriter::new(3);
    llama_tokenizer(&mut w);
    put(out, "gguf_tokenizer", "llama_spm", &[&[0u8][..], &w.to_bytes()].concat());
    for i in 0..8u64 {
        let mut s = vec![1u8 | (i as u8) << 1];
        s.extend(noise(200, 100 + i));
        put(out, "gguf_tokenizer", &format!("structured_{i}"), &s);
    }
    for i in 0..6u64 {
        let mut s = vec![1u8 | (i as u8) << 1];
        s.extend(noise(400, 200 + i));
        put(out, "gguf_to_ember", &format!("structured_{i}"), &s);
    }

    // safetensors_read: a file with several dtypes; a directory with an index.
    use safetensors::Dtype as St;
    let bf = float_test_bytes(Dtype::BF16, 256, 1, true);
    let f16 = float_test_bytes(Dtype::F16, 64, 2, false);
    let f32 = float_test_bytes(Dtype::F32, 32, 3, false);
    let st = safetensors(&[
        ("model.layers.0.mlp.up_proj.weight", St::BF16, vec![16, 16], bf),
        ("model.norm.weight", St::F16, vec![64], f16),
        ("lm_head.weight", St::F32, vec![4, 8], f32),
        ("ids", St::I32, vec![3], noise(12, 4)),
        ("flags", St::U8, vec![2, 2], vec![1, 0, 1, 1]),
    ]);
    for (flag, name) in [(0u8, "lossless"), (2, "int8"), (4, "int4"), (6, "raw")] {
        put(out, "safetensors_read", &format!("file_{name}"), &[&[flag][..], &st].concat());
    }
    let index = serde_json::json!({
        "metadata": {"total_size": 1000},
        "weight_map": {
            "model.layers.0.mlp.up_proj.weight": "model-00001-of-00002.safetensors",
            "model.norm.weight": "model-00001-of-00002.safetensors",
            "lm_head.weight": "model-00001-of-00002.safetensors",
            "ids": "model-00001-of-00002.safetensors",
            "flags": "model-00001-of-00002.safetensors"
        }
    })
    .to_string();
    let mut s = vec![1u8];
    s.extend_from_slice(&(index.len() as u16).to_le_bytes());
    s.extend_from_slice(index.as_bytes());
    s.extend_from_slice(&st);
    put(out, "safetensors_read", "dir_index", &s);

    // decode_batch_flex (and open_and_decode): containers of every kernel scheme.
    let opts = EncodeOptions { tile_elems: 64, lanes: 4, int4_block: 8, ..EncodeOptions::default() };
    let files = [
        (
            "lossless_bf16",
            vec![
                ("a", Dtype::BF16, vec![8, 24], SchemeKind::Lossless),
                ("b", Dtype::BF16, vec![40], SchemeKind::Lossless),
            ],
            true,
        ),
        (
            "lossless_f16_f32",
            vec![
                ("a", Dtype::F16, vec![4, 33], SchemeKind::Lossless),
                ("b", Dtype::F32, vec![2, 50], SchemeKind::Lossless),
            ],
            true,
        ),
        (
            "int8",
            vec![("a", Dtype::BF16, vec![6, 32], SchemeKind::Int8), ("b", Dtype::F32, vec![3, 17], SchemeKind::Int8)],
            false,
        ),
        (
            "int4",
            vec![("a", Dtype::BF16, vec![4, 32], SchemeKind::Int4), ("b", Dtype::F16, vec![2, 20], SchemeKind::Int4)],
            false,
        ),
        (
            "raw",
            vec![
                ("a", Dtype::BF16, vec![5, 7], SchemeKind::Raw),
                ("b", Dtype::F32, vec![9], SchemeKind::Raw),
                ("c", Dtype::I32, vec![3], SchemeKind::Raw),
            ],
            true,
        ),
    ];
    for (name, tensors, specials) in &files {
        let f = ember_file(tensors, &opts, *specials);
        put(out, "decode_batch_flex", name, &batch_input(&f, 1));
        put(out, "decode_batch_flex", &format!("{name}_native16"), &batch_input(&f, 3));
        put(out, "open_and_decode", name, &[&[0u8][..], &f].concat());
    }
    let asym = EncodeOptions { int4_asymmetric: true, ..opts };
    let f = ember_file(&[("a", Dtype::BF16, vec![4, 32], SchemeKind::Int4)], &asym, false);
    put(out, "decode_batch_flex", "int4_asymmetric", &batch_input(&f, 1));
    let lanes32 = EncodeOptions { lanes: 32, min_symbols_per_lane: 0, tile_elems: 512, ..opts };
    let f = ember_file(&[("a", Dtype::BF16, vec![16, 64], SchemeKind::Lossless)], &lanes32, false);
    put(out, "decode_batch_flex", "lossless_32_lanes", &batch_input(&f, 3));
    eprintln!("seeds written under {}", out.display());
}
