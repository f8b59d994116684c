//! Read GGUF files (llama.cpp's model format) without ggml: metadata, tensor descriptions,
//! dequantization to `f32`, Llama-family hyper-parameters, HF tensor names, and the tokenizer
//! with its chat template.
//!
//! The data path: [`GgufFile::open`] maps the file and validates the whole header against it
//! ([`mod@file`]); [`GgufFile::dequantize`] turns a tensor's blocks into `f32` ([`dequant`]);
//! [`names::hf_name`] and [`unpermute_qk`] give the tensor its Hugging Face name and row order;
//! [`LlamaHParams`] and [`tokenizer::Tokenizer`] carry what a model needs besides weights.
//!
//! The README's example, compiled as a doctest:
#![doc = include_str!("../README.md")]

pub mod codes;
mod cursor;
pub mod dequant;
mod error;
pub mod fetch;
pub mod file;
mod ggml_type;
mod hparams;
mod metadata;
pub mod names;
mod permute;
pub mod tokenizer;
#[cfg(feature = "writer")]
mod writer;

pub use codes::BlockCodes;
pub use error::GgufError;
pub use fetch::FetchError;
pub use file::{GgufFile, TensorInfo};
pub use ggml_type::GgmlType;
pub use hparams::{LlamaHParams, RopeScaling};
pub use metadata::MetaValue;
pub use permute::unpermute_qk;
pub use tokenizer::{ChatMessage, StreamDecoder, Tokenizer};
#[cfg(feature = "writer")]
pub use writer::GgufWriter;
