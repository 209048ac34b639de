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
use super::schedule::plan::{RelatorPlan, priority_rank};
use super::schedule::scheduler::ScheduleEvent;
use super::{Completion, EngineCounters};
use crate::config::{StatusMode, SupervisorConfig, Tunables};
use crate::proto::engine_client::EngineClient;
use crate::proto::{Task, TaskState, TaskStatus};
use crate::stats::{EngineStats, Mode, Stage};
use crate::transport::Dialer;
use crate::wire::batch::BatchIds;
use crate::wire::status::{MonitorOutcome, monitor_turbo, monitor_unary};
use crate::wire::stream::{BatchStream, Batched, OpenStream, StatusStream, SubmitStream};
use crate::wire::submit::{Delivery, LoopLimits, SubmissionOutcome, submit_turbo, submit_unary};

/// Tasks waiting for an engine that is down; beyond this, low priority first, then the oldest,
/// are shed (counted and logged).
pub(super) const MAX_OUTBOX_TASKS: usize = 200_000;
/// After the supervisor is told to stop, batches in flight get this long to be answered; the
/// tasks of the rest are handed back (logged as never acknowledged).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Completion notices kept while their task's acknowledgement is on its way.
const MAX_EARLY_COMPLETIONS: usize = 100_000;

/// A submitted task the supervisor waits to hear the end of.
#[derive(Debug)]
struct Unfinished {
    task: Task,
    /// Index of its relator's plan.
    relator: Option<usize>,
    /// When its batch left the supervisor.
    sent_at: SystemTime,
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
    early_completions: Mutex<HashMap<String, TaskStatus>>,
    stop: watch::Receiver<bool>,
    config: watch::Receiver<Arc<SupervisorConfig>>,
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
        early_completions: Mutex::new(HashMap::new()),
        stop: setup.stop.clone(),
        config: setup.config.clone(),
    });
    let tunables = TunablesSource {
        engine: state.name.clone(),
        config: setup.config,
        last: None,
    };
    let engine = Arc::clone(&state);
    tasks.spawn(async move {
        let loops = futures::future::join3(
            submission_worker(
                Arc::clone(&engine),
                due_rx,
                tunables.clone(),
                setup.stop.clone(),
            ),
            monitor_worker(Arc::clone(&engine), tunables.clone(), setup.stop.clone()),
            push_worker(Arc::clone(&engine), tunables.clone(), setup.stop.clone()),
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
        if outcome.size_splits > 0 {
            stats.submission.record_splits(outcome.size_splits);
            self.counters
                .splits
                .fetch_add(outcome.size_splits, Ordering::Relaxed);
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
        let sent_at = outcome.started_at;
        let mut lateness = Vec::new();
        let mut accepted_ids = Vec::new();
        let mut unfinished = lock(&self.unfinished);
        for (task, delivery) in outcome.deliveries {
            match delivery {
                Delivery::Accepted { duplicate } => {
                    self.counters.accepted.fetch_add(1, Ordering::Relaxed);
                    if duplicate {
                        self.counters.duplicates.fetch_add(1, Ordering::Relaxed);
                    }
                    let relator = self.plan_index.get(&task.relator).copied();
                    lateness.push(since_unix_ms(task.scheduled_unix_ms, sent_at));
                    accepted_ids.push(task.id.clone());
                    unfinished.insert(
                        task.id.clone(),
                        Unfinished {
                            task,
                            relator,
                            sent_at,
                        },
                    );
                }
                Delivery::Rejected { reason } => {
                    self.counters.rejected.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(target: "turbomon::supervisor", engine = %self.name, task = %task.id, %reason, "engine rejected task");
                    self.observe(&task, TaskState::Failed, 0.0, &reason, 0);
                }
                Delivery::Retry { .. } => retry.push(task),
            }
        }
        drop(unfinished);
        {
            let mut stats = lock(&self.stats);
            for late in lateness {
                stats.lateness.record(Stage::ScheduledToSent, late);
            }
        }
        let early: Vec<TaskStatus> = {
            let mut early = lock(&self.early_completions);
            if early.is_empty() {
                Vec::new()
            } else {
                accepted_ids
                    .iter()
                    .filter_map(|id| early.remove(id))
                    .collect()
            }
        };
        if !early.is_empty() {
            self.absorb_statuses(early, false);
        }
        retry
    }

    /// Sort the statuses of a monitor loop (or a pushed completion batch): finished tasks leave
    /// the unfinished set; failed ones are retried while the relator allows; final ones are
    /// released on the engine next loop, fire alerts when broken and start chained relators.
    /// `pushed`: the statuses are completion notices, which may overtake the acknowledgement of
    /// their own task; such early notices are kept until the acknowledgement is absorbed.
    pub(super) fn absorb_statuses(&self, statuses: Vec<TaskStatus>, pushed: bool) {
        let mut resubmit = Vec::new();
        let mut finished = Vec::new();
        {
            let mut unfinished = lock(&self.unfinished);
            for status in statuses {
                if pushed && !unfinished.contains_key(&status.task_id) {
                    let mut early = lock(&self.early_completions);
                    if early.len() >= MAX_EARLY_COMPLETIONS {
                        early.clear();
                    }
                    early.insert(status.task_id.clone(), status);
                    continue;
                }
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
        let known_at = SystemTime::now();
        {
            let mut stats = lock(&self.stats);
            for (entry, _, status) in &finished {
                let started = unix_ms_time(status.started_unix_ms);
                let done = unix_ms_time(status.finished_unix_ms);
                let lateness = &mut stats.lateness;
                lateness.record(Stage::SentToStarted, elapsed(entry.sent_at, started));
                lateness.record(Stage::StartedToFinished, elapsed(started, done));
                lateness.record(Stage::FinishedToKnown, elapsed(done, known_at));
            }
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
                    let late = elapsed(unix_ms_time(status.finished_unix_ms), SystemTime::now());
                    lock(&self.stats)
                        .lateness
                        .record(Stage::BrokenToAlert, late);
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

    /// Tasks no batch size could get acknowledged: final failures, reported and counted.
    fn fail_unanswered(&self, tasks: Vec<Task>, timeout: Duration) {
        let reason = format!(
            "not acknowledged within {} even when sent alone: the link may be dropping packets this large",
            humantime::format_duration(timeout)
        );
        for task in tasks {
            self.counters
                .failed_unanswered
                .fetch_add(1, Ordering::Relaxed);
            tracing::error!(target: "turbomon::supervisor", engine = %self.name, task = %task.id, %reason, "task failed");
            self.observe(&task, TaskState::Failed, 0.0, &reason, 0);
        }
    }

    /// Schedule the next attempt of a failed task if its relator allows one that still starts
    /// inside the start window. Returns whether a retry was scheduled.
    fn schedule_retry(&self, plan: &RelatorPlan, task: &Task) -> bool {
        if task.attempt > plan.max_retries {
            return false;
        }
        let window_end = unix_ms_time(task.scheduled_unix_ms) + plan.start_window;
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

/// A wall-clock instant from milliseconds since the Unix epoch (clamped at the epoch).
fn unix_ms_time(ms: i64) -> SystemTime {
    std::time::UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// Time from `from` to `to`, zero when `to` is earlier (clocks of two machines, early sends).
fn elapsed(from: SystemTime, to: SystemTime) -> Duration {
    to.duration_since(from).unwrap_or_default()
}

fn since_unix_ms(ms: i64, to: SystemTime) -> Duration {
    elapsed(unix_ms_time(ms), to)
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
        max_message_bytes: config.max_message_bytes,
    }
}

/// Batches that go unanswered within the batch timeout are sent again split in half, one at a
/// time, down to single tasks (a link that drops large packets — a black hole — still carries
/// small ones); each fully answered loop doubles the cap back towards the configured size.
#[derive(Debug, Default, Clone, Copy)]
struct Shrink {
    batch_cap: Option<usize>,
}

impl Shrink {
    fn apply(&self, limits: LoopLimits) -> LoopLimits {
        match self.batch_cap {
            Some(cap) => LoopLimits {
                batch_size: limits.batch_size.min(cap),
                in_flight: 1,
                ..limits
            },
            None => limits,
        }
    }

    /// Whether single tasks are already being sent alone.
    fn at_floor(&self) -> bool {
        self.batch_cap == Some(1)
    }

    /// A batch of `size` went unanswered: halve.
    fn timed_out(&mut self, size: usize) {
        let cap = (size / 2).max(1);
        self.batch_cap = Some(self.batch_cap.map_or(cap, |c| c.min(cap)));
    }

    /// A loop was fully answered: grow back.
    fn answered(&mut self, configured: usize) {
        if let Some(cap) = self.batch_cap {
            let next = cap.saturating_mul(2);
            self.batch_cap = (next < configured).then_some(next);
        }
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
    let mut shrink = Shrink::default();
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
        let limits = shrink.apply(limits(tunables.task_submit_batch_size, &tunables, &config));
        let mut tasks = std::mem::take(&mut outbox);
        tasks.sort_by_key(|t| priority_rank(t.priority));
        let count = tasks.len() as u64;
        let outcome = if tunables.turbo_monitoring {
            match open_stream(&state, &mut stream).await {
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
            Delivery::Retry { reason, .. } => Some(reason.clone()),
            _ => None,
        });
        let timed_out = outcome
            .deliveries
            .iter()
            .filter_map(|(_, d)| match d {
                Delivery::Retry {
                    timed_out_batch, ..
                } => *timed_out_batch,
                _ => None,
            })
            .max();
        let mut outcome = outcome;
        if timed_out == Some(1) && shrink.at_floor() {
            // Even alone these tasks got no answer: report them failed, never drop them.
            let (alone, rest): (Vec<_>, Vec<_>) =
                outcome.deliveries.into_iter().partition(|(_, d)| {
                    matches!(
                        d,
                        Delivery::Retry {
                            timed_out_batch: Some(1),
                            ..
                        }
                    )
                });
            outcome.deliveries = rest;
            state.fail_unanswered(
                alone.into_iter().map(|(t, _)| t).collect(),
                config.batch_timeout,
            );
        }
        let retry = state.absorb_deliveries(outcome);
        if let Some(size) = timed_out {
            if !(shrink.at_floor() && size == 1) {
                shrink.timed_out(size);
                state.counters.splits.fetch_add(1, Ordering::Relaxed);
                lock(&state.stats).submission.record_splits(1);
                tracing::warn!(target: "turbomon::supervisor", engine = %state.name, unanswered_batch = size, next_batch = ?shrink.batch_cap, "batches went unanswered: sending them again split in half, one at a time, on a fresh connection");
            }
            // The connection may be stalled (a black hole): start a fresh one.
            stream = None;
            state.forget_client().await;
        }
        if completed {
            shrink.answered(tunables.task_submit_batch_size);
            backoff.succeeded();
            state.set_reachable(true);
        } else if timed_out.is_some() && retry.len() < count as usize {
            // Part of the loop got through: the engine is up; resend at once, smaller.
            outbox.extend(retry);
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
    let answered = state.dialer.health_check().await.is_ok()
        && (!turbo || open_stream(state, stream).await.is_ok());
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

/// Opening a stream waits for the engine's response headers; a stalled link must not hang it.
async fn open_within<S>(
    state: &EngineState,
    open: impl std::future::Future<Output = Result<S, crate::wire::stream::StreamError>>,
) -> Result<S, crate::wire::stream::StreamError> {
    let limit = Arc::clone(&state.config.borrow()).batch_timeout;
    tokio::time::timeout(limit, open).await.unwrap_or_else(|_| {
        Err(crate::wire::stream::StreamError::Open(format!(
            "no answer within {}",
            humantime::format_duration(limit)
        )))
    })
}

/// The stream in `stream`, opened (on the engine's shared connection) if it is missing or closed.
async fn open_stream<'a, Req, Resp>(
    state: &EngineState,
    stream: &'a mut Option<BatchStream<Req, Resp>>,
) -> Result<&'a BatchStream<Req, Resp>, String>
where
    Req: Batched + Send + 'static,
    Resp: Batched + Send + 'static,
    BatchStream<Req, Resp>: OpenStream,
{
    if stream.as_ref().is_none_or(BatchStream::is_closed) {
        let mut client = state.client().await?;
        match open_within(
            state,
            <BatchStream<Req, Resp> as OpenStream>::open(&mut client),
        )
        .await
        {
            Ok(open) => {
                open.close_after_stop(state.stop.clone(), SHUTDOWN_GRACE);
                *stream = Some(open.with_sessions(state.dialer.sessions().cloned()));
            }
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
    let mut shrink = Shrink::default();
    loop {
        let interval = source.current().status_check_interval;
        tokio::select! {
            _ = stop.changed() => break,
            () = tokio::time::sleep(interval) => {}
        }
        if *stop.borrow() {
            break;
        }
        monitor_once(&state, &mut source, &mut stream, &mut shrink).await;
    }
    // Stopping: one last pass collects what finished since the previous loop.
    monitor_once(&state, &mut source, &mut stream, &mut shrink).await;
    let left = state.unfinished_count();
    if left > 0 {
        tracing::warn!(target: "turbomon::supervisor", engine = %state.name, tasks = left, "stopping with submitted tasks whose outcome is not known yet; the engine keeps their results until a supervisor collects them");
    }
}

/// One monitor loop over every unfinished task (nothing when there is nothing to ask or release).
async fn monitor_once(
    state: &EngineState,
    source: &mut TunablesSource,
    stream: &mut Option<StatusStream>,
    shrink: &mut Shrink,
) {
    let ids: Vec<String> = lock(&state.unfinished).keys().cloned().collect();
    let release = std::mem::take(&mut *lock(&state.release));
    if ids.is_empty() && release.is_empty() {
        return;
    }
    let tunables = source.current();
    let limits = shrink.apply(limits(
        tunables.task_info_batch_size,
        &tunables,
        &source.config(),
    ));
    let outcome = if tunables.turbo_monitoring {
        match open_stream(state, stream).await {
            Ok(open) => monitor_turbo(open, ids, release, limits, &state.batch_ids).await,
            Err(reason) => {
                lock(&state.release).extend(release);
                lock(&state.stats).monitor.record_failed_loop();
                tracing::warn!(target: "turbomon::supervisor", engine = %state.name, %reason, "status check skipped: engine unreachable");
                return;
            }
        }
    } else {
        *stream = None;
        monitor_unary(&state.dialer, ids, release, limits).await
    };
    state.record_monitor(&outcome);
    if let Some(size) = outcome.timed_out_batch {
        if !(shrink.at_floor() && size <= 1) {
            shrink.timed_out(size);
            state.counters.splits.fetch_add(1, Ordering::Relaxed);
            lock(&state.stats).monitor.record_splits(1);
        }
        *stream = None;
        state.forget_client().await;
    } else if outcome.completed() {
        shrink.answered(tunables.task_info_batch_size);
    }
    if let Some(reason) = &outcome.failure {
        tracing::warn!(target: "turbomon::supervisor", engine = %state.name, %reason, unanswered = outcome.unanswered.len(), "monitor loop incomplete; unanswered tasks are asked again next loop");
        if stream.as_ref().is_some_and(StatusStream::is_closed) {
            *stream = None;
        }
    }
    lock(&state.release).extend(outcome.unreleased);
    state.absorb_statuses(outcome.statuses, false);
}

/// Push mode: hold a Completions stream open and absorb every notice as it arrives; the monitor
/// loop keeps running as reconciliation. Idle while the engine is in poll mode.
async fn push_worker(
    state: Arc<EngineState>,
    mut source: TunablesSource,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = Backoff::default();
    let mut batch_ids = 0u64;
    loop {
        if *stop.borrow() {
            return;
        }
        let tunables = source.current();
        let pause = if tunables.status_mode != StatusMode::Push {
            Some(Duration::from_secs(1))
        } else {
            match subscribe(&state, &source.config()).await {
                Ok(mut completions) => {
                    backoff.succeeded();
                    loop {
                        tokio::select! {
                            _ = stop.changed() => return,
                            next = completions.message() => match next {
                                Ok(Some(batch)) => {
                                    if batch.batch_id <= batch_ids {
                                        tracing::debug!(target: "turbomon::supervisor", engine = %state.name, batch = batch.batch_id, "completion batch out of order");
                                    }
                                    batch_ids = batch.batch_id;
                                    state.counters.pushed.fetch_add(batch.statuses.len() as u64, Ordering::Relaxed);
                                    state.absorb_statuses(batch.statuses, true);
                                }
                                Ok(None) | Err(_) => break,
                            },
                        }
                        if source.current().status_mode != StatusMode::Push {
                            break;
                        }
                    }
                    None
                }
                Err(status) if status.code() == tonic::Code::Unimplemented => {
                    tracing::warn!(target: "turbomon::supervisor", engine = %state.name, "engine does not push completions; relying on the monitor loop");
                    Some(Duration::from_secs(60))
                }
                Err(_) => Some(backoff.failed()),
            }
        };
        if let Some(pause) = pause {
            tokio::select! {
                _ = stop.changed() => return,
                () = tokio::time::sleep(pause) => {}
            }
        }
    }
}

async fn subscribe(
    state: &EngineState,
    config: &SupervisorConfig,
) -> Result<tonic::Streaming<crate::proto::CompletionBatch>, tonic::Status> {
    let mut client = state.client().await.map_err(tonic::Status::unavailable)?;
    let request = crate::proto::CompletionsRequest {
        flush_window_ms: u64::try_from(config.push_flush_window.as_millis())
            .unwrap_or(u64::MAX)
            .max(1),
        max_batch: 0,
    };
    Ok(client.completions(request).await?.into_inner())
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
            splits: get(&self.splits),
            failed_unanswered: get(&self.failed_unanswered),
            pushed: get(&self.pushed),
            lost_in_restart: get(&self.lost_in_restart),
            chained: get(&self.chained),
            missed_firings: get(&self.missed_firings),
            failovers: get(&self.failovers),
            failbacks: get(&self.failbacks),
            skipped_firings: get(&self.skipped_firings),
            caught_up_firings: get(&self.caught_up_firings),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engines_coming_back_together_do_not_reconnect_in_the_same_second() {
        // 100 engines that each failed five times in a row: full jitter spreads their retries.
        let mut per_second = [0usize; 32];
        for _ in 0..100 {
            let mut backoff = Backoff::default();
            let delay = (0..5).map(|_| backoff.failed()).last().unwrap_or_default();
            assert!(delay <= Backoff::CAP);
            per_second[delay.as_secs() as usize] += 1;
        }
        let crowded = per_second.iter().copied().max().unwrap_or(0);
        assert!(
            crowded <= 40,
            "{crowded} of 100 reconnects in one second: {per_second:?}"
        );
    }

    #[test]
    fn backoff_is_capped_and_resets_after_success() {
        let mut backoff = Backoff::default();
        for _ in 0..40 {
            assert!(backoff.failed() <= Backoff::CAP);
        }
        backoff.succeeded();
        assert!(backoff.retry_at.is_none());
        assert!(backoff.failed() <= Backoff::BASE * 2);
    }

    #[test]
    fn unanswered_batches_halve_down_to_one_and_grow_back() {
        let mut shrink = Shrink::default();
        shrink.timed_out(30);
        assert_eq!(shrink.batch_cap, Some(15));
        shrink.timed_out(15);
        shrink.timed_out(7);
        shrink.timed_out(3);
        assert!(shrink.at_floor());
        for _ in 0..4 {
            shrink.answered(30);
        }
        assert_eq!(shrink.batch_cap, Some(16));
        shrink.answered(30);
        assert_eq!(shrink.batch_cap, None, "back to the configured size");
    }
}
