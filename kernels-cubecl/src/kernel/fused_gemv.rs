//! `fused_gemv`: `y = x·Wᵀ` for a few activation rows, read straight from a weight's fast form
//! (`crate::fused::form`) — the decoded weight is never written.
// Kernel code: CubeCL expands `(a + b - 1) / b` but has no `div_ceil`.
#![allow(clippy::manual_div_ceil)]
//!
//! One cube per output feature (stored row), [`UNITS`] units striding over its columns, so the
//! units of a cube read neighbouring words; every weight is decoded in registers exactly as the
//! reference decoder does, multiplied into each of the `m` activation rows, and the partial sums
//! are reduced in shared memory. Rank-form escapes (decoded as `+0.0` in the fast path) are
//! added by the reducing unit from the row's escape list.
//!
//! Buffers (all words): `codes` — the form's code bytes (for the rank form: the rank nibbles,
//! then the sign·mantissa bytes from word `params[4]`); `aux` — f32 scales (interleaved with
//! mins for asymmetric int4); `meta` — the rank→exponent table (4 words), the `rows + 1` escape
//! offsets from word 4, the `(column, bits)` escape pairs from word `params[6]`; `params` —
//! `[rows, cols, stride, block, low_offset, escape_offsets, escape_pairs]`.

use cubecl::prelude::*;

use super::decode_tiles::f16_bits_to_f32_bits;

/// Units per cube.
pub const UNITS: usize = 64;

/// Largest number of activation rows per launch.
pub const MAX_M: usize = 8;

/// Form identifiers (comptime).
pub mod form_id {
    /// f32 values.
    pub const F32: u32 = 0;
    /// BF16 bit patterns.
    pub const BF16: u32 = 1;
    /// F16 bit patterns.
    pub const F16: u32 = 2;
    /// BF16 exponent ranks + sign·mantissa bytes.
    pub const BF16_RANK: u32 = 3;
    /// int8 codes, per-block scale (per-row: one block of `cols`).
    pub const INT8: u32 = 4;
    /// int4 codes, symmetric.
    pub const INT4_SYM: u32 = 5;
    /// int4 codes with a minimum.
    pub const INT4_ASYM: u32 = 6;
}

/// The value of element `col` of stored row `row`.
#[cube]
fn weight_at(
    codes: &[u32],
    aux: &[f32],
    meta: &[u32],
    row: usize,
    col: usize,
    stride: usize,
    cols: usize,
    block: usize,
    low_off: usize,
    #[comptime] form: u32,
) -> f32 {
    let e = row * stride + col;
    let mut v = 0.0f32;
    if comptime!(form == form_id::F32) {
        v = f32::reinterpret(codes[e]);
    }
    if comptime!(form == form_id::BF16) {
        let h = (codes[e / 2] >> ((e % 2) as u32 * 16)) & 0xFFFF;
        v = f32::reinterpret(h << 16);
    }
    if comptime!(form == form_id::F16) {
        let h = (codes[e / 2] >> ((e % 2) as u32 * 16)) & 0xFFFF;
        v = f32::reinterpret(f16_bits_to_f32_bits(h));
    }
    if comptime!(form == form_id::BF16_RANK) {
        let rank = (codes[e / 8] >> ((e % 8) as u32 * 4)) & 0xF;
        let lo = (codes[low_off + e / 4] >> ((e % 4) as u32 * 8)) & 0xFF;
        let r = rank as usize;
        let exp = (meta[r / 4] >> ((r % 4) as u32 * 8)) & 0xFF;
        let bits = ((lo & 0x80) << 8) | (exp << 7) | (lo & 0x7F);
        v = f32::reinterpret(bits << 16);
    }
    if comptime!(form == form_id::INT8) {
        let b = (codes[e / 4] >> ((e % 4) as u32 * 8)) & 0xFF;
        let mut code = b as i32;
        if b >= 128 {
            code -= 256;
        }
        // Per-row scales are one block of `cols`.
        let b = row * ((cols + block - 1) / block) + col / block;
        v = f32::cast_from(code) * aux[b];
    }
    if comptime!(form == form_id::INT4_SYM) {
        let code = (codes[e / 8] >> ((e % 8) as u32 * 4)) & 0xF;
        let b = row * ((cols + block - 1) / block) + col / block;
        v = f32::cast_from(code as i32 - 8) * aux[b];
    }
    if comptime!(form == form_id::INT4_ASYM) {
        let code = (codes[e / 8] >> ((e % 8) as u32 * 4)) & 0xF;
        let b = row * ((cols + block - 1) / block) + col / block;
        let product = f32::cast_from(code) * aux[2 * b];
        v = product + aux[2 * b + 1];
    }
    v
}

/// `out[i·rows + row] = Σ_c x[i·cols + c] · W[row][c]` for `i < m`.
#[cube(launch)]
pub fn fused_gemv_kernel(
    codes: &[u32],
    aux: &[f32],
    meta: &[u32],
    params: &[u32],
    x: &[f32],
    out: &mut [f32],
    #[comptime] form: u32,
    #[comptime] m: usize,
) {
    let row = CUBE_POS;
    let rows = params[0] as usize;
    // Spare cubes of a 2-D grid have no row (uniform per cube, so the barrier stays safe).
    if row < rows {
        let cols = params[1] as usize;
        let stride = params[2] as usize;
        let block = params[3] as usize;
        let low_off = params[4] as usize;
        let unit = UNIT_POS as usize;
        let mut partial = Shared::<[f32]>::new_slice(comptime!(m * UNITS));
        let steps = (cols + UNITS - 1) / UNITS;
        for i in 0..m {
            partial[i * UNITS + unit] = 0.0f32;
        }
        for k in 0..steps {
            let col = k * UNITS + unit;
            if col < cols {
                let w = weight_at(codes, aux, meta, row, col, stride, cols, block, low_off, form);
                for i in 0..m {
                    partial[i * UNITS + unit] += w * x[i * cols + col];
                }
            }
        }
        sync_cube();
        if unit < m {
            let mut s = 0.0f32;
            for j in 0..UNITS {
                s += partial[unit * UNITS + j];
            }
            if comptime!(form == form_id::BF16_RANK) {
                let first = meta[params[5] as usize + row] as usize;
                let last = meta[params[5] as usize + row + 1] as usize;
                let pairs = params[6] as usize;
                for q in first..last {
                    let col = meta[pairs + 2 * q] as usize;
                    let bits = meta[pairs + 2 * q + 1];
                    s += f32::reinterpret(bits << 16) * x[unit * cols + col];
                }
            }
            out[unit * rows + row] = s;
        }
    }
}

