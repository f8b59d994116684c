//! The CPU path of the decode op: the reference decoders of `ember-codec` run over the same
//! batch buffers the GPU kernel reads, so both paths take the same inputs and give the same bits.

use ember_codec::dtype::Dtype;
use ember_codec::rans::DecodeTable;
use ember_codec::schemes::{LosslessDecoder, QuantDecoder, QuantKind};

use rayon::prelude::*;

use crate::batch::{desc, KernelScheme, OutputKind, DESC_WORDS};

fn bytes_of(words: &[u32]) -> Vec<u8> {
    words.iter().flat_map(|w| w.to_le_bytes()).collect()
}

/// Decodes every tile of a batch into `out` (4 bytes per element for [`OutputKind::F32`],
/// 2 for [`OutputKind::Native16`]). The buffers are those of [`crate::batch::DecodeBatch`].
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
) -> Result<(), String> {
    let scales = bytes_of(scales);
    // Tiles decode in parallel; each yields (first output element, native bytes, their dtype).
    let decoded: Vec<(usize, Vec<u8>, Dtype)> = tiles
        .par_chunks_exact(DESC_WORDS)
        .enumerate()
        .map_init(Vec::new, |scratch, (t, d)| decode_tile(data, tiles, tables, &scales, scheme, lanes, t, d, scratch))
        .collect::<Result<_, String>>()?;
    for (out_off, native, native_dtype) in decoded {
        let count = native.len() / native_dtype.size();
        match output {
            OutputKind::Native16 => {
                let dst = out.get_mut(2 * out_off..2 * (out_off + count)).ok_or("output too small")?;
                dst.copy_from_slice(&native);
            }
            OutputKind::F32 => {
                let dst = out.get_mut(4 * out_off..4 * (out_off + count)).ok_or("output too small")?;
                for (i, o) in dst.chunks_exact_mut(4).enumerate() {
                    let v = native_dtype.read_f32(&native, i).ok_or("not a float")?;
                    o.copy_from_slice(&v.to_le_bytes());
                }
            }
        }
    }
    Ok(())
}

/// Decodes tile `t` (descriptor `d`) to its native values.
#[allow(clippy::too_many_arguments)]
fn decode_tile(
    data: &[u32],
    tiles: &[u32],
    tables: &[u32],
    scales: &[u8],
    scheme: KernelScheme,
    lanes: usize,
    t: usize,
    d: &[u32],
    scratch: &mut Vec<u8>,
) -> Result<(usize, Vec<u8>, Dtype), String> {
    let (payload, count, out_off) = (d[desc::PAYLOAD] as usize, d[desc::COUNT] as usize, d[desc::OUT] as usize);
    let tile_words = tiles.get((t + 1) * DESC_WORDS + desc::PAYLOAD).map_or(data.len(), |&next| next as usize);
    let payload = bytes_of(data.get(payload..tile_words).ok_or("tile payload outside the data")?);
    let table = || {
        let (off, bits) = (d[desc::TABLE] as usize, d[desc::PROB_BITS]);
        let entries = tables.get(off..off + (1usize << bits.min(12))).ok_or("table outside the tables")?;
        DecodeTable::from_entries(bits, entries.to_vec())
    };
    // Native decoded values: the dtype's bytes (lossless, raw) or f32 (quantised).
    let (native, native_dtype) = match scheme {
        KernelScheme::LosslessBf16 | KernelScheme::LosslessF16 | KernelScheme::LosslessF32 => {
            let dtype = match scheme {
                KernelScheme::LosslessBf16 => Dtype::BF16,
                KernelScheme::LosslessF16 => Dtype::F16,
                _ => Dtype::F32,
            };
            let mut v = vec![0u8; count * dtype.size()];
            LosslessDecoder::from_table(dtype, lanes as u32, table()?)?.decode_tile(&payload, &mut v, scratch)?;
            (v, dtype)
        }
        KernelScheme::Int8 | KernelScheme::Int4Symmetric | KernelScheme::Int4Asymmetric => {
            let block = d[desc::BLOCK] as usize;
            let kind = match scheme {
                KernelScheme::Int8 => QuantKind::Int8,
                KernelScheme::Int4Symmetric => QuantKind::Int4Symmetric { block },
                _ => QuantKind::Int4Asymmetric { block },
            };
            let mut v = vec![0u8; count * 4];
            let s = scales.get(4 * d[desc::SCALES] as usize..).ok_or("scales outside the buffer")?;
            QuantDecoder::from_table(kind, d[desc::COLS] as u64, lanes as u32, table()?).decode_tile(
                &payload,
                d[desc::START] as usize,
                s,
                &mut v,
                scratch,
            )?;
            (v, Dtype::F32)
        }
        KernelScheme::RawBf16 | KernelScheme::RawF16 | KernelScheme::RawF32 => {
            let dtype = match scheme {
                KernelScheme::RawBf16 => Dtype::BF16,
                KernelScheme::RawF16 => Dtype::F16,
                _ => Dtype::F32,
            };
            let v = payload.get(..count * dtype.size()).ok_or("raw tile shorter than its count")?.to_vec();
            (v, dtype)
        }
    };
    Ok((out_off, native, native_dtype))
}
