//! Bad input never panics, hangs or allocates wildly: every corruption is a clear error naming
//! the file (and the tensor where there is one).

use std::path::{Path, PathBuf};

use ember_codec::container::index::{read_header_json, replace_header_json};
use ember_codec::container::{Preamble, FLAG_HEADER_ZSTD, PREAMBLE_LEN};
use ember_codec::{encode_tensor, CodecError, Container, ContainerWriter, Dtype, EncodeOptions, SchemeKind};

fn sample_file(dir: &Path) -> (PathBuf, Vec<u8>) {
    let path = dir.join("good.ember");
    let opts = EncodeOptions { tile_elems: 512, ..EncodeOptions::default() };
    let vals: Vec<u8> = (0..4096u32)
        .flat_map(|i| half::bf16::from_f32(((i * 7919) % 1013) as f32 * 1e-3 - 0.5).to_bits().to_le_bytes())
        .collect();
    let f32s: Vec<u8> = (0..600u32).flat_map(|i| (i as f32 * 0.25 - 3.0).to_le_bytes()).collect();
    let mut w = ContainerWriter::create(&path).unwrap();
    w.add(encode_tensor("layers.0.weight", Dtype::BF16, &[64, 64], &vals, SchemeKind::Lossless, &opts).unwrap())
        .unwrap();
    w.add(encode_tensor("layers.0.q", Dtype::F32, &[20, 30], &f32s, SchemeKind::Int8, &opts).unwrap()).unwrap();
    w.add(encode_tensor("layers.0.q4", Dtype::F32, &[20, 30], &f32s, SchemeKind::Int4, &opts).unwrap()).unwrap();
    w.add(encode_tensor("norm", Dtype::F32, &[600], &f32s, SchemeKind::Raw, &opts).unwrap()).unwrap();
    w.finish().unwrap();
    let bytes = std::fs::read(&path).unwrap();
    (path, bytes)
}

/// Opens `bytes` as a file and decodes everything; returns the first error.
fn open_and_decode(dir: &Path, bytes: &[u8]) -> Result<(), CodecError> {
    let path = dir.join("bad.ember");
    std::fs::write(&path, bytes).unwrap();
    let c = Container::open(&path)?;
    c.verify_checksums()?;
    for t in c.tensors() {
        c.decode(t)?;
    }
    Ok(())
}

fn assert_names_file(e: &CodecError) {
    let msg = e.to_string();
    assert!(msg.contains("bad.ember"), "error does not name the file: {msg}");
}

/// Rewrites the header (keeping a valid checksum), as a forger or a buggy writer would.
fn with_header(bytes: &[u8], edit: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
    let name = std::path::Path::new("bad.ember");
    let mut v: serde_json::Value = serde_json::from_slice(&read_header_json(name, bytes).unwrap()).unwrap();
    edit(&mut v);
    replace_header_json(name, bytes, &serde_json::to_vec(&v).unwrap()).unwrap()
}

#[test]
fn the_sample_is_valid() {
    let dir = tempfile::tempdir().unwrap();
    let (_, bytes) = sample_file(dir.path());
    open_and_decode(dir.path(), &bytes).unwrap();
}

#[test]
fn every_truncation_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let (_, bytes) = sample_file(dir.path());
    let step = (bytes.len() / 97).max(1);
    for cut in (0..bytes.len()).step_by(step).chain([1, 8, 63, 64, 65, bytes.len() - 1]) {
        let e = open_and_decode(dir.path(), &bytes[..cut]).expect_err("truncated file accepted");
        assert_names_file(&e);
    }
}

#[test]
fn every_flipped_byte_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let (_, bytes) = sample_file(dir.path());
    let step = (bytes.len() / 300).max(1);
    for pos in (0..bytes.len()).step_by(step) {
        if (48..PREAMBLE_LEN).contains(&pos) {
            continue; // reserved preamble bytes are ignored by readers
        }
        let mut b = bytes.clone();
        b[pos] ^= 0x41;
        match open_and_decode(dir.path(), &b) {
            Ok(()) => {
                // Only padding between tiles may change without consequence.
                let c = Container::open(dir.path().join("bad.ember")).unwrap();
                let inside = c.tensors().iter().any(|t| {
                    t.tiles.iter().any(|r| (r.offset..r.offset + r.len).contains(&(pos as u64)))
                        || t.scales.is_some_and(|s| (s.offset..s.offset + s.len).contains(&(pos as u64)))
                });
                assert!(!inside, "flipped byte {pos} inside data went unnoticed");
            }
            Err(e) => assert_names_file(&e),
        }
    }
}

