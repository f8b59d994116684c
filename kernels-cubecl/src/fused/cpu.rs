//! The CPU fused kernels: `y = x·Wᵀ` (or `x·W`) for a few activation rows, straight from a
//! weight's fast form or from a dense f32 matrix in any 2-D layout, never materialising the
//! weight.
//!
//! The weight is walked in *segments* of at most [`SEG`] elements of one row: a segment is
//! decoded into a 1 KiB buffer on the stack (it stays in L1), then multiplied into every
//! activation row, so each weight byte is read once per call whatever `m` is. Decoding a segment
//! gives exactly the values of the reference decoder; only the order of the sums differs from
//! decode-then-matmul.
//!
//! Two shapes of product:
//! - *dot* form, when the stored rows are the outputs (Hugging Face `[out, in]` weights, the tied
//!   output head): `y[i][r] = Σ_c x[i][c]·W[r][c]`, threads over row ranges;
//! - *axpy* form, when the stored rows are the inputs (Burn's own `[in, out]` layout):
//!   `y[i][c] = Σ_r x[i][r]·W[r][c]`, threads over column ranges.
//!
//! Vector paths: AVX2 + FMA + F16C, detected at run time, with the portable scalar loop as the
//! reference they are tested against. AVX-512 is not used: on the AMD EPYC machines we build on
//! the batch-1 product is bound by memory and decode shuffles, which 512-bit vectors do not
//! speed up there (the same finding as the rANS decoder's gathers).

use rayon::prelude::*;

use super::form::{FastCodes, FastWeight};
use super::lanes::Lanes;

/// Elements per decoded segment (a multiple of 16, so packed rows stay byte-aligned).
pub const SEG: usize = 256;

/// Weights per parallel task: below this, splitting costs more than it saves.
const TASK_WEIGHTS: usize = 1 << 16;

/// Whether a product over `weights` weights runs on the calling thread: with one thread in the
/// pool, or too little work to share. Handing work to the pool from outside it parks the caller
/// on a futex and wakes it again, some microseconds per product, a batch-1 token makes hundreds.
fn serial(weights: usize) -> bool {
    weights < 2 * TASK_WEIGHTS || rayon::current_num_threads() == 1
}

/// Which instruction set the kernels may use (tests compare them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CpuPath {
    /// The portable scalar loops.
    Scalar,
    /// AVX2 + FMA + F16C where the CPU has them.
    Best,
}

pub(crate) fn simd_ok(path: CpuPath) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        path == CpuPath::Best
            && is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = path;
        false
    }
}

/// A matrix the kernels can read row segments of.
pub trait RowSource: Sync {
    /// Rows.
    fn rows(&self) -> usize;
    /// Columns.
    fn cols(&self) -> usize;
    /// The f32 values `W[row][col0 .. col0 + len]` if they lie contiguously in memory (then no
    /// decode is needed).
    fn contiguous(&self, row: usize, col0: usize, len: usize) -> Option<&[f32]>;
    /// Writes `W[row][col0 .. col0 + out.len()]` into `out`; `col0` is a multiple of 16.
    fn decode(&self, row: usize, col0: usize, out: &mut [f32], simd: bool);
    /// What [`RowSource::dot_row`] wants precomputed from the activation row, once per product
    /// and shared by every row.
    fn prepare(&self, _x: &[f32], _simd: bool) -> Prepared {
        Prepared::default()
    }
    /// `Σ_c W[row][c]·x[c]` computed straight from the codes in registers, where the source has
    /// such a kernel (the batch-1 case); `None` sends the caller through [`RowSource::decode`].
    /// `prep` is what [`RowSource::prepare`] made of `x`.
    fn dot_row(&self, _row: usize, _x: &[f32], _prep: &Prepared, _simd: bool) -> Option<f32> {
        None
    }
    /// Asks the memory system for the stored bytes of rows `rows` (a hint: it reads nothing), so
    /// that they arrive while the kernel is still multiplying the rows before them.
    fn prefetch(&self, _rows: std::ops::Range<usize>) {}
}

/// Hints every cache line of `bytes` into the caches (nothing is read).
#[inline]
fn prefetch_bytes<T>(bytes: &[T]) {
    #[cfg(target_arch = "x86_64")]
    {
        let (p, n) = (bytes.as_ptr() as *const i8, std::mem::size_of_val(bytes));
        for off in (0..n).step_by(64) {
            // SAFETY: `off < n`, so the address lies inside `bytes`; a prefetch never faults
            // and reads nothing into the program.
            unsafe { std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.add(off)) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = bytes;
}

/// Per-product precomputation of the batch-1 kernels: work that depends on the activation row
/// only, done once instead of once per weight row.
#[derive(Clone, Debug, Default)]
pub struct Prepared {
    /// For packed 4-bit rows: `x` over the row's whole blocks with every aligned group of 16
    /// reordered as a nibble split of 8 packed bytes yields it (the 8 even elements, then the 8
    /// odd ones), so the kernel needs no shuffle to put codes back in element order.
    nibble_x: Vec<f32>,
    /// For asymmetric 4-bit rows: `Σ x` over each whole block (the minimums' share of a row's
    /// dot product is then `Σ_b min_b · block_sums[b]`).
    block_sums: Vec<f32>,
}

impl Prepared {
    /// `x` in nibble order and its block sums, over the `cols / block` whole blocks.
    fn for_int4(x: &[f32], block: usize, sums: bool) -> Self {
        let whole = x.len() / block * block;
        let mut nibble_x = Vec::with_capacity(whole);
        for group in x[..whole].chunks_exact(16) {
            nibble_x.extend(group.iter().step_by(2));
            nibble_x.extend(group.iter().skip(1).step_by(2));
        }
        let block_sums =
            if sums { x[..whole].chunks_exact(block).map(|b| b.iter().sum()).collect() } else { Vec::new() };
        Self { nibble_x, block_sums }
    }
}

/// A dense f32 matrix inside a larger buffer: element `(r, c)` at `offset + r·row_stride + c·col_stride`.
#[derive(Clone, Copy, Debug)]
pub struct StridedF32<'a> {
    /// The buffer.
    pub data: &'a [f32],
    /// Rows.
    pub rows: usize,
    /// Columns.
    pub cols: usize,
    /// First element.
    pub offset: usize,
    /// Elements between rows.
    pub row_stride: usize,
    /// Elements between columns.
    pub col_stride: usize,
}

impl StridedF32<'_> {
    /// Whether every element it names lies inside `data`.
    pub fn in_bounds(&self) -> bool {
        if self.rows == 0 || self.cols == 0 {
            return true;
        }
        let last = (self.rows - 1)
            .checked_mul(self.row_stride)
            .and_then(|a| (self.cols - 1).checked_mul(self.col_stride).and_then(|b| a.checked_add(b)))
            .and_then(|a| a.checked_add(self.offset));
        last.is_some_and(|l| l < self.data.len())
    }
}

