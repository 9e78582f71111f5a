//! Wake-ups of idle workers: one pub/sub connection per process listens to
//! every queue's `wake` channel of the namespace and pokes the workers of
//! that queue, so a job pushed to an idle queue starts in about a
//! round trip instead of a poll interval.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;

type Registry = Mutex<HashMap<String, Vec<Weak<Notify>>>>;

/// Cheap to clone; the listener stops when the last clone is dropped.
#[derive(Clone)]
pub struct WakeHub {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Arc<Registry>,
    task: JoinHandle<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl std::fmt::Debug for WakeHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WakeHub").finish_non_exhaustive()
    }
}

impl WakeHub {
    /// Starts listening. Waits (a few seconds at most) for the first
    /// subscription so that jobs pushed right after start are not missed;
    /// if Redis is unreachable, workers still find jobs by polling.
    pub async fn start(url: &str, namespace: &str) -> redis::RedisResult<Self> {
        let client = redis::Client::open(url)?;
        let pattern = super::wake_pattern(namespace);
        let registry: Arc<Registry> = Arc::default();
        let (ready_tx, ready_rx) = oneshot::channel();
        let task = tokio::spawn(listen(client, pattern, registry.clone(), ready_tx));
        if tokio::time::timeout(Duration::from_secs(5), ready_rx)
            .await
            .is_err()
        {
            tracing::warn!("queue wake-ups not subscribed yet, idle workers will poll");
        }
        Ok(Self {
            inner: Arc::new(Inner { registry, task }),
        })
    }

    /// The notifier poked whenever `channel` fires. Each worker gets its
    /// own, so that every idle worker of the queue wakes up.
    pub fn register(&self, channel: &str) -> Arc<Notify> {
        let notify = Arc::new(Notify::new());
        if let Ok(mut map) = self.inner.registry.lock() {
            let entry = map.entry(channel.to_owned()).or_default();
            entry.retain(|w| w.strong_count() > 0);
            entry.push(Arc::downgrade(&notify));
        }
        notify
    }
}

fn wake(registry: &Registry, channel: Option<&str>) {
    let Ok(map) = registry.lock() else { return };
    let poke = |list: &Vec<Weak<Notify>>| {
        for n in list.iter().filter_map(Weak::upgrade) {
            // notify_one keeps a permit when nobody waits yet, so a wake-up
            // racing with a worker's empty fetch is not lost.
            n.notify_one();
        }
    };
    match channel {
        Some(channel) => {
            if let Some(list) = map.get(channel) {
                poke(list);
            }
        }
        None => map.values().for_each(poke),
    }
}

async fn listen(
    client: redis::Client,
    pattern: String,
    registry: Arc<Registry>,
    ready: oneshot::Sender<()>,
) {
    let mut ready = Some(ready);
    let mut delay = Duration::from_millis(100);
    // Bounded by the process lifetime: the task is aborted with its hub.
    loop {
        match client.get_async_pubsub().await {
            Ok(mut pubsub) => match pubsub.psubscribe(&pattern).await {
                Ok(()) => {
                    delay = Duration::from_millis(100);
                    if let Some(tx) = ready.take() {
                        let _ = tx.send(());
                    }
                    // Wake-ups may have been missed while disconnected.
                    wake(&registry, None);
                    let mut messages = pubsub.on_message();
                    while let Some(msg) = messages.next().await {
                        wake(&registry, Some(msg.get_channel_name()));
                    }
                    tracing::warn!("queue wake-up subscription lost, reconnecting");
                }
                Err(e) => tracing::warn!(error = %e, "queue wake-up subscription failed"),
            },
            Err(e) => tracing::warn!(error = %e, "queue wake-up connection failed"),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}
