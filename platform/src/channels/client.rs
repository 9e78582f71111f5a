//! HTTP clients of the providers: send a text, check the credentials,
//! register Telegram's webhook. Errors say whether retrying can help.
//!
//! Tokens never reach logs or error texts: reqwest errors are stripped of
//! their URL (a Telegram URL contains the bot token) and provider error
//! bodies are reduced to their message. Every call goes through the egress
//! guard ([`crate::egress`]); only known fields of a provider's answer are
//! kept, so whatever a URL answers is never handed back whole.

use serde_json::{Value, json};

use super::ChannelsConfig;
use crate::crypto::SecretBox;
use crate::egress::{self, Egress, SendError};
use crate::model::{Channel, ChannelType};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// The provider refused the request (4xx other than 429): retrying the
    /// same request cannot succeed.
    #[error("{provider} rejected the request (HTTP {status}): {message}")]
    Rejected {
        provider: &'static str,
        status: u16,
        message: String,
    },
    /// Rate limited, provider error or network failure: may work later.
    #[error("{provider} is unavailable ({reason})")]
    Retryable {
        provider: &'static str,
        reason: String,
    },
    /// The channel lacks a setting or a secret cannot be read.
    #[error("channel is misconfigured: {0}")]
    Config(String),
    /// The egress guard refused the call (an address inside the platform's
    /// network, a redirect, an oversized answer).
    #[error("{provider} cannot be called: {reason}")]
    Refused {
        provider: &'static str,
        reason: String,
    },
}

impl ProviderError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, ProviderError::Retryable { .. })
    }
}

/// Where and as whom to call one channel's provider.
#[derive(Clone)]
pub struct Target {
    pub channel_type: ChannelType,
    /// API base without trailing slash.
    pub base: String,
    /// Graph API version (Meta types).
    pub version: String,
    /// Phone number id, page id or Instagram account id.
    pub account_id: String,
    token: String,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("channel_type", &self.channel_type)
            .field("base", &self.base)
            .field("account_id", &self.account_id)
            .finish_non_exhaustive()
    }
}

fn provider_name(t: ChannelType) -> &'static str {
    match t {
        ChannelType::Whatsapp => "WhatsApp",
        ChannelType::Facebook => "Messenger",
        ChannelType::Instagram => "Instagram",
        ChannelType::Telegram => "Telegram",
        ChannelType::Website => "website",
    }
}

impl Target {
    /// Reads the channel's settings and opens its token.
    pub fn for_channel(
        config: &ChannelsConfig,
        secrets: &SecretBox,
        channel: &Channel,
    ) -> Result<Self, ProviderError> {
        Self::build(config, secrets, channel, true)
    }

    /// Like [`Target::for_channel`], but the account id may still be
    /// missing (`account_id` empty): the channel test looks it up.
    pub fn for_setup(
        config: &ChannelsConfig,
        secrets: &SecretBox,
        channel: &Channel,
    ) -> Result<Self, ProviderError> {
        Self::build(config, secrets, channel, false)
    }

    /// The same credentials against another API base (Instagram accounts
    /// are looked up from their Facebook page on the Facebook Graph API).
    pub fn with_base(&self, base: &str) -> Self {
        Self {
            base: base.trim_end_matches('/').to_owned(),
            ..self.clone()
        }
    }

