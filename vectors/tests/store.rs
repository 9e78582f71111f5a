//! The same conformance suite against both stores: the embedded store
//! always, the Qdrant server only when `QDRANT_URL` is set at build time
//! (otherwise the `*_requires_qdrant_url` tests are ignored: cargo reports
//! them as such, never as passed).

use std::collections::HashSet;
use std::sync::Arc;

use aigentable_vectors::{
    CollectionSpec, EmbeddedStore, Point, PointPayload, SearchQuery, VectorError, VectorStore,
    connect,
};

const DIM: usize = 4;

fn chunk(
    tenant: &str,
    agent: &str,
    document: &str,
    index: u32,
    text: &str,
    dense: [f32; DIM],
) -> Point {
    Point::new(
        PointPayload {
            tenant_id: tenant.to_owned(),
            agent_id: Some(agent.to_owned()),
            document_id: document.to_owned(),
            document_name: format!("{document}.pdf"),
            chunk_index: index,
            page: Some(index + 1),
            sheet: None,
            text: text.to_owned(),
        },
        Some(dense.to_vec()),
    )
}

/// A chunk of tenant "t" for a sparse-only collection.
fn sparse_chunk(document: &str, index: u32, text: &str) -> Point {
    let mut p = chunk("t", "agent", document, index, text, [0.0; DIM]);
    p.dense = None;
    p
}

/// The entries of a directory (`segments`, `wal`) of an embedded
/// collection's files under the store's root `dir`.
fn collection_files(dir: &std::path::Path, collection: &str, sub: &str) -> Vec<std::fs::DirEntry> {
    std::fs::read_dir(dir.join("vectors/collections").join(collection).join(sub))
        .expect("collection dir")
        .filter_map(Result::ok)
        .collect()
}

/// Opens the store at `dir` again and checks that the collection holds
/// `count` of tenant "t"'s points and that `term` finds chunk `index` first.
async fn reopened(
    dir: &std::path::Path,
    collection: &str,
    count: u64,
    term: &str,
    index: u32,
) -> EmbeddedStore {
    let store = EmbeddedStore::open(dir).await.expect("reopen");
    assert_eq!(
        store.count(collection, "t", None).await.expect("count"),
        count
    );
    let hits = store
        .search(collection, &SearchQuery::new("t", term, 3))
        .await
        .expect("search");
    assert_eq!(hits.first().map(|h| h.payload.chunk_index), Some(index));
    store
}

fn run_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_owned()
}

/// Two tenants with the same document ids and overlapping words; tenant A
/// has two agents with one document each.
fn corpus(a: &str, b: &str) -> Vec<Point> {
    vec![
        chunk(
            a,
            "agent-1",
            "doc-1",
            0,
            "Refund policy: a refund is issued within 30 days.",
            [1.0, 0.0, 0.0, 0.0],
        ),
        chunk(
            a,
            "agent-1",
            "doc-1",
            1,
            "To request your refund, email billing with the order number.",
            [0.9, 0.1, 0.0, 0.0],
        ),
        chunk(
            a,
            "agent-2",
            "doc-2",
            0,
            "Shipping shipping: shipping times are 3 to 5 days; shipping is free.",
            [0.0, 0.0, -1.0, 0.0],
        ),
        chunk(
            a,
            "agent-2",
            "doc-2",
            1,
            "Change the delivery address before shipping from the account page.",
            [0.0, 0.0, 1.0, 0.0],
        ),
        chunk(
            b,
            "agent-9",
            "doc-1",
            0,
            "Refund refund refund: tenant B refunds everything at once.",
            [1.0, 0.0, 0.0, 0.0],
        ),
        chunk(
            b,
            "agent-9",
            "doc-1",
            1,
            "Tenant B shipping and refund questions go to the front desk.",
            [0.5, 0.5, 0.0, 0.0],
        ),
    ]
}

fn ids(hits: &[aigentable_vectors::Hit]) -> Vec<(String, u32)> {
    hits.iter()
        .map(|h| (h.payload.document_id.clone(), h.payload.chunk_index))
        .collect()
}

