//! What a channel still needs before it carries traffic, said the way the
//! person filling in the form needs it: each missing field with why it is
//! needed and where the provider's dashboard shows it, the steps left in
//! order, and warnings about how the channel behaves meanwhile.

use serde::Serialize;
use serde_json::{Value, json};

use super::ChannelsConfig;
use super::settings::{self, routing_field};
use crate::model::{Channel, ChannelStatus, ChannelType};

/// A field needed for traffic that the channel does not have yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MissingField {
    /// Dotted path to send it under, e.g. `config.appSecret`.
    pub field: String,
    pub why: String,
    pub where_to_find_it: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Setup {
    pub missing: Vec<MissingField>,
    /// What is left to do, in order (empty once the channel is live).
    pub steps: Vec<String>,
    pub warnings: Vec<String>,
    /// Meta channels: the provider confirmed that the channel's token owns
    /// its phone number, page or Instagram account, so webhooks for it are
    /// routed here. Always true for Telegram and website channels, which
    /// are routed on the channel itself.
    pub account_confirmed: bool,
}

const APP_SECRET_WHERE: &str = "Meta App Dashboard (developers.facebook.com/apps) → your app → App settings → Basic → App secret → Show";
const APP_SECRET_WHY: &str = "Meta signs every webhook delivery with it; without it no delivery can be verified, so none is accepted";

fn help(channel_type: ChannelType, field: &str) -> (&'static str, &'static str) {
    match (channel_type, field) {
        (ChannelType::Whatsapp, "phoneNumberId") => (
            "WhatsApp deliveries name the phone number by this id, and replies are sent from it",
            "Meta App Dashboard → WhatsApp → API Setup → 'Phone number ID' under the sending number; or add config.businessAccountId (the 'WhatsApp Business Account ID' on the same page) and press Test: the id of config.phoneNumber is looked up for you",
        ),
        (ChannelType::Whatsapp, "accessToken") => (
            "replies are sent to WhatsApp with it",
            "Meta Business Settings → Users → System users → Generate new token with whatsapp_business_messaging (the temporary token on WhatsApp → API Setup expires after 24 hours)",
        ),
        (ChannelType::Facebook, "pageId") => (
            "Messenger deliveries name the page by this id",
            "leave it empty and press Test: it is read from the page access token; or Facebook page → About → Page transparency → Page ID",
        ),
        (ChannelType::Facebook, "pageAccessToken") => (
            "replies are sent to Messenger with it, and it proves the page is yours",
            "Meta App Dashboard → Messenger → Messenger API Settings → Access tokens → Generate for your page (send it as config.pageAccessToken or config.accessToken)",
        ),
        (ChannelType::Instagram, "instagramAccountId") => (
            "Instagram deliveries name the account by this id",
            "leave it empty and press Test: it is read from the access token, or from config.pageId (the Facebook page the account is linked to); or Meta App Dashboard → Instagram → API setup → the account's ID",
        ),
        (ChannelType::Instagram, "accessToken") => (
            "replies are sent to Instagram with it, and it proves the account is yours",
            "Meta App Dashboard → Instagram → API setup with Instagram login → Generate token for the account (or the linked Facebook page's access token)",
        ),
        (ChannelType::Telegram, "botToken") => (
            "Telegram accepts calls for the bot only with it",
            "Telegram → @BotFather → /mybots → your bot → API Token (looks like 123456789:AAE...)",
        ),
        (_, "appSecret") => (APP_SECRET_WHY, APP_SECRET_WHERE),
        _ => ("needed before the channel can carry traffic", ""),
    }
}

fn provider_console(channel_type: ChannelType) -> &'static str {
    match channel_type {
        ChannelType::Whatsapp => {
            "Meta App Dashboard → WhatsApp → Configuration → Webhook → Edit, and subscribe to the 'messages' field"
        }
        ChannelType::Facebook => {
            "Meta App Dashboard → Messenger → Messenger API Settings → Configure webhooks, subscribe to 'messages' and add your page"
        }
        ChannelType::Instagram => {
            "Meta App Dashboard → Instagram → API setup → Configure webhooks, and subscribe to 'messages'"
        }
        ChannelType::Telegram | ChannelType::Website => "",
    }
}

