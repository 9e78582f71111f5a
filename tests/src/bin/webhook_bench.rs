//! Webhook benchmark against the real api (port 0) with in-process workers,
//! the local Redis and MongoDB, and the fake provider server:
//!
//! ```sh
//! cargo run --release -p aigentable-tests --bin webhook_bench -- [--webhooks 2000] [--clients 32] [--samples 50] [--returning] [--concurrency N] [--uncounted] [--documents N]
//! cargo run --release -p aigentable-tests --bin webhook_bench -- --accept-only [--webhooks 20000] [--clients 32] [--rate 5000] [--seconds 5]
//! ```
//!
//! 1. signed WhatsApp webhooks accepted per second: `--clients` concurrent
//!    clients post `--webhooks` distinct signed deliveries (each routed
//!    through the channel cache, verified, then deduplicated and queued in
//!    one Redis round trip before its 200; the worker stores it), then
//!    the time until every one of them was answered at the fake provider,
//!    from the first post (messages per second end to end);
//! 2. webhook → reply latency (p50/p99): one delivery at a time, timed from
//!    the POST to the moment the fake WhatsApp API receives the bot's reply
//!    (the tenant's AI provider is a local fake OpenAI-compatible server that
//!    answers at once, so the figure is the platform's own path), and the
//!    MongoDB commands each of those messages cost (driver command
//!    monitoring). Each sample is a new customer, or with `--returning` a
//!    customer of step 1 writing again.
//!
//! The clients and the fake servers run on a runtime of their own, its
//! threads named `bench-load`, so that the backlog's CPU is read apart:
//! the platform's (the rest of this process: api, workers, the driver's
//! command monitoring), the load generator's and fakes', secantusd-rs's
//! and Redis's (when they run on this machine), per message. Counting
//! the commands costs the platform's part: the driver turns each command
//! and reply into a document for the count (7% of the process's samples
//! in `perf`). `--uncounted` leaves the count out, for the CPU figures.
//!
//! The agent's knowledge base is empty unless `--documents N` uploads N
//! text documents to it first (through the api, indexed by the workers):
//! each reply then searches real passages, as a working agent's does.
//!
//! With `--accept-only` the api runs without workers, so the figures are
//! the accept path's alone (route, verify, deduplicate and queue): the
//! throughput of `--clients` concurrent clients, then the latency of each
//! delivery at a fixed `--rate` for `--seconds` (open loop: timed from the
//! moment it was due, so a slow answer delays no later send), and finally
//! a check that Redis holds one queued `receive_inbound` job per accepted
//! delivery (the jobs are then deleted with the namespace, never run).
//!
//! The in-process workers run the message path's queues (inbound, replies,
//! outbound) as wide as a shipped worker process does, or every queue
//! `--concurrency` wide.
//!
//! Uses a fresh database and Redis namespace, dropped at the end.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::json;

use aigentable_jobs::Queue;
use aigentable_jobs::types::ReceiveInbound;
use aigentable_platform::channels::signature::sign_meta;
use aigentable_platform::db::command_log::{self, Recording};
use aigentable_tests::fake_openai::FakeOpenAi;
use aigentable_tests::fake_providers::{
    FakeProviders, app_with_fake_and, app_with_given_fake, create_agent, create_channel,
    create_live_channel, job_done, whatsapp_text,
};
use aigentable_tests::stats::{cpu_seconds, own_threads_cpu_seconds, percentile, pids_named};
use aigentable_tests::{Session, TestApp, delete_redis_namespace, machine};

struct Args {
    webhooks: usize,
    clients: usize,
    samples: usize,
    returning: bool,
    accept_only: bool,
    rate: usize,
    seconds: usize,
    concurrency: Option<usize>,
    uncounted: bool,
    documents: usize,
}

