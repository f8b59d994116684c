//! Per-tensor coding schemes: what a tensor's symbols are, and how a decoded tile is assembled.
//!
//! | scheme     | rANS symbol              | raw field / side data                    | decodes to |
//! |------------|--------------------------|------------------------------------------|------------|
//! | `raw`      | —                        | the bytes as stored                      | the dtype  |
//! | `lossless` | exponent + top `k` mantissa bits (v2; `k = 0` in v1) | sign + low mantissa, packed (`1+m−k` bits) | the dtype |
//! | `int8`     | `i8` code as `u8`        | one `f32` scale per row (v3: or `f16` per block; v4: `f16` × `i8` per block) | `f32` |
//! | `int4`     | code (`0..16`)           | `f16` scale (and `f16` min) per block (v4: `f16` × `u8` scale and minimum) | `f32` |

mod join16;
mod lossless;
mod quant;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::dtype::Dtype;
use crate::rans::{encode_lanes, FrequencyTable};
use crate::tile::{plan_tiles, write_coded_tile, LaneTable, TileSpan, DEFAULT_TILE_ELEMS};

pub(crate) use lossless::check_symbols;
pub use lossless::LosslessDecoder;
pub use quant::{encode_quant_codes, QuantCodes, QuantDecoder, QuantKind, MAX_SUPER_BLOCKS, MAX_SUPER_BLOCK_LEN};

/// The scheme a caller asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SchemeKind {
    /// Store the bytes as they are.
    Raw,
    /// Bit-exact: exponents rANS-coded, sign and mantissa raw.
    Lossless,
    /// Symmetric per-row int8, codes rANS-coded.
    Int8,
    /// Per-block int4 (symmetric or with a minimum), codes rANS-coded.
    Int4,
}

impl SchemeKind {
    /// Lower-case name as used on the command line and in headers.
    pub fn name(self) -> &'static str {
        match self {
            SchemeKind::Raw => "raw",
            SchemeKind::Lossless => "lossless",
            SchemeKind::Int8 => "int8",
            SchemeKind::Int4 => "int4",
        }
    }
}

impl std::fmt::Display for SchemeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Tuning knobs of the encoder; the defaults are what `ember compress` uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncodeOptions {
    /// Target elements per tile (row-aligned, so tiles may be smaller).
    pub tile_elems: usize,
    /// Interleaved rANS lanes per tile (a power of two; one GPU thread each). The most a tensor
    /// gets: one with small tiles is coded with fewer, see `min_symbols_per_lane`.
    pub lanes: u32,
    /// A tensor whose largest tile would give a lane fewer symbols than this is coded with
    /// fewer lanes (halved, down to 2 or `lanes`, whichever is less): each lane costs its state
    /// and table entry (5–6 bytes) in every tile, which a small tile does not earn back, and the
    /// CPU decoder needs many lanes only to hide its latency on long tiles. 0 keeps exactly
    /// `lanes`.
    pub min_symbols_per_lane: u32,
    /// Probability precision of the frequency tables, `8..=12`.
    pub prob_bits: u32,
    /// `int4` block length along the last dimension.
    pub int4_block: u32,
    /// `int4` with a per-block minimum (like GGUF Q4_1) instead of symmetric codes.
    pub int4_asymmetric: bool,
    /// `lossless`: store a tensor as `raw` when coding would not make it smaller (tiny norms and
    /// biases, whose lane states and table outweigh what coding saves). Still bit-exact.
    pub raw_if_smaller: bool,
    /// Tiles may store their lane word counts in 8 bits over a base (format version 5); off,
    /// tiles keep the 16-bit counts that builds reading versions 2–4 understand.
    pub counts8: bool,
}

impl Default for EncodeOptions {
    fn default() -> Self {
        Self {
            tile_elems: DEFAULT_TILE_ELEMS,
            lanes: 64,
            min_symbols_per_lane: 1024,
            prob_bits: 12,
            int4_block: 32,
            int4_asymmetric: false,
            raw_if_smaller: true,
            counts8: true,
        }
    }
}

