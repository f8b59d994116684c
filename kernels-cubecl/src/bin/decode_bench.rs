//! `decode-bench`: decoded GB/s per scheme on Llama-sized matrices, with the device's plain
//! copy bandwidth measured in the same run (so `decode / copy` holds across machines), on the
//! Vulkan GPU and on the CPU path (the reference decoder behind the same op, Burn's Flex).
//!
//! `cargo run --release -p ember-kernels --bin decode-bench -- [--json] [--shapes 4096x4096,14336x4096]
//!  [--reps N] [--no-cpu] [--no-gpu]`
//!
//! GB/s count bytes *written* (decoded output; for the copy, bytes copied). Weights are
//! synthetic (seeded), generated here rather than carried.

use std::time::Instant;

use anyhow::{bail, Context, Result};
use burn::tensor::{DType, Device, Int, Tensor, TensorData};
use ember_codec::{encode_tensor, synthetic, Container, ContainerWriter, Dtype, EncodeOptions, SchemeKind};
use ember_kernels::batch::{largest_buffer_bytes, DecodeBatch};
use ember_kernels::op::{copy_words, decode_batch_to_data, UploadedBatch};
use serde_json::{json, Value};

struct Opts {
    json: bool,
    shapes: Vec<(usize, usize)>,
    reps: usize,
    cpu: bool,
    gpu: bool,
}

fn parse() -> Result<Opts> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |flag: &str| args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)).cloned();
    let shapes = value("--shapes")
        .unwrap_or_else(|| "4096x4096,14336x4096".into())
        .split(',')
        .map(|s| {
            let (r, c) = s.split_once('x').with_context(|| format!("--shapes: `{s}` is not ROWSxCOLS"))?;
            Ok((r.parse()?, c.parse()?))
        })
        .collect::<Result<_>>()?;
    Ok(Opts {
        json: args.iter().any(|a| a == "--json"),
        shapes,
        reps: value("--reps").map(|r| r.parse()).transpose()?.unwrap_or(5),
        cpu: !args.iter().any(|a| a == "--no-cpu"),
        gpu: !args.iter().any(|a| a == "--no-gpu"),
    })
}

/// Best of `reps` timed runs of `f` followed by a device sync, in seconds (one warm-up first).
fn best_of(device: &Device, reps: usize, mut f: impl FnMut()) -> Result<f64> {
    f();
    device.sync().map_err(|e| anyhow::anyhow!("device sync: {e:?}"))?;
    let mut best = f64::INFINITY;
    for _ in 0..reps {
        let t = Instant::now();
        f();
        device.sync().map_err(|e| anyhow::anyhow!("device sync: {e:?}"))?;
        best = best.min(t.elapsed().as_secs_f64());
    }
    Ok(best)
}

fn copy_gbps(device: &Device, bytes: usize, reps: usize) -> Result<f64> {
    let words = bytes / 4;
    let pattern: Vec<u32> = (0..words as u32).map(|i| i.wrapping_mul(2_654_435_761)).collect();
    let src = Tensor::<1, Int>::from_data(TensorData::new(pattern.clone(), [words]), (device, DType::U32));
    let secs = best_of(device, reps, || drop(copy_words(src.clone())))?;
    // A launch the device refused (a buffer over its limits, say) costs nothing and would read
    // as an impossible bandwidth: check what it wrote.
    let copied = copy_words(src)
        .try_into_data()
        .map_err(|e| anyhow::anyhow!("copying {bytes} bytes on the device: {e:?} (over its largest buffer?)"))?;
    let copied = copied.as_slice::<u32>().map_err(|e| anyhow::anyhow!("reading the copy back: {e:?}"))?;
    if copied != pattern.as_slice() {
        bail!("the device's copy of {bytes} bytes differs from its source: its figures would be meaningless");
    }
    Ok(bytes as f64 / secs / 1e9)
}

/// The decoded output, bit for bit against the CPU reference decoder: a timing is only reported
/// for a decode that was right.
fn verify(up: &UploadedBatch, batch: &DecodeBatch, native16: bool, case: &str) -> Result<()> {
    let want = decode_batch_to_data(batch, native16).map_err(|e| anyhow::anyhow!("{case}: CPU reference: {e}"))?;
    let got = up
        .decode()
        .try_into_data()
        .map_err(|e| anyhow::anyhow!("{case}: decoding on the device: {e:?} (over its largest buffer?)"))?;
    let (g, w) = (got.as_bytes(), want.as_bytes());
    if g != w {
        let at = g.iter().zip(w).position(|(a, b)| a != b);
        bail!(
            "{case} ({}): decoded output differs from the CPU reference decoder: {:?} of {} bytes vs \
             {:?} of {} bytes, first differing byte {at:?}",
            if native16 { "bf16" } else { "f32" },
            got.dtype(),
            g.len(),
            want.dtype(),
            w.len()
        );
    }
    Ok(())
}

