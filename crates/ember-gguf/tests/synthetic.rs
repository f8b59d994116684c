//! Synthetic GGUF files written by `GgufWriter` and read back: every metadata type, v2 and v3,
//! custom alignment, hyper-parameters, and tokenizers of both kinds.

use std::path::{Path, PathBuf};

use ember_gguf::{ChatMessage, GgmlType, GgufFile, GgufWriter, LlamaHParams, MetaValue, Tokenizer};

fn write(dir: &Path, name: &str, w: &GgufWriter) -> PathBuf {
    let p = dir.join(name);
    w.write(&p).unwrap();
    p
}

/// A Q8_0 block: scale 0.5 (f16 0x3800), codes -16..16.
fn q8_0_block() -> Vec<u8> {
    let mut b = vec![0x00, 0x38];
    b.extend((0..32).map(|i: i8| (i - 16) as u8));
    b
}

fn every_type_file(version: u32) -> GgufWriter {
    let mut w = GgufWriter::new(version);
    w.kv("t.u8", MetaValue::U8(200))
        .kv("t.i8", MetaValue::I8(-100))
        .kv("t.u16", MetaValue::U16(60000))
        .kv("t.i16", MetaValue::I16(-30000))
        .kv("t.u32", MetaValue::U32(4_000_000_000))
        .kv("t.i32", MetaValue::I32(-2_000_000_000))
        .kv("t.f32", MetaValue::F32(1.25))
        .kv("t.bool", MetaValue::Bool(true))
        .kv("t.string", MetaValue::String("héllo".into()))
        .kv("t.u64", MetaValue::U64(1 << 60))
        .kv("t.i64", MetaValue::I64(-(1 << 60)))
        .kv("t.f64", MetaValue::F64(-0.125))
        .kv("t.empty", MetaValue::Array(vec![]))
        .kv(
            "t.nested",
            MetaValue::Array(vec![
                MetaValue::Array(vec![MetaValue::I32(1), MetaValue::I32(2)]),
                MetaValue::Array(vec![MetaValue::I32(3)]),
            ]),
        )
        .kv_str_array("t.strings", &["a", "", "ü"]);
    w.tensor_f32("matrix", &[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    w.tensor(
        "half",
        &[4],
        GgmlType::F16,
        [0x3c00u16, 0xc000, 0x3800, 0x0000].iter().flat_map(|v| v.to_le_bytes()).collect(),
    );
    let mut q = q8_0_block();
    q.extend(q8_0_block());
    w.tensor("q8", &[2, 32], GgmlType::Q8_0, q);
    w.tensor_f32("scalar", &[], &[7.0]);
    w
}

#[test]
fn reads_back_v3_and_v2() {
    let dir = tempfile::tempdir().unwrap();
    for version in [3, 2] {
        let path = write(dir.path(), &format!("v{version}.gguf"), &every_type_file(version));
        let f = GgufFile::open(&path).unwrap();
        assert_eq!(f.version(), version);
        assert_eq!(f.path(), path);
        let m = f.metadata();
        assert_eq!(m["t.u8"], MetaValue::U8(200));
        assert_eq!(m["t.i8"], MetaValue::I8(-100));
        assert_eq!(m["t.u16"].as_u32(), Some(60000));
        assert_eq!(m["t.i16"], MetaValue::I16(-30000));
        assert_eq!(m["t.u32"].as_u32(), Some(4_000_000_000));
        assert_eq!(m["t.i32"].as_i64(), Some(-2_000_000_000));
        assert_eq!(m["t.f32"].as_f32(), Some(1.25));
        assert_eq!(m["t.bool"].as_bool(), Some(true));
        assert_eq!(m["t.string"].as_str(), Some("héllo"));
        assert_eq!(m["t.u64"].as_u64(), Some(1 << 60));
        assert_eq!(m["t.i64"].as_i64(), Some(-(1 << 60)));
        assert_eq!(m["t.f64"], MetaValue::F64(-0.125));
        assert_eq!(m["t.empty"].as_array().map(<[_]>::len), Some(0));
        let nested = m["t.nested"].as_array().unwrap();
        assert_eq!(nested[0].as_i64_array(), Some(vec![1, 2]));
        assert_eq!(nested[1].as_i64_array(), Some(vec![3]));
        assert_eq!(m["t.strings"].as_str_array(), Some(vec!["a", "", "ü"]));

        let names: Vec<&str> = f.tensors().iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["matrix", "half", "q8", "scalar"]);
        let t = f.tensor("matrix").unwrap();
        assert_eq!((t.shape.as_slice(), t.ggml_type, t.offset), (&[2usize, 3][..], GgmlType::F32, 0));
        assert_eq!(f.raw_bytes(t).unwrap().len(), 24);
        assert_eq!(f.dequantize("matrix").unwrap(), [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        assert_eq!(f.tensor("half").unwrap().offset, 32, "aligned to 32");
        assert_eq!(f.dequantize("half").unwrap(), [1.0, -2.0, 0.5, 0.0]);
        let q = f.dequantize("q8").unwrap();
        assert_eq!(f.tensor("q8").unwrap().shape, [2, 32]);
        assert_eq!((q[0], q[31], q[32], q[63]), (-8.0, 7.5, -8.0, 7.5));
        assert_eq!(f.tensor("scalar").unwrap().shape, Vec::<usize>::new());
        assert_eq!(f.dequantize("scalar").unwrap(), [7.0]);
        assert_eq!(f.data_start() % 32, 0);

        let e = f.dequantize("nope").unwrap_err().to_string();
        assert!(e.contains(&format!("v{version}.gguf")) && e.contains("`nope`"), "{e}");
    }
}

#[test]
fn honours_general_alignment() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = GgufWriter::new(3);
    w.alignment(64).tensor_f32("a", &[3], &[1.0, 2.0, 3.0]).tensor_f32("b", &[2], &[4.0, 5.0]);
    let f = GgufFile::open(write(dir.path(), "a.gguf", &w)).unwrap();
    assert_eq!(f.data_start() % 64, 0);
    assert_eq!(f.tensor("b").unwrap().offset, 64);
    assert_eq!(f.dequantize("b").unwrap(), [4.0, 5.0]);
}

#[test]
fn dequantize_errors_name_file_and_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = GgufWriter::new(3);
    w.tensor("iq", &[256], GgmlType::IQ2_XXS, vec![0; 66]);
    let f = GgufFile::open(write(dir.path(), "iq.gguf", &w)).unwrap();
    let e = f.dequantize("iq").unwrap_err().to_string();
    assert!(e.contains("iq.gguf") && e.contains("`iq`") && e.contains("IQ2_XXS"), "{e}");
    assert_eq!(f.raw_bytes(f.tensor("iq").unwrap()).unwrap().len(), 66);
}

/// The GPT-2 byte → printable-char map used by byte-level BPE vocabularies.
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

/// A tiny byte-level BPE: the 256 byte tokens, merges building "hello" and "Ġworld", and two
/// control tokens.
fn gpt2_tokenizer_file(w: &mut GgufWriter, pre: &str) {
    let mut tokens: Vec<String> = vec!["<|endoftext|>".into(), "<|im_start|>".into(), "<|im_end|>".into()];
    tokens.extend(byte_chars().iter().map(|c| c.to_string()));
    let merges = ["h e", "l l", "he ll", "hell o", "Ġ w", "o r", "Ġw or", "l d", "Ġwor ld", "1 2"];
    for m in merges {
        tokens.push(m.replace(' ', ""));
    }
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
        .kv_str(
            "tokenizer.chat_template",
            "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}",
        );
}

#[test]
fn gpt2_tokenizer_from_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = GgufWriter::new(3);
    gpt2_tokenizer_file(&mut w, "smollm");
    let f = GgufFile::open(write(dir.path(), "tok.gguf", &w)).unwrap();
    let tok = Tokenizer::from_gguf(&f).unwrap();
    let id = |t: &str| tok.token_to_id(t).unwrap();
    assert_eq!(tok.encode("hello world", false).unwrap(), [id("hello"), id("Ġworld")]);
    assert_eq!(tok.encode("hello", true).unwrap(), [1, id("hello")]);
    // smollm splits digits one by one, so the "12" merge never applies.
    assert_eq!(tok.encode("12", false).unwrap(), [id("1"), id("2")]);
    assert_eq!(tok.encode("<|im_start|>hello<|im_end|>", false).unwrap(), [1, id("hello"), 2]);
    assert_eq!(tok.eos_ids(), &[2, 0]);
    for text in ["hello world", "naïve 日本 🦀", "a\n\tb  c"] {
        assert_eq!(tok.decode(&tok.encode(text, false).unwrap()).unwrap(), text);
    }
    let chat = tok.apply_chat_template(&[ChatMessage::user("hi")], true).unwrap();
    assert_eq!(chat, "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n");

    // The default GPT-2 pre-tokenizer keeps "12" together.
    let mut w = GgufWriter::new(3);
    gpt2_tokenizer_file(&mut w, "default");
    let tok = Tokenizer::from_gguf(&GgufFile::open(write(dir.path(), "d.gguf", &w)).unwrap()).unwrap();
    assert_eq!(tok.encode("12", false).unwrap(), [tok.token_to_id("12").unwrap()]);

    // An unknown pre-tokenizer is an error naming the key.
    let mut w = GgufWriter::new(3);
    gpt2_tokenizer_file(&mut w, "mystery");
    let e = Tokenizer::from_gguf(&GgufFile::open(write(dir.path(), "m.gguf", &w)).unwrap()).unwrap_err().to_string();
    assert!(e.contains("tokenizer.ggml.pre") && e.contains("mystery"), "{e}");
}

