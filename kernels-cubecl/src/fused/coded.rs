//! Fused products straight from a weight's entropy-coded tiles: the smallest resident form.
//!
//! The fast form ([`super::form`]) costs about 12 bits per lossless BF16 weight (8 per int8
//! code) on top of nothing else; the entropy-coded tiles cost what the container stores (about
//! 10.6 bits per lossless BF16 weight, 5–6 per int8 code) and are already mapped from the file.
//! Serving several models on one machine, that difference decides whether they fit: the
//! products here decode one tile at a time (128 Ki elements by default) into a buffer that stays
//! in the core's L2 cache, multiply it into every activation row, and move on, so no decoded
//! weight is ever allocated and nothing is transcoded at attach.
//!
//! The price is the rANS decode inside every product (about 1 ns per weight per core against a
//! few tenths for the fast form); batching amortises it, since each tile is decoded once per
//! product whatever the number of activation rows.

use std::sync::Arc;

use ember_codec::container::TensorDecoder;
use ember_codec::{Container, Dtype, TensorEntry};
use rayon::prelude::*;

use super::cpu::{axpy, dots_into, simd_ok, CpuPath, SEG};
use super::lanes::{self, Lanes, LANE_ROWS};
use super::op::Orientation;
use super::scratch::{recycle, take_zeroed};
use crate::error::KernelError;

/// A matrix kept as the entropy-coded tiles of an opened container (CPU path).
pub struct CodedTiles {
    file: Arc<Container>,
    entry: TensorEntry,
    rows: usize,
    cols: usize,
}

impl std::fmt::Debug for CodedTiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CodedTiles")
            .field("tensor", &self.entry.name)
            .field("rows", &self.rows)
            .field("cols", &self.cols)
            .finish()
    }
}

/// Reusable buffers of one thread: the tile's decoded bytes, the decoder's scratch, the values.
#[derive(Default)]
struct Scratch {
    bytes: Vec<u8>,
    decoder: Vec<u8>,
    values: Vec<f32>,
}

thread_local! {
    /// Each thread's tile buffers (about 1 MiB for a default tile), kept between products:
    /// allocated afresh for every product they cost page faults (see `super::scratch`).
    static SCRATCH: std::cell::Cell<Scratch> = std::cell::Cell::new(Scratch::default());
}

impl CodedTiles {
    /// Keeps tensor `entry` of `file` as its tiles, after decoding every tile once: a crafted
    /// or damaged tile is an error here, naming the tensor and the tile, instead of a failure
    /// inside a forward pass (where a parameter read cannot return an error).
    pub fn new(file: Arc<Container>, entry: &TensorEntry) -> Result<Self, KernelError> {
        let (rows, cols) = ember_codec::tile::rows_cols(&entry.shape);
        let bad = |reason: String| KernelError::Tensor {
            path: file.path().display().to_string(),
            tensor: entry.name.clone(),
            reason,
        };
        let (rows, cols) = (
            usize::try_from(rows).map_err(|_| bad("too many rows".into()))?,
            usize::try_from(cols).map_err(|_| bad("too many columns".into()))?,
        );
        if !matches!(entry.decoded_dtype(), Dtype::BF16 | Dtype::F16 | Dtype::F32) {
            return Err(bad(format!("{} has no fused form", entry.decoded_dtype())));
        }
        let mut end = 0u64;
        for (i, t) in entry.tiles.iter().enumerate() {
            if t.start != end || t.count == 0 {
                return Err(bad(format!("tile {i} does not follow tile {}", i.saturating_sub(1))));
            }
            end = t.start + t.count;
        }
        if end != entry.elements() {
            return Err(bad(format!("the tiles cover {end} of {} elements", entry.elements())));
        }
        let tiles = Self { file, entry: entry.clone(), rows, cols };
        let dec = tiles.file.decoder(&tiles.entry)?;
        (0..entry.tiles.len()).into_par_iter().try_for_each_init(Scratch::default, |s, i| tiles.decode(&dec, i, s))?;
        Ok(tiles)
    }

    /// Stored rows and columns.
    pub fn shape(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }

    /// Bytes of tiles, frequency table and scales: what the container maps for this weight.
    pub fn compressed_bytes(&self) -> u64 {
        self.entry.stored_bytes()
    }

