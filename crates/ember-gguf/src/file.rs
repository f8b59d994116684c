//! [`GgufFile`]: a memory-mapped GGUF v2/v3 file whose header is parsed and checked once, at
//! open. After `open` succeeds every tensor's byte range lies inside the file, is aligned, does
//! not overlap another, and holds a whole number of blocks; reading a tensor cannot fail on
//! bounds again.
//!
//! Layout (all little-endian): `"GGUF"`, `u32` version, `u64` tensor count, `u64` metadata
//! count, the metadata key/values, the tensor descriptions (name, `u32` n_dims, `u64 ne[n_dims]`
//! innermost first, `u32` ggml type, `u64` offset from the data section), padding to
//! `general.alignment` (default 32), the data section.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::cursor::Cursor;
use crate::{dequant, GgmlType, GgufError, MetaValue};

/// ggml tensors have at most four dimensions (`GGML_MAX_DIMS`).
pub const MAX_DIMS: usize = 4;
/// Data alignment when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;

/// One tensor's description.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    /// Its GGUF name (`blk.0.attn_q.weight`).
    pub name: String,
    /// Row-major shape, outermost first (PyTorch order; GGUF's `ne` reversed).
    pub shape: Vec<usize>,
    /// How its elements are stored.
    pub ggml_type: GgmlType,
    /// Byte offset of its data from the start of the data section.
    pub offset: u64,
}

impl TensorInfo {
    /// Number of elements (the product of the shape; 1 for a scalar).
    pub fn n_elems(&self) -> u64 {
        self.shape.iter().map(|&d| d as u64).product()
    }

    /// Bytes of its data, or `None` if the shape does not hold whole blocks or overflows.
    pub fn n_bytes(&self) -> Option<u64> {
        let mut n: u64 = 1;
        for &d in &self.shape {
            n = n.checked_mul(d as u64)?;
        }
        self.ggml_type.bytes_for(n)
    }
}

/// An opened, validated GGUF file.
pub struct GgufFile {
    path: PathBuf,
    map: Mmap,
    version: u32,
    metadata: BTreeMap<String, MetaValue>,
    tensors: Vec<TensorInfo>,
    by_name: HashMap<String, usize>,
    /// Absolute offset of the data section.
    data_start: u64,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("metadata_keys", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl GgufFile {
    /// Maps `path` and validates its header and every tensor's byte range.
    pub fn open(path: impl AsRef<Path>) -> Result<GgufFile, GgufError> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).map_err(|e| GgufError::io(&path, "cannot open", e))?;
        // SAFETY: a read-only map of a file we never write; like every mmap-based reader we rely
        // on no other process truncating it while it is open.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| GgufError::io(&path, "cannot map", e))?;
        let header = parse(&map, &path)?;
        let by_name = header.tensors.iter().enumerate().map(|(i, t)| (t.name.clone(), i)).collect();
        Ok(GgufFile {
            path,
            map,
            version: header.version,
            metadata: header.metadata,
            tensors: header.tensors,
            by_name,
            data_start: header.data_start,
        })
    }

    /// The path it was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The GGUF version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// All metadata, by key.
    pub fn metadata(&self) -> &BTreeMap<String, MetaValue> {
        &self.metadata
    }

    /// Metadata value `key`, if present.
    pub fn meta(&self, key: &str) -> Option<&MetaValue> {
        self.metadata.get(key)
    }

    /// `general.architecture` (`llama`, `qwen2`...), if present.
    pub fn architecture(&self) -> Option<&str> {
        self.meta("general.architecture").and_then(MetaValue::as_str)
    }

    /// The tensors, in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// Absolute byte offset of the data section.
    pub fn data_start(&self) -> u64 {
        self.data_start
    }

    /// The tensor called `name`.
    pub fn tensor(&self, name: &str) -> Result<&TensorInfo, GgufError> {
        self.by_name
            .get(name)
            .map(|&i| &self.tensors[i])
            .ok_or_else(|| GgufError::NoTensor { path: self.path.clone(), tensor: name.to_owned() })
    }