    fn build(
        config: &ChannelsConfig,
        secrets: &SecretBox,
        channel: &Channel,
        require_account: bool,
    ) -> Result<Self, ProviderError> {
        let t = channel.channel_type;
        let (account_field, token_field) = match t {
            ChannelType::Whatsapp => (Some("phoneNumberId"), "accessToken"),
            ChannelType::Facebook => (Some("pageId"), "pageAccessToken"),
            ChannelType::Instagram => (Some("instagramAccountId"), "accessToken"),
            ChannelType::Telegram => (None, "botToken"),
            ChannelType::Website => {
                return Err(ProviderError::Config(
                    "website channels have no provider".to_owned(),
                ));
            }
        };
        let account_id = match account_field {
            Some(f) => match channel.config.get_str(f) {
                Ok(id) => id.to_owned(),
                Err(_) if !require_account => String::new(),
                Err(_) => return Err(ProviderError::Config(format!("config.{f} is missing"))),
            },
            None => String::new(),
        };
        let sealed = channel
            .secrets
            .get(token_field)
            .ok_or_else(|| ProviderError::Config(format!("config.{token_field} is missing")))?;
        let token = secrets.open(sealed).map_err(|_| {
            ProviderError::Config(format!(
                "config.{token_field} cannot be decrypted (was DATA_ENCRYPTION_KEY changed?)"
            ))
        })?;
        // A channel's own baseUrl counts only where the deployment allows
        // overrides (CHANNEL_BASE_URL_OVERRIDES).
        let base = channel
            .config
            .get_str("baseUrl")
            .ok()
            .filter(|_| config.base_url_overrides)
            .map(|b| b.trim_end_matches('/').to_owned())
            .unwrap_or_else(|| config.api_base(t).to_owned());
        let version = channel
            .config
            .get_str("apiVersion")
            .map(str::to_owned)
            .unwrap_or_else(|_| config.meta_api_version.clone());
        Ok(Self {
            channel_type: t,
            base,
            version,
            account_id,
            token,
        })
    }

    fn provider(&self) -> &'static str {
        provider_name(self.channel_type)
    }

    fn graph(&self, path: &str) -> String {
        format!("{}/v{}/{path}", self.base, self.version)
    }

    fn telegram(&self, method: &str) -> String {
        format!("{}/bot{}/{method}", self.base, self.token)
    }
}

/// A Telegram chat id: ids are numbers, kept numbers on the wire.
fn telegram_chat(to: &str) -> Value {
    to.parse::<i64>()
        .map_or_else(|_| Value::String(to.to_owned()), Value::from)
}

/// Longest text one provider message takes; longer replies are split.
pub fn max_text_len(t: ChannelType) -> usize {
    match t {
        ChannelType::Whatsapp | ChannelType::Telegram => 4_096,
        ChannelType::Facebook => 2_000,
        ChannelType::Instagram => 1_000,
        ChannelType::Website => 10_000,
    }
}

/// Splits `text` into pieces of at most `max` characters, preferring line
/// and word boundaries.
pub fn split_text(text: &str, max: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text.trim();
    while rest.chars().count() > max {
        let cut = rest.char_indices().nth(max).map_or(rest.len(), |(i, _)| i);
        let window = &rest[..cut];
        let split = window
            .rfind('\n')
            .or_else(|| window.rfind(' '))
            .filter(|i| *i > cut / 2)
            .unwrap_or(cut);
        out.push(rest[..split].trim_end().to_owned());
        rest = rest[split..].trim_start();
    }
    if !rest.is_empty() || out.is_empty() {
        out.push(rest.to_owned());
    }
    out
}

/// Calls the providers through the platform's egress guard. Cheap to
/// clone.
#[derive(Clone, Debug)]
pub struct ProviderClient {
    http: Egress,
}

impl ProviderClient {
    pub fn new(egress: &Egress) -> Self {
        Self {
            http: egress.clone(),
        }
    }