impl RowSource for StridedF32<'_> {
    fn rows(&self) -> usize {
        self.rows
    }
    fn cols(&self) -> usize {
        self.cols
    }
    fn contiguous(&self, row: usize, col0: usize, len: usize) -> Option<&[f32]> {
        let start = self.offset + row * self.row_stride + col0 * self.col_stride;
        (self.col_stride == 1 || len <= 1).then(|| &self.data[start..start + len])
    }
    fn decode(&self, row: usize, col0: usize, out: &mut [f32], _simd: bool) {
        let start = self.offset + row * self.row_stride + col0 * self.col_stride;
        for (k, o) in out.iter_mut().enumerate() {
            *o = self.data[start + k * self.col_stride];
        }
    }
}

impl RowSource for FastWeight {
    fn rows(&self) -> usize {
        self.rows
    }
    fn cols(&self) -> usize {
        self.cols
    }
    fn contiguous(&self, row: usize, col0: usize, len: usize) -> Option<&[f32]> {
        match &self.codes {
            FastCodes::F32(v) => Some(&v[row * self.stride + col0..row * self.stride + col0 + len]),
            _ => None,
        }
    }
    fn decode(&self, row: usize, col0: usize, out: &mut [f32], simd: bool) {
        #[cfg(target_arch = "x86_64")]
        if simd {
            // SAFETY: `simd` is only true when `simd_ok` found AVX2, FMA and F16C.
            unsafe { x86::decode(self, row, col0, out) };
            return;
        }
        let _ = simd;
        decode_scalar(self, row, col0, out);
    }
    fn prepare(&self, x: &[f32], simd: bool) -> Prepared {
        match &self.codes {
            FastCodes::Int4 { block, mins, .. } if simd && block.is_multiple_of(16) => {
                Prepared::for_int4(&x[..self.cols.min(x.len())], *block, mins.is_some())
            }
            _ => Prepared::default(),
        }
    }
    fn dot_row(&self, row: usize, x: &[f32], prep: &Prepared, simd: bool) -> Option<f32> {
        #[cfg(target_arch = "x86_64")]
        if simd {
            // SAFETY: `simd` is only true when `simd_ok` found AVX2, FMA and F16C.
            return unsafe { x86::dot_row(self, row, x, prep) };
        }
        let _ = (row, x, prep, simd);
        None
    }
    fn prefetch(&self, rows: std::ops::Range<usize>) {
        let rows = rows.start.min(self.rows)..rows.end.min(self.rows);
        let (a, b) = (rows.start * self.stride, rows.end * self.stride);
        match &self.codes {
            FastCodes::F32(v) => prefetch_bytes(v.get(a..b).unwrap_or_default()),
            FastCodes::Bf16(v) | FastCodes::F16(v) => prefetch_bytes(v.get(a..b).unwrap_or_default()),
            FastCodes::Bf16Rank { ranks, low, .. } => {
                prefetch_bytes(ranks.get(a / 2..b / 2).unwrap_or_default());
                prefetch_bytes(low.get(a..b).unwrap_or_default());
            }
            FastCodes::Int8 { codes, .. } => prefetch_bytes(codes.get(a..b).unwrap_or_default()),
            FastCodes::Int4 { packed, .. } => prefetch_bytes(packed.get(a / 2..b / 2).unwrap_or_default()),
        }
    }
}

/// Decodes `W[row][col0 .. col0 + out.len()]` of a fast-form weight (the reference path).
pub fn decode_segment(w: &FastWeight, row: usize, col0: usize, out: &mut [f32]) {
    w.decode(row, col0, out, simd_ok(CpuPath::Best));
}

/// The portable decode: the specification the vector path reproduces.
fn decode_scalar(w: &FastWeight, row: usize, col0: usize, out: &mut [f32]) {
    let base = row * w.stride + col0;
    match &w.codes {
        FastCodes::F32(v) => out.copy_from_slice(&v[base..base + out.len()]),
        FastCodes::Bf16(v) => {
            out.iter_mut().zip(&v[base..]).for_each(|(o, &b)| *o = f32::from_bits((b as u32) << 16));
        }
        FastCodes::F16(v) => {
            out.iter_mut().zip(&v[base..]).for_each(|(o, &b)| *o = half::f16::from_bits(b).to_f32());
        }
        FastCodes::Bf16Rank { exponents, ranks, low, .. } => {
            for (k, o) in out.iter_mut().enumerate() {
                let i = base + k;
                let rank = (ranks[i / 2] >> (4 * (i % 2))) & 0xf;
                let lo = low[i] as u32;
                let bits = ((lo & 0x80) << 8) | ((exponents[rank as usize] as u32) << 7) | (lo & 0x7f);
                *o = f32::from_bits(bits << 16);
            }
            patch_escapes(w, row, col0, out);
        }
        FastCodes::Int8 { codes, block, scales } => {
            let first = row * w.cols.div_ceil(*block);
            for (k, (o, &c)) in out.iter_mut().zip(&codes[base..]).enumerate() {
                *o = c as f32 * scales[first + (col0 + k) / block];
            }
        }
        FastCodes::Int4 { packed, block, scales, mins } => {
            let first = row * w.cols.div_ceil(*block);
            for (k, o) in out.iter_mut().enumerate() {
                let i = base + k;
                let code = (packed[i / 2] >> (4 * (i % 2))) & 0xf;
                let b = first + (col0 + k) / block;
                *o = match mins {
                    None => (code as i32 - 8) as f32 * scales[b],
                    Some(m) => {
                        let product = code as f32 * scales[b];
                        product + m[b]
                    }
                };
            }
        }
    }
}

/// `Σ W[row][c] · x[c]` over columns `k..cols` through the reference decoder, a segment at a
/// time: the tail that a vector loop leaves.
fn reference_dot(w: &FastWeight, row: usize, x: &[f32], k: usize, cols: usize) -> f32 {
    let mut seg = [0f32; SEG];
    (k..cols)
        .step_by(SEG)
        .map(|c0| {
            let n = (cols - c0).min(SEG);
            decode_scalar(w, row, c0, &mut seg[..n]);
            seg[..n].iter().zip(&x[c0..c0 + n]).map(|(a, b)| a * b).sum::<f32>()
        })
        .sum()
}

/// Writes the true values of a rank-form row's escapes that fall in the segment.
fn patch_escapes(w: &FastWeight, row: usize, col0: usize, out: &mut [f32]) {
    if let FastCodes::Bf16Rank { escapes, row_escapes, .. } = &w.codes {
        let list = &escapes[row_escapes[row] as usize..row_escapes[row + 1] as usize];
        let from = list.partition_point(|&(c, _)| (c as usize) < col0);
        for &(c, bits) in &list[from..] {
            let k = c as usize - col0;
            if k >= out.len() {
                break;
            }
            out[k] = f32::from_bits((bits as u32) << 16);
        }
    }
}

