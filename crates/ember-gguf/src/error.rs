//! The one error type of this crate. Every variant that comes from a file carries its path, and
//! the tensor or metadata key when one is involved, so a message alone says where to look.

use std::path::PathBuf;

use crate::GgmlType;

/// Everything that can go wrong reading a GGUF file, dequantizing, building a tokenizer or
/// fetching the default model.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    /// The operating system refused a read, write, map or rename.
    #[error("{}: {what}: {source}", path.display())]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// What was being done.
        what: &'static str,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The header is malformed at `offset` (truncated, absurd count or length, bad UTF-8...).
    #[error("{}: malformed GGUF at byte {offset}: {msg}", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// Byte offset where parsing failed.
        offset: u64,
        /// What is wrong.
        msg: String,
    },
    /// The file is not GGUF, or a GGUF version this reader does not know (only v2 and v3).
    #[error("{}: {msg}", path.display())]
    Unsupported {
        /// The file.
        path: PathBuf,
        /// What is unsupported.
        msg: String,
    },
    /// A tensor's description is invalid (dims, type, offset past the end...).
    #[error("{}: tensor `{tensor}`: {msg}", path.display())]
    BadTensor {
        /// The file.
        path: PathBuf,
        /// The tensor.
        tensor: String,
        /// What is wrong.
        msg: String,
    },
    /// No tensor of this name.
    #[error("{}: no tensor `{tensor}`", path.display())]
    NoTensor {
        /// The file.
        path: PathBuf,
        /// The name asked for.
        tensor: String,
    },
    /// Dequantizing a tensor of this file failed (the inner error says why).
    #[error("{}: tensor `{tensor}`: {source}", path.display())]
    InTensor {
        /// The file.
        path: PathBuf,
        /// The tensor.
        tensor: String,
        /// The error from the dequantizer.
        source: Box<GgufError>,
    },
    /// A ggml type id this reader does not know (its block size is unknown, so its bytes cannot
    /// even be located).
    #[error("unknown ggml type id {0}")]
    UnknownType(u32),
    /// A known ggml type without a dequantizer here.
    #[error("dequantization of {0} is not implemented")]
    NoDequantizer(GgmlType),
    /// The bytes given to a dequantizer do not match the element count.
    #[error("{ggml_type}: {msg}")]
    BadBlocks {
        /// The type being dequantized.
        ggml_type: GgmlType,
        /// What does not match.
        msg: String,
    },
    /// A metadata key is missing or has the wrong type.
    #[error("{}: metadata `{key}`: {msg}", path.display())]
    Metadata {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
        /// What is wrong.
        msg: String,
    },
    /// Building, loading or running the tokenizer failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// Rendering the chat template failed.
    #[error("chat template: {0}")]
    ChatTemplate(String),
    /// Fetching the default model failed.
    #[error("fetch: {0}")]
    Fetch(String),
}

impl GgufError {
    /// An [`GgufError::Io`] for `path`.
    pub(crate) fn io(path: impl Into<PathBuf>, what: &'static str, source: std::io::Error) -> Self {
        GgufError::Io { path: path.into(), what, source }
    }
}