#[test]
fn wrong_magic_and_version_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let (_, bytes) = sample_file(dir.path());
    let mut b = bytes.clone();
    b[1] = b'X';
    assert!(matches!(open_and_decode(dir.path(), &b), Err(CodecError::BadMagic { .. })));
    let mut b = bytes.clone();
    b[8] = 9;
    let e = open_and_decode(dir.path(), &b).unwrap_err();
    assert!(matches!(e, CodecError::UnsupportedVersion { found: 9, .. }), "{e}");
    assert!(open_and_decode(dir.path(), b"").is_err());
    assert!(open_and_decode(dir.path(), b"PK\x03\x04 this is a zip").is_err());
}

#[test]
fn tile_corruption_names_tensor_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let (path, bytes) = sample_file(dir.path());
    let c = Container::open(&path).unwrap();
    let tile = c.get("layers.0.q").unwrap().tiles[1];
    drop(c);
    let mut b = bytes.clone();
    b[tile.offset as usize + 40] ^= 1;
    let e = open_and_decode(dir.path(), &b).unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("layers.0.q") && msg.contains(&tile.offset.to_string()), "{msg}");
}

#[test]
fn forged_headers_are_rejected_before_any_allocation() {
    let dir = tempfile::tempdir().unwrap();
    let (_, bytes) = sample_file(dir.path());
    type Edit = Box<dyn FnOnce(&mut serde_json::Value)>;
    let cases: Vec<(&str, Edit)> = vec![
        ("huge shape", Box::new(|v| v["tensors"][0]["shape"] = serde_json::json!([1u64 << 40, 1u64 << 40]))),
        ("shape without data", Box::new(|v| v["tensors"][0]["shape"] = serde_json::json!([1u64 << 30, 64]))),
        ("tile past the end", Box::new(|v| v["tensors"][0]["tiles"][0][0] = serde_json::json!(1u64 << 50))),
        ("overflowing tile", Box::new(|v| v["tensors"][0]["tiles"][0][1] = serde_json::json!(u64::MAX))),
        ("tile count too large", Box::new(|v| v["tensors"][0]["tiles"][0][3] = serde_json::json!(1u64 << 40))),
        ("gap between tiles", Box::new(|v| v["tensors"][0]["tiles"][1][2] = serde_json::json!(7))),
        ("lanes not a power of two", Box::new(|v| v["tensors"][0]["scheme"]["coder"]["lanes"] = serde_json::json!(3))),
        ("too many lanes", Box::new(|v| v["tensors"][0]["scheme"]["coder"]["lanes"] = serde_json::json!(1u64 << 31))),
        ("bad table sum", Box::new(|v| v["tensors"][0]["scheme"]["coder"]["freqs"][0] = serde_json::json!(99999))),
        ("short table", Box::new(|v| v["tensors"][0]["scheme"]["coder"]["freqs"] = serde_json::json!([4096]))),
        ("prob bits", Box::new(|v| v["tensors"][0]["scheme"]["coder"]["prob_bits"] = serde_json::json!(30))),
        ("unknown dtype", Box::new(|v| v["tensors"][0]["dtype"] = serde_json::json!("F8_E4M3"))),
        ("unknown scheme", Box::new(|v| v["tensors"][0]["scheme"]["kind"] = serde_json::json!("zstd"))),
        ("unknown predictor", Box::new(|v| v["tensors"][0]["scheme"]["predictor"] = serde_json::json!("left"))),
        ("lossless on ints", Box::new(|v| v["tensors"][0]["dtype"] = serde_json::json!("I16"))),
        (
            "missing scales",
            Box::new(|v| v["tensors"][1].as_object_mut().unwrap().remove("scales").map(|_| ()).unwrap_or(())),
        ),
        ("short scales", Box::new(|v| v["tensors"][1]["scales"]["len"] = serde_json::json!(4))),
        ("int4 block 0", Box::new(|v| v["tensors"][2]["scheme"]["block"] = serde_json::json!(0))),
        ("raw tile too short", Box::new(|v| v["tensors"][3]["shape"] = serde_json::json!([6000]))),
        ("duplicate names", Box::new(|v| v["tensors"][1]["name"] = v["tensors"][0]["name"].clone())),
        ("not an object", Box::new(|v| *v = serde_json::json!([1, 2, 3]))),
    ];
    for (what, edit) in cases {
        let forged = with_header(&bytes, edit);
        let e = open_and_decode(dir.path(), &forged).expect_err(what);
        assert_names_file(&e);
        assert!(!matches!(e, CodecError::Io { .. }), "{what}: {e}");
    }
}

