//! Socket.IO namespace `/widget`: website visitors get their conversation's
//! messages live.
//!
//! `io(URL + "/widget", { auth: { token } })` with the visitor token from
//! `POST /widget/{publicKey}/sessions`. After connecting (and after the
//! first message, when the conversation is created), the widget emits
//! `join`; the socket then joins `conversation:{id}` of the visitor's own
//! conversation. The same Redis events the staff sockets get are relayed
//! here, reduced to what a visitor may see: `new-message` and
//! `message-updated` with the visitor's message view, and `message-delta`
//! (`{conversationId, messageId, delta, index}`) while the bot's reply is
//! written.

use serde::Deserialize;
use serde_json::json;
use socketioxide::SocketIo;
use socketioxide::extract::{AckSender, SocketRef, State, TryData};
use socketioxide::handler::ConnectHandler;

use aigentable_jobs::events::{RealtimeEvent, names};
use aigentable_platform::channels::widget as visitor;
use aigentable_platform::model::channel::COLLECTION as CHANNELS;
use aigentable_platform::model::{Channel, MessageStatus, SenderType};

use crate::realtime::conversation_room;
use crate::realtime_sessions::{self as sessions, Gone};
use crate::routes::widget::{VisitorMessage, visitor_conversation, visitor_view_of};
use crate::state::AppState;

pub const NAMESPACE: &str = "/widget";

#[derive(Debug, Default, Deserialize)]
struct AuthPayload {
    token: Option<String>,
}

#[derive(Debug, Clone)]
struct Visitor {
    channel_id: String,
    visitor_id: String,
    token: String,
    exp: i64,
}

#[derive(Debug)]
struct Refused(&'static str);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

async fn authenticate(
    socket: SocketRef,
    TryData(auth): TryData<AuthPayload>,
    State(state): State<AppState>,
) -> Result<(), Refused> {
    let token = auth.unwrap_or_default().token.unwrap_or_default();
    let claims = visitor::verify(state.platform.config.jwt.secret.expose(), &token)
        .ok_or(Refused("visitor session missing or expired"))?;
    if active_channel(&state, &claims.c).await.is_none() {
        return Err(Refused("this chat is not available"));
    }
    socket.extensions.insert(Visitor {
        channel_id: claims.c,
        visitor_id: claims.v,
        token,
        exp: claims.e,
    });
    Ok(())
}

async fn active_channel(state: &AppState, channel_id: &str) -> Option<Channel> {
    state
        .platform
        .db
        .unscoped::<Channel>(CHANNELS)
        .find_one(bson::doc! { "_id": channel_id })
        .await
        .ok()
        .flatten()
        .filter(|c| c.is_active)
}

/// The visitor, while the token is valid and the channel active; otherwise
/// the socket is told why and disconnected.
async fn recheck(socket: &SocketRef, state: &AppState) -> Option<(Visitor, Channel)> {
    let v = socket.extensions.get::<Visitor>()?;
    if visitor::verify(state.platform.config.jwt.secret.expose(), &v.token).is_none() {
        sessions::end(
            socket.clone(),
            aigentable_platform::auth::revocation::reasons::EXPIRED,
        );
        return None;
    }
    let Some(channel) = active_channel(state, &v.channel_id).await else {
        sessions::end(
            socket.clone(),
            aigentable_platform::auth::revocation::reasons::CHANNEL_DISABLED,
        );
        return None;
    };
    Some((v, channel))
}

async fn on_connect(socket: SocketRef) {
    let Some(visitor) = socket.extensions.get::<Visitor>() else {
        socket.disconnect().ok();
        return;
    };
    socket.join(sessions::channel_room(&visitor.channel_id));
    let gone = Gone::default();
    socket.extensions.insert(gone.clone());
    sessions::expire_at(socket.clone(), visitor.exp, gone);
    socket.on_disconnect(async |s: SocketRef| {
        if let Some(gone) = s.extensions.get::<Gone>() {
            gone.signal();
        }
    });
    socket.on(
        "join",
        async |s: SocketRef, State(state): State<AppState>, ack: AckSender| {
            let Some((v, channel)) = recheck(&s, &state).await else {
                return;
            };
            let conversation = visitor_conversation(&state, &channel, &v.visitor_id)
                .await
                .ok()
                .flatten();
            let reply = match conversation {
                Some(conv) => {
                    s.join(conversation_room(&conv.id));
                    json!({ "ok": true, "conversationId": conv.id })
                }
                None => json!({ "ok": false, "message": "no conversation yet" }),
            };
            ack.send(&reply).ok();
        },
    );
}

/// Adds the `/widget` namespace to the gateway.
pub fn register(io: &SocketIo) {
    io.ns(NAMESPACE, on_connect.with(authenticate));
}

/// Relays a conversation event to the visitors of that conversation.
pub async fn relay(io: &SocketIo, event: &RealtimeEvent) {
    let Some(conversation_id) = &event.conversation_id else {
        return;
    };
    if event.event == names::MESSAGE_DELTA {
        // The bot's words as they are written: the visitor reads them all
        // in the message that follows anyway.
        if let Some(op) = io.of(NAMESPACE)
            && let Err(e) = op
                .to(conversation_room(conversation_id))
                .emit(&event.event, &event.data)
                .await
        {
            tracing::debug!(error = %e, "could not emit widget event");
        }
        return;
    }
    if event.event != names::NEW_MESSAGE && event.event != names::MESSAGE_UPDATED {
        return;
    }
    // The event carries `Message::view()`; visitors get their own view.
    let Some(view) = visitor_view_from_event(&event.data) else {
        return;
    };
    if let Some(op) = io.of(NAMESPACE)
        && let Err(e) = op
            .to(conversation_room(conversation_id))
            .emit(&event.event, &view)
            .await
    {
        tracing::debug!(error = %e, "could not emit widget event");
    }
}

/// The visitor's view of a message from the `Message::view()` JSON.
fn visitor_view_from_event(data: &serde_json::Value) -> Option<VisitorMessage> {
    let text = |k: &str| data.get(k).and_then(|v| v.as_str());
    let created = chrono::DateTime::parse_from_rfc3339(text("createdAt")?)
        .ok()?
        .with_timezone(&chrono::Utc);
    visitor_view_of(
        text("id")?,
        serde_json::from_value::<SenderType>(data.get("senderType")?.clone()).ok()?,
        serde_json::from_value::<MessageStatus>(data.get("status")?.clone()).ok()?,
        text("content").unwrap_or_default(),
        created,
    )
}
