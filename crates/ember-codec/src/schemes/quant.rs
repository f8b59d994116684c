//! `int8` and `int4`: quantised codes through rANS, scales as side data.
//!
//! Dequantisation is specified to the bit so that every decoder agrees:
//! - `int8`: `code as f32 * scale_row` (one f32 multiply), or with per-block scales (format
//!   version 3) `code as f32 * scale_block` with the f16 scale widened to f32;
//! - `int4` symmetric: `(code − 8) as f32 * scale_block` with the f16 scale widened to f32;
//! - `int4` asymmetric: `code as f32 * scale_block + min_block`, a multiply then an add, each
//!   rounded (no fused multiply-add).
//!
//! With super-blocks (format version 4, GGUF's k-quants) a block's scale is itself the product
//! `f32(d) · f32(sc)` of a super-block's `f16` and the block's small integer (and its minimum
//! `−(f32(dmin) · f32(m))`); both products are exact in `f32`, so the arithmetic above is
//! unchanged.

use half::f16;

use super::{code_tiles, par_histogram, EncodeOptions, EncodedTensor, Scheme, SchemeKind, TileSymbols};
use crate::dtype::Dtype;
use crate::entropy::order0_bits;
use crate::rans::{decode_lanes, DecodeTable, FrequencyTable, LaneOutput};
use crate::tile::{plan_tiles, read_coded_tile, rows_cols, LaneTable, TileSpan};

fn finite_values(name: &str, dtype: Dtype, data: &[u8]) -> Result<Vec<f32>, String> {
    let n = data.len() / dtype.size();
    let mut v = Vec::with_capacity(n);
    for i in 0..n {
        let x = dtype.read_f32(data, i).ok_or_else(|| format!("{dtype} is not a float type"))?;
        if !x.is_finite() {
            return Err(format!(
                "element {i} of `{name}` is {x}: quantised schemes need finite values (use --scheme lossless)"
            ));
        }
        v.push(x);
    }
    Ok(v)
}

/// Round to nearest (ties away from zero) and clamp — the code of `x` on a grid of `scale`.
fn quantise(x: f32, scale: f32, lo: f32, hi: f32) -> f32 {
    if scale == 0.0 {
        0.0f32.clamp(lo, hi)
    } else {
        (x / scale).round().clamp(lo, hi)
    }
}

pub(super) fn encode(
    name: &str,
    dtype: Dtype,
    shape: &[u64],
    data: &[u8],
    spans: &[TileSpan],
    kind: SchemeKind,
    opts: &EncodeOptions,
) -> Result<EncodedTensor, String> {
    let values = finite_values(name, dtype, data)?;
    let (rows, cols) = rows_cols(shape);
    let (rows, cols) = (rows as usize, cols as usize);
    let mut codes = vec![0u8; values.len()];
    let mut scales: Vec<u8> = Vec::new();
    match kind {
        SchemeKind::Int8 => {
            for r in 0..rows {
                let row = &values[r * cols..(r + 1) * cols];
                let amax = row.iter().fold(0f32, |m, x| m.max(x.abs()));
                let scale = amax / 127.0;
                scales.extend(scale.to_le_bytes());
                for (c, &x) in codes[r * cols..(r + 1) * cols].iter_mut().zip(row) {
                    *c = quantise(x, scale, -127.0, 127.0) as i8 as u8;
                }
            }
        }
        _ => {
            let block = opts.int4_block as usize;
            for r in 0..rows {
                for b0 in (0..cols).step_by(block) {
                    let range = r * cols + b0..r * cols + (b0 + block).min(cols);
                    let blk = &values[range.clone()];
                    let too_big = || format!("a block of `{name}` exceeds the f16 range of int4 scales");
                    if opts.int4_asymmetric {
                        let mn = blk.iter().fold(f32::INFINITY, |m, &x| m.min(x));
                        let mx = blk.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
                        let scale = f16::from_f32((mx - mn) / 15.0);
                        let min = f16::from_f32(mn);
                        if !scale.is_finite() || !min.is_finite() {
                            return Err(too_big());
                        }
                        scales.extend(scale.to_bits().to_le_bytes());
                        scales.extend(min.to_bits().to_le_bytes());
                        let (s, m) = (scale.to_f32(), min.to_f32());
                        for (c, &x) in codes[range].iter_mut().zip(blk) {
                            *c = quantise(x - m, s, 0.0, 15.0) as u8;
                        }
                    } else {
                        let amax = blk.iter().fold(0f32, |m, x| m.max(x.abs()));
                        let scale = f16::from_f32(amax / 7.0);
                        if !scale.is_finite() {
                            return Err(too_big());
                        }
                        scales.extend(scale.to_bits().to_le_bytes());
                        let s = scale.to_f32();
                        for (c, &x) in codes[range].iter_mut().zip(blk) {
                            *c = (quantise(x, s, -8.0, 7.0) + 8.0) as u8;
                        }
                    }
                }
            }
        }
    }
    let quant = match kind {
        SchemeKind::Int8 => QuantKind::Int8,
        _ if opts.int4_asymmetric => QuantKind::Int4Asymmetric { block: opts.int4_block as usize },
        _ => QuantKind::Int4Symmetric { block: opts.int4_block as usize },
    };
    code_quantised(name, dtype, shape, spans, quant, &codes, scales, opts)
}

