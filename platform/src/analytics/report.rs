//! Reports: a period's buckets (daily ones for whole local days, hourly
//! ones at the edges, and the facts of the hours not rolled up yet) added
//! up into the numbers the analytics endpoints and exports show.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use bson::{Document, doc};
use chrono::{DateTime, TimeDelta, Utc};
use chrono_tz::Tz;
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};

use super::counts::{Counts, round2};
use super::facts::{FACTS, Fact, hour_of};
use super::rollup::{Bucket, watermark};
use super::{DAILY, Grain, HOURLY, day_hours, local_date, period_label, period_start, periods};
use crate::db::{Db, DbResult};
use crate::ids::TenantId;
use crate::model::{Agent, AgentStatus, Channel, Conversation};

/// Optional narrowing to one agent or one channel.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub agent_id: Option<String>,
    pub channel_id: Option<String>,
}

impl Filter {
    fn apply(&self, d: &mut Document) {
        if let Some(a) = &self.agent_id {
            d.insert("agentId", a.as_str());
        }
        if let Some(c) = &self.channel_id {
            d.insert("channelId", c.as_str());
        }
    }
    fn is_empty(&self) -> bool {
        self.agent_id.is_none() && self.channel_id.is_none()
    }
}

/// What a report covers: `[start, end)`, whole hours, in a timezone.
#[derive(Debug, Clone)]
pub struct Query {
    pub tenant: TenantId,
    pub tz: Tz,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub grain: Grain,
    pub filter: Filter,
}

/// One bucket's numbers and where they belong.
#[derive(Debug, Clone)]
pub struct Row {
    pub start: DateTime<Utc>,
    pub agent_id: Option<String>,
    pub channel_id: Option<String>,
    pub channel_type: Option<String>,
    pub counts: Counts,
}

fn range(from: DateTime<Utc>, to: DateTime<Utc>) -> Document {
    doc! { "$gte": bson::DateTime::from_chrono(from), "$lt": bson::DateTime::from_chrono(to) }
}

