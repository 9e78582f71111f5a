//! Reliability of the job queue (issue 16) against the real Redis and
//! MongoDB: owned leases, Redis errors that must not drop running jobs,
//! graceful drains and records that are never stranded. Each test has its
//! own namespace and database.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use apalis::prelude::Monitor;
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use aigentable_jobs::queue::{self, QueueConfig, QueueKeys, Settlement};
use aigentable_jobs::record::{self, JobRecord};
use aigentable_jobs::types::Sweep;
use aigentable_jobs::{Envelope, Job, JobClient, JobStatus, Queue, Requester};
use aigentable_platform::Platform;
use aigentable_platform::ids::TenantId;
use aigentable_tests::partition::{Partition, host_port};
use aigentable_tests::services::OwnRedis;
use aigentable_tests::test_config;
use aigentable_workers::registry::{register, supervise, supervise_draining};
use aigentable_workers::runner::{Handle, JobContext, JobError};
use aigentable_workers::{WorkerSetup, WorkerState};

use super::{Rig, fast_config, new_id, wait_for};

/// Per job id: when each run started and ended (shared by all tests; ids
/// are unique).
#[derive(Debug, Default, Clone)]
struct Runs {
    started: Vec<Instant>,
    /// Per run: whether it was a first run (no earlier run of the job
    /// began, [`JobContext::first_run`]).
    first: Vec<bool>,
    ended: Vec<Instant>,
    /// Most runs of this id seen in progress at the same time.
    max_parallel: usize,
}

static RUNS: LazyLock<Mutex<HashMap<String, Runs>>> = LazyLock::new(Default::default);

fn runs(id: &str) -> Runs {
    RUNS.lock()
        .map(|m| m.get(id).cloned().unwrap_or_default())
        .unwrap_or_default()
}

fn run_started(ctx: &JobContext) -> usize {
    let Ok(mut m) = RUNS.lock() else { return 0 };
    let r = m.entry(ctx.job_id.clone()).or_default();
    r.started.push(Instant::now());
    r.first.push(ctx.first_run());
    let parallel = r.started.len() - r.ended.len();
    r.max_parallel = r.max_parallel.max(parallel);
    r.started.len()
}

fn run_ended(id: &str) {
    if let Ok(mut m) = RUNS.lock() {
        m.entry(id.to_owned())
            .or_default()
            .ended
            .push(Instant::now());
    }
}

/// Ends a run when dropped: a run stopped where it stood ends too.
struct RunEnds(String);

impl Drop for RunEnds {
    fn drop(&mut self) {
        run_ended(&self.0);
    }
}

/// A job whose runs take the given times and then succeed, or fail with a
/// transient error for the runs listed in `fail_runs` (1-based).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SlowJob {
    run_ms: Vec<u64>,
    #[serde(default)]
    fail_runs: Vec<usize>,
}

impl SlowJob {
    /// A job that succeeds at once.
    fn instant() -> Self {
        Self {
            run_ms: vec![0],
            fail_runs: Vec::new(),
        }
    }
}

impl Job for SlowJob {
    const NAME: &'static str = "slow_job";
    const QUEUE: Queue = Queue::Bench;
    const MAX_ATTEMPTS: u32 = 5;
    const TIMEOUT: Duration = Duration::from_secs(30);
    const RECORDED: bool = false;
}

impl Handle for SlowJob {
    async fn handle(self, ctx: JobContext) -> Result<Value, JobError> {
        let run = run_started(&ctx);
        let ms = self
            .run_ms
            .get(run - 1)
            .or(self.run_ms.last())
            .copied()
            .unwrap_or(0);
        let ends = RunEnds(ctx.job_id.clone());
        tokio::time::sleep(Duration::from_millis(ms)).await;
        drop(ends);
        if self.fail_runs.contains(&run) {
            return Err(JobError::Transient(format!("run {run} fails on purpose")));
        }
        Ok(Value::Null)
    }
}

/// [`SlowJob`] with a MongoDB record.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RecordedSlowJob {
    run_ms: Vec<u64>,
}

impl Job for RecordedSlowJob {
    const NAME: &'static str = "recorded_slow_job";
    const QUEUE: Queue = Queue::Bench;
    const MAX_ATTEMPTS: u32 = 3;
    const TIMEOUT: Duration = Duration::from_secs(30);
}

impl Handle for RecordedSlowJob {
    async fn handle(self, ctx: JobContext) -> Result<Value, JobError> {
        SlowJob {
            run_ms: self.run_ms,
            fail_runs: Vec::new(),
        }
        .handle(ctx)
        .await
    }
}

/// Runs workers for `J` with `setup` until stopped or dropped.
fn start<J: Handle>(setup: &WorkerSetup, grace: Duration) -> Running {
    let monitor = register::<J>(Monitor::new(), setup);
    let (stop, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(supervise(monitor, grace, async move {
        let _ = rx.await;
        Ok(())
    }));
    Running {
        stop: Some(stop),
        task,
    }
}

/// Runs workers for `J` with `setup` that drain on stop, as the workers
/// binary does on SIGTERM. `setup` gets a drain of its own.
fn start_draining<J: Handle>(setup: &WorkerSetup, grace: Duration) -> Running {
    let mut setup = setup.clone();
    setup.drain = queue::Drain::new();
    let monitor = register::<J>(Monitor::new(), &setup);
    let (stop, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        supervise_draining(monitor, &setup, grace, async move {
            let _ = rx.await;
            Ok(())
        })
        .await
    });
    Running {
        stop: Some(stop),
        task,
    }
}

struct Running {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// Graceful stop, as on SIGTERM; returns how long the stop took.
    async fn stop(mut self) -> Duration {
        let began = Instant::now();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let result = tokio::time::timeout(Duration::from_secs(20), &mut self.task).await;
        assert!(result.is_ok(), "workers stop within their grace period");
        began.elapsed()
    }

