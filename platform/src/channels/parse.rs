//! Provider payloads into [`InboundItem`]s, grouped by the provider id
//! (phone number id, page id, Instagram account id) they are routed on.
//!
//! Only called on bodies whose signature was verified. Echoes of our own
//! messages, edits, bots, channel posts and non-text messages are skipped.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::marker::PhantomData;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};

use crate::model::{InboundItem, MessageStatus};

#[derive(Debug, thiserror::Error)]
#[error("payload is not a valid webhook body: {0}")]
pub struct PayloadError(String);

/// Meta batches at most 1,000 updates in one delivery; a body with more
/// entries (or changes, or routing ids) is not Meta's and is refused before
/// anything else is read.
pub const MAX_META_ENTRIES: usize = 1_000;

const TOO_MANY: &str = "too many entries";

#[derive(Debug, thiserror::Error)]
pub enum RoutingError {
    #[error("a delivery carries at most {MAX_META_ENTRIES} entries")]
    TooMany,
    #[error(transparent)]
    Payload(#[from] PayloadError),
}

/// A list that stops deserialising past [`MAX_META_ENTRIES`] items, so a
/// flood of tiny entries costs no more than Meta's largest batch.
fn capped<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct Capped<T>(PhantomData<T>);
    impl<'de, T: Deserialize<'de>> Visitor<'de> for Capped<T> {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a list")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let mut out = Vec::new();
            while let Some(item) = seq.next_element()? {
                if out.len() == MAX_META_ENTRIES {
                    return Err(de::Error::custom(TOO_MANY));
                }
                out.push(item);
            }
            Ok(out)
        }
    }
    d.deserialize_seq(Capped(PhantomData))
}

/// Items of one delivery, per routing id, in payload order.
pub type Routed = Vec<(String, Vec<InboundItem>)>;

/// Groups items per routing id in one pass.
#[derive(Default)]
struct Grouped {
    out: Routed,
    index: HashMap<String, usize>,
}

impl Grouped {
    fn push(&mut self, routing_id: &str, item: InboundItem) {
        match self.index.get(routing_id) {
            Some(&i) => self.out[i].1.push(item),
            None => {
                self.index.insert(routing_id.to_owned(), self.out.len());
                self.out.push((routing_id.to_owned(), vec![item]));
            }
        }
    }
}

// ---- routing only: the ids a delivery is addressed to ----

#[derive(Deserialize)]
struct IdsEnvelope {
    #[serde(default)]
    object: String,
    #[serde(default, deserialize_with = "capped")]
    entry: Vec<IdsEntry>,
}

#[derive(Deserialize)]
struct IdsEntry {
    #[serde(default)]
    id: Option<serde_json::Value>,
    #[serde(default, deserialize_with = "capped")]
    changes: Vec<IdsChange>,
}

#[derive(Deserialize)]
struct IdsChange {
    #[serde(default)]
    value: IdsValue,
}

#[derive(Deserialize, Default)]
struct IdsValue {
    #[serde(default)]
    metadata: Option<IdsMetadata>,
}

#[derive(Deserialize)]
struct IdsMetadata {
    phone_number_id: String,
}

