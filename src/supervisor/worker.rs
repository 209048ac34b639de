//! One engine as the supervisor sees it: the tasks waiting to be submitted, the tasks submitted
//! and not yet finished, the statistics window, and the three loops that drive them (submission,
//! monitor, statistics).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use rand::Rng;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::alert::{AlertActions, AlertEvent};
use super::batch::BatchIds;
use super::monitor::{MonitorOutcome, monitor_turbo, monitor_unary};
use super::plan::{RelatorPlan, priority_rank};
use super::scheduler::ScheduleEvent;
use super::stream::{StatusStream, SubmitStream};
use super::submit::{Delivery, LoopLimits, SubmissionOutcome, submit_turbo, submit_unary};
use super::{Completion, EngineCounters};
use crate::config::{SupervisorConfig, Tunables};
use crate::proto::engine_client::EngineClient;
use crate::proto::{Task, TaskState, TaskStatus};
use crate::stats::{EngineStats, Mode};
use crate::transport::Dialer;

/// Tasks waiting for an engine that is down; beyond this, low priority first, then the oldest,
/// are shed (counted and logged).
pub(super) const MAX_OUTBOX_TASKS: usize = 200_000;

/// A submitted task the supervisor waits to hear the end of.
#[derive(Debug)]
struct Unfinished {
    task: Task,
    /// Index of its relator's plan.
    relator: Option<usize>,
}

/// Everything the loops of one engine share.
pub(super) struct EngineState {
    pub(super) name: String,
    pub(super) index: usize,
    pub(super) dialer: Dialer,
    pub(super) counters: Arc<EngineCounters>,
    stats: Mutex<EngineStats>,
    unfinished: Mutex<HashMap<String, Unfinished>>,
    release: Mutex<Vec<String>>,
    client: tokio::sync::Mutex<Option<EngineClient<tonic::transport::Channel>>>,
    batch_ids: BatchIds,
    plans: Arc<Vec<RelatorPlan>>,
    plan_index: Arc<HashMap<String, usize>>,
    alert_actions: AlertActions,
    observer: Option<mpsc::UnboundedSender<Completion>>,
    resubmit: mpsc::UnboundedSender<Vec<Task>>,
    events: mpsc::UnboundedSender<ScheduleEvent>,
    reachable: std::sync::atomic::AtomicBool,
    max_outbox_tasks: usize,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What the worker needs to start.
pub(super) struct WorkerSetup {
    pub(super) name: String,
    pub(super) index: usize,
    pub(super) dialer: Dialer,
    pub(super) counters: Arc<EngineCounters>,
    pub(super) plans: Arc<Vec<RelatorPlan>>,
    pub(super) plan_index: Arc<HashMap<String, usize>>,
    pub(super) events: mpsc::UnboundedSender<ScheduleEvent>,
    pub(super) max_outbox_tasks: usize,
    pub(super) alert_actions: AlertActions,
    pub(super) observer: Option<mpsc::UnboundedSender<Completion>>,
    pub(super) stats_json: Option<PathBuf>,
    pub(super) config: watch::Receiver<Arc<SupervisorConfig>>,
    pub(super) stop: watch::Receiver<bool>,
}

/// Start the three loops of one engine. Tasks due for it go into the returned sender.
pub(super) fn start(
    setup: WorkerSetup,
    tasks: &mut tokio::task::JoinSet<()>,
) -> (Arc<EngineState>, mpsc::UnboundedSender<Vec<Task>>) {
    let (due_tx, due_rx) = mpsc::unbounded_channel();
    let state = Arc::new(EngineState {
        stats: Mutex::new(EngineStats::new(setup.name.clone(), SystemTime::now())),
        name: setup.name,
        index: setup.index,
        dialer: setup.dialer,
        counters: setup.counters,
        unfinished: Mutex::new(HashMap::new()),
        release: Mutex::new(Vec::new()),
        client: tokio::sync::Mutex::new(None),
        batch_ids: BatchIds::default(),
        plans: setup.plans,
        plan_index: setup.plan_index,
        alert_actions: setup.alert_actions,
        observer: setup.observer,
        resubmit: due_tx.clone(),
        events: setup.events,
        reachable: std::sync::atomic::AtomicBool::new(true),
        max_outbox_tasks: setup.max_outbox_tasks,
    });
    let tunables = TunablesSource {
        engine: state.name.clone(),
        config: setup.config,
        last: None,
    };
    let engine = Arc::clone(&state);
    tasks.spawn(async move {
        let loops = futures::future::join(
            submission_worker(
                Arc::clone(&engine),
                due_rx,
                tunables.clone(),
                setup.stop.clone(),
            ),
            monitor_worker(Arc::clone(&engine), tunables.clone(), setup.stop.clone()),
        );
        tokio::pin!(loops);
        let mut tunables = tunables;
        tokio::select! {
            _ = &mut loops => {}
            () = periodic_stats(&engine, &mut tunables, setup.stop, setup.stats_json.as_deref()) => {
                // Stopping: let the loops finish what is in flight before the final window.
                loops.await;
            }
        }
        print_window(&engine, &mut tunables, setup.stats_json.as_deref());
    });
    (state, due_tx)
}

/// The engine's tunables as the (reloadable) configuration says now.
#[derive(Clone)]
struct TunablesSource {
    engine: String,
    config: watch::Receiver<Arc<SupervisorConfig>>,
    last: Option<Tunables>,
}

impl TunablesSource {
    /// The whole configuration in force.
    fn config(&self) -> Arc<SupervisorConfig> {
        Arc::clone(&self.config.borrow())
    }

