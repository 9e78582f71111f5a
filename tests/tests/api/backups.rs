//! Backups restored (issue 11): a backup round trip through the api and the
//! operator's command, a dry run that writes nothing, and a damaged backup
//! refused before anything is written.

use std::collections::BTreeMap;

use bson::{Bson, Document, doc};
use futures::TryStreamExt;
use reqwest::StatusCode;
use serde_json::json;
use sha2::{Digest, Sha256};

use aigentable_platform::backups::{self, BackupError, KEPT_ON_RESTORE, OUTBOX};
use aigentable_tests::{Session, TestApp, spawn_app};

/// Per collection (but those a restore leaves alone): its document count
/// and a SHA-256 over its documents in `_id` order.
async fn fingerprint(app: &TestApp) -> BTreeMap<String, (u64, String)> {
    let db = app.platform.db.database();
    let mut out = BTreeMap::new();
    for name in db.list_collection_names().await.expect("collections") {
        if KEPT_ON_RESTORE.contains(&name.as_str()) || name == OUTBOX {
            continue;
        }
        let docs: Vec<Document> = db
            .collection::<Document>(&name)
            .find(doc! {})
            .sort(doc! { "_id": 1 })
            .await
            .expect("find")
            .try_collect()
            .await
            .expect("documents");
        let mut hash = Sha256::new();
        for d in &docs {
            hash.update(
                Bson::Document(d.clone())
                    .into_canonical_extjson()
                    .to_string(),
            );
        }
        out.insert(name, (docs.len() as u64, hex::encode(hash.finalize())));
    }
    out
}

async fn backup(app: &TestApp, root: &Session) -> String {
    let r = app.post("/api/v1/system/backups", root, json!({})).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
    let job = r.body["jobId"].as_str().unwrap_or_default().to_owned();
    let done = app.job_finished(root, &job).await;
    assert_eq!(done["status"], "SUCCEEDED", "{done}");
    r.body["backup"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

async fn restore(app: &TestApp, root: &Session, id: &str, dry_run: bool) -> serde_json::Value {
    let r = app
        .post(
            &format!("/api/v1/system/backups/{id}/restore"),
            root,
            json!({ "dryRun": dry_run }),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
    assert_eq!(r.body["dryRun"], dry_run);
    let job = r.body["jobId"].as_str().unwrap_or_default().to_owned();
    let done = app.job_finished(root, &job).await;
    assert_eq!(done["status"], "SUCCEEDED", "{done}");
    done["result"].clone()
}

#[tokio::test]
async fn a_backup_comes_back_exactly_through_the_api_and_the_command() {
    let app = spawn_app().await;
    let admin = app.register("Acme").await;
    let root = app.super_admin(&admin).await;
    let agent = app
        .post(
            "/api/v1/agents",
            &admin,
            json!({"name": "Support bot", "description": "answers"}),
        )
        .await;
    assert_eq!(agent.status, StatusCode::CREATED, "{:?}", agent.body);
    let agent_id = agent.body["id"].as_str().unwrap_or_default().to_owned();
    // A stored file: GridFS is part of the backup.
    let document = app
        .upload_text(&admin, "faq.txt", "Refunds take five days.", None)
        .await;
    app.wait_document_ready(&admin, &document).await;

    let before = fingerprint(&app).await;
    assert!(before.contains_key("document_files.chunks"), "{before:?}");
    let id = backup(&app, &root).await;

    // Refused: not a backup, or not a finished one; not for tenant admins.
    let r = app
        .post(
            "/api/v1/system/backups/0123456789abcdef01234567/restore",
            &root,
            json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{:?}", r.body);
    let r = app
        .post(
            &format!("/api/v1/system/backups/{id}/restore"),
            &admin,
            json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{:?}", r.body);

    // Changes after the backup.
    let r = app
        .delete(&format!("/api/v1/agents/{agent_id}"), &admin)
        .await;
    assert!(r.status.is_success(), "{:?}", r.body);
    assert_ne!(fingerprint(&app).await, before);

    // A dry run counts and writes nothing.
    let changed = fingerprint(&app).await;
    let dry = restore(&app, &root, &id, true).await;
    let agents = dry["collections"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "agents"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(agents["documents"], 1, "{dry}");
    assert_eq!(agents["current"], 0, "{dry}");
    assert_eq!(fingerprint(&app).await, changed, "a dry run writes nothing");

    // Through the api: the agent is back, every collection as backed up.
    restore(&app, &root, &id, false).await;
    assert_eq!(fingerprint(&app).await, before);
    let r = app.get(&format!("/api/v1/agents/{agent_id}"), &admin).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);

    // The operator's command on a wiped database (`api restore-backup`).
    let db = app.platform.db.database();
    for name in before.keys() {
        db.collection::<Document>(name)
            .delete_many(doc! {})
            .await
            .expect("wiped");
    }
    let dir = backups::dir(&app.platform.config.data_dir, &id).expect("dir");
    let report = backups::restore(&app.platform.db, &dir, &id, false)
        .await
        .expect("restored");
    assert!(report.kept.contains(&"jobs".to_owned()), "{report:?}");
    assert_eq!(
        fingerprint(&app).await,
        before,
        "every collection as it was"
    );
    app.cleanup().await;
}

#[tokio::test]
async fn a_damaged_backup_is_refused_before_anything_is_written() {
    let app = spawn_app().await;
    let admin = app.register("Acme").await;
    let root = app.super_admin(&admin).await;
    let id = backup(&app, &root).await;
    let dir = backups::dir(&app.platform.config.data_dir, &id).expect("dir");
    let users = dir.join("users.jsonl");
    let text = std::fs::read_to_string(&users).expect("users dumped");
    std::fs::write(&users, text.replace("admin-", "evil-")).expect("tampered");
    let before = fingerprint(&app).await;
    let err = backups::restore(&app.platform.db, &dir, &id, false)
        .await
        .expect_err("a tampered backup is refused");
    assert!(
        matches!(&err, BackupError::Damaged { reason, .. } if reason.contains("users.jsonl")),
        "{err}"
    );
    assert_eq!(fingerprint(&app).await, before, "nothing was written");
    app.cleanup().await;
}
