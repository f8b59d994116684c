//! The benches' data: the codec's deterministic synthetic weights.

#![allow(unused_imports)]

pub use ember_codec::synthetic::{llama_like_f32, to_bf16_bytes, to_f16_bytes, to_f32_bytes, SplitMix};