/// The rows of `[from, to)` for a query's tenant, timezone and filter.
/// Whole local days before the rollup watermark, with no `cut` inside them,
/// come from daily buckets; other rolled-up hours from hourly buckets; the
/// rest from the facts. With `hourly`, no daily buckets are used (hourly
/// series).
pub async fn load(
    db: &Db,
    q: &Query,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    cuts: &[DateTime<Utc>],
    hourly: bool,
) -> DbResult<Vec<Row>> {
    let tenant = q.tenant.as_str();
    let tz = q.tz;
    let filter = &q.filter;
    let mark = watermark(db).await?.unwrap_or(from);
    let rolled_end = to.min(mark.max(from));
    let mut candidates: BTreeMap<String, (DateTime<Utc>, DateTime<Utc>)> = BTreeMap::new();
    if !hourly && rolled_end > from {
        let mut date = local_date(tz, from);
        loop {
            let (s, e) = day_hours(tz, date);
            if s >= rolled_end {
                break;
            }
            if s >= from && e <= rolled_end && !cuts.iter().any(|c| *c > s && *c < e) {
                candidates.insert(date.format("%Y-%m-%d").to_string(), (s, e));
            }
            match date.succ_opt() {
                Some(next) => date = next,
                None => break,
            }
        }
    }
    let mut rows = Vec::new();
    let mut covered: Vec<(DateTime<Utc>, DateTime<Utc>)> = Vec::new();
    if let (Some(first), Some(last)) = (
        candidates.values().map(|r| r.0).min(),
        candidates.values().map(|r| r.1).max(),
    ) {
        let mut wanted = doc! { "tenantId": tenant, "tz": tz.name(), "start": range(first, last) };
        if !filter.is_empty() {
            let mut dims = Document::new();
            filter.apply(&mut dims);
            wanted.insert("$or", vec![doc! { "marker": true }, dims]);
        }
        let found: Vec<Bucket> = db
            .unscoped::<Bucket>(DAILY)
            .find(wanted)
            .await?
            .try_collect()
            .await?;
        let mut marked = BTreeSet::new();
        let mut daily_rows = Vec::new();
        for b in found {
            let Some(day) = b.day.clone().filter(|d| candidates.contains_key(d)) else {
                continue;
            };
            if b.marker {
                marked.insert(day);
            } else {
                daily_rows.push((day, b));
            }
        }
        for (day, b) in daily_rows {
            if marked.contains(&day) {
                rows.push(row_of(b));
            }
        }
        covered = marked
            .iter()
            .filter_map(|d| candidates.get(d).copied())
            .collect();
        covered.sort();
    }
    // The rolled-up hours outside the covered days.
    let mut gaps = Vec::new();
    let mut t = from;
    for (s, e) in &covered {
        if *s > t {
            gaps.push((t, *s));
        }
        t = *e;
    }
    if rolled_end > t {
        gaps.push((t, rolled_end));
    }
    let hourly_rows = async {
        if gaps.is_empty() {
            return Ok::<_, crate::db::DbError>(Vec::new());
        }
        let ors: Vec<Document> = gaps
            .iter()
            .map(|(s, e)| doc! { "start": range(*s, *e) })
            .collect();
        let mut wanted = doc! { "tenantId": tenant, "$or": ors };
        filter.apply(&mut wanted);
        let found: Vec<Bucket> = db
            .unscoped::<Bucket>(HOURLY)
            .find(wanted)
            .await?
            .try_collect()
            .await?;
        Ok(found.into_iter().map(row_of).collect::<Vec<_>>())
    };
    let live_from = from.max(mark);
    let live_rows = async {
        if live_from >= to {
            return Ok::<_, crate::db::DbError>(Vec::new());
        }
        let mut wanted = doc! { "tenantId": tenant, "at": range(live_from, to) };
        filter.apply(&mut wanted);
        let mut sums: BTreeMap<(DateTime<Utc>, String), Row> = BTreeMap::new();
        let mut cursor = db.unscoped::<Fact>(FACTS).find(wanted).await?;
        while let Some(f) = cursor.try_next().await? {
            let key = (
                hour_of(f.at),
                format!("{}:{}", f.agent_id.as_deref().unwrap_or("-"), f.channel_id),
            );
            sums.entry(key)
                .or_insert_with(|| Row {
                    start: hour_of(f.at),
                    agent_id: f.agent_id.clone(),
                    channel_id: Some(f.channel_id.clone()),
                    channel_type: Some(f.channel_type.clone()),
                    counts: Counts::default(),
                })
                .counts
                .add_fact(&f);
        }
        Ok(sums.into_values().collect())
    };
    let (h, l) = futures::try_join!(hourly_rows, live_rows)?;
    rows.extend(h);
    rows.extend(l);
    Ok(rows)
}

fn row_of(b: Bucket) -> Row {
    Row {
        start: b.start,
        agent_id: b.agent_id,
        channel_id: b.channel_id,
        channel_type: b.channel_type,
        counts: b.counts,
    }
}

fn sum_in(rows: &[Row], from: DateTime<Utc>, to: DateTime<Utc>) -> Counts {
    let mut c = Counts::default();
    for r in rows.iter().filter(|r| r.start >= from && r.start < to) {
        c.add(&r.counts);
    }
    c
}

/// The numbers of a period (or an agent, a channel, a series point).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// Conversations started (first customer message in the period).
    pub conversations: i64,
    /// Customer messages received plus bot and staff messages sent.
    pub messages: i64,
    pub customer_messages: i64,
    pub bot_messages: i64,
    pub staff_messages: i64,
    /// Mean response time in seconds, bot and staff together.
    pub average_response_time: f64,
    /// 90th percentile response time in seconds (from the histogram).
    pub p90_response_time: f64,
    pub bot_average_response_time: f64,
    pub staff_average_response_time: f64,
    /// Mean first response time in seconds.
    pub first_response_time: f64,
    pub responses: i64,
    pub handoffs: i64,
    /// Handoffs ÷ conversations started.
    pub handoff_rate: f64,
    /// Conversations resolved or closed.
    pub resolved: i64,
    pub resolved_by_bot: i64,
    /// Resolved by bot ÷ resolved or closed.
    pub bot_resolution_rate: f64,
    /// Mean time from a conversation's start to its resolution, seconds.
    pub average_resolution_time: f64,
    /// Mean rating 1–5 given in the period; 0 when there is none.
    pub customer_satisfaction: f64,
    pub ratings_count: i64,
    pub delivery_failures: i64,
    /// Failed ÷ outbound messages.
    pub delivery_failure_rate: f64,
    pub tokens: i64,
}

