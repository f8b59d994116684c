//! A streaming safetensors writer: the header is computed from the tensors' shapes and dtypes
//! first, then each tensor's bytes are produced and written one at a time, so memory stays
//! bounded by the largest tensor however large the model.

use std::collections::BTreeMap;
use std::io::Write;

use anyhow::Result;
use ember_codec::Dtype;
use serde_json::json;

/// What the header needs to know of a tensor.
pub struct TensorSpec {
    /// Its name.
    pub name: String,
    /// Its dtype.
    pub dtype: Dtype,
    /// Its shape.
    pub shape: Vec<u64>,
}

/// Writes the 8-byte length and the JSON header (padded with spaces to 8 bytes, as safetensors
/// does) for `tensors` in this order; returns each tensor's expected byte length.
pub fn write_header(
    out: &mut impl Write,
    tensors: &[TensorSpec],
    metadata: &BTreeMap<String, String>,
) -> Result<Vec<u64>> {
    let mut header = serde_json::Map::new();
    if !metadata.is_empty() {
        header.insert("__metadata__".into(), json!(metadata));
    }
    let mut offset = 0u64;
    let mut lens = Vec::with_capacity(tensors.len());
    for t in tensors {
        let len = t.shape.iter().product::<u64>() * t.dtype.size() as u64;
        header.insert(
            t.name.clone(),
            json!({ "dtype": t.dtype.name(), "shape": t.shape, "data_offsets": [offset, offset + len] }),
        );
        offset += len;
        lens.push(len);
    }
    let mut bytes = serde_json::to_vec(&header)?;
    bytes.resize(bytes.len().next_multiple_of(8), b' ');
    out.write_all(&(bytes.len() as u64).to_le_bytes())?;
    out.write_all(&bytes)?;
    Ok(lens)
}
