//! Per-engine loop statistics: HDR histograms of submission and monitor loop time and packet
//! size, with exact sum/min/max for the averages and extremes, closed into a [`WindowReport`]
//! every stats interval and reset. The printed block is described in docs/DESIGN.md, The
//! statistics block.
//!
//! A [`StatsMirror`] attached to an engine's statistics receives every value at the moment it
//! is recorded, in the same call: the cumulative Prometheus histograms of [`crate::metrics`]
//! therefore grow over a window by exactly the counts that window reports.

mod figure;
mod report;
mod summary;
mod window_histogram;

use std::fmt;
use std::time::{Duration, SystemTime};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;

use crate::config::{BatchSize, Tunables};
use crate::metrics::AtomicHistogram;
use window_histogram::WindowHistogram;

pub use report::{
    KindReport, LatenessReport, LoopTimeFigures, PacketFigures, WindowReport, append_json,
    append_json_line,
};
pub use summary::{SUMMARY_NAME, SummaryReport, SummaryStats};

/// Batching mode of one kind of loop, as printed in the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Batches of this many tasks (or task ids) over a long-lived stream.
    Turbo(usize),
    /// Batches over a long-lived stream, their size chosen at run time: this many when the
    /// window closed.
    Auto(usize),
    /// One unary call per task on its own connection.
    Off,
    /// Summary of several engines whose modes differ.
    Mixed,
}

impl Mode {
    /// The submission loop's mode under `tunables`; `chosen` is the size the automatic
    /// controller chose last (when the size is `auto`).
    pub fn for_submission(tunables: &Tunables, chosen: Option<usize>) -> Self {
        Self::of(tunables, tunables.task_submit_batch_size, chosen)
    }

    /// The monitor loop's mode under `tunables`; `chosen` as for
    /// [`for_submission`](Self::for_submission).
    pub fn for_monitor(tunables: &Tunables, chosen: Option<usize>) -> Self {
        Self::of(tunables, tunables.task_info_batch_size, chosen)
    }

    fn of(tunables: &Tunables, size: BatchSize, chosen: Option<usize>) -> Self {
        match (tunables.turbo_monitoring, size) {
            (false, _) => Mode::Off,
            (true, BatchSize::Fixed(size)) => Mode::Turbo(size),
            // No loop yet: the size the controller starts from.
            (true, BatchSize::Auto) => Mode::Auto(chosen.unwrap_or_else(|| {
                crate::supervisor::autosize::start_size(
                    tunables.batch_size_min,
                    tunables.batch_size_max,
                )
            })),
        }
    }

    /// The batch size in force, `None` when off.
    pub fn batch_size(&self) -> Option<usize> {
        match self {
            Mode::Turbo(size) | Mode::Auto(size) => Some(*size),
            Mode::Off | Mode::Mixed => None,
        }
    }
}

impl fmt::Display for Mode {
    /// `Turbo (30)`, `Turbo (auto: 24)`, `Off` or `Mixed`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mode::Turbo(size) => write!(f, "Turbo ({size})"),
            Mode::Auto(size) => write!(f, "Turbo (auto: {size})"),
            Mode::Off => write!(f, "Off"),
            Mode::Mixed => write!(f, "Mixed"),
        }
    }
}

/// Whole microseconds of `duration`, as the loop-time histograms hold them.
fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

/// Where a [`LoopStats`] also records what it is given, cumulatively (never reset): the
/// Prometheus metrics. Each part is optional; the default mirrors nothing.
#[derive(Debug, Clone, Default)]
pub struct LoopMirror {
    /// Every loop time (for lateness: every duration), in seconds.
    pub seconds: Option<AtomicHistogram>,
    /// Every packet size, in bytes.
    pub bytes: Option<AtomicHistogram>,
    /// Every failed loop.
    pub failed: Option<Counter>,
    /// The batch size in force (fixed, or the automatic choice).
    pub batch_size: Option<Gauge>,
}

/// The mirrors of one engine's statistics: both kinds of loop and each lateness stage (in the
/// order of [`Stage::ALL`]).
#[derive(Debug, Clone, Default)]
pub struct StatsMirror {
    /// Submission loops and packets.
    pub submission: LoopMirror,
    /// Monitor loops and packets.
    pub monitor: LoopMirror,
    /// Lateness by stage, seconds.
    pub lateness: [Option<AtomicHistogram>; 5],
}

