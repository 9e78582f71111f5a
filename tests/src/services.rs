//! Services of a test's or a benchmark's own, on free ports with their own
//! storage, for faults the shared ones must never suffer: a Redis and a
//! MongoDB-wire server that can be stopped and started again.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A port nothing listens on right now, for a process that binds it later.
///
/// Never one the kernel hands out itself: between this pick and the
/// child's bind, any outgoing connection on the machine may take an
/// ephemeral port as its local end (CI once lost a worker to "address
/// already in use" that way). Ports outside the ephemeral range are only
/// ever taken by a listener, and this process never hands one out twice.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let (low, high) = outside_ephemeral_range();
    let span = u128::from(high - low);
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    for _ in 0..1000 {
        let port = low + (ulid::Ulid::generate().random() % span) as u16;
        if given.contains(&port) {
            continue;
        }
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.push(port);
            return port;
        }
    }
    panic!("no free port in {low}..{high}")
}

/// Ports outside the kernel's ephemeral range: from 20000 (above the
/// usual services') up to where it starts, or above its end when it starts
/// lower than that.
fn outside_ephemeral_range() -> (u16, u16) {
    let (start, end) = ephemeral_range();
    if start > 21000 {
        (20000, start)
    } else if end < 64000 {
        (end + 1, u16::MAX)
    } else {
        // It spans nearly every port: nowhere is safe, so anywhere will do.
        (20000, 30000)
    }
}

/// The kernel's ephemeral port range (Linux's default when unknown).
fn ephemeral_range() -> (u16, u16) {
    let read = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok();
    let mut bounds = read
        .iter()
        .flat_map(|t| t.split_whitespace())
        .filter_map(|n| n.parse::<u16>().ok());
    match (bounds.next(), bounds.next()) {
        (Some(start), Some(end)) => (start, end),
        _ => (32768, 60999),
    }
}

/// A fresh directory under the system's temporary directory.
pub fn fresh_dir(kind: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("aigentable-{kind}-{}", ulid::Ulid::generate()));
    std::fs::create_dir_all(&dir).expect("storage directory");
    dir
}

/// Waits until something listens on `port`.
async fn listening(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} listens on {port}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn stop(child: &mut Child, signal: &str) {
    let _ = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A redis-server with AOF fsynced on every write, as the shipped
/// configurations run it.
pub struct OwnRedis {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

impl OwnRedis {
    pub async fn start() -> Self {
        let mut redis = Self {
            child: None,
            port: free_port(),
            dir: fresh_dir("redis"),
        };
        redis.up().await;
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts the server (again, from its AOF) and waits until it answers.
    pub async fn up(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(&self.dir)
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            .args(["--save", "", "--daemonize", "no", "--loglevel", "warning"])
            .args(["--maxmemory-policy", "noeviction"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        listening(self.port, "the own redis-server").await;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            // Listening is not loaded: PING answers LOADING until the AOF is
            // read back.
            let ready = match redis::Client::open(self.url()) {
                Ok(client) => match client.get_multiplexed_async_connection().await {
                    Ok(mut c) => redis::cmd("PING")
                        .query_async::<String>(&mut c)
                        .await
                        .is_ok(),
                    Err(_) => false,
                },
                Err(_) => false,
            };
            if ready {
                return;
            }
            assert!(Instant::now() < deadline, "the own redis-server answers");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Kills the server at once (its AOF is fsynced on every write).
    pub fn down(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.down();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A MongoDB-wire server (secantusd-rs, as `deploy/lib.sh` installs it).
pub struct OwnMongo {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

impl OwnMongo {
    pub async fn start() -> Self {
        let dir = fresh_dir("mongo");
        std::fs::write(dir.join("secantusd.toml"), "").expect("empty config");
        let mut mongo = Self {
            child: None,
            port: free_port(),
            dir,
        };
        mongo.up().await;
        mongo
    }

    pub fn uri(&self) -> String {
        format!("mongodb://127.0.0.1:{}", self.port)
    }

    /// Starts the server (again, on its storage) and waits until it listens.
    pub async fn up(&mut self) {
        let child = Command::new("secantusd-rs")
            .arg("--config")
            .arg(self.dir.join("secantusd.toml"))
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .arg("--storage-path")
            .arg(self.dir.join("data"))
            .args(["--cache-size", "128M", "--log-level", "ERROR"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("secantusd-rs starts (deploy/lib.sh installs it)");
        self.child = Some(child);
        listening(self.port, "the own secantusd-rs").await;
    }

    /// Stops the server as a restart does (SIGTERM, then waits for it).
    pub fn down(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop(&mut child, "-TERM");
        }
    }
}

impl Drop for OwnMongo {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_are_never_ephemeral_nor_given_twice() {
        let (low, high) = outside_ephemeral_range();
        let ports: Vec<u16> = (0..200).map(|_| free_port()).collect();
        assert!(ports.iter().all(|p| (low..high).contains(p)), "{ports:?}");
        let mut unique = ports.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), ports.len(), "{ports:?}");
        // The kernel's own pick for a listener comes from the range a
        // connection's local end is taken from, never one of ours.
        let ephemeral = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("an ephemeral port");
        let (start, end) = ephemeral_range();
        assert!(
            (start..=end).contains(&ephemeral),
            "{ephemeral} in {start}..={end}"
        );
        if start > 21000 || end < 64000 {
            assert!(
                !(low..high).contains(&ephemeral),
                "{ephemeral} in {low}..{high}"
            );
        }
    }
}
