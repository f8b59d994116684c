//! The ember half of the peer benchmark (`benches/codec/peers.py` runs ZipNN beside it): sizes
//! against the order-0 16-bit bound, and decode speed on one and on all threads, with `zstd -3`
//! measured on the same bytes in the same process.
//!
//! ```text
//! peers --write-fixture DIR                 # the seeded Gaussian fixture (8 × 4096×2048 BF16)
//! peers --manifest DIR/manifest.json [--reps N] [--json]
//! ```
//! A manifest lists raw little-endian tensors:
//! `{"tensors": [{"name": "...", "dtype": "BF16", "shape": [r, c], "file": "x.bin"}]}`.
//! Every decode is checked bit for bit against the input before a timing is reported.

mod common;

use std::path::{Path, PathBuf};
use std::time::Instant;

use ember_codec::entropy::{histogram_u16, order0_bits};
use ember_codec::{encode_tensor, Container, ContainerWriter, Dtype, EncodeOptions, Scheme, SchemeKind};
use serde::Deserialize;
use serde_json::json;

#[derive(Deserialize)]
struct Manifest {
    tensors: Vec<ManifestTensor>,
}

#[derive(Deserialize)]
struct ManifestTensor {
    name: String,
    dtype: String,
    shape: Vec<u64>,
    file: PathBuf,
}

fn value_of(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned()
}

