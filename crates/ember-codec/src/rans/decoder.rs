//! The rANS decoder — the reference the GPU kernels mirror step for step.
//!
//! [`decode_lanes`] validates the lane table, then runs the steps with AVX-512 (sixteen lanes per
//! vector, symbol output from 64 lanes on), AVX2 (eight lanes per vector) — both x86-64 only,
//! detected at run time — or the portable scalar loop; all compute exactly the same thing and
//! are tested against each other (see [`Simd`]). The AVX2 loop is bound by its
//! gathers (table lookups and refill words): refills come from a buffer of the next four words
//! per lane, gathered every fourth round (see `block_avx2`).

use super::{FrequencyTable, STATE_LOWER, WORD_BITS};

/// Slot → symbol table: entry `slot` packs `(freq - 1) | (slot - cum) << 12 | symbol << 24`.
///
/// With `prob_bits ≤ 12`, `freq - 1` and `slot - cum` fit in 12 bits each, so one `u32` load per
/// decoded symbol gives everything a step needs. The GPU kernels build the same table in shared
/// memory.
#[derive(Clone, Debug)]
pub struct DecodeTable {
    prob_bits: u32,
    entries: Vec<u32>,
}

impl DecodeTable {
    pub(crate) fn new(table: &FrequencyTable) -> Self {
        let n = table.prob_bits();
        let mut entries = vec![0u32; 1 << n];
        let mut slot = 0usize;
        for (s, &f) in table.freqs().iter().enumerate() {
            for bias in 0..f {
                entries[slot] = (f - 1) | (bias << 12) | ((s as u32) << 24);
                slot += 1;
            }
        }
        Self { prob_bits: n, entries }
    }

    /// Rebuilds a table from its packed entries (as uploaded to a device), checking that every
    /// entry is one that [`FrequencyTable::decode_table`] can produce: `bias < freq` and the
    /// entries of a symbol form one run of `freq` slots.
    pub fn from_entries(prob_bits: u32, entries: Vec<u32>) -> Result<Self, String> {
        if !(super::MIN_PROB_BITS..=super::MAX_PROB_BITS).contains(&prob_bits) || entries.len() != 1 << prob_bits {
            return Err(format!("{} table entries for {prob_bits}-bit probabilities", entries.len()));
        }
        let mut slot = 0usize;
        while slot < entries.len() {
            let f = (entries[slot] & 0xfff) as usize + 1;
            let run = entries.get(slot..slot + f).ok_or("table run past its end")?;
            for (b, &e) in run.iter().enumerate() {
                if e != (f as u32 - 1) | ((b as u32) << 12) | (entries[slot] & 0xff00_0000) {
                    return Err(format!("table entry {} is inconsistent", slot + b));
                }
            }
            slot += f;
        }
        Ok(Self { prob_bits, entries })
    }

    /// The packed entries, `2^prob_bits` of them.
    pub fn entries(&self) -> &[u32] {
        &self.entries
    }

    /// Probability precision in bits.
    pub fn prob_bits(&self) -> u32 {
        self.prob_bits
    }
}

/// Why a lane failed to decode (the checksum passed but the stream is inconsistent).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RansError {
    /// A lane's state was outside `[STATE_LOWER, 2^32)` at the start.
    #[error("lane {0} starts with a denormalised state")]
    BadState(usize),
    /// Lane end offsets decrease or run past the word area.
    #[error("lane {0}'s end offset is out of order or past the end of the words")]
    BadLaneEnd(usize),
    /// A lane read more or fewer words than it owns, or did not end at the initial state.
    #[error("lane {0} did not decode to its exact end (stream corrupt)")]
    LaneMismatch(usize),
    /// The lane table is empty or its two halves differ in length.
    #[error("{states} lane states but {ends} lane ends (a tile needs at least one lane)")]
    LaneCount {
        /// States given.
        states: usize,
        /// Ends given.
        ends: usize,
    },
    /// Fewer raw bytes than elements to decode.
    #[error("{raw} raw bytes for {count} elements")]
    RawTooShort {
        /// Raw bytes given.
        raw: usize,
        /// Elements to decode.
        count: usize,
    },
}

