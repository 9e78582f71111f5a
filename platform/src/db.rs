//! MongoDB access. Tenant-owned collections are reachable only through
//! [`Scoped`], which adds `tenantId` to every filter and checks it on every
//! insert, so an unscoped query cannot be written by accident.

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use bson::{Bson, Document, doc};
use futures::TryStreamExt;
use mongodb::options::{ClientOptions, FindOptions, IndexOptions, ReturnDocument};
use mongodb::{Client, Collection, Database, IndexModel};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::group_commit::InsertGroups;
use crate::ids::TenantId;
use crate::kv::Kv;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("duplicate value for a unique field")]
    Duplicate,
    #[error("tenant mismatch: refusing to write a document of another tenant")]
    TenantMismatch,
    #[error(transparent)]
    Mongo(#[from] mongodb::error::Error),
    #[error("could not encode or decode a document: {0}")]
    Codec(String),
    #[error("the database refused the write ({code}): {message}")]
    Refused { code: i32, message: String },
    #[error("the write was abandoned before the database answered")]
    Abandoned,
}

impl DbError {
    pub(crate) fn from_write(e: mongodb::error::Error) -> Self {
        if is_duplicate_key(&e) {
            DbError::Duplicate
        } else {
            DbError::Mongo(e)
        }
    }
}

/// Whether `e` is a unique index refusing a second document.
pub fn is_duplicate_key(e: &mongodb::error::Error) -> bool {
    use mongodb::error::{ErrorKind, WriteFailure};
    match e.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(w)) => w.code == 11000,
        ErrorKind::Command(c) => c.code == 11000,
        ErrorKind::InsertMany(m) => m
            .write_errors
            .as_ref()
            .is_some_and(|errs| errs.iter().any(|w| w.code == 11000)),
        _ => e.to_string().contains("E11000"),
    }
}

pub type DbResult<T> = Result<T, DbError>;

/// A document type stored in a tenant-owned collection.
pub trait TenantOwned: Serialize + DeserializeOwned + Send + Sync + Unpin + 'static {
    const COLLECTION: &'static str;
    /// Part of the configuration a reply reads from a cache
    /// ([`crate::live_config`]): every write through [`Scoped`] announces
    /// the tenant, so no write site can leave a stale copy behind.
    const LIVE_CONFIG: bool = false;
    fn tenant_id(&self) -> &TenantId;
}

#[derive(Clone, Debug)]
pub struct Db {
    client: Client,
    db: Database,
    /// Where writes to [`TenantOwned::LIVE_CONFIG`] collections are
    /// announced; `None` in a process with no Redis.
    announcer: Option<Kv>,
    inserts: Arc<InsertGroups>,
}

/// One page of a listing, with the total count of matching documents.
#[derive(Debug, Clone, Copy)]
pub struct PageRequest {
    pub page: u64,
    pub limit: u64,
}

impl PageRequest {
    pub fn skip(&self) -> u64 {
        (self.page.saturating_sub(1)).saturating_mul(self.limit)
    }
}

impl Db {
    pub async fn connect(uri: &str, name: &str) -> DbResult<Self> {
        let mut options = ClientOptions::parse(uri).await?;
        options
            .app_name
            .get_or_insert_with(|| "aigentable".to_owned());
        options
            .server_selection_timeout
            .get_or_insert(Duration::from_secs(10));
        options
            .connect_timeout
            .get_or_insert(Duration::from_secs(5));
        if command_log::enabled() {
            options.command_event_handler = Some(command_log::handler());
        }
        let client = Client::with_options(options)?;
        let db = client.database(name);
        Ok(Self {
            client,
            inserts: Arc::new(InsertGroups::new(db.clone())),
            db,
            announcer: None,
        })
    }

    /// Announces writes to cached configuration on `kv` (see
    /// [`crate::live_config`]).
    #[must_use]
    pub fn announcing_to(mut self, kv: Kv) -> Self {
        self.announcer = Some(kv);
        self
    }

    /// Tells every process's configuration cache that this tenant's
    /// configuration changed (a write outside [`Scoped`]).
    pub async fn announce_config(&self, tenant: &TenantId) {
        if let Some(kv) = &self.announcer {
            crate::live_config::announce_tenant(kv, tenant).await;
        }
    }

