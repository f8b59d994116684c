//! One model's worker: a thread that owns the model and its store and decodes every running
//! sequence together, one token each per step (so each weight is read once per step for all of
//! them). Requests join the running batch at a token boundary — the prompts that arrived
//! meanwhile prefilled together, then added as rows — and leave it when they finish or their
//! client goes away. With nothing running the worker releases the model's decoded weights, so
//! an idle model holds only its compressed bytes.

use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Arc;
use std::time::Instant;

use burn::tensor::Device;
use ember::Store;
use ember_gguf::tokenizer::StreamDecoder;
use ember_gguf::Tokenizer;
use ember_llama::{BatchCache, Llama, LlamaConfig, Sampler};
use tokio::sync::mpsc::UnboundedSender;

use crate::metrics::ModelMetrics;
use crate::stops::StopScanner;

/// Why a sequence ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// An end-of-turn token or a stop string.
    Stop,
    /// `max_tokens` reached.
    Length,
}

impl FinishReason {
    /// OpenAI's `finish_reason`.
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
        }
    }
}

/// What a worker tells the request's handler.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// New text.
    Text(String),
    /// The sequence ended.
    Done {
        /// Why.
        finish_reason: FinishReason,
        /// Prompt tokens.
        prompt_tokens: usize,
        /// Generated tokens.
        completion_tokens: usize,
    },
    /// The model failed on this request.
    Failed(String),
}

/// A sequence to generate.
#[derive(Debug)]
pub struct Job {
    /// The prompt's token ids (checked against the vocabulary and the context).
    pub prompt_ids: Vec<u32>,
    /// New tokens at most (≥ 1).
    pub max_tokens: usize,
    /// How the next token is chosen.
    pub sampler: Sampler,
    /// Stop strings.
    pub stop: Vec<String>,
    /// Where the events go; dropping the receiver cancels the sequence.
    pub events: UnboundedSender<Event>,
}

/// A sequence in the running batch (row `i` of the batch cache is `rows[i]`).
struct Row<'t> {
    job: Job,
    decoder: StreamDecoder<'t>,
    stops: StopScanner,
    /// The last sampled token, fed at the next step.
    last: u32,
    generated: usize,
}

enum Outcome {
    Continue,
    Finished,
    Cancelled,
}

impl Row<'_> {
    /// Takes the token sampled for this row: sends its text, and says whether the row goes on.
    fn accept(&mut self, id: u32, stop_ids: &[u32]) -> Outcome {
        if self.job.events.is_closed() {
            return Outcome::Cancelled;
        }
        if stop_ids.contains(&id) {
            return self.finish(FinishReason::Stop, false);
        }
        self.generated += 1;
        self.last = id;
        let piece = self.decoder.push(id).unwrap_or_default();
        let scan = self.stops.push(&piece);
        if !scan.release.is_empty() && self.job.events.send(Event::Text(scan.release)).is_err() {
            return Outcome::Cancelled;
        }
        if scan.stopped {
            return self.finish(FinishReason::Stop, true);
        }
        if self.generated >= self.job.max_tokens {
            return self.finish(FinishReason::Length, false);
        }
        Outcome::Continue
    }

    fn finish(&mut self, reason: FinishReason, stopped_on_text: bool) -> Outcome {
        if !stopped_on_text {
            let mut rest = self.decoder.finish().map(|t| self.stops.push(&t)).map(|s| s.release).unwrap_or_default();
            rest.push_str(&self.stops.finish());
            if !rest.is_empty() {
                let _ = self.job.events.send(Event::Text(rest));
            }
        }
        let done = Event::Done {
            finish_reason: reason,
            prompt_tokens: self.job.prompt_ids.len(),
            completion_tokens: self.generated,
        };
        match self.job.events.send(done) {
            Ok(()) => Outcome::Finished,
            Err(_) => Outcome::Cancelled,
        }
    }
}

/// What a worker needs: the attached model and everything around it.
pub struct Worker {
    /// The model, its weights attached to `store`.
    pub model: Llama,
    /// Its config.
    pub config: LlamaConfig,
    /// The compressed weights.
    pub store: Store,
    /// Its tokenizer (for streamed text and stop strings).
    pub tokenizer: Arc<Tokenizer>,
    /// The device the model runs on.
    pub device: Device,
    /// Sequences decoded together, at most.
    pub max_batch: usize,
    /// Counters for `/metrics`.
    pub metrics: Arc<ModelMetrics>,
}

