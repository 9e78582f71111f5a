//! The database work of a customer message, from the signed webhook to the
//! reply delivered (issue 14): every command is recorded (driver command
//! monitoring), counted per kind and collection, and every query among them
//! is explained: each must be served by an index, so a new query on this
//! path without one fails here, on secantusd-rs as on MongoDB.

use std::collections::BTreeMap;
use std::time::Duration;

use bson::{Bson, Document, doc};
use serde_json::json;

use aigentable_jobs::record::JobRecord;
use aigentable_platform::db::command_log::{self, Command, Recording};
use aigentable_tests::fake_openai::FakeOpenAi;
use aigentable_tests::fake_providers::{
    FakeProviders, app_with_fake, create_agent, create_live_channel, post_meta, whatsapp_text,
};
use aigentable_tests::{TestApp, query_route};
use futures::TryStreamExt;

const PNID: &str = "PLANS_PN";
const SECRET: &str = "plans-secret";

/// Commands that carry a query the server plans.
const QUERIES: [&str; 7] = [
    "find",
    "update",
    "delete",
    "findAndModify",
    "count",
    "aggregate",
    "distinct",
];

/// The test's own connection: its polling and explains are not part of
/// what is recorded.
async fn own_database(app: &TestApp) -> mongodb::Database {
    mongodb::Client::with_uri_str(aigentable_tests::mongodb_uri())
        .await
        .expect("a connection of the test's own")
        .database(app.platform.db.database().name())
}

async fn customer_says(
    app: &TestApp,
    own: &mongodb::Database,
    fake: &FakeProviders,
    from: &str,
    wamid: &str,
) {
    let sent = fake.requests_to(&format!("/{PNID}/messages")).len();
    let body = whatsapp_text(PNID, from, wamid, "what are your opening hours?");
    let r = post_meta(app, "/api/v1/webhooks/whatsapp", &body, Some(SECRET)).await;
    assert!(r.status.is_success(), "webhook: {}", r.status);
    let answered = app
        .eventually(Duration::from_secs(30), || async {
            (fake.requests_to(&format!("/{PNID}/messages")).len() > sent).then_some(())
        })
        .await;
    assert!(answered.is_some(), "{from} was answered");
    let settled = app
        .eventually(Duration::from_secs(30), || async {
            let open = own
                .collection::<JobRecord>("jobs")
                .count_documents(doc! { "status": { "$in": ["QUEUED", "RUNNING"] } })
                .await
                .unwrap_or(1);
            (open == 0).then_some(())
        })
        .await;
    assert!(settled.is_some(), "every job of the message ended");
}

/// The command as the server plans it: without the session, cluster time
/// and write concern the driver adds.
fn explainable(command: &Command) -> Document {
    let mut body = command.body.clone();
    for meta in [
        "$db",
        "lsid",
        "$clusterTime",
        "txnNumber",
        "writeConcern",
        "readConcern",
        "$readPreference",
        "apiVersion",
    ] {
        body.remove(meta);
    }
    body
}

