//! `ember compress` on a GGUF file: tensors dequantized, renamed to HF names, Q/K rows
//! un-permuted, and the model's config, tokenizer and chat template stored in the container.

use std::path::Path;
use std::process::{Command, Output};

use ember_gguf::{GgmlType, GgufWriter, MetaValue, Tokenizer};
use safetensors::tensor::Dtype as StDtype;
use safetensors::SafeTensors;

fn ember(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_ember")).args(args).output().expect("run ember");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "ember {args:?} panicked:\n{stderr}");
    out
}

fn ok(args: &[&str]) -> Output {
    let out = ember(args);
    assert!(out.status.success(), "ember {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    out
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

const HIDDEN: usize = 64;
const HEADS: usize = 4;
const KV_HEADS: usize = 2;
const HEAD_DIM: usize = HIDDEN / HEADS;
const FFN: usize = 128;

/// Q8_0 blocks with scale 1/64 and codes cycling through -64..64.
fn q8_0(n: usize) -> Vec<u8> {
    (0..n / 32)
        .flat_map(|b| {
            let mut block = half::f16::from_f32(1.0 / 64.0).to_le_bytes().to_vec();
            block.extend((0..32).map(|i| ((b * 7 + i) % 128) as u8 ^ 0xc0));
            block
        })
        .collect()
}

/// A one-block llama model: the GGUF's Q/K rows hold their own (GGUF) row index, so the
/// un-permuted order can be checked value by value.
fn synthetic_gguf(path: &Path) {
    synthetic_gguf_with_q(path, &[HIDDEN, HIDDEN]);
}

/// The synthetic GGUF with `blk.0.attn_q.weight` of `q_shape` (row-numbered values).
fn synthetic_gguf_with_q(path: &Path, q_shape: &[usize]) {
    synthetic_gguf_with(path, q_shape, false);
}

/// `Q4_0` (`asymmetric = false`) or `Q4_1` blocks for `n` elements: scales, minima and codes
/// vary from block to block, and each row gets its own scale, so a moved row shows.
fn q4(n: usize, asymmetric: bool) -> Vec<u8> {
    (0..n / 32)
        .flat_map(|b| {
            let mut block = half::f16::from_f32(0.003 + (b % 97) as f32 * 0.0011).to_le_bytes().to_vec();
            if asymmetric {
                block.extend(half::f16::from_f32(-0.04 - (b % 13) as f32 * 0.0007).to_le_bytes());
            }
            block.extend((0..16).map(|i| (((b * 5 + i * 3) % 16) | (((b + i * 7) % 16) << 4)) as u8));
            block
        })
        .collect()
}

/// The synthetic GGUF; with `q4`, Q and K (permuted), gate and up are `Q4_0`/`Q4_1` blocks.
fn synthetic_gguf_with(path: &Path, q_shape: &[usize], q4_blocks: bool) {
    let mut w = GgufWriter::new(3);
    w.kv_str("general.architecture", "llama")
        .kv_u32("llama.block_count", 1)
        .kv_u32("llama.embedding_length", HIDDEN as u32)
        .kv_u32("llama.feed_forward_length", FFN as u32)
        .kv_u32("llama.attention.head_count", HEADS as u32)
        .kv_u32("llama.attention.head_count_kv", KV_HEADS as u32)
        .kv_f32("llama.rope.freq_base", 10000.0)
        .kv_f32("llama.attention.layer_norm_rms_epsilon", 1e-5)
        .kv_u32("llama.context_length", 256);
    // Tokenizer: three control tokens, then the 256 byte-level characters.
    let mut tokens: Vec<String> = vec!["<|endoftext|>".into(), "<|im_start|>".into(), "<|im_end|>".into()];
    let printable = |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
    let mut extra = 0;
    for b in 0u32..256 {
        let c = if printable(b) {
            char::from_u32(b).unwrap()
        } else {
            extra += 1;
            char::from_u32(255 + extra).unwrap()
        };
        tokens.push(c.to_string());
    }
    let vocab = tokens.len();
    let mut types = vec![MetaValue::I32(3); 3];
    types.extend(std::iter::repeat_n(MetaValue::I32(1), vocab - 3));
    let refs: Vec<&str> = tokens.iter().map(String::as_str).collect();
    w.kv_str("tokenizer.ggml.model", "gpt2")
        .kv_str("tokenizer.ggml.pre", "smollm")
        .kv_str_array("tokenizer.ggml.tokens", &refs)
        .kv_str_array("tokenizer.ggml.merges", &[])
        .kv("tokenizer.ggml.token_type", MetaValue::Array(types))
        .kv_u32("tokenizer.ggml.bos_token_id", 1)
        .kv_u32("tokenizer.ggml.eos_token_id", 2)
        .kv_str(
            "tokenizer.chat_template",
            "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}",
        );

    let rows_numbered = |rows: usize| -> Vec<f32> { (0..rows * HIDDEN).map(|i| (i / HIDDEN) as f32).collect() };
    let q_values: Vec<f32> = (0..q_shape.iter().product::<usize>()).map(|i| (i / HIDDEN) as f32).collect();
    w.tensor("token_embd.weight", &[vocab, HIDDEN], GgmlType::Q8_0, q8_0(vocab * HIDDEN)).tensor_f32(
        "blk.0.attn_norm.weight",
        &[HIDDEN],
        &[1.0; HIDDEN],
    );
    if q4_blocks {
        w.tensor("blk.0.attn_q.weight", q_shape, GgmlType::Q4_0, q4(q_shape.iter().product(), false))
            .tensor(
                "blk.0.attn_k.weight",
                &[KV_HEADS * HEAD_DIM, HIDDEN],
                GgmlType::Q4_1,
                q4(KV_HEADS * HEAD_DIM * HIDDEN, true),
            )
            .tensor("blk.0.ffn_gate.weight", &[FFN, HIDDEN], GgmlType::Q4_1, q4(FFN * HIDDEN, true))
            .tensor("blk.0.ffn_up.weight", &[FFN, HIDDEN], GgmlType::Q4_0, q4(FFN * HIDDEN, false));
    } else {
        w.tensor_f32("blk.0.attn_q.weight", q_shape, &q_values)
            .tensor_f32("blk.0.attn_k.weight", &[KV_HEADS * HEAD_DIM, HIDDEN], &rows_numbered(KV_HEADS * HEAD_DIM))
            .tensor("blk.0.ffn_gate.weight", &[FFN, HIDDEN], GgmlType::Q8_0, q8_0(FFN * HIDDEN))
            .tensor("blk.0.ffn_up.weight", &[FFN, HIDDEN], GgmlType::Q8_0, q8_0(FFN * HIDDEN));
    }
    w.tensor("blk.0.attn_v.weight", &[KV_HEADS * HEAD_DIM, HIDDEN], GgmlType::Q8_0, q8_0(KV_HEADS * HEAD_DIM * HIDDEN))
        .tensor("blk.0.attn_output.weight", &[HIDDEN, HIDDEN], GgmlType::Q8_0, q8_0(HIDDEN * HIDDEN))
        .tensor_f32("blk.0.ffn_norm.weight", &[HIDDEN], &[0.5; HIDDEN])
        .tensor("blk.0.ffn_down.weight", &[HIDDEN, FFN], GgmlType::Q8_0, q8_0(FFN * HIDDEN))
        .tensor_f32("output_norm.weight", &[HIDDEN], &[2.0; HIDDEN])
        .tensor_f32("rope_freqs.weight", &[HEAD_DIM / 2], &[1.0; HEAD_DIM / 2]);
    w.write(path).unwrap();
}

fn f32s(data: &[u8]) -> Vec<f32> {
    data.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
}

#[test]
fn compresses_a_gguf_with_hf_names_layout_and_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("tiny.gguf");
    synthetic_gguf(&input);
    let packed = dir.path().join("tiny.ember");
    let back = dir.path().join("back.safetensors");
    let out = ok(&["compress", s(&input), "-o", s(&packed), "--gguf-dtype", "f32", "--min-elems", "16"]);
    let summary = String::from_utf8_lossy(&out.stderr);
    assert!(summary.contains("12 tensors"), "{summary}");
    ok(&["verify", s(&packed)]);
    ok(&["decompress", s(&packed), "-o", s(&back)]);
    let bytes = std::fs::read(&back).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();

    let mut names = st.names();
    names.sort();
    let want = [
        "model.embed_tokens.weight",
        "model.layers.0.input_layernorm.weight",
        "model.layers.0.mlp.down_proj.weight",
        "model.layers.0.mlp.gate_proj.weight",
        "model.layers.0.mlp.up_proj.weight",
        "model.layers.0.post_attention_layernorm.weight",
        "model.layers.0.self_attn.k_proj.weight",
        "model.layers.0.self_attn.o_proj.weight",
        "model.layers.0.self_attn.q_proj.weight",
        "model.layers.0.self_attn.v_proj.weight",
        "model.norm.weight",
        // Not in the HF table: kept under its GGUF name.
        "rope_freqs.weight",
    ];
    assert_eq!(names, want);

    // Shapes in PyTorch order, dtype as asked.
    let q = st.tensor("model.layers.0.self_attn.q_proj.weight").unwrap();
    assert_eq!((q.dtype(), q.shape()), (StDtype::F32, &[HIDDEN, HIDDEN][..]));
    assert_eq!(st.tensor("model.layers.0.mlp.down_proj.weight").unwrap().shape(), [HIDDEN, FFN]);
    // Un-permuted: HF row `h * HEAD_DIM + j * half + i` is GGUF row `h * HEAD_DIM + 2 i + j`.
    let half = HEAD_DIM / 2;
    for (name, heads) in [("q_proj", HEADS), ("k_proj", KV_HEADS)] {
        let v = f32s(st.tensor(&format!("model.layers.0.self_attn.{name}.weight")).unwrap().data());
        for h in 0..heads {
            for j in 0..2 {
                for i in 0..half {
                    let hf_row = h * HEAD_DIM + j * half + i;
                    let gguf_row = h * HEAD_DIM + 2 * i + j;
                    assert_eq!(v[hf_row * HIDDEN], gguf_row as f32, "{name} row {hf_row}");
                    assert_eq!(v[hf_row * HIDDEN + HIDDEN - 1], gguf_row as f32, "{name} row {hf_row}");
                }
            }
        }
    }
    // Q8_0 dequantized: block 0 of the embedding, code 0xc0 = -64, times 1/64.
    let e = f32s(st.tensor("model.embed_tokens.weight").unwrap().data());
    assert_eq!((e[0], e[1]), (-1.0, -63.0 / 64.0));
    assert_eq!(f32s(st.tensor("model.norm.weight").unwrap().data()), [2.0; HIDDEN]);

    // The metadata: source, HF config, tokenizer, chat template, BOS/EOS.
    let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
    let meta = meta.metadata().clone().unwrap();
    assert_eq!(meta["ember.source"], "gguf");
    let cfg: serde_json::Value = serde_json::from_str(&meta["ember.llama.config"]).unwrap();
    assert_eq!(cfg["model_type"], "llama");
    assert_eq!(
        (cfg["hidden_size"].as_u64(), cfg["num_attention_heads"].as_u64(), cfg["num_key_value_heads"].as_u64()),
        (Some(64), Some(4), Some(2))
    );
    assert_eq!(cfg["vocab_size"], 259);
    assert_eq!(cfg["tie_word_embeddings"], true);
    assert_eq!(meta["ember.bos_id"], "1");
    assert_eq!(meta["ember.eos_ids"], "[2,0]");
    assert!(meta["ember.chat_template"].starts_with("{% for m in messages %}"));
    let tok = Tokenizer::from_json_str(&meta["ember.tokenizer"]).unwrap();
    assert_eq!(tok.eos_ids(), &[2, 0]);
    let ids = tok.encode("<|im_start|>hi 42", false).unwrap();
    assert_eq!(ids[0], 1);
    assert_eq!(tok.decode(&ids).unwrap(), "<|im_start|>hi 42");

    // Default dtype: BF16.
    let packed16 = dir.path().join("bf16.ember");
    let back16 = dir.path().join("bf16.safetensors");
    ok(&["compress", s(&input), "-o", s(&packed16)]);
    ok(&["decompress", s(&packed16), "-o", s(&back16)]);
    let bytes = std::fs::read(&back16).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    assert!(st.tensors().iter().all(|(_, t)| t.dtype() == StDtype::BF16));
}

#[test]
fn broken_gguf_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("tiny.gguf");
    synthetic_gguf(&input);
    let mut bytes = std::fs::read(&input).unwrap();
    bytes.truncate(bytes.len() - 1);
    let cut = dir.path().join("cut.gguf");
    std::fs::write(&cut, &bytes).unwrap();
    let out = ember(&["compress", s(&cut), "-o", s(&dir.path().join("x.ember"))]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cut.gguf") && stderr.contains("rope_freqs.weight") && stderr.contains("past the end"),
        "{stderr}"
    );
    assert!(!dir.path().join("x.ember").exists());
    let out = ember(&["compress", s(&input), "-o", s(&dir.path().join("x.ember")), "--gguf-dtype", "f8"]);
    assert_eq!(out.status.code(), Some(2));
}

