//! The HTTP surface: `GET /v1/models`, `POST /v1/chat/completions`, `POST /v1/completions`
//! (each non-streaming or as server-sent events), `GET /health`, `GET /metrics`.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use ember_gguf::tokenizer::ChatMessage;
use ember_llama::Sampler;
use futures_util::stream::{self, Stream, StreamExt};
use serde_json::{json, Value};
use subtle::ConstantTimeEq;
use tokio::sync::mpsc::UnboundedReceiver;

use crate::engine::{Event, FinishReason, Job};
use crate::error::ApiError;
use crate::openai::{ChatRequest, CompletionRequest, Content, ModelCard, Prompt, Sampling, Usage};
use crate::registry::{Registry, ServedModel};

/// What every handler reads.
pub struct AppState {
    /// The models and the shared cache.
    pub registry: Registry,
    /// `--api-key`.
    pub api_key: Option<String>,
    /// `--max-tokens`.
    pub max_tokens: usize,
    /// `--ctx`.
    pub ctx: usize,
    /// Memory for `/metrics`.
    pub meter: ember::Meter,
    next_id: AtomicU64,
}

impl AppState {
    /// The state for `registry` and the limits.
    pub fn new(registry: Registry, api_key: Option<String>, max_tokens: usize, ctx: usize) -> Self {
        let meter = ember::Meter::new(&registry.device);
        AppState { registry, api_key, max_tokens, ctx, meter, next_id: AtomicU64::new(1) }
    }

    fn model(&self, name: &str) -> Result<&ServedModel, ApiError> {
        self.registry.models.iter().find(|m| m.name == name).ok_or_else(|| ApiError::unknown_model(name))
    }
}

type Shared = Arc<AppState>;

/// The router with its limits: bodies over `max_body` bytes get 413.
pub fn router(state: Shared, max_body: usize) -> Router {
    let v1 = Router::new()
        .route("/v1/models", get(models))
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .route_layer(middleware::from_fn_with_state(Arc::clone(&state), auth));
    Router::new()
        .merge(v1)
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/metrics", get(metrics))
        .fallback(|| async { ApiError::status(StatusCode::NOT_FOUND, "No such endpoint") })
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state)
}

/// `Authorization: Bearer KEY` when `--api-key` is set, compared in constant time.
async fn auth(State(state): State<Shared>, request: Request, next: Next) -> Response {
    if let Some(key) = &state.api_key {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !bool::from(given.as_bytes().ct_eq(key.as_bytes())) {
            return ApiError::unauthorized().into_response();
        }
    }
    next.run(request).await
}

async fn models(State(state): State<Shared>) -> Json<Value> {
    let data: Vec<ModelCard> = state
        .registry
        .models
        .iter()
        .map(|m| ModelCard { id: m.name.clone(), object: "model", created: m.created, owned_by: "ember" })
        .collect();
    Json(json!({"object": "list", "data": data}))
}

async fn metrics(State(state): State<Shared>) -> impl IntoResponse {
    let models: Vec<(&str, &crate::metrics::ModelMetrics, u64)> =
        state.registry.models.iter().map(|m| (m.name.as_str(), m.metrics.as_ref(), m.dense_bytes)).collect();
    let text = crate::metrics::render(&models, &state.registry.cache, &state.meter);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
}

/// The body as `T`: a body over the limit is 413, bad JSON or a wrong type 400 saying where.
fn parse<T: serde::de::DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, ApiError> {
    let bytes = body.map_err(|e| ApiError::status(e.status(), e.body_text()))?;
    serde_json::from_slice(&bytes).map_err(|e| ApiError::invalid(format!("Invalid request body: {e}"), None))
}

/// A generation request, checked: the job for the worker (without its channel) and what the
/// response needs.
struct Checked {
    prompt_ids: Vec<u32>,
    max_tokens: usize,
    sampler: Sampler,
    stop: Vec<String>,
    stream: bool,
    include_usage: bool,
}

