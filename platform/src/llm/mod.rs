//! The LLM client: chat completions and embeddings against a tenant's AI
//! provider (OpenAI, Azure OpenAI or any OpenAI-compatible server), with
//! failures classified so callers know whether retrying can help.
//!
//! `async-openai` builds the requests and parses the answers; its HTTP goes
//! through our own tower service so that every call is exactly one HTTP
//! request (its default stack retries 429s and 5xx by itself) and so that a
//! 429's `Retry-After` reaches the caller, who owns the retry policy (the
//! job runner's backoff, or the embedding loop's).
//!
//! Base URLs: `OPENAI` and `OPENAI_COMPATIBLE` providers take the API root
//! including `/v1` (`https://api.openai.com/v1`, `http://localhost:11434/v1`);
//! `AZURE_OPENAI` takes the resource endpoint and the models are deployment
//! names (`{endpoint}/openai/deployments/{deployment}/...?api-version=...`).

mod config;
pub mod embedding;
pub mod index;
mod stream;

use std::sync::Arc;
use std::time::Duration;

use async_openai::Client;
use async_openai::config::{AzureConfig, Config, OpenAIConfig};
use async_openai::error::OpenAIError;
use async_openai::middleware::HttpRequestFactory;
use async_openai::types::chat::{
    ChatCompletionRequestAssistantMessage, ChatCompletionRequestAssistantMessageContent,
    ChatCompletionRequestMessage, ChatCompletionRequestSystemMessage,
    ChatCompletionRequestSystemMessageContent, ChatCompletionRequestUserMessage,
    ChatCompletionRequestUserMessageContent, CreateChatCompletionRequest,
};
use async_openai::types::embeddings::{CreateEmbeddingRequest, EmbeddingInput};
use bson::doc;
use serde::{Deserialize, Serialize};

use crate::crypto::SecretBox;
use crate::db::{Db, DbResult};
use crate::egress::{self, Egress, EgressError};
use crate::ids::TenantId;
use crate::model::{AiProvider, AiProviderType};

pub use config::LlmConfig;
pub use stream::{ChatStream, StreamPiece};

/// Default timeout of one LLM call (`LLM_TIMEOUT_SECONDS` overrides it where
/// the caller reads the configuration).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// Longest error text kept from a provider's answer.
const MAX_ERROR_TEXT: usize = 300;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChatRole {
    System,
    User,
    Assistant,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: ChatRole,
    pub content: String,
}

impl ChatMessage {
    pub fn system(content: impl Into<String>) -> Self {
        Self {
            role: ChatRole::System,
            content: content.into(),
        }
    }
    pub fn user(content: impl Into<String>) -> Self {
        Self {
            role: ChatRole::User,
            content: content.into(),
        }
    }
    pub fn assistant(content: impl Into<String>) -> Self {
        Self {
            role: ChatRole::Assistant,
            content: content.into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ChatRequest {
    /// Model (Azure: deployment) to answer with; empty uses the provider's
    /// `chatModel`.
    pub model: String,
    pub temperature: f32,
    pub max_tokens: u32,
    pub messages: Vec<ChatMessage>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenUsage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    pub total_tokens: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ChatOutput {
    pub content: String,
    pub usage: TokenUsage,
    /// The model that answered, as the provider reports it.
    pub model: String,
}

/// Embeddings of a batch, in input order, and what they cost.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbedOutput {
    pub vectors: Vec<Vec<f32>>,
    pub usage: TokenUsage,
    pub model: String,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LlmError {
    /// 429: slow down; `retry_after` is the provider's `Retry-After`.
    #[error("the AI provider is rate limiting requests{}", retry_after.map(|d| format!(" (retry after {} s)", d.as_secs_f32())).unwrap_or_default())]
    RateLimited { retry_after: Option<Duration> },
    /// 5xx, or an answer that could not be understood.
    #[error("the AI provider failed: {0}")]
    Server(String),
    /// Any other 4xx: wrong key, unknown model, bad request. Retrying the
    /// same call cannot succeed.
    #[error("the AI provider rejected the request: {0}")]
    Rejected(String),
    #[error("the AI provider did not answer in time")]
    Timeout,
    #[error("could not reach the AI provider: {0}")]
    Network(String),
    /// The egress guard refused the call: an address inside the
    /// platform's network, a redirect, an oversized answer.
    #[error("the AI provider cannot be called: {0}")]
    NotAllowed(String),
    /// The provider's settings cannot work (missing base URL, key that
    /// cannot be decrypted, no embedding model, ...).
    #[error("the AI provider is misconfigured: {0}")]
    Config(String),
}

impl LlmError {
    /// Whether the same call may succeed later.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            LlmError::RateLimited { .. }
                | LlmError::Server(_)
                | LlmError::Timeout
                | LlmError::Network(_)
        )
    }

    /// The error for an HTTP status and body; `retry_after` is only used
    /// for 429.
    pub fn from_status(status: u16, body: &str, retry_after: Option<Duration>) -> Self {
        let text = error_text(body);
        match status {
            429 => LlmError::RateLimited { retry_after },
            500..=599 => LlmError::Server(format!("HTTP {status}: {text}")),
            408 => LlmError::Timeout,
            _ => LlmError::Rejected(format!("HTTP {status}: {text}")),
        }
    }
}

/// The readable part of an error body: OpenAI's `{"error": {"message"}}`
/// (or a top-level `message`/`error` string), shortened. Anything else is
/// never repeated: a raw body could be some internal page's content.
fn error_text(body: &str) -> String {
    let message = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            v.pointer("/error/message")
                .or_else(|| v.get("message"))
                .or_else(|| v.get("error"))
                .and_then(|m| m.as_str().map(str::to_owned))
        })
        .unwrap_or_default();
    let mut text: String = message
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_ERROR_TEXT)
        .collect();
    if text.is_empty() {
        text = "no details".to_owned();
    }
    text
}