impl Worker {
    /// Serves jobs from `jobs` until every sender is gone and the batch has drained.
    pub fn run(self, jobs: Receiver<Job>) {
        let tokenizer = Arc::clone(&self.tokenizer);
        let stop_ids = tokenizer.eos_ids().to_vec();
        let mut batch = BatchCache::new(self.config.num_hidden_layers);
        let mut rows: Vec<Row<'_>> = Vec::new();
        let mut open = true;
        let mut arrived: Vec<Job> = Vec::new();
        loop {
            if rows.is_empty() {
                // Idle: only the compressed bytes stay.
                self.store.release_decoded();
                self.metrics.publish(&self.store, 0);
                if !open {
                    return;
                }
                match jobs.recv() {
                    Ok(job) => arrived.push(job),
                    Err(_) => return,
                }
            }
            while open && rows.len() + arrived.len() < self.max_batch {
                match jobs.try_recv() {
                    Ok(job) => arrived.push(job),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => open = false,
                }
            }
            if !arrived.is_empty() {
                self.admit(std::mem::take(&mut arrived), &tokenizer, &stop_ids, &mut batch, &mut rows);
            }
            if rows.is_empty() {
                continue;
            }
            let started = Instant::now();
            let tokens: Vec<u32> = rows.iter().map(|r| r.last).collect();
            let logits = self.store.forward(|| self.model.forward_rows(&tokens, &mut batch, &self.device));
            let logits = match logits.into_data().try_to_vec::<f32>() {
                Ok(l) => l,
                Err(e) => {
                    for row in rows.drain(..) {
                        let _ = row.job.events.send(Event::Failed(format!("cannot read the logits: {e:?}")));
                    }
                    batch = BatchCache::new(self.config.num_hidden_layers);
                    continue;
                }
            };
            self.metrics.busy(started.elapsed(), rows.len() as u64);
            let vocab = self.config.vocab_size;
            let mut ended = Vec::new();
            for (i, row) in rows.iter_mut().enumerate() {
                let id = row.job.sampler.sample(&logits[i * vocab..(i + 1) * vocab]);
                if self.ends(row.accept(id, &stop_ids)) {
                    ended.push(i);
                }
            }
            for &i in ended.iter().rev() {
                rows.remove(i);
                batch.remove(i);
            }
            self.metrics.publish(&self.store, rows.len());
        }
    }

    /// Prefills the prompts of `jobs` (together where their lengths allow, see
    /// [`prefill_groups`]), samples each one's first token and adds those that go on to the
    /// batch.
    fn admit<'t>(
        &self,
        jobs: Vec<Job>,
        tokenizer: &'t Tokenizer,
        stop_ids: &[u32],
        batch: &mut BatchCache,
        rows: &mut Vec<Row<'t>>,
    ) {
        let mut live = Vec::with_capacity(jobs.len());
        for job in jobs {
            self.metrics.queued.fetch_sub(1, Ordering::Relaxed);
            if job.events.is_closed() {
                self.metrics.cancelled.fetch_add(1, Ordering::Relaxed);
            } else {
                live.push(job);
            }
        }
        let lens: Vec<usize> = live.iter().map(|j| j.prompt_ids.len()).collect();
        let mut slots: Vec<Option<Job>> = live.into_iter().map(Some).collect();
        for group in prefill_groups(&lens) {
            let group: Vec<Job> = group.iter().filter_map(|&i| slots[i].take()).collect();
            self.prefill(group, tokenizer, stop_ids, batch, rows);
        }
    }

    /// Prefills `group` in one pass and adds the sequences that go on after their first token
    /// as rows of `batch`.
    fn prefill<'t>(
        &self,
        group: Vec<Job>,
        tokenizer: &'t Tokenizer,
        stop_ids: &[u32],
        batch: &mut BatchCache,
        rows: &mut Vec<Row<'t>>,
    ) {
        let started = Instant::now();
        let prompts: Vec<&[u32]> = group.iter().map(|j| j.prompt_ids.as_slice()).collect();
        let (logits, mut joined) = self.store.forward(|| self.model.prefill_rows(&prompts, &self.device));
        let logits = match logits.into_data().try_to_vec::<f32>() {
            Ok(l) => l,
            Err(e) => {
                for job in group {
                    let _ = job.events.send(Event::Failed(format!("cannot read the logits: {e:?}")));
                }
                return;
            }
        };
        self.metrics.busy(started.elapsed(), group.len() as u64);
        let vocab = self.config.vocab_size;
        let mut ended = Vec::new();
        for (i, job) in group.into_iter().enumerate() {
            let mut row = Row {
                stops: StopScanner::new(job.stop.clone()),
                decoder: tokenizer.stream_decoder(),
                job,
                last: 0,
                generated: 0,
            };
            let id = row.job.sampler.sample(&logits[i * vocab..(i + 1) * vocab]);
            if self.ends(row.accept(id, stop_ids)) {
                ended.push(i);
            } else {
                rows.push(row);
            }
        }
        for &i in ended.iter().rev() {
            joined.remove(i);
        }
        batch.append(joined);
    }

    /// Whether a row leaves the batch after `outcome` (a cancelled one is counted).
    fn ends(&self, outcome: Outcome) -> bool {
        match outcome {
            Outcome::Continue => false,
            Outcome::Finished => true,
            Outcome::Cancelled => {
                self.metrics.cancelled.fetch_add(1, Ordering::Relaxed);
                true
            }
        }
    }
}

