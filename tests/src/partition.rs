//! A network partition between a process and a service: a TCP relay that
//! can be cut. While cut, no byte crosses in either direction and new
//! connections wait, as when packets are dropped (the peers see requests
//! that get no answer, not closed connections); healed, what waited flows
//! again, as TCP retransmission would deliver it.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub struct Partition {
    pub addr: SocketAddr,
    cut: watch::Sender<bool>,
    relay: JoinHandle<()>,
}

/// Waits while the link is cut.
async fn open(cut: &mut watch::Receiver<bool>) {
    let _ = cut.wait_for(|cut| !*cut).await;
}

async fn pipe<R, W>(mut from: R, mut to: W, mut cut: watch::Receiver<bool>)
where
    R: AsyncReadExt + Unpin,
    W: AsyncWriteExt + Unpin,
{
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        open(&mut cut).await;
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        // Read just before a cut: held until the link heals.
        open(&mut cut).await;
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

impl Partition {
    /// A relay to `upstream` (`host:port`), open.
    pub async fn start(upstream: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind relay");
        let addr = listener.local_addr().expect("relay address");
        let (cut, rx) = watch::channel(false);
        let upstream = upstream.to_owned();
        let relay = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let mut link = rx.clone();
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    open(&mut link).await;
                    let Ok(server) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    tokio::join!(pipe(cr, sw, link.clone()), pipe(sr, cw, link));
                });
            }
        });
        Self { addr, cut, relay }
    }

    /// `url` (a `scheme://host:port/...` address of the service) through the
    /// relay instead.
    pub fn route(&self, url: &str) -> String {
        let (scheme, rest) = url.split_once("://").unwrap_or(("redis", url));
        let (authority, path) = rest.find('/').map_or((rest, ""), |i| rest.split_at(i));
        let user = authority
            .rsplit_once('@')
            .map_or(String::new(), |(user, _)| format!("{user}@"));
        format!("{scheme}://{user}{}{path}", self.addr)
    }

    pub fn cut(&self) {
        self.cut.send_replace(true);
    }

    pub fn heal(&self) {
        self.cut.send_replace(false);
    }
}

impl Drop for Partition {
    fn drop(&mut self) {
        self.relay.abort();
    }
}

/// The `host:port` of a `scheme://[user@]host:port/...` address.
pub fn host_port(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let rest = rest.split('/').next().unwrap_or(rest);
    rest.rsplit_once('@').map_or(rest, |(_, host)| host)
}
