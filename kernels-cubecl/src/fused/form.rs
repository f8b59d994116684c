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
                let symbols = decode_symbols(file, entry).map_err(bad)?;
                let scales = file.scales_bytes(entry)?;
                quant_form(entry, &symbols, scales, rows, cols, stride).map_err(bad)?
            }
            (_, Dtype::BF16 | Dtype::F16 | Dtype::F32) => {
                let values = file.decode(entry)?.data;
                match entry.dtype {
                    Dtype::F32 => {
                        let mut v = vec![0f32; padded];
                        for (r, row) in values.chunks_exact(4 * cols.max(1)).enumerate().take(rows) {
                            for (o, b) in v[r * stride..].iter_mut().zip(row.chunks_exact(4)) {
                                *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                            }
                        }
                        FastCodes::F32(v)
                    }
                    Dtype::BF16 if matches!(entry.scheme, Scheme::Lossless { .. }) => {
                        // Straight from the decoded bytes: no padded 16-bit copy of the whole
                        // matrix next to them (for Gemma 3's embedding that copy is 336 MB).
                        bf16_rank_form(&values, rows, cols, stride)
                    }
                    dtype => {
                        let mut v = vec![0u16; padded];
                        for (r, row) in values.chunks_exact(2 * cols.max(1)).enumerate().take(rows) {
                            for (o, b) in v[r * stride..].iter_mut().zip(row.chunks_exact(2)) {
                                *o = u16::from_le_bytes([b[0], b[1]]);
                            }
                        }
                        if dtype == Dtype::BF16 {
                            FastCodes::Bf16(v)
                        } else {
                            FastCodes::F16(v)
                        }
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

/// The rANS symbols of every element of a quantised tensor, in element order.
fn decode_symbols(file: &Container, entry: &TensorEntry) -> Result<Vec<u8>, String> {
    let coder = entry.scheme.coder().ok_or("not a coded tensor")?;
    let table = entry.frequency_table()?.ok_or("no frequency table")?.decode_table();
    let n = usize::try_from(entry.elements()).map_err(|_| "too many elements")?;
    let mut symbols = vec![0u8; n];
    for (i, t) in entry.tiles.iter().enumerate() {
        let payload = file.tile_bytes(entry, i).map_err(|e| e.to_string())?;
        let tile = read_coded_tile(payload, coder.lanes as usize, 0, coder.lane_table)
            .map_err(|e| format!("tile {i}: {e}"))?;
        let (s, c) = (t.start as usize, t.count as usize);
        let out = symbols.get_mut(s..s + c).ok_or_else(|| format!("tile {i} outside the tensor"))?;
        decode_lanes(&tile.states, &tile.lane_ends, &tile.words, &table, LaneOutput::Symbols(out))
            .map_err(|e| format!("tile {i}: {e}"))?;
    }
    Ok(symbols)
}

fn quant_form(
    entry: &TensorEntry,
    symbols: &[u8],
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
    // Every block's scale (and minimum) widened to f32 once, whatever the side data's layout.
    let block = kind.block().unwrap_or(cols).max(1);
    let blocks = if kind.block().is_some() { rows * cols.div_ceil(block) } else { rows };
    let scale_min: Vec<(f32, f32)> = (0..blocks).map(|b| kind.block_scale(scales, b)).collect();
    let block_scales = || scale_min.iter().map(|s| s.0).collect::<Vec<f32>>();
    Ok(if kind.is_int4() {
        let mut packed = vec![0u8; rows * stride / 2];
        for r in 0..rows {
            for (c, &s) in symbols[r * cols..(r + 1) * cols].iter().enumerate() {
                let i = r * stride + c;
                packed[i / 2] |= (s & 0xf) << (4 * (i % 2));
            }
        }
        let mins = matches!(kind, QuantKind::Int4Asymmetric { .. } | QuantKind::Int4Super { .. })
            .then(|| scale_min.iter().map(|s| s.1).collect());
        FastCodes::Int4 { packed, block, scales: block_scales(), mins }
    } else {
        let mut codes = vec![0i8; rows * stride];
        for r in 0..rows {
            for (o, &s) in codes[r * stride..r * stride + cols].iter_mut().zip(&symbols[r * cols..(r + 1) * cols]) {
                *o = s as i8;
            }
        }
        FastCodes::Int8 { codes, block, scales: block_scales() }
    })
}

/// Transcodes a row-major `rows × cols` matrix of little-endian BF16 values into the rank form
/// (rows `stride` elements apart).
fn bf16_rank_form(values: &[u8], rows: usize, cols: usize, stride: usize) -> FastCodes {
    let row =
        |r: usize| values[2 * r * cols..2 * (r + 1) * cols].chunks_exact(2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let mut counts = [0u64; 256];
    for r in 0..rows {
        for b in row(r) {
            counts[((b >> 7) & 0xff) as usize] += 1;
        }
    }
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
    let mut row_escapes = Vec::with_capacity(rows + 1);
    row_escapes.push(0u32);
    for r in 0..rows {
        for (c, b) in row(r).enumerate() {
            let i = r * stride + c;
            let rank = rank_of[((b >> 7) & 0xff) as usize];
            if rank as usize == RANKS {
                escapes.push((c as u32, b));
            } else {
                low[i] = ((b >> 8) & 0x80) as u8 | (b & 0x7f) as u8;
            }
            ranks[i / 2] |= rank << (4 * (i % 2));
        }
        row_escapes.push(escapes.len() as u32);
    }
    FastCodes::Bf16Rank { exponents, ranks, low, escapes, row_escapes }
}
