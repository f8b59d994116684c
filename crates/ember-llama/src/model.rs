//! The Llama decoder, top to bottom: rotary embedding, attention, MLP, block, model, KV cache,
//! and the map between this module's parameter paths and Hugging Face tensor names.
//!
//! Layout conventions (they matter when weights come from elsewhere):
//! - Activations are `[batch, seq, hidden]`; inside attention `[batch, heads, seq, head_dim]`.
//! - [`Linear`] (ember's drop-in for burn's, same parameters) stores its weight `[in, out]`
//!   (`y = x·W`); Hugging Face stores `[out, in]` (`y = x·Wᵀ`). Loaders transpose; see
//!   [`hf_layout_is_transposed`]. ember's layers multiply a compressed weight fused, and a dense
//!   one in place, whatever its layout (see `ember::nn`).
//! - RoPE is the Hugging Face "half-split" rotation: dimension `i` pairs with `i + head_dim/2`.
//!   burn-nn's `RotaryEncoding` rotates *adjacent* pairs (GPT-J/Meta layout), which does not match
//!   HF checkpoints and has no Llama 3.1 scaling, so the rotation is written out here.
//! - Parameters are created lazily by burn-nn's `*Config::init`: [`Llama::init`] allocates no
//!   weights, so a store can replace every parameter before any dense tensor exists.

use burn::module::Module;
use burn::tensor::activation::{silu, softmax};
use burn::tensor::{Device, Int, Tensor, TensorData};
use ember::nn::{Embedding, EmbeddingConfig, Linear, LinearConfig};

use crate::config::{Activation, LayerType, LlamaConfig};
use crate::norm::RmsNorm;

/// The rotation angles of one forward pass: `cos`/`sin` of `position · inv_freq`, `[1, 1, seq, head_dim/2]`.
struct RopeAngles {
    cos: Tensor<4>,
    sin: Tensor<4>,
}

impl RopeAngles {
    /// Angles for positions `start..start + seq`, computed on the host in f32 like `transformers`.
    ///
    /// Computing them per call (instead of a precomputed table) keeps the model free of a
    /// `max_position_embeddings`-sized buffer; it is `seq · head_dim/2` cosines, negligible next
    /// to the matmuls.
    fn new(inv_freq: &[f32], start: usize, seq: usize, device: &Device) -> Self {
        let half = inv_freq.len();
        let mut cos = Vec::with_capacity(seq * half);
        let mut sin = Vec::with_capacity(seq * half);
        for pos in start..start + seq {
            for &f in inv_freq {
                let angle = pos as f32 * f;
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
        }
        let tensor = |v: Vec<f32>| Tensor::<4>::from_data(TensorData::new(v, [1, 1, seq, half]), device);
        RopeAngles { cos: tensor(cos), sin: tensor(sin) }
    }

    /// Angles for `queries` new tokens per row: `positions` holds them row by row (`rows ×
    /// queries`), giving `[rows, 1, queries, head_dim/2]`, broadcast over the heads.
    fn at_positions(inv_freq: &[f32], positions: &[usize], queries: usize, device: &Device) -> Self {
        let half = inv_freq.len();
        let angles = || positions.iter().flat_map(|&p| inv_freq.iter().map(move |&f| p as f32 * f));
        let cos: Vec<f32> = angles().map(f32::cos).collect();
        let sin: Vec<f32> = angles().map(f32::sin).collect();
        let rows = positions.len() / queries.max(1);
        let tensor = |v: Vec<f32>| Tensor::<4>::from_data(TensorData::new(v, [rows, 1, queries, half]), device);
        RopeAngles { cos: tensor(cos), sin: tensor(sin) }
    }

    /// Rotates `[batch, heads, seq, head_dim]`: `(x1, x2) → (x1·cos − x2·sin, x2·cos + x1·sin)`
    /// with `x1`, `x2` the first and second halves of each head.
    fn apply(&self, x: Tensor<4>) -> Tensor<4> {
        let half = x.dims()[3] / 2;
        let x1 = x.clone().narrow(3, 0, half);
        let x2 = x.narrow(3, half, half);
        let rotated_1 = x1.clone() * self.cos.clone() - x2.clone() * self.sin.clone();
        let rotated_2 = x2 * self.cos.clone() + x1 * self.sin.clone();
        Tensor::cat(vec![rotated_1, rotated_2], 3)
    }
}

/// Keys and values of the positions seen so far, per layer.
///
/// Invariant: every layer holds `len()` positions, `[batch, kv_heads, len, head_dim]`. The cache
/// grows by concatenation: no capacity to choose, at the cost of one copy of the layer's cache
/// per step (small next to reading the weights, which dominates decoding).
#[derive(Debug, Clone)]
pub struct KvCache {
    layers: Vec<Option<(Tensor<4>, Tensor<4>)>>,
    len: usize,
}

impl KvCache {
    /// An empty cache for a model with this config.
    pub fn new(config: &LlamaConfig) -> Self {
        KvCache { layers: vec![None; config.num_hidden_layers], len: 0 }
    }