/// Where decoded symbols go: as bytes, or joined with raw bytes into BF16 values on the fly
/// (the `lossless` BF16 fast path: `bf16 = (raw & 0x80) << 8 | symbol << 7 | raw & 0x7f`).
pub enum LaneOutput<'a> {
    /// One byte per symbol.
    Symbols(&'a mut [u8]),
    /// Two bytes (a little-endian BF16) per symbol, `raw` holding one sign+mantissa byte each.
    Bf16 {
        /// Sign and mantissa bytes, one per element.
        raw: &'a [u8],
        /// Output, two bytes per element.
        out: &'a mut [u8],
    },
}

impl LaneOutput<'_> {
    fn len(&self) -> usize {
        match self {
            LaneOutput::Symbols(o) => o.len(),
            LaneOutput::Bf16 { out, .. } => out.len() / 2,
        }
    }
}

#[inline(always)]
fn join_bf16(sym: u8, raw: u8) -> [u8; 2] {
    (((raw as u16) & 0x80) << 8 | (sym as u16) << 7 | (raw as u16) & 0x7f).to_le_bytes()
}

/// Lane states and read positions while decoding.
struct Lanes {
    x: Vec<u32>,
    pos: Vec<u32>,
}

/// One decoding step of one lane (the specification; the SIMD path computes the same).
#[inline(always)]
fn step(entries: &[u32], n: u32, words: &[u16], x: &mut u32, p: &mut u32) -> u8 {
    let e = entries[(*x & ((1 << n) - 1)) as usize];
    let f = (e & 0xfff) + 1;
    let bias = (e >> 12) & 0xfff;
    let mut nx = f * (*x >> n) + bias;
    let need = nx < STATE_LOWER;
    // Branch-free refill: read the word (or 0 past the end) and keep it only when needed.
    let w = words.get(*p as usize).copied().unwrap_or(0) as u32;
    nx = if need { (nx << WORD_BITS) | w } else { nx };
    *p += need as u32;
    *x = nx;
    (e >> 24) as u8
}

/// Decodes symbols `range`, which starts at a round boundary (symbol `i` belongs to lane
/// `i % lanes`).
fn decode_scalar(
    lanes: &mut Lanes,
    table: &DecodeTable,
    words: &[u16],
    out: &mut LaneOutput,
    range: std::ops::Range<usize>,
) {
    let (entries, n) = (&table.entries[..], table.prob_bits);
    let width = lanes.x.len();
    let Lanes { x, pos } = lanes;
    match out {
        LaneOutput::Symbols(o) => {
            for round in o[range].chunks_mut(width) {
                for ((o, x), p) in round.iter_mut().zip(x.iter_mut()).zip(pos.iter_mut()) {
                    *o = step(entries, n, words, x, p);
                }
            }
        }
        LaneOutput::Bf16 { raw, out } => {
            let rounds = out[2 * range.start..2 * range.end].chunks_mut(2 * width).zip(raw[range].chunks(width));
            for (round, raw) in rounds {
                for (((o, &r), x), p) in round.chunks_exact_mut(2).zip(raw).zip(x.iter_mut()).zip(pos.iter_mut()) {
                    o.copy_from_slice(&join_bf16(step(entries, n, words, x, p), r));
                }
            }
        }
    }
}

/// Decodes `out.len()` symbols from `lanes = states.len()` interleaved lanes.
///
/// `lane_ends[j]` is the exclusive end of lane `j`'s words in `words` (lane `j` starts where lane
/// `j - 1` ends). Step for lane `j` at symbol `i` (`i % lanes == j`), precision `n`:
/// 1. `slot = x mod 2^n`; look up `(f, bias = slot - c, s)`; output `s`;
/// 2. `x ← f · (x >> n) + bias`;
/// 3. if `x < STATE_LOWER`: `x ← (x << 16) | next word of lane j`.
///
/// Never reads out of bounds, whatever the input: a lane that runs dry reads zeros and is then
/// reported by the final check (every lane must end at `STATE_LOWER` with all its words used).
pub fn decode_lanes(
    states: &[u32],
    lane_ends: &[u32],
    words: &[u16],
    table: &DecodeTable,
    out: LaneOutput,
) -> Result<(), RansError> {
    decode_lanes_with(states, lane_ends, words, table, out, Simd::Best)
}

