//! The scheduler and the jobs it enqueues: sweep, rollup, backup.

use std::time::Duration;

use aigentable_jobs::record::{JobRecord, JobStatus, system_tenant};
use aigentable_jobs::types::{RunBackup, SendEmail};
use aigentable_jobs::{Job, JobClient, Requester};
use aigentable_scheduler::{Task, catch_up, fire, schedules_from};
use aigentable_tests::{TestApp, spawn_app, spawn_app_with};
use bson::doc;
use chrono::{Duration as TimeDelta, Utc};
use futures::TryStreamExt;

async fn records(app: &TestApp, job_type: &str) -> Vec<JobRecord> {
    app.platform
        .db
        .unscoped::<JobRecord>("jobs")
        .find(doc! { "type": job_type })
        .await
        .expect("find")
        .try_collect()
        .await
        .expect("collect")
}

#[test]
fn schedules_are_validated_naming_the_variable() {
    let bad = schedules_from(&|name| (name == "SCHEDULE_ROLLUP").then(|| "every hour".to_owned()));
    let err = bad.expect_err("an invalid cron expression is refused");
    assert!(err.to_string().contains("SCHEDULE_ROLLUP"), "{err}");
    let none = schedules_from(&|_| Some(String::new())).expect("empty values disable schedules");
    assert!(none.is_empty());
    let defaults = schedules_from(&|_| None).expect("defaults are valid");
    assert_eq!(defaults.len(), 3);
}

#[tokio::test]
async fn two_scheduler_replicas_enqueue_each_tick_once() {
    let app = spawn_app().await;
    let schedules = schedules_from(&|name| match name {
        "SCHEDULE_SWEEP" => Some("* * * * * *".to_owned()),
        _ => Some(String::new()),
    })
    .expect("schedules");
    let mut replicas = Vec::new();
    let mut all_metrics = Vec::new();
    for _ in 0..2 {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let platform = app.platform.clone();
        let schedules = schedules.clone();
        let metrics = aigentable_scheduler::SchedulerMetrics::new().expect("metrics");
        all_metrics.push(metrics.clone());
        let handle = tokio::spawn(aigentable_scheduler::run(
            platform,
            schedules,
            metrics,
            async move {
                let _ = rx.await;
                Ok(())
            },
        ));
        replicas.push((tx, handle));
    }
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    for (tx, handle) in replicas {
        let _ = tx.send(());
        let _ = tokio::time::timeout(Duration::from_secs(15), handle).await;
    }
    let sweeps = records(&app, "sweep").await;
    assert!(
        sweeps.len() >= 2,
        "a tick every second for 3.5 s: {}",
        sweeps.len()
    );
    let mut keys: Vec<_> = sweeps
        .iter()
        .filter_map(|r| r.idempotency_key.clone())
        .collect();
    keys.sort();
    let before = keys.len();
    keys.dedup();
    assert_eq!(before, keys.len(), "no tick was enqueued twice: {keys:?}");
    assert_eq!(before, sweeps.len());
    let count = |outcome: &str| -> u64 {
        all_metrics
            .iter()
            .map(|m| m.ticks.with_label_values(&["sweep", outcome]).get())
            .sum()
    };
    assert_eq!(
        count("enqueued"),
        sweeps.len() as u64,
        "metrics count what was enqueued"
    );
    assert!(
        count("claimed_elsewhere") >= 1,
        "the other replica saw the same ticks"
    );
    assert_eq!(count("failed"), 0);
    app.cleanup().await;
}