fn check(
    state: &AppState,
    model: &ServedModel,
    prompt_ids: Vec<u32>,
    s: &Sampling,
    default_max: usize,
) -> Result<Checked, ApiError> {
    if s.n.is_some_and(|n| n != 1) {
        return Err(ApiError::invalid("Only n = 1 is supported", Some("n")));
    }
    let max_tokens = match s.max_completion_tokens.or(s.max_tokens) {
        None => default_max.min(state.max_tokens),
        Some(0) => return Err(ApiError::invalid("max_tokens must be at least 1", Some("max_tokens"))),
        Some(n) if n > state.max_tokens as u64 => {
            return Err(ApiError::invalid(
                format!("max_tokens {n} is larger than this server's limit of {} tokens", state.max_tokens),
                Some("max_tokens"),
            ))
        }
        Some(n) => n as usize,
    };
    let temperature = s.temperature.unwrap_or(1.0);
    if !(0.0..=2.0).contains(&temperature) {
        return Err(ApiError::invalid(format!("temperature {temperature} is outside [0, 2]"), Some("temperature")));
    }
    let top_p = s.top_p.unwrap_or(1.0);
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(ApiError::invalid(format!("top_p {top_p} is outside (0, 1]"), Some("top_p")));
    }
    if prompt_ids.is_empty() {
        return Err(ApiError::invalid("The prompt is empty", Some("prompt")));
    }
    if let Some((i, id)) = prompt_ids.iter().enumerate().find(|(_, &id)| id as usize >= model.vocab_size) {
        return Err(ApiError::invalid(format!("Prompt token {id} at {i} is outside the vocabulary"), Some("prompt")));
    }
    let needed = prompt_ids.len() + max_tokens;
    if needed > state.ctx {
        return Err(ApiError::context(format!(
            "This model's maximum context length is {} tokens. However, you requested {needed} tokens ({} in the prompt, {max_tokens} for the completion). Please reduce the prompt or max_tokens.",
            state.ctx,
            prompt_ids.len()
        )));
    }
    let stop = s.stop.as_ref().map(|s| s.strings()).unwrap_or_default();
    if stop.len() > 4 {
        return Err(ApiError::invalid("At most 4 stop strings", Some("stop")));
    }
    let seed = s.seed.unwrap_or_else(|| {
        SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
            ^ state.next_id.load(Ordering::Relaxed)
    });
    Ok(Checked {
        prompt_ids,
        max_tokens,
        sampler: Sampler::top_p(temperature, top_p, seed),
        stop,
        stream: s.stream,
        include_usage: s.stream_options.as_ref().is_some_and(|o| o.include_usage),
    })
}

/// Which endpoint answers: the JSON shapes of chat and text completions.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Chat,
    Text,
}

async fn chat(State(state): State<Shared>, body: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    let request: ChatRequest = parse(body)?;
    let model = state.model(&request.model)?;
    if request.messages.is_empty() {
        return Err(ApiError::invalid("messages must not be empty", Some("messages")));
    }
    let mut messages = Vec::with_capacity(request.messages.len());
    for m in &request.messages {
        let role = match m.role.as_str() {
            "system" | "developer" => "system",
            "user" => "user",
            "assistant" => "assistant",
            other => return Err(ApiError::invalid(format!("Unsupported role `{other}`"), Some("messages"))),
        };
        let content = match &m.content {
            None => String::new(),
            Some(Content::Text(t)) => t.clone(),
            Some(Content::Parts(parts)) => {
                let mut text = String::new();
                for p in parts {
                    match (p.kind.as_str(), &p.text) {
                        ("text", Some(t)) => text.push_str(t),
                        (kind, _) => {
                            return Err(ApiError::invalid(
                                format!("Content parts of type `{kind}` are not supported"),
                                Some("messages"),
                            ))
                        }
                    }
                }
                text
            }
        };
        messages.push(ChatMessage::new(role, content));
    }
    let prompt = model.tokenizer.apply_chat_template(&messages, true).map_err(|e| {
        ApiError::invalid(
            format!("Model `{}` cannot format a chat ({e}); use /v1/completions", model.name),
            Some("messages"),
        )
    })?;
    let ids = model.tokenizer.encode_prompt(&prompt).map_err(|e| ApiError::invalid(e.to_string(), Some("messages")))?;
    let checked = check(&state, model, ids, &request.sampling, state.max_tokens)?;
    Ok(generate(&state, model, checked, Kind::Chat).await)
}

async fn completions(State(state): State<Shared>, body: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    let request: CompletionRequest = parse(body)?;
    let model = state.model(&request.model)?;
    let prompt = match &request.prompt {
        Prompt::One(p) => p.clone(),
        Prompt::Many(list) if list.len() == 1 => list[0].clone(),
        Prompt::Many(_) => return Err(ApiError::invalid("Only one prompt per request is supported", Some("prompt"))),
    };
    let ids = model.tokenizer.encode_prompt(&prompt).map_err(|e| ApiError::invalid(e.to_string(), Some("prompt")))?;
    // OpenAI's default for completions is 16 tokens.
    let checked = check(&state, model, ids, &request.sampling, 16)?;
    Ok(generate(&state, model, checked, Kind::Text).await)
}

/// Submits the job and answers: the whole completion, or a stream of chunks ending in `[DONE]`.
async fn generate(state: &AppState, model: &ServedModel, c: Checked, kind: Kind) -> Response {
    let n = state.next_id.fetch_add(1, Ordering::Relaxed);
    let id = match kind {
        Kind::Chat => format!("chatcmpl-ember-{n}"),
        Kind::Text => format!("cmpl-ember-{n}"),
    };
    let created = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let job = Job { prompt_ids: c.prompt_ids, max_tokens: c.max_tokens, sampler: c.sampler, stop: c.stop, events: tx };
    if !model.submit(job) {
        return ApiError::status(StatusCode::SERVICE_UNAVAILABLE, "The server is shutting down").into_response();
    }
    let meta = Meta { id, created, model: model.name.clone(), kind };
    if c.stream {
        Sse::new(chunks(meta, rx, c.include_usage)).into_response()
    } else {
        whole(meta, rx).await
    }
}

