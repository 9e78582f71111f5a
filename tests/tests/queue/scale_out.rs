//! Scale-out with real processes (issue 12): two `api`, three `workers`
//! (two on the provider-bound queues, one on the knowledge queues, which
//! owns the embedded vector store) and two `scheduler` processes, each its
//! own OS process running its binary's entry point ([`child_process`]), all
//! on one Redis namespace and one database, as the README's "Running at
//! scale" starts them. Traffic goes through both apis; one process of each kind is
//! killed with SIGKILL in the middle of it, and nothing is lost.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bson::doc;
use futures::TryStreamExt;
use serde_json::json;

use aigentable_jobs::JobStatus;
use aigentable_jobs::record::JobRecord;
use aigentable_tests::fake_openai::FakeOpenAi;
use aigentable_tests::fake_providers::{
    FakeProviders, app_with_fake_and, create_agent, create_live_channel, post_meta, whatsapp_text,
};
use aigentable_tests::partition::{Partition, host_port};
use aigentable_tests::services::free_port;
use aigentable_tests::socket::connect;
use aigentable_tests::stats::{cpu_seconds, status_kib};
use aigentable_tests::{Session, TestApp};

use super::ChildTest;
use super::faults::{assert_answered_once, assert_jobs_ended};

/// Which binary a child process is, and its command line (JSON).
const CHILD_BINARY: &str = "AIGENTABLE_SCALE_CHILD_BINARY";
const CHILD_ARGS: &str = "AIGENTABLE_SCALE_CHILD_ARGS";

/// The body of one process of the fleet: this test binary, started again,
/// runs the `cli::run` of `api`, `workers` or `scheduler`, which is all
/// those binaries' `main` does; configured, like them, only by its
/// environment and command line. (Building the binaries themselves here
/// would compile the workspace a second time with other features.)
#[tokio::test(flavor = "multi_thread")]
#[ignore = "a process of the scale-out test: it runs only as that test's child"]
async fn child_process() {
    let Ok(binary) = std::env::var(CHILD_BINARY) else {
        return;
    };
    let args: Vec<String> = std::env::var(CHILD_ARGS)
        .ok()
        .and_then(|a| serde_json::from_str(&a).ok())
        .unwrap_or_default();
    let result = match binary.as_str() {
        "api" => aigentable_api::cli::run(args).await,
        "workers" => aigentable_workers::cli::run(args).await,
        "scheduler" => aigentable_scheduler::cli::run(args).await,
        other => panic!("unknown binary {other}"),
    };
    if let Err(e) = result {
        eprintln!("{binary} failed: {e:#}");
        std::process::exit(1);
    }
}

/// One process of the platform, its output in `<logs>/<name>.log`;
/// killed (SIGKILL) when dropped.
struct Proc {
    name: String,
    child: ChildTest,
    log: PathBuf,
    /// The port its probes answer on (`/readyz`, `/healthz`).
    probe_port: u16,
}

impl Proc {
    fn spawn(
        name: &str,
        binary: &str,
        args: &[&str],
        env: &HashMap<String, String>,
        extra: &[(&str, String)],
        logs: &Path,
        probe_port: u16,
    ) -> Self {
        let log = logs.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let mut command = ChildTest::command();
        command
            .env(CHILD_BINARY, binary)
            .env(CHILD_ARGS, serde_json::to_string(args).expect("arguments"))
            // No stray .env: the configuration is exactly `env`.
            .current_dir(logs)
            .envs(env)
            .envs(extra.iter().map(|(k, v)| (*k, v.as_str())))
            .env("RUST_LOG", "warn")
            // Plain text: the schedule's check reads the scheduler's log.
            .env("NO_COLOR", "1")
            .stdout(out)
            .stderr(err);
        let child = ChildTest::spawn("scale_out::child_process", command)
            .unwrap_or_else(|e| panic!("{name} started: {e}"));
        Self {
            name: name.to_owned(),
            child,
            log,
            probe_port,
        }
    }

