//! A local fake of an OpenAI-compatible API on port 0, for tests of
//! anything that calls an AI provider.
//!
//! - `POST /v1/chat/completions` and `POST /v1/embeddings` (OpenAI and
//!   OpenAI-compatible providers: their `baseUrl` is [`FakeOpenAi::base_url`],
//!   which ends in `/v1`, like `https://api.openai.com/v1` or Ollama's
//!   `http://localhost:11434/v1`).
//! - `POST /openai/deployments/{deployment}/chat/completions` and
//!   `.../embeddings` (Azure OpenAI: `baseUrl` is [`FakeOpenAi::url`], the
//!   resource endpoint).
//!
//! Every request is recorded (path, query, headers, JSON body). Answers:
//! - chat: the next canned reply ([`FakeOpenAi::push_reply`]) if any, else
//!   `"echo: <last user message>"`; usage counts words.
//! - embeddings: deterministic vectors of [`DEFAULT_DIMS`] (or the
//!   request's `dimensions`): character trigrams of each word hashed into
//!   the dimensions and L2-normalised, so texts sharing word stems
//!   ("refund", "refundable") are close even when no whole word matches.
//! - scripted failures first: `n` × 429 with `Retry-After`, `n` × 500, or
//!   any status ([`FakeOpenAi::fail_next`]), each optionally limited to
//!   paths containing a text; a delay before every answer.
//!
//! Chat requests with `"stream": true` are answered as OpenAI streams:
//! Server-Sent Events of `chat.completion.chunk`s, a word per chunk at a
//! set pace ([`FakeOpenAi::set_stream_interval`]), optionally cut after
//! some words ([`FakeOpenAi::cut_next_stream_after`]).
//!
//! It also tracks how many chat completions are being answered at once
//! ([`FakeOpenAi::max_chat_in_flight`]): a request whose client hung up
//! stops counting when the server drops it.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use salvo::conn::TcpListener;
use salvo::prelude::*;
use serde_json::{Value, json};

/// Embedding size when the request does not ask for one.
pub const DEFAULT_DIMS: usize = 64;

/// A request the fake received.
#[derive(Debug, Clone)]
pub struct OpenAiRequest {
    pub method: String,
    /// Path without the query string.
    pub path: String,
    pub query: Vec<(String, String)>,
    /// Lower-cased header names.
    pub headers: HashMap<String, String>,
    pub body: Value,
}

impl OpenAiRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }

    pub fn query(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn is_chat(&self) -> bool {
        self.path.ends_with("/chat/completions")
    }

    /// A handoff brief's completion (its system prompt is the brief's).
    pub fn is_brief(&self) -> bool {
        self.is_chat()
            && self.body["messages"][0]["content"].as_str()
                == Some(aigentable_platform::handoff_brief::INSTRUCTIONS)
    }

    pub fn is_embeddings(&self) -> bool {
        self.path.ends_with("/embeddings")
    }

    /// The `input` strings of an embeddings request.
    pub fn inputs(&self) -> Vec<String> {
        match &self.body["input"] {
            Value::String(s) => vec![s.clone()],
            Value::Array(items) => items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        }
    }
}

#[derive(Debug, Clone)]
struct Failure {
    path_contains: String,
    remaining: usize,
    status: u16,
    retry_after: Option<String>,
}

#[derive(Debug, Default)]
struct Inner {
    requests: Mutex<Vec<OpenAiRequest>>,
    failures: Mutex<Vec<Failure>>,
    replies: Mutex<VecDeque<String>>,
    briefs: Mutex<VecDeque<String>>,
    delay: Mutex<Duration>,
    /// Streamed answers (`"stream": true`): the pause between two chunks,
    /// and how many chunks the next streams send before the connection is
    /// cut (no `[DONE]`).
    stream_interval: Mutex<Duration>,
    stream_cuts: Mutex<VecDeque<usize>>,
    /// Streamed chunks sent so far (the role chunk and the usage chunk
    /// are not counted).
    stream_chunks_sent: Mutex<usize>,
    /// Chat completions being answered now, and the most seen at once.
    chats_in_flight: Mutex<(usize, usize)>,
}

/// Counts one chat completion in flight until dropped (answered, or
/// dropped by the server when its client hung up).
struct InFlight(Arc<Inner>);