/// Which instruction set [`decode_lanes_with`] may use.
///
/// A lane's steps form one dependent chain (table gather, multiply, refill), so the decoder is
/// bound by that chain's latency unless enough lanes are in flight: with 32 lanes AVX2 (four
/// vectors) and AVX-512 (two) decode at the same rate; with 64 lanes (the encoder's default for
/// large tiles) AVX-512's four vectors of 16 decode about 1.4× faster than AVX2's eight of 8
/// (Intel Xeon, AVX-512 VBMI; symbols only). So AVX-512 takes symbol output for 64 lanes and
/// more, AVX2 everything else it can.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Simd {
    /// The portable scalar loop only.
    Scalar,
    /// AVX2 where the CPU has it, never AVX-512.
    Avx2,
    /// The fastest path the CPU and the lane count allow.
    Best,
}

/// Lanes from which AVX-512 decodes symbols (four vectors of 16 in flight).
const AVX512_MIN_LANES: usize = 64;

/// [`decode_lanes`] with the SIMD path selectable, so tests can compare them.
#[doc(hidden)]
pub fn decode_lanes_with(
    states: &[u32],
    lane_ends: &[u32],
    words: &[u16],
    table: &DecodeTable,
    mut out: LaneOutput,
    simd: Simd,
) -> Result<(), RansError> {
    let mut lanes = start_lanes(states, lane_ends, words)?;
    let count = out.len();
    if let LaneOutput::Bf16 { raw, .. } = &out {
        if raw.len() < count {
            return Err(RansError::RawTooShort { raw: raw.len(), count });
        }
    }
    run_rounds(&mut lanes, table, &Padded::new(words), &mut out, simd);
    finish_lanes(&lanes, lane_ends)
}

/// Symbols that [`decode_symbol_chunks`] decodes before handing them on: the chunk, and what the
/// caller writes from it, stay in the first two cache levels.
const SYMBOL_CHUNK: usize = 8192;

/// Decodes `count` symbols as [`decode_lanes`] does into [`LaneOutput::Symbols`], but a chunk
/// of a few thousand at a time into a small buffer, calling `sink(start, symbols)` for each chunk
/// in order (`start` is the index of its first symbol, a multiple of 8).
///
/// Why: a caller that turns symbols into values (a table lookup, a join with raw fields) can do
/// it while the chunk is still in the cache, with its own vector code, instead of folding the
/// lookup into the rANS loop, where on AVX2 it costs one more gather per eight symbols. As with
/// [`decode_lanes`], a corrupt stream still calls the sink with whatever it decoded and is then
/// reported.
pub fn decode_symbol_chunks(
    states: &[u32],
    lane_ends: &[u32],
    words: &[u16],
    table: &DecodeTable,
    count: usize,
    mut sink: impl FnMut(usize, &[u8]),
) -> Result<(), RansError> {
    let mut lanes = start_lanes(states, lane_ends, words)?;
    let width = states.len();
    // Whole rounds per chunk, so that every chunk starts with lane 0, and a multiple of 8
    // symbols, so that fields packed at any bit width beside them start at a whole byte.
    let chunk = (SYMBOL_CHUNK / (8 * width)).max(1) * 8 * width;
    let mut buf = vec![0u8; chunk.min(count)];
    let words = Padded::new(words);
    let mut start = 0;
    while start < count {
        let len = chunk.min(count - start);
        let symbols = &mut buf[..len];
        run_rounds(&mut lanes, table, &words, &mut LaneOutput::Symbols(symbols), Simd::Best);
        sink(start, symbols);
        start += len;
    }
    finish_lanes(&lanes, lane_ends)
}

/// A tile's words with four zero words appended, copied once per decode: the vector loops
/// gather up to 8 bytes at any read position up to the real end, so even a corrupt stream never
/// reads outside the copy (the scalar steps read zeros past the end too).
struct Padded {
    words: Vec<u16>,
    len: usize,
}

