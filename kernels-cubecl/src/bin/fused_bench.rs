//! `fused-bench`: the batch-1 product `y = x·Wᵀ` per scheme, measured four ways in one run on
//! one matrix (GB/s of *stored* weight bytes read, and the time of one product):
//!
//! - `fast-fused`: the fused kernel on the weight's fast form (what ember ships);
//! - `rans-fused`: each entropy-coded tile decoded into a tile-sized scratch buffer, then
//!   multiplied (rANS in the inner loop, no whole decoded weight);
//! - `decode+matmul`: the whole weight decoded, then the dense product (the decode path);
//! - `dense`: the f32 weight multiplied in place (ember's dense path), and `burn-matmul`: Burn's
//!   own matmul on the transposed view (which repacks the weight every call).
//!
//! With `--crossover` it also times `fast-fused` against `decode+matmul` for `m` = 1 … 512 (the
//! batch above which `FusedMode::Auto` decodes instead).
//!
//! `cargo run --release -p ember-kernels --bin fused-bench -- [--shape 1536x576] [--reps 20] [--crossover] [--gpu]`
//!
//! Prints one JSON object. Weights are synthetic (seeded, Llama-like), generated here.

use std::time::Instant;

use anyhow::{Context, Result};
use burn::tensor::{Device, Tensor, TensorData};
use ember_codec::schemes::QuantKind;
use ember_codec::{
    encode_quant_codes, encode_tensor, synthetic, Container, ContainerWriter, Dtype, EncodeOptions, QuantCodes,
    SchemeKind,
};
use ember_kernels::fused::cpu::{matmul_wt, CpuPath, StridedF32};
use ember_kernels::fused::form::FastWeight;
use ember_kernels::fused::op::{matmul, FusedWeight, Orientation};
use rayon::prelude::*;
use serde_json::{json, Value};

fn arg(flag: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)).cloned()
}

fn has(flag: &str) -> bool {
    std::env::args().any(|a| a == flag)
}

