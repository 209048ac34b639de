//! Live reload of the supervisor file: polled for changes (and re-read on SIGHUP on unix); a valid
//! new file is published on a watch channel, an invalid one is logged and the old one stays.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::diff::{ReloadDiff, supervisor_reload};
use super::load::parse_supervisor;
use super::model::SupervisorConfig;

/// How often [`watch_supervisor`] looks at the file.
pub const RELOAD_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Watches the supervisor file at `path`, starting from `initial` (normally what was loaded from
/// it). The file is re-read every [`RELOAD_POLL_INTERVAL`] and on SIGHUP (unix); when its content
/// changes and the new file is valid and differs from the configuration in force, the new
/// configuration is published. An invalid file is logged with its error (target
/// `turbomon::config`) and the old configuration stays in force. The watching task ends when
/// every receiver has been dropped.
///
/// Must be called within a Tokio runtime (it spawns the watching task).
pub fn watch_supervisor(
    path: PathBuf,
    initial: SupervisorConfig,
) -> watch::Receiver<Arc<SupervisorConfig>> {
    watch_supervisor_every(path, initial, RELOAD_POLL_INTERVAL)
}

/// Command-line values that replace the file's, at start and after every reload.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Overrides {
    /// `--stats-interval`: the statistics window of every engine.
    pub stats_interval: Option<Duration>,
}

impl Overrides {
    /// Puts the overriding values into `config` (a per-engine `stats_interval` gives way too).
    pub fn apply(&self, config: &mut SupervisorConfig) {
        if let Some(interval) = self.stats_interval {
            config.stats_interval = interval;
            for engine in &mut config.engines {
                engine.stats_interval = None;
            }
        }
    }
}

/// [`watch_supervisor`] with `overrides` applied to every configuration read (`initial` is
/// expected to have them applied already).
pub fn watch_supervisor_with(
    path: PathBuf,
    initial: SupervisorConfig,
    overrides: Overrides,
) -> watch::Receiver<Arc<SupervisorConfig>> {
    spawn_watch(path, initial, RELOAD_POLL_INTERVAL, overrides)
}

/// [`watch_supervisor`] with another polling period (tests use a short one).
pub fn watch_supervisor_every(
    path: PathBuf,
    initial: SupervisorConfig,
    poll_interval: Duration,
) -> watch::Receiver<Arc<SupervisorConfig>> {
    spawn_watch(path, initial, poll_interval, Overrides::default())
}

fn spawn_watch(
    path: PathBuf,
    initial: SupervisorConfig,
    poll_interval: Duration,
    overrides: Overrides,
) -> watch::Receiver<Arc<SupervisorConfig>> {
    // What the process started with, to name changes that wait for a restart; a copy of its
    // own, so the channel's value is dropped with the last receiver.
    let start = Arc::new(initial.clone());
    let (sender, receiver) = watch::channel(Arc::new(initial));
    // Installed before returning, so a SIGHUP sent right after this call is already handled.
    let hangup = HangupSignal::new();
    tokio::spawn(watch_file(
        path,
        start,
        overrides,
        sender,
        poll_interval,
        hangup,
    ));
    receiver
}

/// Why the file is being looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    /// Periodic poll: act only when the content changed.
    Poll,
    /// SIGHUP: re-read and report even if unchanged.
    Hangup,
}

async fn watch_file(
    path: PathBuf,
    start: Arc<SupervisorConfig>,
    overrides: Overrides,
    sender: watch::Sender<Arc<SupervisorConfig>>,
    poll_interval: Duration,
    mut hangup: HangupSignal,
) {
    let mut ticker = tokio::time::interval(poll_interval.max(Duration::from_millis(1)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The bytes last examined; `None` until the first read, so a change made between the
    // caller's load and this task's start is still noticed.
    let mut last_content: Option<Vec<u8>> = None;
    let mut last_read_error: Option<std::io::ErrorKind> = None;
    loop {
        let trigger = tokio::select! {
            _ = sender.closed() => break,
            _ = ticker.tick() => Trigger::Poll,
            _ = hangup.recv() => Trigger::Hangup,
        };
        let content = match tokio::fs::read(&path).await {
            Ok(content) => {
                last_read_error = None;
                content
            }
            Err(error) => {
                if trigger == Trigger::Hangup || last_read_error != Some(error.kind()) {
                    tracing::warn!(
                        target: "turbomon::config",
                        "{}: cannot read the file for reload: {error}; keeping the configuration in force",
                        path.display()
                    );
                }
                last_read_error = Some(error.kind());
                continue;
            }
        };
        if trigger == Trigger::Poll && last_content.as_deref() == Some(content.as_slice()) {
            continue;
        }
        last_content = Some(content.clone());
        reload(&path, content, &start, overrides, &sender, trigger);
    }
}

fn reload(
    path: &Path,
    content: Vec<u8>,
    start: &SupervisorConfig,
    overrides: Overrides,
    sender: &watch::Sender<Arc<SupervisorConfig>>,
    trigger: Trigger,
) {
    let text = match String::from_utf8(content) {
        Ok(text) => text,
        Err(_) => {
            tracing::error!(
                target: "turbomon::config",
                "{}: not UTF-8 text; keeping the configuration in force",
                path.display()
            );
            return;
        }
    };
    match parse_supervisor(&text, path) {
        Ok(mut config) => {
            overrides.apply(&mut config);
            let diff = supervisor_reload(start, &sender.borrow(), &config);
            let changed = **sender.borrow() != config;
            // One line per reload: what now applies, and what waits for a restart.
            if changed || trigger == Trigger::Hangup {
                log_reload(path, &diff, changed);
            }
            if changed {
                sender.send_replace(Arc::new(config));
            }
        }
        Err(error) => tracing::error!(
            target: "turbomon::config",
            "{error}; keeping the configuration in force"
        ),
    }
}

/// The one log line of a reload: info when everything applies, warning when a part waits for a
/// restart.
pub(crate) fn log_reload(path: &Path, diff: &ReloadDiff, changed: bool) {
    let what = if changed {
        "configuration reloaded"
    } else {
        "configuration unchanged"
    };
    if diff.restart_needed.is_empty() {
        tracing::info!(
            target: "turbomon::config",
            file = %path.display(),
            applied = %diff.applied_list(),
            "{what}"
        );
    } else {
        tracing::warn!(
            target: "turbomon::config",
            file = %path.display(),
            applied = %diff.applied_list(),
            restart_needed = %diff.restart_list(),
            "{what}; some changes apply only after a restart"
        );
    }
}

/// SIGHUP on unix; never fires elsewhere or when the handler cannot be installed.
struct HangupSignal {
    #[cfg(unix)]
    signal: Option<tokio::signal::unix::Signal>,
}

impl HangupSignal {
    fn new() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let signal = match signal(SignalKind::hangup()) {
                Ok(signal) => Some(signal),
                Err(error) => {
                    tracing::warn!(
                        target: "turbomon::config",
                        "cannot listen for SIGHUP ({error}); reload by polling only"
                    );
                    None
                }
            };
            Self { signal }
        }
        #[cfg(not(unix))]
        {
            Self {}
        }
    }

    async fn recv(&mut self) {
        #[cfg(unix)]
        if let Some(signal) = &mut self.signal {
            if signal.recv().await.is_some() {
                return;
            }
            self.signal = None;
        }
        std::future::pending::<()>().await
    }
}
