//! Golden files: the format is frozen. Encoding fixed data must produce exactly the committed
//! version-2, 3 and 4 bytes, and the committed files — `v1.ember` (written by the version-1
//! encoder, exponent-only `lossless`), `v2.ember`, `v3.ember` (block-scaled `int8`) and
//! `v4.ember` (super-blocks) — must keep decoding to the same values. A deliberate
//! format change bumps the version and blesses a new file with
//! `EMBER_BLESS=1 cargo test -p ember-codec --test golden`.

use ember_codec::schemes::QuantKind;
use ember_codec::synthetic::{to_bf16_bytes, to_f16_bytes, SplitMix};
use ember_codec::{
    encode_quant_codes, encode_tensor, Container, ContainerWriter, Dtype, EncodeOptions, QuantCodes, SchemeKind,
};

/// Relative to the package root, where `cargo test` runs test binaries. Not
/// `env!("CARGO_MANIFEST_DIR")`: that is fixed at compile time, and a target directory shared by
/// two checkouts (CI reuses one) would keep pointing at the first.
const GOLDEN: &str = "tests/golden/v2.ember";
/// The version-3 file: `int8` codes with per-block `f16` scales (how GGUF `Q8_0` is kept).
const GOLDEN_V3: &str = "tests/golden/v3.ember";
/// The version-4 file: super-block side data (how GGUF `Q4_K` and `Q6_K` keep their codes).
const GOLDEN_V4: &str = "tests/golden/v4.ember";
/// Every tensor of `v2.ember` and `v4.ember` under a zstd-compressed header (version 5).
const GOLDEN_V5: &str = "tests/golden/v5.ember";
/// The version-1 file, kept to prove that old files still read.
const GOLDEN_V1: &str = "tests/golden/v1.ember";