/// Parameters of the rANS coder of one tensor, stored in its header entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RansParams {
    /// Interleaved lanes per tile.
    pub lanes: u32,
    /// Probability precision.
    pub prob_bits: u32,
    /// Symbol frequencies (one per symbol of the alphabet), summing to `2^prob_bits`.
    pub freqs: Vec<u32>,
    /// How tiles store their lanes' ends (`counts16` from format version 2).
    #[serde(default, skip_serializing_if = "LaneTable::is_default")]
    pub lane_table: LaneTable,
}

/// Value predictor applied before coding. Only `none` is shipped: a LEFT/differential predictor
/// was measured to raise, not lower, the entropy of weights (see the crate README).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Predictor {
    /// Values are coded as they are.
    None,
}

/// A tensor's scheme and its parameters, as stored in the header.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Scheme {
    /// Stored as is.
    Raw,
    /// Exponent (and, in format version 2, the top mantissa bits) rANS-coded, sign + the rest
    /// of the mantissa raw.
    Lossless {
        /// The coder.
        coder: RansParams,
        /// The predictor (always `none`).
        predictor: Predictor,
        /// Mantissa bits coded jointly with the exponent (version 2; `0` in version 1).
        #[serde(default, skip_serializing_if = "is_zero")]
        joint_bits: u32,
        /// Version 2: the value `exponent << joint_bits | top mantissa bits` of each symbol, in
        /// increasing order, one per frequency. Absent (version 1): symbol `s` is exponent `s`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        symbols: Option<Vec<u32>>,
    },
    /// Symmetric int8: one f32 scale per row, or (version 3) one f16 scale per block.
    Int8 {
        /// The coder.
        coder: RansParams,
        /// Version 3: the block length of per-block `f16` scales (`code · scale`, GGUF's
        /// `Q8_0`); absent: one `f32` scale per row.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        block: Option<u32>,
        /// Version 4: blocks per super-block, whose side data is one `f16` scale `d` and one
        /// `i8` per block, the block's scale being `d · i8` (GGUF's `Q6_K`). Needs `block`.
        #[serde(default, rename = "super", skip_serializing_if = "Option::is_none")]
        super_blocks: Option<u32>,
    },
    /// Int4 per block.
    Int4 {
        /// The coder.
        coder: RansParams,
        /// Block length along the last dimension.
        block: u32,
        /// Whether blocks carry a minimum (`code · scale + min`) or are symmetric
        /// (`(code − 8) · scale`).
        asymmetric: bool,
        /// Version 4, asymmetric only: blocks per super-block, whose side data is an `f16` `d`
        /// and `dmin` and one `u8` scale and minimum per block, the block's scale being
        /// `d · sc` and its minimum `−(dmin · m)` (GGUF's `Q4_K`).
        #[serde(default, rename = "super", skip_serializing_if = "Option::is_none")]
        super_blocks: Option<u32>,
    },
}

impl Scheme {
    /// Which kind of scheme this is.
    pub fn kind(&self) -> SchemeKind {
        match self {
            Scheme::Raw => SchemeKind::Raw,
            Scheme::Lossless { .. } => SchemeKind::Lossless,
            Scheme::Int8 { .. } => SchemeKind::Int8,
            Scheme::Int4 { .. } => SchemeKind::Int4,
        }
    }

    /// The rANS parameters, for every scheme but `raw`.
    pub fn coder(&self) -> Option<&RansParams> {
        match self {
            Scheme::Raw => None,
            Scheme::Lossless { coder, .. } | Scheme::Int8 { coder, .. } | Scheme::Int4 { coder, .. } => Some(coder),
        }
    }

    /// Number of distinct symbols the coder's table must cover for a tensor of `dtype`.
    pub fn alphabet(&self, dtype: Dtype) -> Option<usize> {
        match self {
            Scheme::Raw => None,
            Scheme::Lossless { symbols: Some(s), .. } => Some(s.len()),
            Scheme::Lossless { .. } => dtype.float_layout().map(|l| l.alphabet()),
            Scheme::Int8 { .. } => Some(256),
            Scheme::Int4 { .. } => Some(16),
        }
    }