#[test]
fn a_killed_writer_leaves_no_file_under_the_target_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("never.ember");
    let mut w = ContainerWriter::create(&path).unwrap();
    let data = vec![0u8; 400];
    w.add(encode_tensor("x", Dtype::F32, &[100], &data, SchemeKind::Raw, &EncodeOptions::default()).unwrap()).unwrap();
    drop(w); // as if the process died before `finish`
    assert!(!path.exists());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "temporary file left behind");
}

#[test]
fn encode_rejects_bad_requests_clearly() {
    let o = EncodeOptions::default();
    let e = encode_tensor("w", Dtype::F32, &[2, 2], &[0u8; 12], SchemeKind::Lossless, &o).unwrap_err();
    assert!(e.to_string().contains("`w`") && e.to_string().contains("16"), "{e}");
    let e = encode_tensor("ids", Dtype::I64, &[2], &[0u8; 16], SchemeKind::Int8, &o).unwrap_err();
    assert!(e.to_string().contains("I64"), "{e}");
    let nan = f32::NAN.to_le_bytes().repeat(4);
    let e = encode_tensor("w", Dtype::F32, &[2, 2], &nan, SchemeKind::Int4, &o).unwrap_err();
    assert!(e.to_string().contains("lossless"), "{e}");
    let e =
        encode_tensor("w", Dtype::F32, &[1], &[0u8; 4], SchemeKind::Lossless, &EncodeOptions { lanes: 3, ..o.clone() })
            .unwrap_err();
    assert!(e.to_string().contains("power of two"), "{e}");
    let e = encode_tensor("w", Dtype::F32, &[u64::MAX, 2], &[], SchemeKind::Raw, &o).unwrap_err();
    assert!(e.to_string().contains("overflow"), "{e}");
}

mod arbitrary_payloads {
    use ember_codec::rans::{decode_lanes, FrequencyTable, LaneOutput};
    use ember_codec::tile::read_coded_tile;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        /// The same property as the `rans_decode` fuzz target: whatever bytes a tile holds, the
        /// parser and the decoders (scalar and SIMD) return, and never read out of bounds.
        #[test]
        fn decoding_garbage_returns(lanes_log in 0u32..7, prob_bits in 8u32..=12, count in 0usize..3000,
                                    counts in proptest::collection::vec(0u64..50, 1..40),
                                    states in proptest::collection::vec(any::<u32>(), 64),
                                    mut ends in proptest::collection::vec(0u32..600, 64),
                                    words in proptest::collection::vec(any::<u16>(), 0..600)) {
            let Ok(table) = FrequencyTable::from_counts(&counts, prob_bits) else { return Ok(()) };
            // A structurally valid tile (sorted lane ends within the words) with garbage content.
            let lanes = 1usize << lanes_log;
            ends.truncate(lanes);
            ends.iter_mut().for_each(|e| *e = (*e).min(words.len() as u32));
            ends.sort_unstable();
            let payload = ember_codec::tile::write_coded_tile(&states[..lanes], &ends, &[], &words, Default::default());
            let tile = read_coded_tile(&payload, lanes, 0, Default::default()).expect("well-formed tile");
            let mut out = vec![0u8; count];
            let a = decode_lanes(&tile.states, &tile.lane_ends, &tile.words, &table.decode_table(), LaneOutput::Symbols(&mut out));
            let raw = vec![0x5au8; count];
            let mut out2 = vec![0u8; 2 * count];
            let b = decode_lanes(&tile.states, &tile.lane_ends, &tile.words, &table.decode_table(), LaneOutput::Bf16 { raw: &raw, out: &mut out2 });
            prop_assert_eq!(&a, &b);
            // Garbage almost never decodes cleanly; when it does, both outputs agree.
            if a.is_ok() {
                for (s, pair) in out.iter().zip(out2.chunks(2)) {
                    prop_assert_eq!((u16::from_le_bytes([pair[0], pair[1]]) >> 7) as u8, *s);
                }
            }
        }
    }
}

