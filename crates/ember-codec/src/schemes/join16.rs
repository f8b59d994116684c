//! Joining decoded `lossless` symbols with their raw fields into 16-bit values (BF16, F16):
//! `v = (raw >> low) << 15 | placed[symbol] | raw & (2^low − 1)` (`FORMAT.md` §4).
//!
//! Why a separate pass: folding the symbol-value lookup into the rANS loop costs one more gather
//! per eight lanes, which measured about 45% slower than decoding plain symbol bytes. With
//! AVX-512 (BW) the whole 256-entry value table lives in eight registers and a lookup is a few
//! in-register permutes per 32 elements, so decoding symbols first and joining afterwards is
//! the fast path there; with VBMI, raw fields of up to 8 bits (BF16) take a byte-plane variant
//! that joins 64 elements per step and streams large outputs past the cache. With AVX2 only, a
//! lookup is one pair of in-lane byte shuffles per 16 symbols of the alphabet, cheaper than a
//! gather on AMD Zen 3. The scalar loop is the specification.

/// Joins `symbols` with raw fields given either as bytes (`raw8`, fields of up to 8 bits) or as
/// 16-bit words (`raw16`), writing little-endian 16-bit values into `out` (2 bytes per element).
pub(crate) fn join(symbols: &[u8], raw: Raw<'_>, placed: &[u32; 256], low: u32, out: &mut [u8]) {
    let n = symbols.len().min(out.len() / 2).min(raw.len());
    #[cfg(target_arch = "x86_64")]
    let done = match raw {
        Raw::Bytes(bytes) if low <= 7 && byte_join() => {
            // Elements before the first 64-byte boundary of `out` go the scalar way, so the
            // vector loop's stores are aligned.
            let head = (out.as_ptr() as usize).wrapping_neg() % 64;
            let head = if head.is_multiple_of(2) { (head / 2).min(n) } else { 0 };
            join_scalar(&symbols[..head], raw, placed, low, out);
            // SAFETY: AVX-512 F, BW and VBMI are available (checked just above); `n` bounds
            // every slice.
            head + unsafe {
                x86::join_bytes_vbmi(&symbols[head..n], &bytes[head..n], placed, low, &mut out[2 * head..2 * n])
            }
        }
        // SAFETY: AVX-512 F and BW are available (checked by `vector_join`); `n` bounds every
        // slice.
        _ if vector_join() => unsafe { x86::join_avx512(&symbols[..n], raw, placed, low, &mut out[..2 * n]) },
        // SAFETY: AVX2 is available (checked in the guard); `n` bounds every slice.
        _ if is_x86_feature_detected!("avx2") => unsafe {
            x86::join_avx2(&symbols[..n], raw, placed, low, &mut out[..2 * n])
        },
        _ => 0,
    };
    #[cfg(not(target_arch = "x86_64"))]
    let done = 0;
    for i in done..n {
        join_one(i, symbols, raw, placed, low, out);
    }
}

/// Joins elements `0..symbols.len()` one at a time (the specification).
fn join_scalar(symbols: &[u8], raw: Raw<'_>, placed: &[u32; 256], low: u32, out: &mut [u8]) {
    for i in 0..symbols.len() {
        join_one(i, symbols, raw, placed, low, out);
    }
}

#[inline(always)]
fn join_one(i: usize, symbols: &[u8], raw: Raw<'_>, placed: &[u32; 256], low: u32, out: &mut [u8]) {
    let r = raw.get(i);
    let v = (r >> low) << 15 | placed[symbols[i] as usize] | (r & ((1u32 << low) - 1));
    out[2 * i..2 * i + 2].copy_from_slice(&(v as u16).to_le_bytes());
}

