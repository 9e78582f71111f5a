//! Socket benchmark (issue 14, "Sockets and memory") of ONE real `api`
//! process, with the seed frontend's own `socket.io-client` v4 on node
//! (`tests/socketio-client`, `npm ci` there first) and the local Redis and
//! MongoDB:
//!
//! ```sh
//! cargo run --release -p aigentable-tests --bin socket_bench -- [--clients 10000] [--broadcasts 20]
//! ```
//!
//! Further options: `--interval-ms 500` between broadcasts, `--batch 500`
//! sockets opened at once, `--transports polling,websocket` (the frontend's
//! default: long-polling, then the upgrade) or `websocket`,
//! `--node-processes N` (default: one per core) to share the clients among
//! that many node processes. One node process parses every broadcast for
//! all its sockets on one core: at 10,000 sockets that alone took most of
//! the interval between broadcasts, so the latency measured was the
//! client's queue. The bench merges the processes' raw latencies and says
//! when the clients were CPU-bound.
//!
//! It starts the release `api` binary (built next to this one, or the one
//! `BENCH_API_BIN` names) on a free port with a fresh database and Redis
//! namespace, registers a tenant admin through the api and logs in five
//! times, and measures:
//! 1. the api's RSS (`VmRSS`) right after those password hashes (each takes
//!    19 MiB, kept for the next one), and its idle RSS before any socket,
//!    once the hashes' memory was given back (`Hasher::KEEP_WARM`);
//! 2. its RSS with `--clients` sockets connected and authenticated as the
//!    frontend connects (`/api/v1` namespace, `auth: {token, tenantId}`),
//!    hence the memory per socket;
//! 3. tenant broadcast latency: `--broadcasts` `agent-updated` events
//!    published on the platform's Redis events channel (as workers publish
//!    them), which the api relays to the tenant room; every client times
//!    each receipt against the send time in the payload.
//!
//! It fails when the api exits or never becomes ready, when fewer sockets
//! connect than asked (printing the errors the clients saw), when a
//! broadcast misses a socket, or when the api is not alive and healthy at
//! the end. The bench's database, Redis keys and data directory are removed
//! and the api stopped in every case.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use aigentable_tests::release_bins::release_binary;
use aigentable_tests::stats::{HASH_MEMORY_FREED_AFTER, cpu_seconds, percentile, status_kib};

use aigentable_jobs::events::{RealtimeEvent, channel, names};

struct Args {
    clients: u64,
    broadcasts: u64,
    interval: Duration,
    batch: u64,
    transports: String,
    node_processes: u64,
}

const USAGE: &str = "usage: socket_bench [--clients N] [--broadcasts N] [--interval-ms N] [--batch N] [--transports polling,websocket|websocket] [--node-processes N]";

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        clients: 10_000,
        broadcasts: 20,
        interval: Duration::from_millis(500),
        batch: 500,
        transports: "polling,websocket".to_owned(),
        node_processes: std::thread::available_parallelism().map_or(1, |n| n.get() as u64),
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let v = it.next().with_context(|| format!("{a} needs a value"))?;
        let number = || {
            v.parse::<u64>()
                .with_context(|| format!("{a} must be a number"))
        };
        match a.as_str() {
            "--clients" => args.clients = number()?.max(1),
            "--broadcasts" => args.broadcasts = number()?.max(1),
            "--interval-ms" => args.interval = Duration::from_millis(number()?),
            "--batch" => args.batch = number()?.max(1),
            "--transports" => args.transports.clone_from(&v),
            "--node-processes" => args.node_processes = number()?.max(1),
            other => bail!("unknown argument {other}; {USAGE}"),
        }
    }
    args.node_processes = args.node_processes.min(args.clients);
    Ok(args)
}

fn epoch_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1e3)
}

/// The 1-minute load average: on a shared machine, what else competed for
/// the cores while the figures were taken.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "unknown".to_owned())
}

