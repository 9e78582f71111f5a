//! Every minute: jobs whose worker died mid-run are requeued (or declared
//! dead after their last attempt), jobs recorded QUEUED that Redis does not
//! hold are queued again, so are the deliveries of messages left QUEUED or
//! SENDING and the replies of conversations the bot left waiting, and expired
//! tokens are removed.

use bson::doc;
use chrono::Utc;
use futures::TryStreamExt;
use serde_json::{Value, json};

use aigentable_jobs::JobStatus;
use aigentable_jobs::dispatch::{push_record, timeout_of};
use aigentable_jobs::queue::{self, Presence, QueueKeys};
use aigentable_jobs::record::{self, JobRecord};
use aigentable_jobs::types::{AnswerMessage, DeliverReply, Sweep};
use aigentable_platform::db::narrowed;
use aigentable_platform::ids::TenantId;
use aigentable_platform::model::conversation::{CONVERSATIONS, MESSAGES};
use aigentable_platform::model::{
    ConversationStatus, Message, MessageDirection, MessageStatus, password_reset,
};

use crate::runner::{Handle, JobContext, JobError};

/// Slack past a job's own timeout before it counts as abandoned: the runner
/// enforces the timeout itself, so a live worker never gets near this.
const GRACE_SECS: i64 = 120;

/// How long a QUEUED record may be missing from Redis before it is queued
/// again (a crash between the record and the push, Redis restarted without
/// persistence, a failover).
const RECONCILE_AFTER_SECS: i64 = 60;
/// Most QUEUED records checked per sweep, oldest first.
const RECONCILE_BATCH: i64 = 1000;
/// How long an outbound message may stay QUEUED or SENDING before its
/// delivery is queued again. A second job for a message is harmless: a run
/// claims the message before sending (or waits out a claim until it is
/// stale, past a minute), and a `deliver_reply` Redis still holds is not
/// queued twice.
const REDELIVER_AFTER_SECS: i64 = 120;
/// Messages queued longer ago than this are left alone: a reply that late
/// would confuse the customer more than it helps.
const REDELIVER_WITHIN_HOURS: i64 = 24;
/// How long a customer may wait for the bot before the reply is asked for
/// again (its `answer_message` may have been lost with Redis): replies
/// take milliseconds to seconds, a slow LLM a couple of minutes at most.
const REANSWER_AFTER_SECS: i64 = 180;

