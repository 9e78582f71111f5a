//! Analytics exports: the record of a requested file and the reports laid
//! out as tables (one per report; column names are the JSON field names of
//! the endpoints, so a file and a response can be compared field by field).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::report::{AgentsReport, ChannelsReport, ConversationsReport, Overview, Summary};
use crate::db::TenantOwned;
use crate::ids::TenantId;

pub const EXPORTS: &str = "analytics_exports";
/// Days a finished export can be downloaded.
pub const EXPORT_TTL_DAYS: i64 = 7;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExportFormat {
    Csv,
    Xlsx,
}

impl ExportFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            ExportFormat::Csv => "csv",
            ExportFormat::Xlsx => "xlsx",
        }
    }
    pub fn content_type(self) -> &'static str {
        match self {
            ExportFormat::Csv => "text/csv; charset=utf-8",
            ExportFormat::Xlsx => {
                "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExportReport {
    Overview,
    Conversations,
    Agents,
    Channels,
    All,
}

impl ExportReport {
    pub fn as_str(self) -> &'static str {
        match self {
            ExportReport::Overview => "overview",
            ExportReport::Conversations => "conversations",
            ExportReport::Agents => "agents",
            ExportReport::Channels => "channels",
            ExportReport::All => "all",
        }
    }
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "overview" => Some(ExportReport::Overview),
            "conversations" => Some(ExportReport::Conversations),
            "agents" => Some(ExportReport::Agents),
            "channels" => Some(ExportReport::Channels),
            "all" => Some(ExportReport::All),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ExportStatus {
    Queued,
    Ready,
    Failed,
}

/// A requested export; the job fills in the file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExportRecord {
    #[serde(rename = "_id")]
    pub id: String,
    pub tenant_id: TenantId,
    pub report: ExportReport,
    pub format: ExportFormat,
    #[serde(with = "crate::model::bson_datetime")]
    pub start_date: DateTime<Utc>,
    #[serde(with = "crate::model::bson_datetime")]
    pub end_date: DateTime<Utc>,
    pub group_by: String,
    #[serde(default)]
    pub agent_id: Option<String>,
    #[serde(default)]
    pub channel_id: Option<String>,
    pub status: ExportStatus,
    #[serde(default)]
    pub file_id: Option<String>,
    pub file_name: String,
    #[serde(default)]
    pub size: Option<i64>,
    #[serde(default)]
    pub error: Option<String>,
    pub created_by: String,
    #[serde(with = "crate::model::bson_datetime")]
    pub created_at: DateTime<Utc>,
    /// Downloads end here; the sweep removes the record and its file.
    #[serde(with = "crate::model::bson_datetime")]
    pub expires_at: DateTime<Utc>,
}

impl TenantOwned for ExportRecord {
    const COLLECTION: &'static str = EXPORTS;
    fn tenant_id(&self) -> &TenantId {
        &self.tenant_id
    }
}

/// A typed cell: numbers and dates stay numbers and dates in XLSX.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Int(i64),
    Num(f64),
    Text(String),
    Date(DateTime<Utc>),
    Empty,
}

impl Cell {
    fn opt_text(v: Option<String>) -> Cell {
        v.map_or(Cell::Empty, Cell::Text)
    }
    /// The CSV form: integers plain, decimals as Rust prints them, dates in
    /// RFC 3339 (UTC).
    pub fn text(&self) -> String {
        match self {
            Cell::Int(n) => n.to_string(),
            Cell::Num(x) => x.to_string(),
            Cell::Text(s) => s.clone(),
            Cell::Date(d) => d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            Cell::Empty => String::new(),
        }
    }
}

/// One sheet (XLSX) or file (CSV).
#[derive(Debug, Clone)]
pub struct Table {
    pub name: &'static str,
    pub columns: Vec<&'static str>,
    pub rows: Vec<Vec<Cell>>,
}

const SUMMARY_COLUMNS: [&str; 20] = [
    "conversations",
    "messages",
    "customerMessages",
    "botMessages",
    "staffMessages",
    "averageResponseTime",
    "p90ResponseTime",
    "botAverageResponseTime",
    "staffAverageResponseTime",
    "firstResponseTime",
    "handoffs",
    "handoffRate",
    "resolved",
    "resolvedByBot",
    "botResolutionRate",
    "customerSatisfaction",
    "ratingsCount",
    "deliveryFailures",
    "deliveryFailureRate",
    "tokens",
];

