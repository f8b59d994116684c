//! A container opened for attaching: matches tensors to parameters, checks them, uploads or
//! keeps their tiles, and hooks the parameters.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};

use burn::module::Module;
use ember_codec::{Container, Dtype};
use ember_kernels::batch::{largest_buffer_bytes, DecodeBatch, KernelScheme};

use crate::attachment::Attachment;
use crate::cache::{Cache, PassGuard};
use crate::config::{Config, FusedForm, FusedMode, Residency};
use crate::error::{EmberError, Result};
use crate::hook::{list_params, Attacher, Plan};
use crate::stats::{DeviceMemory, Stats};
use crate::weight::Weight;
use ember_kernels::fused::coded::CodedTiles;
use ember_kernels::fused::form::FastWeight;
use ember_kernels::fused::op::FusedWeight;
use rayon::prelude::*;

/// An opened `.ember` container whose weights can back a model's parameters.
#[derive(Clone)]
pub struct Store {
    file: Arc<Container>,
    attachments: Arc<Mutex<Vec<Arc<Attachment>>>>,
    meter: crate::meter::MeterSlot,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.file.path()).field("tensors", &self.file.tensors().len()).finish()
    }
}

struct Matched<'a> {
    param: String,
    device: burn::tensor::Device,
    entry: &'a ember_codec::TensorEntry,
    transpose: bool,
}

