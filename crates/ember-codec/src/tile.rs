//! Tiles: how a tensor is cut, and the byte layout of one coded tile.
//!
//! A tile is a contiguous range of elements that decodes on its own. Tiles are row-aligned: a
//! tile holds whole rows when a row fits in the target size, else pieces of one row whose length
//! is a multiple of the quantisation block. The decoder does not rely on that rule: each tile's
//! first element and count are stored in the header.

use std::borrow::Cow;

/// Default elements per tile (128 Ki): with the encoder's default 64 lanes, 2048 symbols per
/// lane, as many GPU threads per weight as 64 Ki tiles of 32 lanes and the same lane overhead
/// per element, while the CPU decoder keeps four AVX-512 vectors of lanes in flight.
pub const DEFAULT_TILE_ELEMS: usize = 1 << 17;
/// Largest number of elements in one tile the reader accepts (4 Mi).
pub const MAX_TILE_ELEMS: u64 = 1 << 22;
/// Largest number of lanes the reader accepts.
pub const MAX_LANES: u32 = 1024;

/// A contiguous element range `[start, start + count)` of a tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TileSpan {
    /// First element (row-major flat index).
    pub start: u64,
    /// Number of elements.
    pub count: u64,
}

/// Rows and columns of a tensor viewed as a matrix over its last dimension.
pub fn rows_cols(shape: &[u64]) -> (u64, u64) {
    let n: u64 = shape.iter().product();
    let cols = shape.last().copied().unwrap_or(1);
    n.checked_div(cols).map_or((0, 0), |rows| (rows, cols))
}

/// Cuts a tensor of `shape` into row-aligned tiles of at most `tile_elems` elements; pieces of a
/// row that is longer than `tile_elems` are multiples of `align` elements. Whole-row tiles take
/// as equal a share of the rows as the count of tiles allows (a 384-row matrix in two tiles of
/// 192 rows, not 341 and 43), so threads and GPU workgroups that take a tile each finish
/// together; for the same reason a matrix of several whole-row tiles gets an even number of them
/// (a 1536×384 matrix in six tiles, not five: two threads take three each, not three and two).
pub fn plan_tiles(shape: &[u64], tile_elems: u64, align: u64) -> Vec<TileSpan> {
    let (rows, cols) = rows_cols(shape);
    let tile_elems = tile_elems.clamp(1, MAX_TILE_ELEMS);
    let mut tiles = Vec::new();
    if rows == 0 || cols == 0 {
        return tiles;
    }
    if cols <= tile_elems {
        let most = (tile_elems / cols).max(1);
        let count = rows.div_ceil(most);
        let count = if count > 1 { count.next_multiple_of(2).min(rows) } else { count };
        // `count` tiles whose row counts differ by at most one (each at most `most`).
        let (base, extra) = (rows / count, rows % count);
        let mut r = 0;
        for k in 0..count {
            let take = base + u64::from(k < extra);
            tiles.push(TileSpan { start: r * cols, count: take * cols });
            r += take;
        }
    } else {
        let align = align.max(1);
        let chunk = (tile_elems / align * align).max(align);
        for r in 0..rows {
            let mut c = 0;
            while c < cols {
                let take = chunk.min(cols - c);
                tiles.push(TileSpan { start: r * cols + c, count: take });
                c += take;
            }
        }
    }
    tiles
}

/// How a coded tile stores where each lane's words end (`FORMAT.md` §2.1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LaneTable {
    /// `u32 lane_end[N]`: each lane's exclusive end, in words (format version 1).
    #[default]
    Ends32,
    /// `u16 words[N]`, zero-padded to 4 bytes: each lane's word count (version 2). A lane emits
    /// at most one word per symbol, so this holds whenever a lane codes at most 65 535 symbols.
    Counts16,
    /// `u16 base`, then `u8 extra[N]`, zero-padded to 4 bytes: lane `j` has `base + extra[j]`
    /// words (version 5). The lanes of a tile code the same number of symbols from one table, so
    /// their word counts differ by a few words: a 64-lane tile's table shrinks from 128 to 68
    /// bytes, which is 0.05% of a 131 072-element BF16 tile.
    Counts8,
}

impl LaneTable {
    /// Bytes the table takes for `lanes` lanes (a multiple of 4).
    pub fn bytes(self, lanes: usize) -> usize {
        match self {
            LaneTable::Ends32 => 4 * lanes,
            LaneTable::Counts16 => 4 * lanes.div_ceil(2),
            LaneTable::Counts8 => 4 * (lanes + 2).div_ceil(4),
        }
    }

