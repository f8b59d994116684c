//! `ember decompress`: `.ember` → `.safetensors`, one tensor in memory at a time; quantised
//! tensors go back to their original dtype (round to nearest even).
//! Memory is bounded by the largest tensor (its decoded bytes and their conversion).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use ember_codec::{Container, DecodedTensor, Dtype};
use rayon::ThreadPool;

use super::thread_pool;
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

/// The decoded values in the tensor's original dtype. Quantised tensors decode to `f32`; they go
/// back to BF16/F16 with round-to-nearest-even, as `half` converts.
fn to_original(name: &str, d: DecodedTensor, original: Dtype) -> Result<Vec<u8>> {
    if d.dtype == original {
        return Ok(d.data);
    }
    let values = d.to_f32().with_context(|| format!("tensor `{name}`: decoded {} is not a float type", d.dtype))?;
    Ok(match original {
        Dtype::BF16 => values.iter().flat_map(|v| half::bf16::from_f32(*v).to_bits().to_le_bytes()).collect(),
        Dtype::F16 => values.iter().flat_map(|v| half::f16::from_f32(*v).to_bits().to_le_bytes()).collect(),
        Dtype::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        other => bail!("tensor `{name}`: cannot convert decoded {} back to {other}", d.dtype),
    })
}

/// Streams the safetensors header, then each tensor decoded (tiles in parallel on `pool`).
fn write_all(c: &Container, out: &mut impl Write, pool: &ThreadPool) -> Result<()> {
    let specs: Vec<TensorSpec> = c
        .tensors()
        .iter()
        .map(|t| TensorSpec { name: t.name.clone(), dtype: t.dtype, shape: t.shape.clone() })
        .collect();
    let lens = write_header(out, &specs, c.metadata())?;
    for (t, len) in c.tensors().iter().zip(lens) {
        let decoded = pool.install(|| c.decode(t))?;
        write_tensor(out, &t.name, len, &to_original(&t.name, decoded, t.dtype)?)?;
    }
    out.flush()?;
    Ok(())
}

/// Runs `ember decompress`.
pub fn run(a: Args) -> Result<()> {
    let pool = thread_pool(a.threads)?;
    let c = Container::open(&a.file)?;
    if a.output == Path::new("-") {
        let stdout = std::io::stdout();
        return write_all(&c, &mut BufWriter::with_capacity(1 << 20, stdout.lock()), &pool)
            .context("writing to standard output");
    }
    // A temporary file beside the target, renamed into place only once complete: a failed or
    // killed run never leaves a partial file under the target's name.
    let dir = a.output.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = a.output.file_name().and_then(|n| n.to_str()).unwrap_or("safetensors");
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .tempfile_in(dir)
        .with_context(|| format!("{}: cannot create a temporary file", dir.display()))?;
    let io = || format!("writing {}", a.output.display());
    let mut out = BufWriter::with_capacity(1 << 20, tmp.reopen().with_context(io)?);
    write_all(&c, &mut out, &pool).with_context(io)?;
    let file: File = out.into_inner().map_err(|e| e.into_error()).with_context(io)?;
    // The temporary file is created private (0600); the result is an ordinary file, readable
    // like every other artifact ember writes.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o644)).with_context(io)?;
    }
    file.sync_all().with_context(io)?;
    drop(file);
    tmp.persist(&a.output)
        .map_err(|e| e.error)
        .with_context(|| format!("{}: cannot rename into place", a.output.display()))?;
    eprintln!("{} -> {} ({} tensors)", a.file.display(), a.output.display(), c.tensors().len());
    Ok(())
}
