//! Building a `tokenizers` tokenizer from GGUF `tokenizer.ggml.*` metadata, the way the HF
//! conversion of the same model is configured:
//!
//! - `gpt2` (byte-level BPE): `tokens` + `merges`, a byte-level decoder, and the pre-tokenizer
//!   named by `tokenizer.ggml.pre` (llama.cpp's names; an unknown name is an error, as in
//!   llama.cpp, because a wrong split silently changes the ids).
//! - `llama` (SentencePiece BPE): `tokens` + `scores`; merges are derived from the scores (a
//!   pair merges with the rank of the merged piece's score, which is what SentencePiece's BPE
//!   does), byte fallback for `<0xXX>` tokens, `▁` for spaces.
//!
//! Control tokens (type 3) become special added tokens and user-defined ones (type 4) plain
//! added tokens, so both are matched whole in text (`<|im_start|>`).

use ahash::AHashMap;
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::{Prepend, Replace, Sequence as NormalizerSequence};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence as PreSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, DecoderWrapper, NormalizerWrapper, PreTokenizerWrapper, SplitDelimiterBehavior};

use crate::{GgufError, GgufFile, MetaValue};

/// GGUF token types (`llama_token_type`).
const TYPE_UNKNOWN: i64 = 2;
const TYPE_CONTROL: i64 = 3;
const TYPE_USER_DEFINED: i64 = 4;
const TYPE_BYTE: i64 = 6;

/// Llama 3's split regex (`llama-bpe`).
const LLAMA3_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen2's split regex: Llama 3's with single digits.
const QWEN2_REGEX: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The `tokenizer.ggml.pre` names [`byte_level_bpe`] knows, for the error message.
const SUPPORTED_PRE: &[&str] = &["default", "gpt2", "smollm", "starcoder", "refact", "llama-bpe", "qwen2"];

/// What [`build`] produces; `Tokenizer::from_gguf` completes the EOS list.
pub(super) struct Built {
    pub inner: tokenizers::Tokenizer,
    pub bos_id: Option<u32>,
    pub eos_ids: Vec<u32>,
    pub chat_template: Option<String>,
    pub add_bos: bool,
}

/// A metadata error on `key`.
fn meta_err(f: &GgufFile, key: &str, msg: impl Into<String>) -> GgufError {
    GgufError::Metadata { path: f.path().to_path_buf(), key: key.to_owned(), msg: msg.into() }
}

/// Optional token id `key`; present but not an id in `0..n_tokens` is an error.
fn token_id(f: &GgufFile, key: &str, n_tokens: usize) -> Result<Option<u32>, GgufError> {
    match f.meta(key) {
        None => Ok(None),
        Some(v) => match v.as_u32() {
            Some(id) if (id as usize) < n_tokens => Ok(Some(id)),
            _ => Err(meta_err(f, key, format!("{v:?} is not a token id below {n_tokens}"))),
        },
    }
}

