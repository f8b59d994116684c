//! The fused products against decode-then-matmul: every scheme × dtype × awkward shape, `m` =
//! 1…8, with and without bias, both orientations, on the CPU kernels (vector and scalar paths)
//! and on Vulkan (lavapipe in CI). Tolerance per output: `1e-5 · Σ|W_row| · max|x|`, the bound
//! a reordered f32 sum keeps.

use burn::tensor::{Device, Tensor, TensorData};
use ember_codec::schemes::QuantKind;
use ember_codec::{
    encode_quant_codes, encode_tensor, Container, ContainerWriter, Dtype, EncodeOptions, QuantCodes, SchemeKind,
};
use ember_kernels::fused::coded::CodedTiles;
use ember_kernels::fused::cpu::{matmul_w, matmul_wt, CpuPath, StridedF32};
use ember_kernels::fused::form::{FastCodes, FastWeight};
use ember_kernels::fused::op::{FusedWeight, Orientation};

struct Case {
    name: String,
    dtype: Dtype,
    rows: usize,
    cols: usize,
    scheme: SchemeKind,
    opts: EncodeOptions,
    /// Codes quantised elsewhere (block-scaled int8), encoded as they are.
    codes: Option<QuantKind>,
}

fn cases() -> Vec<Case> {
    // One row; `cols` below, at and past a segment (256), not a multiple of the lanes (32) or of
    // 16; tiles of 96 elements cutting rows into pieces.
    let shapes = [(1, 1), (1, 300), (7, 13), (5, 200), (33, 64), (3, 257), (17, 40), (2, 600)];
    let mut out = Vec::new();
    for (k, &(rows, cols)) in shapes.iter().enumerate() {
        for dtype in [Dtype::BF16, Dtype::F16, Dtype::F32] {
            for scheme in [SchemeKind::Lossless, SchemeKind::Raw, SchemeKind::Int8, SchemeKind::Int4] {
                let opts = EncodeOptions {
                    tile_elems: 96,
                    lanes: 32,
                    min_symbols_per_lane: 0,
                    prob_bits: 12,
                    // Blocks that are and are not a multiple of the vector width; with the
                    // shapes, even and odd numbers of whole blocks per row, with and without a tail.
                    int4_block: [32, 12, 32, 16][k % 4],
                    int4_asymmetric: k % 3 == 1,
                    raw_if_smaller: false,
                    counts8: k % 2 == 0,
                };
                out.push(Case {
                    name: format!("{dtype}-{scheme}-{rows}x{cols}"),
                    dtype,
                    rows,
                    cols,
                    scheme,
                    opts,
                    codes: None,
                });
            }
        }
        // GGUF `Q8_0`-style blocks of 32 (a multiple of two vector widths), 24 (of one) and 12
        // (of none).
        let block = [32, 12, 32, 24][k % 4];
        let opts = EncodeOptions { tile_elems: 96, raw_if_smaller: false, ..EncodeOptions::default() };
        out.push(Case {
            name: format!("int8-blocks{block}-{rows}x{cols}"),
            dtype: Dtype::F32,
            rows,
            cols,
            scheme: SchemeKind::Int8,
            opts,
            codes: Some(QuantKind::Int8Blocks { block }),
        });
        // GGUF k-quant super-blocks: `Q6_K`-style int8 (blocks of 16, 16 per super-block) and
        // `Q4_K`-style asymmetric int4 (blocks of 32, 8 per super-block).
        let super_kind = if k % 2 == 0 {
            QuantKind::Int8Super { block: 16, blocks: 16 }
        } else {
            QuantKind::Int4Super { block: 32, blocks: 8 }
        };
        out.push(Case {
            name: format!("super-{super_kind:?}-{rows}x{cols}"),
            dtype: Dtype::F32,
            rows,
            cols,
            scheme: if k % 2 == 0 { SchemeKind::Int8 } else { SchemeKind::Int4 },
            opts: EncodeOptions { tile_elems: 96, raw_if_smaller: false, ..EncodeOptions::default() },
            codes: Some(super_kind),
        });
    }
    out
}

/// Weights with a long-tailed exponent spread, so the rank form has escapes.
fn weights(dtype: Dtype, n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut out = Vec::with_capacity(n * dtype.size());
    for i in 0..n {
        let r = next();
        let mag = ((r >> 11) as f64 / (1u64 << 53) as f64) as f32 * 0.1;
        // Every 37th value far out of the usual range: rare exponents.
        let scale = if i % 37 == 5 { 2f32.powi((r % 40) as i32 - 20) } else { 1.0 };
        let v = if r & 1 == 0 { mag * scale } else { -mag * scale };
        match dtype {
            Dtype::BF16 => out.extend(half::bf16::from_f32(v).to_bits().to_le_bytes()),
            Dtype::F16 => out.extend(half::f16::from_f32(v).to_bits().to_le_bytes()),
            _ => out.extend(v.to_le_bytes()),
        }
    }
    out
}

