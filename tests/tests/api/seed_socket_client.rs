//! The seed frontend's own Socket.IO client (socket.io-client v4 on node),
//! connecting as its `useSocket` hook does. `deploy/test.sh` installs node
//! and the pinned client (`tests/socketio-client`).

use std::path::PathBuf;

use aigentable_tests::spawn_app;
use serde_json::Value;

#[tokio::test]
async fn the_seed_socket_io_client_connects_receives_events_and_is_refused_when_it_should() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("socketio-client");
    assert!(
        dir.join("node_modules/socket.io-client").exists(),
        "socket.io-client is not installed: run ./deploy/test.sh (it runs `npm ci` in tests/socketio-client)"
    );
    let app = spawn_app().await;
    let s = app.register("Seed").await;
    let output = tokio::process::Command::new("node")
        .arg(dir.join("check.mjs"))
        .args([&app.base, &s.token, &s.tenant_id, &s.email])
        .output()
        .await
        .expect("node runs (deploy/test.sh installs it)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "node failed: {stdout} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let results: Value = serde_json::from_str(stdout.trim()).expect("check.mjs prints JSON");
    assert_eq!(results["apiV1Namespace"], "connected", "{results}");
    assert_eq!(results["rootNamespace"], "connected", "{results}");
    assert!(
        results["jobEvents"]
            .as_array()
            .is_some_and(|e| e.iter().any(|v| v == "send_email:SUCCEEDED")),
        "job-updated reaches the client: {results}"
    );
    for refused in ["badToken", "foreignTenant", "noAuth"] {
        assert!(
            results[refused]
                .as_str()
                .is_some_and(|r| r.starts_with("refused: ")),
            "{refused}: {results}"
        );
    }
    assert_eq!(results["badToken"], "refused: invalid token");
    app.cleanup().await;
}
