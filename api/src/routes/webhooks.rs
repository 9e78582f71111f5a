//! `/api/v1/webhooks/...`: public endpoints the providers call.
//!
//! Every delivery is authenticated on its raw bytes before anything is
//! queued (Meta: `X-Hub-Signature-256` with the channel's app secret;
//! Telegram: the secret token header). Accepting it then takes one Redis
//! round trip and no database write: one script deduplicates the items per
//! provider message id (the unique `messages.dedupKey` index is the durable
//! backstop) and queues the fresh ones as a `receive_inbound` job, whose
//! worker stores the event and processes it. The channel comes from the
//! in-process routing cache (`platform::channels::routes`), which every
//! channel change invalidates across replicas. Redis runs with an
//! append-only file in every shipped configuration, so a delivery is only
//! acknowledged once Redis holds it; when Redis cannot take it the answer
//! is 503 with `Retry-After`, and the provider delivers it again.
//!
//! Which app secret to check a Meta delivery with depends on the channel
//! the payload names, so the routing ids (and nothing else) are read first,
//! in linear time and at most [`parse::MAX_META_ENTRIES`] of them (Meta's
//! own batch limit; more is a 400): an unsigned request costs one bounded
//! parse and a cache lookup. Nothing is parsed further or queued until the
//! signature holds. Only channels whose account the provider confirmed (a
//! claimed `routingKey`) are routed to.

use std::collections::HashMap;

use bson::doc;
use chrono::Utc;
use salvo::http::header::CONTENT_TYPE;
use salvo::prelude::*;
use serde_json::value::RawValue;

use aigentable_jobs::types::ReceiveInbound;
use aigentable_platform::channels::{parse, routing_key, signature};
use aigentable_platform::ids::{looks_like_id, new_id};
use aigentable_platform::model::channel::COLLECTION as CHANNELS;
use aigentable_platform::model::{Channel, ChannelType, InboundItem};

use crate::error::{ApiError, ApiResult, Reason};
use crate::state::{AppState, app};

/// Meta batches up to 1,000 updates per delivery; 1 MB covers that with room.
pub const WEBHOOK_BODY_LIMIT: usize = 1024 * 1024;

/// Distinct app secrets one delivery is checked against (a genuine one is
/// signed by one Meta app).
const MAX_APP_SECRETS_PER_DELIVERY: usize = 4;

async fn raw_body(req: &mut Request) -> ApiResult<Vec<u8>> {
    req.payload_with_max_size(WEBHOOK_BODY_LIMIT)
        .await
        .map(|b| b.to_vec())
        .map_err(|e| match e {
            salvo::http::ParseError::PayloadTooLarge => ApiError::PayloadTooLarge {
                limit: WEBHOOK_BODY_LIMIT,
            },
            other => ApiError::bad_request(format!("could not read request body: {other}")),
        })
}

/// The delivery could not be stored: 503 with `Retry-After`, so that the
/// provider delivers it again (never a 500).
fn not_durable() -> ApiError {
    ApiError::Unavailable("the event could not be stored, please retry shortly".to_owned())
}

fn unknown_channel() -> ApiError {
    ApiError::NotFound("channel")
}

fn bad_signature() -> ApiError {
    ApiError::because(Reason::BadSignature, "invalid signature")
}

fn header<'a>(req: &'a Request, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

/// The id an item is deduplicated on: receipts per status, so `delivered`
/// after `sent` still counts.
fn dedup_id(item: &InboundItem) -> String {
    match item {
        InboundItem::Message {
            external_message_id,
            ..
        } => format!("m:{external_message_id}"),
        InboundItem::Receipt {
            external_message_id,
            status,
            ..
        } => format!("r:{external_message_id}:{}", status.as_str()),
    }
}

