//! Fault tests with real processes (issue 16): the workers run in a child
//! process (this test binary started again on [`child_workers_process`]),
//! which is killed with SIGKILL in the middle of the work, as a crash or an
//! OOM kill would, while the api in this process keeps accepting webhooks.

use std::collections::HashMap;
use std::process::Stdio;

use super::ChildTest;
use std::time::Duration;

use bson::doc;
use futures::TryStreamExt;
use serde_json::json;

use aigentable_jobs::queue::QueueConfig;
use aigentable_jobs::record::JobRecord;
use aigentable_jobs::types::{AnswerMessage, DeliverReply};
use aigentable_platform::Platform;
use aigentable_platform::model::Message;
use aigentable_tests::config_from;
use aigentable_tests::fake_openai::FakeOpenAi;
use aigentable_tests::fake_providers::{
    FakeProviders, app_with_fake_and, create_agent, create_live_channel, post_meta, whatsapp_text,
};
use aigentable_tests::partition::{Partition, host_port};
use aigentable_tests::services::{OwnMongo, OwnRedis, fresh_dir};
use aigentable_tests::{Session, TestApp};
use aigentable_workers::{WorkerSetup, WorkerState, run_with};

/// The parent's configuration variables, for the child.
const CHILD_ENV: &str = "AIGENTABLE_FAULT_CHILD_ENV";

/// The body of a workers process of a fault test: every default queue,
/// against the parent's database and namespace, with short leases so that
/// a killed process's jobs are taken over within seconds, until killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the workers process of a fault test: it runs only as that test's child"]
async fn child_workers_process() {
    let Ok(raw) = std::env::var(CHILD_ENV) else {
        return;
    };
    let vars: HashMap<String, String> = serde_json::from_str(&raw).expect("the parent's variables");
    let platform = Platform::connect(config_from(&vars))
        .await
        .expect("services are reachable");
    let state = WorkerState::new(platform)
        .expect("worker state")
        .with_vectors()
        .await
        .expect("vector store");
    let mut setup = WorkerSetup::connect(state, 8).await.expect("queue setup");
    setup.queue = QueueConfig {
        lease: Duration::from_secs(2),
        heartbeat: Duration::from_millis(400),
        idle_poll: Duration::from_millis(100),
        retry_base: Duration::from_millis(200),
        retry_cap: Duration::from_secs(2),
        ..QueueConfig::default()
    };
    // SIGTERM drains, as in production; the grace is short for the test.
    run_with(
        setup,
        &[],
        Duration::from_secs(2),
        aigentable_platform::shutdown::signal(),
    )
    .await
    .expect("workers ran");
}

/// A workers process; killed (SIGKILL) when dropped.
type WorkersProcess = ChildTest;

