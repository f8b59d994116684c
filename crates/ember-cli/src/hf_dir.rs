//! Hugging Face model directories as users hold them: a plain directory (`config.json`,
//! safetensors, `tokenizer.json`, …) or the hub cache layout (`models--ORG--NAME/` with
//! `refs/main` naming a `snapshots/REV/` whose files are symlinks into `blobs/`).
//!
//! Besides the weights, what a model needs to run travels into the container's metadata — the
//! config, the tokenizer, the chat template, BOS and stop tokens — so a `.ember` file made from a
//! directory runs on its own, with the directory gone.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use ember_gguf::Tokenizer;
use serde_json::Value;

/// The files [`metadata`] reads, besides the safetensors: together with those they are what
/// identifies a model directory's content (see [`content_files`]).
const SIDE_FILES: &[&str] = &[
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "model.safetensors.index.json",
];

/// The directory holding the model's files: `path` itself, or for the hub cache layout the
/// snapshot `refs/main` names (or the only snapshot there is).
pub fn resolve(path: &Path) -> Result<PathBuf> {
    let snapshots = path.join("snapshots");
    if !path.join("config.json").exists() && snapshots.is_dir() {
        let main = path.join("refs").join("main");
        if main.is_file() {
            let rev = std::fs::read_to_string(&main).with_context(|| format!("{}: cannot read", main.display()))?;
            let rev = rev.trim();
            let dir = snapshots.join(rev);
            if rev.is_empty() || rev.contains(['/', '\\']) || !dir.is_dir() {
                bail!("{}: names snapshot `{rev}`, which is not in {}", main.display(), snapshots.display());
            }
            return Ok(dir);
        }
        let mut revs: Vec<PathBuf> = std::fs::read_dir(&snapshots)
            .with_context(|| format!("{}: cannot list", snapshots.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_dir())
            .collect();
        revs.sort();
        return match revs.as_slice() {
            [one] => Ok(one.clone()),
            [] => bail!("{}: no snapshots (an incomplete download?)", snapshots.display()),
            _ => bail!(
                "{}: {} snapshots and no refs/main; pass one of them: {}",
                snapshots.display(),
                revs.len(),
                revs.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
            ),
        };
    }
    Ok(path.to_path_buf())
}

/// Checks that `dir` (already [resolved](resolve)) holds what a language model needs to run —
/// `config.json`, `tokenizer.json` and weights — and names the first file missing.
pub fn check_runnable(dir: &Path) -> Result<()> {
    for file in ["config.json", "tokenizer.json"] {
        if !dir.join(file).is_file() {
            bail!("{}: no {file} in this model directory", dir.display());
        }
    }
    let has_weights = dir.join("model.safetensors").is_file()
        || dir.join("model.safetensors.index.json").is_file()
        || list(dir)?.iter().any(|p| p.extension().is_some_and(|e| e == "safetensors"));
    if !has_weights {
        bail!("{}: no model.safetensors, model.safetensors.index.json or other *.safetensors file", dir.display());
    }
    Ok(())
}

fn list(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("{}: cannot list", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    Ok(files)
}

/// The files whose bytes make the model — every `*.safetensors` and the JSON files [`metadata`]
/// reads — sorted by name: what a cache keyed by content hashes. Symlinks (the hub layout) are
/// followed.
pub fn content_files(dir: &Path) -> Result<Vec<PathBuf>> {
    Ok(list(dir)?
        .into_iter()
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            name.ends_with(".safetensors") || SIDE_FILES.contains(&name)
        })
        .collect())
}

/// A short name for the model in `path`: the directory's name, or `ORG--NAME` for the hub layout.
pub fn display_name(path: &Path) -> String {
    let name = |p: &Path| p.file_name().and_then(|n| n.to_str()).map(str::to_owned);
    let hub = path.ancestors().find_map(|a| name(a).and_then(|n| n.strip_prefix("models--").map(str::to_owned)));
    hub.or_else(|| name(path)).unwrap_or_else(|| "model".into())
}

fn read_json(path: &Path) -> Result<Option<Value>> {
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("{}: cannot read", path.display()))?;
    let value = serde_json::from_str(&text).with_context(|| format!("{}: not valid JSON", path.display()))?;
    Ok(Some(value))
}

/// Token ids under `key`: a number or a list of numbers (`eos_token_id` is either).
fn ids(json: Option<&Value>, key: &str) -> Vec<u32> {
    let to_id = |v: &Value| v.as_u64().and_then(|n| u32::try_from(n).ok());
    match json.and_then(|j| j.get(key)) {
        Some(Value::Array(list)) => list.iter().filter_map(to_id).collect(),
        Some(v) => to_id(v).into_iter().collect(),
        None => Vec::new(),
    }
}

