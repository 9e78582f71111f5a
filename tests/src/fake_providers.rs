//! One local HTTP server on port 0 that plays the Graph API (WhatsApp,
//! Messenger, Instagram) and the Telegram Bot API: it records every request
//! and answers like the real APIs, or with scripted answers (failures such
//! as 400, 429, 500, or lookups such as a business account's phone numbers)
//! for the requests whose path contains a given text. `GET .../me` answers
//! the account registered for the token ([`FakeProviders::add_account`]),
//! and Meta's "Invalid OAuth access token" for any other token.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use salvo::conn::TcpListener;
use salvo::prelude::*;
use serde_json::{Value, json};

/// A request the fake received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// Path without the query string.
    pub path: String,
    pub query: Vec<(String, String)>,
    pub authorization: Option<String>,
    pub body: Value,
}

impl Recorded {
    pub fn query(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Clone)]
struct Scripted {
    path_contains: String,
    remaining: usize,
    status: u16,
    body: Value,
}

#[derive(Default, Debug)]
struct Inner {
    requests: Mutex<Vec<Recorded>>,
    /// Requests recorded per path: counting by a part of the path reads
    /// the few paths, not every request (a benchmark counts while a
    /// hundred thousand are recorded, and a scan held the lock the
    /// server records under).
    per_path: Mutex<std::collections::HashMap<String, usize>>,
    script: Mutex<Vec<Scripted>>,
    /// Token → what `GET /me` answers for it.
    accounts: Mutex<std::collections::HashMap<String, Value>>,
    counter: AtomicU64,
    /// Woken at every request recorded.
    arrived: tokio::sync::Notify,
}

#[derive(Clone, Debug)]
pub struct FakeProviders {
    pub addr: SocketAddr,
    inner: Arc<Inner>,
}

struct Serve(Arc<Inner>);

#[async_trait]
impl Handler for Serve {
    async fn handle(
        &self,
        req: &mut Request,
        _depot: &mut Depot,
        res: &mut Response,
        _ctrl: &mut FlowCtrl,
    ) {
        let path = req.uri().path().to_owned();
        let method = req.method().as_str().to_owned();
        let query = crate::query_pairs(req);
        let authorization = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body: Value = req
            .payload()
            .await
            .ok()
            .and_then(|b| serde_json::from_slice(b).ok())
            .unwrap_or(Value::Null);
        let n = self.0.counter.fetch_add(1, Ordering::SeqCst) + 1;
        self.0
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Recorded {
                method: method.clone(),
                path: path.clone(),
                query: query.clone(),
                authorization: authorization.clone(),
                body: body.clone(),
            });
        *self
            .0
            .per_path
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(path.clone())
            .or_default() += 1;
        self.0.arrived.notify_waiters();
        let scripted = {
            let mut script = self.0.script.lock().unwrap_or_else(|e| e.into_inner());
            let hit = script
                .iter_mut()
                .find(|s| s.remaining > 0 && path.contains(&s.path_contains));
            hit.map(|s| {
                s.remaining -= 1;
                (s.status, s.body.clone())
            })
        };
        let me = (method == "GET" && path.ends_with("/me")).then(|| {
            let token = authorization
                .as_deref()
                .and_then(|a| a.strip_prefix("Bearer "))
                .map(str::to_owned)
                .or_else(|| {
                    query
                        .iter()
                        .find(|(k, _)| k == "access_token")
                        .map(|(_, v)| v.clone())
                })
                .unwrap_or_default();
            let accounts = self.0.accounts.lock().unwrap_or_else(|e| e.into_inner());
            match accounts.get(&token) {
                Some(account) => (200, account.clone()),
                None => (
                    400,
                    json!({"error": {"message": "Invalid OAuth access token - Cannot parse access token", "type": "OAuthException", "code": 190}}),
                ),
            }
        });
        let (status, answer) = scripted
            .or(me)
            .unwrap_or_else(|| (200, default_answer(&method, &path, &body, n)));
        res.status_code(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR));
        res.render(Json(answer));
    }
}

