//! The probability model: per-symbol frequencies quantised to sum to `2^prob_bits`.

use super::decoder::DecodeTable;

/// Smallest supported probability precision.
pub const MIN_PROB_BITS: u32 = 8;
/// Largest supported probability precision. 12 bits keeps the GPU's slot → symbol table at
/// 4096 entries (16 KiB of shared memory) and lets a table entry pack into one `u32`.
pub const MAX_PROB_BITS: u32 = 12;

/// Frequencies `f[s]` with `Σ f[s] = 2^prob_bits`; `f[s] = 0` means "never occurs".
///
/// Invariant: every symbol that occurs in the data has `f[s] ≥ 1`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrequencyTable {
    prob_bits: u32,
    freqs: Vec<u32>,
    cums: Vec<u32>,
}

impl FrequencyTable {
    /// Quantises symbol counts to frequencies that minimise the coded size (greedily, from the
    /// rounded proportional frequencies), keeping every occurring symbol at frequency ≥ 1.
    ///
    /// An all-zero `counts` (empty input) yields a table with all mass on symbol 0.
    pub fn from_counts(counts: &[u64], prob_bits: u32) -> Result<Self, String> {
        check_prob_bits(prob_bits)?;
        let total_prob = 1u64 << prob_bits;
        let present = counts.iter().filter(|&&c| c > 0).count() as u64;
        if present > total_prob {
            return Err(format!("{present} distinct symbols do not fit in {prob_bits}-bit probabilities"));
        }
        let total: u64 = counts.iter().sum();
        let mut freqs = vec![0u32; counts.len()];
        if total == 0 {
            if let Some(f) = freqs.first_mut() {
                *f = total_prob as u32;
            }
            return Self::from_freqs(freqs, prob_bits);
        }
        for (f, &c) in freqs.iter_mut().zip(counts) {
            if c > 0 {
                let scaled = ((c as u128 * total_prob as u128 + total as u128 / 2) / total as u128) as u64;
                *f = scaled.clamp(1, total_prob) as u32;
            }
        }
        let mut sum: i64 = freqs.iter().map(|&f| f as i64).sum();
        // Move one unit at a time where it costs (or gains) least: Δbits = c·log2(f'/f).
        while sum != total_prob as i64 {
            let grow = sum < total_prob as i64;
            let mut best: Option<(usize, f64)> = None;
            for (s, (&f, &c)) in freqs.iter().zip(counts).enumerate() {
                if c == 0 || (!grow && f <= 1) {
                    continue;
                }
                let f = f as f64;
                let delta = if grow { -(c as f64) * ((f + 1.0) / f).log2() } else { c as f64 * (f / (f - 1.0)).log2() };
                if best.is_none_or(|(_, d)| delta < d) {
                    best = Some((s, delta));
                }
            }
            let Some((s, _)) = best else {
                return Err("cannot normalise frequencies".into());
            };
            if grow {
                freqs[s] += 1;
                sum += 1;
            } else {
                freqs[s] -= 1;
                sum -= 1;
            }
        }
        Self::from_freqs(freqs, prob_bits)
    }

    /// Builds a table from stored frequencies, checking that they sum to `2^prob_bits`.
    pub fn from_freqs(freqs: Vec<u32>, prob_bits: u32) -> Result<Self, String> {
        check_prob_bits(prob_bits)?;
        if freqs.is_empty() || freqs.len() > 256 {
            return Err(format!("frequency table has {} entries (1..=256 allowed)", freqs.len()));
        }
        let mut cums = Vec::with_capacity(freqs.len());
        let mut acc = 0u64;
        for &f in &freqs {
            cums.push(acc as u32);
            acc += f as u64;
        }
        if acc != 1u64 << prob_bits {
            return Err(format!("frequencies sum to {acc}, expected 2^{prob_bits}"));
        }
        Ok(Self { prob_bits, freqs, cums })
    }

    /// Probability precision in bits.
    pub fn prob_bits(&self) -> u32 {
        self.prob_bits
    }

    /// The frequencies, indexed by symbol.
    pub fn freqs(&self) -> &[u32] {
        &self.freqs
    }

    /// `(freq, cumulative freq)` of a symbol.
    #[inline(always)]
    pub(crate) fn get(&self, symbol: u8) -> (u32, u32) {
        (self.freqs[symbol as usize], self.cums[symbol as usize])
    }

    /// The slot → (symbol, freq, bias) table the decoder indexes with `x mod 2^prob_bits`.
    pub fn decode_table(&self) -> DecodeTable {
        DecodeTable::new(self)
    }

    /// The exact size in bits that coding symbols with these `counts` costs under this table,
    /// excluding lane flushes (`Σ c·log2(2^prob_bits / f)`); `inf` if a counted symbol has f = 0.
    pub fn cost_bits(&self, counts: &[u64]) -> f64 {
        counts
            .iter()
            .zip(&self.freqs)
            .filter(|(&c, _)| c > 0)
            .map(|(&c, &f)| if f == 0 { f64::INFINITY } else { c as f64 * (self.prob_bits as f64 - (f as f64).log2()) })
            .sum()
    }
}

fn check_prob_bits(prob_bits: u32) -> Result<(), String> {
    if (MIN_PROB_BITS..=MAX_PROB_BITS).contains(&prob_bits) {
        Ok(())
    } else {
        Err(format!("prob_bits {prob_bits} outside {MIN_PROB_BITS}..={MAX_PROB_BITS}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantised_frequencies_sum_and_keep_every_symbol() {
        let counts = [1_000_000u64, 1, 1, 0, 5, 70_000, 3];
        let t = FrequencyTable::from_counts(&counts, 12).unwrap();
        assert_eq!(t.freqs().iter().sum::<u32>(), 4096);
        for (c, f) in counts.iter().zip(t.freqs()) {
            assert_eq!(*c > 0, *f > 0);
        }
    }

    #[test]
    fn single_symbol_gets_all_mass() {
        let t = FrequencyTable::from_counts(&[0, 9, 0], 8).unwrap();
        assert_eq!(t.freqs(), &[0, 256, 0]);
    }

    #[test]
    fn rejects_bad_tables() {
        assert!(FrequencyTable::from_freqs(vec![1, 2], 12).is_err());
        assert!(FrequencyTable::from_freqs(vec![4096], 13).is_err());
        assert!(FrequencyTable::from_freqs(vec![], 12).is_err());
        assert!(FrequencyTable::from_counts(&vec![1; 256], 7).is_err());
    }
}