    fn alive(&mut self) -> bool {
        self.child.alive()
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Waits until `/readyz` answers 200; panics with its log when the
    /// process exits or takes over a minute.
    async fn wait_ready(&mut self, http: &reqwest::Client) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let url = format!("http://127.0.0.1:{}/readyz", self.probe_port);
        loop {
            assert!(
                self.alive(),
                "{} exited at start:\n{}",
                self.name,
                self.log_tail()
            );
            if let Ok(r) = http.get(&url).send().await
                && r.status().is_success()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} never became ready:\n{}",
                self.name,
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Resident memory (MiB) and CPU time used so far (s), from /proc.
    fn usage(&self) -> Option<(f64, f64)> {
        let pid = self.child.id();
        let rss_kib = status_kib(pid, "VmRSS").ok()? as f64;
        Some((rss_kib / 1024.0, cpu_seconds(pid)?))
    }
}

const PNID: &str = "SCALE_PN";
const APP_SECRET: &str = "scale-secret";
const SWEEP_EVERY_SECS: i64 = 2;

/// The queues of each workers role, as in the Procfile.
const FAST_QUEUES: &str = "inbound,outbound,emails,integrations,maintenance";
const KNOWLEDGE_QUEUES: &str = "replies,search,ingest,training";

/// A `workers` process on `queues`, with its own metrics port; a killed
/// one's jobs are taken over within seconds, a stopped one drains for 2 s.
fn workers_process(name: &str, queues: &str, env: &HashMap<String, String>, logs: &Path) -> Proc {
    let port = free_port();
    Proc::spawn(
        name,
        "workers",
        &["--queues", queues],
        env,
        &[
            ("WORKER_METRICS_PORT", port.to_string()),
            ("WORKER_LEASE_SECS", "3".to_owned()),
            ("WORKER_SHUTDOWN_GRACE_SECS", "2".to_owned()),
        ],
        logs,
        port,
    )
}

struct Fleet {
    apis: Vec<Proc>,
    workers: Vec<Proc>,
    schedulers: Vec<Proc>,
}

impl Fleet {
    async fn start(env: &HashMap<String, String>, logs: &Path) -> Self {
        let api = |name: &str| {
            let port = free_port();
            Proc::spawn(
                name,
                "api",
                &[],
                env,
                &[("PORT", port.to_string())],
                logs,
                port,
            )
        };
        let workers = |name: &str, queues: &str| workers_process(name, queues, env, logs);
        let scheduler = |name: &str| {
            let port = free_port();
            Proc::spawn(
                name,
                "scheduler",
                &[],
                env,
                &[
                    ("SCHEDULER_METRICS_PORT", port.to_string()),
                    ("SCHEDULE_SWEEP", format!("*/{SWEEP_EVERY_SECS} * * * * *")),
                    ("SCHEDULE_ROLLUP", String::new()),
                    ("SCHEDULE_BACKUP", String::new()),
                ],
                logs,
                port,
            )
        };
        let mut fleet = Fleet {
            apis: vec![api("api-a"), api("api-b")],
            workers: vec![
                workers("workers-fast-1", FAST_QUEUES),
                workers("workers-fast-2", FAST_QUEUES),
                workers("workers-knowledge", KNOWLEDGE_QUEUES),
            ],
            schedulers: vec![scheduler("scheduler-1"), scheduler("scheduler-2")],
        };
        let http = reqwest::Client::new();
        for p in fleet.all_mut() {
            p.wait_ready(&http).await;
        }
        fleet
    }

    fn all_mut(&mut self) -> impl Iterator<Item = &mut Proc> {
        self.apis
            .iter_mut()
            .chain(self.workers.iter_mut())
            .chain(self.schedulers.iter_mut())
    }

    fn api_base(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.apis[i].probe_port)
    }

    /// Panics, with the logs of the dead, unless every process in `alive`
    /// runs.
    fn assert_alive(&mut self, expected: &[&str]) {
        for p in self.all_mut() {
            if expected.contains(&p.name.as_str()) {
                assert!(
                    p.alive(),
                    "{} exited during the run:\n{}",
                    p.name,
                    p.log_tail()
                );
            }
        }
    }
}

async fn customer_says(api: &TestApp, customer: &str, wamid: &str) {
    let body = whatsapp_text(PNID, customer, wamid, "where is my order?");
    let r = post_meta(api, "/api/v1/webhooks/whatsapp", &body, Some(APP_SECRET)).await;
    assert!(r.status.is_success(), "webhook {wamid}: {}", r.status);
}

fn sends(fake: &FakeProviders) -> HashMap<String, usize> {
    let mut per: HashMap<String, usize> = HashMap::new();
    for r in fake.requests_to(&format!("/{PNID}/messages")) {
        if let Some(to) = r.body["to"].as_str() {
            *per.entry(to.to_owned()).or_default() += 1;
        }
    }
    per
}