/// The behaviour every store must have.
async fn conformance(store: Arc<dyn VectorStore>) {
    let run = run_id();
    let collection = format!("conformance_{run}");
    let (a, b) = (format!("tenant-a-{run}"), format!("tenant-b-{run}"));
    let spec = CollectionSpec {
        name: collection.clone(),
        dense_dim: Some(DIM),
    };

    // Collections: idempotent creation, dimension mismatch, unknown names.
    store.ensure_collection(&spec).await.expect("create");
    store.ensure_collection(&spec).await.expect("ensure again");
    let other_dim = CollectionSpec {
        name: collection.clone(),
        dense_dim: Some(DIM + 1),
    };
    let err = store
        .ensure_collection(&other_dim)
        .await
        .expect_err("mismatch");
    assert!(
        matches!(err, VectorError::CollectionMismatch { .. }),
        "{err}"
    );
    let missing = format!("missing_{run}");
    let err = store
        .search(&missing, &SearchQuery::new(&a, "refund", 5))
        .await
        .expect_err("missing collection");
    assert!(matches!(err, VectorError::CollectionNotFound(_)), "{err}");
    let err = store
        .ensure_collection(&CollectionSpec {
            name: "../escape".into(),
            dense_dim: None,
        })
        .await
        .expect_err("bad name");
    assert!(
        matches!(err, VectorError::InvalidCollectionName(_)),
        "{err}"
    );

    store
        .upsert(&collection, corpus(&a, &b))
        .await
        .expect("upsert");
    assert_eq!(store.count(&collection, &a, None).await.expect("count"), 4);
    assert_eq!(store.count(&collection, &b, None).await.expect("count"), 2);
    assert_eq!(
        store
            .count(&collection, &a, Some("doc-1"))
            .await
            .expect("count"),
        2
    );

    // Tenant isolation: the same words and document ids in tenant B never
    // show up in tenant A's results, and the other way round.
    let hits = store
        .search(&collection, &SearchQuery::new(&a, "refund", 10))
        .await
        .expect("search");
    assert!(!hits.is_empty());
    assert!(hits.iter().all(|h| h.payload.tenant_id == a), "{hits:?}");
    assert_eq!(hits[0].payload.document_id, "doc-1");
    assert_eq!(hits[0].payload.document_name, "doc-1.pdf");
    assert!(hits[0].payload.page.is_some());
    assert!(hits[0].score > 0.0);
    let hits = store
        .search(&collection, &SearchQuery::new(&b, "refund shipping", 10))
        .await
        .expect("search");
    assert_eq!(hits.len(), 2, "{hits:?}");
    assert!(hits.iter().all(|h| h.payload.tenant_id == b));
    // A query matching nothing finds nothing.
    let hits = store
        .search(&collection, &SearchQuery::new(&a, "zebra", 10))
        .await
        .expect("search");
    assert!(hits.is_empty(), "{hits:?}");

    // Agent and document filters.
    let hits = store
        .search(
            &collection,
            &SearchQuery::new(&a, "refund shipping", 10).agent("agent-2"),
        )
        .await
        .expect("search");
    assert!(!hits.is_empty());
    assert!(
        hits.iter()
            .all(|h| h.payload.agent_id.as_deref() == Some("agent-2"))
    );
    let hits = store
        .search(
            &collection,
            &SearchQuery::new(&a, "refund shipping", 10).document("doc-1"),
        )
        .await
        .expect("search");
    assert!(!hits.is_empty());
    assert!(hits.iter().all(|h| h.payload.document_id == "doc-1"));
    let hits = store
        .search(&collection, &SearchQuery::new(&a, "refund", 1))
        .await
        .expect("search");
    assert_eq!(hits.len(), 1);

    // Hybrid: sparse alone ranks doc-2 chunk 0 (four "shipping") first; the
    // dense query points at chunk 1, and fusion puts chunk 1 first.
    let sparse_only = store
        .search(&collection, &SearchQuery::new(&a, "shipping", 10))
        .await
        .expect("search");
    assert_eq!(
        ids(&sparse_only),
        vec![("doc-2".to_owned(), 0), ("doc-2".to_owned(), 1)]
    );
    let hybrid = store
        .search(
            &collection,
            &SearchQuery::new(&a, "shipping", 10).dense(vec![0.0, 0.0, 1.0, 0.0]),
        )
        .await
        .expect("search");
    assert_eq!(ids(&hybrid)[0], ("doc-2".to_owned(), 1), "{hybrid:?}");
    // Dense ranks every chunk of the tenant, so fusion returns all four.
    assert_eq!(hybrid.len(), 4);
    assert!(hybrid.iter().all(|h| h.payload.tenant_id == a));
    assert!(hybrid.windows(2).all(|w| w[0].score >= w[1].score));
    // Dense alone (the text has no searchable words).
    let dense_only = store
        .search(
            &collection,
            &SearchQuery::new(&a, "the", 2).dense(vec![1.0, 0.0, 0.0, 0.0]),
        )
        .await
        .expect("search");
    assert_eq!(ids(&dense_only)[0], ("doc-1".to_owned(), 0));
    assert_eq!(dense_only.len(), 2);

    // Re-indexing overwrites: same ids, new text, no duplicates.
    let reindexed = vec![
        chunk(
            &a,
            "agent-1",
            "doc-1",
            0,
            "Refunds now take 14 days.",
            [1.0, 0.0, 0.0, 0.0],
        ),
        chunk(
            &a,
            "agent-1",
            "doc-1",
            1,
            "Refund requests go through the portal.",
            [0.9, 0.1, 0.0, 0.0],
        ),
    ];
    store
        .upsert(&collection, reindexed)
        .await
        .expect("re-upsert");
    assert_eq!(
        store
            .count(&collection, &a, Some("doc-1"))
            .await
            .expect("count"),
        2
    );
    assert_eq!(store.count(&collection, &a, None).await.expect("count"), 4);
    let hits = store
        .search(&collection, &SearchQuery::new(&a, "portal", 10))
        .await
        .expect("search");
    assert_eq!(ids(&hits), vec![("doc-1".to_owned(), 1)]);
    let all: HashSet<_> = store
        .search(
            &collection,
            &SearchQuery::new(&a, "refund refunds portal", 10),
        )
        .await
        .expect("search")
        .into_iter()
        .map(|h| h.id)
        .collect();
    assert_eq!(all.len(), 2);

    // Deleting a document removes only that document of that tenant.
    store
        .delete_document(&collection, &a, "doc-1")
        .await
        .expect("delete document");
    assert_eq!(
        store
            .count(&collection, &a, Some("doc-1"))
            .await
            .expect("count"),
        0
    );
    assert_eq!(store.count(&collection, &a, None).await.expect("count"), 2);
    assert_eq!(
        store
            .count(&collection, &b, Some("doc-1"))
            .await
            .expect("count"),
        2
    );
    let hits = store
        .search(&collection, &SearchQuery::new(&a, "refund", 10))
        .await
        .expect("search");
    assert!(
        hits.iter().all(|h| h.payload.document_id != "doc-1"),
        "{hits:?}"
    );

    // Deleting an agent's chunks.
    store
        .delete_agent(&collection, &a, "agent-2")
        .await
        .expect("delete agent");
    assert_eq!(store.count(&collection, &a, None).await.expect("count"), 0);
    assert_eq!(store.count(&collection, &b, None).await.expect("count"), 2);

    // A sparse-only collection beside it; dense vectors are refused there.
    let sparse_spec = CollectionSpec {
        name: format!("conformance_bm25_{run}"),
        dense_dim: None,
    };
    store.ensure_collection(&sparse_spec).await.expect("create");
    let mut plain = corpus(&a, &b);
    for p in &mut plain {
        p.dense = None;
    }
    store
        .upsert(&sparse_spec.name, plain)
        .await
        .expect("upsert");
    let hits = store
        .search(&sparse_spec.name, &SearchQuery::new(&a, "refund", 10))
        .await
        .expect("search");
    assert_eq!(hits[0].payload.document_id, "doc-1");
    assert!(hits.iter().all(|h| h.payload.tenant_id == a));

    // IDF: a rare word outweighs a word most chunks have, even when the
    // common word is repeated (by term frequency alone, "common" x4 wins).
    let c = format!("tenant-c-{run}");
    let mut idf_points: Vec<Point> = (0..10)
        .map(|i| {
            chunk(
                &c,
                "agent",
                "filler",
                i,
                &format!("common filler{i}"),
                [0.0; DIM],
            )
        })
        .collect();
    idf_points.push(chunk(
        &c,
        "agent",
        "repeated",
        0,
        "common common common common",
        [0.0; DIM],
    ));
    idf_points.push(chunk(&c, "agent", "rare", 0, "rare word", [0.0; DIM]));
    for p in &mut idf_points {
        p.dense = None;
    }
    store
        .upsert(&sparse_spec.name, idf_points)
        .await
        .expect("upsert");
    let hits = store
        .search(&sparse_spec.name, &SearchQuery::new(&c, "common rare", 3))
        .await
        .expect("search");
    assert_eq!(hits[0].payload.document_id, "rare", "{hits:?}");
    assert_eq!(hits[1].payload.document_id, "repeated", "{hits:?}");

    store.drop_collection(&collection).await.expect("drop");
    store
        .drop_collection(&sparse_spec.name)
        .await
        .expect("drop");
    store
        .drop_collection(&collection)
        .await
        .expect("drop again");
    let err = store
        .count(&collection, &a, None)
        .await
        .expect_err("dropped");
    assert!(matches!(err, VectorError::CollectionNotFound(_)), "{err}");
}

