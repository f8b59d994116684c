//! Crafted tiles with recomputed checksums (what an attacker ships): every path refuses them
//! with an error naming the file, the tensor and the tile — when the batch is built (structure),
//! and through the one-time tile check on the device that decodes it (exact lane ends) — instead
//! of panicking on the CPU path or decoding garbage on a GPU.

#[path = "../../tests/support/forge.rs"]
mod forge;

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use ember_codec::{encode_tensor, Container, ContainerWriter, Dtype, EncodeOptions, SchemeKind};
use ember_kernels::batch::DecodeBatch;
use ember_kernels::op::{decode_batch_to_data, try_decode_batch, validate_batch};

const LOSSLESS: &str = "layers.3.mlp.down_proj.weight";
const INT8: &str = "layers.3.mlp.up_proj.weight";

fn vulkan() -> Device {
    ember_kernels::device::vulkan_device()
        .expect("a Vulkan device (lavapipe: apt-get install mesa-vulkan-drivers libvulkan1)")
}

fn sample(dir: &Path) -> Vec<u8> {
    let path = dir.join("good.ember");
    let opts = EncodeOptions { tile_elems: 2048, lanes: 32, min_symbols_per_lane: 0, ..EncodeOptions::default() };
    let bf16 = ember_codec::synthetic::float_test_bytes(Dtype::BF16, 64 * 256, 11, false);
    let f32s = ember_codec::synthetic::float_test_bytes(Dtype::F32, 32 * 128, 12, false);
    let mut w = ContainerWriter::create(&path).unwrap();
    w.add(encode_tensor(LOSSLESS, Dtype::BF16, &[64, 256], &bf16, SchemeKind::Lossless, &opts).unwrap()).unwrap();
    w.add(encode_tensor(INT8, Dtype::F32, &[32, 128], &f32s, SchemeKind::Int8, &opts).unwrap()).unwrap();
    w.finish().unwrap();
    std::fs::read(&path).unwrap()
}

fn write(dir: &Path, bytes: &[u8]) -> PathBuf {
    let path = dir.join("crafted.ember");
    std::fs::write(&path, bytes).unwrap();
    path
}

/// Opens a crafted file: its checksums pass (the forger recomputed them).
fn open(path: &Path) -> Container {
    let file = Container::open(path).unwrap();
    file.verify_checksums().expect("the forged checksums pass");
    file
}

fn batch_of(file: &Container, names: &[&str]) -> Result<DecodeBatch, ember_kernels::KernelError> {
    let entries: Vec<_> = names.iter().map(|n| file.get(n).unwrap()).collect();
    DecodeBatch::new(file, &entries)
}

fn assert_names(e: &dyn std::fmt::Display, tensor: &str, tile: usize, why: &str) {
    let msg = e.to_string();
    assert!(
        msg.contains("crafted.ember")
            && msg.contains(tensor)
            && msg.contains(&format!("tile {tile}:"))
            && msg.contains(why),
        "{msg}"
    );
}

#[test]
fn the_untouched_sample_passes_every_check() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), &sample(dir.path()));
    let file = open(&path);
    let batch = batch_of(&file, &[LOSSLESS]).unwrap();
    validate_batch(&batch, &Device::flex()).unwrap();
    validate_batch(&batch, &vulkan()).unwrap();
    let batch = batch_of(&file, &[INT8]).unwrap();
    validate_batch(&batch, &vulkan()).unwrap();
}

#[test]
fn zeroed_lane_states_are_refused_when_the_batch_is_built() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = forge::forge_tile(&sample(dir.path()), LOSSLESS, 2, |p| forge::set_states(p, 32, 0));
    let file = open(&write(dir.path(), &bytes));
    let e = batch_of(&file, &[LOSSLESS]).unwrap_err();
    assert_names(&e, LOSSLESS, 2, "lane 0 starts with a denormalised state");
}

#[test]
fn a_lane_end_past_the_words_is_refused_when_the_batch_is_built() {
    let dir = tempfile::tempdir().unwrap();
    // Version 5 tiles store a 16-bit base of the lane word counts after the 32 states.
    let sample = sample(dir.path());
    let table = open(&write(dir.path(), &sample)).get(INT8).unwrap().scheme.coder().unwrap().lane_table;
    assert_eq!(table, ember_codec::tile::LaneTable::Counts8);
    let bytes = forge::forge_tile(&sample, INT8, 1, |p| {
        p[4 * 32..4 * 32 + 2].copy_from_slice(&u16::MAX.to_le_bytes());
    });
    let file = open(&write(dir.path(), &bytes));
    let e = batch_of(&file, &[INT8]).unwrap_err();
    assert_names(&e, INT8, 1, "words");
}

