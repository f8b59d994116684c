//! Codec report: ratio, entropy bound, encode/decode GB/s on one thread and on all threads,
//! and `zstd` on the same bytes in the same run (so the speed ratio holds on any machine).
//!
//! `cargo bench -p ember-codec --bench report -- [--json] [--rows R] [--cols C] [--reps N] [--only SCHEME]`
//! GB/s are of original (source) bytes; `output_gbps_1t` is of the bytes the decoder writes
//! (the quantised schemes decode to f32: twice a BF16 source's bytes).

mod common;

use std::time::Instant;

use ember_codec::{encode_tensor, Container, ContainerWriter, Dtype, EncodeOptions, SchemeKind};
use serde_json::json;

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Best (minimum) wall time of `reps` runs, in seconds.
fn best_of(reps: usize, mut f: impl FnMut()) -> f64 {
    (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    let json_out = std::env::args().any(|a| a == "--json");
    let rows = arg("--rows", 2048);
    let cols = arg("--cols", 4096);
    let reps = arg("--reps", 5);
    let args: Vec<String> = std::env::args().collect();
    let only = args.iter().position(|a| a == "--only").and_then(|i| args.get(i + 1)).cloned();
    let threads = rayon::current_num_threads();
    let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().expect("thread pool");
    let dir = tempfile::tempdir().expect("temp dir");
    let values = common::llama_like_f32(rows, cols, 42);
    let shape = [rows as u64, cols as u64];
    let cases: Vec<(&str, Dtype, Vec<u8>, SchemeKind)> = vec![
        ("bf16", Dtype::BF16, common::to_bf16_bytes(&values), SchemeKind::Lossless),
        ("f16", Dtype::F16, common::to_f16_bytes(&values), SchemeKind::Lossless),
        ("f32", Dtype::F32, common::to_f32_bytes(&values), SchemeKind::Lossless),
        ("bf16", Dtype::BF16, common::to_bf16_bytes(&values), SchemeKind::Int8),
        ("bf16", Dtype::BF16, common::to_bf16_bytes(&values), SchemeKind::Int4),
    ];
    let mut results = Vec::new();
    for (label, dtype, bytes, scheme) in &cases {
        if only.as_deref().is_some_and(|o| o != scheme.name()) {
            continue;
        }
        let opts = EncodeOptions::default();
        let gb = bytes.len() as f64 / 1e9;
        let encode_1t = best_of(reps.min(3), || {
            one.install(|| encode_tensor("w", *dtype, &shape, bytes, *scheme, &opts).expect("encode"));
        });
        let encode_nt = best_of(reps.min(3), || {
            encode_tensor("w", *dtype, &shape, bytes, *scheme, &opts).expect("encode");
        });
        let encoded = encode_tensor("w", *dtype, &shape, bytes, *scheme, &opts).expect("encode");
        let path = dir.path().join(format!("{label}-{scheme}.ember"));
        let mut w = ContainerWriter::create(&path).expect("create");
        w.add(encoded).expect("add");
        let file_bytes = w.finish().expect("finish");
        let c = Container::open(&path).expect("open");
        let t = c.get("w").expect("tensor");
        let mut out = vec![0u8; t.elements() as usize * t.decoded_dtype().size()];
        let decode_1t = best_of(reps, || one.install(|| c.decode_into(t, &mut out).expect("decode")));
        let decode_nt = best_of(reps, || c.decode_into(t, &mut out).expect("decode"));
        if *scheme == SchemeKind::Lossless {
            assert_eq!(&out, bytes, "lossless round trip");
        }
        let compressed = t.stored_bytes() + c.header_bytes_of(t);
        let mut row = json!({
            "dtype": label, "scheme": scheme.name(), "shape": shape,
            "original_bytes": bytes.len(), "compressed_bytes": compressed, "file_bytes": file_bytes,
            "ratio": compressed as f64 / bytes.len() as f64,
            "entropy_bound_bytes": t.entropy_bound_bytes,
            "over_bound_pct": 100.0 * (compressed as f64 / t.entropy_bound_bytes as f64 - 1.0),
            "encode_gbps_1t": gb / encode_1t, "encode_gbps_all": gb / encode_nt,
            "decode_gbps_1t": gb / decode_1t, "decode_gbps_all": gb / decode_nt,
            "output_gbps_1t": out.len() as f64 / 1e9 / decode_1t,
        });
        if *scheme == SchemeKind::Lossless {
            for level in [3, 19] {
                let z = zstd::bulk::compress(bytes, level).expect("zstd");
                let zd = best_of(reps, || {
                    zstd::bulk::decompress(&z, bytes.len()).expect("zstd -d");
                });
                row[format!("zstd{level}_ratio")] = json!(z.len() as f64 / bytes.len() as f64);
                row[format!("zstd{level}_decode_gbps_1t")] = json!(gb / zd);
                row[format!("decode_vs_zstd{level}_1t")] = json!(zd / decode_1t);
            }
        }
        results.push(row);
    }
    let machine = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    let report = json!({
        "benchmark": "ember-codec report",
        "machine": format!("{machine}, {threads} threads"),
        "commit": option_env!("EMBER_COMMIT").unwrap_or("unknown"),
        "command": format!("cargo bench -p ember-codec --bench report -- {}", args[1..].iter().filter(|a| *a != "--bench").cloned().collect::<Vec<_>>().join(" ")),
        "threads": threads, "rows": rows, "cols": cols, "reps": reps,
        "data": "llama-like synthetic weights (Gaussian, per-row std 0.012-0.028, 0.1% 8x outliers), seed 42",
        "results": results });
    if json_out {
        println!("{}", serde_json::to_string_pretty(&report).expect("json"));
    } else {
        for r in report["results"].as_array().into_iter().flatten() {
            println!(
                "{:>5} {:>8}: ratio {:.4} (bound {:+.3}%)  enc {:.2}/{:.2} GB/s  dec {:.2}/{:.2} GB/s (1t/all)  zstd3 ratio {}  dec/zstd3 {}",
                r["dtype"].as_str().unwrap_or(""), r["scheme"].as_str().unwrap_or(""),
                r["ratio"].as_f64().unwrap_or(0.0), r["over_bound_pct"].as_f64().unwrap_or(0.0),
                r["encode_gbps_1t"].as_f64().unwrap_or(0.0), r["encode_gbps_all"].as_f64().unwrap_or(0.0),
                r["decode_gbps_1t"].as_f64().unwrap_or(0.0), r["decode_gbps_all"].as_f64().unwrap_or(0.0),
                r.get("zstd3_ratio").map_or("-".into(), |v| format!("{:.4}", v.as_f64().unwrap_or(0.0))),
                r.get("decode_vs_zstd3_1t").map_or("-".into(), |v| format!("{:.2}x", v.as_f64().unwrap_or(0.0))),
            );
        }
    }
}
