//! Dense weight loading: Hugging Face safetensors directories (through burn-store) and GGUF files
//! (dequantized to f32 through `ember-gguf`), both ending in the same [`Llama`].
//!
//! This is the uncompressed baseline and the reference the tests compare against; the compressed
//! store replaces parameters through a `Reparameterization` instead and does not use this module.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{DType, Device, Tensor, TensorData};
use burn_store::{
    FloatCastAdapter, KeyRemapper, ModuleAdapter, ModuleSnapshot, PyTorchToBurnAdapter, SafetensorsStore,
};

use crate::config::{ConfigError, LlamaConfig};
use crate::model::{hf_layout_is_transposed, hf_name_of, Llama};

/// Why weights could not be loaded. Messages name the file and the tensor.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// `config.json` is missing or invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// `model.safetensors.index.json` is malformed.
    #[error("invalid safetensors index {path}: {message}")]
    Index {
        /// The index file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// burn-store rejected a safetensors file (format, dtype, or a shape that does not fit).
    #[error("cannot load {path}: {message}")]
    Safetensors {
        /// The safetensors file.
        path: PathBuf,
        /// burn-store's message.
        message: String,
    },
    /// The GGUF file could not be parsed or a tensor not dequantized.
    #[error("GGUF {path}: {message}")]
    Gguf {
        /// The GGUF file.
        path: PathBuf,
        /// ember-gguf's message.
        message: String,
    },
    /// The source has no tensor for a parameter the model needs.
    #[error("tensor {name} not found (needed for parameter {param})")]
    MissingTensor {
        /// Hugging Face name looked up.
        name: String,
        /// The model's parameter path.
        param: String,
    },
    /// The tensor exists but its shape does not match the config.
    #[error("tensor {name}: shape {found:?} does not match the config, which needs {expected:?} (HF layout)")]
    ShapeMismatch {
        /// Hugging Face name.
        name: String,
        /// Shape the config implies, in HF (`[out, in]`) layout.
        expected: Vec<usize>,
        /// Shape found in the source.
        found: Vec<usize>,
    },
    /// The data length does not match the shape the source declared.
    #[error("tensor {name}: {len} values for shape {shape:?}")]
    DataLength {
        /// Hugging Face name.
        name: String,
        /// Values received.
        len: usize,
        /// Declared shape.
        shape: Vec<usize>,
    },
    /// A parameter path has no Hugging Face name (the model and [`hf_name_of`] disagree).
    #[error("parameter {0} has no Hugging Face name")]
    UnnamedParameter(String),
    /// An error from a tensor source, with the file it came from.
    #[error("{path}: {source}")]
    InFile {
        /// The source file.
        path: PathBuf,
        /// What went wrong.
        source: Box<LoadError>,
    },
}

/// A tensor in Hugging Face layout: row-major values and shape (`[out, in]` for linear weights).
pub type HfTensor = (Vec<f32>, Vec<usize>);

/// Fills every parameter of `model` from `fetch(hf_name)`.
///
/// `fetch` returns the tensor in Hugging Face layout, `Ok(None)` when the source lacks it (an
/// error: every parameter must be provided). Linear weights are transposed to burn's `[in, out]`
/// here, once, so sources never need to know burn's layout. Shapes are checked against the
/// config before anything is uploaded; a mismatch is an error, not a panic.
pub fn load_tensors<F>(model: Llama, mut fetch: F, device: &Device) -> Result<Llama, LoadError>
where
    F: FnMut(&str) -> Result<Option<HfTensor>, LoadError>,
{
    let mut loader = TensorLoader { fetch: &mut fetch, path: Vec::new(), device: device.clone(), error: None };
    let model = model.map(&mut loader);
    match loader.error {
        Some(e) => Err(e),
        None => Ok(model),
    }
}

/// A `ModuleMapper` that replaces each float parameter by the fetched tensor; it stops at the first error.
struct TensorLoader<'a, F> {
    fetch: &'a mut F,
    path: Vec<String>,
    device: Device,
    error: Option<LoadError>,
}

impl<F> TensorLoader<'_, F>
where
    F: FnMut(&str) -> Result<Option<HfTensor>, LoadError>,
{
    fn load<const D: usize>(&mut self, path: &str, expected: [usize; D]) -> Result<Tensor<D>, LoadError> {
        let name = hf_name_of(path).ok_or_else(|| LoadError::UnnamedParameter(path.to_string()))?;
        let transposed = hf_layout_is_transposed(path);
        let mut hf_shape = expected.to_vec();
        if transposed {
            hf_shape.reverse();
        }
        let (data, shape) = (self.fetch)(&name)?
            .ok_or_else(|| LoadError::MissingTensor { name: name.clone(), param: path.to_string() })?;
        if shape != hf_shape {
            return Err(LoadError::ShapeMismatch { name, expected: hf_shape, found: shape });
        }
        if data.len() != shape.iter().product::<usize>() {
            return Err(LoadError::DataLength { name, len: data.len(), shape });
        }
        let data = if transposed { transpose(&data, shape[0], shape[1]) } else { data };
        Ok(Tensor::from_data(TensorData::new(data, expected), &self.device))
    }
}

