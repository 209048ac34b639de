//! The submission loop of one engine: gather the tasks the scheduler hands over (and those
//! handed back for a resend), send them in one loop over the wire, let the ledger absorb the
//! acknowledgements, and decide what the failures mean for the connection: reconnect, shrink
//! the batches, back off, or call the engine unreachable.

use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, watch};

use super::connection::{Backoff, Shrink};
use super::effects::apply;
use super::handle::EngineHandle;
use super::sizing::{LoopKind, LoopSizer};
use super::tunables::TunablesSource;
use crate::config::Tunables;
use crate::proto::Task;
use crate::supervisor::autosize::LoopSample;
use crate::supervisor::counters::Bump;
use crate::supervisor::schedule::outgoing::{Outgoing, build};
use crate::supervisor::schedule::plan::priority_rank;
use crate::wire::stream::SubmitStream;
use crate::wire::submit::{Delivery, SubmissionOutcome, submit_turbo, submit_unary};

/// Tasks waiting for an engine that is down; beyond this, low priority first, then the oldest,
/// are shed (counted and logged).
pub(crate) const MAX_OUTBOX_TASKS: usize = 200_000;

/// What the loop keeps between two submission loops.
struct Sender {
    /// Tasks waiting to go, compact until the loop that sends them.
    outbox: Vec<Outgoing>,
    backoff: Backoff,
    stream: Option<SubmitStream>,
    shrink: Shrink,
    sizer: LoopSizer,
}

/// Run until the supervisor stops; then report the tasks never acknowledged.
pub(crate) async fn run(
    engine: &EngineHandle,
    mut due: mpsc::UnboundedReceiver<Vec<Outgoing>>,
    mut source: TunablesSource,
    mut stop: watch::Receiver<bool>,
) {
    let mut sender = Sender {
        outbox: Vec::new(),
        backoff: Backoff::default(),
        stream: None,
        shrink: Shrink::default(),
        sizer: LoopSizer::new(LoopKind::Submission),
    };
    let mut reachable = engine.contact.watch_reachable();
    while wait_for_work(&mut sender, &mut due, &mut reachable, &mut stop).await {
        while let Ok(more) = due.try_recv() {
            sender.outbox.extend(more);
        }
        shed_outbox(engine, &mut sender.outbox);
        if sender.outbox.is_empty() {
            continue;
        }
        // Not while the engine's tasks are being reconciled; and nothing the reconciliation
        // found on the engine goes out again.
        let _gate = engine.gate.read().await;
        if !engine.running.load(Ordering::Relaxed) {
            // Cluster: another member runs the engine now and sends its tasks.
            while let Ok(more) = due.try_recv() {
                sender.outbox.extend(more);
            }
            let dropped = std::mem::take(&mut sender.outbox).len();
            engine.counters.handed_over.bump(dropped as u64);
            sender.backoff.succeeded();
            continue;
        }
        // Built whole only now, as they go out.
        let mut tasks = build(std::mem::take(&mut sender.outbox), &engine.plans);
        let known = engine.ledger().drop_known(&mut tasks, SystemTime::now());
        if known > 0 {
            tracing::debug!(target: "turbomon::supervisor", engine = %engine.name(), tasks = known, "not sent: the engine already holds them (found at a reconciliation)");
        }
        if tasks.is_empty() {
            continue;
        }
        let tunables = source.current();
        // Boxed, like every loop's work, so that the engine's task holds only its idle state
        // between loops (a few hundred bytes, not kilobytes, times every engine).
        Box::pin(send_outbox(engine, &mut sender, tasks, &tunables, &source)).await;
    }
    if !sender.outbox.is_empty() {
        let left = sender.outbox.len() as u64;
        engine.counters.unsent_at_shutdown.bump(left);
        tracing::warn!(target: "turbomon::supervisor", engine = %engine.name(), tasks = left, "stopping with tasks never acknowledged by the engine; they were not run");
    }
}