/// `Retry-After` in seconds (integer or decimal), or OpenAI's
/// `retry-after-ms`. HTTP dates are not used by LLM providers and are
/// ignored.
pub fn parse_retry_after(headers: &http::HeaderMap) -> Option<Duration> {
    if let Some(ms) = headers
        .get("retry-after-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|v| v.is_finite() && *v >= 0.0)
    {
        return Some(Duration::from_secs_f64(ms / 1000.0));
    }
    headers
        .get(http::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|v| v.is_finite() && *v >= 0.0)
        .map(Duration::from_secs_f64)
}

/// A non-2xx answer, carried through async-openai as a boxed middleware
/// error so that the status and `Retry-After` survive.
#[derive(Debug, thiserror::Error)]
#[error("HTTP {status}")]
struct HttpFailure {
    status: u16,
    retry_after: Option<Duration>,
    body: String,
}

/// The transport: one request, no retries; non-2xx answers become
/// [`HttpFailure`]. Its HTTP client is the egress guard's: the URL is
/// checked before the call, DNS answers are filtered, redirects are
/// refused and bodies are read with a cap.
#[derive(Clone)]
struct SingleShot {
    egress: Egress,
    timeout: Duration,
}

/// A refusal by the egress guard, carried through async-openai.
fn refused(e: EgressError) -> OpenAIError {
    OpenAIError::Boxed(Box::new(e))
}

impl tower::Service<HttpRequestFactory> for SingleShot {
    type Response = reqwest_oai::Response;
    type Error = OpenAIError;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, OpenAIError>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, factory: HttpRequestFactory) -> Self::Future {
        let egress = self.egress.clone();
        let timeout = self.timeout;
        Box::pin(async move {
            let mut request = factory.build().await?;
            egress.policy().check_url(request.url()).map_err(refused)?;
            *request.timeout_mut() = Some(timeout);
            let mut response = egress.llm_http().execute(request).await.map_err(|e| {
                match EgressError::find(&e) {
                    Some(r) => refused(r.clone()),
                    None => OpenAIError::Reqwest(e),
                }
            })?;
            let status = response.status();
            if status.is_redirection() {
                return Err(refused(EgressError::Redirect(status.as_u16())));
            }
            if status.is_success() && is_event_stream(response.headers()) {
                return Ok(capped_stream(response, egress::LLM_MAX_RESPONSE_BYTES));
            }
            let cap = if status.is_success() {
                egress::LLM_MAX_RESPONSE_BYTES
            } else {
                egress::ERROR_MAX_RESPONSE_BYTES
            };
            let body = match egress::read_capped_oai(&mut response, cap).await {
                Ok(body) => body,
                Err(egress::ReadError::TooLarge(e)) => return Err(refused(e)),
                Err(egress::ReadError::Http(e)) => return Err(OpenAIError::Reqwest(e)),
            };
            if status.is_success() {
                // async-openai reads the body again: hand it the capped copy.
                let mut rebuilt = http::Response::new(body);
                *rebuilt.status_mut() = status;
                *rebuilt.headers_mut() = response.headers().clone();
                return Ok(reqwest_oai::Response::from(rebuilt));
            }
            Err(OpenAIError::Boxed(Box::new(HttpFailure {
                status: status.as_u16(),
                retry_after: parse_retry_after(response.headers()),
                body: String::from_utf8_lossy(&body).into_owned(),
            })))
        })
    }
}

