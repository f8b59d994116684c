//! The `ember` binary end to end: compress → inspect → verify → decompress, sharded model
//! directories, and clear errors (exit code 1, the file and tensor named, never a panic).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use safetensors::tensor::{Dtype as StDtype, TensorView};
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

fn fails(args: &[&str]) -> String {
    let out = ember(args);
    assert_eq!(out.status.code(), Some(1), "ember {args:?} should fail with 1");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A small model: BF16 and F16 matrices with special values, an F32 norm, an I64 buffer.
fn tensors() -> Vec<(String, StDtype, Vec<usize>, Vec<u8>)> {
    let specials = [0x0000u16, 0x8000, 0x7f80, 0xff80, 0x7fc1, 0x0001];
    let bf16: Vec<u8> = (0..64 * 96)
        .flat_map(|i: u32| {
            let bits = if i % 53 == 0 {
                specials[(i as usize / 53) % specials.len()]
            } else {
                half::bf16::from_f32(((i * 7919) % 2003) as f32 * 1e-4 - 0.1).to_bits()
            };
            bits.to_le_bytes()
        })
        .collect();
    let f16: Vec<u8> = (0..32 * 40)
        .flat_map(|i: u32| half::f16::from_f32(((i * 31) % 97) as f32 * 1e-3 - 0.05).to_bits().to_le_bytes())
        .collect();
    let norm: Vec<u8> = (0..96).flat_map(|i| (1.0f32 + i as f32 * 1e-3).to_le_bytes()).collect();
    let ids: Vec<u8> = (0..10i64).flat_map(|i| i.to_le_bytes()).collect();
    vec![
        ("layers.0.mlp.weight".into(), StDtype::BF16, vec![64, 96], bf16),
        ("layers.0.attn.weight".into(), StDtype::F16, vec![32, 40], f16),
        ("layers.0.norm.weight".into(), StDtype::F32, vec![96], norm),
        ("position_ids".into(), StDtype::I64, vec![10], ids),
    ]
}

fn write_safetensors(path: &Path, ts: &[(String, StDtype, Vec<usize>, Vec<u8>)]) {
    let views: Vec<(String, TensorView)> =
        ts.iter().map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap())).collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
}