    /// Drops the workers mid-job without any cleanup, as `kill -9` would.
    async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

async fn data_exists(conn: &mut ConnectionManager, keys: &QueueKeys, id: &str) -> bool {
    redis::cmd("HEXISTS")
        .arg(&keys.data)
        .arg(id)
        .query_async::<bool>(conn)
        .await
        .unwrap_or(false)
}

// ---------------------------------------------------------------------------
// 1. Owned leases
// ---------------------------------------------------------------------------

/// A claim whose lease expired and was requeued, then claimed again, can
/// no longer renew, settle (done, retry or dead) or release the job: only
/// the new claim can.
/// Redis ran a worker's fetch but its answer was lost (the connection broke
/// on the way back): the worker's next fetch takes the claimed job over
/// under its own claim, attempt unchanged, instead of leaving it leased to
/// nobody until the lease runs out. Other workers' fetches do not see it.
#[tokio::test]
async fn a_fetch_whose_answer_was_lost_is_taken_over_by_the_next_one() {
    let rig = Rig::new(fast_config()).await;
    let keys = rig.keys::<SlowJob>();
    let mut conn = rig.conn();
    let id = new_id();
    rig.push(&id, SlowJob::instant()).await;
    let now = u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(0);
    let far = now + 3_600_000;
    let ids = |reply: &[redis::Value]| -> Vec<(String, i64)> {
        reply
            .chunks(4)
            .filter_map(|t| match (&t[0], &t[1]) {
                (redis::Value::BulkString(id), redis::Value::Int(attempt)) => {
                    Some((String::from_utf8_lossy(id).into_owned(), *attempt))
                }
                _ => None,
            })
            .collect()
    };
    let lost = queue::fetch(&mut conn, &keys, now, far, 10, 10, "lost-fetch", &[])
        .await
        .expect("the fetch ran");
    assert_eq!(ids(&lost), vec![(id.clone(), 1)], "Redis claimed the job");
    let other = queue::fetch(&mut conn, &keys, now, far, 10, 10, "another-worker", &[])
        .await
        .expect("fetch");
    assert!(other.is_empty(), "the job is leased: {other:?}");
    let next = queue::fetch(
        &mut conn,
        &keys,
        now,
        far,
        10,
        10,
        "next-fetch",
        &["lost-fetch".to_owned()],
    )
    .await
    .expect("fetch");
    assert_eq!(
        ids(&next),
        vec![(id.clone(), 1)],
        "taken over, the attempt not counted again"
    );
    for (token, owns) in [("lost-fetch", false), ("next-fetch", true)] {
        let settled = queue::settle(&mut conn, &keys, &id, token, &Settlement::Done)
            .await
            .expect("settle");
        assert_eq!(settled, owns, "{token} settles the job: {owns}");
    }
    rig.cleanup().await;
}

#[tokio::test]
async fn a_stale_claim_cannot_touch_the_new_owners_lease() {
    let rig = Rig::new(fast_config()).await;
    let keys = rig.keys::<SlowJob>();
    let mut conn = rig.conn();
    let id = new_id();
    rig.push(&id, SlowJob::instant()).await;
    let queue = queue::RedisQueue::<SlowJob>::new(conn.clone(), keys.clone(), fast_config(), None);
    let claim_of = |tasks: &[apalis::prelude::Task<Envelope<SlowJob>>]| -> String {
        assert_eq!(tasks.len(), 1, "one job claimed");
        tasks[0]
            .data()
            .get::<queue::Claim>()
            .map(|c| c.token.clone())
            .expect("a claimed task carries its claim")
    };
    let stale = claim_of(&queue.claim_and_abandon().await.expect("first claim"));
    tokio::time::sleep(Duration::from_millis(450)).await;
    let reaped = queue::reap(&mut conn, &keys, u64::MAX / 2, 100)
        .await
        .expect("reap");
    assert_eq!(reaped, 1, "the expired lease was requeued");
    let owner = claim_of(&queue.claim_and_abandon().await.expect("second claim"));
    assert_ne!(stale, owner, "each claim has its own token");

    let far = u64::MAX / 2;
    let lost = queue::renew(&mut conn, &keys, &[(id.clone(), stale.clone())], far)
        .await
        .expect("renew");
    assert_eq!(lost, vec![id.clone()], "the stale claim's lease is lost");
    for how in [
        Settlement::Done,
        Settlement::Retry { due_ms: 0 },
        Settlement::Dead {
            error: "stale".to_owned(),
        },
    ] {
        let settled = queue::settle(&mut conn, &keys, &id, &stale, &how)
            .await
            .expect("settle");
        assert!(!settled, "a stale claim cannot settle ({how:?})");
    }
    let released = queue::release(&mut conn, &keys, &[(id.clone(), stale.clone())], true)
        .await
        .expect("release");
    assert_eq!(released, 0, "a stale claim cannot release");
    let depth = queue::depth(&mut conn, &keys).await.expect("depth");
    assert_eq!(
        depth,
        queue::Depth {
            inflight: 1,
            ..Default::default()
        },
        "the job is still leased by its owner, not queued, delayed or dead"
    );
    assert!(data_exists(&mut conn, &keys, &id).await);
    assert_eq!(queue::attempts(&mut conn, &keys, &id).await.expect("n"), 2);

    let lost = queue::renew(&mut conn, &keys, &[(id.clone(), owner.clone())], far)
        .await
        .expect("renew");
    assert!(lost.is_empty(), "the owner renews its lease");
    assert!(
        queue::settle(&mut conn, &keys, &id, &owner, &Settlement::Done)
            .await
            .expect("settle"),
        "the owner settles"
    );
    assert!(!data_exists(&mut conn, &keys, &id).await);
    rig.cleanup().await;
}

/// How a run in [`a_run_after_one_stopped_midway_is_told_that_it_resumes`]
/// ends.
enum Ended {
    Settled(Settlement),
    GivenBack { started: bool },
}

/// Claims the one job of `keys`'s queue under `token`: its attempt, and
/// whether the queue says it resumes a run stopped midway.
async fn claim_only_job(
    conn: &mut ConnectionManager,
    keys: &QueueKeys,
    token: &str,
) -> (i64, bool) {
    let reply = queue::fetch(conn, keys, u64::MAX / 4, u64::MAX / 2, 10, 10, token, &[])
        .await
        .expect("fetch");
    match reply.as_slice() {
        [_, redis::Value::Int(attempt), _, redis::Value::Int(resumed)] => (*attempt, *resumed == 1),
        other => panic!("one job claimed: {other:?}"),
    }
}

/// A run that began and was stopped (its lease lapsed, a shutdown's grace
/// ran out) gives its attempt back, so the next run has the same attempt
/// number: the queue tells that run it resumes, or a handler trusting what
/// its job was queued with would redo the stopped run's work (a reply sent
/// twice). The mark outlives a chosen wait and an unstarted hand-back, and
/// goes when the attempt ends.
#[tokio::test]
async fn a_run_after_one_stopped_midway_is_told_that_it_resumes() {
    let rig = Rig::new(fast_config()).await;
    let keys = rig.keys::<SlowJob>();
    let mut conn = rig.conn();
    let id = new_id();
    rig.push(&id, SlowJob::instant()).await;
    // Each step claims the job, checks what the run is told, and ends the
    // run as given.
    let steps = [
        (
            (1, false),
            "a first run",
            Ended::Settled(Settlement::Interrupted { due_ms: 0 }),
        ),
        (
            (1, true),
            "the stopped run's attempt given back, the run told it resumes",
            Ended::Settled(Settlement::Defer { due_ms: 0 }),
        ),
        (
            (1, true),
            "a wait of its own choosing does not end the attempt",
            Ended::GivenBack { started: false },
        ),
        (
            (1, true),
            "nor does a hand-back before it started",
            Ended::Settled(Settlement::Retry { due_ms: 0 }),
        ),
        (
            (2, false),
            "a retry is a new attempt, counted",
            Ended::GivenBack { started: true },
        ),
        (
            (2, true),
            "a run given back after it started resumes too",
            Ended::Settled(Settlement::Done),
        ),
    ];
    for (n, (told, why, ended)) in steps.into_iter().enumerate() {
        let token = format!("claim-{n}");
        assert_eq!(
            claim_only_job(&mut conn, &keys, &token).await,
            told,
            "{why}"
        );
        let held = match ended {
            Ended::Settled(how) => queue::settle(&mut conn, &keys, &id, &token, &how)
                .await
                .expect("settle"),
            Ended::GivenBack { started } => {
                queue::release(&mut conn, &keys, &[(id.clone(), token.clone())], started)
                    .await
                    .expect("release")
                    == 1
            }
        };
        assert!(held, "{token} held the job");
    }
    assert!(!data_exists(&mut conn, &keys, &id).await);
    let counted: bool = redis::cmd("HEXISTS")
        .arg(&keys.attempts)
        .arg(&id)
        .query_async(&mut conn)
        .await
        .expect("hexists");
    assert!(!counted, "a finished job leaves no count or mark behind");
    rig.cleanup().await;
}

/// The age of the job that has waited longest, what an autoscaler watches:
/// it grows while a job waits in its lane, counts a due retry from its due
/// time, and is zero once every job is claimed.
#[tokio::test]
async fn the_oldest_waiting_job_is_measured_until_it_is_claimed() {
    let rig = Rig::new(fast_config()).await;
    let keys = rig.keys::<SlowJob>();
    let mut conn = rig.conn();
    let empty = queue::depth(&mut conn, &keys).await.expect("depth");
    assert_eq!(empty.oldest_wait, Duration::ZERO, "nothing waits");
    let job = SlowJob::instant;
    let (first, second) = (new_id(), new_id());
    rig.push(&first, job()).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    rig.push(&second, job()).await;
    let waiting = queue::depth(&mut conn, &keys).await.expect("depth");
    assert_eq!(waiting.ready, 2);
    assert!(
        waiting.oldest_wait >= Duration::from_millis(400)
            && waiting.oldest_wait < Duration::from_secs(5),
        "the first job has waited since its push: {waiting:?}"
    );

    let queue = queue::RedisQueue::<SlowJob>::new(conn.clone(), keys.clone(), fast_config(), None);
    let mut claimed = 0;
    for _ in 0..3 {
        if claimed < 2 {
            claimed += queue.claim_and_abandon().await.expect("claim").len();
        }
    }
    assert_eq!(claimed, 2, "both jobs claimed");
    let none = queue::depth(&mut conn, &keys).await.expect("depth");
    assert_eq!(
        (none.ready, none.inflight, none.oldest_wait),
        (0, 2, Duration::ZERO),
        "claimed jobs no longer wait: {none:?}"
    );

    // A retry due a second ago waits in `delayed` until a fetch promotes it.
    let mut due = rig.conn();
    let past = chrono::Utc::now().timestamp_millis() - 1_000;
    let _: () = redis::cmd("ZADD")
        .arg(&keys.delayed)
        .arg(past)
        .arg(&first)
        .query_async(&mut due)
        .await
        .expect("zadd");
    let overdue = queue::depth(&mut conn, &keys).await.expect("depth");
    assert!(
        overdue.oldest_wait >= Duration::from_millis(900),
        "an overdue retry counts from its due time: {overdue:?}"
    );
}

/// A worker is cut off from Redis (a network partition: its requests get
/// no answer) while it runs a job longer than its lease. It cannot renew
/// the lease, so another worker takes the job over once the lease lapses.
/// The cut-off run stops itself before that: the job never runs twice at
/// once, and when the link heals the stale run's outcome (or a retryable
/// failure it would have reported) cannot reschedule the new owner's job:
/// it runs exactly twice in all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_cut_off_from_redis_stops_its_run_before_another_takes_it_over() {
    let rig = Rig::new(fast_config()).await;
    let keys = rig.keys::<SlowJob>();
    let mut conn = rig.conn();
    let link = Partition::start(host_port(&aigentable_tests::redis_url())).await;
    let mut cut_off = rig.setup.clone();
    cut_off.conn = queue::connect(&link.route(&aigentable_tests::redis_url()))
        .await
        .expect("queue connection through the link");
    cut_off.wake = None;
    cut_off.concurrency = 1.into();
    let cut_off = start::<SlowJob>(&cut_off, Duration::from_secs(1));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let id = new_id();
    rig.push(
        &id,
        SlowJob {
            // The cut-off run would fail after 1.5 s, while the second one
            // runs.
            run_ms: vec![1500, 1000],
            fail_runs: vec![1],
        },
    )
    .await;
    assert!(
        wait_for(Duration::from_secs(3), || async {
            runs(&id).started.len() == 1
        })
        .await,
        "the first run started"
    );
    link.cut();
    let healthy = start::<SlowJob>(&rig.setup, Duration::from_secs(1));
    assert!(
        wait_for(Duration::from_secs(3), || async {
            runs(&id).started.len() == 2
        })
        .await,
        "the healthy worker took the lapsed lease over"
    );
    let settled = wait_for(Duration::from_secs(8), || {
        let (mut conn, keys, id) = (conn.clone(), keys.clone(), id.clone());
        async move { !data_exists(&mut conn, &keys, &id).await }
    })
    .await;
    assert!(settled, "the owner's run settled the job");
    link.heal();
    // Leave time for the healed worker's stale outcome to be written, and
    // for a wrongly rescheduled third run to show up.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let r = runs(&id);
    assert_eq!(r.started.len(), 2, "ran exactly twice: {r:?}");
    assert_eq!(r.max_parallel, 1, "never two runs at once: {r:?}");
    assert_eq!(
        r.first,
        vec![true, false],
        "the second run knows that one began before it: {r:?}"
    );
    let depth = queue::depth(&mut conn, &keys).await.expect("depth");
    assert_eq!(depth, queue::Depth::default());
    cut_off.kill().await;
    healthy.stop().await;
    rig.cleanup().await;
}