    /// The smallest table that holds a tile whose lanes own `counts[j]` words each:
    /// [`LaneTable::Counts8`] when allowed, smaller than 16-bit counts (more than two lanes) and
    /// the counts lie within 255 of each other, else [`LaneTable::Counts16`] when every count
    /// fits 16 bits, else [`LaneTable::Ends32`].
    pub fn smallest_for(counts: &[u32], allow_counts8: bool) -> LaneTable {
        let (lo, hi) = counts.iter().fold((u32::MAX, 0), |(lo, hi), &c| (lo.min(c), hi.max(c)));
        if hi > u16::MAX as u32 {
            return LaneTable::Ends32;
        }
        let smaller = LaneTable::Counts8.bytes(counts.len()) < LaneTable::Counts16.bytes(counts.len());
        if allow_counts8 && smaller && hi - lo <= u8::MAX as u32 {
            return LaneTable::Counts8;
        }
        LaneTable::Counts16
    }

    /// The format version that introduced this table.
    pub fn min_version(self) -> u32 {
        match self {
            LaneTable::Ends32 => 1,
            LaneTable::Counts16 => 2,
            LaneTable::Counts8 => 5,
        }
    }

    /// The table's number in kernel descriptors: 0 `ends32`, 1 `counts16`, 2 `counts8`.
    pub fn code(self) -> u32 {
        match self {
            LaneTable::Ends32 => 0,
            LaneTable::Counts16 => 1,
            LaneTable::Counts8 => 2,
        }
    }

    /// The table numbered `code` (see [`LaneTable::code`]).
    pub fn from_code(code: u32) -> Option<LaneTable> {
        match code {
            0 => Some(LaneTable::Ends32),
            1 => Some(LaneTable::Counts16),
            2 => Some(LaneTable::Counts8),
            _ => None,
        }
    }

    /// Whether a tile of `count` elements over `lanes` lanes can use this table whatever its
    /// lanes' word counts (`counts8` depends on them: [`LaneTable::smallest_for`]).
    pub fn fits(self, count: u64, lanes: u64) -> bool {
        match self {
            LaneTable::Ends32 | LaneTable::Counts8 => true,
            LaneTable::Counts16 => count.div_ceil(lanes.max(1)) <= u16::MAX as u64,
        }
    }

    /// Whether this is the default (version-1) table, for serde.
    pub fn is_default(&self) -> bool {
        *self == LaneTable::Ends32
    }
}

/// The parts of a coded tile, borrowed from its payload.
///
/// Layout (all little-endian, offsets from the tile start, which is 4-byte aligned):
/// `u32 state[N]`, the lane table ([`LaneTable`]), raw field area (`packed_len(count, raw_bits)`
/// bytes, absent when `raw_bits = 0`), then the lanes' 16-bit words back to back, then zero
/// padding.
#[derive(Debug)]
pub struct CodedTile<'a> {
    /// Decoder start state of each lane.
    pub states: Vec<u32>,
    /// Exclusive end of each lane's words, counted in words from the start of the word area
    /// (computed from the counts for [`LaneTable::Counts16`]).
    pub lane_ends: Vec<u32>,
    /// Packed raw fields (sign + mantissa for `lossless`), empty otherwise.
    pub raw: &'a [u8],
    /// All lanes' words.
    pub words: Cow<'a, [u16]>,
}

/// Serialises a coded tile (see [`CodedTile`] for the layout). With [`LaneTable::Counts16`]
/// every lane must own at most 65 535 words.
pub fn write_coded_tile(states: &[u32], lane_ends: &[u32], raw: &[u8], words: &[u16], table: LaneTable) -> Vec<u8> {
    let len = 4 * states.len() + table.bytes(states.len()) + raw.len() + 2 * words.len();
    let mut out = Vec::with_capacity(len.next_multiple_of(4));
    out.extend(states.iter().flat_map(|s| s.to_le_bytes()));
    match table {
        LaneTable::Ends32 => out.extend(lane_ends.iter().flat_map(|s| s.to_le_bytes())),
        LaneTable::Counts16 => {
            let mut prev = 0u32;
            for &end in lane_ends {
                debug_assert!(end - prev <= u16::MAX as u32);
                out.extend(((end - prev) as u16).to_le_bytes());
                prev = end;
            }
            out.resize(4 * states.len() + table.bytes(states.len()), 0);
        }
        LaneTable::Counts8 => {
            let counts: Vec<u32> =
                lane_ends.iter().scan(0u32, |prev, &end| Some(end - std::mem::replace(prev, end))).collect();
            let base = counts.iter().copied().min().unwrap_or(0);
            debug_assert!(base <= u16::MAX as u32 && counts.iter().all(|&c| c - base <= u8::MAX as u32));
            out.extend((base as u16).to_le_bytes());
            out.extend(counts.iter().map(|&c| (c - base) as u8));
            out.resize(4 * states.len() + table.bytes(states.len()), 0);
        }
    }
    out.extend_from_slice(raw);
    out.extend(words.iter().flat_map(|w| w.to_le_bytes()));
    out.resize(len.next_multiple_of(4), 0);
    out
}