    async fn call(
        &self,
        provider: &'static str,
        req: reqwest::RequestBuilder,
    ) -> Result<Value, ProviderError> {
        let res = self
            .http
            .send(req, egress::CHANNEL_MAX_RESPONSE_BYTES)
            .await
            .map_err(|e| match e {
                SendError::Refused(e) => ProviderError::Refused {
                    provider,
                    reason: e.to_string(),
                },
                other => ProviderError::Retryable {
                    provider,
                    reason: other.to_string(),
                },
            })?;
        let status = res.status;
        let body: Value = serde_json::from_slice(&res.body).unwrap_or(Value::Null);
        if status.is_success() && body.get("ok") != Some(&Value::Bool(false)) {
            return Ok(body);
        }
        // Only a provider's own error shape is repeated, shortened; any
        // other body could be some internal page's content.
        let message = error_message(&body)
            .map(|m| shorten(&m, MAX_ERROR_TEXT))
            .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_owned());
        let code = status.as_u16();
        if status.as_u16() == 429 || status.is_server_error() {
            Err(ProviderError::Retryable {
                provider,
                reason: format!("HTTP {code}: {message}"),
            })
        } else {
            Err(ProviderError::Rejected {
                provider,
                status: code,
                message,
            })
        }
    }

    /// Sends `text` to `to` (wa_id, PSID, IGSID, Telegram chat id); answers
    /// the provider's message id.
    pub async fn send_text(
        &self,
        target: &Target,
        to: &str,
        text: &str,
    ) -> Result<String, ProviderError> {
        let p = target.provider();
        let req = match target.channel_type {
            ChannelType::Whatsapp => self
                .http
                .request(
                    reqwest::Method::POST,
                    &target.graph(&format!("{}/messages", target.account_id)),
                )
                .bearer_auth(&target.token)
                .json(&json!({
                    "messaging_product": "whatsapp",
                    "recipient_type": "individual",
                    "to": to,
                    "type": "text",
                    "text": { "body": text },
                })),
            ChannelType::Facebook => self
                .http
                .request(reqwest::Method::POST, &target.graph("me/messages"))
                .query(&[("access_token", target.token.as_str())])
                .json(&json!({
                    "recipient": { "id": to },
                    "messaging_type": "RESPONSE",
                    "message": { "text": text },
                })),
            ChannelType::Instagram => self
                .http
                .request(
                    reqwest::Method::POST,
                    &target.graph(&format!("{}/messages", target.account_id)),
                )
                .bearer_auth(&target.token)
                .json(&json!({
                    "recipient": { "id": to },
                    "message": { "text": text },
                })),
            ChannelType::Telegram => self
                .http
                .request(reqwest::Method::POST, &target.telegram("sendMessage"))
                .json(&json!({ "chat_id": telegram_chat(to), "text": text })),
            ChannelType::Website => {
                return Err(ProviderError::Config(
                    "website channels have no provider".to_owned(),
                ));
            }
        };
        let body = self.call(p, req).await?;
        let id = match target.channel_type {
            ChannelType::Whatsapp => body["messages"][0]["id"].as_str().map(str::to_owned),
            ChannelType::Facebook | ChannelType::Instagram => {
                body["message_id"].as_str().map(str::to_owned)
            }
            ChannelType::Telegram => body["result"]["message_id"].as_i64().map(|i| i.to_string()),
            ChannelType::Website => None,
        };
        // Accepted without an id: the message went out, receipts just cannot
        // be matched to it.
        Ok(id.unwrap_or_default())
    }

    /// Shows `to` that a reply is being written where the provider has
    /// such a signal: Telegram's `typing` chat action (it ends with the
    /// next message, or after 5 s). Elsewhere nothing is called.
    pub async fn send_typing(&self, target: &Target, to: &str) -> Result<(), ProviderError> {
        if target.channel_type != ChannelType::Telegram {
            return Ok(());
        }
        let req = self
            .http
            .request(reqwest::Method::POST, &target.telegram("sendChatAction"))
            .json(&json!({ "chat_id": telegram_chat(to), "action": "typing" }));
        self.call(target.provider(), req).await.map(|_| ())
    }

    /// One read-only call proving the credentials work; answers what the
    /// provider said about the account (name, username, number).
    pub async fn test(&self, target: &Target) -> Result<Value, ProviderError> {
        let p = target.provider();
        let req = match target.channel_type {
            ChannelType::Whatsapp => self
                .http
                .request(reqwest::Method::GET, &target.graph(&target.account_id))
                .query(&[("fields", "display_phone_number,verified_name")])
                .bearer_auth(&target.token),
            ChannelType::Facebook => self
                .http
                .request(reqwest::Method::GET, &target.graph(&target.account_id))
                .query(&[("fields", "id,name")])
                .bearer_auth(&target.token),
            ChannelType::Instagram => self
                .http
                .request(reqwest::Method::GET, &target.graph(&target.account_id))
                .query(&[("fields", "id,username")])
                .bearer_auth(&target.token),
            ChannelType::Telegram => self
                .http
                .request(reqwest::Method::GET, &target.telegram("getMe")),
            ChannelType::Website => return Ok(json!({})),
        };
        let body = self.call(p, req).await?;
        // Only the fields asked for, as short strings: whatever else the URL
        // answered is not handed back.
        let pick = account_field;
        Ok(match target.channel_type {
            ChannelType::Telegram => json!({
                "id": pick(&body["result"]["id"]),
                "username": pick(&body["result"]["username"]),
                "name": pick(&body["result"]["first_name"]),
            }),
            ChannelType::Whatsapp => json!({
                "id": pick(&body["id"]),
                "displayPhoneNumber": pick(&body["display_phone_number"]),
                "verifiedName": pick(&body["verified_name"]),
            }),
            ChannelType::Facebook => json!({
                "id": pick(&body["id"]),
                "name": pick(&body["name"]),
            }),
            ChannelType::Instagram => json!({
                "id": pick(&body["id"]),
                "username": pick(&body["username"]),
            }),
            ChannelType::Website => json!({}),
        })
    }

    /// A read-only Graph API `GET {base}/v{version}/{path}?fields=...` with
    /// the channel's token: what the channel test resolves ids with.
    pub async fn graph_get(
        &self,
        target: &Target,
        path: &str,
        fields: &str,
    ) -> Result<Value, ProviderError> {
        let req = self
            .http
            .request(reqwest::Method::GET, &target.graph(path))
            .query(&[("fields", fields)])
            .bearer_auth(&target.token);
        self.call(target.provider(), req).await
    }

    /// Registers `url` as the bot's webhook with our secret token. The
    /// token travels in Telegram's API path, never in our webhook URL.
    pub async fn set_telegram_webhook(
        &self,
        target: &Target,
        url: &str,
        secret_token: &str,
    ) -> Result<(), ProviderError> {
        let req = self
            .http
            .request(reqwest::Method::POST, &target.telegram("setWebhook"))
            .json(&json!({
                "url": url,
                "secret_token": secret_token,
                "allowed_updates": ["message"],
            }));
        self.call(target.provider(), req).await.map(|_| ())
    }
}