/// A worker fetches again a job it still holds (its lease was reaped while
/// the run went on, as after a Redis restart or a stall): the run adopts the
/// new claim instead of starting twice, and the worker keeps working. This
/// once deadlocked the worker's whole runtime (a lock held across the
/// adoption), so the worker runs on a runtime of its own here: a frozen
/// worker fails the test instead of freezing it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_fetched_again_by_the_worker_that_still_runs_it_is_adopted() {
    let rig = Rig::new(fast_config()).await;
    let keys = rig.keys::<SlowJob>();
    let mut conn = rig.conn();
    let mut setup = rig.setup.clone();
    setup.concurrency = 2.into();
    let (stop, stopped) = oneshot::channel::<()>();
    let worker = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("worker runtime");
        runtime.block_on(async move {
            let monitor = register::<SlowJob>(Monitor::new(), &setup);
            supervise(monitor, Duration::from_secs(1), async move {
                let _ = stopped.await;
                Ok(())
            })
            .await
        })
    });
    let id = new_id();
    rig.push(
        &id,
        SlowJob {
            run_ms: vec![3000],
            fail_runs: vec![],
        },
    )
    .await;
    assert!(
        wait_for(Duration::from_secs(3), || async {
            runs(&id).started.len() == 1
        })
        .await,
        "the run started"
    );
    // Reaped as if its lease had expired: queued again, while it runs.
    let later = u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(0) + 3_600_000;
    let reaped = queue::reap(&mut conn, &keys, later, 10)
        .await
        .expect("reap");
    assert_eq!(reaped, 1, "the running job was requeued");
    let settled = wait_for(Duration::from_secs(12), || {
        let (mut conn, keys, id) = (conn.clone(), keys.clone(), id.clone());
        async move { !data_exists(&mut conn, &keys, &id).await }
    })
    .await;
    assert!(settled, "the adopting run settled the job");
    let r = runs(&id);
    assert_eq!(r.started.len(), 1, "adopted, not started again: {r:?}");
    // The worker still works.
    let next = new_id();
    rig.push(&next, SlowJob::instant()).await;
    assert!(
        wait_for(Duration::from_secs(5), || async {
            runs(&next).started.len() == 1
        })
        .await,
        "the worker goes on with the next job"
    );
    let _ = stop.send(());
    let joined = tokio::task::spawn_blocking(move || worker.join()).await;
    assert!(
        matches!(joined, Ok(Ok(Ok(())))),
        "the worker stopped cleanly"
    );
    rig.cleanup().await;
}