impl Padded {
    fn new(words: &[u16]) -> Self {
        let mut padded = Vec::with_capacity(words.len() + 4);
        padded.extend_from_slice(words);
        padded.extend_from_slice(&[0; 4]);
        Self { words: padded, len: words.len() }
    }

    /// The real words.
    fn real(&self) -> &[u16] {
        &self.words[..self.len]
    }
}

/// Checks a tile's lane table and sets every lane at its first word.
fn start_lanes(states: &[u32], lane_ends: &[u32], words: &[u16]) -> Result<Lanes, RansError> {
    let width = states.len();
    if width == 0 || lane_ends.len() != width {
        return Err(RansError::LaneCount { states: width, ends: lane_ends.len() });
    }
    let mut lanes = Lanes { x: states.to_vec(), pos: Vec::with_capacity(width) };
    let mut start = 0u32;
    for (j, (&st, &end)) in states.iter().zip(lane_ends).enumerate() {
        if st < STATE_LOWER {
            return Err(RansError::BadState(j));
        }
        if end < start || end as usize > words.len() {
            return Err(RansError::BadLaneEnd(j));
        }
        lanes.pos.push(start);
        start = end;
    }
    Ok(lanes)
}

/// Decodes `out.len()` symbols from the lanes' current positions: whole rounds with the fastest
/// path allowed, the last partial round with the scalar steps. `out` starts at a round boundary.
fn run_rounds(lanes: &mut Lanes, table: &DecodeTable, words: &Padded, out: &mut LaneOutput, simd: Simd) {
    let width = lanes.x.len();
    let count = out.len();
    let full = count / width * width;
    #[cfg(target_arch = "x86_64")]
    let done = if simd == Simd::Best
        && matches!(out, LaneOutput::Symbols(_))
        && width >= AVX512_MIN_LANES
        && width.is_multiple_of(16)
        && is_x86_feature_detected!("avx512f")
    {
        // SAFETY: AVX-512 F is available (checked just above); `full ≤ count`.
        unsafe { x86::decode_symbols_avx512(lanes, table, words, out, full) }
    } else if simd != Simd::Scalar && width.is_multiple_of(8) && is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 is available (checked just above); `full ≤ count`.
        unsafe { x86::decode_rounds_avx2(lanes, table, words, out, full) };
        true
    } else {
        false
    };
    #[cfg(not(target_arch = "x86_64"))]
    let done = {
        let _ = simd;
        false
    };
    if !done {
        decode_scalar(lanes, table, words.real(), out, 0..full);
    }
    decode_scalar(lanes, table, words.real(), out, full..count);
}

