//! The model with its weights kept compressed: built from an `.ember` container (as written by
//! `ember compress`) and attached to an [`ember::Store`], so no dense weight is ever materialized
//! on the device unless the cache policy keeps it.

use burn::tensor::Device;
use ember::{Config, NameMap, Selection, Store, Target};
use ember_gguf::Tokenizer;

use crate::config::{ConfigError, LlamaConfig};
use crate::model::{hf_layout_is_transposed, hf_name_of, Llama};

/// Why a container could not back the model.
#[derive(Debug, thiserror::Error)]
pub enum OffloadError {
    /// The container lacks a metadata entry the model needs.
    #[error("{path}: no `{key}` in the container metadata (compress a GGUF with `ember compress`, or pass the config yourself)")]
    MissingMetadata {
        /// The container.
        path: String,
        /// The key.
        key: &'static str,
    },
    /// The stored config does not parse.
    #[error("{path}: `ember.llama.config`: {source}")]
    Config {
        /// The container.
        path: String,
        /// Why.
        source: ConfigError,
    },
    /// The stored tokenizer does not load.
    #[error("{path}: `ember.tokenizer`: {message}")]
    Tokenizer {
        /// The container.
        path: String,
        /// Why.
        message: String,
    },
    /// Attaching failed (names, shapes, budget...).
    #[error(transparent)]
    Attach(Box<ember::EmberError>),
}

impl From<ember::EmberError> for OffloadError {
    fn from(e: ember::EmberError) -> Self {
        Self::Attach(Box::new(e))
    }
}

/// Parameter path → container tensor: Hugging Face names, Linear weights stored `[out, in]`.
pub fn name_map() -> NameMap {
    NameMap::new(|path| {
        let name = hf_name_of(path)?;
        Some(if hf_layout_is_transposed(path) { Target::transposed(name) } else { Target::plain(name) })
    })
}

fn metadata<'a>(store: &'a Store, key: &'static str) -> Result<&'a str, OffloadError> {
    store
        .container()
        .metadata()
        .get(key)
        .map(String::as_str)
        .ok_or_else(|| OffloadError::MissingMetadata { path: store.container().path().display().to_string(), key })
}

/// The model configuration stored in the container (`ember.llama.config`).
pub fn config_of(store: &Store) -> Result<LlamaConfig, OffloadError> {
    LlamaConfig::from_hf_json(metadata(store, "ember.llama.config")?)
        .map_err(|source| OffloadError::Config { path: store.container().path().display().to_string(), source })
}

/// The tokenizer stored in the container (`ember.tokenizer`).
pub fn tokenizer_of(store: &Store) -> Result<Tokenizer, OffloadError> {
    Tokenizer::from_json_str(metadata(store, "ember.tokenizer")?).map_err(|e| OffloadError::Tokenizer {
        path: store.container().path().display().to_string(),
        message: e.to_string(),
    })
}

/// The decoded-weight budget `adaptive` gets when the user names none: half the decoded (f32)
/// weights, but never less than the largest decoded tensor, which must fit to be used at all
/// (Gemma 3's 262k-token embedding is 63% of the 270M model).
pub fn default_adaptive_budget(store: &Store) -> u64 {
    let decoded = store.container().tensors().iter().map(|t| 4 * t.elements());
    let (total, largest) = decoded.fold((0, 0), |(sum, max), b| (sum + b, max.max(b)));
    (total / 2).max(largest)
}

/// Builds the model on `device` with every weight backed by `store` as `config` says (its
/// `names` are replaced by [`name_map`]). Tensors the model does not use (e.g. RoPE frequency
/// tables) are ignored.
pub fn attach(store: &Store, device: &Device, config: Config) -> Result<(Llama, LlamaConfig), OffloadError> {
    let llama_config = config_of(store)?;
    let model = Llama::init(&llama_config, device);
    let model = store.attach(model, config.names(name_map()).allow_unused(true))?;
    Ok((model, llama_config))
}

/// The dense baseline from the same container: every weight decoded once, kept as an ordinary
/// parameter (no hook, no cache).
pub fn dense(store: &Store, device: &Device) -> Result<(Llama, LlamaConfig), OffloadError> {
    let config = Config::new(ember::policy::Full).select(Selection::all().largest(0)).residency(ember::Residency::Host);
    attach(store, device, config)
}
