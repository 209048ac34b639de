//! The automatic batch size (`task_submit_batch_size = "auto"`, `task_info_batch_size =
//! "auto"`): one [`AutoSize`] controller per engine and kind of loop, fed what each loop
//! measured ([`LoopSample`]) and answering with the batch size and batches in flight of the next
//! loop. Pure and synchronous: the loops and `bench` drive it, tests drive it without a network.
//!
//! What it looks for: the smallest batch whose loop time stays within [`TOLERANCE`] of the best
//! loop time seen for the present workload. Small packets are what a slow or lossy link
//! delivers best, so among sizes that are as fast, the smallest wins.
//!
//! How it moves:
//! - **Back off at once** when a batch went unanswered (a timeout, or a packet the link
//!   black-holed): the size halves and becomes a ceiling, the batches in flight halve too (a
//!   black hole stalls on bursts, and batches in flight leave together). Ceilings are lifted one
//!   step only after [`CEILING_PROBE_LOOPS`] clean loops, so a black hole costs one timeout per
//!   long stretch, not one per loop.
//! - **Jump** when the loop needed several rounds (more batches than may be in flight): a size
//!   that leaves batches waiting for a round trip is slower for sure, so the size goes straight
//!   to the step that carries the loop in one round, and the sizes below it are out of the
//!   running (a time they measured on a lighter loop, such as a first monitor loop that
//!   releases nothing, must not win the comparison).
//! - **Climb or descend one step per loop** on a ladder of doubling sizes while that keeps
//!   improving (up) or stays within tolerance (down), then **settle** on the smallest size
//!   within tolerance of the best.
//! - **Stay settled** (no oscillation): once settled it moves only when a loop fails, when the
//!   workload changes size by more than twice, when the settled size's loop time drifts by more
//!   than [`DRIFT`] for [`DRIFT_LOOPS`] loops in a row (the link changed: explore again), or to
//!   try the next smaller step once every [`PROBE_EVERY`] loops, kept only if as fast.
//!
//! Loop times are compared by the fastest of the last [`SAMPLES_KEPT`] loops of a size: a lost
//! segment only ever adds time, so the minimum is what the size itself costs.

use std::collections::BTreeMap;
use std::time::Duration;

/// A size within this fraction of the best loop time counts as as fast as the best.
pub const TOLERANCE: f64 = 0.05;
/// Climbing goes on while the next step is faster than this fraction of the present one.
const CLIMB_GAIN: f64 = 0.03;
/// Loops of one size whose fastest stands for it.
pub const SAMPLES_KEPT: usize = 4;
/// Settled loops between two tries of the next smaller step.
pub const PROBE_EVERY: u32 = 25;
/// Clean loops before a ceiling set by a timeout is lifted one step.
pub const CEILING_PROBE_LOOPS: u32 = 100;
/// A settled size whose loop time grows or shrinks by this fraction ...
pub const DRIFT: f64 = 0.25;
/// ... for this many loops in a row means the link changed.
pub const DRIFT_LOOPS: u32 = 4;

/// Where an automatic size starts: the default fixed size (30), within `min..=max`.
pub fn start_size(min: usize, max: usize) -> usize {
    30.clamp(min.max(1), max.max(min.max(1)))
}

/// What one loop measured, for [`AutoSize::observe`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoopSample {
    /// Tasks (submission) or ids (monitor) the loop carried.
    pub items: usize,
    /// Batch size the loop ran with (after any shrink).
    pub batch_size: usize,
    /// Batches allowed in flight.
    pub in_flight: usize,
    /// Loop time (only meaningful when `completed`).
    pub elapsed: Duration,
    /// Bytes of the loop's packets (requests and replies, gRPC framing included).
    pub bytes: u64,
    /// Every item answered.
    pub completed: bool,
    /// A batch went unanswered within the batch timeout, or was refused as too large.
    pub timed_out: bool,
}

