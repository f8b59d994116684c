//! Drop-in layers that multiply compressed weights where they lie.
//!
//! [`Linear`] and [`Embedding`] have the parameter paths, shapes and `forward` of
//! `burn::nn::Linear` (`weight` `[in, out]`, `bias`) and `burn::nn::Embedding` (`weight`
//! `[vocab, dim]`), so records, name maps and `Store::attach` work unchanged. What they add:
//! when the parameter is backed by a compressed weight kept in its fast form, a small batch is
//! multiplied (or looked up) *fused* — no decoded weight is ever allocated — and otherwise the
//! product reads the weight in the layout Burn holds it in, without the per-call repack of a
//! transposed weight that Burn's CPU matmul does. A plain `burn::nn::Linear` keeps working
//! through the parameter hook; it only misses the fused path.
//!
//! ```
//! use burn::tensor::{Device, Tensor};
//! let device = Device::flex();
//! let layer = ember::nn::LinearConfig::new(8, 4).init(&device);
//! let y = layer.forward(Tensor::<2>::ones([2, 8], &device));
//! assert_eq!(y.dims(), [2, 4]);
//! ```

use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::Initializer;
use burn::tensor::{Device, Int, Tensor};

use crate::hook::CompressedWeight;

/// Configuration of a [`Linear`] (the fields of `burn::nn::LinearConfig`).
#[derive(Config, Debug)]
pub struct LinearConfig {
    /// Input features.
    pub d_input: usize,
    /// Output features.
    pub d_output: usize,
    /// Whether the layer has a bias.
    #[config(default = true)]
    pub bias: bool,
    /// Weight initializer (lazy: nothing is allocated until the parameter is first read).
    #[config(default = "Initializer::KaimingUniform{gain:0.5773502691896258, fan_out_only:false}")]
    pub initializer: Initializer,
}

impl LinearConfig {
    /// A layer with lazy parameters, exactly as `burn::nn::LinearConfig::init` makes them.
    pub fn init(&self, device: &Device) -> Linear {
        let inner = burn::nn::LinearConfig::new(self.d_input, self.d_output)
            .with_bias(self.bias)
            .with_initializer(self.initializer.clone())
            .init(device);
        Linear { weight: inner.weight, bias: inner.bias }
    }
}

/// `y = x·W + b`, with `W` `[in, out]` as in `burn::nn::Linear`.
#[derive(Module, Debug)]
pub struct Linear {
    /// `[in, out]`.
    pub weight: Param<Tensor<2>>,
    /// `[out]`.
    pub bias: Option<Param<Tensor<1>>>,
}

impl Linear {
    /// Applies the layer to `input` `[..., in]`, giving `[..., out]`.
    pub fn forward<const D: usize>(&self, input: Tensor<D>) -> Tensor<D> {
        let dims = input.dims();
        let d_in = dims[D - 1];
        let m = dims[..D - 1].iter().product::<usize>();
        let x = input.reshape([m, d_in]);
        let bias = self.bias.as_ref().map(|b| b.val());
        let fused =
            self.weight.reparameterization::<CompressedWeight>().and_then(|c| c.fused_matmul(&x, bias.as_ref()));
        let y = match fused {
            Some(y) => y,
            None => {
                let y = ember_kernels::fused::op::matmul(x, self.weight.val());
                match bias {
                    Some(b) => y + b.unsqueeze::<2>(),
                    None => y,
                }
            }
        };
        let mut out = dims;
        out[D - 1] = y.dims()[1];
        y.reshape(out)
    }
}

/// `x·Pᵀ` for a parameter `P` `[out, in]` — the tied output head of a language model, which
/// multiplies by its `[vocab, hidden]` embedding — fused when `P` is compressed and the batch is
/// small, else without repacking `P`.
pub fn matmul_transposed(x: Tensor<2>, param: &Param<Tensor<2>>) -> Tensor<2> {
    if let Some(y) = param.reparameterization::<CompressedWeight>().and_then(|c| c.fused_matmul_transposed(&x)) {
        return y;
    }
    ember_kernels::fused::op::matmul(x, param.val().transpose())
}

/// Configuration of an [`Embedding`] (the fields of `burn::nn::EmbeddingConfig`).
#[derive(Config, Debug)]
pub struct EmbeddingConfig {
    /// Vocabulary size.
    pub n_embedding: usize,
    /// Vector size.
    pub d_model: usize,
    /// Initializer (lazy).
    #[config(default = "Initializer::Normal{mean:0.0, std:1.0}")]
    pub initializer: Initializer,
}

impl EmbeddingConfig {
    /// A layer with a lazy weight, as `burn::nn::EmbeddingConfig::init` makes it.
    pub fn init(&self, device: &Device) -> Embedding {
        let inner = burn::nn::EmbeddingConfig::new(self.n_embedding, self.d_model)
            .with_initializer(self.initializer.clone())
            .init(device);
        Embedding { weight: inner.weight }
    }
}

/// A lookup table `[vocab, dim]`, as `burn::nn::Embedding`; a compressed table in its fast form
/// decodes only the looked-up rows.
#[derive(Module, Debug)]
pub struct Embedding {
    /// `[vocab, dim]`.
    pub weight: Param<Tensor<2>>,
}

impl Embedding {
    /// `[batch, seq]` token ids → `[batch, seq, dim]`.
    pub fn forward(&self, tokens: Tensor<2, Int>) -> Tensor<3> {
        let [b, s] = tokens.dims();
        if let Some(hook) = self.weight.reparameterization::<CompressedWeight>() {
            let ids: Option<Vec<usize>> = tokens
                .clone()
                .into_data()
                .convert::<i64>()
                .try_into_vec::<i64>()
                .ok()
                .and_then(|v| v.into_iter().map(|t| usize::try_from(t).ok()).collect());
            if let Some(rows) = ids.and_then(|ids| hook.fused_rows(&ids)) {
                let d = rows.dims()[1];
                return rows.reshape([b, s, d]);
            }
        }
        burn::tensor::module::embedding(self.weight.val(), tokens)
    }
}
