//! The statistics of one engine: every stats interval the window is printed (the statistics
//! block in the log, and a JSON line when asked for), added to the summary across engines, and
//! reset; the engine whose window completes the summary prints the summary after its own. The
//! same task watches reloads, so it also applies the engine's bandwidth keys the moment a reload
//! changes them.

use std::path::Path;
use std::sync::Mutex;
use std::time::SystemTime;

use tokio::sync::watch;
use tokio::time::Instant;

use super::handle::EngineHandle;
use super::tunables::TunablesSource;
use crate::stats::{Mode, SummaryStats};

/// Print and reset the window every stats interval, until stopping. The interval is read afresh
/// when the configuration is reloaded: a window already older than a new, shorter interval is
/// printed at once, otherwise at its start plus the new interval.
pub(crate) async fn run(
    engine: &EngineHandle,
    source: &mut TunablesSource,
    mut stop: watch::Receiver<bool>,
    stats_json: Option<&Path>,
    summary: &Mutex<SummaryStats>,
) {
    let mut reloads = Some(source.changes());
    let mut window_start = Instant::now();
    loop {
        let deadline = window_start + source.current().stats_interval;
        let reloaded = async {
            match reloads.as_mut() {
                Some(reloads) => reloads.changed().await.is_ok(),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = stop.changed() => return,
            still_open = reloaded => {
                if !still_open {
                    reloads = None;
                }
                apply_bandwidth(engine, source);
                continue;
            }
            () = tokio::time::sleep_until(deadline) => {}
        }
        if *stop.borrow() {
            return;
        }
        print_window(engine, source, stats_json, summary);
        window_start = Instant::now();
    }
}

/// A reload's bandwidth keys, applied at once to the engine's budget (writes waiting for
/// tokens see the new rate at their next refill).
fn apply_bandwidth(engine: &EngineHandle, source: &TunablesSource) {
    if let (Some(throttle), Some(policy)) = (engine.contact.dialer().throttle(), source.bandwidth())
        && throttle.set_policy(policy.clone())
    {
        tracing::info!(
            target: "turbomon::supervisor",
            engine = %engine.name(),
            max_bandwidth = ?policy.max_bytes_per_second,
            pulse = policy.pulse.is_some(),
            windows = policy.windows.len(),
            "bandwidth limits changed; in force now"
        );
    }
}

/// Close the current window: log the block and append the JSON (as `stats_report` asks), add
/// it to the summary, reset; when this window completes the summary, print the summary too.
pub(crate) fn print_window(
    engine: &EngineHandle,
    source: &mut TunablesSource,
    stats_json: Option<&Path>,
    summary: &Mutex<SummaryStats>,
) {
    let tunables = source.current();
    let choice = source.config().stats_report;
    let now = SystemTime::now();
    let (report, summary_report) = {
        let mut stats = engine.stats();
        let submission_mode = Mode::for_submission(&tunables, stats.submission.batch_size());
        let monitor_mode = Mode::for_monitor(&tunables, stats.monitor.batch_size());
        let summary_report = summary
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .add(engine.index, &stats, submission_mode, monitor_mode, now);
        (
            stats.take_window(submission_mode, monitor_mode, now),
            summary_report,
        )
    };
    if choice.engines() {
        report.log();
        append(stats_json, &report.to_json());
    }
    if let Some(summary) = summary_report
        && choice.summary()
        && (summary.engines > 1 || !choice.engines())
    {
        summary.log();
        append(stats_json, &summary.to_json());
    }
}

/// Append one JSON line to the statistics file, when there is one.
fn append(stats_json: Option<&Path>, json: &str) {
    if let Some(path) = stats_json
        && let Err(e) = crate::stats::append_json_line(path, json)
    {
        tracing::error!(target: "turbomon::stats", path = %path.display(), error = %e, "cannot append statistics JSON");
    }
}