    /// Number of positions cached; the next forward starts at this position.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True before the first forward.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Forgets every position, keeping the layer count.
    pub fn clear(&mut self) {
        self.layers.iter_mut().for_each(|l| *l = None);
        self.len = 0;
    }

    /// Decoder blocks the cache was made for.
    pub(crate) fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// Layer `layer`'s keys and values, `[batch, kv_heads, len, head_dim]` (`None` while empty).
    pub(crate) fn layer(&self, layer: usize) -> Option<&(Tensor<4>, Tensor<4>)> {
        self.layers.get(layer).and_then(Option::as_ref)
    }
}

/// Where attention keeps the keys and values it has seen: one sequence ([`KvCache`]) or several
/// decoded together ([`crate::batch::BatchCache`]).
pub(crate) trait KvStore {
    /// Appends this step's keys/values to layer `layer` and returns all of them.
    fn append(&mut self, layer: usize, k: Tensor<4>, v: Tensor<4>) -> (Tensor<4>, Tensor<4>);
}

impl KvStore for KvCache {
    fn append(&mut self, layer: usize, k: Tensor<4>, v: Tensor<4>) -> (Tensor<4>, Tensor<4>) {
        append_to(&mut self.layers[layer], k, v)
    }
}

/// Appends `k`, `v` (`[batch, kv_heads, new, head_dim]`) to one layer's keys and values along
/// the sequence axis, and returns all of them.
pub(crate) fn append_to(
    slot: &mut Option<(Tensor<4>, Tensor<4>)>,
    k: Tensor<4>,
    v: Tensor<4>,
) -> (Tensor<4>, Tensor<4>) {
    let (k, v) = match slot.take() {
        None => (k, v),
        Some((k_old, v_old)) => (Tensor::cat(vec![k_old, k], 2), Tensor::cat(vec![v_old, v], 2)),
    };
    *slot = Some((k.clone(), v.clone()));
    (k, v)
}

/// Grouped-query self-attention: `n_heads` query heads share `n_kv_heads` key/value heads.
#[derive(Module, Debug)]
pub struct Attention {
    /// Query projection, `hidden → n_heads·head_dim` (bias only for Qwen2).
    pub wq: Linear,
    /// Key projection, `hidden → n_kv_heads·head_dim`.
    pub wk: Linear,
    /// Value projection, `hidden → n_kv_heads·head_dim`.
    pub wv: Linear,
    /// Output projection, `n_heads·head_dim → hidden`, never biased.
    pub wo: Linear,
    /// RMSNorm over each query head before RoPE (Qwen3, Gemma 3).
    pub q_norm: Option<RmsNorm>,
    /// RMSNorm over each key head before RoPE (Qwen3, Gemma 3).
    pub k_norm: Option<RmsNorm>,
    n_heads: usize,
    n_kv_heads: usize,
    head_dim: usize,
    scale: f64,
}

impl Attention {
    fn init(c: &LlamaConfig, device: &Device) -> Self {
        let hd = c.head_dim();
        let lin = |i, o, bias| LinearConfig::new(i, o).with_bias(bias).init(device);
        Attention {
            wq: lin(c.hidden_size, c.num_attention_heads * hd, c.attention_bias),
            wk: lin(c.hidden_size, c.num_key_value_heads * hd, c.attention_bias),
            wv: lin(c.hidden_size, c.num_key_value_heads * hd, c.attention_bias),
            wo: lin(c.num_attention_heads * hd, c.hidden_size, false),
            q_norm: c.qk_norm.then(|| RmsNorm::new(hd, c.rms_norm_eps, c.norm_weight_offset, device)),
            k_norm: c.qk_norm.then(|| RmsNorm::new(hd, c.rms_norm_eps, c.norm_weight_offset, device)),
            n_heads: c.num_attention_heads,
            n_kv_heads: c.num_key_value_heads,
            head_dim: hd,
            scale: c.attention_scale(),
        }
    }

