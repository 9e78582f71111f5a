//! SSRF canaries: a local HTTP server that counts every connection made to
//! it (on 127.0.0.1 and, where the host has IPv6, on ::1 with the same
//! port), and a redirector that answers every request with a 302 to a
//! given URL. An outbound guard that works leaves the canary at zero.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

#[derive(Clone, Debug)]
pub struct Canary {
    pub port: u16,
    hits: Arc<AtomicUsize>,
    /// Whether it also listens on [::1]:port.
    pub ipv6: bool,
}

/// What the server answers: a JSON body, or a redirect.
#[derive(Clone, Debug)]
enum Answer {
    Json(String),
    Redirect(String),
}

async fn serve(listener: TcpListener, hits: Arc<AtomicUsize>, answer: Answer) {
    while let Ok((mut stream, _)) = listener.accept().await {
        hits.fetch_add(1, Ordering::SeqCst);
        let answer = answer.clone();
        tokio::spawn(async move {
            // Read the request head (enough for these tests), then answer.
            let mut buf = vec![0u8; 16 * 1024];
            let mut read = 0;
            while read < buf.len() {
                match stream.read(&mut buf[read..]).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => read += n,
                }
                if buf[..read].windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
            let response = match answer {
                Answer::Json(body) => format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                ),
                Answer::Redirect(to) => format!(
                    "HTTP/1.1 302 Found\r\nlocation: {to}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                ),
            };
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
}

async fn start(answer: Answer) -> Canary {
    let v4 = TcpListener::bind("127.0.0.1:0").await.expect("bind canary");
    let port = v4.local_addr().expect("canary address").port();
    let hits = Arc::new(AtomicUsize::new(0));
    let v6 = TcpListener::bind(SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port)))
        .await
        .ok();
    let ipv6 = v6.is_some();
    tokio::spawn(serve(v4, hits.clone(), answer.clone()));
    if let Some(v6) = v6 {
        tokio::spawn(serve(v6, hits.clone(), answer));
    }
    Canary { port, hits, ipv6 }
}

impl Canary {
    /// A canary answering every request with `body` (JSON).
    pub async fn start(body: &str) -> Self {
        start(Answer::Json(body.to_owned())).await
    }

    /// A server answering every request with a 302 to `location`.
    pub async fn redirecting_to(location: &str) -> Self {
        start(Answer::Redirect(location.to_owned())).await
    }

    /// Connections accepted so far.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every spelling of "this machine" (and two internal addresses that
    /// must be refused before any connect) with the canary's port.
    pub fn attack_urls(&self) -> Vec<String> {
        let p = self.port;
        vec![
            format!("http://127.0.0.1:{p}"),
            format!("http://localhost:{p}"),
            format!("http://[::1]:{p}"),
            format!("http://127.1:{p}"),
            format!("http://2130706433:{p}"),
            format!("http://0x7f.0.0.1:{p}"),
            format!("http://0177.0.0.1:{p}"),
            format!("http://[::ffff:127.0.0.1]:{p}"),
            "http://169.254.169.254".to_owned(),
            "http://10.0.0.1".to_owned(),
        ]
    }
}