/// Why the controller changed its choice: logged with every change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// A batch went unanswered: halved, and a ceiling set.
    TimedOut,
    /// The loop needed several rounds of batches in flight.
    SeveralRounds,
    /// Exploring upwards: the last step up was faster.
    Climbing,
    /// Exploring downwards: the smaller step was as fast.
    Descending,
    /// Exploration over: the smallest size within tolerance of the best.
    Settled,
    /// Trying the next smaller step (periodic).
    Probing,
    /// The probe was slower: back to the settled size.
    ProbeSlower,
    /// The settled size's loop time drifted: exploring again.
    LinkChanged,
    /// The workload changed size: exploring again.
    WorkloadChanged,
    /// A ceiling set by a timeout was lifted one step after clean loops.
    CeilingLifted,
    /// `batch_size_min`, `batch_size_max` or the batches in flight changed in the configuration.
    BoundsChanged,
}

impl Reason {
    /// A few words for the log line.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::TimedOut => "a batch went unanswered: halved, with a ceiling",
            Reason::SeveralRounds => "the loop needed several rounds of batches in flight",
            Reason::Climbing => "the larger batch was faster: trying the next",
            Reason::Descending => "the smaller batch was as fast: trying the next",
            Reason::Settled => "settled on the smallest batch within tolerance of the best",
            Reason::Probing => "trying the next smaller batch",
            Reason::ProbeSlower => "the smaller batch was slower: back",
            Reason::LinkChanged => "loop time drifted: exploring again",
            Reason::WorkloadChanged => "the loop's size changed: exploring again",
            Reason::CeilingLifted => "clean loops since the last timeout: ceiling lifted a step",
            Reason::BoundsChanged => "the configured bounds changed",
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One change of choice, for the debug log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    /// Batch size before.
    pub from_size: usize,
    /// Batch size from the next loop.
    pub to_size: usize,
    /// Batches in flight before.
    pub from_in_flight: usize,
    /// Batches in flight from the next loop.
    pub to_in_flight: usize,
    /// Why.
    pub reason: Reason,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Up,
    Down,
    Settled,
    /// Trying `probe` below the settled `home`.
    Probing {
        home: usize,
    },
}

/// The automatic batch size of one kind of loop to one engine.
#[derive(Debug, Clone)]
pub struct AutoSize {
    min: usize,
    max: usize,
    in_flight_max: usize,
    size: usize,
    in_flight: usize,
    /// Largest size allowed since a timeout.
    ceiling: usize,
    clean_since_ceiling: u32,
    clean_since_in_flight_cut: u32,
    phase: Phase,
    /// Recent loop times per size, for the present workload.
    times: BTreeMap<usize, Vec<Duration>>,
    /// Items of the loop the times were measured for.
    workload: Option<usize>,
    settled_loops: u32,
    /// Loop time of the settled size when it settled, and loops in a row off it.
    settled_reference: Option<Duration>,
    drifting: u32,
    /// Whether this exploration has gone downwards yet (an upward one that ends looks below
    /// where it started before settling).
    descended: bool,
}

impl AutoSize {
    /// A controller choosing between `min` and `max` (both at least 1), starting at `start`
    /// (clamped), with at most `in_flight_max` batches in flight.
    pub fn new(start: usize, min: usize, max: usize, in_flight_max: usize) -> Self {
        let min = min.max(1);
        let max = max.max(min);
        let in_flight_max = in_flight_max.max(1);
        let size = start.clamp(min, max);
        // Start towards the far side of the ladder: from the bottom up, from the top down.
        let phase = if ladder_position(size, min, max) < 0.5 {
            Phase::Up
        } else {
            Phase::Down
        };
        Self {
            min,
            max,
            in_flight_max,
            size,
            in_flight: in_flight_max,
            ceiling: max,
            clean_since_ceiling: 0,
            clean_since_in_flight_cut: 0,
            phase,
            times: BTreeMap::new(),
            workload: None,
            settled_loops: 0,
            settled_reference: None,
            drifting: 0,
            descended: false,
        }
    }

    /// The batch size for the next loop.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Batches in flight for the next loop.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Whether the controller has settled (not exploring or probing).
    pub fn is_settled(&self) -> bool {
        self.phase == Phase::Settled
    }