impl Handle for Sweep {
    async fn handle(self, ctx: JobContext) -> Result<Value, JobError> {
        let db = &ctx.state.platform.db;
        let now = Utc::now();
        let running: Vec<JobRecord> = db
            .unscoped::<JobRecord>(record::COLLECTION)
            .find(doc! { "status": JobStatus::Running.as_str() })
            .await
            .map_err(JobError::transient)?
            .try_collect()
            .await
            .map_err(JobError::transient)?;
        let client = ctx.state.jobs().await.map_err(JobError::transient)?;
        let mut conn = client.connection();
        let (mut requeued, mut dead, mut finished) = (0u32, 0u32, 0u32);
        for job in running {
            // The sweep itself is running right now.
            if job.id == ctx.job_id {
                continue;
            }
            let timeout = timeout_of(&job.job_type).map_or(600, |t| t.as_secs() as i64);
            let Some(started) = job.started_at else {
                continue;
            };
            if (now - started).num_seconds() < timeout + GRACE_SECS {
                continue;
            }
            let keys = QueueKeys::for_names(client.namespace(), &job.queue, &job.job_type);
            match queue::presence(&mut conn, &keys, &job.id)
                .await
                .map_err(JobError::transient)?
            {
                // Still leased or queued: its lease decides, not the sweep.
                Presence::Live => continue,
                // Its queue gave up on it; only the record missed it.
                Presence::Dead => {
                    let message = "the job ran out of attempts (its record missed the last one)";
                    record::mark_failed(db, &job.tenant_id, &job.id, JobStatus::Dead, message)
                        .await
                        .map_err(JobError::transient)?;
                    dead += 1;
                    continue;
                }
                // The work finished; only its record update failed. Running
                // it again would redo it (an email, a reply).
                Presence::Done => {
                    if record::mark_finished_unrecorded(db, &job.tenant_id, &job.id)
                        .await
                        .map_err(JobError::transient)?
                        .is_some()
                    {
                        tracing::warn!(job_id = %job.id, tenant_id = %job.tenant_id, job_type = %job.job_type, "job finished but its record was left RUNNING; marked SUCCEEDED");
                        finished += 1;
                    }
                    continue;
                }
                Presence::Absent => {}
            }
            if job.attempts >= job.max_attempts {
                let message = "the worker running it stopped responding on its last attempt";
                record::mark_failed(db, &job.tenant_id, &job.id, JobStatus::Dead, message)
                    .await
                    .map_err(JobError::transient)?;
                tracing::warn!(job_id = %job.id, tenant_id = %job.tenant_id, job_type = %job.job_type, "abandoned job declared dead");
                dead += 1;
            } else {
                let message = "the worker running it stopped responding; requeued";
                if record::mark_failed(db, &job.tenant_id, &job.id, JobStatus::Queued, message)
                    .await
                    .map_err(JobError::transient)?
                    .is_some()
                {
                    push_record(client, &job)
                        .await
                        .map_err(JobError::transient)?;
                    tracing::warn!(job_id = %job.id, tenant_id = %job.tenant_id, job_type = %job.job_type, "abandoned job requeued");
                    requeued += 1;
                }
            }
        }
        let reconciled = reconcile_queued(db, client, &mut conn).await?;
        let redelivered = redeliver_queued(db, client).await?;
        let reanswered = reanswer_waiting(&ctx, client).await?;
        let purged = purge_finished(&ctx).await?;
        // TTL indexes do this on MongoDB; servers without them rely on the sweep.
        let expired = db
            .unscoped::<bson::Document>(password_reset::COLLECTION)
            .delete_many(doc! { "expiresAt": { "$lt": bson::DateTime::now() } })
            .await
            .map_err(JobError::transient)?
            .deleted_count;
        let expired_verifications = db
            .unscoped::<bson::Document>(aigentable_platform::model::email_verification::COLLECTION)
            .delete_many(doc! { "expiresAt": { "$lt": bson::DateTime::now() } })
            .await
            .map_err(JobError::transient)?
            .deleted_count;
        // A job that found its tenant suspended just as it was reactivated
        // missed the api's release; this one catches it.
        let released = aigentable_jobs::held::release_reactivated(client, db)
            .await
            .map_err(JobError::transient)?;
        let exports = remove_expired_exports(db).await?;
        let backups = remove_old_backups(&ctx).await?;
        Ok(json!({
            "requeued": requeued,
            "dead": dead,
            "finishedUnrecorded": finished,
            "reconciled": reconciled,
            "redelivered": redelivered,
            "reanswered": reanswered,
            "purgedJobs": purged,
            "expiredResetTokens": expired,
            "expiredEmailVerifications": expired_verifications,
            "releasedHeld": released,
            "expiredExports": exports,
            "removedBackups": backups,
        }))
    }
}

/// Queues again the jobs recorded QUEUED (new, or waiting for a retry) for
/// over a minute that Redis does not hold: the record is the source of
/// truth. Returns how many.
async fn reconcile_queued(
    db: &aigentable_platform::Db,
    client: &aigentable_jobs::JobClient,
    conn: &mut redis::aio::ConnectionManager,
) -> Result<u32, JobError> {
    let queued: Vec<JobRecord> = oldest_first(
        db.unscoped::<JobRecord>(record::COLLECTION).find(
            doc! { "status": JobStatus::Queued.as_str(), "updatedAt": { "$lt": ago(RECONCILE_AFTER_SECS) } },
        ),
    )
    .await?;
    let mut pushed = 0;
    for job in queued {
        let keys = QueueKeys::for_names(client.namespace(), &job.queue, &job.job_type);
        let presence = queue::presence(conn, &keys, &job.id)
            .await
            .map_err(JobError::transient)?;
        if presence == Presence::Live {
            continue;
        }
        match push_record(client, &job).await {
            Ok(()) => {
                tracing::warn!(job_id = %job.id, tenant_id = %job.tenant_id, job_type = %job.job_type, presence = ?presence, "queued job missing from redis queued again");
                pushed += 1;
            }
            // One unreadable record (an unknown type) must not stop the rest.
            Err(e) => {
                tracing::error!(job_id = %job.id, tenant_id = %job.tenant_id, job_type = %job.job_type, error = %e, "queued job missing from redis could not be queued again");
            }
        }
    }
    Ok(pushed)
}

/// The moment `secs` seconds ago.
fn ago(secs: i64) -> bson::DateTime {
    bson::DateTime::from_millis((Utc::now() - chrono::Duration::seconds(secs)).timestamp_millis())
}

/// The first [`RECONCILE_BATCH`] documents `find` matches, least recently
/// updated first.
async fn oldest_first<T: serde::de::DeserializeOwned + Send + Sync>(
    find: mongodb::action::Find<'_, T>,
) -> Result<Vec<T>, JobError> {
    find.sort(doc! { "updatedAt": 1 })
        .limit(RECONCILE_BATCH)
        .await
        .map_err(JobError::transient)?
        .try_collect()
        .await
        .map_err(JobError::transient)
}