    fn current(&mut self) -> Tunables {
        let config = Arc::clone(&self.config.borrow_and_update());
        let now = config
            .engines
            .iter()
            .find(|e| e.name == self.engine)
            .map(|e| config.tunables(e));
        if let (Some(now), Some(last)) = (now, self.last)
            && now != last
        {
            tracing::info!(target: "turbomon::supervisor", engine = %self.engine, ?now, "tunables changed; in force from the next loop");
        }
        // An engine dropped from the file keeps its last settings until restart.
        let now = now.or(self.last).unwrap_or_else(|| {
            let defaults = SupervisorConfig::default();
            defaults.tunables(&crate::config::EngineEntry::default())
        });
        self.last = Some(now);
        now
    }
}

/// Exponential backoff with full jitter, capped.
#[derive(Debug, Default)]
struct Backoff {
    failures: u32,
    retry_at: Option<Instant>,
}

impl Backoff {
    const BASE: Duration = Duration::from_millis(200);
    const CAP: Duration = Duration::from_secs(30);

    fn failed(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let ceiling = Self::BASE
            .saturating_mul(1u32 << self.failures.min(16))
            .min(Self::CAP);
        let delay = rand::rng().random_range(Duration::ZERO..=ceiling);
        self.retry_at = Some(Instant::now() + delay);
        delay
    }

    fn succeeded(&mut self) {
        self.failures = 0;
        self.retry_at = None;
    }
}

impl EngineState {
    /// The engine's long-lived connection, dialled on first use.
    async fn client(&self) -> Result<EngineClient<tonic::transport::Channel>, String> {
        let mut client = self.client.lock().await;
        if let Some(client) = client.as_ref() {
            return Ok(client.clone());
        }
        let fresh = self.dialer.connect().await.map_err(|e| e.to_string())?;
        *client = Some(fresh.clone());
        Ok(fresh)
    }

    fn is_reachable(&self) -> bool {
        self.reachable.load(Ordering::Relaxed)
    }

    /// Record whether the engine answers; tell the scheduler when that changes.
    fn set_reachable(&self, up: bool) {
        if self.reachable.swap(up, Ordering::Relaxed) != up {
            let event = if up {
                tracing::info!(target: "turbomon::supervisor", engine = %self.name, "engine answers again");
                ScheduleEvent::EngineUp(self.index)
            } else {
                ScheduleEvent::EngineDown(self.index)
            };
            let _ = self.events.send(event);
        }
    }

    async fn forget_client(&self) {
        *self.client.lock().await = None;
    }

    /// Statistics so far in the current window (for tests and benchmarks).
    pub(super) fn with_stats<R>(&self, f: impl FnOnce(&EngineStats) -> R) -> R {
        f(&lock(&self.stats))
    }

    /// Tasks submitted and not yet finished.
    pub(super) fn unfinished_count(&self) -> usize {
        lock(&self.unfinished).len()
    }

    fn record_submission(&self, outcome: &SubmissionOutcome) {
        let mut stats = lock(&self.stats);
        for &bytes in &outcome.packets_bytes {
            stats.submission.record_packet(bytes);
        }
        if outcome.completed() {
            stats.submission.record_loop(outcome.elapsed);
        } else {
            stats.submission.record_failed_loop();
        }
    }

