//! Reconciliation with one engine: at start and after every reconnect, before the loops go on,
//! the tasks the engine holds for this supervisor (by `supervisor_id`) are listed through
//! [`crate::wire::list`] and handed to the ledger, which absorbs finished results exactly as if
//! polled and adopts the unfinished ones, so that nothing submitted before a restart is left
//! on the engine. The supervisor's marks go to the scheduler, which decides on the first
//! reconciliation what becomes of the tasks that were due before the start.
//!
//! The loops wait meanwhile: each does its work holding the engine's gate for reading, and a
//! reconciliation holds it for writing (from the very start: the first one holds it before any
//! loop runs). An engine that cannot list (an older version) is reconciled with nothing: its
//! relators are treated as new. A failure that may pass (the engine unreachable) is tried again
//! after a backoff, or as soon as the engine answers again; if the engine cannot be reached
//! within [`START_GRACE`] of the start, the scheduler is told that nothing is known, and the
//! relators start as new (their tasks then wait for the engine like any others).
//!
//! A cluster member ([`run_clustered`]) runs the engine only while it is assigned to it: each
//! time it gets the engine it tells the scheduler (whose relators resume as at a start) and
//! reconciles, under the cluster-wide `supervisor_id`, adopting what the member before it left
//! (their marks also keep anything at or before them from being sent again from here); when it
//! loses the engine it stops sending, asking and recording at once, forgets what it waited for
//! (the next member adopts it), drops what was queued, and releases the results it recorded.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use tokio::sync::{OwnedRwLockWriteGuard, watch};
use tokio::time::Instant;

use super::connection::Backoff;
use super::effects::apply;
use super::handle::EngineHandle;
use super::tunables::TunablesSource;
use crate::supervisor::counters::Bump;
use crate::supervisor::schedule::scheduler::ScheduleEvent;
use crate::wire::list::{ListError, TaskLister};

const T: &str = "turbomon::supervisor";

/// How long the start waits for a first reconciliation before the engine's relators start as
/// new.
pub(crate) const START_GRACE: Duration = Duration::from_secs(2);

/// What one reconciliation found.
struct Found {
    listed: usize,
    adopted: u64,
    marks: HashMap<String, i64>,
    elapsed: Duration,
}

/// Reconcile now (`first` is the gate, held since the loops were created), then after every
/// reconnect, until the supervisor stops.
pub(crate) async fn run(
    engine: &EngineHandle,
    first: OwnedRwLockWriteGuard<()>,
    ownership: Option<watch::Receiver<Option<u64>>>,
    mut source: TunablesSource,
    mut stop: watch::Receiver<bool>,
) {
    if let Some(ownership) = ownership {
        // Nothing runs before the engine is this member's (`running` is false): the loops may go.
        drop(first);
        Box::pin(run_clustered(engine, ownership, source, stop)).await;
        return;
    }
    let mut reconnects = engine.contact.watch_generation();
    let mut backoff = Backoff::default();
    let mut first = Some(first);
    let mut said_unsupported = false;
    // Until the scheduler has been told about the start.
    let mut start_deadline = Some(Instant::now() + START_GRACE);
    loop {
        // Boxed: the engine's task holds only the idle state between reconciliations.
        let Some((outcome, gate)) = Box::pin(reconcile_gated(
            engine,
            first.take(),
            &mut source,
            &mut reconnects,
            &mut stop,
        ))
        .await
        else {
            return;
        };
        drop(gate);
        let retry_at = match outcome {
            Ok(found) => {
                backoff.succeeded();
                if found.listed > 0 {
                    tracing::info!(target: T, engine = %engine.name(), supervisor_id = %engine.supervisor_id, held = found.listed, adopted = found.adopted, took = %humantime::format_duration(round_ms(found.elapsed)), "reconciled with the engine: results held for this supervisor collected, unfinished tasks monitored");
                } else {
                    tracing::debug!(target: T, engine = %engine.name(), "reconciled with the engine: nothing held for this supervisor");
                }
                tell_scheduler(engine, found.marks);
                start_deadline = None;
                None
            }
            Err(error) if !error.is_retryable() => {
                if !said_unsupported {
                    tracing::warn!(target: T, engine = %engine.name(), %error, "cannot reconcile with the engine: results it holds from before a restart are not collected, and its relators start as new");
                    said_unsupported = true;
                }
                tell_scheduler(engine, HashMap::new());
                start_deadline = None;
                None
            }
            Err(error) => {
                let delay = backoff.failed();
                tracing::debug!(target: T, engine = %engine.name(), %error, retry_in = %humantime::format_duration(delay), "reconciliation incomplete; trying again");
                let mut retry_at = Instant::now() + delay;
                if let Some(deadline) = start_deadline {
                    if Instant::now() >= deadline {
                        tracing::warn!(target: T, engine = %engine.name(), %error, "engine unreachable at start: its relators start as new; what it holds for this supervisor is collected once it answers");
                        tell_scheduler(engine, HashMap::new());
                        start_deadline = None;
                    } else {
                        retry_at = retry_at.min(deadline);
                    }
                }
                Some(retry_at)
            }
        };
        let retry = async {
            match retry_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = stop.wait_for(|stop| *stop) => return,
            changed = reconnects.changed() => if changed.is_err() { return },
            () = retry => {}
        }
    }
}