/// Splits a coded tile payload into its parts, checking every length against the payload.
pub fn read_coded_tile(
    payload: &[u8],
    lanes: usize,
    raw_len: usize,
    table: LaneTable,
) -> Result<CodedTile<'_>, String> {
    let head = 4 * lanes + table.bytes(lanes);
    if payload.len() < head + raw_len {
        return Err(format!(
            "payload of {} bytes is shorter than its lane table and raw fields ({} bytes)",
            payload.len(),
            head + raw_len
        ));
    }
    let u32s =
        |b: &[u8]| -> Vec<u32> { b.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect() };
    let states = u32s(&payload[..4 * lanes]);
    let lane_ends = match table {
        LaneTable::Ends32 => u32s(&payload[4 * lanes..head]),
        LaneTable::Counts16 => payload[4 * lanes..4 * lanes + 2 * lanes]
            .chunks_exact(2)
            .scan(0u32, |end, c| {
                *end += u16::from_le_bytes([c[0], c[1]]) as u32;
                Some(*end)
            })
            .collect(),
        LaneTable::Counts8 => {
            let t = 4 * lanes;
            let base = u16::from_le_bytes([payload[t], payload[t + 1]]) as u32;
            payload[t + 2..t + 2 + lanes]
                .iter()
                .scan(0u32, |end, &extra| {
                    *end += base + extra as u32;
                    Some(*end)
                })
                .collect()
        }
    };
    let raw = &payload[head..head + raw_len];
    let word_bytes = &payload[head + raw_len..];
    let total = lane_ends.last().copied().unwrap_or(0) as usize;
    if total * 2 > word_bytes.len() {
        return Err(format!("lane table claims {total} words but only {} bytes follow", word_bytes.len()));
    }
    let words = words_le(&word_bytes[..total * 2]);
    Ok(CodedTile { states, lane_ends, raw, words })
}