#[test]
fn llama_sentencepiece_tokenizer_from_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let mut tokens: Vec<String> = vec!["<unk>".into(), "<s>".into(), "</s>".into()];
    let mut types = vec![2, 3, 3];
    for b in 0..=255u8 {
        tokens.push(format!("<0x{b:02X}>"));
        types.push(6);
    }
    // Pieces with scores: longer pieces score higher, so they merge first.
    let pieces = [
        "▁", "h", "e", "l", "o", "w", "r", "d", "he", "ll", "hell", "hello", "▁hello", "or", "▁w", "▁wor", "ld",
        "▁world",
    ];
    let mut scores = vec![0.0f32; tokens.len()];
    for p in pieces {
        tokens.push(p.into());
        types.push(1);
        scores.push(-10.0 + p.chars().count() as f32);
    }
    let mut w = GgufWriter::new(3);
    let tokens_ref: Vec<&str> = tokens.iter().map(String::as_str).collect();
    w.kv_str("tokenizer.ggml.model", "llama")
        .kv_str_array("tokenizer.ggml.tokens", &tokens_ref)
        .kv("tokenizer.ggml.scores", MetaValue::Array(scores.into_iter().map(MetaValue::F32).collect()))
        .kv("tokenizer.ggml.token_type", MetaValue::Array(types.into_iter().map(MetaValue::I32).collect()))
        .kv_u32("tokenizer.ggml.bos_token_id", 1)
        .kv_u32("tokenizer.ggml.eos_token_id", 2)
        .kv_u32("tokenizer.ggml.unknown_token_id", 0);
    let f = GgufFile::open(write(dir.path(), "spm.gguf", &w)).unwrap();
    let tok = Tokenizer::from_gguf(&f).unwrap();
    let id = |t: &str| tok.token_to_id(t).unwrap();
    assert_eq!(tok.encode("hello world", true).unwrap(), [1, id("▁hello"), id("▁world")]);
    // No piece for "é": byte fallback to its UTF-8 bytes.
    assert_eq!(tok.encode("é", false).unwrap(), [id("▁"), id("<0xC3>"), id("<0xA9>")]);
    for text in ["hello world", "é", "hello  wor"] {
        assert_eq!(tok.decode(&tok.encode(text, false).unwrap()).unwrap(), text, "{text:?}");
    }
    assert_eq!(tok.eos_ids(), &[2]);
}