/// The setup state of a stored channel. `webhook_url` is the platform's own
/// (from [`ChannelsConfig::webhook_url`]).
pub fn setup(channel: &Channel, webhook_url: Option<&str>) -> Setup {
    let t = channel.channel_type;
    let missing_names = settings::missing(t, &channel.config, &channel.secrets);
    let missing: Vec<MissingField> = missing_names
        .iter()
        .map(|name| {
            let (why, where_to_find_it) = help(t, name);
            MissingField {
                field: format!("config.{name}"),
                why: why.to_owned(),
                where_to_find_it: where_to_find_it.to_owned(),
            }
        })
        .collect();
    let account_confirmed = routing_field(t).is_none() || channel.routing_key.is_some();
    let mut steps = Vec::new();
    let mut warnings = Vec::new();
    let live = channel.status == ChannelStatus::Active && missing.is_empty();
    match t {
        ChannelType::Website => {
            steps.push(
                "Paste embedCode into your site's HTML, just before </body>: the chat bubble appears at once."
                    .to_owned(),
            );
            if !channel.config.contains_key("allowedOrigins") {
                warnings.push(
                    "config.allowedOrigins is empty, so any website can embed this widget and talk to your agent (as with other chat widgets). To restrict it, set config.allowedOrigins to your site's origins, e.g. [\"https://shop.example.com\"]."
                        .to_owned(),
                );
            }
        }
        ChannelType::Telegram => {
            if !missing.is_empty() {
                steps.push(format!(
                    "Add what setup.missing lists with PUT /channels/{}.",
                    channel.id
                ));
            }
            if !live {
                steps.push(format!(
                    "Press Test (POST /channels/{}/test): the bot is checked with Telegram; its webhook is registered automatically, nothing to paste anywhere.",
                    channel.id
                ));
            }
        }
        ChannelType::Whatsapp | ChannelType::Facebook | ChannelType::Instagram => {
            if let Some(url) = webhook_url {
                steps.push(format!(
                    "In {}: set the Callback URL to {url} (this platform's own, whatever webhook URL was typed into the form) and the Verify token to this channel's verifyToken.",
                    provider_console(t)
                ));
            }
            if !missing.is_empty() {
                steps.push(format!(
                    "Add what setup.missing lists with PUT /channels/{} (config: {{...}}); secrets already saved are kept.",
                    channel.id
                ));
            }
            if !account_confirmed || !live {
                steps.push(format!(
                    "Press Test (POST /channels/{}/test): the token is checked with Meta, ids that can be looked up are filled in, and once Meta confirms the token owns the account the channel starts receiving messages.",
                    channel.id
                ));
            }
            if !account_confirmed {
                warnings.push(
                    "Not receiving messages yet: Meta has not confirmed that this channel's token owns its account (press Test)."
                        .to_owned(),
                );
            }
            if channel.unverified_deliveries > 0 && !channel.secrets.contains_key("appSecret") {
                let when = channel
                    .last_unverified_delivery_at
                    .map(|d| format!(", the last at {}", d.to_rfc3339()))
                    .unwrap_or_default();
                warnings.push(format!(
                    "Meta has sent {} webhook deliveries for this channel{when}; they were refused because config.appSecret is missing, so they could not be verified.",
                    channel.unverified_deliveries
                ));
            }
        }
    }
    if channel.status == ChannelStatus::Error
        && let Some(e) = &channel.last_error
    {
        steps.insert(
            0,
            format!("Fix what the provider said ({e}), then press Test again."),
        );
    }
    Setup {
        missing,
        steps,
        warnings,
        account_confirmed,
    }
}

