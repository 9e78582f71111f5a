//! Services of a test's or a benchmark's own, on free ports with their own
//! storage, for faults the shared ones must never suffer: a Redis and a
//! MongoDB-wire server that can be stopped and started again.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
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
