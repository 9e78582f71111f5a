//! Test harness: `spawn_app()` starts the real api on port 0 and a worker in
//! the same process, against the real Redis and MongoDB-wire server, with a
//! fresh database and Redis namespace per test.
//!
//! `spawn_app_without_workers()` starts the api alone: jobs wait in Redis
//! until the test runs them with [`TestApp::drain`] (crates.io's
//! `run_pending_background_jobs`). Either way the teardown fails a test
//! that leaves FAILED or DEAD jobs behind (unless it said it expects them,
//! [`TestApp::allow_failed_jobs`]) or, without workers, jobs nobody ran.
//! [`TestApp::cleanup`] is the teardown; a test that panics before it is
//! still cleaned up on drop.

pub mod canary;
pub mod fake_openai;
pub mod fake_providers;
pub mod fake_smtp;
pub mod inbound;
pub mod partition;
pub mod query_route;
pub mod release_bins;
pub mod services;
pub mod socket;
pub mod stats;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::sync::oneshot;

use aigentable_api::{AppState, bind, serve};
use aigentable_jobs::Queue;
use aigentable_jobs::queue::{self as job_queue, QueueKeys};
use aigentable_platform::{Config, Platform, bootstrap};
use aigentable_workers::WorkerState;

/// A fake server's view of a request's query string: decoded pairs, as
/// salvo parsed them.
pub fn query_pairs(req: &salvo::Request) -> Vec<(String, String)> {
    req.queries()
        .iter_all()
        .flat_map(|(k, values)| values.iter().map(move |v| (k.clone(), v.clone())))
        .collect()
}

pub fn mongodb_uri() -> String {
    std::env::var("MONGODB_URI").unwrap_or_else(|_| "mongodb://127.0.0.1:27017".to_owned())
}

pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

pub struct TestApp {
    pub addr: SocketAddr,
    pub base: String,
    pub http: reqwest::Client,
    pub platform: Platform,
    /// The variables its configuration came from: another process (a
    /// worker in a fault test) reads the same database and namespace.
    pub env: HashMap<String, String>,
    _stop_api: oneshot::Sender<()>,
    stop_worker: Option<oneshot::Sender<()>>,
    worker: Option<tokio::task::JoinHandle<()>>,
    /// Whether this app owns the database and data directory (replicas
    /// share the first app's).
    owner: bool,
    /// Workers run in this process; otherwise jobs wait for [`TestApp::drain`].
    with_workers: bool,
    /// The state [`TestApp::drain`] runs jobs with, opened on first use.
    drain_state: tokio::sync::OnceCell<WorkerState>,
    failed_jobs_expected: AtomicBool,
    cleaned: bool,
}

/// The default plans' ids and names with limits no test reaches.
fn roomy_plans() -> String {
    let plans: Vec<Value> = ["free", "pro", "enterprise"]
        .iter()
        .map(|id| {
            json!({
                "id": id, "name": id, "priceCents": 0, "currency": "USD",
                "limits": {
                    "users": 100_000, "agents": 100_000, "channels": 100_000,
                    "documents": 1_000_000, "storageBytes": 1_000_000_000_000_u64,
                    "conversationsPerMonth": 100_000_000, "messagesPerMonth": 100_000_000,
                    "llmTokensPerMonth": 100_000_000_000_u64,
                },
            })
        })
        .collect();
    Value::Array(plans).to_string()
}

/// Test-only configuration; `overrides` replace any variable.
pub fn test_config(overrides: &[(&str, &str)]) -> Config {
    config_from(&test_env(overrides))
}

/// A configuration from environment-style variables.
pub fn config_from(vars: &HashMap<String, String>) -> Config {
    match Config::from_lookup(&|name| vars.get(name).cloned()) {
        Ok(c) => c,
        Err(e) => panic!("test configuration is invalid: {e}"),
    }
}