/// A crafted Q projection — 0-dim, zero rows, or rows that do not split into the heads — is an
/// error naming the file and tensor (a 0-dim `attn_q` used to slip past the row check and panic).
#[test]
fn a_q_projection_that_does_not_split_into_heads_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    for (name, shape) in [("zero-dim", vec![]), ("no-rows", vec![0, HIDDEN]), ("odd-rows", vec![HIDDEN - 1, HIDDEN])] {
        let input = dir.path().join(format!("{name}.gguf"));
        synthetic_gguf_with_q(&input, &shape);
        let out = ember(&["compress", s(&input), "-o", s(&dir.path().join("x.ember"))]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}: {stderr}");
        assert!(!stderr.contains("panicked"), "{name}: {stderr}");
        assert!(
            stderr.contains(&format!("{name}.gguf"))
                && stderr.contains("blk.0.attn_q.weight")
                && stderr.contains("heads"),
            "{name}: {stderr}"
        );
        assert!(!dir.path().join("x.ember").exists());
    }
}

/// The HF-layout values of every tensor of `gguf`, as `GgufFile::dequantize` gives them (Q/K
/// rows un-permuted), keyed by HF name.
fn gguf_values(gguf: &Path) -> std::collections::HashMap<String, Vec<f32>> {
    let file = ember_gguf::GgufFile::open(gguf).unwrap();
    let mut out = std::collections::HashMap::new();
    for t in file.tensors() {
        let mut v = file.dequantize(&t.name).unwrap();
        let heads = match t.name.as_str() {
            "blk.0.attn_q.weight" => Some(HEADS),
            "blk.0.attn_k.weight" => Some(KV_HEADS),
            _ => None,
        };
        if let Some(h) = heads {
            v = ember_gguf::unpermute_qk(&v, t.shape[0], t.shape[1], h);
        }
        out.insert(ember_gguf::names::hf_name_for("llama", &t.name).unwrap_or(t.name.clone()), v);
    }
    out
}