/// Every lane must end at `STATE_LOWER` with all its words read.
fn finish_lanes(lanes: &Lanes, lane_ends: &[u32]) -> Result<(), RansError> {
    for (j, ((&x, &p), &end)) in lanes.x.iter().zip(&lanes.pos).zip(lane_ends).enumerate() {
        if x != STATE_LOWER || p != end {
            return Err(RansError::LaneMismatch(j));
        }
    }
    Ok(())
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! The vector decoding steps: 8 lanes per `__m256i` (AVX2), 16 per `__m512i` (AVX-512). The
    //! table lookup and the per-lane refill are gathers; refill reads are clamped to a
    //! zero-padded copy of the words ([`Padded`]), so even a corrupt stream never reads outside
    //! it.
    use std::arch::x86_64::*;

    use super::{DecodeTable, LaneOutput, Lanes, Padded};

    /// What one block of lanes reads and writes.
    struct Block {
        entries: *const i32,
        prob_bits: u32,
        /// The padded words, and the number of real ones.
        words: *const i64,
        len: usize,
        /// Symbol bytes, or BF16 values (two bytes each) joined with `raw`.
        out: *mut u8,
        raw: *const u8,
        width: usize,
        full: usize,
    }

    /// Decodes symbols `0..full` (whole rounds; the lane count is a multiple of 8), into symbol
    /// bytes or, for version-1 BF16 tiles, BF16 values.
    ///
    /// # Safety
    /// The CPU must support AVX2; `full ≤ out.len()`; `out` is [`LaneOutput::Symbols`] or
    /// [`LaneOutput::Bf16`] with at least `full` raw bytes.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn decode_rounds_avx2(
        lanes: &mut Lanes,
        table: &DecodeTable,
        words: &Padded,
        out: &mut LaneOutput,
        full: usize,
    ) {
        let width = lanes.x.len();
        let (out, raw) = match out {
            LaneOutput::Symbols(o) => (o.as_mut_ptr(), std::ptr::null()),
            LaneOutput::Bf16 { raw, out } => (out.as_mut_ptr(), raw.as_ptr()),
        };
        let block = Block {
            entries: table.entries.as_ptr() as *const i32,
            prob_bits: table.prob_bits,
            words: words.words.as_ptr() as *const i64,
            len: words.len,
            out,
            raw,
            width,
            full,
        };
        // Lanes never interact, so a tile's lanes are decoded in blocks, each through all the
        // rounds. Blocks of 32 lanes (four vectors) keep their states in registers and measured
        // 7% faster than blocks of 64, which spill; 16 lanes are too few to hide the latency of a
        // step.
        let groups = [4, 2, 1].into_iter().find(|g| (width / 8).is_multiple_of(*g)).unwrap_or(1);
        for first in (0..width).step_by(8 * groups) {
            let (x, pos) = (&mut lanes.x[first..first + 8 * groups], &mut lanes.pos[first..first + 8 * groups]);
            // SAFETY: AVX2 is available and `block` describes valid buffers (the caller's
            // contract); `first + 8 · groups ≤ width`.
            unsafe {
                match (groups, block.raw.is_null()) {
                    (4, true) => block_avx2::<4, false>(&block, first, x, pos),
                    (2, true) => block_avx2::<2, false>(&block, first, x, pos),
                    (_, true) => block_avx2::<1, false>(&block, first, x, pos),
                    (4, false) => block_avx2::<4, true>(&block, first, x, pos),
                    (2, false) => block_avx2::<2, true>(&block, first, x, pos),
                    (_, false) => block_avx2::<1, true>(&block, first, x, pos),
                }
            }
        }
    }

    /// Decodes lanes `first..first + 8·G` through every round of `b`.
    ///
    /// Refill words come from a per-lane buffer of the next four words (two registers of two
    /// words per lane), filled by two 64-bit gathers every fourth round: a lane reads at most one
    /// word per round, so four rounds never need more. On AMD Zen 3 a gather costs about one
    /// cycle per element, whatever its width, so this reads a quarter of the elements that a
    /// gather of one word per round would. Past the end the buffer holds the zero padding, as
    /// the scalar path reads zeros.
    ///
    /// # Safety
    /// As [`decode_rounds_avx2`]; `x` and `pos` hold `8·G` lanes.
    #[target_feature(enable = "avx2")]
    unsafe fn block_avx2<const G: usize, const BF16: bool>(b: &Block, first: usize, x: &mut [u32], pos: &mut [u32]) {
        // SAFETY: AVX2 is available (the caller's contract); every load and store is within
        // `x`, `pos`, the output (`full ≤` its length), the raw bytes or the zero-padded words,
        // whose gather indices are clamped to the number of real words.
        unsafe {
            let limit = _mm256_set1_epi32(b.len as i32);
            let shift_n = _mm_cvtsi32_si128(b.prob_bits as i32);
            let slot_mask = _mm256_set1_epi32((1 << b.prob_bits) - 1);
            let low12 = _mm256_set1_epi32(0xfff);
            let one = _mm256_set1_epi32(1);
            let low16 = _mm256_set1_epi32(0xffff);
            let zero = _mm256_setzero_si256();
            let (m80, m7f) = (_mm256_set1_epi32(0x80), _mm256_set1_epi32(0x7f));
            // Byte 3 of each 32-bit lane → bytes 0..4 of each 128-bit half, then both halves'
            // four bytes → the low eight.
            let pick = _mm256_setr_epi8(
                3, 7, 11, 15, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 3, 7, 11, 15, -1, -1, -1, -1, -1, -1, -1,
                -1, -1, -1, -1, -1,
            );
            let halves = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
            // Even 32-bit elements first: a 64-bit gather's (words 0-1, words 2-3) pairs apart.
            let split = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
            let mut xs: [__m256i; G] =
                std::array::from_fn(|g| _mm256_loadu_si256(x.as_ptr().add(8 * g) as *const __m256i));
            let mut ps: [__m256i; G] =
                std::array::from_fn(|g| _mm256_loadu_si256(pos.as_ptr().add(8 * g) as *const __m256i));
            let (mut lo, mut hi) = ([zero; G], [zero; G]);
            for (round, base) in (0..b.full).step_by(b.width).enumerate() {
                if round % 4 == 0 {
                    for g in 0..G {
                        let p = _mm256_min_epu32(ps[g], limit);
                        let l = _mm256_i32gather_epi64::<2>(b.words, _mm256_castsi256_si128(p));
                        let h = _mm256_i32gather_epi64::<2>(b.words, _mm256_extracti128_si256::<1>(p));
                        let (l, h) = (_mm256_permutevar8x32_epi32(l, split), _mm256_permutevar8x32_epi32(h, split));
                        lo[g] = _mm256_permute2x128_si256::<0x20>(l, h);
                        hi[g] = _mm256_permute2x128_si256::<0x31>(l, h);
                    }
                }
                for g in 0..G {
                    let x = xs[g];
                    let e = _mm256_i32gather_epi32::<4>(b.entries, _mm256_and_si256(x, slot_mask));
                    let f = _mm256_add_epi32(_mm256_and_si256(e, low12), one);
                    let bias = _mm256_and_si256(_mm256_srli_epi32::<12>(e), low12);
                    let nx = _mm256_add_epi32(_mm256_mullo_epi32(f, _mm256_srl_epi32(x, shift_n)), bias);
                    let need = _mm256_cmpeq_epi32(_mm256_srli_epi32::<16>(nx), zero);
                    let refilled = _mm256_or_si256(_mm256_slli_epi32::<16>(nx), _mm256_and_si256(lo[g], low16));
                    xs[g] = _mm256_blendv_epi8(nx, refilled, need);
                    let next = _mm256_or_si256(_mm256_srli_epi32::<16>(lo[g]), _mm256_slli_epi32::<16>(hi[g]));
                    lo[g] = _mm256_blendv_epi8(lo[g], next, need);
                    hi[g] = _mm256_blendv_epi8(hi[g], _mm256_srli_epi32::<16>(hi[g]), need);
                    ps[g] = _mm256_sub_epi32(ps[g], need);
                    let i = base + first + 8 * g;
                    if !BF16 {
                        let syms = _mm256_permutevar8x32_epi32(_mm256_shuffle_epi8(e, pick), halves);
                        _mm_storel_epi64(b.out.add(i) as *mut __m128i, _mm256_castsi256_si128(syms));
                    } else {
                        let raw = _mm256_cvtepu8_epi32(_mm_loadl_epi64(b.raw.add(i) as *const __m128i));
                        let sym = _mm256_srli_epi32::<24>(e);
                        let v = _mm256_or_si256(
                            _mm256_or_si256(
                                _mm256_slli_epi32::<8>(_mm256_and_si256(raw, m80)),
                                _mm256_slli_epi32::<7>(sym),
                            ),
                            _mm256_and_si256(raw, m7f),
                        );
                        let packed = _mm256_permute4x64_epi64::<0b1000>(_mm256_packus_epi32(v, v));
                        _mm_storeu_si128(b.out.add(2 * i) as *mut __m128i, _mm256_castsi256_si128(packed));
                    }
                }
            }
            for g in 0..G {
                _mm256_storeu_si256(x.as_mut_ptr().add(8 * g) as *mut __m256i, xs[g]);
                _mm256_storeu_si256(pos.as_mut_ptr().add(8 * g) as *mut __m256i, ps[g]);
            }
        }
    }

    /// Decodes symbols `0..full` (whole rounds; the lane count is a multiple of 16) into a
    /// [`LaneOutput::Symbols`] output, 16 lanes per `__m512i`: the same steps as the AVX2 loop,
    /// with mask registers for the refill condition.
    ///
    /// Returns whether it decoded (only symbol output is taken; other outputs are left
    /// untouched for another path).
    ///
    /// # Safety
    /// The CPU must support AVX-512 F; `full ≤ out.len()`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn decode_symbols_avx512(
        lanes: &mut Lanes,
        table: &DecodeTable,
        words: &Padded,
        out: &mut LaneOutput,
        full: usize,
    ) -> bool {
        let LaneOutput::Symbols(out) = out else { return false };
        // SAFETY: AVX-512 F is available (the caller's contract); every load and store is within `lanes`, `out[..full]` or the zero-padded word copy, whose gather indices are clamped to its length.
        unsafe {
            let width = lanes.x.len();
            let groups = width / 16;
            let limit = _mm512_set1_epi32(words.len as i32);
            let n = table.prob_bits;
            let shift_n = _mm_cvtsi32_si128(n as i32);
            let slot_mask = _mm512_set1_epi32((1 << n) - 1);
            let low12 = _mm512_set1_epi32(0xfff);
            let one = _mm512_set1_epi32(1);
            let low16 = _mm512_set1_epi32(0xffff);
            let lower = _mm512_set1_epi32(super::STATE_LOWER as i32);
            let entries = table.entries.as_ptr() as *const i32;
            let wptr = words.words.as_ptr() as *const i32;
            let optr = out.as_mut_ptr();
            let mut xs: Vec<__m512i> =
                (0..groups).map(|g| _mm512_loadu_si512(lanes.x.as_ptr().add(16 * g) as *const __m512i)).collect();
            let mut ps: Vec<__m512i> =
                (0..groups).map(|g| _mm512_loadu_si512(lanes.pos.as_ptr().add(16 * g) as *const __m512i)).collect();
            // A two-word refill buffer per lane, gathered every other round (the AVX2 loop's
            // four-word one, in one register).
            let mut bufs: Vec<__m512i> = vec![_mm512_setzero_si512(); groups];
            for (round, base) in (0..full).step_by(width).enumerate() {
                if round % 2 == 0 {
                    for g in 0..groups {
                        bufs[g] = _mm512_i32gather_epi32::<2>(_mm512_min_epu32(ps[g], limit), wptr);
                    }
                }
                for g in 0..groups {
                    let x = xs[g];
                    let e = _mm512_i32gather_epi32::<4>(_mm512_and_si512(x, slot_mask), entries);
                    let f = _mm512_add_epi32(_mm512_and_si512(e, low12), one);
                    let bias = _mm512_and_si512(_mm512_srli_epi32::<12>(e), low12);
                    let nx = _mm512_add_epi32(_mm512_mullo_epi32(f, _mm512_srl_epi32(x, shift_n)), bias);
                    let need = _mm512_cmplt_epu32_mask(nx, lower);
                    let buf = bufs[g];
                    let refilled = _mm512_or_si512(_mm512_slli_epi32::<16>(nx), _mm512_and_si512(buf, low16));
                    xs[g] = _mm512_mask_mov_epi32(nx, need, refilled);
                    bufs[g] = _mm512_mask_mov_epi32(buf, need, _mm512_srli_epi32::<16>(buf));
                    ps[g] = _mm512_mask_add_epi32(ps[g], need, ps[g], one);
                    let syms = _mm512_cvtepi32_epi8(_mm512_srli_epi32::<24>(e));
                    _mm_storeu_si128(optr.add(base + 16 * g) as *mut __m128i, syms);
                }
            }
            for g in 0..groups {
                _mm512_storeu_si512(lanes.x.as_mut_ptr().add(16 * g) as *mut __m512i, xs[g]);
                _mm512_storeu_si512(lanes.pos.as_mut_ptr().add(16 * g) as *mut __m512i, ps[g]);
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rans::{encode_lanes, FrequencyTable};

    #[test]
    fn simd_and_scalar_agree_including_on_corrupt_streams() {
        let mut x = 7u64;
        let symbols: Vec<u8> = (0..20_000)
            .map(|_| {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                ((x >> 40).trailing_zeros().min(20) * 3) as u8
            })
            .collect();
        let mut counts = vec![0u64; 256];
        symbols.iter().for_each(|&s| counts[s as usize] += 1);
        let table = FrequencyTable::from_counts(&counts, 11).unwrap();
        for lanes in [8, 16, 24, 32, 64, 128, 256, 1024] {
            let streams = encode_lanes(&symbols, lanes, &table);
            let (ends, mut words) = streams.concat_words();
            let dt = table.decode_table();
            let raw: Vec<u8> = (0..symbols.len()).map(|i| (i * 37) as u8).collect();
            let expect_bf16: Vec<u8> = symbols.iter().zip(&raw).flat_map(|(&s, &r)| join_bf16(s, r)).collect();
            let run = |words: &[u16], simd: Simd| {
                let mut a = vec![0u8; symbols.len()];
                let mut b = vec![0u8; 2 * symbols.len()];
                let mut c = vec![0u8; 2 * symbols.len()];
                let ra = decode_lanes_with(&streams.states, &ends, words, &dt, LaneOutput::Symbols(&mut a), simd);
                let rb = decode_lanes_with(
                    &streams.states,
                    &ends,
                    words,
                    &dt,
                    LaneOutput::Bf16 { raw: &raw, out: &mut b },
                    simd,
                );
                assert_eq!(ra, rb);
                if simd == Simd::Best {
                    // Chunk by chunk: the same symbols, handed over in order, and the same verdict.
                    let mut next = 0;
                    let rc = decode_symbol_chunks(&streams.states, &ends, words, &dt, symbols.len(), |start, s| {
                        assert_eq!((start, start % 8), (next, 0));
                        c[start..start + s.len()].copy_from_slice(s);
                        next += s.len();
                    });
                    assert_eq!((rc, next), (ra.clone(), symbols.len()));
                    assert_eq!(c[..symbols.len()], a[..]);
                }
                (ra, a, b)
            };
            let reference = run(&words, Simd::Scalar);
            assert_eq!(reference, (Ok(()), symbols.clone(), expect_bf16.clone()));
            for simd in [Simd::Avx2, Simd::Best] {
                assert_eq!(run(&words, simd), reference, "lanes {lanes} {simd:?}");
            }
            // Corrupt a word: every path must report the same error and produce the same bytes.
            let mid = words.len() / 2;
            words[mid] ^= 0x5a5a;
            let reference = run(&words, Simd::Scalar);
            assert!(reference.0.is_err());
            for simd in [Simd::Avx2, Simd::Best] {
                assert_eq!(run(&words, simd), reference, "lanes {lanes} {simd:?} corrupt");
            }
        }
    }

    #[test]
    fn malformed_lane_tables_are_errors_not_panics() {
        let table = FrequencyTable::from_counts(&[3, 1], 8).unwrap().decode_table();
        let mut out = [0u8; 4];
        let e = decode_lanes(&[], &[], &[], &table, LaneOutput::Symbols(&mut out)).unwrap_err();
        assert_eq!(e.to_string(), "0 lane states but 0 lane ends (a tile needs at least one lane)");
        let e = decode_lanes(&[STATE_LOWER], &[0, 0], &[], &table, LaneOutput::Symbols(&mut out)).unwrap_err();
        assert!(matches!(e, RansError::LaneCount { states: 1, ends: 2 }), "{e}");
        let mut wide = [0u8; 8];
        let e = decode_lanes(&[STATE_LOWER], &[0], &[], &table, LaneOutput::Bf16 { raw: &[0; 3], out: &mut wide })
            .unwrap_err();
        assert_eq!(e.to_string(), "3 raw bytes for 4 elements");
        let e = decode_lanes(&[5], &[0], &[], &table, LaneOutput::Symbols(&mut out)).unwrap_err();
        assert_eq!(e, RansError::BadState(0));
    }
}
