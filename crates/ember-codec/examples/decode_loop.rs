//! Decodes one bf16 lossless tensor in a loop on one thread (for profilers).
#[path = "../benches/common/mod.rs"]
mod common;
use ember_codec::*;
fn main() {
    let v = common::llama_like_f32(1024, 4096, 42);
    let b = common::to_bf16_bytes(&v);
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x.ember");
    let mut w = ContainerWriter::create(&p).unwrap();
    w.add(encode_tensor("w", Dtype::BF16, &[1024, 4096], &b, SchemeKind::Lossless, &EncodeOptions::default()).unwrap())
        .unwrap();
    w.finish().unwrap();
    let c = Container::open(&p).unwrap();
    let t = c.get("w").unwrap();
    let mut out = vec![0u8; b.len()];
    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    let start = std::time::Instant::now();
    for _ in 0..40 {
        pool.install(|| c.decode_into(t, &mut out).unwrap());
    }
    println!("{:.2} GB/s", 40.0 * b.len() as f64 / start.elapsed().as_secs_f64() / 1e9);
}
