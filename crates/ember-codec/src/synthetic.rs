//! Deterministic weight-like data from a seed, for benchmarks and tests: large models are
//! generated where they run instead of being carried around.
//!
//! The generator is SplitMix64 (tiny, identical on every platform); values follow a Gaussian
//! with a per-row spread and a sprinkle of 8× outliers, as trained Llama projections do.

/// SplitMix64.
#[derive(Clone, Debug)]
pub struct SplitMix(pub u64);

impl SplitMix {
    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.uniform().max(1e-300);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

/// A `rows × cols` weight matrix: per-row std uniform in `[0.012, 0.028]`, 0.1% of values ×8.
pub fn llama_like_f32(rows: usize, cols: usize, seed: u64) -> Vec<f32> {
    let mut rng = SplitMix(seed);
    let mut out = Vec::with_capacity(rows * cols);
    for _ in 0..rows {
        let row_std = 0.02 * (0.6 + 0.8 * rng.uniform());
        for _ in 0..cols {
            let mut v = rng.normal() * row_std;
            if rng.uniform() < 0.001 {
                v *= 8.0;
            }
            out.push(v as f32);
        }
    }
    out
}

/// Little-endian BF16 bytes (round to nearest even).
pub fn to_bf16_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| half::bf16::from_f32(*x).to_bits().to_le_bytes()).collect()
}

/// Little-endian F16 bytes (round to nearest even).
pub fn to_f16_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| half::f16::from_f32(*x).to_bits().to_le_bytes()).collect()
}

/// Little-endian F32 bytes.
pub fn to_f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Bit patterns that stress a float codec: zeros of both signs, infinities, quiet and signalling
/// NaNs with payloads, subnormals, the largest finite value, one.
pub fn special_bits(dtype: crate::Dtype) -> &'static [u32] {
    match dtype {
        crate::Dtype::F32 => &[
            0,
            0x8000_0000,
            0x7f80_0000,
            0xff80_0000,
            0x7fc0_0001,
            0xff80_0001,
            1,
            0x8000_0003,
            0x7f7f_ffff,
            0x3f80_0000,
        ],
        crate::Dtype::BF16 => &[0, 0x8000, 0x7f80, 0xff80, 0x7fc1, 0xff81, 1, 0x8003, 0x7f7f, 0x3f80],
        _ => &[0, 0x8000, 0x7c00, 0xfc00, 0x7e01, 0xfc01, 1, 0x8003, 0x7bff, 0x03ff, 0x3c00],
    }
}

/// `n` little-endian values of a float `dtype`: weight-like (uniform in ±0.05, every 31st ×20)
/// and, with `specials`, about one in five replaced by a [`special_bits`] pattern.
pub fn float_test_bytes(dtype: crate::Dtype, n: usize, seed: u64, specials: bool) -> Vec<u8> {
    let mut rng = SplitMix(seed);
    let sp = special_bits(dtype);
    (0..n)
        .flat_map(|i| {
            let r = rng.next_u64();
            let bits = if specials && r.is_multiple_of(5) {
                sp[(r as usize / 5) % sp.len()]
            } else {
                let v = ((r >> 11) as f64 / (1u64 << 53) as f64 - 0.5) * 0.1 * if i % 31 == 0 { 20.0 } else { 1.0 };
                match dtype {
                    crate::Dtype::F32 => (v as f32).to_bits(),
                    crate::Dtype::BF16 => half::bf16::from_f64(v).to_bits() as u32,
                    _ => half::f16::from_f64(v).to_bits() as u32,
                }
            };
            match dtype {
                crate::Dtype::F32 => bits.to_le_bytes().to_vec(),
                _ => (bits as u16).to_le_bytes().to_vec(),
            }
        })
        .collect()
}

/// Codes and `f16` scales of a tensor quantised elsewhere, as [`crate::encode_quant_codes`]
/// takes them: for `kind`'s blocks over `shape`, every byte value as a code (`int4` kinds keep
/// the low nibble), and finite scales (and minima) that vary from block to block — for
/// super-block kinds, records of varying `f16` fields and 6-bit block scales.
pub fn quant_test_codes(kind: crate::schemes::QuantKind, shape: &[u64], seed: u64) -> (Vec<u8>, Vec<u8>) {
    let n: u64 = shape.iter().product();
    let int8 = kind.alphabet() == 256;
    let codes = (0..n)
        .map(|i| {
            let b = ((i ^ seed).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 56) as u8;
            if int8 {
                b
            } else {
                b & 0x0f
            }
        })
        .collect();
    let len = kind.scales_len(shape);
    let f16 = |b: u64| half::f16::from_f32(0.001 + (b % 29) as f32 * 0.0017).to_le_bytes();
    let scales = match kind.super_record() {
        // Super-block records: `f16` fields first (two for int4), then small integers below 64
        // (GGUF's 6-bit k-quant scales; signed for int8).
        Some(record) => {
            let head = if int8 { 2 } else { 4 };
            (0..len)
                .map(|i| {
                    let (s, o) = (i / record as u64, (i % record as u64) as usize);
                    if o < head {
                        f16(s * 3 + o as u64 / 2)[o % 2]
                    } else {
                        let v = ((i ^ seed).wrapping_mul(0x2545_f491_4f6c_dd1d) >> 58) as u8;
                        if int8 {
                            (v as i8 - 32) as u8
                        } else {
                            v
                        }
                    }
                })
                .collect()
        }
        None => (0..len / 2).flat_map(f16).collect(),
    };
    (codes, scales)
}