/// What the real API answers on success.
fn default_answer(method: &str, path: &str, body: &Value, n: u64) -> Value {
    if let Some((_, tail)) = path.split_once("/bot") {
        let method_name = tail.rsplit('/').next().unwrap_or_default();
        return match method_name {
            "getMe" => {
                json!({"ok": true, "result": {"id": 4242, "is_bot": true, "first_name": "Fake Bot", "username": "fake_bot"}})
            }
            "setWebhook" => json!({"ok": true, "result": true, "description": "Webhook was set"}),
            "sendMessage" => {
                json!({"ok": true, "result": {"message_id": n, "chat": {"id": body["chat_id"]}, "text": body["text"]}})
            }
            _ => json!({"ok": true, "result": true}),
        };
    }
    if method == "POST" && path.ends_with("/messages") {
        if body.get("messaging_product").is_some() {
            return json!({"messaging_product": "whatsapp", "contacts": [{"input": body["to"], "wa_id": body["to"]}], "messages": [{"id": format!("wamid.fake{n}")}]});
        }
        return json!({"recipient_id": body["recipient"]["id"], "message_id": format!("m_fake{n}")});
    }
    // GET /v21.0/{id}: the account.
    let id = path.rsplit('/').next().unwrap_or_default();
    json!({"id": id, "name": "Fake Page", "username": "fake_ig", "display_phone_number": "+1 555 000 1111", "verified_name": "Fake Shop"})
}

impl FakeProviders {
    pub async fn start() -> Self {
        let acceptor = TcpListener::new("127.0.0.1:0")
            .try_bind()
            .await
            .expect("bind fake providers");
        let addr = acceptor.local_addr().expect("fake providers address");
        let inner = Arc::new(Inner::default());
        let router = Router::with_path("{**rest}").goal(Serve(inner.clone()));
        tokio::spawn(async move {
            Server::new(acceptor).serve(router).await;
        });
        Self { addr, inner }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Answers the next `times` requests whose path contains `path_contains`
    /// with `status` and `body`.
    pub fn fail_next(&self, path_contains: &str, times: usize, status: u16, body: Value) {
        self.inner
            .script
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Scripted {
                path_contains: path_contains.to_owned(),
                remaining: times,
                status,
                body,
            });
    }

    /// Answers every later request whose path contains `path_contains`
    /// with `status` and `body` (e.g. a business account's phone numbers).
    pub fn respond(&self, path_contains: &str, status: u16, body: Value) {
        self.fail_next(path_contains, usize::MAX, status, body);
    }

    /// What `GET /me` answers for `token` (the page of a page token, the
    /// Instagram account of an Instagram token).
    pub fn add_account(&self, token: &str, account: Value) {
        self.inner
            .accounts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(token.to_owned(), account);
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.inner
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// How many requests' paths contain `part`, from the count kept per
    /// path (a benchmark polls this while thousands are recorded).
    pub fn count_to(&self, part: &str) -> usize {
        self.inner
            .per_path
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(path, _)| path.contains(part))
            .map(|(_, n)| n)
            .sum()
    }

    /// Waits until more than `than` requests whose path contains `part`
    /// were received, woken by each one: the moment the wake-up came (taken
    /// before the requests are counted, so neither a polling interval nor
    /// the count's scan is added to a latency), or `None` after `timeout`.
    pub async fn wait_for_more_than(
        &self,
        part: &str,
        than: usize,
        timeout: std::time::Duration,
    ) -> Option<std::time::Instant> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut woke = std::time::Instant::now();
        loop {
            let notified = self.inner.arrived.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.count_to(part) > than {
                return Some(woke);
            }
            tokio::time::timeout_at(deadline, notified).await.ok()?;
            woke = std::time::Instant::now();
        }
    }

    /// Requests whose path contains `part`.
    pub fn requests_to(&self, part: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.path.contains(part))
            .collect()
    }

    /// Overrides that point every provider at this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        let url = self.url();
        vec![
            ("WHATSAPP_API_BASE", url.clone()),
            ("FACEBOOK_API_BASE", url.clone()),
            ("INSTAGRAM_API_BASE", url.clone()),
            ("TELEGRAM_API_BASE", url),
            ("META_API_VERSION", "21.0".to_owned()),
        ]
    }
}

// ---- helpers for channel, webhook and widget tests ----

/// The real api and workers with every provider pointed at a fresh fake.
pub async fn app_with_fake(extra: &[(&str, &str)]) -> (crate::TestApp, FakeProviders) {
    app_with_fake_and(extra, true).await
}

/// [`app_with_fake`], with or without in-process workers.
pub async fn app_with_fake_and(
    extra: &[(&str, &str)],
    with_workers: bool,
) -> (crate::TestApp, FakeProviders) {
    app_with_given_fake(FakeProviders::start().await, extra, with_workers).await
}

