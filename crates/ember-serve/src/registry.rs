//! The served models: each named model resolved to a container, opened, checked against the one
//! shared budget, and started on its own worker thread with the model attached to the shared
//! cache.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use burn::tensor::Device;
use ember::{Cache, Config, FusedForm, FusedMode, Store};
use ember_gguf::Tokenizer;
use ember_llama::offload;

use crate::engine::{Job, Worker};
use crate::metrics::ModelMetrics;
use crate::options::{Budget, ModelSpec, Options};

/// A model the server answers for.
pub struct ServedModel {
    /// The name clients use.
    pub name: String,
    /// The container it runs from.
    pub container: PathBuf,
    /// Its tokenizer (prompts are encoded in the handlers).
    pub tokenizer: Arc<Tokenizer>,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Bytes of its weights uncompressed, as in the source checkpoint (BF16 for a GGUF).
    pub dense_bytes: u64,
    /// When it was loaded (Unix seconds).
    pub created: u64,
    /// Counters.
    pub metrics: Arc<ModelMetrics>,
    jobs: Mutex<Option<Sender<Job>>>,
}

impl ServedModel {
    /// Hands `job` to the model's worker; `false` once the server is shutting down.
    pub fn submit(&self, job: Job) -> bool {
        let guard = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        let Some(tx) = guard.as_ref() else { return false };
        self.metrics.queued.fetch_add(1, Ordering::Relaxed);
        self.metrics.requests.fetch_add(1, Ordering::Relaxed);
        if tx.send(job).is_err() {
            self.metrics.queued.fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Stops taking jobs: the worker finishes its batch and exits.
    pub fn close(&self) {
        self.jobs.lock().unwrap_or_else(|e| e.into_inner()).take();
    }
}

/// Everything loaded at startup.
pub struct Registry {
    /// The models, in the order given.
    pub models: Vec<ServedModel>,
    /// The cache every model shares.
    pub cache: Cache,
    /// The device they run on, and its description.
    pub device: Device,
    /// The device's description.
    pub device_name: String,
    /// Worker threads, joined at shutdown.
    pub workers: Vec<std::thread::JoinHandle<()>>,
}

/// Whether two container paths name one file.
fn same_path(a: &std::path::Path, b: &std::path::Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// Decoded (f32) bytes of every tensor of a container.
fn decoded_sizes(store: &Store) -> impl Iterator<Item = (&str, u64)> {
    store.container().tensors().iter().map(|t| (t.name.as_str(), 4 * t.elements()))
}

/// Loads every model of `options` (compressing GGUF files and directories on first use) and
/// starts their workers. A budget smaller than the largest weight of any model is an error that
/// says how much is needed.
pub fn load(options: &Options) -> Result<Registry> {
    let specs = options.model_specs()?;
    let (device, device_name) = ember_kernels::device::choose(&options.device)?;
    eprintln!("ember-serve: device {device_name}");
    let mut stores = Vec::new();
    for ModelSpec { name, path } in &specs {
        let container = ember_cli::model_cache::container_for(path.as_deref(), &options.scheme)
            .with_context(|| format!("model `{name}`"))?;
        // Names for one checkpoint share its mapping: its pages are resident once.
        let same_file = |(_, c, _): &&(String, PathBuf, Store)| same_path(c, &container);
        let store = match stores.iter().find(same_file) {
            Some((_, _, first)) => first.share(),
            None => {
                Store::open(&container).with_context(|| format!("model `{name}`: opening {}", container.display()))?
            }
        };
        stores.push((name.clone(), container, store));
    }

    let total: u64 = stores.iter().flat_map(|(_, _, s)| decoded_sizes(s).map(|(_, b)| b)).sum();
    let (largest_model, largest_tensor, largest) = stores
        .iter()
        .flat_map(|(n, _, s)| decoded_sizes(s).map(move |(t, b)| (n.clone(), t.to_string(), b)))
        .max_by_key(|(_, _, b)| *b)
        .context("the models have no tensors")?;
    let budget = match options.budget()? {
        Some(Budget::Bytes(b)) => b,
        Some(Budget::Fraction(f)) => (total as f64 * f) as u64,
        None => (total / 4).max(largest),
    };
    if options.policy == "adaptive" && budget < largest {
        bail!(
            "--budget {}: the largest weight, `{largest_tensor}` of model `{largest_model}`, decodes to {largest} bytes; \
             the budget must be at least that (all models decode to {total} bytes)",
            options.budget.as_deref().unwrap_or("(default)")
        );
    }
    let cache = Cache::new(ember::policy::by_name(&options.policy, Some(budget))?);
    if options.policy == "adaptive" {
        eprintln!(
            "ember-serve: one `adaptive` cache of {budget} bytes for {} model(s) ({total} bytes decoded)",
            stores.len()
        );
    }

    let mut models = Vec::new();
    let mut workers = Vec::new();
    for (name, container, store) in stores {
        let tokenizer = Arc::new(offload::tokenizer_of(&store).with_context(|| format!("model `{name}`"))?);
        let dense_bytes = store.container().tensors().iter().map(|t| t.original_bytes()).sum();
        let metrics = Arc::new(ModelMetrics::default());
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<usize>>();
        let (dev, cache_for_worker, tok, m) =
            (device.clone(), cache.clone(), Arc::clone(&tokenizer), Arc::clone(&metrics));
        let max_batch = options.max_batch;
        let form: FusedForm = options.form.parse()?;
        let fused: FusedMode = options.fused.parse()?;
        let thread_name = format!("ember-serve:{name}");
        let model_name = name.clone();
        let worker = std::thread::Builder::new().name(thread_name).spawn(move || {
            let attached =
                offload::attach(&store, &dev, Config::with_cache(cache_for_worker).fused(fused).fused_form(form));
            let (model, config) = match attached {
                Ok(a) => a,
                Err(e) => {
                    let _ = ready_tx.send(Err(anyhow::Error::new(e).context(format!("model `{model_name}`"))));
                    return;
                }
            };
            let _ = ready_tx.send(Ok(config.vocab_size));
            Worker { model, config, store, tokenizer: tok, device: dev, max_batch, metrics: m }.run(rx);
        })?;
        let vocab_size = ready_rx.recv().context("a model worker stopped while loading")??;
        let created = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        eprintln!("ember-serve: model `{name}` from {}", container.display());
        models.push(ServedModel {
            name,
            container,
            tokenizer,
            dense_bytes,
            vocab_size,
            created,
            metrics,
            jobs: Mutex::new(Some(tx)),
        });
        workers.push(worker);
    }
    Ok(Registry { models, cache, device, device_name, workers })
}