fn llama_hparams_file(arch: &str, n_kv_heads: u32) -> GgufWriter {
    let mut w = GgufWriter::new(3);
    w.kv_str("general.architecture", arch)
        .kv_u32(&format!("{arch}.block_count"), 2)
        .kv_u32(&format!("{arch}.embedding_length"), 64)
        .kv_u32(&format!("{arch}.feed_forward_length"), 128)
        .kv_u32(&format!("{arch}.attention.head_count"), 4)
        .kv_u32(&format!("{arch}.attention.head_count_kv"), n_kv_heads)
        .kv_f32(&format!("{arch}.rope.freq_base"), 500000.0)
        .kv_f32(&format!("{arch}.attention.layer_norm_rms_epsilon"), 1e-6)
        .kv_u32(&format!("{arch}.context_length"), 4096)
        .kv_u32(&format!("{arch}.vocab_size"), 100);
    w
}

#[test]
fn hparams_from_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = llama_hparams_file("qwen2", 2);
    w.kv_str("qwen2.rope.scaling.type", "yarn")
        .kv_f32("qwen2.rope.scaling.factor", 4.0)
        .kv_u32("qwen2.rope.scaling.original_context_length", 32768)
        .tensor_f32("output.weight", &[100, 64], &vec![0.0; 6400])
        .tensor_f32("blk.0.attn_q.bias", &[64], &[0.0; 64]);
    let hp = LlamaHParams::from_gguf(&GgufFile::open(write(dir.path(), "q.gguf", &w)).unwrap()).unwrap();
    assert_eq!((hp.n_layers, hp.hidden_size, hp.n_heads, hp.n_kv_heads, hp.head_dim), (2, 64, 4, 2, 16));
    assert_eq!((hp.intermediate_size, hp.vocab_size, hp.max_position_embeddings), (128, 100, 4096));
    assert!(!hp.tie_word_embeddings && hp.attention_bias && !hp.qk_permuted);
    let cfg = hp.to_hf_config_json();
    assert_eq!(cfg["model_type"], "qwen2");
    assert_eq!(cfg["architectures"][0], "Qwen2ForCausalLM");
    assert_eq!(cfg["rope_theta"], 500000.0);
    assert_eq!(cfg["rms_norm_eps"], 1e-6);
    assert_eq!(cfg["rope_scaling"]["rope_type"], "yarn");
    assert_eq!(cfg["rope_scaling"]["factor"], 4.0);
    assert_eq!(cfg["rope_scaling"]["original_max_position_embeddings"], 32768);
    assert_eq!(cfg["attention_bias"], true);
    assert_eq!(cfg["tie_word_embeddings"], false);

    // A missing required key is named.
    let mut w = GgufWriter::new(3);
    w.kv_str("general.architecture", "llama").kv_u32("llama.block_count", 2);
    let e = LlamaHParams::from_gguf(&GgufFile::open(write(dir.path(), "m.gguf", &w)).unwrap()).unwrap_err().to_string();
    assert!(e.contains("m.gguf") && e.contains("llama.embedding_length") && e.contains("missing"), "{e}");
    // Heads that do not divide.
    let w = llama_hparams_file("llama", 3);
    let e = LlamaHParams::from_gguf(&GgufFile::open(write(dir.path(), "h.gguf", &w)).unwrap()).unwrap_err().to_string();
    assert!(e.contains("head_count_kv"), "{e}");
}