/// Statistics of one kind of loop (submission or monitor) over the current window.
#[derive(Debug, Clone)]
pub struct LoopStats {
    /// Loop times in microseconds (percentiles).
    loop_time_us: WindowHistogram,
    /// Packet sizes in bytes (percentiles).
    packet_bytes: WindowHistogram,
    loops: u64,
    loop_time_total: Duration,
    loop_time_min: Duration,
    loop_time_max: Duration,
    failed_loops: u64,
    splits: u64,
    packets: u64,
    packet_total_bytes: u64,
    packet_min_bytes: u64,
    packet_max_bytes: u64,
    /// The batch size the last loop ran with; kept across windows.
    batch_size: Option<usize>,
    mirror: LoopMirror,
}

impl Default for LoopStats {
    fn default() -> Self {
        Self::new()
    }
}

impl LoopStats {
    /// Empty statistics.
    pub fn new() -> Self {
        Self {
            loop_time_us: WindowHistogram::new(),
            packet_bytes: WindowHistogram::new(),
            loops: 0,
            loop_time_total: Duration::ZERO,
            loop_time_min: Duration::MAX,
            loop_time_max: Duration::ZERO,
            failed_loops: 0,
            splits: 0,
            packets: 0,
            packet_total_bytes: 0,
            packet_min_bytes: u64::MAX,
            packet_max_bytes: 0,
            batch_size: None,
            mirror: LoopMirror::default(),
        }
    }

    /// Also record into `mirror` from now on.
    pub fn set_mirror(&mut self, mirror: LoopMirror) {
        self.mirror = mirror;
    }

    /// One completed loop that took `elapsed` (first batch sent to last reply received).
    pub fn record_loop(&mut self, elapsed: Duration) {
        self.loop_time_us.record(micros(elapsed));
        self.loops += 1;
        self.loop_time_total = self.loop_time_total.saturating_add(elapsed);
        self.loop_time_min = self.loop_time_min.min(elapsed);
        self.loop_time_max = self.loop_time_max.max(elapsed);
        if let Some(seconds) = &self.mirror.seconds {
            seconds.observe(elapsed.as_secs_f64());
        }
    }

    /// One packet (a batch's request plus its reply, framing included) of `bytes` bytes.
    pub fn record_packet(&mut self, bytes: u64) {
        self.packet_bytes.record(bytes);
        self.packets += 1;
        self.packet_total_bytes = self.packet_total_bytes.saturating_add(bytes);
        self.packet_min_bytes = self.packet_min_bytes.min(bytes);
        self.packet_max_bytes = self.packet_max_bytes.max(bytes);
        if let Some(mirror) = &self.mirror.bytes {
            mirror.observe(bytes as f64);
        }
    }

    /// One loop that did not complete (its time is not recorded).
    pub fn record_failed_loop(&mut self) {
        self.failed_loops += 1;
        if let Some(failed) = &self.mirror.failed {
            failed.inc();
        }
    }

    /// The batch size the next loop runs with (fixed, or the automatic choice).
    pub fn record_batch_size(&mut self, size: usize) {
        self.batch_size = Some(size);
        if let Some(gauge) = &self.mirror.batch_size {
            gauge.set(i64::try_from(size).unwrap_or(i64::MAX));
        }
    }

    /// The batch size last recorded by [`record_batch_size`](Self::record_batch_size).
    pub fn batch_size(&self) -> Option<usize> {
        self.batch_size
    }

    /// Batches split in half after they went unanswered (or were over the message size cap).
    pub fn record_splits(&mut self, splits: u64) {
        self.splits += splits;
    }

    /// Splits so far in this window.
    pub fn splits(&self) -> u64 {
        self.splits
    }

    /// Completed loops so far in this window.
    pub fn loops(&self) -> u64 {
        self.loops
    }

    /// Failed loops so far in this window.
    pub fn failed_loops(&self) -> u64 {
        self.failed_loops
    }