    /// Decodes tile `i` into `s.values` (as f32).
    fn decode(&self, dec: &TensorDecoder<'_>, i: usize, s: &mut Scratch) -> Result<(), KernelError> {
        let dtype = self.entry.decoded_dtype();
        let count = self.entry.tiles[i].count as usize;
        s.bytes.resize(count * dtype.size(), 0);
        dec.decode_tile(i, &mut s.bytes, &mut s.decoder)?;
        s.values.clear();
        match dtype {
            Dtype::BF16 => s.values.extend(
                s.bytes.chunks_exact(2).map(|b| f32::from_bits(u32::from(u16::from_le_bytes([b[0], b[1]])) << 16)),
            ),
            Dtype::F16 => s.values.extend(
                s.bytes.chunks_exact(2).map(|b| half::f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32()),
            ),
            _ => s.values.extend(s.bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))),
        }
        Ok(())
    }

    /// The decoder, which `new` already built once from the same entry.
    fn decoder(&self) -> TensorDecoder<'_> {
        match self.file.decoder(&self.entry) {
            Ok(d) => d,
            // `new` built this decoder from the same bytes: only a container changed underneath
            // its mapping gets here, and a parameter read has no error to return.
            Err(e) => panic!("{e}"),
        }
    }

    fn decode_or_panic(&self, dec: &TensorDecoder<'_>, i: usize, s: &mut Scratch) {
        if let Err(e) = self.decode(dec, i, s) {
            // As in `decoder`: every tile decoded in `new`.
            panic!("{e}");
        }
    }

    /// `y = x·Wᵀ` (`RowsAreOutputs`, `x` `m × cols`) or `y = x·W` (`RowsAreInputs`, `x`
    /// `m × rows`), `+ bias`, row-major `m × outputs`.
    ///
    /// # Panics
    /// If `x` or `bias` have the wrong length (the callers derive them from the same shapes).
    pub fn matmul(
        &self,
        x: &[f32],
        m: usize,
        bias: Option<&[f32]>,
        orientation: Orientation,
        path: CpuPath,
    ) -> Vec<f32> {
        let (rows, cols) = (self.rows, self.cols);
        let simd = simd_ok(path);
        let dec = self.decoder();
        let outputs = match orientation {
            Orientation::RowsAreOutputs => rows,
            Orientation::RowsAreInputs => cols,
        };
        let inputs = if orientation == Orientation::RowsAreOutputs { cols } else { rows };
        assert_eq!(x.len(), m * inputs, "activations are m × {inputs}");
        // Sixteen rows and more multiply in lanes, as the fast form's and dense products do.
        let lanes =
            (orientation == Orientation::RowsAreOutputs && lanes::use_lanes(m, simd)).then(|| Lanes::of(x, m, cols));
        let width = lanes.as_ref().map_or(m, |l| l.width);
        // `RowsAreOutputs` sums into `rows × width` (each stored row's outputs side by side,
        // `width` is `m` unless in lanes), `RowsAreInputs` into `m × cols`.
        let tile = |mut acc: Vec<f32>, i: usize| {
            SCRATCH.with(|cell| {
                // Taken out (not borrowed) so that a nested product on this thread gets its own.
                let mut s = cell.take();
                let product = Product { x, m, orientation, simd, lanes: lanes.as_ref() };
                self.tile_into(&dec, i, &mut s, &mut acc, &product);
                cell.replace(s);
            });
            acc
        };
        let tiles = self.entry.tiles.len();
        let fresh = || take_zeroed(width * outputs);
        let acc = if tiles < 2 || rayon::current_num_threads() == 1 {
            (0..tiles).fold(fresh(), tile)
        } else {
            (0..tiles)
                .into_par_iter()
                .fold(fresh, tile)
                .reduce_with(|mut a, b| {
                    // A `+0.0` is an output the other part never touched: skipping it keeps a
                    // `-0.0` sum as it is, so a product whose rows each lie in one tile is bit
                    // for bit the serial one.
                    a.iter_mut().zip(&b).for_each(|(a, &b)| {
                        if b.to_bits() != 0 {
                            *a = if a.to_bits() == 0 { b } else { *a + b };
                        }
                    });
                    recycle(b);
                    a
                })
                .unwrap_or_else(|| take_zeroed(width * outputs))
        };
        let mut y = match orientation {
            Orientation::RowsAreOutputs => {
                let mut y = Vec::with_capacity(m * rows);
                for i in 0..m {
                    y.extend((0..rows).map(|r| acc[r * width + i]));
                }
                recycle(acc);
                y
            }
            Orientation::RowsAreInputs => acc,
        };
        if let Some(l) = lanes {
            l.recycle();
        }
        if let Some(b) = bias {
            assert_eq!(b.len(), outputs, "one bias per output");
            for row in y.chunks_mut(outputs.max(1)) {
                row.iter_mut().zip(b).for_each(|(y, b)| *y += b);
            }
        }
        y
    }

    /// Tile `i` decoded into `s` and multiplied into `acc` (see [`Self::matmul`]).
    fn tile_into(&self, dec: &TensorDecoder<'_>, i: usize, s: &mut Scratch, acc: &mut [f32], p: &Product<'_>) {
        let (rows, cols) = (self.rows, self.cols);
        let Product { x, m, orientation, simd, lanes } = *p;
        self.decode_or_panic(dec, i, s);
        let t = self.entry.tiles[i];
        if let Some(l) = lanes {
            lane_pieces(t.start as usize, t.count as usize, cols, &s.values, l, acc);
            return;
        }
        for_each_row_piece(t.start as usize, t.count as usize, cols, |r, c, k, n| {
            let values = &s.values[k..k + n];
            match orientation {
                Orientation::RowsAreOutputs => {
                    // In segments that start where the fast-form and dense kernels start
                    // theirs (every `SEG` columns), so the sums run in their order.
                    let y = &mut acc[r * m..(r + 1) * m];
                    let mut j = 0;
                    while j < n {
                        let len = ((c + j) / SEG * SEG + SEG - (c + j)).min(n - j);
                        dots_into(y, &values[j..j + len], x, cols, c + j, simd);
                        j += len;
                    }
                }
                Orientation::RowsAreInputs => {
                    for i in 0..m {
                        axpy(&mut acc[i * cols + c..i * cols + c + n], x[i * rows + r], values, simd);
                    }
                }
            }
        });
    }

    /// Stored rows `ids` decoded to f32, row-major `ids.len() × cols` (an embedding lookup):
    /// only the tiles holding them are decoded. `None` if an id is out of range.
    pub fn select_rows(&self, ids: &[usize]) -> Option<Vec<f32>> {
        if ids.iter().any(|&r| r >= self.rows) {
            return None;
        }
        let cols = self.cols;
        let dec = self.decoder();
        let mut s = Scratch::default();
        let mut held = None;
        // From the pool: a fresh zeroed allocation of this size costs page faults.
        let mut out = take_zeroed(ids.len() * cols);
        for (o, &r) in out.chunks_mut(cols.max(1)).zip(ids) {
            let (first, last) = (r * cols, (r + 1) * cols);
            let mut i = self.entry.tiles.partition_point(|t| t.start + t.count <= first as u64);
            while let Some(t) = self.entry.tiles.get(i).filter(|t| (t.start as usize) < last) {
                if held != Some(i) {
                    self.decode_or_panic(&dec, i, &mut s);
                    held = Some(i);
                }
                let (t0, t1) = (t.start as usize, (t.start + t.count) as usize);
                let (a, b) = (first.max(t0), last.min(t1));
                o[a - first..b - first].copy_from_slice(&s.values[a - t0..b - t0]);
                i += 1;
            }
        }
        Some(out)
    }

    /// The whole matrix decoded to row-major f32 (the fallback for large batches).
    pub fn decode_f32(&self) -> Vec<f32> {
        let dec = self.decoder();
        let mut out = Vec::with_capacity(self.rows * self.cols);
        let mut s = Scratch::default();
        for i in 0..self.entry.tiles.len() {
            self.decode_or_panic(&dec, i, &mut s);
            out.extend_from_slice(&s.values);
        }
        out
    }
}

