//! A minimal SMTP server on port 0 that records every message, so tests can
//! assert what the platform sent without a real mail server.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

#[derive(Debug, Clone, Default)]
pub struct SentMail {
    pub from: String,
    pub to: Vec<String>,
    /// Headers and body as received (dot-unstuffed).
    pub data: String,
}

#[derive(Clone)]
pub struct FakeSmtp {
    pub addr: SocketAddr,
    pub sent: Arc<Mutex<Vec<SentMail>>>,
    /// While true, every recipient is refused with `550`.
    pub reject: Arc<AtomicBool>,
}

impl FakeSmtp {
    /// `reject_rcpt`: answer `550` to every recipient, like a server that
    /// refuses an address for good.
    pub async fn start(reject_rcpt: bool) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake smtp");
        let addr = listener.local_addr().expect("fake smtp addr");
        let sent = Arc::new(Mutex::new(Vec::new()));
        let store = sent.clone();
        let reject = Arc::new(AtomicBool::new(reject_rcpt));
        let refusing = reject.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let store = store.clone();
                let refusing = refusing.clone();
                tokio::spawn(async move {
                    let (read, mut write) = stream.into_split();
                    let mut lines = BufReader::new(read).lines();
                    let _ = write.write_all(b"220 fake.smtp ESMTP\r\n").await;
                    let mut mail = SentMail::default();
                    while let Ok(Some(line)) = lines.next_line().await {
                        let upper = line.to_ascii_uppercase();
                        let reply: &[u8] = if upper.starts_with("EHLO") || upper.starts_with("HELO")
                        {
                            b"250-fake.smtp\r\n250 8BITMIME\r\n"
                        } else if upper.starts_with("MAIL FROM:") {
                            mail = SentMail {
                                from: line[10..].trim().to_owned(),
                                ..Default::default()
                            };
                            b"250 OK\r\n"
                        } else if upper.starts_with("RCPT TO:") {
                            if refusing.load(Ordering::SeqCst) {
                                b"550 5.1.1 mailbox unavailable\r\n"
                            } else {
                                mail.to.push(line[8..].trim().to_owned());
                                b"250 OK\r\n"
                            }
                        } else if upper == "DATA" {
                            let _ = write.write_all(b"354 end with .\r\n").await;
                            let mut data = String::new();
                            while let Ok(Some(l)) = lines.next_line().await {
                                if l == "." {
                                    break;
                                }
                                data.push_str(l.strip_prefix('.').unwrap_or(&l));
                                data.push('\n');
                            }
                            mail.data = data;
                            if let Ok(mut s) = store.lock() {
                                s.push(std::mem::take(&mut mail));
                            }
                            b"250 OK queued\r\n"
                        } else if upper == "QUIT" {
                            let _ = write.write_all(b"221 bye\r\n").await;
                            break;
                        } else {
                            b"250 OK\r\n"
                        };
                        if write.write_all(reply).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        Self { addr, sent, reject }
    }

    pub fn url(&self) -> String {
        format!("smtp://{}", self.addr)
    }

    pub fn messages(&self) -> Vec<SentMail> {
        self.sent.lock().map(|s| s.clone()).unwrap_or_default()
    }
}
