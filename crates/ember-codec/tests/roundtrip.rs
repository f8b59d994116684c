//! Property tests: every scheme round-trips (bit-exact, or within its quantisation error) over
//! random shapes, tile sizes, lane counts and special values.

use ember_codec::{
    encode_quant_codes, encode_tensor, schemes::QuantKind, Container, ContainerWriter, Dtype, EncodeOptions,
    QuantCodes, SchemeKind,
};
use proptest::prelude::*;

fn float_bytes(dtype: Dtype, n: usize, seed: u64, specials: bool) -> Vec<u8> {
    ember_codec::synthetic::float_test_bytes(dtype, n, seed, specials)
}

fn write_and_open(tensors: Vec<ember_codec::schemes::EncodedTensor>) -> (tempfile::TempDir, Container) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.ember");
    let mut w = ContainerWriter::create(&path).unwrap();
    for t in tensors {
        w.add(t).unwrap();
    }
    w.finish().unwrap();
    let c = Container::open(&path).unwrap();
    (dir, c)
}

fn shape_strategy() -> impl Strategy<Value = Vec<u64>> {
    prop_oneof![
        Just(vec![]),
        Just(vec![0]),
        Just(vec![3, 0]),
        Just(vec![1]),
        (1u64..300).prop_map(|n| vec![n]),
        (1u64..40, 1u64..90).prop_map(|(r, c)| vec![r, c]),
        (1u64..4, 1u64..6, 1u64..50).prop_map(|(a, b, c)| vec![a, b, c]),
    ]
}