#[test]
fn a_tile_that_does_not_decode_exactly_is_an_error_on_the_cpu_path() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = forge::forge_tile(&sample(dir.path()), LOSSLESS, 3, forge::nudge_first_state);
    let file = open(&write(dir.path(), &bytes));
    // Its structure is sound: only a decode can tell.
    let batch = batch_of(&file, &[LOSSLESS]).unwrap();
    let why = "did not decode to its exact end";
    assert_names(&validate_batch(&batch, &Device::flex()).unwrap_err(), LOSSLESS, 3, why);
    assert_names(&decode_batch_to_data(&batch, true).unwrap_err(), LOSSLESS, 3, why);
    assert_names(&try_decode_batch(&batch, &Device::flex(), false).unwrap_err(), LOSSLESS, 3, why);
}

#[test]
fn the_device_tile_check_finds_what_the_cpu_decoder_finds() {
    let dir = tempfile::tempdir().unwrap();
    let good = sample(dir.path());
    let device = vulkan();
    for (tensor, tile) in [(LOSSLESS, 5), (LOSSLESS, 0), (INT8, 1)] {
        let bytes = forge::forge_tile(&good, tensor, tile, forge::nudge_first_state);
        let file = open(&write(dir.path(), &bytes));
        let batch = batch_of(&file, &[tensor]).unwrap();
        let e = validate_batch(&batch, &device).unwrap_err();
        assert_names(&e, tensor, tile, "does not decode to its exact end");
        assert!(try_decode_batch(&batch, &device, false).is_err());
    }
    // Words consumed short of the lane's end: drop lane 7's last word by moving the end back
    // and the later lanes' starts with it, as a forger who re-laid the table would.
    // (Version 2: lane 7's word count one less, lane 8's one more.)
    let bytes = forge::forge_tile(&good, LOSSLESS, 4, |p| {
        let count = |j: usize| 4 * 32 + 2 * j;
        let c7 = u16::from_le_bytes(p[count(7)..count(7) + 2].try_into().unwrap());
        let c8 = u16::from_le_bytes(p[count(8)..count(8) + 2].try_into().unwrap());
        p[count(7)..count(7) + 2].copy_from_slice(&(c7 - 1).to_le_bytes());
        p[count(8)..count(8) + 2].copy_from_slice(&(c8 + 1).to_le_bytes());
    });
    let file = open(&write(dir.path(), &bytes));
    let batch = batch_of(&file, &[LOSSLESS]).unwrap();
    assert_names(&validate_batch(&batch, &device).unwrap_err(), LOSSLESS, 4, "exact end");
    assert_names(&validate_batch(&batch, &Device::flex()).unwrap_err(), LOSSLESS, 4, "exact end");
}

#[test]
fn a_failing_tile_in_a_shared_batch_is_named_by_its_own_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("two.ember");
    let opts = EncodeOptions { tile_elems: 1024, ..EncodeOptions::default() };
    let mut w = ContainerWriter::create(&path).unwrap();
    for (i, name) in ["a.weight", "b.weight"].iter().enumerate() {
        let v = ember_codec::synthetic::float_test_bytes(Dtype::BF16, 4096, 20 + i as u64, false);
        w.add(encode_tensor(name, Dtype::BF16, &[16, 256], &v, SchemeKind::Lossless, &opts).unwrap()).unwrap();
    }
    w.finish().unwrap();
    let bytes = forge::forge_tile(&std::fs::read(&path).unwrap(), "b.weight", 2, forge::nudge_first_state);
    let file = open(&write(dir.path(), &bytes));
    let batch = batch_of(&file, &["a.weight", "b.weight"]).unwrap();
    for device in [Device::flex(), vulkan()] {
        let e = validate_batch(&batch, &device).unwrap_err();
        assert_names(&e, "b.weight", 2, "exact end");
        assert!(!e.to_string().contains("a.weight"), "{e}");
    }
}