/// Wait until there is something to send: new tasks when nothing waits; when tasks wait after
/// a failure, the backoff instant or the engine answering again, whichever comes first (new
/// tasks are gathered meanwhile). False when stopping.
async fn wait_for_work(
    sender: &mut Sender,
    due: &mut mpsc::UnboundedReceiver<Vec<Outgoing>>,
    reachable: &mut watch::Receiver<bool>,
    stop: &mut watch::Receiver<bool>,
) -> bool {
    let waiting = !sender.outbox.is_empty();
    let deadline = sender.backoff.retry_at();
    // Tasks handed back for an immediate resend (no backoff set): go at once.
    if waiting && deadline.is_none() {
        return !*stop.borrow();
    }
    reachable.mark_unchanged();
    loop {
        if *stop.borrow() {
            return false;
        }
        let sleep = async {
            match deadline {
                Some(at) if waiting => tokio::time::sleep_until(at).await,
                _ => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = stop.changed() => return false,
            () = sleep => return true,
            changed = reachable.changed(), if waiting => {
                // The prober saw the engine serve again: try now rather than at the backoff
                // instant, which can be half a minute away.
                if changed.is_ok() && *reachable.borrow_and_update() {
                    sender.backoff.succeeded();
                    return true;
                }
            }
            more = due.recv() => match more {
                Some(more) => {
                    sender.outbox.extend(more);
                    if !waiting {
                        return true;
                    }
                }
                None => return false,
            },
        }
    }
}

/// One submission loop over `tasks` (everything the outbox held).
async fn send_outbox(
    engine: &EngineHandle,
    sender: &mut Sender,
    mut tasks: Vec<Task>,
    tunables: &Tunables,
    source: &TunablesSource,
) {
    let config = source.config();
    let sized = sender.sizer.limits(
        engine.name(),
        tunables,
        &config,
        &mut engine.stats().submission,
    );
    let limits = sender.shrink.apply(sized);
    tasks.sort_by_key(|t| priority_rank(t.priority));
    // Cluster: the epoch this member runs the engine under (0 without a cluster).
    let epoch = engine.epoch.load(Ordering::Relaxed);
    for task in &mut tasks {
        task.assignment_epoch = epoch;
    }
    let count = tasks.len();
    let outcome = if tunables.turbo_monitoring {
        match engine.contact.open_stream(&mut sender.stream).await {
            Ok(stream) => submit_turbo(stream, tasks, limits, &engine.batch_ids).await,
            Err(reason) => {
                // Not even a stream: keep every task and try again after the backoff.
                sender.outbox.extend(tasks.into_iter().map(Outgoing::whole));
                engine.stats().submission.record_failed_loop();
                engine.contact.set_reachable(false);
                let delay = sender.backoff.failed();
                tracing::warn!(target: "turbomon::supervisor", engine = %engine.name(), %reason, retry_in = %humantime::format_duration(delay), pending = sender.outbox.len(), "engine unreachable; tasks kept for the next attempt");
                return;
            }
        }
    } else {
        // Turbo off dials per call: a stream left from turbo on would only hold a connection.
        sender.stream = None;
        submit_unary(engine.contact.dialer(), tasks, limits).await
    };
    engine.counters.submitted.bump(count as u64);
    record(engine, &outcome);
    if tunables.turbo_monitoring {
        sender.sizer.observe(
            engine.name(),
            LoopSample {
                items: count,
                batch_size: limits.batch_size,
                in_flight: limits.in_flight,
                elapsed: outcome.elapsed,
                bytes: outcome.packets_bytes.iter().sum(),
                completed: outcome.completed(),
                timed_out: largest_timed_out_batch(&outcome).is_some(),
            },
        );
    }
    settle(
        engine,
        sender,
        outcome,
        count,
        sized.batch_size,
        config.batch_timeout,
    )
    .await;
}

/// What one loop's failures mean: the ledger absorbs every answer; unanswered tasks go back to
/// the outbox, at once when part of the loop got through (the engine is up, the batches were
/// too large for the link), after the backoff otherwise.
async fn settle(
    engine: &EngineHandle,
    sender: &mut Sender,
    mut outcome: SubmissionOutcome,
    count: usize,
    batch_size: usize,
    batch_timeout: Duration,
) {
    let completed = outcome.completed();
    let failure = outcome.deliveries.iter().find_map(|(_, d)| match d {
        Delivery::Retry { reason, .. } => Some(reason.clone()),
        _ => None,
    });
    let timed_out = largest_timed_out_batch(&outcome);
    let oversized = outcome.deliveries.iter().any(|(_, d)| {
        matches!(
            d,
            Delivery::Retry {
                oversized: true,
                ..
            }
        )
    });
    let now = SystemTime::now();
    if timed_out == Some(1) && sender.shrink.at_floor() {
        // Even alone these tasks got no answer: report them failed, never drop them silently
        // and never resend them for ever.
        let (alone, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut outcome.deliveries)
            .into_iter()
            .partition(|(_, d)| {
                matches!(
                    d,
                    Delivery::Retry {
                        timed_out_batch: Some(1),
                        ..
                    }
                )
            });
        outcome.deliveries = rest;
        let reason = if oversized {
            "refused even when sent alone: over the engine's max_message_bytes".to_string()
        } else {
            format!(
                "not acknowledged within {} even when sent alone: the link may be dropping packets this large",
                humantime::format_duration(batch_timeout)
            )
        };
        let settled =
            engine
                .ledger()
                .unanswered(alone.into_iter().map(|(t, _)| t).collect(), &reason, now);
        apply(engine, settled);
    }
    let mut settled = engine
        .ledger()
        .submitted(outcome.deliveries, outcome.started_at, now);
    let retry = std::mem::take(&mut settled.resend);
    apply(engine, settled);

    if let Some(size) = timed_out {
        if !(sender.shrink.at_floor() && size == 1) {
            sender.shrink.timed_out(size);
            engine.counters.splits.bump(1);
            engine.stats().submission.record_splits(1);
            if oversized {
                tracing::warn!(target: "turbomon::supervisor", engine = %engine.name(), refused_batch = size, next_batch = sender.shrink.cap().unwrap_or(0), reason = failure.as_deref().unwrap_or(""), "a batch was over a message size cap (is the engine's max_message_bytes below ours?): sending them again split in half on a fresh connection");
            } else {
                tracing::warn!(target: "turbomon::supervisor", engine = %engine.name(), unanswered_batch = size, next_batch = sender.shrink.cap().unwrap_or(0), "batches went unanswered: sending them again split in half, one at a time, on a fresh connection");
            }
        }
        // The connection may be stalled (a black hole): start a fresh one.
        sender.stream = None;
        engine.contact.forget_connection().await;
    }
    if completed {
        sender.shrink.answered(batch_size);
        sender.backoff.succeeded();
        engine.contact.set_reachable(true);
    } else if timed_out.is_some() && (retry.len() < count || oversized) {
        // Part of the loop got through, or the engine answered that a batch was too large: the
        // engine is up; resend at once, smaller.
        sender.outbox.extend(retry.into_iter().map(Outgoing::whole));
    } else {
        engine.counters.retried.bump(retry.len() as u64);
        if sender.stream.as_ref().is_some_and(SubmitStream::is_closed) {
            // The stream broke: the engine went away (or closed it); resend everything
            // unacknowledged on a new one once it answers.
            sender.stream = None;
            engine.contact.set_reachable(false);
        }
        let delay = sender.backoff.failed();
        tracing::warn!(target: "turbomon::supervisor", engine = %engine.name(), reason = failure.as_deref().unwrap_or(""), unacknowledged = retry.len(), retry_in = %humantime::format_duration(delay), "submission loop incomplete; unacknowledged tasks will be sent again");
        sender.outbox.extend(retry.into_iter().map(Outgoing::whole));
    }
}

/// The largest batch of the loop that got no answer within the batch timeout.
fn largest_timed_out_batch(outcome: &SubmissionOutcome) -> Option<usize> {
    outcome
        .deliveries
        .iter()
        .filter_map(|(_, d)| match d {
            Delivery::Retry {
                timed_out_batch, ..
            } => *timed_out_batch,
            _ => None,
        })
        .max()
}

fn record(engine: &EngineHandle, outcome: &SubmissionOutcome) {
    let mut stats = engine.stats();
    if outcome.size_splits > 0 {
        stats.submission.record_splits(outcome.size_splits);
        engine.counters.splits.bump(outcome.size_splits);
    }
    for &bytes in &outcome.packets_bytes {
        stats.submission.record_packet(bytes);
    }
    if outcome.completed() {
        stats.submission.record_loop(outcome.elapsed);
    } else {
        stats.submission.record_failed_loop();
    }
}

/// Over the cap, shed low priority first, then normal, then high; the oldest first within each.
fn shed_outbox(engine: &EngineHandle, outbox: &mut Vec<Outgoing>) {
    if outbox.len() <= MAX_OUTBOX_TASKS {
        return;
    }
    let shed = shed_over(outbox, MAX_OUTBOX_TASKS, |t| t.priority_rank(&engine.plans));
    let total: usize = shed.iter().sum();
    engine.counters.shed.bump(total as u64);
    tracing::error!(target: "turbomon::supervisor", engine = %engine.name(), shed_high = shed[0], shed_normal = shed[1], shed_low = shed[2], "engine down too long: waiting tasks over the cap were shed, low priority first");
}

/// Drop tasks until `cap` remain, lowest priority first and oldest first within a priority.
/// Returns how many were dropped per priority rank (high, normal, low).
fn shed_over(
    outbox: &mut Vec<Outgoing>,
    cap: usize,
    rank_of: impl Fn(&Outgoing) -> u8,
) -> [usize; 3] {
    let mut excess = outbox.len().saturating_sub(cap);
    let mut shed = [0usize; 3];
    for rank in (0..=2u8).rev() {
        if excess == 0 {
            break;
        }
        outbox.retain(|t| {
            if excess > 0 && rank_of(t) == rank {
                excess -= 1;
                shed[usize::from(rank)] += 1;
                false
            } else {
                true
            }
        });
    }
    shed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::Priority;

    #[test]
    fn shedding_takes_low_priority_first_then_the_oldest() {
        let task = |id: &str, priority: Priority| {
            Outgoing::whole(Task {
                id: id.into(),
                priority: priority as i32,
                ..Task::default()
            })
        };
        let mut outbox = vec![
            task("h1", Priority::High),
            task("n1", Priority::Normal),
            task("l1", Priority::Low),
            task("n2", Priority::Normal),
            task("l2", Priority::Low),
        ];
        let shed = shed_over(&mut outbox, 2, |t| t.priority_rank(&[]));
        assert_eq!(shed, [0, 1, 2]);
        let left: Vec<String> = build(outbox, &[]).into_iter().map(|t| t.id).collect();
        assert_eq!(left, vec!["h1", "n2"]);
    }
}
