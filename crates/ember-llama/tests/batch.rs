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

/// Prompts of different lengths prefilled in one pass, then decoded together and joined by a
/// sequence prefilled alone: every position's logits are those of the sequence alone.
fn check_prefilled_together(fixture: &str) {
    let device = Device::flex();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(fixture);
    let (model, config) = load_hf_dir(&dir, &device).unwrap();
    let v = config.vocab_size;
    let seqs: Vec<Vec<u32>> =
        (0..4u32).map(|s| (0..16u32).map(|i| (i * 5 + s * 17 + 1) % v as u32).collect()).collect();
    let prompts = [6usize, 1, 9, 3];
    let want: Vec<Vec<Vec<f32>>> = seqs.iter().map(|s| alone(&model, &config, s, &device)).collect();

    let group: Vec<&[u32]> = (0..3).map(|s| &seqs[s][..prompts[s]]).collect();
    let (logits, mut batch) = model.prefill_rows(&group, &device);
    assert_eq!(logits.dims(), [3, 1, v]);
    assert_eq!(batch.lens(), &[6, 1, 9]);
    let logits = logits.into_data().try_to_vec::<f32>().unwrap();
    for s in 0..3 {
        let err = close(&logits[s * v..(s + 1) * v], &want[s][prompts[s] - 1]);
        assert!(err <= 1e-5, "{fixture}: prompt {s} prefilled with others: {err}");
    }
    // A later group of one joins the running batch.
    let (_, late) = model.prefill_rows(&[&seqs[3][..prompts[3]]], &device);
    batch.append(late);
    let mut next: Vec<usize> = prompts.to_vec();
    for _ in 0..5 {
        let tokens: Vec<u32> = (0..4).map(|s| seqs[s][next[s]]).collect();
        let logits = model.forward_rows(&tokens, &mut batch, &device).into_data().try_to_vec::<f32>().unwrap();
        for s in 0..4 {
            let err = close(&logits[s * v..(s + 1) * v], &want[s][next[s]]);
            assert!(err <= 1e-5, "{fixture}: sequence {s} position {} after a joint prefill: {err}", next[s]);
            next[s] += 1;
        }
    }
    assert_eq!(batch.lens(), &[11, 6, 14, 8]);
}

#[test]
fn prompts_prefilled_together_match_sequences_alone() {
    check_prefilled_together("tiny-qwen3");
}

#[test]
fn prompts_prefilled_together_match_sequences_alone_through_sliding_windows() {
    check_prefilled_together("tiny-gemma3");
}

#[test]
fn batched_rows_match_sequences_alone() {
    check("tiny-qwen3");
}

#[test]
fn batched_rows_match_sequences_alone_through_sliding_windows() {
    check("tiny-gemma3");
}
