//! The statistics report of one window: the text block (its exact layout is in docs/DESIGN.md,
//! The statistics block), the JSON object for programs, and appending that object to a file.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::ser::SerializeStruct;
use serde::{Serialize, Serializer};

use super::figure::figure;
use super::{Mode, Stage};

/// Banner line opening and closing the block.
const BANNER: &str = "==================== TCP Statistics ========================";
/// Bytes per KB in the report.
const BYTES_PER_KB: u128 = 1024;
const NANOS_PER_SECOND: u128 = 1_000_000_000;

/// Loop-time figures of one kind of loop over a window. Total, minimum and maximum are exact;
/// the percentiles come from the HDR histogram (at most 1 % under, kept within min..=max).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoopTimeFigures {
    /// Completed loops.
    pub loops: u64,
    /// Sum of their times.
    pub total: Duration,
    /// Shortest loop.
    pub min: Duration,
    /// Longest loop.
    pub max: Duration,
    /// Median.
    pub p50: Duration,
    /// 90th percentile.
    pub p90: Duration,
    /// 99th percentile.
    pub p99: Duration,
}

impl LoopTimeFigures {
    /// Mean loop time.
    pub fn avg(&self) -> Duration {
        let nanos = self.total.as_nanos() / u128::from(self.loops.max(1));
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }
}

/// Packet-size figures of one kind of loop over a window. Total, minimum and maximum are exact;
/// the percentiles come from the HDR histogram (at most 1 % under, kept within min..=max).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketFigures {
    /// Packets.
    pub packets: u64,
    /// Sum of their sizes.
    pub total_bytes: u64,
    /// Smallest packet.
    pub min_bytes: u64,
    /// Largest packet.
    pub max_bytes: u64,
    /// Median size.
    pub p50_bytes: u64,
    /// 90th percentile size.
    pub p90_bytes: u64,
    /// 99th percentile size.
    pub p99_bytes: u64,
}

impl PacketFigures {
    /// Mean packet size in bytes.
    pub fn avg_bytes(&self) -> f64 {
        self.total_bytes as f64 / self.packets.max(1) as f64
    }
}

/// One kind of loop (submission or monitor) over a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KindReport {
    /// Mode in force when the window closed.
    pub mode: Mode,
    /// Completed loops.
    pub loops: u64,
    /// Loops that did not complete.
    pub failed_loops: u64,
    /// Batches split in half (unanswered, or over the message size cap).
    pub splits: u64,
    /// `None` when no loop completed.
    pub loop_time: Option<LoopTimeFigures>,
    /// `None` when no packet was exchanged.
    pub packet_size: Option<PacketFigures>,
}

/// The statistics of one engine over one window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WindowReport {
    /// Engine name.
    pub engine: String,
    /// Window start (RFC 3339 in JSON).
    #[serde(serialize_with = "serialize_time")]
    pub window_start: SystemTime,
    /// Window end (RFC 3339 in JSON).
    #[serde(serialize_with = "serialize_time")]
    pub window_end: SystemTime,
    /// Submission loops.
    pub submission: KindReport,
    /// Monitor loops.
    pub monitor: KindReport,
    /// Task lateness by stage (`lateness_s` in JSON).
    #[serde(rename = "lateness_s")]
    pub lateness: LatenessReport,
}

/// Task lateness by stage over a window: figures per stage, `None` when no task passed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LatenessReport {
    /// Each stage with its figures (`loops` counts tasks).
    pub stages: [(Stage, Option<LoopTimeFigures>); 5],
}

impl Serialize for LatenessReport {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct StageJson {
            #[serde(flatten)]
            figures: JsonFigures,
            count: u64,
        }
        let mut s = serializer.serialize_struct("LatenessReport", 5)?;
        for (stage, figures) in &self.stages {
            let json = figures.map(|f| StageJson {
                figures: JsonFigures::seconds(&f),
                count: f.loops,
            });
            s.serialize_field(stage.key(), &json)?;
        }
        s.end()
    }
}