fn is_event_stream(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("text/event-stream"))
}

/// A streamed answer passed on as it arrives, ended with an error once it
/// grows past `cap` bytes: the one place a provider's body is not read
/// whole, so the cap travels with it.
fn capped_stream(response: reqwest_oai::Response, cap: usize) -> reqwest_oai::Response {
    use futures::StreamExt;
    let status = response.status();
    let headers = response.headers().clone();
    let mut seen = 0usize;
    let body = response.bytes_stream().map(move |chunk| {
        let chunk = chunk.map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)?;
        seen = seen.saturating_add(chunk.len());
        if seen > cap {
            return Err(
                Box::new(EgressError::TooLarge(cap)) as Box<dyn std::error::Error + Send + Sync>
            );
        }
        Ok(chunk)
    });
    let mut rebuilt = http::Response::new(reqwest_oai::Body::wrap_stream(body));
    *rebuilt.status_mut() = status;
    *rebuilt.headers_mut() = headers;
    reqwest_oai::Response::from(rebuilt)
}

fn classify(e: OpenAIError) -> LlmError {
    match e {
        OpenAIError::Boxed(inner) => match inner.downcast::<HttpFailure>() {
            Ok(f) => LlmError::from_status(f.status, &f.body, f.retry_after),
            Err(other) => match other.downcast::<EgressError>() {
                Ok(refusal) => LlmError::NotAllowed(refusal.to_string()),
                Err(other) => LlmError::Network(other.to_string()),
            },
        },
        OpenAIError::Reqwest(e) if e.is_timeout() => LlmError::Timeout,
        OpenAIError::Reqwest(e) => {
            // Include the cause chain: reqwest's own message is just
            // "error sending request".
            let mut text = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                text.push_str(": ");
                text.push_str(&s.to_string());
                source = s.source();
            }
            LlmError::Network(text)
        }
        OpenAIError::ApiError(api) => {
            LlmError::from_status(api.status_code.as_u16(), &api.api_error.message, None)
        }
        OpenAIError::JSONDeserialize(e, _) => {
            LlmError::Server(format!("unexpected answer from the provider: {e}"))
        }
        OpenAIError::InvalidArgument(m) => LlmError::Config(m),
        other => LlmError::Network(other.to_string()),
    }
}

/// rustls needs a process-wide crypto provider; ring is the one the rest
/// of the workspace already builds. Installing twice is harmless.
pub(crate) fn ensure_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

type DynClient = Client<Box<dyn Config>>;

/// Calls one AI provider. Cheap to clone.
#[derive(Clone)]
pub struct LlmClient {
    chat: Arc<DynClient>,
    /// Azure serves embeddings from their own deployment, hence a second
    /// client there; elsewhere the same as `chat`.
    embeddings: Arc<DynClient>,
    provider_type: AiProviderType,
    chat_model: String,
    embedding_model: Option<String>,
    embedding_dimensions: Option<u32>,
}

impl std::fmt::Debug for LlmClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmClient")
            .field("provider_type", &self.provider_type)
            .field("chat_model", &self.chat_model)
            .field("embedding_model", &self.embedding_model)
            .finish_non_exhaustive()
    }
}

