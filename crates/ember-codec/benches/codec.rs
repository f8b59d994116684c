//! Criterion timings of encode and decode (one thread and the rayon pool) per scheme, on
//! Llama-like synthetic weights. Throughput is reported in original bytes.

mod common;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ember_codec::{encode_tensor, Container, ContainerWriter, Dtype, EncodeOptions, SchemeKind};

fn codec(c: &mut Criterion) {
    let (rows, cols) = (1024usize, 4096usize);
    let values = common::llama_like_f32(rows, cols, 1);
    let bf16 = common::to_bf16_bytes(&values);
    let shape = [rows as u64, cols as u64];
    let dir = tempfile::tempdir().expect("temp dir");
    let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().expect("pool");
    let mut g = c.benchmark_group("bf16-1024x4096");
    g.throughput(Throughput::Bytes(bf16.len() as u64));
    g.sample_size(10);
    for scheme in [SchemeKind::Lossless, SchemeKind::Int8, SchemeKind::Int4] {
        let opts = EncodeOptions::default();
        g.bench_function(BenchmarkId::new("encode", scheme), |b| {
            b.iter(|| encode_tensor("w", Dtype::BF16, &shape, &bf16, scheme, &opts).expect("encode"))
        });
        let path = dir.path().join(format!("{scheme}.ember"));
        let mut w = ContainerWriter::create(&path).expect("create");
        w.add(encode_tensor("w", Dtype::BF16, &shape, &bf16, scheme, &opts).expect("encode")).expect("add");
        w.finish().expect("finish");
        let file = Container::open(&path).expect("open");
        let t = file.get("w").expect("tensor");
        let mut out = vec![0u8; t.elements() as usize * t.decoded_dtype().size()];
        g.bench_function(BenchmarkId::new("decode-1-thread", scheme), |b| {
            b.iter(|| one.install(|| file.decode_into(t, &mut out).expect("decode")))
        });
        g.bench_function(BenchmarkId::new("decode-all-threads", scheme), |b| {
            b.iter(|| file.decode_into(t, &mut out).expect("decode"))
        });
    }
    g.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
