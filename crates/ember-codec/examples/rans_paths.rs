//! Times each rANS decode path on one BF16-exponent-like tile stream.
#[path = "../benches/common/mod.rs"]
mod common;
use ember_codec::rans::*;
fn main() {
    let v = common::llama_like_f32(16, 4096, 7);
    let b = common::to_bf16_bytes(&v);
    let syms: Vec<u8> = b.chunks(2).map(|p| ((u16::from_le_bytes([p[0], p[1]]) >> 7) & 0xff) as u8).collect();
    let mut counts = vec![0u64; 256];
    syms.iter().for_each(|&s| counts[s as usize] += 1);
    let t = FrequencyTable::from_counts(&counts, 12).unwrap();
    let lanes: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(64);
    let st = encode_lanes(&syms, lanes, &t);
    let (ends, words) = st.concat_words();
    let dt = t.decode_table();
    let raw = vec![0x55u8; syms.len()];
    for simd in [Simd::Avx2, Simd::Best] {
        for fused in [0, 1] {
            let mut out = vec![0u8; 2 * syms.len()];
            let reps = 2000;
            let s = std::time::Instant::now();
            for _ in 0..reps {
                let o = match fused {
                    1 => LaneOutput::Bf16 { raw: &raw, out: &mut out },
                    _ => LaneOutput::Symbols(&mut out[..syms.len()]),
                };
                decode_lanes_with(&st.states, &ends, &words, &dt, o, simd).unwrap();
            }
            let ns = s.elapsed().as_secs_f64() * 1e9 / (reps * syms.len()) as f64;
            println!("{simd:?} fused={fused}: {ns:.3} ns/symbol = {:.2} GB/s bf16", 2.0 / ns);
        }
    }
}