    /// Packets so far in this window.
    pub fn packets(&self) -> u64 {
        self.packets
    }

    /// Loop-time figures so far, `None` without a completed loop.
    pub fn loop_time(&self) -> Option<LoopTimeFigures> {
        if self.loops == 0 {
            return None;
        }
        let (min, max) = (self.loop_time_min, self.loop_time_max);
        let (min_us, max_us) = (micros(min), micros(max));
        let percentile = |quantile: f64| {
            let value = self
                .loop_time_us
                .value_at_quantile(quantile, min_us, max_us);
            // Exact at the extremes (the histogram holds whole µs).
            match value {
                v if v == max_us => max,
                v if v == min_us => min,
                v => Duration::from_micros(v).clamp(min, max),
            }
        };
        Some(LoopTimeFigures {
            loops: self.loops,
            total: self.loop_time_total,
            min,
            max,
            p50: percentile(0.50),
            p90: percentile(0.90),
            p99: percentile(0.99),
        })
    }

    /// Packet-size figures so far, `None` without a packet.
    pub fn packet_size(&self) -> Option<PacketFigures> {
        if self.packets == 0 {
            return None;
        }
        let (min, max) = (self.packet_min_bytes, self.packet_max_bytes);
        let percentile = |quantile: f64| self.packet_bytes.value_at_quantile(quantile, min, max);
        Some(PacketFigures {
            packets: self.packets,
            total_bytes: self.packet_total_bytes,
            min_bytes: min,
            max_bytes: max,
            p50_bytes: percentile(0.50),
            p90_bytes: percentile(0.90),
            p99_bytes: percentile(0.99),
        })
    }

    /// This window's figures under `mode`.
    pub fn report(&self, mode: Mode) -> KindReport {
        KindReport {
            mode,
            loops: self.loops,
            failed_loops: self.failed_loops,
            splits: self.splits,
            loop_time: self.loop_time(),
            packet_size: self.packet_size(),
        }
    }

    /// Add everything `other` recorded in its window to this one (not to the mirror): the
    /// summary across engines.
    pub fn absorb(&mut self, other: &LoopStats) {
        self.loop_time_us.add(&other.loop_time_us);
        self.packet_bytes.add(&other.packet_bytes);
        self.loops += other.loops;
        self.loop_time_total = self.loop_time_total.saturating_add(other.loop_time_total);
        self.loop_time_min = self.loop_time_min.min(other.loop_time_min);
        self.loop_time_max = self.loop_time_max.max(other.loop_time_max);
        self.failed_loops += other.failed_loops;
        self.splits += other.splits;
        self.packets += other.packets;
        self.packet_total_bytes = self
            .packet_total_bytes
            .saturating_add(other.packet_total_bytes);
        self.packet_min_bytes = self.packet_min_bytes.min(other.packet_min_bytes);
        self.packet_max_bytes = self.packet_max_bytes.max(other.packet_max_bytes);
    }

    /// Forget everything recorded (keeps the histograms' memory and the mirror, which is
    /// cumulative).
    pub fn reset(&mut self) {
        self.loop_time_us.reset();
        self.packet_bytes.reset();
        self.loops = 0;
        self.loop_time_total = Duration::ZERO;
        self.loop_time_min = Duration::MAX;
        self.loop_time_max = Duration::ZERO;
        self.failed_loops = 0;
        self.splits = 0;
        self.packets = 0;
        self.packet_total_bytes = 0;
        self.packet_min_bytes = u64::MAX;
        self.packet_max_bytes = 0;
    }
}

/// A stage of a task's life whose lateness is measured (issue: where does time go?).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Due instant to its batch leaving the supervisor.
    ScheduledToSent,
    /// Sent to the check starting on the engine.
    SentToStarted,
    /// The check running.
    StartedToFinished,
    /// Finished on the engine to the supervisor knowing it.
    FinishedToKnown,
    /// A broken rule finishing on the engine to its alert firing.
    BrokenToAlert,
}

impl Stage {
    /// Every stage, in the order they happen.
    pub const ALL: [Stage; 5] = [
        Stage::ScheduledToSent,
        Stage::SentToStarted,
        Stage::StartedToFinished,
        Stage::FinishedToKnown,
        Stage::BrokenToAlert,
    ];