/// The job record follows only its current claim: a second claim of the
/// same attempt cannot mark it RUNNING again, a later attempt (after the
/// lease was reaped) takes it over, and the superseded run can no longer
/// finish it. A job cancelled while running never ends SUCCEEDED.
#[tokio::test]
async fn the_job_record_follows_only_its_current_claim() {
    let rig = Rig::new(fast_config()).await;
    let client = JobClient::connect(&rig.platform).await.expect("job client");
    let tenant = TenantId::from_trusted("tenant-claims".to_owned());
    let db = &rig.platform.db;
    let job = client
        .enqueue(
            &tenant,
            Requester::System,
            RecordedSlowJob { run_ms: vec![0] },
        )
        .await
        .expect("enqueue");
    let first = record::mark_running(db, &tenant, &job.id, 1, "claim-a")
        .await
        .expect("db");
    assert_eq!(first.map(|r| r.status), Some(JobStatus::Running));
    let second = record::mark_running(db, &tenant, &job.id, 1, "claim-b")
        .await
        .expect("db");
    assert!(
        second.is_none(),
        "a second claim of the same attempt does not run it"
    );
    let takeover = record::mark_running(db, &tenant, &job.id, 2, "claim-c")
        .await
        .expect("db");
    assert_eq!(takeover.map(|r| r.attempts), Some(2));
    let stale = record::mark_succeeded(db, &tenant, &job.id, "claim-a", bson::Bson::Null)
        .await
        .expect("db");
    assert!(stale.is_none(), "the superseded run cannot finish the job");
    let stale = record::mark_attempt_failed(
        db,
        &tenant,
        &job.id,
        "claim-a",
        JobStatus::Queued,
        "stale failure",
    )
    .await
    .expect("db");
    assert!(stale.is_none(), "nor record a failure on it");

    let cancelled = record::cancel(db, &tenant, &job.id).await.expect("db");
    assert_eq!(cancelled.map(|r| r.status), Some(JobStatus::Cancelled));
    let late = record::mark_succeeded(db, &tenant, &job.id, "claim-c", bson::Bson::Null)
        .await
        .expect("db");
    assert!(late.is_none());
    let stored = db
        .scoped::<JobRecord>(&tenant)
        .find_by_id(&job.id)
        .await
        .expect("find")
        .expect("record");
    assert_eq!(stored.status, JobStatus::Cancelled, "cancelled stays so");
    rig.cleanup().await;
}

// ---------------------------------------------------------------------------
// 2. Redis errors do not drop running jobs
// ---------------------------------------------------------------------------

/// Kills the queue connection `conn` uses right now (the workers share it).
async fn kill_connection(conn: &mut ConnectionManager, admin: &mut ConnectionManager) {
    let id: i64 = redis::cmd("CLIENT")
        .arg("ID")
        .query_async(conn)
        .await
        .unwrap_or(-1);
    if id > 0 {
        let _: Result<i64, _> = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("ID")
            .arg(id)
            .query_async(admin)
            .await;
    }
}

/// The queue connection is killed again and again while a job runs: the
/// worker is not restarted, the running job is neither dropped nor run a
/// second time, its outcome is written, and new jobs run. The run outlasts
/// its lease by far after the kills: only renewals made on the reconnected
/// connection keep it. The lease leaves a second for each reconnect (the
/// 400 ms of the other tests stopped the run in 2 of 6 loaded suites, as
/// it should when renewals fail that long).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_redis_connections_do_not_drop_running_jobs() {
    let rig = Rig::new(QueueConfig {
        lease: Duration::from_millis(1200),
        ..fast_config()
    })
    .await;
    let keys = rig.keys::<SlowJob>();
    let metrics = rig
        .setup
        .metrics
        .for_job(SlowJob::QUEUE.as_str(), SlowJob::NAME);
    let running = start::<SlowJob>(&rig.setup, Duration::from_secs(2));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let id = new_id();
    rig.push(
        &id,
        SlowJob {
            run_ms: vec![3500],
            fail_runs: vec![],
        },
    )
    .await;
    assert!(
        wait_for(Duration::from_secs(3), || async {
            runs(&id).started.len() == 1
        })
        .await
    );
    let mut conn = rig.conn();
    let mut admin = queue::connect(&aigentable_tests::redis_url())
        .await
        .expect("admin connection");
    for _ in 0..8 {
        kill_connection(&mut conn, &mut admin).await;
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let settled = wait_for(Duration::from_secs(8), || {
        let (mut conn, keys, id) = (conn.clone(), keys.clone(), id.clone());
        async move { !data_exists(&mut conn, &keys, &id).await }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let r = runs(&id);
    assert!(settled, "the job's outcome was written: {r:?}");
    assert_eq!(r.started.len(), 1, "the running job was not dropped: {r:?}");
    assert_eq!(metrics.restarts.get(), 0, "the worker was not restarted");

    let after = new_id();
    rig.push(&after, SlowJob::instant()).await;
    assert!(
        wait_for(Duration::from_secs(5), || async {
            runs(&after).started.len() == 1
        })
        .await,
        "new jobs run"
    );
    running.stop().await;
    rig.cleanup().await;
}

/// Redis goes away for 2 s while a job runs and its outcome falls inside
/// the outage: the worker keeps the job, writes the outcome once Redis is
/// back, runs it only once, is never restarted, and fetches new jobs within
/// 5 s of Redis' return.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_costs_running_jobs_nothing() {
    let mut redis = OwnRedis::start().await;
    let url = redis.url();
    let rig = Rig::with_config(
        test_config(&[("REDIS_URL", url.as_str())]),
        QueueConfig {
            lease: Duration::from_secs(5),
            ..fast_config()
        },
    )
    .await;
    let keys = rig.keys::<SlowJob>();
    let metrics = rig
        .setup
        .metrics
        .for_job(SlowJob::QUEUE.as_str(), SlowJob::NAME);
    let running = start::<SlowJob>(&rig.setup, Duration::from_secs(2));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let id = new_id();
    rig.push(
        &id,
        SlowJob {
            run_ms: vec![1000],
            fail_runs: vec![],
        },
    )
    .await;
    assert!(
        wait_for(Duration::from_secs(3), || async {
            runs(&id).started.len() == 1
        })
        .await
    );
    redis.down();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(runs(&id).ended.len(), 1, "the job ended during the outage");
    redis.up().await;

    let conn = rig.conn();
    let settled = wait_for(Duration::from_secs(10), || {
        let (mut conn, keys, id) = (conn.clone(), keys.clone(), id.clone());
        async move { !data_exists(&mut conn, &keys, &id).await }
    })
    .await;
    assert!(settled, "the outcome was written once redis was back");
    let after = new_id();
    rig.push(&after, SlowJob::instant()).await;
    assert!(
        wait_for(Duration::from_secs(5), || async {
            runs(&after).started.len() == 1
        })
        .await,
        "fetching resumed"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(runs(&id).started.len(), 1, "ran once: {:?}", runs(&id));
    assert_eq!(metrics.restarts.get(), 0, "the worker was not restarted");
    running.stop().await;
    rig.cleanup().await;
}

// ---------------------------------------------------------------------------
// 3. Graceful drain
// ---------------------------------------------------------------------------

/// A stopping worker takes no new job but lets a running one finish,
/// renewing its lease meanwhile: the job, longer than its lease, is not
/// taken over by another worker and runs once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_worker_finishes_its_running_job_and_keeps_its_lease() {
    let rig = Rig::new(fast_config()).await;
    let keys = rig.keys::<SlowJob>();
    let stopping = start_draining::<SlowJob>(&rig.setup, Duration::from_secs(8));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let id = new_id();
    rig.push(
        &id,
        SlowJob {
            run_ms: vec![1500],
            fail_runs: vec![],
        },
    )
    .await;
    assert!(
        wait_for(Duration::from_secs(3), || async {
            runs(&id).started.len() == 1
        })
        .await
    );
    let mut other = rig.setup.clone();
    other.drain = queue::Drain::new();
    let healthy = start::<SlowJob>(&other, Duration::from_secs(1));
    let took = stopping.stop().await;
    let r = runs(&id);
    assert_eq!(r.started.len(), 1, "not taken over while it ran: {r:?}");
    assert_eq!(r.ended.len(), 1, "it finished before its worker stopped");
    assert!(took < Duration::from_secs(8), "{took:?}");
    let mut conn = rig.conn();
    assert!(
        !data_exists(&mut conn, &keys, &id).await,
        "its outcome was written before the worker stopped"
    );

    // A job pushed now goes to the healthy worker.
    let after = new_id();
    rig.push(&after, SlowJob::instant()).await;
    assert!(
        wait_for(Duration::from_secs(3), || async {
            runs(&after).started.len() == 1
        })
        .await
    );
    healthy.stop().await;
    rig.cleanup().await;
}

/// A job still running when the grace period ends goes back to the front
/// of its queue at once (not when its lease expires), without spending an
/// attempt, with its record back to QUEUED; another worker then runs it to
/// SUCCEEDED as its first counted attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_still_running_when_the_grace_ends_goes_back_without_spending_an_attempt() {
    let rig = Rig::new(QueueConfig {
        lease: Duration::from_secs(20),
        ..fast_config()
    })
    .await;
    let keys = rig.keys::<RecordedSlowJob>();
    let client = JobClient::connect(&rig.platform).await.expect("job client");
    let tenant = TenantId::from_trusted("tenant-drain".to_owned());
    let stopping = start_draining::<RecordedSlowJob>(&rig.setup, Duration::from_millis(500));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let job = client
        .enqueue(
            &tenant,
            Requester::System,
            RecordedSlowJob {
                run_ms: vec![10_000, 0],
            },
        )
        .await
        .expect("enqueue");
    assert!(
        wait_for(Duration::from_secs(3), || async {
            runs(&job.id).started.len() == 1
        })
        .await
    );
    let took = stopping.stop().await;
    assert!(took < Duration::from_secs(4), "{took:?}");
    let mut conn = rig.conn();
    let depth = queue::depth(&mut conn, &keys).await.expect("depth");
    assert_eq!(
        depth,
        queue::Depth {
            ready: 1,
            oldest_wait: depth.oldest_wait,
            ..Default::default()
        },
        "given back at once, not left leased"
    );
    assert!(
        depth.oldest_wait < Duration::from_secs(2),
        "it waits from its hand-back: {depth:?}"
    );
    assert_eq!(
        queue::attempts(&mut conn, &keys, &job.id)
            .await
            .expect("attempts"),
        0,
        "no attempt spent"
    );
    let find = || async {
        rig.platform
            .db
            .scoped::<JobRecord>(&tenant)
            .find_by_id(&job.id)
            .await
            .expect("find")
            .expect("record")
    };
    assert_eq!(find().await.status, JobStatus::Queued);

    let mut other = rig.setup.clone();
    other.drain = queue::Drain::new();
    let healthy = start::<RecordedSlowJob>(&other, Duration::from_secs(1));
    assert!(
        wait_for(Duration::from_secs(5), || async {
            find().await.status == JobStatus::Succeeded
        })
        .await,
        "run again to success"
    );
    let stored = find().await;
    assert_eq!(stored.attempts, 1, "the given-back run did not count");
    let r = runs(&job.id);
    assert_eq!(r.started.len(), 2);
    assert_eq!(
        r.first,
        vec![true, false],
        "run again as attempt 1, but told that the stopped run began: {r:?}"
    );
    healthy.stop().await;
    rig.cleanup().await;
}

