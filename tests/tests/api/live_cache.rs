//! The pub/sub-invalidated cache behind the channel routes and the
//! configuration replies read (`platform::live_cache`), against the real
//! Redis: served from memory until a change is announced, dropped on
//! announcement, and never refilled with a value read before one.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use aigentable_platform::live_cache::{self, Cache, LiveCache, Spec};
use aigentable_tests::spawn_app;

fn drop_named(cache: &Cache<String, u32>, message: &str) -> bool {
    cache.invalidate(message);
    true
}

#[tokio::test]
async fn a_value_read_before_an_announcement_is_not_cached_past_it() {
    let app = spawn_app().await;
    let config = &app.platform.config;
    let channel = format!("{}:live-cache-test", config.redis_namespace);
    let live: LiveCache<String, u32> = LiveCache::start(
        config.redis_url.expose(),
        Spec {
            what: "test values",
            channel: channel.clone(),
            ttl: Duration::from_secs(30),
            capacity: 100,
            invalidate: drop_named,
        },
    )
    .await
    .expect("started");
    assert!(live.is_listening(), "subscribed within the start's wait");

    let loads = Arc::new(AtomicU32::new(0));
    let load = |value: u32| {
        let loads = loads.clone();
        async move {
            loads.fetch_add(1, Ordering::SeqCst);
            Ok::<u32, std::convert::Infallible>(value)
        }
    };
    let k = || "k".to_owned();
    assert_eq!(live.get_or_load(k(), load(1)).await, Ok(1));
    assert_eq!(
        live.get_or_load(k(), load(2)).await,
        Ok(1),
        "served from memory"
    );
    assert_eq!(loads.load(Ordering::SeqCst), 1);

    // An announcement drops it on this process (as on every other one).
    live_cache::announce(&app.platform.kv, &channel, "k").await;
    let dropped = app
        .eventually(Duration::from_secs(5), || async {
            live.get(&k(), live.ticket()).is_none().then_some(())
        })
        .await;
    assert!(dropped.is_some(), "the announcement dropped the entry");
    assert_eq!(live.get_or_load(k(), load(3)).await, Ok(3), "read again");

    // A lookup that started before an announcement and finishes after it
    // does not cache what it read.
    let before = live.ticket();
    live_cache::announce(&app.platform.kv, &channel, "k").await;
    let seen = app
        .eventually(Duration::from_secs(5), || async {
            live.get(&k(), live.ticket()).is_none().then_some(())
        })
        .await;
    assert!(seen.is_some(), "the announcement arrived");
    live.fill("j".to_owned(), 7, before);
    assert_eq!(live.get(&"j".to_owned(), live.ticket()), None, "not cached");
    live.fill("j".to_owned(), 8, live.ticket());
    assert_eq!(live.get(&"j".to_owned(), live.ticket()), Some(8));
    app.cleanup().await;
}
