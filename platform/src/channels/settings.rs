//! Per-type channel settings: which `config` fields a channel type takes,
//! which of them are secrets (stored encrypted, shown masked), which are
//! needed before the channel can carry traffic, and the provider id
//! webhooks are routed on.
//!
//! A field that is needed but absent never refuses the request: the channel
//! is saved and its `setup` lists what is missing ([`missing`]). Malformed
//! values are refused, naming the field.

use std::collections::BTreeMap;

use bson::{Bson, Document};
use serde_json::{Map, Value};

use crate::model::ChannelType;

/// A field of `config` that is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} {reason}")]
pub struct SettingsError {
    /// Dotted path as the client sent it, e.g. `config.phoneNumberId`.
    pub field: String,
    pub reason: String,
}

fn err(name: &str, reason: impl Into<String>) -> SettingsError {
    SettingsError {
        field: format!("config.{name}"),
        reason: reason.into(),
    }
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    /// A provider id: 1 to 64 of `A-Za-z0-9._-`.
    Id,
    Text(usize),
    /// Graph API version like `21.0` (a leading `v` is dropped).
    Version,
    /// An http(s) URL without a trailing slash.
    Url,
    /// List of `scheme://host[:port]` origins (or `*`); empty means any.
    Origins,
    /// A small object of display settings (colours, position...).
    Object,
    Secret,
    /// `<digits>:<token>`, as BotFather hands it out.
    TelegramToken,
}

#[derive(Debug, Clone, Copy)]
struct Field {
    name: &'static str,
    kind: Kind,
    /// Needed before the channel can carry traffic (listed in
    /// `setup.missing` while absent; never a reason to refuse a request).
    needed: bool,
    /// Other names the same value may be sent under (the guide's
    /// `accessToken` for a page token).
    aliases: &'static [&'static str],
}

const fn f(name: &'static str, kind: Kind, needed: bool) -> Field {
    Field {
        name,
        kind,
        needed,
        aliases: &[],
    }
}

const WHATSAPP: &[Field] = &[
    f("phoneNumberId", Kind::Id, true),
    f("phoneNumber", Kind::Text(32), false),
    f("businessAccountId", Kind::Id, false),
    f("verifiedName", Kind::Text(200), false),
    f("apiVersion", Kind::Version, false),
    f("baseUrl", Kind::Url, false),
    f("accessToken", Kind::Secret, true),
    f("appSecret", Kind::Secret, true),
];

const FACEBOOK: &[Field] = &[
    f("pageId", Kind::Id, true),
    f("pageName", Kind::Text(200), false),
    f("apiVersion", Kind::Version, false),
    f("baseUrl", Kind::Url, false),
    Field {
        name: "pageAccessToken",
        kind: Kind::Secret,
        needed: true,
        aliases: &["accessToken"],
    },
    f("appSecret", Kind::Secret, true),
];

const INSTAGRAM: &[Field] = &[
    f("instagramAccountId", Kind::Id, true),
    f("username", Kind::Text(100), false),
    // The Facebook page the account is linked to: its Instagram account is
    // looked up from it when `instagramAccountId` is not given.
    f("pageId", Kind::Id, false),
    f("apiVersion", Kind::Version, false),
    f("baseUrl", Kind::Url, false),
    f("accessToken", Kind::Secret, true),
    f("appSecret", Kind::Secret, true),
];

const TELEGRAM: &[Field] = &[
    f("botToken", Kind::TelegramToken, true),
    f("botUsername", Kind::Text(100), false),
    f("baseUrl", Kind::Url, false),
];

const WEBSITE: &[Field] = &[
    f("allowedOrigins", Kind::Origins, false),
    f("welcomeMessage", Kind::Text(1_000), false),
    f("title", Kind::Text(100), false),
    f("theme", Kind::Object, false),
];

fn fields(channel_type: ChannelType) -> &'static [Field] {
    match channel_type {
        ChannelType::Whatsapp => WHATSAPP,
        ChannelType::Facebook => FACEBOOK,
        ChannelType::Instagram => INSTAGRAM,
        ChannelType::Telegram => TELEGRAM,
        ChannelType::Website => WEBSITE,
    }
}

