//! Cache policies: which decoded weights outlive the access that decoded them.
//!
//! The cache asks its policy at three moments — every access, every fresh decode, the end of a
//! forward pass — and the policy answers with keys to keep or release. Policies never touch
//! tensors, so a custom one is a few lines of bookkeeping (see [`CachePolicy`]).

mod adaptive;
mod simple;

use std::collections::HashMap;

pub use adaptive::Adaptive;
pub use simple::{Full, NoCache, PerForward};

use crate::error::{EmberError, Result};

/// Identifies one compressed weight across every model sharing a cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct WeightKey {
    /// The attachment (one per [`Store::attach`](crate::Store::attach) call).
    pub attachment: u64,
    /// The weight within it.
    pub index: usize,
}

/// What the cache holds now: decoded bytes per key.
#[derive(Debug, Default)]
pub struct CacheView {
    pub(crate) entries: HashMap<WeightKey, u64>,
    pub(crate) bytes: u64,
}

impl CacheView {
    /// Decoded bytes held.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Held keys and their decoded sizes.
    pub fn entries(&self) -> impl Iterator<Item = (WeightKey, u64)> + '_ {
        self.entries.iter().map(|(k, b)| (*k, *b))
    }

    /// Whether `key` is held.
    pub fn contains(&self, key: WeightKey) -> bool {
        self.entries.contains_key(&key)
    }
}

/// A policy's answer for a freshly decoded weight.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Admit {
    /// Keep it, after releasing these keys.
    Keep {
        /// Released first.
        evict: Vec<WeightKey>,
    },
    /// Hand it to the caller only; it is freed when the caller drops it.
    Skip,
}

/// Decides what stays decoded. Implement it for a custom policy and pass it to
/// [`Config::new`](crate::Config::new).
///
/// ```
/// use ember::policy::{Admit, CachePolicy, CacheView, WeightKey};
/// /// Keeps only weights above 1 MiB (the expensive decodes).
/// struct KeepLarge;
/// impl CachePolicy for KeepLarge {
///     fn name(&self) -> String { "keep-large".into() }
///     fn on_decoded(&mut self, _key: WeightKey, bytes: u64, _cached: &CacheView) -> Admit {
///         if bytes > 1 << 20 { Admit::Keep { evict: vec![] } } else { Admit::Skip }
///     }
/// }
/// let config = ember::Config::new(KeepLarge);
/// ```
pub trait CachePolicy: Send {
    /// Name shown in stats.
    fn name(&self) -> String;
    /// Every access to a compressed weight, hit or miss, before the lookup.
    fn on_access(&mut self, key: WeightKey, bytes: u64) {
        let _ = (key, bytes);
    }
    /// A weight was just decoded (a miss): keep it?
    fn on_decoded(&mut self, key: WeightKey, bytes: u64, cached: &CacheView) -> Admit;
    /// A forward pass ended: keys to release.
    fn on_forward_end(&mut self, cached: &CacheView) -> Vec<WeightKey> {
        let _ = cached;
        Vec::new()
    }
    /// The most decoded bytes this policy will hold, if it has a limit (checked at attach
    /// against the largest weight).
    fn budget(&self) -> Option<u64> {
        None
    }
}

/// A built-in policy by name: `none`, `per-forward`, `full`, or `adaptive` (which needs
/// `budget`).
pub fn by_name(name: &str, budget: Option<u64>) -> Result<Box<dyn CachePolicy>> {
    Ok(match name {
        "none" => Box::new(NoCache),
        "per-forward" => Box::new(PerForward),
        "full" => Box::new(Full),
        "adaptive" => Box::new(Adaptive::new(budget.ok_or_else(|| EmberError::BadBudget("(none given)".into()))?)),
        other => return Err(EmberError::UnknownPolicy(other.to_string())),
    })
}

impl CachePolicy for Box<dyn CachePolicy> {
    fn name(&self) -> String {
        (**self).name()
    }
    fn on_access(&mut self, key: WeightKey, bytes: u64) {
        (**self).on_access(key, bytes)
    }
    fn on_decoded(&mut self, key: WeightKey, bytes: u64, cached: &CacheView) -> Admit {
        (**self).on_decoded(key, bytes, cached)
    }
    fn on_forward_end(&mut self, cached: &CacheView) -> Vec<WeightKey> {
        (**self).on_forward_end(cached)
    }
    fn budget(&self) -> Option<u64> {
        (**self).budget()
    }
}
