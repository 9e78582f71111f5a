//! Analytics benchmark against the real api (port 0) and the local MongoDB:
//!
//! ```sh
//! cargo run --release -p aigentable-tests --bin analytics_bench -- [--messages 1000000] [--conversations 100000] [--tenants 10] [--days 90] [--samples 200] [--hour-messages 100000]
//! ```
//!
//! 1. seeds one tenant with `--messages` messages in `--conversations`
//!    conversations spread over `--days` days (as analytics facts, bulk
//!    inserted through `analytics::facts::record_many`, the platform's own
//!    capture store), and `--tenants` other tenants around it with a tenth
//!    of that traffic each;
//! 2. runs the rollup over the whole history (the first run catches up from
//!    the first fact) and reports its time;
//! 3. `GET /analytics/overview` (default period, last 30 days) and
//!    `GET /analytics/conversations?groupBy=day` over the last 90 days:
//!    p50/p99 over `--samples` sequential requests each;
//! 4. the rollup of one hour holding `--hour-messages` messages.
//!
//! Uses a fresh database and Redis namespace, dropped at the end.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::{TimeDelta, Utc};

use aigentable_platform::analytics::facts::{self, Fact, FactKind, hour_of};
use aigentable_platform::analytics::rollup;
use aigentable_tests::spawn_app;
use aigentable_tests::stats::percentile;

struct Args {
    messages: usize,
    conversations: usize,
    tenants: usize,
    days: i64,
    samples: usize,
    hour_messages: usize,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        messages: 1_000_000,
        conversations: 100_000,
        tenants: 10,
        days: 90,
        samples: 200,
        hour_messages: 100_000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let v: usize = it
            .next()
            .with_context(|| format!("{a} needs a value"))?
            .parse()
            .with_context(|| format!("{a} must be a number"))?;
        match a.as_str() {
            "--messages" => args.messages = v.max(2),
            "--conversations" => args.conversations = v.max(1),
            "--tenants" => args.tenants = v,
            "--days" => args.days = i64::try_from(v.clamp(1, 365)).unwrap_or(90),
            "--samples" => args.samples = v.max(1),
            "--hour-messages" => args.hour_messages = v.max(1),
            other => bail!(
                "unknown argument {other}; usage: analytics_bench [--messages N] [--conversations N] [--tenants N] [--days N] [--samples N] [--hour-messages N]"
            ),
        }
    }
    Ok(args)
}

/// A small deterministic generator (no extra crate for a benchmark).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

const CHANNEL_TYPES: [&str; 5] = ["WHATSAPP", "FACEBOOK", "INSTAGRAM", "TELEGRAM", "WEBSITE"];

/// The facts of `conversations` conversations with `messages` messages in
/// total, starting uniformly in `[start, start + span)`: customer and bot
/// messages alternating (each bot message answering after 1–30 s), some
/// handed off and answered by staff, most resolved, a fifth rated.
fn conversation_facts(
    tenant: &str,
    conversations: usize,
    messages: usize,
    start: chrono::DateTime<Utc>,
    span: TimeDelta,
    seed: u64,
    mut sink: impl FnMut(Fact),
) {
    let mut rng = Lcg(seed);
    let per = (messages / conversations).max(2);
    let span_ms = u64::try_from(span.num_milliseconds().max(1)).unwrap_or(1);
    for c in 0..conversations {
        let lane = c % CHANNEL_TYPES.len();
        let conversation_id = format!("{tenant}-s{seed}-c{c}");
        let base = |kind: FactKind, id: String, at| Fact {
            id,
            tenant_id: tenant.to_owned(),
            at,
            kind,
            conversation_id: conversation_id.clone(),
            agent_id: Some(format!("agent-{lane}")),
            channel_id: format!("channel-{lane}"),
            channel_type: CHANNEL_TYPES[lane].to_owned(),
            started: false,
            response_ms: None,
            first_response: false,
            tokens: 0,
            rating: None,
            by_bot: false,
            duration_ms: None,
        };
        let mut at =
            start + TimeDelta::milliseconds(i64::try_from(rng.below(span_ms)).unwrap_or(0));
        let opened = at;
        let handed_off = rng.below(10) == 0;
        for m in 0..per {
            if m % 2 == 0 {
                let mut f = base(
                    FactKind::CustomerMessage,
                    format!("{conversation_id}-m{m}"),
                    at,
                );
                f.started = m == 0;
                sink(f);
                at += TimeDelta::seconds(i64::try_from(1 + rng.below(30)).unwrap_or(1));
            } else {
                let staff = handed_off && m > per / 2;
                let kind = if staff {
                    FactKind::StaffMessage
                } else {
                    FactKind::BotMessage
                };
                let mut f = base(kind, format!("{conversation_id}-m{m}"), at);
                f.response_ms = Some(i64::try_from(1_000 + rng.below(29_000)).unwrap_or(0));
                f.first_response = m == 1;
                f.tokens = if staff { 0 } else { 150 };
                sink(f);
                at += TimeDelta::seconds(i64::try_from(20 + rng.below(120)).unwrap_or(20));
            }
        }
        if handed_off {
            sink(base(FactKind::Handoff, format!("{conversation_id}-h"), at));
        }
        if rng.below(10) < 8 {
            let mut f = base(FactKind::Resolved, format!("{conversation_id}-r"), at);
            f.by_bot = !handed_off;
            f.duration_ms = Some((at - opened).num_milliseconds());
            sink(f);
        }
        if rng.below(5) == 0 {
            let mut f = base(FactKind::Rating, format!("rating:{conversation_id}"), at);
            f.rating = Some(i32::try_from(1 + rng.below(5)).unwrap_or(3));
            sink(f);
        }
    }
}