/// Queues again the delivery of outbound messages left QUEUED or SENDING:
/// a bot's reply is delivered by an unrecorded `deliver_reply`, so the
/// message is the only record of it; one left SENDING by a job Redis lost
/// (a reply stored claimed whose delivery was never queued, a send cut
/// short) is sent again or marked failed as its workspace chose. The job
/// id is the message's, so a delivery Redis still holds is not queued
/// twice. Returns how many were queued.
async fn redeliver_queued(
    db: &aigentable_platform::Db,
    client: &aigentable_jobs::JobClient,
) -> Result<u32, JobError> {
    let mut stale: Vec<bson::Document> = Vec::new();
    // One equality on `status` each: both served by `{status, updatedAt}`.
    for status in [MessageStatus::Queued, MessageStatus::Sending] {
        stale.extend(
            oldest_first(
                db.unscoped::<bson::Document>(MESSAGES)
                    .find(doc! {
                        "status": status.as_str(),
                        "updatedAt": {
                            "$gt": ago(REDELIVER_WITHIN_HOURS * 3600),
                            "$lt": ago(REDELIVER_AFTER_SECS),
                        },
                    })
                    .projection(doc! { "_id": 1, "tenantId": 1, "channelId": 1 }),
            )
            .await?,
        );
    }
    let mut queued = 0;
    for m in stale {
        let field = |name: &str| m.get_str(name).map(str::to_owned).unwrap_or_default();
        let tenant = TenantId::from_trusted(field("tenantId"));
        let job = DeliverReply {
            message_id: field("_id"),
            channel_id: field("channelId"),
            ready: None,
            take_stored_claim: false,
        };
        let id = job.job_id();
        match client.push(&id, &tenant, job).await {
            Ok(true) => {
                tracing::warn!(job_id = %id, tenant_id = %tenant, "delivery of a message left unsent queued again");
                queued += 1;
            }
            Ok(false) => {}
            Err(e) => return Err(JobError::transient(e)),
        }
    }
    Ok(queued)
}

/// Asks again for the reply of conversations the bot answers whose
/// customer has waited (`awaitingSince`) past [`REANSWER_AFTER_SECS`]: the
/// reply is an unrecorded `answer_message`, which Redis may have lost.
/// Once per waiting spell (a Redis claim per conversation and
/// `awaitingSince`), so a reply skipped on purpose (an agent switched off)
/// or one that keeps failing is not asked for at every tick; the job id is
/// the message's, so a reply Redis still holds is not queued twice.
/// Returns how many were queued.
async fn reanswer_waiting(
    ctx: &JobContext,
    client: &aigentable_jobs::JobClient,
) -> Result<u32, JobError> {
    let platform = &ctx.state.platform;
    let waiting: Vec<bson::Document> = platform
        .db
        .unscoped::<bson::Document>(CONVERSATIONS)
        .find(narrowed(
            doc! {
                "awaitingSince": {
                    "$gt": ago(REDELIVER_WITHIN_HOURS * 3600),
                    "$lt": ago(REANSWER_AFTER_SECS),
                },
            },
            doc! { "status": ConversationStatus::Active.as_str() },
        ))
        .projection(doc! { "_id": 1, "tenantId": 1, "agentId": 1, "awaitingSince": 1 })
        .sort(doc! { "awaitingSince": 1 })
        .limit(RECONCILE_BATCH)
        .await
        .map_err(JobError::transient)?
        .try_collect()
        .await
        .map_err(JobError::transient)?;
    let mut queued = 0;
    for c in waiting {
        let (Ok(id), Ok(tenant), Ok(agent), Ok(since)) = (
            c.get_str("_id"),
            c.get_str("tenantId"),
            c.get_str("agentId"),
            c.get_datetime("awaitingSince"),
        ) else {
            continue;
        };
        let claim = platform
            .kv
            .key(&["reanswered", id, &since.timestamp_millis().to_string()]);
        let within = std::time::Duration::from_secs(
            u64::try_from(REDELIVER_WITHIN_HOURS * 3600).unwrap_or(u64::MAX),
        );
        if !platform
            .kv
            .set_new(&claim, "1", within)
            .await
            .map_err(JobError::transient)?
        {
            continue;
        }
        let tenant = TenantId::from_trusted(tenant.to_owned());
        let latest = platform
            .db
            .scoped::<Message>(&tenant)
            .find_sorted(
                narrowed(
                    doc! { "conversationId": id },
                    doc! { "direction": MessageDirection::Inbound.as_str() },
                ),
                doc! { "createdAt": -1 },
                1,
            )
            .await
            .map_err(JobError::transient)?;
        let Some(message) = latest.into_iter().next() else {
            continue;
        };
        let job = AnswerMessage {
            agent_id: agent.to_owned(),
            conversation_id: id.to_owned(),
            message_id: message.id,
            conversation: None,
            fact: None,
        };
        let job_id = job.job_id();
        if client
            .push(&job_id, &tenant, job)
            .await
            .map_err(JobError::transient)?
        {
            tracing::warn!(job_id = %job_id, tenant_id = %tenant, conversation_id = %id, "reply of a conversation left waiting asked for again");
            queued += 1;
        }
    }
    Ok(queued)
}

