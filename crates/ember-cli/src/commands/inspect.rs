//! `ember inspect`: per-tensor sizes against the order-0 entropy bound.

use std::path::PathBuf;

use anyhow::Result;
use ember_codec::Container;
use serde_json::json;

use super::human_bytes;

/// `ember inspect` arguments.
#[derive(clap::Args)]
pub struct Args {
    /// The .ember file.
    file: PathBuf,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

/// Runs `ember inspect`.
pub fn run(a: Args) -> Result<()> {
    let c = Container::open(&a.file)?;
    let rows: Vec<_> = c
        .tensors()
        .iter()
        .map(|t| {
            json!({
                "name": t.name,
                "shape": t.shape,
                "dtype": t.dtype.name(),
                "scheme": t.scheme.kind().name(),
                "original_bytes": t.original_bytes(),
                "compressed_bytes": t.stored_bytes() + c.header_bytes_of(t),
                "entropy_bound_bytes": t.entropy_bound_bytes,
            })
        })
        .collect();
    let sum = |k: &str| rows.iter().filter_map(|r| r[k].as_u64()).sum::<u64>();
    let (original, bound) = (sum("original_bytes"), sum("entropy_bound_bytes"));
    if a.json {
        let report = json!({
            "original_bytes": original,
            "compressed_bytes": c.file_len(),
            "entropy_bound_bytes": bound,
            "file_bytes": c.file_len(),
            "tensors": rows,
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    let width = rows.iter().filter_map(|r| r["name"].as_str()).map(str::len).max().unwrap_or(4).max(4);
    println!(
        "{:<width$}  {:<18} {:<5} {:<8} {:>12} {:>12} {:>12} {:>7}",
        "name", "shape", "dtype", "scheme", "original", "compressed", "bound", "ratio"
    );
    for r in &rows {
        let o = r["original_bytes"].as_u64().unwrap_or(0);
        let cb = r["compressed_bytes"].as_u64().unwrap_or(0);
        println!(
            "{:<width$}  {:<18} {:<5} {:<8} {:>12} {:>12} {:>12} {:>6.1}%",
            r["name"].as_str().unwrap_or(""),
            r["shape"].to_string(),
            r["dtype"].as_str().unwrap_or(""),
            r["scheme"].as_str().unwrap_or(""),
            human_bytes(o),
            human_bytes(cb),
            human_bytes(r["entropy_bound_bytes"].as_u64().unwrap_or(0)),
            100.0 * cb as f64 / o.max(1) as f64,
        );
    }
    println!(
        "total: {} tensors, {} -> {} file ({:.2}%), entropy bound {}",
        rows.len(),
        human_bytes(original),
        human_bytes(c.file_len()),
        100.0 * c.file_len() as f64 / original.max(1) as f64,
        human_bytes(bound)
    );
    Ok(())
}