/// Queues the items not seen before as one event, in one Redis round trip
/// and with no database write (the worker stores the event, `raw`
/// included). Answers the event id, or `None` when everything was a
/// duplicate.
pub async fn accept(
    state: &AppState,
    channel: &Channel,
    items: Vec<InboundItem>,
    raw: Box<RawValue>,
) -> ApiResult<Option<String>> {
    let kv = &state.platform.kv;
    let items: Vec<(String, InboundItem)> = items
        .into_iter()
        .map(|i| (kv.key(&["webhook-dedup", &channel.id, &dedup_id(&i)]), i))
        .collect();
    let event_id = new_id();
    let job = ReceiveInbound {
        channel_id: channel.id.clone(),
        channel_type: channel.channel_type,
        event_id: event_id.clone(),
        raw,
        received_at: Utc::now(),
        items: Vec::new(),
    };
    let queued = state
        .jobs
        .enqueue_fresh(&channel.tenant_id, job, &items, ReceiveInbound::DEDUP_TTL)
        .await
        .map_err(|e| {
            tracing::warn!(tenant_id = %channel.tenant_id, channel_id = %channel.id, error = %e, "webhook not accepted: it could not be queued");
            not_durable()
        })?;
    match queued {
        Some((job_id, fresh)) => {
            tracing::info!(tenant_id = %channel.tenant_id, channel_id = %channel.id, event_id = %event_id, job_id = %job_id, items = fresh, "webhook event accepted");
            Ok(Some(event_id))
        }
        None => {
            tracing::debug!(tenant_id = %channel.tenant_id, channel_id = %channel.id, "duplicate webhook delivery ignored");
            Ok(None)
        }
    }
}

/// A body the typed parsers already read, as JSON text to pass on.
fn raw_text(body: &[u8]) -> Box<RawValue> {
    serde_json::from_slice::<Box<RawValue>>(body).unwrap_or_else(|_| RawValue::NULL.to_owned())
}

