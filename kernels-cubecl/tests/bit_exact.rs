//! The GPU kernels against the CPU reference decoder, bit for bit, on Vulkan (lavapipe in CI):
//! every scheme × dtype × awkward shape, with NaN, infinities, subnormals and −0 in the data.
//! The same batches also run through the op on Burn's Flex CPU backend.

use burn::tensor::{DType, Device, Tensor};
use ember_codec::schemes::QuantKind;
use ember_codec::{
    encode_quant_codes, encode_tensor, Container, ContainerWriter, Dtype, EncodeOptions, QuantCodes, SchemeKind,
};
use ember_kernels::batch::DecodeBatch;
use ember_kernels::op::decode_batch;

fn vulkan() -> Device {
    // Fails loudly: CI must run the kernels on Vulkan, never skip them or fall back to GL.
    ember_kernels::device::vulkan_device()
        .expect("a Vulkan device (lavapipe: apt-get install mesa-vulkan-drivers libvulkan1)")
}

fn float_bytes(dtype: Dtype, n: usize, seed: u64, specials: bool) -> Vec<u8> {
    ember_codec::synthetic::float_test_bytes(dtype, n, seed, specials)
}

struct Case {
    name: String,
    dtype: Dtype,
    shape: Vec<u64>,
    scheme: SchemeKind,
    opts: EncodeOptions,
    /// Codes quantised elsewhere (block-scaled int8), encoded as they are.
    codes: Option<QuantKind>,
}

fn cases() -> Vec<Case> {
    let tile = 96usize;
    let shapes: Vec<Vec<u64>> = vec![
        vec![1],
        vec![1, 1],
        vec![tile as u64 - 1],
        vec![tile as u64],
        vec![tile as u64 + 1],
        vec![7, 13],
        vec![5, 200],
        vec![33, 64],
        vec![3, 2, 17],
    ];
    let mut out = Vec::new();
    for (k, shape) in shapes.iter().enumerate() {
        for dtype in [Dtype::BF16, Dtype::F16, Dtype::F32] {
            for scheme in [SchemeKind::Lossless, SchemeKind::Raw, SchemeKind::Int8, SchemeKind::Int4] {
                for lanes in [32u32, 4] {
                    let asym = k % 2 == 1;
                    let opts = EncodeOptions {
                        tile_elems: tile,
                        lanes,
                        min_symbols_per_lane: 0,
                        prob_bits: 12 - (k as u32 % 3),
                        int4_block: 16,
                        int4_asymmetric: asym,
                        raw_if_smaller: false,
                        // Both lane tables the encoder writes: 8-bit counts (version 5) where
                        // they are smaller (32 lanes), 16-bit ones (version 2) otherwise.
                        counts8: k % 3 != 2,
                    };
                    out.push(Case {
                        name: format!("{dtype}-{scheme}-{lanes}-{k}"),
                        dtype,
                        shape: shape.clone(),
                        scheme,
                        opts,
                        codes: None,
                    });
                }
            }
        }
        for lanes in [32u32, 4] {
            let opts = EncodeOptions { tile_elems: tile, lanes, raw_if_smaller: false, ..EncodeOptions::default() };
            out.push(Case {
                name: format!("int8-blocks-{lanes}-{k}"),
                dtype: Dtype::F32,
                shape: shape.clone(),
                scheme: SchemeKind::Int8,
                opts,
                codes: Some(QuantKind::Int8Blocks { block: 16 }),
            });
        }
        // GGUF k-quant super-blocks (`Q6_K`- and `Q4_K`-style side data).
        for kind in [QuantKind::Int8Super { block: 16, blocks: 16 }, QuantKind::Int4Super { block: 32, blocks: 8 }] {
            let opts = EncodeOptions {
                tile_elems: tile,
                lanes: 32,
                min_symbols_per_lane: 0,
                raw_if_smaller: false,
                ..EncodeOptions::default()
            };
            out.push(Case {
                name: format!("{kind:?}-{k}"),
                dtype: Dtype::F32,
                shape: shape.clone(),
                scheme: if kind.is_int4() { SchemeKind::Int4 } else { SchemeKind::Int8 },
                opts,
                codes: Some(kind),
            });
        }
    }
    out
}

fn write(cases: &[Case], dir: &std::path::Path) -> (Container, Vec<Vec<u8>>) {
    let path = dir.join("cases.ember");
    let mut w = ContainerWriter::create(&path).unwrap();
    let mut originals = Vec::new();
    for (i, c) in cases.iter().enumerate() {
        let n: u64 = c.shape.iter().product();
        let lossy = matches!(c.scheme, SchemeKind::Int8 | SchemeKind::Int4);
        let data = float_bytes(c.dtype, n as usize, i as u64 + 7, !lossy);
        if let Some(kind) = c.codes {
            let (codes, scales) = ember_codec::synthetic::quant_test_codes(kind, &c.shape, i as u64);
            let source = QuantCodes { kind, codes: &codes, scales: &scales };
            w.add(encode_quant_codes(&c.name, &c.shape, source, &c.opts).unwrap()).unwrap();
            originals.push(Vec::new());
            continue;
        }
        w.add(encode_tensor(&c.name, c.dtype, &c.shape, &data, c.scheme, &c.opts).unwrap()).unwrap();
        originals.push(data);
    }
    w.finish().unwrap();
    (Container::open(&path).unwrap(), originals)
}

fn to_bytes(t: Tensor<1>) -> (DType, Vec<u8>) {
    let data = t.into_data();
    (data.dtype(), data.as_bytes().to_vec())
}

