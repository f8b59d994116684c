//! The CubeCL kernels. One op per file, each `#[cube]` kernel next to the host function that
//! allocates its output and launches it (the shape of `burn-cubecl/src/kernel/*`).

// `#[cube(launch)]` generates undocumented helper items.
#[allow(missing_docs)]
mod copy_words;
#[allow(missing_docs)]
mod decode_tiles;
#[allow(missing_docs)]
mod fused_gemv;

/// Largest cube count per dispatch dimension (Vulkan and WebGPU guarantee 65 535).
const MAX_CUBES_PER_DIM: usize = 65_535;

/// A grid of at least `cubes` cubes: one row while it fits, else rows of 65 535. Kernels read
/// the linear `CUBE_POS` and let the spare cubes of the last row return at once.
fn cube_grid(cubes: usize) -> cubecl::prelude::CubeCount {
    let x = cubes.clamp(1, MAX_CUBES_PER_DIM);
    cubecl::prelude::CubeCount::Static(x as u32, cubes.div_ceil(x).max(1) as u32, 1)
}

pub use copy_words::{copy_words_kernel, launch_copy_words};
pub use decode_tiles::{decode_tiles_kernel, launch_decode_tiles, TileLaunch};
pub use fused_gemv::{
    decode_form_kernel, form_id, fused_gemv_kernel, launch_decode_form, launch_fused_gemv, FusedLaunch, MAX_M, UNITS,
};