fn is_secret(field: &Field) -> bool {
    matches!(field.kind, Kind::Secret | Kind::TelegramToken)
}

/// The names under `secrets` for a type (for masking in views).
pub fn secret_names(channel_type: ChannelType) -> impl Iterator<Item = &'static str> {
    fields(channel_type)
        .iter()
        .filter(|f| is_secret(f))
        .map(|f| f.name)
}

/// The `config` field holding the provider id webhooks are routed on.
pub fn routing_field(channel_type: ChannelType) -> Option<&'static str> {
    match channel_type {
        ChannelType::Whatsapp => Some("phoneNumberId"),
        ChannelType::Facebook => Some("pageId"),
        ChannelType::Instagram => Some("instagramAccountId"),
        ChannelType::Telegram | ChannelType::Website => None,
    }
}

/// The fields needed for traffic that are neither in `config` nor in
/// `secrets`, in the order a person fills them in.
pub fn missing(
    channel_type: ChannelType,
    config: &Document,
    secrets: &BTreeMap<String, String>,
) -> Vec<&'static str> {
    fields(channel_type)
        .iter()
        .filter(|f| f.needed)
        .filter(|f| {
            if is_secret(f) {
                !secrets.contains_key(f.name)
            } else {
                !config.contains_key(f.name)
            }
        })
        .map(|f| f.name)
        .collect()
}

/// Validated settings, ready to store.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// The complete non-secret config.
    pub config: Document,
    /// Secrets sent in this request, in plain text (the caller seals them);
    /// secrets not sent stay as stored.
    pub new_secrets: BTreeMap<String, String>,
    /// `routing_key(type, provider id)` the config names (Meta channels). It
    /// is claimed only once the provider confirms the token owns it.
    pub routing_key: Option<String>,
}

/// A value the api showed masked (`****1234`) and the client sent back
/// unchanged: it means "keep the stored secret".
fn is_masked(value: &str) -> bool {
    value.starts_with("****")
}

/// An empty form field: the same as not sending it.
fn is_blank(value: &Value) -> bool {
    value.as_str().is_some_and(|s| s.trim().is_empty())
}

/// Validates `input` for `channel_type`, merged over what is stored
/// (`current_config`, names of `current_secrets`). Unknown keys (such as the
/// guide's `webhookUrl`, which the api computes) are ignored; absent or
/// empty fields keep what is stored.
pub fn validate(
    channel_type: ChannelType,
    input: &Map<String, Value>,
    current_config: &Document,
    current_secrets: &BTreeMap<String, String>,
) -> Result<Settings, SettingsError> {
    let mut out = Settings {
        config: Document::new(),
        ..Settings::default()
    };
    for field in fields(channel_type) {
        let given = std::iter::once(field.name)
            .chain(field.aliases.iter().copied())
            .find_map(|name| input.get(name).filter(|v| !is_blank(v)).map(|v| (name, v)));
        match given {
            // An explicit null clears an optional field; a needed one can
            // be replaced, not removed.
            Some((name, Value::Null)) => {
                if field.needed {
                    return Err(err(name, "cannot be removed; send a new value instead"));
                }
            }
            Some((name, Value::String(s))) if is_secret(field) => {
                let s = s.trim();
                if is_masked(s) {
                    if !current_secrets.contains_key(field.name) {
                        return Err(err(
                            name,
                            "is a masked value but no secret is stored; paste the real one",
                        ));
                    }
                } else {
                    check_secret(field, name, s)?;
                    out.new_secrets.insert(field.name.to_owned(), s.to_owned());
                }
            }
            Some((name, value)) => {
                match check_value(field, name, value)? {
                    // An empty origin list means "any origin": not stored.
                    Bson::Array(a) if a.is_empty() => {}
                    stored => {
                        out.config.insert(field.name, stored);
                    }
                }
            }
            None if is_secret(field) => {}
            None => {
                if let Some(v) = current_config.get(field.name) {
                    out.config.insert(field.name, v.clone());
                }
            }
        }
    }
    if let Some(name) = routing_field(channel_type)
        && let Ok(id) = out.config.get_str(name)
    {
        out.routing_key = Some(super::routing_key(channel_type, id));
    }
    Ok(out)
}