/// Codes `codes` (one per element) through rANS and stores `scales` as the side data: the part
/// of quantisation shared by [`encode`] and [`encode_int4_codes`].
#[allow(clippy::too_many_arguments)]
fn code_quantised(
    name: &str,
    dtype: Dtype,
    shape: &[u64],
    spans: &[TileSpan],
    kind: QuantKind,
    codes: &[u8],
    scales: Vec<u8>,
    opts: &EncodeOptions,
) -> Result<EncodedTensor, String> {
    let alphabet = kind.alphabet();
    let counts = par_histogram(codes.len(), alphabet, |i| codes[i]);
    let (coder, tiles) = code_tiles(spans, &counts, opts, |span| TileSymbols {
        symbols: codes[span.start as usize..(span.start + span.count) as usize].to_vec(),
        raw: Vec::new(),
    })?;
    let scheme = match kind {
        QuantKind::Int8 => Scheme::Int8 { coder, block: None, super_blocks: None },
        QuantKind::Int8Blocks { block } => Scheme::Int8 { coder, block: Some(block as u32), super_blocks: None },
        QuantKind::Int8Super { block, blocks } => {
            Scheme::Int8 { coder, block: Some(block as u32), super_blocks: Some(blocks as u32) }
        }
        QuantKind::Int4Symmetric { block } => {
            Scheme::Int4 { coder, block: block as u32, asymmetric: false, super_blocks: None }
        }
        QuantKind::Int4Asymmetric { block } => {
            Scheme::Int4 { coder, block: block as u32, asymmetric: true, super_blocks: None }
        }
        QuantKind::Int4Super { block, blocks } => {
            Scheme::Int4 { coder, block: block as u32, asymmetric: true, super_blocks: Some(blocks as u32) }
        }
    };
    Ok(EncodedTensor {
        name: name.into(),
        dtype,
        shape: shape.into(),
        scheme,
        tiles,
        entropy_bound_bytes: (order0_bits(&counts) / 8.0).ceil() as u64 + scales.len() as u64,
        scales: Some(scales),
    })
}

/// A tensor quantised elsewhere — a GGUF's `Q4_0`, `Q4_1` or `Q8_0` blocks — in ember's
/// layout: one code per element in row-major order (an `i8` as its byte for `int8`, `0..16` for
/// `int4`) and the side data [`QuantKind::scales_len`] sizes, little-endian. `Q4_0` is
/// [`QuantKind::Int4Symmetric`] (`(code − 8) · scale`), `Q4_1` [`QuantKind::Int4Asymmetric`]
/// (`code · scale + min`, scale then min per block), `Q8_0` [`QuantKind::Int8Blocks`]
/// (`code · scale`), all with `f16` scales and blocks of 32.
#[derive(Clone, Copy, Debug)]
pub struct QuantCodes<'a> {
    /// How the codes dequantize.
    pub kind: QuantKind,
    /// One code per element.
    pub codes: &'a [u8],
    /// The side data.
    pub scales: &'a [u8],
}

