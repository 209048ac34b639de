//! The monitor loop of one engine: every status-check interval, ask for every unfinished task
//! and release the results already recorded, let the ledger absorb the statuses, and decide
//! what failures mean: a stalled query shrinks the next loop's batches; a reply over the message
//! size cap shrinks them at once and asks again, down to single ids; a status too large even
//! alone is a failure of that task, said once. A loop that keeps failing says so once, then
//! again only at every tenfold count, and says when it recovers. Results a loop recorded are
//! released at the end of the same loop (one more query, its packet counted, not a loop of its
//! own), so that a supervisor killed just after recording them does not find them held again at
//! its next start.

use std::time::SystemTime;

use tokio::sync::watch;

use super::connection::Shrink;
use super::effects::apply;
use super::handle::EngineHandle;
use super::sizing::{LoopKind, LoopSizer};
use super::tunables::TunablesSource;
use crate::supervisor::autosize::LoopSample;
use crate::supervisor::counters::Bump;
use crate::wire::status::{
    MonitorOutcome, StatusSizing, TaskId, monitor_turbo_sized, monitor_unary,
};
use crate::wire::stream::StatusStream;

/// Rounds one monitor loop may take when replies are over the message size cap: each halves the
/// batch, so this reaches single ids from any batch size the configuration allows.
const MAX_ROUNDS: usize = 12;

/// What the loop keeps between two monitor loops.
struct Monitor {
    stream: Option<StatusStream>,
    shrink: Shrink,
    /// Expected bytes of one status besides its id, learnt from the replies.
    status_bytes: usize,
    failing: FailureLog,
    sizer: LoopSizer,
    /// The size the last loop was sized for (before any shrink): where the shrink grows back to.
    sized: usize,
}

/// Run until the supervisor stops, then one last pass to collect what finished since.
pub(crate) async fn run(
    engine: &EngineHandle,
    mut source: TunablesSource,
    mut stop: watch::Receiver<bool>,
) {
    let mut monitor = Monitor {
        stream: None,
        shrink: Shrink::default(),
        status_bytes: StatusSizing::DEFAULT_STATUS_BYTES,
        failing: FailureLog::default(),
        sizer: LoopSizer::new(LoopKind::Monitor),
        sized: 1,
    };
    loop {
        let interval = source.current().status_check_interval;
        tokio::select! {
            _ = stop.changed() => break,
            () = tokio::time::sleep(interval) => {}
            () = engine.wake_monitor.notified() => {}
        }
        if *stop.borrow() {
            break;
        }
        // Boxed: the engine's task holds only the idle state between loops.
        Box::pin(monitor_once(engine, &mut source, &mut monitor)).await;
    }
    Box::pin(monitor_once(engine, &mut source, &mut monitor)).await;
    let left = engine.unfinished_count();
    if left > 0 {
        tracing::warn!(target: "turbomon::supervisor", engine = %engine.name(), tasks = left, supervisor_id = %engine.supervisor_id, "stopping with submitted tasks whose outcome is not known yet; the engine keeps their results, and the next start with this supervisor_id collects them");
    }
}

/// One monitor loop over every unfinished task (nothing when there is nothing to ask or
/// release), not while the engine's tasks are being reconciled.
async fn monitor_once(engine: &EngineHandle, source: &mut TunablesSource, monitor: &mut Monitor) {
    let _gate = engine.gate.read().await;
    if !engine.running.load(std::sync::atomic::Ordering::Relaxed) {
        // Cluster: another member's engine now; only what was recorded here is released.
        release_now(engine, source, monitor).await;
        return;
    }
    ask(engine, source, monitor).await;
    if monitor.failing.in_a_row == 0 {
        release_now(engine, source, monitor).await;
    }
}

/// Releases at once the results recorded since the last query.
async fn release_now(engine: &EngineHandle, source: &mut TunablesSource, monitor: &mut Monitor) {
    let release = engine.ledger().take_release();
    if release.is_empty() {
        return;
    }
    let Some(outcome) = query(engine, source, monitor, Vec::new(), release).await else {
        return;
    };
    {
        let mut stats = engine.stats();
        for &bytes in &outcome.packets_bytes {
            stats.monitor.record_packet(bytes);
        }
    }
    if outcome.failure.is_some() {
        monitor.stream = None;
    }
    // Unanswered: they go with the next loop.
    engine.ledger().unreleased(outcome.unreleased);
}

/// The rounds of one monitor loop: every unfinished id asked, the pending releases sent.
async fn ask(engine: &EngineHandle, source: &mut TunablesSource, monitor: &mut Monitor) {
    let (mut ids, mut release) = engine.ledger().next_query();
    for _ in 0..MAX_ROUNDS {
        if ids.is_empty() && release.is_empty() {
            return;
        }
        let Some(outcome) = query(engine, source, monitor, ids, release).await else {
            return;
        };
        let retry_now = absorb(engine, source, monitor, outcome).await;
        match retry_now {
            Some((again, again_release)) => (ids, release) = (again, again_release),
            None => return,
        }
    }
}