impl InFlight {
    fn enter(inner: &Arc<Inner>) -> Self {
        let mut n = lock(&inner.chats_in_flight);
        n.0 += 1;
        n.1 = n.1.max(n.0);
        Self(inner.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut n = lock(&self.0.chats_in_flight);
        n.0 = n.0.saturating_sub(1);
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Clone, Debug)]
pub struct FakeOpenAi {
    pub addr: SocketAddr,
    inner: Arc<Inner>,
}

struct Serve(Arc<Inner>);

#[async_trait]
impl Handler for Serve {
    async fn handle(
        &self,
        req: &mut Request,
        _depot: &mut Depot,
        res: &mut Response,
        _ctrl: &mut FlowCtrl,
    ) {
        let path = req.uri().path().to_owned();
        let query = crate::query_pairs(req);
        let headers: HashMap<String, String> = req
            .headers()
            .iter()
            .filter_map(|(k, v)| {
                v.to_str()
                    .ok()
                    .map(|v| (k.as_str().to_ascii_lowercase(), v.to_owned()))
            })
            .collect();
        let body: Value = req
            .payload()
            .await
            .ok()
            .and_then(|b| serde_json::from_slice(b).ok())
            .unwrap_or(Value::Null);
        let recorded = OpenAiRequest {
            method: req.method().as_str().to_owned(),
            path: path.clone(),
            query,
            headers,
            body: body.clone(),
        };
        lock(&self.0.requests).push(recorded.clone());
        let _in_flight =
            (recorded.is_chat() && !recorded.is_brief()).then(|| InFlight::enter(&self.0));

        let delay = *lock(&self.0.delay);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }

