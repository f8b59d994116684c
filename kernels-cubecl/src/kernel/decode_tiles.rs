//! `decode_tiles`: one cube per tile, one unit per rANS lane — `FORMAT.md` §3–6, step for step.
// Kernel code: CubeCL expands `(a + b - 1) / b` but has no `div_ceil`.
#![allow(clippy::manual_div_ceil)]
// A comptime branch and a runtime branch stay separate `if`s: CubeCL expands the first at
// compile time.
#![allow(clippy::collapsible_if)]
//!
//! Each cube reads its tile descriptor, loads the tensor's slot table (≤ 4096 words) into shared
//! memory, then every unit runs its lane: round `k` decodes element `k·N + lane`, so the writes
//! of a round are coalesced. The scheme and output kind are comptime, so each combination is a
//! separate, branch-free kernel. Reads are clamped to the lane's words: a tile the host has not
//! validated still cannot make the kernel read outside its buffers' bounds checks.
//!
//! The `check` variant runs the same rANS lanes without assembling or writing values and writes
//! one status word per tile instead: non-zero when a lane started outside `[L, 2^32)`, did not
//! consume exactly its words, or did not end back at `L` (`FORMAT.md` §3). A batch is checked
//! once, on the device that decodes it, before it is used; decodes then run unchecked at full
//! speed on data that cannot change.

use cubecl::prelude::*;

use crate::batch::{desc, KernelScheme, OutputKind, DESC_WORDS, TABLE_CAPACITY, VALUES_CAPACITY};

/// Reads bits `[i·w, i·w + w)` of the little-endian `u32` stream starting at word `base`.
#[cube]
fn packed_field(data: &[u32], base: usize, i: usize, #[comptime] w: usize) -> u32 {
    let bit = i * w;
    let k = base + bit / 32;
    let sh = (bit % 32) as u32;
    let mut v = data[k] >> sh;
    if sh + w as u32 > 32 {
        v |= data[k + 1] << (32 - sh);
    }
    v & comptime!(((1u64 << w) - 1) as u32)
}

/// Half-word `h` of the `u32` stream starting at word `base`.
#[cube]
fn half_word(data: &[u32], base: usize, h: usize) -> u32 {
    (data[base + h / 2] >> ((h % 2) as u32 * 16)) & 0xFFFF
}

/// Byte `b` of the little-endian words starting at `data[base]`.
#[cube]
fn byte_of(data: &[u32], base: usize, b: usize) -> u32 {
    (data[base + b / 4] >> ((b % 4) as u32 * 8)) & 0xFF
}

/// A byte as the two's-complement `i8` it holds.
#[cube]
fn signed_byte(b: u32) -> i32 {
    let mut v = b as i32;
    if b >= 128 {
        v -= 256;
    }
    v
}

/// Byte `i` of the `u32` stream starting at word `base`.
#[cube]
fn byte_at(data: &[u32], base: usize, i: usize) -> u32 {
    (data[base + i / 4] >> ((i % 4) as u32 * 8)) & 0xFF
}

/// The `f16` at byte `i` (even) of the `u32` stream starting at word `base`, as an `f32`.
#[cube]
fn f16_at_byte(data: &[u32], base: usize, i: usize) -> f32 {
    f32::reinterpret(f16_bits_to_f32_bits(half_word(data, base, i / 2)))
}

/// IEEE binary16 bits → binary32 bits, exact; NaNs keep their payload and become quiet, as the
/// `half` crate (and F16C) convert them.
#[cube]
pub(crate) fn f16_bits_to_f32_bits(h: u32) -> u32 {
    let sign = (h >> 15) << 31;
    let exp = (h >> 10) & 0x1F;
    let mant = h & 0x3FF;
    let mut out = sign | ((exp + 112) << 23) | (mant << 13);
    if exp == 0x1F {
        out = sign | 0x7F80_0000 | (mant << 13);
        if mant != 0 {
            out |= 0x0040_0000;
        }
    }
    if exp == 0 {
        // Zero or subnormal: mant · 2^-24 is exact in f32.
        out = sign | u32::reinterpret(f32::cast_from(mant) * 5.960_464_5e-8f32);
    }
    out
}

