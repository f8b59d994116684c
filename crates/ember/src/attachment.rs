//! One attached model at run time: every access to a compressed parameter lands here, goes
//! through the cache, decodes on a miss, and (with prefetch) starts the next weight's decode.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Instant;

use burn::tensor::Tensor;

use crate::cache::Cache;
use crate::config::{FusedMode, Residency};
use crate::policy::WeightKey;
use crate::stats::{DeviceMemory, Stats, WeightStats};
use crate::weight::{Source, Weight};
use ember_kernels::fused::op::Orientation;

static NEXT_ATTACHMENT: AtomicU64 = AtomicU64::new(1);

/// The access order learned in the first pass, and the decode running ahead.
#[derive(Default)]
struct Prefetcher {
    order: Vec<usize>,
    seen: HashSet<usize>,
    learned: bool,
    /// `next[i]`: the weight read after weight `i`.
    next: Vec<Option<usize>>,
    started_in_pass: Option<u64>,
    /// The weight being decoded ahead, and where its result will arrive.
    pending: Option<(usize, Receiver<Decoded>)>,
    /// The one long-lived thread that decodes ahead, started at the first prefetch.
    worker: Option<Worker>,
}

/// A decode run ahead: the tensor, or the panic it raised (re-raised nowhere: the caller
/// decodes again, so the panic surfaces on its own thread).
type Decoded = std::thread::Result<Tensor<1>>;

/// The prefetch thread. One thread for the attachment's lifetime rather than one per decode:
/// a thread per weight costs a spawn each time and, worse, allocates every decoded weight from a
/// fresh thread's allocator arena, so on the CPU path its pages are faulted in anew each time.
struct Worker {
    jobs: Option<Sender<(usize, SyncSender<Decoded>)>>,
    thread: Option<JoinHandle<()>>,
}