    /// New bounds from a reloaded configuration: the choice is clamped into them, what was
    /// learnt is kept.
    pub fn set_bounds(&mut self, min: usize, max: usize, in_flight_max: usize) -> Option<Change> {
        let min = min.max(1);
        let max = max.max(min);
        let in_flight_max = in_flight_max.max(1);
        if (min, max, in_flight_max) == (self.min, self.max, self.in_flight_max) {
            return None;
        }
        let before = (self.size, self.in_flight);
        self.min = min;
        self.max = max;
        self.in_flight_max = in_flight_max;
        self.ceiling = self.ceiling.clamp(min, max);
        self.size = self.size.clamp(min, self.ceiling);
        self.in_flight = self.in_flight.min(in_flight_max);
        self.times.retain(|&s, _| (min..=max).contains(&s));
        self.change(before, Reason::BoundsChanged)
    }

    /// Take what one loop measured; returns the change made for the next loop, if any.
    pub fn observe(&mut self, sample: &LoopSample) -> Option<Change> {
        let before = (self.size, self.in_flight);
        if sample.timed_out {
            return self.back_off(sample, before);
        }
        if !sample.completed || sample.items == 0 {
            // A loop that failed for another reason (the engine away) says nothing of sizes.
            return None;
        }
        self.clean_since_ceiling = self.clean_since_ceiling.saturating_add(1);
        self.clean_since_in_flight_cut = self.clean_since_in_flight_cut.saturating_add(1);
        if let Some(reason) = self.lift_limits() {
            return self.change(before, reason);
        }
        if self.workload_changed(sample.items) {
            self.explore_again();
            // Carry on from this loop's measurement.
        }
        self.workload = Some(sample.items);
        // Sizes above the loop's items send the same single batch: measure under the effective
        // size so that they are not told apart.
        let used = sample.batch_size.min(sample.items).max(1);
        let samples = self.times.entry(used).or_default();
        samples.push(sample.elapsed);
        if samples.len() > SAMPLES_KEPT {
            samples.remove(0);
        }
        let rounds = sample
            .items
            .div_ceil(used)
            .div_ceil(sample.in_flight.max(1));
        if rounds > 1 && self.phase != Phase::Settled {
            // Waiting a round trip per round is slower for sure: go straight to one round.
            let one_round = sample.items.div_ceil(sample.in_flight.max(1));
            let target = self.rung_at_least(one_round);
            if target > self.size {
                // Sizes that need several rounds are out of the running: their loop times,
                // measured on another loop's workload (a first monitor loop releases nothing),
                // must not outbid the one-round size.
                self.times.retain(|&size, _| size >= target);
                self.size = target;
                self.phase = Phase::Up;
                return self.change(before, Reason::SeveralRounds);
            }
        }
        let reason = match self.phase {
            Phase::Up => self.step_up(used, sample.items),
            Phase::Down => self.step_down(used, sample.items),
            Phase::Settled => self.while_settled(used),
            Phase::Probing { home } => self.after_probe(used, home),
        };
        reason.and_then(|reason| self.change(before, reason))
    }

    fn back_off(&mut self, sample: &LoopSample, before: (usize, usize)) -> Option<Change> {
        let failed = sample.batch_size.min(sample.items.max(1)).max(1);
        self.ceiling = (failed / 2).clamp(self.min, self.max);
        self.size = self.size.min(self.ceiling);
        let batches = sample.items.div_ceil(failed);
        if batches > 1 && sample.in_flight > 1 {
            // Several batches left together: the burst may be what the link refused.
            self.in_flight = (sample.in_flight.min(batches) / 2).max(1);
            self.clean_since_in_flight_cut = 0;
        }
        self.clean_since_ceiling = 0;
        // What was measured above the ceiling no longer applies; settle below it.
        self.times.retain(|&s, _| s <= self.ceiling);
        self.phase = Phase::Settled;
        self.settled_loops = 0;
        self.settled_reference = None;
        self.drifting = 0;
        self.change(before, Reason::TimedOut)
    }

