//! The k-quants: 256-element super-blocks split into sub-blocks of 16 or 32 elements, each with
//! its own small integer scale (and minimum), themselves scaled by `f16` super-block factors.
//! Byte layouts are ggml's `block_q*_K` structs; the arithmetic, including the order in which
//! factors are multiplied, follows `dequantize_row_q*_K`, so results match ggml bit for bit.

use super::f16_at;

/// `{ u8 scales[16]; u8 qs[64]; f16 d; f16 dmin }`: 2-bit codes; each 16-element sub-block has a
/// 4-bit scale (low nibble) and 4-bit minimum (high nibble).
pub(super) fn q2_k(b: &[u8], y: &mut [f32]) {
    let (scales, qs) = (&b[0..16], &b[16..80]);
    let (d, min) = (f16_at(b, 80), f16_at(b, 82));
    let (mut is, mut out) = (0, 0);
    for half in 0..2 {
        let q = &qs[half * 32..half * 32 + 32];
        for shift in [0, 2, 4, 6] {
            for part in 0..2 {
                let sc = scales[is];
                is += 1;
                let (dl, ml) = (d * (sc & 0x0f) as f32, min * (sc >> 4) as f32);
                for l in 0..16 {
                    y[out] = dl * ((q[l + 16 * part] >> shift) & 3) as f32 - ml;
                    out += 1;
                }
            }
        }
    }
}

/// The sixteen 6-bit scales of a `Q3_K` block, unpacked from 12 bytes and centred (−32..31).
fn q3_k_scales(packed: &[u8]) -> [i8; 16] {
    const KMASK1: u32 = 0x0303_0303;
    const KMASK2: u32 = 0x0f0f_0f0f;
    let word = |i: usize| u32::from_le_bytes([packed[4 * i], packed[4 * i + 1], packed[4 * i + 2], packed[4 * i + 3]]);
    let (a0, a1, tmp) = (word(0), word(1), word(2));
    let aux = [
        (a0 & KMASK2) | ((tmp & KMASK1) << 4),
        (a1 & KMASK2) | (((tmp >> 2) & KMASK1) << 4),
        ((a0 >> 4) & KMASK2) | (((tmp >> 4) & KMASK1) << 4),
        ((a1 >> 4) & KMASK2) | (((tmp >> 6) & KMASK1) << 4),
    ];
    let mut out = [0i8; 16];
    for (i, s) in out.iter_mut().enumerate() {
        *s = (aux[i / 4].to_le_bytes()[i % 4] as i8).wrapping_sub(32);
    }
    out
}

/// `{ u8 hmask[32]; u8 qs[64]; u8 scales[12]; f16 d }`: 2 low bits in `qs`, the third in `hmask`
/// (a clear bit subtracts 4), 6-bit scales per 16 elements.
pub(super) fn q3_k(b: &[u8], y: &mut [f32]) {
    let (hmask, qs) = (&b[0..32], &b[32..96]);
    let scales = q3_k_scales(&b[96..108]);
    let d_all = f16_at(b, 108);
    let (mut is, mut out, mut m) = (0, 0, 1u8);
    for half in 0..2 {
        let q = &qs[half * 32..half * 32 + 32];
        for shift in [0, 2, 4, 6] {
            for part in 0..2 {
                let dl = d_all * scales[is] as f32;
                is += 1;
                for l in 0..16 {
                    let i = l + 16 * part;
                    let low = ((q[i] >> shift) & 3) as i32;
                    let high = if hmask[i] & m != 0 { 0 } else { 4 };
                    y[out] = dl * (low - high) as f32;
                    out += 1;
                }
            }
            m <<= 1;
        }
    }
}

/// Scale and minimum `j` (0..8) of a `Q4_K`/`Q5_K` block: 6 bits each, packed into 12 bytes
/// (ggml's `get_scale_min_k4`).
#[inline]
pub(crate) fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        ((q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4))
    }
}