    /// `x`: `[batch, seq, hidden]`; `mask`: additive (0 / −∞) over `[batch or 1, 1, 1, seq,
    /// cached + seq]`, `None` where every cached position is visible (one token on a global
    /// layer of one sequence).
    fn forward(
        &self,
        x: Tensor<3>,
        rope: &RopeAngles,
        mask: Option<&Tensor<5>>,
        cache: &mut dyn KvStore,
        layer: usize,
    ) -> Tensor<3> {
        let [b, s, _] = x.dims();
        let (h, kv, hd) = (self.n_heads, self.n_kv_heads, self.head_dim);
        let heads = |t: Tensor<3>, n| t.reshape([b, s, n, hd]).swap_dims(1, 2);
        let norm = |t: Tensor<4>, n: &Option<RmsNorm>| match n {
            Some(n) => n.forward(t),
            None => t,
        };
        let q = rope.apply(norm(heads(self.wq.forward(x.clone()), h), &self.q_norm));
        let k = rope.apply(norm(heads(self.wk.forward(x.clone()), kv), &self.k_norm));
        let v = heads(self.wv.forward(x), kv);
        let (k, v) = cache.append(layer, k, v);
        let t = k.dims()[2];

        // Query heads h·rep .. h·rep + rep − 1 share KV head h (HF `repeat_kv`). Folding the
        // group into the sequence axis lets one batched matmul serve the group without copying
        // K and V `rep` times.
        let rep = h / kv;
        let q = q.reshape([b, kv, rep * s, hd]);
        let scores = q.matmul(k.swap_dims(2, 3)).mul_scalar(self.scale);
        let scores = match mask {
            None => scores,
            Some(m) => (scores.reshape([b, kv, rep, s, t]) + m.clone()).reshape([b, kv, rep * s, t]),
        };
        let out = softmax(scores, 3).matmul(v); // [b, kv, rep·s, hd]
        let out = out.reshape([b, h, s, hd]).swap_dims(1, 2).reshape([b, s, h * hd]);
        self.wo.forward(out)
    }
}

/// The gated feed-forward: `down(act(gate(x)) ⊙ up(x))`, SwiGLU (SiLU) or GeGLU (tanh GELU).
#[derive(Module, Debug)]
pub struct Mlp {
    /// `hidden → intermediate`, passed through SiLU.
    pub gate: Linear,
    /// `hidden → intermediate`, the linear branch.
    pub up: Linear,
    /// `intermediate → hidden`.
    pub down: Linear,
    #[module(skip)]
    activation: Activation,
}

impl Mlp {
    fn init(c: &LlamaConfig, device: &Device) -> Self {
        let lin = |i, o| LinearConfig::new(i, o).with_bias(false).init(device);
        Mlp {
            gate: lin(c.hidden_size, c.intermediate_size),
            up: lin(c.hidden_size, c.intermediate_size),
            down: lin(c.intermediate_size, c.hidden_size),
            activation: c.activation,
        }
    }

    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let gate = self.gate.forward(x.clone());
        let gate = match self.activation {
            Activation::Silu => silu(gate),
            Activation::GeluTanh => gelu_tanh(gate),
        };
        self.down.forward(gate * self.up.forward(x))
    }
}

/// `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`, PyTorch's `gelu(approximate="tanh")`. The cube
/// is two products: a float power of a negative base is NaN on some backends.
fn gelu_tanh<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    let sqrt_2_over_pi = (2.0 / std::f64::consts::PI).sqrt();
    let cube = x.clone() * x.clone() * x.clone();
    let inner = (x.clone() + cube.mul_scalar(0.044715)).mul_scalar(sqrt_2_over_pi);
    (x * (inner.tanh().add_scalar(1.0))).mul_scalar(0.5)
}

