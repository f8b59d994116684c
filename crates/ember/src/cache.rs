//! The decoded-weight cache: the tensors a policy keeps, and the forward-pass boundary.
//!
//! One cache can serve several models (clone it into each [`Config`](crate::Config)): they then
//! share one policy and one budget.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use burn::tensor::Tensor;

use crate::policy::{Admit, CachePolicy, CacheView, WeightKey};

pub(crate) struct CacheState {
    pub(crate) policy: Box<dyn CachePolicy>,
    pub(crate) view: CacheView,
    tensors: HashMap<WeightKey, Tensor<1>>,
    pub(crate) peak_bytes: u64,
    depth: u32,
    /// Completed forward passes (prefetch uses it to end its learning pass).
    pub(crate) passes: u64,
}

impl CacheState {
    /// Looks `key` up, telling the policy of the access.
    pub(crate) fn lookup(&mut self, key: WeightKey, bytes: u64) -> Option<Tensor<1>> {
        self.policy.on_access(key, bytes);
        self.tensors.get(&key).cloned()
    }

    /// Offers a freshly decoded weight to the policy; returns whether it was kept.
    pub(crate) fn offer(&mut self, key: WeightKey, bytes: u64, tensor: &Tensor<1>) -> bool {
        match self.policy.on_decoded(key, bytes, &self.view) {
            Admit::Skip => false,
            Admit::Keep { evict } => {
                for k in evict {
                    self.remove(k);
                }
                self.remove(key);
                self.tensors.insert(key, tensor.clone());
                self.view.entries.insert(key, bytes);
                self.view.bytes += bytes;
                self.peak_bytes = self.peak_bytes.max(self.view.bytes);
                true
            }
        }
    }

    fn remove(&mut self, key: WeightKey) {
        if let Some(b) = self.view.entries.remove(&key) {
            self.view.bytes -= b;
            self.tensors.remove(&key);
        }
    }

    pub(crate) fn contains(&self, key: WeightKey) -> bool {
        self.tensors.contains_key(&key)
    }

    /// Drops every entry of one attachment (when its store is dropped).
    pub(crate) fn forget_attachment(&mut self, attachment: u64) {
        let keys: Vec<_> = self.view.entries.keys().filter(|k| k.attachment == attachment).copied().collect();
        for k in keys {
            self.remove(k);
        }
    }
}

/// Holds decoded weights as its policy decides; see [`crate::policy`].
#[derive(Clone)]
pub struct Cache(Arc<Mutex<CacheState>>);

impl Cache {
    /// An empty cache ruled by `policy`.
    pub fn new(policy: impl CachePolicy + 'static) -> Self {
        Self(Arc::new(Mutex::new(CacheState {
            policy: Box::new(policy),
            view: CacheView::default(),
            tensors: HashMap::new(),
            peak_bytes: 0,
            depth: 0,
            passes: 0,
        })))
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, CacheState> {
        // A panic while holding the lock leaves bookkeeping, not memory, inconsistent: go on.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn same(&self, other: &Cache) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// The policy's name.
    pub fn policy_name(&self) -> String {
        self.lock().policy.name()
    }

    /// The policy's byte budget, if it has one.
    pub fn budget(&self) -> Option<u64> {
        self.lock().policy.budget()
    }

    /// Decoded bytes held now.
    pub fn bytes(&self) -> u64 {
        self.lock().view.bytes()
    }

    /// Most decoded bytes held at once so far.
    pub fn peak_bytes(&self) -> u64 {
        self.lock().peak_bytes
    }

    /// Number of decoded weights held now.
    pub fn len(&self) -> usize {
        self.lock().tensors.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Releases everything held.
    pub fn clear(&self) {
        let mut s = self.lock();
        let keys: Vec<_> = s.view.entries.keys().copied().collect();
        for k in keys {
            s.remove(k);
        }
    }

    /// Runs one forward pass: `per-forward` releases what it decoded when `f` returns.
    ///
    /// ```no_run
    /// # fn run(store: &ember::Store, model: &dyn Fn() -> u32) {
    /// let logits = store.forward(|| model());
    /// # }
    /// ```
    pub fn forward<R>(&self, f: impl FnOnce() -> R) -> R {
        let _pass = self.pass();
        f()
    }

    /// Starts a forward pass that ends when the guard is dropped (also on panic). Passes nest:
    /// only the outermost end counts.
    pub fn pass(&self) -> PassGuard {
        self.lock().depth += 1;
        PassGuard { caches: vec![self.clone()], meter: None }
    }

    fn end_pass(&self) {
        let mut s = self.lock();
        s.depth = s.depth.saturating_sub(1);
        if s.depth == 0 {
            s.passes += 1;
            let CacheState { policy, view, .. } = &mut *s;
            let release = policy.on_forward_end(view);
            for k in release {
                s.remove(k);
            }
        }
    }
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.lock();
        f.debug_struct("Cache")
            .field("policy", &s.policy.name())
            .field("weights", &s.tensors.len())
            .field("bytes", &s.view.bytes())
            .finish()
    }
}

/// Ends a forward pass when dropped; see [`Cache::pass`] and [`Store::pass`](crate::Store::pass).
#[must_use = "the pass ends when the guard is dropped"]
pub struct PassGuard {
    pub(crate) caches: Vec<Cache>,
    /// Sampled as the pass ends, before the policy releases anything.
    meter: Option<std::sync::Arc<crate::meter::Meter>>,
}

impl PassGuard {
    pub(crate) fn over(caches: Vec<Cache>, meter: Option<std::sync::Arc<crate::meter::Meter>>) -> Self {
        for c in &caches {
            c.lock().depth += 1;
        }
        Self { caches, meter }
    }
}

impl Drop for PassGuard {
    fn drop(&mut self) {
        if let Some(m) = &self.meter {
            m.track();
        }
        for c in &self.caches {
            c.end_pass();
        }
    }
}
