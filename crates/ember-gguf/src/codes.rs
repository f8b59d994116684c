//! The codes and scales of the GGUF block types whose arithmetic ember's `int8`/`int4` schemes
//! reproduce, unpacked but not dequantized, so that a converter can re-code them without moving
//! a value off the grid the GGUF put it on.
//!
//! - `Q4_0`, `Q4_1`, `Q8_0`, `Q5_0`: 32-element blocks, an `f16` scale `d` (and for `Q4_1` an
//!   `f16` minimum `m`) per block. Dequantization `(q − 8) · d`, `q · d + m`, `q · d` and
//!   `(q − 16) · d`; `Q5_0`'s codes are kept centred (`q − 16`, an `i8`).
//! - `Q4_K`: 256-element super-blocks of eight 32-element blocks, `f16` `d` and `dmin`, a 6-bit
//!   scale `sc` and minimum `m` per block: `(d · sc) · q − dmin · m`.
//! - `Q6_K`: 256-element super-blocks of sixteen 16-element blocks, an `f16` `d` and an `i8`
//!   scale per block: `(d · sc) · (q − 32)`; codes kept centred.

use crate::{GgmlType, GgufError};

/// A tensor of one of the types above as codes and side data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockCodes {
    /// Which type.
    pub ggml_type: GgmlType,
    /// One code per element, row-major: `0..16` for the 4-bit types, an `i8` as its byte for
    /// the others (`Q5_0` and `Q6_K` centred: `q − 16`, `q − 32`).
    pub codes: Vec<u8>,
    /// The side data, in element order. Per 32-element block: the `f16` scale's little-endian
    /// bytes, followed for `Q4_1` by the `f16` minimum's. Per 256-element super-block: for
    /// `Q4_K` `d`, `dmin` (`f16`), eight `u8` scales, eight `u8` minima (20 bytes); for `Q6_K`
    /// `d` (`f16`) and sixteen `i8` scales (18 bytes).
    pub scales: Vec<u8>,
}

impl BlockCodes {
    /// Elements per block of the 32-element types.
    pub const BLOCK: usize = 32;

    /// Elements per block and blocks per super-block (1 for the 32-element types): `(32, 1)`,
    /// `(32, 8)` for `Q4_K`, `(16, 16)` for `Q6_K`.
    pub fn blocks(&self) -> (usize, usize) {
        match self.ggml_type {
            GgmlType::Q4_K => (32, 8),
            GgmlType::Q6_K => (16, 16),
            _ => (Self::BLOCK, 1),
        }
    }

    /// Elements covered by one side-data record and its bytes: a 32-element block's scale (and
    /// minimum), or a super-block's record.
    pub fn side_record(&self) -> (usize, usize) {
        match self.ggml_type {
            GgmlType::Q4_1 => (32, 4),
            GgmlType::Q4_K => (256, 20),
            GgmlType::Q6_K => (256, 18),
            _ => (32, 2),
        }
    }

    /// Side-data bytes per 32-element block of the 32-element types: 4 for `Q4_1`, else 2.
    pub fn scale_bytes_per_block(&self) -> usize {
        if self.ggml_type == GgmlType::Q4_1 {
            4
        } else {
            2
        }
    }

    /// Undoes llama.cpp's Q/K row permutation (see [`crate::unpermute_qk`]) on the codes and
    /// the scales alike. `rows` must split into `n_head` heads of an even size and every row
    /// must hold whole side-data records (checked: an error rather than a panic).
    pub fn unpermute_rows(&mut self, rows: usize, n_head: usize) -> Result<(), GgufError> {
        let bad = |msg: String| GgufError::BadBlocks { ggml_type: self.ggml_type, msg };
        if rows == 0 || n_head == 0 || !rows.is_multiple_of(2 * n_head) || !self.codes.len().is_multiple_of(rows) {
            return Err(bad(format!("{} codes do not split into {rows} rows of {n_head} heads", self.codes.len())));
        }
        let cols = self.codes.len() / rows;
        let (unit, bytes) = self.side_record();
        if !cols.is_multiple_of(unit) {
            return Err(bad(format!("rows of {cols} elements are not whole blocks of {unit}")));
        }
        let row_scale_bytes = cols / unit * bytes;
        self.codes = crate::unpermute_qk(&self.codes, rows, cols, n_head);
        self.scales = crate::unpermute_qk(&self.scales, rows, row_scale_bytes, n_head);
        Ok(())
    }
}

