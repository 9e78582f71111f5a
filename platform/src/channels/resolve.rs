//! The provider side of the channel test: check the token, look up the ids
//! the form did not have (the Facebook page of a page token, the Instagram
//! account of a token or page, the WhatsApp phone number id of a number in
//! a business account, the Telegram bot of a bot token) and say which
//! routing id the provider confirmed the token owns. Only a confirmed id is
//! ever claimed for webhook routing, so typing someone else's id claims
//! nothing.

use bson::Document;
use serde_json::Value;

use super::ChannelsConfig;
use super::client::{ProviderClient, ProviderError, Target, account_field};
use crate::crypto::SecretBox;
use crate::model::{Channel, ChannelType};

/// What the provider confirmed.
#[derive(Debug, Clone, Default)]
pub struct Resolution {
    /// Config fields learned from the provider (`pageId`, `pageName`,
    /// `phoneNumberId`, `instagramAccountId`, `botUsername`...).
    pub learned: Document,
    /// The routing id (phone number id, page id, Instagram account id) the
    /// provider confirmed the token owns.
    pub confirmed_id: Option<String>,
    /// What the provider said about the account, for the job's result.
    pub provider: Value,
}

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// The provider cannot be asked yet: these `config` fields are missing.
    #[error("missing {}", .0.join(", "))]
    Missing(Vec<&'static str>),
    #[error(transparent)]
    Provider(#[from] ProviderError),
    /// The provider answered, but not for what the settings name.
    #[error("{0}")]
    Mismatch(String),
}

fn id_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn digits(s: &str) -> String {
    s.chars().filter(char::is_ascii_digit).collect()
}

fn put(doc: &mut Document, key: &str, value: &Value) {
    if let Some(s) = value.as_str().filter(|s| !s.is_empty()) {
        // Provider texts are stored as config values: keep them bounded.
        doc.insert(key, s.chars().take(200).collect::<String>());
    }
}

/// Asks the channel's provider what can be confirmed and looked up.
pub async fn resolve(
    client: &ProviderClient,
    config: &ChannelsConfig,
    secrets: &SecretBox,
    channel: &Channel,
) -> Result<Resolution, ResolveError> {
    let mut found = ask(client, config, secrets, channel).await?;
    found.provider = account_summary(&found.provider);
    Ok(found)
}

/// Only the account fields we asked for, as short strings: whatever else
/// the other end answered is never handed back to the tenant.
fn account_summary(said: &Value) -> Value {
    const FIELDS: [(&str, &str); 7] = [
        ("id", "id"),
        ("name", "name"),
        ("username", "username"),
        ("first_name", "firstName"),
        ("user_id", "userId"),
        ("display_phone_number", "displayPhoneNumber"),
        ("verified_name", "verifiedName"),
    ];
    let kept: serde_json::Map<String, Value> = FIELDS
        .iter()
        .filter_map(|(from, to)| match account_field(&said[*from]) {
            Value::Null => None,
            v => Some(((*to).to_owned(), v)),
        })
        .collect();
    Value::Object(kept)
}

async fn ask(
    client: &ProviderClient,
    config: &ChannelsConfig,
    secrets: &SecretBox,
    channel: &Channel,
) -> Result<Resolution, ResolveError> {
    let token_field = match channel.channel_type {
        ChannelType::Whatsapp | ChannelType::Instagram => "accessToken",
        ChannelType::Facebook => "pageAccessToken",
        ChannelType::Telegram => "botToken",
        ChannelType::Website => return Ok(Resolution::default()),
    };
    if !channel.secrets.contains_key(token_field) {
        return Err(ResolveError::Missing(vec![token_field]));
    }
    let target = Target::for_setup(config, secrets, channel)?;
    let cfg = &channel.config;
    match channel.channel_type {
        ChannelType::Telegram => {
            let me = client.test(&target).await?;
            let mut learned = Document::new();
            put(&mut learned, "botUsername", &me["username"]);
            Ok(Resolution {
                learned,
                confirmed_id: None,
                provider: me,
            })
        }
        ChannelType::Whatsapp => whatsapp(client, &target, cfg).await,
        ChannelType::Facebook => {
            let me = client.graph_get(&target, "me", "id,name").await?;
            let id = id_of(&me["id"]).ok_or_else(|| {
                ResolveError::Mismatch("Meta did not say which page the token belongs to".into())
            })?;
            if let Ok(typed) = cfg.get_str("pageId")
                && typed != id
            {
                return Err(ResolveError::Mismatch(format!(
                    "the access token belongs to '{}' (id {id}), not to page {typed}: paste the access token of page {typed} (a user token is not a page token), or clear config.pageId",
                    me["name"].as_str().unwrap_or("another account")
                )));
            }
            let mut learned = Document::new();
            learned.insert("pageId", id.as_str());
            put(&mut learned, "pageName", &me["name"]);
            Ok(Resolution {
                learned,
                confirmed_id: Some(id),
                provider: me,
            })
        }
        ChannelType::Instagram => instagram(client, config, &target, cfg).await,
        ChannelType::Website => Ok(Resolution::default()),
    }
}

async fn whatsapp(
    client: &ProviderClient,
    target: &Target,
    cfg: &Document,
) -> Result<Resolution, ResolveError> {
    let fields = "id,display_phone_number,verified_name";
    let mut learned = Document::new();
    let (id, number) = if let Ok(pnid) = cfg.get_str("phoneNumberId") {
        let number = client.graph_get(target, pnid, fields).await?;
        if id_of(&number["id"]).as_deref() != Some(pnid) {
            return Err(ResolveError::Mismatch(format!(
                "Meta did not confirm phone number id {pnid} for this token"
            )));
        }
        (pnid.to_owned(), number)
    } else if let Ok(waba) = cfg.get_str("businessAccountId") {
        let list = client
            .graph_get(target, &format!("{waba}/phone_numbers"), fields)
            .await?;
        let numbers: Vec<Value> = list["data"].as_array().cloned().unwrap_or_default();
        let shown: Vec<String> = numbers
            .iter()
            .filter_map(|n| n["display_phone_number"].as_str().map(str::to_owned))
            .collect();
        let wanted = cfg.get_str("phoneNumber").map(digits).unwrap_or_default();
        let found = if wanted.is_empty() {
            match numbers.as_slice() {
                [only] => Some(only.clone()),
                _ => {
                    return Err(ResolveError::Mismatch(format!(
                        "business account {waba} has {} phone numbers ({}): set config.phoneNumber to the one this channel uses",
                        numbers.len(),
                        shown.join(", ")
                    )));
                }
            }
        } else {
            numbers
                .iter()
                .find(|n| n["display_phone_number"].as_str().map(digits) == Some(wanted.clone()))
                .cloned()
        };
        let Some(number) = found else {
            return Err(ResolveError::Mismatch(format!(
                "business account {waba} has no phone number {} (it has: {}); check config.phoneNumber and config.businessAccountId",
                cfg.get_str("phoneNumber").unwrap_or_default(),
                if shown.is_empty() {
                    "none".to_owned()
                } else {
                    shown.join(", ")
                }
            )));
        };
        let id = id_of(&number["id"]).ok_or_else(|| {
            ResolveError::Mismatch("Meta listed a phone number without an id".into())
        })?;
        learned.insert("phoneNumberId", id.as_str());
        (id, number)
    } else {
        return Err(ResolveError::Missing(vec!["phoneNumberId"]));
    };
    put(&mut learned, "verifiedName", &number["verified_name"]);
    if !cfg.contains_key("phoneNumber") {
        put(&mut learned, "phoneNumber", &number["display_phone_number"]);
    }
    Ok(Resolution {
        learned,
        confirmed_id: Some(id),
        provider: number,
    })
}

async fn instagram(
    client: &ProviderClient,
    config: &ChannelsConfig,
    target: &Target,
    cfg: &Document,
) -> Result<Resolution, ResolveError> {
    let mut learned = Document::new();
    let (id, account) = if let Ok(ig) = cfg.get_str("instagramAccountId") {
        let account = client.graph_get(target, ig, "id,username").await?;
        if id_of(&account["id"]).as_deref() != Some(ig) {
            return Err(ResolveError::Mismatch(format!(
                "Meta did not confirm Instagram account {ig} for this token"
            )));
        }
        (ig.to_owned(), account)
    } else if let Ok(page) = cfg.get_str("pageId") {
        // A page's linked account is read on the Facebook Graph API.
        let on_facebook = if cfg.contains_key("baseUrl") {
            target.clone()
        } else {
            target.with_base(&config.facebook_api_base)
        };
        let body = client
            .graph_get(
                &on_facebook,
                page,
                "instagram_business_account{id,username}",
            )
            .await?;
        let account = body["instagram_business_account"].clone();
        let id = id_of(&account["id"]).ok_or_else(|| {
            ResolveError::Mismatch(format!(
                "page {page} has no Instagram professional account linked to it (Facebook page → Settings → Linked accounts)"
            ))
        })?;
        learned.insert("instagramAccountId", id.as_str());
        (id, account)
    } else {
        // Instagram login: the token's own professional account.
        let me = client.graph_get(target, "me", "user_id,username").await?;
        let id = id_of(&me["user_id"])
            .or_else(|| id_of(&me["id"]))
            .ok_or_else(|| {
                ResolveError::Mismatch("Meta did not say which account the token belongs to".into())
            })?;
        learned.insert("instagramAccountId", id.as_str());
        (id, me)
    };
    put(&mut learned, "username", &account["username"]);
    Ok(Resolution {
        learned,
        confirmed_id: Some(id),
        provider: account,
    })
}