fn write(cases: &[Case], dir: &std::path::Path) -> Container {
    let path = dir.join("fused.ember");
    let mut w = ContainerWriter::create(&path).unwrap();
    for (i, c) in cases.iter().enumerate() {
        let data = weights(c.dtype, c.rows * c.cols, i as u64 + 3);
        let shape = [c.rows as u64, c.cols as u64];
        if let Some(kind) = c.codes {
            let (codes, scales) = ember_codec::synthetic::quant_test_codes(kind, &shape, i as u64);
            let source = QuantCodes { kind, codes: &codes, scales: &scales };
            w.add(encode_quant_codes(&c.name, &shape, source, &c.opts).unwrap()).unwrap();
            continue;
        }
        w.add(encode_tensor(&c.name, c.dtype, &shape, &data, c.scheme, &c.opts).unwrap()).unwrap();
    }
    w.finish().unwrap();
    Container::open(&path).unwrap()
}

fn activations(m: usize, k: usize, seed: u64) -> Vec<f32> {
    (0..m * k).map(|i| (((i as u64 * 2654435761 + seed) % 1000) as f32 / 500.0) - 1.0).collect()
}

/// Checks `got` (`m × n`) against `x·Wᵀ` (`rows_are_outputs`) or `x·W`, computed in f64 from the
/// reference decode `w` (`rows × cols`).
#[allow(clippy::too_many_arguments)]
fn check(
    got: &[f32],
    w: &[f32],
    rows: usize,
    cols: usize,
    x: &[f32],
    m: usize,
    bias: Option<&[f32]>,
    rows_are_outputs: bool,
    what: &str,
) {
    let (k, n) = if rows_are_outputs { (cols, rows) } else { (rows, cols) };
    assert_eq!(got.len(), m * n, "{what}: output length");
    let at = |o: usize, j: usize| if rows_are_outputs { w[o * cols + j] } else { w[j * cols + o] };
    let xmax = x.iter().fold(0f32, |a, v| a.max(v.abs())) as f64;
    for i in 0..m {
        for o in 0..n {
            let mut exact = bias.map_or(0.0, |b| b[o] as f64);
            let mut mass = 0f64;
            for j in 0..k {
                exact += at(o, j) as f64 * x[i * k + j] as f64;
                mass += (at(o, j) as f64).abs();
            }
            let tol = 1e-5 * mass * xmax + 1e-6 * bias.map_or(0.0, |b| b[o].abs() as f64) + 1e-30;
            let g = got[i * n + o] as f64;
            assert!((g - exact).abs() <= tol, "{what}: y[{i}][{o}] = {g}, expected {exact} (tolerance {tol})");
        }
    }
}

#[test]
fn fast_forms_decode_exactly_like_the_reference() {
    let dir = tempfile::tempdir().unwrap();
    let cases = cases();
    let file = write(&cases, dir.path());
    let mut escapes = 0;
    for t in file.tensors() {
        let reference = file.decode(t).unwrap().to_f32().unwrap();
        let form = FastWeight::from_container(&file, t).unwrap();
        if let FastCodes::Bf16Rank { escapes: e, .. } = &form.codes {
            escapes += e.len();
        }
        let got = form.decode_f32();
        let same = got.iter().zip(&reference).all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(same && got.len() == reference.len(), "{}: fast form decodes differently", t.name);
    }
    assert!(escapes > 0, "the fixture must exercise rank-form escapes");
}

#[test]
fn cpu_fused_products_match_decode_then_matmul() {
    let dir = tempfile::tempdir().unwrap();
    let cases = cases();
    let file = write(&cases, dir.path());
    for (t, c) in file.tensors().iter().zip(&cases) {
        let w = file.decode(t).unwrap().to_f32().unwrap();
        let form = FastWeight::from_container(&file, t).unwrap();
        // 1…8, and batches that take the eight- and four-row kernels with a remainder.
        for m in (1..=8).chain([13, 16]) {
            for with_bias in [false, true] {
                for path in [CpuPath::Best, CpuPath::Scalar] {
                    let what = format!("{} m={m} bias={with_bias} {path:?}", c.name);
                    let x = activations(m, c.cols, m as u64);
                    let bias: Vec<f32> = (0..c.rows).map(|i| i as f32 * 0.25 - 1.0).collect();
                    let b = with_bias.then_some(&bias[..]);
                    let y = matmul_wt(&form, &x, m, b, path);
                    check(&y, &w, c.rows, c.cols, &x, m, b, true, &format!("dot {what}"));
                    let x = activations(m, c.rows, m as u64 + 9);
                    let bias: Vec<f32> = (0..c.cols).map(|i| 0.5 - i as f32 * 0.125).collect();
                    let b = with_bias.then_some(&bias[..]);
                    let y = matmul_w(&form, &x, m, b, path);
                    check(&y, &w, c.rows, c.cols, &x, m, b, false, &format!("axpy {what}"));
                }
            }
        }
    }
}