/// Whether [`join`] has its vector path on this CPU (otherwise the rANS loop should join).
pub(crate) fn vector_join() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx512bw") && is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether the byte-plane join (AVX-512 VBMI) is available: raw fields of up to 8 bits, the value
/// table as two byte planes, a lookup of 64 elements in a few single-uop byte permutes.
fn byte_join() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        vector_join() && is_x86_feature_detected!("avx512vbmi")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Raw fields, one per element.
#[derive(Clone, Copy)]
pub(crate) enum Raw<'a> {
    /// One byte per element.
    Bytes(&'a [u8]),
    /// One 16-bit word per element.
    Words(&'a [u16]),
}

impl Raw<'_> {
    fn len(&self) -> usize {
        match self {
            Raw::Bytes(b) => b.len(),
            Raw::Words(w) => w.len(),
        }
    }

    #[inline(always)]
    fn get(&self, i: usize) -> u32 {
        match self {
            Raw::Bytes(b) => b[i] as u32,
            Raw::Words(w) => w[i] as u32,
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::Raw;

    /// Outputs from this size on are written with non-temporal stores.
    const STREAM_BYTES: usize = 1 << 16;

    /// Joins whole blocks of 64 elements whose raw fields are bytes (`low ≤ 7`, so the raw
    /// field's low bits stay in the value's low byte and its sign bit becomes bit 7 of the high
    /// byte); returns how many elements it wrote. The 256-entry value table is split into a low
    /// and a high byte plane of four registers each, so a lookup is two byte permutes (128
    /// entries each) and a blend per plane.
    ///
    /// # Safety
    /// The CPU must support AVX-512 F, BW and VBMI; `raw` holds at least `symbols.len()` bytes,
    /// `out` at least `2 · symbols.len()` bytes, and `low ≤ 7`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vbmi")]
    pub(super) unsafe fn join_bytes_vbmi(
        symbols: &[u8],
        raw: &[u8],
        placed: &[u32; 256],
        low: u32,
        out: &mut [u8],
    ) -> usize {
        let blocks = symbols.len() / 64;
        // A large output (a tile of a tensor being decoded whole) is written with non-temporal
        // stores: it is not read back soon, and skipping the read-for-ownership of every line
        // measured 11% faster end to end. Small outputs stay in the cache.
        let stream = out.len() >= STREAM_BYTES && (out.as_ptr() as usize).is_multiple_of(64);
        let lo_plane: [u8; 256] = std::array::from_fn(|i| placed[i] as u8);
        let hi_plane: [u8; 256] = std::array::from_fn(|i| (placed[i] >> 8) as u8);
        // SAFETY: AVX-512 F/BW/VBMI are available (the caller's contract); loads stay inside the
        // planes, `symbols[..64·blocks]` and `raw[..64·blocks]`, stores inside `out[..128·blocks]`.
        unsafe {
            let plane = |p: &[u8; 256], k: usize| _mm512_loadu_si512(p.as_ptr().add(64 * k) as *const __m512i);
            let lo: [__m512i; 4] = std::array::from_fn(|k| plane(&lo_plane, k));
            let hi: [__m512i; 4] = std::array::from_fn(|k| plane(&hi_plane, k));
            let low_mask = _mm512_set1_epi8(((1u32 << low) - 1) as i8);
            let sign_bit = _mm512_set1_epi8((1u32 << low) as u8 as i8);
            let bit7 = _mm512_set1_epi8(-128);
            // 128-bit chunks of the unpacked words, in element order.
            let first = _mm512_setr_epi64(0, 1, 8, 9, 2, 3, 10, 11);
            let second = _mm512_setr_epi64(4, 5, 12, 13, 6, 7, 14, 15);
            for b in 0..blocks {
                let i = 64 * b;
                let idx = _mm512_loadu_si512(symbols.as_ptr().add(i) as *const __m512i);
                let r = _mm512_loadu_si512(raw.as_ptr().add(i) as *const __m512i);
                // Permutes index with bits 0..6; bit 7 picks the upper 128 entries.
                let upper = _mm512_movepi8_mask(idx);
                let l = _mm512_mask_blend_epi8(
                    upper,
                    _mm512_permutex2var_epi8(lo[0], idx, lo[1]),
                    _mm512_permutex2var_epi8(lo[2], idx, lo[3]),
                );
                let h = _mm512_mask_blend_epi8(
                    upper,
                    _mm512_permutex2var_epi8(hi[0], idx, hi[1]),
                    _mm512_permutex2var_epi8(hi[2], idx, hi[3]),
                );
                let l = _mm512_or_si512(l, _mm512_and_si512(r, low_mask));
                let h = _mm512_or_si512(h, _mm512_maskz_mov_epi8(_mm512_test_epi8_mask(r, sign_bit), bit7));
                let (ul, uh) = (_mm512_unpacklo_epi8(l, h), _mm512_unpackhi_epi8(l, h));
                let o = out.as_mut_ptr().add(2 * i);
                let (w0, w1) = (_mm512_permutex2var_epi64(ul, first, uh), _mm512_permutex2var_epi64(ul, second, uh));
                if stream {
                    _mm512_stream_si512(o as *mut __m512i, w0);
                    _mm512_stream_si512(o.add(64) as *mut __m512i, w1);
                } else {
                    _mm512_storeu_si512(o as *mut __m512i, w0);
                    _mm512_storeu_si512(o.add(64) as *mut __m512i, w1);
                }
            }
            if stream {
                _mm_sfence();
            }
        }
        64 * blocks
    }

    /// Joins whole blocks of 32 elements with AVX2; returns how many elements it wrote.
    ///
    /// The value table is split into a low and a high byte plane, 16 entries per register half
    /// (`vpshufb` looks up within 128-bit halves). For the entries `16c..16c + 16`, `symbol − 16c`
    /// is pushed to `0x70..0x7f` by a saturating add, and every other symbol to `0x80` or more,
    /// which the shuffle turns into zero: the OR over the table's chunks is the lookup. Only the
    /// chunks up to the last non-zero entry are visited (an alphabet of 100 symbols: 7 of 16).
    ///
    /// # Safety
    /// The CPU must support AVX2; `raw` holds at least `symbols.len()` fields and `out` at least
    /// `2 · symbols.len()` bytes.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn join_avx2(
        symbols: &[u8],
        raw: Raw<'_>,
        placed: &[u32; 256],
        low: u32,
        out: &mut [u8],
    ) -> usize {
        let blocks = symbols.len() / 32;
        let chunks = placed.iter().rposition(|&p| p != 0).map_or(0, |last| last / 16 + 1);
        // SAFETY: AVX2 is available (the caller's contract); loads stay inside the planes,
        // `symbols[..32·blocks]`, `raw[..32·blocks]` and stores inside `out[..64·blocks]`.
        unsafe {
            let plane = |c: usize, shift: u32| {
                let bytes: [u8; 16] = std::array::from_fn(|j| (placed[16 * c + j] >> shift) as u8);
                _mm256_broadcastsi128_si256(_mm_loadu_si128(bytes.as_ptr() as *const __m128i))
            };
            let lo: [__m256i; 16] =
                std::array::from_fn(|c| if c < chunks { plane(c, 0) } else { _mm256_setzero_si256() });
            let hi: [__m256i; 16] =
                std::array::from_fn(|c| if c < chunks { plane(c, 8) } else { _mm256_setzero_si256() });
            let count = _mm_cvtsi32_si128(low as i32);
            let low_mask = _mm256_set1_epi16(((1u32 << low) - 1) as i16);
            let push = _mm256_set1_epi8(0x70);
            let sixteen = _mm256_set1_epi8(16);
            for b in 0..blocks {
                let i = 32 * b;
                let mut t = _mm256_loadu_si256(symbols.as_ptr().add(i) as *const __m256i);
                let (mut l, mut h) = (_mm256_setzero_si256(), _mm256_setzero_si256());
                for c in 0..chunks {
                    let k = _mm256_adds_epu8(t, push);
                    l = _mm256_or_si256(l, _mm256_shuffle_epi8(lo[c], k));
                    h = _mm256_or_si256(h, _mm256_shuffle_epi8(hi[c], k));
                    t = _mm256_sub_epi8(t, sixteen);
                }
                // 16-bit values of elements 0..8 and 16..24, then 8..16 and 24..32; put in order.
                let (ul, uh) = (_mm256_unpacklo_epi8(l, h), _mm256_unpackhi_epi8(l, h));
                let values = [_mm256_permute2x128_si256::<0x20>(ul, uh), _mm256_permute2x128_si256::<0x31>(ul, uh)];
                for (half, value) in values.into_iter().enumerate() {
                    let j = i + 16 * half;
                    let r = match raw {
                        Raw::Bytes(bytes) => {
                            _mm256_cvtepu8_epi16(_mm_loadu_si128(bytes.as_ptr().add(j) as *const __m128i))
                        }
                        Raw::Words(words) => _mm256_loadu_si256(words.as_ptr().add(j) as *const __m256i),
                    };
                    let sign = _mm256_slli_epi16::<15>(_mm256_srl_epi16(r, count));
                    let v = _mm256_or_si256(_mm256_or_si256(sign, value), _mm256_and_si256(r, low_mask));
                    _mm256_storeu_si256(out.as_mut_ptr().add(2 * j) as *mut __m256i, v);
                }
            }
        }
        32 * blocks
    }

    /// Joins whole blocks of 32 elements; returns how many elements it wrote.
    ///
    /// # Safety
    /// The CPU must support AVX-512 F and BW; `raw` holds at least `symbols.len()` fields and
    /// `out` at least `2 · symbols.len()` bytes.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) unsafe fn join_avx512(
        symbols: &[u8],
        raw: Raw<'_>,
        placed: &[u32; 256],
        low: u32,
        out: &mut [u8],
    ) -> usize {
        let blocks = symbols.len() / 32;
        let table: [u16; 256] = std::array::from_fn(|i| placed[i] as u16);
        // SAFETY: AVX-512 F/BW are available (the caller's contract); loads stay inside `table`,
        // `symbols[..32·blocks]`, `raw[..32·blocks]` and stores inside `out[..64·blocks]`.
        unsafe {
            let t: [__m512i; 8] =
                std::array::from_fn(|k| _mm512_loadu_si512(table.as_ptr().add(32 * k) as *const __m512i));
            let count = _mm_cvtsi32_si128(low as i32);
            let low_mask = _mm512_set1_epi16(((1u32 << low) - 1) as i16);
            let one = _mm512_set1_epi16(1);
            let bit6 = _mm512_set1_epi16(0x40);
            let bit7 = _mm512_set1_epi16(0x80);
            for b in 0..blocks {
                let i = 32 * b;
                let idx = _mm512_cvtepu8_epi16(_mm256_loadu_si256(symbols.as_ptr().add(i) as *const __m256i));
                // Entries 0..64, 64..128, 128..192, 192..256: permutes index with bits 0..5.
                let q0 = _mm512_permutex2var_epi16(t[0], idx, t[1]);
                let q1 = _mm512_permutex2var_epi16(t[2], idx, t[3]);
                let q2 = _mm512_permutex2var_epi16(t[4], idx, t[5]);
                let q3 = _mm512_permutex2var_epi16(t[6], idx, t[7]);
                let m6 = _mm512_test_epi16_mask(idx, bit6);
                let lo = _mm512_mask_mov_epi16(q0, m6, q1);
                let hi = _mm512_mask_mov_epi16(q2, m6, q3);
                let value = _mm512_mask_mov_epi16(lo, _mm512_test_epi16_mask(idx, bit7), hi);
                let r = match raw {
                    Raw::Bytes(bytes) => {
                        _mm512_cvtepu8_epi16(_mm256_loadu_si256(bytes.as_ptr().add(i) as *const __m256i))
                    }
                    Raw::Words(words) => _mm512_loadu_si512(words.as_ptr().add(i) as *const __m512i),
                };
                let sign = _mm512_slli_epi16::<15>(_mm512_and_si512(_mm512_srl_epi16(r, count), one));
                let v = _mm512_or_si512(_mm512_or_si512(sign, value), _mm512_and_si512(r, low_mask));
                _mm512_storeu_si512(out.as_mut_ptr().add(2 * i) as *mut __m512i, v);
            }
        }
        32 * blocks
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_vector_join_matches_the_formula_for_every_symbol_and_width() {
        let n = 32 * 9 + 5;
        let symbols: Vec<u8> = (0..n).map(|i| (i * 97 % 256) as u8).collect();
        // Whole tables and short ones (zero past the alphabet, as a decoder's table is), with
        // values reaching bit 14.
        for (alphabet, low) in [256usize, 37, 16, 1].into_iter().flat_map(|a| (0..=10u32).map(move |l| (a, l))) {
            let placed: [u32; 256] =
                std::array::from_fn(|s| if s < alphabet { ((s as u32 * 37 + 5) & 0xfff) << 3 >> (low % 4) } else { 0 });
            let words: Vec<u16> = (0..n).map(|i| ((i * 2053 + 11) as u32 & ((2u32 << low) - 1)) as u16).collect();
            let bytes: Vec<u8> = words.iter().map(|&w| w as u8).collect();
            let expect: Vec<u8> = (0..n)
                .flat_map(|i| {
                    let r = words[i] as u32;
                    (((r >> low) << 15 | placed[symbols[i] as usize] | (r & ((1 << low) - 1))) as u16).to_le_bytes()
                })
                .collect();
            let raws = if low <= 7 { vec![Raw::Bytes(&bytes), Raw::Words(&words)] } else { vec![Raw::Words(&words)] };
            for raw in raws {
                let mut out = vec![0u8; 2 * n];
                join(&symbols, raw, &placed, low, &mut out);
                assert_eq!(out, expect, "alphabet {alphabet}, low {low}");
                // Each vector path on its own (the dispatcher picks only one), the scalar tail
                // after it.
                #[cfg(target_arch = "x86_64")]
                {
                    let finish = |done: usize, out: &mut Vec<u8>| {
                        out[2 * done..].copy_from_slice(&expect[2 * done..]);
                        assert!(done >= n / 64 * 64, "low {low}: only {done} of {n} joined");
                    };
                    if is_x86_feature_detected!("avx2") {
                        let mut out = vec![0u8; 2 * n];
                        // SAFETY: AVX2 checked; the slices are `n` long.
                        let done = unsafe { x86::join_avx2(&symbols, raw, &placed, low, &mut out) };
                        finish(done, &mut out);
                        assert_eq!(out, expect, "avx2, alphabet {alphabet}, low {low}");
                    }
                    if vector_join() {
                        let mut out = vec![0u8; 2 * n];
                        // SAFETY: AVX-512 F/BW checked; the slices are `n` long.
                        let done = unsafe { x86::join_avx512(&symbols, raw, &placed, low, &mut out) };
                        finish(done, &mut out);
                        assert_eq!(out, expect, "avx512, low {low}");
                    }
                    if let (Raw::Bytes(bytes), true) = (raw, byte_join()) {
                        let mut out = vec![0u8; 2 * n];
                        // SAFETY: AVX-512 F/BW/VBMI checked; the slices are `n` long; `low ≤ 7`.
                        let done = unsafe { x86::join_bytes_vbmi(&symbols, bytes, &placed, low, &mut out) };
                        finish(done, &mut out);
                        assert_eq!(out, expect, "vbmi, low {low}");
                    }
                }
            }
        }
    }
}
