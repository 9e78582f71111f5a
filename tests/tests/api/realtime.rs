//! The Socket.IO gateway as the seed frontend uses it.

use aigentable_tests::socket::connect;
use aigentable_tests::spawn_app;
use reqwest::{Method, StatusCode};
use serde_json::json;

/// A socket of `session` on `namespace`, once its namespace handshake has
/// had a moment to complete.
async fn session_socket(
    app: &aigentable_tests::TestApp,
    session: &aigentable_tests::Session,
    namespace: &str,
) -> aigentable_tests::socket::TestSocket {
    let socket = connect(
        &app.base,
        namespace,
        json!({ "token": session.token, "tenantId": session.tenant_id }),
    )
    .await
    .joined()
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    socket
}

#[tokio::test]
async fn authenticated_sockets_receive_their_tenants_job_events() {
    let app = spawn_app().await;
    let a = app.register("Alpha").await;
    let b = app.register("Beta").await;
    // The seed passes VITE_API_URL (ending in /api/v1) to io(): that is a namespace.
    let mut sock_a = session_socket(&app, &a, "/api/v1").await;
    let mut sock_b = session_socket(&app, &b, "/").await;

    let r = app
        .request(
            Method::POST,
            "/api/v1/auth/forgot-password",
            None,
            Some(json!({ "email": a.email })),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let event = sock_a
        .next_named("job-updated", 15)
        .await
        .expect("tenant A gets job-updated");
    assert_eq!(event["type"], "send_email");
    assert!(
        event["id"].as_str().is_some_and(|s| s.len() == 24),
        "{event}"
    );
    assert!(
        sock_b.next_named("job-updated", 2).await.is_none(),
        "tenant B never sees tenant A's events"
    );

    // join-conversation refuses ids the tenant does not own.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    sock_a
        .client
        .emit_with_ack(
            "join-conversation",
            json!("65a1b2c3d4e5f6a7b8c9d0e1"),
            std::time::Duration::from_secs(5),
            move |payload: rust_socketio::Payload, _c| {
                let _ = tx.send(format!("{payload:?}"));
                futures::FutureExt::boxed(async {})
            },
        )
        .await
        .expect("emit");
    let ack = tokio::time::timeout(std::time::Duration::from_secs(5), rx.recv()).await;
    assert!(
        ack.ok()
            .flatten()
            .is_some_and(|a| a.contains("conversation not found")),
        "join-conversation is refused for unknown conversations"
    );
    let _ = sock_a.client.disconnect().await;
    let _ = sock_b.client.disconnect().await;
    app.cleanup().await;
}

#[tokio::test]
async fn bad_revoked_or_foreign_credentials_are_refused() {
    let app = spawn_app().await;
    let a = app.register("Alpha").await;
    let b = app.register("Beta").await;

    let mut garbage = connect(
        &app.base,
        "/",
        json!({ "token": "not.a.jwt", "tenantId": a.tenant_id }),
    )
    .await;
    let err = garbage
        .next_named("error", 5)
        .await
        .expect("a bad token gets a connect error");
    assert!(err.to_string().contains("invalid token"), "{err}");

    let mut foreign = connect(
        &app.base,
        "/api/v1",
        json!({ "token": a.token, "tenantId": b.tenant_id }),
    )
    .await;
    let err = foreign
        .next_named("error", 5)
        .await
        .expect("a tenant mismatch is refused");
    assert!(err.to_string().to_lowercase().contains("tenant"), "{err}");

    let r = app.post("/api/v1/auth/logout", &a, json!({})).await;
    assert_eq!(r.status, StatusCode::OK);
    let mut revoked = connect(
        &app.base,
        "/",
        json!({ "token": a.token, "tenantId": a.tenant_id }),
    )
    .await;
    let err = revoked
        .next_named("error", 5)
        .await
        .expect("a logged-out token is refused");
    assert!(err.to_string().contains("logged out"), "{err}");

    let mut missing = connect(&app.base, "/", json!({})).await;
    assert!(
        missing.next_named("error", 5).await.is_some(),
        "no token, no connection"
    );
    app.cleanup().await;
}

#[tokio::test]
async fn document_processing_is_announced_live() {
    let app = spawn_app().await;
    let s = app.register("Alpha").await;
    let mut sock = session_socket(&app, &s, "/api/v1").await;
    app.upload_text(
        &s,
        "hours.txt",
        "Opening hours: nine to five on weekdays.",
        None,
    )
    .await;
    let mut seen = Vec::new();
    while let Some(event) = sock.next_named("document-updated", 15).await {
        let status = event["status"].as_str().unwrap_or_default().to_owned();
        assert_eq!(event["name"], "hours.txt");
        seen.push(status.clone());
        if status == "READY" || status == "FAILED" {
            break;
        }
    }
    assert_eq!(seen.first().map(String::as_str), Some("QUEUED"), "{seen:?}");
    assert!(
        seen.contains(&"PARSING".to_owned()) && seen.contains(&"INDEXING".to_owned()),
        "{seen:?}"
    );
    assert_eq!(seen.last().map(String::as_str), Some("READY"), "{seen:?}");
    let _ = sock.client.disconnect().await;
    app.cleanup().await;
}

/// Engine.io message `4` carrying a socket.io CONNECT to /api/v1 whose
/// token is padded so the whole message is `size` bytes.
fn connect_of_size(size: usize) -> String {
    let head = r#"40/api/v1,{"tenantId":"t","token":""#;
    let tail = r#""}"#;
    let pad = "x".repeat(size - head.len() - tail.len());
    format!("{head}{pad}{tail}")
}

/// A client may send messages up to the api's limit, which it learns at
/// the handshake; one past it closes that connection without being
/// buffered, before anyone is authenticated.
#[tokio::test]
async fn an_oversized_socket_message_closes_only_that_connection() {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    let app = spawn_app().await;
    let limit = aigentable_api::realtime::MAX_CLIENT_MESSAGE_BYTES;
    let url = format!("ws://{}/socket.io/?EIO=4&transport=websocket", app.addr);
    let next_text = async |ws: &mut tokio_tungstenite::WebSocketStream<_>| loop {
        let frame = tokio::time::timeout(std::time::Duration::from_secs(5), ws.next())
            .await
            .expect("the api answers within 5 s");
        match frame {
            // Engine.io pings ("2") are not answers.
            Some(Ok(Message::Text(t))) if t.as_str() != "2" => break Some(t.to_string()),
            Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break None,
            Some(Ok(_)) => {}
        }
    };

    let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .expect("websocket opens");
    let open = next_text(&mut ws).await.expect("engine.io open packet");
    assert!(
        open.starts_with('0') && open.contains(&format!("\"maxPayload\":{limit}")),
        "the handshake tells the client the limit: {open}"
    );
    let at_limit = connect_of_size(limit);
    assert_eq!(at_limit.len(), limit);
    ws.send(Message::text(at_limit)).await.expect("send");
    let answer = next_text(&mut ws)
        .await
        .expect("a message at the limit is read and answered");
    assert!(
        answer.starts_with("44/api/v1,") && answer.contains("invalid token"),
        "the padded token is refused as a token: {answer}"
    );

    let (mut other, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .expect("a second websocket opens");
    next_text(&mut other).await.expect("engine.io open packet");

    ws.send(Message::text(connect_of_size(limit + 1)))
        .await
        .expect("send");
    assert_eq!(
        next_text(&mut ws).await,
        None,
        "one byte over the limit closes the connection"
    );
    // The other connection is untouched.
    other
        .send(Message::text(connect_of_size(1_000)))
        .await
        .expect("send");
    let answer = next_text(&mut other).await.expect("still served");
    assert!(answer.starts_with("44/api/v1,"), "{answer}");
    app.cleanup().await;
}

/// The same limit on long-polling, where the limit is the POST body.
#[tokio::test]
async fn an_oversized_long_polling_post_is_refused() {
    let app = spawn_app().await;
    let limit = aigentable_api::realtime::MAX_CLIENT_MESSAGE_BYTES;
    let url = format!("{}/socket.io/?EIO=4&transport=polling", app.base);
    let open = app
        .http
        .get(&url)
        .send()
        .await
        .expect("handshake")
        .text()
        .await
        .expect("handshake body");
    let handshake: serde_json::Value =
        serde_json::from_str(open.strip_prefix('0').expect("an open packet")).expect("json");
    assert_eq!(handshake["maxPayload"], json!(limit), "{open}");
    let sid = handshake["sid"].as_str().expect("sid");
    let post = async |body: String| {
        app.http
            .post(format!("{url}&sid={sid}"))
            .header("content-type", "text/plain;charset=UTF-8")
            .body(body)
            .send()
            .await
            .expect("post")
            .status()
    };
    assert_eq!(
        post(connect_of_size(limit)).await,
        StatusCode::OK,
        "at the limit"
    );
    assert_eq!(
        post(connect_of_size(limit + 1)).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "one byte over"
    );
    app.cleanup().await;
}

/// The api's count of realtime events with `outcome`, from `/metrics`.
async fn relay_count(app: &aigentable_tests::TestApp, outcome: &str) -> u64 {
    let (_, text) = crate::metrics::scrape(app, &app.url("/metrics"), None).await;
    let series = format!("aigentable_realtime_events_total{{outcome=\"{outcome}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&series))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Waits until the api has counted at least `want` events with `outcome`
/// (the app's own jobs announce themselves too).
async fn relay_count_reaches(app: &aigentable_tests::TestApp, outcome: &str, want: u64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let now = relay_count(app, outcome).await;
        if now >= want {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{outcome} events: {now}, expected {want}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn an_event_nobody_here_waits_for_is_not_read() {
    use aigentable_jobs::events::{RealtimeEvent, names, publish};
    let app = spawn_app().await;
    let a = app.register("Watched").await;
    let b = app.register("Unwatched").await;
    let mut sock_a = session_socket(&app, &a, "/api/v1").await;
    // Published as the workers publish, with a marker to tell them apart.
    let publish_event =
        async |tenant: &str, name: &str, conversation: Option<&str>, marker: &str| {
            let event = RealtimeEvent {
                tenant_id: tenant.to_owned(),
                conversation_id: conversation.map(str::to_owned),
                event: name.to_owned(),
                data: json!({ "marker": marker }),
            };
            publish(&app.platform.kv, &event).await.expect("publish");
        };
    let relayed = relay_count(&app, "relayed").await;
    let skipped = relay_count(&app, "no_audience").await;

    // Tenant B has no socket on this api: its event is dropped unread.
    publish_event(&b.tenant_id, names::CONVERSATION_UPDATED, None, "b").await;
    relay_count_reaches(&app, "no_audience", skipped + 1).await;
    // A reply's text goes to its conversation's room only, which A's
    // socket has not joined.
    publish_event(
        &a.tenant_id,
        names::MESSAGE_DELTA,
        Some("65a1b2c3d4e5f6a7b8c9d0e1"),
        "delta",
    )
    .await;
    relay_count_reaches(&app, "no_audience", skipped + 2).await;
    // Tenant A's own event reaches its socket.
    publish_event(&a.tenant_id, names::CONVERSATION_UPDATED, None, "a").await;
    let got = sock_a
        .next_named("conversation-updated", 10)
        .await
        .expect("tenant A gets its event");
    assert_eq!(got["marker"], "a", "only A's own event arrives: {got}");
    relay_count_reaches(&app, "relayed", relayed + 1).await;
    assert!(
        sock_a.next_named("message-delta", 1).await.is_none(),
        "a delta of a conversation the socket did not join"
    );

    // Once B's socket is here, B's events are read and relayed too.
    let mut sock_b = session_socket(&app, &b, "/").await;
    publish_event(&b.tenant_id, names::CONVERSATION_UPDATED, None, "b2").await;
    let got = sock_b
        .next_named("conversation-updated", 10)
        .await
        .expect("tenant B gets its event once it has a socket");
    assert_eq!(got["marker"], "b2");
    relay_count_reaches(&app, "relayed", relayed + 2).await;
    let _ = sock_a.client.disconnect().await;
    let _ = sock_b.client.disconnect().await;
    app.cleanup().await;
}
