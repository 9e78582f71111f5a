//! Group commit for inserts: documents inserted into one collection at the
//! same moment by different jobs go to the database as one `insert`
//! command.
//!
//! Under load, every stage of the message path inserts into the same few
//! collections (webhook events, messages, analytics facts) from many jobs
//! at once, and each command costs the database server and the driver far
//! more than each document in it (secantusd-rs: about 100 µs of server CPU
//! for a lone insert, 60 µs a document in batches of 16). A caller queues
//! its document and waits for its own outcome; one command per collection
//! is in flight at a time, and whatever queued meanwhile leaves in the
//! next one. Nothing waits for company: an idle collection
//! sends a lone document at once, so latency at low load is unchanged.
//! (The webhook bench's backlog, about 300 messages/s on 2 cores: 4.6–4.9
//! documents per insert, 7.1 commands per message instead of 10.0.)
//!
//! Each document keeps its own outcome (`ordered: false`): a duplicate
//! refuses that document alone, as a lone insert would.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use bson::RawDocumentBuf;
use mongodb::error::ErrorKind;
use mongodb::{Collection, Database};
use serde::Serialize;
use tokio::sync::oneshot;

use crate::db::{DbError, DbResult};

/// Documents per command at most (far below the server's own limits).
const MAX_BATCH: usize = 256;

/// The groups of one database, one per collection inserted into.
pub struct InsertGroups {
    db: Database,
    groups: Mutex<HashMap<String, Arc<Group>>>,
}

struct Group {
    coll: Collection<RawDocumentBuf>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    queue: Vec<Pending>,
    /// A command of this collection is in flight. One at a time: whatever
    /// queues while it is answered leaves in the next (webhook bench
    /// backlog: 4.6–4.9 documents per insert, 7.1 commands per message;
    /// with 4 in flight, 1.8 and 8.8, and no faster). A slow command delays
    /// the collection's next inserts by its own time, which they would
    /// mostly have spent queued at the server anyway.
    sending: bool,
}

struct Pending {
    doc: RawDocumentBuf,
    done: oneshot::Sender<DbResult<()>>,
}

impl InsertGroups {
    pub fn new(db: Database) -> Self {
        InsertGroups {
            db,
            groups: Mutex::default(),
        }
    }

    /// Inserts `value` into `collection`, in a command with whatever other
    /// documents are queued for it; `Err(Duplicate)` when a unique index
    /// refuses it.
    pub async fn insert<T: Serialize>(&self, collection: &str, value: &T) -> DbResult<()> {
        let doc = bson::to_raw_document_buf(value).map_err(|e| DbError::Codec(e.to_string()))?;
        let (done, outcome) = oneshot::channel();
        self.queue(collection, vec![Pending { doc, done }]);
        outcome.await.unwrap_or(Err(DbError::Abandoned))
    }

    /// Inserts each of `values` into `collection`, all queued at once so
    /// that they leave in the same command (unless it is full), each with
    /// its own outcome, in order. Queued one by one, a sender started by
    /// the first could leave before the rest are queued.
    pub async fn insert_all<T: Serialize>(
        &self,
        collection: &str,
        values: &[T],
    ) -> Vec<DbResult<()>> {
        let mut queued = Vec::with_capacity(values.len());
        let waits: Vec<_> = values
            .iter()
            .map(|value| {
                let doc =
                    bson::to_raw_document_buf(value).map_err(|e| DbError::Codec(e.to_string()))?;
                let (done, outcome) = oneshot::channel();
                queued.push(Pending { doc, done });
                Ok(outcome)
            })
            .collect();
        if !queued.is_empty() {
            self.queue(collection, queued);
        }
        futures::future::join_all(waits.into_iter().map(|wait| async move {
            match wait {
                Ok(outcome) => outcome.await.unwrap_or(Err(DbError::Abandoned)),
                Err(e) => Err(e),
            }
        }))
        .await
    }

    /// Queues `pending` and starts the collection's sender unless one is
    /// sending.
    fn queue(&self, collection: &str, pending: Vec<Pending>) {
        let group = self.group(collection);
        let start = {
            let mut state = group.state.lock().unwrap_or_else(PoisonError::into_inner);
            state.queue.extend(pending);
            !std::mem::replace(&mut state.sending, true)
        };
        if start {
            // A task of its own, so that a caller that stops waiting (a
            // job's timeout) cannot leave the others' documents unsent.
            tokio::spawn(Sender::new(group).run());
        }
    }

    fn group(&self, collection: &str) -> Arc<Group> {
        let mut groups = self.groups.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(group) = groups.get(collection) {
            return group.clone();
        }
        let group = Arc::new(Group {
            coll: self.db.collection(collection),
            state: Mutex::default(),
        });
        groups.insert(collection.to_owned(), group.clone());
        group
    }
}

impl std::fmt::Debug for InsertGroups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InsertGroups").finish_non_exhaustive()
    }
}

/// Sends a collection's queued documents until none is left. Dropped
/// unfinished (its runtime shutting down, or a panic), it lets the next
/// insert start a sender, and fails what is still queued
/// ([`DbError::Abandoned`]) rather than leave it waiting for ever.
struct Sender {
    group: Arc<Group>,
    finished: bool,
}

impl Sender {
    fn new(group: Arc<Group>) -> Self {
        Sender {
            group,
            finished: false,
        }
    }

    async fn run(mut self) {
        while let Some(batch) = self.take() {
            let batch_len = batch.len();
            let docs = batch.iter().map(|p| &p.doc);
            let result = self.group.coll.insert_many(docs).ordered(false).await;
            for (pending, outcome) in batch.into_iter().zip(outcomes(batch_len, result)) {
                // The caller may have stopped waiting.
                let _ = pending.done.send(outcome);
            }
        }
    }

    /// The next batch; `None`, the collection's sending over, when nothing
    /// is queued.
    fn take(&mut self) -> Option<Vec<Pending>> {
        let mut state = self
            .group
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if state.queue.is_empty() {
            state.sending = false;
            self.finished = true;
            return None;
        }
        let n = state.queue.len().min(MAX_BATCH);
        Some(state.queue.drain(..n).collect())
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let left = {
            let mut state = self
                .group
                .state
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            state.sending = false;
            std::mem::take(&mut state.queue)
        };
        // Their waiters see the channel closed.
        drop(left);
    }
}

/// Each document's outcome, in order, from the command's result.
fn outcomes(
    n: usize,
    result: Result<mongodb::results::InsertManyResult, mongodb::error::Error>,
) -> Vec<DbResult<()>> {
    let e = match result {
        Ok(_) => return (0..n).map(|_| Ok(())).collect(),
        Err(e) => e,
    };
    let ErrorKind::InsertMany(failure) = e.kind.as_ref() else {
        // Nothing known to be written: every document has the error.
        return (0..n).map(|_| Err(DbError::Mongo(e.clone()))).collect();
    };
    let mut out: Vec<DbResult<()>> = (0..n).map(|_| Ok(())).collect();
    if failure.write_concern_error.is_some() {
        for o in &mut out {
            *o = Err(DbError::Mongo(e.clone()));
        }
    }
    for w in failure.write_errors.iter().flatten() {
        if let Some(o) = out.get_mut(w.index) {
            *o = Err(if w.code == 11000 {
                DbError::Duplicate
            } else {
                DbError::Refused {
                    code: w.code,
                    message: w.message.clone(),
                }
            });
        }
    }
    out
}