#[test]
fn products_from_entropy_coded_tiles_match_decode_then_matmul() {
    let dir = tempfile::tempdir().unwrap();
    let cases = cases();
    let file = std::sync::Arc::new(write(&cases, dir.path()));
    for (t, c) in file.tensors().iter().zip(&cases) {
        let w = file.decode(t).unwrap().to_f32().unwrap();
        let tiles = CodedTiles::new(std::sync::Arc::clone(&file), t).unwrap();
        assert_eq!(tiles.shape(), (c.rows, c.cols));
        let decoded = tiles.decode_f32();
        assert!(decoded.iter().zip(&w).all(|(a, b)| a.to_bits() == b.to_bits()), "{}: decode", c.name);
        // Rows that straddle tiles (96-element tiles), repeated ids, the first and last row.
        let ids: Vec<usize> = [c.rows - 1, 0, c.rows / 2, c.rows / 2].into();
        let rows = tiles.select_rows(&ids).unwrap();
        for (k, &r) in ids.iter().enumerate() {
            assert_eq!(&rows[k * c.cols..(k + 1) * c.cols], &w[r * c.cols..(r + 1) * c.cols], "{}: rows", c.name);
        }
        assert!(tiles.select_rows(&[c.rows]).is_none(), "an id past the table is refused");
        for m in [1usize, 3, 8, 13] {
            for with_bias in [false, true] {
                for path in [CpuPath::Best, CpuPath::Scalar] {
                    let what = format!("coded {} m={m} bias={with_bias} {path:?}", c.name);
                    let x = activations(m, c.cols, m as u64);
                    let bias: Vec<f32> = (0..c.rows).map(|i| i as f32 * 0.25 - 1.0).collect();
                    let b = with_bias.then_some(&bias[..]);
                    let y = tiles.matmul(&x, m, b, Orientation::RowsAreOutputs, path);
                    check(&y, &w, c.rows, c.cols, &x, m, b, true, &format!("dot {what}"));
                    let x = activations(m, c.rows, m as u64 + 9);
                    let bias: Vec<f32> = (0..c.cols).map(|i| 0.5 - i as f32 * 0.125).collect();
                    let b = with_bias.then_some(&bias[..]);
                    let y = tiles.matmul(&x, m, b, Orientation::RowsAreInputs, path);
                    check(&y, &w, c.rows, c.cols, &x, m, b, false, &format!("axpy {what}"));
                }
            }
        }
    }
}

#[test]
fn a_damaged_tile_is_refused_when_kept_entropy_coded() {
    let dir = tempfile::tempdir().unwrap();
    let cases: Vec<Case> =
        cases().into_iter().filter(|c| c.scheme == SchemeKind::Lossless && c.rows * c.cols > 500).collect();
    let file = write(&cases, dir.path());
    let path = file.path().to_path_buf();
    let t = file.tensors()[0].clone();
    drop(file);
    // Overwrite the first tile's payload: the container is opened without verifying checksums,
    // so it is the decode of every tile at construction that must catch it.
    let mut bytes = std::fs::read(&path).unwrap();
    let off = t.tiles[0].offset as usize;
    for b in &mut bytes[off..off + t.tiles[0].len as usize] {
        *b = 0xff;
    }
    std::fs::write(&path, &bytes).unwrap();
    let file = std::sync::Arc::new(Container::open(&path).unwrap());
    let t = file.get(&t.name).unwrap();
    let err = CodedTiles::new(std::sync::Arc::clone(&file), t).expect_err("a damaged tile must be refused");
    assert!(err.to_string().contains(&t.name), "the error names the tensor: {err}");
}