const USAGE: &str = "usage: webhook_bench [--webhooks N] [--clients N] [--samples N] [--returning] [--concurrency N] [--uncounted] [--documents N] | --accept-only [--webhooks N] [--clients N] [--rate N] [--seconds N]";

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        webhooks: 2_000,
        clients: 32,
        samples: 50,
        returning: false,
        accept_only: false,
        rate: 5_000,
        seconds: 5,
        concurrency: None,
        uncounted: false,
        documents: 0,
    };
    let mut webhooks_given = false;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        if a == "--returning" {
            args.returning = true;
            continue;
        }
        if a == "--accept-only" {
            args.accept_only = true;
            continue;
        }
        if a == "--uncounted" {
            args.uncounted = true;
            continue;
        }
        let v: usize = it
            .next()
            .with_context(|| format!("{a} needs a value"))?
            .parse()
            .with_context(|| format!("{a} must be a number"))?;
        match a.as_str() {
            "--webhooks" => {
                args.webhooks = v.max(1);
                webhooks_given = true;
            }
            "--clients" => args.clients = v.max(1),
            "--samples" => args.samples = v.max(1),
            "--rate" => args.rate = v.max(1),
            "--seconds" => args.seconds = v.max(1),
            "--concurrency" => args.concurrency = Some(v.max(1)),
            "--documents" => args.documents = v,
            other => bail!("unknown argument {other}; {USAGE}"),
        }
    }
    if args.accept_only && !webhooks_given {
        // Accepting 2,000 takes a fraction of a second: too short to read.
        args.webhooks = 20_000;
    }
    Ok(args)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // As the api and workers binaries do: the same allocator behaviour.
    aigentable_allocator::return_large_blocks();
    let args = parse_args()?;
    if args.accept_only {
        return accept_only(&args).await;
    }
    // Before the client connects: the driver then reports every command.
    if !args.uncounted {
        command_log::enable();
    }
    // `RUST_LOG` set: the api's and workers' logs (JSON, with timestamps)
    // on stderr, to follow one message through its jobs.
    if std::env::var_os("RUST_LOG").is_some() {
        aigentable_platform::telemetry::init(aigentable_platform::config::LogFormat::Json);
    }
    // The harness runs tests' workers 4 wide: here the message path's
    // queues get a shipped worker process's widths, or all `--concurrency`.
    let widths: Vec<(String, String)> = match args.concurrency {
        Some(n) => vec![("WORKER_CONCURRENCY".to_owned(), n.to_string())],
        None => [Queue::Inbound, Queue::Replies, Queue::Outbound]
            .into_iter()
            .map(|q| {
                (
                    q.concurrency_variable(),
                    q.default_concurrency().to_string(),
                )
            })
            .collect(),
    };
    println!(
        "{}; worker concurrency {}",
        machine(),
        widths
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let mut overrides = vec![("LOG_FORMAT", "json")];
    overrides.extend(widths.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let load = load_runtime()?;
    let fake = load.spawn(FakeProviders::start()).await?;
    let (app, fake) = app_with_given_fake(fake, &overrides, true).await;
    let admin = app.register("Bench").await;
    // An instant fake LLM as the tenant's default AI provider, so replies
    // take the model path (prompt, call, answer) at no model cost.
    let llm = load.spawn(FakeOpenAi::start()).await?;
    let r = app
        .post(
            "/api/v1/ai-providers",
            &admin,
            json!({"name": "fake", "type": "OPENAI_COMPATIBLE", "baseUrl": llm.base_url(),
                   "apiKey": "sk-bench-0000", "chatModel": "bench-model", "isDefault": true}),
        )
        .await;
    if !r.status.is_success() {
        bail!("could not configure the fake AI provider: {:?}", r.body);
    }
    let (pnid, agent) = bench_channel(&app, &admin, true).await?;
    if args.documents > 0 {
        knowledge(&app, &admin, &agent, args.documents).await;
    }
    let url = app.url("/api/v1/webhooks/whatsapp");
    let http = reqwest::Client::new();

    // 1. Throughput of accepted signed webhooks.
    let bodies = signed_deliveries(pnid, 0..args.webhooks);
    let backlog_recording = Recording::start(app.platform.db.database().name());
    let cpu = Cpu::new();
    let cpu_before = cpu.now();
    let started = Instant::now();
    let failures = load
        .spawn(post_all(http.clone(), url.clone(), bodies, args.clients))
        .await?;
    let elapsed = started.elapsed();
    report_accepted(args.webhooks, elapsed, args.clients, failures);

    // Let the backlog of inbound jobs and replies drain before timing replies
    // (one customer per delivery, so every delivery gets one answer). At
    // least 10 minutes, and as long as 100 messages/s would take: a slow
    // machine drains 100,000 in more than 10.
    let drain_wait = Duration::from_secs(600.max(args.webhooks as u64 / 100));
    let drained = app
        .eventually(drain_wait, || async {
            (fake.count_to("/messages") >= args.webhooks).then_some(())
        })
        .await;
    // From the first webhook posted: what the whole path sustains (accept,
    // inbound, reply, delivery), the figure that shows the MongoDB work.
    let drain = started.elapsed();
    let delivered = fake.count_to("/messages");
    println!(
        "backlog: {} replies delivered to the fake provider{}, {:.1} s after the first webhook: {:.0} messages/s end to end",
        delivered,
        if drained.is_some() {
            ""
        } else {
            " (timed out waiting for all)"
        },
        drain.as_secs_f64(),
        delivered as f64 / drain.as_secs_f64()
    );
    cpu.report(&cpu_before, delivered);
    if args.uncounted {
        println!("MongoDB commands not counted (--uncounted)");
    } else {
        report_backlog_commands(&backlog_recording.take(), delivered);
    }
    drop(backlog_recording);
    // The provider has every reply a moment before their deliveries store
    // their outcomes and settle: samples taken meanwhile would time that
    // tail (after 100,000 webhooks, the first second's samples took up to
    // 156 ms), not one message at a time.
    let settled = app
        .eventually(Duration::from_secs(120), || async {
            app.pending_jobs().await.is_empty().then_some(())
        })
        .await;
    if settled.is_none() {
        println!(
            "jobs still pending 120 s after the backlog was delivered: {:?}",
            app.pending_jobs().await
        );
    }
    if drained.is_none() {
        // The samples' commands would include the backlog's.
        println!(
            "the backlog did not drain within {} s: the figures below were taken while {} replies were still on their way, and are not one message at a time",
            drain_wait.as_secs(),
            args.webhooks.saturating_sub(delivered)
        );
    }

    // 2. Webhook to reply latency, one at a time, and the commands each
    // message costs (nothing else runs meanwhile: one message at a time).
    let recording = Recording::start(app.platform.db.database().name());
    // Each sample's latency and when it was posted, from the first:
    // whether the slow ones come at a period says what held them (a
    // checkpoint, a sweep).
    let mut slowest: Vec<(Duration, Duration)> = Vec::with_capacity(args.samples);
    let samples_started = Instant::now();
    for i in 0..args.samples {
        let before = fake.count_to("/messages");
        let customer = if args.returning {
            format!("55{}", 100_000 + i % args.webhooks)
        } else {
            format!("56{i}")
        };
        let body = whatsapp_text(
            pnid,
            &customer,
            &format!("wamid.lat{i}"),
            "what are your hours?",
        );
        let raw = serde_json::to_vec(&body)?;
        let t0 = Instant::now();
        let r = http
            .post(&url)
            .header("content-type", "application/json")
            .header("x-hub-signature-256", sign_meta("bench-secret", &raw))
            .body(raw)
            .send()
            .await?;
        if !r.status().is_success() {
            bail!("webhook refused: {}", r.status());
        }
        let Some(arrived) = fake
            .wait_for_more_than("/messages", before, Duration::from_secs(30))
            .await
        else {
            bail!("no reply within 30 s for sample {i}");
        };
        slowest.push((
            arrived.duration_since(t0),
            t0.duration_since(samples_started),
        ));
    }
    if args.documents > 0 {
        // The replies must have searched the documents, not an empty base.
        let grounded = llm
            .chat_requests()
            .last()
            .is_some_and(|r| r.body.to_string().contains("opening hours policy"));
        if !grounded {
            bail!("the last prompt quoted none of the uploaded documents");
        }
    }
    let mut latencies: Vec<Duration> = slowest.iter().map(|(took, _)| *took).collect();
    slowest.sort_by_key(|s| std::cmp::Reverse(s.0));
    // The last reply's delivery stores its outcome just after the send.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let recorded = recording.take();
    drop(recording);
    latencies.sort();
    let messages = latencies.len().max(1) as f64;
    if !args.uncounted {
        report_sample_commands(&recorded, messages, args.returning);
    }
    println!(
        "webhook -> reply at the provider ({} samples, {} LLM calls in all): p50 {:.1} ms, p99 {:.1} ms",
        latencies.len(),
        llm.chat_requests().len(),
        percentile(&latencies, 50.0).as_secs_f64() * 1e3,
        percentile(&latencies, 99.0).as_secs_f64() * 1e3
    );
    println!(
        "slowest samples: {}",
        slowest
            .iter()
            .take(5)
            .map(|(took, at)| format!(
                "{:.1} ms at +{:.2} s",
                took.as_secs_f64() * 1e3,
                at.as_secs_f64()
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );
    // Drop the database, then leave without tearing the runtime down: the
    // in-process workers' embedded vector store would flush into the data
    // directory being removed.
    let _ = app.platform.db.database().drop().await;
    let _ = std::fs::remove_dir_all(&app.platform.config.data_dir);
    std::process::exit(0);
}

/// Uploads `count` text documents to the agent's knowledge base and waits
/// until each is indexed.
async fn knowledge(app: &TestApp, admin: &Session, agent: &str, count: usize) {
    let topics = [
        "opening hours",
        "refunds",
        "delivery",
        "warranty",
        "payment",
        "returns",
        "sizes",
        "gift cards",
    ];
    let started = Instant::now();
    let mut ids = Vec::with_capacity(count);
    for i in 0..count {
        let topic = topics[i % topics.len()];
        let text = (0..40)
            .map(|p| {
                format!(
                    "Section {p} on {topic}, document {i}. Hello! Our {topic} policy: customers asking what are your hours, how refunds work or when a parcel arrives get answer {p} of document {i}, which names the {topic} rules, the shop's hours from 9 to 18 on weekdays and the contact address.\n\n"
                )
            })
            .collect::<String>();
        ids.push(
            app.upload_text(admin, &format!("kb-{i}.txt"), &text, Some(agent))
                .await,
        );
    }
    for id in &ids {
        app.wait_document_ready(admin, id).await;
    }
    println!(
        "knowledge base: {count} documents uploaded and indexed for the agent in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// An agent and its WhatsApp channel, signed with `bench-secret`, live
/// (the provider confirmed the account, so webhooks are routed to it);
/// answers the channel's phone number id and the agent's id. Without
/// workers, the channel's test job is drained here.
async fn bench_channel(
    app: &TestApp,
    admin: &Session,
    with_workers: bool,
) -> anyhow::Result<(&'static str, String)> {
    let pnid = "BENCH_PN";
    let agent = create_agent(app, admin).await;
    let body = json!({"type": "WHATSAPP", "name": "bench", "agentId": agent,
                      "config": {"phoneNumberId": pnid, "accessToken": "bench-token", "appSecret": "bench-secret"}});
    if with_workers {
        create_live_channel(app, admin, body).await;
        return Ok((pnid, agent));
    }
    let created = create_channel(app, admin, body).await;
    let channel = created["id"].as_str().unwrap_or_default();
    let r = app
        .post(
            &format!("/api/v1/channels/{channel}/test"),
            admin,
            json!({}),
        )
        .await;
    app.drain(Queue::Integrations).await;
    let test = job_done(app, admin, r.body["jobId"].as_str().unwrap_or_default()).await;
    if test["result"]["status"] != "ACTIVE" {
        bail!("the bench channel did not become active: {test}");
    }
    Ok((pnid, agent))
}

/// Distinct signed WhatsApp deliveries, one customer and message each, as
/// (body, `X-Hub-Signature-256`).
fn signed_deliveries(pnid: &str, range: std::ops::Range<usize>) -> Vec<(Vec<u8>, String)> {
    range
        .map(|i| {
            let body = whatsapp_text(
                pnid,
                &format!("55{}", 100_000 + i),
                &format!("wamid.bench{i}"),
                "hello",
            );
            let raw = serde_json::to_vec(&body).unwrap_or_default();
            let sig = sign_meta("bench-secret", &raw);
            (raw, sig)
        })
        .collect()
}

/// The threads of the load generator and the fake servers.
const LOAD_THREADS: &str = "bench-load";

/// A runtime for the clients and the fakes, its threads named
/// [`LOAD_THREADS`]. It lives as long as the process, which ends with
/// `exit`: a runtime dropped inside another one's task panics.
fn load_runtime() -> anyhow::Result<&'static tokio::runtime::Runtime> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(LOAD_THREADS)
        .enable_all()
        .build()?;
    Ok(Box::leak(Box::new(runtime)))
}

/// The processes whose CPU a backlog is read from: this one (split into
/// the load generator's threads and the platform's) and, when they run on
/// this machine, the database server and Redis.
struct Cpu {
    database: Vec<u32>,
    redis: Vec<u32>,
}

/// CPU seconds used so far.
struct CpuReading {
    process: f64,
    load: f64,
    database: f64,
    redis: f64,
}

impl Cpu {
    fn new() -> Self {
        Self {
            database: pids_named("secantusd-rs")
                .into_iter()
                .chain(pids_named("mongod"))
                .collect(),
            redis: pids_named("redis-server"),
        }
    }

    fn now(&self) -> CpuReading {
        let sum = |pids: &[u32]| pids.iter().filter_map(|p| cpu_seconds(*p)).sum();
        CpuReading {
            process: cpu_seconds(std::process::id()).unwrap_or(0.0),
            load: own_threads_cpu_seconds(LOAD_THREADS),
            database: sum(&self.database),
            redis: sum(&self.redis),
        }
    }

    /// Prints each part's CPU per message since `before`, and what the
    /// parts that are the platform's (all but the load generator) would
    /// allow if they had every core to themselves.
    fn report(&self, before: &CpuReading, messages: usize) {
        let after = self.now();
        let per = |a: f64, b: f64| (a - b) * 1e3 / messages.max(1) as f64;
        let load = per(after.load, before.load);
        let platform = per(after.process, before.process) - load;
        let database = per(after.database, before.database);
        let redis = per(after.redis, before.redis);
        let mut parts = vec![format!("platform (api, workers) {platform:.2} ms")];
        if !self.database.is_empty() {
            parts.push(format!("database server {database:.2} ms"));
        }
        if !self.redis.is_empty() {
            parts.push(format!("Redis {redis:.2} ms"));
        }
        let serving = platform + database + redis;
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        println!(
            "CPU per message during the backlog: {}; load generator and fakes {load:.2} ms. Without the load generator's share: {serving:.2} ms a message, {:.0} messages/s on {cores} cores",
            parts.join(", "),
            cores as f64 * 1e3 / serving.max(f64::EPSILON),
        );
    }
}

/// Posts every delivery from `clients` concurrent clients, each sending its
/// next as soon as the last is answered; answers how many were not a 2xx.
async fn post_all(
    http: reqwest::Client,
    url: String,
    bodies: Vec<(Vec<u8>, String)>,
    clients: usize,
) -> usize {
    let queue = Arc::new(std::sync::Mutex::new(bodies.into_iter()));
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let queue = queue.clone();
        let http = http.clone();
        let url = url.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut failures = 0usize;
            loop {
                let next = queue.lock().ok().and_then(|mut q| q.next());
                let Some((raw, sig)) = next else { break };
                if !post_one(&http, &url, raw, sig).await {
                    failures += 1;
                }
            }
            failures
        }));
    }
    let mut failures = 0;
    for t in tasks {
        failures += t.await.unwrap_or(0);
    }
    failures
}

