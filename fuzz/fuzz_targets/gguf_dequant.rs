//! The GGUF dequantizers on arbitrary blocks: for every ggml type, `dequantize` must return the
//! element count asked for or an error (wrong byte count, not whole blocks, no dequantizer) —
//! never panic, read past the bytes given, or allocate more than the elements asked for.
#![no_main]

use ember_gguf::dequant::dequantize;
use ember_gguf::{GgmlType, GgufError};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else { return };
    let Some((&mode, blocks)) = rest.split_first() else { return };
    // Every id 0..64 (the unknown ones are an error from `from_id`).
    let Ok(t) = GgmlType::from_id(sel as u32 % 64) else { return };
    let whole = blocks.len() / t.block_bytes();
    let (bytes, n) = match mode % 4 {
        // Exactly the blocks the bytes hold: must succeed for every type with a dequantizer.
        0 | 1 => (&blocks[..whole * t.block_bytes()], whole * t.block_elems()),
        // Any element count (usually a mismatch, sometimes not whole blocks).
        2 => (blocks, (mode as usize >> 2) * whole.max(1) + (mode as usize & 0x30)),
        // A count far beyond the bytes: the mismatch must be caught before any allocation.
        _ => (blocks, usize::MAX - mode as usize),
    };
    match dequantize(t, bytes, n) {
        Ok(values) => assert_eq!(values.len(), n),
        Err(GgufError::NoDequantizer(_)) => {}
        Err(GgufError::BadBlocks { .. }) if mode % 4 >= 2 => {}
        Err(e) => panic!("{t}: unexpected error for {} bytes, {n} elements: {e}", bytes.len()),
    }
});