/// Encodes already quantised codes as they are: no value is re-quantised, so the tensor decodes
/// to exactly what its source dequantizes to (the arithmetic is `Q4_0`'s, `Q4_1`'s and
/// `Q8_0`'s, operation for operation). The tensor is stored as `F32`, the type those values
/// have. Fails when the lengths do not match `shape`, an `int4` code is 16 or more, or a block
/// length is 0.
pub fn encode_quant_codes(
    name: &str,
    shape: &[u64],
    source: QuantCodes<'_>,
    opts: &EncodeOptions,
) -> crate::Result<EncodedTensor> {
    let err = |reason: String| crate::CodecError::Encode { tensor: name.to_string(), reason };
    let n = super::checked_elements(shape, opts).map_err(err)?;
    let block = source.kind.block().unwrap_or(1);
    if block == 0 || block > u32::MAX as usize {
        return Err(err(format!("block length {block} is out of range")));
    }
    if let QuantKind::Int8Super { blocks, .. } | QuantKind::Int4Super { blocks, .. } = source.kind {
        if !(2..=MAX_SUPER_BLOCKS as usize).contains(&blocks) || blocks % 2 != 0 || block > MAX_SUPER_BLOCK_LEN as usize
        {
            return Err(err(format!("super-blocks of {blocks} blocks of {block} are out of range")));
        }
    }
    if source.codes.len() as u64 != n {
        return Err(err(format!("{} codes for shape {shape:?} ({n} elements)", source.codes.len())));
    }
    let want = source.kind.scales_len(shape);
    if source.scales.len() as u64 != want {
        return Err(err(format!("{} bytes of scales for shape {shape:?}, expected {want}", source.scales.len())));
    }
    let int4 = source.kind.is_int4();
    if let Some(i) = source.codes.iter().position(|&c| int4 && c >= 16) {
        return Err(err(format!("code {} of element {i} is not a 4-bit code", source.codes[i])));
    }
    let spans = plan_tiles(shape, opts.tile_elems as u64, block as u64);
    let mut out =
        code_quantised(name, Dtype::F32, shape, &spans, source.kind, source.codes, source.scales.to_vec(), opts)
            .map_err(err)?;
    super::pad_to_min_payload(&mut out, n);
    Ok(out)
}

/// Which quantised scheme a [`QuantDecoder`] decodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuantKind {
    /// Per-row f32 scale, codes are `i8`.
    Int8,
    /// Per-block f16 scale, codes are `i8` (format version 3; GGUF's `Q8_0`).
    Int8Blocks {
        /// Block length.
        block: usize,
    },
    /// Per-block f16 scale, codes `0..16` centred on 8.
    Int4Symmetric {
        /// Block length.
        block: usize,
    },
    /// Per-block f16 scale and f16 min.
    Int4Asymmetric {
        /// Block length.
        block: usize,
    },
    /// `int8` in super-blocks of `blocks` blocks (format version 4; GGUF's `Q6_K`): per
    /// super-block an `f16` `d` then one `i8` `sc` per block; block scale `f32(d) · f32(sc)`.
    Int8Super {
        /// Block length.
        block: usize,
        /// Blocks per super-block (even).
        blocks: usize,
    },
    /// Asymmetric `int4` in super-blocks of `blocks` blocks (format version 4; GGUF's `Q4_K`):
    /// per super-block an `f16` `d` and `dmin`, then one `u8` `sc` per block, then one `u8` `m`
    /// per block; block scale `f32(d) · f32(sc)`, minimum `−(f32(dmin) · f32(m))`.
    Int4Super {
        /// Block length.
        block: usize,
        /// Blocks per super-block (even).
        blocks: usize,
    },
}

/// Most blocks a super-block holds.
pub const MAX_SUPER_BLOCKS: u32 = 256;
/// Longest block of a super-block (so that a block length and a super-block size share a
/// 32-bit word in the GPU's tile descriptor).
pub const MAX_SUPER_BLOCK_LEN: u32 = 65_535;

impl QuantKind {
    /// Number of distinct codes: 256 for `int8`, 16 for `int4`.
    pub fn alphabet(self) -> usize {
        match self {
            QuantKind::Int8 | QuantKind::Int8Blocks { .. } | QuantKind::Int8Super { .. } => 256,
            _ => 16,
        }
    }