/// Writes round `k`'s 16-bit values as pairs: each unit stages its value, then the first half of
/// the cube writes one word each (two syncs, so the stage is reused safely next round).
#[cube]
fn write_pairs(
    out: &mut [u32],
    stage: &mut Shared<[u32]>,
    value: u32,
    out_off: usize,
    k: usize,
    count: usize,
    #[comptime] lanes: usize,
) {
    let lane = UNIT_POS as usize;
    stage[lane] = value;
    sync_cube();
    if lane < lanes / 2 && k * lanes + 2 * lane < count {
        out[(out_off + k * lanes) / 2 + lane] = stage[2 * lane] | (stage[2 * lane + 1] << 16);
    }
    sync_cube();
}

/// `raw` tiles: the payload holds the values themselves.
#[cube]
fn copy_raw(
    data: &[u32],
    tiles: &[u32],
    out: &mut [u32],
    #[comptime] scheme: u32,
    #[comptime] native16: bool,
    #[comptime] lanes: usize,
) {
    let d = CUBE_POS * DESC_WORDS;
    let lane = UNIT_POS as usize;
    let payload = tiles[d + desc::PAYLOAD] as usize;
    let count = tiles[d + desc::COUNT] as usize;
    let out_off = tiles[d + desc::OUT] as usize;
    let rounds = (count + lanes - 1) / lanes;
    let mut stage = Shared::<[u32]>::new_slice(comptime!(if native16 { lanes } else { 1 }));
    for k in 0..rounds {
        let i = k * lanes + lane;
        let mut value = 0u32;
        if i < count {
            if comptime!(scheme == KernelScheme::RawF32 as u32) {
                value = data[payload + i];
            } else {
                value = half_word(data, payload, i);
            }
        }
        if comptime!(native16) {
            write_pairs(out, &mut stage, value, out_off, k, count, lanes);
        } else if i < count {
            if comptime!(scheme == KernelScheme::RawBf16 as u32) {
                value <<= 16;
            }
            if comptime!(scheme == KernelScheme::RawF16 as u32) {
                value = f16_bits_to_f32_bits(value);
            }
            out[out_off + i] = value;
        }
    }
}

