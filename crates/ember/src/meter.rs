//! One memory meter for every configuration, read from where the bytes are: the device
//! allocator on a GPU — whether or not anything is attached, so a dense model reads the same
//! meter as a compressed one — and the process on the CPU path, each reading labelled with its
//! source, so ratios are only formed between readings of the same meter.
//!
//! Peaks are high-water marks over a measured span, not samples at pass boundaries. CubeCL's
//! pool keeps no peak statistics (its `MemoryUsage` holds current figures only), so on a GPU the
//! meter is sampled by ember after every decode and at the end of every pass (before the pass
//! releases anything) while it is attached to a store ([`crate::Store::set_meter`]): the moments
//! decoded weights are most numerous. Each sample syncs the device, so attach a meter for measurement
//! runs. On the CPU path the kernel itself tracks the process's peak resident set (`VmHWM`),
//! which [`Meter::reset_peaks`] resets (`/proc/self/clear_refs`), so that peak is exact.

use std::sync::{Arc, Mutex};

use burn::tensor::Device;
use serde::Serialize;

/// Where a meter's figures come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MeterSource {
    /// The device allocator's figures (bytes in use by live tensors, bytes reserved from the
    /// device — what `nvidia-smi` shows for the process, less the driver's own).
    DeviceAllocator,
    /// The process's resident set (the CPU path: Burn's CPU backend keeps no allocator figures).
    ProcessResidentSet,
}

impl MeterSource {
    /// A label for reports.
    pub fn label(self) -> &'static str {
        match self {
            MeterSource::DeviceAllocator => "device allocator",
            MeterSource::ProcessResidentSet => "process resident set (CPU path)",
        }
    }
}

/// One reading.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct MemoryReading {
    /// Bytes of live allocations (device) or resident pages (process).
    pub in_use: u64,
    /// Bytes the allocator holds from the device (device), or the resident set again (process).
    pub reserved: u64,
}

impl MemoryReading {
    fn max(self, other: MemoryReading) -> MemoryReading {
        MemoryReading { in_use: self.in_use.max(other.in_use), reserved: self.reserved.max(other.reserved) }
    }
}

/// A memory meter for one device; see the module documentation.
#[derive(Debug)]
pub struct Meter {
    device: Device,
    source: MeterSource,
    peak: Mutex<MemoryReading>,
}

impl Meter {
    /// A meter for `device`: its allocator where the backend reports one, else the process.
    pub fn new(device: &Device) -> Self {
        let source = if device.memory_pool_usage().is_some() {
            MeterSource::DeviceAllocator
        } else {
            MeterSource::ProcessResidentSet
        };
        let meter = Self { device: device.clone(), source, peak: Mutex::new(MemoryReading::default()) };
        meter.reset_peaks();
        meter
    }

    /// Where the figures come from.
    pub fn source(&self) -> MeterSource {
        self.source
    }

    /// The figures now (after the device finished its queued work), raising the peaks.
    /// `None` where nothing can be read (a device that fails to sync, a system without
    /// `/proc/self/status`).
    pub fn sample(&self) -> Option<MemoryReading> {
        let (now, hwm) = match self.source {
            MeterSource::DeviceAllocator => (self.read()?, None),
            MeterSource::ProcessResidentSet => {
                // One read of the status file for both figures.
                let [rss, hwm] = proc_status_bytes(["VmRSS:", "VmHWM:"])?;
                (MemoryReading { in_use: rss, reserved: rss }, Some(hwm))
            }
        };
        let mut peak = self.peak.lock().unwrap_or_else(|e| e.into_inner());
        *peak = peak.max(now);
        // The kernel's own high-water mark catches what no sample saw.
        if let Some(hwm) = hwm {
            *peak = peak.max(MemoryReading { in_use: hwm, reserved: hwm });
        }
        Some(now)
    }

    /// Records a moment of high memory use (a weight just decoded, a pass about to release its
    /// cache) where only a sample can see it: on the device allocator, which keeps no peak. On
    /// the CPU path the kernel's `VmHWM` already holds the exact peak, so this does nothing there
    /// — reading `/proc/self/status` after every decode cost several percent of a token.
    pub fn track(&self) {
        if self.source == MeterSource::DeviceAllocator {
            self.sample();
        }
    }

    /// The highest figures since the last [`Meter::reset_peaks`] (samples it first).
    pub fn peaks(&self) -> MemoryReading {
        self.sample();
        *self.peak.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts a new measured span: peaks restart from the figures now (e.g. after warm-up).
    pub fn reset_peaks(&self) {
        if self.source == MeterSource::ProcessResidentSet {
            // Linux: "5" resets the peak resident set to the current one. Where that is not
            // allowed the kernel peak keeps counting from process start, which only raises it.
            let _ = std::fs::write("/proc/self/clear_refs", "5");
        }
        let now = self.read().unwrap_or_default();
        *self.peak.lock().unwrap_or_else(|e| e.into_inner()) = now;
    }

    fn read(&self) -> Option<MemoryReading> {
        match self.source {
            MeterSource::DeviceAllocator => {
                self.device.sync().ok()?;
                let u = self.device.memory_pool_usage()?;
                Some(MemoryReading { in_use: u.bytes_in_use, reserved: u.bytes_reserved })
            }
            MeterSource::ProcessResidentSet => {
                let [rss] = proc_status_bytes(["VmRSS:"])?;
                Some(MemoryReading { in_use: rss, reserved: rss })
            }
        }
    }
}

/// `kB` fields of `/proc/self/status`, in bytes (`None` unless every one is there).
fn proc_status_bytes<const N: usize>(fields: [&str; N]) -> Option<[u64; N]> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let mut out = [None; N];
    for line in status.lines() {
        if let Some(i) = fields.iter().position(|f| line.starts_with(f)) {
            out[i] = line.split_whitespace().nth(1).and_then(|kb| kb.parse::<u64>().ok()).map(|kb| kb * 1024);
        }
    }
    let mut bytes = [0; N];
    for (b, o) in bytes.iter_mut().zip(out) {
        *b = o?;
    }
    Some(bytes)
}

/// Where a store's attachments find the meter, if one is set.
pub(crate) type MeterSlot = Arc<Mutex<Option<Arc<Meter>>>>;

/// [`Meter::track`]s the meter in `slot`, if any.
pub(crate) fn track_slot(slot: &MeterSlot) {
    let meter = slot.lock().unwrap_or_else(|e| e.into_inner()).clone();
    if let Some(m) = meter {
        m.track();
    }
}