fn plain(res: &mut Response, status: StatusCode, body: String) {
    res.status_code(status);
    res.headers_mut().insert(
        CONTENT_TYPE,
        salvo::http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    res.render(body);
}

/// Meta's subscription check: echo `hub.challenge` when `hub.verify_token`
/// is the verify token of one of our channels of these types.
async fn verify_subscription(
    req: &Request,
    depot: &Depot,
    res: &mut Response,
    types: &[ChannelType],
) -> ApiResult<()> {
    let q = req.queries();
    let mode = q.get("hub.mode").map(String::as_str).unwrap_or_default();
    let token = q
        .get("hub.verify_token")
        .map(String::as_str)
        .unwrap_or_default();
    let challenge = q.get("hub.challenge").cloned().unwrap_or_default();
    if mode != "subscribe" || token.is_empty() || challenge.is_empty() || challenge.len() > 256 {
        return Err(ApiError::Forbidden("verification failed".to_owned()));
    }
    let type_names: Vec<&str> = types.iter().map(|t| t.as_str()).collect();
    let found = app(depot)
        .platform
        .db
        .unscoped::<bson::Document>(CHANNELS)
        .find_one(doc! { "type": { "$in": type_names }, "webhookSecret": token })
        .await
        .map_err(ApiError::internal)?;
    match found {
        Some(c) => {
            tracing::info!(channel_id = %c.get_str("_id").unwrap_or_default(), "webhook subscription verified");
            plain(res, StatusCode::OK, challenge);
            Ok(())
        }
        None => Err(ApiError::Forbidden("verification failed".to_owned())),
    }
}

/// WhatsApp subscription check (`hub.challenge`).
#[endpoint(tags("webhooks"), status_codes(200, 403))]
pub async fn whatsapp_verify(
    req: &mut Request,
    depot: &mut Depot,
    res: &mut Response,
) -> ApiResult<()> {
    verify_subscription(req, depot, res, &[ChannelType::Whatsapp]).await
}

/// Messenger / Instagram subscription check (`hub.challenge`).
#[endpoint(tags("webhooks"), status_codes(200, 403))]
pub async fn facebook_verify(
    req: &mut Request,
    depot: &mut Depot,
    res: &mut Response,
) -> ApiResult<()> {
    verify_subscription(
        req,
        depot,
        res,
        &[ChannelType::Facebook, ChannelType::Instagram],
    )
    .await
}

/// Counts a delivery on channels that cannot verify it yet (no app secret),
/// so their admins see that Meta is calling and what is missing. A failure
/// to count never changes the answer.
async fn count_unverified(state: &AppState, channel_ids: &[String]) {
    let counted = state
        .platform
        .db
        .unscoped::<bson::Document>(CHANNELS)
        .update_many(
            doc! { "_id": { "$in": channel_ids } },
            doc! {
                "$inc": { "unverifiedDeliveries": 1 },
                "$set": { "lastUnverifiedDeliveryAt": bson::DateTime::now() },
            },
        )
        .await;
    if let Err(e) = counted {
        tracing::warn!(error = %e, "could not count unverified deliveries");
    }
}

/// A Meta delivery (WhatsApp, Messenger, Instagram).
async fn meta_delivery(
    req: &mut Request,
    depot: &Depot,
    res: &mut Response,
    whatsapp_route: bool,
) -> ApiResult<()> {
    let state = app(depot);
    let body = raw_body(req).await?;
    let (object, ids) = parse::meta_routing_ids(&body).map_err(|e| match e {
        parse::RoutingError::TooMany => ApiError::bad_request(format!(
            "a delivery carries at most {} entries",
            parse::MAX_META_ENTRIES
        )),
        parse::RoutingError::Payload(_) => ApiError::bad_request("body is not a webhook payload"),
    })?;
    let channel_type = match (whatsapp_route, object.as_str()) {
        (true, "whatsapp_business_account") => ChannelType::Whatsapp,
        (false, "page") => ChannelType::Facebook,
        (false, "instagram") => ChannelType::Instagram,
        _ => return Err(ApiError::bad_request("unsupported webhook object")),
    };
    let keys: Vec<String> = ids.iter().map(|id| routing_key(channel_type, id)).collect();
    let channels = state
        .routes
        .by_routing_keys(&state.platform.db, &keys)
        .await
        .map_err(ApiError::internal)?;
    if channels.is_empty() {
        tracing::info!(object = %object, "webhook for no known channel");
        return Err(unknown_channel());
    }
    // Each channel checks the signature with its own app secret. Only the
    // channels whose secret verifies get their entries: a delivery signed
    // with one app's secret can never speak for another app's channel.
    let sig = header(req, "x-hub-signature-256");
    let mut without_secret = Vec::new();
    // One HMAC of the body per distinct app secret (a genuine delivery
    // comes from one Meta app), and only a few: an unsigned body naming
    // many channels must not cost one pass over 1 MB per channel.
    let mut verdicts: HashMap<String, bool> = HashMap::new();
    let verified: Vec<&Channel> = channels
        .iter()
        .map(|c| &**c)
        .filter(|c| {
            let Some(sealed) = c.secrets.get("appSecret") else {
                without_secret.push(c.id.clone());
                tracing::warn!(tenant_id = %c.tenant_id, channel_id = %c.id, "webhook refused: the channel has no app secret to verify it with");
                return false;
            };
            let Ok(secret) = state.platform.secrets.open(sealed) else {
                tracing::warn!(tenant_id = %c.tenant_id, channel_id = %c.id, "webhook refused: the app secret cannot be decrypted");
                return false;
            };
            match verdicts.get(&secret) {
                Some(ok) => *ok,
                None if verdicts.len() >= MAX_APP_SECRETS_PER_DELIVERY => false,
                None => {
                    let verdict = signature::verify_meta(&secret, &body, sig);
                    if let Err(e) = &verdict {
                        tracing::warn!(tenant_id = %c.tenant_id, channel_id = %c.id, reason = %e, "webhook refused for this channel");
                    }
                    verdicts.insert(secret, verdict.is_ok());
                    verdict.is_ok()
                }
            }
        })
        .collect();
    if !without_secret.is_empty() {
        count_unverified(state, &without_secret).await;
    }
    if verified.is_empty() {
        return Err(bad_signature());
    }
    // Verified: now the payload may be read.
    let routed = if channel_type == ChannelType::Whatsapp {
        parse::whatsapp(&body)
    } else {
        parse::page_or_instagram(&body)
    }
    .map_err(|e| ApiError::bad_request(e.to_string()))?;
    // A delivery that names one account is stored as it came; one naming
    // several gives each channel only its own entries.
    let tree = (ids.len() > 1)
        .then(|| serde_json::from_slice::<serde_json::Value>(&body).unwrap_or_default());
    for (routing_id, items) in routed {
        let key = routing_key(channel_type, &routing_id);
        let Some(channel) = verified
            .iter()
            .find(|c| c.routing_key.as_deref() == Some(key.as_str()))
        else {
            continue;
        };
        if !channel.is_active {
            tracing::info!(tenant_id = %channel.tenant_id, channel_id = %channel.id, "webhook for an inactive channel ignored");
            continue;
        }
        let raw = match &tree {
            None => raw_text(&body),
            Some(tree) => serde_json::value::to_raw_value(&parse::meta_raw_for(tree, &routing_id))
                .unwrap_or_else(|_| RawValue::NULL.to_owned()),
        };
        accept(state, channel, items, raw).await?;
    }
    plain(res, StatusCode::OK, "EVENT_RECEIVED".to_owned());
    Ok(())
}

/// WhatsApp Cloud API deliveries (signed with the app secret).
#[endpoint(tags("webhooks"), status_codes(200, 400, 401, 404, 413))]
pub async fn whatsapp(req: &mut Request, depot: &mut Depot, res: &mut Response) -> ApiResult<()> {
    meta_delivery(req, depot, res, true).await
}

/// Messenger (`object: page`) and Instagram (`object: instagram`) deliveries.
#[endpoint(tags("webhooks"), status_codes(200, 400, 401, 404, 413))]
pub async fn facebook(req: &mut Request, depot: &mut Depot, res: &mut Response) -> ApiResult<()> {
    meta_delivery(req, depot, res, false).await
}

/// Telegram updates for one channel (checked with the secret token header).
#[endpoint(tags("webhooks"), status_codes(200, 400, 401, 404, 413), parameters(("channelId" = String, Path, description = "Channel id")))]
pub async fn telegram(req: &mut Request, depot: &mut Depot, res: &mut Response) -> ApiResult<()> {
    let state = app(depot);
    let id: String = req.param("channelId").unwrap_or_default();
    if !looks_like_id(&id) {
        return Err(unknown_channel());
    }
    // The path names the channel; its tenant is what we are looking for.
    let channel = state
        .routes
        .by_id(&state.platform.db, &id)
        .await
        .map_err(ApiError::internal)?
        .filter(|c| c.channel_type == ChannelType::Telegram)
        .ok_or_else(unknown_channel)?;
    let verdict = match &channel.webhook_secret {
        Some(expected) => {
            signature::verify_secret_token(expected, header(req, "x-telegram-bot-api-secret-token"))
        }
        None => Err(signature::SignatureError::Mismatch),
    };
    if let Err(e) = verdict {
        tracing::warn!(tenant_id = %channel.tenant_id, channel_id = %channel.id, reason = %e, "telegram webhook refused");
        return Err(bad_signature());
    }
    let body = raw_body(req).await?;
    let (update_id, item) =
        parse::telegram(&body).map_err(|e| ApiError::bad_request(e.to_string()))?;
    if let Some(item) = item
        && channel.is_active
    {
        accept(state, &channel, vec![item], raw_text(&body)).await?;
    } else {
        tracing::debug!(channel_id = %channel.id, update_id, "telegram update ignored");
    }
    res.render(Json(serde_json::json!({})));
    Ok(())
}

/// The providers' webhooks (signed, no session).
pub fn router() -> Router {
    Router::new()
        .push(
            Router::with_path("webhooks/whatsapp")
                .get(whatsapp_verify)
                .post(whatsapp),
        )
        .push(
            Router::with_path("webhooks/facebook")
                .get(facebook_verify)
                .post(facebook),
        )
        .push(Router::with_path("webhooks/telegram/{channelId}").post(telegram))
}
