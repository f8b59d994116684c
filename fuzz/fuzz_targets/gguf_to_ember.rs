//! GGUF → `.ember` conversion (`ember compress model.gguf`), then `verify` and `decompress` of
//! what it wrote: on any input file the commands must succeed or fail with an error — never panic,
//! hang or allocate beyond a small multiple of the input's size.
//!
//! An even first byte makes the rest the GGUF file itself; an odd one builds a well-formed GGUF
//! from the rest: Llama hyper-parameters (some absurd), maybe a tokenizer, and tensors with HF-
//! mapped names (Q/K included, so the row un-permutation runs), any ggml type and shape.
#![no_main]

use ember_gguf::{GgmlType, GgufWriter, MetaValue};
use libfuzzer_sys::fuzz_target;

#[path = "../common/mod.rs"]
mod common;
use common::Bytes;

const NAMES: &[&str] = &[
    "token_embd.weight",
    "output_norm.weight",
    "output.weight",
    "blk.0.attn_q.weight",
    "blk.0.attn_k.weight",
    "blk.0.attn_v.weight",
    "blk.0.attn_q.bias",
    "blk.0.attn_k.bias",
    "blk.0.attn_output.weight",
    "blk.0.ffn_gate.weight",
    "blk.1.attn_q.weight",
    "blk.00.attn_q.weight",
    "rope_freqs.weight",
    "model.layers.0.self_attn.q_proj.weight",
];

const TYPES: &[GgmlType] = &[
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q8_0,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
    GgmlType::I32,
    GgmlType::F64,
    GgmlType::IQ4_NL,
];

fn structured(b: &mut Bytes) -> Vec<u8> {
    let mut w = GgufWriter::new(3);
    let arch = b.pick(&["llama", "llama", "qwen2", "granite", ""]);
    let knobs = b.u8();
    if knobs & 1 == 0 {
        w.kv_str("general.architecture", arch);
    }
    let small = |b: &mut Bytes| -> u32 {
        match b.u8() {
            0xff => u32::MAX,
            0xfe => 1 << 31,
            v => v as u32 % 17,
        }
    };
    w.kv_u32(&format!("{arch}.block_count"), small(b))
        .kv_u32(&format!("{arch}.embedding_length"), small(b).wrapping_mul(8))
        .kv_u32(&format!("{arch}.feed_forward_length"), small(b).wrapping_mul(8))
        .kv_u32(&format!("{arch}.attention.head_count"), small(b))
        .kv_u32(&format!("{arch}.attention.head_count_kv"), small(b))
        .kv_f32(&format!("{arch}.attention.layer_norm_rms_epsilon"), 1e-5);
    if knobs & 2 != 0 {
        w.kv_u32(&format!("{arch}.attention.key_length"), small(b));
    }
    if knobs & 4 != 0 {
        w.kv(&format!("{arch}.context_length"), MetaValue::U64(b.u32() as u64 * 977));
        w.kv_str(&format!("{arch}.rope.scaling.type"), "linear");
        w.kv_f32(&format!("{arch}.rope.scaling.factor"), f32::from_bits(b.u32()));
    }
    if knobs & 8 != 0 {
        common::tokenizer_kv(&mut w, b);
    }
    let n = b.u8() % 6;
    for _ in 0..n {
        let name = b.pick(NAMES);
        let t = b.pick(TYPES);
        let dims = b.u8() % 4;
        let mut shape: Vec<usize> = (0..dims).map(|_| b.pick(&[0usize, 1, 2, 3, 4, 8, 16, 6])).collect();
        // The innermost dimension holds whole blocks.
        if let Some(last) = shape.last_mut() {
            *last *= t.block_elems();
        }
        let elems: usize = shape.iter().product();
        let bytes = t.bytes_for(elems as u64).unwrap_or(0) as usize;
        let seed = b.take(64);
        w.tensor(name, &shape, t, common::fill(seed, bytes));
    }
    w.to_bytes()
}

fuzz_target!(|data: &[u8]| {
    let mut b = Bytes::new(data);
    let flag = b.u8();
    let gguf = if flag % 2 == 1 { structured(&mut b) } else { b.rest().to_vec() };
    let dir = common::fresh_dir("gguf_to_ember");
    let input = common::write_in(&dir, "model.gguf", &gguf);
    let out = dir.join("model.ember");
    let scheme = ["lossless", "int8", "int4", "raw"][(flag as usize >> 1) % 4];
    let dtype = ["bf16", "f16", "f32"][(flag as usize >> 3) % 3];
    let tile = ["256", "64", "4096"][(flag as usize >> 5) % 3];
    // `Q4_0`/`Q4_1` matrices kept as their own codes for int4 (`auto`) or for every scheme.
    let codes = ["auto", "native"][(flag as usize >> 7) % 2];
    let compressed = common::ember([
        "compress".into(),
        input.into_os_string(),
        "-o".into(),
        out.clone().into_os_string(),
        "--threads=1".into(),
        "--min-elems=0".into(),
        format!("--scheme={scheme}").into(),
        format!("--gguf-dtype={dtype}").into(),
        format!("--tile-elems={tile}").into(),
        "--lanes=4".into(),
        "--int4-block=16".into(),
        format!("--gguf-codes={codes}").into(),
    ] as [std::ffi::OsString; 12]);
    if compressed.is_err() {
        return;
    }
    // What compress wrote must verify and decompress.
    if let Err(e) = common::ember([std::ffi::OsStr::new("verify"), out.as_os_str(), "--threads=1".as_ref()]) {
        panic!("a container `ember compress` wrote does not verify: {e:#}");
    }
    let back = dir.join("back.safetensors");
    let args =
        [std::ffi::OsStr::new("decompress"), out.as_os_str(), "-o".as_ref(), back.as_os_str(), "--threads=1".as_ref()];
    if let Err(e) = common::ember(args) {
        panic!("a container `ember compress` wrote does not decompress: {e:#}");
    }
});
