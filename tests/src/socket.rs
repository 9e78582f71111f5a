//! A Socket.IO v4 client for tests: every event it receives lands in a
//! channel as `(event name, payload)`.

use futures::FutureExt;
use rust_socketio::asynchronous::{Client, ClientBuilder};
use rust_socketio::{Event, Payload};
use serde_json::Value;
use tokio::sync::mpsc;

pub struct TestSocket {
    pub client: Client,
    pub events: mpsc::UnboundedReceiver<(String, Value)>,
}

fn first_value(payload: Payload) -> Value {
    match payload {
        Payload::Text(mut values) if !values.is_empty() => values.swap_remove(0),
        #[allow(deprecated)]
        Payload::String(s) => Value::String(s),
        _ => Value::Null,
    }
}

/// An acknowledgement's first argument (its arguments come as one array).
fn first_argument(ack: Value) -> Value {
    match ack {
        Value::Array(mut args) if !args.is_empty() => args.swap_remove(0),
        other => other,
    }
}

/// Connects to `namespace` with the frontend's `auth` payload. Connection
/// errors arrive as an `error` event, a disconnect by the server as `close`.
pub async fn connect(base: &str, namespace: &str, auth: Value) -> TestSocket {
    let (tx, events) = mpsc::unbounded_channel();
    let any_tx = tx.clone();
    let err_tx = tx.clone();
    let close_tx = tx.clone();
    let open_tx = tx.clone();
    let client = ClientBuilder::new(base)
        .namespace(namespace)
        .auth(auth)
        .reconnect(false)
        .on_any(move |event: Event, payload: Payload, _c: Client| {
            let _ = any_tx.send((event.as_str().to_owned(), first_value(payload)));
            async {}.boxed()
        })
        .on("error", move |payload: Payload, _c: Client| {
            let _ = err_tx.send(("error".to_owned(), first_value(payload)));
            async {}.boxed()
        })
        .on(Event::Connect, move |_payload: Payload, _c: Client| {
            let _ = open_tx.send(("connect".to_owned(), Value::Null));
            async {}.boxed()
        })
        .on(Event::Close, move |_payload: Payload, _c: Client| {
            let _ = close_tx.send(("close".to_owned(), Value::Null));
            async {}.boxed()
        })
        .connect()
        .await
        .expect("socket.io transport connects");
    TestSocket { client, events }
}

impl TestSocket {
    /// Waits for the first event named `name`, up to `secs` seconds.
    pub async fn next_named(&mut self, name: &str, secs: u64) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(secs);
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, self.events.recv()).await {
                Ok(Some((event, value))) if event == name => return Some(value),
                Ok(Some(_)) => continue,
                _ => return None,
            }
        }
    }

    /// Joins a conversation's room (`join-conversation`); the server's
    /// acknowledgement, `None` when none came within 10 s.
    pub async fn join_conversation(&self, conversation_id: &str) -> Option<Value> {
        let (tx, mut rx) = mpsc::unbounded_channel();
        self.client
            .emit_with_ack(
                "join-conversation",
                serde_json::json!(conversation_id),
                std::time::Duration::from_secs(10),
                move |payload: Payload, _c: Client| {
                    let _ = tx.send(first_value(payload));
                    async {}.boxed()
                },
            )
            .await
            .expect("join-conversation is sent");
        tokio::time::timeout(std::time::Duration::from_secs(10), rx.recv())
            .await
            .ok()
            .flatten()
            .map(first_argument)
    }

    /// A widget visitor's socket (`/widget`): waits for the namespace, then
    /// emits `join` until the server acknowledges it with the visitor's
    /// conversation (`{ok: true, conversationId}`), up to `tries` times
    /// 200 ms apart (the conversation exists once the first message is
    /// processed); the last acknowledgement otherwise.
    pub async fn join_widget_conversation(&mut self, tries: usize) -> Option<Value> {
        self.next_named("connect", 15).await?;
        let mut last = None;
        for _ in 0..tries.max(1) {
            let (tx, mut rx) = mpsc::unbounded_channel();
            self.client
                .emit_with_ack(
                    "join",
                    serde_json::json!({}),
                    std::time::Duration::from_secs(2),
                    move |payload: Payload, _c: Client| {
                        let _ = tx.send(first_value(payload));
                        async {}.boxed()
                    },
                )
                .await
                .ok()?;
            let ack = tokio::time::timeout(std::time::Duration::from_secs(2), rx.recv())
                .await
                .ok()
                .flatten()
                .map(first_argument);
            if ack.as_ref().is_some_and(|a| a["ok"] == true) {
                return ack;
            }
            last = ack;
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        last
    }

    /// Every event named `name` until one satisfies `last` (included), up
    /// to `secs` seconds in all; `None` if that one never came.
    pub async fn collect_until(
        &mut self,
        name: &str,
        secs: u64,
        last: impl Fn(&Value) -> bool,
    ) -> Option<Vec<Value>> {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(secs);
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, self.events.recv()).await {
                Ok(Some((event, value))) if event == name => {
                    let end = last(&value);
                    seen.push(value);
                    if end {
                        return Some(seen);
                    }
                }
                Ok(Some(_)) => continue,
                _ => return None,
            }
        }
    }

    /// Waits until the server has run its connect handler (rooms joined):
    /// the client's `connect` returns once the transport is up, before the
    /// server has authenticated the socket, so an event emitted in between
    /// would be missed. First the server's namespace `connect` (an event
    /// sent before it would end the connection), then any acknowledgement
    /// of `join-conversation`, which proves the handler ran, since it
    /// registers that listener after the joins; one sent before finds no
    /// listener, so it is asked again.
    pub async fn joined(mut self) -> Self {
        assert!(
            self.next_named("connect", 15).await.is_some(),
            "the server never accepted the socket"
        );
        let (tx, mut rx) = mpsc::unbounded_channel();
        for _ in 0..50 {
            let tx = tx.clone();
            self.client
                .emit_with_ack(
                    "join-conversation",
                    serde_json::json!("000000000000000000000000"),
                    std::time::Duration::from_secs(15),
                    move |payload: Payload, _c: Client| {
                        let _ = tx.send(first_value(payload));
                        async {}.boxed()
                    },
                )
                .await
                .expect("join-conversation is sent");
            let wait = std::time::Duration::from_millis(300);
            if let Ok(Some(_)) = tokio::time::timeout(wait, rx.recv()).await {
                return self;
            }
        }
        panic!("the server never acknowledged the socket's join-conversation");
    }
}