impl WindowReport {
    /// The report as text: a line naming the engine and the window, the eight lines of the
    /// statistics block (banner, two mode lines, four figure lines, banner), then one line of
    /// task lateness per stage.
    pub fn lines(&self) -> Vec<String> {
        vec![
            format!(
                "Statistics for engine {}, window {} .. {}",
                self.engine,
                format_utc_seconds(self.window_start),
                format_utc_seconds(self.window_end)
            ),
            BANNER.to_string(),
            labelled("Task Submission Mode", &self.submission.mode.to_string()),
            labelled("Task Monitor Mode", &self.monitor.mode.to_string()),
            labelled(
                "Task Submission Loop Time",
                &loop_time_text(&self.submission),
            ),
            labelled(
                "Task Submission Packet (KB)",
                &packet_text(&self.submission),
            ),
            labelled("Task Monitor Loop Time", &loop_time_text(&self.monitor)),
            labelled("Task Monitor Packet (KB)", &packet_text(&self.monitor)),
            BANNER.to_string(),
        ]
        .into_iter()
        .chain(
            self.lateness
                .stages
                .iter()
                .map(|(stage, figures)| labelled(stage.label(), &lateness_text(figures.as_ref()))),
        )
        .collect()
    }

    /// Logs each line with `tracing::info!` on target `turbomon::stats`.
    pub fn log(&self) {
        for line in self.lines() {
            tracing::info!(target: "turbomon::stats", "{line}");
        }
    }

    /// The report as one line of JSON: `engine`, `window_start`, `window_end`, and for
    /// `submission` and `monitor`: `mode` ("turbo"/"off"), `batch_size` (null when off; with
    /// `"auto"` the size chosen when the window closed, and `batch_size_auto: true` after it),
    /// `loops`, `failed_loops`, `packets`, `loop_time_s` and `packet_kb` (objects of `avg`,
    /// `max`, `min`, `p50`, `p90`, `p99`, or null when there was no loop / packet).
    pub fn to_json(&self) -> String {
        match serde_json::to_string(self) {
            Ok(json) => json,
            // Unreachable with these types; still never panic.
            Err(error) => {
                serde_json::json!({ "engine": self.engine, "error": error.to_string() }).to_string()
            }
        }
    }
}

/// Appends `report` as one JSON object and a newline to the file at `path` (created if absent).
pub fn append_json(path: &Path, report: &WindowReport) -> std::io::Result<()> {
    append_json_line(path, &report.to_json())
}

/// Appends `json` and a newline to the file at `path` (created if absent).
pub fn append_json_line(path: &Path, json: &str) -> std::io::Result<()> {
    let mut line = String::with_capacity(json.len() + 1);
    line.push_str(json);
    line.push('\n');
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    file.write_all(line.as_bytes())
}

/// `label` padded to the label column, then ` ===> ` and `value`.
fn labelled(label: &str, value: &str) -> String {
    format!("{label:<27} ===> {value}")
}

/// A duration as the block prints it: seconds, two decimals or three significant digits.
fn seconds(duration: Duration) -> String {
    figure(duration.as_nanos(), NANOS_PER_SECOND)
}

/// A byte count as the block prints it: KB of 1024 bytes, like [`seconds`].
fn kilobytes(bytes: u64) -> String {
    figure(u128::from(bytes), BYTES_PER_KB)
}

fn loop_time_text(kind: &KindReport) -> String {
    let mut text = loop_time_figures_text(kind);
    if kind.splits > 0 {
        text.push_str(&format!(", Splits: {}", kind.splits));
    }
    text
}

fn loop_time_figures_text(kind: &KindReport) -> String {
    match &kind.loop_time {
        Some(figures) => format!(
            "Average: {}, Maximum: {}, Minimum: {}, p50: {}, p90: {}, p99: {}, Loops: {}, Failed: {}",
            figure(
                figures.total.as_nanos(),
                NANOS_PER_SECOND * u128::from(figures.loops)
            ),
            seconds(figures.max),
            seconds(figures.min),
            seconds(figures.p50),
            seconds(figures.p90),
            seconds(figures.p99),
            figures.loops,
            kind.failed_loops,
        ),
        None if kind.failed_loops > 0 => format!(
            "No completed loops in this window, Failed: {}",
            kind.failed_loops
        ),
        None => "No loops in this window".to_string(),
    }
}

fn packet_text(kind: &KindReport) -> String {
    match &kind.packet_size {
        Some(figures) => format!(
            "Average: {}, Maximum: {}, Minimum: {}, p50: {}, p90: {}, p99: {}, Packets: {}",
            figure(
                u128::from(figures.total_bytes),
                BYTES_PER_KB * u128::from(figures.packets)
            ),
            kilobytes(figures.max_bytes),
            kilobytes(figures.min_bytes),
            kilobytes(figures.p50_bytes),
            kilobytes(figures.p90_bytes),
            kilobytes(figures.p99_bytes),
            figures.packets,
        ),
        None => "No packets in this window".to_string(),
    }
}