    /// The label in the text report.
    pub fn label(self) -> &'static str {
        match self {
            Stage::ScheduledToSent => "Lateness Scheduled->Sent",
            Stage::SentToStarted => "Lateness Sent->Started",
            Stage::StartedToFinished => "Lateness Started->Finished",
            Stage::FinishedToKnown => "Lateness Finished->Known",
            Stage::BrokenToAlert => "Lateness Broken->Alert",
        }
    }

    /// The key in the JSON report's `lateness_s` object.
    pub fn key(self) -> &'static str {
        match self {
            Stage::ScheduledToSent => "scheduled_to_sent",
            Stage::SentToStarted => "sent_to_started",
            Stage::StartedToFinished => "started_to_finished",
            Stage::FinishedToKnown => "finished_to_known",
            Stage::BrokenToAlert => "broken_to_alert",
        }
    }
}

/// Lateness of tasks by stage over the current window (a histogram of durations per stage).
#[derive(Debug, Clone, Default)]
pub struct LatenessStats {
    stages: [LoopStats; 5],
}

impl LatenessStats {
    /// One task spent `duration` in `stage`.
    pub fn record(&mut self, stage: Stage, duration: Duration) {
        self.stages[stage as usize].record_loop(duration);
    }

    /// Tasks recorded in `stage` so far.
    pub fn count(&self, stage: Stage) -> u64 {
        self.stages[stage as usize].loops()
    }

    /// This window's figures.
    pub fn report(&self) -> LatenessReport {
        LatenessReport {
            stages: Stage::ALL.map(|stage| (stage, self.stages[stage as usize].loop_time())),
        }
    }

    /// Add everything `other` recorded in its window to this one.
    pub fn absorb(&mut self, other: &LatenessStats) {
        for (ours, theirs) in self.stages.iter_mut().zip(&other.stages) {
            ours.absorb(theirs);
        }
    }

    /// Forget everything recorded.
    pub fn reset(&mut self) {
        for stage in &mut self.stages {
            stage.reset();
        }
    }
}

/// One engine's statistics: both kinds of loop, and task lateness, over the current window.
#[derive(Debug, Clone)]
pub struct EngineStats {
    engine: String,
    window_start: SystemTime,
    /// Submission loops and packets.
    pub submission: LoopStats,
    /// Monitor (status-check) loops and packets.
    pub monitor: LoopStats,
    /// Task lateness by stage.
    pub lateness: LatenessStats,
}

impl EngineStats {
    /// Empty statistics for `engine`, the window starting at `now`.
    pub fn new(engine: impl Into<String>, now: SystemTime) -> Self {
        Self {
            engine: engine.into(),
            window_start: now,
            submission: LoopStats::new(),
            monitor: LoopStats::new(),
            lateness: LatenessStats::default(),
        }
    }

    /// Also record every value into `mirror` (the engine's Prometheus histograms) from now on.
    pub fn with_mirror(mut self, mirror: StatsMirror) -> Self {
        self.submission.set_mirror(mirror.submission);
        self.monitor.set_mirror(mirror.monitor);
        for (stage, seconds) in self.lateness.stages.iter_mut().zip(mirror.lateness) {
            stage.set_mirror(LoopMirror {
                seconds,
                ..LoopMirror::default()
            });
        }
        self
    }

    /// The engine these statistics are about.
    pub fn engine(&self) -> &str {
        &self.engine
    }

    /// When the current window started.
    pub fn window_start(&self) -> SystemTime {
        self.window_start
    }

    /// Close the window: build the report and reset both kinds for the next window, which
    /// starts at `now`.
    pub fn take_window(
        &mut self,
        submission_mode: Mode,
        monitor_mode: Mode,
        now: SystemTime,
    ) -> WindowReport {
        let report = WindowReport {
            engine: self.engine.clone(),
            window_start: self.window_start,
            window_end: now,
            submission: self.submission.report(submission_mode),
            monitor: self.monitor.report(monitor_mode),
            lateness: self.lateness.report(),
        };
        self.submission.reset();
        self.monitor.reset();
        self.lateness.reset();
        self.window_start = now;
        report
    }
}