#[tokio::test]
async fn the_sweep_requeues_abandoned_jobs_and_buries_exhausted_ones() {
    let app = spawn_app().await;
    // It tests failures: the failed jobs are the point.
    app.allow_failed_jobs();
    let s = app.register("Acme").await;
    let tenant = aigentable_platform::ids::TenantId::from_trusted(s.tenant_id.clone());
    let jobs = app.platform.db.scoped::<JobRecord>(&tenant);
    let abandoned = |id: &str, attempts: u32| JobRecord {
        id: id.to_owned(),
        tenant_id: tenant.clone(),
        job_type: SendEmail::NAME.to_owned(),
        queue: SendEmail::QUEUE.as_str().to_owned(),
        status: JobStatus::Running,
        progress: 0,
        attempts,
        max_attempts: SendEmail::MAX_ATTEMPTS,
        last_error: None,
        result: None,
        payload: bson::to_bson(&SendEmail {
            to: "lost@example.com".into(),
            subject: "Hello".into(),
            text: "body".into(),
            purpose: "test".into(),
            dedupe_key: format!("lost-{id}"),
            sealed_token: None,
        })
        .expect("payload"),
        idempotency_key: None,
        created_by: "system".into(),
        created_at: Utc::now() - TimeDelta::hours(2),
        updated_at: Utc::now() - TimeDelta::hours(1),
        started_at: Some(Utc::now() - TimeDelta::hours(1)),
        finished_at: None,
    };
    let retry_id = aigentable_platform::ids::new_id();
    let dead_id = aigentable_platform::ids::new_id();
    let fresh_id = aigentable_platform::ids::new_id();
    jobs.insert(&abandoned(&retry_id, 1)).await.expect("insert");
    jobs.insert(&abandoned(&dead_id, SendEmail::MAX_ATTEMPTS))
        .await
        .expect("insert");
    let mut fresh = abandoned(&fresh_id, 1);
    fresh.started_at = Some(Utc::now());
    jobs.insert(&fresh).await.expect("insert");

    let client = JobClient::connect(&app.platform).await.expect("client");
    let tick = u64::try_from(Utc::now().timestamp()).unwrap_or_default();
    fire(&client, &app.platform.kv, Task::Sweep, tick)
        .await
        .expect("sweep enqueued");
    assert!(
        fire(&client, &app.platform.kv, Task::Sweep, tick)
            .await
            .expect("second fire")
            .is_none(),
        "the same tick is not enqueued twice"
    );

    let status = |id: String| {
        let jobs = app.platform.db.scoped::<JobRecord>(&tenant);
        async move { jobs.find_by_id(&id).await.ok().flatten().map(|r| r.status) }
    };
    let done = app
        .eventually(Duration::from_secs(20), || async {
            (status(retry_id.clone()).await == Some(JobStatus::Succeeded)).then_some(())
        })
        .await;
    assert!(done.is_some(), "the abandoned job was requeued and ran");
    assert_eq!(status(dead_id.clone()).await, Some(JobStatus::Dead));
    assert_eq!(
        status(fresh_id.clone()).await,
        Some(JobStatus::Running),
        "a job within its timeout is left alone"
    );
    let sweep = records(&app, "sweep").await;
    assert_eq!(sweep.len(), 1);
    app.cleanup().await;
}

/// A tick missed while no scheduler ran is fired late, once: the latest
/// one, not every missed one; a fresh install fires nothing it "missed".
#[tokio::test]
async fn a_tick_missed_while_no_scheduler_ran_is_caught_up_once() {
    let app = spawn_app().await;
    let kv = &app.platform.kv;
    let client = JobClient::connect(&app.platform).await.expect("client");
    let schedule = schedules_from(&|name| match name {
        "SCHEDULE_SWEEP" => Some("0 * * * * *".to_owned()),
        _ => Some(String::new()),
    })
    .expect("schedules")
    .remove(0);
    let now = Utc::now();
    assert!(
        catch_up(&client, kv, &schedule, now)
            .await
            .expect("first look")
            .is_none(),
        "the first run only records where the schedule starts"
    );

    // The schedulers were down for ten minutes.
    let minute = |t: chrono::DateTime<Utc>| t.timestamp() - t.timestamp() % 60;
    let mut conn = kv.conn();
    redis::cmd("SET")
        .arg(kv.key(&["cron", "sweep", "last"]))
        .arg(minute(now) - 600)
        .query_async::<()>(&mut conn)
        .await
        .expect("set last");
    let latest = u64::try_from(minute(now)).expect("positive");
    let caught = catch_up(&client, kv, &schedule, now)
        .await
        .expect("catch up")
        .expect("the latest missed tick is fired");
    assert!(
        catch_up(&client, kv, &schedule, now)
            .await
            .expect("again")
            .is_none(),
        "caught up once"
    );
    let sweeps = records(&app, "sweep").await;
    assert_eq!(sweeps.len(), 1, "one tick caught up, not ten");
    assert_eq!(sweeps[0].id, caught);
    let tick = chrono::DateTime::from_timestamp(i64::try_from(latest).expect("fits"), 0)
        .expect("time")
        .to_rfc3339();
    assert_eq!(
        sweeps[0]
            .payload
            .as_document()
            .and_then(|d| d.get_str("tick").ok()),
        Some(tick.as_str())
    );
    app.cleanup().await;
}

#[tokio::test]
async fn the_rollup_counts_an_hour_of_messages_per_tenant() {
    let app = spawn_app().await;
    let hour = Utc::now() - TimeDelta::hours(1);
    let messages = app.platform.db.unscoped::<bson::Document>("messages");
    for tenant in ["t1", "t1", "t2"] {
        messages
            .insert_one(doc! { "tenantId": tenant, "createdAt": bson::DateTime::from_chrono(hour) })
            .await
            .expect("insert");
    }
    let client = JobClient::connect(&app.platform).await.expect("client");
    let tick = u64::try_from(Utc::now().timestamp()).unwrap_or_default();
    fire(&client, &app.platform.kv, Task::Rollup, tick)
        .await
        .expect("rollup enqueued");
    let hourly = app
        .platform
        .db
        .unscoped::<bson::Document>("analytics_hourly");
    let t1 = app
        .eventually(Duration::from_secs(20), || async {
            hourly
                .find_one(doc! { "tenantId": "t1" })
                .await
                .ok()
                .flatten()
        })
        .await
        .expect("the rollup wrote t1's hour");
    assert_eq!(
        t1.get_i64("messages")
            .ok()
            .or(t1.get_i32("messages").ok().map(i64::from)),
        Some(2)
    );
    app.cleanup().await;
}

