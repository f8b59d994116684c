//! The batched dot-form product for many activation rows: each weight is broadcast and
//! multiplied into eight or sixteen activation rows at once, the rows laid side by side in
//! vector lanes.
//!
//! With a few rows, [`super::cpu`]'s tiles multiply a weight row and an activation row along
//! their common axis and fold the eight lanes at the end of every segment. From sixteen rows on
//! ([`LANE_MIN`]), that fold, and reloading every activation for every block of weight rows,
//! cost more than padding the rows to whole vectors: transposing the activations once per
//! product (`cols × width`, zero-padded to a multiple of eight rows) lets one broadcast weight
//! feed two vectors of sixteen rows, so a block of six weight rows keeps twelve accumulators
//! busy with no fold at all (the register-blocked micro-kernel of a GEMM, with the decoded
//! weights in the broadcast operand).
//!
//! Summation order: every output is one chain of fused multiply-adds over its columns, in column
//! order, starting from `+0.0`. That order does not depend on how the columns are cut into
//! segments or tiles, on how many weight rows share a block, nor on a row's place in the batch:
//! the fast form, the entropy-coded tiles and a dense matrix give the same bits, whichever
//! batch a sequence shares.

use super::cpu::{segment_into, RowSource, SEG};

/// Activation rows from which the dot-form products multiply in lanes (on the AVX2 path).
/// Measured on one core with the lossless fast form (`1536×576`, `576×1536` and `49152×576`):
/// at sixteen rows the lanes take 5–15% less time than the tiles; at eight and twelve they take
/// 10–20% more, since the tiles' cost grows with the rows and the lanes' with the padded width.
pub const LANE_MIN: usize = 16;

/// Weight rows multiplied together: twelve accumulators (six rows × two vectors) and two
/// activation vectors fit the sixteen vector registers.
pub const LANE_ROWS: usize = 6;

/// The activations of a product, transposed: column `c`'s value for row `i` at `c·width + i`.
pub(crate) struct Lanes {
    /// `cols × width` values; lanes `m..width` are zero.
    pub values: Vec<f32>,
    /// `m` rounded up to a multiple of eight.
    pub width: usize,
}

impl Lanes {
    /// `x` (`m × cols`, row-major) transposed, in a buffer from the thread's pool.
    pub fn of(x: &[f32], m: usize, cols: usize) -> Self {
        assert_eq!(x.len(), m * cols, "activations are m × cols");
        let width = m.div_ceil(8) * 8;
        let mut values = super::scratch::take_zeroed(cols * width);
        for (i, row) in x.chunks_exact(cols.max(1)).enumerate() {
            for (c, v) in row.iter().enumerate() {
                values[c * width + i] = *v;
            }
        }
        Self { values, width }
    }

    /// Gives the buffer back to the thread's pool.
    pub fn recycle(self) {
        super::scratch::recycle(self.values);
    }
}

/// Whether a product of `m` activation rows runs in lanes.
pub(crate) fn use_lanes(m: usize, simd: bool) -> bool {
    cfg!(target_arch = "x86_64") && simd && m >= LANE_MIN
}

