//! Streaming, atomic writer: tensors go to a temporary file in the target's folder as they are
//! encoded; `finish` appends the header (zstd-compressed unless asked not to), fills in the
//! preamble, fsyncs and renames. A run killed at any point leaves the target name untouched.

use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use tempfile::NamedTempFile;
use xxhash_rust::xxh3::xxh3_64;

use super::header::align_data;
use super::index::encode_header;
use super::{
    BlobRef, Header, Preamble, TensorEntry, TileRef, COMPRESSED_HEADER_VERSION, FLAG_HEADER_ZSTD, PREAMBLE_LEN,
};
use crate::schemes::EncodedTensor;
use crate::{CodecError, Result};

/// Writes an `.ember` file tensor by tensor.
///
/// ```
/// use ember_codec::{ContainerWriter, Container, Dtype, SchemeKind, EncodeOptions, encode_tensor};
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("w.ember");
/// let data: Vec<u8> = (0..64u16).flat_map(|i| half::bf16::from_f32(i as f32 * 0.01).to_bits().to_le_bytes()).collect();
/// let mut w = ContainerWriter::create(&path)?;
/// w.add(encode_tensor("w", Dtype::BF16, &[8, 8], &data, SchemeKind::Lossless, &EncodeOptions::default())?)?;
/// w.finish()?;
/// let c = Container::open(&path)?;
/// assert_eq!(c.decode(c.get("w")?)?.data, data);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct ContainerWriter {
    path: PathBuf,
    tmp: NamedTempFile,
    out: BufWriter<File>,
    pos: u64,
    header: Header,
    compress_header: bool,
}

impl ContainerWriter {
    /// Starts a container that will appear at `path` when [`ContainerWriter::finish`] succeeds.
    pub fn create(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let prefix = format!(".{}.", path.file_name().and_then(|n| n.to_str()).unwrap_or("ember"));
        let tmp = tempfile::Builder::new()
            .prefix(&prefix)
            .suffix(".tmp")
            .tempfile_in(&dir)
            .map_err(|e| CodecError::io(&path, e))?;
        let file = tmp.reopen().map_err(|e| CodecError::io(&path, e))?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        out.write_all(&[0u8; PREAMBLE_LEN]).map_err(|e| CodecError::io(&path, e))?;
        Ok(Self { path, tmp, out, pos: PREAMBLE_LEN as u64, header: Header::default(), compress_header: true })
    }

    /// Stores the header as plain JSON instead of zstd-compressed: the file then carries the
    /// lowest version its tensors need (2, 3 or 4) and reads in builds that predate version 5.
    pub fn plain_header(&mut self) -> &mut Self {
        self.compress_header = false;
        self
    }

    /// Records a metadata key (e.g. the source file).
    pub fn set_metadata(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.header.metadata.insert(key.into(), value.into());
    }

    fn write_at_alignment(&mut self, bytes: &[u8], align64: bool) -> Result<u64> {
        let start = if align64 { align_data(self.pos) } else { self.pos.next_multiple_of(4) };
        let pad = (start - self.pos) as usize;
        self.out
            .write_all(&[0u8; 64][..pad])
            .and_then(|_| self.out.write_all(bytes))
            .map_err(|e| CodecError::io(&self.path, e))?;
        self.pos = start + bytes.len() as u64;
        Ok(start)
    }

    /// Appends an encoded tensor; its first tile starts 64-byte aligned.
    pub fn add(&mut self, t: EncodedTensor) -> Result<&TensorEntry> {
        if self.header.tensors.iter().any(|e| e.name == t.name) {
            return Err(CodecError::Usage(format!("{}: tensor `{}` added twice", self.path.display(), t.name)));
        }
        let mut tiles = Vec::with_capacity(t.tiles.len());
        for (i, (span, payload)) in t.tiles.iter().enumerate() {
            let offset = self.write_at_alignment(payload, i == 0)?;
            tiles.push(TileRef {
                offset,
                len: payload.len() as u64,
                start: span.start,
                count: span.count,
                xxh3: xxh3_64(payload),
            });
        }
        let scales = match &t.scales {
            Some(s) => {
                Some(BlobRef { offset: self.write_at_alignment(s, true)?, len: s.len() as u64, xxh3: xxh3_64(s) })
            }
            None => None,
        };
        self.header.tensors.push(TensorEntry {
            name: t.name,
            dtype: t.dtype,
            shape: t.shape,
            scheme: t.scheme,
            tiles,
            scales,
            entropy_bound_bytes: t.entropy_bound_bytes,
        });
        Ok(self.header.tensors.last().expect("just pushed"))
    }

    /// Writes the header and the preamble, syncs, and renames the file into place.
    /// Returns the file's length.
    pub fn finish(mut self) -> Result<u64> {
        let json = serde_json::to_vec(&self.header)
            .map_err(|e| CodecError::BadHeader { path: self.path.clone(), reason: e.to_string() })?;
        let (header, flags, header_json_len) =
            encode_header(json, self.compress_header).map_err(|e| CodecError::io(&self.path, e))?;
        let header_offset = self.write_at_alignment(&header, true)?;
        let version = match flags & FLAG_HEADER_ZSTD {
            0 => self.header.min_version(),
            _ => self.header.min_version().max(COMPRESSED_HEADER_VERSION),
        };
        let preamble = Preamble {
            version,
            flags,
            header_offset,
            header_len: header.len() as u64,
            header_xxh3: xxh3_64(&header),
            header_json_len,
        };
        let io = |e| CodecError::io(&self.path, e);
        self.out.flush().map_err(io)?;
        let mut file = self.out.into_inner().map_err(|e| CodecError::io(&self.path, e.into_error()))?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        file.write_all(&preamble.to_bytes()).map_err(io)?;
        file.sync_all().map_err(io)?;
        drop(file);
        // The temporary file is created private (0600); the finished container is an ordinary
        // file, readable like any other the user writes.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            self.tmp.as_file().set_permissions(std::fs::Permissions::from_mode(0o644)).map_err(io)?;
        }
        self.tmp.persist(&self.path).map_err(|e| CodecError::io(&self.path, e.error))?;
        if let Some(dir) = self.path.parent().filter(|p| !p.as_os_str().is_empty()) {
            // Make the rename itself durable; not all platforms allow syncing a directory.
            let _ = File::open(dir).and_then(|d| d.sync_all());
        }
        Ok(self.pos)
    }
}
