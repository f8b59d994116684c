//! Order-0 entropy: the bound `inspect` reports next to each compressed size.

/// `Σ c · log2(total / c)`: the fewest bits any order-0 (memoryless) coder can spend on data
/// with these symbol counts.
pub fn order0_bits(counts: &[u64]) -> f64 {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return 0.0;
    }
    let t = total as f64;
    counts.iter().filter(|&&c| c > 0).map(|&c| c as f64 * (t / c as f64).log2()).sum()
}

/// Histogram of the 16-bit little-endian values in `bytes` (BF16/F16 tensors).
pub fn histogram_u16(bytes: &[u8]) -> Vec<u64> {
    let mut counts = vec![0u64; 1 << 16];
    for pair in bytes.chunks_exact(2) {
        counts[u16::from_le_bytes([pair[0], pair[1]]) as usize] += 1;
    }
    counts
}

/// Histogram of byte symbols over an alphabet of `alphabet` entries.
pub fn histogram_u8(symbols: &[u8], alphabet: usize) -> Vec<u64> {
    let mut counts = vec![0u64; alphabet.max(256)];
    for &s in symbols {
        counts[s as usize] += 1;
    }
    counts.truncate(alphabet);
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_and_degenerate() {
        assert_eq!(order0_bits(&[]), 0.0);
        assert_eq!(order0_bits(&[10, 0]), 0.0);
        assert!((order0_bits(&[1, 1, 1, 1]) - 8.0).abs() < 1e-12);
    }
}
