//! The 32-element blocks: `Q4_0`, `Q4_1`, `Q5_0`, `Q5_1`, `Q8_0`. Each block stores an `f16`
//! scale `d` (and for the `_1` kinds an `f16` minimum `m`), then packed codes. Element `j` of the
//! first half comes from the low nibble of byte `j`, element `j + 16` from its high nibble; the
//! 5-bit kinds keep the fifth bits in a little-endian `u32` (`qh`), bit `j` for element `j`.

use super::f16_at;

/// `{ f16 d; u8 qs[16] }`: `y = (q - 8) * d`.
pub(super) fn q4_0(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    let qs = &b[2..18];
    for j in 0..16 {
        y[j] = ((qs[j] & 0x0f) as i32 - 8) as f32 * d;
        y[j + 16] = ((qs[j] >> 4) as i32 - 8) as f32 * d;
    }
}

/// `{ f16 d; f16 m; u8 qs[16] }`: `y = q * d + m`.
pub(super) fn q4_1(b: &[u8], y: &mut [f32]) {
    let (d, m) = (f16_at(b, 0), f16_at(b, 2));
    let qs = &b[4..20];
    for j in 0..16 {
        y[j] = (qs[j] & 0x0f) as f32 * d + m;
        y[j + 16] = (qs[j] >> 4) as f32 * d + m;
    }
}

/// The fifth bits of elements `j` and `j + 16`, already shifted to bit 4.
#[inline]
fn high_bits(qh: u32, j: usize) -> (u8, u8) {
    ((((qh >> j) << 4) & 0x10) as u8, ((qh >> (j + 12)) & 0x10) as u8)
}

/// `{ f16 d; u8 qh[4]; u8 qs[16] }`: `y = (q - 16) * d`.
pub(super) fn q5_0(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
    let qs = &b[6..22];
    for j in 0..16 {
        let (h0, h1) = high_bits(qh, j);
        y[j] = (((qs[j] & 0x0f) | h0) as i32 - 16) as f32 * d;
        y[j + 16] = (((qs[j] >> 4) | h1) as i32 - 16) as f32 * d;
    }
}

/// `{ f16 d; f16 m; u8 qh[4]; u8 qs[16] }`: `y = q * d + m`.
pub(super) fn q5_1(b: &[u8], y: &mut [f32]) {
    let (d, m) = (f16_at(b, 0), f16_at(b, 2));
    let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
    let qs = &b[8..24];
    for j in 0..16 {
        let (h0, h1) = high_bits(qh, j);
        y[j] = ((qs[j] & 0x0f) | h0) as f32 * d + m;
        y[j + 16] = ((qs[j] >> 4) | h1) as f32 * d + m;
    }
}

/// `{ f16 d; i8 qs[32] }`: `y = q * d`.
pub(super) fn q8_0(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    for (y, &q) in y.iter_mut().zip(&b[2..34]) {
        *y = (q as i8) as f32 * d;
    }
}

#[cfg(test)]
mod tests {
    use crate::dequant::dequantize;
    use crate::GgmlType;

    // f16 bit patterns used below.
    const HALF: [u8; 2] = [0x00, 0x38]; // 0.5
    const TWO: [u8; 2] = [0x00, 0x40]; // 2.0
    const MINUS_ONE: [u8; 2] = [0x00, 0xbc]; // -1.0

    /// Byte `j` holds code `j` in its low nibble and `15 - j` in its high nibble.
    fn nibbles() -> Vec<u8> {
        (0..16u8).map(|j| j | ((15 - j) << 4)).collect()
    }

    #[test]
    fn q4_0_block() {
        let mut b = HALF.to_vec();
        b.extend(nibbles());
        let y = dequantize(GgmlType::Q4_0, &b, 32).unwrap();
        // Low nibbles 0..15 minus 8, times 0.5.
        assert_eq!(&y[..4], &[-4.0, -3.5, -3.0, -2.5]);
        assert_eq!(y[15], 3.5);
        // High nibbles 15..0 minus 8, times 0.5.
        assert_eq!(&y[16..18], &[3.5, 3.0]);
        assert_eq!(y[31], -4.0);
    }

    #[test]
    fn q4_1_block() {
        let mut b = TWO.to_vec();
        b.extend(MINUS_ONE);
        b.extend(nibbles());
        let y = dequantize(GgmlType::Q4_1, &b, 32).unwrap();
        // q * 2 - 1.
        assert_eq!(&y[..3], &[-1.0, 1.0, 3.0]);
        assert_eq!(y[15], 29.0);
        assert_eq!(y[16], 29.0);
        assert_eq!(y[31], -1.0);
    }

    #[test]
    fn q5_0_block() {
        let mut b = HALF.to_vec();
        // Fifth bit set for element 1 (bit 1) and element 16 (bit 16) and element 31 (bit 31).
        b.extend(((1u32 << 1) | (1 << 16) | (1 << 31)).to_le_bytes());
        b.extend(nibbles());
        let y = dequantize(GgmlType::Q5_0, &b, 32).unwrap();
        // Element 0: code 0 - 16 = -16 → -8; element 1: (1 | 16) - 16 = 1 → 0.5.
        assert_eq!(&y[..3], &[-8.0, 0.5, -7.0]);
        // Element 16: (15 | 16) - 16 = 15 → 7.5; element 17: 14 - 16 → -1; element 31: (0 | 16) - 16 → 0.
        assert_eq!(&y[16..18], &[7.5, -1.0]);
        assert_eq!(y[31], 0.0);
    }

    #[test]
    fn q5_1_block() {
        let mut b = TWO.to_vec();
        b.extend(MINUS_ONE);
        b.extend(((1u32 << 0) | (1 << 17)).to_le_bytes());
        b.extend(nibbles());
        let y = dequantize(GgmlType::Q5_1, &b, 32).unwrap();
        // Element 0: 16 * 2 - 1 = 31; element 1: 1 * 2 - 1 = 1.
        assert_eq!(&y[..2], &[31.0, 1.0]);
        // Element 16: 15 * 2 - 1 = 29; element 17: (14 | 16) * 2 - 1 = 59.
        assert_eq!(&y[16..18], &[29.0, 59.0]);
    }

    #[test]
    fn q8_0_block() {
        let mut b = HALF.to_vec();
        b.extend((0..32).map(|i: i8| (i - 16) as u8));
        let y = dequantize(GgmlType::Q8_0, &b, 32).unwrap();
        assert_eq!(&y[..2], &[-8.0, -7.5]);
        assert_eq!(y[16], 0.0);
        assert_eq!(y[31], 7.5);
        // Two blocks back to back: the second uses its own scale.
        let mut two = b.clone();
        two.extend(TWO);
        two.extend([0x80u8; 32]); // -128
        let y = dequantize(GgmlType::Q8_0, &two, 64).unwrap();
        assert_eq!(y[32], -256.0);
    }
}