fn id_string(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// `object` and the distinct routing ids of a Meta delivery, in linear time
/// and bounded: more than [`MAX_META_ENTRIES`] entries, changes or distinct
/// ids is [`RoutingError::TooMany`]. Reads nothing but ids: this runs
/// before the signature can be checked, because which app secret to check
/// with depends on the channel the ids name.
pub fn meta_routing_ids(body: &[u8]) -> Result<(String, Vec<String>), RoutingError> {
    let env: IdsEnvelope = serde_json::from_slice(body).map_err(|e| {
        if e.to_string().contains(TOO_MANY) {
            RoutingError::TooMany
        } else {
            RoutingError::Payload(PayloadError(e.to_string()))
        }
    })?;
    let mut seen: HashSet<String> = HashSet::new();
    let mut ids: Vec<String> = Vec::new();
    let mut add = |id: String| {
        if seen.insert(id.clone()) {
            ids.push(id);
        }
        if ids.len() > MAX_META_ENTRIES {
            Err(RoutingError::TooMany)
        } else {
            Ok(())
        }
    };
    for entry in env.entry {
        if env.object == "whatsapp_business_account" {
            for change in entry.changes {
                if let Some(m) = change.value.metadata {
                    add(m.phone_number_id)?;
                }
            }
        } else if let Some(id) = entry.id.as_ref().and_then(id_string) {
            add(id)?;
        }
    }
    Ok((env.object, ids))
}

/// The part of a Meta delivery that concerns one routing id: the same
/// envelope with only that id's entries (and, for WhatsApp, changes). A
/// delivery can name channels of several tenants; each stores only its own.
pub fn meta_raw_for(body: &serde_json::Value, routing_id: &str) -> serde_json::Value {
    let mut out = body.clone();
    let whatsapp = body["object"] == "whatsapp_business_account";
    if let Some(entries) = out.get_mut("entry").and_then(|e| e.as_array_mut()) {
        if whatsapp {
            for entry in entries.iter_mut() {
                if let Some(changes) = entry.get_mut("changes").and_then(|c| c.as_array_mut()) {
                    changes.retain(|c| c["value"]["metadata"]["phone_number_id"] == routing_id);
                }
            }
            entries.retain(|e| e["changes"].as_array().is_some_and(|c| !c.is_empty()));
        } else {
            entries.retain(|e| id_string(&e["id"]).as_deref() == Some(routing_id));
        }
    }
    out
}

// ---- WhatsApp Cloud API ----

#[derive(Deserialize)]
struct WaEnvelope {
    #[serde(default)]
    entry: Vec<WaEntry>,
}

#[derive(Deserialize)]
struct WaEntry {
    #[serde(default)]
    changes: Vec<WaChange>,
}

#[derive(Deserialize)]
struct WaChange {
    #[serde(default)]
    field: String,
    value: WaValue,
}

#[derive(Deserialize)]
struct WaValue {
    metadata: Option<IdsMetadata>,
    #[serde(default)]
    contacts: Vec<WaContact>,
    #[serde(default)]
    messages: Vec<WaMessage>,
    #[serde(default)]
    statuses: Vec<WaStatus>,
}

#[derive(Deserialize)]
struct WaContact {
    wa_id: String,
    #[serde(default)]
    profile: Option<WaProfile>,
}

#[derive(Deserialize)]
struct WaProfile {
    #[serde(default)]
    name: Option<String>,
}

#[derive(Deserialize)]
struct WaMessage {
    from: String,
    id: String,
    #[serde(default)]
    timestamp: Option<String>,
    #[serde(default, rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<WaText>,
    #[serde(default)]
    button: Option<WaText>,
}

#[derive(Deserialize)]
struct WaText {
    #[serde(alias = "text")]
    body: String,
}

#[derive(Deserialize)]
struct WaStatus {
    id: String,
    status: String,
    #[serde(default)]
    errors: Vec<MetaErrorDetail>,
}

#[derive(Deserialize)]
struct MetaErrorDetail {
    #[serde(default)]
    code: Option<i64>,
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

fn unix_secs(s: &str) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(s.trim().parse().ok()?, 0)
}

fn unix_millis(ms: i64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_millis(ms)
}

/// Messages and status receipts of a WhatsApp delivery, by phone number id.
pub fn whatsapp(body: &[u8]) -> Result<Routed, PayloadError> {
    let env: WaEnvelope = serde_json::from_slice(body).map_err(|e| PayloadError(e.to_string()))?;
    let mut out = Grouped::default();
    for change in env.entry.iter().flat_map(|e| &e.changes) {
        if change.field != "messages" {
            continue;
        }
        let Some(meta) = &change.value.metadata else {
            continue;
        };
        let pnid = &meta.phone_number_id;
        for m in &change.value.messages {
            let text = match (m.kind.as_str(), &m.text, &m.button) {
                ("text", Some(t), _) => t.body.clone(),
                ("button", _, Some(b)) => b.body.clone(),
                // Media, locations, reactions: not understood by the agent.
                _ => continue,
            };
            let name = change
                .value
                .contacts
                .iter()
                .find(|c| c.wa_id == m.from)
                .and_then(|c| c.profile.as_ref()?.name.clone());
            out.push(
                pnid,
                InboundItem::Message {
                    external_user_id: m.from.clone(),
                    user_name: name,
                    username: None,
                    phone: Some(m.from.clone()),
                    external_message_id: m.id.clone(),
                    text,
                    sent_at: m.timestamp.as_deref().and_then(unix_secs),
                },
            );
        }
        for s in &change.value.statuses {
            let status = match s.status.as_str() {
                "sent" => MessageStatus::Sent,
                "delivered" => MessageStatus::Delivered,
                "read" => MessageStatus::Read,
                "failed" => MessageStatus::Failed,
                _ => continue,
            };
            let error = s.errors.first().map(|e| {
                let text = e
                    .message
                    .clone()
                    .or_else(|| e.title.clone())
                    .unwrap_or_else(|| "delivery failed".to_owned());
                match e.code {
                    Some(code) => format!("{text} (code {code})"),
                    None => text,
                }
            });
            out.push(
                pnid,
                InboundItem::Receipt {
                    external_message_id: s.id.clone(),
                    status,
                    error,
                },
            );
        }
    }
    Ok(out.out)
}

// ---- Messenger and Instagram ----

#[derive(Deserialize)]
struct PageEnvelope {
    #[serde(default)]
    entry: Vec<PageEntry>,
}

#[derive(Deserialize)]
struct PageEntry {
    id: serde_json::Value,
    #[serde(default)]
    messaging: Vec<Messaging>,
}

#[derive(Deserialize)]
struct Messaging {
    sender: Party,
    #[serde(default)]
    timestamp: Option<i64>,
    #[serde(default)]
    message: Option<PageMessage>,
    #[serde(default)]
    delivery: Option<Delivery>,
}

#[derive(Deserialize)]
struct Party {
    id: String,
}

#[derive(Deserialize)]
struct PageMessage {
    mid: String,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    is_echo: bool,
}

#[derive(Deserialize)]
struct Delivery {
    #[serde(default)]
    mids: Vec<String>,
}

/// Messenger (`object: page`) or Instagram (`object: instagram`) messages,
/// by page or Instagram account id. Echoes are skipped.
pub fn page_or_instagram(body: &[u8]) -> Result<Routed, PayloadError> {
    let env: PageEnvelope =
        serde_json::from_slice(body).map_err(|e| PayloadError(e.to_string()))?;
    let mut out = Grouped::default();
    for entry in &env.entry {
        let Some(account) = id_string(&entry.id) else {
            continue;
        };
        for ev in &entry.messaging {
            if let Some(m) = &ev.message {
                // Our own outbound message coming back (Instagram also sends
                // it with the account as sender).
                if m.is_echo || ev.sender.id == account {
                    continue;
                }
                let Some(text) = m.text.clone().filter(|t| !t.trim().is_empty()) else {
                    continue;
                };
                out.push(
                    &account,
                    InboundItem::Message {
                        external_user_id: ev.sender.id.clone(),
                        user_name: None,
                        username: None,
                        phone: None,
                        external_message_id: m.mid.clone(),
                        text,
                        sent_at: ev.timestamp.and_then(unix_millis),
                    },
                );
            } else if let Some(d) = &ev.delivery {
                for mid in &d.mids {
                    out.push(
                        &account,
                        InboundItem::Receipt {
                            external_message_id: mid.clone(),
                            status: MessageStatus::Delivered,
                            error: None,
                        },
                    );
                }
            }
        }
    }
    Ok(out.out)
}

// ---- Telegram ----

#[derive(Deserialize)]
struct Update {
    update_id: i64,
    #[serde(default)]
    message: Option<TgMessage>,
}

#[derive(Deserialize)]
struct TgMessage {
    #[serde(default)]
    from: Option<TgUser>,
    chat: TgChat,
    #[serde(default)]
    date: Option<i64>,
    #[serde(default)]
    text: Option<String>,
}

#[derive(Deserialize)]
struct TgUser {
    #[serde(default)]
    is_bot: bool,
    #[serde(default)]
    first_name: Option<String>,
    #[serde(default)]
    last_name: Option<String>,
    #[serde(default)]
    username: Option<String>,
}

#[derive(Deserialize)]
struct TgChat {
    id: i64,
}

/// The update id (the dedup key) and the message item, if the update is a
/// text message from a person. Edits, channel posts, membership changes
/// and bots yield no item.
pub fn telegram(body: &[u8]) -> Result<(i64, Option<InboundItem>), PayloadError> {
    let u: Update = serde_json::from_slice(body).map_err(|e| PayloadError(e.to_string()))?;
    let Some(m) = u.message else {
        return Ok((u.update_id, None));
    };
    let from = m.from.as_ref();
    if from.is_some_and(|f| f.is_bot) {
        return Ok((u.update_id, None));
    }
    let Some(text) = m.text.filter(|t| !t.trim().is_empty()) else {
        return Ok((u.update_id, None));
    };
    let name = from.and_then(|f| {
        let parts: Vec<&str> = [f.first_name.as_deref(), f.last_name.as_deref()]
            .into_iter()
            .flatten()
            .collect();
        (!parts.is_empty()).then(|| parts.join(" "))
    });
    Ok((
        u.update_id,
        Some(InboundItem::Message {
            external_user_id: m.chat.id.to_string(),
            user_name: name,
            username: from.and_then(|f| f.username.clone()),
            phone: None,
            external_message_id: u.update_id.to_string(),
            text,
            sent_at: m.date.and_then(|d| DateTime::from_timestamp(d, 0)),
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whatsapp_messages_and_statuses_by_phone_number_id() -> Result<(), RoutingError> {
        let body = br#"{"object":"whatsapp_business_account","entry":[{"id":"W","changes":[{"field":"messages","value":{
 "messaging_product":"whatsapp","metadata":{"display_phone_number":"15550001111","phone_number_id":"PN1"},
 "contacts":[{"profile":{"name":"Ana"},"wa_id":"5511"}],
 "messages":[{"from":"5511","id":"wamid.A","timestamp":"1717000000","type":"text","text":{"body":"hi"}},
             {"from":"5511","id":"wamid.B","timestamp":"1717000000","type":"image","image":{}}],
 "statuses":[{"id":"wamid.OUT","status":"failed","errors":[{"code":131047,"title":"Re-engagement message"}]}]}}]}]}"#;
        let (object, ids) = meta_routing_ids(body)?;
        assert_eq!(
            (object.as_str(), ids),
            ("whatsapp_business_account", vec!["PN1".to_owned()])
        );
        let routed = whatsapp(body)?;
        assert_eq!(routed.len(), 1);
        let (id, items) = &routed[0];
        assert_eq!(id, "PN1");
        assert_eq!(items.len(), 2, "the image is skipped");
        assert!(
            matches!(&items[0], InboundItem::Message { user_name: Some(n), text, .. } if n == "Ana" && text == "hi")
        );
        assert!(
            matches!(&items[1], InboundItem::Receipt { status: MessageStatus::Failed, error: Some(e), .. } if e.contains("131047"))
        );
        Ok(())
    }

    #[test]
    fn messenger_echoes_are_skipped_and_entries_split_per_page() -> Result<(), PayloadError> {
        let body = br#"{"object":"page","entry":[
 {"id":"P1","time":1,"messaging":[{"sender":{"id":"U1"},"recipient":{"id":"P1"},"timestamp":1718000000000,"message":{"mid":"m_1","text":"hello"}},
                                  {"sender":{"id":"P1"},"recipient":{"id":"U1"},"timestamp":1718000000000,"message":{"mid":"m_2","text":"echo","is_echo":true}}]},
 {"id":"P2","time":1,"messaging":[{"sender":{"id":"U2"},"recipient":{"id":"P2"},"timestamp":1718000000000,"message":{"mid":"m_3","text":"yo"}}]}]}"#;
        let routed = page_or_instagram(body)?;
        assert_eq!(routed.len(), 2);
        let value: serde_json::Value =
            serde_json::from_slice(body).map_err(|e| PayloadError(e.to_string()))?;
        let own = meta_raw_for(&value, "P2");
        assert_eq!(own["entry"].as_array().map(Vec::len), Some(1));
        assert_eq!(own["entry"][0]["id"], "P2");
        assert_eq!(routed[0].0, "P1");
        assert_eq!(routed[0].1.len(), 1);
        assert_eq!(routed[1].0, "P2");
        Ok(())
    }

    #[test]
    fn routing_ids_are_read_in_linear_time_and_capped() -> Result<(), RoutingError> {
        // The flood from the security report: 68,000 tiny distinct entries.
        let flood = format!(
            r#"{{"object":"page","entry":[{}]}}"#,
            (0..68_000)
                .map(|i| format!(r#"{{"id":{i}}}"#))
                .collect::<Vec<_>>()
                .join(",")
        );
        let started = std::time::Instant::now();
        assert!(matches!(
            meta_routing_ids(flood.as_bytes()),
            Err(RoutingError::TooMany)
        ));
        // Refused at entry 1,001 (a debug build parses that in well under
        // a second; the quadratic version took seconds).
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
        // Meta's largest batch, with repeats, is fine and deduplicated.
        let batch = format!(
            r#"{{"object":"page","entry":[{}]}}"#,
            (0..1_000)
                .map(|i| format!(r#"{{"id":"P{}"}}"#, i % 400))
                .collect::<Vec<_>>()
                .join(",")
        );
        let (object, ids) = meta_routing_ids(batch.as_bytes())?;
        assert_eq!((object.as_str(), ids.len()), ("page", 400));
        assert_eq!(ids[0], "P0");
        // WhatsApp changes count too.
        let changes = format!(
            r#"{{"object":"whatsapp_business_account","entry":[{{"id":"W","changes":[{}]}}]}}"#,
            (0..1_001)
                .map(|i| format!(r#"{{"value":{{"metadata":{{"phone_number_id":"{i}"}}}}}}"#))
                .collect::<Vec<_>>()
                .join(",")
        );
        assert!(matches!(
            meta_routing_ids(changes.as_bytes()),
            Err(RoutingError::TooMany)
        ));
        Ok(())
    }

    #[test]
    fn telegram_skips_bots_and_edits() -> Result<(), PayloadError> {
        let msg = br#"{"update_id":7,"message":{"message_id":42,"from":{"id":111,"is_bot":false,"first_name":"Ana","username":"ana"},"chat":{"id":111,"type":"private"},"date":1717000000,"text":"hi"}}"#;
        let (id, item) = telegram(msg)?;
        assert_eq!(id, 7);
        assert!(
            matches!(item, Some(InboundItem::Message { external_user_id, external_message_id, .. }) if external_user_id == "111" && external_message_id == "7")
        );
        let bot = br#"{"update_id":8,"message":{"message_id":1,"from":{"id":2,"is_bot":true,"first_name":"B"},"chat":{"id":2},"text":"x"}}"#;
        assert!(telegram(bot)?.1.is_none());
        let edit =
            br#"{"update_id":9,"edited_message":{"message_id":1,"chat":{"id":2},"text":"x"}}"#;
        assert!(telegram(edit)?.1.is_none());
        Ok(())
    }
}
