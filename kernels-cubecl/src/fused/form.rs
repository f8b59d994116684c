//! The fast resident form of a compressed weight: what the fused kernels multiply from.
//!
//! rANS needs a dependent table lookup and a state update per weight, about 0.5–1 ns per weight
//! per core: inside a batch-1 GEMV that makes the kernel compute-bound, slower than reading a
//! dense weight. The fast form is transcoded once, at attach, from the entropy-coded tiles into
//! fixed-width codes that decode with a few vector instructions per eight weights:
//!
//! | stored as          | fast form                                                   | bits/weight |
//! |--------------------|-------------------------------------------------------------|-------------|
//! | `lossless` BF16    | 4-bit exponent *rank* + the sign·mantissa byte; escapes aside | ≈ 12       |
//! | `lossless`/`raw` F16, BF16 | the 16-bit values                                   | 16          |
//! | `lossless`/`raw` F32 | the f32 values                                            | 32          |
//! | `int8`             | the `i8` codes + one f32 scale per row (or per block)       | 8 + scales  |
//! | `int4`             | two codes per byte + f32 scale (and min) per block          | 4 + scales  |
//!
//! Rank code (Binade's "R4" idea): the 15 commonest exponents of the tensor get ranks 0..=14;
//! every other exponent is rank 15, an *escape*: the element decodes to `+0.0` in the fast path
//! and its true 16 bits are kept in a per-row escape list that the kernels patch in. Trained
//! weights put well over 99.9% of their exponents in the top 15, so escapes are rare.
//!
//! Every form decodes to exactly the value the reference decoder produces (`FORMAT.md` §4–5), so
//! the fused product differs from decode-then-matmul only in summation order.
//!
//! Rows are stored with a stride of [`ROW_ALIGN`] elements, so a packed row starts on a byte and
//! vector loads never straddle two rows.

use ember_codec::dtype::Dtype;
use ember_codec::rans::{decode_lanes, LaneOutput};
use ember_codec::schemes::{QuantKind, Scheme};
use ember_codec::tile::{read_coded_tile, rows_cols};
use ember_codec::{Container, TensorEntry};

use super::coded::for_each_row_piece;
use crate::error::KernelError;

/// Row stride alignment of packed forms, in elements.
pub const ROW_ALIGN: usize = 16;

/// Number of exponent ranks that decode without an escape.
pub const RANKS: usize = 15;

/// The codes of one weight in their fast form (see the module docs).
#[derive(Clone, Debug)]
pub enum FastCodes {
    /// f32 values, `stride` per row.
    F32(Vec<f32>),
    /// BF16 bit patterns.
    Bf16(Vec<u16>),
    /// F16 bit patterns.
    F16(Vec<u16>),
    /// BF16 as exponent rank nibbles (element `2k` in the low nibble of byte `k`) and the
    /// sign·mantissa byte of every element.
    Bf16Rank {
        /// Rank → exponent; rank 15 maps to 0 and its `low` byte is 0, so an escape reads `+0.0`.
        exponents: [u8; 16],
        /// Two ranks per byte.
        ranks: Vec<u8>,
        /// `(v >> 8 & 0x80) | (v & 0x7f)` of every element (0 for escapes).
        low: Vec<u8>,
        /// Escapes, sorted by row then column: `(column, bf16 bits)`.
        escapes: Vec<(u32, u16)>,
        /// `escapes[row_escapes[r]..row_escapes[r + 1]]` are row `r`'s.
        row_escapes: Vec<u32>,
    },
    /// `i8` codes and one f32 scale per block of a row: `code as f32 * scale`. Per-row scales
    /// are one block of `cols`.
    Int8 {
        /// The codes.
        codes: Vec<i8>,
        /// Block length along a row (`cols` for per-row scales).
        block: usize,
        /// Per-block scales (row-major, `⌈cols/block⌉` per row), widened from f16 for
        /// block-scaled tensors.
        scales: Vec<f32>,
    },
    /// 4-bit codes, two per byte (element `2k` in the low nibble of byte `k`).
    Int4 {
        /// The codes.
        packed: Vec<u8>,
        /// Block length along a row.
        block: usize,
        /// Per-block scales (row-major, `⌈cols/block⌉` per row), widened from f16.
        scales: Vec<f32>,
        /// Per-block minimums for asymmetric blocks (`code·scale + min`); `None` for symmetric
        /// blocks (`(code − 8)·scale`).
        mins: Option<Vec<f32>>,
    },
}

