//! What the ai-providers routes answer: never the API key, only whether
//! there is one and its last four characters.

use chrono::{DateTime, Utc};
use salvo::oapi::ToSchema;
use serde::Serialize;

use aigentable_platform::crypto::mask;
use aigentable_platform::model::AiProvider;

use crate::accepted::AcceptedJob;
use crate::views::Pagination;

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AiProviderView {
    pub id: String,
    pub tenant_id: String,
    pub name: String,
    /// `OPENAI`, `AZURE_OPENAI` or `OPENAI_COMPATIBLE`.
    #[serde(rename = "type")]
    pub provider_type: String,
    pub base_url: Option<String>,
    pub api_version: Option<String>,
    pub has_api_key: bool,
    pub api_key_last4: Option<String>,
    /// `****` and the last four characters, for display.
    pub api_key_masked: Option<String>,
    pub chat_model: String,
    pub embedding_model: Option<String>,
    pub embedding_dimensions: Option<u32>,
    pub is_default: bool,
    pub is_active: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<&AiProvider> for AiProviderView {
    fn from(p: &AiProvider) -> Self {
        let has_key = p.api_key.as_deref().is_some_and(|k| !k.is_empty());
        Self {
            id: p.id.clone(),
            tenant_id: p.tenant_id.to_string(),
            name: p.name.clone(),
            provider_type: p.provider_type.as_str().to_owned(),
            base_url: p.base_url.clone(),
            api_version: p.api_version.clone(),
            has_api_key: has_key,
            api_key_last4: if has_key {
                p.api_key_last4.clone()
            } else {
                None
            },
            api_key_masked: if has_key {
                p.api_key_last4.as_deref().map(mask)
            } else {
                None
            },
            chat_model: p.chat_model.clone(),
            embedding_model: p.embedding_model.clone(),
            embedding_dimensions: p.embedding_dimensions,
            is_default: p.is_default,
            is_active: p.is_active,
            created_at: p.created_at,
            updated_at: p.updated_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AiProviderList {
    pub providers: Vec<AiProviderView>,
    pub pagination: Pagination,
}

/// Every field optional: `POST` requires `name`, `type` and `chatModel`
/// (and per type: `baseUrl`, `apiVersion`, `apiKey`); `PUT` changes what is
/// given and re-checks the result. Fields of the view (`id`, `hasApiKey`,
/// ...) are ignored, so a form may send a provider back as it got it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProviderTestAccepted {
    #[serde(flatten)]
    pub accepted: AcceptedJob,
    /// The job's status; its result (`ok`, `latencyMs`, `error`) is at
    /// `GET /jobs/{jobId}` and in its `job-updated` event.
    pub status: String,
}