    /// Whether codes are `int4` (`0..16`).
    pub fn is_int4(self) -> bool {
        self.alphabet() == 16
    }

    /// The block length (the row length for per-row `int8`, given as `None`).
    pub fn block(self) -> Option<usize> {
        match self {
            QuantKind::Int8 => None,
            QuantKind::Int8Blocks { block }
            | QuantKind::Int4Symmetric { block }
            | QuantKind::Int4Asymmetric { block }
            | QuantKind::Int8Super { block, .. }
            | QuantKind::Int4Super { block, .. } => Some(block),
        }
    }

    /// Bytes of one super-block's side data (`None` without super-blocks).
    pub fn super_record(self) -> Option<usize> {
        match self {
            QuantKind::Int8Super { blocks, .. } => Some(2 + blocks),
            QuantKind::Int4Super { blocks, .. } => Some(4 + 2 * blocks),
            _ => None,
        }
    }

    /// Bytes of side data a tensor of `shape` needs.
    pub fn scales_len(self, shape: &[u64]) -> u64 {
        let (rows, cols) = rows_cols(shape);
        let blocks = |block: usize| rows * cols.div_ceil(block.max(1) as u64);
        match self {
            QuantKind::Int8 => 4 * rows,
            QuantKind::Int8Blocks { block } => 2 * blocks(block),
            QuantKind::Int4Symmetric { block } => 2 * blocks(block),
            QuantKind::Int4Asymmetric { block } => 4 * blocks(block),
            QuantKind::Int8Super { block, blocks: s } | QuantKind::Int4Super { block, blocks: s } => {
                let record = self.super_record().unwrap_or(0) as u64;
                blocks(block).div_ceil(s.max(1) as u64) * record
            }
        }
    }

    /// The scale and the minimum (0 when symmetric) of block `b` — counted over the whole
    /// tensor, `row · ⌈cols / block⌉ + column / block` — from the side data `scales` (of the
    /// length [`QuantKind::scales_len`] gives). Per-row `int8` takes `b` as the row.
    ///
    /// # Panics
    /// If `b` is past the side data.
    #[inline]
    pub fn block_scale(self, scales: &[u8], b: usize) -> (f32, f32) {
        let f16_at = |byte: usize| f16::from_bits(u16::from_le_bytes([scales[byte], scales[byte + 1]])).to_f32();
        match self {
            QuantKind::Int8 => {
                (f32::from_le_bytes([scales[4 * b], scales[4 * b + 1], scales[4 * b + 2], scales[4 * b + 3]]), 0.0)
            }
            QuantKind::Int8Blocks { .. } | QuantKind::Int4Symmetric { .. } => (f16_at(2 * b), 0.0),
            QuantKind::Int4Asymmetric { .. } => (f16_at(4 * b), f16_at(4 * b + 2)),
            QuantKind::Int8Super { blocks, .. } => {
                let base = (b / blocks) * (2 + blocks);
                (f16_at(base) * (scales[base + 2 + b % blocks] as i8) as f32, 0.0)
            }
            QuantKind::Int4Super { blocks, .. } => {
                let base = (b / blocks) * (4 + 2 * blocks);
                let j = b % blocks;
                let scale = f16_at(base) * scales[base + 4 + j] as f32;
                let min = f16_at(base + 2) * scales[base + 4 + blocks + j] as f32;
                (scale, -min)
            }
        }
    }
}

/// Decodes `int8`/`int4` tiles of one tensor to `f32`.
#[derive(Clone, Debug)]
pub struct QuantDecoder {
    kind: QuantKind,
    cols: usize,
    lanes: usize,
    table: DecodeTable,
    lane_table: LaneTable,
}

impl QuantDecoder {
    /// Prepares the decoder; `cols` is the tensor's last dimension.
    pub fn new(kind: QuantKind, cols: u64, lanes: u32, table: &FrequencyTable) -> Result<Self, String> {
        let alphabet = kind.alphabet();
        if table.freqs().len() != alphabet {
            return Err(format!("frequency table has {} entries, expected {alphabet}", table.freqs().len()));
        }
        Ok(Self::from_table(kind, cols, lanes, table.decode_table()))
    }

