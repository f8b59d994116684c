//! What the examples share: the default model (fetched once, compressed once, cached) and the
//! choice of device.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use burn::tensor::Device;
use ember::codec::SchemeKind;
use ember_llama::synthetic::{self, Preset};
use indicatif::{ProgressBar, ProgressStyle};

/// The container for `source` (a GGUF file or a Hugging Face model directory) coded with
/// `scheme`, compressed on first use into the cache (`$EMBER_CACHE`, else `~/.cache/ember`) and
/// reused afterwards. The name carries a hash of the source's content, so a changed file — even
/// one with the same name and size — never reuses a stale container.
fn compressed(source: &Path, name: &str, content: &[PathBuf], scheme: &str) -> Result<PathBuf> {
    let dir = ember_gguf::fetch::cache_dir().join("containers");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let out = dir.join(format!("{name}-{:016x}.{scheme}.ember", content_hash(content)?));
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
        ember_cli::run(args).with_context(|| format!("compressing {}", source.display()))?;
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
/// no path means the default model (SmolLM2-135M-Instruct, fetched once).
pub fn container_for(model: Option<&Path>, scheme: &str) -> Result<PathBuf> {
    let gguf = |p: &Path| -> Result<PathBuf> {
        let stem = p.file_stem().and_then(|s| s.to_str()).unwrap_or("model");
        compressed(p, stem, &[p.to_path_buf()], scheme)
    };
    match model {
        Some(p) if p.is_dir() => {
            let dir = ember_cli::hf_dir::resolve(p)?;
            ember_cli::hf_dir::check_runnable(&dir)?;
            let content = ember_cli::hf_dir::content_files(&dir)?;
            compressed(&dir, &ember_cli::hf_dir::display_name(&dir), &content, scheme)
        }
        Some(p) if p.extension().is_some_and(|e| e == "ember") => Ok(p.to_path_buf()),
        Some(p) if p.extension().is_some_and(|e| e == "gguf") => gguf(p),
        Some(p) if !p.exists() => anyhow::bail!("{}: no such file or directory", p.display()),
        Some(p) => anyhow::bail!(
            "{}: expected a .gguf or .ember file, or a Hugging Face model directory (config.json, *.safetensors, tokenizer.json)",
            p.display()
        ),
        None => gguf(&ember_gguf::fetch::default_model_gguf().context("fetching the default model")?),
    }
}

/// A synthetic `preset` model from `seed`, coded with `scheme`: generated on first use (on this
/// machine, from the seed) into the cache, reused afterwards.
pub fn synthetic_container(preset: Preset, seed: u64, scheme: &str) -> Result<PathBuf> {
    let kind = match scheme {
        "raw" => SchemeKind::Raw,
        "lossless" => SchemeKind::Lossless,
        "int8" => SchemeKind::Int8,
        "int4" => SchemeKind::Int4,
        other => anyhow::bail!("unknown scheme `{other}` (expected raw, lossless, int8 or int4)"),
    };
    let dir = ember_gguf::fetch::cache_dir().join("containers");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let out = dir.join(format!("synthetic-{}-seed{seed}.{scheme}.ember", preset.name()));
    if !out.exists() {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template("{prefix:>10} [{bar:30}] {percent}% {elapsed_precise} eta {eta} {msg}")?
                .progress_chars("=> "),
        );
        bar.set_prefix("generate");
        bar.set_message(format!("{} ({scheme}, seed {seed})", preset.name()));
        synthetic::write_container(preset, seed, kind, &out, |done, total| {
            bar.set_length(total);
            bar.set_position(done);
        })
        .with_context(|| format!("generating {}", out.display()))?;
        bar.finish();
    }
    Ok(out)
}

/// Where a benchmark's model comes from.
#[derive(Clone, Debug)]
pub enum ModelSource {
    /// A `.gguf` or `.ember` file or a Hugging Face model directory; `None` is the default model.
    File(Option<PathBuf>),
    /// A Llama-shaped model generated from a seed.
    Synthetic { preset: Preset, seed: u64 },
}

