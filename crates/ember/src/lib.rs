//! # ember
//!
//! Keep a Burn model's weights **compressed** — in device memory or host RAM — and decode each one
//! on the device only when a layer reads it. Attach a `.ember` container (written by
//! `ember compress`) to any `burn::module::Module`; a cache policy decides what stays decoded.
//!
//! The path, one module each: [`Store`] (open, match tensors to parameters, upload) →
//! [`hook`] (the `Reparameterization` behind `Param::val()`) → [`cache`] with its [`policy`]
//! (`none`, `per-forward`, `full`, `adaptive`, or your own) → the decode op of `ember-kernels`
//! (CubeCL on GPUs, the reference decoder on the CPU) → [`Stats`].
//!
//! ```no_run
//! use burn::nn::{Linear, LinearConfig};
//! use ember::{policy::Adaptive, Config, Residency, Store};
//!
//! let device = burn::tensor::Device::flex();
//! let model: Linear = LinearConfig::new(4096, 4096).init(&device); // lazy: nothing allocated
//! let store = Store::open("linear.ember")?;
//! let config = Config::new(Adaptive::new(ember::parse_bytes("2GiB")?))
//!     .residency(Residency::Host)
//!     .prefetch(true);
//! let model = store.attach(model, config)?;
//! let y = store.forward(|| model.forward(burn::tensor::Tensor::<2>::zeros([1, 4096], &device)));
//! println!("{}", store.stats());
//! # Ok::<(), ember::EmberError>(())
//! ```
#![warn(missing_docs)]

/// The README's example, compiled and run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

mod attachment;
pub mod cache;
mod config;
mod error;
pub mod hook;
pub mod meter;
pub mod names;
pub mod nn;
pub mod policy;
mod stats;
mod store;
mod weight;

pub use cache::{Cache, PassGuard};
pub use config::{parse_bytes, Config, FusedForm, FusedMode, Residency, Selection};
pub use error::{EmberError, Result};
pub use meter::{MemoryReading, Meter, MeterSource};
pub use names::{NameMap, Target};
pub use stats::{DeviceMemory, Stats, WeightStats};
pub use store::Store;

/// The crates ember builds on, for users who need their types.
pub use {ember_codec as codec, ember_kernels as kernels};