/// Longest provider error message kept.
const MAX_ERROR_TEXT: usize = 300;

/// At most `max` characters of `s`, without control characters.
/// One field of what a provider said about an account, as a short string
/// (`null` when it is not a string or number): never more of the answer.
pub(crate) fn account_field(v: &Value) -> Value {
    match v {
        Value::String(s) => Value::String(shorten(s, 100)),
        Value::Number(n) => Value::String(n.to_string()),
        _ => Value::Null,
    }
}

fn shorten(s: &str, max: usize) -> String {
    s.chars().filter(|c| !c.is_control()).take(max).collect()
}

/// The human-readable error of a Graph API or Telegram error body.
fn error_message(body: &Value) -> Option<String> {
    if let Some(e) = body.get("error") {
        let msg = e["message"].as_str().unwrap_or("error");
        let detail = e["error_data"]["details"].as_str();
        let mut out = match e["code"].as_i64() {
            Some(code) => format!("(#{code}) {msg}"),
            None => msg.to_owned(),
        };
        if let Some(d) = detail {
            out.push_str(": ");
            out.push_str(d);
        }
        return Some(out);
    }
    body["description"].as_str().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_texts_split_on_word_boundaries() {
        let text = "word ".repeat(500);
        let parts = split_text(&text, 1_000);
        assert!(parts.len() >= 3);
        assert!(
            parts
                .iter()
                .all(|p| p.chars().count() <= 1_000 && !p.is_empty())
        );
        assert_eq!(parts.join(" ").split_whitespace().count(), 500);
        assert_eq!(split_text("hi", 10), vec!["hi".to_owned()]);
    }

    #[test]
    fn graph_and_telegram_errors_are_reduced_to_their_message() {
        let wa = json!({"error": {"message": "Re-engagement message", "code": 131047,
            "error_data": {"details": "more than 24 hours have passed"}}});
        assert_eq!(
            error_message(&wa).as_deref(),
            Some("(#131047) Re-engagement message: more than 24 hours have passed")
        );
        let tg =
            json!({"ok": false, "error_code": 400, "description": "Bad Request: chat not found"});
        assert_eq!(
            error_message(&tg).as_deref(),
            Some("Bad Request: chat not found")
        );
    }
}
