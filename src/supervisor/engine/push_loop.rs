//! Push mode for one engine: hold a `Completions` stream open and let the ledger absorb every
//! notice as it arrives; the monitor loop keeps running as reconciliation. Idle while the engine
//! is in poll mode.

use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use super::connection::Backoff;
use super::effects::apply;
use super::handle::EngineHandle;
use super::tunables::TunablesSource;
use crate::config::{StatusMode, SupervisorConfig};
use crate::proto::{CompletionBatch, CompletionsRequest};
use crate::supervisor::counters::Bump;

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
            match subscribe(engine, &source.config()).await {
                Ok(completions) => {
                    backoff.succeeded();
                    if !drain(engine, completions, &mut source, &mut stop).await {
                        return;
                    }
                    continue;
                }
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
    mut completions: tonic::Streaming<CompletionBatch>,
    source: &mut TunablesSource,
    stop: &mut watch::Receiver<bool>,
) -> bool {
    let mut last_batch = 0u64;
    loop {
        tokio::select! {
            _ = stop.changed() => return false,
            next = completions.message() => match next {
                Ok(Some(batch)) => {
                    if batch.batch_id <= last_batch {
                        tracing::debug!(target: "turbomon::supervisor", engine = %engine.name(), batch = batch.batch_id, "completion batch out of order");
                    }
                    last_batch = batch.batch_id;
                    engine.counters.pushed.bump(batch.statuses.len() as u64);
                    let settled = engine.ledger().statuses(batch.statuses, true, SystemTime::now());
                    apply(engine, settled);
                }
                // The engine went away or ended the stream: subscribe again.
                Ok(None) | Err(_) => return true,
            },
        }
        if source.current().status_mode != StatusMode::Push {
            return true;
        }
    }
}

async fn subscribe(
    engine: &EngineHandle,
    config: &SupervisorConfig,
) -> Result<tonic::Streaming<CompletionBatch>, tonic::Status> {
    let connection = engine
        .contact
        .connection()
        .await
        .map_err(tonic::Status::unavailable)?;
    let request = CompletionsRequest {
        flush_window_ms: u64::try_from(config.push_flush_window.as_millis())
            .unwrap_or(u64::MAX)
            .max(1),
        max_batch: 0,
    };
    Ok(connection.client().completions(request).await?.into_inner())
}