fn opts_strategy() -> impl Strategy<Value = EncodeOptions> {
    (
        1usize..200,
        prop_oneof![Just(1u32), Just(2), Just(8), Just(16), Just(32)],
        8u32..=12,
        1u32..40,
        any::<bool>(),
        any::<bool>(),
        prop_oneof![Just(0u32), Just(4), Just(1024)],
        any::<bool>(),
    )
        .prop_map(
            |(
                tile_elems,
                lanes,
                prob_bits,
                int4_block,
                int4_asymmetric,
                raw_if_smaller,
                min_symbols_per_lane,
                counts8,
            )| {
                EncodeOptions {
                    tile_elems,
                    lanes,
                    min_symbols_per_lane,
                    prob_bits,
                    int4_block,
                    int4_asymmetric,
                    raw_if_smaller,
                    counts8,
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// Codes quantised elsewhere (a GGUF's Q4_0/Q4_1/Q8_0 blocks) decode to exactly
    /// `(q − 8) · d`, `q · d + m` or `q · d` with the stored f16 scale and minimum: nothing is
    /// re-quantised.
    #[test]
    fn quant_codes_decode_to_their_own_values(
        shape in shape_strategy(),
        opts in opts_strategy(),
        block in 1usize..70,
        which in 0u8..3,
        seed in any::<u64>(),
    ) {
        let n: u64 = shape.iter().product();
        let (rows, cols) = ember_codec::tile::rows_cols(&shape);
        let blocks = (rows * cols.div_ceil(block as u64)) as usize;
        let mix = |i: u64| (i ^ seed).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40;
        let kind = [QuantKind::Int4Symmetric { block }, QuantKind::Int4Asymmetric { block }, QuantKind::Int8Blocks { block }][which as usize];
        let codes: Vec<u8> = (0..n).map(|i| (mix(i) % if which == 2 { 256 } else { 16 }) as u8).collect();
        let per = if which == 1 { 2 } else { 1 };
        // Arbitrary f16 bit patterns, subnormals, infinities and NaNs included: kept as they are.
        let scales: Vec<u8> = (0..blocks * per).flat_map(|k| (mix(k as u64 + n) as u16).to_le_bytes()).collect();
        let t = encode_quant_codes("w", &shape, QuantCodes { kind, codes: &codes, scales: &scales }, &opts).unwrap();
        prop_assert_eq!(t.dtype, Dtype::F32);
        let (_dir, c) = write_and_open(vec![t]);
        let got = c.decode(c.get("w").unwrap()).unwrap().to_f32().unwrap();
        let f16_at = |k: usize| half::f16::from_le_bytes([scales[2 * k], scales[2 * k + 1]]).to_f32();
        let cols = cols.max(1) as usize;
        for (i, (&g, &q)) in got.iter().zip(&codes).enumerate() {
            let b = i / cols * cols.div_ceil(block) + i % cols / block;
            let want = match which {
                0 => (q as i32 - 8) as f32 * f16_at(b),
                1 => q as f32 * f16_at(2 * b) + f16_at(2 * b + 1),
                _ => (q as i8) as f32 * f16_at(b),
            };
            prop_assert_eq!(g.to_bits(), want.to_bits(), "element {} of {:?}", i, shape);
        }
    }

    /// Super-block side data (GGUF's `Q6_K` as `int8`, `Q4_K` as asymmetric `int4`): block `b`
    /// decodes with scale `f32(d) · f32(sc_b)` (and minimum `−(f32(dmin) · f32(m_b))`), read
    /// from its super-block's record, for any shape, block and super-block size.
    #[test]
    fn super_block_codes_decode_to_their_own_values(
        shape in shape_strategy(),
        opts in opts_strategy(),
        block in 1usize..40,
        half_blocks in 1usize..10,
        int4 in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let n: u64 = shape.iter().product();
        let blocks = 2 * half_blocks;
        let kind = if int4 { QuantKind::Int4Super { block, blocks } } else { QuantKind::Int8Super { block, blocks } };
        let mix = |i: u64| (i ^ seed).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40;
        let codes: Vec<u8> = (0..n).map(|i| (mix(i) % if int4 { 16 } else { 256 }) as u8).collect();
        let scales: Vec<u8> = (0..kind.scales_len(&shape)).map(|k| mix(k + 7 * n) as u8).collect();
        let t = encode_quant_codes("w", &shape, QuantCodes { kind, codes: &codes, scales: &scales }, &opts).unwrap();
        let (_dir, c) = write_and_open(vec![t]);
        let got = c.decode(c.get("w").unwrap()).unwrap().to_f32().unwrap();
        let f16_at = |k: usize| half::f16::from_le_bytes([scales[k], scales[k + 1]]).to_f32();
        let cols = ember_codec::tile::rows_cols(&shape).1.max(1) as usize;
        for (i, (&g, &q)) in got.iter().zip(&codes).enumerate() {
            let b = i / cols * cols.div_ceil(block) + i % cols / block;
            let (s, j) = (b / blocks, b % blocks);
            let want = if int4 {
                let r = s * (4 + 2 * blocks);
                let product = q as f32 * (f16_at(r) * scales[r + 4 + j] as f32);
                product + -(f16_at(r + 2) * scales[r + 4 + blocks + j] as f32)
            } else {
                let r = s * (2 + blocks);
                (q as i8) as f32 * (f16_at(r) * (scales[r + 2 + j] as i8) as f32)
            };
            prop_assert_eq!(g.to_bits(), want.to_bits(), "element {} of {:?}", i, shape);
        }
    }

    #[test]
    fn lossless_is_bit_exact(
        shape in shape_strategy(),
        dtype in prop_oneof![Just(Dtype::BF16), Just(Dtype::F16), Just(Dtype::F32)],
        opts in opts_strategy(),
        seed in any::<u64>(),
        specials in any::<bool>(),
    ) {
        let n: u64 = shape.iter().product();
        let data = float_bytes(dtype, n as usize, seed, specials);
        let t = encode_tensor("w", dtype, &shape, &data, SchemeKind::Lossless, &opts).unwrap();
        let (_dir, c) = write_and_open(vec![t]);
        let d = c.decode(c.get("w").unwrap()).unwrap();
        prop_assert_eq!(d.dtype, dtype);
        prop_assert_eq!(&d.shape, &shape);
        prop_assert!(d.data == data, "lossless round trip differs");
    }

    #[test]
    fn raw_is_bit_exact_for_every_dtype(
        shape in shape_strategy(),
        dtype in prop_oneof![Just(Dtype::I64), Just(Dtype::U8), Just(Dtype::BOOL), Just(Dtype::F64), Just(Dtype::I16), Just(Dtype::BF16)],
        opts in opts_strategy(),
        seed in any::<u8>(),
    ) {
        let n: u64 = shape.iter().product();
        let data: Vec<u8> = (0..n as usize * dtype.size()).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect();
        let t = encode_tensor("w", dtype, &shape, &data, SchemeKind::Raw, &opts).unwrap();
        let (_dir, c) = write_and_open(vec![t]);
        prop_assert_eq!(c.decode(c.get("w").unwrap()).unwrap().data, data);
    }

    #[test]
    fn quantised_schemes_stay_within_their_error(
        shape in shape_strategy(),
        dtype in prop_oneof![Just(Dtype::BF16), Just(Dtype::F32)],
        int8 in any::<bool>(),
        opts in opts_strategy(),
        seed in any::<u64>(),
    ) {
        let n: u64 = shape.iter().product();
        let data = float_bytes(dtype, n as usize, seed, false);
        let kind = if int8 { SchemeKind::Int8 } else { SchemeKind::Int4 };
        let t = encode_tensor("w", dtype, &shape, &data, kind, &opts).unwrap();
        let (_dir, c) = write_and_open(vec![t]);
        let d = c.decode(c.get("w").unwrap()).unwrap();
        prop_assert_eq!(d.dtype, Dtype::F32);
        let got = d.to_f32().unwrap();
        let cols = shape.last().copied().unwrap_or(1).max(1) as usize;
        let block = if int8 { cols } else { opts.int4_block as usize };
        for (i, &g) in got.iter().enumerate() {
            let x = dtype.read_f32(&data, i).unwrap();
            // The error bound of each element's group (row for int8, block for int4).
            let (row, col) = (i / cols, i % cols);
            let b0 = row * cols + col / block * block;
            let group = (b0..(b0 + block).min((row + 1) * cols)).map(|k| dtype.read_f32(&data, k).unwrap());
            let (mn, mx) = group.fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
            let amax = mn.abs().max(mx.abs());
            let step = if int8 { amax / 127.0 } else if opts.int4_asymmetric { (mx - mn) / 15.0 } else { amax / 7.0 };
            // Half a step, plus the f16 rounding of int4 scales and minimums.
            let tol = 0.5 * step * 1.01 + if int8 { 0.0 } else { amax * 2e-3 + 1e-7 };
            prop_assert!((g - x).abs() <= tol, "element {} of {:?}: {} vs {} (tol {})", i, shape, g, x, tol);
        }
    }
}

#[test]
fn many_tensors_in_one_file_keep_their_identity() {
    let opts = EncodeOptions { tile_elems: 100, ..EncodeOptions::default() };
    let mut tensors = Vec::new();
    let mut expected = Vec::new();
    for (k, dtype) in [Dtype::BF16, Dtype::F16, Dtype::F32].into_iter().cycle().take(9).enumerate() {
        let shape = vec![k as u64 + 1, 33];
        let data = float_bytes(dtype, (k + 1) * 33, k as u64, true);
        tensors.push(encode_tensor(&format!("t{k}"), dtype, &shape, &data, SchemeKind::Lossless, &opts).unwrap());
        expected.push((format!("t{k}"), data));
    }
    let (_dir, c) = write_and_open(tensors);
    assert_eq!(c.tensors().len(), 9);
    for (name, data) in expected {
        assert_eq!(c.decode(c.get(&name).unwrap()).unwrap().data, data, "{name}");
    }
    assert!(c.get("missing").is_err());
}

#[test]
fn lossless_bf16_is_close_to_the_entropy_bound_on_large_tensors() {
    // Weight-like BF16 data over 1 Mi elements: the coded size (tiles + header share) must stay
    // within 0.5% of the order-0 bound of the 16-bit values, and below the exponent-coding bound
    // (H(exponent) + 8 bits per element), the best any exponent-only coder (version 1) can do.
    let (rows, cols) = (256usize, 4096usize);
    let mut x = 42u64;
    let mut normal = || {
        let mut s = 0.0;
        for _ in 0..12 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            s += (x >> 11) as f64 / (1u64 << 53) as f64;
        }
        s - 6.0
    };
    let data: Vec<u8> =
        (0..rows * cols).flat_map(|_| half::bf16::from_f64(normal() * 0.02).to_bits().to_le_bytes()).collect();
    let exps: Vec<u8> = data.chunks(2).map(|p| ((u16::from_le_bytes([p[0], p[1]]) >> 7) & 0xff) as u8).collect();
    let exp_bits = ember_codec::entropy::order0_bits(&ember_codec::entropy::histogram_u8(&exps, 256));
    let exp_bound = (exp_bits + 8.0 * (rows * cols) as f64) / 8.0;
    let bound = ember_codec::entropy::order0_bits(&ember_codec::entropy::histogram_u16(&data)) / 8.0;
    let t = encode_tensor(
        "w",
        Dtype::BF16,
        &[rows as u64, cols as u64],
        &data,
        SchemeKind::Lossless,
        &EncodeOptions::default(),
    )
    .unwrap();
    let (_dir, c) = write_and_open(vec![t]);
    let e = c.get("w").unwrap();
    let size = (e.stored_bytes() + c.header_bytes_of(e)) as f64;
    assert!(size <= bound * 1.005, "size {size} vs 16-bit bound {bound}: {:+.3}%", 100.0 * (size / bound - 1.0));
    assert!(size < exp_bound, "size {size} not below the exponent-only bound {exp_bound}");
    assert!(size >= bound, "below the order-0 bound: the accounting is wrong");
    assert!(e.scheme.joint_bits() > 0, "weight-like data should code mantissa bits with the exponent");
}

#[cfg(unix)]
#[test]
fn a_finished_container_is_an_ordinary_readable_file() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.ember");
    let w = ContainerWriter::create(&path).unwrap();
    w.finish().unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o644, "not the temporary file's private mode");
}