/// Ask once; `None` when the engine cannot be reached (the ids wait for the next loop).
async fn query(
    engine: &EngineHandle,
    source: &mut TunablesSource,
    monitor: &mut Monitor,
    ids: Vec<TaskId>,
    release: Vec<TaskId>,
) -> Option<MonitorOutcome> {
    let tunables = source.current();
    let config = source.config();
    let sized = monitor.sizer.limits(
        engine.name(),
        &tunables,
        &config,
        &mut engine.stats().monitor,
    );
    monitor.sized = sized.batch_size;
    let limits = monitor.shrink.apply(sized);
    if !tunables.turbo_monitoring {
        monitor.stream = None;
        return Some(monitor_unary(engine.contact.dialer(), ids, release, limits).await);
    }
    match engine.contact.open_stream(&mut monitor.stream).await {
        Ok(stream) => {
            let sizing = StatusSizing {
                max_message_bytes: config.max_message_bytes,
                status_bytes: monitor.status_bytes,
            };
            let items = ids.len();
            let outcome =
                monitor_turbo_sized(stream, ids, release, limits, &engine.batch_ids, sizing).await;
            monitor.sizer.observe(
                engine.name(),
                LoopSample {
                    items,
                    batch_size: limits.batch_size,
                    in_flight: limits.in_flight,
                    elapsed: outcome.elapsed,
                    bytes: outcome.packets_bytes.iter().sum(),
                    completed: outcome.completed(),
                    timed_out: outcome.timed_out_batch.is_some()
                        || outcome.too_large_batch.is_some(),
                },
            );
            Some(outcome)
        }
        Err(reason) => {
            engine.ledger().unreleased(release);
            engine.stats().monitor.record_failed_loop();
            monitor
                .failing
                .failed(engine.name(), &format!("engine unreachable: {reason}"));
            None
        }
    }
}

/// Record a loop's outcome and absorb its statuses. Returns the ids to ask again at once when
/// replies were over the message size cap.
async fn absorb(
    engine: &EngineHandle,
    source: &mut TunablesSource,
    monitor: &mut Monitor,
    mut outcome: MonitorOutcome,
) -> Option<(Vec<TaskId>, Vec<TaskId>)> {
    record(engine, &outcome);
    let now = SystemTime::now();
    let settled = engine
        .ledger()
        .statuses(std::mem::take(&mut outcome.statuses), false, now);
    apply(engine, settled);
    // Expect replies like the largest just seen, letting an old large one fade.
    monitor.status_bytes = (monitor.status_bytes * 3 / 4)
        .max(outcome.largest_status_bytes)
        .max(StatusSizing::DEFAULT_STATUS_BYTES);

    if let Some(size) = outcome.too_large_batch {
        monitor.stream = None;
        if monitor.shrink.at_floor() && size <= 1 {
            // One id per query and its reply is still over the cap: this result can never be
            // read. Fail the task once, clearly, and release it, rather than fail every loop.
            let culprit: Vec<TaskId> = outcome
                .unanswered
                .drain(..1.min(outcome.unanswered.len()))
                .collect();
            let reason = format!(
                "its status is larger than max_message_bytes ({} bytes); raise max_message_bytes to collect results this large",
                source.config().max_message_bytes
            );
            let settled = engine.ledger().unreadable(&culprit, &reason, now);
            apply(engine, settled);
        } else {
            monitor.shrink.timed_out(size);
            engine.counters.splits.bump(1);
            engine.stats().monitor.record_splits(1);
        }
        // Ask again at once: the cap is a property of the replies, not of the link's mood.
        return Some((outcome.unanswered, outcome.unreleased));
    }
    if let Some(size) = outcome.timed_out_batch {
        if !(monitor.shrink.at_floor() && size <= 1) {
            monitor.shrink.timed_out(size);
            engine.counters.splits.bump(1);
            engine.stats().monitor.record_splits(1);
        }
        // The connection may be stalled behind the unanswered query: start a fresh one.
        monitor.stream = None;
        engine.contact.forget_connection().await;
    } else if outcome.completed() {
        monitor.shrink.answered(monitor.sized);
    }
    match &outcome.failure {
        Some(reason) => {
            monitor.failing.failed(engine.name(), reason);
            if monitor.stream.as_ref().is_some_and(StatusStream::is_closed) {
                monitor.stream = None;
            }
        }
        None => monitor.failing.answered(engine.name()),
    }
    // Unanswered ids are still in the ledger and asked next loop; only releases travel back.
    engine.ledger().unreleased(outcome.unreleased);
    None
}

fn record(engine: &EngineHandle, outcome: &MonitorOutcome) {
    let mut stats = engine.stats();
    for &bytes in &outcome.packets_bytes {
        stats.monitor.record_packet(bytes);
    }
    if outcome.completed() {
        stats.monitor.record_loop(outcome.elapsed);
    } else {
        stats.monitor.record_failed_loop();
    }
}

/// Loop failures in a row, logged at the first and at every tenfold count, so that a loop that
/// cannot succeed says why without repeating it every interval.
#[derive(Debug, Default)]
struct FailureLog {
    in_a_row: u64,
}

impl FailureLog {
    fn failed(&mut self, engine: &str, reason: &str) {
        self.in_a_row += 1;
        if is_power_of_ten(self.in_a_row) {
            tracing::warn!(target: "turbomon::supervisor", engine, %reason, loops_failed_in_a_row = self.in_a_row, "monitor loop incomplete; unanswered tasks are asked again next loop");
        } else {
            tracing::debug!(target: "turbomon::supervisor", engine, %reason, loops_failed_in_a_row = self.in_a_row, "monitor loop incomplete");
        }
    }

    fn answered(&mut self, engine: &str) {
        if self.in_a_row > 0 {
            tracing::info!(target: "turbomon::supervisor", engine, loops_failed = self.in_a_row, "monitor loop answered again");
        }
        self.in_a_row = 0;
    }
}

/// Whether `n` is 1, 10, 100, ...: when a repeating failure is logged again.
fn is_power_of_ten(mut n: u64) -> bool {
    while n >= 10 && n.is_multiple_of(10) {
        n /= 10;
    }
    n == 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_failures_are_logged_at_tenfold_counts() {
        let logged: Vec<u64> = (1..=1000).filter(|&n| is_power_of_ten(n)).collect();
        assert_eq!(logged, vec![1, 10, 100, 1000]);
    }
}