/// The filters a command runs, each with whether its route takes `$or`.
fn filters(command: &Command) -> Vec<(Document, bool)> {
    let body = &command.body;
    let statements = |key: &str| -> Vec<Document> {
        body.get_array(key)
            .map(|items| {
                items
                    .iter()
                    .filter_map(Bson::as_document)
                    .filter_map(|s| s.get_document("q").ok().cloned())
                    .collect()
            })
            .unwrap_or_default()
    };
    match command.name.as_str() {
        "find" | "distinct" => body
            .get_document("filter")
            .or_else(|_| body.get_document("query"))
            .map(|f| vec![(f.clone(), true)])
            .unwrap_or_else(|_| vec![(Document::new(), true)]),
        "findAndModify" => vec![(
            body.get_document("query").cloned().unwrap_or_default(),
            true,
        )],
        "count" => vec![(
            body.get_document("query").cloned().unwrap_or_default(),
            false,
        )],
        "update" => statements("updates")
            .into_iter()
            .map(|q| (q, false))
            .collect(),
        "delete" => statements("deletes")
            .into_iter()
            .map(|q| (q, false))
            .collect(),
        "aggregate" => body
            .get_array("pipeline")
            .ok()
            .and_then(|p| p.first())
            .and_then(Bson::as_document)
            .and_then(|stage| stage.get_document("$match").ok())
            .map(|f| vec![(f.clone(), true)])
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

fn stages(plan: &Bson, out: &mut Vec<String>) {
    match plan {
        Bson::Document(d) => {
            if let Ok(stage) = d.get_str("stage") {
                out.push(stage.to_owned());
            }
            for (_, v) in d {
                stages(v, out);
            }
        }
        Bson::Array(items) => {
            for item in items {
                stages(item, out);
            }
        }
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_query_of_a_customer_message_is_served_by_an_index() {
    command_log::enable();
    let (app, fake) = app_with_fake(&[]).await;
    let admin = app.register("Plans").await;
    let llm = FakeOpenAi::start().await;
    let r = app
        .post(
            "/api/v1/ai-providers",
            &admin,
            json!({"name": "fake", "type": "OPENAI_COMPATIBLE", "baseUrl": llm.base_url(),
                   "apiKey": "sk-plans-0000", "chatModel": "plans-model", "isDefault": true}),
        )
        .await;
    assert!(r.status.is_success(), "{:?}", r.body);
    let agent = create_agent(&app, &admin).await;
    create_live_channel(
        &app,
        &admin,
        json!({"type": "WHATSAPP", "name": "plans", "agentId": agent,
               "config": {"phoneNumberId": PNID, "accessToken": "plans-token", "appSecret": SECRET}}),
    )
    .await;
    // A first conversation warms what is cached and fills the collections.
    let own = own_database(&app).await;
    customer_says(&app, &own, &fake, "5511000001", "wamid.plans.1").await;

    let database = app.platform.db.database().name().to_owned();
    let recording = Recording::start(&database);
    // A returning customer, then a new one: both paths.
    customer_says(&app, &own, &fake, "5511000001", "wamid.plans.2").await;
    let returning = recording.take();
    customer_says(&app, &own, &fake, "5511000002", "wamid.plans.3").await;
    let new = recording.take();
    drop(recording);

    for (label, commands) in [("returning customer", &returning), ("new customer", &new)] {
        let mut per: BTreeMap<(String, String), usize> = BTreeMap::new();
        for c in commands.iter() {
            *per.entry((c.name.clone(), c.collection.clone()))
                .or_default() += 1;
        }
        eprintln!(
            "{label}: {} MongoDB commands from the webhook to the reply delivered",
            commands.len()
        );
        for ((name, collection), n) in &per {
            eprintln!("  {n:>3} {name} {collection}");
        }
        assert!(!commands.is_empty(), "the message's commands were recorded");
    }
    // What a message costs now (the target is 10; the reply is
    // stored claimed for its delivery, so the delivery writes only its
    // outcome); a change that adds a round trip to the path fails here and
    // must say why it is worth it.
    assert!(
        returning.len() <= 8,
        "a returning customer's message took {} commands",
        returning.len()
    );
    assert!(
        new.len() <= 9,
        "a new customer's message took {} commands",
        new.len()
    );
    // A new customer's contact is inserted (grouped with other inserts
    // under load), not upserted: the server's dearest kind of command.
    let contact_writes: Vec<&str> = new
        .iter()
        .filter(|c| c.collection == "contacts")
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(contact_writes, ["insert"], "a new customer's contact");

    let mut unindexed = Vec::new();
    let mut explained = 0;
    for command in returning.iter().chain(new.iter()) {
        if !QUERIES.contains(&command.name.as_str()) {
            continue;
        }
        let explain = own
            .run_command(doc! { "explain": explainable(command), "verbosity": "queryPlanner" })
            .await;
        let plan = match explain {
            Ok(reply) => reply
                .get_document("queryPlanner")
                .ok()
                .and_then(|q| q.get("winningPlan").cloned())
                // An aggregation explains each stage apart.
                .unwrap_or(Bson::Document(reply)),
            Err(e) => panic!(
                "{} {} could not be explained: {e}",
                command.name, command.collection
            ),
        };
        explained += 1;
        let mut seen = Vec::new();
        stages(&plan, &mut seen);
        if seen.iter().any(|s| s == "COLLSCAN") {
            unindexed.push(format!(
                "{} {}: {}",
                command.name,
                command.collection,
                explainable(command)
            ));
        }
    }
    assert!(explained > 0, "queries were explained");
    assert!(
        unindexed.is_empty(),
        "queries without an index on a customer message's path:\n{}",
        unindexed.join("\n")
    );

    // secantusd-rs explains like MongoDB but runs queries through a router
    // of its own: each filter must also be one it serves from an index, or
    // the cost of a message grows with the collection.
    let mut indexes: BTreeMap<String, Vec<query_route::Index>> = BTreeMap::new();
    let mut scanned = Vec::new();
    for command in returning.iter().chain(new.iter()) {
        if !QUERIES.contains(&command.name.as_str()) {
            continue;
        }
        if !indexes.contains_key(&command.collection) {
            // A collection not created yet has only its `_id` index to come.
            let mut keys = vec![query_route::Index {
                keys: doc! { "_id": 1 },
                unique: true,
            }];
            if let Ok(mut cursor) = own
                .collection::<Document>(&command.collection)
                .list_indexes()
                .await
            {
                keys.clear();
                while let Some(index) = cursor.try_next().await.expect("an index") {
                    let unique = index
                        .options
                        .as_ref()
                        .and_then(|o| o.unique)
                        .unwrap_or(false);
                    keys.push(query_route::Index {
                        keys: index.keys,
                        unique,
                    });
                }
            }
            indexes.insert(command.collection.clone(), keys);
        }
        let known = &indexes[&command.collection];
        for (filter, or_routes) in filters(command) {
            if let Err(why) = query_route::served(&filter, known, or_routes) {
                scanned.push(format!("{} {}: {why}", command.name, command.collection));
            }
        }
    }
    assert!(
        scanned.is_empty(),
        "queries secantusd-rs would not serve from an index:\n{}",
        scanned.join("\n")
    );
    app.cleanup().await;
}