#[tokio::test]
async fn embedded_store_conformance() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = connect(None, None, dir.path()).await.expect("open");
    conformance(store).await;
}

#[tokio::test]
async fn embedded_store_persists_across_restarts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = CollectionSpec::for_model("test-model", DIM);
    {
        let store = EmbeddedStore::open(dir.path()).await.expect("open");
        store.ensure_collection(&spec).await.expect("create");
        store
            .upsert(&spec.name, corpus("t1", "t2"))
            .await
            .expect("upsert");
        store
            .delete_document(&spec.name, "t1", "doc-2")
            .await
            .expect("delete");
    }
    let store = EmbeddedStore::open(dir.path()).await.expect("reopen");
    // Usable without ensure_collection: loaded from disk on first use.
    assert_eq!(store.count(&spec.name, "t1", None).await.expect("count"), 2);
    let hits = store
        .search(
            &spec.name,
            &SearchQuery::new("t1", "refund", 10).dense(vec![1.0, 0.0, 0.0, 0.0]),
        )
        .await
        .expect("search");
    assert_eq!(hits.len(), 2);
    assert_eq!(hits[0].payload.document_id, "doc-1");
    assert!(hits[0].payload.text.contains("Refund policy"));
    store
        .ensure_collection(&spec)
        .await
        .expect("ensure after reopen");
    let err = store
        .ensure_collection(&CollectionSpec {
            name: spec.name.clone(),
            dense_dim: None,
        })
        .await
        .expect_err("mismatch after reopen");
    assert!(
        matches!(err, VectorError::CollectionMismatch { .. }),
        "{err}"
    );
}