fn spawn_workers(env: &HashMap<String, String>) -> WorkersProcess {
    let mut command = ChildTest::command();
    command
        .env(CHILD_ENV, serde_json::to_string(env).expect("variables"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    ChildTest::spawn("faults::child_workers_process", command).expect("workers process started")
}

/// The WhatsApp number every fault test's channel answers on.
const PNID: &str = "FAULT_PN";
const APP_SECRET: &str = "fault-secret";

/// An api without workers, a tenant whose default AI provider is a fake
/// OpenAI server, an agent, and a live WhatsApp channel tested by the first
/// workers process (returned running).
struct Scene {
    app: TestApp,
    fake: FakeProviders,
    llm: FakeOpenAi,
    admin: Session,
    first: WorkersProcess,
}

impl Scene {
    async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// [`Self::start`] with configuration `overrides` (for the api and the
    /// workers processes alike).
    async fn start_with(overrides: &[(&str, &str)]) -> Self {
        Self::start_routed(overrides, |_| {}).await
    }

    /// [`Self::start_with`], the first workers process's configuration
    /// changed by `first`.
    async fn start_routed(
        overrides: &[(&str, &str)],
        first: impl FnOnce(&mut HashMap<String, String>),
    ) -> Self {
        let (app, fake) = app_with_fake_and(overrides, false).await;
        let admin = app.register("Faults").await;
        let llm = FakeOpenAi::start().await;
        let r = app
            .post(
                "/api/v1/ai-providers",
                &admin,
                json!({"name": "fake", "type": "OPENAI_COMPATIBLE", "baseUrl": llm.base_url(),
                       "apiKey": "sk-fault-0000", "chatModel": "fault-model", "isDefault": true}),
            )
            .await;
        assert!(r.status.is_success(), "{:?}", r.body);
        let agent = create_agent(&app, &admin).await;
        let mut first_env = app.env.clone();
        first(&mut first_env);
        let first = spawn_workers(&first_env);
        // Tested by the first workers process: Meta (the fake) confirms the
        // account, and webhooks reach the channel.
        create_live_channel(
            &app,
            &admin,
            json!({"type": "WHATSAPP", "name": "faults", "agentId": agent,
                   "config": {"phoneNumberId": PNID, "accessToken": "fault-token", "appSecret": APP_SECRET}}),
        )
        .await;
        Self {
            app,
            fake,
            llm,
            admin,
            first,
        }
    }

    /// A signed webhook: `customer` says something.
    async fn customer_says(&self, customer: &str, wamid: &str) {
        let body = whatsapp_text(PNID, customer, wamid, "where is my order?");
        let r = post_meta(
            &self.app,
            "/api/v1/webhooks/whatsapp",
            &body,
            Some(APP_SECRET),
        )
        .await;
        assert!(r.status.is_success(), "webhook {wamid}: {}", r.status);
    }

    /// `customers` write (numbers `{prefix}0000`, ...) while each reply
    /// takes 300 ms, so that many are in flight; returns once the first
    /// three were sent.
    async fn keep_busy(&self, customers: usize, prefix: &str) {
        self.llm.set_delay(Duration::from_millis(300));
        for i in 0..customers {
            self.customer_says(&format!("{prefix}{i:04}"), &format!("wamid.{prefix}{i}"))
                .await;
        }
        let some = self
            .app
            .eventually(Duration::from_secs(60), || async {
                (self.sends().len() >= 3).then_some(())
            })
            .await;
        assert!(some.is_some(), "the first replies went out");
    }

    /// Sends to customers at the fake WhatsApp API, per customer.
    fn sends(&self) -> HashMap<String, usize> {
        let mut per: HashMap<String, usize> = HashMap::new();
        for r in self.fake.requests_to(&format!("/{PNID}/messages")) {
            if let Some(to) = r.body["to"].as_str() {
                *per.entry(to.to_owned()).or_default() += 1;
            }
        }
        per
    }
}

/// A workers process is killed with SIGKILL while replies are being
/// generated and sent; another one takes over. Every customer gets an
/// answer, a customer answered twice only when the first send was in doubt
/// (the reply says `resent`), and every job ends once, none failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_workers_process_leaves_no_customer_unanswered() {
    const CUSTOMERS: usize = 30;
    let mut scene = Scene::start().await;
    scene.keep_busy(CUSTOMERS, "5577").await;
    let app = &scene.app;
    assert!(
        scene.first.alive(),
        "the first workers process ran until the kill"
    );
    let answered_before_kill = scene.sends().len();
    scene.first.kill();
    let killed_at = std::time::Instant::now();

    let mut second = spawn_workers(&app.env);
    let all = app
        .eventually(Duration::from_secs(240), || async {
            (scene.sends().len() >= CUSTOMERS).then_some(())
        })
        .await;
    let per = scene.sends();
    if all.is_none() {
        dump_state(app).await;
    }
    eprintln!(
        "all answered {:?} after the kill ({answered_before_kill} before it)",
        killed_at.elapsed()
    );
    assert!(
        all.is_some(),
        "every customer was answered: {} of {CUSTOMERS} ({answered_before_kill} before the kill)",
        per.len()
    );
    assert!(
        second.alive(),
        "the second workers process is still running"
    );

    // A customer answered twice: only a reply whose send was in doubt.
    assert_answered_once(app, &scene.admin.tenant_id, CUSTOMERS, &scene.sends()).await;

    // Every job ends once: none left queued or running, none failed.
    assert_jobs_ended(app).await;
    assert_no_job_failed(app).await;
    second.kill();
    scene.app.cleanup().await;
}

/// A workers process gets SIGTERM while a reply is being generated (a slow
/// model): it stops taking jobs, waits its grace period, hands the reply
/// back and exits; another process answers the customer once, and the
/// reply's job has spent one attempt only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_workers_process_hands_its_reply_back_without_spending_an_attempt() {
    let mut scene = Scene::start().await;
    let (app, llm) = (&scene.app, &scene.llm);
    // Longer than the grace period: the reply cannot finish in time.
    llm.set_delay(Duration::from_secs(20));
    scene.customer_says("5566001", "wamid.drain1").await;
    let asked = app
        .eventually(Duration::from_secs(30), || async {
            (!llm.chat_requests().is_empty()).then_some(())
        })
        .await;
    assert!(asked.is_some(), "the reply is being generated");

    let status = scene.first.terminate(Duration::from_secs(15));
    assert!(
        status.is_some_and(|s| s.success()),
        "the workers process drained and exited: {status:?}"
    );
    llm.set_delay(Duration::ZERO);
    // Handed back to the queue with no attempt spent.
    let question = app
        .platform
        .db
        .unscoped::<bson::Document>("messages")
        .find_one(doc! { "externalMessageId": "wamid.drain1" })
        .await
        .ok()
        .flatten()
        .expect("the customer's message is stored");
    let reply_job = format!("answer-{}", question.get_str("_id").unwrap_or_default());
    assert_eq!(
        app.job_attempts::<AnswerMessage>(&reply_job).await,
        0,
        "the hand-back spent no attempt"
    );
    let second = spawn_workers(&app.env);
    let sent = app
        .eventually(Duration::from_secs(60), || async {
            (!scene.sends().is_empty()).then_some(())
        })
        .await;
    if sent.is_none() {
        dump_state(app).await;
    }
    assert!(sent.is_some(), "the customer was answered");
    app.unrecorded_job_ran::<AnswerMessage>(&reply_job).await;
    assert_eq!(
        llm.chat_requests().len(),
        2,
        "asked twice: the interrupted run and the one that answered"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(scene.sends().values().sum::<usize>(), 1, "answered once");
    let pending = scene.app.settled_by_workers(Duration::from_secs(30)).await;
    assert!(
        pending.is_empty(),
        "the workers settled every job: {pending:?}"
    );
    drop(second);
    scene.app.cleanup().await;
}

/// Redis (its own instance, AOF on every write) is killed and restarted
/// 2 s later while 20 customers' replies are being generated and sent:
/// the api and the workers process stay up, every customer is answered
/// (twice only after a send in doubt), and every job ends once, none
/// failed: an enqueue or a settle that met the outage waited for Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_under_load_leaves_no_customer_unanswered() {
    let mut redis = OwnRedis::start().await;
    let url = redis.url();
    let scene = Scene::start_with(&[("REDIS_URL", url.as_str())]).await;
    ride_out(scene, "redis", || async move {
        redis.down();
        tokio::time::sleep(Duration::from_secs(2)).await;
        redis.up().await;
        redis
    })
    .await;
}