/// `out[row·cols + col] = W[row][col]`: the whole weight decoded from its fast form (the decode
/// path of a weight kept in that form). Rank-form escapes are found in their row's list.
#[cube(launch)]
pub fn decode_form_kernel(
    codes: &[u32],
    aux: &[f32],
    meta: &[u32],
    params: &[u32],
    out: &mut [f32],
    #[comptime] form: u32,
) {
    let rows = params[0] as usize;
    let cols = params[1] as usize;
    let i = ABSOLUTE_POS;
    if i < rows * cols {
        let row = i / cols;
        let col = i % cols;
        let mut v = weight_at(
            codes,
            aux,
            meta,
            row,
            col,
            params[2] as usize,
            cols,
            params[3] as usize,
            params[4] as usize,
            form,
        );
        if comptime!(form == form_id::BF16_RANK) {
            let first = meta[params[5] as usize + row] as usize;
            let last = meta[params[5] as usize + row + 1] as usize;
            let pairs = params[6] as usize;
            for q in first..last {
                if meta[pairs + 2 * q] as usize == col {
                    v = f32::reinterpret(meta[pairs + 2 * q + 1] << 16);
                }
            }
        }
        out[i] = v;
    }
}

/// Launches [`decode_form_kernel()`] for a `rows × cols` weight (`out` holds `rows·cols` words).
///
/// # Safety
/// As [`launch_fused_gemv`]: the four form buffers were uploaded together from one fast form
/// (`params` describing it), each `(handle, len)` names a live buffer of at least `len` words on
/// `client`, and `out` holds `elements` words.
#[allow(clippy::too_many_arguments)]
pub unsafe fn launch_decode_form(
    client: &cubecl::client::Client,
    form: u32,
    elements: usize,
    codes: (cubecl::server::Handle, usize),
    aux: (cubecl::server::Handle, usize),
    meta: (cubecl::server::Handle, usize),
    params: (cubecl::server::Handle, usize),
    out: (cubecl::server::Handle, usize),
) {
    if elements == 0 {
        return;
    }
    // SAFETY: the buffers are one uploaded form and `out` holds `elements` words (the caller's
    // contract above).
    unsafe {
        decode_form_kernel::launch(
            client,
            super::cube_grid(elements.div_ceil(256)),
            CubeDim::new_1d(256),
            BufferArg::from_raw_parts(codes.0, codes.1),
            BufferArg::from_raw_parts(aux.0, aux.1),
            BufferArg::from_raw_parts(meta.0, meta.1),
            BufferArg::from_raw_parts(params.0, params.1),
            BufferArg::from_raw_parts(out.0, out.1),
            form,
        );
    }
}

/// The comptime parameters of one launch.
#[derive(Clone, Copy, Debug)]
pub struct FusedLaunch {
    /// The form ([`form_id`]).
    pub form: u32,
    /// Activation rows, `1..=MAX_M`.
    pub m: usize,
    /// Output features (cubes).
    pub rows: usize,
}

/// Launches [`fused_gemv_kernel()`]. Each pair is a handle and the number of 32-bit words it holds,
/// as uploaded by `crate::fused::op` (which builds every buffer from one validated fast form).
///
/// # Safety
/// The kernel indexes the codes, aux and meta buffers with offsets derived from `params`, so
/// the four form buffers must have been uploaded together from one `FastWeight` (as
/// `crate::fused::op` does); `x` holds `spec.m` rows of the weight's input features and `out`
/// `spec.m × spec.rows` words; every `(handle, len)` names a live buffer of at least `len`
/// words on `client`.
#[allow(clippy::too_many_arguments)]
pub unsafe fn launch_fused_gemv(
    client: &cubecl::client::Client,
    spec: FusedLaunch,
    codes: (cubecl::server::Handle, usize),
    aux: (cubecl::server::Handle, usize),
    meta: (cubecl::server::Handle, usize),
    params: (cubecl::server::Handle, usize),
    x: (cubecl::server::Handle, usize),
    out: (cubecl::server::Handle, usize),
) {
    if spec.rows == 0 || spec.m == 0 {
        return;
    }
    // SAFETY: each length is the number of words its handle holds; the kernel's indices stay
    // inside the buffers a fast form of `params`' shape produces (the caller's contract above).
    unsafe {
        fused_gemv_kernel::launch(
            client,
            super::cube_grid(spec.rows),
            CubeDim::new_1d(UNITS as u32),
            BufferArg::from_raw_parts(codes.0, codes.1),
            BufferArg::from_raw_parts(aux.0, aux.1),
            BufferArg::from_raw_parts(meta.0, meta.1),
            BufferArg::from_raw_parts(params.0, params.1),
            BufferArg::from_raw_parts(x.0, x.1),
            BufferArg::from_raw_parts(out.0, out.1),
            spec.form,
            spec.m,
        );
    }
}
