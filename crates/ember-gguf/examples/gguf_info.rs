//! Prints a GGUF file's metadata (arrays abbreviated) and tensor table.
//!
//! `cargo run -p ember-gguf --example gguf_info -- [FILE]` (default: the cached SmolLM2 model,
//! fetched on first use).

use ember_gguf::{fetch, GgufFile, MetaValue};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = match std::env::args_os().nth(1) {
        Some(p) => p.into(),
        None => fetch::default_model_gguf()?,
    };
    let f = GgufFile::open(&path)?;
    println!("{}: GGUF v{}, {} tensors", path.display(), f.version(), f.tensors().len());
    for (k, v) in f.metadata() {
        match v {
            MetaValue::Array(a) => println!("{k} = [{} items] {:?}", a.len(), &a[..a.len().min(5)]),
            MetaValue::String(s) if s.len() > 200 => println!("{k} = {:?}...", s.chars().take(200).collect::<String>()),
            other => println!("{k} = {other:?}"),
        }
    }
    for t in f.tensors() {
        println!("{:40} {:8} {:?} @{}", t.name, t.ggml_type.name(), t.shape, t.offset);
    }
    Ok(())
}