/// A file whose `layers.0.weight` is version-2 `lossless` with joint mantissa bits (values in
/// `[1, 1.25)·2^e` make the encoder pick `joint_bits` 2).
fn joint_sample(dir: &Path) -> Vec<u8> {
    let path = dir.join("joint.ember");
    let vals: Vec<u8> = (0..8192u32)
        .flat_map(|i| {
            let u = ((i.wrapping_mul(2654435761) >> 8) as f32) / (1u32 << 24) as f32;
            half::bf16::from_f32((1.0 + u / 4.0) * (2f32).powi(-((i % 5) as i32))).to_bits().to_le_bytes()
        })
        .collect();
    let opts = EncodeOptions { tile_elems: 2048, ..EncodeOptions::default() };
    let mut w = ContainerWriter::create(&path).unwrap();
    w.plain_header();
    w.add(encode_tensor("layers.0.weight", Dtype::BF16, &[64, 128], &vals, SchemeKind::Lossless, &opts).unwrap())
        .unwrap();
    w.finish().unwrap();
    std::fs::read(&path).unwrap()
}

fn scheme_of(v: &mut serde_json::Value) -> &mut serde_json::Value {
    &mut v["tensors"][0]["scheme"]
}

#[test]
fn version_2_fields_are_validated() {
    let dir = tempfile::tempdir().unwrap();
    let good = joint_sample(dir.path());
    open_and_decode(dir.path(), &good).unwrap();
    let c = Container::open(dir.path().join("bad.ember")).unwrap();
    let s = &c.get("layers.0.weight").unwrap().scheme;
    assert_eq!(s.joint_bits(), 2, "the sample should exercise joint coding");
    let reason = |edit: &dyn Fn(&mut serde_json::Value)| {
        let e = open_and_decode(dir.path(), &with_header(&good, |v| edit(v))).expect_err("accepted");
        assert_names_file(&e);
        assert!(e.to_string().contains("layers.0.weight"), "{e}");
        e.to_string()
    };
    // Symbol values out of order, out of range, or a list of the wrong length.
    let e = reason(&|v| {
        let syms = scheme_of(v)["symbols"].as_array_mut().unwrap();
        syms.swap(0, 1);
    });
    assert!(e.contains("increase strictly"), "{e}");
    let e = reason(&|v| {
        let syms = scheme_of(v)["symbols"].as_array_mut().unwrap();
        let last = syms.len() - 1;
        syms[last] = serde_json::json!(1u32 << 12);
    });
    assert!(e.contains("below 1024"), "{e}");
    let e = reason(&|v| {
        scheme_of(v)["symbols"].as_array_mut().unwrap().pop();
    });
    assert!(e.contains("frequency table has"), "{e}");
    // Joint widths past what the dtype allows, or without a symbol list.
    let e = reason(&|v| scheme_of(v)["joint_bits"] = serde_json::json!(5));
    assert!(e.contains("joint_bits 5"), "{e}");
    let e = reason(&|v| {
        scheme_of(v).as_object_mut().unwrap().remove("symbols");
    });
    assert!(e.contains("without a symbol list") || e.contains("frequency table has"), "{e}");
    // Lane tables that do not describe the tiles: another lane count (the lane states and
    // counts no longer line up, so a tile fails to decode exactly).
    let e = reason(&|v| scheme_of(v)["coder"]["lanes"] = serde_json::json!(16));
    assert!(e.contains("tile") || e.contains("lane"), "{e}");
    // An unknown lane table fails the header's parse (which names the file).
    let bad = with_header(&good, |v| scheme_of(v)["coder"]["lane_table"] = serde_json::json!("counts4"));
    let e = open_and_decode(dir.path(), &bad).unwrap_err();
    assert_names_file(&e);
    assert!(e.to_string().contains("unknown variant `counts4`"), "{e}");
    // The version-5 table in a version-2 file names the version it needs.
    let bad = with_header(&good, |v| scheme_of(v)["coder"]["lane_table"] = serde_json::json!("counts8"));
    let e = open_and_decode(dir.path(), &bad).unwrap_err();
    assert!(e.to_string().contains("version-2 file cannot use the version-5 lane table `counts8`"), "{e}");
}

