//! `adaptive`: keep the most frequently used weights within a byte budget.

use std::collections::HashMap;

use super::{Admit, CachePolicy, CacheView, WeightKey};

/// Keeps the decoded weights with the highest decayed access frequency within `budget` bytes and
/// evicts the coldest. Each access adds 1 to a weight's score; every score decays by `decay` at
/// the end of each forward pass, so the score tracks recent frequency. A new weight only
/// displaces weights strictly colder than itself: a weight read once never flushes a hot working
/// set, and a model read in a cycle (every weight once per pass) keeps a stable subset cached
/// instead of thrashing like LRU would.
#[derive(Clone, Debug)]
pub struct Adaptive {
    budget: u64,
    decay: f64,
    clock: u64,
    scores: HashMap<WeightKey, (f64, u64)>,
}

impl Adaptive {
    /// A budget in bytes of decoded weights.
    pub fn new(budget: u64) -> Self {
        Self { budget, decay: 0.9, clock: 0, scores: HashMap::new() }
    }

    /// Sets the per-pass decay factor (0 < decay ≤ 1; 1 = plain counts).
    pub fn decay(mut self, decay: f64) -> Self {
        self.decay = decay.clamp(f64::MIN_POSITIVE, 1.0);
        self
    }

    fn score(&self, key: WeightKey) -> f64 {
        self.scores.get(&key).map_or(0.0, |&(s, t)| s * self.decay.powf((self.clock - t) as f64))
    }
}

impl CachePolicy for Adaptive {
    fn name(&self) -> String {
        "adaptive".into()
    }

    fn on_access(&mut self, key: WeightKey, _bytes: u64) {
        let s = self.score(key) + 1.0;
        self.scores.insert(key, (s, self.clock));
    }

    fn on_decoded(&mut self, key: WeightKey, bytes: u64, cached: &CacheView) -> Admit {
        if bytes > self.budget {
            return Admit::Skip;
        }
        let mine = self.score(key);
        let mut held: Vec<(f64, WeightKey, u64)> = cached.entries().map(|(k, b)| (self.score(k), k, b)).collect();
        held.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        let mut used = cached.bytes();
        let mut evict = Vec::new();
        for (score, k, b) in held {
            if used + bytes <= self.budget {
                break;
            }
            if score >= mine {
                return Admit::Skip;
            }
            used -= b;
            evict.push(k);
        }
        if used + bytes <= self.budget {
            Admit::Keep { evict }
        } else {
            Admit::Skip
        }
    }

    fn on_forward_end(&mut self, _cached: &CacheView) -> Vec<WeightKey> {
        self.clock += 1;
        Vec::new()
    }

    fn budget(&self) -> Option<u64> {
        Some(self.budget)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: usize) -> WeightKey {
        WeightKey { attachment: 0, index: i }
    }

    fn view(entries: &[(usize, u64)]) -> CacheView {
        let mut v = CacheView::default();
        for &(i, b) in entries {
            v.entries.insert(key(i), b);
            v.bytes += b;
        }
        v
    }

    #[test]
    fn hot_weights_displace_cold_ones_never_the_reverse() {
        let mut p = Adaptive::new(100).decay(1.0);
        for _ in 0..5 {
            p.on_access(key(0), 60);
        }
        p.on_access(key(1), 60);
        // key 1 is colder than the held key 0: it is not admitted.
        assert_eq!(p.on_decoded(key(1), 60, &view(&[(0, 60)])), Admit::Skip);
        for _ in 0..10 {
            p.on_access(key(1), 60);
        }
        // Now hotter: key 0 is evicted to make room.
        assert_eq!(p.on_decoded(key(1), 60, &view(&[(0, 60)])), Admit::Keep { evict: vec![key(0)] });
        // Fits without eviction.
        assert_eq!(p.on_decoded(key(2), 40, &view(&[(0, 60)])), Admit::Keep { evict: vec![] });
        // Larger than the budget: never kept.
        assert_eq!(p.on_decoded(key(3), 101, &view(&[])), Admit::Skip);
    }

    #[test]
    fn scores_decay_with_time() {
        let mut p = Adaptive::new(100).decay(0.5);
        p.on_access(key(0), 1);
        p.on_access(key(0), 1);
        let before = p.score(key(0));
        p.on_access(key(1), 1);
        assert_eq!(p.score(key(0)), before, "accesses to others do not decay a score");
        p.on_forward_end(&view(&[]));
        assert_eq!(p.score(key(0)), before * 0.5);
    }
}