/// `W[r][c .. c + len]`: borrowed where it lies contiguously, else decoded into `seg`.
#[inline]
fn segment<'a>(w: &'a dyn RowSource, r: usize, c: usize, len: usize, seg: &'a mut [f32; SEG], simd: bool) -> &'a [f32] {
    match w.contiguous(r, c, len) {
        Some(v) => v,
        None => {
            w.decode(r, c, &mut seg[..len], simd);
            &seg[..len]
        }
    }
}

/// `W[r][c .. c + out.len()]` written into `out` (copied where it lies contiguously, else decoded
/// with the vector path): the batched kernels' decode buffers.
#[inline]
pub(crate) fn segment_into(w: &dyn RowSource, r: usize, c: usize, out: &mut [f32]) {
    match w.contiguous(r, c, out.len()) {
        Some(v) => out.copy_from_slice(v),
        None => w.decode(r, c, out, true),
    }
}

/// `Σ a[k]·b[k]`.
#[inline]
fn dot(a: &[f32], b: &[f32], simd: bool) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if simd {
        // SAFETY: `simd` is only true when `simd_ok` found AVX2 and FMA.
        return unsafe { x86::dot(a, b) };
    }
    let _ = simd;
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// `y[i] += Σ_k values[k]·x[i][c + k]` for every row `i` of the `y.len() × cols` activations
/// `x`: with AVX2, eight (then four, two, one) rows at a time, so each decoded weight is loaded
/// once per group of rows instead of once per row. For two rows or more every sum runs in the
/// order of [`x86::tile`] (one eight-lane accumulator per row and segment), so a row's result
/// does not depend on its place in the batch, nor on which kernel computed it.
#[inline]
pub(crate) fn dots_into(y: &mut [f32], values: &[f32], x: &[f32], cols: usize, c: usize, simd: bool) {
    let (m, len) = (y.len(), values.len());
    assert!(m == 0 || x.len() >= (m - 1) * cols + c + len, "activations are m × cols");
    let mut i = 0;
    #[cfg(target_arch = "x86_64")]
    if simd && m >= 2 {
        while i < m {
            let rest = &x[i * cols + c..];
            // SAFETY: `simd` is only true when `simd_ok` found AVX2 and FMA; rows `i..i + n`
            // of `x` hold `c + len` activations each (asserted above).
            let n = unsafe {
                match m - i {
                    8.. => add_to(&mut y[i..], x86::dots::<8, 1>(values, rest, cols)),
                    4.. => add_to(&mut y[i..], x86::dots::<4, 1>(values, rest, cols)),
                    2.. => add_to(&mut y[i..], x86::dots::<2, 1>(values, rest, cols)),
                    _ => add_to(&mut y[i..], x86::dots::<1, 1>(values, rest, cols)),
                }
            };
            i += n;
        }
    }
    for (k, yi) in y.iter_mut().enumerate().skip(i) {
        *yi += dot(values, &x[k * cols + c..k * cols + c + len], simd);
    }
}

/// `y[i] += d[i]`; returns `N`.
#[inline(always)]
fn add_to<const N: usize>(y: &mut [f32], d: [f32; N]) -> usize {
    y[..N].iter_mut().zip(d).for_each(|(y, d)| *y += d);
    N
}

/// Weight rows the batched dot-form kernel decodes and multiplies together.
const ROW_BLOCK: usize = 4;

/// Rows `r0 .. r0 + out.len() / m` of `x·Wᵀ` for `2 ≤ m < LANE_MIN` activation rows, with AVX2, into
/// `out` (each weight row's `m` outputs side by side). Four weight rows at a time are decoded
/// into a buffer, then multiplied into three activation rows at a time ([`x86::tile`]): each
/// activation vector loaded serves four rows and each weight vector three, where one weight row
/// against the whole batch ([`dots_into`]) reloads every activation for every row — the bound
/// of batched decoding, which reads each weight once per step for all its sequences. The sums
/// run in `dots_into`'s order, segment by segment, so both give the same bits.
#[cfg(target_arch = "x86_64")]
fn blocked_rows(w: &dyn RowSource, r0: usize, out: &mut [f32], x: &[f32], m: usize) {
    super::scratch::with_zeroed(ROW_BLOCK * w.cols(), |buf| blocked_rows_in(w, r0, out, x, m, buf));
}

/// [`blocked_rows`] with its decode buffer (`ROW_BLOCK · cols` values).
#[cfg(target_arch = "x86_64")]
fn blocked_rows_in(w: &dyn RowSource, r0: usize, out: &mut [f32], x: &[f32], m: usize, buf: &mut [f32]) {
    let cols = w.cols();
    let rows = out.len() / m;
    let mut dr = 0;
    while dr < rows {
        let rb = (rows - dr).min(ROW_BLOCK);
        for (j, dst) in buf.chunks_mut(cols.max(1)).take(rb).enumerate() {
            let mut c = 0;
            while c < cols {
                let len = (cols - c).min(SEG);
                segment_into(w, r0 + dr + j, c, &mut dst[c..c + len]);
                c += len;
            }
        }
        // The next block's codes load while this one is multiplied: decoding streams the
        // codes from memory, the tiles are arithmetic, and otherwise the two would alternate.
        w.prefetch(r0 + dr + rb..r0 + (dr + rb + ROW_BLOCK).min(rows));
        let y = &mut out[dr * m..(dr + rb) * m];
        let mut i = 0;
        while i < m {
            // Groups of three; a last four as two and two.
            let xb = match m - i {
                4 => 2,
                n @ 1..=3 => n,
                _ => 3,
            };
            let mut c = 0;
            while c < cols {
                let len = (cols - c).min(SEG);
                // SAFETY: `blocked_rows` runs only when `simd_ok` found AVX2 and FMA; `buf`
                // holds `rb` rows of `cols` values and `x` rows `i..i + xb` of `cols` each
                // (`matmul_wt` checked `x.len() == m·cols`), so every read of columns
                // `c..c + len` stays inside them.
                unsafe {
                    x86::tile_into(rb, xb, buf.as_ptr().add(c), x.as_ptr().add(i * cols + c), cols, len, y, m, i)
                };
                c += len;
            }
            i += xb;
        }
        dr += rb;
    }
}

/// `y[k] += s·a[k]`.
#[inline]
pub(crate) fn axpy(y: &mut [f32], s: f32, a: &[f32], simd: bool) {
    #[cfg(target_arch = "x86_64")]
    if simd {
        // SAFETY: as in `dot`.
        unsafe { x86::axpy(y, s, a) };
        return;
    }
    let _ = simd;
    y.iter_mut().zip(a).for_each(|(y, a)| *y += s * a);
}