/// The soft "Max open files" of a process, as the kernel applies it.
fn open_files_limit(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/limits"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3).map(str::to_owned))
        })
        .unwrap_or_else(|| "unknown".to_owned())
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// The api process under test, its log and its configuration.
struct Api {
    child: Child,
    pid: u32,
    log: PathBuf,
    base: String,
    env: HashMap<String, String>,
}

impl Api {
    fn start(bin: &Path, env: HashMap<String, String>, port: u16) -> anyhow::Result<Self> {
        let log = std::env::temp_dir().join(format!("aigentable-socket-bench-api-{port}.log"));
        let out = std::fs::File::create(&log)?;
        let mut command = Command::new(bin);
        // Only the bench's configuration: a variable of the caller's shell
        // (METRICS_PORT, QDRANT_URL, ...) must not change what is measured.
        command.env_clear();
        for keep in ["PATH", "HOME"] {
            if let Ok(v) = std::env::var(keep) {
                command.env(keep, v);
            }
        }
        let child = command
            .envs(&env)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let pid = child.id().context("the api exited at once")?;
        Ok(Self {
            child,
            pid,
            log,
            base: format!("http://127.0.0.1:{port}"),
            env,
        })
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Fails, with the end of its log, when the api has exited.
    fn ensure_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "the api exited ({status}); end of its log {}:\n{}",
                self.log.display(),
                self.log_tail()
            );
        }
        Ok(())
    }

    async fn wait_ready(&mut self, http: &reqwest::Client) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            self.ensure_alive()?;
            let ready = http
                .get(format!("{}/readyz", self.base))
                .timeout(Duration::from_secs(2))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "the api did not become ready within 60 s; end of its log:\n{}",
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn var(&self, name: &str) -> anyhow::Result<&str> {
        self.env
            .get(name)
            .map(String::as_str)
            .with_context(|| format!("{name} missing from the bench configuration"))
    }

    /// `aigentable_socketio_connections`: the api's own count of sockets.
    async fn socket_gauge(&self, http: &reqwest::Client) -> anyhow::Result<i64> {
        let body = http
            .get(format!("{}/metrics", self.base))
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)?
            .text()
            .await?;
        body.lines()
            .find_map(|l| l.strip_prefix("aigentable_socketio_connections "))
            .and_then(|v| v.trim().parse().ok())
            .context("no aigentable_socketio_connections in /metrics")
    }

    async fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()
            .await;
        if tokio::time::timeout(Duration::from_secs(15), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// The node half: its stdin (commands) and stdout (JSON lines).
struct Node {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Node {
    /// The next JSON line of `phase`, failing when node or the api exits
    /// first or `within` passes.
    async fn phase(
        &mut self,
        phase: &str,
        api: &mut Api,
        within: Duration,
    ) -> anyhow::Result<Value> {
        let deadline = tokio::time::Instant::now() + within;
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                line = self.lines.next_line() => {
                    let Some(line) = line? else {
                        let status = self.child.wait().await?;
                        bail!("node exited ({status}) before reporting '{phase}'");
                    };
                    let Ok(v) = serde_json::from_str::<Value>(&line) else {
                        let head: String = line.chars().take(300).collect();
                        println!("node (not a JSON line, {} bytes): {head}", line.len());
                        continue;
                    };
                    if v["phase"] == phase {
                        return Ok(v);
                    }
                }
                _ = tick.tick() => {
                    api.ensure_alive()?;
                    if tokio::time::Instant::now() > deadline {
                        bail!("node did not report '{phase}' within {within:?}");
                    }
                }
            }
        }
    }
}

/// Node process `i`'s share of `clients` among `n`: as even as possible.
fn share(clients: u64, n: u64, i: u64) -> u64 {
    clients / n + u64::from(i < clients % n)
}

/// The per-key sums of the processes' count maps (`connectErrors`,
/// `disconnects`, `transports`).
fn sum_maps(reports: &[Value], field: &str) -> Value {
    let mut sum = serde_json::Map::new();
    for m in reports.iter().filter_map(|r| r[field].as_object()) {
        for (k, n) in m {
            let total = sum.get(k).and_then(Value::as_u64).unwrap_or(0) + n.as_u64().unwrap_or(0);
            sum.insert(k.clone(), json!(total));
        }
    }
    Value::Object(sum)
}

