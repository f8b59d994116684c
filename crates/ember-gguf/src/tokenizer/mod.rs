//! [`Tokenizer`]: a Hugging Face `tokenizers` tokenizer plus what generation needs around it —
//! the BOS id, the ids that end a turn, and the chat template. Built from GGUF metadata
//! ([`Tokenizer::from_gguf`], see `from_gguf.rs`), from HF `tokenizer.json` /
//! `tokenizer_config.json`, or from the JSON this type writes ([`Tokenizer::to_json_string`]),
//! which `.ember` containers store in their metadata.

mod chat;
mod from_gguf;
mod stream;

use std::path::Path;
use std::str::FromStr;

use serde_json::{json, Value};

pub use chat::ChatMessage;
pub use stream::StreamDecoder;

use crate::{GgufError, GgufFile};

/// Tag of the JSON written by [`Tokenizer::to_json_string`].
const JSON_FORMAT: &str = "ember-tokenizer/1";

/// Token texts that end a turn in common chat formats (llama.cpp's end-of-generation list).
/// Those present in a vocabulary join [`Tokenizer::eos_ids`], so generation stops at the end
/// of an assistant turn even when the model's `eos` is a different token.
const EOT_LIKE: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|eom_id|>",
    "<EOT>",
    "<｜end▁of▁sentence｜>",
];

/// A tokenizer with its BOS/EOS ids and chat template.
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    bos_id: Option<u32>,
    eos_ids: Vec<u32>,
    chat_template: Option<String>,
    /// Prompts start with BOS (GGUF `tokenizer.ggml.add_bos_token`, HF `add_bos_token`).
    add_bos: bool,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("bos_id", &self.bos_id)
            .field("eos_ids", &self.eos_ids)
            .field("chat_template", &self.chat_template.is_some())
            .field("add_bos", &self.add_bos)
            .finish()
    }
}

fn tok_err(e: impl std::fmt::Display) -> GgufError {
    GgufError::Tokenizer(e.to_string())
}

impl Tokenizer {
    /// Wraps `inner`; `eos` ids are completed with the [`EOT_LIKE`] tokens the vocabulary has.
    fn new(
        inner: tokenizers::Tokenizer,
        bos_id: Option<u32>,
        eos: &[u32],
        chat_template: Option<String>,
        add_bos: bool,
    ) -> Self {
        let mut eos_ids: Vec<u32> = Vec::new();
        let extra = EOT_LIKE.iter().filter_map(|t| inner.token_to_id(t));
        for id in eos.iter().copied().chain(extra) {
            if !eos_ids.contains(&id) {
                eos_ids.push(id);
            }
        }
        let add_bos = add_bos && bos_id.is_some();
        Tokenizer { inner, bos_id, eos_ids, chat_template, add_bos }
    }

    /// The tokenizer described by a GGUF file's `tokenizer.ggml.*` metadata.
    pub fn from_gguf(f: &GgufFile) -> Result<Self, GgufError> {
        let built = from_gguf::build(f)?;
        Ok(Self::new(built.inner, built.bos_id, &built.eos_ids, built.chat_template, built.add_bos))
    }

