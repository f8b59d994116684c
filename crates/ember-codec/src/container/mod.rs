//! The `.ember` container: a fixed preamble, tile data, and a checksummed (from version 5
//! zstd-compressed) JSON header at the end.
//!
//! The header comes last so that `ember compress` can stream tensors to disk one at a time and
//! write the index once it knows every offset; the preamble at byte 0 points to it. Everything
//! the header says is validated against the file before a byte of tile data is trusted.

mod header;
pub mod index;
mod preamble;
mod reader;
mod writer;

pub use header::{BlobRef, Header, TensorEntry, TileRef};
pub use preamble::{
    Preamble, COMPRESSED_HEADER_VERSION, FLAG_HEADER_ZSTD, FORMAT_VERSION, KNOWN_FLAGS, MAGIC, MAX_HEADER_EXPANSION,
    MAX_HEADER_JSON_LEN, MIN_READ_VERSION, PREAMBLE_LEN,
};
pub use reader::{Container, DecodedTensor, TensorDecoder};
pub use writer::ContainerWriter;

/// Alignment of every tensor's first tile and of the header, in bytes.
pub const DATA_ALIGN: u64 = 64;
/// A tensor's stored bytes must be at least `elements / MAX_EXPANSION`: the most a reader will
/// allocate per stored byte when it trusts a header (the encoder pads degenerate tensors).
pub const MAX_EXPANSION: u64 = 64;
/// Largest number of elements one tensor may claim (2^48).
pub const MAX_TENSOR_ELEMS: u64 = 1 << 48;