/// Removes finished job records past their retention (`JOB_RETENTION_DAYS`
/// for SUCCEEDED and CANCELLED, `JOB_FAILED_RETENTION_DAYS` for FAILED and
/// DEAD), and idempotency key claims as old as the longer of the two.
async fn purge_finished(ctx: &JobContext) -> Result<u64, JobError> {
    let config = &ctx.state.platform.config;
    let db = &ctx.state.platform.db;
    let before = |days: i64| {
        bson::DateTime::from_millis((Utc::now() - chrono::Duration::days(days)).timestamp_millis())
    };
    let jobs = db.unscoped::<bson::Document>(record::COLLECTION);
    let mut purged = 0;
    for (statuses, days) in [
        (
            [JobStatus::Succeeded, JobStatus::Cancelled],
            config.job_retention_days,
        ),
        (
            [JobStatus::Failed, JobStatus::Dead],
            config.job_failed_retention_days,
        ),
    ] {
        let statuses: Vec<&str> = statuses.iter().map(|s| s.as_str()).collect();
        purged += jobs
            .delete_many(doc! {
                "status": { "$in": statuses },
                "finishedAt": { "$lt": before(days) },
            })
            .await
            .map_err(JobError::transient)?
            .deleted_count;
    }
    Ok(purged)
}

/// Backups beyond the retention (`BACKUP_KEEP_DAILY`, `BACKUP_KEEP_WEEKLY`)
/// and failed ones older than a week: the files, then the record.
async fn remove_old_backups(ctx: &JobContext) -> Result<u64, JobError> {
    use aigentable_platform::backups::{self, BACKUPS};
    let platform = &ctx.state.platform;
    let config = &platform.config;
    let coll = platform.db.unscoped::<bson::Document>(BACKUPS);
    let ended: Vec<bson::Document> = coll
        .find(doc! { "status": { "$in": ["COMPLETED", "FAILED"] } })
        .projection(doc! { "_id": 1, "status": 1, "completedAt": 1, "updatedAt": 1 })
        .await
        .map_err(JobError::transient)?
        .try_collect()
        .await
        .map_err(JobError::transient)?;
    let week_ago = chrono::Utc::now() - chrono::Duration::days(7);
    let (mut completed, mut doomed) = (Vec::new(), Vec::new());
    for d in &ended {
        let Ok(id) = d.get_str("_id") else { continue };
        let at = |field: &str| d.get_datetime(field).ok().map(|t| t.to_chrono());
        match d.get_str("status") {
            Ok("COMPLETED") => completed.extend(at("completedAt").map(|t| (id.to_owned(), t))),
            _ if at("updatedAt").is_some_and(|t| t < week_ago) => doomed.push(id.to_owned()),
            _ => {}
        }
    }
    doomed.extend(backups::beyond_retention(
        completed,
        config.backup_keep_daily,
        config.backup_keep_weekly,
    ));
    let mut removed = 0;
    for id in doomed {
        if let Ok(dir) = backups::dir(&config.data_dir, &id) {
            match tokio::fs::remove_dir_all(&dir).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(JobError::transient(e)),
            }
        }
        removed += coll
            .delete_one(doc! { "_id": &id })
            .await
            .map_err(JobError::transient)?
            .deleted_count;
        tracing::info!(job_id = %ctx.job_id, backup_id = %id, "backup beyond retention removed");
    }
    Ok(removed)
}

/// Analytics exports past their 7 days: the file, then the record.
async fn remove_expired_exports(db: &aigentable_platform::Db) -> Result<u64, JobError> {
    use aigentable_platform::analytics::exports::{EXPORTS, ExportRecord};
    let coll = db.unscoped::<ExportRecord>(EXPORTS);
    let expired: Vec<ExportRecord> = coll
        .find(doc! { "expiresAt": { "$lt": bson::DateTime::now() } })
        .limit(500)
        .await
        .map_err(JobError::transient)?
        .try_collect()
        .await
        .map_err(JobError::transient)?;
    let mut removed = 0;
    for export in expired {
        if let Some(file_id) = &export.file_id {
            aigentable_platform::files::remove(db, file_id)
                .await
                .map_err(JobError::transient)?;
        }
        removed += coll
            .delete_one(doc! { "_id": &export.id })
            .await
            .map_err(JobError::transient)?
            .deleted_count;
    }
    Ok(removed)
}
