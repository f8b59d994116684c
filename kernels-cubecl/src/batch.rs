//! Host side of a decode launch: the tiles of one or more tensors gathered into the flat `u32`
//! buffers the kernel reads, with one descriptor per tile.
//!
//! Building a batch is where safety is established: every tile's checksum is verified by the
//! container, and every tile's structure (lane states, lane ends, raw area, payload length) is
//! checked against its payload before a byte is uploaded. What only a decode can tell — that
//! every lane consumes exactly its words and ends back at the initial state — is checked once
//! per batch by [`crate::op::validate_batch`] / [`crate::op::UploadedBatch::validate`], on the
//! device that will decode it, before the batch is used.
//! Tensors of one block (e.g. a transformer layer) share a batch — and so one launch — when they
//! share a kernel scheme and lane count.

use ember_codec::dtype::Dtype;
use ember_codec::schemes::Scheme;
use ember_codec::tile::{read_coded_tile, rows_cols, LaneTable};
use ember_codec::{bitpack, Container, TensorEntry};

use crate::error::KernelError;

/// Words per tile descriptor.
pub const DESC_WORDS: usize = 10;
/// Words of shared memory reserved for the slot table (`2^12`, the format's largest).
pub const TABLE_CAPACITY: usize = 1 << ember_codec::rans::MAX_PROB_BITS;

/// Positions of the fields in a tile descriptor.
pub mod desc {
    /// First word of the tile's payload in the data buffer.
    pub const PAYLOAD: usize = 0;
    /// Elements in the tile.
    pub const COUNT: usize = 1;
    /// Element offset of the tile's first output (in the output buffer).
    pub const OUT: usize = 2;
    /// First word of the tensor's slot table.
    pub const TABLE: usize = 3;
    /// Probability precision.
    pub const PROB_BITS: usize = 4;
    /// First word of the tensor's scales.
    pub const SCALES: usize = 5;
    /// Element index of the tile's first element within its tensor.
    pub const START: usize = 6;
    /// The tensor's last dimension.
    pub const COLS: usize = 7;
    /// The `int4` (or block-scaled `int8`) block length; for the super-block schemes the block
    /// length in bits 0..16 and the blocks per super-block in bits 16..32 (see [`pack_block`]).
    pub const BLOCK: usize = 8;
    /// Bits 0..8: `lossless` joint mantissa bits; bits 8..17: the number of symbols (their
    /// values follow the slot table in the tables buffer); bits 17..19: the lane table
    /// ([`LANE_TABLE_SHIFT`]).
    pub const SYMBOLS: usize = 9;
    /// Where [`SYMBOLS`] holds the tiles' lane table, as [`ember_codec::tile::LaneTable::code`]
    /// (0 `ends32`, 1 `counts16`, 2 `counts8`), two bits.
    pub const LANE_TABLE_SHIFT: u32 = 17;

    /// The [`BLOCK`] word of a tensor with blocks of `block` elements, `blocks` per super-block
    /// (1 without super-blocks). The format bounds a super-block's block length to 16 bits.
    pub fn pack_block(block: u32, blocks: u32) -> u32 {
        if blocks > 1 {
            (block & 0xffff) | blocks << 16
        } else {
            block
        }
    }

    /// The block length and blocks per super-block in a [`BLOCK`] word of a `scheme` tensor.
    pub fn unpack_block(word: u32, scheme: super::KernelScheme) -> (usize, usize) {
        if scheme.has_super_blocks() {
            ((word & 0xffff) as usize, (word >> 16) as usize)
        } else {
            (word as usize, 1)
        }
    }
}

/// Words of shared memory reserved for a `lossless` tensor's symbol values.
pub const VALUES_CAPACITY: usize = 256;

