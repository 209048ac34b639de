//! The statistics of one engine: every stats interval the window is printed (the statistics
//! block in the log, and a JSON line when asked for) and reset.

use std::path::Path;
use std::time::SystemTime;

use tokio::sync::watch;

use super::handle::EngineHandle;
use super::tunables::TunablesSource;
use crate::stats::Mode;

/// Print and reset the window every stats interval (read afresh each time), until stopping.
pub(crate) async fn run(
    engine: &EngineHandle,
    source: &mut TunablesSource,
    mut stop: watch::Receiver<bool>,
    stats_json: Option<&Path>,
) {
    loop {
        let interval = source.current().stats_interval;
        tokio::select! {
            _ = stop.changed() => return,
            () = tokio::time::sleep(interval) => {}
        }
        if *stop.borrow() {
            return;
        }
        print_window(engine, source, stats_json);
    }
}

/// Close the current window: log the block, append the JSON, reset.
pub(crate) fn print_window(
    engine: &EngineHandle,
    source: &mut TunablesSource,
    stats_json: Option<&Path>,
) {
    let tunables = source.current();
    let report = engine.stats().take_window(
        Mode::for_submission(&tunables),
        Mode::for_monitor(&tunables),
        SystemTime::now(),
    );
    report.log();
    if let Some(path) = stats_json
        && let Err(e) = crate::stats::append_json(path, &report)
    {
        tracing::error!(target: "turbomon::stats", path = %path.display(), error = %e, "cannot append statistics JSON");
    }
}