/// The reference: the CPU decoder's output widened to f32 (bit patterns compared).
fn reference_f32(file: &Container, name: &str) -> Vec<u8> {
    let d = file.decode(file.get(name).unwrap()).unwrap();
    d.to_f32().unwrap().iter().flat_map(|v| v.to_bits().to_le_bytes()).collect()
}

fn check_device(device: &Device, label: &str) {
    let dir = tempfile::tempdir().unwrap();
    let cases = cases();
    let (file, originals) = write(&cases, dir.path());
    let entries: Vec<_> = file.tensors().iter().collect();
    let (batches, plain) = DecodeBatch::group(&file, &entries).unwrap();
    assert!(plain.is_empty());
    assert!(batches.len() >= 10, "one batch per scheme and lane count");
    use ember_codec::tile::LaneTable;
    for table in [LaneTable::Counts8, LaneTable::Counts16] {
        assert!(batches.iter().any(|b| b.lane_table() == table), "no batch with {table:?} lane tables");
    }
    let mut checked = 0;
    for batch in &batches {
        let (dtype, out) = to_bytes(decode_batch(batch, device, false));
        assert_eq!(dtype, DType::F32);
        for o in batch.outputs() {
            let got = &out[4 * o.offset..4 * (o.offset + o.elements)];
            let want = reference_f32(&file, &o.name);
            if let Some(i) = (0..o.elements).find(|&i| got[4 * i..4 * i + 4] != want[4 * i..4 * i + 4]) {
                let bits = |b: &[u8]| u32::from_le_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]]);
                panic!(
                    "{label}: `{}` differs from the CPU decoder at element {i} of {}: {:#010x} vs {:#010x}",
                    o.name,
                    o.elements,
                    bits(got),
                    bits(&want)
                );
            }
            checked += 1;
        }
        if batch.supports_native16() {
            let (dtype, out) = to_bytes(decode_batch(batch, device, true));
            assert!(matches!(dtype, DType::BF16 | DType::F16));
            for o in batch.outputs() {
                let i = cases.iter().position(|c| c.name == o.name).unwrap();
                assert_eq!(
                    &out[2 * o.offset..2 * (o.offset + o.elements)],
                    &originals[i][..],
                    "{label}: native `{}`",
                    o.name
                );
            }
        }
    }
    assert_eq!(checked, cases.len());
}

#[test]
fn vulkan_kernels_match_the_cpu_decoder_bit_for_bit() {
    check_device(&vulkan(), "vulkan");
}

#[test]
fn flex_backend_matches_the_cpu_decoder_bit_for_bit() {
    check_device(&Device::flex(), "flex");
}

#[test]
fn one_launch_decodes_a_whole_block_of_tensors() {
    // All BF16 lossless weights of a Llama-like block go through a single batch.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("block.ember");
    let mut w = ContainerWriter::create(&path).unwrap();
    let names = ["q", "k", "v", "o", "gate", "up", "down"];
    let shapes = [[64u64, 64], [16, 64], [16, 64], [64, 64], [96, 64], [96, 64], [64, 96]];
    let mut originals = Vec::new();
    for (i, (n, s)) in names.iter().zip(shapes).enumerate() {
        let data = float_bytes(Dtype::BF16, (s[0] * s[1]) as usize, i as u64, false);
        let opts = EncodeOptions { tile_elems: 1024, ..EncodeOptions::default() };
        w.add(encode_tensor(n, Dtype::BF16, &s, &data, SchemeKind::Lossless, &opts).unwrap()).unwrap();
        originals.push(data);
    }
    w.finish().unwrap();
    let file = Container::open(&path).unwrap();
    let entries: Vec<_> = file.tensors().iter().collect();
    let batch = DecodeBatch::new(&file, &entries).unwrap();
    assert!(batch.num_tiles() > names.len());
    let (_, out) = to_bytes(decode_batch(&batch, &vulkan(), true));
    for (o, orig) in batch.outputs().iter().zip(&originals) {
        assert_eq!(&out[2 * o.offset..2 * (o.offset + o.elements)], &orig[..], "{}", o.name);
    }
}

#[test]
fn corrupt_tiles_are_refused_before_upload() {
    let dir = tempfile::tempdir().unwrap();
    let cases = cases();
    let (file, _) = write(&cases[..8], dir.path());
    let path = file.path().to_path_buf();
    let t = file.tensors()[0].clone();
    drop(file);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[t.tiles[0].offset as usize + 1] ^= 0x80;
    std::fs::write(&path, bytes).unwrap();
    let file = Container::open(&path).unwrap();
    let entry = file.get(&t.name).unwrap();
    let err = DecodeBatch::new(&file, &[entry]).unwrap_err().to_string();
    assert!(err.contains(&t.name) && err.contains("checksum"), "{err}");
}

#[test]
fn batches_larger_than_one_dispatch_dimension_decode() {
    // 70 000 one-element tiles: more cubes than the 65 535 a dispatch dimension allows.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("many.ember");
    let n = 70_000usize;
    let data = float_bytes(Dtype::BF16, n, 3, false);
    let opts = EncodeOptions { tile_elems: 1, lanes: 1, ..EncodeOptions::default() };
    let mut w = ContainerWriter::create(&path).unwrap();
    w.add(encode_tensor("w", Dtype::BF16, &[n as u64], &data, SchemeKind::Lossless, &opts).unwrap()).unwrap();
    w.finish().unwrap();
    let file = Container::open(&path).unwrap();
    let batch = DecodeBatch::new(&file, &[file.get("w").unwrap()]).unwrap();
    assert_eq!(batch.num_tiles(), n);
    let (_, out) = to_bytes(decode_batch(&batch, &vulkan(), false));
    assert!(out[..4 * n] == reference_f32(&file, "w")[..], "tiles past the first dispatch row differ");
}
