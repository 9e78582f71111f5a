//! Backups of the whole database, and their restore.
//!
//! A backup is a directory `DATA_DIR/backups/<id>/` with one file per
//! collection (`<name>.jsonl`, one document per line in canonical extended
//! JSON, so every type comes back exactly: GridFS files included, they are
//! the `document_files.files` and `.chunks` collections) and a `manifest.json` giving
//! each file's document count and SHA-256. The `backups` record says where,
//! how big, and whether it completed.
//!
//! A restore checks every file against the manifest first (a damaged or
//! edited backup is refused before anything is written), then replaces each
//! backed-up collection's documents with the backup's. What a restore
//! leaves alone: `backups` (the list of backups itself), `jobs` (restoring
//! old job records would make the sweep queue work that already ran) and
//! the `outbox` (never backed up: it holds rendered reset links).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bson::{Bson, Document, doc};
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::db::Db;

/// The collection of backup records.
pub const BACKUPS: &str = "backups";
/// A delivery log and, without SMTP, the developer's mailbox holding
/// rendered reset links: never part of a backup.
pub const OUTBOX: &str = "outbox";
/// Never written by a restore (see the module documentation).
pub const KEPT_ON_RESTORE: [&str; 3] = [BACKUPS, "jobs", OUTBOX];
const MANIFEST: &str = "manifest.json";
/// Documents per insert while restoring.
const BATCH: usize = 500;

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("backup id '{0}' is malformed")]
    BadId(String),
    #[error("backup {0} does not exist")]
    NotFound(String),
    #[error("backup {id} cannot be used: {reason}")]
    Damaged { id: String, reason: String },
    #[error("database: {0}")]
    Db(String),
    #[error("file: {0}")]
    Io(#[from] std::io::Error),
}

/// One collection in a backup.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CollectionFile {
    pub documents: u64,
    pub bytes: u64,
    /// Hex SHA-256 of the file.
    pub sha256: String,
}

/// `manifest.json`: what a backup holds.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub collections: BTreeMap<String, CollectionFile>,
}

impl Manifest {
    pub fn documents(&self) -> u64 {
        self.collections.values().map(|c| c.documents).sum()
    }

    pub fn bytes(&self) -> u64 {
        self.collections.values().map(|c| c.bytes).sum()
    }
}

/// Where backup `id` lives; refuses ids that could name another directory.
pub fn dir(data_dir: &str, id: &str) -> Result<PathBuf, BackupError> {
    if !crate::ids::looks_like_id(id) {
        return Err(BackupError::BadId(id.to_owned()));
    }
    Ok(PathBuf::from(data_dir).join("backups").join(id))
}

fn db_error(e: impl std::fmt::Display) -> BackupError {
    BackupError::Db(e.to_string())
}

/// Writes every collection but the outbox into `dir` with its manifest.
pub async fn dump(db: &Db, dir: &Path) -> Result<Manifest, BackupError> {
    tokio::fs::create_dir_all(dir).await?;
    let database = db.database();
    let mut names = database.list_collection_names().await.map_err(db_error)?;
    names.retain(|n| n != OUTBOX);
    names.sort();
    let mut manifest = Manifest::default();
    for name in names {
        let mut file = tokio::fs::File::create(dir.join(format!("{name}.jsonl"))).await?;
        let mut cursor = database
            .collection::<Document>(&name)
            .find(doc! {})
            .sort(doc! { "_id": 1 })
            .await
            .map_err(db_error)?;
        let mut hash = Sha256::new();
        let (mut documents, mut bytes) = (0u64, 0u64);
        while let Some(d) = cursor.try_next().await.map_err(db_error)? {
            let mut line = Bson::Document(d).into_canonical_extjson().to_string();
            line.push('\n');
            hash.update(line.as_bytes());
            file.write_all(line.as_bytes()).await?;
            documents += 1;
            bytes += line.len() as u64;
        }
        file.flush().await?;
        manifest.collections.insert(
            name,
            CollectionFile {
                documents,
                bytes,
                sha256: hex::encode(hash.finalize()),
            },
        );
    }
    let json = serde_json::to_vec_pretty(&manifest).map_err(std::io::Error::other)?;
    tokio::fs::write(dir.join(MANIFEST), json).await?;
    Ok(manifest)
}

/// Reads the manifest of backup `id` and checks every file against it.
pub async fn verify(dir: &Path, id: &str) -> Result<Manifest, BackupError> {
    let damaged = |reason: String| BackupError::Damaged {
        id: id.to_owned(),
        reason,
    };
    let raw = match tokio::fs::read(dir.join(MANIFEST)).await {
        Ok(raw) => raw,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(if tokio::fs::try_exists(dir).await.unwrap_or(false) {
                damaged("it has no manifest (made by an older version, or unfinished)".into())
            } else {
                BackupError::NotFound(id.to_owned())
            });
        }
        Err(e) => return Err(e.into()),
    };
    let manifest: Manifest = serde_json::from_slice(&raw)
        .map_err(|e| damaged(format!("its manifest is unreadable ({e})")))?;
    for (name, expected) in &manifest.collections {
        let path = dir.join(format!("{name}.jsonl"));
        let file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| damaged(format!("{name}.jsonl cannot be read ({e})")))?;
        let mut lines = BufReader::new(file).lines();
        let mut hash = Sha256::new();
        let mut documents = 0u64;
        while let Some(line) = lines.next_line().await? {
            hash.update(line.as_bytes());
            hash.update(b"\n");
            documents += 1;
        }
        if documents != expected.documents || hex::encode(hash.finalize()) != expected.sha256 {
            return Err(damaged(format!("{name}.jsonl does not match its checksum")));
        }
    }
    Ok(manifest)
}

