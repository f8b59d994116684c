//! Any byte string, opened as a GGUF file, must give `Ok` or an error — never a panic, a hang, an
//! out-of-bounds read or an allocation beyond a small multiple of the file's length. Everything a
//! reader does with an opened file is exercised: metadata accessors, every tensor's bytes and its
//! dequantization, HF names, and the Llama hyper-parameters with their `config.json`.
#![no_main]

use ember_gguf::{names, GgufFile, LlamaHParams, MetaValue};
use libfuzzer_sys::fuzz_target;

#[path = "../common/mod.rs"]
mod common;

fn touch(v: &MetaValue) {
    let _ = (v.type_id(), v.as_u32(), v.as_u64(), v.as_i64(), v.as_f32(), v.as_bool(), v.as_str());
    let _ = (v.as_str_array(), v.as_f32_array(), v.as_i64_array());
}

fuzz_target!(|data: &[u8]| {
    let path = common::write_in(common::scratch(), "fuzz.gguf", data);
    let Ok(file) = GgufFile::open(&path) else { return };
    let _ = (file.version(), file.architecture(), file.data_start(), format!("{file:?}"));
    for v in file.metadata().values() {
        touch(v);
    }
    for t in file.tensors() {
        assert_eq!(file.tensor(&t.name).ok(), Some(t));
        let bytes = file.raw_bytes(t).expect("ranges were validated at open");
        assert_eq!(Some(bytes.len() as u64), t.n_bytes());
        let _ = names::hf_name(&t.name);
        if let Ok(values) = file.dequantize(&t.name) {
            assert_eq!(values.len() as u64, t.n_elems());
        }
    }
    if let Ok(hp) = LlamaHParams::from_gguf(&file) {
        let _ = hp.to_hf_config_json().to_string();
    }
});
