//! Messaging channels: per-provider settings, webhook verification and
//! parsing, and the clients that talk to WhatsApp Cloud, Messenger,
//! Instagram and Telegram.
//!
//! Every outbound base URL comes from the deployment's configuration
//! ([`ChannelsConfig`], `*_API_BASE`) or a channel's own `config.baseUrl`,
//! so tests and staging point them at a local fake server.

pub mod client;
pub mod parse;
pub mod resolve;
pub mod routes;
pub mod settings;
pub mod setup;
pub mod signature;
pub mod widget;

use crate::config::ConfigError;
use crate::model::{Channel, ChannelType};

/// Deployment-wide provider endpoints and the public URL webhooks reach us at.
#[derive(Debug, Clone)]
pub struct ChannelsConfig {
    /// `WHATSAPP_API_BASE`, default `https://graph.facebook.com`.
    pub whatsapp_api_base: String,
    /// `FACEBOOK_API_BASE`, default `https://graph.facebook.com`.
    pub facebook_api_base: String,
    /// `INSTAGRAM_API_BASE`, default `https://graph.instagram.com`.
    pub instagram_api_base: String,
    /// `TELEGRAM_API_BASE`, default `https://api.telegram.org`.
    pub telegram_api_base: String,
    /// `META_API_VERSION` without the `v`, default `21.0`.
    pub meta_api_version: String,
    /// `PUBLIC_BASE_URL`: where providers and widget visitors reach the api.
    pub public_base_url: String,
    /// `CHANNEL_BASE_URL_OVERRIDES` (default false): whether a channel's own
    /// `config.baseUrl` is accepted and used instead of its type's base.
    pub base_url_overrides: bool,
}

impl Default for ChannelsConfig {
    fn default() -> Self {
        Self {
            whatsapp_api_base: "https://graph.facebook.com".to_owned(),
            facebook_api_base: "https://graph.facebook.com".to_owned(),
            instagram_api_base: "https://graph.instagram.com".to_owned(),
            telegram_api_base: "https://api.telegram.org".to_owned(),
            meta_api_version: "21.0".to_owned(),
            public_base_url: "http://localhost:3000".to_owned(),
            base_url_overrides: false,
        }
    }
}

fn base_url(name: &'static str, raw: Option<String>, default: &str) -> Result<String, ConfigError> {
    let value = raw
        .map(|v| v.trim().trim_end_matches('/').to_owned())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_owned());
    if !(value.starts_with("http://") || value.starts_with("https://")) {
        return Err(ConfigError::Invalid {
            name,
            reason: format!("'{value}' must start with http:// or https://"),
        });
    }
    Ok(value)
}

impl ChannelsConfig {
    pub fn from_lookup(lookup: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let d = Self::default();
        let version = lookup("META_API_VERSION")
            .map(|v| v.trim().trim_start_matches('v').to_owned())
            .filter(|v| !v.is_empty())
            .unwrap_or(d.meta_api_version);
        if !version.chars().all(|c| c.is_ascii_digit() || c == '.') {
            return Err(ConfigError::Invalid {
                name: "META_API_VERSION",
                reason: format!("'{version}' is not a version like 21.0"),
            });
        }
        Ok(Self {
            whatsapp_api_base: base_url(
                "WHATSAPP_API_BASE",
                lookup("WHATSAPP_API_BASE"),
                &d.whatsapp_api_base,
            )?,
            facebook_api_base: base_url(
                "FACEBOOK_API_BASE",
                lookup("FACEBOOK_API_BASE"),
                &d.facebook_api_base,
            )?,
            instagram_api_base: base_url(
                "INSTAGRAM_API_BASE",
                lookup("INSTAGRAM_API_BASE"),
                &d.instagram_api_base,
            )?,
            telegram_api_base: base_url(
                "TELEGRAM_API_BASE",
                lookup("TELEGRAM_API_BASE"),
                &d.telegram_api_base,
            )?,
            meta_api_version: version,
            public_base_url: base_url(
                "PUBLIC_BASE_URL",
                lookup("PUBLIC_BASE_URL"),
                &d.public_base_url,
            )?,
            base_url_overrides: crate::config::flag(
                "CHANNEL_BASE_URL_OVERRIDES",
                lookup("CHANNEL_BASE_URL_OVERRIDES"),
            )?,
        })
    }

    /// The deployment's default API base of a provider.
    pub fn api_base(&self, channel_type: ChannelType) -> &str {
        match channel_type {
            ChannelType::Whatsapp => &self.whatsapp_api_base,
            ChannelType::Facebook => &self.facebook_api_base,
            ChannelType::Instagram => &self.instagram_api_base,
            ChannelType::Telegram => &self.telegram_api_base,
            ChannelType::Website => &self.public_base_url,
        }
    }

    /// The URL to paste into the provider's console (Meta) or that
    /// `setWebhook` registers (Telegram). Telegram's carries the channel id,
    /// never the bot token.
    pub fn webhook_url(&self, channel_type: ChannelType, channel_id: &str) -> Option<String> {
        let base = &self.public_base_url;
        match channel_type {
            ChannelType::Whatsapp => Some(format!("{base}/api/v1/webhooks/whatsapp")),
            // Messenger and Instagram share Meta's page webhook.
            ChannelType::Facebook | ChannelType::Instagram => {
                Some(format!("{base}/api/v1/webhooks/facebook"))
            }
            ChannelType::Telegram => Some(format!("{base}/api/v1/webhooks/telegram/{channel_id}")),
            ChannelType::Website => None,
        }
    }
}

/// The key webhooks are routed on, unique across tenants: one provider
/// account (phone number, page, Instagram account) belongs to one channel.
pub fn routing_key(channel_type: ChannelType, provider_id: &str) -> String {
    format!(
        "{}:{provider_id}",
        channel_type.as_str().to_ascii_lowercase()
    )
}

/// The routing key a channel's config names (claimed or not: the claimed
/// one is [`Channel::routing_key`]).
pub fn configured_routing_key(channel: &Channel) -> Option<String> {
    let field = settings::routing_field(channel.channel_type)?;
    let id = channel.config.get_str(field).ok()?;
    Some(routing_key(channel.channel_type, id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bases_default_and_reject_non_http_values() {
        let c = ChannelsConfig::from_lookup(&|_| None).expect("defaults");
        assert_eq!(c.whatsapp_api_base, "https://graph.facebook.com");
        assert_eq!(c.meta_api_version, "21.0");
        let c = ChannelsConfig::from_lookup(&|n| match n {
            "TELEGRAM_API_BASE" => Some("http://127.0.0.1:9/".to_owned()),
            "META_API_VERSION" => Some("v19.0".to_owned()),
            _ => None,
        })
        .expect("overrides");
        assert_eq!(c.telegram_api_base, "http://127.0.0.1:9");
        assert_eq!(c.meta_api_version, "19.0");
        let e = ChannelsConfig::from_lookup(&|n| {
            (n == "WHATSAPP_API_BASE").then(|| "ftp://x".to_owned())
        });
        assert!(e.is_err_and(|e| e.to_string().contains("WHATSAPP_API_BASE")));
        assert_eq!(
            c.webhook_url(ChannelType::Telegram, "abc").as_deref(),
            Some("http://localhost:3000/api/v1/webhooks/telegram/abc")
        );
    }
}
