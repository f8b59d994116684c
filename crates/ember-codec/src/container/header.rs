//! The JSON header: the tensor index, validated against the file before use.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};

use super::{DATA_ALIGN, MAX_EXPANSION, MAX_TENSOR_ELEMS};
use crate::bitpack::packed_len;
use crate::dtype::Dtype;
use crate::rans::FrequencyTable;
use crate::schemes::{QuantKind, Scheme, MAX_SUPER_BLOCKS, MAX_SUPER_BLOCK_LEN};
use crate::tile::{MAX_LANES, MAX_TILE_ELEMS};

/// The whole header.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Header {
    /// Tensors in file order.
    pub tensors: Vec<TensorEntry>,
    /// Free-form string metadata (producer, source file, ...).
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

/// One tensor's entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TensorEntry {
    /// Name, unique in the file (the source checkpoint's key).
    pub name: String,
    /// The element type of the original tensor.
    pub dtype: Dtype,
    /// The shape, row-major.
    pub shape: Vec<u64>,
    /// How the tensor is coded.
    pub scheme: Scheme,
    /// Tiles in element order.
    pub tiles: Vec<TileRef>,
    /// Quantisation side data, for `int8` and `int4`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scales: Option<BlobRef>,
    /// Order-0 entropy bound of the data in bytes, measured by the encoder.
    pub entropy_bound_bytes: u64,
}

/// Where a tile is and what it holds. Stored as `[offset, len, start, count, xxh3]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "[u64; 5]", into = "[u64; 5]")]
pub struct TileRef {
    /// Absolute byte offset in the file (4-byte aligned).
    pub offset: u64,
    /// Payload length in bytes.
    pub len: u64,
    /// First element.
    pub start: u64,
    /// Number of elements.
    pub count: u64,
    /// XXH3-64 of the payload.
    pub xxh3: u64,
}

impl From<[u64; 5]> for TileRef {
    fn from(a: [u64; 5]) -> Self {
        Self { offset: a[0], len: a[1], start: a[2], count: a[3], xxh3: a[4] }
    }
}

impl From<TileRef> for [u64; 5] {
    fn from(t: TileRef) -> Self {
        [t.offset, t.len, t.start, t.count, t.xxh3]
    }
}

/// A checksummed byte range of the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRef {
    /// Absolute byte offset.
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
    /// XXH3-64 of the bytes.
    pub xxh3: u64,
}

impl TensorEntry {
    /// Number of elements.
    pub fn elements(&self) -> u64 {
        self.shape.iter().product()
    }

    /// Bytes of the original tensor.
    pub fn original_bytes(&self) -> u64 {
        self.elements() * self.dtype.size() as u64
    }

    /// Bytes of tile payloads and side data in the file.
    pub fn stored_bytes(&self) -> u64 {
        self.tiles.iter().map(|t| t.len).sum::<u64>() + self.scales.map_or(0, |s| s.len)
    }

    /// The element type decoded data has (see [`Scheme::decoded_dtype`]).
    pub fn decoded_dtype(&self) -> Dtype {
        self.scheme.decoded_dtype(self.dtype)
    }

    /// The quantisation kind, for `int8`/`int4` tensors.
    pub fn quant_kind(&self) -> Option<QuantKind> {
        match self.scheme {
            Scheme::Int8 { block: None, .. } => Some(QuantKind::Int8),
            Scheme::Int8 { block: Some(block), super_blocks: None, .. } => {
                Some(QuantKind::Int8Blocks { block: block as usize })
            }
            Scheme::Int8 { block: Some(block), super_blocks: Some(s), .. } => {
                Some(QuantKind::Int8Super { block: block as usize, blocks: s as usize })
            }
            Scheme::Int4 { block, asymmetric: false, .. } => Some(QuantKind::Int4Symmetric { block: block as usize }),
            Scheme::Int4 { block, asymmetric: true, super_blocks: None, .. } => {
                Some(QuantKind::Int4Asymmetric { block: block as usize })
            }
            Scheme::Int4 { block, asymmetric: true, super_blocks: Some(s), .. } => {
                Some(QuantKind::Int4Super { block: block as usize, blocks: s as usize })
            }
            _ => None,
        }
    }