    /// The same decoder for tiles with `lane_table` (the tensor's [`super::RansParams`]).
    pub fn with_lane_table(mut self, lane_table: LaneTable) -> Self {
        self.lane_table = lane_table;
        self
    }

    /// A decoder from an already built slot table (e.g. one uploaded to a device).
    pub fn from_table(kind: QuantKind, cols: u64, lanes: u32, table: DecodeTable) -> Self {
        Self { kind, cols: cols.max(1) as usize, lanes: lanes as usize, table, lane_table: LaneTable::Ends32 }
    }

    /// Decodes the tile starting at element `start` into `out` (little-endian f32, 4 bytes per
    /// element). `scales` is the tensor's whole side data, already length-checked.
    pub fn decode_tile(
        &self,
        payload: &[u8],
        start: usize,
        scales: &[u8],
        out: &mut [u8],
        symbols: &mut Vec<u8>,
    ) -> Result<(), String> {
        let count = out.len() / 4;
        let tile = read_coded_tile(payload, self.lanes, 0, self.lane_table)?;
        // Every symbol is written before it is read: no need to zero them.
        if symbols.len() < count {
            symbols.resize(count, 0);
        }
        let symbols = &mut symbols[..count];
        decode_lanes(&tile.states, &tile.lane_ends, &tile.words, &self.table, LaneOutput::Symbols(symbols))
            .map_err(|e| e.to_string())?;
        // Walk row segments so the row and block indices are computed once per segment.
        let cols = self.cols;
        let simd = vector_dequant(out.len());
        #[cfg(target_arch = "x86_64")]
        let mut block_params: Vec<(f32, f32)> = Vec::new();
        let mut e = start;
        let mut done = 0;
        while done < count {
            let (row, col0) = (e / cols, e % cols);
            let len = (cols - col0).min(count - done);
            let codes = &symbols[done..done + len];
            match self.kind {
                QuantKind::Int8 => {
                    let (scale, _) = self.kind.block_scale(scales, row);
                    dequantize(codes, &mut out[4 * done..4 * (done + len)], Dequant::Int8, scale, 0.0, simd);
                }
                QuantKind::Int8Blocks { block }
                | QuantKind::Int4Symmetric { block }
                | QuantKind::Int4Asymmetric { block }
                | QuantKind::Int8Super { block, .. }
                | QuantKind::Int4Super { block, .. } => {
                    // Block by block: the scale (and minimum) are widened once per block.
                    let first_block = row * cols.div_ceil(block);
                    let asym = matches!(self.kind, QuantKind::Int4Asymmetric { .. } | QuantKind::Int4Super { .. });
                    let int8 = matches!(self.kind, QuantKind::Int8Blocks { .. } | QuantKind::Int8Super { .. });
                    let row_out = &mut out[4 * done..4 * (done + len)];
                    let how = if int8 {
                        Dequant::Int8
                    } else if asym {
                        Dequant::Int4Asymmetric
                    } else {
                        Dequant::Int4Symmetric
                    };
                    // The whole segment at once where blocks are at least a vector long: each
                    // group of 16 takes its scales from (at most) two blocks.
                    #[cfg(target_arch = "x86_64")]
                    if simd && block >= 16 && len >= 64 {
                        let (first, last) = (col0 / block, (col0 + len - 1) / block);
                        block_params.clear();
                        block_params.extend((first..=last).map(|b| self.kind.block_scale(scales, first_block + b)));
                        dequantize_blocks(codes, row_out, how, col0 - first * block, block, &block_params);
                        e += len;
                        done += len;
                        continue;
                    }
                    let mut k = 0;
                    while k < len {
                        let b = first_block + (col0 + k) / block;
                        let run = (block - (col0 + k) % block).min(len - k);
                        let codes = &codes[k..k + run];
                        let o = &mut row_out[4 * k..4 * (k + run)];
                        let (scale, min) = self.kind.block_scale(scales, b);
                        dequantize(codes, o, how, scale, min, simd);
                        k += run;
                    }
                }
            }
            e += len;
            done += len;
        }
        Ok(())
    }

