//! Helpers shared by the fuzz targets: a per-process scratch directory, running `ember`
//! commands in-process, and a little reader that turns fuzz bytes into structured choices.
#![allow(dead_code)]

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// One scratch directory per fuzzing process (under `$TMPDIR`), reused by every input.
pub fn scratch() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::Builder::new().prefix("ember-fuzz").tempdir().expect("a scratch directory")).path()
}

/// A fresh, empty sub-directory `name` of the scratch directory.
pub fn fresh_dir(name: &str) -> PathBuf {
    let dir = scratch().join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create a scratch sub-directory");
    dir
}

/// Writes `bytes` to `dir/name` and returns the path.
pub fn write_in(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("write a scratch file");
    path
}

/// Runs `ember <args>` in-process (what the binary does, minus the exit code).
pub fn ember<I, S>(args: I) -> anyhow::Result<()>
where
    I: IntoIterator<Item = S>,
    S: Into<OsString>,
{
    let mut all: Vec<OsString> = vec!["ember".into()];
    all.extend(args.into_iter().map(Into::into));
    ember_cli::run(all)
}

/// Fuzz bytes read front to back; reading past the end gives zeros, so every input is usable.
pub struct Bytes<'a> {
    data: &'a [u8],
}

impl<'a> Bytes<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Bytes { data }
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    /// Up to `n` bytes.
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let (a, b) = self.data.split_at(n.min(self.data.len()));
        self.data = b;
        a
    }

    /// Everything not read yet.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.data)
    }

    /// A short string: a length byte (capped at `max`), then that many bytes as lossy UTF-8.
    pub fn string(&mut self, max: usize) -> String {
        let n = self.u8() as usize % (max + 1);
        String::from_utf8_lossy(self.take(n)).into_owned()
    }

    /// One of `items`.
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.u8() as usize % items.len()]
    }
}

/// `n` bytes cycling through `seed` (zeros when it is empty): tensor data of exactly the size a
/// description needs, whatever the input's length.
pub fn fill(seed: &[u8], n: usize) -> Vec<u8> {
    if seed.is_empty() {
        return vec![0; n];
    }
    seed.iter().copied().cycle().take(n).collect()
}

/// `tokenizer.ggml.*` metadata chosen by `b`: the model (`gpt2`, `llama` or an unknown one), the
/// pre-tokenizer name (known or not), tokens with their types, merges or scores, and BOS/EOS ids
/// that may lie outside the vocabulary. Keys are sometimes left out or given the wrong type.
pub fn tokenizer_kv(w: &mut ember_gguf::GgufWriter, b: &mut Bytes) {
    use ember_gguf::MetaValue;
    let opts = b.u8();
    let model = b.pick(&["gpt2", "llama", "llama", "gpt2", "bert", ""]);
    if opts & 1 == 0 {
        w.kv_str("tokenizer.ggml.model", model);
    } else {
        w.kv_u32("tokenizer.ggml.model", 7);
    }
    let pre = b.pick(&["default", "gpt2", "smollm", "llama-bpe", "qwen2", "starcoder", "unknown-pre"]);
    if opts & 2 != 0 {
        w.kv_str("tokenizer.ggml.pre", pre);
    }
    // Tokens: a type byte then a short string each; common pieces keep merges likely to apply.
    let n = (b.u8() % 48) as usize;
    let mut tokens: Vec<String> = Vec::with_capacity(n);
    let mut types = Vec::with_capacity(n);
    let pieces = ["a", "b", "ab", "▁", "▁a", "<0x41>", "<|im_start|>", "<s>", "</s>", "Ġ", "Ġa", "1", "12", " ", ""];
    for _ in 0..n {
        let ty = b.u8();
        types.push(MetaValue::I32((ty % 8) as i32 - (ty >> 7) as i32 * 9));
        tokens.push(if ty & 0x40 != 0 { b.string(12) } else { b.pick(&pieces).to_string() });
    }
    let refs: Vec<&str> = tokens.iter().map(String::as_str).collect();
    w.kv_str_array("tokenizer.ggml.tokens", &refs);
    if opts & 4 != 0 {
        // One type per token, or (rarely) one too few.
        let k = if opts & 0x80 != 0 { types.len().saturating_sub(1) } else { types.len() };
        w.kv("tokenizer.ggml.token_type", MetaValue::Array(types[..k].to_vec()));
    }
    if opts & 8 != 0 {
        let m = (b.u8() % 32) as usize;
        let merges: Vec<String> = (0..m)
            .map(|_| match b.u8() % 4 {
                0 => b.string(8),
                _ => format!("{} {}", b.pick(&refs_or(&refs)), b.pick(&refs_or(&refs))),
            })
            .collect();
        let mrefs: Vec<&str> = merges.iter().map(String::as_str).collect();
        w.kv_str_array("tokenizer.ggml.merges", &mrefs);
    }
    if opts & 0x10 != 0 {
        let k = if opts & 0x80 != 0 { n + 1 } else { n };
        let scores = (0..k).map(|_| MetaValue::F32(f32::from_bits(b.u32()))).collect();
        w.kv("tokenizer.ggml.scores", MetaValue::Array(scores));
    }
    if opts & 0x20 != 0 {
        w.kv("tokenizer.ggml.add_space_prefix", MetaValue::Bool(b.u8() & 1 == 1));
    }
    for key in ["bos", "eos", "eot", "unknown"] {
        let id = b.u8();
        if id < 0xf0 {
            w.kv_u32(&format!("tokenizer.ggml.{key}_token_id"), id as u32 % (n as u32 + 2));
        }
    }
    if opts & 0x40 != 0 {
        w.kv_str("tokenizer.chat_template", "{% for m in messages %}{{ m.content }}{% endfor %}");
    }
}

fn refs_or<'a>(refs: &[&'a str]) -> Vec<&'a str> {
    if refs.is_empty() {
        vec!["a"]
    } else {
        refs.to_vec()
    }
}