/// The variables of a fresh test configuration (own database, Redis
/// namespace and data directory), with `overrides`.
pub fn test_env(overrides: &[(&str, &str)]) -> HashMap<String, String> {
    let run = uuid::Uuid::new_v4().simple().to_string();
    let mut vars: HashMap<String, String> = [
        ("MONGODB_URI", mongodb_uri()),
        ("MONGODB_DB", format!("test_{run}")),
        ("REDIS_URL", redis_url()),
        ("REDIS_NAMESPACE", format!("test:{run}")),
        (
            "JWT_SECRET",
            "test-secret-test-secret-test-secret-0123".to_owned(),
        ),
        ("JWT_ISSUER", "aigentable-test".to_owned()),
        ("JWT_AUDIENCE", "aigentable-test-web".to_owned()),
        // 32 bytes of 0x2a.
        (
            "DATA_ENCRYPTION_KEY",
            "KioqKioqKioqKioqKioqKioqKioqKioqKioqKioqKio=".to_owned(),
        ),
        ("PORT", "0".to_owned()),
        // Each app owns its embedded vector store, so each needs its own directory.
        (
            "DATA_DIR",
            std::env::temp_dir()
                .join(format!("aigentable-test-{run}"))
                .to_string_lossy()
                .into_owned(),
        ),
        ("HOST", "127.0.0.1".to_owned()),
        // The fake providers listen on 127.0.0.1; tests/tests/egress.rs runs
        // with the production default (false).
        ("OUTBOUND_ALLOW_PRIVATE_NETWORKS", "true".to_owned()),
        // Tests poll quickly; tests/tests/rate_limits.rs sets its own limits.
        ("RATE_LIMIT_USER_PER_MINUTE", "1000000".to_owned()),
        ("RATE_LIMIT_TENANT_PER_MINUTE", "1000000".to_owned()),
        ("RATE_LIMIT_EXPENSIVE_PER_MINUTE", "1000000".to_owned()),
        // Plans with room for any test; tests/tests/plan_limits.rs sets its own.
        ("PLANS_JSON", roomy_plans()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    for (k, v) in overrides {
        vars.insert((*k).to_owned(), (*v).to_owned());
    }
    vars
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

pub async fn spawn_app_with(overrides: &[(&str, &str)]) -> TestApp {
    start(overrides, true).await
}

/// The api alone: enqueued jobs wait until [`TestApp::drain`] runs them.
pub async fn spawn_app_without_workers(overrides: &[(&str, &str)]) -> TestApp {
    start(overrides, false).await
}

async fn start(overrides: &[(&str, &str)], with_workers: bool) -> TestApp {
    let env = test_env(overrides);
    let config = config_from(&env);
    let platform = Platform::connect(config)
        .await
        .expect("services are reachable");
    bootstrap::ensure_indexes(&platform.db)
        .await
        .expect("indexes");

    let state = AppState::new(platform.clone()).await.expect("app state");
    let listener = bind("127.0.0.1", 0).await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let (stop_api, api_rx) = oneshot::channel::<()>();
    tokio::spawn(serve(state, listener, async move {
        let _ = api_rx.await;
    }));

    let (stop_worker, worker) = if with_workers {
        // Tests run every queue 4 wide; the workers' own variables in the
        // overrides set other widths (a benchmark asks for the shipped ones).
        let concurrency = aigentable_workers::registry::Concurrency::from_lookup(
            env.get("WORKER_CONCURRENCY")
                .and_then(|v| v.parse().ok())
                .or(Some(4)),
            &|name| env.get(name).cloned(),
        )
        .expect("worker concurrency");
        let (stop_worker, worker_rx) = oneshot::channel::<()>();
        let worker_state = WorkerState::new(platform.clone())
            .expect("worker state")
            .with_vectors()
            .await
            .expect("vector store");
        let worker = tokio::spawn(async move {
            let result = aigentable_workers::run(
                worker_state,
                &[],
                concurrency,
                Duration::from_secs(2),
                async move {
                    let _ = worker_rx.await;
                    Ok(())
                },
            )
            .await;
            if let Err(e) = result {
                eprintln!("worker stopped with an error: {e}");
            }
        });
        (Some(stop_worker), Some(worker))
    } else {
        (None, None)
    };

    TestApp {
        addr,
        base: format!("http://{addr}"),
        http: reqwest::Client::new(),
        platform,
        env,
        _stop_api: stop_api,
        stop_worker,
        worker,
        owner: true,
        with_workers,
        drain_state: tokio::sync::OnceCell::new(),
        failed_jobs_expected: AtomicBool::new(false),
        cleaned: false,
    }
}

/// A response reduced to what tests assert on.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Reply {
    pub fn message(&self) -> &str {
        self.body["message"].as_str().unwrap_or_default()
    }
}

/// A registered user with a token.
#[derive(Debug, Clone)]
pub struct Session {
    pub token: String,
    pub tenant_id: String,
    pub user_id: String,
    pub email: String,
    pub password: String,
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn request(
        &self,
        method: Method,
        path: &str,
        session: Option<&Session>,
        body: Option<Value>,
    ) -> Reply {
        let mut req = self.http.request(method, self.url(path));
        if let Some(s) = session {
            req = req
                .bearer_auth(&s.token)
                .header("X-Tenant-ID", &s.tenant_id);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.expect("request sent");
        Self::reply(res).await
    }

    pub async fn reply(res: reqwest::Response) -> Reply {
        let status = res.status();
        let headers = res.headers().clone();
        let text = res.text().await.unwrap_or_default();
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Reply {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&self, path: &str, s: &Session) -> Reply {
        self.request(Method::GET, path, Some(s), None).await
    }
    pub async fn post(&self, path: &str, s: &Session, body: Value) -> Reply {
        self.request(Method::POST, path, Some(s), Some(body)).await
    }
    pub async fn put(&self, path: &str, s: &Session, body: Value) -> Reply {
        self.request(Method::PUT, path, Some(s), Some(body)).await
    }
    pub async fn delete(&self, path: &str, s: &Session) -> Reply {
        self.request(Method::DELETE, path, Some(s), None).await
    }

    /// Registers a new tenant admin, as the seed frontend does.
    pub async fn register(&self, tenant: &str) -> Session {
        let email = format!("admin-{}@example.com", uuid::Uuid::new_v4().simple());
        let password = "securePassword123".to_owned();
        let r = self
            .request(
                Method::POST,
                "/api/v1/auth/register",
                None,
                Some(json!({
                    "email": email, "password": password,
                    "firstName": "Ada", "lastName": "Lovelace", "tenantName": tenant,
                })),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "register: {:?}", r.body);
        Session {
            token: r.body["token"].as_str().unwrap_or_default().to_owned(),
            tenant_id: r.body["user"]["tenantId"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            user_id: r.body["user"]["id"].as_str().unwrap_or_default().to_owned(),
            email,
            password,
        }
    }

    pub async fn login(&self, email: &str, password: &str) -> Reply {
        self.request(
            Method::POST,
            "/api/v1/auth/login",
            None,
            Some(json!({ "email": email, "password": password })),
        )
        .await
    }

    /// Creates a user in `admin`'s tenant and logs them in.
    pub async fn add_user(&self, admin: &Session, role: &str) -> Session {
        let email = format!("user-{}@example.com", uuid::Uuid::new_v4().simple());
        let password = "anotherPass456".to_owned();
        let r = self
            .post(
                "/api/v1/users",
                admin,
                json!({ "email": email, "password": password, "firstName": "Grace", "lastName": "Hopper", "role": role }),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "create user: {:?}", r.body);
        let login = self.login(&email, &password).await;
        assert_eq!(login.status, StatusCode::OK, "login: {:?}", login.body);
        Session {
            token: login.body["token"].as_str().unwrap_or_default().to_owned(),
            tenant_id: admin.tenant_id.clone(),
            user_id: r.body["id"].as_str().unwrap_or_default().to_owned(),
            email,
            password,
        }
    }

    /// A second api on the same database and Redis namespace, without
    /// workers: another replica behind the load balancer, with its own
    /// sockets and its own Redis subscription. It stops when dropped; never
    /// `cleanup` it (the first app owns the data).
    pub async fn spawn_replica(&self) -> TestApp {
        let state = AppState::new(self.platform.clone())
            .await
            .expect("replica state");
        let listener = bind("127.0.0.1", 0).await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (stop_api, api_rx) = oneshot::channel::<()>();
        tokio::spawn(serve(state, listener, async move {
            let _ = api_rx.await;
        }));
        self.sibling(addr, stop_api)
    }

    /// A non-owning app on this one's data, for the api at `addr`.
    fn sibling(&self, addr: SocketAddr, stop_api: oneshot::Sender<()>) -> TestApp {
        TestApp {
            addr,
            base: format!("http://{addr}"),
            http: reqwest::Client::new(),
            platform: self.platform.clone(),
            env: self.env.clone(),
            _stop_api: stop_api,
            stop_worker: None,
            worker: None,
            owner: false,
            with_workers: false,
            drain_state: tokio::sync::OnceCell::new(),
            failed_jobs_expected: AtomicBool::new(false),
            cleaned: false,
        }
    }

    /// A client of another api process at `base` (a real `api` binary in a
    /// scale-out test) on this app's database: every request helper goes
    /// there. Never `cleanup` it (this app owns the data).
    pub fn client_for(&self, base: &str) -> TestApp {
        let (stop_api, _) = oneshot::channel::<()>();
        let addr = base
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .parse()
            .unwrap_or(self.addr);
        self.sibling(addr, stop_api)
    }

    /// A platform administrator (`SUPER_ADMIN`) acting on `acting_on`'s
    /// tenant (`X-Tenant-ID`).
    pub async fn super_admin(&self, acting_on: &Session) -> Session {
        let email = format!("root-{}@aigentable.io", uuid::Uuid::new_v4().simple());
        bootstrap::create_super_admin(&self.platform, &email, "rootPassword1")
            .await
            .expect("super admin created");
        let login = self.login(&email, "rootPassword1").await;
        assert_eq!(login.status, StatusCode::OK, "{:?}", login.body);
        Session {
            token: login.body["token"].as_str().unwrap_or_default().to_owned(),
            tenant_id: acting_on.tenant_id.clone(),
            user_id: login.body["user"]["id"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            email,
            password: "rootPassword1".to_owned(),
        }
    }

    /// This test means to leave FAILED or DEAD jobs (it tests failures).
    pub fn allow_failed_jobs(&self) {
        self.failed_jobs_expected.store(true, Ordering::SeqCst);
    }

    /// The Redis keys of every job type of `queue` in this app's namespace.
    fn queue_keys(&self, queue: Queue) -> Vec<(&'static str, QueueKeys)> {
        let ns = &self.platform.config.redis_namespace;
        aigentable_jobs::types::all()
            .into_iter()
            .filter(|k| k.queue == queue)
            .map(|k| {
                let prefix = format!(
                    "{}:{}",
                    aigentable_jobs::queue_key(ns, queue.as_str()),
                    k.name
                );
                (k.name, QueueKeys::new(&prefix))
            })
            .collect()
    }

    /// Waits (at most `within`) until workers of another process have
    /// settled every job in Redis; the ones still pending after that.
    /// A response can reach the test before its job settles (a search
    /// answers from inside its handler), so a test that stops such a
    /// process first waits here.
    pub async fn settled_by_workers(&self, within: Duration) -> Vec<String> {
        let idle = self
            .eventually(within, || async {
                self.pending_jobs().await.is_empty().then_some(())
            })
            .await;
        match idle {
            Some(()) => Vec::new(),
            None => self.pending_jobs().await,
        }
    }

    /// Waits until the unrecorded job `id` of type `J` has run (Redis no
    /// longer holds it queued, waiting for a retry or running). Panics
    /// after a minute.
    pub async fn unrecorded_job_ran<J: aigentable_jobs::Job>(&self, id: &str) {
        let keys = self.keys_of::<J>();
        let ran = self
            .eventually(Duration::from_secs(60), || async {
                let presence = job_queue::presence(&mut self.platform.kv.conn(), &keys, id).await;
                (!matches!(presence, Ok(job_queue::Presence::Live))).then_some(())
            })
            .await;
        assert!(ran.is_some(), "{} {id} never ran", J::NAME);
    }

    /// The attempts Redis counted so far for job `id` of type `J` (0 when
    /// it is unknown or finished).
    pub async fn job_attempts<J: aigentable_jobs::Job>(&self, id: &str) -> u32 {
        job_queue::attempts(&mut self.platform.kv.conn(), &self.keys_of::<J>(), id)
            .await
            .expect("attempts readable")
    }

    fn keys_of<J: aigentable_jobs::Job>(&self) -> QueueKeys {
        let prefix = format!(
            "{}:{}",
            aigentable_jobs::queue_key(&self.platform.config.redis_namespace, J::QUEUE.as_str()),
            J::NAME
        );
        QueueKeys::new(&prefix)
    }

    /// Jobs still waiting or running in Redis, as `type: n`.
    pub async fn pending_jobs(&self) -> Vec<String> {
        let mut pending = Vec::new();
        for queue in Queue::ALL {
            for (name, keys) in self.queue_keys(queue) {
                let n = self.waiting_or_running(&keys).await;
                if n > 0 {
                    pending.push(format!("{name}: {n}"));
                }
            }
        }
        pending
    }

    /// Jobs of type `J` still waiting or running in Redis.
    pub async fn pending_of<J: aigentable_jobs::Job>(&self) -> u64 {
        self.waiting_or_running(&self.keys_of::<J>()).await
    }

    /// Jobs of one type that are ready, delayed or in flight.
    async fn waiting_or_running(&self, keys: &QueueKeys) -> u64 {
        // A connection that was idle across a Redis restart fails its first
        // command and reconnects: one more try.
        let mut last = None;
        for _ in 0..3 {
            match job_queue::depth(&mut self.platform.kv.conn(), keys).await {
                Ok(d) => return d.ready + d.delayed + d.inflight,
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("queue depth readable: {last:?}")
    }

    /// Runs the jobs waiting on `queue` with the real workers until none is
    /// ready, delayed or running (follow-ups on the same queue included),
    /// then stops them. Panics after a minute.
    pub async fn drain(&self, queue: Queue) {
        assert!(
            !self.with_workers,
            "drain is for apps without workers (spawn_app_without_workers)"
        );
        let state = self
            .drain_state
            .get_or_init(|| async {
                WorkerState::new(self.platform.clone())
                    .expect("worker state")
                    .with_vectors()
                    .await
                    .expect("vector store")
            })
            .await
            .clone();
        let setup = aigentable_workers::WorkerSetup::connect(state, 4)
            .await
            .expect("worker setup");
        let (stop, stop_rx) = oneshot::channel::<()>();
        let workers = tokio::spawn(async move {
            aigentable_workers::run_with(setup, &[queue], Duration::from_secs(5), async move {
                let _ = stop_rx.await;
                Ok(())
            })
            .await
        });
        let keys = self.queue_keys(queue);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let mut quiet = 0;
        // Twice empty in a row: a job that just finished may enqueue another.
        while quiet < 2 {
            let mut busy = 0;
            for (_, k) in &keys {
                busy += self.waiting_or_running(k).await;
            }
            quiet = if busy == 0 { quiet + 1 } else { 0 };
            assert!(
                tokio::time::Instant::now() < deadline,
                "queue {queue} did not drain within a minute"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = stop.send(());
        match workers.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("draining {queue} failed: {e}"),
            Err(e) => panic!("draining {queue} panicked: {e}"),
        }
    }

    /// FAILED or DEAD job records, as `type (id): error`.
    pub async fn failed_jobs(&self) -> Vec<String> {
        use futures::TryStreamExt;
        let coll = self
            .platform
            .db
            .database()
            .collection::<bson::Document>("jobs");
        let cursor = coll
            .find(bson::doc! { "status": { "$in": ["FAILED", "DEAD"] } })
            .await
            .expect("jobs readable");
        let docs: Vec<bson::Document> = cursor.try_collect().await.expect("jobs readable");
        docs.iter()
            .map(|d| {
                format!(
                    "{} ({}): {}",
                    d.get_str("type").unwrap_or("?"),
                    d.get_str("_id").unwrap_or("?"),
                    d.get_str("lastError").unwrap_or("")
                )
            })
            .collect()
    }

    /// Polls `check` until it returns `Some` or `timeout` passes.
    pub async fn eventually<T, F, Fut>(&self, timeout: Duration, mut check: F) -> Option<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(v) = check().await {
                return Some(v);
            }
            if tokio::time::Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits (a minute at most) for a job to end (`SUCCEEDED`, `FAILED`,
    /// `DEAD` or `CANCELLED`) and returns it as `GET /jobs/:id` shows it.
    pub async fn job_finished(&self, s: &Session, job_id: &str) -> Value {
        self.eventually(Duration::from_secs(60), || async {
            let r = self.get(&format!("/api/v1/jobs/{job_id}"), s).await;
            matches!(
                r.body["status"].as_str(),
                Some("SUCCEEDED" | "FAILED" | "DEAD" | "CANCELLED")
            )
            .then_some(r.body)
        })
        .await
        .unwrap_or_else(|| panic!("job {job_id} never finished"))
    }

    /// `POST /documents/upload` with these files, for `agent_id` when given.
    pub async fn upload(
        &self,
        s: &Session,
        files: Vec<(&str, Vec<u8>)>,
        agent_id: Option<&str>,
    ) -> Reply {
        let mut form = reqwest::multipart::Form::new();
        for (name, bytes) in files {
            form = form.part(
                "files",
                reqwest::multipart::Part::bytes(bytes).file_name(name.to_owned()),
            );
        }
        if let Some(agent) = agent_id {
            form = form.text("agentId", agent.to_owned());
        }
        let res = self
            .http
            .post(self.url("/api/v1/documents/upload"))
            .bearer_auth(&s.token)
            .header("X-Tenant-ID", &s.tenant_id)
            .multipart(form)
            .send()
            .await
            .expect("upload sent");
        Self::reply(res).await
    }

    /// Uploads one text file (asserting 202) and returns its document id.
    pub async fn upload_text(
        &self,
        s: &Session,
        name: &str,
        text: &str,
        agent_id: Option<&str>,
    ) -> String {
        let r = self
            .upload(s, vec![(name, text.as_bytes().to_vec())], agent_id)
            .await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
        r.body["documents"][0]["id"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Waits for a document to be READY and returns it; panics if it fails
    /// or takes over a minute.
    pub async fn wait_document_ready(&self, s: &Session, id: &str) -> Value {
        self.eventually(Duration::from_secs(60), || async {
            let r = self.get(&format!("/api/v1/documents/{id}"), s).await;
            match r.body["status"].as_str() {
                Some("READY") => Some(r.body),
                Some("FAILED") => panic!("document failed: {:?}", r.body),
                _ => None,
            }
        })
        .await
        .unwrap_or_else(|| panic!("document {id} never became READY"))
    }

    /// The teardown: stops the workers, fails the test on FAILED or DEAD
    /// jobs it did not expect (and, without workers, on jobs it never ran),
    /// then drops this test's database and data directory. The workers go
    /// first: their embedded vector store flushes into the directory when
    /// dropped, and qdrant-edge panics in `Drop` (which aborts the whole
    /// test binary) when the directory is already gone. A replica's cleanup
    /// only stops it: the first app owns the data.
    pub async fn cleanup(mut self) {
        self.cleaned = true;
        if !self.owner {
            return;
        }
        let leftovers = if self.with_workers {
            Vec::new()
        } else {
            self.pending_jobs().await
        };
        let failed = if self.failed_jobs_expected.load(Ordering::SeqCst) {
            Vec::new()
        } else {
            self.failed_jobs().await
        };
        if let Some(stop) = self.stop_worker.take() {
            let _ = stop.send(());
        }
        let mut keep_dir = false;
        if let Some(worker) = self.worker.take() {
            // Bounded: a stuck job must not hang the suite; the directory is
            // then left behind in the temp dir rather than pulled from under it.
            if tokio::time::timeout(Duration::from_secs(20), worker)
                .await
                .is_err()
            {
                eprintln!(
                    "workers did not stop within 20 s; keeping {}",
                    self.platform.config.data_dir
                );
                keep_dir = true;
            }
        }
        // Closes the embedded store a drain opened, before its directory goes.
        drop(self.drain_state.take());
        let _ = self.platform.db.database().drop().await;
        if !keep_dir {
            let _ = std::fs::remove_dir_all(&self.platform.config.data_dir);
        }
        assert!(
            leftovers.is_empty(),
            "the test left jobs nobody ran (drain them): {leftovers:?}"
        );
        assert!(
            failed.is_empty(),
            "the test left failed jobs (or call allow_failed_jobs): {failed:?}"
        );
    }
}

/// A test that panicked or returned before [`TestApp::cleanup`]: stop the
/// workers and drop its database all the same. The data directory stays
/// (the workers' store may still be flushing into it); it is in the temp dir.
impl Drop for TestApp {
    fn drop(&mut self) {
        if self.cleaned || !self.owner {
            return;
        }
        if let Some(stop) = self.stop_worker.take() {
            let _ = stop.send(());
        }
        let uri = self.platform.config.mongodb_uri.expose().clone();
        let name = self.platform.config.mongodb_db.clone();
        // Our own runtime and client on a thread of its own: the test's
        // runtime may be shutting down, and Drop cannot await.
        let dropped = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                let Ok(mut options) = mongodb::options::ClientOptions::parse(&uri).await else {
                    return;
                };
                options.server_selection_timeout = Some(Duration::from_secs(5));
                if let Ok(client) = mongodb::Client::with_options(options) {
                    let _ = client.database(&name).drop().await;
                }
            });
        });
        let _ = dropped.join();
    }
}

/// Deletes every Redis key of `namespace` (a benchmark's queued jobs and
/// deduplication keys, which no worker will take).
pub async fn delete_redis_namespace(
    conn: &mut impl redis::aio::ConnectionLike,
    namespace: &str,
) -> redis::RedisResult<()> {
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{namespace}:*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(conn)
            .await?;
        if !keys.is_empty() {
            let _: () = redis::cmd("UNLINK").arg(&keys).query_async(conn).await?;
        }
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
}

/// The machine a benchmark ran on: cores, CPU model and memory.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown cpu".to_owned());
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            let kb: HashMap<&str, u64> = s
                .lines()
                .filter_map(|l| {
                    let mut parts = l.split_whitespace();
                    Some((parts.next()?, parts.next()?.parse().ok()?))
                })
                .collect();
            kb.get("MemTotal:").copied()
        })
        .map_or(0.0, |kb| kb as f64 / 1024.0 / 1024.0);
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cores} cores ({cpu}), {mem_gib:.0} GiB RAM")
}
