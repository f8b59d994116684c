//! How a container is attached: cache policy, where compressed bytes live, prefetch, and which
//! weights stay compressed at all.

use std::str::FromStr;

use regex::Regex;

use crate::cache::Cache;
use crate::error::{EmberError, Result};
use crate::names::NameMap;
use crate::policy::CachePolicy;

/// Where a weight's compressed bytes live between decodes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Residency {
    /// Host RAM; uploaded at each decode (the least device memory).
    Host,
    /// Uploaded once at attach; a decode reads device memory only (the fastest).
    #[default]
    Device,
}

impl Residency {
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Residency::Host => "host",
            Residency::Device => "device",
        }
    }
}

impl FromStr for Residency {
    type Err = EmberError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "host" => Ok(Residency::Host),
            "device" => Ok(Residency::Device),
            _ => Err(EmberError::UnknownResidency(s.to_string())),
        }
    }
}

/// Whether small-batch products of compressed weights run *fused* — straight from the
/// weight's fast form (`ember_kernels::fused`), never decoding it — when a layer asks through
/// [`crate::nn::Linear`] (or [`crate::nn::matmul_transposed`]).
///
/// With fusion on, each compressed weight is kept in its fast form (int8/int4 codes unpacked,
/// BF16 exponents as 4-bit ranks with escapes) instead of its entropy-coded tiles: a little
/// larger (≈ 12 bits per BF16 weight instead of ≈ 10.7), but multiplied at memory speed. Layers
/// that read the parameter itself (`Param::val()`) decode from that form as before.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FusedMode {
    /// Fused while the batch is at most the measured crossover and the weight is not held
    /// decoded by the cache; decode + matmul otherwise.
    #[default]
    Auto,
    /// Fused for every batch size the device's kernel takes.
    On,
    /// Never fused: entropy-coded tiles, decode + matmul (the behaviour of ember 0.1).
    Off,
}

impl FusedMode {
    /// Lower-case name, as on the command line.
    pub fn name(self) -> &'static str {
        match self {
            FusedMode::Auto => "auto",
            FusedMode::On => "on",
            FusedMode::Off => "off",
        }
    }
}

impl FromStr for FusedMode {
    type Err = EmberError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(FusedMode::Auto),
            "on" => Ok(FusedMode::On),
            "off" => Ok(FusedMode::Off),
            _ => Err(EmberError::UnknownFusedMode(s.to_string())),
        }
    }
}

/// Which form the fused products read (when [`FusedMode`] is not `Off`).
///
/// | form | lossless BF16 | int8 | products |
/// |---|---|---|---|
/// | [`FusedForm::Fast`] | ≈ 12 bits/weight, transcoded at attach | 8 bits + scales | at memory speed |
/// | [`FusedForm::Coded`] | the container's ≈ 10.6 bits, nothing transcoded | its 5–6 bits | a rANS decode per weight, per product |
///
/// `Coded` is for memory first — several models on one machine, each idling at its file size;
/// batched products amortise its decode over the rows. It runs fused on the CPU path; on a GPU
/// its products decode, then multiply.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FusedForm {
    /// The fast resident form (`ember_kernels::fused::form`).
    #[default]
    Fast,
    /// The entropy-coded tiles themselves, decoded a tile at a time inside each product
    /// (`ember_kernels::fused::coded`).
    Coded,
}

impl FusedForm {
    /// Lower-case name, as on the command line.
    pub fn name(self) -> &'static str {
        match self {
            FusedForm::Fast => "fast",
            FusedForm::Coded => "coded",
        }
    }
}

impl FromStr for FusedForm {
    type Err = EmberError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "fast" => Ok(FusedForm::Fast),
            "coded" => Ok(FusedForm::Coded),
            _ => Err(EmberError::UnknownFusedForm(s.to_string())),
        }
    }
}

/// Which of the mapped weights stay compressed; the others are decoded once at attach and kept
/// dense. Small tensors (norms, biases) gain nothing from compression and cost a decode each.
#[derive(Clone, Debug, Default)]
pub struct Selection {
    /// Only parameters whose path matches.
    pub include: Option<Regex>,
    /// Never parameters whose path matches.
    pub exclude: Option<Regex>,
    /// Only tensors with at least this many elements.
    pub min_elems: u64,
    /// Only the N largest tensors (after the filters above).
    pub largest: Option<usize>,
}

impl Selection {
    /// Every mapped weight stays compressed.
    pub fn all() -> Self {
        Self::default()
    }

    /// Only parameters whose path matches `pattern`.
    pub fn include(mut self, pattern: &str) -> Result<Self> {
        self.include = Some(Regex::new(pattern)?);
        Ok(self)
    }

    /// Never parameters whose path matches `pattern`.
    pub fn exclude(mut self, pattern: &str) -> Result<Self> {
        self.exclude = Some(Regex::new(pattern)?);
        Ok(self)
    }

    /// Only tensors of at least `n` elements.
    pub fn min_elems(mut self, n: u64) -> Self {
        self.min_elems = n;
        self
    }

    /// Only the `n` largest tensors.
    pub fn largest(mut self, n: usize) -> Self {
        self.largest = Some(n);
        self
    }