/// The codes of `n_elems` elements of type `t` stored in `bytes`, or `None` when `t` is not one
/// of `Q4_0`, `Q4_1`, `Q8_0`, `Q5_0`, `Q4_K`, `Q6_K`. Fails like
/// [`crate::dequant::dequantize`] when `bytes` is not exactly the blocks of `n_elems` elements.
pub fn block_codes(t: GgmlType, bytes: &[u8], n_elems: usize) -> Result<Option<BlockCodes>, GgufError> {
    if !matches!(t, GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q8_0 | GgmlType::Q5_0 | GgmlType::Q4_K | GgmlType::Q6_K)
    {
        return Ok(None);
    }
    crate::dequant::check_blocks(t, bytes, n_elems)?;
    let mut codes = vec![0u8; n_elems];
    let blocks = bytes.chunks_exact(t.block_bytes()).zip(codes.chunks_exact_mut(t.block_elems()));
    let mut scales = Vec::with_capacity(bytes.len() / t.block_bytes() * 20);
    for (block, out) in blocks {
        match t {
            GgmlType::Q4_K => q4_k(block, out, &mut scales),
            GgmlType::Q6_K => q6_k(block, out, &mut scales),
            GgmlType::Q5_0 => q5_0(block, out, &mut scales),
            _ => legacy(t, block, out, &mut scales),
        }
    }
    Ok(Some(BlockCodes { ggml_type: t, codes, scales }))
}

/// `Q4_0`, `Q4_1`, `Q8_0`: the scale (and minimum) as they are, the codes unpacked.
fn legacy(t: GgmlType, block: &[u8], out: &mut [u8], scales: &mut Vec<u8>) {
    let head = if t == GgmlType::Q4_1 { 4 } else { 2 };
    scales.extend_from_slice(&block[..head]);
    if t == GgmlType::Q8_0 {
        out.copy_from_slice(&block[head..head + BlockCodes::BLOCK]);
        return;
    }
    let (low, high) = out.split_at_mut(16);
    for ((&q, l), h) in block[head..head + 16].iter().zip(low).zip(high) {
        *l = q & 0x0f;
        *h = q >> 4;
    }
}

/// `{ f16 d; u8 qh[4]; u8 qs[16] }`: codes `q − 16` with the fifth bit from `qh`.
fn q5_0(block: &[u8], out: &mut [u8], scales: &mut Vec<u8>) {
    scales.extend_from_slice(&block[..2]);
    let qh = u32::from_le_bytes([block[2], block[3], block[4], block[5]]);
    for (j, &q) in block[6..22].iter().enumerate() {
        let h0 = (((qh >> j) << 4) & 0x10) as u8;
        let h1 = ((qh >> (j + 12)) & 0x10) as u8;
        out[j] = (((q & 0x0f) | h0) as i8 - 16) as u8;
        out[j + 16] = (((q >> 4) | h1) as i8 - 16) as u8;
    }
}

/// `{ f16 d; f16 dmin; u8 scales[12]; u8 qs[128] }`: the 6-bit scales and minima unpacked
/// (ggml's `get_scale_min_k4`), the codes in element order.
fn q4_k(block: &[u8], out: &mut [u8], scales: &mut Vec<u8>) {
    scales.extend_from_slice(&block[..4]);
    let packed = &block[4..16];
    let pairs: Vec<(u8, u8)> = (0..8).map(|j| crate::dequant::scale_min_k4(j, packed)).collect();
    scales.extend(pairs.iter().map(|p| p.0));
    scales.extend(pairs.iter().map(|p| p.1));
    for chunk in 0..4 {
        let q = &block[16 + chunk * 32..16 + chunk * 32 + 32];
        let y = &mut out[chunk * 64..chunk * 64 + 64];
        for l in 0..32 {
            y[l] = q[l] & 0x0f;
            y[l + 32] = q[l] >> 4;
        }
    }
}

