//! `lossless`: exponents through rANS, sign + mantissa packed raw. Bit-exact for every pattern.

use super::{code_tiles, par_histogram, EncodeOptions, EncodedTensor, Predictor, Scheme, TileSymbols};
use crate::bitpack;
use crate::dtype::{Dtype, FloatLayout};
use crate::entropy::{histogram_u16, order0_bits};
use crate::rans::{decode_lanes, DecodeTable, FrequencyTable, LaneOutput};
use crate::tile::{read_coded_tile, TileSpan};

/// Bit pattern of element `i` of little-endian float `data`.
#[inline(always)]
fn load(dtype: Dtype, data: &[u8], i: usize) -> u32 {
    match dtype.size() {
        4 => u32::from_le_bytes([data[4 * i], data[4 * i + 1], data[4 * i + 2], data[4 * i + 3]]),
        _ => u16::from_le_bytes([data[2 * i], data[2 * i + 1]]) as u32,
    }
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
    let counts = par_histogram(n, layout.alphabet(), |i| layout.split(load(dtype, data, i)).0);
    let (coder, tiles) = code_tiles(spans, &counts, opts, |span| {
        let range = span.start as usize..(span.start + span.count) as usize;
        let symbols = range.clone().map(|i| layout.split(load(dtype, data, i)).0).collect();
        let raw = bitpack::pack(range.map(|i| layout.split(load(dtype, data, i)).1), layout.raw_bits());
        TileSymbols { symbols, raw }
    })?;
    let entropy_bits = match dtype {
        Dtype::F32 => order0_bits(&counts) + 24.0 * n as f64,
        _ => order0_bits(&histogram_u16(data)),
    };
    Ok(EncodedTensor {
        name: name.into(),
        dtype,
        shape: shape.into(),
        scheme: Scheme::Lossless { coder, predictor: Predictor::None },
        tiles,
        scales: None,
        entropy_bound_bytes: (entropy_bits / 8.0).ceil() as u64,
    })
}

/// Decodes `lossless` tiles of one tensor.
#[derive(Clone, Debug)]
pub struct LosslessDecoder {
    dtype: Dtype,
    layout: FloatLayout,
    lanes: usize,
    table: DecodeTable,
}

impl LosslessDecoder {
    /// Prepares the decode table of a tensor of `dtype` from its stored parameters.
    pub fn new(dtype: Dtype, lanes: u32, table: &FrequencyTable) -> Result<Self, String> {
        let layout = dtype.float_layout().ok_or_else(|| format!("lossless tensor has non-float dtype {dtype}"))?;
        if table.freqs().len() != layout.alphabet() {
            return Err(format!(
                "frequency table has {} entries, {dtype} exponents need {}",
                table.freqs().len(),
                layout.alphabet()
            ));
        }
        Ok(Self { dtype, layout, lanes: lanes as usize, table: table.decode_table() })
    }

    /// A decoder from an already built slot table (e.g. one uploaded to a device).
    pub fn from_table(dtype: Dtype, lanes: u32, table: DecodeTable) -> Result<Self, String> {
        let layout = dtype.float_layout().ok_or_else(|| format!("lossless tensor has non-float dtype {dtype}"))?;
        Ok(Self { dtype, layout, lanes: lanes as usize, table })
    }

    /// Decodes one tile of `out.len() / dtype.size()` elements into `out` (little-endian values
    /// of the tensor's dtype). `symbols` is scratch space reused across tiles.
    pub fn decode_tile(&self, payload: &[u8], out: &mut [u8], symbols: &mut Vec<u8>) -> Result<(), String> {
        let count = out.len() / self.dtype.size();
        let raw_bits = self.layout.raw_bits();
        let tile = read_coded_tile(payload, self.lanes, bitpack::packed_len(count, raw_bits))?;
        let run = |out: LaneOutput| {
            decode_lanes(&tile.states, &tile.lane_ends, &tile.words, &self.table, out).map_err(|e| e.to_string())
        };
        if self.dtype == Dtype::BF16 {
            // Fast path: the decoder joins exponent and raw byte as it goes.
            return run(LaneOutput::Bf16 { raw: tile.raw, out });
        }
        symbols.clear();
        symbols.resize(count, 0);
        run(LaneOutput::Symbols(symbols))?;
        let l = self.layout;
        match (self.dtype, raw_bits) {
            (Dtype::F32, 24) => {
                for ((o, &e), r) in out.chunks_exact_mut(4).zip(symbols.iter()).zip(tile.raw.chunks_exact(3)) {
                    let raw = u32::from_le_bytes([r[0], r[1], r[2], 0]);
                    o.copy_from_slice(&l.join(e, raw).to_le_bytes());
                }
            }
            _ => {
                for (i, (o, &e)) in out.chunks_exact_mut(2).zip(symbols.iter()).enumerate() {
                    let raw = bitpack::get(tile.raw, i, raw_bits);
                    o.copy_from_slice(&(l.join(e, raw) as u16).to_le_bytes());
                }
            }
        }
        Ok(())
    }

    /// The decode table (uploaded as is by the GPU decoders).
    pub fn table(&self) -> &DecodeTable {
        &self.table
    }
}