impl<F> ModuleMapper for TensorLoader<'_, F>
where
    F: FnMut(&str) -> Result<Option<HfTensor>, LoadError>,
{
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        if self.error.is_some() {
            return param;
        }
        let path = self.path.join(".");
        // `lazy_shape` reads the shape without running the (random) initializer.
        let expected = param.lazy_shape().dims::<D>();
        match self.load::<D>(&path, expected) {
            Ok(tensor) => Param::initialized(param.id, tensor),
            Err(e) => {
                self.error = Some(e);
                param
            }
        }
    }
}

/// `[rows, cols]` → `[cols, rows]`, row-major.
fn transpose(data: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; data.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = data[r * cols + c];
        }
    }
    out
}

/// The burn paths of all float parameters of a module.
pub fn param_paths<M: Module>(module: &M) -> Vec<String> {
    struct Paths {
        path: Vec<String>,
        out: Vec<String>,
    }
    impl ModuleVisitor for Paths {
        fn enter_module(&mut self, name: &str, _container_type: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _name: &str, _container_type: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, _param: &Param<Tensor<D>>) {
            self.out.push(self.path.join("."));
        }
    }
    let mut v = Paths { path: Vec::new(), out: Vec::new() };
    module.visit(&mut v);
    v.out
}

/// Regex rules renaming Hugging Face tensors to this model's parameter paths, for burn-store's
/// [`KeyRemapper`]. Norm weights go straight to `gamma` (burn-nn's `RmsNorm` name). They agree
/// with [`crate::model::burn_path_of`] (tested).
pub fn hf_to_burn_patterns() -> Vec<(&'static str, &'static str)> {
    vec![
        (r"^model\.embed_tokens\.weight$", "embedding.weight"),
        (r"^model\.norm\.weight$", "norm.gamma"),
        (r"^lm_head\.weight$", "lm_head.weight"),
        (r"^model\.layers\.(\d+)\.input_layernorm\.weight$", "layers.${1}.attention_norm.gamma"),
        (r"^model\.layers\.(\d+)\.post_attention_layernorm\.weight$", "layers.${1}.post_attention_norm.gamma"),
        (r"^model\.layers\.(\d+)\.pre_feedforward_layernorm\.weight$", "layers.${1}.pre_mlp_norm.gamma"),
        (r"^model\.layers\.(\d+)\.post_feedforward_layernorm\.weight$", "layers.${1}.post_mlp_norm.gamma"),
        (r"^model\.layers\.(\d+)\.self_attn\.(q|k)_norm\.weight$", "layers.${1}.attention.${2}_norm.gamma"),
        (r"^model\.layers\.(\d+)\.self_attn\.q_proj\.(weight|bias)$", "layers.${1}.attention.wq.${2}"),
        (r"^model\.layers\.(\d+)\.self_attn\.k_proj\.(weight|bias)$", "layers.${1}.attention.wk.${2}"),
        (r"^model\.layers\.(\d+)\.self_attn\.v_proj\.(weight|bias)$", "layers.${1}.attention.wv.${2}"),
        (r"^model\.layers\.(\d+)\.self_attn\.o_proj\.weight$", "layers.${1}.attention.wo.weight"),
        (r"^model\.layers\.(\d+)\.mlp\.(gate|up|down)_proj\.weight$", "layers.${1}.mlp.${2}.weight"),
    ]
}

/// The safetensors files of a Hugging Face model directory: `model.safetensors`, or the shards
/// listed in `model.safetensors.index.json`.
fn safetensors_files(dir: &Path) -> Result<Vec<PathBuf>, LoadError> {
    let single = dir.join("model.safetensors");
    let index = dir.join("model.safetensors.index.json");
    if index.exists() {
        let text = std::fs::read_to_string(&index).map_err(|source| LoadError::Io { path: index.clone(), source })?;
        let json: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| LoadError::Index { path: index.clone(), message: e.to_string() })?;
        let map = json
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| LoadError::Index { path: index.clone(), message: "no \"weight_map\" object".into() })?;
        let mut files = BTreeSet::new();
        for (name, file) in map {
            let file = file.as_str().ok_or_else(|| LoadError::Index {
                path: index.clone(),
                message: format!("weight_map[{name:?}] is not a file name"),
            })?;
            // Shards must sit next to the index; refuse paths that leave the directory.
            if file.contains('/') || file.contains('\\') || file == ".." {
                return Err(LoadError::Index {
                    path: index.clone(),
                    message: format!("shard name {file:?} is not a plain file name"),
                });
            }
            files.insert(dir.join(file));
        }
        Ok(files.into_iter().collect())
    } else if single.exists() {
        Ok(vec![single])
    } else {
        Err(LoadError::Io {
            path: single,
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no model.safetensors or model.safetensors.index.json",
            ),
        })
    }
}

