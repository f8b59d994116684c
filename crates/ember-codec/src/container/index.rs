//! The header (the file's index) as stored: plain JSON, or from format version 5 one zstd frame
//! of it. Reading bounds the decompressed length before anything is allocated; rewriting is for
//! tools that edit an index in place (and for tests that forge files).

use std::borrow::Cow;
use std::path::Path;

use xxhash_rust::xxh3::xxh3_64;

use super::preamble::{
    COMPRESSED_HEADER_VERSION, FLAG_HEADER_ZSTD, KNOWN_FLAGS, MAX_HEADER_EXPANSION, MAX_HEADER_JSON_LEN,
};
use super::{Preamble, PREAMBLE_LEN};
use crate::{CodecError, Result};

/// zstd level of compressed headers: written once per file, read once per open; level 19 takes
/// about 0.3 s per MB of JSON and stores a quarter of it.
pub const HEADER_ZSTD_LEVEL: i32 = 19;

/// The JSON header from its stored bytes, after the preamble's flags and lengths are checked.
/// The checksum is the caller's (it covers the stored bytes).
pub(crate) fn header_json<'a>(pre: &Preamble, stored: &'a [u8]) -> std::result::Result<Cow<'a, [u8]>, String> {
    let unknown = pre.flags & !KNOWN_FLAGS;
    if unknown != 0 {
        return Err(format!("unknown preamble flags {unknown:#x} (this build knows {KNOWN_FLAGS:#x})"));
    }
    if pre.flags & FLAG_HEADER_ZSTD == 0 {
        if pre.header_json_len != 0 {
            return Err(format!("a plain header with a decompressed length ({}) in the preamble", pre.header_json_len));
        }
        return Ok(Cow::Borrowed(stored));
    }
    if pre.version < COMPRESSED_HEADER_VERSION {
        return Err(format!(
            "a version-{} file cannot have a compressed header (version {COMPRESSED_HEADER_VERSION} and later)",
            pre.version
        ));
    }
    let n = pre.header_json_len;
    let most = (pre.header_len.saturating_mul(MAX_HEADER_EXPANSION)).min(MAX_HEADER_JSON_LEN);
    if n == 0 || n > most {
        return Err(format!(
            "the compressed header claims {n} bytes of JSON; {} stored bytes may hold 1..={most}",
            pre.header_len
        ));
    }
    let json = zstd::bulk::decompress(stored, n as usize)
        .map_err(|e| format!("the compressed header does not decompress: {e}"))?;
    if json.len() as u64 != n {
        return Err(format!("the compressed header holds {} bytes of JSON, the preamble says {n}", json.len()));
    }
    Ok(Cow::Owned(json))
}

/// How a writer stores `json`: `(stored bytes, flags, decompressed length)`. Compressed when
/// asked and when a reader will accept the result; plain otherwise.
pub(crate) fn encode_header(json: Vec<u8>, compress: bool) -> std::io::Result<(Vec<u8>, u32, u64)> {
    if !compress || json.len() as u64 > MAX_HEADER_JSON_LEN {
        return Ok((json, 0, 0));
    }
    let z = zstd::bulk::compress(&json, HEADER_ZSTD_LEVEL)?;
    if (json.len() as u64) > (z.len() as u64).saturating_mul(MAX_HEADER_EXPANSION) || z.len() >= json.len() {
        return Ok((json, 0, 0));
    }
    Ok((z, FLAG_HEADER_ZSTD, json.len() as u64))
}

fn preamble_of(path: &Path, file: &[u8]) -> Result<(Preamble, usize, usize)> {
    let bad = |reason: String| CodecError::BadHeader { path: path.to_path_buf(), reason };
    let pre: &[u8; PREAMBLE_LEN] = file
        .get(..PREAMBLE_LEN)
        .and_then(|p| p.try_into().ok())
        .ok_or_else(|| bad("shorter than the preamble".into()))?;
    let pre = Preamble::parse(pre).ok_or_else(|| CodecError::BadMagic { path: path.to_path_buf() })?;
    let h0 = usize::try_from(pre.header_offset).map_err(|_| bad("header offset out of range".into()))?;
    let h1 = pre
        .header_offset
        .checked_add(pre.header_len)
        .and_then(|e| usize::try_from(e).ok())
        .filter(|&e| e <= file.len() && h0 >= PREAMBLE_LEN)
        .ok_or_else(|| bad("the header lies outside the file".into()))?;
    Ok((pre, h0, h1))
}

/// The JSON header of the `.ember` file `file` (its whole bytes; `path` names it in errors),
/// decompressed if it is stored compressed. The checksum is checked.
pub fn read_header_json(path: &Path, file: &[u8]) -> Result<Vec<u8>> {
    let (pre, h0, h1) = preamble_of(path, file)?;
    if xxh3_64(&file[h0..h1]) != pre.header_xxh3 {
        return Err(CodecError::HeaderChecksum { path: path.to_path_buf(), offset: pre.header_offset });
    }
    header_json(&pre, &file[h0..h1])
        .map(Cow::into_owned)
        .map_err(|reason| CodecError::BadHeader { path: path.to_path_buf(), reason })
}

/// `file` with its header replaced by `json` (stored the way the old one was, compressed or
/// plain) and the preamble's lengths and checksum recomputed. The new header goes where the old
/// one started; whatever followed the old header is dropped.
pub fn replace_header_json(path: &Path, file: &[u8], json: &[u8]) -> Result<Vec<u8>> {
    let (pre, h0, _) = preamble_of(path, file)?;
    let compress = pre.flags & FLAG_HEADER_ZSTD != 0;
    let (stored, flags, json_len) = if compress {
        let z = zstd::bulk::compress(json, HEADER_ZSTD_LEVEL).map_err(|e| CodecError::io(path, e))?;
        (z, FLAG_HEADER_ZSTD, json.len() as u64)
    } else {
        (json.to_vec(), 0, 0)
    };
    let mut out = file[..h0].to_vec();
    out.extend_from_slice(&stored);
    let new_pre = Preamble {
        flags: (pre.flags & !FLAG_HEADER_ZSTD) | flags,
        header_len: stored.len() as u64,
        header_xxh3: xxh3_64(&stored),
        header_json_len: json_len,
        ..pre
    };
    out[..PREAMBLE_LEN].copy_from_slice(&new_pre.to_bytes());
    Ok(out)
}