/// A weight in its fast resident form, as a `rows × cols` matrix (the stored layout).
#[derive(Clone, Debug)]
pub struct FastWeight {
    /// Rows of the stored matrix.
    pub rows: usize,
    /// Columns (the stored last dimension).
    pub cols: usize,
    /// Elements between the starts of two rows (`cols` rounded up to [`ROW_ALIGN`]).
    pub stride: usize,
    /// The codes.
    pub codes: FastCodes,
}

impl FastWeight {
    /// Transcodes tensor `entry` of `file` (checksums are verified on every tile read).
    pub fn from_container(file: &Container, entry: &TensorEntry) -> Result<Self, KernelError> {
        let bad = |reason: String| KernelError::Tensor {
            path: file.path().display().to_string(),
            tensor: entry.name.clone(),
            reason,
        };
        let (rows, cols) = rows_cols(&entry.shape);
        let (rows, cols) = (rows as usize, cols as usize);
        let stride = cols.next_multiple_of(ROW_ALIGN);
        let padded = rows.checked_mul(stride).ok_or_else(|| bad("too many elements".into()))?;
        let codes = match (&entry.scheme, entry.dtype) {
            (Scheme::Int8 { .. } | Scheme::Int4 { .. }, _) => {
                let scales = file.scales_bytes(entry)?;
                quant_form(file, entry, scales, rows, cols, stride).map_err(bad)?
            }
            (_, Dtype::BF16) if matches!(entry.scheme, Scheme::Lossless { .. }) => {
                bf16_rank_form(file, entry, rows, cols, stride)?
            }
            (_, dtype @ (Dtype::BF16 | Dtype::F16 | Dtype::F32)) => {
                let size = dtype.size();
                if dtype == Dtype::F32 {
                    let mut v = vec![0f32; padded];
                    for_each_tile(file, entry, |start, bytes| {
                        for_each_row_piece(start, bytes.len() / size, cols, |r, c, k, n| {
                            for (o, b) in v[r * stride + c..r * stride + c + n]
                                .iter_mut()
                                .zip(bytes[4 * k..4 * (k + n)].chunks_exact(4))
                            {
                                *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                            }
                        });
                    })?;
                    FastCodes::F32(v)
                } else {
                    let mut v = vec![0u16; padded];
                    for_each_tile(file, entry, |start, bytes| {
                        for_each_row_piece(start, bytes.len() / size, cols, |r, c, k, n| {
                            for (o, b) in v[r * stride + c..r * stride + c + n]
                                .iter_mut()
                                .zip(bytes[2 * k..2 * (k + n)].chunks_exact(2))
                            {
                                *o = u16::from_le_bytes([b[0], b[1]]);
                            }
                        });
                    })?;
                    if dtype == Dtype::BF16 {
                        FastCodes::Bf16(v)
                    } else {
                        FastCodes::F16(v)
                    }
                }
            }
            (_, dtype) => return Err(bad(format!("{dtype} has no fused form"))),
        };
        Ok(Self { rows, cols, stride, codes })
    }

    /// Builds the fast form of row-major f32 `values` of a `rows × cols` matrix, as a
    /// [`FastCodes::F32`] weight (dense weights take the fused kernels too).
    pub fn from_f32(values: &[f32], rows: usize, cols: usize) -> Self {
        let stride = cols.next_multiple_of(ROW_ALIGN);
        let mut v = vec![0f32; rows * stride];
        for r in 0..rows {
            v[r * stride..r * stride + cols].copy_from_slice(&values[r * cols..(r + 1) * cols]);
        }
        Self { rows, cols, stride, codes: FastCodes::F32(v) }
    }

    /// Bytes the form occupies in memory (codes, scales, escapes).
    pub fn resident_bytes(&self) -> u64 {
        let b = match &self.codes {
            FastCodes::F32(v) => 4 * v.len(),
            FastCodes::Bf16(v) | FastCodes::F16(v) => 2 * v.len(),
            FastCodes::Bf16Rank { ranks, low, escapes, row_escapes, .. } => {
                ranks.len() + low.len() + 8 * escapes.len() + 4 * row_escapes.len() + 16
            }
            FastCodes::Int8 { codes, scales, .. } => codes.len() + 4 * scales.len(),
            FastCodes::Int4 { packed, scales, mins, .. } => {
                packed.len() + 4 * scales.len() + mins.as_ref().map_or(0, |m| 4 * m.len())
            }
        };
        b as u64
    }