struct Meta {
    id: String,
    created: u64,
    model: String,
    kind: Kind,
}

impl Meta {
    fn object(&self, chunk: bool) -> &'static str {
        match (self.kind, chunk) {
            (Kind::Chat, false) => "chat.completion",
            (Kind::Chat, true) => "chat.completion.chunk",
            (Kind::Text, _) => "text_completion",
        }
    }
}

async fn whole(meta: Meta, mut rx: UnboundedReceiver<Event>) -> Response {
    let mut text = String::new();
    loop {
        match rx.recv().await {
            Some(Event::Text(t)) => text.push_str(&t),
            Some(Event::Done { finish_reason, prompt_tokens, completion_tokens }) => {
                let choice = match meta.kind {
                    Kind::Chat => json!({"index": 0, "message": {"role": "assistant", "content": text},
                        "logprobs": null, "finish_reason": finish_reason.as_str()}),
                    Kind::Text => {
                        json!({"index": 0, "text": text, "logprobs": null, "finish_reason": finish_reason.as_str()})
                    }
                };
                let body = json!({"id": meta.id, "object": meta.object(false), "created": meta.created, "model": meta.model,
                    "choices": [choice], "usage": Usage::new(prompt_tokens, completion_tokens)});
                return Json(body).into_response();
            }
            Some(Event::Failed(message)) => {
                return ApiError::status(StatusCode::INTERNAL_SERVER_ERROR, message).into_response()
            }
            None => {
                return ApiError::status(StatusCode::INTERNAL_SERVER_ERROR, "The model stopped before finishing")
                    .into_response()
            }
        }
    }
}

/// The chunks of a streamed completion: the role first (chat), then text, then the finish
/// reason, optionally the usage, and `[DONE]`.
fn chunks(
    meta: Meta,
    rx: UnboundedReceiver<Event>,
    include_usage: bool,
) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    let chunk = move |meta: &Meta, delta: Option<&str>, finish: Option<FinishReason>, first: bool| -> SseEvent {
        let choice = match meta.kind {
            Kind::Chat => {
                let mut d = serde_json::Map::new();
                if first {
                    d.insert("role".into(), json!("assistant"));
                }
                if let Some(t) = delta {
                    d.insert("content".into(), json!(t));
                }
                json!({"index": 0, "delta": d, "logprobs": null, "finish_reason": finish.map(FinishReason::as_str)})
            }
            Kind::Text => json!({"index": 0, "text": delta.unwrap_or(""), "logprobs": null,
                "finish_reason": finish.map(FinishReason::as_str)}),
        };
        let body = json!({"id": meta.id, "object": meta.object(true), "created": meta.created, "model": meta.model, "choices": [choice]});
        SseEvent::default().data(body.to_string())
    };
    enum State {
        Start,
        Running,
        Ended,
    }
    stream::unfold((meta, rx, State::Start), move |(meta, mut rx, st)| async move {
        match st {
            State::Ended => None,
            State::Start if meta.kind == Kind::Chat => {
                let first = chunk(&meta, Some(""), None, true);
                Some((vec![first], (meta, rx, State::Running)))
            }
            State::Start | State::Running => match rx.recv().await {
                Some(Event::Text(t)) => {
                    let e = chunk(&meta, Some(&t), None, false);
                    Some((vec![e], (meta, rx, State::Running)))
                }
                Some(Event::Done { finish_reason, prompt_tokens, completion_tokens }) => {
                    let mut out = vec![chunk(&meta, None, Some(finish_reason), false)];
                    if include_usage {
                        let body = json!({"id": meta.id, "object": meta.object(true), "created": meta.created,
                            "model": meta.model, "choices": [], "usage": Usage::new(prompt_tokens, completion_tokens)});
                        out.push(SseEvent::default().data(body.to_string()));
                    }
                    out.push(SseEvent::default().data("[DONE]"));
                    Some((out, (meta, rx, State::Ended)))
                }
                Some(Event::Failed(message)) => {
                    let e = SseEvent::default()
                        .data(ApiError::status(StatusCode::INTERNAL_SERVER_ERROR, message).body().to_string());
                    Some((vec![e, SseEvent::default().data("[DONE]")], (meta, rx, State::Ended)))
                }
                None => None,
            },
        }
    })
    .flat_map(|events| stream::iter(events.into_iter().map(Ok)))
}