#[test]
fn nan_and_infinity_in_x_propagate_as_in_the_reference() {
    let dir = tempfile::tempdir().unwrap();
    let cases: Vec<Case> = cases().into_iter().filter(|c| c.rows > 1 && c.cols > 16).collect();
    let file = write(&cases, dir.path());
    for (t, c) in file.tensors().iter().zip(&cases) {
        let w = file.decode(t).unwrap().to_f32().unwrap();
        let form = FastWeight::from_container(&file, t).unwrap();
        let mut x = activations(2, c.cols, 1);
        x[3] = f32::NAN;
        x[c.cols + 5] = f32::INFINITY;
        for path in [CpuPath::Best, CpuPath::Scalar] {
            let y = matmul_wt(&form, &x, 2, None, path);
            for o in 0..c.rows {
                assert!(y[o].is_nan(), "{}: NaN in x must reach every output of its row", c.name);
                // Reference: W[o][5]·∞ plus finite terms.
                let wv = w[o * c.cols + 5];
                let expect = if wv == 0.0 { f32::NAN } else { wv * f32::INFINITY };
                let got = y[c.rows + o];
                assert!(
                    (expect.is_nan() && got.is_nan()) || got == expect,
                    "{} {path:?}: y[1][{o}] = {got}, expected {expect}",
                    c.name
                );
            }
            // The batch-1 kernels (codes decoded in registers, rank-form escapes added apart).
            let y1 = matmul_wt(&form, &x[c.cols..], 1, None, path);
            for (o, got) in y1.iter().enumerate() {
                let wv = w[o * c.cols + 5];
                let expect = if wv == 0.0 { f32::NAN } else { wv * f32::INFINITY };
                assert!((expect.is_nan() && got.is_nan()) || *got == expect, "{} {path:?} m=1: y[{o}] = {got}", c.name);
            }
        }
    }
}

#[test]
fn dense_strided_sources_match_in_both_layouts() {
    let (rows, cols) = (37, 300);
    let w: Vec<f32> = activations(rows, cols, 5);
    let x = activations(3, cols, 2);
    // The weight as stored (`[rows, cols]`, row stride `cols`) and as a transposed view.
    let src = StridedF32 { data: &w, rows, cols, offset: 0, row_stride: cols, col_stride: 1 };
    assert!(src.in_bounds());
    check(&matmul_wt(&src, &x, 3, None, CpuPath::Best), &w, rows, cols, &x, 3, None, true, "dense dot");
    let xt = activations(3, rows, 4);
    check(&matmul_w(&src, &xt, 3, None, CpuPath::Best), &w, rows, cols, &xt, 3, None, false, "dense axpy");
    let bad = StridedF32 { data: &w, rows, cols, offset: 1, row_stride: cols, col_stride: 1 };
    assert!(!bad.in_bounds(), "a view past the buffer is refused");
}

#[test]
fn burn_matmul_on_the_cpu_path_reads_transposed_views_in_place() {
    let device = Device::flex();
    let (rows, cols, m) = (45, 70, 3);
    let w = activations(rows, cols, 8);
    let x = activations(m, cols, 3);
    let wt = Tensor::<2>::from_data(TensorData::new(w.clone(), [rows, cols]), &device).transpose();
    let xt = Tensor::<2>::from_data(TensorData::new(x.clone(), [m, cols]), &device);
    let reference = xt.clone().matmul(wt.clone()).into_data().try_to_vec::<f32>().unwrap();
    let ours = ember_kernels::fused::op::matmul(xt.clone(), wt).into_data().try_to_vec::<f32>().unwrap();
    check(&ours, &w, rows, cols, &x, m, None, true, "flex transposed view");
    check(&reference, &w, rows, cols, &x, m, None, true, "burn reference");
    // A contiguous `[in, out]` weight takes the axpy form.
    let wc = Tensor::<2>::from_data(TensorData::new(w.clone(), [rows, cols]), &device);
    let xr = activations(m, rows, 6);
    let ours = ember_kernels::fused::op::matmul(Tensor::from_data(TensorData::new(xr.clone(), [m, rows]), &device), wc)
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();
    check(&ours, &w, rows, cols, &xr, m, None, false, "flex contiguous");
}

/// The fused op on `device` for every case and `m`, against the reference decode.
fn fused_op_on(device: &Device) {
    let dir = tempfile::tempdir().unwrap();
    let cases = cases();
    let file = std::sync::Arc::new(write(&cases, dir.path()));
    for (t, c) in file.tensors().iter().zip(&cases) {
        let w = file.decode(t).unwrap().to_f32().unwrap();
        // In device memory, or in host RAM and uploaded at each use (host residency).
        let on_device = t.name.len() % 2 == 0;
        let fused = FusedWeight::new(FastWeight::from_container(&file, t).unwrap(), device, on_device);
        check_op(&fused, &w, c, device);
        // The entropy-coded tiles: fused on the CPU path, decode + matmul on a GPU.
        let coded = FusedWeight::coded(CodedTiles::new(std::sync::Arc::clone(&file), t).unwrap(), device);
        check_op(&coded, &w, c, device);
    }
}