/// Coded tiles: the rANS lanes of `FORMAT.md` §3, then the scheme's assembly (§4–5).
// `end` is set in one of two comptime branches; CubeCL needs it declared before them.
#[allow(unused_assignments)]
#[cube]
fn decode_coded(
    data: &[u32],
    tiles: &[u32],
    tables: &[u32],
    scales: &[u32],
    out: &mut [u32],
    #[comptime] scheme: u32,
    #[comptime] native16: bool,
    #[comptime] lanes: usize,
    #[comptime] joint: u32,
    #[comptime] lane_table: u32,
    #[comptime] check: bool,
) {
    let d = CUBE_POS * DESC_WORDS;
    let lane = UNIT_POS as usize;
    let payload = tiles[d + desc::PAYLOAD] as usize;
    let count = tiles[d + desc::COUNT] as usize;
    let out_off = tiles[d + desc::OUT] as usize;
    let table_off = tiles[d + desc::TABLE] as usize;
    let prob_bits = tiles[d + desc::PROB_BITS];
    let scales_off = tiles[d + desc::SCALES] as usize;
    let start = tiles[d + desc::START] as usize;
    let cols = tiles[d + desc::COLS] as usize;
    let mut block = tiles[d + desc::BLOCK] as usize;
    let rounds = (count + lanes - 1) / lanes;
    let mut stage = Shared::<[u32]>::new_slice(comptime!(if native16 || check { lanes } else { 1 }));

    // The slot table, shared by every lane of the tile.
    let mut table = Shared::<[u32]>::new_slice(TABLE_CAPACITY);
    let table_len = 1usize << prob_bits as usize;
    let loads = (table_len + lanes - 1) / lanes;
    for k in 0..loads {
        let s = k * lanes + lane;
        if s < table_len {
            table[s] = tables[table_off + s];
        }
    }
    // `lossless`: each symbol's value (exponent << joint | top mantissa bits), after the table.
    let lossless = comptime!(scheme <= KernelScheme::LosslessF32 as u32);
    let mut values = Shared::<[u32]>::new_slice(comptime!(if lossless { VALUES_CAPACITY } else { 1usize }));
    if comptime!(lossless) {
        for k in 0..comptime!((VALUES_CAPACITY + lanes - 1) / lanes) {
            let s = k * lanes + lane;
            if s < VALUES_CAPACITY {
                values[s] = tables[table_off + table_len + s];
            }
        }
    }
    sync_cube();

    // FORMAT.md §4: sign + the `m − joint` low mantissa bits.
    let raw_bits = comptime!(match scheme {
        0 => 8usize - joint as usize,
        1 => 11usize - joint as usize,
        2 => 24usize - joint as usize,
        _ => 0usize,
    });
    // FORMAT.md §2.1: the lane table is `u32 lane_end[N]` (version 1), `u16 count[N]` padded
    // to a word (version 2), or `u16 base` + `u8 extra[N]` padded to a word (version 5); the
    // prefix sums of the counts give the same ends.
    let table_words = comptime!(match lane_table {
        0 => lanes,
        1 => (lanes + 1) / 2,
        _ => (lanes + 5) / 4,
    });
    let raw_base = payload + lanes + table_words;
    let word_base = (raw_base + (count * raw_bits + 31) / 32) * 2;
    let mut x = data[payload + lane];
    let mut pos = 0usize;
    let mut end = 0usize;
    let mut total_words = 0usize;
    if comptime!(lane_table == 1) {
        for j in 0..lanes {
            let c = half_word(data, payload + lanes, j) as usize;
            if j < lane {
                pos += c;
            }
            total_words += c;
        }
        end = pos + half_word(data, payload + lanes, lane) as usize;
    } else if comptime!(lane_table == 2) {
        let base = half_word(data, payload + lanes, 0) as usize;
        for j in 0..lanes {
            let c = base + byte_of(data, payload + lanes, j + 2) as usize;
            if j < lane {
                pos += c;
            }
            total_words += c;
        }
        end = pos + base + byte_of(data, payload + lanes, lane + 2) as usize;
    } else {
        total_words = data[payload + 2 * lanes - 1] as usize;
        end = data[payload + lanes + lane] as usize;
        if lane > 0 {
            pos = data[payload + lanes + lane - 1] as usize;
        }
    }
    let slot_mask = (1u32 << prob_bits) - 1;
    // Super-block schemes pack the blocks per super-block above a 16-bit block length.
    let mut supers = 1usize;
    if comptime!(scheme == KernelScheme::Int8Super as u32 || scheme == KernelScheme::Int4Super as u32) {
        supers = block >> 16;
        block &= 0xFFFF;
    }
    let blocks_per_row = (cols + block - 1) / block;
    let mut bad = 0u32;
    if comptime!(check) {
        if x < 65536u32 || pos > end || end > total_words {
            bad = 1u32;
        }
    }

    for k in 0..rounds {
        let i = k * lanes + lane;
        let mut value = 0u32;
        if i < count {
            // FORMAT.md §3, decoder step.
            let e = table[(x & slot_mask) as usize];
            let f = (e & 0xFFF) + 1;
            let bias = (e >> 12) & 0xFFF;
            x = f * (x >> prob_bits) + bias;
            if x < 65536u32 {
                let mut w = 0u32;
                if pos < end && pos < total_words {
                    w = half_word(data, 0, word_base + pos);
                }
                x = (x << 16) | w;
                pos += 1;
            }
            let sym = e >> 24;

            if comptime!(check) {
                // Status only: nothing is assembled or written.
            } else if comptime!(scheme == KernelScheme::LosslessBf16 as u32) {
                let r = packed_field(data, raw_base, i, raw_bits);
                let low = comptime!(7u32 - joint);
                value = ((r >> low) << 15) | (values[sym as usize] << low) | (r & comptime!((1u32 << (7 - joint)) - 1));
                if comptime!(!native16) {
                    value <<= 16;
                }
            }
            if comptime!(scheme == KernelScheme::LosslessF16 as u32 && !check) {
                let r = packed_field(data, raw_base, i, raw_bits);
                let low = comptime!(10u32 - joint);
                value =
                    ((r >> low) << 15) | (values[sym as usize] << low) | (r & comptime!((1u32 << (10 - joint)) - 1));
                if comptime!(!native16) {
                    value = f16_bits_to_f32_bits(value);
                }
            }
            if comptime!(scheme == KernelScheme::LosslessF32 as u32 && !check) {
                let r = packed_field(data, raw_base, i, raw_bits);
                let low = comptime!(23u32 - joint);
                value =
                    ((r >> low) << 31) | (values[sym as usize] << low) | (r & comptime!((1u32 << (23 - joint)) - 1));
            }
            if comptime!(scheme == KernelScheme::Int8 as u32) {
                let row = (start + i) / cols;
                let code = signed_byte(sym);
                value = u32::reinterpret(f32::cast_from(code) * f32::reinterpret(scales[scales_off + row]));
            }
            if comptime!(scheme == KernelScheme::Int8Blocks as u32) {
                let e = start + i;
                let b = (e / cols) * blocks_per_row + (e % cols) / block;
                let scale = f32::reinterpret(f16_bits_to_f32_bits(half_word(scales, scales_off, b)));
                let code = signed_byte(sym);
                value = u32::reinterpret(f32::cast_from(code) * scale);
            }
            if comptime!(scheme == KernelScheme::Int4Symmetric as u32) {
                let e = start + i;
                let b = (e / cols) * blocks_per_row + (e % cols) / block;
                let scale = f32::reinterpret(f16_bits_to_f32_bits(half_word(scales, scales_off, b)));
                value = u32::reinterpret(f32::cast_from(sym as i32 - 8) * scale);
            }
            if comptime!(scheme == KernelScheme::Int4Asymmetric as u32) {
                let e = start + i;
                let b = (e / cols) * blocks_per_row + (e % cols) / block;
                let scale = f32::reinterpret(f16_bits_to_f32_bits(half_word(scales, scales_off, 2 * b)));
                let min = f32::reinterpret(f16_bits_to_f32_bits(half_word(scales, scales_off, 2 * b + 1)));
                let product = f32::cast_from(sym) * scale;
                value = u32::reinterpret(product + min);
            }
            if comptime!(scheme == KernelScheme::Int8Super as u32) {
                // FORMAT.md §5: record `f16 d, i8 sc[S]`; scale `f32(d) · f32(sc[j])`.
                let e = start + i;
                let b = (e / cols) * blocks_per_row + (e % cols) / block;
                let rec = (b / supers) * (2 + supers);
                let sc = signed_byte(byte_at(scales, scales_off, rec + 2 + b % supers));
                let scale = f16_at_byte(scales, scales_off, rec) * f32::cast_from(sc);
                let code = signed_byte(sym);
                value = u32::reinterpret(f32::cast_from(code) * scale);
            }
            if comptime!(scheme == KernelScheme::Int4Super as u32) {
                // Record `f16 d, f16 dmin, u8 sc[S], u8 m[S]`: scale `f32(d) · f32(sc[j])`,
                // minimum `−(f32(dmin) · f32(m[j]))`.
                let e = start + i;
                let b = (e / cols) * blocks_per_row + (e % cols) / block;
                let rec = (b / supers) * (4 + 2 * supers);
                let j = b % supers;
                let scale =
                    f16_at_byte(scales, scales_off, rec) * f32::cast_from(byte_at(scales, scales_off, rec + 4 + j));
                let m = f16_at_byte(scales, scales_off, rec + 2)
                    * f32::cast_from(byte_at(scales, scales_off, rec + 4 + supers + j));
                let product = f32::cast_from(sym) * scale;
                value = u32::reinterpret(product - m);
            }
            if comptime!(!native16 && !check) {
                out[out_off + i] = value;
            }
        }
        if comptime!(native16 && !check) {
            write_pairs(out, &mut stage, value, out_off, k, count, lanes);
        }
    }
    if comptime!(check) {
        // FORMAT.md §3: every lane consumed exactly its words and ended back at L.
        if x != 65536u32 || pos != end {
            bad = 1u32;
        }
        stage[lane] = bad;
        sync_cube();
        if lane == 0 {
            let mut any = 0u32;
            for j in 0..lanes {
                any |= stage[j];
            }
            out[CUBE_POS] = any;
        }
    }
}