        let failure = {
            let mut failures = lock(&self.0.failures);
            failures
                .iter_mut()
                .find(|f| f.remaining > 0 && path.contains(&f.path_contains))
                .map(|f| {
                    f.remaining -= 1;
                    f.clone()
                })
        };
        if let Some(f) = failure {
            res.status_code(
                StatusCode::from_u16(f.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            );
            if let Some(after) = &f.retry_after {
                let _ = res.add_header("retry-after", after.as_str(), true);
            }
            let (kind, message) = match f.status {
                401 => ("invalid_request_error", "Incorrect API key provided"),
                429 => ("rate_limit_error", "Rate limit reached, slow down"),
                s if s >= 500 => ("server_error", "The server had an error"),
                _ => ("invalid_request_error", "The request was rejected"),
            };
            res.render(Json(
                json!({ "error": { "message": message, "type": kind, "param": null, "code": null } }),
            ));
            return;
        }

        if req.method() != salvo::http::Method::POST {
            res.status_code(StatusCode::METHOD_NOT_ALLOWED);
            res.render(Json(json!({ "error": { "message": "use POST" } })));
            return;
        }
        if recorded.is_chat() {
            let canned = if recorded.is_brief() {
                lock(&self.0.briefs).pop_front()
            } else {
                lock(&self.0.replies).pop_front()
            };
            if body["stream"] == json!(true) {
                let cut = lock(&self.0.stream_cuts).pop_front();
                let interval = *lock(&self.0.stream_interval);
                stream_chat_answer(res, &body, canned, interval, cut, self.0.clone());
            } else {
                res.render(Json(chat_answer(&body, canned)));
            }
        } else if recorded.is_embeddings() {
            res.render(Json(embeddings_answer(&recorded)));
        } else {
            res.status_code(StatusCode::NOT_FOUND);
            res.render(Json(
                json!({ "error": { "message": format!("unknown path {path}") } }),
            ));
        }
    }
}

fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

fn chat_answer(body: &Value, canned: Option<String>) -> Value {
    let messages = body["messages"].as_array().cloned().unwrap_or_default();
    let last_user = messages
        .iter()
        .rev()
        .find(|m| m["role"] == "user")
        .and_then(|m| m["content"].as_str())
        .unwrap_or_default()
        .to_owned();
    let content = canned.unwrap_or_else(|| format!("echo: {last_user}"));
    let prompt_tokens: usize = messages
        .iter()
        .filter_map(|m| m["content"].as_str())
        .map(|c| words(c).len())
        .sum();
    let completion_tokens = words(&content).len();
    json!({
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 1_764_115_200u32,
        "model": body["model"].as_str().unwrap_or("fake-model"),
        "choices": [{
            "index": 0,
            "message": { "role": "assistant", "content": content },
            "finish_reason": "stop",
        }],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    })
}

/// The answer as OpenAI streams it: a role chunk, then the text a word at
/// a time every `interval`, then (when asked) a usage chunk and `[DONE]`;
/// with `cut`, the connection breaks after that many words.
fn stream_chat_answer(
    res: &mut Response,
    body: &Value,
    canned: Option<String>,
    interval: Duration,
    cut: Option<usize>,
    inner: Arc<Inner>,
) {
    let whole = chat_answer(body, canned);
    let content = whole["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let model = whole["model"].clone();
    let chunk = |delta: Value, finish: Value| {
        json!({
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": 1_764_115_200u32,
            "model": model,
            "choices": [{ "index": 0, "delta": delta, "finish_reason": finish }],
        })
    };
    let mut words: Vec<String> = Vec::new();
    for piece in content.split_inclusive(' ') {
        words.push(piece.to_owned());
    }
    let mut frames: Vec<(Option<Value>, bool)> = vec![(
        Some(chunk(
            json!({ "role": "assistant", "content": "" }),
            Value::Null,
        )),
        false,
    )];
    for (i, w) in words.iter().enumerate() {
        if cut == Some(i) {
            frames.push((None, false));
            break;
        }
        frames.push((Some(chunk(json!({ "content": w }), Value::Null)), true));
    }
    if cut.is_none_or(|c| c >= words.len()) {
        frames.push((Some(chunk(json!({}), json!("stop"))), false));
        if body["stream_options"]["include_usage"] == json!(true) {
            let mut usage = chunk(json!({}), Value::Null);
            usage["choices"] = json!([]);
            usage["usage"] = whole["usage"].clone();
            frames.push((Some(usage), false));
        }
    }
    let done = cut.is_none_or(|c| c >= words.len());
    let stream =
        futures::stream::unfold((frames.into_iter(), false), move |(mut frames, paused)| {
            let inner = inner.clone();
            async move {
                match frames.next() {
                    Some((Some(frame), counted)) => {
                        if counted && paused && !interval.is_zero() {
                            tokio::time::sleep(interval).await;
                        }
                        if counted {
                            *lock(&inner.stream_chunks_sent) += 1;
                        }
                        let line = format!("data: {frame}\n\n");
                        Some((
                            Ok::<_, std::io::Error>(line.into_bytes()),
                            (frames, paused || counted),
                        ))
                    }
                    Some((None, _)) => {
                        // What was written reaches the client before the
                        // cut (the server flushes while the stream waits).
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Some((
                            Err(std::io::Error::other("stream cut by the fake")),
                            (frames, paused),
                        ))
                    }
                    None => None,
                }
            }
        });
    let tail = futures::stream::iter(done.then(|| Ok(b"data: [DONE]\n\n".to_vec())));
    let _ = res.add_header("content-type", "text/event-stream", true);
    let _ = res.add_header("cache-control", "no-cache", true);
    res.stream(futures::StreamExt::chain(stream, tail));
}

fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

/// The fake's embedding of `text`: character trigrams of each word
/// (padded with `^` and `$`) hashed into `dims` dimensions, L2-normalised.
pub fn embed_text(text: &str, dims: usize) -> Vec<f32> {
    let dims = dims.max(1);
    let mut v = vec![0f32; dims];
    for word in words(text) {
        let padded: Vec<char> = format!("^{word}$").chars().collect();
        for tri in padded.windows(3) {
            let s: String = tri.iter().collect();
            let i = fnv1a(s.as_bytes()) as usize % dims;
            v[i] += 1.0;
        }
    }
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    } else {
        // An empty text still gets a valid (non-zero) vector.
        v[0] = 1.0;
    }
    v
}

fn embeddings_answer(req: &OpenAiRequest) -> Value {
    let dims = req.body["dimensions"]
        .as_u64()
        .and_then(|d| usize::try_from(d).ok())
        .unwrap_or(DEFAULT_DIMS);
    let inputs = req.inputs();
    let tokens: usize = inputs.iter().map(|t| words(t).len()).sum();
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(
            |(i, t)| json!({ "object": "embedding", "index": i, "embedding": embed_text(t, dims) }),
        )
        .collect();
    json!({
        "object": "list",
        "model": req.body["model"].as_str().unwrap_or("fake-embedding"),
        "data": data,
        "usage": { "prompt_tokens": tokens, "total_tokens": tokens },
    })
}

impl FakeOpenAi {
    pub async fn start() -> Self {
        let acceptor = TcpListener::new("127.0.0.1:0")
            .try_bind()
            .await
            .expect("bind fake openai");
        let addr = acceptor.local_addr().expect("fake openai address");
        let inner = Arc::new(Inner::default());
        let router = Router::with_path("{**rest}").goal(Serve(inner.clone()));
        tokio::spawn(async move {
            Server::new(acceptor).serve(router).await;
        });
        Self { addr, inner }
    }