/// Which kernel variant decodes a tensor (`FORMAT.md` §4–6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum KernelScheme {
    /// `lossless` BF16.
    LosslessBf16 = 0,
    /// `lossless` F16.
    LosslessF16 = 1,
    /// `lossless` F32.
    LosslessF32 = 2,
    /// `int8`.
    Int8 = 3,
    /// `int4`, symmetric.
    Int4Symmetric = 4,
    /// `int4` with a minimum.
    Int4Asymmetric = 5,
    /// `raw` BF16.
    RawBf16 = 6,
    /// `raw` F16.
    RawF16 = 7,
    /// `raw` F32.
    RawF32 = 8,
    /// `int8` with per-block `f16` scales (format version 3).
    Int8Blocks = 9,
    /// `int8` in super-blocks (format version 4; GGUF `Q6_K`).
    Int8Super = 10,
    /// Asymmetric `int4` in super-blocks (format version 4; GGUF `Q4_K`).
    Int4Super = 11,
}

impl KernelScheme {
    /// The variant for a tensor, or `None` for `raw` tensors of non-float types.
    pub fn of(entry: &TensorEntry) -> Option<Self> {
        Some(match (&entry.scheme, entry.dtype) {
            (Scheme::Lossless { .. }, Dtype::BF16) => Self::LosslessBf16,
            (Scheme::Lossless { .. }, Dtype::F16) => Self::LosslessF16,
            (Scheme::Lossless { .. }, Dtype::F32) => Self::LosslessF32,
            (Scheme::Int8 { block: None, .. }, _) => Self::Int8,
            (Scheme::Int8 { block: Some(_), super_blocks: None, .. }, _) => Self::Int8Blocks,
            (Scheme::Int8 { block: Some(_), super_blocks: Some(_), .. }, _) => Self::Int8Super,
            (Scheme::Int4 { asymmetric: false, .. }, _) => Self::Int4Symmetric,
            (Scheme::Int4 { asymmetric: true, super_blocks: None, .. }, _) => Self::Int4Asymmetric,
            (Scheme::Int4 { asymmetric: true, super_blocks: Some(_), .. }, _) => Self::Int4Super,
            (Scheme::Raw, Dtype::BF16) => Self::RawBf16,
            (Scheme::Raw, Dtype::F16) => Self::RawF16,
            (Scheme::Raw, Dtype::F32) => Self::RawF32,
            _ => return None,
        })
    }

    /// Whether the tensor's side data comes in super-blocks.
    pub fn has_super_blocks(self) -> bool {
        matches!(self, Self::Int8Super | Self::Int4Super)
    }

    /// Whether the tensor's original values are 16 bits wide (so [`OutputKind::Native16`] applies).
    pub fn is_16_bit(self) -> bool {
        matches!(self, Self::LosslessBf16 | Self::LosslessF16 | Self::RawBf16 | Self::RawF16)
    }
}

/// What the kernel writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum OutputKind {
    /// `f32` values, one word per element (every scheme).
    F32 = 0,
    /// The original 16-bit pattern (BF16 or F16), two per word; 16-bit schemes only.
    Native16 = 1,
}

/// Where one tensor's values land in a batch's output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchOutput {
    /// The tensor's name.
    pub name: String,
    /// Its shape.
    pub shape: Vec<u64>,
    /// First element in the output buffer (even, so 16-bit pairs never straddle tensors).
    pub offset: usize,
    /// Number of elements.
    pub elements: usize,
    /// Index (in the batch) of the tensor's first tile.
    pub first_tile: usize,
}

/// The buffers of one decode launch.
///
/// Only [`DecodeBatch::new`] builds one, so the descriptors' offsets are known to lie inside the
/// buffers: the fields are private and read through accessors.
#[derive(Clone, Debug)]
pub struct DecodeBatch {
    /// The container the tiles come from (for error messages).
    pub(crate) path: String,
    /// The kernel variant.
    pub(crate) scheme: KernelScheme,
    /// Lanes per tile (threads per cube).
    pub(crate) lanes: usize,
    /// `lossless`: mantissa bits coded with the exponent (format version 2), shared by the batch.
    pub(crate) joint: u32,
    /// How the batch's tiles store lane ends, shared by the batch.
    pub(crate) lane_table: LaneTable,
    /// Tile payloads, back to back, as little-endian words.
    pub(crate) data: Vec<u32>,
    /// [`DESC_WORDS`] words per tile.
    pub(crate) tiles: Vec<u32>,
    /// The tensors' slot tables.
    pub(crate) tables: Vec<u32>,
    /// The tensors' scales.
    pub(crate) scales: Vec<u32>,
    /// Where each tensor's values land.
    pub(crate) outputs: Vec<BatchOutput>,
    /// Elements in the output buffer (a multiple of 2).
    pub(crate) output_elements: usize,
}

