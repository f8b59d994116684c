//! The 64-byte preamble at the start of every `.ember` file.

/// File signature: a high byte (catches 7-bit transfers), `EMBER`, then CR LF (catches newline
/// conversion), as PNG does.
pub const MAGIC: [u8; 8] = *b"\x89EMBER\r\n";
/// The newest format version this build writes and reads. A file is written with the lowest
/// version it needs: 5 when its header is zstd-compressed (the writer's default), else what its
/// tensors need ([`super::Header::min_version`]): 4 only where a tensor has super-blocks, 3 only
/// where an `int8` tensor has per-block scales, so plain-header files without them still read in
/// builds that know version 2.
pub const FORMAT_VERSION: u32 = 5;
/// The first version whose header may be zstd-compressed ([`FLAG_HEADER_ZSTD`]).
pub const COMPRESSED_HEADER_VERSION: u32 = 5;
/// Preamble flag (version 5): the header bytes are one zstd frame holding the JSON header, whose
/// length is [`Preamble::header_json_len`]. A header is mostly numbers (tile offsets, checksums,
/// frequency tables) written as decimal text; compressed it costs a quarter of its bytes, which on
/// a model with many small tensors is a visible share of the file.
pub const FLAG_HEADER_ZSTD: u32 = 1;
/// Flags this build understands; a file with any other bit set is rejected.
pub const KNOWN_FLAGS: u32 = FLAG_HEADER_ZSTD;
/// The most a compressed header may expand (JSON bytes per stored byte) and the longest JSON
/// header a reader accepts: a reader never allocates more on a preamble's word.
pub const MAX_HEADER_EXPANSION: u64 = 256;
/// Upper bound on the decompressed JSON header, in bytes (1 GiB).
pub const MAX_HEADER_JSON_LEN: u64 = 1 << 30;
/// The oldest version this build still reads (version 1: exponent-only `lossless`).
pub const MIN_READ_VERSION: u32 = 1;
/// Size of the preamble; tile data starts at the first 64-byte boundary after it.
pub const PREAMBLE_LEN: usize = 64;

/// Decoded preamble fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Preamble {
    /// Format version.
    pub version: u32,
    /// Flags: [`FLAG_HEADER_ZSTD`] (version 5) or 0.
    pub flags: u32,
    /// Byte offset of the JSON header.
    pub header_offset: u64,
    /// Its length in bytes, as stored.
    pub header_len: u64,
    /// XXH3-64 of the header bytes, as stored.
    pub header_xxh3: u64,
    /// With [`FLAG_HEADER_ZSTD`]: the length of the decompressed JSON header; else 0.
    pub header_json_len: u64,
}

impl Preamble {
    /// Serialises the preamble (little-endian; bytes 48..64 are zero).
    pub fn to_bytes(&self) -> [u8; PREAMBLE_LEN] {
        let mut b = [0u8; PREAMBLE_LEN];
        b[..8].copy_from_slice(&MAGIC);
        b[8..12].copy_from_slice(&self.version.to_le_bytes());
        b[12..16].copy_from_slice(&self.flags.to_le_bytes());
        b[16..24].copy_from_slice(&self.header_offset.to_le_bytes());
        b[24..32].copy_from_slice(&self.header_len.to_le_bytes());
        b[32..40].copy_from_slice(&self.header_xxh3.to_le_bytes());
        b[40..48].copy_from_slice(&self.header_json_len.to_le_bytes());
        b
    }

    /// Parses the preamble; `None` if the magic bytes are wrong. `bytes` has `PREAMBLE_LEN` bytes.
    pub fn parse(bytes: &[u8; PREAMBLE_LEN]) -> Option<Self> {
        if bytes[..8] != MAGIC {
            return None;
        }
        let u32_at = |o: usize| u32::from_le_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]);
        let u64_at = |o: usize| u64::from_le_bytes(bytes[o..o + 8].try_into().unwrap_or([0; 8]));
        Some(Self {
            version: u32_at(8),
            flags: u32_at(12),
            header_offset: u64_at(16),
            header_len: u64_at(24),
            header_xxh3: u64_at(32),
            header_json_len: u64_at(40),
        })
    }
}