/// Prompt tokens one joint prefill computes at most, padding included: it bounds the pass's
/// activations and attention scores, which grow with the prompts times the longest squared.
const PREFILL_TOKENS: usize = 512;

/// Padding positions a joint prefill may compute per prompt it saves a pass for. Each prompt
/// prefilled with others saves one pass over the weights, which on a CPU core costs about as
/// much as four more rows of a batched product; a padding position costs a row.
const PAD_PER_SAVED_PASS: usize = 4;

/// Splits prompts of lengths `lens` into groups prefilled together (indices into `lens`): by
/// length, each group as large as it can be while its padded size (prompts × longest) stays
/// within [`PREFILL_TOKENS`] and its padding within [`PAD_PER_SAVED_PASS`] per prompt beyond
/// the first. A prompt longer than the cap is a group of its own.
fn prefill_groups(lens: &[usize]) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lens.len()).collect();
    order.sort_by_key(|&i| lens[i]);
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut real = 0;
    for i in order {
        let len = lens[i];
        // In length order, `len` is the group's longest once it joins.
        let joins = groups.last().is_some_and(|g| {
            let padded = (g.len() + 1) * len;
            padded <= PREFILL_TOKENS && padded - (real + len) <= PAD_PER_SAVED_PASS * g.len()
        });
        match groups.last_mut() {
            Some(g) if joins => {
                g.push(i);
                real += len;
            }
            _ => {
                groups.push(vec![i]);
                real = len;
            }
        }
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefill_groups_bound_padding_and_size_and_keep_every_prompt() {
        for lens in [
            vec![],
            vec![7],
            vec![5, 6, 5, 7, 4, 6, 5, 5, 6, 7, 5, 4, 6, 5, 5, 6],
            vec![1, 100, 2, 90, 3, 600, 40, 41, 42],
            vec![30; 40],
        ] {
            let groups = prefill_groups(&lens);
            let mut seen: Vec<usize> = groups.iter().flatten().copied().collect();
            seen.sort_unstable();
            assert_eq!(seen, (0..lens.len()).collect::<Vec<_>>(), "{lens:?}");
            for g in &groups {
                let longest = g.iter().map(|&i| lens[i]).max().unwrap_or(0);
                let real: usize = g.iter().map(|&i| lens[i]).sum();
                if g.len() > 1 {
                    assert!(g.len() * longest <= PREFILL_TOKENS, "{lens:?}: {g:?}");
                    assert!(g.len() * longest - real <= PAD_PER_SAVED_PASS * (g.len() - 1), "{lens:?}: {g:?}");
                }
            }
        }
        // Similar short prompts share one pass; very different lengths do not.
        assert_eq!(prefill_groups(&[5, 6, 5, 7]).len(), 1);
        assert_eq!(prefill_groups(&[1, 100]).len(), 2);
        assert_eq!(prefill_groups(&[30; 40]).len(), 3);
    }
}