/// What one product multiplies its tiles into.
struct Product<'a> {
    x: &'a [f32],
    m: usize,
    orientation: Orientation,
    simd: bool,
    /// `x` transposed, when the product runs in lanes (`RowsAreOutputs` only).
    lanes: Option<&'a Lanes>,
}

/// The `count` decoded values of a tile that starts at element `start`, multiplied in lanes into
/// `acc` (`width` sums per stored row): up to [`LANE_ROWS`] whole rows at a time, the pieces of
/// rows the tile cuts one by one, each [`SEG`] columns at a time so that the rows' values stay in
/// L1. Every sum continues its row's chain, so where the tiles cut changes no bit.
fn lane_pieces(start: usize, count: usize, cols: usize, values: &[f32], l: &Lanes, acc: &mut [f32]) {
    let width = l.width;
    let mut k = 0;
    while k < count && cols > 0 {
        let (r, c) = ((start + k) / cols, (start + k) % cols);
        let whole = if c == 0 { ((count - k) / cols).min(LANE_ROWS) } else { 0 };
        let (rb, n) = if whole > 0 { (whole, cols) } else { (1, (cols - c).min(count - k)) };
        let mut j = 0;
        while j < n {
            let len = (n - j).min(SEG);
            lanes::rows_into(
                &values[k + j..],
                cols,
                rb,
                len,
                &l.values[(c + j) * width..],
                width,
                &mut acc[r * width..],
            );
            j += len;
        }
        k += if whole > 0 { rb * cols } else { n };
    }
}

/// Splits the `count` elements that start at element `start` of a row-major matrix with `cols`
/// columns into pieces within one row: `f(row, first column, offset into the run, length)`.
pub(crate) fn for_each_row_piece(
    start: usize,
    count: usize,
    cols: usize,
    mut f: impl FnMut(usize, usize, usize, usize),
) {
    let cols = cols.max(1);
    let mut k = 0;
    while k < count {
        let e = start + k;
        let (r, c) = (e / cols, e % cols);
        let n = (cols - c).min(count - k);
        f(r, c, k, n);
        k += n;
    }
}
