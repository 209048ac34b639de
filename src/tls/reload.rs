//! A TLS configuration that is rebuilt when its files change: new connections take the new one,
//! connections already open keep the one they started with.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use super::files::{Stamp, TlsFileError};

/// How a configuration is built from its files.
pub(crate) type Build<C> = fn(&[PathBuf]) -> Result<C, TlsFileError>;

/// The current configuration built from `paths`, and the stamp of the files it was built from.
pub(crate) struct Reloadable<C> {
    what: &'static str,
    paths: Vec<PathBuf>,
    build: Build<C>,
    current: RwLock<(Arc<C>, Stamp)>,
}

impl<C: Send + Sync + 'static> Reloadable<C> {
    /// Build the first configuration; an error here stops the caller from starting.
    pub(crate) fn load(
        what: &'static str,
        paths: Vec<PathBuf>,
        build: Build<C>,
    ) -> Result<Self, TlsFileError> {
        let stamp = stamp(&paths);
        let config = build(&paths)?;
        Ok(Self {
            what,
            paths,
            build,
            current: RwLock::new((Arc::new(config), stamp)),
        })
    }

    /// The configuration for a new connection.
    pub(crate) fn current(&self) -> Arc<C> {
        Arc::clone(&self.current.read().unwrap_or_else(|e| e.into_inner()).0)
    }

    /// Rebuild if a file changed since the last build. `Ok(true)` when a new configuration is in
    /// force; on an error the previous configuration stays in force, so a half-written file
    /// during a rotation never takes an engine down.
    pub(crate) fn reload(&self) -> Result<bool, TlsFileError> {
        let stamp = stamp(&self.paths);
        if self.current.read().unwrap_or_else(|e| e.into_inner()).1 == stamp {
            return Ok(false);
        }
        let config = (self.build)(&self.paths)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = (Arc::new(config), stamp);
        Ok(true)
    }

    /// Reload now, logging the outcome: info when new files are in force, error (naming the
    /// file) when they are unusable and the old ones stay.
    pub(crate) fn reload_logged(&self) {
        match self.reload() {
            Ok(true) => {
                tracing::info!(target: "turbomon::tls", what = self.what, "TLS certificate files reloaded; new connections use them")
            }
            Ok(false) => {}
            Err(error) => {
                tracing::error!(target: "turbomon::tls", what = self.what, %error, "new TLS files are unusable; keeping the previous ones")
            }
        }
    }
}

/// Poll `target`'s files every `period` until `target` is only held here.
pub(crate) fn spawn_watcher<C: Send + Sync + 'static>(
    target: &Arc<Reloadable<C>>,
    period: Duration,
) -> tokio::task::JoinHandle<()> {
    let weak = Arc::downgrade(target);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let Some(target) = weak.upgrade() else { return };
            target.reload_logged();
        }
    })
}

/// Reload `target`'s files at every SIGHUP (unix), as operators expect of a daemon, until
/// `target` is only held here (or the future is dropped).
pub(crate) async fn reload_on_hangup<C: Send + Sync + 'static>(
    target: std::sync::Weak<Reloadable<C>>,
) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hangups) = signal(SignalKind::hangup()) else {
            return;
        };
        while hangups.recv().await.is_some() {
            let Some(target) = target.upgrade() else {
                return;
            };
            tracing::info!(target: "turbomon::tls", what = target.what, "SIGHUP: re-reading the TLS files");
            target.reload_logged();
        }
    }
    #[cfg(not(unix))]
    drop(target);
}

fn stamp(paths: &[PathBuf]) -> Stamp {
    let refs: Vec<&std::path::Path> = paths.iter().map(PathBuf::as_path).collect();
    Stamp::of(&refs)
}