/// A workers process is killed with SIGKILL while documents are being
/// ingested, and the next one finishes them: every document ends READY
/// with one SUCCEEDED ingestion job (none failed), and each document's own
/// sentence is found once in a search, not twice (the interrupted run left
/// no duplicate passages behind).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_workers_process_leaves_every_document_indexed_once() {
    const DOCS: usize = 10;
    let mut scene = Scene::start().await;
    let app = &scene.app;
    let admin = &scene.admin;
    let mut ids = Vec::new();
    for i in 0..DOCS {
        let mut text = String::with_capacity(160_000);
        for p in 0..1_500 {
            text.push_str(&format!(
                "Paragraph {p} of manual {i}: care instructions, spare parts and warranty notes.\n\n"
            ));
        }
        text.push_str(&format!(
            "The service code of manual {i} is zebra{i}quartz."
        ));
        ids.push(
            app.upload_text(admin, &format!("manual-{i}.txt"), &text, None)
                .await,
        );
    }
    let ready = || async {
        let mut n = 0;
        for id in &ids {
            let r = app.get(&format!("/api/v1/documents/{id}"), admin).await;
            n += usize::from(r.body["status"] == "READY");
        }
        n
    };
    let some = app
        .eventually(Duration::from_secs(120), || async {
            (ready().await >= 1).then_some(())
        })
        .await;
    assert!(some.is_some(), "the first document was indexed");
    scene.first.kill();
    let at_kill = ready().await;
    eprintln!("{at_kill} of {DOCS} documents READY at the kill");
    let second = spawn_workers(&app.env);
    for id in &ids {
        let doc = app
            .eventually(Duration::from_secs(120), || async {
                let r = app.get(&format!("/api/v1/documents/{id}"), admin).await;
                (r.body["status"] == "READY").then_some(r.body)
            })
            .await;
        assert!(doc.is_some(), "document {id} was indexed");
    }
    // The handler marks the document READY before its job record settles.
    let ingestions = || async {
        app.platform
            .db
            .unscoped::<JobRecord>("jobs")
            .find(doc! { "type": "ingest_document" })
            .await
            .expect("jobs")
            .try_collect::<Vec<_>>()
            .await
            .expect("jobs")
    };
    let settled = app
        .eventually(Duration::from_secs(30), || async {
            let jobs = ingestions().await;
            jobs.iter().all(|j| j.status.is_terminal()).then_some(jobs)
        })
        .await;
    let jobs = match settled {
        Some(jobs) => jobs,
        None => ingestions().await,
    };
    assert_eq!(jobs.len(), DOCS, "one ingestion job per document");
    assert!(
        jobs.iter()
            .all(|j| j.status == aigentable_jobs::JobStatus::Succeeded),
        "every ingestion succeeded: {:?}",
        jobs.iter()
            .map(|j| (j.status, j.attempts, j.last_error.clone()))
            .collect::<Vec<_>>()
    );
    for (i, id) in ids.iter().enumerate() {
        let code = format!("zebra{i}quartz");
        let r = app
            .get(
                &format!("/api/v1/search/documents?q={code}&limit=20"),
                admin,
            )
            .await;
        assert!(r.status.is_success(), "{:?}", r.body);
        let found: Vec<&serde_json::Value> = r.body["results"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|h| h["snippet"].as_str().is_some_and(|t| t.contains(&code)))
            .collect();
        assert_eq!(
            found.len(),
            1,
            "manual {i}'s passage is indexed once: {found:?}"
        );
        assert_eq!(found[0]["documentId"], id.as_str());
    }
    let pending = scene.app.settled_by_workers(Duration::from_secs(30)).await;
    assert!(
        pending.is_empty(),
        "the workers settled every job: {pending:?}"
    );
    drop(second);
    scene.app.cleanup().await;
}