    /// The decode table (uploaded as is by the GPU decoders).
    pub fn table(&self) -> &DecodeTable {
        &self.table
    }
}

/// How a code becomes a value (`FORMAT.md` §5).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Dequant {
    /// `code as i8 · scale`.
    Int8,
    /// `(code − 8) · scale`.
    Int4Symmetric,
    /// `code · scale + min`, the product rounded before the minimum is added.
    Int4Asymmetric,
}

impl Dequant {
    #[inline(always)]
    fn value(self, code: u8, scale: f32, min: f32) -> f32 {
        match self {
            Dequant::Int8 => (code as i8) as f32 * scale,
            Dequant::Int4Symmetric => (code as i32 - 8) as f32 * scale,
            Dequant::Int4Asymmetric => {
                let product = code as f32 * scale;
                product + min
            }
        }
    }
}

/// Outputs from this size on are dequantised with AVX-512 and streamed past the cache: the f32
/// output is four bytes per code, and writing it is what bounds the loop (skipping each line's
/// read-for-ownership is the gain).
const STREAM_BYTES: usize = 1 << 16;

/// Whether a tile's output of `bytes` takes the AVX-512 streaming path.
fn vector_dequant(bytes: usize) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        bytes >= STREAM_BYTES && is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = bytes;
        false
    }
}

/// Writes the value of every code as a little-endian f32 into `out` (4 bytes per code), with
/// AVX-512 when `simd` (one scale for the whole run: one block longer than it), else the portable
/// loop; both compute each value with the same two (or three) rounded f32 operations.
#[inline(always)]
fn dequantize(codes: &[u8], out: &mut [u8], how: Dequant, scale: f32, min: f32, simd: bool) {
    #[cfg(target_arch = "x86_64")]
    if simd {
        return dequantize_blocks(codes, out, how, 0, codes.len() + 16, &[(scale, min)]);
    }
    let _ = simd;
    for (o, &c) in out.chunks_exact_mut(4).zip(codes) {
        o.copy_from_slice(&how.value(c, scale, min).to_le_bytes());
    }
}

