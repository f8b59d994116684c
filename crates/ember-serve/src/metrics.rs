//! Counters per model and their Prometheus text (`GET /metrics`).

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use ember::{Cache, Meter, Store};

/// What a model's store held after the worker's last step.
#[derive(Debug, Clone, Copy, Default)]
pub struct StoreSnapshot {
    /// Compressed bytes resident on the device and in host RAM.
    pub compressed_bytes: u64,
    /// Decoded bytes this model holds in the shared cache.
    pub decoded_bytes: u64,
    /// Cache hits and misses.
    pub hits: u64,
    /// Misses (decodes).
    pub misses: u64,
    /// Products multiplied straight from the compressed form.
    pub fused_calls: u64,
    /// Sequences in the running batch.
    pub running: usize,
}

/// One model's counters, shared by its worker and the HTTP handlers.
#[derive(Debug, Default)]
pub struct ModelMetrics {
    /// Requests accepted.
    pub requests: AtomicU64,
    /// Tokens generated.
    pub generated_tokens: AtomicU64,
    /// Sequences whose client went away before they finished.
    pub cancelled: AtomicU64,
    /// Requests sent to the worker and not yet admitted to its batch.
    pub queued: AtomicI64,
    busy_nanos: AtomicU64,
    snapshot: Mutex<StoreSnapshot>,
}

impl ModelMetrics {
    /// Adds a forward pass of `elapsed` that produced `tokens` tokens.
    pub fn busy(&self, elapsed: Duration, tokens: u64) {
        self.busy_nanos.fetch_add(elapsed.as_nanos().min(u64::MAX as u128) as u64, Ordering::Relaxed);
        self.generated_tokens.fetch_add(tokens, Ordering::Relaxed);
    }

    /// Records what `store` holds, with `running` sequences in the batch.
    pub fn publish(&self, store: &Store, running: usize) {
        let s = store.stats();
        let snap = StoreSnapshot {
            compressed_bytes: s.compressed_resident_device_bytes + s.compressed_resident_host_bytes,
            decoded_bytes: s.cached_bytes,
            hits: s.hits,
            misses: s.misses,
            fused_calls: s.fused_calls,
            running,
        };
        *self.snapshot.lock().unwrap_or_else(|e| e.into_inner()) = snap;
    }

    /// The last snapshot.
    pub fn snapshot(&self) -> StoreSnapshot {
        *self.snapshot.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Generated tokens per second of forward passes (0 before the first).
    pub fn tokens_per_second(&self) -> f64 {
        let secs = self.busy_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        if secs > 0.0 {
            self.generated_tokens.load(Ordering::Relaxed) as f64 / secs
        } else {
            0.0
        }
    }
}

/// The Prometheus text exposition of every model's counters, the shared cache and memory.
pub fn render(models: &[(&str, &ModelMetrics, u64)], cache: &Cache, meter: &Meter) -> String {
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str, values: Vec<(String, f64)>| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, v) in values {
            let _ = writeln!(out, "{name}{labels} {v}");
        }
    };
    let per_model = |f: &dyn Fn(&ModelMetrics) -> f64| -> Vec<(String, f64)> {
        models.iter().map(|(n, m, _)| (format!("{{model=\"{}\"}}", escape(n)), f(m))).collect()
    };
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64;
    family("ember_requests_total", "counter", "Requests accepted.", per_model(&|m| load(&m.requests)));
    family("ember_generated_tokens_total", "counter", "Tokens generated.", per_model(&|m| load(&m.generated_tokens)));
    family(
        "ember_cancelled_total",
        "counter",
        "Sequences cancelled by their client.",
        per_model(&|m| load(&m.cancelled)),
    );
    family(
        "ember_tokens_per_second",
        "gauge",
        "Generated tokens per second of forward passes.",
        per_model(&|m| m.tokens_per_second()),
    );
    family(
        "ember_queue_depth",
        "gauge",
        "Requests waiting to join the batch.",
        per_model(&|m| m.queued.load(Ordering::Relaxed).max(0) as f64),
    );
    family(
        "ember_running_sequences",
        "gauge",
        "Sequences in the running batch.",
        per_model(&|m| m.snapshot().running as f64),
    );
    family(
        "ember_compressed_resident_bytes",
        "gauge",
        "Compressed weight bytes held (device and host).",
        per_model(&|m| m.snapshot().compressed_bytes as f64),
    );
    family(
        "ember_decoded_bytes",
        "gauge",
        "Decoded weight bytes held in the shared cache.",
        per_model(&|m| m.snapshot().decoded_bytes as f64),
    );
    family(
        "ember_cache_hits_total",
        "counter",
        "Weight reads served from the cache.",
        per_model(&|m| m.snapshot().hits as f64),
    );
    family(
        "ember_cache_misses_total",
        "counter",
        "Weight reads that decoded.",
        per_model(&|m| m.snapshot().misses as f64),
    );
    family(
        "ember_fused_products_total",
        "counter",
        "Products multiplied from the compressed form.",
        per_model(&|m| m.snapshot().fused_calls as f64),
    );
    let dense = models.iter().map(|(n, _, d)| (format!("{{model=\"{}\"}}", escape(n)), *d as f64)).collect();
    family("ember_dense_weight_bytes", "gauge", "Bytes of the model's weights uncompressed, as in its source.", dense);
    family(
        "ember_cache_bytes",
        "gauge",
        "Decoded bytes in the shared cache.",
        vec![(String::new(), cache.bytes() as f64)],
    );
    family(
        "ember_cache_peak_bytes",
        "gauge",
        "Peak decoded bytes in the shared cache.",
        vec![(String::new(), cache.peak_bytes() as f64)],
    );
    if let Some(budget) = cache.budget() {
        family("ember_cache_budget_bytes", "gauge", "The shared cache's budget.", vec![(String::new(), budget as f64)]);
    }
    if let Some(m) = meter.sample() {
        let source = format!("{{source=\"{}\"}}", meter.source().label());
        family(
            "ember_memory_bytes",
            "gauge",
            "Memory in use (device allocator, or the process on the CPU path).",
            vec![(source.clone(), m.in_use as f64)],
        );
        let peak = meter.peaks();
        family(
            "ember_memory_peak_bytes",
            "gauge",
            "Peak memory in use since start.",
            vec![(source, peak.in_use as f64)],
        );
    }
    out
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}