/// MongoDB (its own secantusd-rs) is restarted while 20 customers' replies
/// are being generated and sent: the driver waits for the server to come
/// back rather than failing, the workers process stays up, every customer
/// is answered (twice only after a send in doubt) and every job ends once,
/// none failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mongodb_restart_under_load_leaves_no_customer_unanswered() {
    let mut mongo = OwnMongo::start().await;
    let uri = mongo.uri();
    let scene = Scene::start_with(&[("MONGODB_URI", uri.as_str())]).await;
    // Dropped after the scene's cleanup, which needs the database.
    let _mongo = ride_out(scene, "mongodb", || async move {
        mongo.down();
        mongo.up().await;
        mongo
    })
    .await;
}

/// A workers process is cut off from Redis (a network partition: its
/// requests get no answer, while MongoDB, the AI provider and WhatsApp stay
/// reachable) in the middle of a reply that takes longer than its lease.
/// Another workers process takes the reply over once the lease lapses; the
/// cut-off run stopped itself before that, so the provider never generates
/// the reply twice at once, and the customer gets one answer, also after
/// the link heals and the cut-off process catches up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workers_process_cut_off_from_redis_never_runs_a_reply_twice_at_once() {
    let link = Partition::start(host_port(&aigentable_tests::redis_url())).await;
    // Each process has its own embedded vector store (the tenant has no
    // documents), so that both can serve replies.
    let own_store = fresh_dir("cut-off-store").to_string_lossy().into_owned();
    let mut scene = Scene::start_routed(&[], |env| {
        if let Some(url) = env.get("REDIS_URL").cloned() {
            env.insert("REDIS_URL".to_owned(), link.route(&url));
        }
        env.insert("DATA_DIR".to_owned(), own_store.clone());
    })
    .await;
    let app = &scene.app;
    // Longer than the conversation's reply lock (10 s), which the cut-off
    // run holds and cannot release: without the stop, the successor's
    // generation would start while the cut-off one still runs.
    scene.llm.set_delay(Duration::from_secs(14));
    scene.customer_says("55660001", "wamid.cut.1").await;
    let generating = app
        .eventually(Duration::from_secs(30), || async {
            (scene.llm.chats_in_flight() == 1).then_some(())
        })
        .await;
    assert!(generating.is_some(), "the reply is being generated");
    link.cut();
    let cut_at = std::time::Instant::now();
    let _second = spawn_workers(&app.env);
    let answered = app
        .eventually(Duration::from_secs(60), || async {
            (!scene.sends().is_empty()).then_some(())
        })
        .await;
    if answered.is_none() {
        dump_state(app).await;
    }
    assert!(answered.is_some(), "the customer was answered");
    eprintln!("answered {:?} after the cut", cut_at.elapsed());
    link.heal();
    // The cut-off process catches up: its stale outcomes are ignored.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        scene.llm.chat_requests().len(),
        2,
        "the cut-off run and its successor each asked once"
    );
    assert_eq!(
        scene.llm.max_chat_in_flight(),
        1,
        "never two generations of the reply at once"
    );
    assert_eq!(scene.sends().get("55660001"), Some(&1), "one answer");
    assert_answered_once(app, &scene.admin.tenant_id, 1, &scene.sends()).await;
    assert_jobs_ended(app).await;
    assert_no_job_failed(app).await;
    assert!(scene.first.alive(), "the cut-off process rode it out");
    scene.first.kill();
    scene.app.cleanup().await;
    let _ = std::fs::remove_dir_all(&own_store);
}

