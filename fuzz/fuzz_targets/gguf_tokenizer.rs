//! The tokenizer built from GGUF `tokenizer.ggml.*` metadata: `Tokenizer::from_gguf` on any file
//! must give `Ok` or an error — never a panic or a hang — and a tokenizer it accepts must encode,
//! decode, stream-decode and round-trip through its JSON form without panicking.
//!
//! An even first byte makes the rest the file itself; an odd one builds a well-formed GGUF whose
//! tokenizer metadata is chosen by the rest (so the builder, not the GGUF parser, is exercised).
#![no_main]

use ember_gguf::{GgufFile, GgufWriter, Tokenizer};
use libfuzzer_sys::fuzz_target;

#[path = "../common/mod.rs"]
mod common;

const TEXT: &str = "Hello wörld <|im_start|>user\n 12 345 ▁a ab </s>\u{1F600}";

fuzz_target!(|data: &[u8]| {
    let Some((&flag, rest)) = data.split_first() else { return };
    let bytes = if flag % 2 == 1 {
        let mut w = GgufWriter::new(3);
        common::tokenizer_kv(&mut w, &mut common::Bytes::new(rest));
        w.to_bytes()
    } else {
        rest.to_vec()
    };
    let path = common::write_in(common::scratch(), "tokenizer.gguf", &bytes);
    let Ok(file) = GgufFile::open(&path) else { return };
    let Ok(tok) = Tokenizer::from_gguf(&file) else { return };
    // BOS/EOS ids index the GGUF token list; with duplicated tokens some ids have no entry in
    // the (deduplicated) vocabulary, and decoding them must still not panic.
    let n = tok.vocab_size() as u32;
    let _ = tok.decode(tok.eos_ids());
    let _ = tok.bos_id().map(|b| tok.decode(&[b]));
    if let Ok(ids) = tok.encode(TEXT, flag & 2 != 0) {
        let _ = tok.decode(&ids);
        let mut stream = tok.stream_decoder();
        for &id in &ids {
            let _ = stream.push(id);
        }
    }
    let _ = tok.decode(&[0, n.saturating_sub(1), n, u32::MAX]);
    let _ = (tok.id_to_token(0), tok.token_to_id("a"), tok.chat_template());
    if let Ok(json) = tok.to_json_string() {
        let back = Tokenizer::from_json_str(&json).expect("a tokenizer's own JSON reads back");
        assert_eq!(back.vocab_size(), tok.vocab_size());
        assert_eq!(back.eos_ids(), tok.eos_ids());
    }
});
