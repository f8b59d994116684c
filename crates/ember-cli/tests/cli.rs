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
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "ember {args:?} should fail with 1:\n{stderr}");
    assert!(stderr.lines().last().is_some_and(|l| l.starts_with("error: ")), "{stderr}");
    stderr
}

/// Names of the entries of `dir`, to check that failed runs leave no temporary files behind.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

/// A float tensor's values widened to `f32`.
fn values(view: &TensorView) -> Vec<f32> {
    let d = view.data();
    match view.dtype() {
        StDtype::F32 => d.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect(),
        StDtype::F16 => d.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        StDtype::BF16 => d.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        other => panic!("not a float dtype: {other}"),
    }
}

/// A small model: BF16, F16 and F32 matrices with special values (NaN payloads, ±inf, −0,
/// subnormals), an F16 matrix with finite values only (quantisable), an F32 norm, an I64 buffer.
fn tensors() -> Vec<(String, StDtype, Vec<usize>, Vec<u8>)> {
    let specials = [0x0000u16, 0x8000, 0x7f80, 0xff80, 0x7fc1, 0x0001, 0x807f, 0xff81];
    let bf16: Vec<u8> = (0..64 * 96)
        .flat_map(|i: u32| {
            let bits = if i.is_multiple_of(53) {
                specials[(i as usize / 53) % specials.len()]
            } else {
                half::bf16::from_f32(((i * 7919) % 2003) as f32 * 1e-4 - 0.1).to_bits()
            };
            bits.to_le_bytes()
        })
        .collect();
    // Finite, with −0 and subnormals: int8/int4 must accept it.
    let f16_finite = [0x8000u16, 0x0001, 0x83ff, 0x0200];
    let f16: Vec<u8> = (0..32 * 40)
        .flat_map(|i: u32| {
            let bits = if i.is_multiple_of(97) {
                f16_finite[(i as usize / 97) % f16_finite.len()]
            } else {
                half::f16::from_f32(((i * 31) % 97) as f32 * 1e-3 - 0.05).to_bits()
            };
            bits.to_le_bytes()
        })
        .collect();
    let f16_specials = [0x7c00u16, 0xfc00, 0x7e01, 0xfd55, 0x8000, 0x0001, 0x83ff];
    let f16_odd: Vec<u8> = (0..40 * 32)
        .flat_map(|i: u32| {
            let bits = if i.is_multiple_of(41) {
                f16_specials[(i as usize / 41) % f16_specials.len()]
            } else {
                half::f16::from_f32(((i * 17) % 89) as f32 * 1e-3 - 0.04).to_bits()
            };
            bits.to_le_bytes()
        })
        .collect();
    let f32_specials =
        [0x7f80_0000u32, 0xff80_0000, 0x7fc0_0000, 0x7fa0_0001, 0xffc1_2345, 0x8000_0000, 0x0000_0001, 0x807f_ffff];
    let f32m: Vec<u8> = (0..16 * 300)
        .flat_map(|i: u32| {
            let bits = if i.is_multiple_of(37) {
                f32_specials[(i as usize / 37) % f32_specials.len()]
            } else {
                (((i * 7919) % 4001) as f32 * 1e-5 - 0.02).to_bits()
            };
            bits.to_le_bytes()
        })
        .collect();
    let norm: Vec<u8> = (0..96).flat_map(|i| (1.0f32 + i as f32 * 1e-3).to_le_bytes()).collect();
    let ids: Vec<u8> = (0..10i64).flat_map(|i| i.to_le_bytes()).collect();
    vec![
        ("layers.0.mlp.weight".into(), StDtype::BF16, vec![64, 96], bf16),
        ("layers.0.attn.weight".into(), StDtype::F16, vec![32, 40], f16),
        ("layers.0.mlp.down.weight".into(), StDtype::F16, vec![40, 32], f16_odd),
        ("layers.0.mlp.up.weight".into(), StDtype::F32, vec![16, 300], f32m),
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
    let summary = String::from_utf8_lossy(&out.stderr);
    // The I64 ids have no lossless coding and stay raw; the 96-element F32 norm is coded with
    // few lanes (a small tensor gets fewer), which makes it smaller than raw.
    assert!(summary.contains("6 tensors (5 lossless, 1 raw)") && summary.contains("MB/s"), "{summary}");
    let out = ok(&["verify", s(&packed), "--against", s(&input)]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().filter(|l| l.ends_with("bit-exact")).count(), 6, "{text}");
    ok(&["decompress", s(&packed), "-o", s(&back)]);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&back).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o644, "decompress kept the temporary file's private mode");
    }
    let (a, b) = (std::fs::read(&input).unwrap(), std::fs::read(&back).unwrap());
    let (a, b) = (SafeTensors::deserialize(&a).unwrap(), SafeTensors::deserialize(&b).unwrap());
    assert_eq!(b.len(), a.len());
    for (name, view) in a.tensors() {
        let other = b.tensor(&name).unwrap();
        assert_eq!((other.dtype(), other.shape(), other.data()), (view.dtype(), view.shape(), view.data()), "{name}");
    }
    // The container's metadata is carried into the safetensors header.
    let bytes = std::fs::read(&back).unwrap();
    let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
    let meta = meta.metadata().clone().unwrap();
    assert!(meta["producer"].starts_with("ember "), "{meta:?}");
    assert_eq!(meta["source"], s(&input));
    // To standard output, byte for byte the same file.
    let out = ok(&["decompress", s(&packed), "-o", "-", "--threads", "2"]);
    assert_eq!(out.stdout, bytes);
    let st = SafeTensors::deserialize(&out.stdout).unwrap();
    assert_eq!(st.tensor("layers.0.mlp.up.weight").unwrap().data(), a.tensor("layers.0.mlp.up.weight").unwrap().data());
    assert_eq!(listing(dir.path()), ["back.safetensors", "m.ember", "model.safetensors"]);
}