/// Best (minimum) wall time of `reps` runs, in seconds.
fn best_of(reps: usize, mut f: impl FnMut()) -> f64 {
    (0..reps.max(1))
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

fn write_fixture(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let (rows, cols) = (4096usize, 2048usize);
    let mut tensors = Vec::new();
    for seed in 1..=8u64 {
        let values = common::llama_like_f32(rows, cols, seed);
        let file = format!("gaussian-{seed}.bin");
        std::fs::write(dir.join(&file), common::to_bf16_bytes(&values))?;
        tensors.push(json!({"name": format!("gaussian.{seed}"), "dtype": "BF16", "shape": [rows, cols], "file": file}));
    }
    let manifest = json!({
        "tensors": tensors,
        "source": "ember_codec::synthetic::llama_like_f32(4096, 2048, seed) for seeds 1..=8, rounded to BF16 (nearest even)",
    });
    std::fs::write(dir.join("manifest.json"), serde_json::to_vec_pretty(&manifest).expect("json"))
}

fn main() {
    if let Some(dir) = value_of("--write-fixture") {
        if let Err(e) = write_fixture(Path::new(&dir)) {
            eprintln!("peers: cannot write the fixture to {dir}: {e}");
            std::process::exit(1);
        }
        return;
    }
    let Some(manifest_path) = value_of("--manifest") else {
        eprintln!("usage: peers --manifest DIR/manifest.json [--reps N] [--json] | --write-fixture DIR");
        std::process::exit(2);
    };
    let reps: usize = value_of("--reps").and_then(|v| v.parse().ok()).unwrap_or(5);
    let json_out = std::env::args().any(|a| a == "--json");
    let manifest_path = PathBuf::from(manifest_path);
    let base = manifest_path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let manifest: Manifest = match std::fs::read(&manifest_path)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
    {
        Ok(m) => m,
        Err(e) => {
            eprintln!("peers: {}: {e}", manifest_path.display());
            std::process::exit(1);
        }
    };
    let threads = rayon::current_num_threads();
    let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().expect("thread pool");
    let tmp = tempfile::tempdir().expect("temp dir");
    let container = tmp.path().join("peers.ember");
    let opts = EncodeOptions::default();
    let mut writer = ContainerWriter::create(&container).expect("create container");
    let mut inputs = Vec::new();
    for t in &manifest.tensors {
        let dtype = Dtype::from_name(&t.dtype).unwrap_or_else(|| panic!("{}: unknown dtype {}", t.name, t.dtype));
        let bytes = std::fs::read(base.join(&t.file)).unwrap_or_else(|e| panic!("{}: {e}", t.file.display()));
        let encoded = encode_tensor(&t.name, dtype, &t.shape, &bytes, SchemeKind::Lossless, &opts)
            .unwrap_or_else(|e| panic!("{}: {e}", t.name));
        writer.add(encoded).expect("add");
        inputs.push((t, dtype, bytes));
    }
    let file_bytes = writer.finish().expect("finish");
    let file = Container::open(&container).expect("open");

    let mut rows = Vec::new();
    let (mut total_orig, mut total_ember, mut total_bound, mut total_zstd) = (0u64, 0u64, 0f64, 0u64);
    let mut outs = Vec::new();
    let mut zstds = Vec::new();
    for (t, dtype, bytes) in &inputs {
        let entry = file.get(&t.name).expect("tensor");
        let mut out = vec![0u8; bytes.len()];
        file.decode_into(entry, &mut out).expect("decode");
        assert!(out == *bytes, "{}: lossless round trip failed", t.name);
        let bound_bits = match dtype {
            Dtype::BF16 | Dtype::F16 => order0_bits(&histogram_u16(bytes)),
            _ => entry.entropy_bound_bytes as f64 * 8.0,
        };
        let ember = entry.stored_bytes() + file.header_bytes_of(entry);
        let z = zstd::bulk::compress(bytes, 3).expect("zstd");
        let (kind, joint_bits, symbols) = match &entry.scheme {
            Scheme::Lossless { coder, .. } => ("lossless", entry.scheme.joint_bits(), coder.freqs.len()),
            s => (s.kind().name(), 0, 0),
        };
        rows.push(json!({
            "name": t.name, "dtype": t.dtype, "shape": t.shape, "elements": entry.elements(),
            "original_bytes": bytes.len(), "bound16_bytes": bound_bits / 8.0,
            "ember_bytes": ember, "ember_scheme": kind, "ember_joint_bits": joint_bits, "ember_symbols": symbols,
            "ember_tiles": entry.tiles.len(), "ember_header_bytes": file.header_bytes_of(entry),
            "ember_header_json_bytes": file.header_json_bytes_of(entry),
            "ember_lanes": entry.scheme.coder().map_or(0, |c| c.lanes),
            "zstd3_bytes": z.len(),
        }));
        total_orig += bytes.len() as u64;
        total_ember += entry.stored_bytes();
        total_bound += bound_bits / 8.0;
        total_zstd += z.len() as u64;
        outs.push(out);
        zstds.push(z);
    }
    // The whole index as stored (compressed in format version 5), not the rounded shares.
    total_ember += file.header_stored_len();
    let entries: Vec<_> = inputs.iter().map(|(t, _, _)| file.get(&t.name).expect("tensor")).collect();
    let decode_all = |outs: &mut Vec<Vec<u8>>| {
        for (e, o) in entries.iter().zip(outs.iter_mut()) {
            file.decode_into(e, o).expect("decode");
        }
    };
    let ember_1t = best_of(reps, || one.install(|| decode_all(&mut outs)));
    let ember_nt = best_of(reps, || decode_all(&mut outs));
    let zstd_1t = best_of(reps, || {
        for (z, (_, _, b)) in zstds.iter().zip(&inputs) {
            let d = zstd::bulk::decompress(z, b.len()).expect("zstd -d");
            std::hint::black_box(d);
        }
    });
    for (o, (t, _, b)) in outs.iter().zip(&inputs) {
        assert!(o == b, "{}: decode after timing differs", t.name);
    }
    let gb = total_orig as f64 / 1e9;
    let report = json!({
        "benchmark": "ember lossless vs the order-0 16-bit bound and zstd -3 (ember half of benches/codec/peers.py)",
        "manifest": manifest_path.display().to_string(),
        "threads": threads, "reps": reps,
        "tensors": rows,
        "totals": {
            "original_bytes": total_orig, "bound16_bytes": total_bound, "ember_bytes": total_ember,
            "ember_file_bytes": file_bytes, "zstd3_bytes": total_zstd,
            "ember_vs_bound": total_ember as f64 / total_bound,
            "ember_ratio": total_ember as f64 / total_orig as f64,
            "zstd3_ratio": total_zstd as f64 / total_orig as f64,
        },
        "decode": {
            "ember_s_1t": ember_1t, "ember_s_all": ember_nt, "zstd3_s_1t": zstd_1t,
            "ember_gbps_1t": gb / ember_1t, "ember_gbps_all": gb / ember_nt, "zstd3_gbps_1t": gb / zstd_1t,
            "ember_vs_zstd3_1t": zstd_1t / ember_1t,
        },
    });
    if json_out {
        println!("{}", serde_json::to_string_pretty(&report).expect("json"));
    } else {
        let t = &report["totals"];
        let d = &report["decode"];
        println!(
            "{}: ember {:.4}% of original ({:.5}× the 16-bit bound), zstd -3 {:.4}%; decode {:.2} GB/s 1t, {:.2} GB/s {threads}t, zstd -3 {:.2} GB/s 1t ({:.2}×)",
            manifest_path.display(),
            100.0 * t["ember_ratio"].as_f64().unwrap_or(0.0),
            t["ember_vs_bound"].as_f64().unwrap_or(0.0),
            100.0 * t["zstd3_ratio"].as_f64().unwrap_or(0.0),
            d["ember_gbps_1t"].as_f64().unwrap_or(0.0),
            d["ember_gbps_all"].as_f64().unwrap_or(0.0),
            d["zstd3_gbps_1t"].as_f64().unwrap_or(0.0),
            d["ember_vs_zstd3_1t"].as_f64().unwrap_or(0.0),
        );
    }
}