/// `{ f16 d; f16 dmin; u8 scales[12]; u8 qs[128] }`: 4-bit codes; eight 32-element sub-blocks,
/// `y = d * sc * q - dmin * m`. Each 32 bytes of `qs` give two sub-blocks (low, then high nibbles).
pub(super) fn q4_k(b: &[u8], y: &mut [f32]) {
    let (d, min) = (f16_at(b, 0), f16_at(b, 2));
    let (scales, qs) = (&b[4..16], &b[16..144]);
    for chunk in 0..4 {
        let q = &qs[chunk * 32..chunk * 32 + 32];
        let (sc1, m1) = scale_min_k4(2 * chunk, scales);
        let (sc2, m2) = scale_min_k4(2 * chunk + 1, scales);
        let (d1, min1) = (d * sc1 as f32, min * m1 as f32);
        let (d2, min2) = (d * sc2 as f32, min * m2 as f32);
        let y = &mut y[chunk * 64..chunk * 64 + 64];
        for l in 0..32 {
            y[l] = d1 * (q[l] & 0x0f) as f32 - min1;
            y[l + 32] = d2 * (q[l] >> 4) as f32 - min2;
        }
    }
}

/// `{ f16 d; f16 dmin; u8 scales[12]; u8 qh[32]; u8 qs[128] }`: like `Q4_K` plus a fifth bit per
/// element in `qh` (sub-block `k` uses bit `k` of `qh[l]`).
pub(super) fn q5_k(b: &[u8], y: &mut [f32]) {
    let (d, min) = (f16_at(b, 0), f16_at(b, 2));
    let (scales, qh, qs) = (&b[4..16], &b[16..48], &b[48..176]);
    for chunk in 0..4 {
        let ql = &qs[chunk * 32..chunk * 32 + 32];
        let (u1, u2) = (1u8 << (2 * chunk), 2u8 << (2 * chunk));
        let (sc1, m1) = scale_min_k4(2 * chunk, scales);
        let (sc2, m2) = scale_min_k4(2 * chunk + 1, scales);
        let (d1, min1) = (d * sc1 as f32, min * m1 as f32);
        let (d2, min2) = (d * sc2 as f32, min * m2 as f32);
        let y = &mut y[chunk * 64..chunk * 64 + 64];
        for l in 0..32 {
            let h1 = if qh[l] & u1 != 0 { 16 } else { 0 };
            let h2 = if qh[l] & u2 != 0 { 16 } else { 0 };
            y[l] = d1 * ((ql[l] & 0x0f) + h1) as f32 - min1;
            y[l + 32] = d2 * ((ql[l] >> 4) + h2) as f32 - min2;
        }
    }
}

