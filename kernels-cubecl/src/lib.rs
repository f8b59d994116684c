//! # ember-kernels
//!
//! Weights decoded **on the device**: the tiles of `.ember` tensors are uploaded as they are
//! stored, and CubeCL kernels run the rANS lanes of `FORMAT.md` — one cube per tile, one unit per
//! lane — writing `f32` (or the original BF16/F16 bits) straight into a Burn tensor.
//!
//! The path, one module each: [`batch`] (tiles of one or more tensors → flat buffers with a
//! descriptor per tile, validated on the host) → [`kernel`] (the `#[cube]` decoder) → [`op`] (the
//! Burn backend-extension op: CubeCL on GPUs, the codec's reference decoder ([`cpu`]) on Burn's
//! `Flex` CPU backend) → [`device`] (opening Vulkan explicitly).
//!
//! ```no_run
//! use ember_codec::Container;
//! use ember_kernels::{batch::DecodeBatch, op::try_decode_batch};
//! let file = Container::open("model.ember")?;
//! let entries: Vec<_> = file.tensors().iter().filter(|t| t.name.starts_with("layers.0.")).collect();
//! let (batches, _raw_ints) = DecodeBatch::group(&file, &entries)?;
//! let device = ember_kernels::device::vulkan_device()?;
//! for batch in &batches {
//!     let flat = try_decode_batch(batch, &device, false)?; // tiles checked, then one launch
//!     println!("{} tensors decoded into {:?}", batch.outputs().len(), flat.shape());
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![warn(missing_docs)]

pub mod batch;
pub mod cpu;
#[cfg(feature = "wgpu")]
pub mod device;
mod error;
pub mod fused;
// The `#[cube]` kernels need CubeCL, which only the GPU features bring in.
#[cfg(feature = "wgpu")]
pub mod kernel;
pub mod op;

pub use error::KernelError;
