//! Malformed files: every one gives an error naming the file (and the tensor where there is
//! one), never a panic or an allocation sized by an untrusted count.

use std::path::Path;

use ember_gguf::{GgmlType, GgufFile, GgufWriter, MetaValue};
use proptest::prelude::*;

fn open_bytes(dir: &Path, name: &str, bytes: &[u8]) -> Result<GgufFile, String> {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    GgufFile::open(&p).map_err(|e| e.to_string())
}

fn small_file() -> Vec<u8> {
    let mut w = GgufWriter::new(3);
    w.kv_str("general.architecture", "llama")
        .kv("a", MetaValue::Array(vec![MetaValue::U16(1), MetaValue::U16(2)]))
        .tensor_f32("x", &[2, 2], &[1.0, 2.0, 3.0, 4.0])
        .tensor("y", &[32], GgmlType::Q8_0, vec![0; 34]);
    w.to_bytes()
}

#[test]
fn every_truncation_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let full = small_file();
    assert!(open_bytes(dir.path(), "full.gguf", &full).is_ok());
    for len in 0..full.len() {
        let e = open_bytes(dir.path(), "cut.gguf", &full[..len]).err();
        let e = e.unwrap_or_else(|| panic!("a file cut to {len} of {} bytes opened", full.len()));
        assert!(e.contains("cut.gguf"), "{len}: {e}");
    }
}

/// Header, no metadata, one tensor described by the arguments, then `data_len` bytes of data.
fn one_tensor(dims: &[u64], type_id: u32, offset: u64, data_len: usize) -> Vec<u8> {
    let mut b = b"GGUF".to_vec();
    b.extend(3u32.to_le_bytes());
    b.extend(1u64.to_le_bytes());
    b.extend(0u64.to_le_bytes());
    b.extend(1u64.to_le_bytes());
    b.push(b't');
    b.extend((dims.len() as u32).to_le_bytes());
    for d in dims {
        b.extend(d.to_le_bytes());
    }
    b.extend(type_id.to_le_bytes());
    b.extend(offset.to_le_bytes());
    b.resize(b.len().next_multiple_of(32) + data_len, 0);
    b
}

#[test]
fn bad_tensor_descriptions_name_the_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&str, Vec<u8>, &str)] = &[
        ("ok", one_tensor(&[4], 0, 0, 16), ""),
        ("dims", one_tensor(&[1, 1, 1, 1, 1], 0, 0, 4), "5 dimensions"),
        ("type", one_tensor(&[4], 99, 0, 16), "unknown ggml type id 99"),
        ("removed-type", one_tensor(&[32], 4, 0, 32), "unknown ggml type id 4"),
        ("past-end", one_tensor(&[4], 0, 0, 15), "past the end"),
        ("offset", one_tensor(&[4], 0, 32, 32), "past the end"),
        ("huge-offset", one_tensor(&[4], 0, u64::MAX - 31, 16), "past the end"),
        ("misaligned", one_tensor(&[4], 0, 4, 32), "alignment"),
        ("partial-block", one_tensor(&[33], 8, 0, 68), "blocks"),
        ("overflow", one_tensor(&[1 << 40, 1 << 40], 0, 0, 16), "overflow"),
        ("bytes-overflow", one_tensor(&[1 << 62], 0, 0, 16), "overflow"),
    ];
    for (name, bytes, want) in cases {
        let file = format!("{name}.gguf");
        match open_bytes(dir.path(), &file, bytes) {
            Ok(_) => assert!(want.is_empty(), "{name} opened"),
            Err(e) => {
                assert!(!want.is_empty(), "{name}: {e}");
                assert!(e.contains(&file) && e.contains("tensor `t`") && e.contains(want), "{name}: {e}");
            }
        }
    }
}

#[test]
fn bad_headers() {
    let dir = tempfile::tempdir().unwrap();
    let full = small_file();
    let patched = |at: usize, bytes: &[u8]| {
        let mut b = full.clone();
        b[at..at + bytes.len()].copy_from_slice(bytes);
        b
    };
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("magic", patched(0, b"GGML"), "not a GGUF file"),
        ("v1", patched(4, &1u32.to_le_bytes()), "version 1"),
        ("v4", patched(4, &4u32.to_le_bytes()), "version 4"),
        ("big-endian", patched(4, &3u32.to_be_bytes()), "big-endian"),
        ("tensor-count", patched(8, &u64::MAX.to_le_bytes()), "tensor count"),
        ("kv-count", patched(16, &(1u64 << 40).to_le_bytes()), "metadata count"),
        // The first key's length.
        ("key-length", patched(24, &(1u64 << 50).to_le_bytes()), "metadata key"),
        // The first value's type (after the 20-byte key "general.architecture").
        ("value-type", patched(24 + 8 + 20, &77u32.to_le_bytes()), "value type 77"),
        // The first key's first byte: invalid UTF-8.
        ("utf8", patched(32, &[0xff]), "UTF-8"),
    ];
    for (name, bytes, want) in cases {
        let file = format!("{name}.gguf");
        let e = open_bytes(dir.path(), &file, &bytes).err().unwrap_or_else(|| panic!("{name} opened"));
        assert!(e.contains(&file) && e.contains(want), "{name}: {e}");
    }
    // Duplicates.
    let mut w = GgufWriter::new(3);
    w.kv_u32("k", 1).kv_u32("k", 2);
    let e = open_bytes(dir.path(), "dup-key.gguf", &w.to_bytes()).err().unwrap();
    assert!(e.contains("`k` appears twice"), "{e}");
    let mut w = GgufWriter::new(3);
    w.tensor_f32("t", &[1], &[1.0]).tensor_f32("t", &[1], &[2.0]);
    let e = open_bytes(dir.path(), "dup-tensor.gguf", &w.to_bytes()).err().unwrap();
    assert!(e.contains("`t` appears twice"), "{e}");
    // A non-power-of-two alignment.
    let mut w = GgufWriter::new(3);
    w.kv_u32("general.alignment", 24);
    let e = open_bytes(dir.path(), "align.gguf", &w.to_bytes()).err().unwrap();
    assert!(e.contains("general.alignment"), "{e}");
    // Overlapping tensors: both at offset 0.
    let mut second = b"GGUF".to_vec();
    second.extend(3u32.to_le_bytes());
    second.extend(2u64.to_le_bytes());
    second.extend(0u64.to_le_bytes());
    for name in [b'a', b'b'] {
        second.extend(1u64.to_le_bytes());
        second.push(name);
        second.extend(1u32.to_le_bytes());
        second.extend(4u64.to_le_bytes());
        second.extend(0u32.to_le_bytes());
        second.extend(0u64.to_le_bytes());
    }
    second.resize(second.len().next_multiple_of(32) + 16, 0);
    let e = open_bytes(dir.path(), "overlap.gguf", &second).err().unwrap();
    assert!(e.contains("overlaps"), "{e}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any bytes overwritten anywhere: opening and reading every tensor returns, never panics.
    #[test]
    fn corrupted_files_never_panic(at in 0usize..400, bytes in proptest::collection::vec(any::<u8>(), 1..9)) {
        let dir = tempfile::tempdir().unwrap();
        let mut b = small_file();
        let at = at % b.len();
        let end = (at + bytes.len()).min(b.len());
        b[at..end].copy_from_slice(&bytes[..end - at]);
        if let Ok(f) = open_bytes(dir.path(), "c.gguf", &b) {
            for t in f.tensors() {
                let _ = f.dequantize(&t.name);
            }
        }
    }
}