#[tokio::test]
async fn embedded_store_is_owned_by_one_opener() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = EmbeddedStore::open(dir.path()).await.expect("open");
    let err = EmbeddedStore::open(dir.path())
        .await
        .expect_err("second opener is refused");
    let message = err.to_string();
    assert!(matches!(err, VectorError::Locked(_)), "{message}");
    assert!(message.contains("QDRANT_URL"), "{message}");
    assert!(message.contains("another process"), "{message}");
    assert!(message.contains(&dir.path().join("vectors").display().to_string()));
    drop(first);
    EmbeddedStore::open(dir.path())
        .await
        .expect("free again once the owner is gone");
}

#[tokio::test]
async fn embedded_store_batches_large_upserts_and_checks_dimensions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedStore::open(dir.path()).await.expect("open");
    let spec = CollectionSpec {
        name: "batches".into(),
        dense_dim: Some(DIM),
    };
    store.ensure_collection(&spec).await.expect("create");
    let points: Vec<Point> = (0..300)
        .map(|i| {
            chunk(
                "t",
                "agent",
                &format!("doc-{}", i % 3),
                i,
                &format!("chunk number {i} about topic{}", i % 7),
                [1.0, i as f32, 0.0, 0.0],
            )
        })
        .collect();
    store.upsert(&spec.name, points).await.expect("upsert");
    assert_eq!(
        store.count(&spec.name, "t", None).await.expect("count"),
        300
    );
    assert_eq!(
        store
            .count(&spec.name, "t", Some("doc-1"))
            .await
            .expect("count"),
        100
    );
    let hits = store
        .search(&spec.name, &SearchQuery::new("t", "topic3", 500))
        .await
        .expect("search");
    assert_eq!(hits.len(), 300 / 7 + usize::from(300 % 7 > 3));

    let wrong = chunk("t", "agent", "doc-x", 0, "text", [1.0, 0.0, 0.0, 0.0]);
    let wrong = Point {
        dense: Some(vec![1.0; DIM + 2]),
        ..wrong
    };
    let err = store
        .upsert(&spec.name, vec![wrong])
        .await
        .expect_err("wrong dimension");
    assert!(matches!(err, VectorError::InvalidVector(_)), "{err}");
    let err = store
        .search(
            &spec.name,
            &SearchQuery::new("t", "topic3", 5).dense(vec![1.0; DIM + 1]),
        )
        .await
        .expect_err("wrong query dimension");
    assert!(matches!(err, VectorError::InvalidVector(_)), "{err}");
    assert!(
        store
            .search(&spec.name, &SearchQuery::new("t", "topic3", 0))
            .await
            .expect("search")
            .is_empty()
    );
}