fn lateness_text(figures: Option<&LoopTimeFigures>) -> String {
    match figures {
        Some(f) => format!(
            "Average: {}, Maximum: {}, Minimum: {}, p50: {}, p90: {}, p99: {}, Tasks: {}",
            figure(f.total.as_nanos(), NANOS_PER_SECOND * u128::from(f.loops)),
            seconds(f.max),
            seconds(f.min),
            seconds(f.p50),
            seconds(f.p90),
            seconds(f.p99),
            f.loops,
        ),
        None => "No tasks in this window".to_string(),
    }
}

/// The six figures of one quantity, in the report's unit (seconds or KB).
#[derive(Serialize)]
struct JsonFigures {
    avg: f64,
    max: f64,
    min: f64,
    p50: f64,
    p90: f64,
    p99: f64,
}

impl JsonFigures {
    fn seconds(f: &LoopTimeFigures) -> Self {
        Self {
            avg: f.avg().as_secs_f64(),
            max: f.max.as_secs_f64(),
            min: f.min.as_secs_f64(),
            p50: f.p50.as_secs_f64(),
            p90: f.p90.as_secs_f64(),
            p99: f.p99.as_secs_f64(),
        }
    }
}

impl Serialize for KindReport {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let loop_time_s = self.loop_time.as_ref().map(JsonFigures::seconds);
        let kb = |bytes: u64| bytes as f64 / BYTES_PER_KB as f64;
        let packet_kb = self.packet_size.map(|f| JsonFigures {
            avg: f.avg_bytes() / BYTES_PER_KB as f64,
            max: kb(f.max_bytes),
            min: kb(f.min_bytes),
            p50: kb(f.p50_bytes),
            p90: kb(f.p90_bytes),
            p99: kb(f.p99_bytes),
        });
        let mut s = serializer.serialize_struct("KindReport", 8)?;
        s.serialize_field(
            "mode",
            match self.mode {
                Mode::Turbo(_) | Mode::Auto(_) => "turbo",
                Mode::Off => "off",
                Mode::Mixed => "mixed",
            },
        )?;
        s.serialize_field("batch_size", &self.mode.batch_size())?;
        if matches!(self.mode, Mode::Auto(_)) {
            s.serialize_field("batch_size_auto", &true)?;
        }
        s.serialize_field("loops", &self.loops)?;
        s.serialize_field("failed_loops", &self.failed_loops)?;
        s.serialize_field("splits", &self.splits)?;
        s.serialize_field("packets", &self.packet_size.map_or(0, |f| f.packets))?;
        s.serialize_field("loop_time_s", &loop_time_s)?;
        s.serialize_field("packet_kb", &packet_kb)?;
        s.end()
    }
}

fn serialize_time<S: Serializer>(time: &SystemTime, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&format_utc_seconds(*time))
}

/// `time` as RFC 3339 UTC to the second, e.g. `2026-11-22T02:40:00Z` (any time, even before
/// 1970; fractions of a second are dropped, rounding towards the past).
pub(crate) fn format_utc_seconds(time: SystemTime) -> String {
    let seconds: i64 = match time.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_secs()).unwrap_or(i64::MAX),
        Err(before) => {
            let before = before.duration();
            let whole = i64::try_from(before.as_secs()).unwrap_or(i64::MAX);
            -whole - i64::from(before.subsec_nanos() > 0)
        }
    };
    let days = seconds.div_euclid(86_400);
    let second_of_day = seconds.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        second_of_day / 3600,
        second_of_day % 3600 / 60,
        second_of_day % 60
    )
}

/// Proleptic Gregorian (year, month, day) of `days` since 1970-01-01 (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days.saturating_add(719_468);
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formatting() {
        let at = |s: u64| UNIX_EPOCH + Duration::from_secs(s);
        assert_eq!(format_utc_seconds(at(0)), "1970-01-01T00:00:00Z");
        assert_eq!(
            format_utc_seconds(at(1_795_315_200)),
            "2026-11-22T02:40:00Z"
        );
        assert_eq!(format_utc_seconds(at(951_825_600)), "2000-02-29T12:00:00Z");
        assert_eq!(
            format_utc_seconds(UNIX_EPOCH - Duration::from_millis(500)),
            "1969-12-31T23:59:59Z"
        );
    }
}
