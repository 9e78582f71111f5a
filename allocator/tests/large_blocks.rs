//! In a process of its own (one test in this binary): the allocator's
//! settings are the whole process's.

use aigentable_platform::auth::password;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Each hash takes 19 MiB on a blocking thread: with glibc's default the
/// second and later ones stayed resident in those threads' arenas.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_hashes_leave_no_memory_behind() {
    aigentable_allocator::return_large_blocks();
    password::hash("the first one maps its own memory either way")
        .await
        .expect("hash");
    let before = rss_kib();
    for i in 0..4 {
        password::hash(&format!("one after the other {i}"))
            .await
            .expect("hash");
    }
    let together: Vec<_> = (0..4)
        .map(|i| tokio::spawn(async move { password::hash(&format!("at once {i}")).await }))
        .collect();
    for h in together {
        h.await.expect("task").expect("hash");
    }
    let after = rss_kib();
    let grown_mib = after.saturating_sub(before) as f64 / 1024.0;
    eprintln!("resident before {before} KiB, after eight hashes {after} KiB");
    assert!(
        before > 0 && grown_mib < 8.0,
        "eight password hashes left {grown_mib:.1} MiB resident"
    );
}