/// `{ u8 ql[128]; u8 qh[64]; i8 scales[16]; f16 d }`: `d` and the scales, then the codes
/// `q − 32` in element order.
fn q6_k(block: &[u8], out: &mut [u8], scales: &mut Vec<u8>) {
    scales.extend_from_slice(&block[208..210]);
    scales.extend_from_slice(&block[192..208]);
    for half in 0..2 {
        let ql = &block[half * 64..half * 64 + 64];
        let qh = &block[128 + half * 32..128 + half * 32 + 32];
        let y = &mut out[half * 128..half * 128 + 128];
        for l in 0..32 {
            let code = |low: u8, high: u8| ((low & 0x0f | (high & 3) << 4) as i8 - 32) as u8;
            y[l] = code(ql[l], qh[l]);
            y[l + 32] = code(ql[l + 32], qh[l] >> 2);
            y[l + 64] = code(ql[l] >> 4, qh[l] >> 4);
            y[l + 96] = code(ql[l + 32] >> 4, qh[l] >> 6);
        }
    }
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

    /// Pseudo-random blocks of type `t` whose `f16` fields are finite.
    fn random_blocks(t: GgmlType, n_blocks: usize, seed: u64) -> Vec<u8> {
        let mut x = seed;
        let mut bytes: Vec<u8> = (0..n_blocks * t.block_bytes())
            .map(|_| {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                (x >> 56) as u8
            })
            .collect();
        let f16_fields: &[usize] = match t {
            GgmlType::Q4_K => &[0, 2],
            GgmlType::Q6_K => &[208],
            _ => &[0],
        };
        for b in bytes.chunks_exact_mut(t.block_bytes()) {
            for &o in f16_fields {
                b[o + 1] &= 0xbb; // exponent below 0x1f: finite
            }
        }
        bytes
    }

    /// `Q5_0`, `Q4_K` and `Q6_K` codes and side data reproduce the dequantizer bit for bit
    /// through ember's arithmetic: `code · d`, `code · (d · sc) + −(dmin · m)`,
    /// `code · (d · sc)`.
    #[test]
    fn k_quant_and_5_bit_codes_dequantize_to_the_same_values() {
        for (t, n_blocks) in [(GgmlType::Q5_0, 9), (GgmlType::Q4_K, 3), (GgmlType::Q6_K, 3)] {
            let bytes = random_blocks(t, n_blocks, t as u64 + 1);
            let n = n_blocks * t.block_elems();
            let want = dequantize(t, &bytes, n).unwrap();
            let c = block_codes(t, &bytes, n).unwrap().unwrap();
            let (unit, record) = c.side_record();
            assert_eq!((c.codes.len(), c.scales.len()), (n, n / unit * record));
            let f16_at = |i: usize| f16::from_le_bytes([c.scales[i], c.scales[i + 1]]).to_f32();
            for (i, (&q, &w)) in c.codes.iter().zip(&want).enumerate() {
                let got = match t {
                    GgmlType::Q5_0 => {
                        assert!((-16..16).contains(&(q as i8)));
                        (q as i8) as f32 * f16_at(2 * (i / 32))
                    }
                    GgmlType::Q4_K => {
                        let (r, j) = (20 * (i / 256), i % 256 / 32);
                        assert!(q < 16 && c.scales[r + 4 + j] < 64 && c.scales[r + 12 + j] < 64);
                        let product = q as f32 * (f16_at(r) * c.scales[r + 4 + j] as f32);
                        product + -(f16_at(r + 2) * c.scales[r + 12 + j] as f32)
                    }
                    _ => {
                        let (r, j) = (18 * (i / 256), i % 256 / 16);
                        assert!((-32..32).contains(&(q as i8)));
                        (q as i8) as f32 * (f16_at(r) * (c.scales[r + 2 + j] as i8) as f32)
                    }
                };
                assert_eq!(got.to_bits(), w.to_bits(), "{t} element {i}");
            }
        }
    }

    #[test]
    fn other_types_and_bad_lengths() {
        assert_eq!(block_codes(GgmlType::Q5_1, &[0; 24], 32).unwrap(), None);
        assert_eq!(block_codes(GgmlType::Q5_K, &[0; 176], 256).unwrap(), None);
        assert!(block_codes(GgmlType::Q4_K, &[0; 143], 256).is_err());
        assert!(block_codes(GgmlType::Q6_K, &[0; 210], 255).is_err());
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