impl Summary {
    pub fn of(c: &Counts) -> Self {
        Summary {
            conversations: c.conversations_started,
            messages: c.messages(),
            customer_messages: c.customer_messages,
            bot_messages: c.bot_messages,
            staff_messages: c.staff_messages,
            average_response_time: c.average_response_seconds(),
            p90_response_time: c.response_percentile_seconds(0.9),
            bot_average_response_time: c.bot_average_response_seconds(),
            staff_average_response_time: c.staff_average_response_seconds(),
            first_response_time: c.first_response_seconds(),
            responses: c.responses,
            handoffs: c.handoffs,
            handoff_rate: c.handoff_rate(),
            resolved: c.resolved,
            resolved_by_bot: c.resolved_by_bot,
            bot_resolution_rate: c.bot_resolution_rate(),
            average_resolution_time: c.average_resolution_seconds(),
            customer_satisfaction: c.satisfaction(),
            ratings_count: c.ratings,
            delivery_failures: c.delivery_failures,
            delivery_failure_rate: c.delivery_failure_rate(),
            tokens: c.tokens,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PeriodInfo {
    pub start_date: DateTime<Utc>,
    pub end_date: DateTime<Utc>,
    pub timezone: String,
    pub group_by: String,
}

/// Change against the previous period of the same length, in percent;
/// `null` when the previous period had none.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Trend {
    pub total_conversations: Option<f64>,
    pub messages_processed: Option<f64>,
    pub average_response_time: Option<f64>,
    pub customer_satisfaction: Option<f64>,
}

fn change(now: f64, before: f64) -> Option<f64> {
    (before != 0.0).then(|| round2((now - before) / before * 100.0))
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Overview {
    pub total_conversations: i64,
    pub active_agents: i64,
    pub average_response_time: f64,
    pub customer_satisfaction: f64,
    pub conversations_today: i64,
    pub messages_processed: i64,
    pub ratings_count: i64,
    pub bot_resolution_rate: f64,
    pub handoff_rate: f64,
    pub first_response_time: f64,
    pub p90_response_time: f64,
    pub trend: Trend,
    pub summary: Summary,
    pub previous: Summary,
    pub period: PeriodInfo,
}

fn period_info(q: &Query) -> PeriodInfo {
    PeriodInfo {
        start_date: q.start,
        end_date: q.end,
        timezone: q.tz.name().to_owned(),
        group_by: q.grain.as_str().to_owned(),
    }
}

pub async fn overview(db: &Db, q: &Query, now: DateTime<Utc>) -> DbResult<Overview> {
    let len = q.end - q.start;
    let prev_start = q.start - len;
    let (today_start, today_end) = day_hours(q.tz, local_date(q.tz, now));
    let from = prev_start.min(today_start);
    let to = q.end.max(today_end);
    let cuts = [prev_start, q.start, q.end, today_start, today_end];
    let agents = async {
        let mut f = doc! { "status": AgentStatus::Active.as_str() };
        if let Some(a) = &q.filter.agent_id {
            f.insert("_id", a.as_str());
        }
        db.scoped::<Agent>(&q.tenant).count(f).await
    };
    let rows = load(db, q, from, to, &cuts, false);
    let (active_agents, rows) = futures::try_join!(agents, rows)?;
    let current = sum_in(&rows, q.start, q.end);
    let previous = sum_in(&rows, prev_start, q.start);
    let today = sum_in(&rows, today_start, today_end);
    let summary = Summary::of(&current);
    let before = Summary::of(&previous);
    Ok(Overview {
        total_conversations: summary.conversations,
        active_agents: i64::try_from(active_agents).unwrap_or(i64::MAX),
        average_response_time: summary.average_response_time,
        customer_satisfaction: summary.customer_satisfaction,
        conversations_today: today.conversations_started,
        messages_processed: summary.messages,
        ratings_count: summary.ratings_count,
        bot_resolution_rate: summary.bot_resolution_rate,
        handoff_rate: summary.handoff_rate,
        first_response_time: summary.first_response_time,
        p90_response_time: summary.p90_response_time,
        trend: Trend {
            total_conversations: change(summary.conversations as f64, before.conversations as f64),
            messages_processed: change(summary.messages as f64, before.messages as f64),
            average_response_time: change(
                summary.average_response_time,
                before.average_response_time,
            ),
            customer_satisfaction: change(
                summary.customer_satisfaction,
                before.customer_satisfaction,
            ),
        },
        summary,
        previous: before,
        period: period_info(q),
    })
}

/// One point of a time series.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SeriesPoint {
    /// The local date (`2026-03-29`; weeks by their Monday, months by their
    /// first day) or, grouped by hour, the hour in RFC 3339.
    pub period: String,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub conversations: i64,
    pub resolved: i64,
    pub resolved_by_bot: i64,
    pub handed_off: i64,
    pub messages: i64,
    pub average_response_time: f64,
    pub customer_satisfaction: f64,
    pub ratings_count: i64,
    /// Conversations started per channel type.
    pub by_channel_type: BTreeMap<String, i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ConversationsReport {
    pub totals: Summary,
    /// Conversations started in the period, by their status now.
    pub by_status: BTreeMap<String, i64>,
    /// Conversations started in the period, by channel type.
    pub by_channel_type: BTreeMap<String, i64>,
    pub series: Vec<SeriesPoint>,
    pub period: PeriodInfo,
}

/// The conversations report: totals and a series grouped by `q.grain`.
pub async fn conversations(db: &Db, q: &Query) -> DbResult<ConversationsReport> {
    let buckets = periods(q.tz, q.grain, q.start, q.end);
    let rows = load(db, q, q.start, q.end, &[], q.grain == Grain::Hour);
    let statuses = async {
        let mut m = doc! { "tenantId": q.tenant.as_str(), "createdAt": range(q.start, q.end) };
        q.filter.apply(&mut m);
        let pipeline = vec![
            doc! { "$match": m },
            doc! { "$group": { "_id": "$status", "n": { "$sum": 1 } } },
        ];
        let found: Vec<Document> = db
            .unscoped::<Conversation>(crate::model::conversation::CONVERSATIONS)
            .aggregate(pipeline)
            .await?
            .try_collect()
            .await?;
        Ok::<_, crate::db::DbError>(found)
    };
    let (rows, statuses) = futures::try_join!(rows, statuses)?;
    let mut by_status: BTreeMap<String, i64> = crate::model::ConversationStatus::ALL
        .iter()
        .map(|s| (s.as_str().to_owned(), 0))
        .collect();
    for d in statuses {
        if let Ok(s) = d.get_str("_id") {
            let n = d
                .get_i64("n")
                .ok()
                .or_else(|| d.get_i32("n").ok().map(i64::from))
                .unwrap_or(0);
            *by_status.entry(s.to_owned()).or_default() += n;
        }
    }
    let mut points: BTreeMap<DateTime<Utc>, (Counts, BTreeMap<String, i64>)> = buckets
        .iter()
        .map(|(s, _)| (*s, (Counts::default(), BTreeMap::new())))
        .collect();
    let mut totals = Counts::default();
    let mut by_channel_type: BTreeMap<String, i64> = BTreeMap::new();
    for r in rows
        .iter()
        .filter(|r| r.start >= q.start && r.start < q.end)
    {
        totals.add(&r.counts);
        let ct = r.channel_type.clone().unwrap_or_default();
        if r.counts.conversations_started > 0 {
            *by_channel_type.entry(ct.clone()).or_default() += r.counts.conversations_started;
        }
        let key = period_start(q.tz, q.grain, r.start);
        if let Some((c, types)) = points.get_mut(&key) {
            c.add(&r.counts);
            if r.counts.conversations_started > 0 {
                *types.entry(ct).or_default() += r.counts.conversations_started;
            }
        }
    }
    let ends: HashMap<DateTime<Utc>, DateTime<Utc>> = buckets.into_iter().collect();
    let series = points
        .into_iter()
        .map(|(start, (c, types))| SeriesPoint {
            period: period_label(q.tz, q.grain, start),
            start,
            end: ends
                .get(&start)
                .copied()
                .unwrap_or(start + TimeDelta::hours(1)),
            conversations: c.conversations_started,
            resolved: c.resolved,
            resolved_by_bot: c.resolved_by_bot,
            handed_off: c.handoffs,
            messages: c.messages(),
            average_response_time: c.average_response_seconds(),
            customer_satisfaction: c.satisfaction(),
            ratings_count: c.ratings,
            by_channel_type: types,
        })
        .collect();
    Ok(ConversationsReport {
        totals: Summary::of(&totals),
        by_status,
        by_channel_type,
        series,
        period: period_info(q),
    })
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AgentRow {
    /// `null`: conversations of channels without an agent.
    pub agent_id: Option<String>,
    pub name: Option<String>,
    #[serde(flatten)]
    pub metrics: Summary,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AgentsReport {
    pub agents: Vec<AgentRow>,
    pub period: PeriodInfo,
}

/// Per agent: every agent of the tenant (zeros when idle), plus the
/// conversations without an agent when there were any.
pub async fn agents(db: &Db, q: &Query) -> DbResult<AgentsReport> {
    let rows = load(db, q, q.start, q.end, &[], false);
    let mut f = Document::new();
    if let Some(a) = &q.filter.agent_id {
        f.insert("_id", a.as_str());
    }
    let list = async {
        let (agents, _) = db
            .scoped::<Agent>(&q.tenant)
            .find_page(
                f,
                doc! { "createdAt": 1 },
                crate::db::PageRequest {
                    page: 1,
                    limit: 1_000,
                },
            )
            .await?;
        Ok::<_, crate::db::DbError>(agents)
    };
    let (rows, list) = futures::try_join!(rows, list)?;
    let mut sums: BTreeMap<Option<String>, Counts> = BTreeMap::new();
    for r in rows
        .iter()
        .filter(|r| r.start >= q.start && r.start < q.end)
    {
        sums.entry(r.agent_id.clone()).or_default().add(&r.counts);
    }
    let mut out = Vec::new();
    for a in list {
        let c = sums.remove(&Some(a.id.clone())).unwrap_or_default();
        out.push(AgentRow {
            agent_id: Some(a.id),
            name: Some(a.name),
            metrics: Summary::of(&c),
        });
    }
    // Deleted agents and channels without one.
    for (agent_id, c) in sums {
        if c.is_empty() {
            continue;
        }
        out.push(AgentRow {
            name: None,
            agent_id,
            metrics: Summary::of(&c),
        });
    }
    Ok(AgentsReport {
        agents: out,
        period: period_info(q),
    })
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ChannelRow {
    pub channel_id: String,
    pub name: Option<String>,
    #[serde(rename = "type")]
    pub channel_type: Option<String>,
    pub inbound_messages: i64,
    pub outbound_messages: i64,
    #[serde(flatten)]
    pub metrics: Summary,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ChannelsReport {
    pub channels: Vec<ChannelRow>,
    pub period: PeriodInfo,
}

/// Per channel: every channel of the tenant (zeros when idle), plus deleted
/// channels that had traffic.
pub async fn channels(db: &Db, q: &Query) -> DbResult<ChannelsReport> {
    let rows = load(db, q, q.start, q.end, &[], false);
    let mut f = Document::new();
    if let Some(c) = &q.filter.channel_id {
        f.insert("_id", c.as_str());
    }
    if let Some(a) = &q.filter.agent_id {
        f.insert("agentId", a.as_str());
    }
    let list = async {
        let (channels, _) = db
            .scoped::<Channel>(&q.tenant)
            .find_page(
                f,
                doc! { "createdAt": 1 },
                crate::db::PageRequest {
                    page: 1,
                    limit: 1_000,
                },
            )
            .await?;
        Ok::<_, crate::db::DbError>(channels)
    };
    let (rows, list) = futures::try_join!(rows, list)?;
    let mut sums: BTreeMap<String, (Option<String>, Counts)> = BTreeMap::new();
    for r in rows
        .iter()
        .filter(|r| r.start >= q.start && r.start < q.end)
    {
        let e = sums
            .entry(r.channel_id.clone().unwrap_or_default())
            .or_insert_with(|| (r.channel_type.clone(), Counts::default()));
        e.1.add(&r.counts);
    }
    let row = |id: String, name: Option<String>, ct: Option<String>, c: &Counts| ChannelRow {
        channel_id: id,
        name,
        channel_type: ct,
        inbound_messages: c.customer_messages,
        outbound_messages: c.outbound(),
        metrics: Summary::of(c),
    };
    let mut out = Vec::new();
    for ch in list {
        let (_, c) = sums.remove(&ch.id).unwrap_or_default();
        out.push(row(
            ch.id,
            Some(ch.name),
            Some(ch.channel_type.as_str().to_owned()),
            &c,
        ));
    }
    for (id, (ct, c)) in sums {
        if !c.is_empty() {
            out.push(row(id, None, ct, &c));
        }
    }
    Ok(ChannelsReport {
        channels: out,
        period: period_info(q),
    })
}
