//! Several independent sequences decoded together, one token each per step, so every weight is
//! read once per step for all of them (what a server needs: sequences join and leave at token
//! boundaries, each at its own position).
//!
//! A sequence is prefilled alone into a [`KvCache`] and [`BatchCache::push`]ed into the batch, or
//! several are prefilled together ([`Llama::prefill_rows`]) and [`BatchCache::append`]ed.
//! The batch holds each layer's keys and values as one `[rows, kv_heads, width, head_dim]`
//! tensor, every row right-aligned: row `r`'s `len(r)` positions fill the last `len(r)` columns
//! and the columns before them are padding that the per-row mask hides. RoPE rotates each row at
//! its own position. Numerically each row sees exactly what it would see alone.

use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::model::{append_to, KvCache, KvStore, Llama};

/// Keys and values of the sequences in a running batch; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct BatchCache {
    /// Per layer, `[rows, kv_heads, width, head_dim]`; `None` while the batch is empty.
    layers: Vec<Option<(Tensor<4>, Tensor<4>)>>,
    /// Positions held per row.
    lens: Vec<usize>,
    /// Columns of every layer tensor (the longest row, plus padding left by rows that left).
    width: usize,
}

impl BatchCache {
    /// An empty batch for a model with `layers` decoder blocks.
    pub fn new(layers: usize) -> Self {
        BatchCache { layers: vec![None; layers], lens: Vec::new(), width: 0 }
    }

    /// Sequences in the batch.
    pub fn rows(&self) -> usize {
        self.lens.len()
    }

    /// True when no sequence is running.
    pub fn is_empty(&self) -> bool {
        self.lens.is_empty()
    }

    /// Positions held by each row, in row order.
    pub fn lens(&self) -> &[usize] {
        &self.lens
    }

    /// Adds a prefilled sequence (a batch-1 [`KvCache`] with at least one position) as the last
    /// row.
    ///
    /// # Panics
    /// If `seq` is empty, holds more than one sequence, or has a different number of layers.
    pub fn push(&mut self, seq: &KvCache) {
        assert!(!seq.is_empty(), "push a prefilled sequence");
        assert_eq!(self.layers.len(), seq.num_layers(), "layer count");
        let layers = (0..seq.num_layers())
            .map(|i| {
                let kv = seq.layer(i).cloned().expect("a prefilled layer");
                assert_eq!(kv.0.dims()[0], 1, "one sequence");
                Some(kv)
            })
            .collect();
        self.append(BatchCache { layers, lens: vec![seq.len()], width: seq.len() });
    }

    /// Moves every row of `other` (a batch of the same model, e.g. from
    /// [`Llama::prefill_rows`]) after this batch's rows; the shorter of the two is padded on
    /// the left.
    ///
    /// # Panics
    /// If the two were made for different numbers of layers.
    pub fn append(&mut self, other: BatchCache) {
        assert_eq!(self.layers.len(), other.layers.len(), "layer count");
        if other.is_empty() {
            return;
        }
        let width = self.width.max(other.width);
        for (slot, theirs) in self.layers.iter_mut().zip(other.layers) {
            let (k, v) = theirs.expect("every layer of a non-empty batch holds its rows");
            let (k, v) = (left_pad(k, width), left_pad(v, width));
            *slot = Some(match slot.take() {
                None => (k, v),
                Some((bk, bv)) => {
                    (Tensor::cat(vec![left_pad(bk, width), k], 0), Tensor::cat(vec![left_pad(bv, width), v], 0))
                }
            });
        }
        self.lens.extend(other.lens);
        self.width = width;
    }

