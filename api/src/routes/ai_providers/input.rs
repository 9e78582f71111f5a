//! The ai-providers request body and how it is checked and applied.

use salvo::oapi::ToSchema;
use serde::Deserialize;

use aigentable_platform::domain::Name;
use aigentable_platform::model::{AiProvider, AiProviderType};

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AiProviderInput {
    pub name: Option<String>,
    /// `OPENAI`, `AZURE_OPENAI` or `OPENAI_COMPATIBLE`.
    #[serde(rename = "type")]
    #[salvo(schema(value_type = Option<String>))]
    pub provider_type: Option<AiProviderType>,
    /// OpenAI / compatible: API root ending in `/v1` (OpenAI's default when
    /// absent); Azure: the resource endpoint. `null` clears it.
    #[serde(default, deserialize_with = "double_option")]
    #[salvo(schema(value_type = Option<String>))]
    pub base_url: Option<Option<String>>,
    /// Azure OpenAI `api-version`, e.g. `2024-10-21`.
    #[serde(default, deserialize_with = "double_option")]
    #[salvo(schema(value_type = Option<String>))]
    pub api_version: Option<Option<String>>,
    /// Write-only. `null` or `""` removes it.
    #[serde(default, deserialize_with = "double_option")]
    #[salvo(schema(value_type = Option<String>))]
    pub api_key: Option<Option<String>>,
    /// Model for replies (Azure: the deployment name).
    pub chat_model: Option<String>,
    /// Model for dense embeddings (Azure: deployment); `null` keeps search
    /// on BM25 alone.
    #[serde(default, deserialize_with = "double_option")]
    #[salvo(schema(value_type = Option<String>))]
    pub embedding_model: Option<Option<String>>,
    /// Requested embedding size (1 to 8192), for models that support it.
    #[serde(default, deserialize_with = "double_option_u32")]
    #[salvo(schema(value_type = Option<u32>))]
    #[salvo(schema(minimum = 1, maximum = 8192))]
    pub embedding_dimensions: Option<Option<u32>>,
    pub is_default: Option<bool>,
    pub is_active: Option<bool>,
}

fn double_option<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<String>>, D::Error> {
    Ok(Some(Option::deserialize(d)?))
}

fn double_option_u32<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<u32>>, D::Error> {
    Ok(Some(Option::deserialize(d)?))
}

fn trimmed(v: &Option<String>) -> Option<String> {
    v.as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

fn check_url(field: &str, url: &str) -> ApiResult<()> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| ApiError::field(field, "must be an http(s) URL"))?;
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty() || url.chars().any(char::is_whitespace) || url.len() > 500 {
        return Err(ApiError::field(field, "must be an http(s) URL"));
    }
    Ok(())
}

/// Applies `input` to `p` (a new provider or the stored one) and checks
/// the result for its type.
pub(super) fn apply(
    state: &AppState,
    p: &mut AiProvider,
    input: &AiProviderInput,
) -> ApiResult<()> {
    let base_before = p.effective_base_url();
    if let Some(name) = &input.name {
        p.name = Name::parse("name", name, 100)?.into_inner();
    }
    if let Some(t) = input.provider_type {
        p.provider_type = t;
    }
    if let Some(url) = &input.base_url {
        p.base_url = trimmed(url).map(|u| u.trim_end_matches('/').to_owned());
    }
    if let Some(v) = &input.api_version {
        p.api_version = trimmed(v);
    }
    if let Some(key) = &input.api_key {
        match trimmed(key) {
            Some(k) => {
                if k.len() > 500 {
                    return Err(ApiError::field("apiKey", "must be at most 500 characters"));
                }
                let last4: String = k
                    .chars()
                    .rev()
                    .take(4)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect();
                p.api_key = Some(state.platform.secrets.seal(&k));
                p.api_key_last4 = Some(last4);
            }
            None => {
                p.api_key = None;
                p.api_key_last4 = None;
            }
        }
    }
    if let Some(m) = &input.chat_model {
        p.chat_model = Name::parse("chatModel", m, 200)?.into_inner();
    }
    if let Some(m) = &input.embedding_model {
        p.embedding_model = match trimmed(m) {
            Some(m) => Some(Name::parse("embeddingModel", &m, 200)?.into_inner()),
            None => None,
        };
    }
    if let Some(d) = input.embedding_dimensions {
        if let Some(d) = d
            && !(1..=8192).contains(&d)
        {
            return Err(ApiError::field(
                "embeddingDimensions",
                "must be between 1 and 8192",
            ));
        }
        p.embedding_dimensions = d;
    }
    if let Some(active) = input.is_active {
        p.is_active = active;
    }

    if p.chat_model.trim().is_empty() {
        return Err(ApiError::field("chatModel", "is required"));
    }
    if let Some(url) = &p.base_url {
        check_url("baseUrl", url)?;
    }
    let has_key = p.api_key.is_some();
    match p.provider_type {
        AiProviderType::Openai => {
            if !has_key {
                return Err(ApiError::field("apiKey", "is required for OPENAI"));
            }
        }
        AiProviderType::AzureOpenai => {
            if p.base_url.is_none() {
                return Err(ApiError::field(
                    "baseUrl",
                    "is required for AZURE_OPENAI (the resource endpoint, e.g. https://my-resource.openai.azure.com)",
                ));
            }
            if p.api_version.is_none() {
                return Err(ApiError::field(
                    "apiVersion",
                    "is required for AZURE_OPENAI (e.g. 2024-10-21)",
                ));
            }
            if !has_key {
                return Err(ApiError::field("apiKey", "is required for AZURE_OPENAI"));
            }
        }
        AiProviderType::OpenaiCompatible => {
            if p.base_url.is_none() {
                return Err(ApiError::field(
                    "baseUrl",
                    "is required for OPENAI_COMPATIBLE (its API root, e.g. http://localhost:11434/v1)",
                ));
            }
        }
    }
    if p.provider_type != AiProviderType::AzureOpenai {
        p.api_version = None;
    }
    // A stored key never follows a new address: whoever points the
    // provider elsewhere must know the key (or send a new one).
    let key_sent = matches!(&input.api_key, Some(Some(k)) if !k.trim().is_empty());
    if p.api_key.is_some() && !key_sent && p.effective_base_url() != base_before {
        return Err(ApiError::field(
            "apiKey",
            "must be entered again when baseUrl (or type) changes",
        ));
    }
    Ok(())
}
