//! Inserts of one moment share a command (`platform::group_commit`), and
//! each document keeps the outcome a lone insert would have had.

use bson::{Document, doc};
use mongodb::options::IndexOptions;

use aigentable_platform::db::DbError;
use aigentable_platform::db::command_log::{self, Recording};
use aigentable_tests::spawn_app_without_workers;

const PROBE: &str = "group_commit_probe";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inserts_of_one_moment_share_a_command_and_keep_their_own_outcome() {
    command_log::enable();
    let app = spawn_app_without_workers(&[]).await;
    let db = &app.platform.db;
    db.ensure_index(
        PROBE,
        doc! { "key": 1 },
        Some(IndexOptions::builder().unique(true).build()),
    )
    .await
    .expect("a unique index");
    let recording = Recording::start(db.database().name());

    // 200 documents at once; every tenth repeats the key of the one before.
    let docs: Vec<Document> = (0..200)
        .map(|i| {
            let key = if i % 10 == 9 { i - 1 } else { i };
            doc! { "_id": format!("d{i}"), "key": format!("k{key}") }
        })
        .collect();
    let outcomes =
        futures::future::join_all(docs.iter().map(|d| db.insert_grouped(PROBE, d))).await;

    for pair in (0..200).step_by(10) {
        let (first, second) = (&outcomes[pair + 8], &outcomes[pair + 9]);
        let refused = [first, second]
            .iter()
            .filter(|o| matches!(o, Err(DbError::Duplicate)))
            .count();
        assert!(
            refused == 1 && (first.is_ok() || second.is_ok()),
            "one of documents {} and {} stored, the other refused as a duplicate: {first:?}, {second:?}",
            pair + 8,
            pair + 9
        );
    }
    for (i, outcome) in outcomes.iter().enumerate() {
        if i % 10 < 8 {
            assert!(outcome.is_ok(), "document {i}: {outcome:?}");
        }
    }
    let stored = db
        .unscoped::<Document>(PROBE)
        .count_documents(doc! {})
        .await
        .expect("a count");
    assert_eq!(stored, 180, "every document but the 20 repeats");

    let inserts = recording
        .take()
        .into_iter()
        .filter(|c| c.name == "insert" && c.collection == PROBE)
        .count();
    assert!(
        (1..=40).contains(&inserts),
        "200 documents queued at once left in {inserts} insert commands"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_insert_reports_its_own_duplicate() {
    let app = spawn_app_without_workers(&[]).await;
    let db = &app.platform.db;
    let one = doc! { "_id": "alone" };
    db.insert_grouped(PROBE, &one).await.expect("stored");
    assert!(
        matches!(
            db.insert_grouped(PROBE, &one).await,
            Err(DbError::Duplicate)
        ),
        "the same _id again is a duplicate"
    );
}

/// Documents queued together (a message's fact and its reply's) leave in
/// one command every time, whatever the sender task's timing, each with
/// its own outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_queued_together_leave_in_one_command() {
    command_log::enable();
    let app = spawn_app_without_workers(&[]).await;
    let db = &app.platform.db;
    let recording = Recording::start(db.database().name());
    for round in 0..20 {
        let pair = [
            doc! { "_id": format!("pair{round}a") },
            doc! { "_id": format!("pair{round}b") },
        ];
        let outcomes = db.insert_all_grouped(PROBE, &pair).await;
        assert!(
            outcomes.iter().all(Result::is_ok),
            "round {round}: {outcomes:?}"
        );
    }
    let again = db
        .insert_all_grouped(PROBE, &[doc! { "_id": "pair0a" }, doc! { "_id": "fresh" }])
        .await;
    assert!(
        matches!(again.as_slice(), [Err(DbError::Duplicate), Ok(())]),
        "the repeat refused, the new one stored: {again:?}"
    );
    let inserts = recording
        .take()
        .into_iter()
        .filter(|c| c.name == "insert" && c.collection == PROBE)
        .count();
    assert_eq!(inserts, 21, "one command per pair");
}