#[test]
fn joint_coding_is_bit_exact_over_special_values() {
    // Enough skewed values that the encoder codes mantissa bits with the exponent, mixed with
    // every special pattern: NaN payloads (quiet and signalling), ±inf, subnormals, ±0.
    for dtype in [Dtype::BF16, Dtype::F16] {
        let specials: [u16; 10] = if dtype == Dtype::BF16 {
            [0x7fc1, 0x7f81, 0xffff, 0x7f80, 0xff80, 0x0001, 0x807f, 0x0000, 0x8000, 0x0040]
        } else {
            [0x7e01, 0x7c01, 0xffff, 0x7c00, 0xfc00, 0x0001, 0x83ff, 0x0000, 0x8000, 0x0200]
        };
        let data: Vec<u8> = (0..65536u32)
            .flat_map(|i| {
                let bits = if i % 97 == 0 {
                    specials[(i / 97) as usize % specials.len()]
                } else {
                    let u = ((i.wrapping_mul(2654435761) >> 8) as f32) / (1u32 << 24) as f32;
                    let v = (1.0 + u / 4.0) * (2f32).powi(-((i % 6) as i32));
                    if dtype == Dtype::BF16 {
                        half::bf16::from_f32(v).to_bits()
                    } else {
                        half::f16::from_f32(v).to_bits()
                    }
                };
                bits.to_le_bytes()
            })
            .collect();
        let t = encode_tensor("w", dtype, &[256, 256], &data, SchemeKind::Lossless, &EncodeOptions::default()).unwrap();
        assert!(t.scheme.joint_bits() > 0, "{dtype}: expected joint coding");
        let (_dir, c) = write_and_open(vec![t]);
        assert!(c.decode(c.get("w").unwrap()).unwrap().data == data, "{dtype}: round trip differs");
    }
}

