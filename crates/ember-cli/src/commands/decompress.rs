//! `ember decompress`: `.ember` → `.safetensors`, one tensor in memory at a time; quantised
//! tensors go back to their original dtype (round to nearest even).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use ember_codec::{Container, DecodedTensor, Dtype};

use super::with_threads;
use crate::safetensors_out::{write_header, write_tensor, TensorSpec};

/// `ember decompress` arguments.
#[derive(clap::Args)]
pub struct Args {
    /// The .ember file.
    file: PathBuf,
    /// The .safetensors file to write, or `-` for standard output.
    #[arg(short, long)]
    output: PathBuf,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
}

/// The decoded values in the tensor's original dtype.
fn to_original(d: DecodedTensor, original: Dtype) -> Vec<u8> {
    if d.dtype == original {
        return d.data;
    }
    let values = d.to_f32().unwrap_or_default();
    match original {
        Dtype::BF16 => values.iter().flat_map(|v| half::bf16::from_f32(*v).to_bits().to_le_bytes()).collect(),
        Dtype::F16 => values.iter().flat_map(|v| half::f16::from_f32(*v).to_bits().to_le_bytes()).collect(),
        _ => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
    }
}

fn write_all(c: &Container, out: &mut impl Write, threads: Option<usize>) -> Result<()> {
    let specs: Vec<TensorSpec> = c
        .tensors()
        .iter()
        .map(|t| TensorSpec { name: t.name.clone(), dtype: t.dtype, shape: t.shape.clone() })
        .collect();
    let lens = write_header(out, &specs, c.metadata())?;
    for (t, len) in c.tensors().iter().zip(lens) {
        let decoded = with_threads(threads, || c.decode(t))??;
        write_tensor(out, &t.name, len, &to_original(decoded, t.dtype))?;
    }
    out.flush()?;
    Ok(())
}

/// Runs `ember decompress`.
pub fn run(a: Args) -> Result<()> {
    let c = Container::open(&a.file)?;
    if a.output == Path::new("-") {
        let stdout = std::io::stdout();
        return write_all(&c, &mut BufWriter::new(stdout.lock()), a.threads);
    }
    let dir = a.output.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let tmp = tempfile::Builder::new()
        .prefix(".ember-decompress.")
        .suffix(".tmp")
        .tempfile_in(dir)
        .with_context(|| format!("{}: cannot create a temporary file", dir.display()))?;
    let mut out = BufWriter::with_capacity(1 << 20, tmp.reopen()?);
    write_all(&c, &mut out, a.threads).with_context(|| format!("writing {}", a.output.display()))?;
    let file: File = out.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    tmp.persist(&a.output).with_context(|| format!("{}: cannot rename into place", a.output.display()))?;
    eprintln!("{} -> {} ({} tensors)", a.file.display(), a.output.display(), c.tensors().len());
    Ok(())
}
