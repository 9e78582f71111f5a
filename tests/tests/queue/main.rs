//! The job queue against the real Redis: idle pickup, a large backlog,
//! worker restarts after a Redis error, retries with backoff, crashed
//! workers, dead letters and retention. Each test has its own namespace.

mod faults;
mod reliability;
mod scale_out;

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use apalis::prelude::Monitor;
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use aigentable_jobs::queue::{self, QueueConfig, QueueKeys};
use aigentable_jobs::types::Noop;
use aigentable_jobs::{Envelope, Job, JobClient, JobStatus, Queue, Requester};
use aigentable_platform::Platform;
use aigentable_platform::ids::TenantId;
use aigentable_tests::test_config;
use aigentable_workers::metrics::Outcome;
use aigentable_workers::registry::{register, supervise};
use aigentable_workers::runner::{Handle, JobContext, JobError};
use aigentable_workers::{WorkerSetup, WorkerState, run_with};

/// When each job id started, in order (shared by all tests; ids are unique).
static STARTS: LazyLock<Mutex<HashMap<String, Vec<Instant>>>> = LazyLock::new(Default::default);

fn started(id: &str) -> Vec<Instant> {
    STARTS
        .lock()
        .map(|m| m.get(id).cloned().unwrap_or_default())
        .unwrap_or_default()
}

/// What a test job does when it runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum Act {
    Succeed,
    Panic,
    /// Runs longer than any test waits: its worker is killed meanwhile.
    Hang,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct TestJob {
    act: Act,
}

impl Job for TestJob {
    const NAME: &'static str = "test_job";
    const QUEUE: Queue = Queue::Bench;
    const MAX_ATTEMPTS: u32 = 3;
    const TIMEOUT: Duration = Duration::from_secs(30);
    const RECORDED: bool = false;
}

impl Handle for TestJob {
    async fn handle(self, ctx: JobContext) -> Result<Value, JobError> {
        if let Ok(mut m) = STARTS.lock() {
            m.entry(ctx.job_id.clone())
                .or_default()
                .push(Instant::now());
        }
        match self.act {
            Act::Succeed => Ok(Value::Null),
            Act::Panic => panic!("test job panics on purpose"),
            Act::Hang => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Ok(Value::Null)
            }
        }
    }
}

/// Same, with a MongoDB record, to see the record follow the queue.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RecordedJob {
    act: Act,
}

impl Job for RecordedJob {
    const NAME: &'static str = "recorded_job";
    const QUEUE: Queue = Queue::Bench;
    const MAX_ATTEMPTS: u32 = 3;
    const TIMEOUT: Duration = Duration::from_secs(30);
}

impl Handle for RecordedJob {
    async fn handle(self, ctx: JobContext) -> Result<Value, JobError> {
        TestJob { act: self.act }.handle(ctx).await
    }
}

/// Timings short enough for tests.
fn fast_config() -> QueueConfig {
    QueueConfig {
        lease: Duration::from_millis(400),
        heartbeat: Duration::from_millis(100),
        idle_poll: Duration::from_millis(50),
        retry_base: Duration::from_millis(100),
        trim_interval: Duration::from_millis(100),
        ..QueueConfig::default()
    }
}

struct Rig {
    platform: Platform,
    setup: WorkerSetup,
}

impl Rig {
    async fn new(queue: QueueConfig) -> Self {
        Self::with_config(test_config(&[]), queue).await
    }

    async fn with_config(config: aigentable_platform::Config, queue: QueueConfig) -> Self {
        let platform = Platform::connect(config)
            .await
            .expect("services are reachable");
        let state = WorkerState::new(platform.clone()).expect("worker state");
        let mut setup = WorkerSetup::connect(state, 8).await.expect("queue setup");
        setup.queue = queue;
        Self { platform, setup }
    }

    fn namespace(&self) -> &str {
        &self.platform.config.redis_namespace
    }

    fn keys<J: Job>(&self) -> QueueKeys {
        QueueKeys::for_job::<J>(self.namespace())
    }

