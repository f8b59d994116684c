//! RMSNorm with an optional weight offset: `x / rms(x) · (w + offset)`.
//!
//! Llama and Qwen multiply by the stored weight (`offset` 0); Gemma stores `w` and multiplies by
//! `1 + w` (`offset` 1). burn-nn's `RmsNorm` has no offset, so the norm is written here, with the
//! same parameter name (`gamma`) and the same arithmetic as burn's for `offset` 0: the mean of
//! squares in f32, then a division by the root.

use burn::module::{Module, Param};
use burn::nn::Initializer;
use burn::tensor::{DType, Device, Tensor};

/// Root-mean-square normalisation over the last dimension.
#[derive(Module, Debug)]
pub struct RmsNorm {
    /// The per-channel weight `[d]` (HF `….weight`).
    pub gamma: Param<Tensor<1>>,
    /// Added to the root's square before it is taken.
    pub epsilon: f64,
    /// Added to `gamma` before it multiplies (Gemma: 1).
    pub offset: f64,
}

impl RmsNorm {
    /// A norm over `d` channels; `gamma` is created lazily (no memory until first read or a
    /// store replaces it).
    pub fn new(d: usize, epsilon: f64, offset: f32, device: &Device) -> Self {
        RmsNorm { gamma: Initializer::Ones.init([d], device), epsilon, offset: f64::from(offset) }
    }

    /// Normalises `x` over its last dimension.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let dtype = x.dtype();
        let rms = (x.clone().cast(DType::F32).square().mean_dim(D - 1) + self.epsilon).sqrt();
        let gamma = self.gamma.val();
        let gamma = if self.offset == 0.0 { gamma } else { gamma.add_scalar(self.offset) };
        (x / rms.cast(dtype)) * gamma.unsqueeze()
    }
}