/// One pre-norm decoder block: `x + attn(norm(x))`, then `x + mlp(norm(x))`; with sandwich
/// norms (Gemma) each branch's output is normalised too before it is added.
///
/// The norms keep their Hugging Face names, whose roles differ between families:
/// `post_attention_layernorm` is the norm *before the MLP* in Llama and Qwen, and the norm of the
/// *attention output* in Gemma, whose MLP has its own `pre_feedforward_layernorm`.
#[derive(Module, Debug)]
pub struct Block {
    /// RMSNorm before attention (HF `input_layernorm`).
    pub attention_norm: RmsNorm,
    /// Self-attention.
    pub attention: Attention,
    /// HF `post_attention_layernorm`: before the MLP, or with sandwich norms on the attention
    /// output.
    pub post_attention_norm: RmsNorm,
    /// RMSNorm before the MLP with sandwich norms (HF `pre_feedforward_layernorm`).
    pub pre_mlp_norm: Option<RmsNorm>,
    /// RMSNorm of the MLP output with sandwich norms (HF `post_feedforward_layernorm`).
    pub post_mlp_norm: Option<RmsNorm>,
    /// Feed-forward.
    pub mlp: Mlp,
    #[module(skip)]
    layer_type: LayerType,
}

impl Block {
    fn init(c: &LlamaConfig, layer: usize, device: &Device) -> Self {
        let norm = || RmsNorm::new(c.hidden_size, c.rms_norm_eps, c.norm_weight_offset, device);
        Block {
            attention_norm: norm(),
            attention: Attention::init(c, device),
            post_attention_norm: norm(),
            pre_mlp_norm: c.sandwich_norms.then(norm),
            post_mlp_norm: c.sandwich_norms.then(norm),
            mlp: Mlp::init(c, device),
            layer_type: c.layer_type(layer),
        }
    }

    fn forward(&self, x: Tensor<3>, pass: &PassContext, cache: &mut dyn KvStore, layer: usize) -> Tensor<3> {
        let (rope, mask) = pass.for_layer(self.layer_type);
        let attended = self.attention.forward(self.attention_norm.forward(x.clone()), rope, mask, cache, layer);
        match (&self.pre_mlp_norm, &self.post_mlp_norm) {
            (Some(pre), Some(post)) => {
                let x = x + self.post_attention_norm.forward(attended);
                x.clone() + post.forward(self.mlp.forward(pre.forward(x)))
            }
            _ => {
                let x = x + attended;
                x.clone() + self.mlp.forward(self.post_attention_norm.forward(x))
            }
        }
    }
}

/// What every layer of one forward pass shares: the rotation angles and masks of global and
/// local layers.
pub(crate) struct PassContext {
    global_rope: RopeAngles,
    global_mask: Option<Tensor<5>>,
    /// Present when some layer is local.
    local: Option<(RopeAngles, Option<Tensor<5>>)>,
}

impl PassContext {
    fn for_layer(&self, layer_type: LayerType) -> (&RopeAngles, Option<&Tensor<5>>) {
        match (layer_type, &self.local) {
            (LayerType::Local, Some((rope, mask))) => (rope, mask.as_ref()),
            _ => (&self.global_rope, self.global_mask.as_ref()),
        }
    }
}

