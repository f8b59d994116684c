//! Errors of the codec and the container.
//!
//! Every variant that concerns a file names the file, and where it concerns a tensor or a tile it
//! names those and the byte offset too: a user with a corrupt multi-gigabyte container must be able
//! to tell which part is damaged without a debugger.

use std::path::PathBuf;

/// An error while encoding, writing, opening, validating or decoding an `.ember` container.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The operating system refused a read, write, rename or map.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file the operation was about.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The file does not start with the `.ember` magic bytes.
    #[error("{}: not an .ember container (bad magic bytes)", path.display())]
    BadMagic {
        /// The file.
        path: PathBuf,
    },
    /// The file was written by a format version this build cannot read.
    #[error("{}: unsupported .ember format version {found} (this build of ember {} reads versions 1 to {supported}; a newer ember reads it)", path.display(), env!("CARGO_PKG_VERSION"))]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// The version in the file.
        found: u32,
        /// The newest version this build reads.
        supported: u32,
    },
    /// A region the header points to lies (partly) outside the file.
    #[error("{}: truncated or corrupt: {what} needs bytes {start}..{end} but the file has {file_len} bytes", path.display())]
    OutOfBounds {
        /// The file.
        path: PathBuf,
        /// What the region holds.
        what: String,
        /// First byte of the region.
        start: u64,
        /// One past its last byte.
        end: u64,
        /// The file's length.
        file_len: u64,
    },
    /// The header bytes do not match the checksum in the preamble.
    #[error("{}: header checksum mismatch at offset {offset} (the header is corrupt)", path.display())]
    HeaderChecksum {
        /// The file.
        path: PathBuf,
        /// Where the header starts.
        offset: u64,
    },
    /// The header parsed but is inconsistent, or did not parse.
    #[error("{}: invalid header: {reason}", path.display())]
    BadHeader {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A tensor's entry in the header is inconsistent.
    #[error("{}: tensor `{tensor}`: {reason}", path.display())]
    BadTensor {
        /// The file.
        path: PathBuf,
        /// The tensor's name.
        tensor: String,
        /// What is wrong.
        reason: String,
    },
    /// A tile's (or a scale block's) bytes do not match their checksum.
    #[error("{}: tensor `{tensor}`: {part} at offset {offset}: checksum mismatch (data is corrupt)", path.display())]
    Checksum {
        /// The file.
        path: PathBuf,
        /// The tensor's name.
        tensor: String,
        /// Which part, e.g. `tile 3` or `scales`.
        part: String,
        /// Where the part starts in the file.
        offset: u64,
    },
    /// A tile passed its checksum but its content is inconsistent (a bug or a forged file).
    #[error("{}: tensor `{tensor}`: tile {tile} at offset {offset}: corrupt tile: {reason}", path.display())]
    CorruptTile {
        /// The file.
        path: PathBuf,
        /// The tensor's name.
        tensor: String,
        /// The tile's index in the tensor.
        tile: usize,
        /// Where the tile starts in the file.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// A tensor cannot be encoded with the requested scheme.
    #[error("tensor `{tensor}`: cannot encode: {reason}")]
    Encode {
        /// The tensor's name.
        tensor: String,
        /// Why.
        reason: String,
    },
    /// The caller asked for something that does not exist or does not fit.
    #[error("{0}")]
    Usage(String),
}

/// Shorthand for results of this crate.
pub type Result<T, E = CodecError> = std::result::Result<T, E>;

impl CodecError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io { path: path.into(), source }
    }
}
