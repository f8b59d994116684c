//! Input checkpoints: one `.safetensors` file, or a Hugging Face model directory (a single
//! `model.safetensors`, or shards listed by `model.safetensors.index.json`, or every
//! `*.safetensors` in the directory). Files are memory-mapped; tensors are read on demand.

use std::collections::BTreeSet;
use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use ember_codec::Dtype;
use memmap2::Mmap;
use safetensors::SafeTensors;

/// One tensor of the source, borrowed from its file's map.
pub struct SourceTensor<'a> {
    /// Its name.
    pub name: String,
    /// Its element type.
    pub dtype: Dtype,
    /// Its shape.
    pub shape: Vec<u64>,
    /// Its little-endian bytes.
    pub data: &'a [u8],
}

struct Shard {
    path: PathBuf,
    map: Mmap,
}

/// An opened checkpoint.
pub struct Source {
    shards: Vec<Shard>,
    /// (tensor name, shard index), in file order.
    index: Vec<(String, usize)>,
}

fn shard_paths(path: &Path) -> Result<Vec<PathBuf>> {
    if path.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    if !path.is_dir() {
        bail!("{}: no such file or directory", path.display());
    }
    let index = path.join("model.safetensors.index.json");
    if index.is_file() {
        let text = std::fs::read_to_string(&index).with_context(|| format!("{}: cannot read", index.display()))?;
        let json: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("{}: not valid JSON", index.display()))?;
        let map = json
            .get("weight_map")
            .and_then(|m| m.as_object())
            .with_context(|| format!("{}: no `weight_map` object", index.display()))?;
        let files: BTreeSet<&str> = map.values().filter_map(|v| v.as_str()).collect();
        return Ok(files.into_iter().map(|f| path.join(f)).collect());
    }
    let single = path.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    let mut all: Vec<PathBuf> = std::fs::read_dir(path)
        .with_context(|| format!("{}: cannot list", path.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    all.sort();
    if all.is_empty() {
        bail!("{}: no .safetensors files in this directory", path.display());
    }
    Ok(all)
}

impl Source {
    /// Opens `path` (a file or a model directory) and indexes its tensors.
    pub fn open(path: &Path) -> Result<Self> {
        let mut shards = Vec::new();
        let mut index = Vec::new();
        let mut seen = BTreeSet::new();
        for p in shard_paths(path)? {
            let file = File::open(&p).with_context(|| format!("{}: cannot open", p.display()))?;
            // SAFETY: read-only map of a checkpoint we do not modify while it is open.
            let map = unsafe { Mmap::map(&file) }.with_context(|| format!("{}: cannot map", p.display()))?;
            let st = SafeTensors::deserialize(&map)
                .map_err(|e| anyhow::anyhow!("{}: not a valid safetensors file: {e}", p.display()))?;
            let (_, meta) = SafeTensors::read_metadata(&map)
                .map_err(|e| anyhow::anyhow!("{}: not a valid safetensors file: {e}", p.display()))?;
            for name in meta.offset_keys() {
                if !seen.insert(name.clone()) {
                    bail!("{}: tensor `{name}` appears in more than one shard", p.display());
                }
                index.push((name, shards.len()));
            }
            drop(st);
            shards.push(Shard { path: p, map });
        }
        Ok(Self { shards, index })
    }

    /// Tensor names in file order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.index.iter().map(|(n, _)| n.as_str())
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Reads tensor `name`, checking that its dtype is one `.ember` knows.
    pub fn tensor(&self, name: &str) -> Result<SourceTensor<'_>> {
        let &(_, shard) = self
            .index
            .iter()
            .find(|(n, _)| n == name)
            .with_context(|| format!("no tensor named `{name}` in the input"))?;
        let shard = &self.shards[shard];
        let st = SafeTensors::deserialize(&shard.map)
            .map_err(|e| anyhow::anyhow!("{}: not a valid safetensors file: {e}", shard.path.display()))?;
        let view = st.tensor(name).map_err(|e| anyhow::anyhow!("{}: tensor `{name}`: {e}", shard.path.display()))?;
        let dtype = Dtype::from_name(&view.dtype().to_string()).with_context(|| {
            format!("{}: tensor `{name}` has dtype {} which .ember cannot store", shard.path.display(), view.dtype())
        })?;
        Ok(SourceTensor {
            name: name.to_string(),
            dtype,
            shape: view.shape().iter().map(|&d| d as u64).collect(),
            data: view.data(),
        })
    }

    /// Total bytes of tensor data.
    pub fn total_bytes(&self) -> Result<u64> {
        let mut total = 0;
        for name in self.names() {
            total += self.tensor(name)?.data.len() as u64;
        }
        Ok(total)
    }
}