/// The largest single device buffer decoding `entry` on its own needs: its f32 output or its
/// uploaded compressed bytes, whichever is larger. Checked against
/// `device::max_buffer_bytes` before anything is allocated.
pub fn largest_buffer_bytes(entry: &TensorEntry) -> u64 {
    entry.elements().saturating_mul(4).max(entry.stored_bytes())
}

fn words(bytes: &[u8]) -> impl Iterator<Item = u32> + '_ {
    bytes.chunks(4).map(|c| {
        let mut w = [0u8; 4];
        w[..c.len()].copy_from_slice(c);
        u32::from_le_bytes(w)
    })
}

impl DecodeBatch {
    /// Gathers `entries` of `file` into one batch. They must share a kernel scheme and, for coded
    /// schemes, a lane count and joint width (see [`DecodeBatch::group`] to split a mixed list).
    pub fn new(file: &Container, entries: &[&TensorEntry]) -> Result<Self, KernelError> {
        let bad = |t: &TensorEntry, reason: String| KernelError::Tensor {
            path: file.path().display().to_string(),
            tensor: t.name.clone(),
            reason,
        };
        let first = entries.first().ok_or(KernelError::EmptyBatch)?;
        let scheme =
            KernelScheme::of(first).ok_or_else(|| bad(first, format!("raw {} has no GPU decoder", first.dtype)))?;
        let lanes = first.scheme.coder().map_or(32, |c| c.lanes as usize);
        let joint = first.scheme.joint_bits();
        let lane_table = first.scheme.coder().map_or(LaneTable::Ends32, |c| c.lane_table);
        let mut batch = DecodeBatch {
            path: file.path().display().to_string(),
            scheme,
            lanes,
            joint,
            lane_table,
            data: Vec::new(),
            tiles: Vec::new(),
            tables: Vec::new(),
            scales: Vec::new(),
            outputs: Vec::new(),
            output_elements: 0,
        };
        for &t in entries {
            if KernelScheme::of(t) != Some(scheme)
                || t.scheme.coder().is_some_and(|c| c.lanes as usize != lanes)
                || t.scheme.joint_bits() != joint
                || t.scheme.coder().is_some_and(|c| c.lane_table != lane_table)
            {
                return Err(bad(
                    t,
                    format!("does not share the batch's scheme {scheme:?}, {lanes} lanes and {joint} joint bits"),
                ));
            }
            let table_off = batch.tables.len();
            let mut prob_bits = 0;
            let mut symbols = 0u32;
            if let Some(table) = t.frequency_table().map_err(|e| bad(t, e))? {
                let dt = table.decode_table();
                prob_bits = dt.prob_bits();
                batch.tables.extend_from_slice(dt.entries());
                if let Some(values) = t.scheme.symbol_values(t.dtype) {
                    // The symbol values, padded to the shared-memory block the kernel loads.
                    symbols = values.len() as u32;
                    batch.tables.extend(values.iter().copied().chain(std::iter::repeat(0)).take(VALUES_CAPACITY));
                }
            }
            let scales_off = batch.scales.len();
            batch.scales.extend(words(file.scales_bytes(t)?));
            let (_, cols) = rows_cols(&t.shape);
            let block = desc::pack_block(t.scheme.block().unwrap_or(1), t.scheme.super_blocks().unwrap_or(1));
            let offset = batch.output_elements;
            let first_tile = batch.num_tiles();
            let raw_bits = t.dtype.float_layout().map_or(0, |l| l.joint_raw_bits(joint));
            for (i, r) in t.tiles.iter().enumerate() {
                let payload = file.tile_bytes(t, i)?;
                if t.scheme.coder().is_some() {
                    let raw_len = if matches!(t.scheme, Scheme::Lossless { .. }) {
                        bitpack::packed_len(r.count as usize, raw_bits)
                    } else {
                        0
                    };
                    check_coded_tile(payload, lanes, raw_len, lane_table)
                        .map_err(|e| bad(t, format!("tile {i}: {e}")))?;
                } else {
                    let need = r.count as usize * t.dtype.size();
                    if payload.len() < need {
                        return Err(bad(
                            t,
                            format!(
                                "tile {i}: raw payload of {} bytes holds fewer than {} values",
                                payload.len(),
                                r.count
                            ),
                        ));
                    }
                }
                let out = offset + r.start as usize;
                let desc = [
                    u32::try_from(batch.data.len()).map_err(|_| KernelError::TooLarge)?,
                    r.count as u32,
                    u32::try_from(out).map_err(|_| KernelError::TooLarge)?,
                    table_off as u32,
                    prob_bits,
                    scales_off as u32,
                    r.start as u32,
                    cols.max(1) as u32,
                    block,
                    joint | symbols << 8 | lane_table.code() << desc::LANE_TABLE_SHIFT,
                ];
                batch.tiles.extend_from_slice(&desc);
                batch.data.extend(words(payload));
            }
            let elements = t.elements() as usize;
            batch.outputs.push(BatchOutput {
                name: t.name.clone(),
                shape: t.shape.clone(),
                offset,
                elements,
                first_tile,
            });
            batch.output_elements = (offset + elements).next_multiple_of(2);
        }
        if batch.data.is_empty() {
            // Keep every buffer non-empty: zero-sized bindings are not allowed everywhere.
            batch.data.push(0);
        }
        batch.tables.push(0);
        batch.scales.push(0);
        Ok(batch)
    }