    /// Removes row `row`; later rows move up by one. Padding no row needs any more is dropped.
    ///
    /// # Panics
    /// If `row` is out of range.
    pub fn remove(&mut self, row: usize) {
        assert!(row < self.rows(), "row {row} of {}", self.rows());
        self.lens.remove(row);
        let Some(&longest) = self.lens.iter().max() else {
            self.layers.iter_mut().for_each(|l| *l = None);
            self.width = 0;
            return;
        };
        let keep: Vec<i64> = (0..=self.lens.len()).filter(|&r| r != row).map(|r| r as i64).collect();
        let trim = self.width - longest;
        for slot in self.layers.iter_mut() {
            if let Some((k, v)) = slot.take() {
                let device = k.device();
                let idx = Tensor::<1, Int>::from_data(TensorData::new(keep.clone(), [keep.len()]), &device);
                let (k, v) = (k.select(0, idx.clone()), v.select(0, idx));
                *slot = Some((k.narrow(2, trim, longest), v.narrow(2, trim, longest)));
            }
        }
        self.width = longest;
    }
}

/// `[1, kv, len, hd]` → `[1, kv, width, hd]` with zeros in front.
fn left_pad(t: Tensor<4>, width: usize) -> Tensor<4> {
    let [b, h, len, d] = t.dims();
    if len == width {
        return t;
    }
    let pad = Tensor::<4>::zeros([b, h, width - len, d], &t.device());
    Tensor::cat(vec![pad, t], 2)
}

impl KvStore for BatchCache {
    fn append(&mut self, layer: usize, k: Tensor<4>, v: Tensor<4>) -> (Tensor<4>, Tensor<4>) {
        append_to(&mut self.layers[layer], k, v)
    }
}

impl Llama {
    /// One decoding step for every row of `cache`: `tokens[r]` continues row `r`. Returns the
    /// logits `[rows, 1, vocab]`; every row grows by one position.
    ///
    /// # Panics
    /// If `tokens` does not hold one token per row, or the batch is empty.
    pub fn forward_rows(&self, tokens: &[u32], cache: &mut BatchCache, device: &Device) -> Tensor<3> {
        assert!(!cache.is_empty(), "no sequence in the batch");
        assert_eq!(tokens.len(), cache.rows(), "one token per row");
        let ids: Vec<i32> = tokens.iter().map(|&t| t as i32).collect();
        let tokens = Tensor::<2, Int>::from_data(TensorData::new(ids, [cache.rows(), 1]), device);
        let totals: Vec<usize> = cache.lens.iter().map(|l| l + 1).collect();
        let pass = self.rows_pass(&totals, 1, cache.width + 1, device);
        let hidden = self.run_blocks(tokens, &pass, cache);
        cache.lens = totals;
        cache.width += 1;
        self.logits(hidden)
    }

    /// Prefills several prompts in one pass, each its own sequence: the logits of every
    /// prompt's last position, `[prompts, 1, vocab]`, and a batch whose row `r` holds
    /// `prompts[r]` (ready for [`BatchCache::append`] and [`Llama::forward_rows`]).
    ///
    /// The prompts are right-aligned in `[prompts, longest]` tokens; shorter ones are padded on
    /// the left, and the masks keep each prompt to its own positions, so a prompt gets the
    /// logits it gets alone. Each weight is read once for all of them, where prefilling them
    /// one by one reads it once per prompt. Padding costs compute: group prompts of similar
    /// lengths.
    ///
    /// # Panics
    /// If `prompts` or one of them is empty.
    pub fn prefill_rows(&self, prompts: &[&[u32]], device: &Device) -> (Tensor<3>, BatchCache) {
        assert!(!prompts.is_empty(), "no prompt to prefill");
        assert!(prompts.iter().all(|p| !p.is_empty()), "an empty prompt");
        let width = prompts.iter().map(|p| p.len()).max().unwrap_or(0);
        let ids: Vec<i32> = prompts
            .iter()
            .flat_map(|p| std::iter::repeat_n(0, width - p.len()).chain(p.iter().map(|&t| t as i32)))
            .collect();
        let tokens = Tensor::<2, Int>::from_data(TensorData::new(ids, [prompts.len(), width]), device);
        let lens: Vec<usize> = prompts.iter().map(|p| p.len()).collect();
        let pass = self.rows_pass(&lens, width, width, device);
        let mut cache = BatchCache::new(self.layers.len());
        let hidden = self.run_blocks(tokens, &pass, &mut cache);
        cache.lens = lens;
        cache.width = width;
        (self.logits(hidden.narrow(1, width - 1, 1)), cache)
    }
}