async fn seed(
    db: &aigentable_platform::Db,
    tenant: &str,
    conversations: usize,
    messages: usize,
    start: chrono::DateTime<Utc>,
    span: TimeDelta,
    seed_value: u64,
) -> anyhow::Result<usize> {
    let mut batch = Vec::with_capacity(10_000);
    let mut total = 0;
    let mut all = Vec::new();
    conversation_facts(
        tenant,
        conversations,
        messages,
        start,
        span,
        seed_value,
        |f| all.push(f),
    );
    for f in all {
        batch.push(f);
        if batch.len() == 10_000 {
            facts::record_many(db, &batch).await?;
            total += batch.len();
            batch.clear();
        }
    }
    if !batch.is_empty() {
        facts::record_many(db, &batch).await?;
        total += batch.len();
    }
    Ok(total)
}

async fn time_requests(
    app: &aigentable_tests::TestApp,
    s: &aigentable_tests::Session,
    path: &str,
    samples: usize,
) -> anyhow::Result<(Duration, Duration)> {
    let mut took = Vec::with_capacity(samples);
    for _ in 0..samples {
        let t = Instant::now();
        let r = app.get(path, s).await;
        took.push(t.elapsed());
        if r.status != reqwest::StatusCode::OK {
            bail!("{path}: {} {:?}", r.status, r.body);
        }
    }
    took.sort();
    Ok((percentile(&took, 50.0), percentile(&took, 99.0)))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // As the api and workers binaries do: the same allocator behaviour.
    aigentable_allocator::return_large_blocks();
    let args = parse_args()?;
    let app = spawn_app().await;
    let db = app.platform.db.clone();
    let main_tenant = app.register("Bench").await;
    let now = Utc::now();
    let span = TimeDelta::days(args.days);
    let start = hour_of(now) - span;

    let t = Instant::now();
    let mut seeded = seed(
        &db,
        &main_tenant.tenant_id,
        args.conversations,
        args.messages,
        start,
        span,
        1,
    )
    .await?;
    for i in 0..args.tenants {
        let other = app.register(&format!("Neighbour {i}")).await;
        seeded += seed(
            &db,
            &other.tenant_id,
            (args.conversations / 10).max(1),
            (args.messages / 10).max(2),
            start,
            span,
            100 + i as u64,
        )
        .await?;
    }
    println!(
        "seeded {seeded} facts ({} messages, {} conversations in the main tenant; {} other tenants with a tenth each) in {:.1} s",
        args.messages,
        args.conversations,
        args.tenants,
        t.elapsed().as_secs_f64()
    );

    let t = Instant::now();
    let summary = rollup::run(&db, hour_of(now) - TimeDelta::hours(1)).await?;
    println!(
        "rollup of the whole history: {} hours, {} tenant-days in {:.1} s",
        summary.hours,
        summary.days,
        t.elapsed().as_secs_f64()
    );

    // Warm the connection pools, then measure.
    let _ = app.get("/api/v1/analytics/overview", &main_tenant).await;
    let (p50, p99) = time_requests(
        &app,
        &main_tenant,
        "/api/v1/analytics/overview",
        args.samples,
    )
    .await?;
    println!(
        "GET /analytics/overview (last 30 days): p50 {:.1} ms, p99 {:.1} ms over {} requests",
        p50.as_secs_f64() * 1000.0,
        p99.as_secs_f64() * 1000.0,
        args.samples
    );
    let from = (now - TimeDelta::days(90)).format("%Y-%m-%d");
    let series = format!("/api/v1/analytics/conversations?groupBy=day&startDate={from}");
    let (p50, p99) = time_requests(&app, &main_tenant, &series, args.samples).await?;
    println!(
        "GET /analytics/conversations?groupBy=day (90 days): p50 {:.1} ms, p99 {:.1} ms over {} requests",
        p50.as_secs_f64() * 1000.0,
        p99.as_secs_f64() * 1000.0,
        args.samples
    );

    // One hour with `--hour-messages` messages, two days before the history.
    let busy = start - TimeDelta::days(2);
    let t = Instant::now();
    let n = seed(
        &db,
        &main_tenant.tenant_id,
        (args.hour_messages / 10).max(1),
        args.hour_messages,
        busy,
        TimeDelta::minutes(40),
        7,
    )
    .await?;
    println!(
        "seeded {n} facts in one hour in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let mut tenants = 0;
    for h in 0..2 {
        tenants += rollup::roll_hour(&db, busy + TimeDelta::hours(h), None)
            .await?
            .len();
    }
    let hours = t.elapsed();
    let t = Instant::now();
    rollup::roll_day(&db, &main_tenant.tenant_id, "UTC", busy.date_naive()).await?;
    println!(
        "rollup of the busy hour(s) ({n} facts, {tenants} tenant-hours): {:.2} s, then its day: {:.2} s",
        hours.as_secs_f64(),
        t.elapsed().as_secs_f64()
    );
    app.cleanup().await;
    Ok(())
}