/// Past the indexing threshold the embedded store has Edge's optimizer
/// seal the appendable segment (whose inserts cost grew with its size):
/// the points stay searchable, countable and deletable, and survive a
/// restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_store_seals_large_segments_and_keeps_every_point() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = CollectionSpec::sparse_only();
    let words: Vec<String> = (0..400).map(|w| format!("term{w}")).collect();
    let text = |i: u32| {
        // 100 distinct terms a point: 12,000 points pass the 10,000 KB
        // of sparse vectors at which a segment is sealed.
        let mut t: Vec<&str> = (0..100)
            .map(|k| words[((i as usize) * 7 + k * 13) % words.len()].as_str())
            .collect();
        let unique = format!("needle{i}");
        t.push("common");
        let mut s = t.join(" ");
        s.push(' ');
        s.push_str(&unique);
        s
    };
    let points = |document: &str, from: u32, to: u32| -> Vec<Point> {
        (from..to)
            .map(|i| sparse_chunk(document, i, &text(i)))
            .collect()
    };
    let segments = |dir: &std::path::Path| {
        collection_files(dir, &spec.name, "segments")
            .into_iter()
            .filter(|e| e.path().is_dir() && !e.file_name().to_string_lossy().starts_with('.'))
            .count()
    };
    {
        let store = EmbeddedStore::open(dir.path()).await.expect("open");
        store.ensure_collection(&spec).await.expect("create");
        for (n, from) in (0..12_000).step_by(2_000).enumerate() {
            let document = format!("doc-{}", n % 3);
            store
                .upsert(&spec.name, points(&document, from, from + 2_000))
                .await
                .expect("upsert");
        }
        assert!(
            segments(dir.path()) > 1,
            "the appendable segment was sealed into an indexed one"
        );
        assert_eq!(
            store.count(&spec.name, "t", None).await.expect("count"),
            12_000
        );
        for i in [5u32, 4_321, 11_999] {
            let hits = store
                .search(&spec.name, &SearchQuery::new("t", format!("needle{i}"), 3))
                .await
                .expect("search");
            assert_eq!(hits.first().map(|h| h.payload.chunk_index), Some(i));
        }
        store
            .delete_document(&spec.name, "t", "doc-0")
            .await
            .expect("delete");
        assert_eq!(
            store.count(&spec.name, "t", None).await.expect("count"),
            8_000
        );
    }
    let store = reopened(dir.path(), &spec.name, 8_000, "needle4321", 4_321).await;
    assert!(
        store
            .search(&spec.name, &SearchQuery::new("t", "needle5", 3))
            .await
            .expect("search")
            .iter()
            .all(|h| h.payload.document_id != "doc-0"),
        "deleted points stay deleted after a restart"
    );
}

