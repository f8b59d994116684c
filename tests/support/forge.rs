//! Crafting `.ember` files the way an attacker would: edit a tile's bytes, then recompute its
//! XXH3 and the header's, so the checksums pass and only the decoders' own checks stand between
//! the file and the model. Shared by the crates' integration tests (`#[path]`-included).

use std::path::Path;

use ember_codec::container::index::{read_header_json, replace_header_json};

/// `bytes` (a whole `.ember` file) with tile `tile` of `tensor` edited by `edit` and every
/// checksum recomputed.
pub fn forge_tile(bytes: &[u8], tensor: &str, tile: usize, edit: impl FnOnce(&mut [u8])) -> Vec<u8> {
    let name = Path::new("forged.ember");
    let json = read_header_json(name, bytes).expect("a valid header");
    let mut header: serde_json::Value = serde_json::from_slice(&json).expect("a JSON header");
    let mut out = bytes.to_vec();
    let entry = header["tensors"]
        .as_array_mut()
        .expect("a tensor list")
        .iter_mut()
        .find(|t| t["name"] == tensor)
        .unwrap_or_else(|| panic!("no tensor `{tensor}` in the file"));
    let r = &mut entry["tiles"][tile];
    let (offset, len) = (r[0].as_u64().expect("offset") as usize, r[1].as_u64().expect("len") as usize);
    edit(&mut out[offset..offset + len]);
    r[4] = serde_json::json!(xxhash_rust::xxh3::xxh3_64(&out[offset..offset + len]));
    let new_header = serde_json::to_vec(&header).expect("serialisable");
    replace_header_json(name, &out, &new_header).expect("a rewritable file")
}

/// Sets every lane's start state of a coded tile with `lanes` lanes to `state`.
pub fn set_states(payload: &mut [u8], lanes: usize, state: u32) {
    for s in payload[..4 * lanes].chunks_exact_mut(4) {
        s.copy_from_slice(&state.to_le_bytes());
    }
}

/// Adds one to lane 0's start state (still a valid state): the lane then decodes other symbols
/// and cannot end back at the initial state — only a decode can tell.
pub fn nudge_first_state(payload: &mut [u8]) {
    let s = u32::from_le_bytes([payload[0], payload[1], payload[2], payload[3]]);
    payload[..4].copy_from_slice(&s.wrapping_add(1).max(1 << 16).to_le_bytes());
}
