//! Analytics: facts captured where things happen (`facts`), rolled up
//! hourly per tenant × agent × channel and daily in the tenant's timezone
//! (`rollup`), and read back as reports (`report`) that add up buckets plus
//! the facts of the hours not rolled up yet. The definitions of every number
//! are in the README's Analytics section.

pub mod counts;
pub mod exports;
pub mod facts;
pub mod report;
pub mod rollup;

use chrono::{DateTime, Datelike, NaiveDate, NaiveTime, TimeDelta, TimeZone, Utc};
use chrono_tz::Tz;

pub use counts::Counts;
pub use facts::{Fact, FactKind};

/// Hourly buckets: `{tenantId, start, agentId, channelId, channelType, ...counts}`.
pub const HOURLY: &str = "analytics_rollup_hourly";
/// Daily buckets in the tenant's timezone (`day`, `tz`), plus one marker
/// per tenant and day saying the day was rolled up in that timezone.
pub const DAILY: &str = "analytics_rollup_daily";
/// `{_id: "rollup", rolledThrough}`: every hour before it is rolled up.
pub const STATE: &str = "analytics_state";

/// The indexes the rollup and the reports read by.
pub async fn ensure_indexes(db: &crate::Db) -> Result<(), crate::db::DbError> {
    use bson::doc;
    db.ensure_index(facts::FACTS, doc! { "at": 1 }, None)
        .await?;
    db.ensure_index(facts::FACTS, doc! { "tenantId": 1, "at": 1 }, None)
        .await?;
    db.ensure_index(HOURLY, doc! { "start": 1 }, None).await?;
    db.ensure_index(HOURLY, doc! { "tenantId": 1, "start": 1 }, None)
        .await?;
    db.ensure_index(DAILY, doc! { "tenantId": 1, "tz": 1, "start": 1 }, None)
        .await?;
    db.ensure_index(DAILY, doc! { "tenantId": 1, "tz": 1, "day": 1 }, None)
        .await?;
    db.ensure_index(exports::EXPORTS, doc! { "expiresAt": 1 }, None)
        .await?;
    // `byStatus` of the conversations report; the rollup's raw hourly
    // counts of stored conversations and messages (a range, not a scan).
    db.ensure_index(
        "conversations",
        doc! { "tenantId": 1, "createdAt": 1 },
        None,
    )
    .await?;
    db.ensure_index("conversations", doc! { "createdAt": 1 }, None)
        .await?;
    db.ensure_index("messages", doc! { "createdAt": 1 }, None)
        .await?;
    Ok(())
}

/// The tenant's timezone; UTC when unset or unknown.
pub fn timezone(name: &str) -> Tz {
    name.parse::<Tz>().unwrap_or(Tz::UTC)
}

fn ceil_hour(t: DateTime<Utc>) -> DateTime<Utc> {
    let floor = facts::hour_of(t);
    if floor == t {
        t
    } else {
        floor + TimeDelta::hours(1)
    }
}

/// The first instant of a local date (the first existing local time when
/// midnight falls in a DST gap).
pub fn local_midnight(tz: Tz, date: NaiveDate) -> DateTime<Utc> {
    let mut t = date.and_time(NaiveTime::MIN);
    for _ in 0..48 {
        if let Some(dt) = tz.from_local_datetime(&t).earliest() {
            return dt.with_timezone(&Utc);
        }
        t += TimeDelta::minutes(30);
    }
    Utc.from_utc_datetime(&date.and_time(NaiveTime::MIN))
}

/// The hours (UTC-aligned, `[start, end)`) that make up a local day: 23 or
/// 25 of them on DST days. In zones whose offset is not whole hours, an hour
/// belongs to the day in which it starts.
pub fn day_hours(tz: Tz, date: NaiveDate) -> (DateTime<Utc>, DateTime<Utc>) {
    let next = date.succ_opt().unwrap_or(date);
    (
        ceil_hour(local_midnight(tz, date)),
        ceil_hour(local_midnight(tz, next)),
    )
}

/// The local date of an instant.
pub fn local_date(tz: Tz, t: DateTime<Utc>) -> NaiveDate {
    t.with_timezone(&tz).date_naive()
}

