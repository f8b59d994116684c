//! `lossless`: the exponent, together with the top `k` mantissa bits (format version 2), through
//! rANS; the sign and the remaining mantissa bits packed raw. Bit-exact for every pattern.
//!
//! Why the top mantissa bits: within one exponent the mantissa of trained weights is not
//! uniform (values crowd towards the small end of each binade), so an exponent-only coder stays
//! measurably above the order-0 bound of the 16-bit values. Coding the exponent jointly with
//! its top mantissa bits captures most of that skew: on all-MiniLM-L6-v2 in BF16 the ideal cost
//! goes from 1.0076× the 16-bit bound (`k = 0`) to 1.0027× (`k = 1`), 1.0013× (`k = 2`) and
//! 1.0009× (`k = 3`). The encoder tries every `k` whose occurring values fit the 256 symbols of
//! a tile's rANS table and keeps the cheapest, table included.

use super::{code_tiles, EncodeOptions, EncodedTensor, Predictor, Scheme, TileSymbols};
use crate::bitpack;
use crate::dtype::{Dtype, FloatLayout};
use crate::entropy::{histogram_u16, order0_bits};
use crate::rans::{decode_lanes, decode_symbol_chunks, DecodeTable, FrequencyTable, LaneOutput};
use crate::tile::{read_coded_tile, LaneTable, TileSpan};

use super::join16::{self, Raw};

use rayon::prelude::*;

/// Bit pattern of element `i` of little-endian float `data`.
#[inline(always)]
fn load(dtype: Dtype, data: &[u8], i: usize) -> u32 {
    match dtype.size() {
        4 => u32::from_le_bytes([data[4 * i], data[4 * i + 1], data[4 * i + 2], data[4 * i + 3]]),
        _ => u16::from_le_bytes([data[2 * i], data[2 * i + 1]]) as u32,
    }
}

/// Header bytes a symbol costs (its value and frequency as JSON numbers), used to price a larger
/// table against the bits it saves, and a coded tensor against storing it raw.
pub(super) const TABLE_BYTES_PER_SYMBOL: u64 = 10;

/// The joint width chosen for a tensor, with its symbol values and their counts.
struct JointChoice {
    joint: u32,
    values: Vec<u32>,
    counts: Vec<u64>,
}

/// Histogram of `exponent << kmax | top kmax mantissa bits` over all elements, in parallel.
fn joint_histogram(dtype: Dtype, layout: FloatLayout, data: &[u8], kmax: u32) -> Vec<u64> {
    let n = data.len() / dtype.size();
    let size = 1usize << (layout.exp_bits + kmax);
    const CHUNK: usize = 1 << 16;
    (0..n.div_ceil(CHUNK))
        .into_par_iter()
        .map(|c| {
            let mut h = vec![0u64; size];
            for i in c * CHUNK..((c + 1) * CHUNK).min(n) {
                h[layout.split_joint(load(dtype, data, i), kmax).0 as usize] += 1;
            }
            h
        })
        .reduce(
            || vec![0u64; size],
            |mut a, b| {
                a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
                a
            },
        )
}