/// `Q4_0`/`Q4_1`/`Q8_0` matrices keep their own codes where the scheme's grid is no finer
/// (`auto`: Q4 for int4, Q4 and Q8_0 for int8), and for every scheme with `--gguf-codes
/// native`: the container decodes them to exactly the GGUF's values, Q/K rows un-permuted.
/// Re-quantizing them (`--gguf-codes dequantize`) does not.
#[test]
fn gguf_block_codes_are_kept_and_decode_to_the_gguf_values() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("q4.gguf");
    synthetic_gguf_with(&input, &[HIDDEN, HIDDEN], true);
    let want = gguf_values(&input);
    let q4_names = [
        "model.layers.0.self_attn.q_proj.weight",
        "model.layers.0.self_attn.k_proj.weight",
        "model.layers.0.mlp.gate_proj.weight",
        "model.layers.0.mlp.up_proj.weight",
    ];
    let q8_names = [
        "model.embed_tokens.weight",
        "model.layers.0.self_attn.v_proj.weight",
        "model.layers.0.self_attn.o_proj.weight",
        "model.layers.0.mlp.down_proj.weight",
    ];
    let decoded = |packed: &Path| {
        let back = packed.with_extension("safetensors");
        ok(&["verify", s(packed)]);
        ok(&["decompress", s(packed), "-o", s(&back)]);
        let bytes = std::fs::read(&back).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let mut out = std::collections::HashMap::new();
        for n in q4_names.iter().chain(&q8_names) {
            let t = st.tensor(n).unwrap();
            let v: Vec<f32> = match t.dtype() {
                StDtype::F32 => f32s(t.data()),
                _ => t.data().chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
            };
            out.insert(n.to_string(), v);
        }
        out
    };
    let exact = |got: &std::collections::HashMap<String, Vec<f32>>, name: &str| {
        got[name].iter().zip(&want[name]).all(|(a, b)| a.to_bits() == b.to_bits())
    };
    let cases = [("int4", "auto", true, false), ("int8", "auto", true, true), ("lossless", "native", true, true)];
    for (scheme, codes, q4_kept, q8_kept) in cases {
        let packed = dir.path().join(format!("{scheme}-{codes}.ember"));
        let args =
            ["compress", s(&input), "-o", s(&packed), "--scheme", scheme, "--gguf-codes", codes, "--min-elems", "16"];
        let out = ok(&args);
        let summary = String::from_utf8_lossy(&out.stderr);
        let kept = 4 * (q4_kept as usize + q8_kept as usize);
        assert!(summary.contains(&format!("{kept} of them kept as their GGUF codes")), "{scheme}: {summary}");
        let got = decoded(&packed);
        for name in q4_names {
            assert_eq!(exact(&got, name), q4_kept, "{scheme}/{codes}: {name}");
        }
        for name in q8_names {
            assert_eq!(exact(&got, name), q8_kept, "{scheme}/{codes}: {name}");
        }
        // Stored as codes: int4 for Q4, block-scaled int8 for Q8_0.
        let info = String::from_utf8_lossy(&ok(&["inspect", s(&packed)]).stdout).to_string();
        let line = |n: &str| info.lines().find(|l| l.contains(n)).unwrap_or_default().to_string();
        assert!(line("q_proj").contains("int4"), "{scheme}: {}", line("q_proj"));
        if q8_kept {
            assert!(line("o_proj").contains("int8"), "{scheme}: {}", line("o_proj"));
        }
    }
    // Dequantized to BF16 and re-quantized onto ember's grid: no longer the GGUF's values.
    let packed = dir.path().join("requantized.ember");
    let out = ok(&["compress", s(&input), "-o", s(&packed), "--scheme", "int4", "--gguf-codes", "dequantize"]);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("kept as"));
    let got = decoded(&packed);
    assert!(!exact(&got, q4_names[2]), "re-quantizing should move some value");
    // `lossless` keeps dequantizing by default.
    let packed = dir.path().join("lossless.ember");
    let out = ok(&["compress", s(&input), "-o", s(&packed)]);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("kept as"));
}