async fn post_one(http: &reqwest::Client, url: &str, raw: Vec<u8>, sig: String) -> bool {
    http.post(url)
        .header("content-type", "application/json")
        .header("x-hub-signature-256", sig)
        .body(raw)
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
}

/// `--accept-only`: the accept path with no worker running (see the
/// module's documentation).
async fn accept_only(args: &Args) -> anyhow::Result<()> {
    let (app, _fake) = app_with_fake_and(&[("LOG_FORMAT", "json")], false).await;
    let admin = app.register("Bench").await;
    let (pnid, _) = bench_channel(&app, &admin, false).await?;
    let url = app.url("/api/v1/webhooks/whatsapp");
    let http = reqwest::Client::new();
    println!("{}; the api alone (no workers), in this process", machine());

    let bodies = signed_deliveries(pnid, 0..args.webhooks);
    let started = Instant::now();
    let failures = post_all(http.clone(), url.clone(), bodies, args.clients).await;
    let elapsed = started.elapsed();
    report_accepted(args.webhooks - failures, elapsed, args.clients, failures);

    // Open loop at a fixed rate: each delivery is sent when it is due
    // (tokio's timer wakes every millisecond, so sends go out in groups of
    // rate/1000) and timed from that moment.
    let count = args.rate * args.seconds;
    let bodies = signed_deliveries(pnid, args.webhooks..args.webhooks + count);
    let start = tokio::time::Instant::now() + Duration::from_millis(100);
    let mut sent = Vec::with_capacity(count);
    for (i, (raw, sig)) in bodies.into_iter().enumerate() {
        let due = start + Duration::from_secs_f64(i as f64 / args.rate as f64);
        tokio::time::sleep_until(due).await;
        let http = http.clone();
        let url = url.clone();
        sent.push(tokio::spawn(async move {
            let ok = post_one(&http, &url, raw, sig).await;
            (due.elapsed(), ok)
        }));
    }
    let mut latencies = Vec::with_capacity(count);
    let mut late_failures = 0;
    for t in sent {
        match t.await {
            Ok((took, true)) => latencies.push(took),
            _ => late_failures += 1,
        }
    }
    let span = start.elapsed();
    latencies.sort();
    println!(
        "at {} webhooks/s for {} s: {} accepted ({:.0}/s over {:.2} s), {} failures; p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        args.rate,
        args.seconds,
        latencies.len(),
        latencies.len() as f64 / span.as_secs_f64(),
        span.as_secs_f64(),
        late_failures,
        percentile(&latencies, 50.0).as_secs_f64() * 1e3,
        percentile(&latencies, 99.0).as_secs_f64() * 1e3,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3
    );

    // Every 200 must be a job in Redis: one per accepted delivery.
    let accepted = args.webhooks - failures + latencies.len();
    let queued = app.pending_of::<ReceiveInbound>().await as usize;
    println!("queued receive_inbound jobs in Redis: {queued} (accepted: {accepted})");
    let namespace = app.platform.kv.namespace().to_owned();
    let _ = app.platform.db.database().drop().await;
    let _ = std::fs::remove_dir_all(&app.platform.config.data_dir);
    delete_redis_namespace(&mut app.platform.kv.conn(), &namespace).await?;
    if queued != accepted {
        bail!("{accepted} deliveries were accepted but {queued} jobs are queued");
    }
    std::process::exit(0);
}