    fn record_monitor(&self, outcome: &MonitorOutcome) {
        let mut stats = lock(&self.stats);
        for &bytes in &outcome.packets_bytes {
            stats.monitor.record_packet(bytes);
        }
        if outcome.completed() {
            stats.monitor.record_loop(outcome.elapsed);
        } else {
            stats.monitor.record_failed_loop();
        }
    }

    /// Sort a loop's deliveries: accepted tasks become unfinished, the rest are retried or
    /// reported. Returns the tasks to send again.
    fn absorb_deliveries(&self, outcome: SubmissionOutcome) -> Vec<Task> {
        let mut retry = Vec::new();
        let mut unfinished = lock(&self.unfinished);
        for (task, delivery) in outcome.deliveries {
            match delivery {
                Delivery::Accepted { duplicate } => {
                    self.counters.accepted.fetch_add(1, Ordering::Relaxed);
                    if duplicate {
                        self.counters.duplicates.fetch_add(1, Ordering::Relaxed);
                    }
                    let relator = self.plan_index.get(&task.relator).copied();
                    unfinished.insert(task.id.clone(), Unfinished { task, relator });
                }
                Delivery::Rejected { reason } => {
                    self.counters.rejected.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(target: "turbomon::supervisor", engine = %self.name, task = %task.id, %reason, "engine rejected task");
                    self.observe(&task, TaskState::Failed, 0.0, &reason, 0);
                }
                Delivery::Retry { .. } => retry.push(task),
            }
        }
        retry
    }

    /// Sort the statuses of a monitor loop (or a pushed completion batch): finished tasks leave
    /// the unfinished set; failed ones are retried while the relator allows; final ones are
    /// released on the engine next loop, fire alerts when broken and start chained relators.
    pub(super) fn absorb_statuses(&self, statuses: Vec<TaskStatus>) {
        let mut resubmit = Vec::new();
        let mut finished = Vec::new();
        {
            let mut unfinished = lock(&self.unfinished);
            for status in statuses {
                let state = TaskState::try_from(status.state).unwrap_or(TaskState::Unspecified);
                match state {
                    TaskState::Ok
                    | TaskState::Broken
                    | TaskState::Failed
                    | TaskState::TimedOut
                    | TaskState::LostInRestart => {
                        let current = unfinished.get(&status.task_id).is_some_and(|u| {
                            u.task.attempt == status.attempt || status.attempt == 0
                        });
                        if current && let Some(entry) = unfinished.remove(&status.task_id) {
                            finished.push((entry, state, status));
                        }
                    }
                    TaskState::Unknown => {
                        // The engine no longer holds a task it acknowledged (it restarted
                        // without a journal): send it again rather than lose it.
                        if let Some(entry) = unfinished.remove(&status.task_id) {
                            self.counters.resubmitted.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(target: "turbomon::supervisor", engine = %self.name, task = %status.task_id, "engine forgot an acknowledged task; submitting it again");
                            resubmit.push(entry.task);
                        }
                    }
                    TaskState::Pending | TaskState::Running | TaskState::Unspecified => {}
                }
            }
        }
        if !resubmit.is_empty() {
            let _ = self.resubmit.send(resubmit);
        }
        let mut release = Vec::with_capacity(finished.len());
        for (entry, state, status) in finished {
            let plan = entry.relator.and_then(|r| self.plans.get(r));
            if state == TaskState::LostInRestart {
                self.counters
                    .lost_in_restart
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(target: "turbomon::supervisor", engine = %self.name, task = %entry.task.id, "task was running when the engine restarted");
            }
            if matches!(
                state,
                TaskState::Failed | TaskState::TimedOut | TaskState::LostInRestart
            ) && let Some(plan) = plan
                && self.schedule_retry(plan, &entry.task)
            {
                // Not final: the next attempt replaces this one on the engine.
                continue;
            }
            self.counters.completed.fetch_add(1, Ordering::Relaxed);
            self.observe(
                &entry.task,
                state,
                status.value,
                &status.message,
                status.finished_unix_ms,
            );
            if state == TaskState::Broken {
                self.counters.broken.fetch_add(1, Ordering::Relaxed);
                if let Some(plan) = plan
                    && !plan.alerts.is_empty()
                {
                    self.counters.alerts.fetch_add(1, Ordering::Relaxed);
                    self.alert_actions.fire(
                        &plan.alerts,
                        AlertEvent {
                            engine: self.name.clone(),
                            relator: entry.task.relator.clone(),
                            rule: entry.task.rule.clone(),
                            node: entry.task.node.clone(),
                            task_id: status.task_id.clone(),
                            state: "broken".to_string(),
                            value: status.value,
                            message: status.message.clone(),
                            finished_unix_ms: status.finished_unix_ms,
                        },
                    );
                }
            }
            if let Some(plan) = plan {
                let next = match state {
                    TaskState::Ok => plan.on_ok.as_slice(),
                    TaskState::Broken => plan.on_broken.as_slice(),
                    _ => &[],
                };
                for &relator in next {
                    self.counters.chained.fetch_add(1, Ordering::Relaxed);
                    let _ = self.events.send(ScheduleEvent::Chain {
                        engine: self.index,
                        relator,
                        node: entry.task.node.clone(),
                    });
                }
            }
            release.push(status.task_id);
        }
        lock(&self.release).extend(release);
    }