/// Decodes a batch of tiles. `out` receives `f32` bits (one word per element) or, for
/// [`OutputKind::Native16`], pairs of 16-bit values per word; with `check`, one status word per
/// tile (0: the tile decodes exactly) and no values.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub fn decode_tiles_kernel(
    data: &[u32],
    tiles: &[u32],
    tables: &[u32],
    scales: &[u32],
    out: &mut [u32],
    #[comptime] scheme: u32,
    #[comptime] output: u32,
    #[comptime] lanes: usize,
    #[comptime] joint: u32,
    #[comptime] lane_table: u32,
    #[comptime] check: bool,
) {
    let native16 = comptime!(output == OutputKind::Native16 as u32);
    // Spare cubes of a 2-D grid have no tile (uniform per cube, so barriers stay safe).
    if CUBE_POS * DESC_WORDS < tiles.len() {
        if comptime!(scheme >= KernelScheme::RawBf16 as u32 && scheme <= KernelScheme::RawF32 as u32) {
            if comptime!(check) {
                // Raw lengths were checked on the host; nothing to decode.
                if UNIT_POS == 0 {
                    out[CUBE_POS] = 0u32;
                }
            } else {
                copy_raw(data, tiles, out, scheme, native16, lanes);
            }
        } else {
            decode_coded(data, tiles, tables, scales, out, scheme, native16, lanes, joint, lane_table, check);
        }
    }
}

