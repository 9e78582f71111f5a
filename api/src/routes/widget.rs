//! The website widget's public endpoints, `/api/v1/widget/{publicKey}/...`,
//! and the embeddable script at `/widget.js`.
//!
//! No tenant JWT here: a request is scoped by the channel's public key and,
//! when the channel lists `allowedOrigins`, must come from one of them (the
//! `Origin` header; CORS is answered for those origins on these routes
//! only); without the list any site may embed the widget. A visitor gets a
//! server-issued id and a signed token from `POST .../sessions` (a
//! returning browser proves its id with its earlier token, never by naming
//! it); messages are rate-limited per visitor and per IP. Bodies are small
//! and capped ([`WIDGET_BODY_LIMIT`]). A visitor message goes the same way as any
//! provider webhook: a `receive_inbound` job that stores and processes it.
//! Replies reach the visitor over Socket.IO (namespace `/widget`, see
//! `realtime_widget.rs`), with `GET .../messages` as the fallback.

use bson::doc;
use chrono::{DateTime, Utc};
use salvo::http::HeaderValue;
use salvo::http::header::{
    ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN,
    ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE, CACHE_CONTROL, CONTENT_TYPE, VARY,
};
use salvo::oapi::ToSchema;
use salvo::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use aigentable_platform::auth::rate_limit::{self, Decision};
use aigentable_platform::channels::widget as visitor;
use aigentable_platform::db::PageRequest;
use aigentable_platform::domain::MessageText;
use aigentable_platform::model::channel::COLLECTION as CHANNELS;
use aigentable_platform::model::{
    Channel, ChannelType, Conversation, InboundItem, Message, MessageStatus, SenderType,
};

use crate::error::{ApiError, ApiResult, Reason};
use crate::extract::parse_json;
use crate::routes::webhooks::accept;
use crate::state::{AppState, app};

/// The embeddable script (bubble, panel, live updates).
const SCRIPT: &str = include_str!("../../static/widget.js");

/// Messages one visitor may send per minute.
const PER_VISITOR_PER_MINUTE: u32 = 20;
/// Widget requests (sessions and messages) per IP address per minute.
const PER_IP_PER_MINUTE: u32 = 120;
const MAX_TEXT: usize = 2_000;
/// A widget body is a message of at most [`MAX_TEXT`] characters or a
/// session request: 16 KiB is plenty.
pub const WIDGET_BODY_LIMIT: usize = 16 * 1024;

/// The JSON body of a widget request, read up to [`WIDGET_BODY_LIMIT`].
async fn widget_body<T: serde::de::DeserializeOwned>(req: &mut Request) -> ApiResult<T> {
    let is_json = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().starts_with("application/json"));
    if !is_json {
        return Err(ApiError::UnsupportedMediaType(
            "request body must be JSON (Content-Type: application/json)".to_owned(),
        ));
    }
    let bytes = req
        .payload_with_max_size(WIDGET_BODY_LIMIT)
        .await
        .map_err(|e| match e {
            salvo::http::ParseError::PayloadTooLarge => ApiError::PayloadTooLarge {
                limit: WIDGET_BODY_LIMIT,
            },
            other => ApiError::bad_request(format!("could not read request body: {other}")),
        })?;
    parse_json(bytes)
}

fn limited(d: Decision) -> ApiResult<()> {
    match d {
        Decision::Allowed => Ok(()),
        Decision::Limited { retry_after_secs } => {
            Err(ApiError::TooManyRequests { retry_after_secs })
        }
    }
}

/// The active website channel behind a public key.
async fn channel_by_key(state: &AppState, key: &str) -> ApiResult<Channel> {
    if !key.starts_with("pk_") || key.len() > 64 {
        return Err(ApiError::NotFound("widget"));
    }
    // The public key is the only thing the page knows; it names the tenant.
    state
        .platform
        .db
        .unscoped::<Channel>(CHANNELS)
        .find_one(doc! { "publicKey": key, "type": ChannelType::Website.as_str() })
        .await
        .map_err(ApiError::internal)?
        .filter(|c| c.is_active)
        .ok_or(ApiError::NotFound("widget"))
}