// ---------------------------------------------------------------------------
// 4. Nothing stranded
// ---------------------------------------------------------------------------

async fn find_record(platform: &Platform, tenant: &TenantId, id: &str) -> JobRecord {
    platform
        .db
        .scoped::<JobRecord>(tenant)
        .find_by_id(id)
        .await
        .expect("find")
        .expect("record exists")
}

/// Runs the sweep once, as the scheduler's tick would, and answers its
/// result.
async fn sweep(rig: &Rig) -> Value {
    let ctx = JobContext {
        state: WorkerState::new(rig.platform.clone()).expect("worker state"),
        job_id: new_id(),
        tenant_id: record::system_tenant(),
        attempt: 1,
        resumed: false,
    };
    Sweep {
        tick: "2026-01-01T00:00:00Z".to_owned(),
    }
    .handle(ctx)
    .await
    .expect("the sweep ran")
}

/// Moves a record's `updatedAt` (and `startedAt`) into the past.
async fn age_record(platform: &Platform, id: &str, by: chrono::Duration) {
    let then = bson::DateTime::from_millis((chrono::Utc::now() - by).timestamp_millis());
    platform
        .db
        .unscoped::<bson::Document>(record::COLLECTION)
        .update_one(
            bson::doc! { "_id": id },
            bson::doc! { "$set": { "updatedAt": then, "startedAt": then } },
        )
        .await
        .expect("aged");
}

/// An enqueue while Redis is down is accepted (the record is the source of
/// truth): the record stays QUEUED, never FAILED, and the job is queued
/// and run once Redis is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enqueue_while_redis_is_down_is_queued_once_it_returns() {
    let mut redis = OwnRedis::start().await;
    let url = redis.url();
    let rig = Rig::with_config(test_config(&[("REDIS_URL", url.as_str())]), fast_config()).await;
    let client = JobClient::connect(&rig.platform).await.expect("job client");
    let tenant = TenantId::from_trusted("tenant-outage".to_owned());
    redis.down();
    let job = client
        .enqueue(
            &tenant,
            Requester::System,
            RecordedSlowJob { run_ms: vec![0] },
        )
        .await
        .expect("accepted while redis is down");
    assert_eq!(job.status, JobStatus::Queued);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stored = find_record(&rig.platform, &tenant, &job.id).await;
    assert_eq!(stored.status, JobStatus::Queued, "{stored:?}");
    redis.up().await;
    let running = start::<RecordedSlowJob>(&rig.setup, Duration::from_secs(1));
    assert!(
        wait_for(Duration::from_secs(15), || async {
            find_record(&rig.platform, &tenant, &job.id).await.status == JobStatus::Succeeded
        })
        .await,
        "queued and run once redis was back"
    );
    assert_eq!(runs(&job.id).started.len(), 1);
    running.stop().await;
    rig.cleanup().await;
}

/// A job recorded QUEUED but unknown to Redis (a crash between the record
/// and the push, Redis restarted without persistence) is queued again by
/// the sweep once it has been missing for over a minute; a job Redis holds
/// is left alone.
#[tokio::test]
async fn the_sweep_queues_again_what_redis_lost() {
    let rig = Rig::new(fast_config()).await;
    let client = JobClient::connect(&rig.platform).await.expect("job client");
    let tenant = TenantId::from_trusted("tenant-reconcile".to_owned());
    // A real job type: the sweep queues records by their stored type. No
    // worker runs in this test.
    let keys = rig.keys::<Sweep>();
    let mut conn = rig.conn();
    let job = |tick: &str| Sweep {
        tick: tick.to_owned(),
    };
    let lost = client
        .enqueue(&tenant, Requester::System, job("lost"))
        .await
        .expect("enqueue");
    let kept = client
        .enqueue(&tenant, Requester::System, job("kept"))
        .await
        .expect("enqueue");
    let fresh = client
        .enqueue(&tenant, Requester::System, job("fresh"))
        .await
        .expect("enqueue");
    // Redis forgets `lost` and `fresh`, as after a restart without AOF.
    for id in [&lost.id, &fresh.id] {
        let _: () = redis::pipe()
            .hdel(&keys.data, id)
            .lrem(keys.lane(tenant.as_str()), 0, id)
            .query_async(&mut conn)
            .await
            .expect("forget");
    }
    for id in [&lost.id, &kept.id] {
        age_record(&rig.platform, id, chrono::Duration::minutes(2)).await;
    }
    let result = sweep(&rig).await;
    assert_eq!(result["reconciled"], 1, "{result}");
    let presence = |id: String| {
        let (mut conn, keys) = (conn.clone(), keys.clone());
        async move {
            queue::presence(&mut conn, &keys, &id)
                .await
                .expect("presence")
        }
    };
    assert_eq!(presence(lost.id.clone()).await, queue::Presence::Live);
    assert_eq!(
        presence(fresh.id.clone()).await,
        queue::Presence::Absent,
        "missing for under a minute: not yet"
    );
    let depth = queue::depth(&mut conn, &keys).await.expect("depth");
    assert_eq!(depth.ready, 2, "the kept job was not queued twice");
    rig.cleanup().await;
}