/// 20 customers write while replies are slow; `outage` takes a service
/// down and brings it back once the first replies went out; then every
/// customer is answered once, every job ends, none failed, and the workers
/// process rode it out. Answers what `outage` answered (the service, kept
/// alive until the scene's cleanup is done).
async fn ride_out<S, F, Fut>(mut scene: Scene, service: &str, outage: F) -> S
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = S>,
{
    const CUSTOMERS: usize = 20;
    scene.keep_busy(CUSTOMERS, "5599").await;
    let app = &scene.app;
    let stopped = std::time::Instant::now();
    let kept = outage().await;
    let back = std::time::Instant::now();
    eprintln!("{service} was away {:?}", back - stopped);
    let all = app
        .eventually(Duration::from_secs(120), || async {
            (scene.sends().len() >= CUSTOMERS).then_some(())
        })
        .await;
    if all.is_none() {
        dump_state(app).await;
    }
    assert!(
        all.is_some(),
        "every customer was answered: {} of {CUSTOMERS}",
        scene.sends().len()
    );
    eprintln!("all answered {:?} after {service} was back", back.elapsed());
    assert!(scene.first.alive(), "the workers process rode it out");
    assert_answered_once(app, &scene.admin.tenant_id, CUSTOMERS, &scene.sends()).await;
    assert_jobs_ended(app).await;
    assert_no_job_failed(app).await;
    // A reply job re-run after the outage may queue the delivery of a reply
    // sent meanwhile once more (it finds it sent and does nothing): every
    // job in Redis must still be run before the process stops.
    let pending = app.settled_by_workers(Duration::from_secs(30)).await;
    if !pending.is_empty() {
        dump_state(app).await;
    }
    assert!(
        pending.is_empty(),
        "the workers ran every job Redis holds: {pending:?}"
    );
    scene.first.kill();
    scene.app.cleanup().await;
    kept
}

/// One reply stored per customer of the tenant, and a customer answered
/// twice (`sends`: sends per customer at the fake provider) only when the
/// first send was in doubt: the reply says `resent`.
pub(crate) async fn assert_answered_once(
    app: &TestApp,
    tenant_id: &str,
    customers: usize,
    sends: &HashMap<String, usize>,
) {
    let replies: Vec<Message> = app
        .platform
        .db
        .unscoped::<Message>("messages")
        .find(doc! { "tenantId": tenant_id, "direction": "OUTBOUND" })
        .await
        .expect("replies")
        .try_collect()
        .await
        .expect("replies");
    assert_eq!(replies.len(), customers, "one reply stored per customer");
    let doubled = sends.values().filter(|n| **n > 1).count();
    let resent = replies
        .iter()
        .filter(|m| m.metadata.get_bool("resent").unwrap_or(false))
        .count();
    assert!(
        doubled <= resent,
        "{doubled} customers answered twice, {resent} replies were in doubt and sent again"
    );
}