/// Loads a Hugging Face model directory (`config.json` + safetensors, single or sharded) into a
/// new model on `device`, and returns it with its config.
///
/// Weights in f16/bf16 are cast to f32 on load (without the cast some backends abort on a
/// dtype mismatch instead of returning an error). Extra tensors in the files (e.g. `lm_head.weight`
/// of a tied checkpoint, `rotary_emb.inv_freq`) are ignored, as `transformers` does.
pub fn load_hf_dir(dir: impl AsRef<Path>, device: &Device) -> Result<(Llama, LlamaConfig), LoadError> {
    let dir = dir.as_ref();
    let config = LlamaConfig::from_hf_file(dir.join("config.json"))?;
    let model = load_hf_weights(Llama::init(&config, device), dir)?;
    Ok((model, config))
}

/// Loads the safetensors weights of `dir` into an existing (e.g. freshly initialized) model.
pub fn load_hf_weights(mut model: Llama, dir: impl AsRef<Path>) -> Result<Llama, LoadError> {
    let dir = dir.as_ref();
    let remapper = KeyRemapper::from_patterns(hf_to_burn_patterns())
        .map_err(|e| LoadError::Index { path: dir.into(), message: format!("internal key pattern: {e}") })?;
    let mut applied = BTreeSet::new();
    for file in safetensors_files(dir)? {
        let mut store = SafetensorsStore::from_file(file.clone())
            .with_from_adapter(PyTorchToBurnAdapter.chain(FloatCastAdapter::to(DType::F32)))
            .remap(remapper.clone())
            .allow_partial(true)
            .validate(true);
        let result = model
            .load_from(&mut store)
            .map_err(|e| LoadError::Safetensors { path: file.clone(), message: e.to_string() })?;
        if !result.errors.is_empty() {
            return Err(LoadError::Safetensors { path: file, message: format!("{:?}", result.errors) });
        }
        applied.extend(result.applied);
    }
    if let Some(param) = param_paths(&model).into_iter().find(|p| !applied.contains(p)) {
        let name = hf_name_of(&param).unwrap_or_else(|| param.clone());
        return Err(LoadError::InFile { path: dir.into(), source: Box::new(LoadError::MissingTensor { name, param }) });
    }
    Ok(model)
}

/// The tensors of a llama-architecture GGUF file, presented as a Hugging Face checkpoint: HF
/// names, HF (`[out, in]`) layouts, f32 values.
///
/// GGUF stores the Q and K projections of `llama` models with rows permuted for the interleaved
/// RoPE of llama.cpp; [`GgufWeights::tensor`] un-permutes them so the model's half-split (HF) RoPE
/// applies. Architectures converted without that permutation (e.g. `qwen2`) are left as they are.
/// A file without `output.weight` is tied to the token embedding.
pub struct GgufWeights {
    file: ember_gguf::GgufFile,
    path: PathBuf,
    config: LlamaConfig,
    config_json: serde_json::Value,
    /// HF name → (GGUF name, shape in HF order).
    by_hf: BTreeMap<String, (String, Vec<usize>)>,
    permuted_qk: bool,
    /// `general.architecture`, which decides names and norm offsets.
    architecture: String,
}

impl GgufWeights {
    /// Opens the file and derives the config from its metadata.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, LoadError> {
        let path = path.as_ref().to_path_buf();
        let gguf_err = |e: &dyn std::fmt::Display| LoadError::Gguf { path: path.clone(), message: e.to_string() };
        let file = ember_gguf::GgufFile::open(&path).map_err(|e| gguf_err(&e))?;
        let hparams = ember_gguf::LlamaHParams::from_gguf(&file).map_err(|e| gguf_err(&e))?;
        let mut config_json = hparams.to_hf_config_json();
        let permuted_qk = matches!(config_json.get("model_type").and_then(|v| v.as_str()), None | Some("llama"));