/// A job that finished but whose record was left RUNNING (its
/// `mark_succeeded` failed) is not run again by the sweep as if it had
/// hung: its record is closed as SUCCEEDED.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweep_does_not_run_again_a_finished_job_whose_record_was_not_updated() {
    let rig = Rig::new(fast_config()).await;
    let client = JobClient::connect(&rig.platform).await.expect("job client");
    let tenant = TenantId::from_trusted("tenant-unrecorded".to_owned());
    let keys = rig.keys::<RecordedSlowJob>();
    let running = start::<RecordedSlowJob>(&rig.setup, Duration::from_secs(1));
    let job = client
        .enqueue(
            &tenant,
            Requester::System,
            RecordedSlowJob { run_ms: vec![0] },
        )
        .await
        .expect("enqueue");
    assert!(
        wait_for(Duration::from_secs(5), || async {
            find_record(&rig.platform, &tenant, &job.id).await.status == JobStatus::Succeeded
        })
        .await
    );
    running.stop().await;
    // As if the success had not reached MongoDB, long ago.
    rig.platform
        .db
        .unscoped::<bson::Document>(record::COLLECTION)
        .update_one(
            bson::doc! { "_id": &job.id },
            bson::doc! { "$set": { "status": "RUNNING" } },
        )
        .await
        .expect("set running");
    age_record(&rig.platform, &job.id, chrono::Duration::hours(1)).await;

    let result = sweep(&rig).await;
    assert_eq!(result["requeued"], 0, "{result}");
    assert_eq!(result["finishedUnrecorded"], 1, "{result}");
    let mut conn = rig.conn();
    assert_eq!(
        queue::presence(&mut conn, &keys, &job.id)
            .await
            .expect("presence"),
        queue::Presence::Done,
        "not queued again"
    );
    let stored = find_record(&rig.platform, &tenant, &job.id).await;
    assert_eq!(stored.status, JobStatus::Succeeded);
    assert_eq!(runs(&job.id).started.len(), 1);
    rig.cleanup().await;
}

/// A webhook that cannot be queued (Redis is down) answers 503 with
/// Retry-After so that the provider delivers it again, never a 500; the
/// redelivery once Redis is back is stored once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_that_cannot_be_stored_answers_503_with_retry_after() {
    use aigentable_tests::fake_providers::{app_with_fake, create_channel};
    let mut redis = OwnRedis::start().await;
    let url = redis.url();
    let (app, _fake) = app_with_fake(&[("REDIS_URL", url.as_str())]).await;
    let admin = app.register("Acme").await;
    let tg = create_channel(
        &app,
        &admin,
        serde_json::json!({"type": "TELEGRAM", "name": "Bot", "config": {"botToken": "77:tg-secret-token"}}),
    )
    .await;
    let id = tg["id"].as_str().unwrap_or_default().to_owned();
    let secret = tg["verifyToken"].as_str().unwrap_or_default().to_owned();
    let update = serde_json::json!({"update_id": 1, "message": {"message_id": 1,
        "from": {"id": 111, "is_bot": false, "first_name": "Ana"},
        "chat": {"id": 111, "type": "private"}, "date": 1717000000, "text": "hi"}});
    let post = || {
        app.http
            .post(app.url(&format!("/api/v1/webhooks/telegram/{id}")))
            .header("X-Telegram-Bot-Api-Secret-Token", &secret)
            .json(&update)
            .send()
    };
    redis.down();
    let r = post().await.expect("sent");
    assert_eq!(r.status(), reqwest::StatusCode::SERVICE_UNAVAILABLE);
    let retry_after = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    assert!(retry_after.is_some_and(|s| s > 0), "{:?}", r.headers());
    redis.up().await;
    let stored = wait_for(Duration::from_secs(10), || async {
        post()
            .await
            .is_ok_and(|r| r.status() == reqwest::StatusCode::OK)
    })
    .await;
    assert!(stored, "the redelivery is accepted once redis is back");
    // The worker stores what the api queued.
    let pending = app.settled_by_workers(Duration::from_secs(20)).await;
    assert!(pending.is_empty(), "the workers ran every job: {pending:?}");
    let tenant = TenantId::from_trusted(admin.tenant_id.clone());
    let events = app
        .platform
        .db
        .scoped::<aigentable_platform::model::WebhookEvent>(&tenant)
        .count(bson::doc! {})
        .await
        .expect("count");
    assert_eq!(events, 1, "stored once");
}

// ---------------------------------------------------------------------------
// 5. Idempotency under concurrency, cancel
// ---------------------------------------------------------------------------

/// A recorded job with an idempotency key.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct KeyedJob {
    key: String,
}

impl Job for KeyedJob {
    const NAME: &'static str = "keyed_job";
    const QUEUE: Queue = Queue::Bench;
    const MAX_ATTEMPTS: u32 = 3;
    const TIMEOUT: Duration = Duration::from_secs(30);

    fn idempotency_key(&self) -> Option<String> {
        Some(self.key.clone())
    }
}

/// Many enqueues with one key at the same moment make one job (several
/// rounds: a race lost once in a while must show); once it has ended, the
/// key is free again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_enqueues_with_one_key_make_one_job() {
    let rig = Rig::new(fast_config()).await;
    let client = JobClient::connect(&rig.platform).await.expect("job client");
    let tenant = TenantId::from_trusted("tenant-keys".to_owned());
    let mut ids = Vec::new();
    for round in 0..5 {
        let racing: Vec<_> = (0..16)
            .map(|_| {
                let (client, tenant) = (client.clone(), tenant.clone());
                tokio::spawn(async move {
                    client
                        .enqueue(
                            &tenant,
                            Requester::System,
                            KeyedJob {
                                key: format!("same-{round}"),
                            },
                        )
                        .await
                        .map(|r| r.id)
                })
            })
            .collect();
        ids.clear();
        for task in racing {
            ids.push(task.await.expect("joined").expect("enqueued"));
        }
        ids.sort();
        ids.dedup();
        assert_eq!(
            ids.len(),
            1,
            "round {round}: every enqueue answered the same job: {ids:?}"
        );
    }
    let count = rig
        .platform
        .db
        .scoped::<JobRecord>(&tenant)
        .count(bson::doc! { "type": KeyedJob::NAME })
        .await
        .expect("count");
    assert_eq!(count, 5, "one job recorded per key");

    record::cancel(&rig.platform.db, &tenant, &ids[0])
        .await
        .expect("cancel");
    let next = client
        .enqueue(
            &tenant,
            Requester::System,
            KeyedJob {
                key: "same-4".to_owned(),
            },
        )
        .await
        .expect("enqueue");
    assert_ne!(next.id, ids[0], "the ended job's key is free again");
    rig.cleanup().await;
}