    /// The frequency table of a coded tensor.
    pub fn frequency_table(&self) -> Result<Option<FrequencyTable>, String> {
        self.scheme.coder().map(|c| FrequencyTable::from_freqs(c.freqs.clone(), c.prob_bits)).transpose()
    }

    /// Checks everything the decoder relies on against a file of `file_len` bytes.
    pub fn validate(&self, file_len: u64) -> Result<(), String> {
        self.validate_version(file_len, super::FORMAT_VERSION)
    }

    /// [`TensorEntry::validate`] for a file of format `version`: version 1 has no joint
    /// `lossless` fields.
    pub fn validate_version(&self, file_len: u64, version: u32) -> Result<(), String> {
        if version < 3 && matches!(self.scheme, Scheme::Int8 { block: Some(_), .. }) {
            return Err(format!("a version-{version} file cannot use the version-3 `int8` field `block`"));
        }
        if version < 4 && self.scheme.super_blocks().is_some() {
            return Err(format!("a version-{version} file cannot use the version-4 field `super`"));
        }
        if version < 5 && self.scheme.coder().is_some_and(|c| c.lane_table == crate::tile::LaneTable::Counts8) {
            return Err(format!("a version-{version} file cannot use the version-5 lane table `counts8`"));
        }
        if version < 2 {
            if let Scheme::Lossless { joint_bits, symbols, .. } = &self.scheme {
                if *joint_bits != 0 || symbols.is_some() {
                    return Err(
                        "a version-1 file cannot use the version-2 lossless fields `joint_bits`/`symbols`".into()
                    );
                }
            }
            if self.scheme.coder().is_some_and(|c| c.lane_table != crate::tile::LaneTable::Ends32) {
                return Err("a version-1 file cannot use the version-2 `lane_table`".into());
            }
        }
        let n = self
            .shape
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d))
            .filter(|&n| n <= MAX_TENSOR_ELEMS)
            .ok_or_else(|| format!("shape {:?} has too many elements", self.shape))?;
        if self.scheme.coder().is_some() && self.dtype.float_layout().is_none() {
            return Err(format!("scheme {} needs a float dtype, not {}", self.scheme.kind(), self.dtype));
        }
        if let Some(c) = self.scheme.coder() {
            if !c.lanes.is_power_of_two() || c.lanes > MAX_LANES {
                return Err(format!("{} lanes (a power of two up to {MAX_LANES} expected)", c.lanes));
            }
            let alphabet = self.scheme.alphabet(self.dtype).unwrap_or(0);
            if c.freqs.len() != alphabet {
                return Err(format!("frequency table has {} entries, expected {alphabet}", c.freqs.len()));
            }
            self.frequency_table()?;
        }
        if let (Scheme::Lossless { joint_bits, symbols, .. }, Some(l)) = (&self.scheme, self.dtype.float_layout()) {
            match symbols {
                Some(values) => crate::schemes::check_symbols(l, *joint_bits, values)?,
                None if *joint_bits != 0 => return Err("joint_bits without a symbol list".into()),
                None => {}
            }
        }
        if let Scheme::Int8 { block: Some(0), .. } = self.scheme {
            return Err("int8 block length 0".into());
        }
        if let Scheme::Int4 { block, .. } = self.scheme {
            if block == 0 {
                return Err("int4 block length 0".into());
            }
        }
        if let Some(s) = self.scheme.super_blocks() {
            match self.scheme {
                Scheme::Int8 { block: None, .. } => return Err("int8 `super` without `block`".into()),
                Scheme::Int4 { asymmetric: false, .. } => return Err("symmetric int4 with `super`".into()),
                _ => {}
            }
            if !(2..=MAX_SUPER_BLOCKS).contains(&s) || s % 2 != 0 {
                return Err(format!("{s} blocks per super-block (an even number from 2 to {MAX_SUPER_BLOCKS})"));
            }
            if self.scheme.block().is_some_and(|b| b > MAX_SUPER_BLOCK_LEN) {
                return Err(format!("super-blocks of blocks longer than {MAX_SUPER_BLOCK_LEN}"));
            }
        }
        let in_file = |what: &str, offset: u64, len: u64| -> Result<(), String> {
            match offset.checked_add(len) {
                Some(end) if offset >= super::PREAMBLE_LEN as u64 && end <= file_len => Ok(()),
                _ => Err(format!(
                    "{what} at bytes {offset}..{} lies outside the file ({file_len} bytes)",
                    offset.saturating_add(len)
                )),
            }
        };
        let mut next = 0u64;
        for (i, t) in self.tiles.iter().enumerate() {
            if t.start != next || t.count == 0 || t.count > MAX_TILE_ELEMS {
                return Err(format!(
                    "tile {i} covers elements {}..+{} but should start at {next} with 1..={MAX_TILE_ELEMS} elements",
                    t.start, t.count
                ));
            }
            next += t.count;
            if next > n {
                return Err(format!("tiles cover more than the {n} elements of the shape"));
            }
            if t.offset % 4 != 0 {
                return Err(format!("tile {i} offset {} is not 4-byte aligned", t.offset));
            }
            in_file(&format!("tile {i}"), t.offset, t.len)?;
            let fixed =
                |c: &crate::schemes::RansParams| 4 * c.lanes as u64 + c.lane_table.bytes(c.lanes as usize) as u64;
            if let Some(c) = self.scheme.coder() {
                if !c.lane_table.fits(t.count, c.lanes as u64) {
                    return Err(format!(
                        "tile {i}: {} elements over {} lanes do not fit 16-bit lane counts",
                        t.count, c.lanes
                    ));
                }
            }
            let min_len = match (&self.scheme, self.dtype.float_layout()) {
                (Scheme::Raw, _) => t.count * self.dtype.size() as u64,
                (Scheme::Lossless { coder, joint_bits, .. }, Some(l)) => {
                    fixed(coder) + packed_len(t.count as usize, l.joint_raw_bits(*joint_bits)) as u64
                }
                (s, _) => s.coder().map_or(0, fixed),
            };
            if t.len < min_len {
                return Err(format!("tile {i} has {} bytes, at least {min_len} needed", t.len));
            }
        }
        if next != n {
            return Err(format!("tiles cover {next} of the {n} elements"));
        }
        match (self.quant_kind(), self.scales) {
            (Some(q), Some(s)) => {
                let expected = q.scales_len(&self.shape);
                if s.len != expected {
                    return Err(format!("scales have {} bytes, expected {expected}", s.len));
                }
                in_file("scales", s.offset, s.len)?;
            }
            (Some(_), None) => return Err("quantised tensor without scales".into()),
            (None, Some(_)) => return Err("scales on a tensor that is not quantised".into()),
            (None, None) => {}
        }
        if self.stored_bytes() < n.div_ceil(MAX_EXPANSION) {
            return Err(format!(
                "{} stored bytes cannot hold {n} elements (at most {MAX_EXPANSION} per byte)",
                self.stored_bytes()
            ));
        }
        Ok(())
    }
}