    pub fn database(&self) -> &Database {
        &self.db
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub async fn ping(&self) -> DbResult<()> {
        self.db.run_command(doc! { "ping": 1 }).await?;
        Ok(())
    }

    pub fn scoped<T: TenantOwned>(&self, tenant: &TenantId) -> Scoped<T> {
        Scoped {
            coll: self.db.collection(T::COLLECTION),
            inserts: self.inserts.clone(),
            tenant: tenant.clone(),
            announcer: if T::LIVE_CONFIG {
                self.announcer.clone()
            } else {
                None
            },
            _marker: PhantomData,
        }
    }

    /// Inserts `value` into `collection` in one command with the documents
    /// other tasks insert there at the same moment (see
    /// [`crate::group_commit`]); `Err(Duplicate)` when a unique index
    /// refuses it.
    pub async fn insert_grouped<T: Serialize>(&self, collection: &str, value: &T) -> DbResult<()> {
        self.inserts.insert(collection, value).await
    }

    /// [`Self::insert_grouped`] for each of `values`, queued together so
    /// that they leave in one command; each outcome in order.
    pub async fn insert_all_grouped<T: Serialize>(
        &self,
        collection: &str,
        values: &[T],
    ) -> Vec<DbResult<()>> {
        self.inserts.insert_all(collection, values).await
    }

    /// Cross-tenant access, for the few places that must have it (login by
    /// email, platform administration, sweeps). Grep for `unscoped` to audit.
    pub fn unscoped<T: Send + Sync>(&self, name: &str) -> Collection<T> {
        self.db.collection(name)
    }

    /// Creates an index unless an equivalent one exists. Safe to run at
    /// every start and from several processes at once.
    pub async fn ensure_index(
        &self,
        collection: &str,
        keys: Document,
        options: Option<IndexOptions>,
    ) -> DbResult<()> {
        let model = IndexModel::builder().keys(keys).options(options).build();
        self.db
            .collection::<Document>(collection)
            .create_index(model)
            .await?;
        Ok(())
    }
}

pub struct Scoped<T: Send + Sync> {
    coll: Collection<T>,
    inserts: Arc<InsertGroups>,
    tenant: TenantId,
    /// Set for [`TenantOwned::LIVE_CONFIG`] collections.
    announcer: Option<Kv>,
    _marker: PhantomData<T>,
}

impl<T: TenantOwned> Scoped<T> {
    pub fn tenant(&self) -> &TenantId {
        &self.tenant
    }

    /// After a write: caches of this tenant's configuration drop it.
    async fn announce(&self) {
        if let Some(kv) = &self.announcer {
            crate::live_config::announce_tenant(kv, &self.tenant).await;
        }
    }

    /// Adds the tenant to the filter; to the first part of a [`narrowed`]
    /// one, which is the part an index serves.
    fn scope(&self, mut filter: Document) -> Document {
        if filter.len() == 1
            && let Ok(parts) = filter.get_array_mut("$and")
            && let Some(Bson::Document(first)) = parts.first_mut()
        {
            first.insert("tenantId", self.tenant.as_str());
            return filter;
        }
        filter.insert("tenantId", self.tenant.as_str());
        filter
    }

    pub async fn find_by_id(&self, id: &str) -> DbResult<Option<T>> {
        Ok(self.coll.find_one(self.scope(doc! { "_id": id })).await?)
    }

    pub async fn find_one(&self, filter: Document) -> DbResult<Option<T>> {
        Ok(self.coll.find_one(self.scope(filter)).await?)
    }

    pub async fn count(&self, filter: Document) -> DbResult<u64> {
        Ok(self.coll.count_documents(self.scope(filter)).await?)
    }

    /// The first `limit` documents in `sort` order, without counting the
    /// rest (one round trip, where [`Self::find_page`] takes two).
    pub async fn find_sorted(
        &self,
        filter: Document,
        sort: Document,
        limit: u64,
    ) -> DbResult<Vec<T>> {
        let options = FindOptions::builder()
            .sort(sort)
            .limit(i64::try_from(limit).unwrap_or(i64::MAX))
            .build();
        Ok(self
            .coll
            .find(self.scope(filter))
            .with_options(options)
            .await?
            .try_collect()
            .await?)
    }

    pub async fn find_page(
        &self,
        filter: Document,
        sort: Document,
        page: PageRequest,
    ) -> DbResult<(Vec<T>, u64)> {
        let filter = self.scope(filter);
        let total = self.coll.count_documents(filter.clone()).await?;
        let options = FindOptions::builder()
            .sort(sort)
            .skip(page.skip())
            .limit(i64::try_from(page.limit).unwrap_or(i64::MAX))
            .build();
        let items = self
            .coll
            .find(filter)
            .with_options(options)
            .await?
            .try_collect()
            .await?;
        Ok((items, total))
    }

    pub async fn insert(&self, value: &T) -> DbResult<()> {
        if value.tenant_id() != &self.tenant {
            return Err(DbError::TenantMismatch);
        }
        self.inserts.insert(self.coll.name(), value).await?;
        self.announce().await;
        Ok(())
    }

    /// Applies `update` to the document with this id and returns it as stored
    /// afterwards, or `None` when no such document exists in this tenant.
    pub async fn update_by_id(&self, id: &str, update: Document) -> DbResult<Option<T>> {
        self.update_one(doc! { "_id": id }, update).await
    }

    pub async fn update_one(&self, filter: Document, update: Document) -> DbResult<Option<T>> {
        if update.contains_key("$set")
            && update
                .get_document("$set")
                .is_ok_and(|set| set.contains_key("tenantId"))
        {
            return Err(DbError::TenantMismatch);
        }
        let updated = self
            .coll
            .find_one_and_update(self.scope(filter), update)
            .return_document(ReturnDocument::After)
            .await
            .map_err(DbError::from_write)?;
        if updated.is_some() {
            self.announce().await;
        }
        Ok(updated)
    }