    /// Lift a ceiling or an in-flight cut one step after enough clean loops.
    fn lift_limits(&mut self) -> Option<Reason> {
        let mut lifted = false;
        if self.ceiling < self.max && self.clean_since_ceiling >= CEILING_PROBE_LOOPS {
            self.ceiling = self.next_rung_up(self.ceiling).min(self.max);
            self.clean_since_ceiling = 0;
            lifted = true;
        }
        if self.in_flight < self.in_flight_max
            && self.clean_since_in_flight_cut >= CEILING_PROBE_LOOPS
        {
            self.in_flight = (self.in_flight * 2).min(self.in_flight_max);
            self.clean_since_in_flight_cut = 0;
            lifted = true;
        }
        lifted.then_some(Reason::CeilingLifted)
    }

    fn workload_changed(&self, items: usize) -> bool {
        self.workload
            .is_some_and(|w| items > w.saturating_mul(2) || items.saturating_mul(2) < w)
    }

    fn explore_again(&mut self) {
        self.descended = false;
        self.times.clear();
        self.settled_reference = None;
        self.drifting = 0;
        self.phase = if self.size < self.ceiling {
            Phase::Up
        } else {
            Phase::Down
        };
    }

    fn step_up(&mut self, used: usize, items: usize) -> Option<Reason> {
        let below = self.times.range(..used).next_back().map(|(&s, _)| s);
        let improving = match below {
            None => true,
            Some(below) => self.estimate(used)? < self.estimate(below)?.mul_f64(1.0 - CLIMB_GAIN),
        };
        let next = self.next_rung_up(used).min(self.ceiling);
        // Above the loop's items a larger batch is the same single batch.
        if improving && next > used && used < items {
            self.size = next;
            return Some(Reason::Climbing);
        }
        if below.is_none() && used > self.min && !self.descended {
            // At the top before anything below was measured: explore downwards instead (once:
            // what lies below may have been ruled out for needing several rounds).
            self.phase = Phase::Down;
            return self.step_down(used, items);
        }
        // Climbing is over; smaller packets below the start may be as fast: look there too.
        let smallest = self.times.keys().next().copied().unwrap_or(used);
        let next = self.next_rung_down(smallest);
        if !self.descended && next < smallest && !self.times.contains_key(&next) {
            self.phase = Phase::Down;
            self.descended = true;
            self.size = next;
            return Some(Reason::Descending);
        }
        self.settle()
    }

    fn step_down(&mut self, used: usize, _items: usize) -> Option<Reason> {
        self.descended = true;
        let best = self.best_estimate()?;
        let here = self.estimate(used)?;
        if here <= best.mul_f64(1.0 + TOLERANCE) && used > self.min {
            let next = self.next_rung_down(used).max(self.min);
            if !self.times.contains_key(&next) {
                self.size = next;
                return Some(Reason::Descending);
            }
        }
        self.settle()
    }

    /// Settle on the smallest measured size within tolerance of the best.
    fn settle(&mut self) -> Option<Reason> {
        let best = self.best_estimate()?;
        let chosen = self.times.keys().copied().find(|&s| {
            self.estimate(s)
                .is_some_and(|t| t <= best.mul_f64(1.0 + TOLERANCE))
        })?;
        self.size = chosen.clamp(self.min, self.ceiling);
        self.phase = Phase::Settled;
        self.settled_loops = 0;
        self.settled_reference = self.estimate(chosen);
        self.drifting = 0;
        Some(Reason::Settled)
    }