    /// Short name of the form, for reports.
    pub fn form_name(&self) -> &'static str {
        match &self.codes {
            FastCodes::F32(_) => "f32",
            FastCodes::Bf16(_) => "bf16",
            FastCodes::F16(_) => "f16",
            FastCodes::Bf16Rank { .. } => "bf16-rank4",
            FastCodes::Int8 { .. } => "int8",
            FastCodes::Int4 { mins: None, .. } => "int4",
            FastCodes::Int4 { .. } => "int4-asym",
        }
    }

    /// Decodes the whole matrix to row-major f32 (`rows × cols`), exactly as the reference
    /// decoder would: the fallback of the fused path for large batches.
    pub fn decode_f32(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.rows * self.cols];
        let mut seg = [0f32; crate::fused::cpu::SEG];
        for r in 0..self.rows {
            let mut c = 0;
            while c < self.cols {
                let len = (self.cols - c).min(crate::fused::cpu::SEG);
                crate::fused::cpu::decode_segment(self, r, c, &mut seg[..len]);
                out[r * self.cols + c..r * self.cols + c + len].copy_from_slice(&seg[..len]);
                c += len;
            }
        }
        out
    }
}

/// Decodes tensor `entry` one tile at a time into a reused tile-sized buffer and hands each
/// tile's decoded bytes to `f` with the index of its first element, in tile order.
///
/// Transcoding never holds a whole decoded tensor: for Gemma 3's tied embedding that would be
/// 336 MB next to its 170 MB form, and the allocator keeps such a freed block long after.
fn for_each_tile(file: &Container, entry: &TensorEntry, mut f: impl FnMut(usize, &[u8])) -> Result<(), KernelError> {
    let dec = file.decoder(entry)?;
    let size = entry.decoded_dtype().size();
    let (mut out, mut scratch) = (Vec::new(), Vec::new());
    for (i, t) in entry.tiles.iter().enumerate() {
        if t.start.checked_add(t.count).is_none_or(|end| end > entry.elements()) {
            return Err(KernelError::Tensor {
                path: file.path().display().to_string(),
                tensor: entry.name.clone(),
                reason: format!("tile {i} lies outside the tensor"),
            });
        }
        out.resize(t.count as usize * size, 0);
        dec.decode_tile(i, &mut out, &mut scratch)?;
        f(t.start as usize, &out);
    }
    Ok(())
}