/// Edge logs every write to a WAL and, as published, never truncated it:
/// the log kept a copy of every write ever made, 32 MB segment after
/// segment. The vendored patch acknowledges the log once the segments are
/// flushed (vendor/README.md), which the store does at most
/// `SEGMENT_FLUSH_INTERVAL` after a write; then one closed segment at most
/// is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_store_keeps_its_write_log_bounded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = CollectionSpec::sparse_only();
    // About 8 KB logged a point (the filler holds no term): 12,000 points
    // make about 100 MB of log, three 32 MB segments.
    let filler = "-".repeat(8_000);
    let closed_log_segments = || {
        collection_files(dir.path(), &spec.name, "wal")
            .into_iter()
            .filter(|e| e.file_name().to_string_lossy().starts_with("closed-"))
            .count()
    };
    {
        let store = EmbeddedStore::open(dir.path()).await.expect("open");
        store.ensure_collection(&spec).await.expect("create");
        for from in (0..12_000u32).step_by(2_000) {
            let points = (from..from + 2_000)
                .map(|i| sparse_chunk("doc", i, &format!("word{i} {filler}")))
                .collect();
            store.upsert(&spec.name, points).await.expect("upsert");
        }
        tokio::time::sleep(EmbeddedStore::SEGMENT_FLUSH_INTERVAL).await;
        store
            .upsert(&spec.name, vec![sparse_chunk("doc", 12_000, "last")])
            .await
            .expect("upsert");
        let closed = closed_log_segments();
        assert!(closed <= 1, "{closed} closed WAL segments kept");
    }
    reopened(dir.path(), &spec.name, 12_001, "word11999", 11_999).await;
}

/// Search skips the stretches of a long posting list whose largest weight
/// ahead (kept per entry, updated on every write) cannot reach the results
/// found so far. The 12,000 points stay in one appendable segment, written
/// point by point; the first 10,000 are scored as one batch, after which
/// "alpha"'s list is skipped up to "beta"'s next entry (11,900) if its
/// weights ahead look too low. The three best "alpha" chunks lie in that
/// stretch: one written late, one rewritten from a low "alpha" weight to a
/// high one, one rewritten from no "alpha" at all (an entry inserted
/// between others); and the best early chunk is deleted. A stale weight
/// ahead (the vendored Qdrant Edge patch stops its updates early,
/// vendor/README.md) would make search skip them.
#[tokio::test]
async fn embedded_sparse_search_finds_the_true_top_results_after_point_by_point_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedStore::open(dir.path()).await.expect("open");
    let spec = CollectionSpec::sparse_only();
    store.ensure_collection(&spec).await.expect("create");
    const LATE_BEST: u32 = 11_112;
    const REWRITTEN: u32 = 10_556;
    const INSERTED: u32 = 10_555;
    const BETA: [u32; 2] = [11_900, 11_950];
    const EARLY_BEST: u32 = 4_000;
    let alpha = |times: usize| vec!["alpha"; times].join(" ");
    let text = |i: u32| -> String {
        if BETA.contains(&i) {
            "beta".to_owned()
        } else if i % 2 == 1 {
            format!("filler{i}")
        } else if i == LATE_BEST {
            alpha(40)
        } else if i == EARLY_BEST {
            alpha(60)
        } else if i < 10_000 {
            alpha(1 + (i as usize * 7_919) % 13)
        } else {
            alpha(1)
        }
    };
    // One upsert call per 500 points, in index order: a point's place in
    // the posting lists is the order it was written in.
    for from in (0..12_000).step_by(500) {
        let points = (from..from + 500)
            .map(|i| {
                let document = if i == EARLY_BEST { "early" } else { "doc" };
                sparse_chunk(document, i, &text(i))
            })
            .collect();
        store.upsert(&spec.name, points).await.expect("upsert");
    }
    store
        .upsert(
            &spec.name,
            vec![
                sparse_chunk("doc", REWRITTEN, &alpha(50)),
                sparse_chunk("doc", INSERTED, &alpha(45)),
            ],
        )
        .await
        .expect("rewrite");
    store
        .delete_document(&spec.name, "t", "early")
        .await
        .expect("delete");
    assert_eq!(
        store.count(&spec.name, "t", None).await.expect("count"),
        11_999
    );
    let hits = store
        .search(&spec.name, &SearchQuery::new("t", "alpha beta", 5))
        .await
        .expect("search");
    let found: HashSet<u32> = hits.iter().map(|h| h.payload.chunk_index).collect();
    let expected: HashSet<u32> = [BETA[0], BETA[1], REWRITTEN, INSERTED, LATE_BEST].into();
    assert_eq!(
        found, expected,
        "the two beta chunks and the three best alpha chunks"
    );
}