impl Worker {
    fn start(weights: Arc<Vec<Weight>>) -> std::io::Result<Self> {
        let (jobs, rx) = channel::<(usize, SyncSender<Decoded>)>();
        let thread = std::thread::Builder::new().name("ember-prefetch".into()).spawn(move || {
            for (n, reply) in rx {
                let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| weights[n].decode_flat()));
                // The receiver is gone when the prefetch went stale: the result is dropped here.
                let _ = reply.send(decoded);
            }
        })?;
        Ok(Self { jobs: Some(jobs), thread: Some(thread) })
    }

    /// Queues weight `n`; `None` if the thread is gone (then the caller decodes itself).
    fn submit(&self, n: usize) -> Option<Receiver<Decoded>> {
        let (tx, rx) = sync_channel(1);
        self.jobs.as_ref()?.send((n, tx)).ok()?;
        Some(rx)
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // Closing the queue ends the thread's loop; joining frees what it still holds.
        self.jobs.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Prefetcher {
    /// Records an access while learning; returns the weight to prefetch after it, once learned.
    fn observe(&mut self, index: usize, passes: u64, n: usize) -> Option<usize> {
        if !self.learned {
            let pass = *self.started_in_pass.get_or_insert(passes);
            // The order repeats once a pass ends (or, without pass boundaries, once a weight
            // comes back).
            if pass != passes || self.seen.contains(&index) {
                self.next = vec![None; n];
                for w in self.order.windows(2) {
                    self.next[w[0]] = Some(w[1]);
                }
                if let (Some(&last), Some(&first)) = (self.order.last(), self.order.first()) {
                    self.next[last] = Some(first);
                }
                self.learned = true;
            } else {
                self.order.push(index);
                self.seen.insert(index);
                return None;
            }
        }
        self.next.get(index).copied().flatten()
    }
}

pub(crate) struct Attachment {
    pub(crate) id: u64,
    pub(crate) weights: Arc<Vec<Weight>>,
    pub(crate) cache: Cache,
    residency: Residency,
    fused: FusedMode,
    sync_timing: bool,
    prefetch: Option<Mutex<Prefetcher>>,
    counters: Mutex<Vec<WeightStats>>,
    pub(crate) dense: (usize, u64),
    memory: Mutex<(Option<DeviceMemory>, Option<u64>)>,
    /// The store's memory meter, tracked after every decode ([`crate::Meter::track`]).
    pub(crate) meter: crate::meter::MeterSlot,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Attachment {
    pub(crate) fn new(
        weights: Vec<Weight>,
        cache: Cache,
        residency: Residency,
        fused: FusedMode,
        prefetch: bool,
        sync_timing: bool,
        dense: (usize, u64),
    ) -> Self {
        let counters = weights
            .iter()
            .map(|w| WeightStats {
                param: w.param.clone(),
                tensor: w.tensor.clone(),
                scheme: w.scheme.clone(),
                decoded_bytes: w.decoded_bytes,
                compressed_bytes: w.compressed_bytes,
                form: w.fused_weight().map_or("entropy", |f| f.form_name()).to_string(),
                ..Default::default()
            })
            .collect();
        Self {
            id: NEXT_ATTACHMENT.fetch_add(1, Ordering::Relaxed),
            weights: Arc::new(weights),
            cache,
            residency,
            fused,
            sync_timing,
            prefetch: prefetch.then(|| Mutex::new(Prefetcher::default())),
            counters: Mutex::new(counters),
            dense,
            memory: Mutex::new((None, None)),
            meter: Default::default(),
        }
    }

    fn key(&self, index: usize) -> WeightKey {
        WeightKey { attachment: self.id, index }
    }

    /// The parameter value of weight `index`, decoded or from the cache.
    pub(crate) fn access<const D: usize>(&self, index: usize) -> Tensor<D> {
        let w = &self.weights[index];
        let key = self.key(index);
        let (cached, passes) = {
            let mut c = self.cache.lock();
            (c.lookup(key, w.decoded_bytes), c.passes)
        };
        let flat = match cached {
            Some(t) => {
                lock(&self.counters)[index].hits += 1;
                t
            }
            None => {
                let t = self.decode(index);
                self.cache.lock().offer(key, w.decoded_bytes, &t);
                t
            }
        };
        if let Some(p) = &self.prefetch {
            let next = lock(p).observe(index, passes, self.weights.len());
            if let Some(n) = next {
                self.start_prefetch(n);
            }
        }
        w.as_param(flat)
    }

    /// The product of weight `index` with `x`, fused, when the mode and the batch size allow it;
    /// `None` sends the caller down the decode path (`Param::val()` then a matmul).
    pub(crate) fn fused_linear(
        &self,
        index: usize,
        x: &Tensor<2>,
        bias: Option<&Tensor<1>>,
        orientation: Orientation,
    ) -> Option<Tensor<2>> {
        let f = self.weights[index].fused_weight()?;
        let m = x.dims()[0];
        let run = match self.fused {
            FusedMode::Off => false,
            FusedMode::On => f.fuses(orientation, m),
            FusedMode::Auto => {
                f.fuses(orientation, m)
                    && m <= ember_kernels::fused::op::crossover(&self.weights[index].device)
                    && !self.cache.lock().contains(self.key(index))
            }
        };
        if !run {
            return None;
        }
        let y = f.linear(x.clone(), orientation, bias.cloned());
        lock(&self.counters)[index].fused_calls += 1;
        Some(y)
    }

    /// Rows `ids` of weight `index` (an embedding lookup) decoded straight from its fast form;
    /// `None` where the weight has none or is stored transposed.
    pub(crate) fn fused_rows(&self, index: usize, ids: &[usize]) -> Option<Tensor<2>> {
        let w = &self.weights[index];
        if self.fused == FusedMode::Off || w.transpose {
            return None;
        }
        let rows = w.fused_weight()?.rows(ids)?;
        lock(&self.counters)[index].fused_calls += 1;
        Some(rows)
    }

    /// Whether weight `index` is stored as the transpose of its parameter.
    pub(crate) fn transposed(&self, index: usize) -> bool {
        self.weights[index].transpose
    }

    fn decode(&self, index: usize) -> Tensor<1> {
        let w = &self.weights[index];
        let start = Instant::now();
        let prefetched = self.prefetch.as_ref().and_then(|p| {
            let mut p = lock(p);
            match p.pending.take() {
                Some((i, h)) if i == index => Some(h),
                other => {
                    p.pending = other;
                    None
                }
            }
        });
        let (t, from_prefetch) = match prefetched.map(|rx| rx.recv()) {
            Some(Ok(Ok(t))) => (t, true),
            // A panicked (or lost) prefetch decodes again here, where the panic belongs to the
            // caller.
            Some(Ok(Err(_)) | Err(_)) | None => (w.decode_flat(), false),
        };
        if self.sync_timing {
            // Timing only: an error here resurfaces on the next read of the tensor.
            let _ = w.device.sync();
        }
        let secs = start.elapsed().as_secs_f64();
        // The decoded weight is alive now: a high-water moment for the meter.
        crate::meter::track_slot(&self.meter);
        let mut c = lock(&self.counters);
        let s = &mut c[index];
        s.misses += 1;
        s.decode_seconds += secs;
        if from_prefetch {
            s.prefetch_hits += 1;
        }
        // A prefetched decode was counted when it was started.
        if !from_prefetch {
            s.decodes += 1;
        }
        t
    }

    fn start_prefetch(&self, n: usize) {
        let Some(p) = &self.prefetch else { return };
        if self.cache.lock().contains(self.key(n)) {
            return;
        }
        let mut p = lock(p);
        if matches!(&p.pending, Some((i, _)) if *i == n) {
            return;
        }
        // A stale prefetch (the order changed) is waited for and dropped so its memory is freed.
        if let Some((_, rx)) = p.pending.take() {
            let _ = rx.recv();
        }
        if p.worker.is_none() {
            // If the thread cannot start, this access goes without prefetch (the next one retries).
            p.worker = Worker::start(Arc::clone(&self.weights)).ok();
        }
        let Some(rx) = p.worker.as_ref().and_then(|w| w.submit(n)) else { return };
        p.pending = Some((n, rx));
        lock(&self.counters)[n].decodes += 1;
    }

    /// Joins and drops a pending prefetch (frees its decoded weight).
    pub(crate) fn drop_prefetch(&self) {
        if let Some(p) = &self.prefetch {
            if let Some((_, rx)) = lock(p).pending.take() {
                let _ = rx.recv();
            }
        }
    }

    /// Syncs the device and records its allocator's usage.
    pub(crate) fn sample_memory(&self) -> Option<DeviceMemory> {
        let device = &self.weights.first()?.device;
        device.sync().ok()?;
        let u = device.memory_pool_usage()?;
        let m = DeviceMemory { bytes_in_use: u.bytes_in_use, bytes_reserved: u.bytes_reserved };
        let mut mem = lock(&self.memory);
        mem.0 = Some(m);
        mem.1 = Some(mem.1.unwrap_or(0).max(m.bytes_in_use));
        Some(m)
    }

    pub(crate) fn stats(&self) -> Stats {
        let weights = lock(&self.counters).clone();
        let (cached_bytes, cached_bytes_peak, passes, policy) = {
            let c = self.cache.lock();
            (c.view.bytes(), c.peak_bytes, c.passes, c.policy.name())
        };
        let compressed: u64 = self.weights.iter().map(|w| w.compressed_bytes).sum();
        let on_device: u64 = self
            .weights
            .iter()
            .filter(|w| match &w.source {
                Source::Host(_) => false,
                Source::Device(_) => true,
                Source::Fast(f) => f.on_device(),
            })
            .map(|w| w.compressed_bytes)
            .sum();
        let on_host = compressed - on_device;
        let mem = *lock(&self.memory);
        Stats {
            policy,
            residency: self.residency.name().to_string(),
            prefetch: self.prefetch.is_some(),
            fused: self.fused.name().to_string(),
            compressed_weights: self.weights.len(),
            dense_weights: self.dense.0,
            weights_decoded_bytes: self.weights.iter().map(|w| w.decoded_bytes).sum(),
            weights_compressed_bytes: compressed,
            dense_weight_bytes: self.dense.1,
            compressed_resident_device_bytes: on_device,
            compressed_resident_host_bytes: on_host,
            decode_count: weights.iter().map(|w| w.decodes).sum(),
            decode_seconds: weights.iter().map(|w| w.decode_seconds).sum(),
            bytes_decoded: weights.iter().map(|w| w.decodes * w.decoded_bytes).sum(),
            hits: weights.iter().map(|w| w.hits).sum(),
            misses: weights.iter().map(|w| w.misses).sum(),
            prefetch_hits: weights.iter().map(|w| w.prefetch_hits).sum(),
            fused_calls: weights.iter().map(|w| w.fused_calls).sum(),
            cached_bytes,
            cached_bytes_peak,
            passes,
            device_memory: mem.0,
            device_bytes_peak: mem.1,
            weights,
        }
    }

    pub(crate) fn reset_stats(&self) {
        for s in lock(&self.counters).iter_mut() {
            s.decodes = 0;
            s.hits = 0;
            s.misses = 0;
            s.prefetch_hits = 0;
            s.decode_seconds = 0.0;
            s.fused_calls = 0;
        }
    }
}

impl Attachment {
    /// Drops a running prefetch and every decoded weight of this attachment held by its cache.
    pub(crate) fn release_decoded(&self) {
        self.drop_prefetch();
        self.cache.lock().forget_attachment(self.id);
    }
}

impl Drop for Attachment {
    fn drop(&mut self) {
        self.release_decoded();
    }
}
