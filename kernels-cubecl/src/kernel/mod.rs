//! The CubeCL kernels. One op per file, each `#[cube]` kernel next to the host function that
//! allocates its output and launches it (the shape of `burn-cubecl/src/kernel/*`).

mod decode_tiles;

pub use decode_tiles::{decode_tiles_kernel, launch_decode_tiles};