        let mut by_hf = BTreeMap::new();
        let architecture = hparams.architecture.clone();
        for t in file.tensors() {
            if let Some(hf) = ember_gguf::names::hf_name_for(&architecture, &t.name) {
                by_hf.insert(hf, (t.name.clone(), t.shape.clone()));
            }
        }
        let tied = !by_hf.contains_key("lm_head.weight");
        if let Some(obj) = config_json.as_object_mut() {
            obj.insert("tie_word_embeddings".into(), serde_json::Value::Bool(tied));
        }
        let config = LlamaConfig::from_hf_json(&config_json.to_string())
            .map_err(|e| LoadError::InFile { path: path.clone(), source: Box::new(e.into()) })?;
        Ok(GgufWeights { file, path, config, config_json, by_hf, permuted_qk, architecture })
    }

    /// The model config from the GGUF metadata.
    pub fn config(&self) -> &LlamaConfig {
        &self.config
    }

    /// The same config as a Hugging Face `config.json` value (to write next to exported weights).
    pub fn hf_config_json(&self) -> &serde_json::Value {
        &self.config_json
    }

    /// The HF names of all tensors the file provides, sorted.
    pub fn hf_names(&self) -> impl Iterator<Item = &str> {
        self.by_hf.keys().map(String::as_str)
    }

    /// One tensor by HF name, dequantized to f32 in HF layout; `Ok(None)` if the file lacks it.
    pub fn tensor(&self, hf_name: &str) -> Result<Option<HfTensor>, LoadError> {
        let Some((gguf_name, shape)) = self.by_hf.get(hf_name) else { return Ok(None) };
        let mut data = self.file.dequantize(gguf_name).map_err(|e| LoadError::Gguf {
            path: self.path.clone(),
            message: format!("tensor {gguf_name} ({hf_name}): {e}"),
        })?;
        let shift = ember_gguf::names::norm_weight_shift(&self.architecture, gguf_name);
        if shift != 0.0 {
            data.iter_mut().for_each(|v| *v -= shift);
        }
        let heads = if !self.permuted_qk {
            None
        } else if hf_name.contains("self_attn.q_proj.") {
            Some(self.config.num_attention_heads)
        } else if hf_name.contains("self_attn.k_proj.") {
            Some(self.config.num_key_value_heads)
        } else {
            None
        };
        let data = match heads {
            Some(n) => {
                // A weight is `rows × cols`, a bias `rows × 1`; the permutation acts on rows.
                let (rows, cols) = (shape.first().copied().unwrap_or(0), shape.get(1).copied().unwrap_or(1));
                if shape.len() > 2 || data.len() != rows * cols || rows % (2 * n) != 0 {
                    return Err(LoadError::InFile {
                        path: self.path.clone(),
                        source: Box::new(LoadError::ShapeMismatch {
                            name: hf_name.to_string(),
                            expected: vec![self.config.head_dim() * n, self.config.hidden_size],
                            found: shape.clone(),
                        }),
                    });
                }
                ember_gguf::unpermute_qk(&data, rows, cols, n)
            }
            None => data,
        };
        Ok(Some((data, shape.clone())))
    }

    /// Builds a model on `device` with every weight dequantized from the file.
    pub fn load(&self, device: &Device) -> Result<Llama, LoadError> {
        load_tensors(Llama::init(&self.config, device), |hf| self.tensor(hf), device).map_err(|e| match e {
            e @ (LoadError::Gguf { .. } | LoadError::InFile { .. }) => e,
            e => LoadError::InFile { path: self.path.clone(), source: Box::new(e) },
        })
    }
}

/// Loads a llama-architecture GGUF file into a dense f32 model; see [`GgufWeights`].
pub fn load_gguf(path: impl AsRef<Path>, device: &Device) -> Result<(Llama, LlamaConfig), LoadError> {
    let weights = GgufWeights::open(path)?;
    let model = weights.load(device)?;
    Ok((model, weights.config.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::burn_path_of;

    #[test]
    fn patterns_agree_with_burn_path_of() {
        let config = LlamaConfig { attention_bias: true, ..LlamaConfig::tiny() };
        let model = Llama::init(&config, &Device::flex());
        let rules: Vec<(regex::Regex, &str)> =
            hf_to_burn_patterns().into_iter().map(|(p, r)| (regex::Regex::new(p).unwrap(), r)).collect();
        let paths = param_paths(&model);
        assert_eq!(paths.len(), 1 + 2 * 12 + 1 + 1); // embedding, 2 × (2 norms + 4 attn weights + 3 biases + 3 MLP), norm, lm_head
        for path in paths {
            let hf = hf_name_of(&path).unwrap_or_else(|| panic!("no HF name for {path}"));
            assert_eq!(burn_path_of(&hf).as_deref(), Some(path.as_str()));
            let hits: Vec<String> = rules
                .iter()
                .filter(|(re, _)| re.is_match(&hf))
                .map(|(re, r)| re.replace(&hf, *r).into_owned())
                .collect();
            assert_eq!(hits, vec![path.clone()], "{hf}");
        }
    }

    #[test]
    fn transpose_is_row_major() {
        assert_eq!(transpose(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 2, 3), vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
    }
}