impl Header {
    /// The lowest format version that holds every tensor: 5 when a tensor has `counts8` lane
    /// tables, 4 when one has super-blocks, 3 when an `int8` tensor has per-block scales, else 2.
    pub fn min_version(&self) -> u32 {
        let blocks = self.tensors.iter().any(|t| matches!(t.scheme, Scheme::Int8 { block: Some(_), .. }));
        let tables = self.tensors.iter().filter_map(|t| t.scheme.coder()).map(|c| c.lane_table.min_version());
        if let Some(v) = tables.max().filter(|&v| v > 4) {
            v
        } else if self.tensors.iter().any(|t| t.scheme.super_blocks().is_some()) {
            4
        } else if blocks {
            3
        } else {
            2
        }
    }

    /// Checks names are unique and every tensor is consistent with a file of `file_len` bytes.
    pub fn validate(&self, file_len: u64) -> Result<(), (Option<String>, String)> {
        self.validate_version(file_len, super::FORMAT_VERSION)
    }

    /// [`Header::validate`] for a file of format `version`.
    pub fn validate_version(&self, file_len: u64, version: u32) -> Result<(), (Option<String>, String)> {
        let mut names = HashSet::new();
        for t in &self.tensors {
            if !names.insert(t.name.as_str()) {
                return Err((None, format!("tensor name `{}` appears twice", t.name)));
            }
            t.validate_version(file_len, version).map_err(|e| (Some(t.name.clone()), e))?;
        }
        Ok(())
    }
}

/// Rounds `pos` up to the data alignment.
pub(crate) fn align_data(pos: u64) -> u64 {
    pos.next_multiple_of(DATA_ALIGN)
}