    /// The stored bytes of `t`. Descriptions from [`GgufFile::tensors`] were checked at open;
    /// one built by hand is checked again here.
    pub fn raw_bytes(&self, t: &TensorInfo) -> Result<&[u8], GgufError> {
        let bad = |msg: String| GgufError::BadTensor { path: self.path.clone(), tensor: t.name.clone(), msg };
        let n = t.n_bytes().ok_or_else(|| bad(format!("shape {:?} is not whole {} blocks", t.shape, t.ggml_type)))?;
        let start = self.data_start.checked_add(t.offset);
        let end = start.and_then(|s| s.checked_add(n));
        match (start, end) {
            (Some(s), Some(e)) if e <= self.map.len() as u64 => Ok(&self.map[s as usize..e as usize]),
            _ => Err(bad(format!(
                "data at offset {} (+{n} bytes) runs past the end of the file ({} bytes)",
                t.offset,
                self.map.len()
            ))),
        }
    }

    /// Tensor `name` as row-major `f32` values (see [`dequant::dequantize`]).
    pub fn dequantize(&self, name: &str) -> Result<Vec<f32>, GgufError> {
        self.with_blocks(name, dequant::dequantize)
    }

    /// Tensor `name` as its `Q4_0`/`Q4_1`/`Q8_0`/`Q5_0`/`Q4_K`/`Q6_K` codes and side data (see
    /// [`crate::codes`]), or `None` when it has another type.
    pub fn block_codes(&self, name: &str) -> Result<Option<crate::BlockCodes>, GgufError> {
        self.with_blocks(name, crate::codes::block_codes)
    }

    /// Runs `read` on tensor `name`'s type, stored bytes and element count; its error is
    /// wrapped with the file and tensor.
    fn with_blocks<T>(
        &self,
        name: &str,
        read: impl FnOnce(GgmlType, &[u8], usize) -> Result<T, GgufError>,
    ) -> Result<T, GgufError> {
        let t = self.tensor(name)?;
        let bytes = self.raw_bytes(t)?;
        let n = usize::try_from(t.n_elems()).map_err(|_| GgufError::BadTensor {
            path: self.path.clone(),
            tensor: t.name.clone(),
            msg: "too many elements for this machine".into(),
        })?;
        read(t.ggml_type, bytes, n).map_err(|e| GgufError::InTensor {
            path: self.path.clone(),
            tensor: t.name.clone(),
            source: Box::new(e),
        })
    }
}

/// What the header says, checked against the file.
struct Header {
    version: u32,
    metadata: BTreeMap<String, MetaValue>,
    tensors: Vec<TensorInfo>,
    data_start: u64,
}

