//! `ember decompress`: `.ember` → `.safetensors`, streamed: tiles are decoded in chunks of at
//! most [`CHUNK_BYTES`] of output (tiles in parallel within a chunk), converted and written
//! before the next chunk, and the container's pages of a written tensor are released. Peak
//! memory is the chunk and its conversion, whatever the tensor's size. Quantised tensors go back
//! to their original dtype (round to nearest even).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use ember_codec::{Container, DecodedTensor, Dtype};
use rayon::ThreadPool;

use super::thread_pool;
use crate::safetensors_out::{write_header, TensorSpec};

/// `ember decompress` arguments.
#[derive(clap::Args)]
pub struct Args {
    /// The .ember file.
    file: PathBuf,
    /// The .safetensors file to write, or `-` for standard output; with `--model-dir`, the
    /// directory to write.
    #[arg(short, long)]
    output: PathBuf,
    /// Write a Hugging Face model directory: `model.safetensors` plus the `config.json`,
    /// `tokenizer.json`, `tokenizer_config.json` and `generation_config.json` the container
    /// carries (containers made from a GGUF file or a model directory carry them).
    #[arg(long)]
    model_dir: bool,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
}

/// Decoded bytes per chunk: a chunk is decoded, converted and written before the next.
pub const CHUNK_BYTES: usize = 16 << 20;

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
    let mut buffer = Vec::new();
    for (t, len) in c.tensors().iter().zip(lens) {
        let decoder = c.decoder(t)?;
        let size = t.decoded_dtype().size();
        let mut written = 0u64;
        let mut first = 0;
        while first < t.tiles.len() {
            // A run of whole tiles of at most CHUNK_BYTES decoded (at least one tile).
            let mut last = first + 1;
            let mut bytes = t.tiles[first].count as usize * size;
            while last < t.tiles.len() && bytes + t.tiles[last].count as usize * size <= CHUNK_BYTES {
                bytes += t.tiles[last].count as usize * size;
                last += 1;
            }
            buffer.clear();
            buffer.resize(bytes, 0);
            let mut parts = Vec::with_capacity(last - first);
            let mut rest = &mut buffer[..];
            for tile in &t.tiles[first..last] {
                let (head, tail) = rest.split_at_mut(tile.count as usize * size);
                parts.push(head);
                rest = tail;
            }
            pool.install(|| {
                use rayon::prelude::*;
                parts
                    .into_par_iter()
                    .enumerate()
                    .try_for_each_init(Vec::new, |scratch, (k, part)| decoder.decode_tile(first + k, part, scratch))
            })?;
            let shape = vec![(bytes / size) as u64];
            let chunk = DecodedTensor { shape, dtype: t.decoded_dtype(), data: std::mem::take(&mut buffer) };
            let original = to_original(&t.name, chunk, t.dtype)?;
            out.write_all(&original)?;
            written += original.len() as u64;
            // Keep the allocation for the next chunk when no conversion took place.
            if t.decoded_dtype() == t.dtype {
                buffer = original;
            }
            c.release_pages(t, first..last);
            first = last;
        }
        ensure!(written == len, "tensor `{}`: {written} bytes decoded, header says {len}", t.name);
    }
    out.flush()?;
    Ok(())
}

/// Runs `ember decompress`.
pub fn run(a: Args) -> Result<()> {
    let pool = thread_pool(a.threads)?;
    let c = Container::open(&a.file)?;
    if a.model_dir {
        return write_model_dir(&c, &a.file, &a.output, &pool);
    }
    if a.output == Path::new("-") {
        let stdout = std::io::stdout();
        return write_all(&c, &mut BufWriter::with_capacity(1 << 20, stdout.lock()), &pool)
            .context("writing to standard output");
    }
    write_safetensors(&c, &a.output, &pool)?;
    eprintln!("{} -> {} ({} tensors)", a.file.display(), a.output.display(), c.tensors().len());
    Ok(())
}

/// A temporary file beside `path`, renamed into place only once complete: a failed or killed run
/// never leaves a partial file under the target's name.
fn atomic_write(path: &Path, write: impl FnOnce(&mut BufWriter<File>) -> Result<()>) -> Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("output");
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .tempfile_in(dir)
        .with_context(|| format!("{}: cannot create a temporary file", dir.display()))?;
    let io = || format!("writing {}", path.display());
    let mut out = BufWriter::with_capacity(1 << 20, tmp.reopen().with_context(io)?);
    write(&mut out).with_context(io)?;
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
    tmp.persist(path).map_err(|e| e.error).with_context(|| format!("{}: cannot rename into place", path.display()))?;
    Ok(())
}

fn write_safetensors(c: &Container, path: &Path, pool: &ThreadPool) -> Result<()> {
    atomic_write(path, |out| write_all(c, out, pool))
}

/// `model.safetensors` and the JSON files of a Hugging Face model directory, rebuilt from the
/// container's metadata. A container without a config or tokenizer is refused before anything
/// is written: the directory would not run.
fn write_model_dir(c: &Container, file: &Path, dir: &Path, pool: &ThreadPool) -> Result<()> {
    let meta = c.metadata();
    let missing = |key: &str| {
        format!("{}: no `{key}` in the container metadata, so it cannot become a model directory", file.display())
    };
    let config = meta.get("ember.llama.config").with_context(|| missing("ember.llama.config"))?;
    let config: serde_json::Value = serde_json::from_str(config)
        .with_context(|| format!("{}: `ember.llama.config` is not JSON", file.display()))?;
    let tokenizer = meta.get("ember.tokenizer").with_context(|| missing("ember.tokenizer"))?;
    let tokenizer = ember_gguf::Tokenizer::from_json_str(tokenizer)
        .with_context(|| format!("{}: `ember.tokenizer`", file.display()))?;
    std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create", dir.display()))?;

    let json_file = |name: &str, value: &serde_json::Value| -> Result<()> {
        let text = serde_json::to_string_pretty(value)?;
        atomic_write(&dir.join(name), |out| Ok(out.write_all(text.as_bytes())?))
    };
    json_file("config.json", &config)?;
    let inner = tokenizer.inner().to_string(true).map_err(|e| anyhow::anyhow!("{}: tokenizer: {e}", file.display()))?;
    atomic_write(&dir.join("tokenizer.json"), |out| Ok(out.write_all(inner.as_bytes())?))?;
    let token = |id: Option<u32>| id.and_then(|i| tokenizer.id_to_token(i));
    json_file(
        "tokenizer_config.json",
        &serde_json::json!({
            "bos_token": token(tokenizer.bos_id()),
            "eos_token": token(tokenizer.eos_ids().first().copied()),
            "chat_template": tokenizer.chat_template(),
            "add_bos_token": tokenizer.adds_bos(),
        }),
    )?;
    json_file(
        "generation_config.json",
        &serde_json::json!({ "bos_token_id": tokenizer.bos_id(), "eos_token_id": tokenizer.eos_ids() }),
    )?;
    let weights = dir.join("model.safetensors");
    write_safetensors(c, &weights, pool)?;
    eprintln!("{} -> {} ({} tensors, config, tokenizer)", file.display(), dir.display(), c.tensors().len());
    Ok(())
}
