//! Input checkpoints: one `.safetensors` file, or a Hugging Face model directory (a single
//! `model.safetensors`, or shards listed by `model.safetensors.index.json`, or every
//! `*.safetensors` in the directory). Files are memory-mapped; each shard's header is parsed and
//! validated once at open, and a tensor's bytes are a slice of its map, read on demand.
//! [`Input`] adds GGUF files (see [`crate::gguf_source`]) for `ember compress`.

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context, Result};
use ember_codec::Dtype;
use memmap2::Mmap;
use safetensors::SafeTensors;

/// One tensor of the source, borrowed from its file's map.
pub struct SourceTensor<'a> {
    /// Its name.
    pub name: &'a str,
    /// Its element type.
    pub dtype: Dtype,
    /// Its shape.
    pub shape: &'a [u64],
    /// Its little-endian bytes (empty when it comes as [`SourceTensor::codes`]).
    pub data: &'a [u8],
    /// A GGUF tensor that keeps its own quantized codes and scales instead of being
    /// dequantized (see [`crate::gguf_source::GgufCodes`]); `dtype` is then `F32`.
    pub codes: Option<ember_codec::QuantCodes<'a>>,
    /// A GGUF float tensor kept at its own precision (`--gguf-codes native`): coded `lossless`
    /// whatever the scheme, so it decodes to exactly the GGUF's values.
    pub exact: bool,
}

struct Shard {
    path: PathBuf,
    map: Mmap,
}

/// Where one tensor lives: resolved at open, so a lookup never re-parses a header.
struct Entry {
    name: String,
    dtype: Dtype,
    shape: Vec<u64>,
    shard: usize,
    /// Absolute byte range in the shard's map (already checked by safetensors against the file).
    range: std::ops::Range<usize>,
}

/// An opened checkpoint.
pub struct Source {
    shards: Vec<Shard>,
    /// Tensors in shard order, then file (offset) order within a shard.
    entries: Vec<Entry>,
    by_name: HashMap<String, usize>,
}

/// The shards of `path` and, for a directory with an index, the index's `weight_map`
/// (tensor → shard path) to check the shards against.
type ShardList = (Vec<PathBuf>, Option<(PathBuf, HashMap<String, PathBuf>)>);