fn sum_u64(reports: &[Value], field: &str) -> u64 {
    reports.iter().filter_map(|r| r[field].as_u64()).sum()
}

fn sum_f64(reports: &[Value], field: &str) -> f64 {
    reports.iter().filter_map(|r| r[field].as_f64()).sum()
}

/// The node processes' `connected` reports as one.
fn merge_connected(reports: &[Value]) -> Value {
    json!({
        "phase": "connected",
        "requested": sum_u64(reports, "requested"),
        "connected": sum_u64(reports, "connected"),
        "failed": sum_u64(reports, "failed"),
        "stillConnected": sum_u64(reports, "stillConnected"),
        "connectErrors": sum_maps(reports, "connectErrors"),
        "disconnects": sum_maps(reports, "disconnects"),
        "transports": sum_maps(reports, "transports"),
        "connectSeconds": reports.iter().filter_map(|r| r["connectSeconds"].as_f64()).fold(0.0, f64::max),
        "nodeRssMb": sum_f64(reports, "nodeRssMb"),
        "nodeCpuSeconds": sum_f64(reports, "nodeCpuSeconds"),
    })
}

/// The node processes' `result` reports as one: counts summed, each
/// broadcast's first receipt the earliest and its last the latest, and the
/// percentiles taken over every process's raw latencies together.
fn merge_results(reports: &[Value], broadcasts: u64) -> Value {
    let mut latencies: Vec<Duration> = reports
        .iter()
        .filter_map(|r| r["latencies"].as_array())
        .flatten()
        .filter_map(Value::as_f64)
        .map(|ms| Duration::from_secs_f64(ms.max(0.0) / 1000.0))
        .collect();
    latencies.sort();
    let ms_at = |p: f64| {
        if latencies.is_empty() {
            Value::Null
        } else {
            json!(percentile(&latencies, p).as_secs_f64() * 1000.0)
        }
    };
    let per_broadcast = |seq: usize| {
        let mut received = 0;
        let (mut first, mut last) = (None::<f64>, None::<f64>);
        for r in reports {
            received += r["receivedPerBroadcast"][seq].as_u64().unwrap_or(0);
            let pair = &r["firstLastMsPerBroadcast"][seq];
            if let Some(f) = pair[0].as_f64() {
                first = Some(first.map_or(f, |x| x.min(f)));
            }
            if let Some(l) = pair[1].as_f64() {
                last = Some(last.map_or(l, |x| x.max(l)));
            }
        }
        (received, json!([first, last]))
    };
    let (received, spread): (Vec<u64>, Vec<Value>) =
        (0..broadcasts as usize).map(per_broadcast).unzip();
    json!({
        "phase": "result",
        "connected": sum_u64(reports, "connected"),
        "stillConnected": sum_u64(reports, "stillConnected"),
        "disconnects": sum_maps(reports, "disconnects"),
        "broadcasts": broadcasts,
        "expectedReceipts": sum_u64(reports, "expectedReceipts"),
        "receipts": sum_u64(reports, "receipts"),
        "receivedPerBroadcast": received,
        "firstLastMsPerBroadcast": spread,
        "socketsMissingSome": sum_u64(reports, "socketsMissingSome"),
        "duplicates": sum_u64(reports, "duplicates"),
        "foreign": sum_u64(reports, "foreign"),
        "latencyMs": {
            "p50": ms_at(50.0),
            "p90": ms_at(90.0),
            "p99": ms_at(99.0),
            "max": ms_at(100.0),
            "min": ms_at(0.0),
        },
        "nodeRssMb": sum_f64(reports, "nodeRssMb"),
        "nodeCpuSeconds": sum_f64(reports, "nodeCpuSeconds"),
    })
}

