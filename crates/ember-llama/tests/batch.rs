//! Batched decoding: sequences that join and leave a running batch at token boundaries, each at
//! its own position, get the logits they get alone — on a plain model (tiny Qwen3) and one with
//! sliding-window layers whose window the sequences outgrow (tiny Gemma 3, window 4).

use std::path::Path;

use burn::tensor::{Device, Int, Tensor, TensorData};
use ember_llama::{load_hf_dir, BatchCache, KvCache, Llama, LlamaConfig};

/// Logits of every position of `ids` decoded alone, one token at a time.
fn alone(model: &Llama, config: &LlamaConfig, ids: &[u32], device: &Device) -> Vec<Vec<f32>> {
    let mut cache = KvCache::new(config);
    ids.iter()
        .map(|&id| {
            let t = Tensor::<2, Int>::from_data(TensorData::new(vec![id as i32], [1, 1]), device);
            model.forward(t, &mut cache).into_data().try_to_vec::<f32>().unwrap()
        })
        .collect()
}

fn prefill(model: &Llama, config: &LlamaConfig, ids: &[u32], device: &Device) -> KvCache {
    let mut cache = KvCache::new(config);
    let ids: Vec<i32> = ids.iter().map(|&x| x as i32).collect();
    let t = Tensor::<2, Int>::from_data(TensorData::new(ids.clone(), [1, ids.len()]), device);
    let _ = model.forward(t, &mut cache);
    cache
}

fn close(a: &[f32], b: &[f32]) -> f32 {
    let scale = b.iter().fold(1.0f32, |m, x| m.max(x.abs()));
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max) / scale
}

fn check(fixture: &str) {
    let device = Device::flex();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(fixture);
    let (model, config) = load_hf_dir(&dir, &device).unwrap();
    let v = config.vocab_size as u32;
    // Three sequences, 20 tokens each: a prompt (prefilled alone), then tokens fed in the batch.
    let seqs: Vec<Vec<u32>> = (0..3u32).map(|s| (0..20u32).map(|i| (i * 7 + s * 31 + 3) % v).collect()).collect();
    let prompts = [5usize, 2, 7];
    let want: Vec<Vec<Vec<f32>>> = seqs.iter().map(|s| alone(&model, &config, s, &device)).collect();

    let mut batch = BatchCache::new(config.num_hidden_layers);
    // (sequence, next index to feed) per row, in row order.
    let mut rows: Vec<(usize, usize)> = Vec::new();
    let step = |batch: &mut BatchCache, rows: &mut Vec<(usize, usize)>| {
        let tokens: Vec<u32> = rows.iter().map(|&(s, i)| seqs[s][i]).collect();
        let logits = model.forward_rows(&tokens, batch, &device).into_data().try_to_vec::<f32>().unwrap();
        for (r, (s, i)) in rows.iter_mut().enumerate() {
            let got = &logits[r * v as usize..(r + 1) * v as usize];
            let err = close(got, &want[*s][*i]);
            assert!(err <= 1e-5, "{fixture}: sequence {s} position {i} in a batch of {}: {err}", batch.rows());
            *i += 1;
        }
    };
    let join = |batch: &mut BatchCache, rows: &mut Vec<(usize, usize)>, s: usize| {
        batch.push(&prefill(&model, &config, &seqs[s][..prompts[s]], &device));
        rows.push((s, prompts[s]));
    };
    join(&mut batch, &mut rows, 0);
    for _ in 0..2 {
        step(&mut batch, &mut rows);
    }
    join(&mut batch, &mut rows, 1); // shorter than the batch: padded on the left
    for _ in 0..3 {
        step(&mut batch, &mut rows);
    }
    join(&mut batch, &mut rows, 2); // longer than every row: the batch is padded
    for _ in 0..3 {
        step(&mut batch, &mut rows);
    }
    batch.remove(1);
    rows.remove(1);
    for _ in 0..3 {
        step(&mut batch, &mut rows);
    }
    assert_eq!(batch.lens(), &[16, 13]);
    batch.remove(0);
    batch.remove(0);
    assert!(batch.is_empty());
}

#[test]
fn batched_rows_match_sequences_alone() {
    check("tiny-qwen3");
}

#[test]
fn batched_rows_match_sequences_alone_through_sliding_windows() {
    check("tiny-gemma3");
}
