//! The rANS decoder and the tile parser on arbitrary input (past any checksum): they must return
//! `Ok` or an error, never panic or read out of bounds.
#![no_main]

use ember_codec::rans::{decode_lanes, FrequencyTable, LaneOutput};
use ember_codec::tile::{read_coded_tile, LaneTable};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&params, rest)) = data.split_first() else { return };
    let lanes = 1usize << (params % 7);
    let prob_bits = 8 + (params as u32 >> 3) % 5;
    // A valid table from the first 16 bytes as counts.
    let counts: Vec<u64> = rest.iter().take(16).map(|&b| b as u64).collect();
    let Ok(table) = FrequencyTable::from_counts(&counts, prob_bits) else { return };
    let payload = rest.get(16..).unwrap_or(&[]);
    let lane_table = if lanes % 2 == 0 { LaneTable::Counts16 } else { LaneTable::Ends32 };
    let Ok(tile) = read_coded_tile(payload, lanes, 0, lane_table) else { return };
    let count = (payload.len() * 3) % 5000;
    let mut out = vec![0u8; count];
    let _ =
        decode_lanes(&tile.states, &tile.lane_ends, &tile.words, &table.decode_table(), LaneOutput::Symbols(&mut out));
    let raw = vec![0u8; count];
    let mut out2 = vec![0u8; 2 * count];
    let _ = decode_lanes(
        &tile.states,
        &tile.lane_ends,
        &tile.words,
        &table.decode_table(),
        LaneOutput::Bf16 { raw: &raw, out: &mut out2 },
    );
});