/// A Llama-family causal language model (Llama 2/3/3.1, SmolLM, Qwen2, Qwen3, Gemma 3 text).
///
/// Parameter paths, as burn's `ModuleVisitor`/`ModuleMapper` and `Reparameterizer` report them
/// (struct field names joined by `.`, `Vec` elements by their index, `Option` transparent):
///
/// | burn path                                    | Hugging Face name                                   |
/// |----------------------------------------------|-----------------------------------------------------|
/// | `embedding.weight`                           | `model.embed_tokens.weight`                         |
/// | `layers.N.attention_norm.gamma`              | `model.layers.N.input_layernorm.weight`             |
/// | `layers.N.attention.{wq,wk,wv,wo}.weight`    | `model.layers.N.self_attn.{q,k,v,o}_proj.weight`    |
/// | `layers.N.attention.{wq,wk,wv}.bias`         | `model.layers.N.self_attn.{q,k,v}_proj.bias`        |
/// | `layers.N.attention.{q,k}_norm.gamma`        | `model.layers.N.self_attn.{q,k}_norm.weight`        |
/// | `layers.N.post_attention_norm.gamma`         | `model.layers.N.post_attention_layernorm.weight`    |
/// | `layers.N.pre_mlp_norm.gamma`                | `model.layers.N.pre_feedforward_layernorm.weight`   |
/// | `layers.N.post_mlp_norm.gamma`               | `model.layers.N.post_feedforward_layernorm.weight`  |
/// | `layers.N.mlp.{gate,up,down}.weight`         | `model.layers.N.mlp.{gate,up,down}_proj.weight`     |
/// | `norm.gamma`                                 | `model.norm.weight`                                 |
/// | `lm_head.weight` (absent when tied)          | `lm_head.weight`                                    |
#[derive(Module, Debug)]
pub struct Llama {
    /// Token embedding `[vocab, hidden]` (same layout as HF); also the output head when tied.
    pub embedding: Embedding,
    /// The decoder blocks.
    pub layers: Vec<Block>,
    /// Final RMSNorm.
    pub norm: RmsNorm,
    /// Output projection `hidden → vocab`; `None` when the embedding is tied.
    pub lm_head: Option<Linear>,
    #[module(skip)]
    config: LlamaConfig,
    /// RoPE inverse frequencies of global layers (with Llama 3.1 or linear scaling applied), one
    /// per pair of head dimensions.
    #[module(skip)]
    inv_freq: Vec<f32>,
    /// RoPE inverse frequencies of local (sliding-window) layers.
    #[module(skip)]
    local_inv_freq: Vec<f32>,
}

impl Llama {
    /// Builds the module tree with lazy (unallocated) parameters.
    ///
    /// # Panics
    /// If `config` fails [`LlamaConfig::validate`] (configs from `from_hf_json` always pass).
    pub fn init(config: &LlamaConfig, device: &Device) -> Self {
        if let Err(e) = config.validate() {
            panic!("invalid LlamaConfig: {e}");
        }
        let c = config;
        Llama {
            embedding: EmbeddingConfig::new(c.vocab_size, c.hidden_size).init(device),
            layers: (0..c.num_hidden_layers).map(|i| Block::init(c, i, device)).collect(),
            norm: RmsNorm::new(c.hidden_size, c.rms_norm_eps, c.norm_weight_offset, device),
            lm_head: (!c.tie_word_embeddings)
                .then(|| LinearConfig::new(c.hidden_size, c.vocab_size).with_bias(false).init(device)),
            config: c.clone(),
            inv_freq: c.rope_inv_freq(),
            local_inv_freq: c.rope_local_inv_freq(),
        }
    }

    /// The config the model was built from.
    pub fn config(&self) -> &LlamaConfig {
        &self.config
    }

    /// Logits for every position, `[batch, seq, vocab]`.
    ///
    /// `tokens` (`[batch, seq]`) continue the sequence held by `cache`: their positions are
    /// `cache.len()..cache.len() + seq`, and the cache grows by `seq`. With more than one token
    /// a causal mask lets position `p` attend to positions `0..=p` only.
    ///
    /// # Panics
    /// If `cache` was made for a different number of layers.
    pub fn forward(&self, tokens: Tensor<2, Int>, cache: &mut KvCache) -> Tensor<3> {
        if let Some(empty) = self.empty_logits(&tokens) {
            return empty;
        }
        let hidden = self.hidden_states(tokens, cache);
        self.logits(hidden)
    }

    /// An empty sequence has no positions: its logits are `[batch, 0, vocab]` and the cache is
    /// left as it was (rather than a panic on the missing last position).
    fn empty_logits(&self, tokens: &Tensor<2, Int>) -> Option<Tensor<3>> {
        let [batch, seq] = tokens.dims();
        (seq == 0).then(|| Tensor::zeros([batch, 0, self.config.vocab_size], &tokens.device()))
    }

    /// Logits of the last position only, `[batch, 1, vocab]`: what generation needs, without
    /// projecting every prompt position onto the vocabulary.
    pub fn forward_last(&self, tokens: Tensor<2, Int>, cache: &mut KvCache) -> Tensor<3> {
        if let Some(empty) = self.empty_logits(&tokens) {
            return empty;
        }
        let hidden = self.hidden_states(tokens, cache);
        let s = hidden.dims()[1];
        self.logits(hidden.narrow(1, s - 1, 1))
    }

