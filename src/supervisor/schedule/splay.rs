//! Pure scheduling arithmetic: where in its start window each (relator, node) starts (a stable
//! splay), and a timeline of due tasks that releases everything due within one batch window
//! together, high priority first.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

/// FNV-1a, 64 bit: a hash that is the same on every machine and every release, so a restart
/// does not move any task's start.
pub fn stable_hash(parts: &[&str]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = OFFSET;
    for part in parts {
        for byte in part.bytes().chain(std::iter::once(0xff)) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(PRIME);
        }
    }
    hash
}

/// How far after its relator's firing the task for `node` starts: a stable fraction of
/// `randomize_percent` % of the start window.
pub fn splay_offset(
    relator: &str,
    node: &str,
    window: Duration,
    randomize_percent: u8,
) -> Duration {
    let spread = window.mul_f64(f64::from(randomize_percent.min(100)) / 100.0);
    if spread.is_zero() {
        return Duration::ZERO;
    }
    // The top 53 bits give a uniform fraction in [0, 1).
    let fraction = (stable_hash(&[relator, node]) >> 11) as f64 / (1u64 << 53) as f64;
    spread.mul_f64(fraction)
}

/// Tasks waiting for their start instant, in order of due time then insertion.
#[derive(Debug)]
pub struct Timeline<T> {
    entries: BTreeMap<(Instant, u64), T>,
    sequence: u64,
}

impl<T> Default for Timeline<T> {
    fn default() -> Self {
        Self {
            entries: BTreeMap::new(),
            sequence: 0,
        }
    }
}

impl<T> Timeline<T> {
    /// Add an item due at `due`.
    pub fn insert(&mut self, due: Instant, item: T) {
        self.sequence += 1;
        self.entries.insert((due, self.sequence), item);
    }

    /// The earliest due instant.
    pub fn next_due(&self) -> Option<Instant> {
        self.entries.keys().next().map(|(due, _)| *due)
    }

    /// When something is due at `now`, take it together with every item due before
    /// `now + batch_window`: items that are nearly due travel with the ones that are due, so
    /// batches still fill when starts are spread. Nothing is taken early on its own.
    pub fn take_due(&mut self, now: Instant, batch_window: Duration) -> Vec<T> {
        if self.next_due().is_none_or(|due| due > now) {
            return Vec::new();
        }
        let horizon = now + batch_window;
        let later = self.entries.split_off(&(horizon, 0));
        std::mem::replace(&mut self.entries, later)
            .into_values()
            .collect()
    }

    /// Items waiting.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ten_thousand_starts_over_a_window_never_crowd_a_second() {
        let window = Duration::from_secs(60);
        let randomize = 50;
        let spread_secs = 30;
        let mut per_second = vec![0usize; spread_secs];
        for node in 0..10_000 {
            let offset = splay_offset("relator", &format!("node-{node}"), window, randomize);
            assert!(offset < Duration::from_secs(spread_secs as u64));
            per_second[offset.as_secs() as usize] += 1;
        }
        let mean = 10_000 / spread_secs;
        let max = per_second.iter().copied().max().unwrap_or(0);
        assert!(max <= 2 * mean, "a 1 s slice holds {max}, mean {mean}");
    }

    #[test]
    fn the_same_relator_and_node_always_get_the_same_offset() {
        let a = splay_offset("r", "web-1", Duration::from_secs(60), 25);
        let b = splay_offset("r", "web-1", Duration::from_secs(60), 25);
        assert_eq!(a, b);
        assert_ne!(a, splay_offset("r", "web-2", Duration::from_secs(60), 25));
        // Pinned, so that a change of hash (which would move every task) is noticed.
        assert_eq!(stable_hash(&["r", "web-1"]), 0x8715_41e4_7cf7_137f);
        assert_eq!(
            splay_offset("r", "x", Duration::from_secs(60), 0),
            Duration::ZERO
        );
    }

    #[test]
    fn tasks_due_within_one_batch_window_are_released_together() {
        let start = Instant::now();
        let mut timeline = Timeline::default();
        for ms in [0u64, 40, 99, 100, 250] {
            timeline.insert(start + Duration::from_millis(ms), ms);
        }
        assert_eq!(
            timeline.take_due(start, Duration::from_millis(100)),
            vec![0, 40, 99]
        );
        assert_eq!(
            timeline.next_due(),
            Some(start + Duration::from_millis(100))
        );
        assert_eq!(timeline.len(), 2);
    }
}
