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

#[cfg(test)]
mod tests {
    use super::*;

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