/// An agent test (`POST /agents/:id/test`) through `api`, answered by the
/// knowledge workers.
async fn agent_test(api: &TestApp, s: &Session, agent: &str) {
    let r = api
        .post(
            &format!("/api/v1/agents/{agent}/test"),
            s,
            json!({ "message": "where is my order?" }),
        )
        .await;
    assert_eq!(r.status, reqwest::StatusCode::ACCEPTED, "{:?}", r.body);
    let job = r.body["jobId"].as_str().unwrap_or_default().to_owned();
    let record = api.job_finished(s, &job).await;
    assert_eq!(record["status"], "SUCCEEDED", "agent test: {record}");
}

/// The ticks a scheduler's log says it could not enqueue (unix seconds).
fn failed_ticks(log: &Path) -> Vec<i64> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("scheduled job could not be enqueued"))
        .filter_map(|l| {
            let (_, rest) = l.split_once(" tick=")?;
            rest.split(' ').next()?.parse().ok()
        })
        .collect()
}

/// Two apis, three workers processes split by queue and two schedulers;
/// webhooks, uploads and agent tests through both apis; a socket on api A
/// sees the work api B accepted; then one api, one workers process and
/// one scheduler are killed with SIGKILL while replies are in flight, and
/// the rest carries on: every customer is answered (twice only after a
/// send in doubt), every job ends once, each sweep tick ran once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_processes_of_each_kind_share_the_work_and_survive_a_kill_of_each() {
    const PER_WAVE: usize = 16;
    let (app, fake) = app_with_fake_and(&[], false).await;
    let logs = std::env::temp_dir().join(format!(
        "aigentable-scale-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&logs).expect("log directory");
    let started = Instant::now();
    let mut fleet = Fleet::start(&app.env, &logs).await;
    eprintln!("7 processes ready in {:?}", started.elapsed());
    let (a, b) = (
        app.client_for(&fleet.api_base(0)),
        app.client_for(&fleet.api_base(1)),
    );

    let admin = a.register("Scale").await;
    let llm = FakeOpenAi::start().await;
    let r = b
        .post(
            "/api/v1/ai-providers",
            &admin,
            json!({"name": "fake", "type": "OPENAI_COMPATIBLE", "baseUrl": llm.base_url(),
                   "apiKey": "sk-scale-0000", "chatModel": "scale-model", "isDefault": true}),
        )
        .await;
    assert!(r.status.is_success(), "{:?}", r.body);
    let agent = create_agent(&a, &admin).await;
    create_live_channel(
        &b,
        &admin,
        json!({"type": "WHATSAPP", "name": "scale", "agentId": agent,
               "config": {"phoneNumberId": PNID, "accessToken": "scale-token", "appSecret": APP_SECRET}}),
    )
    .await;

    // A socket on api A sees the ingestion that api B accepted and the
    // knowledge workers ran.
    let mut socket = connect(
        &a.base,
        "/api/v1",
        json!({ "token": admin.token, "tenantId": admin.tenant_id }),
    )
    .await
    .joined()
    .await;
    let document = b
        .upload_text(
            &admin,
            "returns.txt",
            "Orders ship within two days. Returns are free for thirty days.",
            Some(&agent),
        )
        .await;
    let ready_seen = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let Some(event) = socket.next_named("document-updated", 60).await else {
                return false;
            };
            if event["id"] == document.as_str() && event["status"] == "READY" {
                return true;
            }
        }
    })
    .await;
    assert_eq!(
        ready_seen,
        Ok(true),
        "api A's socket saw the document api B accepted become READY"
    );
    agent_test(&a, &admin, &agent).await;
    agent_test(&b, &admin, &agent).await;

    // Wave one through both apis, replies slow enough to be in flight when
    // the kills come.
    llm.set_delay(Duration::from_millis(250));
    for i in 0..PER_WAVE {
        let api = if i % 2 == 0 { &a } else { &b };
        customer_says(api, &format!("5588{i:04}"), &format!("wamid.scale1.{i}")).await;
    }
    let some = app
        .eventually(Duration::from_secs(60), || async {
            (sends(&fake).len() >= 3).then_some(())
        })
        .await;
    assert!(some.is_some(), "the first replies went out");
    fleet.assert_alive(&[
        "api-a",
        "api-b",
        "workers-fast-1",
        "workers-fast-2",
        "workers-knowledge",
        "scheduler-1",
        "scheduler-2",
    ]);
    let before_kill = sends(&fake).len();
    fleet.apis[1].child.kill();
    fleet.workers[0].child.kill();
    fleet.schedulers[0].child.kill();
    let killed_at = Instant::now();

    // Wave two through the api left, and the rest of the traffic.
    for i in PER_WAVE..2 * PER_WAVE {
        customer_says(&a, &format!("5588{i:04}"), &format!("wamid.scale2.{i}")).await;
    }
    let second_document = a
        .upload_text(&admin, "hours.txt", "We answer every day.", Some(&agent))
        .await;
    a.wait_document_ready(&admin, &second_document).await;
    agent_test(&a, &admin, &agent).await;

    let all = app
        .eventually(Duration::from_secs(120), || async {
            (sends(&fake).len() >= 2 * PER_WAVE).then_some(())
        })
        .await;
    assert!(
        all.is_some(),
        "every customer was answered: {} of {} ({before_kill} before the kills)",
        sends(&fake).len(),
        2 * PER_WAVE
    );
    eprintln!(
        "all {} customers answered {:?} after the kills ({before_kill} before them)",
        2 * PER_WAVE,
        killed_at.elapsed()
    );
    fleet.assert_alive(&[
        "api-a",
        "workers-fast-2",
        "workers-knowledge",
        "scheduler-2",
    ]);

    // Usage of the survivors after this load (CPU since start), for the README's figures.
    let mut usage = BTreeMap::new();
    for p in fleet.all_mut() {
        if let Some(u) = p.usage() {
            usage.insert(p.name.clone(), u);
        }
    }
    for (name, (rss, cpu)) in &usage {
        eprintln!("{name:<18} rss {rss:>6.1} MiB  cpu {cpu:>5.2} s");
    }

    // A deploy replaces the knowledge workers: SIGTERM while a reply is
    // being generated. Readiness fails at once while it drains; the reply
    // goes back to the queue and its replacement answers.
    llm.set_delay(Duration::from_secs(20));
    let asked = llm.chat_requests().len();
    customer_says(&a, "55889999", "wamid.scale.drain").await;
    let generating = app
        .eventually(Duration::from_secs(30), || async {
            (llm.chat_requests().len() > asked).then_some(())
        })
        .await;
    assert!(generating.is_some(), "the last reply is being generated");
    let http = reqwest::Client::new();
    let knowledge = &mut fleet.workers[2];
    let readyz = format!("http://127.0.0.1:{}/readyz", knowledge.probe_port);
    knowledge.child.signal("-TERM");
    let mut draining_seen = false;
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline && !draining_seen {
        if let Ok(r) = http.get(&readyz).send().await {
            draining_seen = r.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        draining_seen,
        "/readyz answered 503 while the process drained"
    );
    let drained = knowledge.child.wait_exit(Duration::from_secs(15));
    assert!(
        drained.is_some_and(|s| s.success()),
        "the knowledge workers drained and exited: {drained:?}\n{}",
        knowledge.log_tail()
    );
    llm.set_delay(Duration::ZERO);
    let mut replacement = workers_process("workers-knowledge-2", KNOWLEDGE_QUEUES, &app.env, &logs);
    replacement.wait_ready(&http).await;
    fleet.workers.push(replacement);
    let customers = 2 * PER_WAVE + 1;
    let answered = app
        .eventually(Duration::from_secs(60), || async {
            (sends(&fake).len() >= customers).then_some(())
        })
        .await;
    assert!(
        answered.is_some(),
        "the replacement answered the last customer"
    );
    // Twice only after a send in doubt.
    assert_answered_once(&app, &admin.tenant_id, customers, &sends(&fake)).await;

    // The schedule is judged over six ticks at least: the faults above can
    // be ridden out sooner than that.
    let ticked = app
        .eventually(Duration::from_secs(30), || async {
            let sweeps = app
                .platform
                .db
                .unscoped::<JobRecord>("jobs")
                .count_documents(doc! { "type": "sweep" })
                .await
                .unwrap_or(0);
            (sweeps >= 6).then_some(())
        })
        .await;
    assert!(ticked.is_some(), "the surviving scheduler kept ticking");
    // The schedulers stop; then every job ends once.
    let sched_stop = fleet.schedulers[1].child.terminate(Duration::from_secs(10));
    assert!(
        sched_stop.is_some_and(|s| s.success()),
        "the scheduler stopped cleanly: {sched_stop:?}"
    );
    assert_jobs_ended(&app).await;
    let jobs: Vec<JobRecord> = app
        .platform
        .db
        .unscoped::<JobRecord>("jobs")
        .find(doc! {})
        .await
        .expect("jobs")
        .try_collect()
        .await
        .expect("jobs");
    // A sweep has one attempt by design (the next tick does the same
    // work): one that the kill interrupted may end DEAD; nothing else may.
    let failed: Vec<String> = jobs
        .iter()
        .filter(|j| {
            matches!(j.status, JobStatus::Failed | JobStatus::Dead) && j.job_type != "sweep"
        })
        .map(|j| format!("{} {} {:?}", j.job_type, j.id, j.last_error))
        .collect();
    assert!(failed.is_empty(), "no job failed: {failed:?}");
    app.allow_failed_jobs();

    // Each sweep tick was enqueued by one scheduler only, and none was
    // skipped while one scheduler ran. One tick may be missing: the one the
    // killed scheduler had claimed in the instant before its enqueue (its
    // claim holds for 30 s; the next ticks cover the same work).
    let mut ticks: BTreeMap<String, usize> = BTreeMap::new();
    // How late each tick's job was recorded, in seconds after the tick.
    let mut lateness: BTreeMap<chrono::DateTime<chrono::Utc>, f64> = BTreeMap::new();
    for j in jobs.iter().filter(|j| j.job_type == "sweep") {
        let tick = j
            .payload
            .as_document()
            .and_then(|p| p.get_str("tick").ok())
            .unwrap_or_default()
            .to_owned();
        if let Ok(at) = chrono::DateTime::parse_from_rfc3339(&tick) {
            let late = (j.created_at - at.with_timezone(&chrono::Utc)).as_seconds_f64();
            lateness.insert(at.with_timezone(&chrono::Utc), late);
        }
        *ticks.entry(tick).or_default() += 1;
    }
    let twice: Vec<&String> = ticks
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(t, _)| t)
        .collect();
    assert!(twice.is_empty(), "ticks enqueued twice: {twice:?}");
    let times: Vec<chrono::DateTime<chrono::Utc>> = lateness.keys().copied().collect();
    assert!(
        times.len() >= 5,
        "the sweep ran every {SWEEP_EVERY_SECS} s: {ticks:?}"
    );
    // A scheduler skips the ticks it cannot fire on time and fires the
    // latest of them late, once, at its next tick (`catch_up`, by design:
    // each sweep does the same work): ticks it got no CPU for (a run of
    // missing ticks that ends at a tick recorded over a second late), and
    // ticks whose enqueue failed (it logs each). Those are reported here;
    // a tick missing for neither reason was skipped unnoticed, and fails.
    let failed = failed_ticks(&fleet.schedulers[1].log);
    let (first, last) = (times[0], times[times.len() - 1]);
    let expected = (last - first).num_seconds() / SWEEP_EVERY_SECS + 1;
    let mut unnoticed = 0;
    for pair in times.windows(2) {
        let late = lateness.get(&pair[1]).copied().unwrap_or(0.0);
        let mut missing = pair[0] + chrono::TimeDelta::seconds(SWEEP_EVERY_SECS);
        while missing < pair[1] {
            if failed.contains(&missing.timestamp()) {
                eprintln!("tick {missing} skipped: its enqueue failed");
            } else if late > 1.0 {
                eprintln!(
                    "tick {missing} skipped, then {} fired {late:.1} s late (caught up)",
                    pair[1]
                );
            } else {
                unnoticed += 1;
            }
            missing += chrono::TimeDelta::seconds(SWEEP_EVERY_SECS);
        }
    }
    assert!(
        unnoticed <= 1,
        "{unnoticed} of {expected} ticks between {first} and {last} were skipped and never caught up: {lateness:?}\n{}",
        fleet.schedulers[1].log_tail()
    );

    // The survivors drain and exit cleanly.
    for p in fleet.all_mut().filter(|p| p.name.starts_with("workers")) {
        if p.alive() {
            let status = p.child.terminate(Duration::from_secs(15));
            assert!(
                status.is_some_and(|s| s.success()),
                "{} drained and exited: {status:?}\n{}",
                p.name,
                p.log_tail()
            );
        }
    }
    let _ = socket.client.disconnect().await;
    drop(fleet);
    let _ = std::fs::remove_dir_all(&logs);
    app.cleanup().await;
}