impl LlmClient {
    /// A client for `p`, calling through `egress` (the platform's guard).
    pub fn from_provider(
        p: &AiProvider,
        secrets: &SecretBox,
        egress: &Egress,
        timeout: Duration,
    ) -> Result<Self, LlmError> {
        let api_key = match p.api_key.as_deref().filter(|k| !k.is_empty()) {
            Some(sealed) => secrets
                .open(sealed)
                .map_err(|e| LlmError::Config(format!("the stored API key cannot be used: {e}")))?,
            None => String::new(),
        };
        let base = p
            .effective_base_url()
            .ok_or_else(|| LlmError::Config("baseUrl is required for this provider".into()))?;
        let service = SingleShot {
            egress: egress.clone(),
            timeout,
        };
        // `Client::with_config` would build a reqwest client of its own,
        // which reads the system's root certificates: about 19 million
        // instructions per reply, more than half of a webhook's whole path
        // (callgrind). The guarded client only builds the requests here;
        // `SingleShot` sends them.
        let make = |config: Box<dyn Config>| {
            Arc::new(
                Client::build(egress.llm_http().clone(), config).with_http_service(service.clone()),
            )
        };
        let embedding_model = p.embedding_model().map(str::to_owned);
        let (chat, embeddings) = match p.provider_type {
            AiProviderType::AzureOpenai => {
                let version = p
                    .api_version
                    .clone()
                    .filter(|v| !v.trim().is_empty())
                    .ok_or_else(|| {
                        LlmError::Config("apiVersion is required for Azure OpenAI".into())
                    })?;
                let azure = |deployment: &str| -> Box<dyn Config> {
                    Box::new(
                        AzureConfig::new()
                            .with_api_base(base.clone())
                            .with_api_version(version.clone())
                            .with_deployment_id(deployment)
                            .with_api_key(api_key.clone()),
                    )
                };
                let chat = make(azure(&p.chat_model));
                let embeddings = match &embedding_model {
                    Some(m) => make(azure(m)),
                    None => chat.clone(),
                };
                (chat, embeddings)
            }
            AiProviderType::Openai | AiProviderType::OpenaiCompatible => {
                let config = OpenAIConfig::new()
                    .with_api_base(base.clone())
                    .with_api_key(api_key.clone())
                    // Not from the process environment (OPENAI_ORG_ID etc.):
                    // every tenant's provider stands alone.
                    .with_org_id("")
                    .with_project_id("");
                let chat = make(Box::new(config));
                (chat.clone(), chat)
            }
        };
        Ok(Self {
            chat,
            embeddings,
            provider_type: p.provider_type,
            chat_model: p.chat_model.clone(),
            embedding_model,
            embedding_dimensions: p.embedding_dimensions,
        })
    }

    pub fn chat_model(&self) -> &str {
        &self.chat_model
    }

    pub fn embedding_model(&self) -> Option<&str> {
        self.embedding_model.as_deref()
    }

    /// One chat completion: one HTTP call, no retry inside.
    pub async fn chat(&self, req: &ChatRequest) -> Result<ChatOutput, LlmError> {
        let request = self.completion_request(req);
        let response = self.chat.chat().create(request).await.map_err(classify)?;
        let content = response
            .choices
            .into_iter()
            .next()
            .and_then(|c| c.message.content)
            .unwrap_or_default();
        let usage = response.usage.map(token_usage).unwrap_or_default();
        Ok(ChatOutput {
            content,
            usage,
            model: response.model,
        })
    }

    fn completion_request(&self, req: &ChatRequest) -> CreateChatCompletionRequest {
        let model = if req.model.trim().is_empty() {
            self.chat_model.clone()
        } else {
            req.model.clone()
        };
        let messages = req.messages.iter().map(to_openai_message).collect();
        let mut request = CreateChatCompletionRequest {
            model,
            messages,
            temperature: Some(req.temperature),
            ..Default::default()
        };
        // OpenAI's newer models accept only `max_completion_tokens`; Azure
        // deployments and compatible servers (Ollama, vLLM) know `max_tokens`.
        if self.provider_type == AiProviderType::Openai {
            request.max_completion_tokens = Some(req.max_tokens);
        } else {
            // Deprecated by OpenAI only; the other servers still read it.
            #[allow(deprecated)]
            {
                request.max_tokens = Some(req.max_tokens);
            }
        }
        request
    }

    /// Embeddings of `inputs` with the provider's embedding model, in input
    /// order: one HTTP call.
    pub async fn embed(&self, inputs: &[String]) -> Result<Vec<Vec<f32>>, LlmError> {
        Ok(self.embed_with_usage(inputs).await?.vectors)
    }

    /// [`embed`](Self::embed) with the token usage the provider reported.
    pub async fn embed_with_usage(&self, inputs: &[String]) -> Result<EmbedOutput, LlmError> {
        let model = self
            .embedding_model
            .clone()
            .ok_or_else(|| LlmError::Config("the provider has no embedding model".into()))?;
        if inputs.is_empty() {
            return Ok(EmbedOutput {
                vectors: Vec::new(),
                usage: TokenUsage::default(),
                model,
            });
        }
        let request = CreateEmbeddingRequest {
            model: model.clone(),
            input: EmbeddingInput::StringArray(inputs.to_vec()),
            encoding_format: None,
            user: None,
            dimensions: self.embedding_dimensions,
        };
        let response = self
            .embeddings
            .embeddings()
            .create(request)
            .await
            .map_err(classify)?;
        if response.data.len() != inputs.len() {
            return Err(LlmError::Server(format!(
                "asked for {} embeddings, got {}",
                inputs.len(),
                response.data.len()
            )));
        }
        let mut data = response.data;
        data.sort_by_key(|e| e.index);
        let vectors: Vec<Vec<f32>> = data.into_iter().map(|e| e.embedding).collect();
        let dim = vectors.first().map(Vec::len).unwrap_or(0);
        if dim == 0 || vectors.iter().any(|v| v.len() != dim) {
            return Err(LlmError::Server(
                "the provider returned empty or unequal embeddings".into(),
            ));
        }
        Ok(EmbedOutput {
            vectors,
            usage: TokenUsage {
                prompt_tokens: response.usage.prompt_tokens,
                completion_tokens: 0,
                total_tokens: response.usage.total_tokens,
            },
            model: if response.model.is_empty() {
                model
            } else {
                response.model
            },
        })
    }
}