    /// Runs embedding, blocks and final norm; `[batch, seq, hidden]`.
    fn hidden_states(&self, tokens: Tensor<2, Int>, cache: &mut KvCache) -> Tensor<3> {
        assert_eq!(
            cache.layers.len(),
            self.layers.len(),
            "KvCache has {} layers, the model {}",
            cache.layers.len(),
            self.layers.len()
        );
        let device = tokens.device();
        let [_, seq] = tokens.dims();
        let start = cache.len();
        let window = self.local_window();
        let mask = |w| causal_mask(start, seq, w, &device).reshape([1, 1, 1, seq, start + seq]);
        let pass = PassContext {
            global_rope: RopeAngles::new(&self.inv_freq, start, seq, &device),
            global_mask: (seq > 1).then(|| mask(None)),
            // A window that covers every position masks nothing more than the causal mask.
            local: window.map(|w| {
                let local_mask = (seq > 1 || start + seq > w).then(|| mask(Some(w)));
                (RopeAngles::new(&self.local_inv_freq, start, seq, &device), local_mask)
            }),
        };
        let hidden = self.run_blocks(tokens, &pass, cache);
        cache.len += seq;
        hidden
    }

    /// The sliding window of local layers, when the model has any.
    fn local_window(&self) -> Option<usize> {
        self.config.sliding_window.filter(|_| self.config.layer_types.contains(&LayerType::Local))
    }

    /// The pass context of rows that each hold `totals[r]` positions once this pass's keys are
    /// appended, right-aligned in `width` columns (column `c` of row `r` holds position
    /// `c − (width − totals[r])`; the columns before are padding), with the last `queries`
    /// columns this pass's tokens: per-row angles, and masks that hide padding, keys after the
    /// query (causal) and, on local layers, keys beyond the window.
    ///
    /// A query column that is itself padding (a prompt shorter than the others in a prefill)
    /// sees only its own key, so its output stays finite: its keys and values are never seen by
    /// a real position, but a NaN there would survive the −∞ of the mask (`NaN − ∞ = NaN`).
    pub(crate) fn rows_pass(&self, totals: &[usize], queries: usize, width: usize, device: &Device) -> PassContext {
        let rows = totals.len();
        let first_query = width - queries;
        // Query `i` of row `r`: its position, `None` on a padding column.
        let query_pos = |t: usize, i: usize| (first_query + i).checked_sub(width - t);
        let mask = |window: Option<usize>| {
            let data: Vec<f32> = totals
                .iter()
                .flat_map(|&t| {
                    let pad = width - t;
                    (0..queries).flat_map(move |i| {
                        let q = first_query + i;
                        (0..width).map(move |c| {
                            let visible = match query_pos(t, i) {
                                None => c == q,
                                Some(p) => c >= pad && c <= q && window.is_none_or(|w| (c - pad) + w > p),
                            };
                            if visible {
                                0.0
                            } else {
                                f32::NEG_INFINITY
                            }
                        })
                    })
                })
                .collect();
            // Every key visible (one token per row, and rows of one length, within the window):
            // no mask to add in every layer.
            (data.iter().any(|&v| v != 0.0))
                .then(|| Tensor::<5>::from_data(TensorData::new(data, [rows, 1, 1, queries, width]), device))
        };
        let positions: Vec<usize> =
            totals.iter().flat_map(|&t| (0..queries).map(move |i| query_pos(t, i).unwrap_or(0))).collect();
        PassContext {
            global_rope: RopeAngles::at_positions(&self.inv_freq, &positions, queries, device),
            global_mask: mask(None),
            local: self
                .local_window()
                .map(|w| (RopeAngles::at_positions(&self.local_inv_freq, &positions, queries, device), mask(Some(w)))),
        }
    }

    /// Embedding, every block with `pass`, final norm.
    pub(crate) fn run_blocks(&self, tokens: Tensor<2, Int>, pass: &PassContext, cache: &mut dyn KvStore) -> Tensor<3> {
        let mut x = self.embedding.forward(tokens);
        if let Some(scale) = self.config.embedding_scale {
            x = x.mul_scalar(scale);
        }
        for (i, block) in self.layers.iter().enumerate() {
            x = block.forward(x, pass, cache, i);
        }
        self.norm.forward(x)
    }

