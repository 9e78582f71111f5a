//! Figures the benchmarks print.

use std::time::Duration;

use anyhow::Context;

use aigentable_platform::auth::password::Hasher;

/// How long after the last password hash its working memory has been
/// freed (`Hasher::KEEP_WARM`, and a margin): a process's idle memory is
/// read after that.
pub const HASH_MEMORY_FREED_AFTER: Duration =
    Hasher::KEEP_WARM.saturating_add(Duration::from_secs(2));

/// A `/proc/<pid>/status` field in KiB (`VmRSS`, `VmHWM`).
pub fn status_kib(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("no {field} in /proc/{pid}/status"))
}

/// CPU time (user + system) a process has used, in seconds. The kernel
/// reports it in USER_HZ ticks, 100 a second on Linux whatever the kernel's
/// own tick rate.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    stat_cpu_seconds(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// CPU time used by this process's threads whose name starts with
/// `prefix` (tokio names a runtime's threads, blocking ones included), in
/// seconds; threads that have exited are not counted.
pub fn own_threads_cpu_seconds(prefix: &str) -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    tasks
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm"))
                .is_ok_and(|comm| comm.trim_end().starts_with(prefix))
        })
        .filter_map(|t| stat_cpu_seconds(&std::fs::read_to_string(t.path().join("stat")).ok()?))
        .sum()
}

/// The processes whose command name is `comm` (as `/proc/<pid>/comm`
/// holds it: at most 15 bytes).
pub fn pids_named(comm: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim_end() == comm)
        })
        .collect()
}

/// User + system time of a `stat` line (a process's or a thread's).
fn stat_cpu_seconds(stat: &str) -> Option<f64> {
    // The command name (field 2) may hold spaces; count from after it.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / 100.0)
}

/// The `p`-th percentile (0 to 100) of `sorted` by nearest rank; zero
/// when there is no sample.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round();
    sorted[(rank as usize).min(sorted.len() - 1)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let s: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&s, 50.0), Duration::from_millis(51));
        assert_eq!(percentile(&s, 99.0), Duration::from_millis(99));
        assert_eq!(percentile(&s, 100.0), Duration::from_millis(100));
        assert_eq!(percentile(&[], 50.0), Duration::ZERO);
    }

    #[test]
    fn a_named_threads_cpu_is_told_apart() {
        let (ran, done) = std::sync::mpsc::channel();
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let spinner = std::thread::Builder::new()
            .name("stats-spinner".into())
            .spawn(move || {
                let until = std::time::Instant::now() + Duration::from_millis(300);
                let mut x = 0u64;
                while std::time::Instant::now() < until {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
                let _ = ran.send(());
                // Alive until read: an exited thread is no longer listed.
                let _ = stopped.recv();
            })
            .expect("spawn");
        done.recv().expect("spun");
        let spun = own_threads_cpu_seconds("stats-spin");
        let _ = stop.send(());
        spinner.join().expect("join");
        assert!(spun >= 0.2, "the spinning thread used {spun} s");
        assert!(own_threads_cpu_seconds("no-such-thread") == 0.0);
        assert!(cpu_seconds(std::process::id()).is_some_and(|all| all >= spun));
    }

    #[test]
    fn processes_are_found_by_name() {
        let comm = std::fs::read_to_string("/proc/self/comm").expect("comm");
        assert!(pids_named(comm.trim_end()).contains(&std::process::id()));
        assert!(pids_named("no-such-process").is_empty());
    }
}