/// `{ u8 ql[128]; u8 qh[64]; i8 scales[16]; f16 d }`: 6-bit codes (4 low bits in `ql`, 2 high in
/// `qh`) centred by −32, an 8-bit signed scale per 16 elements, `y = d * sc * q`.
pub(super) fn q6_k(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 208);
    for half in 0..2 {
        let ql = &b[half * 64..half * 64 + 64];
        let qh = &b[128 + half * 32..128 + half * 32 + 32];
        let sc = &b[192 + half * 8..192 + half * 8 + 8];
        let y = &mut y[half * 128..half * 128 + 128];
        for l in 0..32 {
            let is = l / 16;
            let q1 = ((ql[l] & 0x0f) | ((qh[l] & 3) << 4)) as i32 - 32;
            let q2 = ((ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
            let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
            let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
            y[l] = d * (sc[is] as i8) as f32 * q1 as f32;
            y[l + 32] = d * (sc[is + 2] as i8) as f32 * q2 as f32;
            y[l + 64] = d * (sc[is + 4] as i8) as f32 * q3 as f32;
            y[l + 96] = d * (sc[is + 6] as i8) as f32 * q4 as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::dequant::dequantize;
    use crate::GgmlType;

    const HALF: [u8; 2] = [0x00, 0x38]; // f16 0.5
    const ONE: [u8; 2] = [0x00, 0x3c]; // f16 1.0
    const TWO: [u8; 2] = [0x00, 0x40]; // f16 2.0

    #[test]
    fn q2_k_block() {
        // Sub-block 0: scale 3, min 1; sub-block 1: scale 2, min 0; the rest: scale 1, min 2.
        let mut scales = [0x21u8; 16];
        scales[0] = 0x13;
        scales[1] = 0x02;
        let mut b = scales.to_vec();
        // qs byte l holds codes (l % 4) at bits 0-1 and 3 at bits 2-3, 0 elsewhere.
        b.extend((0..64).map(|l: u8| (l % 4) | (3 << 2)));
        b.extend(ONE); // d
        b.extend(HALF); // dmin
        let y = dequantize(GgmlType::Q2_K, &b, 256).unwrap();
        // Element l < 16: 1 * 3 * (l % 4) - 0.5 * 1.
        assert_eq!(&y[..4], &[-0.5, 2.5, 5.5, 8.5]);
        // Element 16 + l: qs[16 + l] shift 0, scale 2, min 0: 2 * (l % 4).
        assert_eq!(&y[16..20], &[0.0, 2.0, 4.0, 6.0]);
        // Element 32: shift 2 of qs[0] (code 3), scale 1, min 2 * 0.5 = 1: 3 - 1 = 2.
        assert_eq!(y[32], 2.0);
        // Element 64: shift 4 (code 0): -1.
        assert_eq!(y[64], -1.0);
        // Element 129: second half, qs[33] shift 0 = 33 % 4 = 1, scale 1, min 1: 0.
        assert_eq!(y[129], 0.0);
    }

    #[test]
    fn q3_k_block() {
        // hmask: bit 0 set for every l (so elements 0..32 get no -4), other bits clear.
        let mut b = vec![0x01u8; 32];
        // qs: every 2-bit code = 2.
        b.extend([0xaau8; 64]);
        // Scales: all 12 bytes zero → every low nibble 0, high bits 0 → scale 0 - 32 = -32,
        // except byte 0 low nibble = 1 (scale 0: 1 - 32 = -31) and byte 8 bits 0-1 = 2
        // (scale 0 gains 2 << 4 = 32: 33 - 32 = 1).
        let mut sc = [0u8; 12];
        sc[0] = 0x01;
        sc[8] = 0x02;
        b.extend(sc);
        b.extend(HALF);
        let y = dequantize(GgmlType::Q3_K, &b, 256).unwrap();
        // Element 0: 0.5 * 1 * (2 - 0) = 1.
        assert_eq!(y[0], 1.0);
        // Element 16: scale 1 = byte 1's low nibble (0) | 0 → -32: 0.5 * -32 * 2 = -32.
        assert_eq!(y[16], -32.0);
        // Element 32: shift 2, mask bit 1 clear → 2 - 4 = -2; scale 2 = -32 → 0.5 * -32 * -2 = 32.
        assert_eq!(y[32], 32.0);
    }

    /// Scales bytes for `Q4_K`/`Q5_K` where sub-block `j` has scale `s[j]` and minimum `m[j]`
    /// (all < 64), packed as `get_scale_min_k4` reads them.
    fn pack_k4(s: [u8; 8], m: [u8; 8]) -> [u8; 12] {
        let mut q = [0u8; 12];
        for j in 0..4 {
            q[j] = s[j] | ((s[j + 4] >> 4) << 6);
            q[j + 4] = m[j] | ((m[j + 4] >> 4) << 6);
            q[j + 8] = (s[j + 4] & 0x0f) | ((m[j + 4] & 0x0f) << 4);
        }
        q
    }

    #[test]
    fn q4_k_block() {
        let s = [1, 2, 3, 4, 5, 6, 7, 63];
        let m = [0, 1, 0, 0, 0, 0, 0, 40];
        let mut b = TWO.to_vec(); // d
        b.extend(HALF); // dmin
        b.extend(pack_k4(s, m));
        // Low nibble 1, high nibble 3 everywhere.
        b.extend([0x31u8; 128]);
        let y = dequantize(GgmlType::Q4_K, &b, 256).unwrap();
        // Sub-block 0 (elements 0..32, low nibbles): 2 * 1 * 1 - 0.5 * 0 = 2.
        assert_eq!(y[0], 2.0);
        // Sub-block 1 (32..64, high nibbles): 2 * 2 * 3 - 0.5 * 1 = 11.5.
        assert_eq!(y[32], 11.5);
        // Sub-block 6 (192..224, low nibbles): 2 * 7 * 1 = 14.
        assert_eq!(y[192], 14.0);
        // Sub-block 7 (224..256, high nibbles): 2 * 63 * 3 - 0.5 * 40 = 358.
        assert_eq!(y[255], 358.0);
    }

    #[test]
    fn q5_k_block() {
        let s = [1, 1, 1, 1, 1, 1, 1, 2];
        let m = [0, 0, 0, 0, 0, 0, 0, 4];
        let mut b = ONE.to_vec();
        b.extend(HALF);
        b.extend(pack_k4(s, m));
        // qh[l]: bit 0 set for l = 0 (sub-block 0's fifth bit), bit 7 set for l = 31 (sub-block 7).
        let mut qh = [0u8; 32];
        qh[0] = 0x01;
        qh[31] = 0x80;
        b.extend(qh);
        b.extend([0x52u8; 128]); // low nibble 2, high nibble 5
        let y = dequantize(GgmlType::Q5_K, &b, 256).unwrap();
        // Element 0: 1 * (2 + 16) = 18; element 1: 2.
        assert_eq!(&y[..2], &[18.0, 2.0]);
        // Element 32: sub-block 1, high nibble, no fifth bit: 5.
        assert_eq!(y[32], 5.0);
        // Element 224: sub-block 7, l = 0: 1 * 2 * 5 - 0.5 * 4 = 8; element 255 (l = 31): 2 * 21 - 2 = 40.
        assert_eq!(y[224], 8.0);
        assert_eq!(y[255], 40.0);
    }

    #[test]
    fn q6_k_block() {
        // ql: low nibble 1, high nibble 2; qh: the four 2-bit fields are 0, 1, 2, 3.
        let mut b = vec![0x21u8; 128];
        b.extend([0b11_10_01_00u8; 64]);
        // Scales: 1, 2, ..., 16 except scale 3 = -1.
        let mut sc: Vec<u8> = (1..=16u8).collect();
        sc[3] = (-1i8) as u8;
        b.extend(sc);
        b.extend(HALF);
        let y = dequantize(GgmlType::Q6_K, &b, 256).unwrap();
        // y[0]: q1 = 1 | 0 << 4 = 1 - 32 = -31, scale 1: 0.5 * 1 * -31.
        assert_eq!(y[0], -15.5);
        // y[16]: is = 1, scale 2: 0.5 * 2 * -31.
        assert_eq!(y[16], -31.0);
        // y[32]: q2 = 1 | 1 << 4 = 17 - 32 = -15, scale 3: -22.5.
        assert_eq!(y[32], -22.5);
        // y[48]: is = 1 → scale sc[3] = -1: 0.5 * -1 * -15 = 7.5.
        assert_eq!(y[48], 7.5);
        // y[64]: q3 = 2 | 2 << 4 = 34 - 32 = 2, scale 5: 5.
        assert_eq!(y[64], 5.0);
        // y[96]: q4 = 2 | 3 << 4 = 50 - 32 = 18, scale 7: 63.
        assert_eq!(y[96], 63.0);
        // Second half: scales 9.. : y[128] = 0.5 * 9 * -31.
        assert_eq!(y[128], -139.5);
    }
}