/// Views little-endian bytes as `u16` words without copying where the platform allows.
fn words_le(bytes: &[u8]) -> Cow<'_, [u16]> {
    #[cfg(target_endian = "little")]
    {
        // SAFETY: every bit pattern is a valid u16; `align_to` only yields the aligned middle.
        let (pre, mid, post) = unsafe { bytes.align_to::<u16>() };
        if pre.is_empty() && post.is_empty() {
            return Cow::Borrowed(mid);
        }
    }
    Cow::Owned(bytes.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn covers(tiles: &[TileSpan], n: u64) -> bool {
        let mut next = 0;
        for t in tiles {
            if t.start != next || t.count == 0 {
                return false;
            }
            next += t.count;
        }
        next == n
    }

    #[test]
    fn tiles_cover_rows() {
        let t = plan_tiles(&[100, 1000], 4096, 1);
        assert!(covers(&t, 100_000));
        assert!(t.iter().all(|t| t.start % 1000 == 0 && t.count % 1000 == 0));
        let t = plan_tiles(&[3, 10_000], 4096, 32);
        assert!(covers(&t, 30_000));
        assert!(t.iter().all(|t| t.start / 10_000 == (t.start + t.count - 1) / 10_000));
        assert!(t.iter().all(|t| (t.start % 10_000) % 32 == 0));
        assert!(plan_tiles(&[0, 5], 10, 1).is_empty());
        assert!(covers(&plan_tiles(&[], 10, 1), 1));
        assert!(covers(&plan_tiles(&[7], 3, 1), 7));
        // Several whole-row tiles: an even count of near-equal ones.
        let t = plan_tiles(&[1536, 384], 1 << 17, 1);
        assert_eq!(t.iter().map(|t| t.count / 384).collect::<Vec<_>>(), [256; 6]);
        let t = plan_tiles(&[3, 100], 100, 1);
        assert!(covers(&t, 300) && t.len() == 3);
        assert_eq!(plan_tiles(&[384, 384], 1 << 17, 1).len(), 2);
        // 9 rows of at most 2 per tile: six tiles of 2, 2, 2, 1, 1, 1 rows, not five.
        let t = plan_tiles(&[9, 10], 20, 1);
        assert!(covers(&t, 90));
        assert_eq!(t.iter().map(|t| t.count / 10).collect::<Vec<_>>(), [2, 2, 2, 1, 1, 1]);
    }

    #[test]
    fn coded_tile_round_trips() {
        for table in [LaneTable::Ends32, LaneTable::Counts16] {
            for lanes in [2usize, 3] {
                let states = &[70000, 80000, 90000][..lanes];
                let ends = &[1, 3, 3][..lanes];
                let p = write_coded_tile(states, ends, &[1, 2, 3, 4], &[9, 8, 7], table);
                assert_eq!(p.len() % 4, 0);
                assert_eq!(p.len(), 4 * lanes + table.bytes(lanes) + 4 + 8);
                let t = read_coded_tile(&p, lanes, 4, table).unwrap();
                assert_eq!(t.states, states);
                assert_eq!(t.lane_ends, ends);
                assert_eq!(t.raw, &[1, 2, 3, 4]);
                assert_eq!(&t.words[..], &[9, 8, 7]);
                assert!(read_coded_tile(&p[..10], lanes, 4, table).is_err());
            }
        }
        assert_eq!(LaneTable::Counts16.bytes(32), 64);
        assert!(LaneTable::Counts16.fits(65535 * 32, 32) && !LaneTable::Counts16.fits(65535 * 32 + 1, 32));
    }

    #[test]
    fn counts8_tables_round_trip_and_are_chosen_only_when_they_hold_and_are_smaller() {
        let counts = [300u32, 301, 299, 554, 300, 0, 300, 300];
        let ends: Vec<u32> = counts.iter().scan(0, |e, &c| Some(std::mem::replace(e, *e + c) + c)).collect();
        let words: Vec<u16> = (0..*ends.last().unwrap()).map(|w| w as u16).collect();
        let states = vec![1 << 16; 8];
        assert_eq!(LaneTable::smallest_for(&counts, true), LaneTable::Counts16, "554 − 0 > 255");
        let near = [300u32, 301, 299, 554, 300, 299, 300, 300];
        assert_eq!(LaneTable::smallest_for(&near, true), LaneTable::Counts8);
        assert_eq!(LaneTable::smallest_for(&near, false), LaneTable::Counts16);
        assert_eq!(LaneTable::smallest_for(&near[..2], true), LaneTable::Counts16, "not smaller for two lanes");
        assert_eq!(LaneTable::smallest_for(&[70_000, 1], true), LaneTable::Ends32);
        let ends: Vec<u32> = near.iter().scan(0, |e, &c| Some(std::mem::replace(e, *e + c) + c)).collect();
        let words: Vec<u16> = words.iter().copied().chain(0..ends[7] as u16).take(ends[7] as usize).collect();
        let payload = write_coded_tile(&states, &ends, &[], &words, LaneTable::Counts8);
        assert_eq!(LaneTable::Counts8.bytes(8), 12);
        assert_eq!(payload.len(), (32 + 12 + 2 * words.len()).next_multiple_of(4));
        assert_eq!(u16::from_le_bytes([payload[32], payload[33]]), 299, "the base is the smallest count");
        let tile = read_coded_tile(&payload, 8, 0, LaneTable::Counts8).unwrap();
        assert_eq!((tile.lane_ends, tile.states, &tile.words[..]), (ends, states, &words[..]));
        // A base that claims more words than follow is an error, not a read past the payload.
        let mut bad = payload.clone();
        bad[32..34].copy_from_slice(&u16::MAX.to_le_bytes());
        assert!(read_coded_tile(&bad, 8, 0, LaneTable::Counts8).unwrap_err().contains("words"));
        assert!(read_coded_tile(&payload[..40], 8, 0, LaneTable::Counts8).is_err());
        for t in [LaneTable::Ends32, LaneTable::Counts16, LaneTable::Counts8] {
            assert_eq!(LaneTable::from_code(t.code()), Some(t));
        }
        assert_eq!(LaneTable::from_code(3), None);
    }
}