/// The status a channel has after its settings were saved: `NEEDS_SETUP`
/// while something is missing, `ACTIVE` for a website widget, otherwise
/// `keep` when the credentials did not change, else `PENDING` (to be
/// confirmed by a test).
pub fn status_after_save(
    channel: &Channel,
    credentials_changed: bool,
    keep: ChannelStatus,
) -> ChannelStatus {
    if channel.channel_type == ChannelType::Website {
        return ChannelStatus::Active;
    }
    if !settings::missing(channel.channel_type, &channel.config, &channel.secrets).is_empty() {
        return ChannelStatus::NeedsSetup;
    }
    if credentials_changed || keep == ChannelStatus::NeedsSetup {
        ChannelStatus::Pending
    } else {
        keep
    }
}

/// The `channel-updated` event: what every member of the tenant may see
/// (no secrets, no verify token).
pub fn event_payload(channel: &Channel, config: &ChannelsConfig) -> Value {
    let webhook_url = config.webhook_url(channel.channel_type, &channel.id);
    json!({
        "id": channel.id,
        "type": channel.channel_type.as_str(),
        "name": channel.name,
        "isActive": channel.is_active,
        "status": channel.status.as_str(),
        "lastError": channel.last_error,
        "lastTestedAt": channel.last_tested_at,
        "config": bson::Bson::Document(channel.config.clone()).into_relaxed_extjson(),
        "webhookUrl": webhook_url,
        "setup": setup(channel, webhook_url.as_deref()),
        "unverifiedDeliveries": channel.unverified_deliveries,
        "updatedAt": channel.updated_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{TenantId, new_id};
    use chrono::Utc;

    fn channel(t: ChannelType, config: bson::Document, secrets: &[&str]) -> Channel {
        Channel {
            id: new_id(),
            tenant_id: TenantId::from_trusted("t".to_owned()),
            channel_type: t,
            name: "c".to_owned(),
            agent_id: None,
            is_active: true,
            config,
            secrets: secrets
                .iter()
                .map(|s| ((*s).to_owned(), "sealed".to_owned()))
                .collect(),
            webhook_secret: None,
            public_key: None,
            routing_key: None,
            status: ChannelStatus::NeedsSetup,
            last_error: None,
            unverified_deliveries: 0,
            last_unverified_delivery_at: None,
            last_tested_at: None,
            created_at: Utc::now(),
            updated_at: Utc::now(),
        }
    }

    #[test]
    fn whatsapp_from_the_guide_lists_the_id_and_the_app_secret_with_where_to_find_them() {
        let mut c = channel(
            ChannelType::Whatsapp,
            bson::doc! { "phoneNumber": "+1234567890" },
            &["accessToken"],
        );
        let s = setup(&c, Some("https://bot.example.com/api/v1/webhooks/whatsapp"));
        let fields: Vec<&str> = s.missing.iter().map(|m| m.field.as_str()).collect();
        assert_eq!(fields, vec!["config.phoneNumberId", "config.appSecret"]);
        assert!(s.missing[1].where_to_find_it.contains("App secret"));
        assert!(s.steps[0].contains("https://bot.example.com/api/v1/webhooks/whatsapp"));
        assert!(!s.account_confirmed);
        assert_eq!(
            status_after_save(&c, true, ChannelStatus::Pending),
            ChannelStatus::NeedsSetup
        );
        c.config.insert("phoneNumberId", "123");
        c.secrets
            .insert("appSecret".to_owned(), "sealed".to_owned());
        assert_eq!(
            status_after_save(&c, false, ChannelStatus::NeedsSetup),
            ChannelStatus::Pending
        );
        c.unverified_deliveries = 3;
        c.secrets.remove("appSecret");
        assert!(
            setup(&c, None)
                .warnings
                .iter()
                .any(|w| w.contains("3 webhook deliveries"))
        );
    }

    #[test]
    fn a_website_without_origins_is_live_and_says_anyone_can_embed_it() {
        let c = channel(ChannelType::Website, bson::doc! {}, &[]);
        assert_eq!(
            status_after_save(&c, true, ChannelStatus::Pending),
            ChannelStatus::Active
        );
        let s = setup(&c, None);
        assert!(s.missing.is_empty() && s.account_confirmed);
        assert!(s.warnings[0].contains("any website"));
    }
}
