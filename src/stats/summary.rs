//! The summary across engines: every engine's closed window is added into one [`SummaryStats`];
//! once each engine has closed a window since the last summary, the summary window is complete
//! and comes out as a [`SummaryReport`], a block like an engine's printed after theirs.

use std::time::SystemTime;

use serde::Serialize;

use super::{EngineStats, LatenessStats, LoopStats, Mode, WindowReport};

/// The engine name a summary carries in its report and JSON.
pub const SUMMARY_NAME: &str = "all engines";

/// Windows of every engine added together until each engine has closed one.
#[derive(Debug)]
pub struct SummaryStats {
    /// Whether each engine (by index) closed a window since the last summary.
    closed: Vec<bool>,
    still_open: usize,
    window_start: Option<SystemTime>,
    submission: LoopStats,
    monitor: LoopStats,
    lateness: LatenessStats,
    modes: Option<(Mode, Mode)>,
}

impl SummaryStats {
    /// An empty summary of `engines` engines (indexes `0..engines`).
    pub fn new(engines: usize) -> Self {
        Self {
            closed: vec![false; engines],
            still_open: engines,
            window_start: None,
            submission: LoopStats::new(),
            monitor: LoopStats::new(),
            lateness: LatenessStats::default(),
            modes: None,
        }
    }

    /// Add engine `index`'s window (before it is reset), closed at `now` under these modes.
    /// Returns the summary when this was the last engine whose window the summary still
    /// lacked; the summary then starts again, empty, reusing its histograms.
    pub fn add(
        &mut self,
        index: usize,
        stats: &EngineStats,
        submission_mode: Mode,
        monitor_mode: Mode,
        now: SystemTime,
    ) -> Option<SummaryReport> {
        self.submission.absorb(&stats.submission);
        self.monitor.absorb(&stats.monitor);
        self.lateness.absorb(&stats.lateness);
        let start = stats.window_start();
        self.window_start = Some(self.window_start.map_or(start, |s| s.min(start)));
        self.modes = Some(match self.modes {
            None => (submission_mode, monitor_mode),
            Some((submission, monitor)) => (
                if submission == submission_mode {
                    submission
                } else {
                    Mode::Mixed
                },
                if monitor == monitor_mode {
                    monitor
                } else {
                    Mode::Mixed
                },
            ),
        });
        if let Some(closed) = self.closed.get_mut(index)
            && !*closed
        {
            *closed = true;
            self.still_open -= 1;
        }
        (self.still_open == 0).then(|| self.take(now))
    }

    fn take(&mut self, now: SystemTime) -> SummaryReport {
        let (submission_mode, monitor_mode) = self.modes.take().unwrap_or((Mode::Off, Mode::Off));
        let report = SummaryReport {
            engines: self.closed.len(),
            window: WindowReport {
                engine: SUMMARY_NAME.to_string(),
                window_start: self.window_start.take().unwrap_or(now),
                window_end: now,
                submission: self.submission.report(submission_mode),
                monitor: self.monitor.report(monitor_mode),
                lateness: self.lateness.report(),
            },
        };
        self.submission.reset();
        self.monitor.reset();
        self.lateness.reset();
        self.closed.fill(false);
        self.still_open = self.closed.len();
        report
    }
}

/// One summary window: the figures of every engine's loops and tasks together.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SummaryReport {
    /// Engines summarised.
    pub engines: usize,
    /// The figures, as one engine's window would carry them (`engine` is "all engines").
    #[serde(flatten)]
    pub window: WindowReport,
}

impl SummaryReport {
    /// The report as text: `Statistics for all N engines, window A .. B`, then the block and
    /// the lateness lines exactly as an engine's.
    pub fn lines(&self) -> Vec<String> {
        let mut lines = self.window.lines();
        if let Some(first) = lines.first_mut() {
            *first = format!(
                "Statistics for all {} engines, window {} .. {}",
                self.engines,
                super::report::format_utc_seconds(self.window.window_start),
                super::report::format_utc_seconds(self.window.window_end)
            );
        }
        lines
    }

    /// Logs each line with `tracing::info!` on target `turbomon::stats`.
    pub fn log(&self) {
        for line in self.lines() {
            tracing::info!(target: "turbomon::stats", "{line}");
        }
    }

    /// The report as one line of JSON: an engine's object with `engine` = "all engines" and
    /// `engines`, the number summarised.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|error| {
            serde_json::json!({ "engine": SUMMARY_NAME, "error": error.to_string() }).to_string()
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    fn at(seconds: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_795_315_200 + seconds)
    }

    #[test]
    fn the_summary_comes_once_every_engine_closed_a_window_and_adds_them_up() {
        let mut summary = SummaryStats::new(2);
        let mut a = EngineStats::new("a", at(0));
        let mut b = EngineStats::new("b", at(1));
        a.submission.record_loop(Duration::from_millis(100));
        a.submission.record_packet(1024);
        b.submission.record_loop(Duration::from_millis(300));
        b.submission.record_packet(3072);
        assert!(
            summary
                .add(0, &a, Mode::Turbo(30), Mode::Turbo(30), at(300))
                .is_none()
        );
        // The same engine again does not complete the round.
        assert!(
            summary
                .add(0, &a, Mode::Turbo(30), Mode::Turbo(30), at(300))
                .is_none()
        );
        let report = summary
            .add(1, &b, Mode::Turbo(50), Mode::Turbo(30), at(301))
            .unwrap_or_else(|| panic!("both engines closed a window"));
        let lines = report.lines();
        assert_eq!(
            lines[0],
            "Statistics for all 2 engines, window 2026-11-22T02:40:00Z .. 2026-11-22T02:45:01Z"
        );
        assert_eq!(lines[2], "Task Submission Mode        ===> Mixed");
        assert_eq!(lines[3], "Task Monitor Mode           ===> Turbo (30)");
        assert!(
            lines[4].starts_with(
                "Task Submission Loop Time   ===> Average: 0.17, Maximum: 0.30, Minimum: 0.10"
            ),
            "{}",
            lines[4]
        );
        assert!(
            lines[5].starts_with(
                "Task Submission Packet (KB) ===> Average: 1.67, Maximum: 3.00, Minimum: 1.00"
            ),
            "{}",
            lines[5]
        );
        let json: serde_json::Value =
            serde_json::from_str(&report.to_json()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(json["engine"], SUMMARY_NAME);
        assert_eq!(json["engines"], 2);
        assert_eq!(json["submission"]["loops"], 3);
        // A new round starts empty.
        let empty = EngineStats::new("a", at(300));
        assert!(
            summary
                .add(0, &empty, Mode::Off, Mode::Off, at(600))
                .is_none()
        );
        let next = summary
            .add(1, &empty, Mode::Off, Mode::Off, at(600))
            .unwrap_or_else(|| panic!("round complete"));
        assert_eq!(next.window.submission.loops, 0);
    }
}
