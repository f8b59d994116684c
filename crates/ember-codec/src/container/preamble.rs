//! The 64-byte preamble at the start of every `.ember` file.

/// File signature: a high byte (catches 7-bit transfers), `EMBER`, then CR LF (catches newline
/// conversion), as PNG does.
pub const MAGIC: [u8; 8] = *b"\x89EMBER\r\n";
/// The newest format version this build writes and reads. A file is written with the lowest
/// version its tensors need ([`super::Header::min_version`]): 4 only where a tensor has
/// super-blocks, 3 only where an `int8` tensor has per-block scales, so files without them still
/// read in builds that know version 2.
pub const FORMAT_VERSION: u32 = 4;
/// The oldest version this build still reads (version 1: exponent-only `lossless`).
pub const MIN_READ_VERSION: u32 = 1;
/// Size of the preamble; tile data starts at the first 64-byte boundary after it.
pub const PREAMBLE_LEN: usize = 64;

/// Decoded preamble fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Preamble {
    /// Format version.
    pub version: u32,
    /// Reserved flags (0 in version 1).
    pub flags: u32,
    /// Byte offset of the JSON header.
    pub header_offset: u64,
    /// Its length in bytes.
    pub header_len: u64,
    /// XXH3-64 of the header bytes.
    pub header_xxh3: u64,
}

impl Preamble {
    /// Serialises the preamble (little-endian; bytes 40..64 are zero).
    pub fn to_bytes(&self) -> [u8; PREAMBLE_LEN] {
        let mut b = [0u8; PREAMBLE_LEN];
        b[..8].copy_from_slice(&MAGIC);
        b[8..12].copy_from_slice(&self.version.to_le_bytes());
        b[12..16].copy_from_slice(&self.flags.to_le_bytes());
        b[16..24].copy_from_slice(&self.header_offset.to_le_bytes());
        b[24..32].copy_from_slice(&self.header_len.to_le_bytes());
        b[32..40].copy_from_slice(&self.header_xxh3.to_le_bytes());
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
        })
    }
}
