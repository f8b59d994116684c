//! Any byte string, opened as an `.ember` file and fully decoded, must give `Ok` or an error —
//! never a panic, a hang, an out-of-bounds read or an oversized allocation.
//!
//! Random bytes rarely pass the header checksum, so when the first input byte is odd the rest is
//! used as the *header* of a file with a valid preamble and checksum, after 4 KiB of data bytes
//! derived from the input: that drives the validator and the decoders themselves. When the first
//! byte is 3 mod 4 the header is stored as a version-5 compressed header instead (the stored
//! bytes are the input, its first four bytes the claimed JSON length): that drives the bounds
//! on decompression.
#![no_main]

use ember_codec::container::{Preamble, FLAG_HEADER_ZSTD, FORMAT_VERSION, PREAMBLE_LEN};
use libfuzzer_sys::fuzz_target;

fn as_header_file(header: &[u8], compressed: bool) -> Vec<u8> {
    let mut file = vec![0u8; PREAMBLE_LEN];
    file.extend((0..4096u32).map(|i| (i as u8).wrapping_mul(header.first().copied().unwrap_or(1) | 1)));
    let header_offset = file.len() as u64;
    file.extend_from_slice(header);
    let claimed = header.get(..4).map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as u64);
    let pre = Preamble {
        version: FORMAT_VERSION,
        flags: if compressed { FLAG_HEADER_ZSTD } else { 0 },
        header_offset,
        header_len: header.len() as u64,
        header_xxh3: xxhash_rust::xxh3::xxh3_64(header),
        header_json_len: if compressed { claimed } else { 0 },
    };
    file[..PREAMBLE_LEN].copy_from_slice(&pre.to_bytes());
    file
}

fuzz_target!(|data: &[u8]| {
    let bytes = match data.split_first() {
        Some((flag, rest)) if flag % 2 == 1 => as_header_file(rest, flag % 4 == 3),
        _ => data.to_vec(),
    };
    let Ok(dir) = tempfile::tempdir() else { return };
    let path = dir.path().join("fuzz.ember");
    if std::fs::write(&path, &bytes).is_err() {
        return;
    }
    let Ok(file) = ember_codec::Container::open(&path) else { return };
    let _ = file.verify_checksums();
    for t in file.tensors() {
        let _ = file.decode(t);
    }
});
