//! The hourly rollup: facts of an hour become one bucket per tenant ×
//! agent × channel (replacing what that hour had, so re-running an hour
//! gives the same numbers), then every local day the hour touched is summed
//! again from its hourly buckets in the tenant's timezone.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use bson::{Document, doc};
use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};

use super::counts::Counts;
use super::facts::{self, FACTS, Fact, hour_of};
use super::{DAILY, HOURLY, STATE, day_hours, local_date, timezone};
use crate::db::{Db, DbResult};
use crate::model::tenant::{COLLECTION as TENANTS, Tenant};

/// Hours a run catches up at most (a longer gap is rolled by re-running
/// its hours explicitly).
const MAX_CATCH_UP_HOURS: i64 = 24 * 400;

/// One bucket: an hour (`HOURLY`) or a local day (`DAILY`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Bucket {
    #[serde(rename = "_id")]
    pub id: String,
    pub tenant_id: String,
    #[serde(with = "crate::model::bson_datetime")]
    pub start: DateTime<Utc>,
    #[serde(default)]
    pub agent_id: Option<String>,
    #[serde(default)]
    pub channel_id: Option<String>,
    #[serde(default)]
    pub channel_type: Option<String>,
    /// Daily buckets: the local date and the timezone it was computed in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub day: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tz: Option<String>,
    /// The day marker: this tenant's day was rolled up in `tz`.
    #[serde(default)]
    pub marker: bool,
    #[serde(default)]
    pub counts: Counts,
}

type Dims = (Option<String>, Option<String>, Option<String>);

fn dim_key(d: &Dims) -> String {
    format!(
        "{}:{}",
        d.0.as_deref().unwrap_or("-"),
        d.1.as_deref().unwrap_or("-")
    )
}

/// Everything before this hour has been rolled up.
pub async fn watermark(db: &Db) -> DbResult<Option<DateTime<Utc>>> {
    let state = db
        .unscoped::<Document>(STATE)
        .find_one(doc! { "_id": "rollup" })
        .await?;
    Ok(state
        .and_then(|d| d.get_datetime("rolledThrough").ok().copied())
        .map(bson::DateTime::to_chrono))
}

async fn advance_watermark(db: &Db, to: DateTime<Utc>) -> DbResult<()> {
    db.unscoped::<Document>(STATE)
        .update_one(
            doc! { "_id": "rollup" },
            doc! { "$max": { "rolledThrough": bson::DateTime::from_chrono(to) } },
        )
        .upsert(true)
        .await?;
    Ok(())
}

/// Rolls up one hour (of one tenant, or of all), replacing its buckets.
/// Returns the tenants whose buckets were written or removed.
pub async fn roll_hour(
    db: &Db,
    hour: DateTime<Utc>,
    tenant: Option<&str>,
) -> DbResult<BTreeSet<String>> {
    let hour = hour_of(hour);
    let mut filter = doc! { "at": {
        "$gte": bson::DateTime::from_chrono(hour),
        "$lt": bson::DateTime::from_chrono(hour + TimeDelta::hours(1)),
    } };
    let mut existing_filter = doc! { "start": bson::DateTime::from_chrono(hour) };
    if let Some(t) = tenant {
        filter.insert("tenantId", t);
        existing_filter.insert("tenantId", t);
    }
    let mut sums: BTreeMap<(String, String), (Dims, Counts)> = BTreeMap::new();
    let mut cursor = db.unscoped::<Fact>(FACTS).find(filter).await?;
    while let Some(fact) = cursor.try_next().await? {
        let dims = (
            fact.agent_id.clone(),
            Some(fact.channel_id.clone()),
            Some(fact.channel_type.clone()),
        );
        let entry = sums
            .entry((fact.tenant_id.clone(), dim_key(&dims)))
            .or_insert_with(|| (dims, Counts::default()));
        entry.1.add_fact(&fact);
    }
    let hourly = db.unscoped::<Bucket>(HOURLY);
    let existing: Vec<Document> = db
        .unscoped::<Document>(HOURLY)
        .find(existing_filter.clone())
        .projection(doc! { "_id": 1, "tenantId": 1 })
        .await?
        .try_collect()
        .await?;
    let mut touched: BTreeSet<String> = existing
        .iter()
        .filter_map(|d| d.get_str("tenantId").ok().map(str::to_owned))
        .collect();
    let mut ids = Vec::with_capacity(sums.len());
    for ((tenant_id, key), (dims, counts)) in sums {
        let id = format!("{tenant_id}:{}:{key}", hour.timestamp());
        let bucket = Bucket {
            id: id.clone(),
            tenant_id: tenant_id.clone(),
            start: hour,
            agent_id: dims.0,
            channel_id: dims.1,
            channel_type: dims.2,
            day: None,
            tz: None,
            marker: false,
            counts,
        };
        hourly
            .replace_one(doc! { "_id": &id }, &bucket)
            .upsert(true)
            .await?;
        ids.push(id);
        touched.insert(tenant_id);
    }
    let stale: Vec<&str> = existing
        .iter()
        .filter_map(|d| d.get_str("_id").ok())
        .filter(|id| !ids.iter().any(|n| n == id))
        .collect();
    if !stale.is_empty() {
        hourly.delete_many(doc! { "_id": { "$in": stale } }).await?;
    }
    Ok(touched)
}