/// A cluster member's side of the engine: wait until it is this member's, take it (the scheduler
/// first, then a reconciliation, tried again after a backoff and after every reconnect), follow
/// its epoch, and hand it over when it goes to another member.
async fn run_clustered(
    engine: &EngineHandle,
    mut ownership: watch::Receiver<Option<u64>>,
    mut source: TunablesSource,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let epoch = loop {
            if let Some(epoch) = *ownership.borrow_and_update() {
                break epoch;
            }
            tokio::select! {
                changed = ownership.changed() => if changed.is_err() { return },
                _ = stop.wait_for(|stop| *stop) => return,
            }
        };
        // Taken: under the gate, so no loop works before the reconciliation below.
        let gate = tokio::select! {
            gate = Arc::clone(&engine.gate).write_owned() => gate,
            _ = stop.wait_for(|stop| *stop) => return,
        };
        engine.epoch.store(epoch, Ordering::Relaxed);
        engine.running.store(true, Ordering::Relaxed);
        engine.counters.takeovers.bump(1);
        let _ = engine
            .outlets
            .events
            .send(ScheduleEvent::Taken(engine.index));
        let mut gate = Some(gate);
        let mut reconnects = engine.contact.watch_generation();
        let mut backoff = Backoff::default();
        let mut reconciled = false;
        let mut said_failure = false;
        let mut due = true;
        let mut retry_at: Option<Instant> = None;
        loop {
            if due {
                due = false;
                // The gate is held until the takeover's marks are in the ledger.
                let Some((outcome, held)) =
                    reconcile_gated(engine, gate.take(), &mut source, &mut reconnects, &mut stop)
                        .await
                else {
                    return;
                };
                match outcome {
                    Ok(found) => {
                        backoff.succeeded();
                        engine.ledger().taken_over(&found.marks);
                        tracing::info!(target: T, engine = %engine.name(), supervisor_id = %engine.supervisor_id, epoch, held = found.listed, adopted = found.adopted, took = %humantime::format_duration(round_ms(found.elapsed)), "cluster: running the engine, reconciled with it");
                        if !reconciled {
                            tell_scheduler(engine, found.marks);
                            reconciled = true;
                        }
                    }
                    Err(error) if !error.is_retryable() => {
                        if !reconciled {
                            tracing::warn!(target: T, engine = %engine.name(), %error, "cannot reconcile with the engine: what the member before left on it is not collected, and its relators start as new");
                            tell_scheduler(engine, HashMap::new());
                            reconciled = true;
                        }
                    }
                    Err(error) => {
                        let delay = backoff.failed();
                        if !said_failure {
                            tracing::warn!(target: T, engine = %engine.name(), %error, "cluster: the engine is this member's but cannot be reconciled yet; its firing in progress waits, trying again");
                            said_failure = true;
                        }
                        retry_at = Some(Instant::now() + delay);
                    }
                }
                drop(held);
            }
            let retry = async {
                match retry_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = stop.wait_for(|stop| *stop) => return,
                changed = reconnects.changed() => {
                    if changed.is_err() { return }
                    due = true;
                }
                () = retry => {
                    retry_at = None;
                    due = true;
                }
                changed = ownership.changed() => {
                    if changed.is_err() { return }
                    match *ownership.borrow_and_update() {
                        Some(epoch) => engine.epoch.store(epoch, Ordering::Relaxed),
                        None => break,
                    }
                }
            }
        }
        hand_over(engine, &mut stop).await;
    }
}

