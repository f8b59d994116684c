//! `ember inspect`: per-tensor sizes against the order-0 entropy bound.

use std::io::Write;
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
    let mut out = std::io::stdout().lock();
    if a.json {
        let report = json!({
            "original_bytes": original,
            "compressed_bytes": c.file_len(),
            "entropy_bound_bytes": bound,
            "file_bytes": c.file_len(),
            "tensors": rows,
        });
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
        return Ok(());
    }
    let header = ["name", "shape", "dtype", "scheme", "original", "compressed", "bound", "ratio"];
    let cells: Vec<[String; 8]> = rows
        .iter()
        .map(|r| {
            let bytes = |k: &str| r[k].as_u64().unwrap_or(0);
            let text = |k: &str| r[k].as_str().unwrap_or("").to_string();
            [
                text("name"),
                r["shape"].to_string(),
                text("dtype"),
                text("scheme"),
                human_bytes(bytes("original_bytes")),
                human_bytes(bytes("compressed_bytes")),
                human_bytes(bytes("entropy_bound_bytes")),
                format!("{:.1}%", 100.0 * bytes("compressed_bytes") as f64 / bytes("original_bytes").max(1) as f64),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &cells {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    // Text columns left-aligned, numbers right-aligned.
    let line = |out: &mut std::io::StdoutLock, row: &[&str]| -> std::io::Result<()> {
        let mut text = String::new();
        for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
            let sep = if i == 0 { "" } else { "  " };
            text += &if i < 4 { format!("{sep}{cell:<w$}") } else { format!("{sep}{cell:>w$}") };
        }
        writeln!(out, "{}", text.trim_end())
    };
    line(&mut out, &header)?;
    for row in &cells {
        line(&mut out, &row.each_ref().map(String::as_str))?;
    }
    writeln!(
        out,
        "total: {} tensors, {} -> {} file ({:.2}%), entropy bound {}",
        rows.len(),
        human_bytes(original),
        human_bytes(c.file_len()),
        100.0 * c.file_len() as f64 / original.max(1) as f64,
        human_bytes(bound)
    )?;
    Ok(())
}
