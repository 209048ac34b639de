//! Freed memory handed back to the system. glibc keeps what the supervisor frees in its arenas,
//! where it still counts as resident: after a burst (engines lagging, tasks piling up, then
//! drained) the supervisor can hold hundreds of megabytes it no longer uses. Every
//! [`TRIM_PERIOD`], `malloc_trim(0)` returns the free pages of every arena. Elsewhere than
//! glibc on Linux this does nothing.

use std::time::Duration;

use tokio::sync::watch;

/// How often freed memory is handed back.
pub(crate) const TRIM_PERIOD: Duration = Duration::from_secs(10);

/// Hand freed memory back every [`TRIM_PERIOD`] until the supervisor stops.
pub(crate) async fn run(mut stop: watch::Receiver<bool>) {
    let mut ticks = tokio::time::interval(TRIM_PERIOD);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        tokio::select! {
            _ = stop.wait_for(|stop| *stop) => return,
            _ = ticks.tick() => {}
        }
        // It walks every arena under its lock: off the runtime's workers.
        let started = std::time::Instant::now();
        let released = tokio::task::spawn_blocking(trim).await.unwrap_or(false);
        tracing::debug!(target: "turbomon::supervisor", released, took_us = started.elapsed().as_micros() as u64, "freed memory handed back to the system");
    }
}

/// Return the free pages of every arena to the system; whether any were.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub(crate) fn trim() -> bool {
    // SAFETY: malloc_trim takes no pointer and only releases memory the allocator holds free.
    unsafe { libc::malloc_trim(0) == 1 }
}

/// Nothing to do with another allocator.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub(crate) fn trim() -> bool {
    false
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn memory_freed_between_live_blocks_is_handed_back() {
        use super::trim;

        // 32 MB in small blocks (below the mmap threshold), all freed but every 64th: the free
        // space lies between live blocks, where only a trim returns it.
        let mut blocks: Vec<Vec<u8>> = (0..32_768).map(|i| vec![i as u8; 1024]).collect();
        let mut kept = Vec::new();
        for (i, block) in blocks.drain(..).enumerate() {
            if i % 64 == 0 {
                kept.push(block);
            }
        }
        assert!(trim(), "free pages were found and handed back");
        assert_eq!(kept.len(), 512);
        assert!(kept.iter().enumerate().all(|(i, b)| b[0] == (i * 64) as u8));
    }
}
