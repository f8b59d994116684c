//! The rANS decoder — the reference the GPU kernels mirror step for step.

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
        Self {
            prob_bits: n,
            entries,
        }
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
    out: &mut [u8],
) -> Result<(), RansError> {
    let lanes = states.len();
    assert_eq!(lane_ends.len(), lanes, "one end per lane");
    let n = table.prob_bits;
    let mask = (1u32 << n) - 1;
    let entries = &table.entries[..];
    let mut x: Vec<u32> = states.to_vec();
    let mut pos: Vec<usize> = Vec::with_capacity(lanes);
    let mut start = 0usize;
    for (j, (&st, &end)) in states.iter().zip(lane_ends).enumerate() {
        if st < STATE_LOWER {
            return Err(RansError::BadState(j));
        }
        let end = end as usize;
        if end < start || end > words.len() {
            return Err(RansError::BadLaneEnd(j));
        }
        pos.push(start);
        start = end;
    }

    let step = |x: &mut u32, p: &mut usize| -> u8 {
        let e = entries[(*x & mask) as usize];
        let f = (e & 0xfff) + 1;
        let bias = (e >> 12) & 0xfff;
        let mut nx = f * (*x >> n) + bias;
        let need = nx < STATE_LOWER;
        // Branch-free refill: read the word (or 0 past the end) and keep it only when needed.
        let w = words.get(*p).copied().unwrap_or(0) as u32;
        nx = if need { (nx << WORD_BITS) | w } else { nx };
        *p += need as usize;
        *x = nx;
        (e >> 24) as u8
    };

    let mut chunks = out.chunks_exact_mut(lanes);
    for chunk in &mut chunks {
        for ((o, xs), p) in chunk.iter_mut().zip(x.iter_mut()).zip(pos.iter_mut()) {
            *o = step(xs, p);
        }
    }
    let rest = chunks.into_remainder();
    for ((o, xs), p) in rest.iter_mut().zip(x.iter_mut()).zip(pos.iter_mut()) {
        *o = step(xs, p);
    }

    for (j, ((&xs, &p), &end)) in x.iter().zip(&pos).zip(lane_ends).enumerate() {
        if xs != STATE_LOWER || p != end as usize {
            return Err(RansError::LaneMismatch(j));
        }
    }
    Ok(())
}
