//! Every quantized type against an independent implementation: random blocks dequantized by
//! gguf-py's numpy reference (`tests/data/make_dequant_reference.py` writes the fixture).

use ember_gguf::{dequant, GgmlType};

fn type_named(name: &str) -> GgmlType {
    (0..64).filter_map(|id| GgmlType::from_id(id).ok()).find(|t| t.name() == name).expect("known type")
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

#[test]
fn matches_gguf_py_on_random_blocks() {
    let fixture: serde_json::Value = serde_json::from_str(include_str!("data/dequant_reference.json")).unwrap();
    let fixture = fixture.as_object().unwrap();
    assert_eq!(fixture.len(), 10);
    for (name, case) in fixture {
        let t = type_named(name);
        let bytes = unhex(case["bytes"].as_str().unwrap());
        let want: Vec<f32> = case["values"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
        let got = dequant::dequantize(t, &bytes, want.len()).unwrap();
        // Same arithmetic in the same order: bit-identical, not merely close.
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(g.to_bits(), w.to_bits(), "{name}[{i}]: {g} vs {w}");
        }
    }
}