/// Picks the joint width with the smallest coded size — rANS cost under the quantised table, the
/// raw fields, and the table itself — preferring a byte-wide raw field within 0.1%.
fn choose_joint(dtype: Dtype, layout: FloatLayout, data: &[u8], opts: &EncodeOptions) -> Result<JointChoice, String> {
    let n = (data.len() / dtype.size()) as f64;
    // F32 keeps `k = 0`: its 24-bit raw field stays byte-aligned, which decodes about twice as
    // fast as a 21–23-bit one, for about 0.2% of size.
    let kmax = if dtype == Dtype::F32 { 0 } else { layout.max_joint_bits() };
    let wide = joint_histogram(dtype, layout, data, kmax);
    // Every width whose occurring values fit the table, with its coded size in bits.
    let mut fits: Vec<(f64, JointChoice)> = Vec::new();
    for joint in 0..=kmax {
        let group = 1usize << (kmax - joint);
        let (mut values, mut counts) = (Vec::new(), Vec::new());
        for (v, chunk) in wide.chunks(group).enumerate() {
            let c: u64 = chunk.iter().sum();
            if c > 0 {
                values.push(v as u32);
                counts.push(c);
            }
        }
        if values.is_empty() {
            // An empty tensor: one symbol that never occurs.
            values.push(0);
            counts.push(0);
        }
        if values.len() > 256 || (values.len() as u64) > 1u64 << opts.prob_bits {
            continue;
        }
        let table = FrequencyTable::from_counts(&counts, opts.prob_bits)?;
        let bits = table.cost_bits(&counts)
            + n * layout.joint_raw_bits(joint) as f64
            + (8 * TABLE_BYTES_PER_SYMBOL) as f64 * values.len() as f64;
        fits.push((bits, JointChoice { joint, values, counts }));
    }
    // `joint = 0` has at most 2^exp_bits ≤ 256 values, so a choice always exists.
    let smallest = fits.iter().map(|(b, _)| *b).fold(f64::INFINITY, f64::min);
    // A raw field of at most 8 bits (F16 with `k ≥ 3`; every BF16 width) is the fast decode
    // path: the smallest such choice wins when it costs at most 0.1% more than the smallest.
    let fast = |c: &JointChoice| layout.joint_raw_bits(c.joint) <= 8;
    let best_fast = fits.iter().filter(|(_, c)| fast(c)).map(|(b, _)| *b).fold(f64::INFINITY, f64::min);
    let target = if best_fast <= smallest * 1.001 { best_fast } else { smallest };
    let pick = fits.iter().position(|(b, _)| *b == target).ok_or("no joint width fits 256 symbols")?;
    Ok(fits.swap_remove(pick).1)
}

pub(super) fn encode(
    name: &str,
    dtype: Dtype,
    shape: &[u64],
    data: &[u8],
    spans: &[TileSpan],
    opts: &EncodeOptions,
) -> Result<EncodedTensor, String> {
    let layout = dtype.float_layout().ok_or_else(|| format!("lossless needs a float dtype, not {dtype}"))?;
    let n = data.len() / dtype.size();
    let choice = choose_joint(dtype, layout, data, opts)?;
    let joint = choice.joint;
    // Value → symbol, for the values that occur.
    let mut symbol_of = vec![0u8; 1usize << (layout.exp_bits + joint)];
    for (s, &v) in choice.values.iter().enumerate() {
        symbol_of[v as usize] = s as u8;
    }
    let raw_bits = layout.joint_raw_bits(joint);
    let (coder, tiles) = code_tiles(spans, &choice.counts, opts, |span| {
        let range = span.start as usize..(span.start + span.count) as usize;
        let split = |i: usize| layout.split_joint(load(dtype, data, i), joint);
        let symbols = range.clone().map(|i| symbol_of[split(i).0 as usize]).collect();
        let raw = bitpack::pack(range.map(|i| split(i).1), raw_bits);
        TileSymbols { symbols, raw }
    })?;
    let entropy_bits = match dtype {
        Dtype::F32 => {
            let exps = joint_histogram(dtype, layout, data, 0);
            order0_bits(&exps) + 24.0 * n as f64
        }
        _ => order0_bits(&histogram_u16(data)),
    };
    Ok(EncodedTensor {
        name: name.into(),
        dtype,
        shape: shape.into(),
        scheme: Scheme::Lossless { coder, predictor: Predictor::None, joint_bits: joint, symbols: Some(choice.values) },
        tiles,
        scales: None,
        entropy_bound_bytes: (entropy_bits / 8.0).ceil() as u64,
    })
}

