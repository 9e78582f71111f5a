//! Socket.IO gateway, compatible with socket.io-client v4 as the frontend
//! uses it: `io(URL, { auth: { token, tenantId } })`.
//!
//! Workers publish [`RealtimeEvent`]s on Redis; every api replica relays
//! them to its own sockets, so any number of replicas can sit behind a load
//! balancer. Sockets join `tenant:{id}` on connect and `conversation:{id}`
//! on `join-conversation`.

use std::time::Duration;

use futures::StreamExt;
use serde::Deserialize;
use serde_json::json;
use socketioxide::SocketIo;
use socketioxide::extract::{AckSender, Data, SocketRef, State, TryData};
use socketioxide::handler::ConnectHandler;
use socketioxide::layer::SocketIoLayer;

use aigentable_jobs::events::{RealtimeEvent, channel};
use aigentable_platform::auth::revocation::{SessionRevocation, sessions_channel};

use crate::guard::{Caller, authenticate_token};
use crate::realtime_sessions::{self as sessions, Gone};
use crate::state::AppState;

/// Namespaces clients may connect to: the seed passes `VITE_API_URL`, which
/// ends in `/api/v1`, to `io()`, and socket.io reads that path as a namespace.
pub const NAMESPACES: [&str; 2] = ["/", "/api/v1"];

/// The largest message a client may send over the socket, in bytes, on
/// either transport. The largest legitimate one, `send-message` with
/// [`MAX_MESSAGE_CHARS`](crate::routes::conversations::MAX_MESSAGE_CHARS)
/// characters each written as an escaped surrogate pair (12 bytes), is
/// about 49 KiB. The transport reads a whole message into memory before
/// anything looks at it, before the namespace handshake authenticates
/// anyone, and engineioxide's defaults let a websocket message reach 64 MiB
/// (frames 16 MiB) and binary attachments 10 MB per packet: a few idle
/// connections could make the api hold gigabytes.
pub const MAX_CLIENT_MESSAGE_BYTES: usize = 64 * 1024;

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AuthPayload {
    token: Option<String>,
    tenant_id: Option<String>,
}

/// What the socket connected with, to re-check the caller on every action.
#[derive(Debug, Clone)]
struct Credentials {
    token: String,
    tenant: Option<String>,
}

