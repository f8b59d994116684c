//! # ember-codec
//!
//! The `.ember` container of independently decodable tiles and its exact CPU codec. This crate
//! has no Burn and no GPU dependency: it is the reference every GPU decoder is compared with,
//! bit for bit.
//!
//! The data path, one module each: [`dtype`] (how a float splits) → [`schemes`] (what becomes a
//! symbol) → [`rans`] (interleaved entropy coder) → [`tile`] (tile byte layout) →
//! [`container`] (file layout, validation, mmap reading). The byte-level specification is
//! `FORMAT.md` at the repository root.
//!
//! ```
//! use ember_codec::{encode_tensor, Container, ContainerWriter, Dtype, EncodeOptions, SchemeKind};
//! let values: Vec<f32> = (0..4096).map(|i| ((i * 7919) % 1000) as f32 * 1e-3 - 0.5).collect();
//! let bytes: Vec<u8> = values.iter().flat_map(|v| half::bf16::from_f32(*v).to_bits().to_le_bytes()).collect();
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("model.ember");
//! let mut writer = ContainerWriter::create(&path)?;
//! writer.add(encode_tensor("w", Dtype::BF16, &[64, 64], &bytes, SchemeKind::Lossless, &EncodeOptions::default())?)?;
//! writer.finish()?;
//!
//! let file = Container::open(&path)?;
//! let decoded = file.decode(file.get("w")?)?;
//! assert_eq!(decoded.data, bytes); // bit-exact
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![warn(missing_docs)]

pub mod bitpack;
pub mod container;
pub mod dtype;
pub mod entropy;
mod error;
pub mod rans;
pub mod schemes;
pub mod synthetic;
pub mod tile;

pub use container::{Container, ContainerWriter, DecodedTensor, TensorEntry};
pub use dtype::Dtype;
pub use error::{CodecError, Result};
pub use schemes::{encode_quant_codes, encode_tensor, EncodeOptions, QuantCodes, Scheme, SchemeKind};

/// The README's example, compiled and run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctest;