fn allowed_origins(channel: &Channel) -> Vec<String> {
    channel
        .config
        .get_array("allowedOrigins")
        .map(|a| {
            a.iter()
                .filter_map(|o| o.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The request's `Origin` when the channel allows it (a channel without
/// `allowedOrigins` allows every origin).
fn check_origin(req: &Request, channel: &Channel) -> ApiResult<String> {
    let origin = req
        .headers()
        .get("origin")
        .and_then(|v| v.to_str().ok())
        .map(|o| o.trim_end_matches('/').to_ascii_lowercase());
    let allowed = allowed_origins(channel);
    if allowed.is_empty() {
        return Ok(origin.unwrap_or_else(|| "*".to_owned()));
    }
    match origin {
        Some(o) if allowed.iter().any(|a| a == "*" || *a == o) => Ok(o),
        None if allowed.iter().any(|a| a == "*") => Ok("*".to_owned()),
        _ => Err(ApiError::because(
            Reason::OriginNotAllowed,
            "this website is not allowed to use this widget",
        )),
    }
}

fn cors_headers(res: &mut Response, origin: &str) {
    if let Ok(v) = HeaderValue::from_str(origin) {
        let h = res.headers_mut();
        h.insert(ACCESS_CONTROL_ALLOW_ORIGIN, v);
        h.insert(VARY, HeaderValue::from_static("Origin"));
        h.insert(
            ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("retry-after"),
        );
    }
}

fn key_param(req: &Request) -> String {
    req.param::<String>("publicKey").unwrap_or_default()
}

/// Resolves the channel and checks the origin; CORS headers are set for an
/// allowed origin even when the request then fails (so the page can read
/// the error).
pub(crate) async fn scope(req: &Request, depot: &Depot, res: &mut Response) -> ApiResult<Channel> {
    let channel = channel_by_key(app(depot), &key_param(req)).await?;
    let origin = check_origin(req, &channel)?;
    cors_headers(res, &origin);
    Ok(channel)
}

fn bearer(req: &Request) -> Option<&str> {
    crate::guard::bearer_token(req)
}

pub(crate) fn visitor_of(req: &Request, depot: &Depot, channel: &Channel) -> ApiResult<String> {
    let secret = app(depot).platform.config.jwt.secret.expose();
    let claims = bearer(req)
        .and_then(|t| visitor::verify(secret, t))
        .filter(|c| c.c == channel.id)
        .ok_or_else(|| {
            ApiError::Unauthorized("visitor session missing or expired; start a new one".to_owned())
        })?;
    Ok(claims.v)
}

/// CORS preflight for the widget routes: allowed origins only.
#[handler]
pub async fn preflight(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    let origin = match channel_by_key(app(depot), &key_param(req)).await {
        Ok(channel) => check_origin(req, &channel).ok(),
        Err(_) => None,
    };
    if let Some(origin) = origin {
        cors_headers(res, &origin);
        let h = res.headers_mut();
        h.insert(
            ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, OPTIONS"),
        );
        h.insert(
            ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("authorization, content-type"),
        );
        h.insert(ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
    }
    res.status_code(StatusCode::NO_CONTENT);
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WidgetSettings {
    pub title: Option<String>,
    pub welcome_message: Option<String>,
    /// `null` until a theme is set.
    #[salvo(schema(value_type = Option<Object>))]
    pub theme: Option<Value>,
}

fn settings(channel: &Channel) -> WidgetSettings {
    WidgetSettings {
        title: channel.config.get_str("title").ok().map(str::to_owned),
        welcome_message: channel
            .config
            .get_str("welcomeMessage")
            .ok()
            .map(str::to_owned),
        theme: channel
            .config
            .get_document("theme")
            .ok()
            .map(|d| bson::Bson::Document(d.clone()).into_relaxed_extjson()),
    }
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionInput {
    /// A returning browser's earlier visitor token (even expired, up to 90
    /// days after): the new session keeps that visitor id. Without it (or
    /// when it does not verify) a new visitor id is issued; a visitor id
    /// sent as such is ignored, since ids are never chosen by the client.
    pub visitor_token: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WidgetSession {
    pub visitor_id: String,
    /// Send as `Authorization: Bearer <token>` to the other widget routes
    /// and as `auth.token` to the `/widget` Socket.IO namespace.
    pub token: String,
    pub expires_at: DateTime<Utc>,
    pub settings: WidgetSettings,
}

/// Start (or resume, with the earlier `visitorToken`) a visitor session.
#[endpoint(tags("widget"), request_body = SessionInput, status_codes(200, 400, 403, 404, 413, 415, 429), parameters(("publicKey" = String, Path, description = "Widget public key")))]
pub async fn create_session(
    req: &mut Request,
    depot: &mut Depot,
    res: &mut Response,
) -> ApiResult<Json<WidgetSession>> {
    let channel = scope(req, depot, res).await?;
    let state = app(depot);
    let ip = crate::routes::auth::client_ip(req, &state.platform.config.trusted_proxies);
    limited(
        rate_limit::hit(
            &state.platform.kv,
            &format!("widget:ip:{ip}"),
            PER_IP_PER_MINUTE,
            60,
        )
        .await?,
    )?;
    let has_body = req
        .headers()
        .get("content-type")
        .is_some_and(|v| v.to_str().is_ok_and(|s| s.starts_with("application/json")));
    let input: SessionInput = if has_body {
        widget_body(req).await?
    } else {
        SessionInput::default()
    };
    let secret = state.platform.config.jwt.secret.expose();
    let visitor_id = input
        .visitor_token
        .as_deref()
        .and_then(|t| visitor::resumable(secret, t, &channel.id))
        .map(|claims| claims.v)
        .unwrap_or_else(|| format!("v_{}", uuid::Uuid::new_v4().simple()));
    let token = visitor::issue(secret, &channel.id, &visitor_id);
    Ok(Json(WidgetSession {
        visitor_id,
        token,
        expires_at: Utc::now() + chrono::Duration::seconds(visitor::VISITOR_TOKEN_TTL_SECS),
        settings: settings(&channel),
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct VisitorMessageInput {
    pub text: String,
    /// The widget's own id for this message (retries with the same id are
    /// stored once).
    pub client_message_id: Option<String>,
    /// Shown to staff as the contact's name.
    pub name: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct VisitorMessageAccepted {
    pub client_message_id: String,
    /// `false` when this client message id was already received.
    pub accepted: bool,
}

/// A visitor writes (202; the reply arrives over the socket or the next
/// `GET .../messages`).
#[endpoint(tags("widget"), request_body = VisitorMessageInput, status_codes(202, 400, 401, 403, 404, 413, 415, 429), parameters(("publicKey" = String, Path, description = "Widget public key")))]
pub async fn send_message(
    req: &mut Request,
    depot: &mut Depot,
    res: &mut Response,
) -> ApiResult<Json<VisitorMessageAccepted>> {
    let channel = scope(req, depot, res).await?;
    let visitor_id = visitor_of(req, depot, &channel)?;
    let state = app(depot);
    let kv = &state.platform.kv;
    let ip = crate::routes::auth::client_ip(req, &state.platform.config.trusted_proxies);
    limited(rate_limit::hit(kv, &format!("widget:ip:{ip}"), PER_IP_PER_MINUTE, 60).await?)?;
    limited(
        rate_limit::hit(
            kv,
            &format!("widget:visitor:{}:{visitor_id}", channel.id),
            PER_VISITOR_PER_MINUTE,
            60,
        )
        .await?,
    )?;
    let input: VisitorMessageInput = widget_body(req).await?;
    let text = MessageText::parse("text", &input.text, MAX_TEXT)?;
    let text = text.as_str();
    let client_id = match input.client_message_id {
        Some(id) if visitor::valid_visitor_id(&id) => id,
        Some(_) => {
            return Err(ApiError::field(
                "clientMessageId",
                "must be 8 to 64 of A-Z a-z 0-9 - _",
            ));
        }
        None => uuid::Uuid::new_v4().simple().to_string(),
    };
    let name = input
        .name
        .map(|n| n.trim().chars().take(100).collect::<String>())
        .filter(|n| !n.is_empty());
    let item = InboundItem::Message {
        external_user_id: visitor_id.clone(),
        user_name: name,
        username: None,
        phone: None,
        // Scoped to the visitor, so one visitor cannot shadow another's ids.
        external_message_id: format!("{visitor_id}:{client_id}"),
        text: text.to_owned(),
        sent_at: Some(Utc::now()),
    };
    let raw = serde_json::value::to_raw_value(
        &json!({ "visitorId": visitor_id, "clientMessageId": client_id, "text": text }),
    )
    .map_err(ApiError::internal)?;
    let event = accept(state, &channel, vec![item], raw).await?;
    res.status_code(StatusCode::ACCEPTED);
    Ok(Json(VisitorMessageAccepted {
        client_message_id: client_id,
        accepted: event.is_some(),
    }))
}

/// A message as the visitor sees it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct VisitorMessage {
    pub id: String,
    /// `visitor`, `bot`, `agent` (a staff member) or `system` (notices such
    /// as the hand-off to a person).
    pub from: String,
    pub content: String,
    pub status: String,
    pub created_at: DateTime<Utc>,
}

/// The visitor's view of a message; `None` for what visitors never see
/// (dropped or failed replies).
pub fn visitor_view(m: &Message) -> Option<VisitorMessage> {
    visitor_view_of(&m.id, m.sender_type, m.status, &m.content, m.created_at)
}

pub fn visitor_view_of(
    id: &str,
    sender: SenderType,
    status: MessageStatus,
    content: &str,
    created_at: DateTime<Utc>,
) -> Option<VisitorMessage> {
    let from = match sender {
        SenderType::Customer => "visitor",
        SenderType::Agent => "bot",
        SenderType::Human => "agent",
        // Notices sent to the customer (e.g. the hand-off to a person).
        SenderType::System => "system",
    };
    if matches!(status, MessageStatus::Dropped | MessageStatus::Failed) {
        return None;
    }
    Some(VisitorMessage {
        id: id.to_owned(),
        from: from.to_owned(),
        content: content.to_owned(),
        status: status.as_str().to_owned(),
        created_at,
    })
}

/// The visitor's current conversation, if any.
pub async fn visitor_conversation(
    state: &AppState,
    channel: &Channel,
    visitor_id: &str,
) -> ApiResult<Option<Conversation>> {
    let (mut found, _) = state
        .platform
        .db
        .scoped::<Conversation>(&channel.tenant_id)
        .find_page(
            doc! { "channelId": &channel.id, "externalUserId": visitor_id },
            doc! { "createdAt": -1, "_id": -1 },
            PageRequest { page: 1, limit: 1 },
        )
        .await?;
    Ok(found.pop())
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct VisitorMessages {
    pub conversation_id: Option<String>,
    /// Oldest first; the latest 50.
    pub messages: Vec<VisitorMessage>,
}

/// The visitor's conversation (the latest 50 messages, oldest first).
#[endpoint(tags("widget"), status_codes(200, 401, 403, 404), parameters(("publicKey" = String, Path, description = "Widget public key")))]
pub async fn list_messages(
    req: &mut Request,
    depot: &mut Depot,
    res: &mut Response,
) -> ApiResult<Json<VisitorMessages>> {
    let channel = scope(req, depot, res).await?;
    let visitor_id = visitor_of(req, depot, &channel)?;
    let state = app(depot);
    let Some(conversation) = visitor_conversation(state, &channel, &visitor_id).await? else {
        return Ok(Json(VisitorMessages {
            conversation_id: None,
            messages: Vec::new(),
        }));
    };
    let (mut messages, _) = state
        .platform
        .db
        .scoped::<Message>(&channel.tenant_id)
        .find_page(
            doc! { "conversationId": &conversation.id },
            doc! { "createdAt": -1, "_id": -1 },
            PageRequest { page: 1, limit: 50 },
        )
        .await?;
    messages.reverse();
    Ok(Json(VisitorMessages {
        conversation_id: Some(conversation.id),
        messages: messages.iter().filter_map(visitor_view).collect(),
    }))
}

/// The widget's public settings (title, welcome message, theme).
#[endpoint(tags("widget"), status_codes(200, 403, 404), parameters(("publicKey" = String, Path, description = "Widget public key")))]
pub async fn get_settings(
    req: &mut Request,
    depot: &mut Depot,
    res: &mut Response,
) -> ApiResult<Json<WidgetSettings>> {
    let channel = scope(req, depot, res).await?;
    Ok(Json(settings(&channel)))
}

/// The embeddable script: `<script src=".../widget.js" data-key="pk_..." async>`.
#[handler]
pub async fn script(res: &mut Response) {
    let h = res.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/javascript; charset=utf-8"),
    );
    h.insert(
        CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    // Any page may load the script; what it can do is checked per request.
    h.insert(ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    res.render(SCRIPT);
}

/// The website widget's routes (its own visitor sessions, no user session).
pub fn router() -> Router {
    Router::new()
        .push(
            Router::with_path("widget/{publicKey}/sessions")
                .post(create_session)
                .options(preflight),
        )
        .push(
            Router::with_path("widget/{publicKey}/messages")
                .get(list_messages)
                .post(send_message)
                .options(preflight),
        )
        .push(
            Router::with_path("widget/{publicKey}/settings")
                .get(get_settings)
                .options(preflight),
        )
        .push(
            Router::with_path("widget/{publicKey}/rating")
                .post(super::analytics::widget_rating)
                .options(preflight),
        )
}