#[tokio::test]
async fn a_backup_dumps_every_collection_to_the_data_dir() {
    let dir = std::env::temp_dir().join(format!(
        "aigentable-backup-{}",
        uuid::Uuid::new_v4().simple()
    ));
    let dir_str = dir.to_string_lossy().to_string();
    let app = spawn_app_with(&[("DATA_DIR", &dir_str)]).await;
    app.register("Acme").await;
    let client = JobClient::connect(&app.platform).await.expect("client");
    let backup_id = aigentable_platform::ids::new_id();
    client
        .enqueue(
            &system_tenant(),
            Requester::System,
            RunBackup {
                backup_id: backup_id.clone(),
            },
        )
        .await
        .expect("enqueued");
    let backups = app.platform.db.unscoped::<bson::Document>("backups");
    let record = app
        .eventually(Duration::from_secs(20), || async {
            backups
                .find_one(doc! { "_id": &backup_id, "status": "COMPLETED" })
                .await
                .ok()
                .flatten()
        })
        .await
        .expect("the backup completed");
    assert!(
        record.get_i64("documents").unwrap_or_default() >= 2,
        "{record:?}"
    );
    let users = std::fs::read_to_string(dir.join("backups").join(&backup_id).join("users.jsonl"))
        .expect("users dumped");
    assert!(
        users.contains("admin-"),
        "the registered admin is in the backup"
    );
    let _ = std::fs::remove_dir_all(&dir);
    app.cleanup().await;
}

#[tokio::test]
async fn platform_admins_start_and_list_backups_through_the_api() {
    let dir = std::env::temp_dir().join(format!(
        "aigentable-backup-{}",
        uuid::Uuid::new_v4().simple()
    ));
    let app = spawn_app_with(&[("DATA_DIR", &dir.to_string_lossy())]).await;
    let tenant_admin = app.register("Acme").await;
    let r = app
        .post(
            "/api/v1/system/backups",
            &tenant_admin,
            serde_json::json!({}),
        )
        .await;
    assert_eq!(
        r.status,
        reqwest::StatusCode::FORBIDDEN,
        "tenant admins cannot back up the platform"
    );

    aigentable_platform::bootstrap::create_super_admin(
        &app.platform,
        "root@aigentable.io",
        "rootPassword1",
    )
    .await
    .expect("super admin");
    let login = app.login("root@aigentable.io", "rootPassword1").await;
    let root = aigentable_tests::Session {
        token: login.body["token"].as_str().unwrap_or_default().to_owned(),
        tenant_id: login.body["user"]["tenantId"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        user_id: String::new(),
        email: String::new(),
        password: String::new(),
    };
    let r = app
        .post("/api/v1/system/backups", &root, serde_json::json!({}))
        .await;
    assert_eq!(r.status, reqwest::StatusCode::ACCEPTED, "{:?}", r.body);
    let job_id = r.body["jobId"].as_str().unwrap_or_default().to_owned();
    let backup_id = r.body["backup"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let job = app
        .eventually(Duration::from_secs(20), || async {
            let j = app.get(&format!("/api/v1/jobs/{job_id}"), &root).await;
            (j.body["status"] == "SUCCEEDED").then_some(j.body)
        })
        .await
        .expect("the backup job succeeds");
    assert_eq!(job["type"], "run_backup");
    let list = app.get("/api/v1/system/backups", &root).await;
    assert_eq!(list.status, reqwest::StatusCode::OK);
    assert_eq!(list.body["backups"][0]["id"], backup_id.as_str());
    assert_eq!(list.body["backups"][0]["status"], "COMPLETED");
    let _ = std::fs::remove_dir_all(&dir);
    app.cleanup().await;
}

#[tokio::test]
async fn the_scheduler_metrics_are_served_over_http() {
    use salvo::conn::{Acceptor, Listener};
    let metrics = aigentable_scheduler::SchedulerMetrics::new().expect("metrics");
    metrics
        .ticks
        .with_label_values(&["sweep", "enqueued"])
        .inc();
    let listener = salvo::conn::TcpListener::new("127.0.0.1:0")
        .try_bind()
        .await
        .expect("bind");
    let addr = listener.holdings()[0]
        .local_addr
        .clone()
        .into_std()
        .expect("tcp address");
    tokio::spawn(aigentable_platform::metrics_server::serve(
        listener,
        metrics.registry.clone(),
    ));
    let body = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .expect("scrape")
        .text()
        .await
        .unwrap_or_default();
    assert!(
        body.contains(
            "aigentable_scheduler_ticks_total{outcome=\"enqueued\",schedule=\"sweep\"} 1"
        ),
        "{body}"
    );
    assert!(
        aigentable_platform::metrics_server::bind("127.0.0.1", 0)
            .await
            .expect("bind")
            .is_none(),
        "port 0 disables"
    );
}
