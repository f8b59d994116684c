//! The rANS encoder: N interleaved lanes, each with its own state and its own word stream.

use super::{FrequencyTable, STATE_LOWER, WORD_BITS};

/// The encoder's output for one tile: the lanes' final states (the decoder's start states) and
/// each lane's words in *decoding* order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LaneStreams {
    /// Final encoder state of each lane = initial decoder state.
    pub states: Vec<u32>,
    /// Each lane's 16-bit words, in the order the decoder reads them.
    pub words: Vec<Vec<u16>>,
}

impl LaneStreams {
    /// Lane end offsets (exclusive, cumulative, in words) and the concatenated words, lane 0 first.
    pub fn concat_words(&self) -> (Vec<u32>, Vec<u16>) {
        let mut ends = Vec::with_capacity(self.words.len());
        let total: usize = self.words.iter().map(Vec::len).sum();
        let mut all = Vec::with_capacity(total);
        for w in &self.words {
            all.extend_from_slice(w);
            ends.push(all.len() as u32);
        }
        (ends, all)
    }

    /// Bytes these streams occupy in a tile (states, lane ends, words).
    pub fn payload_bytes(&self) -> usize {
        8 * self.states.len() + 2 * self.words.iter().map(Vec::len).sum::<usize>()
    }
}

/// Encodes `symbols` over `lanes` interleaved rANS lanes: symbol `i` goes to lane `i % lanes`.
///
/// The encoder walks the symbols backwards so that the decoder, walking forwards, produces them
/// in order. Step for symbol `s` with frequency `f` and cumulative frequency `c` at precision `n`:
/// 1. renormalise: while `x ≥ f · 2^(32-n)`, emit `x & 0xffff` and shift `x` right by 16
///    (happens at most once, since `x < 2^32`);
/// 2. `x ← (x / f) · 2^n + (x mod f) + c`.
///
/// Panics if `lanes` is 0 or a symbol has frequency 0 (callers build the table from the data).
pub fn encode_lanes(symbols: &[u8], lanes: usize, table: &FrequencyTable) -> LaneStreams {
    assert!(lanes > 0, "at least one lane");
    let n = table.prob_bits();
    let mut states = vec![STATE_LOWER; lanes];
    let per_lane_hint = symbols.len() / lanes / 4 + 1;
    let mut words: Vec<Vec<u16>> = (0..lanes).map(|_| Vec::with_capacity(per_lane_hint)).collect();
    for (i, &s) in symbols.iter().enumerate().rev() {
        let lane = i % lanes;
        let (f, c) = table.get(s);
        assert!(f > 0, "symbol {s} has zero frequency");
        let mut x = states[lane];
        let x_max = (f as u64) << (32 - n);
        if x as u64 >= x_max {
            words[lane].push(x as u16);
            x >>= WORD_BITS;
        }
        states[lane] = ((x / f) << n) + (x % f) + c;
    }
    for w in &mut words {
        w.reverse();
    }
    LaneStreams { states, words }
}