/// [`app_with_fake_and`] with a fake started by the caller (on a runtime
/// of its choosing).
pub async fn app_with_given_fake(
    fake: FakeProviders,
    extra: &[(&str, &str)],
    with_workers: bool,
) -> (crate::TestApp, FakeProviders) {
    let env = fake.env();
    let mut overrides: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    overrides.push(("PUBLIC_BASE_URL", "https://bot.example.com"));
    overrides.extend_from_slice(extra);
    let app = if with_workers {
        crate::spawn_app_with(&overrides).await
    } else {
        crate::spawn_app_without_workers(&overrides).await
    };
    (app, fake)
}

/// Waits for a job to finish; answers its record as the api shows it.
pub async fn job_done(app: &crate::TestApp, s: &crate::Session, job_id: &str) -> Value {
    app.job_finished(s, job_id).await
}

/// Creates a channel through the api; panics unless it answers 201.
pub async fn create_channel(app: &crate::TestApp, s: &crate::Session, body: Value) -> Value {
    let r = app.post("/api/v1/channels", s, body).await;
    assert_eq!(
        r.status,
        reqwest::StatusCode::CREATED,
        "create channel: {:?}",
        r.body
    );
    r.body
}

/// Presses Test on a channel (`POST /channels/:id/test`) and answers the
/// finished job's record.
pub async fn test_channel(app: &crate::TestApp, s: &crate::Session, channel_id: &str) -> Value {
    let r = app
        .post(&format!("/api/v1/channels/{channel_id}/test"), s, json!({}))
        .await;
    assert_eq!(
        r.status,
        reqwest::StatusCode::ACCEPTED,
        "test: {:?}",
        r.body
    );
    job_done(app, s, r.body["jobId"].as_str().unwrap_or_default()).await
}

/// Creates a channel and tests it, so that the provider (the fake, which
/// confirms any account id it is asked about) confirms its account and
/// webhooks reach it; panics unless it ends `ACTIVE`. Page tokens must be
/// registered first with [`FakeProviders::add_account`].
pub async fn create_live_channel(app: &crate::TestApp, s: &crate::Session, body: Value) -> Value {
    let created = create_channel(app, s, body).await;
    let id = created["id"].as_str().unwrap_or_default();
    let job = test_channel(app, s, id).await;
    assert_eq!(job["result"]["status"], "ACTIVE", "test: {job}");
    app.get(&format!("/api/v1/channels/{id}"), s).await.body
}

/// Creates an agent through the api; answers its id.
pub async fn create_agent(app: &crate::TestApp, s: &crate::Session) -> String {
    let r = app
        .post(
            "/api/v1/agents",
            s,
            json!({"name": "Support bot", "description": "answers"}),
        )
        .await;
    assert_eq!(
        r.status,
        reqwest::StatusCode::CREATED,
        "create agent: {:?}",
        r.body
    );
    r.body["id"].as_str().unwrap_or_default().to_owned()
}

/// Posts a Meta webhook body signed with `app_secret` (`None`: unsigned).
pub async fn post_meta(
    app: &crate::TestApp,
    path: &str,
    body: &Value,
    app_secret: Option<&str>,
) -> crate::Reply {
    let raw = serde_json::to_vec(body).unwrap_or_default();
    let mut req = app
        .http
        .post(app.url(path))
        .header("content-type", "application/json");
    if let Some(secret) = app_secret {
        req = req.header(
            "x-hub-signature-256",
            aigentable_platform::channels::signature::sign_meta(secret, &raw),
        );
    }
    crate::TestApp::reply(req.body(raw).send().await.expect("webhook sent")).await
}

/// A WhatsApp Cloud API text message delivery, sent now (its timestamp is
/// the current second, as Meta's are).
pub fn whatsapp_text(phone_number_id: &str, from: &str, wamid: &str, text: &str) -> Value {
    let now = chrono::Utc::now().timestamp().to_string();
    json!({"object": "whatsapp_business_account", "entry": [{"id": "WABA", "changes": [{"field": "messages", "value": {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550001111", "phone_number_id": phone_number_id},
        "contacts": [{"profile": {"name": "Ana"}, "wa_id": from}],
        "messages": [{"from": from, "id": wamid, "timestamp": now, "type": "text", "text": {"body": text}}]
    }}]}]})
}