    /// The block length of `int4` and block-scaled `int8`.
    pub fn block(&self) -> Option<u32> {
        match self {
            Scheme::Int8 { block, .. } => *block,
            Scheme::Int4 { block, .. } => Some(*block),
            _ => None,
        }
    }

    /// Blocks per super-block (format version 4), where the side data has that level.
    pub fn super_blocks(&self) -> Option<u32> {
        match self {
            Scheme::Int8 { super_blocks, .. } | Scheme::Int4 { super_blocks, .. } => *super_blocks,
            _ => None,
        }
    }

    /// Mantissa bits coded with the exponent (`lossless` version 2); 0 for every other scheme.
    pub fn joint_bits(&self) -> u32 {
        match self {
            Scheme::Lossless { joint_bits, .. } => *joint_bits,
            _ => 0,
        }
    }

    /// For `lossless`: each symbol's value (`exponent << joint_bits | top mantissa bits`), the
    /// stored list or, for a version-1 tensor, the identity over the exponents.
    pub fn symbol_values(&self, dtype: Dtype) -> Option<Vec<u32>> {
        match self {
            Scheme::Lossless { symbols: Some(s), .. } => Some(s.clone()),
            Scheme::Lossless { .. } => dtype.float_layout().map(|l| (0..l.alphabet() as u32).collect()),
            _ => None,
        }
    }