/// The egress rules of a channel's own `config.baseUrl` (`current_config`
/// is `None` for a new channel): a new value is accepted only where the
/// deployment allows overrides (`CHANNEL_BASE_URL_OVERRIDES`), and only
/// with the provider token sent again, so that a stored token never
/// follows a new address.
pub fn check_base_url(
    channel_type: ChannelType,
    valid: &Settings,
    current_config: Option<&Document>,
    overrides_allowed: bool,
) -> Result<(), SettingsError> {
    let new = valid.config.get_str("baseUrl").ok();
    let old = current_config.and_then(|c| c.get_str("baseUrl").ok());
    if new.is_none() || new == old {
        return Ok(());
    }
    if !overrides_allowed {
        return Err(err(
            "baseUrl",
            "is not accepted on this deployment (CHANNEL_BASE_URL_OVERRIDES is off): the provider's API base is used",
        ));
    }
    let token = match channel_type {
        ChannelType::Whatsapp | ChannelType::Instagram => "accessToken",
        ChannelType::Facebook => "pageAccessToken",
        ChannelType::Telegram => "botToken",
        ChannelType::Website => return Ok(()),
    };
    if !valid.new_secrets.contains_key(token) {
        return Err(err(token, "must be entered again when baseUrl changes"));
    }
    Ok(())
}

fn check_secret(field: &Field, name: &str, value: &str) -> Result<(), SettingsError> {
    if value.len() > 4_096 || value.chars().any(char::is_whitespace) {
        return Err(err(
            name,
            "must be a single token of at most 4096 characters",
        ));
    }
    if matches!(field.kind, Kind::TelegramToken) {
        let ok = value.split_once(':').is_some_and(|(id, rest)| {
            !id.is_empty()
                && id.bytes().all(|b| b.is_ascii_digit())
                && !rest.is_empty()
                && rest
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        });
        if !ok {
            return Err(err(
                name,
                "must look like 123456789:AAE... (the token BotFather gave you)",
            ));
        }
    }
    Ok(())
}

fn text<'a>(name: &str, value: &'a Value) -> Result<&'a str, SettingsError> {
    value
        .as_str()
        .map(str::trim)
        .ok_or_else(|| err(name, "must be a string"))
}

fn check_value(field: &Field, name: &str, value: &Value) -> Result<Bson, SettingsError> {
    match field.kind {
        Kind::Id => {
            // Ids are often pasted as numbers.
            let s = match value {
                Value::Number(n) => n.to_string(),
                other => text(name, other)?.to_owned(),
            };
            if s.is_empty()
                || s.len() > 64
                || !s
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
            {
                return Err(err(
                    name,
                    "must be the provider's id (letters, digits, . _ -, at most 64)",
                ));
            }
            Ok(Bson::String(s))
        }
        Kind::Text(max) => {
            let s = text(name, value)?;
            if s.chars().count() > max {
                return Err(err(name, format!("must be at most {max} characters")));
            }
            Ok(Bson::String(s.to_owned()))
        }
        Kind::Version => {
            let s = text(name, value)?.trim_start_matches('v');
            if s.is_empty() || s.len() > 10 || !s.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
                return Err(err(name, "must be a Graph API version like 21.0"));
            }
            Ok(Bson::String(s.to_owned()))
        }
        Kind::Url => {
            let s = text(name, value)?.trim_end_matches('/');
            if !(s.starts_with("http://") || s.starts_with("https://"))
                || s.len() > 300
                || s.contains(char::is_whitespace)
            {
                return Err(err(name, "must be an http:// or https:// URL"));
            }
            Ok(Bson::String(s.to_owned()))
        }
        Kind::Origins => {
            let list = value
                .as_array()
                .ok_or_else(|| err(name, "must be a list of origins"))?;
            if list.len() > 50 {
                return Err(err(name, "must list at most 50 origins"));
            }
            let mut origins = Vec::with_capacity(list.len());
            for (i, item) in list.iter().enumerate() {
                let item_name = format!("{name}[{i}]");
                let o = text(&item_name, item)?.trim_end_matches('/');
                if !valid_origin(o) {
                    return Err(err(
                        &item_name,
                        "must be an origin like https://shop.example.com (scheme, host, optional port) or *",
                    ));
                }
                origins.push(Bson::String(o.to_ascii_lowercase()));
            }
            Ok(Bson::Array(origins))
        }
        Kind::Object => {
            let obj = value
                .as_object()
                .ok_or_else(|| err(name, "must be an object"))?;
            if serde_json::to_string(obj).map_or(usize::MAX, |s| s.len()) > 2_000 {
                return Err(err(name, "must be at most 2000 bytes"));
            }
            bson::to_bson(obj).map_err(|_| err(name, "must be an object"))
        }
        Kind::Secret | Kind::TelegramToken => Err(err(name, "must be a string")),
    }
}

