//! Fixed-width fields packed LSB-first into little-endian `u32` words.
//!
//! Field `i` of width `w` occupies bits `[i·w, i·w + w)` of the word stream, bit `b` being bit
//! `b mod 32` of word `b / 32`. A field never needs more than two words, and the second word is
//! read only when the field spills into it — so a reader never touches a word past the data.
//! For `w = 8` this is a plain byte array and for `w = 24` an array of 3-byte little-endian
//! groups; the CPU decoder uses those as fast paths.

/// Number of bytes (a multiple of 4) that `count` fields of `width` bits occupy.
pub fn packed_len(count: usize, width: u32) -> usize {
    (count * width as usize).div_ceil(32) * 4
}

/// Packs the low `width` bits of each value. `width` must be in `1..=32`.
pub fn pack(values: impl ExactSizeIterator<Item = u32>, width: u32) -> Vec<u8> {
    debug_assert!((1..=32).contains(&width));
    let count = values.len();
    let mut words = vec![0u32; packed_len(count, width) / 4];
    let mask = if width == 32 { u32::MAX } else { (1u32 << width) - 1 };
    for (i, v) in values.enumerate() {
        let v = v & mask;
        let bit = i * width as usize;
        let (k, shift) = (bit / 32, (bit % 32) as u32);
        words[k] |= v << shift;
        if shift + width > 32 {
            words[k + 1] |= v >> (32 - shift);
        }
    }
    words.iter().flat_map(|w| w.to_le_bytes()).collect()
}

/// Reads field `i` of `width` bits from `bytes` (as produced by [`pack`]).
///
/// `bytes` must hold at least [`packed_len`] bytes for `i + 1` fields.
#[inline(always)]
pub fn get(bytes: &[u8], i: usize, width: u32) -> u32 {
    let bit = i * width as usize;
    let (k, shift) = (bit / 32, (bit % 32) as u32);
    let word = |k: usize| u32::from_le_bytes([bytes[4 * k], bytes[4 * k + 1], bytes[4 * k + 2], bytes[4 * k + 3]]);
    let mut v = word(k) >> shift;
    if shift + width > 32 {
        v |= word(k + 1) << (32 - shift);
    }
    if width == 32 {
        v
    } else {
        v & ((1u32 << width) - 1)
    }
}

/// Unpacks the first `out.len()` fields of `width ≤ 8` bits into one byte each.
///
/// Eight fields of `width` bits fill exactly `width` bytes, so each group of eight starts on a
/// byte boundary: the group is one little-endian `u64` load spread into bytes by a single BMI2
/// `pdep` where the CPU has it (a shift loop otherwise). `bytes` must hold at least
/// [`packed_len`] bytes for `out.len()` fields.
pub fn unpack_narrow(bytes: &[u8], width: u32, out: &mut [u8]) {
    debug_assert!((1..=8).contains(&width));
    let w = width as usize;
    // Whole groups whose 8-byte load stays inside `bytes`.
    let groups = if bytes.len() >= 8 { ((bytes.len() - 8) / w + 1).min(out.len() / 8) } else { 0 };
    #[cfg(target_arch = "x86_64")]
    let done = if std::arch::is_x86_feature_detected!("bmi2") {
        // SAFETY: BMI2 is available (checked just above); `groups` keeps every load and store
        // inside `bytes` and `out`.
        unsafe { unpack_groups_bmi2(bytes, width, out, groups) };
        groups
    } else {
        0
    };
    #[cfg(not(target_arch = "x86_64"))]
    let done = 0;
    let mask = (1u64 << w) - 1;
    for g in done..groups {
        let v = u64::from_le_bytes(bytes[g * w..g * w + 8].try_into().unwrap_or([0; 8]));
        for (j, o) in out[8 * g..8 * g + 8].iter_mut().enumerate() {
            *o = ((v >> (j * w)) & mask) as u8;
        }
    }
    for (i, o) in out.iter_mut().enumerate().skip(8 * groups) {
        *o = get(bytes, i, width) as u8;
    }
}

/// Unpacks the first `out.len()` fields of `width ≤ 16` bits into one `u16` each.
pub fn unpack_wide(bytes: &[u8], width: u32, out: &mut [u16]) {
    debug_assert!((1..=16).contains(&width));
    let mut reader = BitReader::new(bytes);
    for o in out.iter_mut() {
        *o = reader.take(width) as u16;
    }
}