/// Median of `reps` timed runs (after one warm-up), seconds.
fn median(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut t: Vec<f64> = (0..reps)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

/// `x·Wᵀ` with each tile decoded by the entropy decoder into a scratch buffer, then multiplied.
fn rans_fused(file: &Container, name: &str, x: &[f32], cols: usize) -> Result<Vec<f32>> {
    let t = file.get(name)?;
    let dec = file.decoder(t)?;
    let rows = (t.elements() as usize) / cols;
    let parts: Vec<(usize, Vec<f32>)> = (0..t.tiles.len())
        .into_par_iter()
        .map_init(
            || (Vec::new(), Vec::new(), Vec::new()),
            |(bytes, scratch, values): &mut (Vec<u8>, Vec<u8>, Vec<f32>), i| {
                let tile = &t.tiles[i];
                let n = tile.count as usize;
                let dtype = t.decoded_dtype();
                bytes.resize(n * dtype.size(), 0);
                dec.decode_tile(i, bytes, scratch).expect("a valid tile");
                values.clear();
                values.extend((0..n).map(|k| dtype.read_f32(bytes, k).unwrap_or(0.0)));
                let r0 = tile.start as usize / cols;
                let y = values.chunks_exact(cols).map(|row| row.iter().zip(x).map(|(a, b)| a * b).sum()).collect();
                (r0, y)
            },
        )
        .collect();
    let mut y = vec![0f32; rows];
    for (r0, part) in parts {
        y[r0..r0 + part.len()].copy_from_slice(&part);
    }
    Ok(y)
}

fn main() -> Result<()> {
    let (rows, cols): (usize, usize) = {
        let s = arg("--shape").unwrap_or_else(|| "1536x576".into());
        let (r, c) = s.split_once('x').context("--shape ROWSxCOLS")?;
        (r.parse()?, c.parse()?)
    };
    let reps: usize = arg("--reps").map(|r| r.parse()).transpose()?.unwrap_or(20);
    let device = if has("--gpu") { ember_kernels::device::vulkan_device()? } else { Device::flex() };
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("bench.ember");
    let values = synthetic::llama_like_f32(rows, cols, 7);
    let bf16 = synthetic::to_bf16_bytes(&values);
    let mut w = ContainerWriter::create(&path)?;
    let opts = EncodeOptions::default();
    let shape = [rows as u64, cols as u64];
    for scheme in [SchemeKind::Lossless, SchemeKind::Int8, SchemeKind::Int4, SchemeKind::Raw] {
        w.add(encode_tensor(scheme.name(), Dtype::BF16, &shape, &bf16, scheme, &opts)?)?;
    }
    // The forms a GGUF's own codes keep: Q4_1-style asymmetric int4 and Q8_0-style block-scaled
    // int8, blocks of 32.
    let asym = EncodeOptions { int4_asymmetric: true, ..EncodeOptions::default() };
    w.add(encode_tensor("int4-asym", Dtype::BF16, &shape, &bf16, SchemeKind::Int4, &asym)?)?;
    let kind = QuantKind::Int8Blocks { block: 32 };
    let (codes, scales) = synthetic::quant_test_codes(kind, &shape, 7);
    w.add(encode_quant_codes("int8-blocks32", &shape, QuantCodes { kind, codes: &codes, scales: &scales }, &opts)?)?;
    w.finish()?;
    let file = Container::open(&path)?;
    let x: Vec<f32> = (0..cols).map(|i| ((i * 37) % 101) as f32 / 50.0 - 1.0).collect();
    let xt = Tensor::<2>::from_data(TensorData::new(x.clone(), [1, cols]), &device);
    let weights = (rows * cols) as f64;

    let mut results = Vec::new();
    for scheme in ["lossless", "int8", "int4", "int4-asym", "int8-blocks32"] {
        let t = file.get(scheme)?;
        let form = FastWeight::from_container(&file, t)?;
        let fused = FusedWeight::new(form.clone(), &device, true);
        let fast = median(reps, || {
            let y = fused.linear(xt.clone(), Orientation::RowsAreOutputs, None);
            let _ = y.into_data();
        });
        // The CPU kernel alone, without the op's tensor conversions.
        let kernel =
            (device == Device::flex()).then(|| median(reps, || drop(matmul_wt(&form, &x, 1, None, CpuPath::Best))));
        let rans = if device == Device::flex() {
            Some(median(reps, || drop(rans_fused(&file, scheme, &x, cols).expect("tiles decode"))))
        } else {
            None
        };
        let decode_matmul = median(reps, || {
            let w = fused.decode();
            let _ = matmul(xt.clone(), w.transpose()).into_data();
        });
        results.push(json!({
            "scheme": scheme,
            "fast_form": form.form_name(),
            "stored_bytes": t.stored_bytes(),
            "fast_form_bytes": fused.resident_bytes(),
            "fast_fused_us": fast * 1e6,
            "fast_fused_kernel_us": kernel.map(|k| k * 1e6),
            "rans_fused_us": rans.map(|r| r * 1e6),
            "decode_matmul_us": decode_matmul * 1e6,
            "fast_fused_gweights_per_s": weights / fast / 1e9,
            "fast_vs_rans": rans.map(|r| r / fast),
        }));
    }
    let dense_w = Tensor::<2>::from_data(TensorData::new(values.clone(), [rows, cols]), &device).transpose();
    let dense = median(reps, || drop(matmul(xt.clone(), dense_w.clone()).into_data()));
    let burn = median(reps, || drop(xt.clone().matmul(dense_w.clone()).into_data()));
    let raw_kernel = if device == Device::flex() {
        let src = StridedF32 { data: &values, rows, cols, offset: 0, row_stride: cols, col_stride: 1 };
        Some(median(reps, || drop(matmul_wt(&src, &x, 1, None, CpuPath::Best))))
    } else {
        None
    };

    let mut crossover: Vec<Value> = Vec::new();
    if has("--crossover") {
        for scheme in ["lossless", "int8", "int4"] {
            let t = file.get(scheme)?;
            let fused = FusedWeight::new(FastWeight::from_container(&file, t)?, &device, true);
            for m in [1usize, 2, 4, 8, 16, 32, 64, 128, 256, 512] {
                let xm = Tensor::<2>::from_data(
                    TensorData::new((0..m * cols).map(|i| (i % 7) as f32 - 3.0).collect::<Vec<f32>>(), [m, cols]),
                    &device,
                );
                let r = reps.clamp(2, 5);
                let f = median(r, || drop(fused.linear(xm.clone(), Orientation::RowsAreOutputs, None).into_data()));
                let d = median(r, || drop(matmul(xm.clone(), fused.decode().transpose()).into_data()));
                // Burn's own matmul packs the weight, which pays off once enough rows share it.
                let g = median(r, || drop(xm.clone().matmul(fused.decode().transpose()).into_data()));
                let dense_ours = median(r, || drop(matmul(xm.clone(), dense_w.clone()).into_data()));
                let dense_burn = median(r, || drop(xm.clone().matmul(dense_w.clone()).into_data()));
                crossover.push(json!({"scheme": scheme, "m": m, "fused_us": f * 1e6, "decode_matmul_us": d * 1e6,
                                      "decode_burn_matmul_us": g * 1e6, "fused_faster": f < d.min(g),
                                      "dense_in_place_us": dense_ours * 1e6, "dense_burn_matmul_us": dense_burn * 1e6}));
            }
        }
    }
    let report = json!({
        "benchmark": "fused-bench",
        "device": if device == Device::flex() { "cpu (Flex)".to_string() } else { ember_kernels::device::open_vulkan()?.adapter },
        "threads": rayon::current_num_threads(),
        "shape": [rows, cols],
        "reps": reps,
        "schemes": results,
        "dense_f32_us": dense * 1e6,
        "dense_f32_kernel_us": raw_kernel.map(|r| r * 1e6),
        "burn_matmul_transposed_us": burn * 1e6,
        "dense_vs_burn_matmul": burn / dense,
        "crossover": crossover,
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
