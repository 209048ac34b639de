//! Pure scheduling arithmetic: where in its start window each (relator, node) starts (a stable
//! splay), and a timeline of due tasks that releases everything due within one batch window
//! together (the scheduler orders what it takes by priority before sending).

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

/// A 64-bit hash of `parts` that is the same on every machine, in every process and every
/// release, so a restart (or an upgrade) does not move any task's start. Not `std`'s hasher:
/// its output may differ between releases, and `RandomState` is seeded per process.
///
/// FNV-1a over the bytes (each part followed by a 0xff separator, so `["ab", "c"]` and
/// `["a", "bc"]` differ), finished by murmur3's `fmix64`. FNV-1a alone is not enough: a change
/// in the last bytes, as between `n001` and `n002`, barely reaches the top bits that
/// [`splay_offset`] uses, so such nodes started within milliseconds of each other. `fmix64` is
/// a bijection in which every input bit flips each output bit with probability about one half.
///
/// The values are pinned by a test: changing them moves every task's start (and its id) once.
pub(crate) fn stable_hash(parts: &[&str]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = OFFSET;
    for part in parts {
        for byte in part.bytes().chain(std::iter::once(0xff)) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(PRIME);
        }
    }
    fmix64(hash)
}

/// murmur3's 64-bit finaliser: spreads every bit of `hash` over all 64 (full avalanche).
fn fmix64(mut hash: u64) -> u64 {
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    hash ^ (hash >> 33)
}

/// How far after its relator's firing the task for `node` starts: a stable fraction of
/// `randomize_percent` % of the start window.
pub(crate) fn splay_offset(
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
pub(crate) struct Timeline<T> {
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
    pub(crate) fn insert(&mut self, due: Instant, item: T) {
        self.sequence += 1;
        self.entries.insert((due, self.sequence), item);
    }

    /// The earliest due instant.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.entries.keys().next().map(|(due, _)| *due)
    }

    /// When something is due at `now`, take it together with every item due before
    /// `now + batch_window`: items that are nearly due travel with the ones that are due, so
    /// batches still fill when starts are spread. Nothing is taken early on its own.
    #[cfg(test)]
    pub(crate) fn take_due(&mut self, now: Instant, batch_window: Duration) -> Vec<T> {
        if self.next_due().is_none_or(|due| due > now) {
            return Vec::new();
        }
        self.take_before(now + batch_window)
    }

    /// Take every item due before `horizon` (the caller decided something is due).
    pub(crate) fn take_before(&mut self, horizon: Instant) -> Vec<T> {
        let later = self.entries.split_off(&(horizon, 0));
        std::mem::replace(&mut self.entries, later)
            .into_values()
            .collect()
    }

    /// The items waiting, in due order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &T> {
        self.entries.values()
    }

    /// Items waiting.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Remove every item `matches` says, returning how many.
    pub(crate) fn remove_where(&mut self, mut matches: impl FnMut(&T) -> bool) -> usize {
        let before = self.entries.len();
        self.entries.retain(|_, item| !matches(item));
        before - self.entries.len()
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

    /// Starts per one-second slice of the spread, for `nodes` splayed by `relator`.
    fn starts_per_second(
        relator: &str,
        nodes: &[String],
        window: Duration,
        randomize: u8,
    ) -> Vec<usize> {
        let spread = window.mul_f64(f64::from(randomize) / 100.0);
        let mut per_second = vec![0usize; spread.as_secs() as usize];
        for node in nodes {
            let offset = splay_offset(relator, node, window, randomize);
            assert!(
                offset < spread,
                "{node} starts at {offset:?}, past the {spread:?} spread"
            );
            per_second[offset.as_secs() as usize] += 1;
        }
        per_second
    }

    #[test]
    fn sequential_node_names_spread_evenly_over_the_window() {
        // Names that differ only in their last characters: FNV-1a alone barely moves the top
        // bits for those, which clumped such nodes within milliseconds of each other.
        let styles: [(&str, Vec<String>); 2] = [
            ("n001", (1..=200).map(|i| format!("n{i:03}")).collect()),
            ("node-1", (1..=200).map(|i| format!("node-{i}")).collect()),
        ];
        for relator in ["relator", "r", "web-checks"] {
            for (style, nodes) in &styles {
                let per_second = starts_per_second(relator, nodes, Duration::from_secs(30), 50);
                assert_eq!(per_second.len(), 15);
                let slices = per_second.len();
                // No slice above twice the mean (200 / 15), compared without rounding.
                let crowded = per_second.iter().any(|&n| n * slices > 2 * nodes.len());
                let empty = per_second.contains(&0);
                assert!(
                    !crowded && !empty,
                    "relator `{relator}`, names like `{style}`: starts per second {per_second:?}"
                );
            }
        }
    }

    #[test]
    fn names_one_character_apart_differ_in_about_half_the_top_bits() {
        // The top bits are what `splay_offset` uses; a good mix flips each with probability
        // one half, so neighbours differ in about 16 of the top 32 on average.
        for names in [
            (0..=200).map(|i| format!("n{i:03}")).collect::<Vec<_>>(),
            (0..=200).map(|i| format!("node-{i}")).collect(),
        ] {
            let flipped: Vec<u32> = names
                .windows(2)
                .map(|pair| {
                    let a = stable_hash(&["r", &pair[0]]);
                    let b = stable_hash(&["r", &pair[1]]);
                    ((a ^ b) >> 32).count_ones()
                })
                .collect();
            let mean = f64::from(flipped.iter().sum::<u32>()) / flipped.len() as f64;
            assert!(
                (12.0..=20.0).contains(&mean),
                "names like `{}`: {mean:.1} of the top 32 bits differ on average",
                names[1]
            );
        }
    }

    #[test]
    fn the_same_relator_and_node_always_get_the_same_offset() {
        let a = splay_offset("r", "web-1", Duration::from_secs(60), 25);
        let b = splay_offset("r", "web-1", Duration::from_secs(60), 25);
        assert_eq!(a, b);
        assert_ne!(a, splay_offset("r", "web-2", Duration::from_secs(60), 25));
        // Pinned: a restart must not move a task's start, so any change of hash (which moves
        // every start, and every task id, once) has to be a deliberate edit of these values.
        assert_eq!(stable_hash(&["r", "web-1"]), 0x8591_739c_260c_d355);
        assert_eq!(a, Duration::from_nanos(7_826_259_980));
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