fn token_usage(u: async_openai::types::chat::CompletionUsage) -> TokenUsage {
    TokenUsage {
        prompt_tokens: u.prompt_tokens,
        completion_tokens: u.completion_tokens,
        total_tokens: u.total_tokens,
    }
}

fn to_openai_message(m: &ChatMessage) -> ChatCompletionRequestMessage {
    match m.role {
        ChatRole::System => {
            ChatCompletionRequestMessage::System(ChatCompletionRequestSystemMessage {
                content: ChatCompletionRequestSystemMessageContent::Text(m.content.clone()),
                name: None,
            })
        }
        ChatRole::User => ChatCompletionRequestMessage::User(ChatCompletionRequestUserMessage {
            content: ChatCompletionRequestUserMessageContent::Text(m.content.clone()),
            name: None,
        }),
        ChatRole::Assistant => {
            ChatCompletionRequestMessage::Assistant(ChatCompletionRequestAssistantMessage {
                content: Some(ChatCompletionRequestAssistantMessageContent::Text(
                    m.content.clone(),
                )),
                ..Default::default()
            })
        }
    }
}

/// The provider an agent answers with: the agent's own `ai_provider_id` if
/// set and active, else the tenant's active default, else `None`
/// (retrieval-only responder).
pub async fn resolve_provider(
    db: &Db,
    tenant: &TenantId,
    agent_provider: Option<&str>,
) -> DbResult<Option<AiProvider>> {
    let providers = db.scoped::<AiProvider>(tenant);
    if let Some(id) = agent_provider.filter(|id| !id.is_empty())
        && let Some(p) = providers
            .find_one(doc! { "_id": id, "isActive": true })
            .await?
    {
        return Ok(Some(p));
    }
    providers
        .find_one(crate::db::narrowed(
            doc! { "isDefault": true },
            doc! { "isActive": true },
        ))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_classification() {
        let rl = LlmError::from_status(429, "{}", Some(Duration::from_secs(2)));
        assert_eq!(
            rl,
            LlmError::RateLimited {
                retry_after: Some(Duration::from_secs(2))
            }
        );
        assert!(rl.is_retryable());
        assert!(
            matches!(LlmError::from_status(503, r#"{"error":{"message":"down"}}"#, None), LlmError::Server(m) if m.contains("down"))
        );
        // A body that is not a provider's error is never repeated.
        assert!(
            matches!(LlmError::from_status(502, "<html>internal admin</html>", None), LlmError::Server(m) if m == "HTTP 502: no details")
        );
        let rejected = LlmError::from_status(
            401,
            r#"{"error":{"message":"Incorrect API key provided"}}"#,
            None,
        );
        assert!(
            matches!(&rejected, LlmError::Rejected(m) if m == "HTTP 401: Incorrect API key provided")
        );
        assert!(!rejected.is_retryable());
        assert!(!LlmError::Config("x".into()).is_retryable());
        assert!(LlmError::Timeout.is_retryable());
    }

    #[test]
    fn retry_after_headers() {
        let mut h = http::HeaderMap::new();
        assert_eq!(parse_retry_after(&h), None);
        h.insert(
            http::header::RETRY_AFTER,
            http::HeaderValue::from_static("3"),
        );
        assert_eq!(parse_retry_after(&h), Some(Duration::from_secs(3)));
        h.insert("retry-after-ms", http::HeaderValue::from_static("250"));
        assert_eq!(parse_retry_after(&h), Some(Duration::from_millis(250)));
        let mut date = http::HeaderMap::new();
        date.insert(
            http::header::RETRY_AFTER,
            http::HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(parse_retry_after(&date), None);
    }
}