pub(super) fn build(f: &GgufFile) -> Result<Built, GgufError> {
    let model = f
        .meta("tokenizer.ggml.model")
        .ok_or_else(|| meta_err(f, "tokenizer.ggml.model", "missing: the file has no tokenizer"))?
        .as_str()
        .ok_or_else(|| meta_err(f, "tokenizer.ggml.model", "not a string"))?;
    let tokens = f
        .meta("tokenizer.ggml.tokens")
        .and_then(MetaValue::as_str_array)
        .ok_or_else(|| meta_err(f, "tokenizer.ggml.tokens", "missing or not an array of strings"))?;
    if tokens.is_empty() || u32::try_from(tokens.len()).is_err() {
        return Err(meta_err(f, "tokenizer.ggml.tokens", format!("{} tokens", tokens.len())));
    }
    let types = match f.meta("tokenizer.ggml.token_type") {
        None => vec![1; tokens.len()],
        Some(v) => match v.as_i64_array() {
            Some(t) if t.len() == tokens.len() => t,
            _ => return Err(meta_err(f, "tokenizer.ggml.token_type", "not one integer per token")),
        },
    };
    let mut inner = match model {
        "gpt2" => byte_level_bpe(f, &tokens)?,
        "llama" => sentencepiece_bpe(f, &tokens, &types)?,
        other => {
            return Err(meta_err(
                f,
                "tokenizer.ggml.model",
                format!("`{other}` tokenizers are not supported (only `gpt2` and `llama`)"),
            ))
        }
    };
    let added: Vec<AddedToken> = tokens
        .iter()
        .zip(&types)
        .filter_map(|(t, &ty)| match ty {
            TYPE_CONTROL | TYPE_UNKNOWN => Some(AddedToken::from(t.to_string(), true)),
            TYPE_USER_DEFINED => Some(AddedToken::from(t.to_string(), false).normalized(false)),
            _ => None,
        })
        .collect();
    inner.add_special_tokens(&added);

    let n = tokens.len();
    let bos_id = token_id(f, "tokenizer.ggml.bos_token_id", n)?;
    let mut eos_ids = Vec::new();
    for key in ["tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"] {
        eos_ids.extend(token_id(f, key, n)?);
    }
    let chat_template = f.meta("tokenizer.chat_template").and_then(MetaValue::as_str).map(str::to_owned);
    // llama.cpp's default when the file does not say: SentencePiece vocabularies start with BOS.
    let add_bos = match f.meta("tokenizer.ggml.add_bos_token") {
        Some(v) => v.as_bool().ok_or_else(|| meta_err(f, "tokenizer.ggml.add_bos_token", "not a boolean"))?,
        None => model == "llama",
    } && bos_id.is_some();
    Ok(Built { inner, bos_id, eos_ids, chat_template, add_bos })
}

