//! The three policies without parameters.

use super::{Admit, CachePolicy, CacheView, WeightKey};

/// `none`: decode at every access; nothing decoded outlives its use. The least device memory.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoCache;

impl CachePolicy for NoCache {
    fn name(&self) -> String {
        "none".into()
    }
    fn on_decoded(&mut self, _: WeightKey, _: u64, _: &CacheView) -> Admit {
        Admit::Skip
    }
}

/// `per-forward`: decode once per forward pass, release everything at its end (weights used
/// twice in a pass, like tied embeddings, are decoded once).
#[derive(Clone, Copy, Debug, Default)]
pub struct PerForward;

impl CachePolicy for PerForward {
    fn name(&self) -> String {
        "per-forward".into()
    }
    fn on_decoded(&mut self, _: WeightKey, _: u64, _: &CacheView) -> Admit {
        Admit::Keep { evict: Vec::new() }
    }
    fn on_forward_end(&mut self, cached: &CacheView) -> Vec<WeightKey> {
        cached.entries().map(|(k, _)| k).collect()
    }
}

/// `full`: decode on first access and keep ("decompress at load", but lazily).
#[derive(Clone, Copy, Debug, Default)]
pub struct Full;

impl CachePolicy for Full {
    fn name(&self) -> String {
        "full".into()
    }
    fn on_decoded(&mut self, _: WeightKey, _: u64, _: &CacheView) -> Admit {
        Admit::Keep { evict: Vec::new() }
    }
}