/// Runs every case on `device`; `limit` is its largest buffer, and a case whose output (or
/// compressed words) would not fit is recorded as skipped, with the reason, instead of failing
/// inside the allocator (lavapipe's 128 MiB is less than a 14336×4096 matrix in f32).
fn run_device(
    label: &str,
    device: &Device,
    name: &str,
    limit: Option<u64>,
    o: &Opts,
    files: &[(String, Container)],
) -> Result<Value> {
    let fits = |bytes: u64| limit.is_none_or(|l| bytes <= l);
    let largest = o.shapes.iter().map(|(r, c)| r * c * 4).filter(|&b| fits(b as u64)).max().unwrap_or(1 << 20);
    let copy = copy_gbps(device, largest, o.reps)?;
    let mut rows = Vec::new();
    let mut skipped = Vec::new();
    for (case, file) in files {
        let t = &file.tensors()[0];
        let need = largest_buffer_bytes(t);
        if !fits(need) {
            let reason =
                format!("needs a {need}-byte buffer; the device's largest is {} bytes", limit.unwrap_or_default());
            if !o.json {
                println!("{label:>6} {case:<24} skipped: {reason}");
            }
            skipped.push(json!({ "case": case, "shape": t.shape, "reason": reason }));
            continue;
        }
        let batch = DecodeBatch::new(file, &[t])?;
        for native16 in [false, true] {
            if native16 && !batch.supports_native16() {
                continue;
            }
            let up = UploadedBatch::new(&batch, device, native16);
            up.validate().map_err(|e| anyhow::anyhow!("{case}: tile check: {e}"))?;
            verify(&up, &batch, native16, case)?;
            let secs = best_of(device, o.reps, || drop(up.decode()))?;
            // The one-time tile check (run when a weight is attached), timed like a decode: its
            // status read-back included.
            let mut failed = None;
            let check = best_of(device, o.reps, || failed = up.validate().err().or(failed.take()))?;
            if let Some(e) = failed {
                bail!("{case}: the tile check failed on a later run: {e}");
            }
            let out_bytes = up.output_bytes();
            let gbps = out_bytes as f64 / secs / 1e9;
            rows.push(json!({
                "case": case, "shape": t.shape, "scheme": t.scheme.kind().name(),
                "output": if native16 { "bf16" } else { "f32" },
                "output_bytes": out_bytes, "compressed_bytes": t.stored_bytes(),
                "seconds": secs, "decoded_gbps": gbps,
                "bf16_weights_gbps": (t.elements() * 2) as f64 / secs / 1e9,
                "decode_vs_copy": gbps / copy,
                "check_seconds": check, "check_vs_decode": check / secs,
            }));
            if !o.json {
                println!(
                    "{label:>6} {case:<24} -> {:<4} {:>8.2} GB/s decoded ({:.2}x of copy); tile check {:.2}x a decode",
                    if native16 { "bf16" } else { "f32" },
                    gbps,
                    gbps / copy,
                    check / secs
                );
            }
        }
    }
    if !o.json {
        println!("{label:>6} copy {copy:.2} GB/s ({name})");
    }
    Ok(json!({
        "path": label, "device": name, "max_buffer_bytes": limit, "copy_gbps": copy, "copy_bytes": largest,
        "results": rows, "skipped": skipped,
    }))
}

fn main() -> Result<()> {
    let o = parse()?;
    let dir = tempfile::tempdir()?;
    // Encode each case once (host side, not timed).
    let mut files = Vec::new();
    for &(rows, cols) in &o.shapes {
        let values = synthetic::llama_like_f32(rows, cols, (rows * 31 + cols) as u64);
        let bf16 = synthetic::to_bf16_bytes(&values);
        for (scheme, label) in [
            (SchemeKind::Lossless, "lossless"),
            (SchemeKind::Int8, "int8"),
            (SchemeKind::Int4, "int4"),
            (SchemeKind::Raw, "raw"),
        ] {
            let path = dir.path().join(format!("{rows}x{cols}-{label}.ember"));
            let mut w = ContainerWriter::create(&path)?;
            let shape = [rows as u64, cols as u64];
            w.add(encode_tensor("w", Dtype::BF16, &shape, &bf16, scheme, &EncodeOptions::default())?)?;
            w.finish()?;
            files.push((format!("{rows}x{cols} {label}"), Container::open(&path)?));
        }
    }
    let mut paths = Vec::new();
    if o.gpu {
        match ember_kernels::device::open_vulkan() {
            Ok(v) => paths.push(run_device("gpu", &v.device, &v.adapter, Some(v.max_buffer_bytes), &o, &files)?),
            Err(e) if o.cpu => eprintln!("no GPU measurement: {e}"),
            Err(e) => bail!(e),
        }
    }
    if o.cpu {
        let threads = rayon::current_num_threads();
        let name = format!("Flex + ember-codec, {threads} threads");
        paths.push(run_device("cpu", &Device::flex(), &name, None, &o, &files)?);
    }
    if o.json {
        let report = json!({
            "benchmark": "decode-bench",
            "command": std::env::args().collect::<Vec<_>>().join(" "),
            "commit": option_env!("EMBER_COMMIT").unwrap_or("unknown"),
            "data": "synthetic Llama-like BF16 weights (seeded), one tensor per launch",
            "units": "GB/s of bytes written (decoded output; copy: bytes copied)",
            "paths": paths,
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(())
}
