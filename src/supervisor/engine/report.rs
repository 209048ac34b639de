//! The statistics of one engine: every stats interval the window is printed (the statistics
//! block in the log, and a JSON line when asked for) and reset. The same task watches reloads,
//! so it also applies the engine's bandwidth keys the moment a reload changes them.

use std::path::Path;
use std::time::SystemTime;

use tokio::sync::watch;
use tokio::time::Instant;

use super::handle::EngineHandle;
use super::tunables::TunablesSource;
use crate::stats::Mode;

/// Print and reset the window every stats interval, until stopping. The interval is read afresh
/// when the configuration is reloaded: a window already older than a new, shorter interval is
/// printed at once, otherwise at its start plus the new interval.
pub(crate) async fn run(
    engine: &EngineHandle,
    source: &mut TunablesSource,
    mut stop: watch::Receiver<bool>,
    stats_json: Option<&Path>,
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
        print_window(engine, source, stats_json);
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

/// Close the current window: log the block, append the JSON, reset.
pub(crate) fn print_window(
    engine: &EngineHandle,
    source: &mut TunablesSource,
    stats_json: Option<&Path>,
) {
    let tunables = source.current();
    let mut stats = engine.stats();
    let submission = Mode::for_submission(&tunables, stats.submission.batch_size());
    let monitor = Mode::for_monitor(&tunables, stats.monitor.batch_size());
    let report = stats.take_window(submission, monitor, SystemTime::now());
    drop(stats);
    report.log();
    if let Some(path) = stats_json
        && let Err(e) = crate::stats::append_json(path, &report)
    {
        tracing::error!(target: "turbomon::stats", path = %path.display(), error = %e, "cannot append statistics JSON");
    }
}