fn setup() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("model.safetensors");
    write_safetensors(&input, &tensors());
    (dir, input)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn lossless_round_trips_through_decompress() {
    let (dir, input) = setup();
    let packed = dir.path().join("m.ember");
    let back = dir.path().join("back.safetensors");
    let out = ok(&["compress", s(&input), "-o", s(&packed), "--scheme", "lossless", "--min-elems", "16"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("4 tensors"));
    ok(&["verify", s(&packed), "--against", s(&input)]);
    ok(&["decompress", s(&packed), "-o", s(&back)]);
    let (a, b) = (std::fs::read(&input).unwrap(), std::fs::read(&back).unwrap());
    let (a, b) = (SafeTensors::deserialize(&a).unwrap(), SafeTensors::deserialize(&b).unwrap());
    for (name, view) in a.tensors() {
        let other = b.tensor(&name).unwrap();
        assert_eq!((other.dtype(), other.shape(), other.data()), (view.dtype(), view.shape(), view.data()), "{name}");
    }
    // To standard output, too.
    let out = ok(&["decompress", s(&packed), "-o", "-"]);
    let st = SafeTensors::deserialize(&out.stdout).unwrap();
    assert_eq!(st.tensor("layers.0.mlp.weight").unwrap().data(), a.tensor("layers.0.mlp.weight").unwrap().data());
}

#[test]
fn quantised_schemes_verify_against_the_original() {
    let (dir, input) = setup();
    // The BF16 matrix holds infinities and NaNs: quantising it is refused, naming it.
    let err = fails(&["compress", s(&input), "-o", s(&dir.path().join("inf.ember")), "--scheme", "int8"]);
    assert!(err.contains("layers.0.mlp.weight") && err.contains("lossless"), "{err}");
    for scheme in ["int8", "int4"] {
        let packed = dir.path().join(format!("{scheme}.ember"));
        ok(&[
            "compress",
            s(&input),
            "-o",
            s(&packed),
            "--scheme",
            scheme,
            "--threads",
            "1",
            "--exclude",
            "mlp",
            "--min-elems",
            "16",
        ]);
        let out = ok(&["verify", s(&packed), "--against", s(&input)]);
        let text = String::from_utf8_lossy(&out.stdout);
        let line = |name: &str| -> Vec<&str> {
            text.lines().find(|l| l.starts_with(name)).map(|l| l.split_whitespace().collect()).unwrap_or_default()
        };
        assert_eq!(line("layers.0.attn.weight")[1], scheme, "{text}");
        // The 1-D norm falls back to lossless; the integer buffer is raw.
        assert_eq!(line("layers.0.norm.weight")[1..], ["lossless", "bit-exact"], "{text}");
        assert_eq!(line("position_ids")[1..], ["raw", "bit-exact"], "{text}");
        let back = dir.path().join(format!("{scheme}.safetensors"));
        ok(&["decompress", s(&packed), "-o", s(&back)]);
        let bytes = std::fs::read(&back).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        assert_eq!(st.tensor("layers.0.attn.weight").unwrap().dtype(), StDtype::F16);
    }
    let asym = dir.path().join("asym.ember");
    ok(&[
        "compress",
        s(&input),
        "-o",
        s(&asym),
        "--scheme",
        "int4",
        "--int4-asymmetric",
        "--int4-block",
        "16",
        "--exclude",
        "mlp",
    ]);
    ok(&["verify", s(&asym), "--against", s(&input)]);
}

#[test]
fn inspect_json_has_the_documented_shape() {
    let (dir, input) = setup();
    let packed = dir.path().join("m.ember");
    ok(&["compress", s(&input), "-o", s(&packed), "--include", "mlp|attn", "--exclude", "attn"]);
    let out = ok(&["inspect", s(&packed), "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let tensors = v["tensors"].as_array().unwrap();
    assert_eq!(tensors.len(), 4);
    for t in tensors {
        for key in ["name", "shape", "dtype", "scheme", "original_bytes", "compressed_bytes", "entropy_bound_bytes"] {
            assert!(t.get(key).is_some(), "missing {key}");
        }
    }
    let by_name: HashMap<&str, &serde_json::Value> = tensors.iter().map(|t| (t["name"].as_str().unwrap(), t)).collect();
    assert_eq!(by_name["layers.0.mlp.weight"]["scheme"], "lossless");
    assert_eq!(by_name["layers.0.attn.weight"]["scheme"], "raw"); // excluded
    assert_eq!(by_name["position_ids"]["scheme"], "raw");
    let original: u64 = tensors.iter().map(|t| t["original_bytes"].as_u64().unwrap()).sum();
    assert_eq!(v["original_bytes"].as_u64(), Some(original));
    assert_eq!(v["compressed_bytes"].as_u64(), Some(std::fs::metadata(&packed).unwrap().len()));
    let human = ok(&["inspect", s(&packed)]);
    assert!(String::from_utf8_lossy(&human.stdout).contains("total: 4 tensors"));
}

#[test]
fn sharded_model_directories_are_read_through_their_index() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    std::fs::create_dir(&model).unwrap();
    let ts = tensors();
    write_safetensors(&model.join("model-00001-of-00002.safetensors"), &ts[..2]);
    write_safetensors(&model.join("model-00002-of-00002.safetensors"), &ts[2..]);
    let map: serde_json::Map<String, serde_json::Value> = ts
        .iter()
        .enumerate()
        .map(|(i, t)| (t.0.clone(), format!("model-0000{}-of-00002.safetensors", if i < 2 { 1 } else { 2 }).into()))
        .collect();
    std::fs::write(model.join("model.safetensors.index.json"), serde_json::json!({ "weight_map": map }).to_string())
        .unwrap();
    let packed = dir.path().join("m.ember");
    ok(&["compress", s(&model), "-o", s(&packed)]);
    ok(&["verify", s(&packed), "--against", s(&model)]);
}

#[test]
fn bad_input_is_a_clear_error() {
    let (dir, input) = setup();
    let missing = dir.path().join("nope.safetensors");
    let err = fails(&["compress", s(&missing), "-o", s(&dir.path().join("x.ember"))]);
    assert!(err.contains("nope.safetensors"), "{err}");
    assert!(!dir.path().join("x.ember").exists());

    let garbage = dir.path().join("garbage.safetensors");
    std::fs::write(&garbage, b"\xff\xff\xff\xff\xff\xff\xff\x7fnot json").unwrap();
    let err = fails(&["compress", s(&garbage), "-o", s(&dir.path().join("y.ember"))]);
    assert!(err.contains("garbage.safetensors"), "{err}");

    let packed = dir.path().join("m.ember");
    ok(&["compress", s(&input), "-o", s(&packed)]);
    let bytes = std::fs::read(&packed).unwrap();
    let truncated = dir.path().join("truncated.ember");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    for cmd in ["inspect", "verify"] {
        let err = fails(&[cmd, s(&truncated)]);
        assert!(err.contains("truncated.ember"), "{err}");
    }

    // A flipped byte inside the first tile of the BF16 matrix.
    let out = ok(&["inspect", s(&packed), "--json"]);
    let _: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let c = ember_codec::Container::open(&packed).unwrap();
    let tile = c.get("layers.0.mlp.weight").unwrap().tiles[0];
    drop(c);
    let mut flipped = bytes.clone();
    flipped[tile.offset as usize + 100] ^= 0x10;
    let bad = dir.path().join("flipped.ember");
    std::fs::write(&bad, flipped).unwrap();
    let err = fails(&["verify", s(&bad)]);
    assert!(err.contains("layers.0.mlp.weight") && err.contains("checksum"), "{err}");

    // A container that lost a tensor no longer verifies against the original.
    let mut fewer = tensors();
    fewer.pop();
    let partial_in = dir.path().join("partial.safetensors");
    write_safetensors(&partial_in, &fewer);
    let partial = dir.path().join("partial.ember");
    ok(&["compress", s(&partial_in), "-o", s(&partial)]);
    let err = fails(&["verify", s(&partial), "--against", s(&input)]);
    assert!(err.contains("position_ids"), "{err}");

    let err = fails(&["compress", s(&input), "-o", s(&dir.path().join("z.ember")), "--include", "("]);
    assert!(err.contains("--include"), "{err}");
}