/// `y = x·Wᵀ (+ bias)` with `W` the `rows × cols` source (dot form): `x` is `m × cols`
/// row-major, the result `m × rows`.
///
/// # Panics
/// If `x` or `bias` have the wrong length (the callers derive them from the same shapes).
pub fn matmul_wt(w: &dyn RowSource, x: &[f32], m: usize, bias: Option<&[f32]>, path: CpuPath) -> Vec<f32> {
    let (rows, cols) = (w.rows(), w.cols());
    assert_eq!(x.len(), m * cols, "activations are m × cols");
    let simd = simd_ok(path);
    // The in-register batch-1 kernels regroup sums by block (int4 with minimums sums `x`
    // apart), which would turn `w·∞` into `0·∞`: non-finite activations take the segment path.
    let batch1 = m == 1 && x.iter().all(|v| v.is_finite());
    let prep = if batch1 { w.prepare(x, simd) } else { Prepared::default() };
    let chunk = (TASK_WEIGHTS / cols.max(1)).clamp(1, rows.max(1));
    // Outputs computed transposed (`rows × m`) so that each task owns a contiguous slice.
    #[cfg(target_arch = "x86_64")]
    let blocked = simd && !batch1 && m >= 2;
    // Sixteen rows and more: in lanes (`super::lanes`), each task's sums `width` per weight row.
    let lanes = super::lanes::use_lanes(m, simd).then(|| Lanes::of(x, m, cols));
    let width = lanes.as_ref().map_or(m, |l| l.width);
    let task = |(t, out): (usize, &mut [f32])| {
        let mut seg = [0f32; SEG];
        let r0 = t * chunk;
        if let Some(lanes) = &lanes {
            super::lanes::rows_of_source(w, r0, out, lanes);
            return;
        }
        #[cfg(target_arch = "x86_64")]
        if blocked {
            blocked_rows(w, r0, out, x, m);
            return;
        }
        for (dr, y) in out.chunks_mut(m.max(1)).enumerate() {
            let r = r0 + dr;
            if batch1 {
                if let Some(v) = w.dot_row(r, x, &prep, simd) {
                    y[0] = v;
                    continue;
                }
            }
            let mut c = 0;
            while c < cols {
                let len = (cols - c).min(SEG);
                let values = segment(w, r, c, len, &mut seg, simd);
                dots_into(y, values, x, cols, c, simd);
                c += len;
            }
        }
    };
    let y = super::scratch::with_zeroed(rows * width, |yt| {
        if serial(rows * cols) {
            yt.chunks_mut(chunk * width.max(1)).enumerate().for_each(task);
        } else {
            yt.par_chunks_mut(chunk * width.max(1)).enumerate().for_each(task);
        }
        transposed_plus_bias(yt, m, width, rows, bias)
    });
    if let Some(l) = lanes {
        l.recycle();
    }
    y
}

/// `y[i·rows + r] = yt[r·width + i] + bias[r]` for `i < m`: the `m × rows` result of a product
/// summed as `rows × width`. Collected, not zeroed and then written: every value is written once.
fn transposed_plus_bias(yt: &[f32], m: usize, width: usize, rows: usize, bias: Option<&[f32]>) -> Vec<f32> {
    let mut y = Vec::with_capacity(m * rows);
    for i in 0..m {
        match bias {
            Some(b) => y.extend((0..rows).map(|r| yt[r * width + i] + b[r])),
            None => y.extend((0..rows).map(|r| yt[r * width + i] + 0.0)),
        }
    }
    y
}

