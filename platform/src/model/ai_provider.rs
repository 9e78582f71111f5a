//! AI providers: the LLM endpoints a tenant answers and embeds with.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::db::TenantOwned;
use crate::ids::TenantId;

pub const COLLECTION: &str = "ai_providers";

/// Base URL of OpenAI's API when an `OPENAI` provider has none.
pub const OPENAI_DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AiProviderType {
    /// OpenAI itself; `baseUrl` optional (defaults to `https://api.openai.com/v1`).
    Openai,
    /// Azure OpenAI: `baseUrl` is the resource endpoint
    /// (`https://<resource>.openai.azure.com`), `apiVersion` is required and
    /// the models are deployment names.
    AzureOpenai,
    /// Any OpenAI-compatible server (Ollama, vLLM, LM Studio, ...): `baseUrl`
    /// required, ending in its API root (e.g. `http://localhost:11434/v1`).
    OpenaiCompatible,
}

impl AiProviderType {
    pub fn as_str(self) -> &'static str {
        match self {
            AiProviderType::Openai => "OPENAI",
            AiProviderType::AzureOpenai => "AZURE_OPENAI",
            AiProviderType::OpenaiCompatible => "OPENAI_COMPATIBLE",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AiProvider {
    #[serde(rename = "_id")]
    pub id: String,
    pub tenant_id: TenantId,
    pub name: String,
    #[serde(rename = "type")]
    pub provider_type: AiProviderType,
    /// For `OPENAI` and `OPENAI_COMPATIBLE` the API root including `/v1`;
    /// for `AZURE_OPENAI` the resource endpoint (no path).
    #[serde(default)]
    pub base_url: Option<String>,
    /// Azure only: the `api-version` query parameter.
    #[serde(default)]
    pub api_version: Option<String>,
    /// Sealed with `SecretBox` (`v1:...`); never leaves the backend.
    #[serde(default)]
    pub api_key: Option<String>,
    #[serde(default)]
    pub api_key_last4: Option<String>,
    /// Model (Azure: deployment) used for replies.
    pub chat_model: String,
    /// Model (Azure: deployment) used for dense embeddings; `None` keeps the
    /// tenant's retrieval on BM25 alone.
    #[serde(default)]
    pub embedding_model: Option<String>,
    /// Requested embedding size, for models that can shorten their vectors.
    #[serde(default)]
    pub embedding_dimensions: Option<u32>,
    pub is_default: bool,
    pub is_active: bool,
    #[serde(with = "crate::model::bson_datetime")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "crate::model::bson_datetime")]
    pub updated_at: DateTime<Utc>,
}

impl TenantOwned for AiProvider {
    const COLLECTION: &'static str = COLLECTION;
    const LIVE_CONFIG: bool = true;
    fn tenant_id(&self) -> &TenantId {
        &self.tenant_id
    }
}

impl AiProvider {
    /// The base URL calls go to: the configured one without a trailing
    /// slash, or OpenAI's for `OPENAI` providers without one.
    pub fn effective_base_url(&self) -> Option<String> {
        let configured = self
            .base_url
            .as_deref()
            .map(|u| u.trim().trim_end_matches('/'))
            .filter(|u| !u.is_empty())
            .map(str::to_owned);
        match (configured, self.provider_type) {
            (Some(url), _) => Some(url),
            (None, AiProviderType::Openai) => Some(OPENAI_DEFAULT_BASE_URL.to_owned()),
            (None, _) => None,
        }
    }

    /// The embedding model, when one is configured (blank counts as none).
    pub fn embedding_model(&self) -> Option<&str> {
        self.embedding_model
            .as_deref()
            .map(str::trim)
            .filter(|m| !m.is_empty())
    }
}
