//! A Llama-family decoder (Llama 2/3/3.1, SmolLM, Qwen2, Qwen3, Gemma 3 text) on burn-nn,
//! readable top to bottom.
//!
//! The data path: [`config`] (a Hugging Face `config.json`) → [`model`] (the module tree, created
//! with lazy parameters so that nothing dense is allocated until weights arrive) → [`load`]
//! (dense weights from safetensors or GGUF, for the baseline and the tests; the compressed store
//! attaches its own parameter hooks instead) → [`generate()`] (prefill + KV-cached decoding).
//!
//! ```no_run
//! use burn::tensor::Device;
//! use ember_llama::{generate, load_gguf, GenerateOptions, Sampler};
//!
//! let device = Device::flex();
//! let (model, config) = load_gguf("SmolLM2-135M-Instruct.Q4_1.gguf", &device)?;
//! let prompt = [504, 3575, 282, 4649, 314]; // "The capital of France is"
//! let options = GenerateOptions { max_tokens: 8, sampler: Sampler::greedy(), stop_ids: config.eos_token_ids.clone() };
//! let out = generate(&model, &prompt, &options, |id| println!("{id}"))?;
//! println!("{:.1} tok/s", out.decode_tokens_per_sec());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

/// The workspace README's Rust examples, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct WorkspaceReadmeDoctests;

/// This crate's README example, compiled as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

pub mod batch;
pub mod config;
pub mod generate;
pub mod load;
pub mod model;
pub mod norm;
pub mod offload;
pub mod synthetic;

pub use batch::BatchCache;
pub use config::{Activation, ConfigError, LayerType, Llama3RopeScaling, LlamaConfig};
pub use generate::{generate, generate_with, GenerateError, GenerateOptions, Generation, Sampler, StopReason};
pub use load::{load_gguf, load_hf_dir, load_hf_weights, load_tensors, param_paths, GgufWeights, HfTensor, LoadError};
pub use model::{burn_path_of, hf_layout_is_transposed, hf_name_of, KvCache, Llama};
pub use offload::OffloadError;