/// Pseudo-random blocks of `t` whose `f16` fields (at `f16_fields` in each block) are finite.
fn random_blocks(t: GgmlType, n_elems: usize, f16_fields: &[usize], seed: u64) -> Vec<u8> {
    let mut x = seed;
    let mut bytes: Vec<u8> = (0..n_elems / t.block_elems() * t.block_bytes())
        .map(|_| {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (x >> 56) as u8
        })
        .collect();
    for b in bytes.chunks_exact_mut(t.block_bytes()) {
        for &o in f16_fields {
            b[o + 1] &= 0x3b; // positive, exponent well below 0x1f: finite and moderate
        }
    }
    bytes
}

/// `Q4_K`, `Q6_K` and `Q5_0` matrices (the k-quant mixes of Qwen2.5 and Gemma 3 GGUFs) keep
/// their codes like the 32-element types: `int8` (`auto`) and `--gguf-codes native` decode them
/// to exactly the GGUF's values — Q/K rows un-permuted with their super-block records — in a
/// version-4 container; `int4` keeps only the 4-bit `Q4_K`.
#[test]
fn gguf_k_quant_codes_are_kept_and_decode_to_the_gguf_values() {
    const H: usize = 256;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("kq.gguf");
    let mut w = GgufWriter::new(3);
    w.kv_str("general.architecture", "llama")
        .kv_u32("llama.block_count", 1)
        .kv_u32("llama.embedding_length", H as u32)
        .kv_u32("llama.feed_forward_length", 2 * H as u32)
        .kv_u32("llama.attention.head_count", 4)
        .kv_u32("llama.attention.head_count_kv", 2)
        .kv_f32("llama.rope.freq_base", 10000.0)
        .kv_f32("llama.attention.layer_norm_rms_epsilon", 1e-5)
        .kv_u32("llama.context_length", 256)
        .kv_u32("llama.vocab_size", 32);
    w.tensor("blk.0.attn_q.weight", &[H, H], GgmlType::Q4_K, random_blocks(GgmlType::Q4_K, H * H, &[0, 2], 1))
        .tensor("blk.0.attn_k.weight", &[H / 2, H], GgmlType::Q6_K, random_blocks(GgmlType::Q6_K, H * H / 2, &[208], 2))
        .tensor("blk.0.attn_v.weight", &[H / 2, H], GgmlType::Q5_0, random_blocks(GgmlType::Q5_0, H * H / 2, &[0], 3))
        .tensor(
            "blk.0.ffn_down.weight",
            &[H, 2 * H],
            GgmlType::Q6_K,
            random_blocks(GgmlType::Q6_K, 2 * H * H, &[208], 4),
        )
        .tensor_f32("blk.0.attn_norm.weight", &[H], &[1.0; H]);
    w.write(&input).unwrap();
    let file = ember_gguf::GgufFile::open(&input).unwrap();
    let mut want = std::collections::HashMap::new();
    for t in file.tensors() {
        let mut v = file.dequantize(&t.name).unwrap();
        let heads = match t.name.as_str() {
            "blk.0.attn_q.weight" => Some(4),
            "blk.0.attn_k.weight" => Some(2),
            _ => None,
        };
        if let Some(h) = heads {
            v = ember_gguf::unpermute_qk(&v, t.shape[0], t.shape[1], h);
        }
        want.insert(ember_gguf::names::hf_name_for("llama", &t.name).unwrap(), v);
    }
    let names = [
        ("model.layers.0.self_attn.q_proj.weight", true),
        ("model.layers.0.self_attn.k_proj.weight", false),
        ("model.layers.0.self_attn.v_proj.weight", false),
        ("model.layers.0.mlp.down_proj.weight", false),
    ];
    for (scheme, codes) in [("int8", "auto"), ("lossless", "native"), ("int4", "auto")] {
        let packed = dir.path().join(format!("{scheme}-{codes}.ember"));
        let out = ok(&["compress", s(&input), "-o", s(&packed), "--scheme", scheme, "--gguf-codes", codes]);
        let summary = String::from_utf8_lossy(&out.stderr);
        let kept = if scheme == "int4" { 1 } else { 4 };
        assert!(summary.contains(&format!("{kept} of them kept as their GGUF codes")), "{scheme}: {summary}");
        let bytes = std::fs::read(&packed).unwrap();
        // Super-blocks need version 4; the compressed header the CLI writes, version 5.
        assert_eq!(u32::from_le_bytes(bytes[8..12].try_into().unwrap()), 5, "{scheme}: a version-5 file");
        ok(&["verify", s(&packed)]);
        let back = packed.with_extension("safetensors");
        ok(&["decompress", s(&packed), "-o", s(&back)]);
        let bytes = std::fs::read(&back).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        for (name, four_bit) in names {
            let t = st.tensor(name).unwrap();
            let exact = t.dtype() == StDtype::F32
                && f32s(t.data()).iter().zip(&want[name]).all(|(a, b)| a.to_bits() == b.to_bits());
            assert_eq!(exact, scheme != "int4" || four_bit, "{scheme}/{codes}: {name}");
        }
        // `native` keeps the GGUF's F32 norm at its own precision; `auto` rounds it to BF16.
        let norm = st.tensor("model.layers.0.input_layernorm.weight").unwrap();
        assert_eq!(norm.dtype() == StDtype::F32, codes == "native", "{scheme}/{codes}: norm dtype");
    }
}