fn parse(bytes: &[u8], path: &Path) -> Result<Header, GgufError> {
    let mut c = Cursor::new(bytes, path);
    let magic = c.take(4, "magic")?;
    if magic != b"GGUF" {
        return Err(GgufError::Unsupported {
            path: path.to_path_buf(),
            msg: format!("not a GGUF file (starts with {magic:02x?}, \"GGUF\" expected)"),
        });
    }
    let version = c.u32("version")?;
    if version != 2 && version != 3 {
        let msg = if version.swap_bytes() == 2 || version.swap_bytes() == 3 {
            "a big-endian GGUF file; only little-endian files are supported".to_string()
        } else {
            format!("GGUF version {version}; only versions 2 and 3 are supported")
        };
        return Err(GgufError::Unsupported { path: path.to_path_buf(), msg });
    }
    // Smallest tensor description: empty name (8) + n_dims (4) + type (4) + offset (8).
    let n_tensors = c.count(24, "tensor count")?;
    // Smallest key/value: empty key (8) + type (4) + a one-byte value.
    let n_kv = c.count(13, "metadata count")?;

    let mut metadata = BTreeMap::new();
    for _ in 0..n_kv {
        let at = c.pos();
        let key = c.string("metadata key")?;
        let t = c.u32("metadata value type")?;
        let value = MetaValue::read(&mut c, t, 0)?;
        if metadata.insert(key.clone(), value).is_some() {
            return Err(GgufError::Malformed {
                path: path.to_path_buf(),
                offset: at as u64,
                msg: format!("metadata key `{key}` appears twice"),
            });
        }
    }

    let alignment = match metadata.get("general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some(v) => match v.as_u32() {
            Some(a) if a.is_power_of_two() => a as u64,
            _ => {
                return Err(GgufError::Metadata {
                    path: path.to_path_buf(),
                    key: "general.alignment".into(),
                    msg: format!("{v:?} is not a power-of-two u32"),
                })
            }
        },
    };

    let mut tensors: Vec<TensorInfo> = Vec::with_capacity(n_tensors);
    let mut names = HashMap::with_capacity(n_tensors);
    for _ in 0..n_tensors {
        let at = c.pos();
        let name = c.string("tensor name")?;
        let bad = |msg: String| GgufError::BadTensor { path: path.to_path_buf(), tensor: name.clone(), msg };
        let n_dims = c.u32("tensor n_dims")? as usize;
        if n_dims > MAX_DIMS {
            return Err(bad(format!("{n_dims} dimensions (at most {MAX_DIMS})")));
        }
        let mut ne = [1u64; MAX_DIMS];
        for d in ne.iter_mut().take(n_dims) {
            *d = c.u64("tensor dimension")?;
        }
        let type_id = c.u32("tensor type")?;
        let offset = c.u64("tensor offset")?;
        let ggml_type = GgmlType::from_id(type_id).map_err(|e| bad(e.to_string()))?;
        let mut n_elems: u64 = 1;
        for &d in &ne[..n_dims] {
            n_elems = n_elems
                .checked_mul(d)
                .filter(|&n| n <= i64::MAX as u64)
                .ok_or_else(|| bad(format!("dimensions {:?} overflow", &ne[..n_dims])))?;
        }
        if ne[0] % ggml_type.block_elems() as u64 != 0 {
            return Err(bad(format!(
                "rows of {} elements are not whole {ggml_type} blocks of {}",
                ne[0],
                ggml_type.block_elems()
            )));
        }
        let shape = ne[..n_dims]
            .iter()
            .rev()
            .map(|&d| usize::try_from(d))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| bad("a dimension does not fit this machine's usize".into()))?;
        if offset % alignment != 0 {
            return Err(bad(format!("offset {offset} is not a multiple of the alignment {alignment}")));
        }
        if names.insert(name.clone(), at).is_some() {
            return Err(GgufError::Malformed {
                path: path.to_path_buf(),
                offset: at as u64,
                msg: format!("tensor `{name}` appears twice"),
            });
        }
        tensors.push(TensorInfo { name, shape, ggml_type, offset });
    }

    let data_start = (c.pos() as u64).next_multiple_of(alignment);
    let file_len = bytes.len() as u64;
    // (start, end, index) of every tensor's data, to check bounds and overlaps.
    let mut ranges = Vec::with_capacity(tensors.len());
    for (i, t) in tensors.iter().enumerate() {
        let bad = |msg: String| GgufError::BadTensor { path: path.to_path_buf(), tensor: t.name.clone(), msg };
        let n = t.n_bytes().ok_or_else(|| bad("size overflows".into()))?;
        let start = data_start.checked_add(t.offset);
        match start.and_then(|s| s.checked_add(n)) {
            Some(end) if end <= file_len => ranges.push((start.unwrap_or(0), end, i)),
            _ => {
                return Err(bad(format!(
                    "data at offset {} (+{n} bytes from the data section at {data_start}) runs past the end of the file ({file_len} bytes)",
                    t.offset
                )))
            }
        }
    }
    ranges.sort_unstable();
    for w in ranges.windows(2) {
        if w[1].0 < w[0].1 {
            return Err(GgufError::BadTensor {
                path: path.to_path_buf(),
                tensor: tensors[w[1].2].name.clone(),
                msg: format!("data overlaps tensor `{}`", tensors[w[0].2].name),
            });
        }
    }
    Ok(Header { version, metadata, tensors, data_start })
}