    fn while_settled(&mut self, used: usize) -> Option<Reason> {
        self.settled_loops = self.settled_loops.saturating_add(1);
        // The fastest of the recent loops, as everywhere: a lost segment now and then is no drift.
        let latest = self.estimate(used);
        if let (Some(reference), Some(latest)) = (self.settled_reference, latest) {
            let off = latest.as_secs_f64() / reference.as_secs_f64().max(1e-9);
            if !(1.0 - DRIFT..=1.0 + DRIFT).contains(&off) {
                self.drifting += 1;
            } else {
                self.drifting = 0;
            }
            if self.drifting >= DRIFT_LOOPS {
                self.explore_again();
                // Measured afresh from the size in force.
                self.times.clear();
                return if self.phase == Phase::Up {
                    let next = self.next_rung_up(used).min(self.ceiling);
                    (next > used).then(|| {
                        self.size = next;
                        Reason::LinkChanged
                    })
                } else {
                    let next = self.next_rung_down(used).max(self.min);
                    (next < used).then(|| {
                        self.size = next;
                        Reason::LinkChanged
                    })
                };
            }
        } else if self.settled_reference.is_none() {
            self.settled_reference = self.estimate(used);
        }
        if self.settled_loops >= PROBE_EVERY && used > self.min && self.size == used {
            self.settled_loops = 0;
            let next = self.next_rung_down(used).max(self.min);
            // Forget what the smaller size cost before: the link may have changed since.
            self.times.remove(&next);
            self.phase = Phase::Probing { home: used };
            self.size = next;
            return Some(Reason::Probing);
        }
        None
    }

    fn after_probe(&mut self, used: usize, home: usize) -> Option<Reason> {
        let (Some(probe), Some(home_time)) = (self.estimate(used), self.estimate(home)) else {
            self.phase = Phase::Settled;
            return None;
        };
        self.phase = Phase::Settled;
        self.settled_loops = 0;
        if probe <= home_time.mul_f64(1.0 + TOLERANCE) {
            // As fast with smaller packets: stay here.
            self.settled_reference = Some(probe);
            None
        } else {
            self.size = home;
            Some(Reason::ProbeSlower)
        }
    }

    fn estimate(&self, size: usize) -> Option<Duration> {
        self.times.get(&size)?.iter().min().copied()
    }

    fn best_estimate(&self) -> Option<Duration> {
        self.times
            .values()
            .filter_map(|t| t.iter().min())
            .min()
            .copied()
    }

    fn next_rung_up(&self, size: usize) -> usize {
        size.saturating_mul(2).min(self.max).max(size)
    }

    fn next_rung_down(&self, size: usize) -> usize {
        (size / 2).max(self.min)
    }

    /// The smallest size of the doubling ladder from the present size at or above `target`.
    fn rung_at_least(&self, target: usize) -> usize {
        let mut size = self.size.max(1);
        while size < target && size < self.ceiling {
            size = self.next_rung_up(size).min(self.ceiling);
        }
        size
    }

    fn change(&self, before: (usize, usize), reason: Reason) -> Option<Change> {
        ((self.size, self.in_flight) != before).then_some(Change {
            from_size: before.0,
            to_size: self.size,
            from_in_flight: before.1,
            to_in_flight: self.in_flight,
            reason,
        })
    }
}