/// Codes and scales that do not fit the shape, or codes that are not 4-bit, are errors naming
/// the tensor.
#[test]
fn quant_codes_that_do_not_fit_are_errors() {
    let opts = EncodeOptions::default();
    let codes = vec![3u8; 64];
    let scales = vec![0u8; 4];
    let ok = QuantCodes { kind: QuantKind::Int4Symmetric { block: 32 }, codes: &codes, scales: &scales };
    assert!(encode_quant_codes("w", &[2, 32], ok, &opts).is_ok());
    let q8 = QuantCodes { kind: QuantKind::Int8Blocks { block: 32 }, ..ok };
    assert!(encode_quant_codes("w", &[2, 32], q8, &opts).is_ok());
    let cases = [
        (QuantCodes { codes: &codes[..63], ..ok }, "63 codes"),
        (QuantCodes { scales: &scales[..2], ..ok }, "bytes of scales"),
        (QuantCodes { kind: QuantKind::Int4Asymmetric { block: 32 }, ..ok }, "bytes of scales"),
        (QuantCodes { kind: QuantKind::Int8Blocks { block: 0 }, ..ok }, "block length 0"),
    ];
    for (bad, want) in cases {
        let e = encode_quant_codes("layer.w", &[2, 32], bad, &opts).unwrap_err().to_string();
        assert!(e.contains("layer.w") && e.contains(want), "{e}");
    }
    let mut big = codes.clone();
    big[5] = 16;
    let e = encode_quant_codes("layer.w", &[2, 32], QuantCodes { codes: &big, ..ok }, &opts).unwrap_err().to_string();
    assert!(e.contains("element 5"), "{e}");
    // 16 and above are fine 8-bit codes.
    assert!(encode_quant_codes("w", &[2, 32], QuantCodes { codes: &big, ..q8 }, &opts).is_ok());
}

