//! What authentication and rate limiting cost a request, against the real
//! api (port 0), Redis and MongoDB:
//!
//! ```sh
//! cargo run --release -p aigentable-tests --bin auth_bench -- [--requests 2000] [--logins 100]
//! ```
//!
//! 1. the rate limiter alone: one GCRA admission of a request's buckets
//!    (user and tenant), the one Redis round trip every request makes;
//! 2. `GET /api/v1/agents` end to end, one request at a time: with a user's
//!    JWT, and with an API key (`X-API-Key`: hashed, looked up, its
//!    tenant and creator checked), so the difference is the key check;
//! 3. the same route answered without authentication or limits
//!    (`/healthz`), the floor of the HTTP round trip;
//! 4. `POST /api/v1/auth/login`, one at a time (`--logins`, default 100):
//!    what a password check (argon2id, 19 MiB of working memory) costs a
//!    user, and the process's resident memory before and after them, and
//!    once the hashes' memory was given back (`Hasher::KEEP_WARM`).
//!
//! Uses a fresh database and Redis namespace, dropped at the end.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::json;

use aigentable_platform::rate_limits::{self, Bucket};
use aigentable_tests::spawn_app_without_workers;
use aigentable_tests::stats::{HASH_MEMORY_FREED_AFTER, percentile, status_kib};

fn report(what: &str, mut samples: Vec<Duration>) {
    samples.sort();
    println!(
        "{what:<44} p50 {:>7.3} ms  p99 {:>7.3} ms  ({} samples)",
        percentile(&samples, 50.0).as_secs_f64() * 1e3,
        percentile(&samples, 99.0).as_secs_f64() * 1e3,
        samples.len()
    );
}

/// This process's resident memory (`VmRSS`), in MiB.
fn resident_mib() -> anyhow::Result<f64> {
    Ok(status_kib(std::process::id(), "VmRSS")? as f64 / 1024.0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // As the api and workers binaries do: the same allocator behaviour.
    aigentable_allocator::return_large_blocks();
    let (mut requests, mut logins) = (2_000usize, 100usize);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let target = match a.as_str() {
            "--requests" => &mut requests,
            "--logins" => &mut logins,
            other => {
                bail!("unknown argument {other}; usage: auth_bench [--requests N] [--logins N]")
            }
        };
        *target = args
            .next()
            .with_context(|| format!("{a} needs a value"))?
            .parse::<usize>()
            .with_context(|| format!("{a} must be a number"))?
            .max(1);
    }
    let app = spawn_app_without_workers(&[("LOG_FORMAT", "json"), ("RUST_LOG", "warn")]).await;
    let admin = app.register("Bench").await;
    let r = app
        .post(
            "/api/v1/api-keys",
            &admin,
            json!({"name": "bench", "permissions": ["agents:read"], "rateLimit": 100_000}),
        )
        .await;
    if !r.status.is_success() {
        bail!("could not create the API key: {:?}", r.body);
    }
    let key = r.body["key"].as_str().unwrap_or_default().to_owned();
    let http = reqwest::Client::new();
    let url = app.url("/api/v1/agents");

    // Warm up connections and caches.
    for _ in 0..50 {
        http.get(&url)
            .bearer_auth(&admin.token)
            .header("X-Tenant-ID", &admin.tenant_id)
            .send()
            .await?;
        http.get(&url).header("X-API-Key", &key).send().await?;
    }

    let buckets = [
        Bucket::per_minute(format!("user:bench-{}", admin.user_id), 1_000_000),
        Bucket::per_minute(format!("tenant:bench-{}", admin.tenant_id), 1_000_000),
    ];
    let mut limiter = Vec::with_capacity(requests);
    for _ in 0..requests {
        let t = Instant::now();
        let verdict = rate_limits::admit(&app.platform.kv, &buckets).await?;
        limiter.push(t.elapsed());
        if !verdict.admitted {
            bail!("the limiter refused a request under a limit of a million");
        }
    }

    let timed = |label: &'static str| (label, Vec::with_capacity(requests));
    let (mut floor, mut jwt, mut api_key) = (
        timed("GET /healthz (no auth, no limit)"),
        timed("GET /api/v1/agents with a JWT"),
        timed("GET /api/v1/agents with an API key"),
    );
    let health = app.url("/healthz");
    for _ in 0..requests {
        let t = Instant::now();
        let r = http.get(&health).send().await?;
        floor.1.push(t.elapsed());
        if !r.status().is_success() {
            bail!("healthz answered {}", r.status());
        }
        let t = Instant::now();
        let r = http
            .get(&url)
            .bearer_auth(&admin.token)
            .header("X-Tenant-ID", &admin.tenant_id)
            .send()
            .await?;
        jwt.1.push(t.elapsed());
        if !r.status().is_success() {
            bail!("the JWT request answered {}", r.status());
        }
        let t = Instant::now();
        let r = http.get(&url).header("X-API-Key", &key).send().await?;
        api_key.1.push(t.elapsed());
        if !r.status().is_success() {
            bail!("the API key request answered {}", r.status());
        }
    }
    let rss_before = resident_mib()?;
    let mut login = timed("POST /api/v1/auth/login");
    for _ in 0..logins {
        let t = Instant::now();
        let r = app.login(&admin.email, &admin.password).await;
        login.1.push(t.elapsed());
        if !r.status.is_success() {
            bail!("the login answered {}: {:?}", r.status, r.body);
        }
    }
    let rss_after = resident_mib()?;
    tokio::time::sleep(HASH_MEMORY_FREED_AFTER).await;
    let rss_idle = resident_mib()?;

    report("rate limiter: one admission (2 buckets)", limiter);
    for (label, samples) in [floor, jwt, api_key, login] {
        report(label, samples);
    }
    println!(
        "process resident memory (api and bench): {rss_before:.1} MiB before the logins, {rss_after:.1} MiB after {logins}, {rss_idle:.1} MiB {} s later",
        HASH_MEMORY_FREED_AFTER.as_secs()
    );
    app.cleanup().await;
    Ok(())
}