fn summary_cells(s: &Summary) -> Vec<Cell> {
    vec![
        Cell::Int(s.conversations),
        Cell::Int(s.messages),
        Cell::Int(s.customer_messages),
        Cell::Int(s.bot_messages),
        Cell::Int(s.staff_messages),
        Cell::Num(s.average_response_time),
        Cell::Num(s.p90_response_time),
        Cell::Num(s.bot_average_response_time),
        Cell::Num(s.staff_average_response_time),
        Cell::Num(s.first_response_time),
        Cell::Int(s.handoffs),
        Cell::Num(s.handoff_rate),
        Cell::Int(s.resolved),
        Cell::Int(s.resolved_by_bot),
        Cell::Num(s.bot_resolution_rate),
        Cell::Num(s.customer_satisfaction),
        Cell::Int(s.ratings_count),
        Cell::Int(s.delivery_failures),
        Cell::Num(s.delivery_failure_rate),
        Cell::Int(s.tokens),
    ]
}

pub fn overview_table(o: &Overview) -> Table {
    Table {
        name: "overview",
        columns: vec![
            "startDate",
            "endDate",
            "timezone",
            "totalConversations",
            "activeAgents",
            "averageResponseTime",
            "customerSatisfaction",
            "ratingsCount",
            "conversationsToday",
            "messagesProcessed",
            "botResolutionRate",
            "handoffRate",
            "firstResponseTime",
            "p90ResponseTime",
        ],
        rows: vec![vec![
            Cell::Date(o.period.start_date),
            Cell::Date(o.period.end_date),
            Cell::Text(o.period.timezone.clone()),
            Cell::Int(o.total_conversations),
            Cell::Int(o.active_agents),
            Cell::Num(o.average_response_time),
            Cell::Num(o.customer_satisfaction),
            Cell::Int(o.ratings_count),
            Cell::Int(o.conversations_today),
            Cell::Int(o.messages_processed),
            Cell::Num(o.bot_resolution_rate),
            Cell::Num(o.handoff_rate),
            Cell::Num(o.first_response_time),
            Cell::Num(o.p90_response_time),
        ]],
    }
}

pub fn conversations_table(r: &ConversationsReport) -> Table {
    Table {
        name: "conversations",
        columns: vec![
            "period",
            "start",
            "end",
            "conversations",
            "resolved",
            "resolvedByBot",
            "handedOff",
            "messages",
            "averageResponseTime",
            "customerSatisfaction",
            "ratingsCount",
        ],
        rows: r
            .series
            .iter()
            .map(|p| {
                vec![
                    Cell::Text(p.period.clone()),
                    Cell::Date(p.start),
                    Cell::Date(p.end),
                    Cell::Int(p.conversations),
                    Cell::Int(p.resolved),
                    Cell::Int(p.resolved_by_bot),
                    Cell::Int(p.handed_off),
                    Cell::Int(p.messages),
                    Cell::Num(p.average_response_time),
                    Cell::Num(p.customer_satisfaction),
                    Cell::Int(p.ratings_count),
                ]
            })
            .collect(),
    }
}

pub fn agents_table(r: &AgentsReport) -> Table {
    let mut columns = vec!["agentId", "name"];
    columns.extend(SUMMARY_COLUMNS);
    Table {
        name: "agents",
        columns,
        rows: r
            .agents
            .iter()
            .map(|a| {
                let mut row = vec![
                    Cell::opt_text(a.agent_id.clone()),
                    Cell::opt_text(a.name.clone()),
                ];
                row.extend(summary_cells(&a.metrics));
                row
            })
            .collect(),
    }
}

pub fn channels_table(r: &ChannelsReport) -> Table {
    let mut columns = vec![
        "channelId",
        "name",
        "type",
        "inboundMessages",
        "outboundMessages",
    ];
    columns.extend(SUMMARY_COLUMNS);
    Table {
        name: "channels",
        columns,
        rows: r
            .channels
            .iter()
            .map(|c| {
                let mut row = vec![
                    Cell::Text(c.channel_id.clone()),
                    Cell::opt_text(c.name.clone()),
                    Cell::opt_text(c.channel_type.clone()),
                    Cell::Int(c.inbound_messages),
                    Cell::Int(c.outbound_messages),
                ];
                row.extend(summary_cells(&c.metrics));
                row
            })
            .collect(),
    }
}