/// A plain-header file is written with the lowest version its tensors need: per-block int8
/// scales make it version 3, and a version-2 file that claims them is an error naming the field.
/// With the default compressed header the same file is version 5.
#[test]
fn int8_blocks_make_a_version_3_file() {
    let opts = EncodeOptions { counts8: false, ..EncodeOptions::default() };
    let codes = vec![200u8; 64];
    let scales = vec![0x3c, 0x00, 0x00, 0x3c];
    let q8 = QuantCodes { kind: QuantKind::Int8Blocks { block: 32 }, codes: &codes, scales: &scales };
    let dir = tempfile::tempdir().unwrap();
    let version_of =
        |path: &std::path::Path| u32::from_le_bytes(std::fs::read(path).unwrap()[8..12].try_into().unwrap());
    let plain = dir.path().join("plain.ember");
    let mut w = ContainerWriter::create(&plain).unwrap();
    w.plain_header();
    w.add(encode_tensor("a", Dtype::F32, &[4], &[0u8; 16], SchemeKind::Raw, &opts).unwrap()).unwrap();
    w.finish().unwrap();
    assert_eq!(version_of(&plain), 2);
    let blocks = dir.path().join("blocks.ember");
    let mut w = ContainerWriter::create(&blocks).unwrap();
    w.plain_header();
    w.add(encode_quant_codes("q", &[2, 32], q8, &opts).unwrap()).unwrap();
    w.finish().unwrap();
    assert_eq!(version_of(&blocks), 3);
    let compressed = dir.path().join("compressed.ember");
    let mut w = ContainerWriter::create(&compressed).unwrap();
    w.add(encode_quant_codes("q", &[2, 32], q8, &opts).unwrap()).unwrap();
    w.finish().unwrap();
    assert_eq!(version_of(&compressed), 5);
    let c5 = Container::open(&compressed).unwrap();
    let c3 = Container::open(&blocks).unwrap();
    assert_eq!(c5.decode(c5.get("q").unwrap()).unwrap(), c3.decode(c3.get("q").unwrap()).unwrap());
    assert!(c5.header_stored_len() < c3.header_stored_len(), "the compressed header is smaller");
    let c = Container::open(&blocks).unwrap();
    let v = c.decode(c.get("q").unwrap()).unwrap().to_f32().unwrap();
    // Code 200 is -56 as i8; block 0 has scale 0x3c00 = 1.0 (little-endian bytes 00 3c).
    assert_eq!(v[0], -56.0 * half::f16::from_bits(0x003c).to_f32());
    assert_eq!(v[32], -56.0);
    // The same header under a version-2 preamble: rejected, naming the field.
    let mut bytes = std::fs::read(&blocks).unwrap();
    bytes[8..12].copy_from_slice(&2u32.to_le_bytes());
    let forged = dir.path().join("forged.ember");
    std::fs::write(&forged, &bytes).unwrap();
    let e = Container::open(&forged).err().expect("a forged version must be refused").to_string();
    assert!(e.contains("version-3") && e.contains("block") && e.contains("`q`"), "{e}");
}