/// A `workers` process whose hand-back cannot finish (its MongoDB stopped
/// answering while it generated a reply) still exits
/// `WORKER_STOP_BUDGET_SECS` after its grace, saying so; the reply it held
/// runs again in the next process once its lease lapses, and the customer
/// is answered once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workers_process_whose_hand_back_hangs_still_exits_in_time() {
    const ALL_QUEUES: &str =
        "inbound,outbound,emails,integrations,maintenance,replies,search,ingest,training";
    let (app, fake) = app_with_fake_and(&[], false).await;
    let logs = std::env::temp_dir().join(format!(
        "aigentable-stuck-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&logs).expect("log directory");
    let mongo_uri = app.env.get("MONGODB_URI").cloned().unwrap_or_default();
    let link = Partition::start(host_port(&mongo_uri)).await;
    let mut env = app.env.clone();
    // Directly: a server that names its own address would otherwise be
    // reached around the relay.
    let routed = link.route(&mongo_uri);
    let routed = match routed.split_once("://") {
        Some((_, rest)) if !rest.contains('/') => format!("{routed}/"),
        _ => routed,
    };
    let sep = if routed.contains('?') { '&' } else { '?' };
    env.insert(
        "MONGODB_URI".to_owned(),
        format!("{routed}{sep}directConnection=true"),
    );
    env.insert("WORKER_STOP_BUDGET_SECS".to_owned(), "2".to_owned());
    let mut stuck = workers_process("workers-stuck", ALL_QUEUES, &env, &logs);
    stuck.wait_ready(&reqwest::Client::new()).await;

    let admin = app.register("Stuck").await;
    let llm = FakeOpenAi::start().await;
    let r = app
        .post(
            "/api/v1/ai-providers",
            &admin,
            json!({"name": "fake", "type": "OPENAI_COMPATIBLE", "baseUrl": llm.base_url(),
                   "apiKey": "sk-stuck-0000", "chatModel": "stuck-model", "isDefault": true}),
        )
        .await;
    assert!(r.status.is_success(), "{:?}", r.body);
    let agent = create_agent(&app, &admin).await;
    create_live_channel(
        &app,
        &admin,
        json!({"type": "WHATSAPP", "name": "stuck", "agentId": agent,
               "config": {"phoneNumberId": PNID, "accessToken": "stuck-token", "appSecret": APP_SECRET}}),
    )
    .await;
    // Longer than grace and budget together: the reply is still being
    // generated when the hand-back starts, which then waits on MongoDB.
    llm.set_delay(Duration::from_secs(30));
    customer_says(&app, "55770001", "wamid.stuck.1").await;
    let generating = app
        .eventually(Duration::from_secs(30), || async {
            (llm.chats_in_flight() == 1).then_some(())
        })
        .await;
    assert!(generating.is_some(), "the reply is being generated");
    link.cut();
    let signalled = Instant::now();
    let status = stuck.child.terminate(Duration::from_secs(20));
    let took = signalled.elapsed();
    // Grace 2 s + budget 2 s; without the bound, the hand-back waits for a
    // MongoDB that does not answer.
    assert!(
        status.is_some_and(|s| s.code() == Some(1)),
        "exited by its stop deadline within 20 s: {status:?} after {took:?}\n{}",
        stuck.log_tail()
    );
    assert!(
        stuck.log_tail().contains("the drain did not end in time"),
        "{}",
        stuck.log_tail()
    );
    eprintln!("exited {took:?} after SIGTERM");

    llm.set_delay(Duration::ZERO);
    let mut next = workers_process("workers-next", ALL_QUEUES, &app.env, &logs);
    next.wait_ready(&reqwest::Client::new()).await;
    let answered = app
        .eventually(Duration::from_secs(60), || async {
            (!sends(&fake).is_empty()).then_some(())
        })
        .await;
    assert!(
        answered.is_some(),
        "the customer was answered:\n{}",
        next.log_tail()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_answered_once(&app, &admin.tenant_id, 1, &sends(&fake)).await;
    assert_jobs_ended(&app).await;
    drop(next);
    app.cleanup().await;
    let _ = std::fs::remove_dir_all(&logs);
}
