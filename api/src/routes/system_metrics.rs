//! `GET /api/v1/system/metrics` (platform administrators): the platform
//! right now, read from the Prometheus registry that `/metrics` exposes.
//!
//! Each call first refreshes the gauges that are sampled rather than
//! counted (MongoDB and Redis round trips, queue depths, process memory
//! and CPU), then reads every figure back from the registry: the JSON and
//! the Prometheus text never disagree, and there is no second bookkeeping.
//! Requests per second and CPU use are the rates since the previous call
//! (since start for the first); latency percentiles come from the request
//! histogram since start.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use prometheus::proto::MetricFamily;
use prometheus::{Gauge, GaugeVec, IntGauge, IntGaugeVec, Opts, Registry};
use salvo::oapi::ToSchema;
use salvo::prelude::*;
use serde::Serialize;

use aigentable_jobs::Queue;
use aigentable_jobs::queue::{self, QueueKeys, heartbeat};

use crate::error::ApiResult;
use crate::state::{AppState, app};

/// The sampled gauges, registered with the api's registry.
#[derive(Clone, Debug)]
pub struct Sampled {
    /// `dependency` = `mongodb` | `redis`.
    pub round_trip: GaugeVec,
    /// `queue`, `job`, `state` = `ready` | `delayed` | `inflight` | `dead`.
    pub queue_jobs: IntGaugeVec,
    pub resident_memory: Gauge,
    pub cpu_seconds: Gauge,
    /// `queue`, `job`: recorded jobs finished in the last minute.
    pub finished_last_minute: IntGaugeVec,
    /// `queue`: worker processes alive (heartbeat) serving it.
    pub worker_processes: IntGaugeVec,
    /// Worker processes alive.
    pub workers_alive: IntGauge,
    /// `queue`: jobs that ended FAILED or DEAD in the last 24 hours.
    pub failed_last_day: IntGaugeVec,
    /// `queue`, `job`: how long the job that has waited longest for a
    /// worker has waited.
    pub oldest_wait: GaugeVec,
    last: Arc<Mutex<Option<Snapshot>>>,
}

#[derive(Debug, Clone, Copy)]
struct Snapshot {
    at: Instant,
    requests: f64,
    cpu_seconds: f64,
}

impl Sampled {
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let round_trip = GaugeVec::new(
            Opts::new(
                "dependency_round_trip_seconds",
                "Last measured round trip to MongoDB and Redis",
            ),
            &["dependency"],
        )?;
        let queue_jobs = IntGaugeVec::new(
            Opts::new("api_queue_jobs", "Jobs per queue, type and state"),
            &["queue", "job", "state"],
        )?;
        let resident_memory = Gauge::new(
            "api_process_resident_memory_bytes",
            "Resident memory of the api process",
        )?;
        let cpu_seconds = Gauge::new(
            "api_process_cpu_seconds",
            "CPU time (user + system) used by the api process",
        )?;
        let finished_last_minute = IntGaugeVec::new(
            Opts::new(
                "api_queue_finished_last_minute",
                "Recorded jobs finished in the last minute, per queue and type",
            ),
            &["queue", "job"],
        )?;
        let worker_processes = IntGaugeVec::new(
            Opts::new(
                "api_worker_processes",
                "Worker processes alive (heartbeat within 15 s) serving each queue",
            ),
            &["queue"],
        )?;
        let workers_alive = IntGauge::new(
            "api_worker_processes_alive",
            "Worker processes alive (heartbeat within 15 s)",
        )?;
        let failed_last_day = IntGaugeVec::new(
            Opts::new(
                "api_queue_failed_last_day",
                "Jobs that ended FAILED or DEAD in the last 24 hours, per queue",
            ),
            &["queue"],
        )?;
        let oldest_wait = GaugeVec::new(
            Opts::new(
                "api_queue_oldest_job_age_seconds",
                "How long the job that has waited longest for a worker has waited, per queue and type (0 when none waits)",
            ),
            &["queue", "job"],
        )?;
        registry.register(Box::new(oldest_wait.clone()))?;
        registry.register(Box::new(failed_last_day.clone()))?;
        registry.register(Box::new(finished_last_minute.clone()))?;
        registry.register(Box::new(worker_processes.clone()))?;
        registry.register(Box::new(workers_alive.clone()))?;
        registry.register(Box::new(round_trip.clone()))?;
        registry.register(Box::new(queue_jobs.clone()))?;
        registry.register(Box::new(resident_memory.clone()))?;
        registry.register(Box::new(cpu_seconds.clone()))?;
        Ok(Self {
            round_trip,
            queue_jobs,
            resident_memory,
            cpu_seconds,
            finished_last_minute,
            worker_processes,
            workers_alive,
            failed_last_day,
            oldest_wait,
            last: Arc::new(Mutex::new(None)),
        })
    }
}