/// Super-blocks make a version-4 file; under a version-3 preamble the same header is an error
/// naming the field, and malformed super-block parameters are refused by the encoder.
#[test]
fn super_blocks_make_a_version_4_file() {
    let opts = EncodeOptions { counts8: false, ..EncodeOptions::default() };
    let codes = vec![7u8; 512];
    let kind = QuantKind::Int4Super { block: 32, blocks: 8 };
    let scales = vec![1u8; kind.scales_len(&[2, 256]) as usize];
    assert_eq!(scales.len(), 2 * 20);
    let q4k = QuantCodes { kind, codes: &codes, scales: &scales };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.ember");
    let mut w = ContainerWriter::create(&path).unwrap();
    w.plain_header();
    w.add(encode_quant_codes("q", &[2, 256], q4k, &opts).unwrap()).unwrap();
    w.finish().unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    assert_eq!(u32::from_le_bytes(bytes[8..12].try_into().unwrap()), 4);
    let c = Container::open(&path).unwrap();
    // d = dmin = f16 bits 0x0101; sc = m = 1: 7 · d − dmin.
    let d = half::f16::from_bits(0x0101).to_f32();
    assert_eq!(c.decode(c.get("q").unwrap()).unwrap().to_f32().unwrap()[0], 7.0 * d - d);
    bytes[8..12].copy_from_slice(&3u32.to_le_bytes());
    let forged = dir.path().join("forged.ember");
    std::fs::write(&forged, &bytes).unwrap();
    let e = Container::open(&forged).err().expect("a forged version must be refused").to_string();
    assert!(e.contains("version-4") && e.contains("super") && e.contains("`q`"), "{e}");
    for (kind, want) in [
        (QuantKind::Int4Super { block: 32, blocks: 7 }, "super-blocks of 7"),
        (QuantKind::Int8Super { block: 16, blocks: 0 }, "super-blocks of 0"),
        (QuantKind::Int8Super { block: 70_000, blocks: 2 }, "out of range"),
    ] {
        let bad = QuantCodes { kind, codes: &codes, scales: &vec![0u8; kind.scales_len(&[2, 256]) as usize] };
        let e = encode_quant_codes("layer.w", &[2, 256], bad, &opts).unwrap_err().to_string();
        assert!(e.contains("layer.w") && e.contains(want), "{e}");
    }
}

/// Tiles longer than the decoder's symbol chunks (a few thousand elements), in every raw-field
/// layout of the 16-bit types: whole bytes, narrower fields (BF16 with mantissa bits coded) and
/// 16-bit words (F16 with few): the chunked decode gives back the same bits.
#[test]
fn long_tiles_decode_bit_exact_in_every_raw_layout() {
    let mut layouts = std::collections::BTreeSet::new();
    for dtype in [Dtype::BF16, Dtype::F16] {
        for (n, seed, specials) in [(20_000usize, 1u64, false), (20_011, 2, true), (65_536, 3, false)] {
            let data = float_bytes(dtype, n, seed, specials);
            let t =
                encode_tensor("w", dtype, &[n as u64], &data, SchemeKind::Lossless, &EncodeOptions::default()).unwrap();
            let mant = if dtype == Dtype::BF16 { 7 } else { 10 };
            let raw_bits = 1 + mant - t.scheme.joint_bits();
            layouts.insert(raw_bits.cmp(&8));
            let (_dir, c) = write_and_open(vec![t]);
            assert!(c.decode(c.get("w").unwrap()).unwrap().data == data, "{dtype}, {n} elements: round trip differs");
        }
    }
    assert_eq!(layouts.len(), 3, "not every raw layout was exercised: {layouts:?}");
}
