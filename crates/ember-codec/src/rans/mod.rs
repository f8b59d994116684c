//! Interleaved rANS with 32-bit states and 16-bit renormalisation.
//!
//! Three separate pieces, as in `ryg_rans`/`constriction`:
//! - [`FrequencyTable`] — the probability model: symbol frequencies summing to `2^prob_bits`;
//! - [`encode_lanes`] — the coder: N lane states, symbol `i` of a tile goes to lane `i % N`;
//! - [`decode_lanes`] — the mirror image, which the GPU kernels reproduce step for step.
//!
//! Invariants (see `FORMAT.md`, "rANS"):
//! - a state `x` always lies in `[STATE_LOWER, 2^32)` between steps;
//! - the encoder starts every lane at `STATE_LOWER`, so a decoder that consumed a lane exactly ends
//!   at `STATE_LOWER` with no word left — a free integrity check;
//! - a decoding step reads at most one 16-bit word per lane.

mod decoder;
mod encoder;
mod freq;

pub use decoder::{decode_lanes, decode_lanes_with, decode_symbol_chunks, DecodeTable, LaneOutput, RansError, Simd};
pub use encoder::{encode_lanes, LaneStreams};
pub use freq::{FrequencyTable, MAX_PROB_BITS, MIN_PROB_BITS};

/// Lower bound of the normalised state interval `[STATE_LOWER, 2^32)`.
pub const STATE_LOWER: u32 = 1 << 16;
/// Bits moved per renormalisation step.
pub const WORD_BITS: u32 = 16;

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(symbols: &[u8], alphabet: usize, lanes: usize, prob_bits: u32) {
        let mut counts = vec![0u64; alphabet];
        for &s in symbols {
            counts[s as usize] += 1;
        }
        let table = FrequencyTable::from_counts(&counts, prob_bits).unwrap();
        let streams = encode_lanes(symbols, lanes, &table);
        let (ends, words) = streams.concat_words();
        let mut out = vec![0u8; symbols.len()];
        decode_lanes(&streams.states, &ends, &words, &table.decode_table(), LaneOutput::Symbols(&mut out)).unwrap();
        assert_eq!(out, symbols);
    }

    #[test]
    fn round_trips_small_cases() {
        round_trip(&[], 4, 32, 12);
        round_trip(&[3], 4, 32, 12);
        round_trip(&[0; 1000], 4, 32, 12);
        round_trip(&[1, 2, 3, 1, 2, 3, 0, 0, 0], 4, 1, 8);
        let many: Vec<u8> = (0..100_003u32).map(|i| (i.wrapping_mul(2654435761) >> 24) as u8).collect();
        round_trip(&many, 256, 32, 12);
        round_trip(&many, 256, 4, 8);
    }

    #[test]
    fn skewed_distribution_round_trips_and_compresses() {
        // Geometric-ish distribution like BF16 exponents.
        let mut x = 12345u64;
        let symbols: Vec<u8> = (0..200_000)
            .map(|_| {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((x >> 33).trailing_zeros().min(40) + 100) as u8
            })
            .collect();
        round_trip(&symbols, 256, 32, 12);
        let mut counts = vec![0u64; 256];
        symbols.iter().for_each(|&s| counts[s as usize] += 1);
        let table = FrequencyTable::from_counts(&counts, 12).unwrap();
        let bytes = encode_lanes(&symbols, 32, &table).payload_bytes();
        let bound = crate::entropy::order0_bits(&counts) / 8.0;
        assert!((bytes as f64) < bound * 1.01 + 32.0 * 8.0, "{bytes} vs bound {bound}");
    }
}
