//! What the offload layer did: per weight and in total, printable and serializable.

use std::fmt;

use serde::Serialize;

/// Counters of one compressed weight.
#[derive(Clone, Debug, Default, Serialize)]
pub struct WeightStats {
    /// Module parameter path.
    pub param: String,
    /// Container tensor.
    pub tensor: String,
    /// Storage scheme.
    pub scheme: String,
    /// Bytes of the decoded tensor.
    pub decoded_bytes: u64,
    /// Bytes stored (tiles, tables, scales).
    pub compressed_bytes: u64,
    /// Times it was decoded.
    pub decodes: u64,
    /// Accesses served from the cache.
    pub hits: u64,
    /// Accesses that had to decode (or take a prefetched decode).
    pub misses: u64,
    /// Misses served by a prefetched decode.
    pub prefetch_hits: u64,
    /// Seconds spent decoding (launch time, or full time with `sync_timing`).
    pub decode_seconds: f64,
    /// Products computed fused, straight from the weight's fast form (no decode).
    pub fused_calls: u64,
    /// The resident form: `entropy` (the container's tiles) or the fast form's name
    /// (`bf16-rank4`, `int8`, `int4`, ...).
    pub form: String,
}

/// Device memory as the allocator reports it (after a sync).
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq, Eq)]
pub struct DeviceMemory {
    /// Bytes of live allocations.
    pub bytes_in_use: u64,
    /// Bytes the allocator holds from the device.
    pub bytes_reserved: u64,
}

/// Totals over an attachment (or a store).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Stats {
    /// Cache policy.
    pub policy: String,
    /// Where compressed bytes live.
    pub residency: String,
    /// Whether prefetch is on.
    pub prefetch: bool,
    /// Weights kept compressed.
    pub compressed_weights: usize,
    /// Weights decoded once at attach and kept dense (not selected).
    pub dense_weights: usize,
    /// Decoded size of the compressed weights.
    pub weights_decoded_bytes: u64,
    /// Their stored size.
    pub weights_compressed_bytes: u64,
    /// Bytes of the dense (unselected) weights.
    pub dense_weight_bytes: u64,
    /// Compressed bytes held in device memory.
    pub compressed_resident_device_bytes: u64,
    /// Compressed bytes held in host RAM.
    pub compressed_resident_host_bytes: u64,
    /// Decodes.
    pub decode_count: u64,
    /// Seconds spent decoding.
    pub decode_seconds: f64,
    /// Bytes decoded.
    pub bytes_decoded: u64,
    /// Cache hits.
    pub hits: u64,
    /// Cache misses.
    pub misses: u64,
    /// Misses served by prefetch.
    pub prefetch_hits: u64,
    /// Products computed fused (no decode).
    pub fused_calls: u64,
    /// Whether products may run fused (`auto`, `on` or `off`).
    pub fused: String,
    /// Decoded bytes the cache holds now.
    pub cached_bytes: u64,
    /// Most decoded bytes the cache held at once.
    pub cached_bytes_peak: u64,
    /// Completed forward passes.
    pub passes: u64,
    /// Last device memory sample ([`Store::sample_memory`](crate::Store::sample_memory)).
    pub device_memory: Option<DeviceMemory>,
    /// Highest `bytes_in_use` sampled.
    pub device_bytes_peak: Option<u64>,
    /// Per weight.
    pub weights: Vec<WeightStats>,
}

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "policy {} · residency {} · prefetch {} · fused {}",
            self.policy,
            self.residency,
            if self.prefetch { "on" } else { "off" },
            self.fused
        )?;
        let ratio = if self.weights_decoded_bytes > 0 {
            100.0 * self.weights_compressed_bytes as f64 / self.weights_decoded_bytes as f64
        } else {
            0.0
        };
        writeln!(
            f,
            "weights: {} compressed ({:.1} MiB decoded → {:.1} MiB stored, {ratio:.1}%), {} dense ({:.1} MiB)",
            self.compressed_weights,
            mib(self.weights_decoded_bytes),
            mib(self.weights_compressed_bytes),
            self.dense_weights,
            mib(self.dense_weight_bytes),
        )?;
        writeln!(
            f,
            "decodes: {} ({:.1} MiB, {:.3} s) · fused products {} · hits {} · misses {} · prefetched {} · passes {}",
            self.decode_count,
            mib(self.bytes_decoded),
            self.decode_seconds,
            self.fused_calls,
            self.hits,
            self.misses,
            self.prefetch_hits,
            self.passes
        )?;
        write!(f, "cache: {:.1} MiB now, {:.1} MiB peak", mib(self.cached_bytes), mib(self.cached_bytes_peak))?;
        if let (Some(m), Some(p)) = (self.device_memory, self.device_bytes_peak) {
            write!(f, " · device: {:.1} MiB in use, {:.1} MiB peak sampled", mib(m.bytes_in_use), mib(p))?;
        }
        Ok(())
    }
}

impl Stats {
    /// Adds another attachment's totals (a store with several attachments).
    pub(crate) fn merge(&mut self, o: Stats) {
        if self.policy.is_empty() {
            self.policy = o.policy.clone();
            self.residency = o.residency.clone();
            self.prefetch = o.prefetch;
            self.fused = o.fused.clone();
        }
        self.compressed_weights += o.compressed_weights;
        self.dense_weights += o.dense_weights;
        self.weights_decoded_bytes += o.weights_decoded_bytes;
        self.weights_compressed_bytes += o.weights_compressed_bytes;
        self.dense_weight_bytes += o.dense_weight_bytes;
        self.compressed_resident_device_bytes += o.compressed_resident_device_bytes;
        self.compressed_resident_host_bytes += o.compressed_resident_host_bytes;
        self.decode_count += o.decode_count;
        self.decode_seconds += o.decode_seconds;
        self.bytes_decoded += o.bytes_decoded;
        self.hits += o.hits;
        self.misses += o.misses;
        self.prefetch_hits += o.prefetch_hits;
        self.fused_calls += o.fused_calls;
        self.cached_bytes = self.cached_bytes.max(o.cached_bytes);
        self.cached_bytes_peak = self.cached_bytes_peak.max(o.cached_bytes_peak);
        self.passes = self.passes.max(o.passes);
        self.device_memory = self.device_memory.or(o.device_memory);
        self.device_bytes_peak = self.device_bytes_peak.max(o.device_bytes_peak);
        self.weights.extend(o.weights);
    }
}
