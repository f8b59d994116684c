//! A `DecodeBatch` built from a fuzzed container and decoded through the Burn op on the Flex
//! (CPU) backend: building, validating and decoding a batch must give `Ok` or an error — never a
//! panic, a hang, an out-of-bounds access or an oversized allocation — and a batch that validates
//! must decode (`decode_batch`) to exactly the values the codec's own reader gives.
//!
//! Input: a flag byte, a `u16` header length, the header JSON, then the file's data bytes (placed
//! right after the preamble, so the header's absolute offsets point into them). With bit 0 of the
//! flag set, every tile and scales checksum in a header that parses is recomputed from the data,
//! so the tiles' contents — not their checksums — are what gets fuzzed. Bit 1 asks for 16-bit
//! output where the batch allows it.
#![no_main]

use burn::tensor::Device;
use ember_codec::container::{Header, Preamble, DATA_ALIGN, FORMAT_VERSION, PREAMBLE_LEN};
use ember_codec::{Container, Dtype};
use ember_kernels::batch::DecodeBatch;
use ember_kernels::op::{decode_batch, try_decode_batch, validate_batch};
use libfuzzer_sys::fuzz_target;
use xxhash_rust::xxh3::xxh3_64;

#[path = "../common/mod.rs"]
mod common;
use common::Bytes;

/// The container file for `header` and `data`, checksums fixed when `fix` is set.
fn container(header: &[u8], data: &[u8], fix: bool) -> Vec<u8> {
    let mut file = vec![0u8; PREAMBLE_LEN];
    file.extend_from_slice(data);
    let mut header = header.to_vec();
    if fix {
        if let Ok(mut h) = serde_json::from_slice::<Header>(&header) {
            let sum = |offset: u64, len: u64| -> Option<u64> {
                let end = offset.checked_add(len)?;
                Some(xxh3_64(file.get(usize::try_from(offset).ok()?..usize::try_from(end).ok()?)?))
            };
            for t in &mut h.tensors {
                for r in &mut t.tiles {
                    r.xxh3 = sum(r.offset, r.len).unwrap_or(r.xxh3);
                }
                if let Some(s) = &mut t.scales {
                    s.xxh3 = sum(s.offset, s.len).unwrap_or(s.xxh3);
                }
            }
            header = serde_json::to_vec(&h).expect("a parsed header serializes");
        }
    }
    file.resize((file.len() as u64).next_multiple_of(DATA_ALIGN) as usize, 0);
    let header_offset = file.len() as u64;
    file.extend_from_slice(&header);
    let pre = Preamble {
        version: FORMAT_VERSION,
        flags: 0,
        header_offset,
        header_len: header.len() as u64,
        header_xxh3: xxh3_64(&header),
        header_json_len: 0,
    };
    file[..PREAMBLE_LEN].copy_from_slice(&pre.to_bytes());
    file
}

/// Same values, NaNs of any payload counting as equal.
fn same_f32(a: u32, b: u32) -> bool {
    a == b || (f32::from_bits(a).is_nan() && f32::from_bits(b).is_nan())
}

fuzz_target!(|input: &[u8]| {
    let mut b = Bytes::new(input);
    let flag = b.u8();
    let n = b.u16() as usize;
    let header = b.take(n);
    let bytes = container(header, b.rest(), flag & 1 == 1);
    let path = common::write_in(common::scratch(), "batch.ember", &bytes);
    let Ok(file) = Container::open(&path) else { return };
    let entries: Vec<_> = file.tensors().iter().collect();
    let Ok((batches, _plain)) = DecodeBatch::group(&file, &entries) else { return };
    let device = Device::flex();
    let native16 = flag & 2 != 0;
    for batch in &batches {
        let checked = try_decode_batch(batch, &device, native16);
        if validate_batch(batch, &device).is_err() {
            assert!(checked.is_err(), "try_decode_batch accepted a batch validate_batch rejects");
            continue;
        }
        let checked = checked.expect("a validated batch decodes through try_decode_batch");
        // Validated: the unchecked op must decode it too, to what the codec's reader gives.
        let out = decode_batch(batch, &device, native16).into_data();
        assert_eq!(out.as_bytes(), checked.into_data().as_bytes(), "decode_batch and try_decode_batch differ");
        let out_bytes = out.as_bytes();
        let wide = out_bytes.len() / batch.output_elements().max(2) == 4;
        for o in batch.outputs() {
            let t = file.get(&o.name).expect("the batch's tensor is in the file");
            let reference = file
                .decode(t)
                .unwrap_or_else(|e| panic!("tensor `{}`: the batch validates but the codec rejects it: {e}", o.name));
            if wide {
                let want = reference.to_f32().expect("batch tensors are floats");
                let got = &out_bytes[4 * o.offset..4 * (o.offset + o.elements)];
                assert_eq!(want.len(), o.elements, "tensor `{}`: element count", o.name);
                for (i, (w, g)) in want.iter().zip(got.chunks_exact(4)).enumerate() {
                    let g = u32::from_le_bytes([g[0], g[1], g[2], g[3]]);
                    assert!(
                        same_f32(w.to_bits(), g),
                        "tensor `{}` element {i}: codec {w:?}, batch {:?}",
                        o.name,
                        f32::from_bits(g)
                    );
                }
            } else {
                assert!(matches!(reference.dtype, Dtype::BF16 | Dtype::F16), "16-bit output of {}", reference.dtype);
                let got = &out_bytes[2 * o.offset..2 * (o.offset + o.elements)];
                assert_eq!(got, &reference.data[..], "tensor `{}`: 16-bit output differs from the codec", o.name);
            }
        }
    }
});