/// A job cancelled before it starts never starts; one cancelled while it
/// runs sees it (`JobContext::cancelled`) and never ends SUCCEEDED.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_job_never_starts_nor_ends_succeeded() {
    let rig = Rig::new(fast_config()).await;
    let client = JobClient::connect(&rig.platform).await.expect("job client");
    let tenant = TenantId::from_trusted("tenant-cancel".to_owned());
    let db = &rig.platform.db;
    let early = client
        .enqueue(
            &tenant,
            Requester::System,
            RecordedSlowJob { run_ms: vec![0] },
        )
        .await
        .expect("enqueue");
    record::cancel(db, &tenant, &early.id)
        .await
        .expect("cancel");
    let running = start::<RecordedSlowJob>(&rig.setup, Duration::from_secs(1));
    let late = client
        .enqueue(
            &tenant,
            Requester::System,
            RecordedSlowJob { run_ms: vec![800] },
        )
        .await
        .expect("enqueue");
    assert!(
        wait_for(Duration::from_secs(3), || async {
            runs(&late.id).started.len() == 1
        })
        .await
    );
    record::cancel(db, &tenant, &late.id).await.expect("cancel");
    let ctx = JobContext {
        state: WorkerState::new(rig.platform.clone()).expect("worker state"),
        job_id: late.id.clone(),
        tenant_id: tenant.clone(),
        attempt: 1,
        resumed: false,
    };
    assert!(ctx.cancelled().await, "a running handler can see it");
    let keys = rig.keys::<RecordedSlowJob>();
    let settled = wait_for(Duration::from_secs(5), || {
        let (mut conn, keys, id) = (rig.conn(), keys.clone(), late.id.clone());
        async move { !data_exists(&mut conn, &keys, &id).await }
    })
    .await;
    assert!(settled);
    assert_eq!(runs(&late.id).ended.len(), 1, "the run went to its end");
    assert_eq!(
        find_record(&rig.platform, &tenant, &late.id).await.status,
        JobStatus::Cancelled
    );
    assert!(runs(&early.id).started.is_empty(), "never started");
    assert_eq!(
        find_record(&rig.platform, &tenant, &early.id).await.status,
        JobStatus::Cancelled
    );
    running.stop().await;
    rig.cleanup().await;
}

// ---------------------------------------------------------------------------
// 8. Retention
// ---------------------------------------------------------------------------

/// Finished job records are kept for `JOB_RETENTION_DAYS` (failed and dead
/// ones for `JOB_FAILED_RETENTION_DAYS`), then removed by the sweep; active
/// ones are never removed, however old.
#[tokio::test]
async fn the_sweep_removes_finished_job_records_past_their_retention() {
    let rig = Rig::with_config(
        test_config(&[
            ("JOB_RETENTION_DAYS", "30"),
            ("JOB_FAILED_RETENTION_DAYS", "90"),
        ]),
        fast_config(),
    )
    .await;
    let client = JobClient::connect(&rig.platform).await.expect("job client");
    let tenant = TenantId::from_trusted("tenant-retention".to_owned());
    let mut ids = HashMap::new();
    for (name, status, days) in [
        ("succeeded_31", "SUCCEEDED", 31),
        ("succeeded_29", "SUCCEEDED", 29),
        ("cancelled_31", "CANCELLED", 31),
        ("failed_31", "FAILED", 31),
        ("dead_91", "DEAD", 91),
        ("queued_200", "QUEUED", 200),
    ] {
        let job = client
            .enqueue(
                &tenant,
                Requester::System,
                Sweep {
                    tick: name.to_owned(),
                },
            )
            .await
            .expect("enqueue");
        let then = bson::DateTime::from_millis(
            (chrono::Utc::now() - chrono::Duration::days(days)).timestamp_millis(),
        );
        rig.platform
            .db
            .unscoped::<bson::Document>(record::COLLECTION)
            .update_one(
                bson::doc! { "_id": &job.id },
                bson::doc! { "$set": { "status": status, "finishedAt": then, "updatedAt": then } },
            )
            .await
            .expect("aged");
        ids.insert(name, job.id);
    }
    let result = sweep(&rig).await;
    assert_eq!(result["purgedJobs"], 3, "{result}");
    let jobs = rig.platform.db.scoped::<JobRecord>(&tenant);
    for (name, kept) in [
        ("succeeded_31", false),
        ("succeeded_29", true),
        ("cancelled_31", false),
        ("failed_31", true),
        ("dead_91", false),
        ("queued_200", true),
    ] {
        let found = jobs.find_by_id(&ids[name]).await.expect("find").is_some();
        assert_eq!(found, kept, "{name}");
    }
    rig.cleanup().await;
}

/// A job that holds its thread (as CPU work would) for `block_ms`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct BusyJob {
    block_ms: u64,
}

impl Job for BusyJob {
    const NAME: &'static str = "busy_job";
    const QUEUE: Queue = Queue::Bench;
    const MAX_ATTEMPTS: u32 = 1;
    const TIMEOUT: Duration = Duration::from_secs(30);
    const RECORDED: bool = false;
}

impl Handle for BusyJob {
    async fn handle(self, ctx: JobContext) -> Result<Value, JobError> {
        run_started(&ctx);
        std::thread::sleep(Duration::from_millis(self.block_ms));
        run_ended(&ctx.job_id);
        Ok(Value::Null)
    }
}

/// Each job runs on its own task: one handler holding its thread does not
/// hold up the next job of its worker, which runs and ends meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_handler_does_not_hold_up_the_other_jobs_of_its_worker() {
    let rig = Rig::new(fast_config()).await;
    let (busy, quick) = (new_id(), new_id());
    rig.push(&busy, BusyJob { block_ms: 2500 }).await;
    let running = start::<BusyJob>(&rig.setup, Duration::from_secs(1));
    assert!(
        wait_for(Duration::from_secs(3), || async {
            runs(&busy).started.len() == 1
        })
        .await,
        "the busy job started"
    );
    rig.push(&quick, BusyJob { block_ms: 0 }).await;
    assert!(
        wait_for(Duration::from_secs(5), || async {
            runs(&quick).ended.len() == 1
        })
        .await,
        "the quick job ran"
    );
    let (b, q) = (runs(&busy), runs(&quick));
    assert!(
        b.ended.is_empty() || q.ended[0] < b.ended[0],
        "the quick job ended while the busy one still held its thread: busy {b:?}, quick {q:?}"
    );
    assert!(
        wait_for(Duration::from_secs(5), || async {
            runs(&busy).ended.len() == 1
        })
        .await
    );
    running.stop().await;
    rig.cleanup().await;
}

/// A job that ends frees its idempotency key in the same script that
/// settles it: Redis keeps no claim of finished work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_job_frees_its_idempotency_key() {
    let rig = Rig::new(fast_config()).await;
    let client = JobClient::connect(&rig.platform).await.expect("job client");
    let tenant = TenantId::from_trusted("tenant-freed".to_owned());
    let record = client
        .enqueue(
            &tenant,
            Requester::System,
            KeyedRecordedJob {
                key: "k".to_owned(),
            },
        )
        .await
        .expect("enqueue");
    let keys = rig.keys::<KeyedRecordedJob>();
    let mut conn = rig.conn();
    let claims: HashMap<String, String> = redis::cmd("HGETALL")
        .arg(&keys.claims)
        .query_async(&mut conn)
        .await
        .expect("claims");
    assert!(
        claims
            .get("tenant-freed:k")
            .is_some_and(|v| v.starts_with(&format!("{} ", record.id))),
        "the key is claimed for the job: {claims:?}"
    );
    let running = start::<KeyedRecordedJob>(&rig.setup, Duration::from_secs(1));
    assert!(
        wait_for(Duration::from_secs(5), || async {
            find_record(&rig.platform, &tenant, &record.id).await.status == JobStatus::Succeeded
        })
        .await,
        "the job ran"
    );
    assert!(
        wait_for(Duration::from_secs(3), || async {
            let mut conn = rig.conn();
            let (claims, owners): (usize, usize) = redis::pipe()
                .hlen(&keys.claims)
                .hlen(&keys.claim_of)
                .query_async(&mut conn)
                .await
                .unwrap_or((1, 1));
            claims == 0 && owners == 0
        })
        .await,
        "settling the job removed its claim"
    );
    running.stop().await;
    rig.cleanup().await;
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct KeyedRecordedJob {
    key: String,
}