impl ModelSource {
    /// From `--model` / `--synthetic` / `--seed`.
    pub fn from_args(model: Option<PathBuf>, synthetic: Option<&str>, seed: u64) -> Result<Self> {
        match (model, synthetic) {
            (Some(_), Some(_)) => anyhow::bail!("--model and --synthetic exclude each other"),
            (_, Some(name)) => Ok(Self::Synthetic { preset: Preset::parse(name)?, seed }),
            (model, None) => Ok(Self::File(model)),
        }
    }

    /// The container coded with `scheme`.
    pub fn container(&self, scheme: &str) -> Result<PathBuf> {
        match self {
            Self::File(model) => container_for(model.as_deref(), scheme),
            Self::Synthetic { preset, seed } => synthetic_container(*preset, *seed, scheme),
        }
    }

    /// A short name for file names and reports.
    pub fn name(&self) -> String {
        match self {
            Self::File(None) => "smollm2".into(),
            Self::File(Some(p)) if p.is_dir() => ember_cli::hf_dir::display_name(p).to_lowercase(),
            Self::File(Some(p)) => p.file_stem().and_then(|s| s.to_str()).unwrap_or("model").to_lowercase(),
            Self::Synthetic { preset, .. } => format!("synthetic-{}", preset.name()),
        }
    }

    /// The arguments that name this source to a child process.
    pub fn child_args(&self) -> Vec<std::ffi::OsString> {
        match self {
            Self::File(None) => vec![],
            Self::File(Some(p)) => vec!["--model".into(), p.into()],
            Self::Synthetic { preset, seed } => {
                vec!["--synthetic".into(), preset.name().into(), "--seed".into(), seed.to_string().into()]
            }
        }
    }

    /// Whether the model is synthetic (no tokenizer; random weights, so perplexity means little).
    pub fn is_synthetic(&self) -> bool {
        matches!(self, Self::Synthetic { .. })
    }

    /// Token ids for `text`: the stored tokenizer's (as a prompt — BOS first where the model
    /// expects it — when `prompt`), or for a synthetic model `synthetic_len` ids drawn from the
    /// seed (`salt` tells prompt and scored text apart).
    pub fn tokens(
        &self,
        store: &ember::Store,
        text: &str,
        prompt: bool,
        synthetic_len: usize,
        salt: u64,
    ) -> Result<Vec<u32>> {
        match self {
            Self::File(_) => {
                let tokenizer = ember_llama::offload::tokenizer_of(store)?;
                Ok(if prompt { tokenizer.encode_prompt(text)? } else { tokenizer.encode(text, false)? })
            }
            Self::Synthetic { seed, .. } => {
                let vocab = ember_llama::offload::config_of(store)?.vocab_size;
                Ok(synthetic::token_ids(vocab, synthetic_len, seed.wrapping_add(salt)))
            }
        }
    }
}

/// `auto`: a hardware GPU through Vulkan if there is one, else the CPU path (a software Vulkan
/// driver such as lavapipe is slower than Burn's CPU backend). `vulkan` insists on Vulkan; `cpu`
/// takes the CPU path. Returns the device and a description.
pub fn pick_device(choice: &str) -> Result<(Device, String)> {
    match choice {
        "cpu" => Ok((Device::flex(), "cpu (burn flex)".into())),
        "vulkan" => {
            let v = ember_kernels::device::open_vulkan()?;
            Ok((v.device, format!("vulkan: {}", v.adapter)))
        }
        "auto" => match ember_kernels::device::open_vulkan() {
            Ok(v) if !v.software => Ok((v.device, format!("vulkan: {}", v.adapter))),
            Ok(v) => Ok((Device::flex(), format!("cpu (burn flex; skipped software Vulkan {})", v.adapter))),
            Err(e) => Ok((Device::flex(), format!("cpu (burn flex; no GPU: {e})"))),
        },
        other => anyhow::bail!("unknown device `{other}` (expected auto, vulkan or cpu)"),
    }
}

/// Writes `bytes` to `path` through a temporary file in the same folder and a rename, so a killed
/// run never leaves a half-written result.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).with_context(|| format!("writing {}", path.display()))?;
    std::io::Write::write_all(&mut tmp, bytes).with_context(|| format!("writing {}", path.display()))?;
    // The temporary file is created private (0600); a result is an ordinary readable file.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    tmp.persist(path).map_err(|e| e.error).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