/// What [`launch_decode_tiles`] runs: decode values, or only check each tile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TileLaunch {
    /// Write the decoded values (`out` holds the batch's output words).
    Decode(OutputKind),
    /// Write one status word per tile (`out` holds `num_tiles` words).
    Check,
}

/// Launches [`decode_tiles_kernel()`] over `num_tiles` tiles on `client`.
///
/// # Safety
/// The kernel indexes its buffers with offsets read from the descriptors, so the caller must
/// pass buffers built together by [`crate::batch::DecodeBatch::new`] (which checked every
/// offset and lane table against the payload) and launched with that batch's `num_tiles`,
/// `lanes`, `joint` bits, lane table (`lane_table`, [`ember_codec::tile::LaneTable::code`]) and
/// `scheme`:
/// - each `(handle, len)` pair names a live buffer of at least `len` `u32` words on `client`;
/// - `data`, `tiles`, `tables`, `scales` hold exactly the batch's words;
/// - `out` holds [`crate::batch::DecodeBatch::output_words`] words for `TileLaunch::Decode`
///   (of that output kind), or `num_tiles` words for `TileLaunch::Check`.
#[allow(clippy::too_many_arguments)]
pub unsafe fn launch_decode_tiles(
    client: &cubecl::client::Client,
    num_tiles: usize,
    lanes: usize,
    joint: u32,
    lane_table: u32,
    scheme: KernelScheme,
    launch: TileLaunch,
    data: (cubecl::server::Handle, usize),
    tiles: (cubecl::server::Handle, usize),
    tables: (cubecl::server::Handle, usize),
    scales: (cubecl::server::Handle, usize),
    out: (cubecl::server::Handle, usize),
) {
    if num_tiles == 0 {
        return;
    }
    let (output, check) = match launch {
        TileLaunch::Decode(output) => (output, false),
        TileLaunch::Check => (OutputKind::F32, true),
    };
    // SAFETY: each length is the number of u32 words the handle holds, and the descriptors'
    // offsets lie inside them (the caller's contract above).
    unsafe {
        decode_tiles_kernel::launch(
            client,
            super::cube_grid(num_tiles),
            CubeDim::new_1d(lanes as u32),
            BufferArg::from_raw_parts(data.0, data.1),
            BufferArg::from_raw_parts(tiles.0, tiles.1),
            BufferArg::from_raw_parts(tables.0, tables.1),
            BufferArg::from_raw_parts(scales.0, scales.1),
            BufferArg::from_raw_parts(out.0, out.1),
            scheme as u32,
            output as u32,
            lanes,
            joint,
            lane_table,
            check,
        );
    }
}