impl Job for KeyedRecordedJob {
    const NAME: &'static str = "keyed_recorded_job";
    const QUEUE: Queue = Queue::Bench;
    const MAX_ATTEMPTS: u32 = 3;
    const TIMEOUT: Duration = Duration::from_secs(30);

    fn idempotency_key(&self) -> Option<String> {
        Some(self.key.clone())
    }
}

impl Handle for KeyedRecordedJob {
    async fn handle(self, _ctx: JobContext) -> Result<Value, JobError> {
        Ok(Value::Null)
    }
}

/// Start order of [`FairJob`] runs, by tenant.
static FAIR_ORDER: LazyLock<Mutex<Vec<String>>> = LazyLock::new(Default::default);

#[derive(Debug, Clone, Serialize, Deserialize)]
struct FairJob {
    tenant: String,
}

impl Job for FairJob {
    const NAME: &'static str = "fair_job";
    const QUEUE: Queue = Queue::Bench;
    const MAX_ATTEMPTS: u32 = 1;
    const TIMEOUT: Duration = Duration::from_secs(30);
    const RECORDED: bool = false;
}

impl Handle for FairJob {
    async fn handle(self, _ctx: JobContext) -> Result<Value, JobError> {
        if let Ok(mut order) = FAIR_ORDER.lock() {
            order.push(self.tenant);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        Ok(Value::Null)
    }
}

/// One tenant's flood does not hold up another tenant's job: a fetch takes
/// one job per tenant in turn, so a job pushed behind 300 of another
/// tenant's starts among the first few.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_flood_does_not_delay_another_tenants_first_job() {
    let rig = Rig::new(fast_config()).await;
    let keys = rig.keys::<FairJob>();
    let mut conn = rig.conn();
    let envelope = |tenant: &str| Envelope {
        job_id: new_id(),
        tenant_id: tenant.to_owned(),
        payload: FairJob {
            tenant: tenant.to_owned(),
        },
    };
    let flood: Vec<_> = (0..300)
        .map(|_| {
            let e = envelope("flooding");
            (e.job_id.clone(), e)
        })
        .collect();
    queue::push(&mut conn, &keys, &flood).await.expect("flood");
    let quiet = envelope("quiet");
    queue::push(&mut conn, &keys, &[(quiet.job_id.clone(), quiet)])
        .await
        .expect("quiet");
    assert_eq!(
        queue::depth(&mut conn, &keys).await.expect("depth").ready,
        301,
        "every job waits in its tenant's lane"
    );

    let running = start::<FairJob>(&rig.setup, Duration::from_secs(1));
    assert!(
        wait_for(Duration::from_secs(20), || async {
            FAIR_ORDER.lock().map(|o| o.len()).unwrap_or(0) >= 301
        })
        .await,
        "every job ran"
    );
    running.stop().await;
    let order = FAIR_ORDER.lock().map(|o| o.clone()).unwrap_or_default();
    let position = order.iter().position(|t| t == "quiet");
    assert!(
        position.is_some_and(|p| p < 10),
        "the quiet tenant's job started at {position:?} of {}",
        order.len()
    );
    rig.cleanup().await;
}

/// Seen attempt numbers of [`DeferringJob`] runs, by job id.
static DEFERRED_RUNS: LazyLock<Mutex<HashMap<String, Vec<u32>>>> = LazyLock::new(Default::default);

#[derive(Debug, Clone, Serialize, Deserialize)]
struct DeferringJob {
    defer_runs: usize,
}

impl Job for DeferringJob {
    const NAME: &'static str = "deferring_job";
    const QUEUE: Queue = Queue::Bench;
    const MAX_ATTEMPTS: u32 = 2;
    const TIMEOUT: Duration = Duration::from_secs(30);
}

impl Handle for DeferringJob {
    async fn handle(self, ctx: JobContext) -> Result<Value, JobError> {
        let runs = {
            let Ok(mut m) = DEFERRED_RUNS.lock() else {
                return Err(JobError::permanent("lock poisoned"));
            };
            let seen = m.entry(ctx.job_id.clone()).or_default();
            seen.push(ctx.attempt);
            seen.len()
        };
        if runs <= self.defer_runs {
            return Err(JobError::Defer {
                after: Duration::from_millis(50),
                reason: "waiting for another job".to_owned(),
            });
        }
        Ok(Value::Null)
    }
}

/// A job that waits for other work gives its slot back and runs again
/// without spending an attempt: deferred more times than it has attempts,
/// it still succeeds on its first counted attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deferred_job_runs_again_without_spending_an_attempt() {
    let rig = Rig::new(fast_config()).await;
    let client = JobClient::connect(&rig.platform).await.expect("job client");
    let tenant = TenantId::from_trusted("tenant-defer".to_owned());
    let record = client
        .enqueue(&tenant, Requester::System, DeferringJob { defer_runs: 4 })
        .await
        .expect("enqueue");
    let running = start::<DeferringJob>(&rig.setup, Duration::from_secs(1));
    assert!(
        wait_for(Duration::from_secs(10), || async {
            find_record(&rig.platform, &tenant, &record.id).await.status == JobStatus::Succeeded
        })
        .await,
        "the job ended SUCCEEDED"
    );
    running.stop().await;
    let seen = DEFERRED_RUNS
        .lock()
        .map(|m| m.get(&record.id).cloned().unwrap_or_default())
        .unwrap_or_default();
    assert_eq!(seen, vec![1; 5], "five runs, each its first attempt");
    let done = find_record(&rig.platform, &tenant, &record.id).await;
    assert_eq!(done.attempts, 1, "{done:?}");
    rig.cleanup().await;
}

/// An enqueue that died between its record and its push (its job is QUEUED
/// but unknown to Redis) is healed by the next enqueue with the same key,
/// without waiting for the sweep.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asking_again_for_a_job_whose_push_was_lost_queues_it() {
    let rig = Rig::new(fast_config()).await;
    let client = JobClient::connect(&rig.platform).await.expect("job client");
    let tenant = TenantId::from_trusted("tenant-heal".to_owned());
    let job = || KeyedRecordedJob {
        key: "once".to_owned(),
    };
    let first = client
        .enqueue(&tenant, Requester::System, job())
        .await
        .expect("enqueue");
    let keys = rig.keys::<KeyedRecordedJob>();
    let mut conn = rig.conn();
    let _: () = redis::pipe()
        .hdel(&keys.data, &first.id)
        .lrem(keys.lane(tenant.as_str()), 0, &first.id)
        .query_async(&mut conn)
        .await
        .expect("forget");
    assert!(!data_exists(&mut conn, &keys, &first.id).await);
    let again = client
        .enqueue(&tenant, Requester::System, job())
        .await
        .expect("enqueue again");
    assert_eq!(again.id, first.id, "the same job answers");
    assert!(
        data_exists(&mut conn, &keys, &first.id).await,
        "and it is queued again"
    );
    let running = start::<KeyedRecordedJob>(&rig.setup, Duration::from_secs(1));
    assert!(
        wait_for(Duration::from_secs(5), || async {
            find_record(&rig.platform, &tenant, &first.id).await.status == JobStatus::Succeeded
        })
        .await
    );
    running.stop().await;
    rig.cleanup().await;
}
