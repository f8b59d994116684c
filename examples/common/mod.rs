//! What the examples share: the default model (fetched once, compressed once, cached) and the
//! choice of device.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use burn::tensor::Device;
use ember::codec::SchemeKind;
use ember_llama::synthetic::{self, Preset};
use indicatif::{ProgressBar, ProgressStyle};

/// The model a path names, as a container coded with `scheme`; see
/// [`ember_cli::model_cache::container_for`].
pub fn container_for(model: Option<&Path>, scheme: &str) -> Result<PathBuf> {
    ember_cli::model_cache::container_for(model, scheme)
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

/// The device `choice` names and its description; see [`ember_kernels::device::choose`].
pub fn pick_device(choice: &str) -> Result<(Device, String)> {
    Ok(ember_kernels::device::choose(choice)?)
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
