//! The codes and scales of `Q4_0`, `Q4_1` and `Q8_0` tensors, unpacked but not dequantized, so
//! that a converter can re-code them without moving a value off the grid the GGUF put it on.
//!
//! All three store 32-element blocks: an `f16` scale `d` (and, for `Q4_1`, an `f16` minimum
//! `m`), then the codes: for the 4-bit types 16 bytes whose low nibbles are elements 0–15 and
//! high nibbles elements 16–31, for `Q8_0` 32 `i8`s. Dequantization is `(q − 8) · d` (`Q4_0`),
//! `q · d + m` (`Q4_1`) and `q · d` (`Q8_0`).

use crate::{GgmlType, GgufError};

/// A `Q4_0`, `Q4_1` or `Q8_0` tensor as codes and per-block side data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockCodes {
    /// Which of the three types.
    pub ggml_type: GgmlType,
    /// One code per element, row-major: `0..16` for the 4-bit types, an `i8` as its byte for
    /// `Q8_0`.
    pub codes: Vec<u8>,
    /// Per block, in element order: the `f16` scale's little-endian bytes, followed for
    /// `Q4_1` by the `f16` minimum's.
    pub scales: Vec<u8>,
}

impl BlockCodes {
    /// Elements per block.
    pub const BLOCK: usize = 32;

    /// Side-data bytes per block: 4 for `Q4_1`, else 2.
    pub fn scale_bytes_per_block(&self) -> usize {
        if self.ggml_type == GgmlType::Q4_1 {
            4
        } else {
            2
        }
    }

    /// Undoes llama.cpp's Q/K row permutation (see [`crate::unpermute_qk`]) on the codes and
    /// the scales alike. `rows` must split into `n_head` heads of an even size and every row
    /// must hold whole blocks (checked: an error rather than a panic).
    pub fn unpermute_rows(&mut self, rows: usize, n_head: usize) -> Result<(), GgufError> {
        let bad = |msg: String| GgufError::BadBlocks { ggml_type: self.ggml_type, msg };
        if rows == 0 || n_head == 0 || !rows.is_multiple_of(2 * n_head) || !self.codes.len().is_multiple_of(rows) {
            return Err(bad(format!("{} codes do not split into {rows} rows of {n_head} heads", self.codes.len())));
        }
        let cols = self.codes.len() / rows;
        if !cols.is_multiple_of(Self::BLOCK) {
            return Err(bad(format!("rows of {cols} elements are not whole blocks of {}", Self::BLOCK)));
        }
        let row_scale_bytes = cols / Self::BLOCK * self.scale_bytes_per_block();
        self.codes = crate::unpermute_qk(&self.codes, rows, cols, n_head);
        self.scales = crate::unpermute_qk(&self.scales, rows, row_scale_bytes, n_head);
        Ok(())
    }
}

/// The codes of `n_elems` elements of type `t` stored in `bytes`, or `None` when `t` is not
/// `Q4_0`, `Q4_1` or `Q8_0`. Fails like [`crate::dequant::dequantize`] when `bytes` is not
/// exactly the blocks of `n_elems` elements.
pub fn block_codes(t: GgmlType, bytes: &[u8], n_elems: usize) -> Result<Option<BlockCodes>, GgufError> {
    let head = match t {
        GgmlType::Q4_0 | GgmlType::Q8_0 => 2,
        GgmlType::Q4_1 => 4,
        _ => return Ok(None),
    };
    crate::dequant::check_blocks(t, bytes, n_elems)?;
    let blocks = bytes.chunks_exact(t.block_bytes());
    let mut codes = vec![0u8; n_elems];
    let mut scales = Vec::with_capacity(blocks.len() * head);
    for (block, out) in blocks.zip(codes.chunks_exact_mut(BlockCodes::BLOCK)) {
        scales.extend_from_slice(&block[..head]);
        if t == GgmlType::Q8_0 {
            out.copy_from_slice(&block[head..head + BlockCodes::BLOCK]);
            continue;
        }
        let (low, high) = out.split_at_mut(16);
        for ((&q, l), h) in block[head..head + 16].iter().zip(low).zip(high) {
            *l = q & 0x0f;
            *h = q >> 4;
        }
    }
    Ok(Some(BlockCodes { ggml_type: t, codes, scales }))
}