impl Store {
    /// Opens `path` and verifies every checksum (the kernels trust tile data they are given).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let file = Container::open(path)?;
        file.verify_checksums()?;
        Ok(Self::from_container(file))
    }

    /// Wraps an opened (and verified) container.
    pub fn from_container(file: Container) -> Self {
        Self::from_shared(Arc::new(file))
    }

    /// A second store over the same opened container, for a second model with the same
    /// weights (one checkpoint served under two names): its own attachments, statistics and
    /// meter, but one mapping, so the container's pages are resident once, not once per model.
    pub fn share(&self) -> Self {
        Self::from_shared(Arc::clone(&self.file))
    }

    fn from_shared(file: Arc<Container>) -> Self {
        Self { file, attachments: Arc::new(Mutex::new(Vec::new())), meter: Default::default() }
    }

    /// The container.
    pub fn container(&self) -> &Container {
        &self.file
    }

    fn attachments(&self) -> Vec<Arc<Attachment>> {
        self.attachments.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Backs `model`'s parameters with the container's weights.
    ///
    /// Each parameter path is mapped to a tensor by `config.names`; selected weights stay
    /// compressed behind a parameter hook (their dense base becomes a zero-stride placeholder, so
    /// nothing dense is allocated), the others are decoded once now. Errors name every unmatched
    /// tensor or parameter, and any shape or dtype mismatch.
    ///
    /// ```no_run
    /// use burn::nn::{Linear, LinearConfig};
    /// use ember::{policy::PerForward, Config, Store};
    /// let device = burn::tensor::Device::flex();
    /// let model: Linear = LinearConfig::new(4096, 4096).init(&device);
    /// let store = Store::open("linear.ember")?;
    /// let model = store.attach(model, Config::new(PerForward))?;
    /// let x = burn::tensor::Tensor::<2>::zeros([1, 4096], &device);
    /// let y = store.forward(|| model.forward(x));
    /// println!("{}", store.stats());
    /// # Ok::<(), ember::EmberError>(())
    /// ```
    pub fn attach<M: Module>(&self, model: M, config: Config) -> Result<M> {
        let path = self.file.path().display().to_string();
        let params = list_params(&model);
        let mut matched = Vec::new();
        let mut missing = Vec::new();
        let mut used = HashSet::new();
        for (param, shape, device) in params {
            let Some(target) = config.names.map(&param) else { continue };
            let Ok(entry) = self.file.get(&target.name) else {
                missing.push(format!("{param} -> {}", target.name));
                continue;
            };
            if !matches!(entry.decoded_dtype(), Dtype::BF16 | Dtype::F16 | Dtype::F32)
                || KernelScheme::of(entry).is_none()
            {
                return Err(EmberError::DtypeMismatch {
                    path,
                    tensor: entry.name.clone(),
                    param,
                    dtype: entry.dtype.to_string(),
                });
            }
            let file_shape: Vec<usize> = entry.shape.iter().map(|&d| d as usize).collect();
            let fits = if target.transpose {
                file_shape.len() == 2 && shape.len() == 2 && file_shape[0] == shape[1] && file_shape[1] == shape[0]
            } else {
                file_shape == shape
            };
            if !fits {
                return Err(EmberError::ShapeMismatch {
                    path,
                    tensor: entry.name.clone(),
                    param,
                    file: entry.shape.clone(),
                    module: shape,
                    transposed: target.transpose,
                });
            }
            used.insert(entry.name.clone());
            matched.push(Matched { param, device, entry, transpose: target.transpose });
        }
        if !missing.is_empty() && !config.allow_missing {
            return Err(EmberError::MissingTensors {
                path,
                names: missing,
                hint: " (map them with Config::names, or allow them with Config::allow_missing)",
            });
        }
        let unused: Vec<String> = self
            .file
            .tensors()
            .iter()
            .filter(|t| KernelScheme::of(t).is_some() && !used.contains(&t.name))
            .map(|t| t.name.clone())
            .collect();
        if !unused.is_empty() && !config.allow_unused {
            return Err(EmberError::UnusedTensors {
                path,
                names: unused,
                hint: " (map them with Config::names, or allow them with Config::allow_unused)",
            });
        }

        // Selection: filters, then the N largest.
        let mut selected: Vec<bool> =
            matched.iter().map(|m| config.select.admits(&m.param, m.entry.elements())).collect();
        if let Some(n) = config.select.largest {
            let mut order: Vec<usize> = (0..matched.len()).filter(|&i| selected[i]).collect();
            order.sort_by_key(|&i| std::cmp::Reverse(matched[i].entry.elements()));
            for &i in order.iter().skip(n) {
                selected[i] = false;
            }
        }
        if let Some(budget) = config.cache.budget() {
            if let Some(m) =
                matched.iter().zip(&selected).filter(|(_, s)| **s).map(|(m, _)| m).max_by_key(|m| m.entry.elements())
            {
                let bytes = 4 * m.entry.elements();
                if bytes > budget {
                    return Err(EmberError::BudgetTooSmall { budget, tensor: m.entry.name.clone(), bytes });
                }
            }
        }

        // Every weight is decoded into one device buffer: refuse up front what the device cannot
        // bind, naming the tensor, rather than failing deep inside the allocator at first use.
        for m in &matched {
            let limit = match (device_buffer_limit(&m.device), config.max_buffer_bytes) {
                (Some(d), Some(c)) => Some(d.min(c)),
                (d, c) => d.or(c),
            };
            if let Some(limit) = limit {
                let bytes = largest_buffer_bytes(m.entry);
                if bytes > limit {
                    return Err(EmberError::TooLargeForDevice {
                        path: self.file.path().display().to_string(),
                        tensor: m.entry.name.clone(),
                        bytes,
                        limit,
                    });
                }
            }
        }

        // With fusion, compressed matrices are kept in their fast form (transcoded here, in
        // parallel: it is one CPU decode of each weight) instead of their entropy-coded tiles.
        // With `FusedForm::Coded` on the CPU path they stay entropy-coded, in the mapped file,
        // and every tile is decoded once here to check it.
        let fast: Vec<Option<FusedWeight>> = matched
            .par_iter()
            .zip(&selected)
            .map(|(m, keep)| {
                let fuse = *keep && config.fused != FusedMode::Off && m.entry.shape.len() == 2;
                if !fuse {
                    return Ok(None);
                }
                if config.fused_form == FusedForm::Coded && ember_kernels::op::is_host(&m.device) {
                    let tiles = CodedTiles::new(Arc::clone(&self.file), m.entry)?;
                    return Ok(Some(FusedWeight::coded(tiles, &m.device)));
                }
                let form = FastWeight::from_container(&self.file, m.entry)?;
                Ok(Some(FusedWeight::new(form, &m.device, config.residency == Residency::Device)))
            })
            .collect::<std::result::Result<_, ember_kernels::KernelError>>()?;
        let mut weights = Vec::new();
        let mut plans = HashMap::new();
        let mut dense = (0usize, 0u64);
        for ((m, keep), fast) in matched.iter().zip(&selected).zip(fast) {
            if let Some(fused) = fast {
                plans.insert(m.param.clone(), Plan::Compressed(weights.len()));
                weights.push(Weight::fused(fused, &m.device, m.param.clone(), m.entry, m.transpose));
                continue;
            }
            let batch = DecodeBatch::new(&self.file, &[m.entry])?;
            if *keep {
                plans.insert(m.param.clone(), Plan::Compressed(weights.len()));
                weights.push(Weight::new(batch, config.residency, &m.device, m.param.clone(), m.entry, m.transpose)?);
            } else {
                let w = Weight::new(batch, Residency::Host, &m.device, m.param.clone(), m.entry, m.transpose)?;
                let flat = w.decode_flat();
                dense.0 += 1;
                dense.1 += w.decoded_bytes;
                plans.insert(m.param.clone(), Plan::Dense(Box::new((w, flat))));
            }
        }
        // Every tile is now copied into a batch, transcoded into a fast form or checked: the
        // container's mapped pages of these tensors would only count towards the resident set
        // (entropy-coded weights map theirs again at their first product).
        for m in &matched {
            self.file.release_pages(m.entry, 0..m.entry.tiles.len());
        }
        let mut att = Attachment::new(
            weights,
            config.cache.clone(),
            config.residency,
            config.fused,
            config.prefetch,
            config.sync_timing,
            dense,
        );
        att.meter = Arc::clone(&self.meter);
        let att = Arc::new(att);
        let model = model.apply_reparameterization(Attacher { plans, att: Arc::clone(&att) });
        self.attachments.lock().unwrap_or_else(|e| e.into_inner()).push(att);
        Ok(model)
    }

    fn caches(&self) -> Vec<Cache> {
        let mut caches: Vec<Cache> = Vec::new();
        for a in self.attachments() {
            if !caches.iter().any(|c| c.same(&a.cache)) {
                caches.push(a.cache.clone());
            }
        }
        caches
    }

    /// Runs one forward pass of the attached model(s): `per-forward` releases its decodes when
    /// `f` returns, and prefetch learns the access order from the first pass.
    pub fn forward<R>(&self, f: impl FnOnce() -> R) -> R {
        let _pass = self.pass();
        f()
    }

    /// Starts a forward pass that ends when the guard is dropped (also on panic).
    pub fn pass(&self) -> PassGuard {
        PassGuard::over(self.caches(), self.meter.lock().unwrap_or_else(|e| e.into_inner()).clone())
    }

    /// Samples `meter` after every decode of this store's weights and at the end of every pass
    /// where only samples see the peak (a GPU's allocator; see [`Meter`](crate::Meter): each
    /// sample syncs the device, so set one for measurement runs); on the CPU path the kernel's
    /// own high-water mark is the peak and nothing is sampled per decode. `None` stops. Applies
    /// to attachments made before and after the call.
    ///
    /// ```no_run
    /// # fn run(store: &ember::Store, device: &burn::tensor::Device, model: &dyn Fn() -> u32) {
    /// let meter = std::sync::Arc::new(ember::Meter::new(device));
    /// store.set_meter(Some(meter.clone()));
    /// store.forward(|| model()); // warm-up
    /// meter.reset_peaks();
    /// store.forward(|| model());
    /// println!("{:?} peak over the pass ({})", meter.peaks(), meter.source().label());
    /// # }
    /// ```
    pub fn set_meter(&self, meter: Option<Arc<crate::meter::Meter>>) {
        *self.meter.lock().unwrap_or_else(|e| e.into_inner()) = meter;
    }

    /// Counters over every attachment of this store.
    pub fn stats(&self) -> Stats {
        let mut s = Stats::default();
        for a in self.attachments() {
            s.merge(a.stats());
        }
        s
    }

    /// Zeroes the decode and hit counters (e.g. after warm-up).
    pub fn reset_stats(&self) {
        for a in self.attachments() {
            a.reset_stats();
        }
    }

    /// Syncs the device of the attached weights and samples its allocator (`None` where the
    /// backend does not report memory, e.g. the CPU path).
    pub fn sample_memory(&self) -> Option<DeviceMemory> {
        self.attachments().iter().filter_map(|a| a.sample_memory()).next_back()
    }

    /// Releases this store's decoded weights from their cache (and any prefetch), leaving only
    /// the compressed bytes: what a server does when a model has no request in flight, so that
    /// models sharing one cache budget leave it to the ones that are busy. The next pass decodes
    /// again.
    pub fn release_decoded(&self) {
        for a in self.attachments() {
            a.release_decoded();
        }
    }

    /// Drops a decode running ahead (prefetch), e.g. before measuring idle memory.
    pub fn drop_prefetch(&self) {
        for a in self.attachments() {
            a.drop_prefetch();
        }
    }
}

/// The largest buffer `device` binds, where it is a GPU this process opened through Vulkan.
fn device_buffer_limit(device: &burn::tensor::Device) -> Option<u64> {
    #[cfg(feature = "wgpu")]
    {
        ember_kernels::device::max_buffer_bytes(device)
    }
    #[cfg(not(feature = "wgpu"))]
    {
        let _ = device;
        None
    }
}