    /// The element type decoded tiles have: the stored dtype for `raw`/`lossless`, `F32` for the
    /// quantised schemes.
    pub fn decoded_dtype(&self, dtype: Dtype) -> Dtype {
        match self {
            Scheme::Raw | Scheme::Lossless { .. } => dtype,
            Scheme::Int8 { .. } | Scheme::Int4 { .. } => Dtype::F32,
        }
    }
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

/// One tensor, encoded and not yet placed in a file.
#[derive(Clone, Debug)]
pub struct EncodedTensor {
    /// The tensor's name.
    pub name: String,
    /// Its stored element type.
    pub dtype: Dtype,
    /// Its shape.
    pub shape: Vec<u64>,
    /// How it was coded.
    pub scheme: Scheme,
    /// Tiles in element order, with their payloads.
    pub tiles: CodedTiles,
    /// Side data (quantisation scales), if the scheme has any.
    pub scales: Option<Vec<u8>>,
    /// Order-0 entropy bound of the tensor's data in bytes (see `FORMAT.md`).
    pub entropy_bound_bytes: u64,
}

impl EncodedTensor {
    /// Bytes of tiles and side data.
    pub fn stored_bytes(&self) -> u64 {
        self.tiles.iter().map(|(_, p)| p.len() as u64).sum::<u64>() + self.scales.as_ref().map_or(0, |s| s.len() as u64)
    }
}

/// A tile's symbols and packed raw fields, before rANS coding.
pub(crate) struct TileSymbols {
    pub symbols: Vec<u8>,
    pub raw: Vec<u8>,
}

/// Encodes a tensor given as little-endian `data` of `dtype` and `shape` with scheme `kind`.
///
/// Fails with [`crate::CodecError::Encode`] when the data length does not match the shape, when a
/// float scheme is asked for a non-float dtype, or when a quantised scheme meets NaN or infinity.
pub fn encode_tensor(
    name: &str,
    dtype: Dtype,
    shape: &[u64],
    data: &[u8],
    kind: SchemeKind,
    opts: &EncodeOptions,
) -> crate::Result<EncodedTensor> {
    let err = |reason: String| crate::CodecError::Encode { tensor: name.to_string(), reason };
    let n = checked_elements(shape, opts).map_err(err)?;
    if (n as u128) * dtype.size() as u128 != data.len() as u128 {
        return Err(err(format!(
            "{} bytes of data for shape {shape:?} of {dtype} (expected {})",
            data.len(),
            n as u128 * dtype.size() as u128
        )));
    }
    if kind != SchemeKind::Raw && dtype.float_layout().is_none() {
        return Err(err(format!("scheme {kind} needs a F32, F16 or BF16 tensor, not {dtype}")));
    }
    if kind == SchemeKind::Int4 && opts.int4_block == 0 {
        return Err(err("int4 block length must be at least 1".into()));
    }
    let align = if kind == SchemeKind::Int4 { opts.int4_block as u64 } else { 1 };
    let spans = plan_tiles(shape, opts.tile_elems as u64, align);
    let mut out = match kind {
        SchemeKind::Raw => raw_tensor(name, dtype, shape, data, &spans),
        SchemeKind::Lossless => {
            let coded = lossless::encode(name, dtype, shape, data, &spans, opts).map_err(err)?;
            // A tiny tensor (a norm, a bias) can cost more coded than stored: its lane states
            // and table outweigh what entropy coding saves. Store it as it is then; it is
            // still bit-exact, and it decodes by a copy.
            let symbols = coded.scheme.alphabet(dtype).unwrap_or(0) as u64;
            let coded_cost = coded.stored_bytes() + lossless::TABLE_BYTES_PER_SYMBOL * symbols;
            let raw = raw_tensor(name, dtype, shape, data, &spans);
            if opts.raw_if_smaller && coded_cost >= raw.stored_bytes() {
                EncodedTensor { entropy_bound_bytes: coded.entropy_bound_bytes, ..raw }
            } else {
                coded
            }
        }
        SchemeKind::Int8 | SchemeKind::Int4 => {
            quant::encode(name, dtype, shape, data, &spans, kind, opts).map_err(err)?
        }
    };
    pad_to_min_payload(&mut out, n);
    Ok(out)
}

/// The element count of `shape`, checked for overflow, after checking the lane count of `opts`:
/// what every encoder checks first.
pub(crate) fn checked_elements(shape: &[u64], opts: &EncodeOptions) -> Result<u64, String> {
    let n =
        shape.iter().try_fold(1u64, |a, &d| a.checked_mul(d)).ok_or_else(|| format!("shape {shape:?} overflows"))?;
    if !opts.lanes.is_power_of_two() || opts.lanes > crate::tile::MAX_LANES {
        return Err(format!("lanes must be a power of two up to {}, got {}", crate::tile::MAX_LANES, opts.lanes));
    }
    Ok(n)
}

/// `data` stored as it is, tile by tile (each payload zero-padded to a multiple of 4 bytes).
fn raw_tensor(name: &str, dtype: Dtype, shape: &[u64], data: &[u8], spans: &[TileSpan]) -> EncodedTensor {
    let size = dtype.size();
    let tiles = spans
        .iter()
        .map(|s| {
            let mut p = data[s.start as usize * size..(s.start + s.count) as usize * size].to_vec();
            p.resize(p.len().next_multiple_of(4), 0);
            (*s, p)
        })
        .collect();
    EncodedTensor {
        name: name.into(),
        dtype,
        shape: shape.into(),
        scheme: Scheme::Raw,
        tiles,
        scales: None,
        entropy_bound_bytes: data.len() as u64,
    }
}

/// Pads the last tile so a tensor never stores fewer than `n / MAX_EXPANSION` bytes: the reader
/// enforces that bound so that a forged header cannot make it allocate far more than the file
/// justifies. Only degenerate (near-constant) tensors ever need the padding.
fn pad_to_min_payload(t: &mut EncodedTensor, n: u64) {
    let min = n.div_ceil(crate::container::MAX_EXPANSION);
    let stored = t.stored_bytes();
    if stored < min {
        if let Some((_, last)) = t.tiles.last_mut() {
            let new_len = (last.len() as u64 + (min - stored)).next_multiple_of(4);
            last.resize(new_len as usize, 0);
        }
    }
}

/// Tiles in element order, each with its payload.
pub type CodedTiles = Vec<(TileSpan, Vec<u8>)>;

/// Builds the frequency table from symbol counts and codes every tile in parallel.
pub(crate) fn code_tiles(
    spans: &[TileSpan],
    counts: &[u64],
    opts: &EncodeOptions,
    tile_symbols: impl Fn(TileSpan) -> TileSymbols + Sync,
) -> Result<(RansParams, CodedTiles), String> {
    let table = FrequencyTable::from_counts(counts, opts.prob_bits)?;
    let largest = spans.iter().map(|s| s.count).max().unwrap_or(0);
    let lanes = lanes_for(opts.lanes, largest, opts.min_symbols_per_lane) as usize;
    let coded: Vec<_> = spans
        .par_iter()
        .map(|&span| {
            let ts = tile_symbols(span);
            let streams = encode_lanes(&ts.symbols, lanes, &table);
            let (ends, words) = streams.concat_words();
            (span, streams.states, ends, ts.raw, words)
        })
        .collect();
    // The smallest lane table every tile allows: 8-bit counts over a base (version 5) where
    // the lanes' word counts stay within 255 of each other, else 16-bit counts (version 2),
    // else 32-bit ends.
    let lane_table = coded
        .iter()
        .map(|(_, _, ends, _, _)| {
            let counts: Vec<u32> = ends.iter().scan(0u32, |prev, &e| Some(e - std::mem::replace(prev, e))).collect();
            LaneTable::smallest_for(&counts, opts.counts8)
        })
        .max_by_key(|t| match t {
            LaneTable::Counts8 => 0,
            LaneTable::Counts16 => 1,
            LaneTable::Ends32 => 2,
        })
        .unwrap_or(LaneTable::Counts16);
    let tiles = coded
        .into_par_iter()
        .map(|(span, states, ends, raw, words)| (span, write_coded_tile(&states, &ends, &raw, &words, lane_table)))
        .collect();
    Ok((
        RansParams { lanes: lanes as u32, prob_bits: opts.prob_bits, freqs: table.freqs().to_vec(), lane_table },
        tiles,
    ))
}

/// The lanes a tensor whose largest tile holds `largest` elements is coded with: `max`, halved
/// (down to [`MIN_LANES`]) while a lane would decode fewer than `min_per_lane` symbols
/// ([`EncodeOptions::min_symbols_per_lane`]).
/// The fewest lanes the encoder halves down to: a GPU cube writes 16-bit values in pairs of
/// lanes, and each lane more costs 6 bytes per tile, which on a 384-element norm is 5%.
const MIN_LANES: u32 = 2;

fn lanes_for(max: u32, largest: u64, min_per_lane: u32) -> u32 {
    let mut lanes = max;
    while lanes > MIN_LANES && largest < u64::from(lanes) * u64::from(min_per_lane) {
        lanes /= 2;
    }
    lanes
}

/// Counts symbols over all elements in parallel.
pub(crate) fn par_histogram(n: usize, alphabet: usize, symbol: impl Fn(usize) -> u8 + Sync) -> Vec<u64> {
    const CHUNK: usize = 1 << 16;
    (0..n.div_ceil(CHUNK))
        .into_par_iter()
        .map(|c| {
            let mut h = vec![0u64; 256];
            for i in c * CHUNK..((c + 1) * CHUNK).min(n) {
                h[symbol(i) as usize] += 1;
            }
            h
        })
        .reduce(
            || vec![0u64; 256],
            |mut a, b| {
                a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
                a
            },
        )
        .into_iter()
        .take(alphabet)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::lanes_for;

    #[test]
    fn small_tiles_get_fewer_lanes_but_never_fewer_than_two_or_asked() {
        assert_eq!(lanes_for(64, 1 << 17, 1024), 64);
        assert_eq!(lanes_for(64, 65_536, 1024), 64);
        assert_eq!(lanes_for(64, 65_535, 1024), 32);
        assert_eq!(lanes_for(64, 8192, 1024), 8);
        assert_eq!(lanes_for(64, 384, 1024), 2);
        assert_eq!(lanes_for(64, 0, 1024), 2);
        assert_eq!(lanes_for(4, 10, 1024), 2);
        assert_eq!(lanes_for(1, 10, 1024), 1);
        assert_eq!(lanes_for(1024, 1 << 22, 1024), 1024);
        assert_eq!(lanes_for(32, 10, 0), 32);
    }
}