fn check_op(fused: &FusedWeight, w: &[f32], c: &Case, device: &Device) {
    for m in [1usize, 2, 5, 8, 9] {
        let x = activations(m, c.cols, m as u64);
        let bias: Vec<f32> = (0..c.rows).map(|i| i as f32 * 0.5).collect();
        let xt = Tensor::<2>::from_data(TensorData::new(x.clone(), [m, c.cols]), device);
        let bt = Tensor::<1>::from_data(TensorData::new(bias.clone(), [c.rows]), device);
        let y = fused.linear(xt, Orientation::RowsAreOutputs, Some(bt)).into_data().try_to_vec::<f32>().unwrap();
        check(&y, w, c.rows, c.cols, &x, m, Some(&bias), true, &format!("op {} m={m}", c.name));
    }
    let decoded = fused.decode().into_data().try_to_vec::<f32>().unwrap();
    assert!(decoded.iter().zip(w).all(|(a, b)| a.to_bits() == b.to_bits()), "{}: decode", c.name);
    let ids = [c.rows - 1, 0];
    let rows = fused.rows(&ids).unwrap().into_data().try_to_vec::<f32>().unwrap();
    for (k, &r) in ids.iter().enumerate() {
        assert_eq!(&rows[k * c.cols..(k + 1) * c.cols], &w[r * c.cols..(r + 1) * c.cols], "{}: rows", c.name);
    }
    assert!(fused.rows(&[c.rows]).is_none(), "an id past the table is refused");
}

#[test]
fn fused_op_on_the_cpu_path() {
    fused_op_on(&Device::flex());
}

#[test]
fn fused_op_on_vulkan() {
    // Fails loudly: CI must run the kernels on Vulkan, never skip them.
    let device = ember_kernels::device::vulkan_device()
        .expect("a Vulkan device (lavapipe: apt-get install mesa-vulkan-drivers libvulkan1)");
    fused_op_on(&device);
}

/// From sixteen activation rows on, the dot-form products run in lanes: every output is one chain
/// of multiply-adds in column order, so the fast form, the entropy-coded tiles (tiles of 96
/// elements cut rows into pieces) and the dense matrix give the same bits, and a sequence's
/// outputs do not depend on its place in the batch nor on the batch's size.
#[test]
fn batches_of_sixteen_rows_and_more_give_the_same_bits_from_every_form_and_slot() {
    let dir = tempfile::tempdir().unwrap();
    let cases: Vec<Case> = cases().into_iter().filter(|c| c.rows * c.cols > 1).collect();
    let file = std::sync::Arc::new(write(&cases, dir.path()));
    // One thread: tiles summed by two threads would add two partial chains of a cut row.
    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    pool.install(|| {
        for (t, c) in file.tensors().iter().zip(&cases) {
            let w = file.decode(t).unwrap().to_f32().unwrap();
            let form = FastWeight::from_container(&file, t).unwrap();
            let tiles = CodedTiles::new(std::sync::Arc::clone(&file), t).unwrap();
            let dense =
                StridedF32 { data: &w, rows: c.rows, cols: c.cols, offset: 0, row_stride: c.cols, col_stride: 1 };
            let x = activations(32, c.cols, 7);
            let mut alone: Option<Vec<f32>> = None;
            for m in [16usize, 21, 32] {
                // Batch `m` holds rows `32 − m ..= 31` of `x`: row 31 is last, in lane 15, 20, 31.
                let xm = &x[(32 - m) * c.cols..];
                let what = format!("{} m={m}", c.name);
                let fast = matmul_wt(&form, xm, m, None, CpuPath::Best);
                check(&fast, &w, c.rows, c.cols, xm, m, None, true, &what);
                let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                let coded = tiles.matmul(xm, m, None, Orientation::RowsAreOutputs, CpuPath::Best);
                assert_eq!(bits(&coded), bits(&fast), "{what}: coded tiles and fast form");
                let plain = matmul_wt(&dense, xm, m, None, CpuPath::Best);
                assert_eq!(bits(&plain), bits(&fast), "{what}: dense and fast form");
                let last = &fast[(m - 1) * c.rows..];
                match &alone {
                    Some(a) => assert_eq!(bits(last), bits(a), "{what}: row 31 in another batch"),
                    None => alone = Some(last.to_vec()),
                }
            }
        }
    });
}
