//! How the process's allocator gives memory back to the system: the
//! workspace's one exception to its ban on unsafe code, one glibc call.

/// From this size up, glibc serves an allocation with a mapping of its own
/// (its initial default; below it, from the thread's arena).
pub const OWN_MAPPING_FROM: usize = 128 * 1024;

/// Makes glibc's malloc give every block of [`OWN_MAPPING_FROM`] or more
/// back to the system when it is freed, for the life of the process.
///
/// By default glibc raises that threshold to the size of the largest block
/// freed so far (up to 32 MiB). After the first password hash (argon2's
/// 19 MiB of working memory) every later one came from the arena of the
/// blocking thread that ran it and stayed resident once freed: an api that
/// had served five logins held 100 MiB more than at start. Setting the
/// threshold also stops that adjustment. Binaries call it at start, once
/// their logging is up (a refusal is logged); elsewhere than on glibc it
/// does nothing.
pub fn return_large_blocks() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let threshold = libc::c_int::try_from(OWN_MAPPING_FROM).unwrap_or(libc::c_int::MAX);
        // SAFETY: mallopt sets one of glibc's allocator parameters from
        // plain integers; it takes the allocator's own lock and is safe to
        // call at any time, from any thread.
        #[allow(unsafe_code)]
        let set = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, threshold) };
        if set != 1 {
            tracing::warn!(
                threshold,
                "the allocator's mapping threshold was refused; freed large blocks may stay resident"
            );
        }
    }
}