    /// Splits `entries` into batches of one kernel scheme, lane count and joint width each, keeping order
    /// within a batch. Non-float `raw` tensors are returned separately (they need no decoding).
    pub fn group<'a>(
        file: &Container,
        entries: &[&'a TensorEntry],
    ) -> Result<(Vec<DecodeBatch>, Vec<&'a TensorEntry>), KernelError> {
        let mut keys: Vec<(KernelScheme, usize, u32, LaneTable)> = Vec::new();
        let mut groups: Vec<Vec<&TensorEntry>> = Vec::new();
        let mut plain = Vec::new();
        for &t in entries {
            let Some(scheme) = KernelScheme::of(t) else {
                plain.push(t);
                continue;
            };
            let coder = t.scheme.coder();
            let key = (
                scheme,
                coder.map_or(32, |c| c.lanes as usize),
                t.scheme.joint_bits(),
                coder.map_or(LaneTable::Ends32, |c| c.lane_table),
            );
            match keys.iter().position(|k| *k == key) {
                Some(i) => groups[i].push(t),
                None => {
                    keys.push(key);
                    groups.push(vec![t]);
                }
            }
        }
        let batches = groups.iter().map(|g| DecodeBatch::new(file, g)).collect::<Result<_, _>>()?;
        Ok((batches, plain))
    }

    /// The kernel variant.
    pub fn scheme(&self) -> KernelScheme {
        self.scheme
    }

    /// Lanes per tile.
    pub fn lanes(&self) -> usize {
        self.lanes
    }

    /// `lossless`: mantissa bits coded with the exponent.
    pub fn joint_bits(&self) -> u32 {
        self.joint
    }

    /// How the tiles store their lane ends.
    pub fn lane_table(&self) -> LaneTable {
        self.lane_table
    }

    /// Where each tensor's values land in the output.
    pub fn outputs(&self) -> &[BatchOutput] {
        &self.outputs
    }

