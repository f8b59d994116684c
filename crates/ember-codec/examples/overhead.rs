#[path = "../benches/common/mod.rs"]
mod common;
use ember_codec::entropy::*;
use ember_codec::rans::FrequencyTable;
fn main() {
    let v = common::llama_like_f32(2048, 4096, 42);
    let b = common::to_bf16_bytes(&v);
    let n = v.len() as f64;
    let h16 = order0_bits(&histogram_u16(&b)) / n;
    let exps: Vec<u8> = b.chunks(2).map(|p| ((u16::from_le_bytes([p[0], p[1]]) >> 7) & 0xff) as u8).collect();
    let c = histogram_u8(&exps, 256);
    let he = order0_bits(&c) / n;
    for pb in [10, 11, 12] {
        let t = FrequencyTable::from_counts(&c, pb).unwrap();
        println!("prob_bits {pb}: coded exp {:.5} bits", t.cost_bits(&c) / n);
    }
    // symbol = exp + top mantissa bit
    let s2: Vec<u16> = b.chunks(2).map(|p| (u16::from_le_bytes([p[0], p[1]]) >> 6) & 0x1ff).collect();
    let mut c2 = vec![0u64; 512];
    s2.iter().for_each(|&s| c2[s as usize] += 1);
    println!(
        "H16 {h16:.5}  H(exp)+8 {:.5}  H(exp,m1)+7 {:.5} distinct exps {}",
        he + 8.0,
        order0_bits(&c2) / n + 7.0,
        c.iter().filter(|&&x| x > 0).count()
    );
}
