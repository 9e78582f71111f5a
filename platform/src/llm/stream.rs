//! Streamed chat completions: the answer's text as the provider writes it,
//! so a visitor sees it appear instead of waiting for the whole reply.

use std::pin::Pin;

use async_openai::types::chat::ChatCompletionStreamOptions;
use futures::{Stream, StreamExt};

use super::{ChatRequest, LlmClient, LlmError, TokenUsage, classify, token_usage};
use crate::model::AiProviderType;

/// One piece of a streamed answer: text to append, and on the last pieces
/// the model and the usage when the provider reports them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StreamPiece {
    pub delta: String,
    pub usage: Option<TokenUsage>,
    pub model: Option<String>,
}

/// A streamed answer; it ends after the provider's `[DONE]`, or with an
/// error when the stream is cut or grows past the response cap.
pub type ChatStream = Pin<Box<dyn Stream<Item = Result<StreamPiece, LlmError>> + Send>>;

impl LlmClient {
    /// One streamed chat completion: one HTTP call, no retry inside. An
    /// error before the first piece is the call's error; the pieces end
    /// with an error when the stream breaks.
    pub async fn chat_stream(&self, req: &ChatRequest) -> Result<ChatStream, LlmError> {
        let mut request = self.completion_request(req);
        // Azure's older API versions refuse `stream_options`; without it
        // the usage is estimated by the caller.
        if self.provider_type != AiProviderType::AzureOpenai {
            request.stream_options = Some(ChatCompletionStreamOptions {
                include_usage: Some(true),
                ..Default::default()
            });
        }
        let stream = self
            .chat
            .chat()
            .create_stream(request)
            .await
            .map_err(classify)?;
        Ok(Box::pin(stream.map(|chunk| {
            let chunk = chunk.map_err(classify)?;
            let delta = chunk
                .choices
                .into_iter()
                .filter(|c| c.index == 0)
                .filter_map(|c| c.delta.content)
                .collect::<String>();
            Ok(StreamPiece {
                delta,
                usage: chunk.usage.map(token_usage),
                model: Some(chunk.model).filter(|m| !m.is_empty()),
            })
        })))
    }
}