/// Container metadata for the model directory `dir` (already [resolved](resolve)):
/// `ember.llama.config` (its `config.json`, as is), and when it has a `tokenizer.json`
/// `ember.tokenizer` with BOS, stop ids and chat template from `tokenizer_config.json`,
/// completed by the stop ids of `generation_config.json` and `config.json`.
pub fn metadata(dir: &Path) -> Result<Vec<(&'static str, String)>> {
    let mut m = vec![("ember.source", "safetensors".to_string())];
    let config = read_json(&dir.join("config.json"))?;
    let generation = read_json(&dir.join("generation_config.json"))?;
    if let Some(c) = &config {
        m.push(("ember.llama.config", c.to_string()));
    }
    let tokenizer_json = dir.join("tokenizer.json");
    if tokenizer_json.is_file() {
        let tokenizer_config = dir.join("tokenizer_config.json");
        let tok =
            Tokenizer::from_file(&tokenizer_json, tokenizer_config.is_file().then_some(tokenizer_config.as_path()))
                .with_context(|| format!("{}", dir.display()))?;
        let bos =
            ids(generation.as_ref(), "bos_token_id").into_iter().chain(ids(config.as_ref(), "bos_token_id")).next();
        let tok = tok
            .with_default_bos(bos)
            .with_stop_ids(ids(generation.as_ref(), "eos_token_id"))
            .with_stop_ids(ids(config.as_ref(), "eos_token_id"));
        m.extend(tokenizer_metadata(&tok)?);
    }
    Ok(m)
}

/// The metadata entries that carry a tokenizer: `ember.tokenizer` and, for readers that only
/// want them, `ember.chat_template`, `ember.bos_id`, `ember.eos_ids`.
pub(crate) fn tokenizer_metadata(tok: &Tokenizer) -> Result<Vec<(&'static str, String)>> {
    let mut m = vec![("ember.tokenizer", tok.to_json_string()?)];
    if let Some(t) = tok.chat_template() {
        m.push(("ember.chat_template", t.to_string()));
    }
    if let Some(b) = tok.bos_id() {
        m.push(("ember.bos_id", b.to_string()));
    }
    m.push(("ember.eos_ids", serde_json::to_string(tok.eos_ids())?));
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_layout_resolves_to_the_snapshot_refs_main_names() {
        let root = tempfile::tempdir().unwrap();
        let hub = root.path().join("models--Org--Tiny-Model");
        for rev in ["aaa", "bbb"] {
            std::fs::create_dir_all(hub.join("snapshots").join(rev)).unwrap();
        }
        let err = resolve(&hub).unwrap_err().to_string();
        assert!(err.contains("2 snapshots and no refs/main"), "{err}");
        std::fs::create_dir_all(hub.join("refs")).unwrap();
        std::fs::write(hub.join("refs/main"), "bbb\n").unwrap();
        assert_eq!(resolve(&hub).unwrap(), hub.join("snapshots/bbb"));
        std::fs::write(hub.join("refs/main"), "../x").unwrap();
        assert!(resolve(&hub).unwrap_err().to_string().contains("which is not in"));
        assert_eq!(display_name(&hub.join("snapshots/bbb")), "Org--Tiny-Model");
        assert_eq!(display_name(Path::new("/m/SmolLM2-135M")), "SmolLM2-135M");
        // A plain directory is its own model directory.
        assert_eq!(resolve(root.path()).unwrap(), root.path());
    }

    #[test]
    fn a_directory_without_config_or_tokenizer_names_the_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let err = check_runnable(dir.path()).unwrap_err().to_string();
        assert!(err.contains("no config.json"), "{err}");
        std::fs::write(dir.path().join("config.json"), "{}").unwrap();
        let err = check_runnable(dir.path()).unwrap_err().to_string();
        assert!(err.contains("no tokenizer.json"), "{err}");
        std::fs::write(dir.path().join("tokenizer.json"), "{}").unwrap();
        let err = check_runnable(dir.path()).unwrap_err().to_string();
        assert!(err.contains("no model.safetensors"), "{err}");
    }

    #[test]
    fn stop_ids_come_as_a_number_or_a_list() {
        let v: Value = serde_json::json!({"eos_token_id": [2, 7], "bos_token_id": 1});
        assert_eq!(ids(Some(&v), "eos_token_id"), vec![2, 7]);
        assert_eq!(ids(Some(&v), "bos_token_id"), vec![1]);
        assert_eq!(ids(Some(&v), "pad_token_id"), Vec::<u32>::new());
    }
}