#[test]
fn a_version_1_file_cannot_carry_version_2_fields() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = joint_sample(dir.path());
    bytes[8..12].copy_from_slice(&1u32.to_le_bytes());
    let e = open_and_decode(dir.path(), &bytes).unwrap_err();
    assert_names_file(&e);
    assert!(e.to_string().contains("version-1 file cannot use"), "{e}");
    // And a version this build does not know names what it reads.
    bytes[8..12].copy_from_slice(&6u32.to_le_bytes());
    let e = open_and_decode(dir.path(), &bytes).unwrap_err();
    assert!(e.to_string().contains("format version 6") && e.to_string().contains("versions 1 to 5"), "{e}");
}

/// `bytes` with its preamble edited by `edit` (the header's checksum left as it is).
fn with_preamble(bytes: &[u8], edit: impl FnOnce(&mut Preamble)) -> Vec<u8> {
    let mut pre = Preamble::parse(bytes[..PREAMBLE_LEN].try_into().unwrap()).unwrap();
    edit(&mut pre);
    let mut out = bytes.to_vec();
    out[..PREAMBLE_LEN].copy_from_slice(&pre.to_bytes());
    out
}

#[test]
fn compressed_headers_are_bounded_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let (_, bytes) = sample_file(dir.path());
    let pre = Preamble::parse(bytes[..PREAMBLE_LEN].try_into().unwrap()).unwrap();
    assert_eq!((pre.version, pre.flags), (5, FLAG_HEADER_ZSTD), "the writer compresses headers by default");
    assert!(pre.header_json_len > pre.header_len, "{pre:?}");
    let reason = |b: &[u8]| {
        let e = open_and_decode(dir.path(), b).unwrap_err();
        assert_names_file(&e);
        e.to_string()
    };
    // A compressed header under a preamble that predates it.
    let e = reason(&with_preamble(&bytes, |p| p.version = 4));
    assert!(e.contains("version-4 file cannot have a compressed header"), "{e}");
    // Flags this build does not know.
    let e = reason(&with_preamble(&bytes, |p| p.flags |= 4));
    assert!(e.contains("unknown preamble flags 0x4"), "{e}");
    // A claimed length beyond what the stored bytes may expand to: refused before allocating.
    let e = reason(&with_preamble(&bytes, |p| p.header_json_len = u64::MAX));
    assert!(e.contains("claims") && e.contains(&u64::MAX.to_string()), "{e}");
    let e = reason(&with_preamble(&bytes, |p| p.header_json_len = 0));
    assert!(e.contains("claims 0 bytes"), "{e}");
    // A length that is off by one either way.
    for delta in [-1i64, 1] {
        let e = reason(&with_preamble(&bytes, |p| p.header_json_len = p.header_json_len.saturating_add_signed(delta)));
        assert!(e.contains("header"), "{e}");
    }
    // The plain JSON stored under the compressed flag (checksum recomputed): not a zstd frame.
    let json = read_header_json(Path::new("bad.ember"), &bytes).unwrap();
    let mut forged = bytes[..pre.header_offset as usize].to_vec();
    forged.extend_from_slice(&json);
    let forged = with_preamble(&forged, |p| {
        p.header_len = json.len() as u64;
        p.header_xxh3 = xxhash_rust::xxh3::xxh3_64(&json);
    });
    let e = reason(&forged);
    assert!(e.contains("does not decompress"), "{e}");
    // The same JSON with the flag cleared reads: a plain header is still valid in version 5.
    let plain = with_preamble(&forged, |p| {
        p.flags = 0;
        p.header_json_len = 0;
    });
    open_and_decode(dir.path(), &plain).unwrap();
    // A plain header must not claim a decompressed length.
    let e = reason(&with_preamble(&plain, |p| p.header_json_len = 5));
    assert!(e.contains("plain header"), "{e}");
}