    pub async fn delete_by_id(&self, id: &str) -> DbResult<bool> {
        let result = self.coll.delete_one(self.scope(doc! { "_id": id })).await?;
        if result.deleted_count > 0 {
            self.announce().await;
        }
        Ok(result.deleted_count == 1)
    }

    pub async fn delete_many(&self, filter: Document) -> DbResult<u64> {
        let result = self.coll.delete_many(self.scope(filter)).await?;
        if result.deleted_count > 0 {
            self.announce().await;
        }
        Ok(result.deleted_count)
    }
}

/// A filter read through an index on `served`'s fields, with `rest`
/// checked on what that reads: `{$and: [served, {$and: [rest]}]}`.
///
/// The same documents as one flat filter, but secantusd-rs (the
/// MongoDB-wire server the tests and small deployments run) serves a flat
/// filter from an index only when every field is an equality on the
/// index's leading fields (plus one range or `$in` after them) and never
/// routes an `$or` beside other fields: anything else reads the whole
/// tenant or collection, whatever its explain says. The nested `$and`
/// makes it read through `served` alone. `served` should be equalities on
/// an index's leading fields (the tenant is added to it by [`Scoped`]),
/// optionally with one range or `$in` on the next field.
pub fn narrowed(served: Document, rest: Document) -> Document {
    if rest.is_empty() {
        return served;
    }
    doc! { "$and": [served, { "$and": [rest] }] }
}

/// Serialises a value into a BSON document, for `$set` updates.
pub fn to_document<T: Serialize>(value: &T) -> DbResult<Document> {
    bson::to_document(value).map_err(|e| DbError::Codec(e.to_string()))
}

/// The commands a process sends to its databases, recorded for the tests
/// and benchmarks that count round trips and check every query's plan.
/// Off unless [`enable`](command_log::enable) was called before the client
/// connected: the driver then builds an event per command, which
/// production has no use for.
pub mod command_log {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, LazyLock, Mutex, PoisonError};
    use std::time::Duration;

    use bson::Document;
    use mongodb::event::EventHandler;
    use mongodb::event::command::CommandEvent;

    /// A command as sent: its name (`find`, `update`, ...), the collection
    /// it names and the whole command document, and once the server
    /// answered, how long the round trip took.
    #[derive(Debug, Clone)]
    pub struct Command {
        pub name: String,
        pub collection: String,
        pub body: Document,
        pub duration: Option<Duration>,
    }

    /// A database's commands, and where each unanswered one sits in them
    /// (by the driver's request id).
    #[derive(Default)]
    struct Entries {
        commands: Vec<Command>,
        pending: HashMap<i32, usize>,
    }

    type Log = Arc<Mutex<Entries>>;

    static ENABLED: AtomicBool = AtomicBool::new(false);
    static LOGS: LazyLock<Mutex<HashMap<String, Log>>> = LazyLock::new(Default::default);

    fn logs() -> std::sync::MutexGuard<'static, HashMap<String, Log>> {
        LOGS.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Clients connected from now on report their commands.
    pub fn enable() {
        ENABLED.store(true, Ordering::SeqCst);
    }

    pub(super) fn enabled() -> bool {
        ENABLED.load(Ordering::SeqCst)
    }

    pub(super) fn handler() -> EventHandler<CommandEvent> {
        EventHandler::callback(|event| match event {
            CommandEvent::Started(started) => {
                let Some(log) = logs().get(&started.db).cloned() else {
                    return;
                };
                let collection = started
                    .command
                    .get_str(&started.command_name)
                    .unwrap_or_default()
                    .to_owned();
                let mut entries = log.lock().unwrap_or_else(PoisonError::into_inner);
                let at = entries.commands.len();
                entries.pending.insert(started.request_id, at);
                entries.commands.push(Command {
                    name: started.command_name,
                    collection,
                    body: started.command,
                    duration: None,
                });
            }
            CommandEvent::Succeeded(done) => answered(done.request_id, done.duration),
            CommandEvent::Failed(failed) => answered(failed.request_id, failed.duration),
            _ => {}
        })
    }

    /// The answer's events name no database: the one log waiting for the
    /// request id takes it (request ids are unique within a process).
    fn answered(request_id: i32, duration: Duration) {
        for log in logs().values() {
            let mut entries = log.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(at) = entries.pending.remove(&request_id) {
                if let Some(command) = entries.commands.get_mut(at) {
                    command.duration = Some(duration);
                }
                return;
            }
        }
    }

    /// Records the commands sent to `database` until dropped.
    pub struct Recording {
        database: String,
        log: Log,
    }

    impl Recording {
        pub fn start(database: &str) -> Self {
            let log = Log::default();
            logs().insert(database.to_owned(), log.clone());
            Self {
                database: database.to_owned(),
                log,
            }
        }

        /// The commands recorded so far, in the order they were sent; the
        /// recording goes on empty (an answer still awaited is not timed).
        pub fn take(&self) -> Vec<Command> {
            let mut entries = self.log.lock().unwrap_or_else(PoisonError::into_inner);
            entries.pending.clear();
            std::mem::take(&mut entries.commands)
        }
    }

    impl Drop for Recording {
        fn drop(&mut self) {
            logs().remove(&self.database);
        }
    }
}