    pub(crate) fn logits(&self, hidden: Tensor<3>) -> Tensor<3> {
        match &self.lm_head {
            Some(head) => head.forward(hidden),
            None => {
                let [b, s, h] = hidden.dims();
                // The tied head: x·Eᵀ with E the `[vocab, hidden]` embedding, read in place.
                let logits = ember::nn::matmul_transposed(hidden.reshape([b * s, h]), &self.embedding.weight);
                let vocab = logits.dims()[1];
                logits.reshape([b, s, vocab])
            }
        }
    }
}

/// Additive causal mask `[seq, start + seq]`: query `i` (absolute position `p = start + i`) sees
/// keys `0..=p`, or with a `window` only the last `window` of them (`p − window < j ≤ p`, as
/// `transformers` and llama.cpp mask sliding-window layers); the rest get −∞ so softmax gives them
/// zero weight.
fn causal_mask(start: usize, seq: usize, window: Option<usize>, device: &Device) -> Tensor<2> {
    let total = start + seq;
    let visible = move |p: usize, j: usize| j <= p && window.is_none_or(|w| j + w > p);
    let data: Vec<f32> = (0..seq)
        .flat_map(|i| (0..total).map(move |j| if visible(start + i, j) { 0.0 } else { f32::NEG_INFINITY }))
        .collect();
    Tensor::from_data(TensorData::new(data, [seq, total]), device)
}

/// The Hugging Face tensor name of a parameter of [`Llama`], from its burn path (see the table
/// on [`Llama`]). `None` for paths that are not parameters of this model, including the nested
/// parameters of an attached reparameterization (`….weight.<name>.…`).
pub fn hf_name_of(param_path: &str) -> Option<String> {
    let parts: Vec<&str> = param_path.split('.').collect();
    let name = match parts.as_slice() {
        ["embedding", "weight"] => "model.embed_tokens.weight".to_string(),
        ["norm", "gamma"] => "model.norm.weight".to_string(),
        ["lm_head", "weight"] => "lm_head.weight".to_string(),
        ["layers", n, rest @ ..] => {
            n.parse::<usize>().ok()?;
            let tail = match rest {
                ["attention_norm", "gamma"] => "input_layernorm.weight".to_string(),
                ["post_attention_norm", "gamma"] => "post_attention_layernorm.weight".to_string(),
                ["pre_mlp_norm", "gamma"] => "pre_feedforward_layernorm.weight".to_string(),
                ["post_mlp_norm", "gamma"] => "post_feedforward_layernorm.weight".to_string(),
                ["attention", norm @ ("q_norm" | "k_norm"), "gamma"] => format!("self_attn.{norm}.weight"),
                ["attention", proj, kind @ ("weight" | "bias")] => {
                    let hf = match *proj {
                        "wq" => "q_proj",
                        "wk" => "k_proj",
                        "wv" => "v_proj",
                        "wo" => "o_proj",
                        _ => return None,
                    };
                    format!("self_attn.{hf}.{kind}")
                }
                ["mlp", proj @ ("gate" | "up" | "down"), "weight"] => format!("mlp.{proj}_proj.weight"),
                _ => return None,
            };
            format!("model.layers.{n}.{tail}")
        }
        _ => return None,
    };
    Some(name)
}

/// The burn path of a Hugging Face tensor name; the inverse of [`hf_name_of`].
pub fn burn_path_of(hf_name: &str) -> Option<String> {
    let parts: Vec<&str> = hf_name.split('.').collect();
    let path = match parts.as_slice() {
        ["model", "embed_tokens", "weight"] => "embedding.weight".to_string(),
        ["model", "norm", "weight"] => "norm.gamma".to_string(),
        ["lm_head", "weight"] => "lm_head.weight".to_string(),
        ["model", "layers", n, rest @ ..] => {
            n.parse::<usize>().ok()?;
            let tail = match rest {
                ["input_layernorm", "weight"] => "attention_norm.gamma".to_string(),
                ["post_attention_layernorm", "weight"] => "post_attention_norm.gamma".to_string(),
                ["pre_feedforward_layernorm", "weight"] => "pre_mlp_norm.gamma".to_string(),
                ["post_feedforward_layernorm", "weight"] => "post_mlp_norm.gamma".to_string(),
                ["self_attn", norm @ ("q_norm" | "k_norm"), "weight"] => format!("attention.{norm}.gamma"),
                ["self_attn", proj, kind @ ("weight" | "bias")] => {
                    let ours = match *proj {
                        "q_proj" => "wq",
                        "k_proj" => "wk",
                        "v_proj" => "wv",
                        "o_proj" => "wo",
                        _ => return None,
                    };
                    format!("attention.{ours}.{kind}")
                }
                ["mlp", proj, "weight"] => {
                    let ours = proj.strip_suffix("_proj").filter(|p| matches!(*p, "gate" | "up" | "down"))?;
                    format!("mlp.{ours}.weight")
                }
                _ => return None,
            };
            format!("layers.{n}.{tail}")
        }
        _ => return None,
    };
    // Keep the two maps exact inverses: a name that round-trips is one we own.
    (hf_name_of(&path).as_deref() == Some(hf_name)).then_some(path)
}