/// Checks a stored symbol list against its dtype and joint width: 1..=256 strictly increasing
/// values, each below `2^(exp_bits + joint)`.
pub(crate) fn check_symbols(layout: FloatLayout, joint: u32, values: &[u32]) -> Result<(), String> {
    if joint > layout.max_joint_bits() {
        return Err(format!("joint_bits {joint} above the {} this dtype allows", layout.max_joint_bits()));
    }
    if values.is_empty() || values.len() > 256 {
        return Err(format!("{} symbol values (1..=256 allowed)", values.len()));
    }
    let limit = 1u64 << (layout.exp_bits + joint);
    if values.windows(2).any(|w| w[0] >= w[1]) || values.iter().any(|&v| v as u64 >= limit) {
        return Err(format!("symbol values must increase strictly and stay below {limit}"));
    }
    Ok(())
}

/// The raw fields of `raw8.len()` elements packed at `bits` each from the start of `packed`:
/// the bytes themselves when they are bytes, else unpacked into `raw8` (up to 8 bits) or
/// `raw16` (more).
fn unpack_raw<'a>(packed: &'a [u8], bits: u32, raw8: &'a mut [u8], raw16: &'a mut Vec<u16>) -> Raw<'a> {
    let n = raw8.len();
    if bits == 8 {
        Raw::Bytes(&packed[..n.min(packed.len())])
    } else if bits < 8 {
        bitpack::unpack_narrow(packed, bits, raw8);
        Raw::Bytes(raw8)
    } else {
        raw16.resize(n, 0);
        bitpack::unpack_wide(packed, bits, raw16);
        Raw::Words(raw16)
    }
}

/// Decodes `lossless` tiles of one tensor.
#[derive(Clone, Debug)]
pub struct LosslessDecoder {
    dtype: Dtype,
    layout: FloatLayout,
    lanes: usize,
    table: DecodeTable,
    joint: u32,
    /// Symbol → value (`exponent << joint | top mantissa bits`).
    values: Vec<u32>,
    /// For 16-bit types: each value shifted to its place (`value << low`), 256 entries.
    placed: Box<[u32; 256]>,
    /// Whether this is the version-1 BF16 layout (identity symbols, byte raw fields), which has
    /// its own fast path.
    bf16_v1: bool,
    lane_table: LaneTable,
}

impl LosslessDecoder {
    /// Prepares the decode table of a tensor of `dtype` from its stored parameters: the
    /// frequency table, the joint width and the symbol values ([`Scheme::symbol_values`]).
    pub fn new(dtype: Dtype, lanes: u32, table: &FrequencyTable, joint: u32, values: Vec<u32>) -> Result<Self, String> {
        if table.freqs().len() != values.len() {
            return Err(format!("frequency table has {} entries for {} symbols", table.freqs().len(), values.len()));
        }
        Self::from_table(dtype, lanes, table.decode_table(), joint, values)
    }

    /// A decoder from an already built slot table (e.g. one uploaded to a device), with the
    /// joint width and symbol values.
    pub fn from_table(
        dtype: Dtype,
        lanes: u32,
        table: DecodeTable,
        joint: u32,
        values: Vec<u32>,
    ) -> Result<Self, String> {
        let layout = dtype.float_layout().ok_or_else(|| format!("lossless tensor has non-float dtype {dtype}"))?;
        check_symbols(layout, joint, &values)?;
        if let Some(e) = table.entries().iter().find(|&&e| (e >> 24) as usize >= values.len()) {
            return Err(format!("slot table names symbol {} of {}", e >> 24, values.len()));
        }
        let low = layout.mant_bits - joint;
        let mut placed = Box::new([0u32; 256]);
        if dtype.size() == 2 {
            for (p, &v) in placed.iter_mut().zip(&values) {
                *p = v << low;
            }
        }
        let identity = values.iter().enumerate().all(|(s, &v)| s as u32 == v) && values.len() == 256;
        let bf16_v1 = dtype == Dtype::BF16 && joint == 0 && identity;
        Ok(Self {
            dtype,
            layout,
            lanes: lanes as usize,
            table,
            joint,
            values,
            placed,
            bf16_v1,
            lane_table: LaneTable::Ends32,
        })
    }