#[test]
fn compat_v4_writes_a_file_older_readers_open() {
    let (dir, input) = setup();
    let version = |p: &Path| u32::from_le_bytes(std::fs::read(p).unwrap()[8..12].try_into().unwrap());
    let (packed, plain) = (dir.path().join("z.ember"), dir.path().join("plain.ember"));
    ok(&["compress", s(&input), "-o", s(&packed)]);
    ok(&["compress", s(&input), "-o", s(&plain), "--compat-v4"]);
    assert_eq!((version(&packed), version(&plain)), (5, 2));
    assert!(std::fs::metadata(&packed).unwrap().len() < std::fs::metadata(&plain).unwrap().len());
    for p in [&packed, &plain] {
        let out = ok(&["verify", s(p), "--against", s(&input)]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(text.lines().filter(|l| l.ends_with("bit-exact")).count(), 6, "{text}");
    }
}

#[test]
fn quantised_schemes_verify_against_the_original() {
    let (dir, input) = setup();
    // The BF16, F16 and F32 `mlp` matrices hold infinities and NaNs: quantising them is refused,
    // naming the tensor and the way out.
    let err = fails(&["compress", s(&input), "-o", s(&dir.path().join("inf.ember")), "--scheme", "int8"]);
    assert!(err.contains("layers.0.mlp.") && err.contains("lossless") && err.contains("model.safetensors"), "{err}");
    assert!(!dir.path().join("inf.ember").exists());
    let original = std::fs::read(&input).unwrap();
    let original = SafeTensors::deserialize(&original).unwrap();
    let attn = values(&original.tensor("layers.0.attn.weight").unwrap());
    let amax = attn.iter().fold(0f32, |m, x| m.max(x.abs()));
    for (scheme, extra, steps) in [
        ("int8", &[][..], 127.0),
        ("int4", &[][..], 7.0),
        ("int4", &["--int4-asymmetric", "--int4-block", "16"][..], 7.0),
    ] {
        let packed = dir.path().join(format!("{scheme}{}.ember", extra.len()));
        let mut args =
            vec!["compress", s(&input), "-o", s(&packed), "--scheme", scheme, "--threads", "1", "--exclude", "mlp"];
        args.extend(["--min-elems", "16", "--tile-elems", "256", "--lanes", "8"]);
        args.extend(extra);
        ok(&args);
        let out = ok(&["verify", s(&packed), "--against", s(&input)]);
        let text = String::from_utf8_lossy(&out.stdout);
        let line = |name: &str| -> Vec<&str> {
            text.lines().find(|l| l.starts_with(name)).map(|l| l.split_whitespace().collect()).unwrap_or_default()
        };
        assert_eq!(line("layers.0.attn.weight")[1..5], [scheme, "max", "abs", "error"], "{text}");
        // The 1-D norm falls back to lossless; excluded tensors and the integer buffer are raw.
        assert_eq!(line("layers.0.norm.weight")[1..], ["lossless", "bit-exact"], "{text}");
        assert_eq!(line("layers.0.mlp.weight")[1..], ["raw", "bit-exact"], "{text}");
        assert_eq!(line("position_ids")[1..], ["raw", "bit-exact"], "{text}");
        // Back in the original dtype, within the scheme's error bound.
        let back = dir.path().join(format!("{scheme}{}.safetensors", extra.len()));
        ok(&["decompress", s(&packed), "-o", s(&back)]);
        let bytes = std::fs::read(&back).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let view = st.tensor("layers.0.attn.weight").unwrap();
        assert_eq!((view.dtype(), view.shape()), (StDtype::F16, &[32usize, 40][..]));
        let err = values(&view).iter().zip(&attn).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(err <= amax / steps, "{scheme} {extra:?}: error {err} > {}", amax / steps);
        assert_eq!(st.tensor("position_ids").unwrap().data(), original.tensor("position_ids").unwrap().data());
    }
}

#[test]
fn inspect_json_has_the_documented_shape() {
    let (dir, input) = setup();
    let packed = dir.path().join("m.ember");
    ok(&["compress", s(&input), "-o", s(&packed), "--include", "mlp|attn", "--exclude", "attn"]);
    let out = ok(&["inspect", s(&packed), "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let tensors = v["tensors"].as_array().unwrap();
    assert_eq!(tensors.len(), 6);
    for t in tensors {
        for key in ["name", "shape", "dtype", "scheme", "original_bytes", "compressed_bytes", "entropy_bound_bytes"] {
            assert!(t.get(key).is_some(), "missing {key}");
        }
    }
    let by_name: HashMap<&str, &serde_json::Value> = tensors.iter().map(|t| (t["name"].as_str().unwrap(), t)).collect();
    assert_eq!(by_name["layers.0.mlp.weight"]["scheme"], "lossless");
    assert_eq!(by_name["layers.0.mlp.weight"]["dtype"], "BF16");
    assert_eq!(by_name["layers.0.mlp.weight"]["shape"], serde_json::json!([64, 96]));
    assert_eq!(by_name["layers.0.mlp.weight"]["original_bytes"], 64 * 96 * 2);
    assert_eq!(by_name["layers.0.attn.weight"]["scheme"], "raw"); // excluded
    assert_eq!(by_name["layers.0.norm.weight"]["scheme"], "raw"); // not included, and < --min-elems
    assert_eq!(by_name["position_ids"]["scheme"], "raw");
    let total = |k: &str| tensors.iter().map(|t| t[k].as_u64().unwrap()).sum::<u64>();
    assert_eq!(v["original_bytes"].as_u64(), Some(total("original_bytes")));
    assert_eq!(v["entropy_bound_bytes"].as_u64(), Some(total("entropy_bound_bytes")));
    let file_len = std::fs::metadata(&packed).unwrap().len();
    assert_eq!(v["compressed_bytes"].as_u64(), Some(file_len));
    assert_eq!(v["file_bytes"].as_u64(), Some(file_len));
    // Per-tensor sizes account for all but the preamble, alignment padding and the JSON framing.
    assert!(total("compressed_bytes") <= file_len && total("compressed_bytes") > file_len / 2);
    let human = ok(&["inspect", s(&packed)]);
    let text = String::from_utf8_lossy(&human.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 8, "{text}");
    assert!(lines[0].starts_with("name") && lines[7].starts_with("total: 6 tensors"), "{text}");
    // Aligned: every row's `shape` column starts where the header's does.
    let col = lines[0].find("shape").unwrap();
    for l in &lines[1..7] {
        assert!(l.as_bytes()[col - 1] == b' ' && l.as_bytes()[col] == b'[', "{text}");
    }
}

fn index_json(dir: &Path, map: &[(&str, &str)]) {
    let map: serde_json::Map<String, serde_json::Value> =
        map.iter().map(|(t, f)| (t.to_string(), serde_json::Value::from(*f))).collect();
    let index = serde_json::json!({ "metadata": { "total_size": 0 }, "weight_map": map });
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
}

#[test]
fn sharded_model_directories_are_read_through_their_index() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    std::fs::create_dir(&model).unwrap();
    let ts = tensors();
    let (one, two) = ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors");
    write_safetensors(&model.join(one), &ts[..3]);
    write_safetensors(&model.join(two), &ts[3..]);
    // A stray file the index does not name is not part of the model.
    write_safetensors(&model.join("consolidated.safetensors"), &ts[..1]);
    let map: Vec<(&str, &str)> =
        ts.iter().enumerate().map(|(i, t)| (t.0.as_str(), if i < 3 { one } else { two })).collect();
    index_json(&model, &map);
    let packed = dir.path().join("m.ember");
    let out = ok(&["compress", s(&model), "-o", s(&packed)]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("6 tensors"));
    ok(&["verify", s(&packed), "--against", s(&model)]);
    // Against the single-file original too: the same tensors, whatever the sharding.
    let single = dir.path().join("single.safetensors");
    write_safetensors(&single, &ts);
    ok(&["verify", s(&packed), "--against", s(&single)]);

    // An index that puts a tensor in the wrong shard is an error naming the index and the tensor.
    let mut wrong = map.clone();
    wrong[0].1 = two;
    index_json(&model, &wrong);
    let err = fails(&["compress", s(&model), "-o", s(&dir.path().join("w.ember"))]);
    assert!(err.contains("model.safetensors.index.json") && err.contains(&ts[0].0), "{err}");
    // An index naming a shard that does not exist.
    let mut missing = map.clone();
    missing[0].1 = "model-00003-of-00002.safetensors";
    index_json(&model, &missing);
    let err = fails(&["compress", s(&model), "-o", s(&dir.path().join("w.ember"))]);
    assert!(err.contains("model-00003-of-00002.safetensors"), "{err}");
    // An index pointing outside the directory.
    let mut outside = map.clone();
    outside[0].1 = "../single.safetensors";
    index_json(&model, &outside);
    let err = fails(&["compress", s(&model), "-o", s(&dir.path().join("w.ember"))]);
    assert!(err.contains("../single.safetensors"), "{err}");
    assert!(!dir.path().join("w.ember").exists());
}

#[test]
fn model_directories_without_an_index() {
    let dir = tempfile::tempdir().unwrap();
    let ts = tensors();
    // A single model.safetensors wins over other files.
    let single = dir.path().join("single");
    std::fs::create_dir(&single).unwrap();
    write_safetensors(&single.join("model.safetensors"), &ts);
    write_safetensors(&single.join("other.safetensors"), &ts[..1]);
    let packed = dir.path().join("single.ember");
    ok(&["compress", s(&single), "-o", s(&packed)]);
    ok(&["verify", s(&packed), "--against", s(&single)]);
    // Otherwise every *.safetensors, sorted.
    let shards = dir.path().join("shards");
    std::fs::create_dir(&shards).unwrap();
    write_safetensors(&shards.join("b.safetensors"), &ts[3..]);
    write_safetensors(&shards.join("a.safetensors"), &ts[..3]);
    std::fs::write(shards.join("README.md"), "not a tensor file").unwrap();
    let packed = dir.path().join("shards.ember");
    ok(&["compress", s(&shards), "-o", s(&packed)]);
    let out = ok(&["inspect", s(&packed), "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = v["tensors"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    let (first, second) = names.split_at(3);
    for n in first {
        assert!(ts[..3].iter().any(|t| t.0 == *n), "{names:?}");
    }
    for n in second {
        assert!(ts[3..].iter().any(|t| t.0 == *n), "{names:?}");
    }
    // The same tensor in two shards is ambiguous.
    write_safetensors(&shards.join("c.safetensors"), &ts[..1]);
    let err = fails(&["compress", s(&shards), "-o", s(&dir.path().join("dup.ember"))]);
    assert!(err.contains(&ts[0].0) && err.contains("c.safetensors"), "{err}");
    // A directory without any.
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let err = fails(&["compress", s(&empty), "-o", s(&dir.path().join("e.ember"))]);
    assert!(err.contains("empty") && err.contains("no .safetensors"), "{err}");
}

#[test]
fn unknown_dtypes_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let mut ts = tensors();
    ts.push(("layers.0.fp8.weight".into(), StDtype::F8_E4M3, vec![8, 8], vec![0x38; 64]));
    let input = dir.path().join("fp8.safetensors");
    write_safetensors(&input, &ts);
    let before = listing(dir.path());
    let err = fails(&["compress", s(&input), "-o", s(&dir.path().join("fp8.ember"))]);
    assert!(err.contains("fp8.safetensors") && err.contains("layers.0.fp8.weight") && err.contains("F8_E4M3"), "{err}");
    assert_eq!(listing(dir.path()), before, "a failed compress leaves nothing behind");
}

#[test]
fn verify_names_tensors_that_differ_from_the_original() {
    let (dir, input) = setup();
    let packed = dir.path().join("m.ember");
    ok(&["compress", s(&input), "-o", s(&packed), "--min-elems", "16"]);
    let mut ts = tensors();
    // A different shape, a different dtype, one changed value.
    ts[1].2 = vec![40, 32];
    let ids: Vec<u8> = (0..10i32).flat_map(|i| i.to_le_bytes()).chain((0..10i32).flat_map(|_| [0u8; 4])).collect();
    ts[5] = ("position_ids".into(), StDtype::I32, vec![20], ids);
    ts[4].3[4 * 7] ^= 1;
    let other = dir.path().join("other.safetensors");
    write_safetensors(&other, &ts);
    let out = ember(&["verify", s(&packed), "--against", s(&other)]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for needle in ["layers.0.attn.weight", "position_ids", "layers.0.norm.weight", "element 7", "3 problem(s)"] {
        assert!(stderr.contains(needle), "{needle}: {stderr}");
    }
    assert!(!stderr.contains("layers.0.mlp.weight"), "{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.lines().any(|l| l.starts_with("layers.0.mlp.weight") && l.ends_with("bit-exact")), "{stdout}");
}

#[test]
fn bad_input_is_a_clear_error() {
    let (dir, input) = setup();
    let missing = dir.path().join("nope.safetensors");
    let err = fails(&["compress", s(&missing), "-o", s(&dir.path().join("x.ember"))]);
    assert!(err.contains("nope.safetensors"), "{err}");
    assert!(!dir.path().join("x.ember").exists());
    let err = fails(&["inspect", s(&dir.path().join("nope.ember"))]);
    assert!(err.contains("nope.ember"), "{err}");

    let garbage = dir.path().join("garbage.safetensors");
    std::fs::write(&garbage, b"\xff\xff\xff\xff\xff\xff\xff\x7fnot json").unwrap();
    let err = fails(&["compress", s(&garbage), "-o", s(&dir.path().join("y.ember"))]);
    assert!(err.contains("garbage.safetensors"), "{err}");
    let empty = dir.path().join("empty.safetensors");
    std::fs::write(&empty, b"").unwrap();
    let err = fails(&["compress", s(&empty), "-o", s(&dir.path().join("y.ember"))]);
    assert!(err.contains("empty.safetensors"), "{err}");
    // An .ember that is not one.
    let err = fails(&["verify", s(&input)]);
    assert!(err.contains("model.safetensors") && err.contains("magic"), "{err}");

    let packed = dir.path().join("m.ember");
    ok(&["compress", s(&input), "-o", s(&packed)]);
    let bytes = std::fs::read(&packed).unwrap();
    let truncated = dir.path().join("truncated.ember");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    for cmd in ["inspect", "verify"] {
        let err = fails(&[cmd, s(&truncated)]);
        assert!(err.contains("truncated.ember"), "{err}");
    }
    let err = fails(&["decompress", s(&truncated), "-o", s(&dir.path().join("t.safetensors"))]);
    assert!(err.contains("truncated.ember"), "{err}");

    // A flipped byte inside the first tile of the BF16 matrix.
    let c = ember_codec::Container::open(&packed).unwrap();
    let tile = c.get("layers.0.mlp.weight").unwrap().tiles[0];
    drop(c);
    let mut flipped = bytes.clone();
    flipped[tile.offset as usize + 100] ^= 0x10;
    let bad = dir.path().join("flipped.ember");
    std::fs::write(&bad, flipped).unwrap();
    let err = fails(&["verify", s(&bad)]);
    assert!(err.contains("flipped.ember") && err.contains("layers.0.mlp.weight") && err.contains("checksum"), "{err}");
    // Decompressing it fails the same way and leaves nothing under the target name, nor a
    // temporary file.
    let before = listing(dir.path());
    let err = fails(&["decompress", s(&bad), "-o", s(&dir.path().join("out.safetensors"))]);
    assert!(err.contains("layers.0.mlp.weight") && err.contains("checksum"), "{err}");
    assert_eq!(listing(dir.path()), before);

    // A container that lost a tensor no longer verifies against the original.
    let mut fewer = tensors();
    fewer.pop();
    let partial_in = dir.path().join("partial.safetensors");
    write_safetensors(&partial_in, &fewer);
    let partial = dir.path().join("partial.ember");
    ok(&["compress", s(&partial_in), "-o", s(&partial)]);
    let err = fails(&["verify", s(&partial), "--against", s(&input)]);
    assert!(err.contains("position_ids") && err.contains("missing"), "{err}");
    // ... and the other way round.
    let err = fails(&["verify", s(&packed), "--against", s(&partial_in)]);
    assert!(err.contains("position_ids") && err.contains("not in the original"), "{err}");

    let err = fails(&["compress", s(&input), "-o", s(&dir.path().join("z.ember")), "--include", "("]);
    assert!(err.contains("--include"), "{err}");
    let err = fails(&["compress", s(&input), "-o", s(&dir.path().join("z.ember")), "--lanes", "3"]);
    assert!(err.contains("lanes"), "{err}");
    let err = fails(&["compress", s(&input), "-o", s(&dir.path().join("no/such/dir/z.ember"))]);
    assert!(err.contains("z.ember"), "{err}");
}

#[test]
fn usage_errors_exit_with_2() {
    for args in
        [&["compress"][..], &["compress", "a.safetensors", "-o", "b.ember", "--scheme", "int3"], &["frobnicate"]]
    {
        let out = ember(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
    ok(&["--version"]);
}

#[test]
fn tiny_tensors_are_kept_raw_rather_than_grown() {
    // A 16-element F32 bias: 8 lanes × 6 bytes of lane table (the fewest a tensor gets) plus 3
    // raw bytes per element already reach its 64 bytes, so lossless coding would grow it;
    // compress keeps it raw.
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("bias.safetensors");
    let bias: Vec<u8> = (0..16).flat_map(|i| (i as f32 * 0.01 - 1.0).to_le_bytes()).collect();
    let weight = tensors().remove(0);
    write_safetensors(&input, &[("bias".into(), StDtype::F32, vec![16], bias), weight]);
    let packed = dir.path().join("b.ember");
    let out = ok(&["compress", s(&input), "-o", s(&packed), "--min-elems", "1"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("1 lossless, 1 raw"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let c = ember_codec::Container::open(&packed).unwrap();
    let bias = c.get("bias").unwrap();
    assert_eq!(bias.scheme.kind(), ember_codec::SchemeKind::Raw);
    assert!(bias.stored_bytes() <= bias.original_bytes());
    assert_eq!(c.get("layers.0.mlp.weight").unwrap().scheme.kind(), ember_codec::SchemeKind::Lossless);
    ok(&["verify", s(&packed), "--against", s(&input)]);
}

/// Peak resident set (`VmHWM`, KiB) of a running child, read until it exits.
#[cfg(target_os = "linux")]
fn peak_rss_kib(mut child: std::process::Child) -> (std::process::ExitStatus, u64) {
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak = 0u64;
    loop {
        if let Ok(text) = std::fs::read_to_string(&status_file) {
            if let Some(kib) = text
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
            {
                peak = peak.max(kib);
            }
        }
        if let Some(status) = child.try_wait().unwrap() {
            return (status, peak);
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

#[cfg(target_os = "linux")]
#[test]
fn decompress_streams_a_large_tensor_in_bounded_memory() {
    // One 64 MiB BF16 tensor: decoded whole, it alone would exceed the bound below; streamed in
    // chunks (with the container's pages released as they are written) it stays well inside.
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("big.safetensors");
    let (rows, cols) = (4096usize, 8192usize);
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let data: Vec<u8> = (0..rows * cols)
        .flat_map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let u = ((x >> 11) as f64 / (1u64 << 53) as f64 - 0.5) * 0.05;
            half::bf16::from_f64(u * u.abs().sqrt()).to_bits().to_le_bytes()
        })
        .collect();
    write_safetensors(&input, &[("w".into(), StDtype::BF16, vec![rows, cols], data)]);
    let packed = dir.path().join("big.ember");
    ok(&["compress", s(&input), "-o", s(&packed)]);
    let back = dir.path().join("back.safetensors");
    let child = Command::new(env!("CARGO_BIN_EXE_ember"))
        .args(["decompress", s(&packed), "-o", s(&back), "--threads", "2"])
        .spawn()
        .unwrap();
    let (status, peak_kib) = peak_rss_kib(child);
    assert!(status.success());
    let (a, b) = (std::fs::read(&input).unwrap(), std::fs::read(&back).unwrap());
    let (a, b) = (SafeTensors::deserialize(&a).unwrap(), SafeTensors::deserialize(&b).unwrap());
    assert!(a.tensor("w").unwrap().data() == b.tensor("w").unwrap().data(), "the tensor did not round-trip");
    let peak_mib = peak_kib as f64 / 1024.0;
    assert!(peak_mib < 64.0, "decompress peaked at {peak_mib:.1} MiB for a 64 MiB tensor");
}