/// True when the parameter is a [`Linear`] weight, stored `[in, out]` here and `[out, in]` in
/// Hugging Face and GGUF files, so loaders must transpose it. The embedding is `[vocab, hidden]`
/// in both and is not transposed.
pub fn hf_layout_is_transposed(param_path: &str) -> bool {
    let parts: Vec<&str> = param_path.split('.').collect();
    matches!(
        parts.as_slice(),
        ["lm_head", "weight"]
            | ["layers", _, "attention", "wq" | "wk" | "wv" | "wo", "weight"]
            | ["layers", _, "mlp", "gate" | "up" | "down", "weight"]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_maps_are_inverse() {
        for (ours, hf) in [
            ("embedding.weight", "model.embed_tokens.weight"),
            ("norm.gamma", "model.norm.weight"),
            ("lm_head.weight", "lm_head.weight"),
            ("layers.0.attention_norm.gamma", "model.layers.0.input_layernorm.weight"),
            ("layers.12.post_attention_norm.gamma", "model.layers.12.post_attention_layernorm.weight"),
            ("layers.2.pre_mlp_norm.gamma", "model.layers.2.pre_feedforward_layernorm.weight"),
            ("layers.2.post_mlp_norm.gamma", "model.layers.2.post_feedforward_layernorm.weight"),
            ("layers.4.attention.q_norm.gamma", "model.layers.4.self_attn.q_norm.weight"),
            ("layers.4.attention.k_norm.gamma", "model.layers.4.self_attn.k_norm.weight"),
            ("layers.3.attention.wq.weight", "model.layers.3.self_attn.q_proj.weight"),
            ("layers.3.attention.wk.bias", "model.layers.3.self_attn.k_proj.bias"),
            ("layers.3.attention.wo.weight", "model.layers.3.self_attn.o_proj.weight"),
            ("layers.29.mlp.down.weight", "model.layers.29.mlp.down_proj.weight"),
        ] {
            assert_eq!(hf_name_of(ours).as_deref(), Some(hf), "{ours}");
            assert_eq!(burn_path_of(hf).as_deref(), Some(ours), "{hf}");
        }
        for bad in ["layers.x.mlp.up.weight", "layers.0.mlp.up.bias", "layers.0.attention.wq.weight.compressed.x"] {
            assert_eq!(hf_name_of(bad), None, "{bad}");
        }
        assert_eq!(burn_path_of("model.layers.0.mlp.foo_proj.weight"), None);
        assert!(hf_layout_is_transposed("layers.0.mlp.gate.weight"));
        assert!(!hf_layout_is_transposed("embedding.weight"));
        assert!(!hf_layout_is_transposed("layers.0.attention.wq.bias"));
    }

    #[test]
    fn causal_mask_continues_from_the_cache() {
        let device = Device::flex();
        let m = causal_mask(2, 2, None, &device).into_data().try_to_vec::<f32>().unwrap();
        let inf = f32::NEG_INFINITY;
        assert_eq!(m, vec![0.0, 0.0, 0.0, inf, 0.0, 0.0, 0.0, 0.0]);
        // A window of 2: position 2 sees 1..=2, position 3 sees 2..=3.
        let m = causal_mask(2, 2, Some(2), &device).into_data().try_to_vec::<f32>().unwrap();
        assert_eq!(m, vec![inf, 0.0, 0.0, inf, inf, inf, 0.0, 0.0]);
    }
}
