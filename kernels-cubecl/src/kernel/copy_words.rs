//! `copy_words`: a plain device-to-device copy, the bandwidth yardstick the decode benchmark
//! divides by, so its ratios hold across machines.

use cubecl::prelude::*;

/// `out[i] = input[i]`, one word per unit.
#[cube(launch)]
pub fn copy_words_kernel(input: &[u32], out: &mut [u32]) {
    if ABSOLUTE_POS < out.len() {
        out[ABSOLUTE_POS] = input[ABSOLUTE_POS];
    }
}

/// Copies `words` words from `input` to `out` on `client`.
///
/// # Safety
/// `input` and `out` must be live buffers on `client` of at least `words` `u32` words each.
pub unsafe fn launch_copy_words(
    client: &cubecl::client::Client,
    input: cubecl::server::Handle,
    out: cubecl::server::Handle,
    words: usize,
) {
    let grid = super::cube_grid(words.div_ceil(256));
    // SAFETY: both handles hold at least `words` words (the caller's contract).
    unsafe {
        copy_words_kernel::launch(
            client,
            grid,
            CubeDim::new_1d(256),
            BufferArg::from_raw_parts(input, words),
            BufferArg::from_raw_parts(out, words),
        );
    }
}