/// Where `size` sits between `min` and `max` on a log scale (0 at `min`, 1 at `max`).
fn ladder_position(size: usize, min: usize, max: usize) -> f64 {
    if max <= min {
        return 0.0;
    }
    let (size, min, max) = (size as f64, min as f64, max as f64);
    (size / min).ln() / (max / min).ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A latency-bound link: one round trip per round of `in_flight` batches, plus a cost per
    /// byte (`per_item` per item, `per_batch` per batch).
    fn model(items: usize, size: usize, in_flight: usize) -> Duration {
        let batches = items.div_ceil(size);
        let rounds = batches.div_ceil(in_flight) as u32;
        Duration::from_millis(50) * rounds
            + Duration::from_micros(80) * items as u32
            + Duration::from_micros(300) * batches as u32
    }

    fn run(auto: &mut AutoSize, items: usize, loops: usize) -> Vec<usize> {
        (0..loops)
            .map(|_| {
                let size = auto.size();
                let sample = LoopSample {
                    items,
                    batch_size: size,
                    in_flight: auto.in_flight(),
                    elapsed: model(items, size, auto.in_flight()),
                    bytes: 0,
                    completed: true,
                    timed_out: false,
                };
                auto.observe(&sample);
                size
            })
            .collect()
    }

    #[test]
    fn from_one_it_climbs_to_a_single_round_and_settles_without_oscillating() {
        let mut auto = AutoSize::new(1, 1, 1000, 64);
        let sizes = run(&mut auto, 640, 60);
        let settled = sizes[20];
        assert!(auto.is_settled() || sizes[40..].iter().all(|&s| s == settled));
        assert!(
            (10..=80).contains(&settled),
            "640 items in 64 in flight need 10 per batch: {sizes:?}"
        );
        let best = (1..=1000).map(|s| model(640, s, 64)).min().unwrap();
        assert!(model(640, settled, 64) <= best.mul_f64(1.1), "{sizes:?}");
        let changes = sizes[20..].windows(2).filter(|w| w[0] != w[1]).count();
        assert!(changes <= 4, "a settled controller moves rarely: {sizes:?}");
    }

    #[test]
    fn a_size_that_needed_several_rounds_never_wins_on_a_lighter_first_loop() {
        // A monitor loop's first run releases nothing and is light; the ones after it carry
        // the releases too. Size 1 measured on the light loop must not outbid size 8.
        let mut auto = AutoSize::new(1, 1, 1000, 64);
        let sample = |batch_size: usize, millis: u64| LoopSample {
            items: 300,
            batch_size,
            in_flight: 64,
            elapsed: Duration::from_millis(millis),
            bytes: 0,
            completed: true,
            timed_out: false,
        };
        let mut sizes = Vec::new();
        auto.observe(&sample(1, 1_000));
        for _ in 0..30 {
            let size = auto.size();
            sizes.push(size);
            // Every loop after the first is 20 % heavier; one round from 5 a batch up.
            let rounds = 300usize.div_ceil(size).div_ceil(64) as u64;
            auto.observe(&sample(size, 1_200 * rounds));
        }
        assert!(sizes.iter().skip(4).all(|&s| s >= 5), "{sizes:?}");
        assert!(
            sizes[8..].iter().all(|&s| s == sizes[8]),
            "settled: {sizes:?}"
        );
    }

    #[test]
    fn from_a_thousand_it_descends_to_small_packets() {
        let mut auto = AutoSize::new(1000, 1, 1000, 64);
        let sizes = run(&mut auto, 300, 20);
        let last = *sizes.last().unwrap();
        assert!(last <= 64, "{sizes:?}");
        let best = (1..=1000).map(|s| model(300, s, 64)).min().unwrap();
        assert!(model(300, last, 64) <= best.mul_f64(1.1), "{sizes:?}");
    }

    #[test]
    fn a_timeout_halves_and_sets_a_ceiling_held_for_many_loops() {
        let mut auto = AutoSize::new(256, 1, 1000, 64);
        let change = auto
            .observe(&LoopSample {
                items: 300,
                batch_size: 256,
                in_flight: 64,
                elapsed: Duration::from_secs(30),
                bytes: 0,
                completed: false,
                timed_out: true,
            })
            .expect("a change");
        assert_eq!(change.reason, Reason::TimedOut);
        assert_eq!(auto.size(), 128);
        assert_eq!(auto.in_flight(), 1, "2 batches went together: halved to 1");
        let sizes = run(&mut auto, 300, CEILING_PROBE_LOOPS as usize - 1);
        assert!(sizes.iter().all(|&s| s <= 128), "{sizes:?}");
    }

    #[test]
    fn bounds_are_kept() {
        let mut auto = AutoSize::new(1, 20, 40, 64);
        let sizes = run(&mut auto, 5000, 30);
        assert!(sizes.iter().all(|&s| (20..=40).contains(&s)), "{sizes:?}");
    }

    #[test]
    fn a_failed_loop_without_a_timeout_changes_nothing() {
        let mut auto = AutoSize::new(30, 1, 1000, 64);
        let failed = LoopSample {
            items: 300,
            batch_size: 30,
            in_flight: 64,
            elapsed: Duration::ZERO,
            bytes: 0,
            completed: false,
            timed_out: false,
        };
        assert_eq!(auto.observe(&failed), None);
        assert_eq!(auto.size(), 30);
    }
}
