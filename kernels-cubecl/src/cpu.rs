//! The CPU path of the decode op: the reference decoders of `ember-codec` run over the same
//! batch buffers the GPU kernel reads, so both paths take the same inputs and give the same bits.

use ember_codec::dtype::Dtype;
use ember_codec::rans::DecodeTable;
use ember_codec::schemes::{LosslessDecoder, QuantDecoder, QuantKind};
use ember_codec::tile::LaneTable;

use std::borrow::Cow;
use std::collections::hash_map::Entry;
use std::collections::HashMap;

use rayon::prelude::*;

use crate::batch::{desc, KernelScheme, OutputKind, DESC_WORDS};

/// The little-endian bytes of a word buffer, borrowed where the machine is little-endian.
fn bytes_of(words: &[u32]) -> Cow<'_, [u8]> {
    if cfg!(target_endian = "little") {
        Cow::Borrowed(bytemuck::cast_slice(words))
    } else {
        Cow::Owned(words.iter().flat_map(|w| w.to_le_bytes()).collect())
    }
}

/// A tile's decoder, built once per tensor (table offset, probability bits, columns, block) and
/// shared by its tiles: building one validates and copies up to 4096 table entries.
enum TileDecoder {
    Lossless(LosslessDecoder, Dtype),
    Quant(QuantDecoder),
    Raw(Dtype),
}

type DecoderKey = (u32, u32, u32, u32, u32);

fn decoder_key(d: &[u32]) -> DecoderKey {
    (d[desc::TABLE], d[desc::PROB_BITS], d[desc::COLS], d[desc::BLOCK], d[desc::SYMBOLS])
}

fn build_decoder(tables: &[u32], scheme: KernelScheme, lanes: usize, d: &[u32]) -> Result<TileDecoder, String> {
    let table = || {
        let (off, bits) = (d[desc::TABLE] as usize, d[desc::PROB_BITS]);
        let entries = tables.get(off..off + (1usize << bits.min(12))).ok_or("table outside the tables")?;
        DecodeTable::from_entries(bits, entries.to_vec())
    };
    let lane_table = LaneTable::from_code(d[desc::SYMBOLS] >> desc::LANE_TABLE_SHIFT & 3)
        .ok_or("unknown lane table in a descriptor")?;
    let lossless = |dtype: Dtype| -> Result<TileDecoder, String> {
        let (off, bits) = (d[desc::TABLE] as usize, d[desc::PROB_BITS]);
        let (joint, symbols) = (d[desc::SYMBOLS] & 0xff, ((d[desc::SYMBOLS] >> 8) & 0x1ff) as usize);
        let start = off + (1usize << bits.min(12));
        let values = tables.get(start..start + symbols).ok_or("symbol values outside the tables")?;
        let decoder = LosslessDecoder::from_table(dtype, lanes as u32, table()?, joint, values.to_vec())?;
        Ok(TileDecoder::Lossless(decoder.with_lane_table(lane_table), dtype))
    };
    Ok(match scheme {
        KernelScheme::LosslessBf16 => lossless(Dtype::BF16)?,
        KernelScheme::LosslessF16 => lossless(Dtype::F16)?,
        KernelScheme::LosslessF32 => lossless(Dtype::F32)?,
        KernelScheme::Int8
        | KernelScheme::Int8Blocks
        | KernelScheme::Int4Symmetric
        | KernelScheme::Int4Asymmetric
        | KernelScheme::Int8Super
        | KernelScheme::Int4Super => {
            let (block, blocks) = desc::unpack_block(d[desc::BLOCK], scheme);
            let kind = match scheme {
                KernelScheme::Int8 => QuantKind::Int8,
                KernelScheme::Int8Blocks => QuantKind::Int8Blocks { block },
                KernelScheme::Int4Symmetric => QuantKind::Int4Symmetric { block },
                KernelScheme::Int8Super => QuantKind::Int8Super { block, blocks },
                KernelScheme::Int4Super => QuantKind::Int4Super { block, blocks },
                _ => QuantKind::Int4Asymmetric { block },
            };
            let q = QuantDecoder::from_table(kind, d[desc::COLS] as u64, lanes as u32, table()?);
            TileDecoder::Quant(q.with_lane_table(lane_table))
        }
        KernelScheme::RawBf16 => TileDecoder::Raw(Dtype::BF16),
        KernelScheme::RawF16 => TileDecoder::Raw(Dtype::F16),
        KernelScheme::RawF32 => TileDecoder::Raw(Dtype::F32),
    })
}

/// Why a host decode failed, and in which tile of the batch when the failure is a tile's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostDecodeError {
    /// The batch tile (index into the descriptors), when one tile failed.
    pub tile: Option<usize>,
    /// What was wrong.
    pub reason: String,
}

impl std::fmt::Display for HostDecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.tile {
            Some(t) => write!(f, "batch tile {t}: {}", self.reason),
            None => f.write_str(&self.reason),
        }
    }
}

impl std::error::Error for HostDecodeError {}

impl From<String> for HostDecodeError {
    fn from(reason: String) -> Self {
        Self { tile: None, reason }
    }
}

impl From<&str> for HostDecodeError {
    fn from(reason: &str) -> Self {
        reason.to_string().into()
    }
}