/// Every job type's queue keys, from the one list of job types.
fn all_queue_keys(namespace: &str) -> Vec<(&'static str, &'static str, QueueKeys)> {
    aigentable_jobs::types::all()
        .into_iter()
        .map(|k| {
            (
                k.queue.as_str(),
                k.name,
                QueueKeys::for_kind(namespace, k.queue, k.name),
            )
        })
        .collect()
}

/// Linux: resident bytes and CPU seconds of this process, from `/proc`.
fn process_usage() -> Option<(f64, f64)> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: f64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces) end at `)`.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // The kernel's USER_HZ is 100 on every Linux we run on.
    Some((pages * 4096.0, (utime + stime) / 100.0))
}

async fn round_trip<F, E>(fut: F) -> Option<f64>
where
    F: std::future::Future<Output = Result<(), E>>,
{
    let start = Instant::now();
    match tokio::time::timeout(Duration::from_secs(2), fut).await {
        Ok(Ok(())) => Some(start.elapsed().as_secs_f64()),
        _ => None,
    }
}

/// Jobs that ended FAILED or DEAD in the last 24 hours, per queue.
async fn failed_by_queue(
    state: &AppState,
) -> Result<std::collections::HashMap<String, i64>, mongodb::error::Error> {
    use futures::TryStreamExt;
    let since = bson::DateTime::from_chrono(Utc::now() - chrono::Duration::hours(24));
    let rows: Vec<bson::Document> = state
        .platform
        .db
        .unscoped::<bson::Document>(aigentable_jobs::record::COLLECTION)
        .aggregate(vec![
            bson::doc! { "$match": { "status": { "$in": ["FAILED", "DEAD"] }, "finishedAt": { "$gte": since } } },
            bson::doc! { "$group": { "_id": "$queue", "n": { "$sum": 1 } } },
        ])
        .await?
        .try_collect()
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|r| {
            let n = r
                .get_i32("n")
                .map(i64::from)
                .or_else(|_| r.get_i64("n"))
                .ok()?;
            Some((r.get_str("_id").ok()?.to_owned(), n))
        })
        .collect())
}