    /// Elements in the output buffer (a multiple of 2).
    pub fn output_elements(&self) -> usize {
        self.output_elements
    }

    /// The container the tiles come from.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Bytes of the launch's input buffers (payloads, descriptors, tables, scales).
    pub fn input_bytes(&self) -> usize {
        4 * (self.data.len() + self.tiles.len() + self.tables.len() + self.scales.len())
    }

    /// Number of tiles (cubes launched).
    pub fn num_tiles(&self) -> usize {
        self.tiles.len() / DESC_WORDS
    }

    /// The tensor that tile `tile` of the batch belongs to, and the tile's index within it.
    pub fn tile_origin(&self, tile: usize) -> Option<(&str, usize)> {
        origin_of(&self.outputs, tile)
    }

    /// The error for a tile that failed to decode: names the file, the tensor and its tile.
    pub fn tile_error(&self, tile: Option<usize>, reason: String) -> KernelError {
        tile_error(&self.path, &self.outputs, tile, reason)
    }

    /// Whether every tile can be written as 16-bit pairs without two cubes sharing a word: tiles
    /// start at even elements and have even counts, except the last tile of a tensor, whose
    /// partner slot is the tensor's padding; and a cube has at least two lanes, since lanes
    /// `2j` and `2j + 1` write word `j` together (a one-lane file decodes to `f32`).
    pub fn supports_native16(&self) -> bool {
        if !self.scheme.is_16_bit() || self.lanes < 2 {
            return false;
        }
        self.tiles.chunks(DESC_WORDS).all(|d| {
            let (out, count) = (d[desc::OUT] as usize, d[desc::COUNT] as usize);
            let last_of_tensor = self.outputs.iter().any(|o| out + count == o.offset + o.elements);
            out % 2 == 0 && (count % 2 == 0 || last_of_tensor)
        })
    }

    /// Words the output buffer needs for `kind`.
    pub fn output_words(&self, kind: OutputKind) -> usize {
        match kind {
            OutputKind::F32 => self.output_elements,
            OutputKind::Native16 => self.output_elements / 2,
        }
    }
}

pub(crate) fn origin_of(outputs: &[BatchOutput], tile: usize) -> Option<(&str, usize)> {
    let o = outputs.iter().rev().find(|o| o.first_tile <= tile)?;
    Some((o.name.as_str(), tile - o.first_tile))
}

pub(crate) fn tile_error(path: &str, outputs: &[BatchOutput], tile: Option<usize>, reason: String) -> KernelError {
    match tile.and_then(|t| origin_of(outputs, t)) {
        Some((tensor, i)) => KernelError::Tensor {
            path: path.to_string(),
            tensor: tensor.to_string(),
            reason: format!("tile {i}: {reason}"),
        },
        None => KernelError::Tensor {
            path: path.to_string(),
            tensor: outputs.iter().map(|o| o.name.as_str()).collect::<Vec<_>>().join(", "),
            reason,
        },
    }
}

/// Checks a coded tile's structure before upload, as the CPU decoder does before it decodes
/// (`FORMAT.md` §3): every lane state in `[STATE_LOWER, 2^32)`, lane ends non-decreasing and
/// inside the word area, the raw area and the words inside the payload. So the kernel's reads
/// stay inside the tile; whether each lane's words decode exactly is the decode-time check.
fn check_coded_tile(payload: &[u8], lanes: usize, raw_len: usize, table: LaneTable) -> Result<(), String> {
    let tile = read_coded_tile(payload, lanes, raw_len, table)?;
    if let Some(j) = tile.states.iter().position(|&s| s < ember_codec::rans::STATE_LOWER) {
        return Err(format!("lane {j} starts with a denormalised state"));
    }
    let mut prev = 0;
    for (j, &end) in tile.lane_ends.iter().enumerate() {
        if end < prev {
            return Err(format!("lane {j} ends before lane {}", j.saturating_sub(1)));
        }
        prev = end;
    }
    Ok(())
}