/// Continues the sums of `rb ≤ LANE_ROWS` weight rows over `n` columns:
/// `y[r·width + i] = fma(w[r·stride + k], x[k·width + i], y[r·width + i])` for `k` in
/// `0..n` in order, for every lane `i` (`x` and `w` start at the same column).
///
/// # Panics
/// If a slice is too short for the rows and columns asked, or without AVX2 and FMA.
pub(crate) fn rows_into(w: &[f32], stride: usize, rb: usize, n: usize, x: &[f32], width: usize, y: &mut [f32]) {
    assert!((1..=LANE_ROWS).contains(&rb) && width.is_multiple_of(8), "1..=6 rows, lanes in eights");
    assert!(n == 0 || w.len() >= (rb - 1) * stride + n, "weights hold rb rows of n");
    assert!(x.len() >= n * width && y.len() >= rb * width, "activations and sums hold the lanes");
    #[cfg(target_arch = "x86_64")]
    {
        assert!(super::cpu::simd_ok(super::cpu::CpuPath::Best), "lanes need AVX2 and FMA");
        let mut o = 0;
        while o < width {
            let v = if width - o >= 16 { 2 } else { 1 };
            // SAFETY: AVX2 and FMA are available (asserted); `w` holds `rb` rows of `n` values
            // `stride` apart, `x` `n` columns of `width` lanes and `y` `rb` rows of `width`
            // sums (asserted above), and lanes `o..o + 8·v` lie below `width`.
            unsafe {
                let (wp, xp, yp) = (w.as_ptr(), x.as_ptr().add(o), y.as_mut_ptr().add(o));
                match (rb, v) {
                    (6, 2) => x86::lanes::<6, 2>(wp, stride, n, xp, width, yp),
                    (5, 2) => x86::lanes::<5, 2>(wp, stride, n, xp, width, yp),
                    (4, 2) => x86::lanes::<4, 2>(wp, stride, n, xp, width, yp),
                    (3, 2) => x86::lanes::<3, 2>(wp, stride, n, xp, width, yp),
                    (2, 2) => x86::lanes::<2, 2>(wp, stride, n, xp, width, yp),
                    (_, 2) => x86::lanes::<1, 2>(wp, stride, n, xp, width, yp),
                    (6, _) => x86::lanes::<6, 1>(wp, stride, n, xp, width, yp),
                    (5, _) => x86::lanes::<5, 1>(wp, stride, n, xp, width, yp),
                    (4, _) => x86::lanes::<4, 1>(wp, stride, n, xp, width, yp),
                    (3, _) => x86::lanes::<3, 1>(wp, stride, n, xp, width, yp),
                    (2, _) => x86::lanes::<2, 1>(wp, stride, n, xp, width, yp),
                    _ => x86::lanes::<1, 1>(wp, stride, n, xp, width, yp),
                }
            }
            o += 8 * v;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    panic!("lanes need AVX2 and FMA");
}

/// Rows `r0 .. r0 + out.len() / width` of `x·Wᵀ` in lanes, into `out` (`width` sums per weight
/// row, zero on entry). Six weight rows at a time are decoded one segment at a time into a
/// buffer that stays in L1, and each segment is multiplied into every lane.
pub(crate) fn rows_of_source(w: &dyn RowSource, r0: usize, out: &mut [f32], x: &Lanes) {
    let (cols, width) = (w.cols(), x.width);
    let rows = out.len() / width;
    super::scratch::with_zeroed(LANE_ROWS * SEG, |buf| {
        let mut dr = 0;
        while dr < rows {
            let rb = (rows - dr).min(LANE_ROWS);
            // The next block's codes load while this one is multiplied.
            w.prefetch(r0 + dr + rb..r0 + (dr + rb + LANE_ROWS).min(rows));
            let y = &mut out[dr * width..(dr + rb) * width];
            let mut c = 0;
            while c < cols {
                let len = (cols - c).min(SEG);
                for (j, dst) in buf.chunks_mut(SEG).take(rb).enumerate() {
                    segment_into(w, r0 + dr + j, c, &mut dst[..len]);
                }
                rows_into(buf, SEG, rb, len, &x.values[c * width..], width, y);
                c += len;
            }
            dr += rb;
        }
    });
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// `R` weight rows against `8·V` lanes (see [`super::rows_into`]).
    ///
    /// # Safety
    /// AVX2 and FMA must be available; `w` points at `R` rows of `n` readable values `stride`
    /// apart, `x` at `n` columns of `8·V` readable lanes `width` apart, `y` at `R` rows of
    /// `8·V` sums `width` apart.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn lanes<const R: usize, const V: usize>(
        w: *const f32,
        stride: usize,
        n: usize,
        x: *const f32,
        width: usize,
        y: *mut f32,
    ) {
        // SAFETY: every access stays inside the rows, columns and lanes of the caller's contract.
        unsafe {
            let mut acc = [[_mm256_setzero_ps(); V]; R];
            for (r, row) in acc.iter_mut().enumerate() {
                for (v, a) in row.iter_mut().enumerate() {
                    *a = _mm256_loadu_ps(y.add(r * width + 8 * v));
                }
            }
            for k in 0..n {
                let mut xv = [_mm256_setzero_ps(); V];
                for (v, xv) in xv.iter_mut().enumerate() {
                    *xv = _mm256_loadu_ps(x.add(k * width + 8 * v));
                }
                for (r, row) in acc.iter_mut().enumerate() {
                    let b = _mm256_broadcast_ss(&*w.add(r * stride + k));
                    for (a, xv) in row.iter_mut().zip(&xv) {
                        *a = _mm256_fmadd_ps(b, *xv, *a);
                    }
                }
            }
            for (r, row) in acc.iter().enumerate() {
                for (v, a) in row.iter().enumerate() {
                    _mm256_storeu_ps(y.add(r * width + 8 * v), *a);
                }
            }
        }
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n as u32)
            .map(|i| {
                let h = (i.wrapping_mul(2_654_435_761) ^ seed.wrapping_mul(40_503)).rotate_left(13);
                (h % 20_001) as f32 / 10_000.0 - 1.0
            })
            .collect()
    }

    /// The order the module promises: one fused multiply-add chain per output, column by column.
    fn chain(w: &[f32], x: &[f32]) -> f32 {
        w.iter().zip(x).fold(0.0, |acc, (w, x)| w.mul_add(*x, acc))
    }

    #[test]
    fn every_output_is_one_chain_whatever_the_blocks_and_the_batch() {
        if !super::super::cpu::simd_ok(super::super::cpu::CpuPath::Best) {
            return;
        }
        let (rows, cols) = (13, 300);
        let w = values(rows * cols, 1);
        for m in [1, 8, 9, 16, 17, 24, 40] {
            let x = values(m * cols, m as u32);
            let lanes = Lanes::of(&x, m, cols);
            let width = lanes.width;
            // Rows in blocks of 6, 6, 1; columns cut at 0, 7, 256 and the end.
            let mut y = vec![0f32; rows * width];
            for (r0, rb) in [(0, 6), (6, 6), (12, 1)] {
                for (c0, c1) in [(0, 7), (7, 256), (256, cols)] {
                    rows_into(
                        &w[r0 * cols + c0..],
                        cols,
                        rb,
                        c1 - c0,
                        &lanes.values[c0 * width..],
                        width,
                        &mut y[r0 * width..],
                    );
                }
            }
            for r in 0..rows {
                for i in 0..width {
                    let want = if i < m { chain(&w[r * cols..][..cols], &x[i * cols..][..cols]) } else { 0.0 };
                    assert_eq!(y[r * width + i].to_bits(), want.to_bits(), "m={m} row {r} lane {i}");
                }
            }
            lanes.recycle();
        }
    }
}