/// `y = x·W (+ bias)` with `W` the `rows × cols` source (axpy form): `x` is `m × rows`
/// row-major, the result `m × cols`.
///
/// # Panics
/// As [`matmul_wt`].
pub fn matmul_w(w: &dyn RowSource, x: &[f32], m: usize, bias: Option<&[f32]>, path: CpuPath) -> Vec<f32> {
    let (rows, cols) = (w.rows(), w.cols());
    assert_eq!(x.len(), m * rows, "activations are m × rows");
    let simd = simd_ok(path);
    // Column ranges: multiples of 16 elements wide, so packed rows start on a byte.
    let width = (TASK_WEIGHTS / rows.max(1)).next_multiple_of(16).clamp(16, cols.next_multiple_of(16).max(16));
    let task = |t: usize| {
        let c0 = t * width;
        let c1 = (c0 + width).min(cols);
        let mut acc = super::scratch::take_zeroed(m * (c1 - c0));
        let mut seg = [0f32; SEG];
        for r in 0..rows {
            let mut c = c0;
            while c < c1 {
                let len = (c1 - c).min(SEG);
                let values = segment(w, r, c, len, &mut seg, simd);
                for i in 0..m {
                    let y = &mut acc[i * (c1 - c0) + (c - c0)..i * (c1 - c0) + (c - c0) + len];
                    axpy(y, x[i * rows + r], values, simd);
                }
                c += len;
            }
        }
        (c0, acc)
    };
    let tasks = 0..cols.div_ceil(width);
    let parts: Vec<(usize, Vec<f32>)> =
        if serial(rows * cols) { tasks.map(task).collect() } else { tasks.into_par_iter().map(task).collect() };
    // The parts are in column order: row `i` of `y` is row `i` of each part in turn, so `y` is
    // collected (every value written once) rather than zeroed and then written.
    let mut y = Vec::with_capacity(m * cols);
    for i in 0..m {
        for (_, acc) in &parts {
            let w = acc.len() / m.max(1);
            y.extend_from_slice(&acc[i * w..(i + 1) * w]);
        }
    }
    parts.into_iter().for_each(|(_, acc)| super::scratch::recycle(acc));
    if let Some(b) = bias {
        for row in y.chunks_mut(cols.max(1)) {
            row.iter_mut().zip(b).for_each(|(y, b)| *y += b);
        }
    }
    y
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! AVX2 + FMA + F16C: eight (sixteen for packed nibbles) weights per step.
    use std::arch::x86_64::*;

    use super::super::form::{FastCodes, FastWeight};
    use super::Prepared;

    /// # Safety
    /// AVX2 and FMA must be available.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
        // SAFETY: AVX2 and FMA are available (the caller's contract); loads read `a[i..i + 8]`/`b[i..i + 8]` only for `i + 8 ≤ len`, the tail is scalar.
        unsafe {
            let n = a.len().min(b.len());
            let (pa, pb) = (a.as_ptr(), b.as_ptr());
            let mut acc = [_mm256_setzero_ps(); 4];
            let mut k = 0;
            while k + 32 <= n {
                for (j, acc) in acc.iter_mut().enumerate() {
                    *acc =
                        _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(k + 8 * j)), _mm256_loadu_ps(pb.add(k + 8 * j)), *acc);
                }
                k += 32;
            }
            while k + 8 <= n {
                acc[0] = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(k)), _mm256_loadu_ps(pb.add(k)), acc[0]);
                k += 8;
            }
            let s = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
            let h = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps::<1>(s));
            let h = _mm_add_ps(h, _mm_movehl_ps(h, h));
            let h = _mm_add_ss(h, _mm_shuffle_ps::<1>(h, h));
            let mut total = _mm_cvtss_f32(h);
            while k < n {
                total += a[k] * b[k];
                k += 1;
            }
            total
        }
    }

    /// `[Σ_k a[k]·x[r·stride + k] for r in 0..N]`: `N` rows of activations against one row
    /// of weights, each weight vector loaded once for all `N` rows, `U` accumulators per row.
    ///
    /// # Safety
    /// AVX2 and FMA must be available, and `x` must hold `(N − 1)·stride + a.len()` values.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dots<const N: usize, const U: usize>(a: &[f32], x: &[f32], stride: usize) -> [f32; N] {
        // SAFETY: AVX2 and FMA are available and `x` holds every row's `a.len()` values (the caller's contract); vector loads read `a[k..k + 8]` and `x[r·stride + k..][..8]` only for `k + 8 ≤ a.len()`, the tail is scalar.
        unsafe {
            let n = a.len();
            let (pa, px) = (a.as_ptr(), x.as_ptr());
            let mut acc = [[_mm256_setzero_ps(); U]; N];
            let mut k = 0;
            while k + 8 * U <= n {
                for u in 0..U {
                    let v = _mm256_loadu_ps(pa.add(k + 8 * u));
                    for (r, acc) in acc.iter_mut().enumerate() {
                        acc[u] = _mm256_fmadd_ps(v, _mm256_loadu_ps(px.add(r * stride + k + 8 * u)), acc[u]);
                    }
                }
                k += 8 * U;
            }
            while k + 8 <= n {
                let v = _mm256_loadu_ps(pa.add(k));
                for (r, acc) in acc.iter_mut().enumerate() {
                    acc[0] = _mm256_fmadd_ps(v, _mm256_loadu_ps(px.add(r * stride + k)), acc[0]);
                }
                k += 8;
            }
            let mut out = [0f32; N];
            for (r, (o, acc)) in out.iter_mut().zip(&acc).enumerate() {
                let mut s = acc[0];
                for a in &acc[1..] {
                    s = _mm256_add_ps(s, *a);
                }
                *o = fold(s);
                for j in k..n {
                    *o += a[j] * x[r * stride + j];
                }
            }
            out
        }
    }

    /// The eight lanes of `s` summed: halves, then pairs, then the last two ([`dots`] and
    /// [`tile`] fold every accumulator so).
    ///
    /// # Safety
    /// AVX must be available (every caller enables AVX2).
    #[inline(always)]
    unsafe fn fold(s: __m256) -> f32 {
        // SAFETY: only register arithmetic; AVX is enabled in every caller.
        unsafe {
            let h = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps::<1>(s));
            let h = _mm_add_ps(h, _mm_movehl_ps(h, h));
            _mm_cvtss_f32(_mm_add_ss(h, _mm_shuffle_ps::<1>(h, h)))
        }
    }

    /// `t[j][i] = Σ_{k < n} w[j·stride + k]·x[i·stride + k]` for `R` weight rows and `X`
    /// activation rows: each activation vector is loaded once for the `R` rows and each weight
    /// vector once for the `X` rows (`R·X` accumulators, at most twelve, so all stay in the
    /// sixteen vector registers). Every sum runs as in [`dots`] with one accumulator: eight
    /// lanes, folded, then the scalar tail.
    ///
    /// # Safety
    /// AVX2 and FMA must be available; `w` and `x` point at `R` and `X` rows of `n` readable
    /// values, `stride` apart.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn tile<const R: usize, const X: usize>(
        w: *const f32,
        x: *const f32,
        stride: usize,
        n: usize,
    ) -> [[f32; X]; R] {
        // SAFETY: loads read `w[j·stride + k..][..8]` and `x[i·stride + k..][..8]` for `k + 8 ≤ n`, the tail reads single values below `n` (the caller's contract).
        unsafe {
            let mut acc = [[_mm256_setzero_ps(); X]; R];
            let mut k = 0;
            while k + 8 <= n {
                let mut xv = [_mm256_setzero_ps(); X];
                for (i, v) in xv.iter_mut().enumerate() {
                    *v = _mm256_loadu_ps(x.add(i * stride + k));
                }
                for (j, row) in acc.iter_mut().enumerate() {
                    let wv = _mm256_loadu_ps(w.add(j * stride + k));
                    for (a, v) in row.iter_mut().zip(&xv) {
                        *a = _mm256_fmadd_ps(wv, *v, *a);
                    }
                }
                k += 8;
            }
            let mut out = [[0f32; X]; R];
            for (j, (o, acc)) in out.iter_mut().zip(&acc).enumerate() {
                for (i, (o, acc)) in o.iter_mut().zip(acc).enumerate() {
                    *o = fold(*acc);
                    for t in k..n {
                        *o += *w.add(j * stride + t) * *x.add(i * stride + t);
                    }
                }
            }
            out
        }
    }

    /// [`tile`] for `rb ≤ 4` weight rows and `xb ≤ 3` activation rows (from row `i` of the
    /// batch), added into `y` (each weight row's `m` outputs side by side).
    ///
    /// # Safety
    /// As [`tile`], for `rb` and `xb` rows; `y` holds `rb·m` values and `i + xb ≤ m`.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    pub(super) unsafe fn tile_into(
        rb: usize,
        xb: usize,
        w: *const f32,
        x: *const f32,
        stride: usize,
        n: usize,
        y: &mut [f32],
        m: usize,
        i: usize,
    ) {
        fn add<const R: usize, const X: usize>(t: [[f32; X]; R], y: &mut [f32], m: usize, i: usize) {
            for (j, t) in t.iter().enumerate() {
                y[j * m + i..j * m + i + X].iter_mut().zip(t).for_each(|(y, t)| *y += t);
            }
        }
        // SAFETY: the caller's contract, passed on.
        unsafe {
            match (rb, xb) {
                (4, 3) => add(tile::<4, 3>(w, x, stride, n), y, m, i),
                (4, 2) => add(tile::<4, 2>(w, x, stride, n), y, m, i),
                (4, _) => add(tile::<4, 1>(w, x, stride, n), y, m, i),
                (3, 3) => add(tile::<3, 3>(w, x, stride, n), y, m, i),
                (3, 2) => add(tile::<3, 2>(w, x, stride, n), y, m, i),
                (3, _) => add(tile::<3, 1>(w, x, stride, n), y, m, i),
                (2, 3) => add(tile::<2, 3>(w, x, stride, n), y, m, i),
                (2, 2) => add(tile::<2, 2>(w, x, stride, n), y, m, i),
                (2, _) => add(tile::<2, 1>(w, x, stride, n), y, m, i),
                (_, 3) => add(tile::<1, 3>(w, x, stride, n), y, m, i),
                (_, 2) => add(tile::<1, 2>(w, x, stride, n), y, m, i),
                _ => add(tile::<1, 1>(w, x, stride, n), y, m, i),
            }
        }
    }

    /// # Safety
    /// AVX2 and FMA must be available.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn axpy(y: &mut [f32], s: f32, a: &[f32]) {
        // SAFETY: AVX2 and FMA are available (the caller's contract); loads and stores touch `y[i..i + 8]`/`a[i..i + 8]` only for `i + 8 ≤ len`, the tail is scalar.
        unsafe {
            let n = y.len().min(a.len());
            let (py, pa) = (y.as_mut_ptr(), a.as_ptr());
            let sv = _mm256_set1_ps(s);
            let mut k = 0;
            while k + 8 <= n {
                _mm256_storeu_ps(
                    py.add(k),
                    _mm256_fmadd_ps(sv, _mm256_loadu_ps(pa.add(k)), _mm256_loadu_ps(py.add(k))),
                );
                k += 8;
            }
            while k < n {
                y[k] += s * a[k];
                k += 1;
            }
        }
    }

    /// Horizontal sum of four accumulators.
    ///
    /// # Safety
    /// AVX must be available (every caller enables AVX2).
    #[inline(always)]
    unsafe fn hsum(acc: [__m256; 4]) -> f32 {
        // SAFETY: only register arithmetic; AVX is enabled in every caller.
        unsafe {
            let s = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
            let h = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps::<1>(s));
            let h = _mm_add_ps(h, _mm_movehl_ps(h, h));
            _mm_cvtss_f32(_mm_add_ss(h, _mm_shuffle_ps::<1>(h, h)))
        }
    }

    /// `Σ_c W[row][c]·x[c]` for int8 and int4 rows, decoding each group of eight codes in
    /// registers (the value of every weight is the reference's: `code·scale`, `(code − 8)·scale`
    /// or `code·scale + min`); `None` for the other forms.
    ///
    /// # Safety
    /// AVX2, FMA and F16C must be available; `x` holds the row's `cols` activations.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn dot_row(w: &FastWeight, row: usize, x: &[f32], prep: &Prepared) -> Option<f32> {
        // SAFETY: AVX2, FMA and F16C are available and `x` holds the row's activations (the caller's contract); every load reads inside the row's codes, scales and `x`, whose lengths the form fixes.
        unsafe {
            let cols = w.cols.min(x.len());
            let base = row * w.stride;
            let px = x.as_ptr();
            let mut acc = [_mm256_setzero_ps(); 4];
            let mut k = 0;
            let tail: f32;
            match &w.codes {
                FastCodes::Int8 { codes, block, scales } if *block < w.cols => {
                    // Per block of a multiple of 8: Σ code·x, then one multiply by its scale; two
                    // blocks in flight, so neither sum waits on the other.
                    if block % 8 != 0 {
                        return None;
                    }
                    let whole = cols / block;
                    let s = &scales[row * w.cols.div_ceil(*block)..][..whole];
                    (acc[0], acc[2]) = scaled_blocks(&Int8Row { p: codes.as_ptr().add(base), x: px }, *block, s);
                    k = whole * block;
                    tail = super::reference_dot(w, row, x, k, cols);
                }
                FastCodes::Int8 { codes, scales, .. } => {
                    // The row's scale is common to every term: applied once, at the end.
                    let p = codes.as_ptr().add(base);
                    while k + 32 <= cols {
                        for (j, a) in acc.iter_mut().enumerate() {
                            let c = _mm256_cvtepi8_epi32(_mm_loadl_epi64(p.add(k + 8 * j) as *const __m128i));
                            *a = _mm256_fmadd_ps(_mm256_cvtepi32_ps(c), _mm256_loadu_ps(px.add(k + 8 * j)), *a);
                        }
                        k += 32;
                    }
                    while k + 8 <= cols {
                        let c = _mm256_cvtepi8_epi32(_mm_loadl_epi64(p.add(k) as *const __m128i));
                        acc[0] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(c), _mm256_loadu_ps(px.add(k)), acc[0]);
                        k += 8;
                    }
                    let rest: f32 = (k..cols).map(|c| codes[base + c] as f32 * x[c]).sum();
                    return Some((hsum(acc) + rest) * scales[row]);
                }
                FastCodes::Int4 { packed, block, scales, mins }
                    if block % 16 == 0 && prep.nibble_x.len() == cols / block * block =>
                {
                    // Per block: Σ code·x over the codes as a nibble split leaves them, against
                    // `x` prepared in that order, then one multiply by the block's scale.
                    // Symmetric codes are re-centred (−8) as bytes; for asymmetric ones the
                    // minimums' share is Σ min·(Σ x of the block), the sums prepared once.
                    let whole = cols / block;
                    let first = row * w.cols.div_ceil(*block);
                    let s = &scales[first..][..whole];
                    let (p, nx) = (packed.as_ptr().add(base / 2), prep.nibble_x.as_ptr());
                    let (d, last) = if mins.is_none() {
                        scaled_blocks(&Int4Row::<true> { p, x: nx }, *block, s)
                    } else {
                        scaled_blocks(&Int4Row::<false> { p, x: nx }, *block, s)
                    };
                    acc[0] = d;
                    acc[2] = last;
                    let min_share = match mins {
                        Some(m) if prep.block_sums.len() == whole => dot(&m[first..][..whole], &prep.block_sums),
                        Some(_) => return None,
                        None => 0.0,
                    };
                    k = whole * block;
                    tail = min_share + super::reference_dot(w, row, x, k, cols);
                }
                FastCodes::Bf16Rank { exponents, ranks, low, escapes, row_escapes } => {
                    // Escapes read +0.0 here and are added from their list; an escape meeting a
                    // non-finite activation takes the segment path, so 0·∞ never stands in for w·∞.
                    let list = &escapes[row_escapes[row] as usize..row_escapes[row + 1] as usize];
                    if list.iter().any(|&(c, _)| !x[c as usize].is_finite()) {
                        return None;
                    }
                    let table = _mm_loadu_si128(exponents.as_ptr() as *const __m128i);
                    while k + 16 <= cols {
                        let (w0, w1) = rank16(table, ranks, low, base + k);
                        acc[0] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(px.add(k)), acc[0]);
                        acc[1] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(px.add(k + 8)), acc[1]);
                        k += 16;
                    }
                    let mut seg = [0f32; 16];
                    let n = cols - k;
                    super::decode_scalar(w, row, k, &mut seg[..n]);
                    // `decode_scalar` patched the tail's escapes; the others are added here.
                    let body: f32 = list
                        .iter()
                        .filter(|&&(c, _)| (c as usize) < k)
                        .map(|&(c, b)| f32::from_bits((b as u32) << 16) * x[c as usize])
                        .sum();
                    tail = body + seg[..n].iter().zip(&x[k..cols]).map(|(a, b)| a * b).sum::<f32>();
                }
                _ => return None,
            }
            Some(hsum(acc) + tail)
        }
    }

    /// `Σ code·x` over one int8 block of `block` (a multiple of 8) codes at `p`, as a vector of
    /// eight partial sums.
    ///
    /// # Safety
    /// AVX2 and FMA must be available; `p` and `x` point at `block` readable codes and values.
    #[inline(always)]
    unsafe fn int8_block(p: *const i8, x: *const f32, block: usize) -> __m256 {
        // SAFETY: every load reads `p[g..g + 8]`/`x[g..g + 8]` for `g + 8 ≤ block` (the caller's contract).
        unsafe {
            let (mut a0, mut a1, mut g) = (_mm256_setzero_ps(), _mm256_setzero_ps(), 0);
            while g + 16 <= block {
                a0 = _mm256_fmadd_ps(int8x8(p.add(g)), _mm256_loadu_ps(x.add(g)), a0);
                a1 = _mm256_fmadd_ps(int8x8(p.add(g + 8)), _mm256_loadu_ps(x.add(g + 8)), a1);
                g += 16;
            }
            if g < block {
                a0 = _mm256_fmadd_ps(int8x8(p.add(g)), _mm256_loadu_ps(x.add(g)), a0);
            }
            _mm256_add_ps(a0, a1)
        }
    }

    /// Eight int8 codes at `p` as f32.
    ///
    /// # Safety
    /// AVX2 must be available; `p` points at 8 readable bytes.
    #[inline(always)]
    unsafe fn int8x8(p: *const i8) -> __m256 {
        // SAFETY: an 8-byte load at `p` (the caller's contract).
        unsafe { _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(p as *const __m128i))) }
    }

    /// One block's `Σ code·x` for [`scaled_blocks`]: a kind of codes with its row and activations.
    trait BlockDot {
        /// The block of `block` codes from element `k0`, as eight partial sums.
        ///
        /// # Safety
        /// AVX2 and FMA must be available; the block lies inside the row and the activations.
        unsafe fn block_dot(&self, k0: usize, block: usize) -> __m256;
    }

    /// Packed 4-bit codes from `p` against nibble-ordered activations from `x` ([`int4_block`]).
    struct Int4Row<const SYM: bool> {
        p: *const u8,
        x: *const f32,
    }

    impl<const SYM: bool> BlockDot for Int4Row<SYM> {
        #[inline(always)]
        unsafe fn block_dot(&self, k0: usize, block: usize) -> __m256 {
            // SAFETY: the caller's contract, passed on.
            unsafe { int4_block::<SYM>(self.p.add(k0 / 2), self.x.add(k0), block) }
        }
    }

    /// int8 codes from `p` against activations from `x` ([`int8_block`]).
    struct Int8Row {
        p: *const i8,
        x: *const f32,
    }

    impl BlockDot for Int8Row {
        #[inline(always)]
        unsafe fn block_dot(&self, k0: usize, block: usize) -> __m256 {
            // SAFETY: the caller's contract, passed on.
            unsafe { int8_block(self.p.add(k0), self.x.add(k0), block) }
        }
    }

    /// `Σ_b scale_b · Σ code·x` over a row's whole blocks (one scale per block in `scales`),
    /// two blocks in flight: the sum of the pairs and the odd last block apart. GGUF's blocks of
    /// 32 get a loop with the block length known, fully unrolled.
    ///
    /// # Safety
    /// AVX2 and FMA must be available; `row` holds `scales.len()` whole blocks of `block` codes.
    #[inline(always)]
    unsafe fn scaled_blocks(row: &impl BlockDot, block: usize, scales: &[f32]) -> (__m256, __m256) {
        // SAFETY: the caller's contract, passed on.
        unsafe {
            if block == 32 {
                scaled_blocks_n(row, 32, scales)
            } else {
                scaled_blocks_n(row, block, scales)
            }
        }
    }

    /// [`scaled_blocks`] for one block length.
    ///
    /// # Safety
    /// As [`scaled_blocks`].
    #[inline(always)]
    unsafe fn scaled_blocks_n(row: &impl BlockDot, block: usize, scales: &[f32]) -> (__m256, __m256) {
        // SAFETY: block `b < scales.len()` lies inside the row (the caller's contract).
        unsafe {
            let (mut acc0, mut acc1, mut b) = (_mm256_setzero_ps(), _mm256_setzero_ps(), 0);
            while b + 2 <= scales.len() {
                let d0 = row.block_dot(b * block, block);
                let d1 = row.block_dot((b + 1) * block, block);
                acc0 = _mm256_fmadd_ps(d0, _mm256_set1_ps(scales[b]), acc0);
                acc1 = _mm256_fmadd_ps(d1, _mm256_set1_ps(scales[b + 1]), acc1);
                b += 2;
            }
            let last = if b < scales.len() {
                _mm256_mul_ps(row.block_dot(b * block, block), _mm256_set1_ps(scales[b]))
            } else {
                _mm256_setzero_ps()
            };
            (_mm256_add_ps(acc0, acc1), last)
        }
    }

    /// `Σ code·x` over one packed 4-bit block of `block` (a multiple of 16) codes at `p`, against
    /// `x` in nibble order ([`Prepared`]); `SYM` re-centres the codes by −8 first.
    ///
    /// # Safety
    /// AVX2 and FMA must be available; `p` points at `block / 2` readable bytes, `x` at `block` values.
    #[inline(always)]
    unsafe fn int4_block<const SYM: bool>(p: *const u8, x: *const f32, block: usize) -> __m256 {
        // SAFETY: every load reads `p[g/2..g/2 + 8]`/`x[g..g + 16]` for `g + 16 ≤ block` (the caller's contract).
        unsafe {
            let (mask, eight) = (_mm_set1_epi8(0x0f), _mm_set1_epi8(8));
            let (mut a0, mut a1, mut g) = (_mm256_setzero_ps(), _mm256_setzero_ps(), 0);
            while g + 16 <= block {
                let bytes = _mm_loadl_epi64(p.add(g / 2) as *const __m128i);
                let (even, odd) = (_mm_and_si128(bytes, mask), _mm_and_si128(_mm_srli_epi16::<4>(bytes), mask));
                let (even, odd) = if SYM {
                    (_mm256_cvtepi8_epi32(_mm_sub_epi8(even, eight)), _mm256_cvtepi8_epi32(_mm_sub_epi8(odd, eight)))
                } else {
                    (_mm256_cvtepu8_epi32(even), _mm256_cvtepu8_epi32(odd))
                };
                a0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(even), _mm256_loadu_ps(x.add(g)), a0);
                a1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(odd), _mm256_loadu_ps(x.add(g + 8)), a1);
                g += 16;
            }
            _mm256_add_ps(a0, a1)
        }
    }

    /// Sixteen rank-form weights from element `i` (a multiple of 16) as two vectors of f32.
    ///
    /// # Safety
    /// AVX2 must be available; `ranks` holds at least `i / 2 + 8` bytes and `low` `i + 16`.
    #[inline(always)]
    unsafe fn rank16(table: __m128i, ranks: &[u8], low: &[u8], i: usize) -> (__m256, __m256) {
        // SAFETY: the caller passes `i + 16 ≤` the row's ranks and low bytes, so the 8- and 16-byte loads stay inside them.
        unsafe {
            let (m80, m7f) = (_mm256_set1_epi16(0x80), _mm256_set1_epi16(0x7f));
            let exps = _mm_shuffle_epi8(table, nibbles16(ranks.as_ptr().add(i / 2)));
            let lo = _mm256_cvtepu8_epi16(_mm_loadu_si128(low.as_ptr().add(i) as *const __m128i));
            let e = _mm256_cvtepu8_epi16(exps);
            let bits = _mm256_or_si256(
                _mm256_or_si256(_mm256_slli_epi16::<8>(_mm256_and_si256(lo, m80)), _mm256_slli_epi16::<7>(e)),
                _mm256_and_si256(lo, m7f),
            );
            let widen = |h: __m128i| _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(h)));
            (widen(_mm256_castsi256_si128(bits)), widen(_mm256_extracti128_si256::<1>(bits)))
        }
    }

    /// Sixteen packed nibbles (8 bytes at `p`) as sixteen bytes in element order.
    ///
    /// # Safety
    /// SSSE3 must be available; `p` points at 8 readable bytes.
    #[inline(always)]
    unsafe fn nibbles16(p: *const u8) -> __m128i {
        // SAFETY: the caller passes a pointer with 8 readable bytes.
        unsafe {
            let b = _mm_loadl_epi64(p as *const __m128i);
            let m = _mm_set1_epi8(0x0f);
            _mm_unpacklo_epi8(_mm_and_si128(b, m), _mm_and_si128(_mm_srli_epi16::<4>(b), m))
        }
    }

    /// Decodes `out.len()` values of row `row` from column `col0` (a multiple of 16).
    ///
    /// # Safety
    /// AVX2, FMA and F16C must be available; the segment lies inside the row.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn decode(w: &FastWeight, row: usize, col0: usize, out: &mut [f32]) {
        // SAFETY: AVX2, FMA and F16C are available and the segment lies inside the row (the caller's contract), so every load reads inside the row's codes and every store inside `out`.
        unsafe {
            let n = out.len();
            let base = row * w.stride + col0;
            let po = out.as_mut_ptr();
            let mut k = 0;
            match &w.codes {
                FastCodes::F32(v) => out.copy_from_slice(&v[base..base + n]),
                FastCodes::Bf16(v) => {
                    let p = v.as_ptr().add(base);
                    while k + 8 <= n {
                        let h = _mm_loadu_si128(p.add(k) as *const __m128i);
                        _mm256_storeu_si256(
                            po.add(k) as *mut __m256i,
                            _mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(h)),
                        );
                        k += 8;
                    }
                }
                FastCodes::F16(v) => {
                    let p = v.as_ptr().add(base);
                    while k + 8 <= n {
                        _mm256_storeu_ps(po.add(k), _mm256_cvtph_ps(_mm_loadu_si128(p.add(k) as *const __m128i)));
                        k += 8;
                    }
                }
                FastCodes::Bf16Rank { exponents, ranks, low, .. } => {
                    let table = _mm_loadu_si128(exponents.as_ptr() as *const __m128i);
                    while k + 16 <= n {
                        let (w0, w1) = rank16(table, ranks, low, base + k);
                        _mm256_storeu_ps(po.add(k), w0);
                        _mm256_storeu_ps(po.add(k + 8), w1);
                        k += 16;
                    }
                }
                FastCodes::Int8 { codes, block, scales } => {
                    // Eight codes share a scale when the row has one, or when blocks and the
                    // segment start are multiples of 8; anything else takes the reference.
                    let per_row = *block >= w.cols;
                    if per_row || (block.is_multiple_of(8) && col0.is_multiple_of(8)) {
                        let first = row * w.cols.div_ceil(*block);
                        let p = codes.as_ptr().add(base);
                        while k + 8 <= n {
                            let b = if per_row { first } else { first + (col0 + k) / block };
                            let c = _mm256_cvtepi8_epi32(_mm_loadl_epi64(p.add(k) as *const __m128i));
                            _mm256_storeu_ps(
                                po.add(k),
                                _mm256_mul_ps(_mm256_cvtepi32_ps(c), _mm256_set1_ps(scales[b])),
                            );
                            k += 8;
                        }
                    }
                }
                FastCodes::Int4 { packed, block, scales, mins } => {
                    if block % 8 == 0 {
                        let first = row * w.cols.div_ceil(*block);
                        let eight = _mm256_set1_epi32(8);
                        while k + 16 <= n {
                            let codes = nibbles16(packed.as_ptr().add((base + k) / 2));
                            for h in 0..2 {
                                let bytes = if h == 0 { codes } else { _mm_srli_si128::<8>(codes) };
                                let c = _mm256_cvtepu8_epi32(bytes);
                                let b = first + (col0 + k + 8 * h) / block;
                                let s = _mm256_set1_ps(scales[b]);
                                let v = match mins {
                                    None => _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(c, eight)), s),
                                    Some(m) => {
                                        _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(c), s), _mm256_set1_ps(m[b]))
                                    }
                                };
                                _mm256_storeu_ps(po.add(k + 8 * h), v);
                            }
                            k += 16;
                        }
                    }
                }
            }
            if k < n {
                // The tail (and blocks that are not a multiple of 8) through the reference; `k` is a
                // multiple of 16, so the tail starts on a byte of packed rows.
                super::decode_scalar(w, row, col0 + k, &mut out[k..]);
            }
            if matches!(w.codes, FastCodes::Bf16Rank { .. }) {
                super::patch_escapes(w, row, col0, out);
            }
        }
    }
}