/// Name, dtype, shape, data, scheme and options of one pinned tensor.
type Fixed = (&'static str, Dtype, Vec<u64>, Vec<u8>, SchemeKind, EncodeOptions);

fn fixed_tensors() -> Vec<Fixed> {
    let small = EncodeOptions {
        tile_elems: 40,
        lanes: 4,
        min_symbols_per_lane: 0,
        prob_bits: 10,
        int4_block: 8,
        int4_asymmetric: false,
        raw_if_smaller: false,
        // The version-2 layout: 16-bit lane counts (`v5.ember` pins the 8-bit ones).
        counts8: false,
    };
    let bf16: Vec<u8> =
        (0..96u32).flat_map(|i| half::bf16::from_f32((i as f32 - 48.0) * 0.013).to_bits().to_le_bytes()).collect();
    let f16: Vec<u8> = (0..50u32).flat_map(|i| half::f16::from_f32(i as f32 * -0.7).to_bits().to_le_bytes()).collect();
    // Values in [1, 1.25)·2^e: the top two mantissa bits are always 0, so coding them with the
    // exponent (version 2) saves two raw bits per element and the encoder picks `joint_bits` 2.
    let mut rng = SplitMix(7);
    let skewed: Vec<f32> = (0..2048)
        .map(|i| {
            let u = rng.uniform() as f32;
            let sign = if i % 3 == 0 { -1.0 } else { 1.0 };
            sign * (1.0 + u / 4.0) * (2f32).powi(-(i % 4))
        })
        .collect();
    let wide = EncodeOptions { tile_elems: 1024, lanes: 8, ..small.clone() };
    let f32s: Vec<u8> = (0..60u32).flat_map(|i| ((i as f32).sin() * 0.1).to_le_bytes()).collect();
    vec![
        ("bf16.lossless", Dtype::BF16, vec![8, 12], bf16.clone(), SchemeKind::Lossless, small.clone()),
        ("f16.lossless", Dtype::F16, vec![50], f16, SchemeKind::Lossless, small.clone()),
        ("f32.lossless", Dtype::F32, vec![6, 10], f32s.clone(), SchemeKind::Lossless, small.clone()),
        ("f32.int8", Dtype::F32, vec![6, 10], f32s.clone(), SchemeKind::Int8, small.clone()),
        ("f32.int4", Dtype::F32, vec![6, 10], f32s.clone(), SchemeKind::Int4, small.clone()),
        (
            "f32.int4a",
            Dtype::F32,
            vec![6, 10],
            f32s,
            SchemeKind::Int4,
            EncodeOptions { int4_asymmetric: true, ..small.clone() },
        ),
        ("bf16.raw", Dtype::BF16, vec![96], bf16, SchemeKind::Raw, small.clone()),
        // Version 2: enough Gaussian-like values that symbols carry mantissa bits.
        ("bf16.joint", Dtype::BF16, vec![32, 64], to_bf16_bytes(&skewed), SchemeKind::Lossless, wide.clone()),
        ("f16.joint", Dtype::F16, vec![32, 64], to_f16_bytes(&skewed), SchemeKind::Lossless, wide),
    ]
}

fn encode_all(path: &std::path::Path) {
    let mut w = ContainerWriter::create(path).unwrap();
    w.plain_header();
    w.set_metadata("producer", "ember golden test");
    for (name, dtype, shape, data, scheme, opts) in fixed_tensors() {
        w.add(encode_tensor(name, dtype, &shape, &data, scheme, &opts).unwrap()).unwrap();
    }
    w.finish().unwrap();
}

#[test]
fn encoding_is_byte_for_byte_stable() {
    let dir = tempfile::tempdir().unwrap();
    let fresh = dir.path().join("fresh.ember");
    encode_all(&fresh);
    let fresh = std::fs::read(&fresh).unwrap();
    if std::env::var_os("EMBER_BLESS").is_some() {
        std::fs::write(GOLDEN, &fresh).unwrap();
    }
    let golden = std::fs::read(GOLDEN).expect("tests/golden/v2.ember (bless with EMBER_BLESS=1)");
    assert!(fresh == golden, "the encoder's output changed: the .ember v2 format must stay stable");
}

#[test]
fn the_v2_golden_file_decodes_to_known_values_and_codes_mantissa_bits() {
    check_golden(GOLDEN);
    let c = Container::open(GOLDEN).unwrap();
    assert_eq!(&std::fs::read(GOLDEN).unwrap()[8..12], &2u32.to_le_bytes());
    // The pinned data exercise the version-2 layout: symbols carry mantissa bits.
    let joint: Vec<u32> = ["bf16.joint", "f16.joint"].iter().map(|n| c.get(n).unwrap().scheme.joint_bits()).collect();
    assert_eq!(joint, [2, 2]);
}

#[test]
fn the_v1_golden_file_still_reads() {
    assert_eq!(&std::fs::read(GOLDEN_V1).unwrap()[8..12], &1u32.to_le_bytes());
    let c = Container::open(GOLDEN_V1).unwrap();
    assert!(c.get("bf16.joint").is_err(), "v1.ember predates the version-2 tensors");
    check_golden(GOLDEN_V1);
    for n in ["bf16.lossless", "f16.lossless", "f32.lossless"] {
        let s = &c.get(n).unwrap().scheme;
        assert_eq!(
            (s.joint_bits(), s.alphabet(c.get(n).unwrap().dtype)),
            (0, Some(if n == "f16.lossless" { 32 } else { 256 }))
        );
    }
}

fn check_golden(path: &str) {
    let c = Container::open(path).unwrap();
    c.verify_checksums().unwrap();
    for (name, dtype, shape, data, scheme, _) in fixed_tensors() {
        let Ok(t) = c.get(name) else {
            assert!(path == GOLDEN_V1 && name.ends_with(".joint"), "{path}: {name} missing");
            continue;
        };
        assert_eq!((t.dtype, &t.shape, t.scheme.kind()), (dtype, &shape, scheme));
        let d = c.decode(t).unwrap();
        match scheme {
            SchemeKind::Lossless | SchemeKind::Raw => assert_eq!(d.data, data, "{name}"),
            _ => {
                let orig: Vec<f32> = data.chunks(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
                let tol = if scheme == SchemeKind::Int8 { 0.1 / 127.0 } else { 0.1 / 7.0 };
                for (a, b) in d.to_f32().unwrap().iter().zip(orig) {
                    assert!((a - b).abs() <= tol, "{name}: {a} vs {b}");
                }
            }
        }
    }
    // A few values pinned by hand, so a silently re-blessed file is still caught.
    let q = c.decode(c.get("f32.int8").unwrap()).unwrap().to_f32().unwrap();
    let row0_max = (0..10).map(|i| ((i as f32).sin() * 0.1).abs()).fold(0f32, f32::max);
    assert_eq!(q[0], 0.0);
    assert_eq!(q[8], 127.0 * (row0_max / 127.0) * if (8f32).sin() > 0.0 { 1.0 } else { -1.0 });
}

/// Encoding with `encode` gives exactly the committed `golden` file of format `version`
/// (re-blessed first with `EMBER_BLESS=1`).
fn assert_stable(golden: &str, version: u32, encode: fn(&std::path::Path)) {
    let dir = tempfile::tempdir().unwrap();
    let fresh = dir.path().join("fresh.ember");
    encode(&fresh);
    let fresh = std::fs::read(&fresh).unwrap();
    if std::env::var_os("EMBER_BLESS").is_some() {
        std::fs::write(golden, &fresh).unwrap();
    }
    let bytes = std::fs::read(golden).unwrap_or_else(|e| panic!("{golden} (bless with EMBER_BLESS=1): {e}"));
    assert!(fresh == bytes, "the encoder's output changed: the .ember v{version} format must stay stable");
    assert_eq!(&bytes[8..12], &version.to_le_bytes());
}

/// The codes and scales pinned in `v3.ember`: 2 rows of 40, blocks of 32 (the last one of each
/// row 8 long), codes sweeping the whole `i8` range.
fn v3_codes() -> (Vec<u8>, Vec<u8>) {
    let codes: Vec<u8> = (0..80u32).map(|i| (i * 37 + 128) as u8).collect();
    let scales: Vec<u8> =
        [0.5f32, 0.25, 1.0 / 64.0, 3.0].iter().flat_map(|&v| half::f16::from_f32(v).to_le_bytes()).collect();
    (codes, scales)
}

fn encode_v3(path: &std::path::Path) {
    let (codes, scales) = v3_codes();
    let opts = EncodeOptions {
        tile_elems: 40,
        lanes: 4,
        min_symbols_per_lane: 0,
        prob_bits: 10,
        counts8: false,
        ..EncodeOptions::default()
    };
    let mut w = ContainerWriter::create(path).unwrap();
    w.plain_header();
    w.set_metadata("producer", "ember golden test");
    let source = QuantCodes { kind: QuantKind::Int8Blocks { block: 32 }, codes: &codes, scales: &scales };
    w.add(encode_quant_codes("q8_0", &[2, 40], source, &opts).unwrap()).unwrap();
    w.finish().unwrap();
}

#[test]
fn the_v3_golden_file_is_stable_and_decodes_q8_0_arithmetic() {
    assert_stable(GOLDEN_V3, 3, encode_v3);
    let c = Container::open(GOLDEN_V3).unwrap();
    c.verify_checksums().unwrap();
    let v = c.decode(c.get("q8_0").unwrap()).unwrap().to_f32().unwrap();
    let (codes, _) = v3_codes();
    let scale = [0.5f32, 0.25, 1.0 / 64.0, 3.0];
    for (i, (&got, &q)) in v.iter().zip(&codes).enumerate() {
        let b = i / 40 * 2 + i % 40 / 32;
        assert_eq!(got, (q as i8) as f32 * scale[b], "element {i}");
    }
    // Pinned by hand: code 128 is -128, in block 0 (scale 0.5).
    assert_eq!(v[0], -64.0);
}

/// The tensors pinned in `v4.ember`: a `Q4_K`-like asymmetric `int4` tensor (1 row of 256, 8
/// blocks of 32 per super-block) and a `Q6_K`-like `int8` one (2 rows of 256, 16 blocks of 16).
/// Name, kind, shape, codes and side data of one pinned quantised tensor.
type FixedCodes = (&'static str, QuantKind, Vec<u64>, Vec<u8>, Vec<u8>);

fn v4_tensors() -> Vec<FixedCodes> {
    let q4k = QuantKind::Int4Super { block: 32, blocks: 8 };
    let mut q4k_scales: Vec<u8> = Vec::new();
    q4k_scales.extend(half::f16::from_f32(0.125).to_le_bytes());
    q4k_scales.extend(half::f16::from_f32(0.0625).to_le_bytes());
    q4k_scales.extend([1, 2, 3, 5, 8, 13, 21, 63]);
    q4k_scales.extend([0, 1, 4, 9, 16, 25, 36, 63]);
    let q4k_codes: Vec<u8> = (0..256u32).map(|i| (i * 7 % 16) as u8).collect();
    let q6k = QuantKind::Int8Super { block: 16, blocks: 16 };
    let mut q6k_scales: Vec<u8> = Vec::new();
    for row in 0..2i32 {
        q6k_scales.extend(half::f16::from_f32(if row == 0 { 0.01 } else { -3.5 }).to_le_bytes());
        q6k_scales.extend((0..16).map(|j| (j * 17 - 128 + row) as i8 as u8));
    }
    let q6k_codes: Vec<u8> = (0..512u32).map(|i| ((i * 13 % 64) as i32 - 32) as i8 as u8).collect();
    vec![("q4_k", q4k, vec![1, 256], q4k_codes, q4k_scales), ("q6_k", q6k, vec![2, 256], q6k_codes, q6k_scales)]
}

fn encode_v4(path: &std::path::Path) {
    let opts = EncodeOptions {
        tile_elems: 128,
        lanes: 4,
        min_symbols_per_lane: 0,
        prob_bits: 10,
        counts8: false,
        ..EncodeOptions::default()
    };
    let mut w = ContainerWriter::create(path).unwrap();
    w.plain_header();
    w.set_metadata("producer", "ember golden test");
    for (name, kind, shape, codes, scales) in v4_tensors() {
        let source = QuantCodes { kind, codes: &codes, scales: &scales };
        w.add(encode_quant_codes(name, &shape, source, &opts).unwrap()).unwrap();
    }
    w.finish().unwrap();
}

#[test]
fn the_v4_golden_file_is_stable_and_decodes_k_quant_arithmetic() {
    assert_stable(GOLDEN_V4, 4, encode_v4);
    let c = Container::open(GOLDEN_V4).unwrap();
    c.verify_checksums().unwrap();
    let q4k = c.decode(c.get("q4_k").unwrap()).unwrap().to_f32().unwrap();
    let (sc, m) = ([1f32, 2., 3., 5., 8., 13., 21., 63.], [0f32, 1., 4., 9., 16., 25., 36., 63.]);
    for (i, &got) in q4k.iter().enumerate() {
        let q = (i as u32 * 7 % 16) as f32;
        assert_eq!(got, q * (0.125 * sc[i / 32]) - 0.0625 * m[i / 32], "q4_k element {i}");
    }
    let q6k = c.decode(c.get("q6_k").unwrap()).unwrap().to_f32().unwrap();
    for (i, &got) in q6k.iter().enumerate() {
        let (row, j) = (i / 256, i % 256 / 16);
        let d = half::f16::from_f32(if row == 0 { 0.01 } else { -3.5 }).to_f32();
        let sc = (j as i32 * 17 - 128 + row as i32) as i8 as f32;
        let q = ((i as u32 * 13 % 64) as i32 - 32) as f32;
        assert_eq!(got, q * (d * sc), "q6_k element {i}");
    }
    // Pinned by hand: element 1 of q4_k is code 7 in block 0: 7 · 0.125 − 0.
    assert_eq!(q4k[1], 0.875);
}

/// `v5.ember`: the tensors of `v2.ember` and `v4.ember` in one file, with the version-5
/// defaults: a compressed header and 8-bit lane counts where they are smaller (8 lanes and more).
fn encode_v5(path: &std::path::Path) {
    let mut w = ContainerWriter::create(path).unwrap();
    w.set_metadata("producer", "ember golden test");
    for (name, dtype, shape, data, scheme, opts) in fixed_tensors() {
        let opts = EncodeOptions { counts8: true, ..opts };
        w.add(encode_tensor(name, dtype, &shape, &data, scheme, &opts).unwrap()).unwrap();
    }
    let opts =
        EncodeOptions { tile_elems: 128, lanes: 8, min_symbols_per_lane: 0, prob_bits: 10, ..EncodeOptions::default() };
    for (name, kind, shape, codes, scales) in v4_tensors() {
        let source = QuantCodes { kind, codes: &codes, scales: &scales };
        w.add(encode_quant_codes(name, &shape, source, &opts).unwrap()).unwrap();
    }
    w.finish().unwrap();
}

#[test]
fn the_v5_golden_file_is_stable_and_holds_the_v2_and_v4_tensors_under_a_compressed_header() {
    assert_stable(GOLDEN_V5, 5, encode_v5);
    check_golden(GOLDEN_V5);
    let bytes = std::fs::read(GOLDEN_V5).unwrap();
    let pre = ember_codec::container::Preamble::parse(bytes[..64].try_into().unwrap()).unwrap();
    assert_eq!(pre.flags, ember_codec::container::FLAG_HEADER_ZSTD);
    // The same values as the older files; the tensors of 8 lanes moved to 8-bit lane counts.
    let (v5, v2, v4) =
        (Container::open(GOLDEN_V5).unwrap(), Container::open(GOLDEN).unwrap(), Container::open(GOLDEN_V4).unwrap());
    let mut counts8 = Vec::new();
    for t in v2.tensors().iter().chain(v4.tensors()) {
        let old = if v2.get(&t.name).is_ok() { &v2 } else { &v4 };
        let new = v5.get(&t.name).unwrap();
        assert_eq!(v5.decode(new).unwrap(), old.decode(t).unwrap(), "{}", t.name);
        if new.scheme.coder().is_some_and(|c| c.lane_table == ember_codec::tile::LaneTable::Counts8) {
            counts8.push(t.name.as_str());
            let lanes = |e: &ember_codec::container::TensorEntry| e.scheme.coder().map(|c| c.lanes);
            if lanes(new) == lanes(t) {
                assert!(new.stored_bytes() < t.stored_bytes(), "{}", t.name);
            }
        }
    }
    assert_eq!(counts8, ["bf16.joint", "f16.joint", "q4_k", "q6_k"]);
    let json = ember_codec::container::index::read_header_json(std::path::Path::new(GOLDEN_V5), &bytes).unwrap();
    assert_eq!(json.len() as u64, pre.header_json_len);
    assert!(
        pre.header_len * 2 < pre.header_json_len,
        "{} stored bytes for {} of JSON",
        pre.header_len,
        pre.header_json_len
    );
}
