//! Autoregressive generation: one forward over the prompt (prefill), then one forward per new
//! token through the KV cache (decode), with greedy or seeded nucleus sampling.

use std::time::Instant;

use burn::tensor::{Int, Tensor, TensorData};

use crate::model::{KvCache, Llama};

/// Why generation stopped before producing any token, or could not read the logits.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    /// Generation needs at least one prompt token to condition on.
    #[error("the prompt is empty")]
    EmptyPrompt,
    /// A prompt token is not in the model's vocabulary.
    #[error("prompt token {id} at index {index} is outside the vocabulary of {vocab} tokens")]
    TokenOutOfVocab {
        /// The token id.
        id: u32,
        /// Its index in the prompt.
        index: usize,
        /// Vocabulary size.
        vocab: usize,
    },
    /// The logits could not be read back from the device.
    #[error("cannot read logits: {0}")]
    Logits(String),
}

/// Picks the next token from a row of logits.
///
/// Sampling is deterministic for a given seed: the random stream is a SplitMix64 owned by the
/// sampler (not a `rand` RNG whose stream may change between crate versions), and ties and the
/// nucleus cut are resolved by a stable sort on (probability, token id).
#[derive(Debug, Clone)]
pub struct Sampler {
    kind: SamplerKind,
    state: u64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum SamplerKind {
    Greedy,
    TopP { temperature: f32, top_p: f32 },
}

impl Sampler {
    /// Always the most likely token (the lowest id among equal maxima).
    pub fn greedy() -> Self {
        Sampler { kind: SamplerKind::Greedy, state: 0 }
    }

    /// Samples from `softmax(logits / temperature)` restricted to the smallest set of most likely
    /// tokens whose probability reaches `top_p` (nucleus sampling). A temperature `<= 0` is greedy;
    /// `top_p` is clamped to `(0, 1]`.
    pub fn top_p(temperature: f32, top_p: f32, seed: u64) -> Self {
        if temperature.is_nan() || temperature <= 0.0 {
            return Self::greedy();
        }
        let top_p = if top_p.is_nan() { 1.0 } else { top_p.clamp(f32::MIN_POSITIVE, 1.0) };
        Sampler { kind: SamplerKind::TopP { temperature, top_p }, state: seed }
    }

    /// The next token for one row of logits. NaN logits are never chosen.
    ///
    /// # Panics
    /// If `logits` is empty.
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        assert!(!logits.is_empty(), "no logits to sample from");
        match self.kind {
            SamplerKind::Greedy => argmax(logits),
            SamplerKind::TopP { temperature, top_p } => {
                let max = logits.iter().copied().filter(|x| !x.is_nan()).fold(f32::NEG_INFINITY, f32::max);
                if !max.is_finite() {
                    return argmax(logits);
                }
                let mut probs: Vec<(u32, f64)> = logits
                    .iter()
                    .enumerate()
                    .filter(|(_, l)| !l.is_nan())
                    .map(|(i, &l)| (i as u32, (((l - max) / temperature) as f64).exp()))
                    .collect();
                let total: f64 = probs.iter().map(|p| p.1).sum();
                probs.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
                let mut kept = 0.0;
                let mut cut = probs.len();
                for (n, p) in probs.iter().enumerate() {
                    kept += p.1 / total;
                    if kept >= top_p as f64 {
                        cut = n + 1;
                        break;
                    }
                }
                probs.truncate(cut);
                let mass: f64 = probs.iter().map(|p| p.1).sum();
                let mut r = self.next_unit() * mass;
                for &(id, p) in &probs {
                    if r < p {
                        return id;
                    }
                    r -= p;
                }
                probs[probs.len() - 1].0
            }
        }
    }

    /// A uniform number in `[0, 1)` from SplitMix64.
    fn next_unit(&mut self) -> f64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0usize;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] || logits[best].is_nan() {
            best = i;
        }
    }
    best as u32
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    /// Upper bound on new tokens (stop tokens not counted, as they are not emitted).
    pub max_tokens: usize,
    /// How to pick each token; cloned per call, so the same options replay the same stream.
    pub sampler: Sampler,
    /// Tokens that end generation (e.g. EOS); they are not emitted.
    pub stop_ids: Vec<u32>,
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// `max_tokens` were generated.
    MaxTokens,
    /// A token in `stop_ids` was sampled.
    StopToken(u32),
}

/// The result of [`generate`]: new tokens and where the time went.
#[derive(Debug, Clone)]
pub struct Generation {
    /// Generated token ids, without the prompt and without the stop token.
    pub tokens: Vec<u32>,
    /// Prompt length.
    pub prompt_tokens: usize,
    /// Wall time of the prompt forward, including reading its logits back.
    pub prefill_secs: f64,
    /// Wall time of all single-token forwards (and sampling) after the prefill.
    pub decode_secs: f64,
    /// Why it ended.
    pub stop: StopReason,
}