/// How a series is grouped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grain {
    Hour,
    Day,
    Week,
    Month,
}

impl Grain {
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "hour" => Some(Grain::Hour),
            "day" => Some(Grain::Day),
            "week" => Some(Grain::Week),
            "month" => Some(Grain::Month),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Grain::Hour => "hour",
            Grain::Day => "day",
            Grain::Week => "week",
            Grain::Month => "month",
        }
    }
}

/// The first local date of the week (Monday) or month of `date`.
fn period_date(grain: Grain, date: NaiveDate) -> NaiveDate {
    match grain {
        Grain::Hour | Grain::Day => date,
        Grain::Week => date - TimeDelta::days(i64::from(date.weekday().num_days_from_monday())),
        Grain::Month => date.with_day(1).unwrap_or(date),
    }
}

fn next_period_date(grain: Grain, date: NaiveDate) -> NaiveDate {
    match grain {
        Grain::Hour | Grain::Day => date.succ_opt().unwrap_or(date),
        Grain::Week => date + TimeDelta::days(7),
        Grain::Month => {
            let (y, m) = if date.month() == 12 {
                (date.year() + 1, 1)
            } else {
                (date.year(), date.month() + 1)
            };
            NaiveDate::from_ymd_opt(y, m, 1).unwrap_or(date)
        }
    }
}

/// The start (UTC) of the period containing an hour that starts at `t`.
pub fn period_start(tz: Tz, grain: Grain, t: DateTime<Utc>) -> DateTime<Utc> {
    match grain {
        Grain::Hour => facts::hour_of(t),
        _ => day_hours(tz, period_date(grain, local_date(tz, t))).0,
    }
}

/// Every period (its start and end) overlapping `[from, to)`.
pub fn periods(
    tz: Tz,
    grain: Grain,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
    let mut out = Vec::new();
    if from >= to {
        return out;
    }
    if grain == Grain::Hour {
        let mut t = facts::hour_of(from);
        while t < to {
            out.push((t, t + TimeDelta::hours(1)));
            t += TimeDelta::hours(1);
        }
        return out;
    }
    let mut date = period_date(grain, local_date(tz, from));
    loop {
        let next = next_period_date(grain, date);
        let start = day_hours(tz, date).0;
        if start >= to || next == date {
            break;
        }
        out.push((start, day_hours(tz, next).0));
        date = next;
    }
    out
}

/// The label of a period: the local date, or the hour in RFC 3339 with the
/// tenant's offset.
pub fn period_label(tz: Tz, grain: Grain, start: DateTime<Utc>) -> String {
    match grain {
        Grain::Hour => start.with_timezone(&tz).to_rfc3339(),
        _ => local_date(tz, start).format("%Y-%m-%d").to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dst_days_have_23_and_25_hours() {
        let tz = timezone("Europe/Berlin");
        let spring = NaiveDate::from_ymd_opt(2026, 3, 29).expect("a date");
        let (s, e) = day_hours(tz, spring);
        assert_eq!((e - s).num_hours(), 23);
        let autumn = NaiveDate::from_ymd_opt(2026, 10, 25).expect("a date");
        let (s, e) = day_hours(tz, autumn);
        assert_eq!((e - s).num_hours(), 25);
        assert_eq!(s.to_rfc3339(), "2026-10-24T22:00:00+00:00");
    }

    #[test]
    fn weeks_start_on_monday_and_months_on_the_first() {
        let tz = timezone("America/New_York");
        let t = Utc
            .with_ymd_and_hms(2026, 11, 5, 3, 0, 0)
            .single()
            .expect("a time");
        // 2026-11-04 22:00 local, a Wednesday.
        let w = period_start(tz, Grain::Week, t);
        assert_eq!(period_label(tz, Grain::Week, w), "2026-11-02");
        let m = period_start(tz, Grain::Month, t);
        assert_eq!(period_label(tz, Grain::Month, m), "2026-11-01");
        let all = periods(tz, Grain::Day, w, w + TimeDelta::days(3));
        assert_eq!(all.len(), 3);
    }
}