#[cfg(test)]
mod tests {
    use half::f16;

    use super::*;
    use crate::dequant::dequantize;

    /// Blocks with varied scales, minima and codes.
    fn blocks(t: GgmlType, n_blocks: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for b in 0..n_blocks {
            out.extend(f16::from_f32(0.01 + b as f32 * 0.37).to_le_bytes());
            if t == GgmlType::Q4_1 {
                out.extend(f16::from_f32(-0.5 + b as f32 * 0.11).to_le_bytes());
            }
            let n = if t == GgmlType::Q8_0 { 32 } else { 16 };
            out.extend((0..n as u8).map(|j| j.wrapping_mul(37).wrapping_add(b as u8 * 11)));
        }
        out
    }

    /// The codes and scales reproduce the dequantizer's values bit for bit, through ember's
    /// arithmetic (`(q − 8) · d`, `q · d + m`, `q · d`).
    #[test]
    fn codes_dequantize_to_the_same_values() {
        for t in [GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q8_0] {
            let bytes = blocks(t, 5);
            let n = 5 * 32;
            let want = dequantize(t, &bytes, n).unwrap();
            let c = block_codes(t, &bytes, n).unwrap().unwrap();
            assert_eq!(c.codes.len(), n);
            let per = c.scale_bytes_per_block();
            assert_eq!(c.scales.len(), 5 * per);
            let f16_at = |i: usize| f16::from_le_bytes([c.scales[i], c.scales[i + 1]]).to_f32();
            for (i, (&q, &w)) in c.codes.iter().zip(&want).enumerate() {
                let b = i / 32;
                let got = match t {
                    GgmlType::Q4_1 => q as f32 * f16_at(per * b) + f16_at(per * b + 2),
                    GgmlType::Q4_0 => (q as i32 - 8) as f32 * f16_at(per * b),
                    _ => (q as i8) as f32 * f16_at(per * b),
                };
                assert!(t == GgmlType::Q8_0 || q < 16);
                assert_eq!(got.to_bits(), w.to_bits(), "{t} element {i}");
            }
        }
    }

    #[test]
    fn other_types_and_bad_lengths() {
        assert_eq!(block_codes(GgmlType::Q5_0, &[0; 22], 32).unwrap(), None);
        assert_eq!(block_codes(GgmlType::Q4_K, &[0; 144], 256).unwrap(), None);
        assert!(block_codes(GgmlType::Q4_0, &[0; 17], 32).is_err());
        assert!(block_codes(GgmlType::Q4_1, &[0; 20], 33).is_err());
        assert!(block_codes(GgmlType::Q8_0, &[0; 33], 32).is_err());
    }

    /// Un-permuting codes moves each row's codes and scales together, like the values.
    #[test]
    fn unpermute_moves_codes_and_scales_with_their_rows() {
        let t = GgmlType::Q4_1;
        let (rows, cols, heads) = (8, 64, 2);
        let bytes = blocks(t, rows * cols / 32);
        let values = dequantize(t, &bytes, rows * cols).unwrap();
        let want = crate::unpermute_qk(&values, rows, cols, heads);
        let mut c = block_codes(t, &bytes, rows * cols).unwrap().unwrap();
        c.unpermute_rows(rows, heads).unwrap();
        let f16_at = |i: usize| f16::from_le_bytes([c.scales[i], c.scales[i + 1]]).to_f32();
        for (i, &w) in want.iter().enumerate() {
            let b = i / 32;
            let got = c.codes[i] as f32 * f16_at(4 * b) + f16_at(4 * b + 2);
            assert_eq!(got.to_bits(), w.to_bits(), "element {i}");
        }
        assert!(c.unpermute_rows(3, 2).is_err());
        assert!(c.unpermute_rows(0, 1).is_err());
    }
}