/// Every job record reaches an outcome (none left QUEUED or RUNNING), so
/// does every outbound message (a bot reply's delivery has no record: the
/// message's status is its record), and no job is left in Redis (an
/// unrecorded one, such as a duplicate delivery waiting out another
/// attempt's send, has nothing else to show it), within 90 s; what is left
/// is printed otherwise.
pub(crate) async fn assert_jobs_ended(app: &TestApp) {
    let settled = app
        .eventually(Duration::from_secs(90), || async {
            let db = &app.platform.db;
            let open = db
                .unscoped::<JobRecord>("jobs")
                .count_documents(doc! { "status": { "$in": ["QUEUED", "RUNNING"] } })
                .await
                .unwrap_or(1);
            let unsent = db
                .unscoped::<Message>("messages")
                .count_documents(
                    doc! { "direction": "OUTBOUND", "status": { "$in": ["QUEUED", "SENDING"] } },
                )
                .await
                .unwrap_or(1);
            if open > 0 || unsent > 0 {
                return None;
            }
            app.pending_jobs().await.is_empty().then_some(())
        })
        .await;
    if settled.is_none() {
        dump_state(app).await;
    }
    assert!(
        settled.is_some(),
        "every job reached an outcome and left the queues"
    );
}

async fn assert_no_job_failed(app: &TestApp) {
    let failed = app
        .platform
        .db
        .unscoped::<JobRecord>("jobs")
        .count_documents(doc! { "status": { "$in": ["FAILED", "DEAD"] } })
        .await
        .expect("count");
    assert_eq!(failed, 0, "no job failed");
}

/// What is left unfinished, printed when the test is about to fail.
async fn dump_state(app: &TestApp) {
    eprintln!("jobs in redis: {:?}", app.pending_jobs().await);
    let db = &app.platform.db;
    let jobs: Vec<bson::Document> = db
        .unscoped::<bson::Document>("jobs")
        .find(doc! { "status": { "$ne": "SUCCEEDED" } })
        .await
        .expect("jobs")
        .try_collect()
        .await
        .expect("jobs");
    let ns = &app.platform.config.redis_namespace;
    let mut conn = app.platform.kv.conn();
    for j in jobs {
        let (job_type, id) = (
            j.get_str("type").unwrap_or_default(),
            j.get_str("_id").unwrap_or_default(),
        );
        // Whether Redis holds it tells a lost push from a skipped run.
        let keys = aigentable_jobs::queue::QueueKeys::new(&format!(
            "{}:{job_type}",
            aigentable_jobs::queue_key(ns, j.get_str("queue").unwrap_or_default())
        ));
        let in_redis = aigentable_jobs::queue::presence(&mut conn, &keys, id).await;
        eprintln!(
            "unfinished job {job_type} {id} {} attempts {:?} last error {:?} created {:?} updated {:?} in redis {in_redis:?}",
            j.get_str("status").unwrap_or_default(),
            j.get("attempts"),
            j.get_str("lastError").ok(),
            j.get("createdAt"),
            j.get("updatedAt")
        );
    }
    let messages: Vec<bson::Document> = db
        .unscoped::<bson::Document>("messages")
        .find(doc! { "direction": "OUTBOUND", "status": { "$ne": "SENT" } })
        .await
        .expect("messages")
        .try_collect()
        .await
        .expect("messages");
    let delivery_keys = aigentable_jobs::queue::QueueKeys::for_job::<DeliverReply>(ns);
    for m in messages {
        let id = m.get_str("_id").unwrap_or_default();
        let in_redis =
            aigentable_jobs::queue::presence(&mut conn, &delivery_keys, &format!("deliver-{id}"))
                .await;
        eprintln!(
            "unsent message {id} {} {:?} updated {:?}, its deliver_reply in redis {in_redis:?}",
            m.get_str("status").unwrap_or_default(),
            m.get_str("senderType").ok(),
            m.get("updatedAt")
        );
    }
}
