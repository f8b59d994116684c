//! Fused decode-matmul: `y = x·Wᵀ` computed straight from a compressed weight, for the few
//! activation rows of batch-1 generation, without ever writing the decoded weight.
//!
//! The path, one module each: [`form`] (the fast resident form, transcoded once from the
//! entropy-coded tiles) or [`coded`] (the entropy-coded tiles themselves, decoded a tile at a
//! time inside each product: smaller, slower) → [`cpu`] (the SIMD kernels of the CPU path, which also multiply dense
//! f32 weights in any layout without repacking them; [`lanes`] for batches of sixteen rows and
//! more) → [`op`] (the Burn entry points: the
//! fused linear and the dense matmul, on the CPU path and on CubeCL devices).
//!
//! ```
//! use ember_kernels::fused::{cpu::{matmul_wt, CpuPath}, form::FastWeight};
//! // W = [[1, 2], [3, 4]] stored [out, in]; x = [1, 1]: y = x·Wᵀ = [3, 7].
//! let w = FastWeight::from_f32(&[1.0, 2.0, 3.0, 4.0], 2, 2);
//! assert_eq!(matmul_wt(&w, &[1.0, 1.0], 1, None, CpuPath::Best), vec![3.0, 7.0]);
//! ```

pub mod coded;
pub mod cpu;
pub mod form;
pub mod lanes;
pub mod op;
pub(crate) mod scratch;
