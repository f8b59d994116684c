//! The OpenAI API's request and response bodies, as far as this server implements them. Fields
//! a request may carry that do not change the answer here (`user`, `logit_bias`, …) are accepted
//! and ignored, as OpenAI-compatible servers do.

use serde::{Deserialize, Serialize};

/// `stop`: one string or a list of them.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    /// One stop string.
    One(String),
    /// Several (OpenAI allows up to 4).
    Many(Vec<String>),
}

impl Stop {
    /// The strings, empty ones dropped.
    pub fn strings(&self) -> Vec<String> {
        match self {
            Stop::One(s) => vec![s.clone()],
            Stop::Many(v) => v.clone(),
        }
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect()
    }
}

/// What every generation request carries besides its prompt.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Sampling {
    /// New tokens at most.
    pub max_tokens: Option<u64>,
    /// The newer name of `max_tokens` in chat requests.
    pub max_completion_tokens: Option<u64>,
    /// Sampling temperature in `[0, 2]`; 0 is greedy. OpenAI's default is 1.
    pub temperature: Option<f32>,
    /// Nucleus mass in `(0, 1]`.
    pub top_p: Option<f32>,
    /// Seed of the sampler (the same seed and request give the same text).
    pub seed: Option<u64>,
    /// Strings that end generation (not included in the text).
    pub stop: Option<Stop>,
    /// Stream server-sent events.
    #[serde(default)]
    pub stream: bool,
    /// `{"include_usage": true}` adds a last chunk with the usage.
    pub stream_options: Option<StreamOptions>,
    /// Choices per request; only 1 is supported.
    pub n: Option<u64>,
}

/// `stream_options`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct StreamOptions {
    /// Send a final chunk with `usage`.
    #[serde(default)]
    pub include_usage: bool,
}

/// A chat message's content: a string, or a list of parts of which the text ones are joined.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Content {
    /// Plain text.
    Text(String),
    /// `[{"type": "text", "text": "…"}, …]`.
    Parts(Vec<ContentPart>),
}

/// One part of a message's content.
#[derive(Debug, Clone, Deserialize)]
pub struct ContentPart {
    /// `text` (other kinds are refused).
    #[serde(rename = "type")]
    pub kind: String,
    /// The text of a `text` part.
    pub text: Option<String>,
}

/// One chat message.
#[derive(Debug, Clone, Deserialize)]
pub struct Message {
    /// `system`, `user`, `assistant` (`developer` is read as `system`).
    pub role: String,
    /// The text; `null` is empty.
    pub content: Option<Content>,
}

/// `POST /v1/chat/completions`.
#[derive(Debug, Clone, Deserialize)]
pub struct ChatRequest {
    /// The model's name.
    pub model: String,
    /// The conversation.
    pub messages: Vec<Message>,
    /// Sampling and limits.
    #[serde(flatten)]
    pub sampling: Sampling,
}

/// `prompt` of a completion: one string (a one-element list is accepted too).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Prompt {
    /// The prompt.
    One(String),
    /// Prompts, of which exactly one is supported.
    Many(Vec<String>),
}

/// `POST /v1/completions`.
#[derive(Debug, Clone, Deserialize)]
pub struct CompletionRequest {
    /// The model's name.
    pub model: String,
    /// The text to continue.
    pub prompt: Prompt,
    /// Sampling and limits.
    #[serde(flatten)]
    pub sampling: Sampling,
}

/// Token counts of one request.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct Usage {
    /// Tokens of the prompt (as the model saw it: chat template and BOS included).
    pub prompt_tokens: usize,
    /// Tokens generated (a stop token is not counted; tokens of a stop string are).
    pub completion_tokens: usize,
    /// Their sum.
    pub total_tokens: usize,
}

impl Usage {
    /// From the two counts.
    pub fn new(prompt_tokens: usize, completion_tokens: usize) -> Self {
        Usage { prompt_tokens, completion_tokens, total_tokens: prompt_tokens + completion_tokens }
    }
}

/// `GET /v1/models` entry.
#[derive(Debug, Clone, Serialize)]
pub struct ModelCard {
    /// The name.
    pub id: String,
    /// Always `model`.
    pub object: &'static str,
    /// When the server loaded it (Unix seconds).
    pub created: u64,
    /// Always `ember`.
    pub owned_by: &'static str,
}