    /// The same decoder for tiles with `lane_table` (the tensor's [`super::RansParams`]).
    pub fn with_lane_table(mut self, lane_table: LaneTable) -> Self {
        self.lane_table = lane_table;
        self
    }

    /// Decodes one tile of `out.len() / dtype.size()` elements into `out` (little-endian values
    /// of the tensor's dtype). `scratch` is reused across tiles.
    pub fn decode_tile(&self, payload: &[u8], out: &mut [u8], scratch: &mut Vec<u8>) -> Result<(), String> {
        let count = out.len() / self.dtype.size();
        let raw_bits = self.layout.joint_raw_bits(self.joint);
        let tile = read_coded_tile(payload, self.lanes, bitpack::packed_len(count, raw_bits), self.lane_table)?;
        let run = |out: LaneOutput| {
            decode_lanes(&tile.states, &tile.lane_ends, &tile.words, &self.table, out).map_err(|e| e.to_string())
        };
        if self.bf16_v1 {
            // The decoder joins exponent and raw byte as it goes.
            return run(LaneOutput::Bf16 { raw: tile.raw, out });
        }
        let low = self.layout.mant_bits - self.joint;
        if self.dtype.size() == 2 {
            // Symbols first, then a join pass (see `join16`).
            if join16::vector_join() {
                // With AVX-512, a whole tile at a time: the join streams large outputs past the
                // cache. Every byte of both halves is written before it is read: no need to zero
                // them.
                if scratch.len() < 2 * count {
                    scratch.resize(2 * count, 0);
                }
                let (symbols, raw8) = scratch[..2 * count].split_at_mut(count);
                let mut raw16 = Vec::new();
                let raw = unpack_raw(tile.raw, raw_bits, raw8, &mut raw16);
                run(LaneOutput::Symbols(symbols))?;
                join16::join(symbols, raw, &self.placed, low, out);
                return Ok(());
            }
            // Otherwise a cache-sized chunk at a time, its raw fields unpacked beside it. The
            // chunks start at multiples of 8 elements, so their packed fields at whole bytes.
            let mut raw16 = Vec::new();
            return decode_symbol_chunks(&tile.states, &tile.lane_ends, &tile.words, &self.table, count, |start, s| {
                let packed = &tile.raw[start * raw_bits as usize / 8..];
                scratch.resize(s.len(), 0);
                let raw = unpack_raw(packed, raw_bits, scratch, &mut raw16);
                join16::join(s, raw, &self.placed, low, &mut out[2 * start..]);
            })
            .map_err(|e| e.to_string());
        }
        scratch.clear();
        scratch.resize(count, 0);
        run(LaneOutput::Symbols(scratch))?;
        let (l, joint) = (self.layout, self.joint);
        let value = |s: u8| self.values.get(s as usize).copied().unwrap_or(0);
        match raw_bits {
            24 => {
                for ((o, &s), r) in out.chunks_exact_mut(4).zip(scratch.iter()).zip(tile.raw.chunks_exact(3)) {
                    let raw = u32::from_le_bytes([r[0], r[1], r[2], 0]);
                    o.copy_from_slice(&l.join_joint(value(s), raw, joint).to_le_bytes());
                }
            }
            _ => {
                // Fields of `24 − joint` bits, read 32 bits at a time.
                let mut reader = bitpack::BitReader::new(tile.raw);
                for (o, &s) in out.chunks_exact_mut(4).zip(scratch.iter()) {
                    let raw = reader.take(raw_bits);
                    o.copy_from_slice(&l.join_joint(value(s), raw, joint).to_le_bytes());
                }
            }
        }
        Ok(())
    }

    /// The decode table (uploaded as is by the GPU decoders).
    pub fn table(&self) -> &DecodeTable {
        &self.table
    }

    /// Mantissa bits coded with the exponent.
    pub fn joint_bits(&self) -> u32 {
        self.joint
    }

    /// Each symbol's value (`exponent << joint | top mantissa bits`).
    pub fn values(&self) -> &[u32] {
        &self.values
    }
}
