//! Push mode for one engine: hold a `Completions` stream open and let the ledger absorb every
//! notice as it arrives; the monitor loop keeps running as reconciliation. Idle while the engine
//! is in poll mode.

use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use super::connection::Backoff;
use super::effects::apply;
use super::handle::EngineHandle;
use super::tunables::TunablesSource;
use crate::config::StatusMode;
use crate::supervisor::counters::Bump;
use crate::wire::completions::{self, CompletionFeed};

/// How often poll mode checks whether the configuration switched to push.
const MODE_CHECK_PERIOD: Duration = Duration::from_secs(1);
/// How long to wait before asking again an engine that does not push at all.
const UNSUPPORTED_RETRY: Duration = Duration::from_secs(60);

/// Run until the supervisor stops.
pub(crate) async fn run(
    engine: &EngineHandle,
    mut source: TunablesSource,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = Backoff::default();
    loop {
        if *stop.borrow() {
            return;
        }
        let pause = if source.current().status_mode != StatusMode::Push {
            MODE_CHECK_PERIOD
        } else {
            // Boxed: the engine's task holds only the idle state while not subscribed.
            match Box::pin(subscribe(engine, source.config().push_flush_window)).await {
                Ok(feed) => {
                    backoff.succeeded();
                    if !Box::pin(drain(engine, feed, &mut source, &mut stop)).await {
                        return;
                    }
                    continue;
                }
                // An engine of an older version: the monitor loop alone collects its results.
                Err(status) if status.code() == tonic::Code::Unimplemented => {
                    tracing::warn!(target: "turbomon::supervisor", engine = %engine.name(), "engine does not push completions; relying on the monitor loop");
                    UNSUPPORTED_RETRY
                }
                Err(_) => backoff.failed(),
            }
        };
        tokio::select! {
            _ = stop.changed() => return,
            () = tokio::time::sleep(pause) => {}
        }
    }
}

/// Absorb notices until the stream ends or the mode changes; false when stopping.
async fn drain(
    engine: &EngineHandle,
    mut feed: CompletionFeed,
    source: &mut TunablesSource,
    stop: &mut watch::Receiver<bool>,
) -> bool {
    loop {
        tokio::select! {
            _ = stop.changed() => return false,
            next = feed.next() => match next {
                Some(pushed) => {
                    if pushed.out_of_order {
                        tracing::debug!(target: "turbomon::supervisor", engine = %engine.name(), "completion batch out of order");
                    }
                    engine.counters.pushed.bump(pushed.statuses.len() as u64);
                    // Not while the engine's tasks are being reconciled.
                    let _gate = engine.gate.read().await;
                    if !engine.running.load(std::sync::atomic::Ordering::Relaxed) {
                        // Cluster: another member's engine now; that member records these.
                        continue;
                    }
                    let settled = engine.ledger().statuses(pushed.statuses, true, SystemTime::now());
                    apply(engine, settled);
                }
                // The engine went away or ended the stream: subscribe again.
                None => return true,
            },
        }
        // Switched back to poll mode by a reload: stop listening, the monitor loop takes over.
        if source.current().status_mode != StatusMode::Push {
            return true;
        }
    }
}

async fn subscribe(
    engine: &EngineHandle,
    flush_window: Duration,
) -> Result<CompletionFeed, tonic::Status> {
    let connection = engine
        .contact
        .connection()
        .await
        .map_err(tonic::Status::unavailable)?;
    completions::subscribe(&connection, flush_window).await
}