#[derive(Debug)]
struct Refused(String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

pub fn tenant_room(tenant_id: &str) -> String {
    format!("tenant:{tenant_id}")
}

pub fn conversation_room(conversation_id: &str) -> String {
    format!("conversation:{conversation_id}")
}

/// Refuses the connection unless the token is valid, not revoked, and the
/// tenant matches.
async fn authenticate(
    socket: SocketRef,
    TryData(auth): TryData<AuthPayload>,
    State(state): State<AppState>,
) -> Result<(), Refused> {
    let auth = auth.unwrap_or_default();
    let header_token = socket
        .req_parts()
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").map(str::to_owned));
    let Some(token) = auth.token.or(header_token) else {
        return Err(Refused("authentication required".to_owned()));
    };
    let tenant = auth
        .tenant_id
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty());
    match authenticate_token(&state, &token, tenant, false).await {
        Ok(caller) => {
            socket.extensions.insert(caller);
            socket.extensions.insert(Credentials {
                token,
                tenant: tenant.map(str::to_owned),
            });
            Ok(())
        }
        Err(e) => {
            tracing::debug!(error = %e, "socket connection refused");
            Err(Refused(e.to_string()))
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum ConversationRef {
    Id(String),
    Object {
        #[serde(rename = "conversationId")]
        conversation_id: String,
    },
}

impl ConversationRef {
    fn id(self) -> String {
        match self {
            ConversationRef::Id(id)
            | ConversationRef::Object {
                conversation_id: id,
            } => id,
        }
    }
}

/// `send-message`: `{conversationId, message}`, the message as text or as
/// `{content}`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SendMessage {
    conversation_id: String,
    message: SocketMessage,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum SocketMessage {
    Text(String),
    Object {
        #[serde(alias = "message", alias = "text")]
        content: String,
    },
}

impl SocketMessage {
    fn content(&self) -> &str {
        match self {
            SocketMessage::Text(t) | SocketMessage::Object { content: t } => t,
        }
    }
}

async fn owns_conversation(state: &AppState, caller: &Caller, id: &str) -> bool {
    if !aigentable_platform::ids::looks_like_id(id) {
        return false;
    }
    state
        .platform
        .db
        .unscoped::<bson::Document>(aigentable_platform::usage::collections::CONVERSATIONS)
        .find_one(bson::doc! { "_id": id, "tenantId": caller.tenant_id.as_str() })
        .await
        .ok()
        .flatten()
        .is_some()
}

/// The caller as stored now. When the token, the account or the tenant no
/// longer allows the session, the socket is told why and disconnected.
async fn recheck(socket: &SocketRef, state: &AppState) -> Option<Caller> {
    let credentials = socket.extensions.get::<Credentials>()?;
    match authenticate_token(
        state,
        &credentials.token,
        credentials.tenant.as_deref(),
        false,
    )
    .await
    {
        Ok(caller) => {
            socket.extensions.insert(caller.clone());
            Some(caller)
        }
        Err(e) => {
            sessions::end(socket.clone(), sessions::reason_of(&e));
            None
        }
    }
}

async fn on_connect(socket: SocketRef, State(state): State<AppState>) {
    let Some(caller) = socket.extensions.get::<Caller>() else {
        socket.disconnect().ok();
        return;
    };
    socket.join(tenant_room(caller.tenant_id.as_str()));
    socket.join(sessions::user_room(caller.user.id.as_str()));
    socket.join(sessions::session_room(&caller.jti));
    let gone = Gone::default();
    socket.extensions.insert(gone.clone());
    sessions::expire_at(socket.clone(), caller.exp, gone);
    socket.join(crate::policy::rooms_for(
        caller.role(),
        caller.tenant_id.as_str(),
        caller.user.id.as_str(),
    ));
    state.metrics.socket_connections.inc();
    tracing::debug!(tenant_id = %caller.tenant_id, user_id = %caller.user.id, ns = socket.ns(), "socket connected");

    socket.on(
        "join-conversation",
        async |s: SocketRef,
               Data(conversation): Data<ConversationRef>,
               State(state): State<AppState>,
               ack: AckSender| {
            let Some(caller) = recheck(&s, &state).await else {
                return;
            };
            let id = conversation.id();
            let reply = if owns_conversation(&state, &caller, &id).await {
                s.join(conversation_room(&id));
                json!({ "ok": true, "conversationId": id })
            } else {
                json!({ "ok": false, "message": "conversation not found" })
            };
            ack.send(&reply).ok();
        },
    );
    socket.on(
        "leave-conversation",
        async |s: SocketRef,
               Data(conversation): Data<ConversationRef>,
               State(state): State<AppState>,
               ack: AckSender| {
            if recheck(&s, &state).await.is_none() {
                return;
            }
            let id = conversation.id();
            s.leave(conversation_room(&id));
            ack.send(&json!({ "ok": true, "conversationId": id })).ok();
        },
    );
    socket.on(
        "send-message",
        async |s: SocketRef,
               TryData(payload): TryData<SendMessage>,
               State(state): State<AppState>,
               ack: AckSender| {
            let Some(caller) = recheck(&s, &state).await else {
                return;
            };
            let reply = match payload {
                Ok(p) => match crate::routes::conversations::send_staff_message(
                    &state,
                    &caller,
                    &p.conversation_id,
                    p.message.content(),
                )
                .await
                {
                    Ok((message, job)) => {
                        json!({ "ok": true, "message": message.view(), "jobId": job.id })
                    }
                    Err(e) => json!({ "ok": false, "message": e.body().message, "code": e.code() }),
                },
                Err(_) => json!({
                    "ok": false,
                    "message": "send-message takes {conversationId, message}",
                    "code": "VALIDATION_ERROR",
                }),
            };
            ack.send(&reply).ok();
        },
    );
    socket.on_disconnect(async |s: SocketRef, State(state): State<AppState>| {
        if let Some(gone) = s.extensions.get::<Gone>() {
            gone.signal();
        }
        state.metrics.socket_connections.dec();
    });
}

/// Each websocket's read buffer, allocated when it opens. What clients
/// send is mostly pings and small events; engineioxide's default of 4 KiB
/// was a tenth of a socket's memory (heaptrack, 2,000 sockets). A larger
/// message is read in several chunks.
const WS_READ_BUFFER_BYTES: usize = 1024;

/// Gives the request's header values and URI allocations of their own
/// before the Socket.IO layer sees it. hyper parses them as slices of the
/// connection's read buffer (8 KiB or more), and engine.io keeps the
/// handshake request's parts for the whole session (the long-polling
/// request's in the session, the upgrade request's in the websocket task):
/// two such buffers stayed alive per socket, 16 KiB of the 38 KiB each
/// socket cost (heaptrack, 2,000 sockets).
#[salvo::handler]
pub async fn own_request_head(req: &mut salvo::Request) {
    let mut uri = std::mem::take(req.uri_mut());
    own_head(req.headers_mut(), &mut uri);
    *req.uri_mut() = uri;
}

/// Replaces every header value and the URI by a copy that shares no buffer.
/// A value that does not copy (none does: hyper validated it) is kept.
fn own_head(headers: &mut salvo::http::HeaderMap, uri: &mut salvo::http::uri::Uri) {
    for value in headers.values_mut() {
        if let Ok(mut copy) = salvo::http::HeaderValue::from_bytes(value.as_bytes()) {
            copy.set_sensitive(value.is_sensitive());
            *value = copy;
        }
    }
    if let Ok(copy) = salvo::http::uri::Uri::try_from(uri.to_string()) {
        *uri = copy;
    }
}

/// The Socket.IO layer to mount on `/socket.io`, and the handle to emit with.
pub fn layer(state: AppState) -> (SocketIoLayer, SocketIo) {
    // No event takes binary attachments; the bound is for a client that
    // sends them anyway.
    let parser = socketioxide::ParserConfig::common()
        .max_incoming_binary_buf_size(MAX_CLIENT_MESSAGE_BYTES)
        .max_incoming_binaries(16);
    let (layer, io) = SocketIo::builder()
        .with_state(state)
        .with_parser(parser)
        .ping_interval(Duration::from_secs(25))
        .max_payload(MAX_CLIENT_MESSAGE_BYTES as u64)
        .ws_max_message_size(MAX_CLIENT_MESSAGE_BYTES)
        .ws_max_frame_size(MAX_CLIENT_MESSAGE_BYTES)
        .ws_read_buffer_size(WS_READ_BUFFER_BYTES)
        .build_layer();
    for ns in NAMESPACES {
        io.ns(ns, on_connect.with(authenticate));
    }
    crate::realtime_widget::register(&io);
    (layer, io)
}

/// The dashboard rooms of an event other than a job's: its tenant's room,
/// except for a reply's text while it is written (for those watching its
/// conversation, not for every screen of the tenant), and its
/// conversation's room.
fn event_rooms(event: &str, tenant_id: &str, conversation_id: Option<&str>) -> Vec<String> {
    let mut rooms = Vec::with_capacity(2);
    if event != aigentable_jobs::events::names::MESSAGE_DELTA {
        rooms.push(tenant_room(tenant_id));
    }
    if let Some(c) = conversation_id {
        rooms.push(conversation_room(c));
    }
    rooms
}

/// Emits one event to every namespace's tenant room (and conversation room).
/// An event with no room at all (a reply's text without its conversation)
/// goes nowhere: emitting to no room would reach every socket of the
/// namespace.
pub async fn relay(io: &SocketIo, event: &RealtimeEvent) {
    let rooms = if event.event == aigentable_jobs::events::names::JOB_UPDATED {
        // Jobs only reach those who may see them over REST.
        let mut rooms = crate::policy::job_event_rooms(
            &event.tenant_id,
            event.data["type"].as_str().unwrap_or_default(),
            event.data["createdBy"].as_str(),
        );
        rooms.extend(event.conversation_id.as_deref().map(conversation_room));
        rooms
    } else {
        event_rooms(
            &event.event,
            &event.tenant_id,
            event.conversation_id.as_deref(),
        )
    };
    if rooms.is_empty() {
        return;
    }
    for ns in NAMESPACES {
        if let Some(op) = io.of(ns)
            && let Err(e) = op.to(rooms.clone()).emit(&event.event, &event.data).await
        {
            tracing::warn!(error = %e, event = %event.event, "could not emit realtime event");
        }
    }
    crate::realtime_widget::relay(io, event).await;
}

/// What the relay reads of an event before deciding whether anyone here
/// waits for it: every replica receives every tenant's events, so one whose
/// rooms hold none of this process's sockets is dropped before its data is
/// read.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct EventHead<'a> {
    #[serde(borrow)]
    tenant_id: std::borrow::Cow<'a, str>,
    #[serde(borrow, default)]
    conversation_id: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    event: std::borrow::Cow<'a, str>,
}

/// Whether a socket of this process is in a room [`relay`] (or the widget's
/// relay, which uses the conversation's room) would emit `head`'s event to.
/// Job events are always read: their rooms come from their data, and they
/// are few.
fn has_audience(io: &SocketIo, head: &EventHead<'_>) -> bool {
    if head.event == aigentable_jobs::events::names::JOB_UPDATED {
        return true;
    }
    let rooms = event_rooms(
        &head.event,
        &head.tenant_id,
        head.conversation_id.as_deref(),
    );
    !rooms.is_empty()
        && NAMESPACES
            .iter()
            .chain(std::iter::once(&crate::realtime_widget::NAMESPACE))
            .filter_map(|ns| io.of(*ns))
            .any(|op| !op.within(rooms.clone()).sockets().is_empty())
}

/// Subscribes to the workers' events and to session revocations on Redis and
/// relays them, reconnecting with backoff when Redis goes away. `relayed`
/// counts the events by outcome (`relayed`, `no_audience`, `malformed`).
pub async fn run_relay(
    io: SocketIo,
    redis_url: String,
    namespace: String,
    relayed: prometheus::IntCounterVec,
) {
    let mut backoff = Duration::from_millis(200);
    loop {
        match subscribe_and_relay(&io, &redis_url, &namespace, &relayed).await {
            Ok(()) => tracing::warn!("realtime subscription ended, resubscribing"),
            Err(e) => tracing::warn!(error = %e, "realtime subscription failed, retrying"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

async fn subscribe_and_relay(
    io: &SocketIo,
    redis_url: &str,
    namespace: &str,
    relayed: &prometheus::IntCounterVec,
) -> redis::RedisResult<()> {
    let [sent, no_audience, malformed] =
        ["relayed", "no_audience", "malformed"].map(|o| relayed.with_label_values(&[o]));
    let client = redis::Client::open(redis_url)?;
    let mut pubsub = client.get_async_pubsub().await?;
    let revocations = sessions_channel(namespace);
    pubsub.subscribe(channel(namespace)).await?;
    pubsub.subscribe(&revocations).await?;
    tracing::info!("relaying realtime events and session revocations");
    let mut messages = pubsub.on_message();
    while let Some(msg) = messages.next().await {
        if msg.get_channel_name() == revocations {
            match msg
                .get_payload::<String>()
                .ok()
                .and_then(|p| serde_json::from_str::<SessionRevocation>(&p).ok())
            {
                Some(revocation) => sessions::apply(io, &revocation),
                None => tracing::warn!("malformed session revocation"),
            }
            continue;
        }
        // Read in place: most events on a busy replica go no further than
        // their head.
        let payload = msg.get_payload_bytes();
        let read = match serde_json::from_slice::<EventHead<'_>>(payload) {
            Ok(head) if !has_audience(io, &head) => {
                no_audience.inc();
                continue;
            }
            head => head.and_then(|_| serde_json::from_slice::<RealtimeEvent>(payload)),
        };
        match read {
            Ok(event) => {
                relay(io, &event).await;
                sent.inc();
            }
            Err(e) => {
                tracing::warn!(error = %e, "malformed realtime event");
                malformed.inc();
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use salvo::http::uri::Uri;
    use salvo::http::{HeaderMap, HeaderValue};
    use salvo::hyper::body::Bytes;

    use super::own_head;

    #[test]
    fn the_head_kept_for_a_session_no_longer_holds_the_read_buffer() {
        // As hyper leaves them: slices of one connection buffer.
        let buffer =
            Bytes::from(b"/socket.io/?EIO=4&transport=websocket&sid=abc websocket secret".to_vec());
        let mut uri = Uri::from_maybe_shared(buffer.slice(0..45)).expect("uri");
        let mut headers = HeaderMap::new();
        headers.insert(
            "upgrade",
            HeaderValue::from_maybe_shared(buffer.slice(46..55)).expect("value"),
        );
        let mut secret = HeaderValue::from_maybe_shared(buffer.slice(56..62)).expect("value");
        secret.set_sensitive(true);
        headers.insert("authorization", secret);
        assert!(!buffer.is_unique());

        own_head(&mut headers, &mut uri);

        assert!(
            buffer.is_unique(),
            "a header value or the uri still holds the buffer"
        );
        assert_eq!(uri, "/socket.io/?EIO=4&transport=websocket&sid=abc");
        assert_eq!(uri.query(), Some("EIO=4&transport=websocket&sid=abc"));
        assert_eq!(headers["upgrade"], "websocket");
        assert_eq!(headers["authorization"], "secret");
        assert!(headers["authorization"].is_sensitive());
    }
}