/// Refreshes the sampled gauges.
pub async fn refresh(state: &AppState) {
    let sampled = &state.metrics.sampled;
    let (mongo, redis) = tokio::join!(
        round_trip(state.platform.db.ping()),
        round_trip(state.platform.kv.ping())
    );
    for (name, value) in [("mongodb", mongo), ("redis", redis)] {
        // A dependency that did not answer reads as -1.
        sampled
            .round_trip
            .with_label_values(&[name])
            .set(value.unwrap_or(-1.0));
    }
    let mut conn = state.platform.kv.conn();
    for (queue_name, job, keys) in all_queue_keys(state.platform.kv.namespace()) {
        match queue::depth(&mut conn, &keys).await {
            Ok(d) => {
                for (s, n) in [
                    ("ready", d.ready),
                    ("delayed", d.delayed),
                    ("inflight", d.inflight),
                    ("dead", d.dead),
                ] {
                    sampled
                        .queue_jobs
                        .with_label_values(&[queue_name, job, s])
                        .set(i64::try_from(n).unwrap_or(i64::MAX));
                }
                sampled
                    .oldest_wait
                    .with_label_values(&[queue_name, job])
                    .set(d.oldest_wait.as_secs_f64());
            }
            Err(e) => tracing::debug!(queue = queue_name, error = %e, "queue depth unavailable"),
        }
        match queue::finished_within(&mut conn, &keys, Duration::from_secs(60)).await {
            Ok(n) => sampled
                .finished_last_minute
                .with_label_values(&[queue_name, job])
                .set(i64::try_from(n).unwrap_or(i64::MAX)),
            Err(e) => {
                tracing::debug!(queue = queue_name, error = %e, "queue throughput unavailable")
            }
        }
    }
    match heartbeat::alive(&mut conn, state.platform.kv.namespace()).await {
        Ok(live) => {
            sampled
                .workers_alive
                .set(i64::try_from(live.len()).unwrap_or(i64::MAX));
            for q in Queue::ALL {
                let serving = live
                    .iter()
                    .filter(|w| w.queues.iter().any(|s| s == q.as_str()))
                    .count();
                sampled
                    .worker_processes
                    .with_label_values(&[q.as_str()])
                    .set(i64::try_from(serving).unwrap_or(i64::MAX));
            }
        }
        Err(e) => tracing::debug!(error = %e, "live workers unavailable"),
    }
    match failed_by_queue(state).await {
        Ok(failed) => {
            for q in Queue::ALL {
                let n = failed.get(q.as_str()).copied().unwrap_or(0);
                sampled
                    .failed_last_day
                    .with_label_values(&[q.as_str()])
                    .set(n);
            }
        }
        Err(e) => tracing::debug!(error = %e, "failed job counts unavailable"),
    }
    if let Some((memory, cpu)) = process_usage() {
        sampled.resident_memory.set(memory);
        sampled.cpu_seconds.set(cpu);
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LatencyMs {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpFigures {
    pub requests_total: u64,
    /// Since the previous call to this endpoint (since start for the first).
    pub requests_per_second: f64,
    pub server_errors_total: u64,
    /// From the request histogram since start.
    pub latency_ms: LatencyMs,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueueFigures {
    pub queue: String,
    pub queued: i64,
    pub delayed: i64,
    pub running: i64,
    pub dead: i64,
    /// Recorded jobs finished in the last minute.
    pub finished_last_minute: i64,
    /// `finishedLastMinute` per second.
    pub throughput_per_second: f64,
    /// Worker processes alive serving this queue.
    pub worker_processes: i64,
    /// Jobs that ended FAILED or DEAD in the last 24 hours.
    pub failed_last_day: i64,
    /// How long the job that has waited longest for a worker in this queue
    /// has waited, in seconds (0 when none waits): what to scale workers
    /// or alert on.
    pub oldest_job_age_seconds: f64,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProcessFigures {
    pub resident_memory_bytes: u64,
    pub cpu_seconds_total: f64,
    /// Of one core, since the previous call.
    pub cpu_percent: f64,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SystemMetrics {
    pub timestamp: DateTime<Utc>,
    pub uptime_seconds: u64,
    pub http: HttpFigures,
    pub jobs: Vec<QueueFigures>,
    pub socket_connections: i64,
    /// Worker processes alive (a heartbeat within the last 15 s).
    pub worker_processes: i64,
    /// `-1` when the dependency did not answer within 2 s.
    pub mongodb_round_trip_ms: f64,
    pub redis_round_trip_ms: f64,
    pub process: ProcessFigures,
}

fn families<'a>(all: &'a [MetricFamily], name: &str) -> Option<&'a MetricFamily> {
    all.iter().find(|f| f.name() == name)
}

fn label<'a>(m: &'a prometheus::proto::Metric, name: &str) -> &'a str {
    m.get_label()
        .iter()
        .find(|l| l.name() == name)
        .map_or("", |l| l.value())
}

/// The `q` quantile of merged histogram buckets (upper bound, cumulative
/// count), interpolated linearly inside its bucket.
pub fn quantile(buckets: &[(f64, u64)], total: u64, q: f64) -> f64 {
    if total == 0 {
        return 0.0;
    }
    let rank = q * total as f64;
    let mut lower = (0.0, 0u64);
    for &(bound, count) in buckets {
        if count as f64 >= rank {
            let in_bucket = (count - lower.1) as f64;
            if in_bucket <= 0.0 {
                return bound;
            }
            return lower.0 + (bound - lower.0) * ((rank - lower.1 as f64) / in_bucket);
        }
        lower = (bound, count);
    }
    lower.0
}

fn round(v: f64, places: i32) -> f64 {
    let f = 10f64.powi(places);
    (v * f).round() / f
}

/// Reads the figures back from the registry.
pub fn read(state: &AppState) -> SystemMetrics {
    let all = state.metrics.registry.gather();
    let prefixed = |n: &str| format!("aigentable_{n}");
    let mut requests_total = 0u64;
    let mut server_errors_total = 0u64;
    if let Some(f) = families(&all, &prefixed("http_requests_total")) {
        for m in f.get_metric() {
            let n = m.get_counter().value() as u64;
            requests_total += n;
            if label(m, "status").starts_with('5') {
                server_errors_total += n;
            }
        }
    }
    let mut merged: Vec<(f64, u64)> = Vec::new();
    let mut observed = 0u64;
    if let Some(f) = families(&all, &prefixed("http_request_duration_seconds")) {
        for m in f.get_metric() {
            let h = m.get_histogram();
            observed += h.sample_count();
            for (i, b) in h.get_bucket().iter().enumerate() {
                match merged.get_mut(i) {
                    Some(slot) => slot.1 += b.cumulative_count(),
                    None => merged.push((b.upper_bound(), b.cumulative_count())),
                }
            }
        }
    }
    let gauge = |name: &str, labels: &[(&str, &str)]| -> Option<f64> {
        families(&all, &prefixed(name))?
            .get_metric()
            .iter()
            .find(|m| labels.iter().all(|(k, v)| label(m, k) == *v))
            .map(|m| m.get_gauge().value())
    };
    let mut queues: std::collections::BTreeMap<String, QueueFigures> = Default::default();
    if let Some(f) = families(&all, &prefixed("api_queue_jobs")) {
        for m in f.get_metric() {
            let name = label(m, "queue").to_owned();
            let entry = queues.entry(name.clone()).or_insert_with(|| QueueFigures {
                queue: name,
                queued: 0,
                delayed: 0,
                running: 0,
                dead: 0,
                finished_last_minute: 0,
                throughput_per_second: 0.0,
                worker_processes: 0,
                failed_last_day: 0,
                oldest_job_age_seconds: 0.0,
            });
            let n = m.get_gauge().value() as i64;
            match label(m, "state") {
                "ready" => entry.queued += n,
                "delayed" => entry.delayed += n,
                "inflight" => entry.running += n,
                "dead" => entry.dead += n,
                _ => {}
            }
        }
    }
    if let Some(f) = families(&all, &prefixed("api_queue_oldest_job_age_seconds")) {
        for m in f.get_metric() {
            if let Some(entry) = queues.get_mut(label(m, "queue")) {
                let age = round(m.get_gauge().value(), 3);
                if age > entry.oldest_job_age_seconds {
                    entry.oldest_job_age_seconds = age;
                }
            }
        }
    }
    if let Some(f) = families(&all, &prefixed("api_queue_finished_last_minute")) {
        for m in f.get_metric() {
            if let Some(entry) = queues.get_mut(label(m, "queue")) {
                entry.finished_last_minute += m.get_gauge().value() as i64;
                entry.throughput_per_second = round(entry.finished_last_minute as f64 / 60.0, 3);
            }
        }
    }
    for entry in queues.values_mut() {
        entry.failed_last_day = gauge(
            "api_queue_failed_last_day",
            &[("queue", entry.queue.as_str())],
        )
        .unwrap_or(0.0) as i64;
        entry.worker_processes =
            gauge("api_worker_processes", &[("queue", entry.queue.as_str())]).unwrap_or(0.0) as i64;
    }
    let memory = gauge("api_process_resident_memory_bytes", &[]).unwrap_or(0.0);
    let cpu = gauge("api_process_cpu_seconds", &[]).unwrap_or(0.0);
    let now = Instant::now();
    let previous = state
        .metrics
        .sampled
        .last
        .lock()
        .ok()
        .and_then(|mut last| {
            last.replace(Snapshot {
                at: now,
                requests: requests_total as f64,
                cpu_seconds: cpu,
            })
        })
        .unwrap_or(Snapshot {
            at: state.started_at,
            requests: 0.0,
            cpu_seconds: 0.0,
        });
    let elapsed = now.duration_since(previous.at).as_secs_f64().max(0.001);
    let ms = |v: Option<f64>| match v {
        Some(s) if s >= 0.0 => round(s * 1000.0, 3),
        _ => -1.0,
    };
    SystemMetrics {
        timestamp: Utc::now(),
        uptime_seconds: state.started_at.elapsed().as_secs(),
        http: HttpFigures {
            requests_total,
            requests_per_second: round((requests_total as f64 - previous.requests) / elapsed, 3),
            server_errors_total,
            latency_ms: LatencyMs {
                p50: round(quantile(&merged, observed, 0.50) * 1000.0, 3),
                p95: round(quantile(&merged, observed, 0.95) * 1000.0, 3),
                p99: round(quantile(&merged, observed, 0.99) * 1000.0, 3),
            },
        },
        jobs: queues.into_values().collect(),
        socket_connections: state.metrics.socket_connections.get(),
        worker_processes: gauge("api_worker_processes_alive", &[]).unwrap_or(0.0) as i64,
        mongodb_round_trip_ms: ms(gauge(
            "dependency_round_trip_seconds",
            &[("dependency", "mongodb")],
        )),
        redis_round_trip_ms: ms(gauge(
            "dependency_round_trip_seconds",
            &[("dependency", "redis")],
        )),
        process: ProcessFigures {
            resident_memory_bytes: memory as u64,
            cpu_seconds_total: round(cpu, 3),
            cpu_percent: round((cpu - previous.cpu_seconds).max(0.0) / elapsed * 100.0, 2),
        },
    }
}

/// The platform's live figures (platform administrators).
#[endpoint(tags("system"), security(("bearerAuth" = [])))]
pub async fn system_metrics(depot: &mut Depot) -> ApiResult<Json<SystemMetrics>> {
    let state = app(depot);
    refresh(state).await;
    Ok(Json(read(state)))
}

#[cfg(test)]
mod tests {
    use super::quantile;

    #[test]
    fn quantiles_interpolate_inside_buckets() {
        // 10 under 1 ms, 10 more under 5 ms, none above.
        let buckets = [(0.001, 10), (0.005, 20), (0.01, 20)];
        assert!((quantile(&buckets, 20, 0.5) - 0.001).abs() < 1e-9);
        assert!((quantile(&buckets, 20, 0.75) - 0.003).abs() < 1e-9);
        assert_eq!(quantile(&buckets, 0, 0.5), 0.0);
    }
}