    /// Schedule the next attempt of a failed task if its relator allows one that still starts
    /// inside the start window. Returns whether a retry was scheduled.
    fn schedule_retry(&self, plan: &RelatorPlan, task: &Task) -> bool {
        if task.attempt > plan.max_retries {
            return false;
        }
        let window_end = std::time::UNIX_EPOCH
            + Duration::from_millis(u64::try_from(task.scheduled_unix_ms).unwrap_or(0))
            + plan.start_window;
        if SystemTime::now() + plan.retry_period > window_end {
            return false;
        }
        let mut next = task.clone();
        next.attempt += 1;
        self.counters.retries.fetch_add(1, Ordering::Relaxed);
        tracing::info!(target: "turbomon::supervisor", engine = %self.name, task = %task.id, attempt = next.attempt, "task failed; retrying after the retry period");
        let _ = self.events.send(ScheduleEvent::Retry {
            engine: self.index,
            task: next,
            due: Instant::now() + plan.retry_period,
        });
        true
    }

    fn observe(&self, task: &Task, state: TaskState, value: f64, message: &str, finished: i64) {
        if let Some(observer) = &self.observer {
            let _ = observer.send(Completion {
                engine: self.name.clone(),
                task_id: task.id.clone(),
                relator: task.relator.clone(),
                node: task.node.clone(),
                attempt: task.attempt,
                state,
                value,
                message: message.to_string(),
                finished_unix_ms: finished,
                known_at: SystemTime::now(),
            });
        }
    }
}

fn limits(batch_size: usize, tunables: &Tunables, config: &SupervisorConfig) -> LoopLimits {
    let own = if tunables.turbo_monitoring {
        tunables.max_inflight_batches
    } else {
        tunables.max_connections
    };
    LoopLimits {
        batch_size,
        in_flight: own.min(engine_share(config)),
        reply_timeout: config.batch_timeout,
    }
}

/// The most of `max_sessions` one engine may hold: all but the reserved share (at least one).
pub(super) fn engine_share(config: &SupervisorConfig) -> usize {
    let reserved = config.max_sessions * usize::from(config.reserved_percent.min(100)) / 100;
    (config.max_sessions - reserved).max(1)
}

/// Wait until `deadline` while collecting due tasks; false when stopping or the channel closed.
async fn collect_until(
    deadline: Option<Instant>,
    due: &mut mpsc::UnboundedReceiver<Vec<Task>>,
    outbox: &mut Vec<Task>,
    stop: &mut watch::Receiver<bool>,
) -> bool {
    loop {
        if *stop.borrow() {
            return false;
        }
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = stop.changed() => return false,
            () = sleep => return true,
            more = due.recv() => match more {
                Some(more) => {
                    outbox.extend(more);
                    if deadline.is_none() {
                        return true;
                    }
                }
                None => return false,
            },
        }
    }
}