/// What a restore did (or, dry, would do) to one collection.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CollectionRestore {
    pub name: String,
    /// Documents in the backup.
    pub documents: u64,
    /// Documents in the database before the restore.
    pub current: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RestoreReport {
    pub backup_id: String,
    pub dry_run: bool,
    pub collections: Vec<CollectionRestore>,
    /// Collections in the backup a restore never writes.
    pub kept: Vec<String>,
}

/// Restores backup `id` from `dir`: verified first; with `dry_run`, only
/// counts. Each collection's documents are replaced by the backup's.
pub async fn restore(
    db: &Db,
    dir: &Path,
    id: &str,
    dry_run: bool,
) -> Result<RestoreReport, BackupError> {
    let manifest = verify(dir, id).await?;
    let database = db.database();
    let mut report = RestoreReport {
        backup_id: id.to_owned(),
        dry_run,
        collections: Vec::new(),
        kept: Vec::new(),
    };
    for (name, file) in &manifest.collections {
        if KEPT_ON_RESTORE.contains(&name.as_str()) {
            report.kept.push(name.clone());
            continue;
        }
        let coll = database.collection::<Document>(name);
        let current = coll.count_documents(doc! {}).await.map_err(db_error)?;
        report.collections.push(CollectionRestore {
            name: name.clone(),
            documents: file.documents,
            current,
        });
        if dry_run {
            continue;
        }
        coll.delete_many(doc! {}).await.map_err(db_error)?;
        let input = tokio::fs::File::open(dir.join(format!("{name}.jsonl"))).await?;
        let mut lines = BufReader::new(input).lines();
        let mut batch = Vec::with_capacity(BATCH);
        while let Some(line) = lines.next_line().await? {
            let json: serde_json::Value =
                serde_json::from_str(&line).map_err(|e| BackupError::Damaged {
                    id: id.to_owned(),
                    reason: format!("a line of {name}.jsonl is not JSON ({e})"),
                })?;
            let Ok(Bson::Document(d)) = Bson::try_from(json) else {
                return Err(BackupError::Damaged {
                    id: id.to_owned(),
                    reason: format!("a line of {name}.jsonl is not a document"),
                });
            };
            batch.push(d);
            if batch.len() == BATCH {
                coll.insert_many(std::mem::take(&mut batch))
                    .await
                    .map_err(db_error)?;
            }
        }
        if !batch.is_empty() {
            coll.insert_many(batch).await.map_err(db_error)?;
        }
        tracing::info!(backup_id = id, collection = %name, documents = file.documents, "collection restored");
    }
    Ok(report)
}

/// Backups to delete under a retention of the newest `daily` days and the
/// newest `weekly` ISO weeks (one backup each: the newest of its day or
/// week), given `(id, completed at)` of the completed backups.
pub fn beyond_retention(
    mut completed: Vec<(String, chrono::DateTime<chrono::Utc>)>,
    daily: usize,
    weekly: usize,
) -> Vec<String> {
    use chrono::Datelike;
    completed.sort_by_key(|b| std::cmp::Reverse(b.1));
    let mut days = Vec::new();
    let mut weeks = Vec::new();
    let mut drop = Vec::new();
    for (id, at) in completed {
        let day = at.date_naive();
        let week = (at.iso_week().year(), at.iso_week().week());
        let mut keep = false;
        if !days.contains(&day) && days.len() < daily {
            days.push(day);
            keep = true;
        }
        if !weeks.contains(&week) && weeks.len() < weekly {
            weeks.push(week);
            keep = true;
        }
        if !keep {
            drop.push(id);
        }
    }
    drop
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;

    #[test]
    fn retention_keeps_the_newest_of_each_recent_day_and_week() {
        let at = |d: u32, h: u32| Utc.with_ymd_and_hms(2026, 11, d, h, 0, 0).unwrap();
        let backups = vec![
            ("a".to_owned(), at(30, 3)),
            ("b".to_owned(), at(30, 1)), // same day as a, older
            ("c".to_owned(), at(29, 3)),
            ("d".to_owned(), at(20, 3)),
            ("e".to_owned(), at(10, 3)),
            ("f".to_owned(), at(2, 3)),
        ];
        // 30 November 2026 is a Monday: a, c and d are in three ISO weeks.
        let mut dropped = beyond_retention(backups.clone(), 1, 3);
        dropped.sort();
        assert_eq!(dropped, vec!["b", "e", "f"]);
        let mut dropped = beyond_retention(backups, 2, 1);
        dropped.sort();
        assert_eq!(dropped, vec!["b", "d", "e", "f"]);
    }
}