/// `scheme://host[:port]` with nothing after it, or `*`.
pub fn valid_origin(o: &str) -> bool {
    if o == "*" {
        return true;
    }
    let Some(rest) = o
        .strip_prefix("https://")
        .or_else(|| o.strip_prefix("http://"))
    else {
        return false;
    };
    !rest.is_empty()
        && rest.len() <= 253
        && rest
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn missing_fields_are_listed_and_malformed_ones_named() {
        // The guide's WhatsApp body: valid, with what is missing listed.
        let wa = validate(
            ChannelType::Whatsapp,
            &map(
                json!({"phoneNumber": "+1234567890", "accessToken": "token_here", "webhookUrl": "https://x"}),
            ),
            &Document::new(),
            &BTreeMap::new(),
        )
        .expect("the guide's body is accepted");
        assert!(wa.config.get("webhookUrl").is_none());
        assert!(wa.routing_key.is_none());
        let secrets: BTreeMap<String, String> = wa
            .new_secrets
            .keys()
            .map(|k| (k.clone(), "sealed".to_owned()))
            .collect();
        assert_eq!(
            missing(ChannelType::Whatsapp, &wa.config, &secrets),
            vec!["phoneNumberId", "appSecret"]
        );
        let web = validate(
            ChannelType::Website,
            &map(json!({"allowedOrigins": []})),
            &Document::new(),
            &BTreeMap::new(),
        )
        .expect("no origins: any origin");
        assert!(web.config.is_empty());
        assert!(missing(ChannelType::Website, &web.config, &BTreeMap::new()).is_empty());
        let e = validate(
            ChannelType::Telegram,
            &map(json!({"botToken": "nope"})),
            &Document::new(),
            &BTreeMap::new(),
        )
        .expect_err("bad token");
        assert_eq!(e.field, "config.botToken");
        let e = validate(
            ChannelType::Website,
            &map(json!({"allowedOrigins": ["https://ok.example", "javascript:x"]})),
            &Document::new(),
            &BTreeMap::new(),
        )
        .expect_err("bad origin");
        assert_eq!(e.field, "config.allowedOrigins[1]");
        let e = validate(
            ChannelType::Whatsapp,
            &map(json!({"phoneNumberId": "12 34"})),
            &Document::new(),
            &BTreeMap::new(),
        )
        .expect_err("bad id");
        assert_eq!(e.field, "config.phoneNumberId");
    }

    #[test]
    fn merge_keeps_secrets_not_resent_and_masked_values() {
        let first = validate(
            ChannelType::Facebook,
            &map(json!({"pageId": 123, "accessToken": "EAAB", "appSecret": "sec", "webhookUrl": "x"})),
            &Document::new(),
            &BTreeMap::new(),
        )
        .expect("valid");
        assert_eq!(first.config.get_str("pageId").ok(), Some("123"));
        assert!(first.config.get("webhookUrl").is_none());
        assert_eq!(
            first.new_secrets.get("pageAccessToken").map(String::as_str),
            Some("EAAB")
        );
        assert_eq!(first.routing_key.as_deref(), Some("facebook:123"));
        let stored: BTreeMap<String, String> = first
            .new_secrets
            .keys()
            .map(|k| (k.clone(), "sealed".to_owned()))
            .collect();
        let second = validate(
            ChannelType::Facebook,
            &map(json!({"pageName": "Shop", "appSecret": "****ec"})),
            &first.config,
            &stored,
        )
        .expect("merge");
        assert!(second.new_secrets.is_empty());
        assert_eq!(second.config.get_str("pageId").ok(), Some("123"));
        assert_eq!(second.config.get_str("pageName").ok(), Some("Shop"));
    }
}
