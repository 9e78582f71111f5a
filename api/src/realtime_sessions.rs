//! Live sessions follow the account: a socket is disconnected, after a
//! `session-revoked` event naming the reason, when its token is logged out,
//! its user's password, role or status changes, the user is deleted, the
//! tenant is suspended, the widget's channel is disabled, or the token
//! expires.
//!
//! Revocations are published on Redis (`platform::auth::revocation`) and
//! every api replica disconnects its own matching sockets, found through the
//! rooms each socket joins on connect: `session:{jti}`, `user:{id}`,
//! `tenant:{id}` and, for widget visitors, `channel:{id}`. Independently,
//! every socket action re-checks the caller, so a lost broadcast only
//! delays the disconnect until the socket next acts.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use socketioxide::SocketIo;
use socketioxide::extract::SocketRef;
use tokio::sync::Notify;

use aigentable_platform::auth::revocation::{SessionRevocation, SessionScope, reasons};
use aigentable_platform::domain::Role;

use crate::guard::Caller;

/// The event a client receives just before the server disconnects it.
pub const SESSION_REVOKED: &str = "session-revoked";

pub fn session_room(jti: &str) -> String {
    format!("session:{jti}")
}

pub fn user_room(user_id: &str) -> String {
    format!("user:{user_id}")
}

pub fn channel_room(channel_id: &str) -> String {
    format!("channel:{channel_id}")
}

/// Wakes a socket's expiry timer when the socket goes away, so that the timer
/// does not keep it alive until the token would have expired.
#[derive(Debug, Clone, Default)]
pub struct Gone(Arc<Notify>);

impl Gone {
    /// Called from the socket's disconnect handler. `notify_one` keeps a
    /// permit, so a timer that starts waiting later still sees it.
    pub fn signal(&self) {
        self.0.notify_one();
    }
}

fn message_for(reason: &str) -> &'static str {
    match reason {
        reasons::LOGGED_OUT => "this session has been logged out",
        reasons::PASSWORD_CHANGED => "the password changed; please log in again",
        reasons::EMAIL_CHANGED => "the email changed; please log in again",
        reasons::ACCOUNT_DEACTIVATED => "this account is no longer active",
        reasons::ACCOUNT_DELETED => "this account no longer exists",
        reasons::ROLE_CHANGED => "your role changed; please log in again",
        reasons::TENANT_SUSPENDED => "this workspace is suspended; contact support",
        reasons::CHANNEL_DISABLED => "this chat is no longer available",
        reasons::EXPIRED => "the session expired; please log in again",
        _ => "this session is no longer valid",
    }
}

/// Tells the client why and disconnects it.
pub fn end(socket: SocketRef, reason: &str) {
    if !socket.connected() {
        return;
    }
    let payload = json!({ "reason": reason, "message": message_for(reason) });
    if let Err(e) = socket.emit(SESSION_REVOKED, &payload) {
        tracing::debug!(error = %e, "session-revoked not delivered");
    }
    tracing::info!(sid = %socket.id, ns = socket.ns(), reason, "socket session revoked");
    if let Err(e) = socket.disconnect() {
        tracing::debug!(error = %e, "socket already gone");
    }
}

/// The reason to give for an authentication failure found on re-check.
pub fn reason_of(error: &crate::error::ApiError) -> &'static str {
    let message = error.body().message;
    if message.contains("logged out") {
        reasons::LOGGED_OUT
    } else if message.contains("expired") {
        reasons::EXPIRED
    } else if message.contains("no longer exists") {
        reasons::ACCOUNT_DELETED
    } else if message.contains("not active") {
        reasons::ACCOUNT_DEACTIVATED
    } else if message.contains("suspended") {
        reasons::TENANT_SUSPENDED
    } else {
        reasons::REVOKED
    }
}

/// Ends the session when `exp` (Unix seconds) passes, unless the socket
/// disconnects first.
pub fn expire_at(socket: SocketRef, exp: i64, gone: Gone) {
    let left = exp.saturating_sub(chrono::Utc::now().timestamp());
    let wait = Duration::from_secs(u64::try_from(left).unwrap_or(0));
    tokio::spawn(async move {
        tokio::select! {
            () = tokio::time::sleep(wait) => end(socket, reasons::EXPIRED),
            () = gone.0.notified() => {}
        }
    });
}

/// Disconnects this replica's sockets that a revocation names.
pub fn apply(io: &SocketIo, revocation: &SessionRevocation) {
    let reason = revocation.reason.as_str();
    let (namespaces, room): (Vec<&str>, String) = match &revocation.scope {
        SessionScope::Token { jti } => (crate::realtime::NAMESPACES.to_vec(), session_room(jti)),
        SessionScope::User { user_id } => {
            (crate::realtime::NAMESPACES.to_vec(), user_room(user_id))
        }
        SessionScope::Tenant { tenant_id } => (
            crate::realtime::NAMESPACES.to_vec(),
            crate::realtime::tenant_room(tenant_id),
        ),
        SessionScope::Channel { channel_id } => (
            vec![crate::realtime_widget::NAMESPACE],
            channel_room(channel_id),
        ),
    };
    let tenant_wide = matches!(revocation.scope, SessionScope::Tenant { .. });
    for ns in namespaces {
        let Some(op) = io.of(ns) else {
            continue;
        };
        for socket in op.local().within(room.clone()).sockets() {
            // Platform administrators keep working on a suspended tenant.
            if tenant_wide
                && socket
                    .extensions
                    .get::<Caller>()
                    .is_some_and(|c| c.user.role == Role::SuperAdmin)
            {
                continue;
            }
            end(socket, reason);
        }
    }
}

/// Ends the live sessions of `scope` on every api replica.
pub async fn revoke(state: &crate::state::AppState, scope: SessionScope, reason: &str) {
    aigentable_platform::auth::revocation::announce(&state.platform.kv, scope, reason).await;
}

/// Widget visitors of a deleted or deactivated channel lose their sockets.
pub async fn revoke_channel(state: &crate::state::AppState, channel_id: &str) {
    revoke(
        state,
        SessionScope::Channel {
            channel_id: channel_id.to_owned(),
        },
        reasons::CHANNEL_DISABLED,
    )
    .await;
}
