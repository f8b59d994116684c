//! The safetensors reader of `ember compress` (one file, or a model directory read through its
//! `model.safetensors.index.json`), then `verify --against` the same checkpoint and `decompress`:
//! on any input the commands must succeed or fail with an error — never panic, hang, read outside
//! the file or allocate beyond a small multiple of its size. A container `compress` wrote must
//! verify (bit-exact against its source for `lossless`/`raw`) and decompress.
//!
//! Input: a flag byte (bit 0: model directory with an index; bits 1–2: scheme), then, for a
//! directory, a `u16` index length and the index JSON; the rest is the safetensors file (written
//! as `model.safetensors` and as the shard `model-00001-of-00002.safetensors`).
#![no_main]

use std::ffi::{OsStr, OsString};

use libfuzzer_sys::fuzz_target;

#[path = "../common/mod.rs"]
mod common;
use common::Bytes;

fuzz_target!(|data: &[u8]| {
    let mut b = Bytes::new(data);
    let flag = b.u8();
    let dir = common::fresh_dir("safetensors_read");
    let model = dir.join("model");
    std::fs::create_dir(&model).expect("model directory");
    let input = if flag & 1 == 1 {
        let n = b.u16() as usize;
        common::write_in(&model, "model.safetensors.index.json", b.take(n));
        let file = b.rest();
        common::write_in(&model, "model.safetensors", file);
        common::write_in(&model, "model-00001-of-00002.safetensors", file);
        model
    } else {
        common::write_in(&model, "model.safetensors", b.rest())
    };
    let out = dir.join("model.ember");
    let scheme = ["lossless", "int8", "int4", "raw"][(flag as usize >> 1) % 4];
    let args: [OsString; 10] = [
        "compress".into(),
        input.clone().into_os_string(),
        "-o".into(),
        out.clone().into_os_string(),
        "--threads=1".into(),
        "--min-elems=0".into(),
        format!("--scheme={scheme}").into(),
        "--tile-elems=128".into(),
        "--lanes=4".into(),
        "--int4-block=8".into(),
    ];
    if common::ember(args).is_err() {
        return;
    }
    // Bit-exact schemes must match the source; quantised ones only within error bounds, which
    // non-finite or extreme source values legitimately break, so for them only the container's
    // own checks must pass.
    let exact = matches!(scheme, "lossless" | "raw");
    let args = [OsStr::new("verify"), out.as_os_str(), "--against".as_ref(), input.as_os_str(), "--threads=1".as_ref()];
    match common::ember(args) {
        Err(e) if exact => panic!("a {scheme} container `ember compress` wrote does not match its source: {e:#}"),
        Err(_) => {
            if let Err(e) = common::ember([OsStr::new("verify"), out.as_os_str(), "--threads=1".as_ref()]) {
                panic!("a container `ember compress` wrote does not verify: {e:#}");
            }
        }
        Ok(()) => {}
    }
    let back = dir.join("back.safetensors");
    let args = [OsStr::new("decompress"), out.as_os_str(), "-o".as_ref(), back.as_os_str(), "--threads=1".as_ref()];
    if let Err(e) = common::ember(args) {
        panic!("a container `ember compress` wrote does not decompress: {e:#}");
    }
});