/// Signs a tenant admin up, then logs them in [`LOGINS`] times; answers
/// the sign-up's token and tenant id.
async fn register(http: &reqwest::Client, base: &str) -> anyhow::Result<(String, String)> {
    let email = format!("socket-bench-{}@example.com", uuid::Uuid::new_v4().simple());
    let r = http
        .post(format!("{base}/api/v1/auth/register"))
        .json(&json!({
            "email": email, "password": "securePassword123",
            "firstName": "Ada", "lastName": "Lovelace", "tenantName": "Socket bench",
        }))
        .send()
        .await?;
    let status = r.status();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    if status != reqwest::StatusCode::CREATED {
        bail!("register answered {status}: {body}");
    }
    let token = body["token"].as_str().unwrap_or_default().to_owned();
    let tenant = body["user"]["tenantId"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    if token.is_empty() || tenant.is_empty() {
        bail!("register gave no token or tenant id: {body}");
    }
    for _ in 0..LOGINS {
        let r = http
            .post(format!("{base}/api/v1/auth/login"))
            .json(&json!({ "email": email, "password": "securePassword123" }))
            .send()
            .await?;
        if r.status() != reqwest::StatusCode::OK {
            bail!("login answered {}", r.status());
        }
    }
    Ok((token, tenant))
}

/// Logins after the sign-up, before the idle figure: each hashes a
/// password (19 MiB of working memory), as a live api does all day.
const LOGINS: usize = 5;

/// Waits until the api's relay listens on the events channel: a broadcast
/// published before that would be lost and counted against the api.
async fn wait_subscribed(
    redis: &mut redis::aio::MultiplexedConnection,
    events: &str,
    api: &mut Api,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        api.ensure_alive()?;
        let (_, subscribers): (String, i64) = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(events)
            .query_async(redis)
            .await?;
        if subscribers >= 1 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the api never subscribed to {events}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn ms(v: &Value) -> String {
    v.as_f64()
        .map_or_else(|| "n/a".to_owned(), |x| format!("{x:.1}"))
}

/// Figures gathered so far; printed whatever happened.
#[derive(Default)]
struct Figures {
    warm_kib: Option<u64>,
    idle_kib: Option<u64>,
    connected_kib: Option<u64>,
    after_kib: Option<u64>,
    peak_kib: Option<u64>,
    connected: Option<Value>,
    result: Option<Value>,
    gauge: Option<i64>,
}

async fn run(
    args: &Args,
    api: &mut Api,
    http: &reqwest::Client,
    figures: &mut Figures,
    problems: &mut Vec<String>,
) -> anyhow::Result<()> {
    api.wait_ready(http).await?;
    let redis_client = redis::Client::open(api.var("REDIS_URL")?)?;
    let mut redis = redis_client.get_multiplexed_async_connection().await?;
    let events = channel(api.var("REDIS_NAMESPACE")?);
    wait_subscribed(&mut redis, &events, api).await?;
    let (token, tenant) = register(http, &api.base).await?;
    api.ensure_alive()?;
    figures.warm_kib = Some(status_kib(api.pid, "VmRSS")?);

    // The hashes' working memory is kept for a burst of logins and given
    // back once none has run for `Hasher::KEEP_WARM`: the idle figure is
    // taken after that.
    tokio::time::sleep(HASH_MEMORY_FREED_AFTER).await;
    api.ensure_alive()?;
    figures.idle_kib = Some(status_kib(api.pid, "VmRSS")?);
    let cpu_idle = cpu_seconds(api.pid).unwrap_or(0.0);
    println!(
        "api pid {} (max open files {}), RSS {:.1} MiB right after a sign-up and {LOGINS} logins, idle RSS {:.1} MiB once their memory was given back, load average {}",
        api.pid,
        open_files_limit(api.pid),
        mib(figures.warm_kib.unwrap_or(0)),
        mib(figures.idle_kib.unwrap_or(0)),
        load_average()
    );

    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("socketio-client");
    if !dir.join("node_modules/socket.io-client").exists() {
        bail!(
            "socket.io-client is not installed: run `npm ci` in {}",
            dir.display()
        );
    }
    let node_bin = std::env::var("BENCH_NODE").unwrap_or_else(|_| "node".to_owned());
    // The processes together open `--batch` sockets at a time.
    let batch = args.batch.div_ceil(args.node_processes).max(1);
    let mut nodes = Vec::new();
    for i in 0..args.node_processes {
        let clients = share(args.clients, args.node_processes, i);
        let mut child = Command::new(&node_bin)
            .arg(dir.join("socket_bench.mjs"))
            .args([&api.base, &token, &tenant, &clients.to_string()])
            .args(["--batch", &batch.to_string()])
            .args(["--transports", &args.transports])
            .args(["--event", names::AGENT_UPDATED])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("starting node")?;
        if let Some(pid) = child.id() {
            println!(
                "node pid {pid}: {clients} clients (max open files {})",
                open_files_limit(pid)
            );
        }
        nodes.push(Node {
            stdin: child.stdin.take().context("node stdin")?,
            lines: BufReader::new(child.stdout.take().context("node stdout")?).lines(),
            child,
        });
    }

    // Generous: every batch may wait out the clients' 20 s connect timeout.
    let batches = args.clients.div_ceil(args.batch);
    let within = Duration::from_secs(120 + 25 * batches);
    let mut reports = Vec::new();
    for node in &mut nodes {
        reports.push(node.phase("connected", api, within).await?);
    }
    let cpu_connected_per_node: Vec<f64> = reports
        .iter()
        .map(|r| r["nodeCpuSeconds"].as_f64().unwrap_or(0.0))
        .collect();
    let connected = merge_connected(&reports);
    let n = connected["connected"].as_u64().unwrap_or(0);
    let still = connected["stillConnected"].as_u64().unwrap_or(0);
    println!(
        "connected {n} of {} in {:.1} s ({} failed; still connected {still}; transports {}; node RSS {:.0} MiB)",
        args.clients,
        connected["connectSeconds"].as_f64().unwrap_or(0.0),
        connected["failed"],
        connected["transports"],
        connected["nodeRssMb"].as_f64().unwrap_or(0.0),
    );
    if connected["connectErrors"]
        .as_object()
        .is_some_and(|e| !e.is_empty())
    {
        println!("connect errors seen: {}", connected["connectErrors"]);
    }
    if connected["disconnects"]
        .as_object()
        .is_some_and(|e| !e.is_empty())
    {
        println!("disconnects seen: {}", connected["disconnects"]);
    }
    if n < args.clients {
        problems.push(format!(
            "only {n} of {} clients connected: {}",
            args.clients, connected["connectErrors"]
        ));
    }
    figures.connected = Some(connected);

    // Let buffers of the handshakes be freed before the figure with sockets.
    tokio::time::sleep(Duration::from_secs(3)).await;
    api.ensure_alive()?;
    figures.connected_kib = Some(status_kib(api.pid, "VmRSS")?);
    let gauge = api.socket_gauge(http).await?;
    figures.gauge = Some(gauge);
    if u64::try_from(gauge).ok() != Some(still) {
        problems.push(format!(
            "the api counts {gauge} sockets, node has {still} connected"
        ));
    }

    if still == 0 {
        bail!("no socket is connected: nothing to broadcast to");
    }
    let cpu_connected = cpu_seconds(api.pid).unwrap_or(0.0);
    println!(
        "api CPU to accept the sockets {:.1} s (node {:.1} s); load average before the broadcasts {}",
        cpu_connected - cpu_idle,
        figures
            .connected
            .as_ref()
            .and_then(|c| c["nodeCpuSeconds"].as_f64())
            .unwrap_or(0.0),
        load_average()
    );
    let broadcasting = Instant::now();
    for seq in 0..args.broadcasts {
        let event = RealtimeEvent {
            tenant_id: tenant.clone(),
            conversation_id: None,
            event: names::AGENT_UPDATED.to_owned(),
            data: json!({ "id": "socket-bench", "benchSeq": seq, "sentAtMs": epoch_ms() }),
        };
        let receivers: i64 = redis::cmd("PUBLISH")
            .arg(&events)
            .arg(serde_json::to_string(&event)?)
            .query_async(&mut redis)
            .await?;
        if receivers < 1 {
            bail!("broadcast {seq}: no api subscribed to {events}");
        }
        tokio::time::sleep(args.interval).await;
        api.ensure_alive()?;
    }
    for node in &mut nodes {
        node.stdin
            .write_all(format!("done {}\n", args.broadcasts).as_bytes())
            .await?;
        node.stdin.flush().await?;
    }
    let mut reports = Vec::new();
    for node in &mut nodes {
        reports.push(node.phase("result", api, Duration::from_secs(60)).await?);
    }
    let broadcast_secs = broadcasting.elapsed().as_secs_f64();
    for node in &mut nodes {
        let _ = tokio::time::timeout(Duration::from_secs(10), node.child.wait()).await;
    }
    // A node process busy for most of the broadcast phase queued the
    // receipts it had not parsed yet: that latency is the client's.
    let busy: Vec<f64> = reports
        .iter()
        .zip(&cpu_connected_per_node)
        .map(|(r, before)| (r["nodeCpuSeconds"].as_f64().unwrap_or(0.0) - before) / broadcast_secs)
        .collect();
    println!(
        "node processes busy during the broadcasts: {}",
        busy.iter()
            .map(|b| format!("{:.0}%", b * 100.0))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if busy.iter().any(|&b| b >= 0.9) {
        println!(
            "the clients were CPU-bound (a node process busy 90% of the time or more): the latency includes their own queue; run with more --node-processes or on more cores"
        );
    }
    let result = merge_results(&reports, args.broadcasts);
    figures.after_kib = Some(status_kib(api.pid, "VmRSS")?);
    figures.peak_kib = Some(status_kib(api.pid, "VmHWM")?);
    let node_cpu = |v: Option<&Value>| v.and_then(|c| c["nodeCpuSeconds"].as_f64()).unwrap_or(0.0);
    println!(
        "api CPU during the broadcasts {:.2} s, node {:.2} s; load average {}",
        cpu_seconds(api.pid).unwrap_or(0.0) - cpu_connected,
        node_cpu(Some(&result)) - node_cpu(figures.connected.as_ref()),
        load_average()
    );
    println!(
        "first and last receipt of each broadcast, ms: {}",
        result["firstLastMsPerBroadcast"]
    );

    let expected = result["expectedReceipts"].as_u64().unwrap_or(0);
    let receipts = result["receipts"].as_u64().unwrap_or(0);
    println!(
        "broadcasts: {} x {} sockets, {receipts} of {expected} receipts, {} sockets missed some, {} duplicates; received per broadcast {}",
        args.broadcasts,
        still,
        result["socketsMissingSome"],
        result["duplicates"],
        result["receivedPerBroadcast"],
    );
    if expected == 0 || receipts < expected {
        problems.push(format!(
            "broadcasts reached {receipts} of {expected} expected receipts"
        ));
    }
    if result["disconnects"]
        .as_object()
        .is_some_and(|e| !e.is_empty())
    {
        problems.push(format!(
            "sockets disconnected during the run: {}",
            result["disconnects"]
        ));
    }
    figures.result = Some(result);

    // The api must still be there and answering after all that.
    api.ensure_alive()?;
    let healthy = http
        .get(format!("{}/healthz", api.base))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success());
    if !healthy {
        problems.push("the api no longer answers /healthz".to_owned());
    }
    Ok(())
}

fn print_table(args: &Args, f: &Figures) {
    let connected = f
        .connected
        .as_ref()
        .and_then(|c| c["connected"].as_u64())
        .unwrap_or(0);
    let per_socket = match (f.idle_kib, f.connected_kib) {
        (Some(idle), Some(with)) if connected > 0 => {
            format!("{:.1}", with.saturating_sub(idle) as f64 / connected as f64)
        }
        _ => "n/a".to_owned(),
    };
    let opt = |v: Option<u64>| v.map_or_else(|| "n/a".to_owned(), |k| format!("{:.1}", mib(k)));
    let latency = f
        .result
        .as_ref()
        .map_or(Value::Null, |r| r["latencyMs"].clone());
    println!();
    println!(
        "socket bench: one api process, socket.io-client v4 on {} node process(es) ({})",
        args.node_processes, args.transports
    );
    println!(
        "  clients connected          {connected} of {}",
        args.clients
    );
    println!(
        "  api socket gauge           {}",
        f.gauge.map_or_else(|| "n/a".to_owned(), |g| g.to_string())
    );
    println!(
        "  api RSS after the logins   {} MiB (a sign-up and {LOGINS} logins, their memory kept warm)",
        opt(f.warm_kib)
    );
    println!(
        "  api idle RSS               {} MiB (no hash for {} s)",
        opt(f.idle_kib),
        HASH_MEMORY_FREED_AFTER.as_secs()
    );
    println!("  api RSS with sockets       {} MiB", opt(f.connected_kib));
    println!("  per socket                 {per_socket} KiB");
    println!("  api RSS after broadcasts   {} MiB", opt(f.after_kib));
    println!("  api peak RSS (VmHWM)       {} MiB", opt(f.peak_kib));
    println!(
        "  broadcast latency          p50 {} ms, p90 {} ms, p99 {} ms, max {} ms ({} broadcasts, {:?} apart)",
        ms(&latency["p50"]),
        ms(&latency["p90"]),
        ms(&latency["p99"]),
        ms(&latency["max"]),
        args.broadcasts,
        args.interval
    );
    println!(
        "  machine                    {}",
        aigentable_tests::machine()
    );
}

/// Drops the bench's database and Redis keys and its data directory.
async fn clean(env: &HashMap<String, String>) {
    if let (Some(uri), Some(db)) = (env.get("MONGODB_URI"), env.get("MONGODB_DB")) {
        match mongodb::Client::with_uri_str(uri).await {
            Ok(client) => {
                if let Err(e) = client.database(db).drop().await {
                    eprintln!("could not drop database {db}: {e}");
                }
            }
            Err(e) => eprintln!("could not reach MongoDB to drop {db}: {e}"),
        }
    }
    if let (Some(url), Some(ns)) = (env.get("REDIS_URL"), env.get("REDIS_NAMESPACE"))
        && let Ok(client) = redis::Client::open(url.as_str())
        && let Ok(mut conn) = client.get_multiplexed_async_connection().await
    {
        let _ = aigentable_tests::delete_redis_namespace(&mut conn, ns).await;
    }
    if let Some(dir) = env.get("DATA_DIR") {
        let _ = std::fs::remove_dir_all(dir);
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let bin = release_binary("api", "BENCH_API_BIN").await?;
    let port = aigentable_tests::services::free_port();
    let env = aigentable_tests::test_env(&[
        ("PORT", &port.to_string()),
        ("HOST", "127.0.0.1"),
        ("RUST_LOG", "warn"),
    ]);
    println!("machine: {}", aigentable_tests::machine());
    println!(
        "{} clients on {} node process(es) ({} at once, transports {}), {} broadcasts {:?} apart, api {}",
        args.clients,
        args.node_processes,
        args.batch,
        args.transports,
        args.broadcasts,
        args.interval,
        bin.display()
    );
    let mut api = Api::start(&bin, env.clone(), port)?;
    let http = reqwest::Client::new();
    let mut figures = Figures::default();
    let mut problems = Vec::new();
    let outcome = run(&args, &mut api, &http, &mut figures, &mut problems).await;
    print_table(&args, &figures);
    let log = api.log.clone();
    api.stop().await;
    clean(&env).await;
    outcome?;
    if !problems.is_empty() {
        bail!(
            "FAILED ({} problems; api log {}):\n- {}",
            problems.len(),
            log.display(),
            problems.join("\n- ")
        );
    }
    let _ = std::fs::remove_file(&log);
    Ok(())
}