fn qdrant_url() -> Option<String> {
    let url = std::env::var("QDRANT_URL")
        .ok()
        .filter(|u| !u.trim().is_empty());
    if url.is_none() {
        eprintln!("skipped: QDRANT_URL not set");
    }
    url
}

#[tokio::test]
#[cfg_attr(
    not(qdrant_server),
    ignore = "QDRANT_URL is not set: no Qdrant server to test against"
)]
async fn server_store_conformance_requires_qdrant_url() {
    let Some(url) = qdrant_url() else {
        panic!("QDRANT_URL was set at build time but not at run time");
    };
    let api_key = std::env::var("QDRANT_API_KEY").ok();
    let dir = tempfile::tempdir().expect("tempdir");
    let store = connect(Some(&url), api_key.as_deref(), dir.path())
        .await
        .expect("connect to QDRANT_URL");
    // The server store never touches the data directory.
    assert!(!dir.path().join("vectors").exists());
    conformance(store).await;
}

/// Runs without a server: the connection check fails with a clear message.
#[tokio::test]
async fn server_store_reports_an_unreachable_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let err = connect(Some("http://127.0.0.1:9"), None, dir.path())
        .await
        .expect_err("nothing listens on port 9");
    assert!(err.to_string().contains("cannot reach Qdrant"), "{err}");
}

/// Runs the test `name` of this binary in a child process, with `env` set
/// to `dir`; its status and its output (stdout, then stderr).
fn run_child(name: &str, env: &str, dir: &std::path::Path) -> (std::process::ExitStatus, String) {
    let output = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", name, "--nocapture"])
        .env(env, dir)
        .output()
        .expect("run the child process");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status, text)
}

/// Set in the child process of `embedded_store_refuses_a_second_process`.
const CHILD_DIR_ENV: &str = "AIGENTABLE_VECTORS_LOCK_TEST_DIR";