    /// An HF `tokenizer.json`, with BOS/EOS tokens and the chat template from
    /// `tokenizer_config.json` when given.
    pub fn from_file(tokenizer_json: &Path, tokenizer_config_json: Option<&Path>) -> Result<Self, GgufError> {
        let inner = tokenizers::Tokenizer::from_file(tokenizer_json)
            .map_err(|e| GgufError::Tokenizer(format!("{}: {e}", tokenizer_json.display())))?;
        let Some(cfg_path) = tokenizer_config_json else {
            return Ok(Self::new(inner, None, &[], None, false));
        };
        let text = std::fs::read_to_string(cfg_path).map_err(|e| GgufError::io(cfg_path, "cannot read", e))?;
        let cfg: Value = serde_json::from_str(&text)
            .map_err(|e| GgufError::Tokenizer(format!("{}: not valid JSON: {e}", cfg_path.display())))?;
        // `bos_token` is either a string or an AddedToken object with `content`.
        let token_id = |key: &str| -> Option<u32> {
            let v = cfg.get(key)?;
            let s = v.as_str().or_else(|| v.get("content").and_then(Value::as_str))?;
            inner.token_to_id(s)
        };
        let bos = token_id("bos_token");
        let eos: Vec<u32> = token_id("eos_token").into_iter().collect();
        // `chat_template` is a string, or a list of `{name, template}` (use `default`, else the first).
        let template = match cfg.get("chat_template") {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Array(list)) => list
                .iter()
                .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
                .or_else(|| list.first())
                .and_then(|t| t.get("template"))
                .and_then(Value::as_str)
                .map(str::to_owned),
            _ => None,
        };
        // `add_bos_token` when the config says; else whether the post-processor puts BOS first
        // (Llama 3's `TemplateProcessing` does, without a flag).
        let add_bos = match cfg.get("add_bos_token").and_then(Value::as_bool) {
            Some(b) => b,
            None => {
                bos.is_some_and(|b| inner.encode("", true).ok().and_then(|e| e.get_ids().first().copied()) == Some(b))
            }
        };
        Ok(Self::new(inner, bos, &eos, template, add_bos))
    }

    /// Reads the JSON written by [`Tokenizer::to_json_string`]; a plain HF `tokenizer.json` is
    /// accepted too (then without BOS and chat template).
    pub fn from_json_str(json: &str) -> Result<Self, GgufError> {
        let v: Value = serde_json::from_str(json).map_err(|e| tok_err(format!("not valid JSON: {e}")))?;
        if v.get("format").and_then(Value::as_str) != Some(JSON_FORMAT) {
            let inner = tokenizers::Tokenizer::from_str(json).map_err(tok_err)?;
            return Ok(Self::new(inner, None, &[], None, false));
        }
        let inner_json = v.get("tokenizer").ok_or_else(|| tok_err("no `tokenizer` in the JSON"))?;
        let inner = tokenizers::Tokenizer::from_str(&inner_json.to_string()).map_err(tok_err)?;
        let id = |x: &Value| x.as_u64().and_then(|n| u32::try_from(n).ok());
        let bos_id = match v.get("bos_id") {
            None | Some(Value::Null) => None,
            Some(x) => Some(id(x).ok_or_else(|| tok_err(format!("bos_id {x} is not a token id")))?),
        };
        let eos_ids = v
            .get("eos_ids")
            .and_then(Value::as_array)
            .map(|a| a.iter().map(|x| id(x).ok_or_else(|| tok_err(format!("eos id {x} is not a token id")))).collect())
            .transpose()?
            .unwrap_or_default();
        let chat_template = v.get("chat_template").and_then(Value::as_str).map(str::to_owned);
        let add_bos = v.get("add_bos").and_then(Value::as_bool).unwrap_or(false) && bos_id.is_some();
        // The stored list is complete: keep it as is rather than re-deriving it.
        Ok(Tokenizer { inner, bos_id, eos_ids, chat_template, add_bos })
    }

    /// This tokenizer as one JSON document: the HF `tokenizer.json` under `tokenizer`, plus
    /// `bos_id`, `eos_ids` and `chat_template`.
    pub fn to_json_string(&self) -> Result<String, GgufError> {
        let inner = self.inner.to_string(false).map_err(tok_err)?;
        let inner: Value = serde_json::from_str(&inner).map_err(tok_err)?;
        let doc = json!({
            "format": JSON_FORMAT,
            "tokenizer": inner,
            "bos_id": self.bos_id,
            "eos_ids": self.eos_ids,
            "chat_template": self.chat_template,
            "add_bos": self.add_bos,
        });
        Ok(doc.to_string())
    }

    /// Token ids of `text`, with the BOS id first when `add_bos` (an error if there is none).
    /// Special tokens written in the text (`<|im_start|>`) become their ids.
    pub fn encode(&self, text: &str, add_bos: bool) -> Result<Vec<u32>, GgufError> {
        let enc = self.inner.encode(text, false).map_err(tok_err)?;
        let mut ids = Vec::with_capacity(enc.len() + 1);
        if add_bos {
            ids.push(self.bos_id.ok_or_else(|| tok_err("add_bos asked, but the tokenizer has no BOS token"))?);
        }
        ids.extend_from_slice(enc.get_ids());
        Ok(ids)
    }

    /// The text of `ids`, special tokens included (so a round trip keeps them).
    pub fn decode(&self, ids: &[u32]) -> Result<String, GgufError> {
        self.inner.decode(ids, false).map_err(tok_err)
    }

    /// A decoder that turns ids pushed one at a time into text as soon as it is complete.
    pub fn stream_decoder(&self) -> StreamDecoder<'_> {
        StreamDecoder::new(self)
    }

    /// Adds `ids` to the ids that end generation (after those already there, skipping
    /// duplicates and ids outside the vocabulary): e.g. a Hugging Face `generation_config.json`
    /// lists stop tokens that `tokenizer_config.json` does not.
    pub fn with_stop_ids(mut self, ids: impl IntoIterator<Item = u32>) -> Self {
        let vocab = self.vocab_size();
        for id in ids {
            if (id as usize) < vocab && !self.eos_ids.contains(&id) {
                self.eos_ids.push(id);
            }
        }
        self
    }

    /// Sets the BOS id where the tokenizer names none (an id outside the vocabulary is ignored).
    pub fn with_default_bos(mut self, id: Option<u32>) -> Self {
        if self.bos_id.is_none() {
            self.bos_id = id.filter(|&i| (i as usize) < self.vocab_size());
        }
        self
    }

    /// Whether prompts start with BOS, as the model was trained (Gemma, Llama 3: yes; SmolLM2,
    /// Qwen: no).
    pub fn adds_bos(&self) -> bool {
        self.add_bos
    }

    /// Token ids of a prompt as the model expects it: BOS first where [`Self::adds_bos`] and the
    /// text does not already begin with it (a rendered chat template often does).
    pub fn encode_prompt(&self, text: &str) -> Result<Vec<u32>, GgufError> {
        let ids = self.encode(text, false)?;
        match self.bos_id {
            Some(bos) if self.add_bos && ids.first() != Some(&bos) => Ok(std::iter::once(bos).chain(ids).collect()),
            _ => Ok(ids),
        }
    }

    /// The BOS id, if the tokenizer has one.
    pub fn bos_id(&self) -> Option<u32> {
        self.bos_id
    }

    /// Ids that end generation: the EOS id, then end-of-turn tokens.
    pub fn eos_ids(&self) -> &[u32] {
        &self.eos_ids
    }

    /// Number of ids, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The id of token text `token`.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The text of token `id`.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// The Jinja chat template, if any.
    pub fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }

    /// The wrapped `tokenizers` tokenizer.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    /// Renders the chat template for `messages` (with `bos_token`/`eos_token` defined as the
    /// templates expect); `add_generation_prompt` appends the assistant turn's opening.
    pub fn apply_chat_template(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, GgufError> {
        let template = self
            .chat_template
            .as_deref()
            .ok_or_else(|| GgufError::ChatTemplate("the tokenizer has no chat template".into()))?;
        let text = |id: Option<u32>| id.and_then(|i| self.inner.id_to_token(i)).unwrap_or_default();
        chat::render(
            template,
            messages,
            add_generation_prompt,
            &text(self.bos_id),
            &text(self.eos_ids.first().copied()),
        )
    }
}