/// Sums a tenant's local day from its hourly buckets, replacing its daily
/// buckets, and leaves the marker that says the day is rolled up in `tz`.
pub async fn roll_day(db: &Db, tenant: &str, tz_name: &str, date: NaiveDate) -> DbResult<()> {
    let tz = timezone(tz_name);
    let (start, end) = day_hours(tz, date);
    let rows: Vec<Bucket> = db
        .unscoped::<Bucket>(HOURLY)
        .find(doc! {
            "tenantId": tenant,
            "start": { "$gte": bson::DateTime::from_chrono(start), "$lt": bson::DateTime::from_chrono(end) },
        })
        .await?
        .try_collect()
        .await?;
    let mut sums: BTreeMap<String, (Dims, Counts)> = BTreeMap::new();
    for row in rows {
        let dims = (row.agent_id, row.channel_id, row.channel_type);
        sums.entry(dim_key(&dims))
            .or_insert_with(|| (dims, Counts::default()))
            .1
            .add(&row.counts);
    }
    let day = date.format("%Y-%m-%d").to_string();
    let prefix = format!("{tenant}:{tz_name}:{day}");
    let daily = db.unscoped::<Bucket>(DAILY);
    let mut ids = Vec::new();
    let marker = (None, None, None);
    for (key, (dims, counts)) in sums.into_iter().chain(std::iter::once((
        "*".to_owned(),
        (marker, Counts::default()),
    ))) {
        let is_marker = key == "*";
        let id = format!("{prefix}:{key}");
        let bucket = Bucket {
            id: id.clone(),
            tenant_id: tenant.to_owned(),
            start,
            agent_id: dims.0,
            channel_id: dims.1,
            channel_type: dims.2,
            day: Some(day.clone()),
            tz: Some(tz_name.to_owned()),
            marker: is_marker,
            counts,
        };
        daily
            .replace_one(doc! { "_id": &id }, &bucket)
            .upsert(true)
            .await?;
        ids.push(id);
    }
    daily
        .delete_many(
            doc! { "tenantId": tenant, "tz": tz_name, "day": &day, "_id": { "$nin": ids } },
        )
        .await?;
    Ok(())
}

/// What a rollup run did.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RollupSummary {
    pub hours: usize,
    pub dirty_hours: usize,
    pub tenants: usize,
    pub days: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rolled_through: Option<DateTime<Utc>>,
}

/// The timezone names of these tenants (UTC when unset).
async fn timezones(db: &Db, tenants: &BTreeSet<String>) -> DbResult<HashMap<String, String>> {
    let ids: Vec<&str> = tenants.iter().map(String::as_str).collect();
    let found: Vec<Tenant> = db
        .unscoped::<Tenant>(TENANTS)
        .find(doc! { "_id": { "$in": ids } })
        .await?
        .try_collect()
        .await?;
    Ok(found
        .into_iter()
        .map(|t| {
            let tz = timezone(&t.settings.timezone);
            (t.id.into_inner(), tz.name().to_owned())
        })
        .collect())
}

/// The scheduled job's work for `hour`: rolls up that hour, every hour
/// since the last run (catching up after downtime; from the first fact on
/// the very first run), and the hours that got late facts; then the local
/// days of every tenant they touched.
pub async fn run(db: &Db, hour: DateTime<Utc>) -> DbResult<RollupSummary> {
    let hour = hour_of(hour);
    let mark = watermark(db).await?;
    let from = match mark {
        Some(w) if hour < w => hour,
        Some(w) => w,
        None => db
            .unscoped::<Fact>(FACTS)
            .find_one(doc! {})
            .sort(doc! { "at": 1 })
            .await?
            .map_or(hour, |f| hour_of(f.at).min(hour)),
    };
    let from = from.max(hour - TimeDelta::hours(MAX_CATCH_UP_HOURS));
    let mut summary = RollupSummary::default();
    let mut touched: BTreeSet<(String, DateTime<Utc>)> = BTreeSet::new();
    // Taken first: a late fact arriving during the run marks its hour again.
    let dirty = facts::take_dirty(db).await?;
    let mut h = from;
    while h <= hour {
        for t in roll_hour(db, h, None).await? {
            touched.insert((t, h));
        }
        summary.hours += 1;
        h += TimeDelta::hours(1);
    }
    for (tenant, h) in dirty {
        if h >= from && h <= hour {
            continue;
        }
        for t in roll_hour(db, h, Some(&tenant)).await? {
            touched.insert((t, h));
        }
        summary.dirty_hours += 1;
    }
    let tenants: BTreeSet<String> = touched.iter().map(|(t, _)| t.clone()).collect();
    summary.tenants = tenants.len();
    let zones = timezones(db, &tenants).await?;
    let days: BTreeSet<(String, String, NaiveDate)> = touched
        .into_iter()
        .map(|(t, h)| {
            let tz_name = zones.get(&t).cloned().unwrap_or_else(|| "UTC".to_owned());
            let date = local_date(timezone(&tz_name), h);
            (t, tz_name, date)
        })
        .collect();
    summary.days = days.len();
    for (tenant, tz_name, date) in days {
        roll_day(db, &tenant, &tz_name, date).await?;
    }
    // The hour still running may get facts after this run: it stays read
    // from the facts until a run after its end.
    let through = (hour + TimeDelta::hours(1)).min(hour_of(Utc::now()));
    if mark.is_none_or(|w| through > w) {
        advance_watermark(db, through).await?;
    }
    summary.rolled_through = watermark(db).await?;
    Ok(summary)
}