    fn conn(&self) -> ConnectionManager {
        self.setup.conn.clone()
    }

    /// Runs workers for `J` until the returned handle is stopped or dropped.
    fn start<J: Handle>(&self) -> Running {
        let monitor = register::<J>(Monitor::new(), &self.setup);
        let (stop, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(supervise(monitor, Duration::from_secs(2), async move {
            let _ = rx.await;
            Ok(())
        }));
        Running {
            stop: Some(stop),
            task,
        }
    }

    async fn push<J: Job>(&self, id: &str, payload: J) {
        let envelope = Envelope {
            job_id: id.to_owned(),
            tenant_id: "tenant".to_owned(),
            payload,
        };
        let queued = queue::push(
            &mut self.conn(),
            &self.keys::<J>(),
            &[(id.to_owned(), envelope)],
        )
        .await
        .expect("push");
        assert_eq!(queued, 1, "job {id} queued");
    }

    async fn cleanup(self) {
        let pattern = format!("{}:*", self.namespace());
        let mut conn = self.conn();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(&pattern)
            .query_async(&mut conn)
            .await
            .unwrap_or_default();
        for chunk in keys.chunks(100) {
            let _: Result<(), _> = redis::cmd("DEL").arg(chunk).query_async(&mut conn).await;
        }
        let _ = self.platform.db.database().drop().await;
    }
}

struct Running {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// Graceful stop, as on SIGTERM.
    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let result = tokio::time::timeout(Duration::from_secs(10), &mut self.task).await;
        assert!(result.is_ok(), "workers stop within their grace period");
    }

