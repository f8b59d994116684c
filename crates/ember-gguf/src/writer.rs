//! A minimal GGUF writer, for tests (enabled by the `writer` feature): synthetic files for this
//! crate's tests and for tools that read GGUF. It writes what [`crate::GgufFile`] reads: header,
//! metadata, tensor descriptions, then each tensor's bytes at the next aligned offset.

use std::path::Path;

use crate::{GgmlType, MetaValue};

/// Builds a GGUF file in memory.
#[derive(Clone, Debug)]
pub struct GgufWriter {
    version: u32,
    alignment: u64,
    metadata: Vec<(String, MetaValue)>,
    tensors: Vec<(String, Vec<usize>, GgmlType, Vec<u8>)>,
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Appends `v`'s encoding (without its type id).
fn put_value(out: &mut Vec<u8>, v: &MetaValue) {
    match v {
        MetaValue::U8(x) => out.push(*x),
        MetaValue::I8(x) => out.push(*x as u8),
        MetaValue::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::Bool(x) => out.push(*x as u8),
        MetaValue::String(s) => put_str(out, s),
        MetaValue::Array(items) => {
            // An empty array is written as an empty u8 array.
            let t = items.first().map_or(0, MetaValue::type_id);
            assert!(items.iter().all(|i| i.type_id() == t), "GgufWriter: mixed array element types");
            out.extend_from_slice(&t.to_le_bytes());
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for i in items {
                put_value(out, i);
            }
        }
        MetaValue::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
    }
}

impl GgufWriter {
    /// An empty file of GGUF `version` (2 and 3 share a layout) with the default alignment.
    pub fn new(version: u32) -> Self {
        GgufWriter { version, alignment: crate::file::DEFAULT_ALIGNMENT, metadata: Vec::new(), tensors: Vec::new() }
    }

    /// Aligns tensor data to `alignment` bytes and records it as `general.alignment`.
    pub fn alignment(&mut self, alignment: u32) -> &mut Self {
        self.alignment = alignment as u64;
        self.kv("general.alignment", MetaValue::U32(alignment))
    }

    /// Adds metadata `key` = `v`.
    pub fn kv(&mut self, key: &str, v: MetaValue) -> &mut Self {
        self.metadata.push((key.to_owned(), v));
        self
    }

    /// Adds a string metadata value.
    pub fn kv_str(&mut self, key: &str, v: &str) -> &mut Self {
        self.kv(key, MetaValue::String(v.to_owned()))
    }

    /// Adds a `u32` metadata value.
    pub fn kv_u32(&mut self, key: &str, v: u32) -> &mut Self {
        self.kv(key, MetaValue::U32(v))
    }

    /// Adds an `f32` metadata value.
    pub fn kv_f32(&mut self, key: &str, v: f32) -> &mut Self {
        self.kv(key, MetaValue::F32(v))
    }

    /// Adds an array-of-strings metadata value.
    pub fn kv_str_array(&mut self, key: &str, v: &[&str]) -> &mut Self {
        self.kv(key, MetaValue::Array(v.iter().map(|s| MetaValue::String(s.to_string())).collect()))
    }

    /// Adds a tensor of row-major `shape` (PyTorch order) whose stored bytes are `data`.
    pub fn tensor(&mut self, name: &str, shape: &[usize], t: GgmlType, data: Vec<u8>) -> &mut Self {
        self.tensors.push((name.to_owned(), shape.to_vec(), t, data));
        self
    }

    /// Adds an `F32` tensor.
    pub fn tensor_f32(&mut self, name: &str, shape: &[usize], values: &[f32]) -> &mut Self {
        self.tensor(name, shape, GgmlType::F32, values.iter().flat_map(|v| v.to_le_bytes()).collect())
    }

    /// The file's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = b"GGUF".to_vec();
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (k, v) in &self.metadata {
            put_str(&mut out, k);
            out.extend_from_slice(&v.type_id().to_le_bytes());
            put_value(&mut out, v);
        }
        let mut offset = 0u64;
        let mut offsets = Vec::new();
        for (name, shape, t, data) in &self.tensors {
            put_str(&mut out, name);
            out.extend_from_slice(&(shape.len() as u32).to_le_bytes());
            for &d in shape.iter().rev() {
                out.extend_from_slice(&(d as u64).to_le_bytes());
            }
            out.extend_from_slice(&t.id().to_le_bytes());
            out.extend_from_slice(&offset.to_le_bytes());
            offsets.push(offset);
            offset = (offset + data.len() as u64).next_multiple_of(self.alignment);
        }
        let data_start = (out.len() as u64).next_multiple_of(self.alignment);
        for ((_, _, _, data), off) in self.tensors.iter().zip(offsets) {
            out.resize((data_start + off) as usize, 0);
            out.extend_from_slice(data);
        }
        out
    }

    /// Writes the file to `path`.
    pub fn write(&self, path: impl AsRef<Path>) -> std::io::Result<()> {
        std::fs::write(path, self.to_bytes())
    }
}