fn shard_paths(path: &Path) -> Result<ShardList> {
    if path.is_file() {
        return Ok((vec![path.to_path_buf()], None));
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
        let mut weight_map = HashMap::with_capacity(map.len());
        let mut files = BTreeSet::new();
        for (tensor, file) in map {
            let file = file
                .as_str()
                .with_context(|| format!("{}: weight_map entry `{tensor}` is not a file name", index.display()))?;
            // Shards live inside the model directory; an index must not point elsewhere.
            let rel = Path::new(file);
            if file.is_empty() || !rel.components().all(|c| matches!(c, Component::Normal(_))) {
                bail!("{}: weight_map entry `{tensor}` names `{file}`, not a file in the directory", index.display());
            }
            let shard = path.join(rel);
            files.insert(shard.clone());
            weight_map.insert(tensor.clone(), shard);
        }
        if files.is_empty() {
            bail!("{}: the weight_map lists no tensors", index.display());
        }
        return Ok((files.into_iter().collect(), Some((index, weight_map))));
    }
    let single = path.join("model.safetensors");
    if single.is_file() {
        return Ok((vec![single], None));
    }
    let mut all: Vec<PathBuf> = std::fs::read_dir(path)
        .with_context(|| format!("{}: cannot list", path.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    all.sort();
    if all.is_empty() {
        bail!("{}: no .safetensors files in this directory", path.display());
    }
    Ok((all, None))
}

impl Source {
    /// Opens `path` (a file or a model directory), validates every shard's header and indexes its
    /// tensors. Fails, naming the file and tensor, on a dtype `.ember` cannot store (e.g.
    /// `F8_E4M3`), on a tensor that appears in two shards, and on an index entry whose tensor is
    /// not in the shard the index names.
    pub fn open(path: &Path) -> Result<Self> {
        let (paths, weight_map) = shard_paths(path)?;
        let mut shards = Vec::with_capacity(paths.len());
        let mut entries: Vec<Entry> = Vec::new();
        let mut by_name = HashMap::new();
        for p in paths {
            let file = File::open(&p).with_context(|| format!("{}: cannot open", p.display()))?;
            // SAFETY: read-only map of a checkpoint we do not modify while it is open; like every
            // mmap-based reader we rely on no other process truncating it meanwhile.
            let map = unsafe { Mmap::map(&file) }.with_context(|| format!("{}: cannot map", p.display()))?;
            let (header_len, meta) = SafeTensors::read_metadata(&map)
                .map_err(|e| anyhow::anyhow!("{}: not a valid safetensors file: {e}", p.display()))?;
            // read_metadata checked that the data section ends exactly at the end of the file.
            let data_start = 8 + header_len;
            for name in meta.offset_keys() {
                let info = meta.info(&name).with_context(|| format!("{}: tensor `{name}` vanished", p.display()))?;
                let dtype = Dtype::from_name(&info.dtype.to_string()).with_context(|| {
                    format!("{}: tensor `{name}` has dtype {}, which .ember cannot store", p.display(), info.dtype)
                })?;
                if let Some(&other) = by_name.get(&name) {
                    let first: &Entry = &entries[other];
                    bail!(
                        "{}: tensor `{name}` is also in {}",
                        p.display(),
                        shards.get(first.shard).map_or(p.as_path(), |s: &Shard| s.path.as_path()).display()
                    );
                }
                let (s, e) = info.data_offsets;
                by_name.insert(name.clone(), entries.len());
                entries.push(Entry {
                    name,
                    dtype,
                    shape: info.shape.iter().map(|&d| d as u64).collect(),
                    shard: shards.len(),
                    range: data_start + s..data_start + e,
                });
            }
            shards.push(Shard { path: p, map });
        }
        if let Some((index, weight_map)) = weight_map {
            for (tensor, file) in &weight_map {
                let found = by_name.get(tensor).map(|&i| &shards[entries[i].shard].path);
                if found != Some(file) {
                    bail!(
                        "{}: the index puts tensor `{tensor}` in {}, but it is not there",
                        index.display(),
                        file.display()
                    );
                }
            }
        }
        Ok(Self { shards, entries, by_name })
    }

    /// The tensors, in shard order and file order within a shard.
    pub fn tensors(&self) -> impl Iterator<Item = SourceTensor<'_>> {
        self.entries.iter().map(|e| self.view(e))
    }

    fn view<'a>(&'a self, e: &'a Entry) -> SourceTensor<'a> {
        SourceTensor {
            exact: false,
            name: &e.name,
            dtype: e.dtype,
            shape: &e.shape,
            // The range was validated by safetensors against this very map.
            data: &self.shards[e.shard].map[e.range.clone()],
            codes: None,
        }
    }

    /// Tensor `name`, if the checkpoint has it.
    pub fn get(&self, name: &str) -> Option<SourceTensor<'_>> {
        self.by_name.get(name).map(|&i| self.view(&self.entries[i]))
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Total bytes of tensor data.
    pub fn total_bytes(&self) -> u64 {
        self.entries.iter().map(|e| e.range.len() as u64).sum()
    }
}

/// What `ember compress` reads: a safetensors checkpoint, or a GGUF file (recognised by its
/// `.gguf` extension or its magic bytes) dequantized on the fly.
pub enum Input {
    /// A `.safetensors` file, or a Hugging Face model directory (resolved: for the hub cache
    /// layout, its snapshot), whose config and tokenizer go into the metadata.
    Safetensors {
        /// The weights.
        source: Source,
        /// The model directory, when the input is one.
        dir: Option<PathBuf>,
    },
    /// A GGUF file (boxed: it carries the tokenizer and hyper-parameters).
    Gguf(Box<crate::gguf_source::GgufSource>),
}

/// `path` is a file that starts with the GGUF magic or is named `*.gguf`.
fn is_gguf(path: &Path) -> bool {
    if !path.is_file() {
        return false;
    }
    if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("gguf")) {
        return true;
    }
    let mut magic = [0u8; 4];
    File::open(path).and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic)).is_ok() && &magic == b"GGUF"
}

impl Input {
    /// Opens `path` as GGUF or safetensors.
    pub fn open(path: &Path, gguf_dtype: crate::gguf_source::GgufDtype) -> Result<Self> {
        if is_gguf(path) {
            Ok(Input::Gguf(Box::new(crate::gguf_source::GgufSource::open(path, gguf_dtype)?)))
        } else if path.is_dir() {
            let dir = crate::hf_dir::resolve(path)?;
            Ok(Input::Safetensors { source: Source::open(&dir)?, dir: Some(dir) })
        } else {
            Ok(Input::Safetensors { source: Source::open(path)?, dir: None })
        }
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        match self {
            Input::Safetensors { source, .. } => source.len(),
            Input::Gguf(g) => g.len(),
        }
    }

    /// Bytes of tensor data as handed to the encoder.
    pub fn total_bytes(&self) -> u64 {
        match self {
            Input::Safetensors { source, .. } => source.total_bytes(),
            Input::Gguf(g) => g.total_bytes(),
        }
    }

    /// Extra container metadata the input carries: a model directory's or a GGUF file's config
    /// and tokenizer (none for a lone `.safetensors` file).
    pub fn container_metadata(&self) -> Result<Vec<(&'static str, String)>> {
        match self {
            Input::Safetensors { dir: Some(dir), .. } => crate::hf_dir::metadata(dir),
            Input::Safetensors { dir: None, .. } => Ok(Vec::new()),
            Input::Gguf(g) => g.container_metadata(),
        }
    }

    /// Hands every tensor to `f`, in file order. A GGUF block-quantized matrix for which
    /// `keep_codes(name, shape, type)` holds comes as its own codes ([`SourceTensor::codes`]);
    /// every other tensor comes as values.
    pub fn for_each_tensor(
        &self,
        keep_codes: impl Fn(&str, &[u64], ember_gguf::GgmlType) -> bool,
        mut f: impl FnMut(SourceTensor<'_>) -> Result<()>,
    ) -> Result<()> {
        match self {
            Input::Safetensors { source, .. } => source.tensors().try_for_each(f),
            Input::Gguf(g) => g.for_each_tensor(keep_codes, &mut f),
        }
    }
}