/// The codes and scales of a quantised tensor, its rANS symbols decoded tile by tile straight
/// into the packed layout.
fn quant_form(
    file: &Container,
    entry: &TensorEntry,
    scales: &[u8],
    rows: usize,
    cols: usize,
    stride: usize,
) -> Result<FastCodes, String> {
    let kind = entry.quant_kind().ok_or("not a quantised tensor")?;
    let expected = kind.scales_len(&entry.shape) as usize;
    if scales.len() != expected {
        return Err(format!("{} bytes of scales, expected {expected}", scales.len()));
    }
    let n = usize::try_from(entry.elements()).map_err(|_| "too many elements")?;
    let coder = entry.scheme.coder().ok_or("not a coded tensor")?;
    let table = entry.frequency_table()?.ok_or("no frequency table")?.decode_table();
    let int4 = kind.is_int4();
    let mut packed = if int4 { vec![0u8; rows * stride / 2] } else { Vec::new() };
    let mut codes = if int4 { Vec::new() } else { vec![0i8; rows * stride] };
    let mut symbols = Vec::new();
    for (i, t) in entry.tiles.iter().enumerate() {
        let payload = file.tile_bytes(entry, i).map_err(|e| e.to_string())?;
        let tile = read_coded_tile(payload, coder.lanes as usize, 0, coder.lane_table)
            .map_err(|e| format!("tile {i}: {e}"))?;
        let (s, c) = (t.start as usize, t.count as usize);
        if s.checked_add(c).is_none_or(|end| end > n) {
            return Err(format!("tile {i} outside the tensor"));
        }
        symbols.resize(c, 0);
        decode_lanes(&tile.states, &tile.lane_ends, &tile.words, &table, LaneOutput::Symbols(&mut symbols))
            .map_err(|e| format!("tile {i}: {e}"))?;
        for_each_row_piece(s, c, cols, |r, col, k, len| {
            let run = &symbols[k..k + len];
            if int4 {
                for (j, &sym) in run.iter().enumerate() {
                    let e = r * stride + col + j;
                    packed[e / 2] |= (sym & 0xf) << (4 * (e % 2));
                }
            } else {
                for (o, &sym) in codes[r * stride + col..r * stride + col + len].iter_mut().zip(run) {
                    *o = sym as i8;
                }
            }
        });
    }
    // Every block's scale (and minimum) widened to f32 once, whatever the side data's layout.
    let block = kind.block().unwrap_or(cols).max(1);
    let blocks = if kind.block().is_some() { rows * cols.div_ceil(block) } else { rows };
    let scale_min: Vec<(f32, f32)> = (0..blocks).map(|b| kind.block_scale(scales, b)).collect();
    let block_scales = || scale_min.iter().map(|s| s.0).collect::<Vec<f32>>();
    Ok(if int4 {
        let mins = matches!(kind, QuantKind::Int4Asymmetric { .. } | QuantKind::Int4Super { .. })
            .then(|| scale_min.iter().map(|s| s.1).collect());
        FastCodes::Int4 { packed, block, scales: block_scales(), mins }
    } else {
        FastCodes::Int8 { codes, block, scales: block_scales() }
    })
}

/// Transcodes a lossless BF16 tensor into the rank form (rows `stride` elements apart), in two
/// passes over its tiles: the exponent counts that pick the ranks, then the codes. Decoding
/// twice costs a few hundred milliseconds per GB; holding the decoded tensor instead would
/// cost its whole size in memory.
fn bf16_rank_form(
    file: &Container,
    entry: &TensorEntry,
    rows: usize,
    cols: usize,
    stride: usize,
) -> Result<FastCodes, KernelError> {
    let bits = |b: &[u8]| u16::from_le_bytes([b[0], b[1]]);
    let mut counts = [0u64; 256];
    for_each_tile(file, entry, |_, bytes| {
        for b in bytes.chunks_exact(2) {
            counts[((bits(b) >> 7) & 0xff) as usize] += 1;
        }
    })?;
    let mut order: Vec<usize> = (0..256).filter(|&e| counts[e] > 0).collect();
    order.sort_by_key(|&e| (std::cmp::Reverse(counts[e]), e));
    order.truncate(RANKS);
    let mut exponents = [0u8; 16];
    let mut rank_of = [RANKS as u8; 256];
    for (rank, &e) in order.iter().enumerate() {
        exponents[rank] = e as u8;
        rank_of[e] = rank as u8;
    }
    let mut ranks = vec![0u8; rows * stride / 2];
    let mut low = vec![0u8; rows * stride];
    let mut escapes = Vec::new();
    // Rows in order, tiles in element order: escapes come out sorted by row then column.
    let mut row_escapes = vec![0u32; rows + 1];
    for_each_tile(file, entry, |start, bytes| {
        for_each_row_piece(start, bytes.len() / 2, cols, |r, c, k, n| {
            for (j, b) in bytes[2 * k..2 * (k + n)].chunks_exact(2).enumerate() {
                let b = bits(b);
                let i = r * stride + c + j;
                let rank = rank_of[((b >> 7) & 0xff) as usize];
                if rank as usize == RANKS {
                    escapes.push(((c + j) as u32, b));
                } else {
                    low[i] = ((b >> 8) & 0x80) as u8 | (b & 0x7f) as u8;
                }
                ranks[i / 2] |= rank << (4 * (i % 2));
            }
            row_escapes[r + 1] = escapes.len() as u32;
        });
    })?;
    // Rows without escapes after the last one that had some end where their predecessor did.
    for r in 1..=rows {
        row_escapes[r] = row_escapes[r].max(row_escapes[r - 1]);
    }
    Ok(FastCodes::Bf16Rank { exponents, ranks, low, escapes, row_escapes })
}