/// Dequantises a row segment whose element 0 is element `offset` of the first of `params`'
/// blocks (`block ≥ 16` elements each; `params[j]` = scale and minimum of block `j`): a portable
/// head up to a 64-byte boundary of `out`, AVX-512 groups of 16 (streamed), a portable tail.
///
/// Only called where AVX-512 F is available (`vector_dequant`).
#[cfg(target_arch = "x86_64")]
fn dequantize_blocks(codes: &[u8], out: &mut [u8], how: Dequant, offset: usize, block: usize, params: &[(f32, f32)]) {
    let at = |i: usize| params[(offset + i) / block];
    let one = |i: usize, out: &mut [u8]| {
        let (scale, min) = at(i);
        out[4 * i..4 * i + 4].copy_from_slice(&how.value(codes[i], scale, min).to_le_bytes());
    };
    let n = codes.len();
    let to_line = (out.as_ptr() as usize).wrapping_neg() % 64;
    let head = if to_line.is_multiple_of(4) { (to_line / 4).min(n) } else { 0 };
    (0..head).for_each(|i| one(i, out));
    // SAFETY: AVX-512 F is available (the caller's contract); `out` holds `4 · n` bytes and
    // `params` covers every element's block.
    let done = head
        + unsafe {
            x86::dequantize_blocks_avx512(&codes[head..], &mut out[4 * head..], how, offset + head, block, params)
        };
    (done..n).for_each(|i| one(i, out));
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::Dequant;

    /// Groups of 16 codes of a block-scaled segment (see [`super::dequantize_blocks`]); returns
    /// how many codes it wrote. A group spans at most two blocks (`block ≥ 16`): its lanes take
    /// the first block's scale and minimum up to the boundary, the second's after it.
    ///
    /// # Safety
    /// The CPU must support AVX-512 F; `out` holds at least `4 · codes.len()` bytes; `params`
    /// has an entry for the block of every element; `block ≥ 16`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn dequantize_blocks_avx512(
        codes: &[u8],
        out: &mut [u8],
        how: Dequant,
        offset: usize,
        block: usize,
        params: &[(f32, f32)],
    ) -> usize {
        let groups = codes.len() / 16;
        // SAFETY: AVX-512 F is available (the caller's contract); loads stay inside
        // `codes[..16·groups]` and `params`, stores inside `out[..64·groups]`.
        unsafe {
            let eight = _mm512_set1_epi32(8);
            let mut streamed = false;
            // Block of the group's first element, and its place in that block.
            let (mut b, mut within) = (offset / block, offset % block);
            for g in 0..groups {
                if g > 0 {
                    within += 16;
                    while within >= block {
                        within -= block;
                        b += 1;
                    }
                }
                let (s0, m0) = params[b];
                let (mut s, mut m) = (_mm512_set1_ps(s0), _mm512_set1_ps(m0));
                if within + 16 > block {
                    // Lanes from `block − within` on belong to the next block.
                    let (s1, m1) = params[b + 1];
                    let next: __mmask16 = !((1u32 << (block - within)) - 1) as u16;
                    s = _mm512_mask_mov_ps(s, next, _mm512_set1_ps(s1));
                    m = _mm512_mask_mov_ps(m, next, _mm512_set1_ps(m1));
                }
                let c = _mm_loadu_si128(codes.as_ptr().add(16 * g) as *const __m128i);
                let v = match how {
                    Dequant::Int8 => _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(c)), s),
                    Dequant::Int4Symmetric => {
                        _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_cvtepu8_epi32(c), eight)), s)
                    }
                    Dequant::Int4Asymmetric => {
                        _mm512_add_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(c)), s), m)
                    }
                };
                let o = out.as_mut_ptr().add(64 * g);
                if (o as usize).is_multiple_of(64) {
                    _mm512_stream_ps(o as *mut f32, v);
                    streamed = true;
                } else {
                    _mm512_storeu_ps(o as *mut f32, v);
                }
            }
            if streamed {
                _mm_sfence();
            }
        }
        16 * groups
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vector paths against the per-element formula: every kind, blocks that do and do not
    /// divide a vector, segments starting mid-block, outputs at every 4-byte misalignment (so
    /// both streamed and unaligned stores run), and tails.
    #[test]
    fn vector_dequantisation_matches_the_formula() {
        if !vector_dequant(usize::MAX) {
            return;
        }
        let codes: Vec<u8> = (0..1000u32).map(|i| (i.wrapping_mul(2654435761) >> 9) as u8).collect();
        for how in [Dequant::Int8, Dequant::Int4Symmetric, Dequant::Int4Asymmetric] {
            let codes: Vec<u8> =
                if how == Dequant::Int8 { codes.clone() } else { codes.iter().map(|c| c & 15).collect() };
            for block in [16usize, 32, 48, 256] {
                let params: Vec<(f32, f32)> =
                    (0..codes.len() / 16 + 2).map(|b| (0.01 + b as f32 * 1e-3, -0.05 * b as f32)).collect();
                for offset in [0usize, 3, 15, block - 1] {
                    for misalign in (0..64).step_by(4) {
                        for n in [1usize, 17, 64, 999 - offset.min(900)] {
                            let mut buf = vec![0u8; 4 * n + 64];
                            let out = &mut buf[misalign..misalign + 4 * n];
                            dequantize_blocks(&codes[..n], out, how, offset, block, &params);
                            for (i, o) in out.chunks_exact(4).enumerate() {
                                let (sc, mn) = params[(offset + i) / block];
                                let want = how.value(codes[i], sc, mn);
                                let got = f32::from_le_bytes([o[0], o[1], o[2], o[3]]);
                                assert_eq!(
                                    got.to_bits(),
                                    want.to_bits(),
                                    "block {block} offset {offset} +{misalign} n {n} i {i}"
                                );
                            }
                            let mut buf = vec![0u8; 4 * n + 64];
                            let out = &mut buf[misalign..misalign + 4 * n];
                            dequantize(&codes[..n], out, how, 0.37, -1.5, true);
                            for (i, o) in out.chunks_exact(4).enumerate() {
                                let want = how.value(codes[i], 0.37, -1.5);
                                assert_eq!(f32::from_le_bytes([o[0], o[1], o[2], o[3]]).to_bits(), want.to_bits());
                            }
                        }
                    }
                }
            }
        }
    }
}