/// Writes `native` values of `dtype` into `dst` as little-endian f32.
fn widen_into(native: &[u8], dtype: Dtype, dst: &mut [u8]) -> Result<(), String> {
    let pairs = dst.chunks_exact_mut(4);
    match dtype {
        Dtype::BF16 => pairs
            .zip(native.chunks_exact(2))
            .for_each(|(o, b)| o.copy_from_slice(&(u32::from(u16::from_le_bytes([b[0], b[1]])) << 16).to_le_bytes())),
        Dtype::F16 => pairs.zip(native.chunks_exact(2)).for_each(|(o, b)| {
            o.copy_from_slice(&half::f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32().to_le_bytes())
        }),
        Dtype::F32 => dst.copy_from_slice(native.get(..dst.len()).ok_or("native values shorter than the output")?),
        other => return Err(format!("{other} is not a float dtype")),
    }
    Ok(())
}

/// Decodes every tile of a batch into `out` (4 bytes per element for [`OutputKind::F32`],
/// 2 for [`OutputKind::Native16`]). The buffers are those of [`crate::batch::DecodeBatch`].
///
/// Tiles decode in parallel, each straight into its own slice of `out`: the tile payloads are
/// read in place (no per-tile copy) and a decoder is built once per tensor, so on the CPU path
/// the cost is the entropy decoder's own.
#[allow(clippy::too_many_arguments)]
pub fn decode_batch_host(
    data: &[u32],
    tiles: &[u32],
    tables: &[u32],
    scales: &[u32],
    scheme: KernelScheme,
    output: OutputKind,
    lanes: usize,
    out: &mut [u8],
) -> Result<(), HostDecodeError> {
    if !tiles.len().is_multiple_of(DESC_WORDS) {
        return Err("tile descriptors are not a whole number of records".into());
    }
    let scales = bytes_of(scales);
    let data_bytes = bytes_of(data);
    let descs: Vec<&[u32]> = tiles.chunks_exact(DESC_WORDS).collect();
    let mut decoders: HashMap<DecoderKey, TileDecoder> = HashMap::new();
    for (t, d) in descs.iter().enumerate() {
        if let Entry::Vacant(slot) = decoders.entry(decoder_key(d)) {
            let decoder =
                build_decoder(tables, scheme, lanes, d).map_err(|reason| HostDecodeError { tile: Some(t), reason })?;
            slot.insert(decoder);
        }
    }
    // Each tile's slice of the output: tiles are in output order and never overlap.
    let width = match output {
        OutputKind::F32 => 4,
        OutputKind::Native16 => 2,
    };
    let mut slices = Vec::with_capacity(descs.len());
    let (mut rest, mut at) = (out, 0usize);
    for d in &descs {
        let (off, count) = (d[desc::OUT] as usize, d[desc::COUNT] as usize);
        let skip = off.checked_sub(at).ok_or("tiles out of output order")? * width;
        let len = count * width;
        if rest.len() < skip + len {
            return Err("output too small".into());
        }
        let (dst, tail) = std::mem::take(&mut rest)[skip..].split_at_mut(len);
        slices.push(dst);
        rest = tail;
        at = off + count;
    }
    slices.into_par_iter().enumerate().try_for_each_init(
        || (Vec::new(), Vec::new()),
        |(scratch, native), (t, dst)| {
            let d = descs[t];
            let decoder = &decoders[&decoder_key(d)];
            let begin = d[desc::PAYLOAD] as usize;
            let end = tiles.get((t + 1) * DESC_WORDS + desc::PAYLOAD).map_or(data.len(), |&next| next as usize);
            let at = |reason: String| HostDecodeError { tile: Some(t), reason };
            let payload =
                data_bytes.get(4 * begin..4 * end).ok_or_else(|| at("tile payload outside the data".into()))?;
            decode_tile_into(decoder, payload, d, &scales, output, dst, scratch, native).map_err(at)
        },
    )
}

/// Decodes one tile into `dst`, its slice of the output.
#[allow(clippy::too_many_arguments)]
fn decode_tile_into(
    decoder: &TileDecoder,
    payload: &[u8],
    d: &[u32],
    scales: &[u8],
    output: OutputKind,
    dst: &mut [u8],
    scratch: &mut Vec<u8>,
    native: &mut Vec<u8>,
) -> Result<(), String> {
    let count = d[desc::COUNT] as usize;
    match decoder {
        TileDecoder::Quant(q) => {
            let s = scales.get(4 * d[desc::SCALES] as usize..).ok_or("scales outside the buffer")?;
            // Quantised tiles decode to f32: straight into the output.
            if output != OutputKind::F32 {
                return Err("quantised tiles only decode to f32".into());
            }
            q.decode_tile(payload, d[desc::START] as usize, s, dst, scratch)
        }
        TileDecoder::Lossless(l, dtype) => {
            let dtype = *dtype;
            if output == OutputKind::Native16 || dtype == Dtype::F32 {
                return l.decode_tile(payload, dst, scratch);
            }
            native.clear();
            native.resize(count * dtype.size(), 0);
            l.decode_tile(payload, native, scratch)?;
            widen_into(native, dtype, dst)
        }
        TileDecoder::Raw(dtype) => {
            let raw = payload.get(..count * dtype.size()).ok_or("raw tile shorter than its count")?;
            if output == OutputKind::Native16 || *dtype == Dtype::F32 {
                dst.copy_from_slice(raw.get(..dst.len()).ok_or("raw tile shorter than its count")?);
                Ok(())
            } else {
                widen_into(raw, *dtype, dst)
            }
        }
    }
}
