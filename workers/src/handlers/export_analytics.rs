//! `export_analytics`: renders the requested reports as CSV (one report,
//! header row) or XLSX (one sheet per report, numbers and dates typed) into
//! GridFS; the record then carries the file for
//! `GET /analytics/exports/{id}/download` until it expires.

use bson::doc;
use chrono::Utc;
use rust_xlsxwriter::{ExcelDateTime, Format, Workbook};
use serde_json::{Value, json};

use aigentable_jobs::types::ExportAnalytics;
use aigentable_platform::analytics::exports::{
    self, Cell, ExportFormat, ExportRecord, ExportReport, ExportStatus, Table,
};
use aigentable_platform::analytics::report::{self, Filter, Query};
use aigentable_platform::analytics::{Grain, timezone};
use aigentable_platform::files;
use aigentable_platform::model::tenant::Tenants;

use crate::runner::{Handle, JobContext, JobError};

/// The CSV of one table: a header row, then one line per row.
pub fn csv_bytes(table: &Table) -> Result<Vec<u8>, JobError> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(&table.columns)
        .map_err(JobError::permanent)?;
    for row in &table.rows {
        w.write_record(row.iter().map(Cell::text))
            .map_err(JobError::permanent)?;
    }
    w.into_inner().map_err(JobError::permanent)
}

/// The XLSX of several tables: a sheet each, header in bold.
pub fn xlsx_bytes(tables: &[Table]) -> Result<Vec<u8>, JobError> {
    let mut book = Workbook::new();
    let bold = Format::new().set_bold();
    let date = Format::new().set_num_format("yyyy-mm-dd hh:mm:ss");
    for table in tables {
        let sheet = book.add_worksheet();
        sheet.set_name(table.name).map_err(JobError::permanent)?;
        for (c, name) in table.columns.iter().enumerate() {
            let c = u16::try_from(c).map_err(JobError::permanent)?;
            sheet
                .write_string_with_format(0, c, *name, &bold)
                .map_err(JobError::permanent)?;
        }
        for (r, row) in table.rows.iter().enumerate() {
            let r = u32::try_from(r + 1).map_err(JobError::permanent)?;
            for (c, cell) in row.iter().enumerate() {
                let c = u16::try_from(c).map_err(JobError::permanent)?;
                match cell {
                    Cell::Int(n) => sheet.write_number(r, c, *n as f64),
                    Cell::Num(x) => sheet.write_number(r, c, *x),
                    Cell::Text(s) => sheet.write_string(r, c, s),
                    Cell::Date(d) => {
                        let when = ExcelDateTime::from_timestamp(d.timestamp())
                            .map_err(JobError::permanent)?;
                        sheet.write_datetime_with_format(r, c, &when, &date)
                    }
                    Cell::Empty => continue,
                }
                .map_err(JobError::permanent)?;
            }
        }
        sheet.autofit();
    }
    book.save_to_buffer().map_err(JobError::permanent)
}

fn result(record: &ExportRecord, base: &str) -> Value {
    json!({
        "exportId": record.id,
        "report": record.report.as_str(),
        "format": record.format.as_str(),
        "fileName": record.file_name,
        "size": record.size,
        "expiresAt": record.expires_at,
        "downloadUrl": format!("{}/api/v1/analytics/exports/{}/download", base.trim_end_matches('/'), record.id),
    })
}

impl Handle for ExportAnalytics {
    async fn handle(self, ctx: JobContext) -> Result<Value, JobError> {
        let platform = &ctx.state.platform;
        let db = &platform.db;
        let base = &platform.config.channels.public_base_url;
        let exports_coll = db.scoped::<ExportRecord>(&ctx.tenant_id);
        let record = exports_coll
            .find_by_id(&self.export_id)
            .await
            .map_err(JobError::transient)?
            .ok_or_else(|| JobError::permanent("the export no longer exists"))?;
        if record.status == ExportStatus::Ready && record.file_id.is_some() {
            return Ok(result(&record, base));
        }
        ctx.progress(10).await;
        let tenant = Tenants(db)
            .get(&ctx.tenant_id)
            .await
            .map_err(JobError::transient)?
            .ok_or_else(|| JobError::permanent("the tenant no longer exists"))?;
        let q = Query {
            tenant: ctx.tenant_id.clone(),
            tz: timezone(&tenant.settings.timezone),
            start: record.start_date,
            end: record.end_date,
            grain: Grain::parse(&record.group_by).unwrap_or(Grain::Day),
            filter: Filter {
                agent_id: record.agent_id.clone(),
                channel_id: record.channel_id.clone(),
            },
        };
        let wants = |r: ExportReport| record.report == r || record.report == ExportReport::All;
        let mut tables = Vec::new();
        if wants(ExportReport::Overview) {
            let o = report::overview(db, &q, Utc::now())
                .await
                .map_err(JobError::transient)?;
            tables.push(exports::overview_table(&o));
        }
        if wants(ExportReport::Conversations) {
            let r = report::conversations(db, &q)
                .await
                .map_err(JobError::transient)?;
            tables.push(exports::conversations_table(&r));
        }
        ctx.progress(40).await;
        if wants(ExportReport::Agents) {
            let r = report::agents(db, &q).await.map_err(JobError::transient)?;
            tables.push(exports::agents_table(&r));
        }
        if wants(ExportReport::Channels) {
            let r = report::channels(db, &q)
                .await
                .map_err(JobError::transient)?;
            tables.push(exports::channels_table(&r));
        }
        ctx.progress(70).await;
        let bytes = match record.format {
            ExportFormat::Xlsx => xlsx_bytes(&tables)?,
            ExportFormat::Csv => {
                let table = tables
                    .first()
                    .ok_or_else(|| JobError::permanent("a CSV export needs one report"))?;
                csv_bytes(table)?
            }
        };
        let file_id = files::store(db, &ctx.tenant_id, &record.file_name, &bytes)
            .await
            .map_err(JobError::transient)?;
        let size = i64::try_from(bytes.len()).unwrap_or(i64::MAX);
        let updated = exports_coll
            .update_by_id(
                &record.id,
                doc! { "$set": {
                    "status": "READY",
                    "fileId": &file_id,
                    "size": size,
                    "error": bson::Bson::Null,
                } },
            )
            .await
            .map_err(JobError::transient)?;
        let Some(updated) = updated else {
            // Deleted meanwhile: do not leave its file behind.
            let _ = files::remove(db, &file_id).await;
            return Err(JobError::permanent("the export no longer exists"));
        };
        tracing::info!(job_id = %ctx.job_id, tenant_id = %ctx.tenant_id, export_id = %record.id, size, "analytics export written");
        Ok(result(&updated, base))
    }
}