    /// Drops the workers mid-job without any cleanup, as `kill -9` would.
    async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// Polls `check` every 10 ms until it holds or `timeout` passes.
async fn wait_for<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

fn new_id() -> String {
    ulid::Ulid::generate().to_string()
}

#[tokio::test]
async fn an_idle_worker_starts_a_pushed_job_without_waiting_for_its_poll_interval() {
    // A poll interval far longer than the bound: only the wake-up can
    // explain a quick start.
    let rig = Rig::new(QueueConfig {
        idle_poll: Duration::from_secs(60),
        ..fast_config()
    })
    .await;
    let running = rig.start::<TestJob>();
    // Let the worker make its first (empty) fetch and go idle.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..5 {
        let id = new_id();
        let pushed = Instant::now();
        rig.push(&id, TestJob { act: Act::Succeed }).await;
        assert!(
            wait_for(Duration::from_secs(1), || async {
                !started(&id).is_empty()
            })
            .await,
            "an idle worker started the job within 1 s"
        );
        let latency = started(&id)[0] - pushed;
        assert!(latency < Duration::from_secs(1), "{latency:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    running.stop().await;
    rig.cleanup().await;
}

#[tokio::test]
async fn without_wake_ups_an_idle_worker_still_polls() {
    let mut rig = Rig::new(fast_config()).await;
    rig.setup.wake = None;
    let running = rig.start::<TestJob>();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let id = new_id();
    rig.push(&id, TestJob { act: Act::Succeed }).await;
    assert!(
        wait_for(Duration::from_secs(2), || async {
            !started(&id).is_empty()
        })
        .await
    );
    running.stop().await;
    rig.cleanup().await;
}

/// apalis-redis 1.0 moved every due job in one Lua `unpack` and stopped for
/// good past ~8,000 of them. Here 60,000 ready jobs and 40,000 overdue
/// delayed ones (retries whose time has come) drain through the real
/// `--queues bench` registration, with no error and no restart.
#[tokio::test]
async fn a_large_backlog_drains_without_errors() {
    const READY: usize = 60_000;
    const DELAYED: usize = 40_000;
    let rig = Rig::new(QueueConfig::default()).await;
    let keys = rig.keys::<Noop>();
    let mut conn = rig.conn();
    for chunk in 0..READY / 1000 {
        let jobs: Vec<(String, Envelope<Noop>)> = (0..1000)
            .map(|i| {
                let seq = (chunk * 1000 + i) as u64;
                let id = format!("r{seq}");
                let envelope = Envelope {
                    job_id: id.clone(),
                    tenant_id: "tenant".to_owned(),
                    payload: Noop { seq },
                };
                (id, envelope)
            })
            .collect();
        assert_eq!(
            queue::push(&mut conn, &keys, &jobs).await.expect("push"),
            1000
        );
    }
    // Overdue retries, written directly as a worker's settle would.
    for chunk in 0..DELAYED / 1000 {
        let mut data = redis::cmd("HSET");
        data.arg(&keys.data);
        let mut delayed = redis::cmd("ZADD");
        delayed.arg(&keys.delayed);
        for i in 0..1000 {
            let seq = chunk * 1000 + i;
            let id = format!("d{seq}");
            let payload =
                serde_json::json!({"jobId": id, "tenantId": "tenant", "payload": {"seq": seq}});
            data.arg(&id).arg(payload.to_string());
            delayed.arg(1).arg(&id);
        }
        let _: () = data.query_async(&mut conn).await.expect("hset");
        let _: () = delayed.query_async(&mut conn).await.expect("zadd");
    }

    let setup = rig.setup.clone();
    let metrics = setup.metrics.for_job(Noop::QUEUE.as_str(), Noop::NAME);
    let (stop, rx) = oneshot::channel::<()>();
    let started_at = Instant::now();
    let task = tokio::spawn(async move {
        run_with(setup, &[Queue::Bench], Duration::from_secs(2), async move {
            let _ = rx.await;
            Ok(())
        })
        .await
    });
    let total = (READY + DELAYED) as u64;
    let drained = wait_for(Duration::from_secs(120), || async {
        metrics.count(Outcome::Succeeded) >= total
    })
    .await;
    let elapsed = started_at.elapsed();
    let depth = queue::depth(&mut conn, &keys).await.expect("depth");
    assert!(
        drained,
        "drained {} of {total} in {elapsed:?}; depth {depth:?}",
        metrics.count(Outcome::Succeeded)
    );
    println!("drained {total} jobs in {elapsed:?}");
    assert_eq!(metrics.count(Outcome::Succeeded), total);
    assert_eq!(metrics.restarts.get(), 0, "no worker restarted");
    assert_eq!(
        depth,
        queue::Depth::default(),
        "nothing left queued, leased or dead"
    );
    let leftover: (u64, u64) = redis::pipe()
        .hlen(&keys.data)
        .hlen(&keys.attempts)
        .query_async(&mut conn)
        .await
        .expect("hlen");
    assert_eq!(leftover, (0, 0), "completed jobs leave no data behind");
    let _ = stop.send(());
    let result = tokio::time::timeout(Duration::from_secs(10), task).await;
    assert!(matches!(result, Ok(Ok(Ok(())))), "{result:?}");
    rig.cleanup().await;
}

/// The worker's queue connection is killed under it (as when Redis
/// restarts): the worker rides the errors out without stopping (a stop
/// would drop its running jobs), and jobs keep flowing. Running jobs are
/// followed in tests/tests/queue_reliability.rs.
#[tokio::test]
async fn a_worker_whose_redis_connection_dies_keeps_working() {
    let rig = Rig::new(fast_config()).await;
    let running = rig.start::<TestJob>();
    let first = new_id();
    rig.push(&first, TestJob { act: Act::Succeed }).await;
    assert!(
        wait_for(Duration::from_secs(2), || async {
            !started(&first).is_empty()
        })
        .await
    );

    let metrics = rig
        .setup
        .metrics
        .for_job(TestJob::QUEUE.as_str(), TestJob::NAME);
    let mut conn = rig.conn();
    let mut admin = queue::connect(&aigentable_tests::redis_url())
        .await
        .expect("admin connection");
    // Bounded: each round kills the connection the worker uses right now.
    for _ in 0..5 {
        let id: i64 = redis::cmd("CLIENT")
            .arg("ID")
            .query_async(&mut conn)
            .await
            .unwrap_or(-1);
        if id > 0 {
            let _: Result<i64, _> = redis::cmd("CLIENT")
                .arg("KILL")
                .arg("ID")
                .arg(id)
                .query_async(&mut admin)
                .await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(metrics.restarts.get(), 0, "the worker was not restarted");

    let after = new_id();
    rig.push(&after, TestJob { act: Act::Succeed }).await;
    assert!(
        wait_for(Duration::from_secs(5), || async {
            !started(&after).is_empty()
        })
        .await,
        "the worker runs new jobs"
    );
    running.stop().await;
    rig.cleanup().await;
}

/// A panicking handler is retried with growing delays, then dead-lettered;
/// its MongoDB record says DEAD with the reason.
#[tokio::test]
async fn a_panicking_job_is_retried_with_backoff_then_dead() {
    let rig = Rig::new(fast_config()).await;
    let client = JobClient::connect(&rig.platform).await.expect("job client");
    let tenant = TenantId::from_trusted("tenant-queue-test".to_owned());
    let running = rig.start::<RecordedJob>();
    let record = client
        .enqueue(&tenant, Requester::System, RecordedJob { act: Act::Panic })
        .await
        .expect("enqueue");
    let keys = rig.keys::<RecordedJob>();
    let mut conn = rig.conn();
    let dead = wait_for(Duration::from_secs(10), || {
        let mut conn = conn.clone();
        let keys = keys.clone();
        let id = record.id.clone();
        async move { matches!(queue::dead_error(&mut conn, &keys, &id).await, Ok(Some(_))) }
    })
    .await;
    assert!(dead, "the job was dead-lettered");
    let starts = started(&record.id);
    assert_eq!(starts.len(), 3, "ran MAX_ATTEMPTS times");
    // Equal jitter: retry n waits between half and all of base * 2^(n-1).
    assert!(
        starts[1] - starts[0] >= Duration::from_millis(50),
        "{:?}",
        starts[1] - starts[0]
    );
    assert!(
        starts[2] - starts[1] >= Duration::from_millis(100),
        "{:?}",
        starts[2] - starts[1]
    );
    assert_eq!(
        queue::attempts(&mut conn, &keys, &record.id)
            .await
            .expect("attempts"),
        3
    );
    let error = queue::dead_error(&mut conn, &keys, &record.id)
        .await
        .expect("dead error");
    assert!(error.is_some_and(|e| e.contains("crashed")));

    let stored = rig
        .platform
        .db
        .scoped::<aigentable_jobs::JobRecord>(&tenant)
        .find_by_id(&record.id)
        .await
        .expect("find")
        .expect("record exists");
    assert_eq!(stored.status, JobStatus::Dead);
    assert_eq!(stored.attempts, 3);
    running.stop().await;
    rig.cleanup().await;
}

/// A job whose worker process dies while running it (here: the workers are
/// dropped mid-job, without any cleanup) is recovered when its lease
/// expires, with the attempt counted; after MAX_ATTEMPTS interrupted runs it
/// is dead-lettered instead of run again.
#[tokio::test]
async fn a_job_whose_worker_dies_is_recovered_then_dead_after_max_attempts() {
    let rig = Rig::new(fast_config()).await;
    let id = new_id();
    rig.push(&id, TestJob { act: Act::Hang }).await;
    for run in 1..=TestJob::MAX_ATTEMPTS as usize {
        let running = rig.start::<TestJob>();
        assert!(
            wait_for(Duration::from_secs(5), || async {
                started(&id).len() == run
            })
            .await,
            "run {run} started (after the previous worker's lease expired)"
        );
        running.kill().await;
    }
    let keys = rig.keys::<TestJob>();
    let mut conn = rig.conn();
    assert_eq!(
        queue::attempts(&mut conn, &keys, &id)
            .await
            .expect("attempts"),
        3
    );

    let running = rig.start::<TestJob>();
    let dead = wait_for(Duration::from_secs(5), || {
        let mut conn = conn.clone();
        let keys = keys.clone();
        let id = id.clone();
        async move { matches!(queue::dead_error(&mut conn, &keys, &id).await, Ok(Some(_))) }
    })
    .await;
    assert!(dead, "dead-lettered after its last interrupted attempt");
    assert_eq!(started(&id).len(), 3, "not run a fourth time");
    let error = queue::dead_error(&mut conn, &keys, &id)
        .await
        .expect("dead error");
    assert!(error.is_some_and(|e| e.contains("interrupted")));
    running.stop().await;
    rig.cleanup().await;
}

/// Pushing a job that is already queued does not queue it twice; a dead job
/// pushed again (a user's retry) starts afresh.
#[tokio::test]
async fn pushing_a_live_job_again_is_a_no_op_and_a_dead_one_starts_afresh() {
    let rig = Rig::new(fast_config()).await;
    let keys = rig.keys::<TestJob>();
    let mut conn = rig.conn();
    let id = new_id();
    let envelope = Envelope {
        job_id: id.clone(),
        tenant_id: "tenant".to_owned(),
        payload: TestJob { act: Act::Panic },
    };
    let job = [(id.clone(), envelope)];
    assert_eq!(queue::push(&mut conn, &keys, &job).await.expect("push"), 1);
    assert_eq!(queue::push(&mut conn, &keys, &job).await.expect("push"), 0);
    let running = rig.start::<TestJob>();
    assert!(
        wait_for(Duration::from_secs(10), || {
            let (mut conn, keys, id) = (conn.clone(), keys.clone(), id.clone());
            async move { matches!(queue::dead_error(&mut conn, &keys, &id).await, Ok(Some(_))) }
        })
        .await
    );
    assert_eq!(started(&id).len(), 3);
    assert_eq!(queue::push(&mut conn, &keys, &job).await.expect("push"), 1);
    assert!(
        wait_for(Duration::from_secs(10), || async {
            started(&id).len() == 6
        })
        .await
    );
    running.stop().await;
    rig.cleanup().await;
}

/// Done jobs are deleted at once; dead ones are kept for the retention
/// period, then trimmed: Redis does not grow with settled work.
#[tokio::test]
async fn settled_jobs_do_not_accumulate_in_redis() {
    let rig = Rig::new(QueueConfig {
        dead_retention: Duration::from_millis(300),
        ..fast_config()
    })
    .await;
    let keys = rig.keys::<TestJob>();
    let mut conn = rig.conn();
    let running = rig.start::<TestJob>();
    let ids: Vec<String> = (0..50).map(|_| new_id()).collect();
    for id in &ids {
        rig.push(id, TestJob { act: Act::Succeed }).await;
    }
    let dead_id = new_id();
    rig.push(&dead_id, TestJob { act: Act::Panic }).await;
    assert!(
        wait_for(Duration::from_secs(10), || async {
            ids.iter().all(|id| !started(id).is_empty())
        })
        .await
    );
    assert!(
        wait_for(Duration::from_secs(10), || async {
            started(&dead_id).len() == 3
        })
        .await
    );
    let empty = wait_for(Duration::from_secs(5), || {
        let (mut conn, keys) = (conn.clone(), keys.clone());
        async move {
            let sizes: Result<(u64, u64, u64, u64, u64), _> = redis::pipe()
                .hlen(&keys.data)
                .hlen(&keys.attempts)
                .hlen(&keys.errors)
                .zcard(&keys.dead)
                .zcard(&keys.inflight)
                .query_async(&mut conn)
                .await;
            sizes.is_ok_and(|s| s == (0, 0, 0, 0, 0))
        }
    })
    .await;
    let depth = queue::depth(&mut conn, &keys).await.expect("depth");
    assert!(
        empty,
        "done jobs deleted, the dead one trimmed after retention; {depth:?}"
    );
    running.stop().await;
    rig.cleanup().await;
}

/// A worker claims only jobs it can start now: with one slot each, two
/// slow jobs run on two workers at once instead of one waiting claimed
/// behind the other.
#[tokio::test]
async fn a_worker_claims_only_what_it_can_start() {
    let mut rig = Rig::new(fast_config()).await;
    rig.setup.concurrency = 1.into();
    let first = rig.start::<TestJob>();
    let second = rig.start::<TestJob>();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let ids = [new_id(), new_id()];
    for id in &ids {
        rig.push(id, TestJob { act: Act::Hang }).await;
    }
    assert!(
        wait_for(Duration::from_secs(3), || async {
            ids.iter().all(|id| !started(id).is_empty())
        })
        .await,
        "both slow jobs started"
    );
    first.kill().await;
    second.kill().await;
    rig.cleanup().await;
}

/// The workers' metrics carry jobs by queue and outcome, durations, queue
/// depth and restarts.
#[tokio::test]
async fn worker_metrics_count_jobs_by_queue_and_outcome() {
    let rig = Rig::new(fast_config()).await;
    let setup = rig.setup.clone();
    let (stop, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        run_with(setup, &[Queue::Bench], Duration::from_secs(2), async move {
            let _ = rx.await;
            Ok(())
        })
        .await
    });
    let keys = rig.keys::<Noop>();
    let jobs: Vec<_> = (0..10u64)
        .map(|seq| {
            let id = new_id();
            let envelope = Envelope {
                job_id: id.clone(),
                tenant_id: "tenant".to_owned(),
                payload: Noop { seq },
            };
            (id, envelope)
        })
        .collect();
    queue::push(&mut rig.conn(), &keys, &jobs)
        .await
        .expect("push");
    let metrics = rig.setup.metrics.clone();
    let job = metrics.for_job(Noop::QUEUE.as_str(), Noop::NAME);
    assert!(
        wait_for(Duration::from_secs(5), || async {
            job.count(Outcome::Succeeded) == 10
        })
        .await
    );
    // The depth gauges are refreshed every 5 s.
    assert!(
        wait_for(Duration::from_secs(7), || async {
            metrics
                .render()
                .contains("aigentable_queue_jobs{job=\"noop\",queue=\"bench\",state=\"ready\"} 0")
        })
        .await
    );
    let text = metrics.render();
    assert!(
        text.contains(
            "aigentable_jobs_total{job=\"noop\",outcome=\"succeeded\",queue=\"bench\"} 10"
        ),
        "{text}"
    );
    assert!(
        text.contains("aigentable_job_duration_seconds_count{job=\"noop\",queue=\"bench\"} 10")
    );
    assert!(text.contains("aigentable_worker_restarts_total{job=\"noop\",queue=\"bench\"} 0"));
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
    rig.cleanup().await;
}

/// This test binary started again on one ignored test (`test`, its full
/// name): a child process of a fault or scale-out test. Killed (SIGKILL)
/// when dropped.
struct ChildTest(std::process::Child);

impl ChildTest {
    /// Starts `test` with `command`'s environment, directory and output
    /// (set by the caller) added to.
    fn spawn(test: &str, mut command: std::process::Command) -> std::io::Result<Self> {
        command
            .args([
                test,
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .stdin(std::process::Stdio::null())
            .spawn()
            .map(Self)
    }

    /// A command for this test binary, to hand to [`ChildTest::spawn`].
    fn command() -> std::process::Command {
        std::process::Command::new(std::env::current_exe().expect("the test binary"))
    }

    fn id(&self) -> u32 {
        self.0.id()
    }

    fn alive(&mut self) -> bool {
        matches!(self.0.try_wait(), Ok(None))
    }

    /// Sends `signal` (`-TERM`, `-STOP`, ...) without waiting.
    fn signal(&self, signal: &str) {
        let _ = std::process::Command::new("kill")
            .args([signal, &self.0.id().to_string()])
            .status();
    }

    /// The exit status once the process stopped, within `within`.
    fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.0.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// SIGTERM, then [`Self::wait_exit`].
    fn terminate(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        self.signal("-TERM");
        self.wait_exit(within)
    }

    /// SIGKILL: no drain, no release, leases left to expire.
    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for ChildTest {
    fn drop(&mut self) {
        self.kill();
    }
}