fn report_accepted(accepted: usize, elapsed: Duration, clients: usize, failures: usize) {
    println!(
        "accepted {accepted} signed webhooks in {:.2} s with {clients} clients: {:.0} webhooks/s, {failures} failures",
        elapsed.as_secs_f64(),
        accepted as f64 / elapsed.as_secs_f64(),
    );
}

/// The commands the backlog cost per message, and how many documents an
/// insert carried (inserts of one moment share a command: see
/// `platform::group_commit`).
fn report_backlog_commands(commands: &[command_log::Command], messages: usize) {
    let messages = messages.max(1) as f64;
    let inserts: Vec<&command_log::Command> =
        commands.iter().filter(|c| c.name == "insert").collect();
    let documents: usize = inserts
        .iter()
        .map(|c| c.body.get_array("documents").map_or(1, Vec::len))
        .sum();
    println!(
        "MongoDB commands during the backlog: {:.1} per message ({} in all); {:.1} inserts per message, {:.2} documents per insert",
        commands.len() as f64 / messages,
        commands.len(),
        inserts.len() as f64 / messages,
        documents as f64 / inserts.len().max(1) as f64
    );
}

/// The commands the one-at-a-time samples cost per message, by kind and
/// collection.
fn report_sample_commands(recorded: &[command_log::Command], messages: f64, returning: bool) {
    println!(
        "MongoDB commands per message, webhook to reply delivered ({} customers): {:.1}, {:.2} ms of round trips",
        if returning { "returning" } else { "new" },
        recorded.len() as f64 / messages,
        recorded
            .iter()
            .filter_map(|c| c.duration)
            .sum::<Duration>()
            .as_secs_f64()
            * 1e3
            / messages
    );
    for ((name, collection), (count, took)) in by_command(recorded) {
        println!(
            "  {name} {collection}: {:.1} per message, {:.2} ms each",
            count as f64 / messages,
            took.as_secs_f64() * 1e3 / count.max(1) as f64
        );
    }
}

/// Commands by kind and collection: how many, and their round trips'
/// total time.
fn by_command(commands: &[command_log::Command]) -> BTreeMap<(&str, &str), (usize, Duration)> {
    let mut kinds = BTreeMap::new();
    for c in commands {
        let (count, took) = kinds
            .entry((c.name.as_str(), c.collection.as_str()))
            .or_insert((0, Duration::ZERO));
        *count += 1;
        *took += c.duration.unwrap_or_default();
    }
    kinds
}