async fn submission_worker(
    state: Arc<EngineState>,
    mut due: mpsc::UnboundedReceiver<Vec<Task>>,
    mut source: TunablesSource,
    mut stop: watch::Receiver<bool>,
) {
    let mut outbox: Vec<Task> = Vec::new();
    let mut backoff = Backoff::default();
    let mut stream: Option<SubmitStream> = None;
    loop {
        // While the engine is down (or tasks wait for a retry) wake at the backoff instant.
        let deadline = if outbox.is_empty() && state.is_reachable() {
            None
        } else {
            backoff.retry_at
        };
        if (outbox.is_empty() || deadline.is_some())
            && !collect_until(deadline, &mut due, &mut outbox, &mut stop).await
        {
            break;
        }
        while let Ok(more) = due.try_recv() {
            outbox.extend(more);
        }
        shed_outbox(&state, &mut outbox);
        let tunables = source.current();
        let config = source.config();
        if outbox.is_empty() {
            if !state.is_reachable() {
                probe(&state, &mut stream, &mut backoff, tunables.turbo_monitoring).await;
            }
            continue;
        }
        let limits = limits(tunables.task_submit_batch_size, &tunables, &config);
        let mut tasks = std::mem::take(&mut outbox);
        tasks.sort_by_key(|t| priority_rank(t.priority));
        let count = tasks.len() as u64;
        let outcome = if tunables.turbo_monitoring {
            match open_submit_stream(&state, &mut stream).await {
                Ok(open) => submit_turbo(open, tasks, limits, &state.batch_ids).await,
                Err(reason) => {
                    outbox = tasks;
                    lock(&state.stats).submission.record_failed_loop();
                    state.set_reachable(false);
                    let delay = backoff.failed();
                    tracing::warn!(target: "turbomon::supervisor", engine = %state.name, %reason, retry_in = ?delay, pending = outbox.len(), "engine unreachable; tasks kept for the next attempt");
                    continue;
                }
            }
        } else {
            stream = None;
            submit_unary(&state.dialer, tasks, limits).await
        };
        state.counters.submitted.fetch_add(count, Ordering::Relaxed);
        state.record_submission(&outcome);
        let completed = outcome.completed();
        let failure = outcome.deliveries.iter().find_map(|(_, d)| match d {
            Delivery::Retry { reason } => Some(reason.clone()),
            _ => None,
        });
        let retry = state.absorb_deliveries(outcome);
        if completed {
            backoff.succeeded();
            state.set_reachable(true);
        } else {
            state
                .counters
                .retried
                .fetch_add(retry.len() as u64, Ordering::Relaxed);
            if stream.as_ref().is_some_and(SubmitStream::is_closed) {
                stream = None;
                state.set_reachable(false);
            }
            let delay = backoff.failed();
            tracing::warn!(target: "turbomon::supervisor", engine = %state.name, reason = failure.as_deref().unwrap_or(""), unacknowledged = retry.len(), retry_in = ?delay, "submission loop incomplete; unacknowledged tasks will be sent again");
            outbox.extend(retry);
        }
    }
    if !outbox.is_empty() {
        state
            .counters
            .unsent_at_shutdown
            .fetch_add(outbox.len() as u64, Ordering::Relaxed);
        tracing::warn!(target: "turbomon::supervisor", engine = %state.name, tasks = outbox.len(), "stopping with tasks never acknowledged by the engine; they were not run");
    }
}

/// With nothing to send to an engine that is down, check whether it answers again.
async fn probe(
    state: &EngineState,
    stream: &mut Option<SubmitStream>,
    backoff: &mut Backoff,
    turbo: bool,
) {
    let answered = if turbo {
        open_submit_stream(state, stream).await.is_ok()
    } else {
        state.dialer.connect().await.is_ok()
    };
    if answered {
        backoff.succeeded();
        state.set_reachable(true);
    } else {
        backoff.failed();
    }
}

/// Over the cap, shed low priority first, then normal, then high; the oldest first within each.
fn shed_outbox(state: &EngineState, outbox: &mut Vec<Task>) {
    let cap = state.max_outbox_tasks;
    if outbox.len() <= cap {
        return;
    }
    let mut excess = outbox.len() - cap;
    let mut shed = [0usize; 3];
    for rank in (0..=2u8).rev() {
        if excess == 0 {
            break;
        }
        outbox.retain(|t| {
            if excess > 0 && priority_rank(t.priority) == rank {
                excess -= 1;
                shed[usize::from(rank)] += 1;
                false
            } else {
                true
            }
        });
    }
    let total: usize = shed.iter().sum();
    state
        .counters
        .shed
        .fetch_add(total as u64, Ordering::Relaxed);
    tracing::error!(target: "turbomon::supervisor", engine = %state.name, shed_high = shed[0], shed_normal = shed[1], shed_low = shed[2], "engine down too long: waiting tasks over the cap were shed, low priority first");
}

async fn open_submit_stream<'a>(
    state: &EngineState,
    stream: &'a mut Option<SubmitStream>,
) -> Result<&'a SubmitStream, String> {
    if stream.as_ref().is_none_or(SubmitStream::is_closed) {
        let mut client = state.client().await?;
        match SubmitStream::open(&mut client).await {
            Ok(open) => *stream = Some(open.with_sessions(state.dialer.sessions().cloned())),
            Err(e) => {
                state.forget_client().await;
                return Err(e.to_string());
            }
        }
    }
    stream.as_ref().ok_or_else(|| "no stream".to_string())
}