/// Byte-level BPE (GPT-2 style) with the pre-tokenizer `tokenizer.ggml.pre` names.
fn byte_level_bpe(f: &GgufFile, tokens: &[&str]) -> Result<tokenizers::Tokenizer, GgufError> {
    const KEY: &str = "tokenizer.ggml.merges";
    let merges = f
        .meta(KEY)
        .and_then(MetaValue::as_str_array)
        .ok_or_else(|| meta_err(f, KEY, "missing or not an array of strings"))?;
    // Byte-level tokens never hold a literal space (it is `Ġ`), so the first space splits a pair.
    let merges = merges
        .iter()
        .enumerate()
        .map(|(i, m)| {
            m.split_once(' ')
                .map(|(a, b)| (a.to_owned(), b.to_owned()))
                .ok_or_else(|| meta_err(f, KEY, format!("merge {i} `{m}` is not two tokens separated by a space")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let bpe =
        BPE::builder().vocab_and_merges(vocab(tokens), merges).build().map_err(|e| meta_err(f, KEY, e.to_string()))?;

    let pre = f.meta("tokenizer.ggml.pre").and_then(MetaValue::as_str).unwrap_or("default");
    let byte_level = ByteLevel::new(false, true, true);
    let split = |re: &str| -> Result<PreTokenizerWrapper, GgufError> {
        let s = Split::new(SplitPattern::Regex(re.to_owned()), SplitDelimiterBehavior::Isolated, false)
            .map_err(|e| GgufError::Tokenizer(e.to_string()))?;
        Ok(PreSequence::new(vec![s.into(), ByteLevel::new(false, true, false).into()]).into())
    };
    let pre_tokenizer: PreTokenizerWrapper = match pre {
        "default" | "gpt2" | "gpt-2" => byte_level.into(),
        "smollm" | "starcoder" | "refact" => PreSequence::new(vec![Digits::new(true).into(), byte_level.into()]).into(),
        "llama-bpe" | "llama3" | "llama-v3" | "smaug-bpe" => split(LLAMA3_REGEX)?,
        "qwen2" | "deepseek-r1-qwen" => split(QWEN2_REGEX)?,
        other => {
            let msg = format!("pre-tokenizer `{other}` is not supported ({})", SUPPORTED_PRE.join(", "));
            return Err(meta_err(f, "tokenizer.ggml.pre", msg));
        }
    };
    let mut t = tokenizers::Tokenizer::new(bpe);
    t.with_pre_tokenizer(Some(pre_tokenizer));
    t.with_decoder(Some(ByteLevel::default()));
    Ok(t)
}

/// token → id; a token listed twice keeps its first id (later duplicates cannot be produced by
/// encoding anyway).
fn vocab(tokens: &[&str]) -> AHashMap<String, u32> {
    let mut v = AHashMap::with_capacity(tokens.len());
    for (i, t) in tokens.iter().enumerate() {
        v.entry(t.to_string()).or_insert(i as u32);
    }
    v
}

/// SentencePiece BPE (Llama 1/2 style): merges ranked by the merged piece's score.
fn sentencepiece_bpe(f: &GgufFile, tokens: &[&str], types: &[i64]) -> Result<tokenizers::Tokenizer, GgufError> {
    const KEY: &str = "tokenizer.ggml.scores";
    let scores = match f.meta(KEY) {
        None => vec![0.0; tokens.len()],
        Some(v) => match v.as_f32_array() {
            Some(s) if s.len() == tokens.len() => s,
            _ => return Err(meta_err(f, KEY, "not one number per token")),
        },
    };
    let vocab = vocab(tokens);
    // Every piece that splits into two pieces of the vocabulary is a merge of those two.
    let mut merges: Vec<(f32, u32, String, String)> = Vec::new();
    for (id, (&piece, &ty)) in tokens.iter().zip(types).enumerate() {
        if ty == TYPE_BYTE || ty == TYPE_CONTROL || ty == TYPE_UNKNOWN {
            continue;
        }
        for (k, _) in piece.char_indices().skip(1) {
            let (a, b) = piece.split_at(k);
            if vocab.contains_key(a) && vocab.contains_key(b) {
                merges.push((scores[id], id as u32, a.to_owned(), b.to_owned()));
            }
        }
    }
    // Highest score first; ties by id then by the left piece, for a deterministic order.
    merges.sort_by(|x, y| y.0.total_cmp(&x.0).then(x.1.cmp(&y.1)).then(x.2.len().cmp(&y.2.len())));
    let merges = merges.into_iter().map(|(_, _, a, b)| (a, b)).collect();
    let unk = token_id(f, "tokenizer.ggml.unknown_token_id", tokens.len())?
        .or_else(|| types.iter().position(|&t| t == TYPE_UNKNOWN).map(|i| i as u32));
    let mut builder = BPE::builder().vocab_and_merges(vocab, merges).byte_fallback(true).fuse_unk(true);
    if let Some(u) = unk {
        builder = builder.unk_token(tokens[u as usize].to_owned());
    }
    let bpe = builder.build().map_err(|e| meta_err(f, KEY, e.to_string()))?;

    let add_space_prefix = f.meta("tokenizer.ggml.add_space_prefix").and_then(MetaValue::as_bool).unwrap_or(true);
    let replace = |from: &str, to: &str| Replace::new(from, to).map_err(|e| GgufError::Tokenizer(e.to_string()));
    let mut norm: Vec<NormalizerWrapper> = Vec::new();
    let mut dec: Vec<DecoderWrapper> = vec![replace("▁", " ")?.into(), ByteFallback::new().into(), Fuse::new().into()];
    if add_space_prefix {
        norm.push(Prepend::new("▁".into()).into());
        dec.push(Strip::new(' ', 1, 0).into());
    }
    norm.push(replace(" ", "▁")?.into());
    let mut t = tokenizers::Tokenizer::new(bpe);
    t.with_normalizer(Some(NormalizerSequence::new(norm)));
    t.with_decoder(Some(DecoderSequence::new(dec)));
    Ok(t)
}