    /// The server root: an Azure OpenAI provider's `baseUrl`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The API root ending in `/v1`: an `OPENAI` or `OPENAI_COMPATIBLE`
    /// provider's `baseUrl`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// The next chat completions answer `text` (in order), before the echo.
    pub fn push_reply(&self, text: &str) {
        lock(&self.inner.replies).push_back(text.to_owned());
    }

    /// Answers the next `times` requests whose path contains
    /// `path_contains` ("" for any) with `status` and an OpenAI error body,
    /// with `Retry-After: retry_after` when given.
    pub fn fail_next(
        &self,
        path_contains: &str,
        times: usize,
        status: u16,
        retry_after: Option<&str>,
    ) {
        lock(&self.inner.failures).push(Failure {
            path_contains: path_contains.to_owned(),
            remaining: times,
            status,
            retry_after: retry_after.map(str::to_owned),
        });
    }

    /// `times` × 429 with `Retry-After: retry_after_secs`, for any path.
    pub fn rate_limit_next(&self, times: usize, retry_after_secs: u32) {
        self.fail_next("", times, 429, Some(&retry_after_secs.to_string()));
    }

    /// `times` × 500, for any path.
    pub fn server_error_next(&self, times: usize) {
        self.fail_next("", times, 500, None);
    }

    /// Every request from now on answers `status` (e.g. 401 for a bad key).
    pub fn fail_always(&self, status: u16) {
        self.fail_next("", usize::MAX, status, None);
    }

    /// Waits `delay` before answering each request.
    pub fn set_delay(&self, delay: Duration) {
        *lock(&self.inner.delay) = delay;
    }

    /// Streamed answers send a word every `interval` (the first at once).
    pub fn set_stream_interval(&self, interval: Duration) {
        *lock(&self.inner.stream_interval) = interval;
    }

    /// The next streamed answer breaks off after `words` words: the
    /// connection is cut without `[DONE]`.
    pub fn cut_next_stream_after(&self, words: usize) {
        lock(&self.inner.stream_cuts).push_back(words);
    }

    /// Words sent in streamed answers so far.
    pub fn stream_chunks_sent(&self) -> usize {
        *lock(&self.inner.stream_chunks_sent)
    }

    /// The most chat completions (replies, agent tests) answered at once.
    pub fn max_chat_in_flight(&self) -> usize {
        lock(&self.inner.chats_in_flight).1
    }

    /// Chat completions being answered now.
    pub fn chats_in_flight(&self) -> usize {
        lock(&self.inner.chats_in_flight).0
    }

    pub fn requests(&self) -> Vec<OpenAiRequest> {
        lock(&self.inner.requests).clone()
    }

    /// Chat completions for replies and agent tests (not handoff briefs).
    pub fn chat_requests(&self) -> Vec<OpenAiRequest> {
        self.requests()
            .into_iter()
            .filter(|r| r.is_chat() && !r.is_brief())
            .collect()
    }

    /// Chat completions that wrote handoff briefs.
    pub fn brief_requests(&self) -> Vec<OpenAiRequest> {
        self.requests()
            .into_iter()
            .filter(OpenAiRequest::is_brief)
            .collect()
    }

    /// The answer to the next handoff brief's completion (replies have
    /// their own script, [`Self::push_reply`]).
    pub fn push_brief(&self, text: &str) {
        lock(&self.inner.briefs).push_back(text.to_owned());
    }

    pub fn embedding_requests(&self) -> Vec<OpenAiRequest> {
        self.requests()
            .into_iter()
            .filter(|r| r.is_embeddings())
            .collect()
    }

    /// Forgets the recorded requests (not the script).
    pub fn clear_requests(&self) {
        lock(&self.inner.requests).clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cosine(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    #[test]
    fn embeddings_are_deterministic_and_stem_aware() {
        let a = embed_text("Refunds are issued within 14 days", 64);
        assert_eq!(a, embed_text("Refunds are issued within 14 days", 64));
        assert_eq!(a.len(), 64);
        let near = embed_text("refundable", 64);
        let far = embed_text("shipping to Canada", 64);
        assert!(cosine(&a, &near) > cosine(&a, &far));
    }
}