/// The engine went to another member: stop at once, forget what was waited for, drop what was
/// queued (the scheduler), and have the recorded results released now.
async fn hand_over(engine: &EngineHandle, stop: &mut watch::Receiver<bool>) {
    engine.running.store(false, Ordering::Relaxed);
    let _ = engine
        .outlets
        .events
        .send(ScheduleEvent::Released(engine.index));
    // The loops' work in flight ends first.
    let gate = tokio::select! {
        gate = engine.gate.write() => gate,
        _ = stop.wait_for(|stop| *stop) => return,
    };
    let forgotten = engine.ledger().hand_over();
    drop(gate);
    engine.counters.handed_over.bump(forgotten as u64);
    engine.wake_monitor.notify_one();
    tracing::info!(target: T, engine = %engine.name(), unfinished = forgotten, "cluster: the engine is another member's now; stopped sending to it and asking it");
}

/// One reconciliation: every page of the listing absorbed by the ledger as it comes; on the
/// engine's long-lived connection in turbo mode, one new connection per page otherwise.
/// One reconciliation with the loops waiting: under `gate`, or the gate taken now; the
/// outcome and the gate, still held, or `None` when stopping. A stalled connection is replaced,
/// and connections this reconciliation made are its own (`reconnects` marked unchanged).
async fn reconcile_gated(
    engine: &EngineHandle,
    gate: Option<OwnedRwLockWriteGuard<()>>,
    source: &mut TunablesSource,
    reconnects: &mut watch::Receiver<u64>,
    stop: &mut watch::Receiver<bool>,
) -> Option<(Result<Found, ListError>, OwnedRwLockWriteGuard<()>)> {
    let gate = match gate {
        Some(gate) => gate,
        None => tokio::select! {
            gate = Arc::clone(&engine.gate).write_owned() => gate,
            _ = stop.wait_for(|stop| *stop) => return None,
        },
    };
    let turbo = source.current().turbo_monitoring;
    let outcome = tokio::select! {
        outcome = reconcile(engine, source, turbo) => outcome,
        _ = stop.wait_for(|stop| *stop) => return None,
    };
    if matches!(outcome, Err(ListError::Timeout(_))) {
        engine.contact.forget_connection().await;
    }
    reconnects.mark_unchanged();
    Some((outcome, gate))
}

async fn reconcile(
    engine: &EngineHandle,
    source: &TunablesSource,
    turbo: bool,
) -> Result<Found, ListError> {
    let config = source.config();
    let mut lister = if turbo {
        let connection = engine
            .contact
            .connection()
            .await
            .map_err(ListError::Failed)?;
        TaskLister::new(&connection, &engine.supervisor_id, config.batch_timeout)
    } else {
        TaskLister::on_new_connections(
            engine.contact.dialer(),
            &engine.supervisor_id,
            config.batch_timeout,
        )
    };
    let adopted_before = engine.counters.adopted.load(Ordering::Relaxed);
    let mut marks = HashMap::new();
    while let Some(page) = lister.next_page().await? {
        marks.extend(
            page.marks
                .into_iter()
                .map(|mark| (mark.relator, mark.latest_scheduled_unix_ms)),
        );
        let settled = engine.ledger().reconciled(page.tasks, SystemTime::now());
        apply(engine, settled);
    }
    engine.counters.reconciles.bump(1);
    Ok(Found {
        listed: lister.listed(),
        adopted: engine
            .counters
            .adopted
            .load(Ordering::Relaxed)
            .saturating_sub(adopted_before),
        marks,
        elapsed: lister.elapsed(),
    })
}

/// The marks go to the scheduler (it uses the first reconciliation's to decide the start).
fn tell_scheduler(engine: &EngineHandle, marks: HashMap<String, i64>) {
    let _ = engine.outlets.events.send(ScheduleEvent::Reconciled {
        engine: engine.index,
        marks,
    });
}

fn round_ms(elapsed: Duration) -> Duration {
    Duration::from_millis(u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
}