/// A second process opening an owned store gets the Locked error.
#[tokio::test]
async fn embedded_store_refuses_a_second_process() {
    if std::env::var_os(CHILD_DIR_ENV).is_some() {
        return; // this is the child; see second_process_opener
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let _owner = EmbeddedStore::open(dir.path()).await.expect("open");
    let (status, output) = run_child("second_process_opener", CHILD_DIR_ENV, dir.path());
    assert!(status.success(), "{output}");
    assert!(
        output.contains("locked: the embedded vector store at"),
        "{output}"
    );
    assert!(output.contains("set QDRANT_URL"), "{output}");
}

/// The child half of `embedded_store_refuses_a_second_process`; does
/// nothing when run on its own.
#[tokio::test]
async fn second_process_opener() {
    let Some(dir) = std::env::var_os(CHILD_DIR_ENV) else {
        return;
    };
    let err = EmbeddedStore::open(std::path::Path::new(&dir))
        .await
        .expect_err("the parent owns the store");
    assert!(matches!(err, VectorError::Locked(_)), "{err}");
    eprintln!("locked: {err}");
}

/// Set in the child process of `embedded_store_recovers_writes_after_a_crash`.
const CRASH_DIR_ENV: &str = "AIGENTABLE_VECTORS_CRASH_TEST_DIR";

/// Printed by the crashing child once its writes have returned.
const WRITES_RETURNED: &str = "writes returned, aborting";

/// Every write that returned survives a crash, though the store flushes its
/// segments only every `SEGMENT_FLUSH_INTERVAL`: a load replays the write
/// log past the last flush. The child writes 300 points, waits out the
/// interval, writes 200 more (that write flushes the segments), then 100
/// more, rewrites one of the first and deletes the 200, and aborts without
/// any destructor. Without the replay the store would reopen with the 500
/// points of its last flush.
#[tokio::test]
async fn embedded_store_recovers_writes_after_a_crash() {
    if std::env::var_os(CRASH_DIR_ENV).is_some() {
        return; // this is the child; see crashing_writer
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (status, output) = run_child("crashing_writer", CRASH_DIR_ENV, dir.path());
    assert!(
        !status.success() && output.contains(WRITES_RETURNED),
        "the child wrote, then crashed: {status}\n{output}"
    );

    let spec = CollectionSpec::sparse_only();
    let store = reopened(dir.path(), &spec.name, 400, "rewritten", 0).await;
    let first = |term: &'static str| {
        let store = &store;
        let name = spec.name.clone();
        async move {
            store
                .search(&name, &SearchQuery::new("t", term, 1))
                .await
                .expect("search")
                .into_iter()
                .next()
                .map(|h| (h.payload.document_id, h.payload.chunk_index))
        }
    };
    assert_eq!(first("alpha299").await, Some(("doc-a".to_owned(), 299)));
    assert_eq!(first("gamma99").await, Some(("doc-c".to_owned(), 99)));
    assert_eq!(
        first("beta5").await,
        None,
        "the deleted document stays deleted"
    );
    assert_eq!(
        first("alpha0").await,
        None,
        "the rewritten chunk has its new text"
    );
    drop(store);
    // Recovered writes were flushed: a second load finds them as well.
    reopened(dir.path(), &spec.name, 400, "gamma42", 42).await;
}

/// The child half of `embedded_store_recovers_writes_after_a_crash`; does
/// nothing when run on its own.
#[tokio::test]
async fn crashing_writer() {
    let Some(dir) = std::env::var_os(CRASH_DIR_ENV) else {
        return;
    };
    let spec = CollectionSpec::sparse_only();
    let points = |document: &str, word: &str, count: u32| -> Vec<Point> {
        (0..count)
            .map(|i| sparse_chunk(document, i, &format!("{word}{i} shared words")))
            .collect()
    };
    let store = EmbeddedStore::open(std::path::Path::new(&dir))
        .await
        .expect("open");
    store.ensure_collection(&spec).await.expect("create");
    let upsert = |points| store.upsert(&spec.name, points);
    upsert(points("doc-a", "alpha", 300)).await.expect("upsert");
    tokio::time::sleep(EmbeddedStore::SEGMENT_FLUSH_INTERVAL).await;
    upsert(points("doc-b", "beta", 200)).await.expect("upsert");
    upsert(points("doc-c", "gamma", 100)).await.expect("upsert");
    upsert(vec![sparse_chunk("doc-a", 0, "rewritten")])
        .await
        .expect("upsert");
    store
        .delete_document(&spec.name, "t", "doc-b")
        .await
        .expect("delete");
    eprintln!("{WRITES_RETURNED}");
    std::process::abort();
}