impl Generation {
    /// Decode speed in tokens per second (forwards after the prefill; 0 when there were none).
    pub fn decode_tokens_per_sec(&self) -> f64 {
        // Every emitted token but the last was fed back; a stop token was sampled after one more forward.
        let steps = match self.stop {
            StopReason::StopToken(_) => self.tokens.len(),
            StopReason::MaxTokens => self.tokens.len().saturating_sub(1),
        };
        if self.decode_secs > 0.0 {
            steps as f64 / self.decode_secs
        } else {
            0.0
        }
    }
}

/// Generates up to `options.max_tokens` tokens after `prompt`, calling `on_token` as each is chosen.
pub fn generate(
    model: &Llama,
    prompt: &[u32],
    options: &GenerateOptions,
    on_token: impl FnMut(u32),
) -> Result<Generation, GenerateError> {
    generate_with(model, prompt, options, on_token, |forward| forward())
}

/// [`generate`], with every forward pass run through `wrap`.
///
/// `wrap` receives the forward pass as a closure and must call it exactly once and return its
/// logits. It exists for code that needs forward-pass boundaries — e.g. a weight store that
/// decodes parameters on access and frees them when the pass ends — without this crate knowing
/// about it: `|forward| { store.begin_pass(); let logits = forward(); store.end_pass(); logits }`.
pub fn generate_with<W>(
    model: &Llama,
    prompt: &[u32],
    options: &GenerateOptions,
    mut on_token: impl FnMut(u32),
    mut wrap: W,
) -> Result<Generation, GenerateError>
where
    W: FnMut(&mut dyn FnMut() -> Tensor<3>) -> Tensor<3>,
{
    if prompt.is_empty() {
        return Err(GenerateError::EmptyPrompt);
    }
    let vocab = model.config().vocab_size;
    if let Some((index, &id)) = prompt.iter().enumerate().find(|(_, &id)| id as usize >= vocab) {
        return Err(GenerateError::TokenOutOfVocab { id, index, vocab });
    }
    let mut generation = Generation {
        tokens: Vec::new(),
        prompt_tokens: prompt.len(),
        prefill_secs: 0.0,
        decode_secs: 0.0,
        stop: StopReason::MaxTokens,
    };
    if options.max_tokens == 0 {
        return Ok(generation);
    }

    let device = model.embedding.weight.lazy_device();
    let mut sampler = options.sampler.clone();
    let mut cache = KvCache::new(model.config());
    // Ids were checked against the vocabulary, which is far below i32::MAX.
    let ids = |ids: &[u32]| {
        let data: Vec<i32> = ids.iter().map(|&id| id as i32).collect();
        Tensor::<2, Int>::from_data(TensorData::new(data, [1, ids.len()]), &device)
    };

    let start = Instant::now();
    let prompt_ids = ids(prompt);
    let logits = wrap(&mut || model.forward_last(prompt_ids.clone(), &mut cache));
    let mut next = sampler.sample(&last_row(logits)?);
    generation.prefill_secs = start.elapsed().as_secs_f64();

    let start = Instant::now();
    loop {
        if options.stop_ids.contains(&next) {
            generation.stop = StopReason::StopToken(next);
            break;
        }
        generation.tokens.push(next);
        on_token(next);
        if generation.tokens.len() >= options.max_tokens {
            break;
        }
        let step = ids(&[next]);
        let logits = wrap(&mut || model.forward_last(step.clone(), &mut cache));
        next = sampler.sample(&last_row(logits)?);
    }
    generation.decode_secs = start.elapsed().as_secs_f64();
    Ok(generation)
}

/// The logits of the last position of the first sequence, on the host.
fn last_row(logits: Tensor<3>) -> Result<Vec<f32>, GenerateError> {
    let [_, s, v] = logits.dims();
    let row = logits.narrow(0, 0, 1).narrow(1, s - 1, 1).reshape([v]);
    row.into_data().try_to_vec::<f32>().map_err(|e| GenerateError::Logits(format!("{e:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_picks_the_first_maximum_and_skips_nan() {
        let mut s = Sampler::greedy();
        assert_eq!(s.sample(&[0.0, 3.0, 3.0, 1.0]), 1);
        assert_eq!(s.sample(&[f32::NAN, -1.0, 2.0]), 2);
    }

    #[test]
    fn top_p_is_seeded_and_respects_the_nucleus() {
        let logits = [2.0, 1.0, 0.5, -3.0, -10.0];
        let draw = |seed| {
            let mut s = Sampler::top_p(1.0, 0.8, seed);
            (0..200).map(|_| s.sample(&logits)).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
        // p ≈ [0.61, 0.22, 0.14, ..]: the 0.8 nucleus is tokens {0, 1}.
        let d = draw(7);
        assert!(d.iter().all(|&t| t <= 1));
        assert!(d.contains(&0) && d.contains(&1));
        // A tiny top_p is greedy; temperature 0 is greedy.
        assert!(draw_with(Sampler::top_p(1.0, 1e-6, 3), &logits).iter().all(|&t| t == 0));
        assert!(draw_with(Sampler::top_p(0.0, 0.9, 3), &logits).iter().all(|&t| t == 0));
    }

    fn draw_with(mut s: Sampler, logits: &[f32]) -> Vec<u32> {
        (0..50).map(|_| s.sample(logits)).collect()
    }
}