/// Reads consecutive LSB-first fields of up to 32 bits, refilling 32 bits at a time (zeros past
/// the end of the data).
pub struct BitReader<'a> {
    bytes: &'a [u8],
    at: usize,
    buf: u64,
    have: u32,
}

impl<'a> BitReader<'a> {
    /// A reader at the first bit of `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, at: 0, buf: 0, have: 0 }
    }

    /// The next `width` (1..=32) bits.
    #[inline(always)]
    pub fn take(&mut self, width: u32) -> u32 {
        if self.have < width {
            let word = match self.bytes.get(self.at..self.at + 4) {
                Some(w) => u32::from_le_bytes([w[0], w[1], w[2], w[3]]),
                None => {
                    let mut w = [0u8; 4];
                    let tail = self.bytes.get(self.at..).unwrap_or(&[]);
                    w[..tail.len().min(4)].copy_from_slice(&tail[..tail.len().min(4)]);
                    u32::from_le_bytes(w)
                }
            };
            self.buf |= (word as u64) << self.have;
            self.have += 32;
            self.at += 4;
        }
        let v = (self.buf & ((1u64 << width) - 1)) as u32;
        self.buf >>= width;
        self.have -= width;
        v
    }
}

/// # Safety
/// The CPU must support BMI2; `groups · width + 8 ≤ bytes.len()` (rounded as in
/// [`unpack_narrow`]) and `8 · groups ≤ out.len()`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "bmi2")]
unsafe fn unpack_groups_bmi2(bytes: &[u8], width: u32, out: &mut [u8], groups: usize) {
    let w = width as usize;
    let spread = u64::from_le_bytes([((1u16 << w) - 1) as u8; 8]);
    for g in 0..groups {
        // SAFETY: the caller guarantees `g·w + 8 ≤ bytes.len()` and `8g + 8 ≤ out.len()`.
        unsafe {
            let v = std::ptr::read_unaligned(bytes.as_ptr().add(g * w) as *const u64);
            let b = std::arch::x86_64::_pdep_u64(u64::from_le(v), spread);
            std::ptr::write_unaligned(out.as_mut_ptr().add(8 * g) as *mut u64, b.to_le());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wide_unpack_matches_get() {
        for width in 1..=16u32 {
            let vals: Vec<u32> = (0..300u32).map(|i| i.wrapping_mul(0x9E37_79B9) >> (32 - width)).collect();
            let bytes = pack(vals.iter().copied(), width);
            let mut out = vec![0u16; vals.len()];
            unpack_wide(&bytes, width, &mut out);
            assert!(out.iter().zip(&vals).all(|(&o, &v)| o as u32 == v), "width {width}");
        }
    }

    #[test]
    fn narrow_unpack_matches_get_for_every_width_and_length() {
        for width in 1..=8u32 {
            for n in [0usize, 1, 7, 8, 9, 31, 64, 65, 1000] {
                let vals: Vec<u32> = (0..n as u32).map(|i| i.wrapping_mul(0x9E37_79B9) >> (32 - width)).collect();
                let bytes = pack(vals.iter().copied(), width);
                let mut out = vec![0xAAu8; n];
                unpack_narrow(&bytes, width, &mut out);
                let expect: Vec<u8> = vals.iter().map(|&v| v as u8).collect();
                assert_eq!(out, expect, "width {width} n {n}");
            }
        }
    }

    #[test]
    fn round_trips_every_width() {
        for width in 1..=32u32 {
            let vals: Vec<u32> = (0..77u32).map(|i| i.wrapping_mul(0x9E37_79B9) >> (32 - width.min(32))).collect();
            let bytes = pack(vals.iter().copied(), width);
            assert_eq!(bytes.len(), packed_len(vals.len(), width));
            for (i, &v) in vals.iter().enumerate() {
                assert_eq!(get(&bytes, i, width), v, "width {width} field {i}");
            }
        }
    }

    #[test]
    fn byte_and_triple_layouts_match_fast_paths() {
        let vals = [0x12u32, 0xff, 0x00, 0x7f];
        assert_eq!(&pack(vals.iter().copied(), 8)[..4], &[0x12, 0xff, 0x00, 0x7f]);
        let vals = [0x123456u32, 0xabcdef];
        assert_eq!(&pack(vals.iter().copied(), 24)[..6], &[0x56, 0x34, 0x12, 0xef, 0xcd, 0xab]);
    }
}