    pub(crate) fn admits(&self, param: &str, elems: u64) -> bool {
        self.include.as_ref().is_none_or(|r| r.is_match(param))
            && !self.exclude.as_ref().is_some_and(|r| r.is_match(param))
            && elems >= self.min_elems
    }
}

/// Everything [`Store::attach`](crate::Store::attach) needs besides the model.
#[derive(Clone, Debug)]
pub struct Config {
    /// The decoded-weight cache (and its policy); share one between models to share a budget.
    pub cache: Cache,
    /// Where compressed bytes live.
    pub residency: Residency,
    /// Decode the next weight (in the order learned in the first pass) while this one is used.
    pub prefetch: bool,
    /// Which weights stay compressed.
    pub select: Selection,
    /// Parameter path → container tensor.
    pub names: NameMap,
    /// Container tensors no parameter maps to are an error (default) or ignored.
    pub allow_unused: bool,
    /// Parameters with no container tensor are an error (default) or keep their own values.
    pub allow_missing: bool,
    /// Wait for every decode to finish to time it exactly (slower; for profiling).
    pub sync_timing: bool,
    /// Fused products of compressed weights (default [`FusedMode::Auto`]).
    pub fused: FusedMode,
    /// The form fused products read (default [`FusedForm::Fast`]).
    pub fused_form: FusedForm,
    /// The largest single buffer a weight may need (its decoded f32 tensor or its compressed
    /// words), below the device's own limit: attach refuses a larger weight, naming it. `None`
    /// (default): the device's limit alone. Lower it to rehearse a smaller GPU.
    pub max_buffer_bytes: Option<u64>,
}

impl Config {
    /// A fresh cache with `policy`, device residency, no prefetch, everything compressed,
    /// identity names.
    pub fn new(policy: impl CachePolicy + 'static) -> Self {
        Self::with_cache(Cache::new(policy))
    }

    /// Like [`Config::new`] with an existing (possibly shared) cache.
    pub fn with_cache(cache: Cache) -> Self {
        Self {
            cache,
            residency: Residency::Device,
            prefetch: false,
            select: Selection::all(),
            names: NameMap::identity(),
            allow_unused: false,
            allow_missing: false,
            sync_timing: false,
            fused: FusedMode::Auto,
            fused_form: FusedForm::Fast,
            max_buffer_bytes: None,
        }
    }

    /// Sets [`Config::residency`].
    pub fn residency(mut self, r: Residency) -> Self {
        self.residency = r;
        self
    }

    /// Sets [`Config::prefetch`].
    pub fn prefetch(mut self, on: bool) -> Self {
        self.prefetch = on;
        self
    }

    /// Sets [`Config::select`].
    pub fn select(mut self, s: Selection) -> Self {
        self.select = s;
        self
    }

    /// Sets [`Config::names`].
    pub fn names(mut self, n: NameMap) -> Self {
        self.names = n;
        self
    }

    /// Sets [`Config::allow_unused`].
    pub fn allow_unused(mut self, on: bool) -> Self {
        self.allow_unused = on;
        self
    }

    /// Sets [`Config::allow_missing`].
    pub fn allow_missing(mut self, on: bool) -> Self {
        self.allow_missing = on;
        self
    }

    /// Sets the fused mode (see [`FusedMode`]).
    pub fn fused(mut self, mode: FusedMode) -> Self {
        self.fused = mode;
        self
    }

    /// Sets the form fused products read (see [`FusedForm`]).
    pub fn fused_form(mut self, form: FusedForm) -> Self {
        self.fused_form = form;
        self
    }

    /// Sets [`Config::max_buffer_bytes`].
    pub fn max_buffer_bytes(mut self, bytes: u64) -> Self {
        self.max_buffer_bytes = Some(bytes);
        self
    }

    /// Sets [`Config::sync_timing`].
    pub fn sync_timing(mut self, on: bool) -> Self {
        self.sync_timing = on;
        self
    }
}

/// Parses a byte count such as `2GiB`, `512MiB`, `1.5GB`, `64k` or `800000000`.
pub fn parse_bytes(s: &str) -> Result<u64> {
    let bad = || EmberError::BadBudget(s.to_string());
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num.parse().map_err(|_| bad())?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "kib" => 1024.0,
        "m" | "mb" => 1e6,
        "mib" => 1024.0 * 1024.0,
        "g" | "gb" => 1e9,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tb" => 1e12,
        "tib" => 1024f64.powi(4),
        _ => return Err(bad()),
    };
    let bytes = value * mult;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(bad());
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_counts_parse_with_units() {
        assert_eq!(parse_bytes("2GiB").unwrap(), 2 << 30);
        assert_eq!(parse_bytes("512 MiB").unwrap(), 512 << 20);
        assert_eq!(parse_bytes("1.5GB").unwrap(), 1_500_000_000);
        assert_eq!(parse_bytes("800").unwrap(), 800);
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("2XB").is_err());
        assert!(parse_bytes("").is_err());
    }

    #[test]
    fn selection_filters_by_pattern_and_size() {
        let s = Selection::all().include("mlp").unwrap().exclude("down").unwrap().min_elems(10);
        assert!(s.admits("layers.0.mlp.up.weight", 10));
        assert!(!s.admits("layers.0.mlp.down.weight", 100));
        assert!(!s.admits("layers.0.attn.wq.weight", 100));
        assert!(!s.admits("layers.0.mlp.up.weight", 9));
    }
}