async fn open_status_stream<'a>(
    state: &EngineState,
    stream: &'a mut Option<StatusStream>,
) -> Result<&'a StatusStream, String> {
    if stream.as_ref().is_none_or(StatusStream::is_closed) {
        let mut client = state.client().await?;
        match StatusStream::open(&mut client).await {
            Ok(open) => *stream = Some(open.with_sessions(state.dialer.sessions().cloned())),
            Err(e) => {
                state.forget_client().await;
                return Err(e.to_string());
            }
        }
    }
    stream.as_ref().ok_or_else(|| "no stream".to_string())
}

async fn monitor_worker(
    state: Arc<EngineState>,
    mut source: TunablesSource,
    mut stop: watch::Receiver<bool>,
) {
    let mut stream: Option<StatusStream> = None;
    loop {
        let interval = source.current().status_check_interval;
        tokio::select! {
            _ = stop.changed() => break,
            () = tokio::time::sleep(interval) => {}
        }
        if *stop.borrow() {
            break;
        }
        let ids: Vec<String> = lock(&state.unfinished).keys().cloned().collect();
        let release = std::mem::take(&mut *lock(&state.release));
        if ids.is_empty() && release.is_empty() {
            continue;
        }
        let tunables = source.current();
        let limits = limits(tunables.task_info_batch_size, &tunables, &source.config());
        let outcome = if tunables.turbo_monitoring {
            match open_status_stream(&state, &mut stream).await {
                Ok(open) => monitor_turbo(open, ids, release, limits, &state.batch_ids).await,
                Err(reason) => {
                    lock(&state.release).extend(release);
                    lock(&state.stats).monitor.record_failed_loop();
                    tracing::warn!(target: "turbomon::supervisor", engine = %state.name, %reason, "status check skipped: engine unreachable");
                    continue;
                }
            }
        } else {
            stream = None;
            monitor_unary(&state.dialer, ids, release, limits).await
        };
        state.record_monitor(&outcome);
        if let Some(reason) = &outcome.failure {
            tracing::warn!(target: "turbomon::supervisor", engine = %state.name, %reason, unanswered = outcome.unanswered.len(), "monitor loop incomplete; unanswered tasks are asked again next loop");
            if stream.as_ref().is_some_and(StatusStream::is_closed) {
                stream = None;
            }
        }
        lock(&state.release).extend(outcome.unreleased);
        state.absorb_statuses(outcome.statuses);
    }
}

/// Print and reset the statistics window every stats interval, until stopping.
async fn periodic_stats(
    state: &EngineState,
    tunables: &mut TunablesSource,
    mut stop: watch::Receiver<bool>,
    stats_json: Option<&std::path::Path>,
) {
    loop {
        let interval = tunables.current().stats_interval;
        tokio::select! {
            _ = stop.changed() => return,
            () = tokio::time::sleep(interval) => {}
        }
        if *stop.borrow() {
            return;
        }
        print_window(state, tunables, stats_json);
    }
}

/// Close the current statistics window: log the block, append the JSON, reset.
fn print_window(
    state: &EngineState,
    tunables: &mut TunablesSource,
    stats_json: Option<&std::path::Path>,
) {
    let tunables = tunables.current();
    let report = lock(&state.stats).take_window(
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

/// Counters of one engine, readable while the supervisor runs.
impl EngineCounters {
    /// A plain copy of the counters now.
    pub fn snapshot(&self) -> super::CountersSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        super::CountersSnapshot {
            submitted: get(&self.submitted),
            accepted: get(&self.accepted),
            duplicates: get(&self.duplicates),
            rejected: get(&self.rejected),
            retried: get(&self.retried),
            completed: get(&self.completed),
            broken: get(&self.broken),
            alerts: get(&self.alerts),
            resubmitted: get(&self.resubmitted),
            shed: get(&self.shed),
            unsent_at_shutdown: get(&self.unsent_at_shutdown),
            retries: get(&self.retries),
            lost_in_restart: get(&self.lost_in_restart),
            chained: get(&self.chained),
            missed_firings: get(&self.missed_firings),
            skipped_firings: get(&self.skipped_firings),
            caught_up_firings: get(&self.caught_up_firings),
        }
    }
}
