//! The task store: every task the engine holds (pending, running, or finished and not yet
//! collected), the queue of checks waiting for a free slot, and the counters. It is plain,
//! synchronous data behind the engine's one mutex; a whole batch is handled in one call, under
//! one lock acquisition.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

use crate::check::{Check, CheckResult};
use crate::config::{EngineConfig, defaults};
use crate::proto::{self, TaskState};

use super::EngineCounters;

/// Prefix of the reason given for a task refused because the engine holds too many tasks.
pub(crate) const RESOURCE_EXHAUSTED_PREFIX: &str = "RESOURCE_EXHAUSTED:";

/// Tasks the map is sized for up front, so that it does not rehash while it fills (capped: a huge
/// `max_held_tasks` grows on demand beyond this).
const PRESIZED_TASKS: usize = 1 << 17;

/// The map of held tasks. foldhash with a per-map random seed: several times faster than SipHash
/// on task ids, and still seeded so that ids cannot be chosen to collide in advance.
type TaskMap = HashMap<String, HeldTask, foldhash::fast::RandomState>;

/// Sweeps for expired results run at most this often...
const MIN_SWEEP_PERIOD: Duration = Duration::from_millis(100);
/// ...and at least this often.
const MAX_SWEEP_PERIOD: Duration = Duration::from_secs(60);

/// One task the engine holds.
#[derive(Debug)]
struct HeldTask {
    state: TaskState,
    attempt: u32,
    value: f64,
    message: String,
    started_unix_ms: i64,
    finished_unix_ms: i64,
    /// When it finished (monotonic), for result retention.
    finished_at: Option<Instant>,
    /// Identifies this incarnation of the id, so a late result never lands on another one.
    seq: u64,
}

impl HeldTask {
    fn is_finished(&self) -> bool {
        self.finished_at.is_some()
    }

    fn status(&self, task_id: String) -> proto::TaskStatus {
        proto::TaskStatus {
            task_id,
            state: self.state as i32,
            value: self.value,
            message: self.message.clone(),
            started_unix_ms: self.started_unix_ms,
            finished_unix_ms: self.finished_unix_ms,
            attempt: self.attempt,
        }
    }
}

/// A check to run: queued while every slot is busy, then handed to a worker.
#[derive(Debug)]
pub(crate) struct Job {
    pub(crate) id: String,
    seq: u64,
    pub(crate) check: Check,
    pub(crate) timeout: Duration,
}

/// What became of one submitted task.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Admission {
    /// New, accepted: it will run (or has already completed, for an instant check).
    Accepted,
    /// The id was already held: acknowledged again, not run again.
    Duplicate,
    /// Its check is invalid; the reason says why.
    Invalid(String),
    /// The engine holds `max_held_tasks` tasks; the reason starts with `RESOURCE_EXHAUSTED:`.
    Exhausted(String),
}

/// The limits of EngineConfig the store enforces.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) max_concurrent_checks: usize,
    pub(crate) max_batch_tasks: usize,
    pub(crate) max_held_tasks: usize,
    pub(crate) result_retention: Duration,
}

impl Limits {
    pub(crate) fn from_config(config: &EngineConfig) -> Self {
        Self {
            max_concurrent_checks: config.max_concurrent_checks.max(1),
            max_batch_tasks: config.max_batch_tasks,
            max_held_tasks: config.max_held_tasks,
            result_retention: config.result_retention,
        }
    }

    /// How often finished results are swept for expiry.
    pub(crate) fn sweep_period(&self) -> Duration {
        (self.result_retention / 4).clamp(MIN_SWEEP_PERIOD, MAX_SWEEP_PERIOD)
    }
}

/// The clock readings one batch is stamped with.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Now {
    pub(crate) instant: Instant,
    pub(crate) unix_ms: i64,
}

impl Now {
    pub(crate) fn read() -> Self {
        Self {
            instant: Instant::now(),
            unix_ms: unix_ms_now(),
        }
    }
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn unix_ms_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// All tasks the engine holds, the queue of waiting checks, and the counters.
#[derive(Debug)]
pub(crate) struct Store {
    limits: Limits,
    tasks: TaskMap,
    queue: VecDeque<Job>,
    running: usize,
    next_seq: u64,
    next_sweep: Instant,
    /// Shutting down: new tasks are refused.
    pub(crate) draining: bool,
    counters: EngineCounters,
}

impl Store {
    pub(crate) fn new(limits: Limits) -> Self {
        Self {
            limits,
            tasks: TaskMap::with_capacity_and_hasher(
                limits.max_held_tasks.min(PRESIZED_TASKS),
                foldhash::fast::RandomState::default(),
            ),
            queue: VecDeque::new(),
            running: 0,
            next_seq: 0,
            next_sweep: Instant::now() + limits.sweep_period(),
            draining: false,
            counters: EngineCounters::default(),
        }
    }

    /// Counts a whole batch of `tasks` refused before any of it was looked at.
    pub(crate) fn count_refused_batch(&mut self, tasks: usize) {
        self.counters.tasks_received += tasks as u64;
        self.counters.tasks_rejected += tasks as u64;
        self.counters.batches_refused += 1;
    }

    /// Counts one task refused on its own before it was looked at (`SubmitOne`).
    pub(crate) fn count_rejected_task(&mut self) {
        self.counters.tasks_received += 1;
        self.counters.tasks_rejected += 1;
    }

    /// Counts a refused status query.
    pub(crate) fn count_refused_query(&mut self) {
        self.counters.queries_refused += 1;
    }

    /// Takes in one task. A check that can start now is pushed onto `start_now` (already marked
    /// running); one that cannot waits in the queue as pending. Returns the task id (moved out of
    /// the task, for the acknowledgement) and what became of the task.
    pub(crate) fn admit(
        &mut self,
        task: proto::Task,
        now: Now,
        start_now: &mut Vec<Job>,
    ) -> (String, Admission) {
        self.counters.tasks_received += 1;
        let held_count = self.tasks.len();
        let vacant = match self.tasks.entry(task.id) {
            Entry::Occupied(occupied) => {
                self.counters.duplicates += 1;
                return (occupied.key().clone(), Admission::Duplicate);
            }
            Entry::Vacant(vacant) => vacant,
        };
        let check = match Check::try_from(task.check) {
            Ok(check) => check,
            Err(error) => {
                self.counters.tasks_rejected += 1;
                return (vacant.into_key(), Admission::Invalid(error.to_string()));
            }
        };
        if held_count >= self.limits.max_held_tasks {
            self.counters.tasks_rejected += 1;
            let reason = format!(
                "{RESOURCE_EXHAUSTED_PREFIX} engine holds {held_count} tasks (max_held_tasks {})",
                self.limits.max_held_tasks
            );
            return (vacant.into_key(), Admission::Exhausted(reason));
        }
        self.counters.tasks_accepted += 1;
        let id = vacant.key().clone();
        let seq = self.next_seq;
        self.next_seq += 1;
        let mut held = HeldTask {
            state: TaskState::Pending,
            attempt: task.attempt,
            value: 0.0,
            message: String::new(),
            started_unix_ms: 0,
            finished_unix_ms: 0,
            finished_at: None,
            seq,
        };
        if let Some(result) = check.instant_result() {
            // Completes inline: no queue, no worker.
            self.counters.checks_started += 1;
            self.counters.checks_finished += 1;
            held.started_unix_ms = now.unix_ms;
            record(&mut held, result, now);
            vacant.insert(held);
            return (id, Admission::Accepted);
        }
        let timeout = match task.timeout_ms {
            0 => defaults::rule_timeout(),
            ms => Duration::from_millis(ms),
        };
        let job = Job {
            id: id.clone(),
            seq,
            check,
            timeout,
        };
        if self.running < self.limits.max_concurrent_checks {
            held.state = TaskState::Running;
            held.started_unix_ms = now.unix_ms;
            self.running += 1;
            self.counters.checks_started += 1;
            self.counters.checks_running_peak =
                self.counters.checks_running_peak.max(self.running as u64);
            start_now.push(job);
        } else {
            self.queue.push_back(job);
        }
        vacant.insert(held);
        (id, Admission::Accepted)
    }

    /// Records the result of `job` and hands back the next waiting job (marked running) for the
    /// same worker, or `None` when the queue is empty and the worker should stop.
    pub(crate) fn finish(&mut self, job: &Job, result: CheckResult, now: Now) -> Option<Job> {
        self.counters.checks_finished += 1;
        if let Some(held) = self.tasks.get_mut(&job.id)
            && held.seq == job.seq
        {
            record(held, result, now);
        }
        match self.queue.pop_front() {
            Some(next) => {
                self.counters.checks_started += 1;
                if let Some(held) = self.tasks.get_mut(&next.id)
                    && held.seq == next.seq
                {
                    held.state = TaskState::Running;
                    held.started_unix_ms = now.unix_ms;
                }
                Some(next)
            }
            None => {
                self.running -= 1;
                None
            }
        }
    }

    /// Checks neither finished nor abandoned: running plus waiting.
    pub(crate) fn unfinished_checks(&self) -> usize {
        self.running + self.queue.len()
    }

    /// The status of `task_id` (moved into the reply).
    pub(crate) fn status(&self, task_id: String) -> proto::TaskStatus {
        match self.tasks.get(&task_id) {
            Some(held) => held.status(task_id),
            None => proto::TaskStatus {
                task_id,
                state: TaskState::Unknown as i32,
                ..Default::default()
            },
        }
    }

    /// Forgets the finished result of `task_id`; a task still pending or running, or not held,
    /// is left alone. True when something was forgotten.
    pub(crate) fn release(&mut self, task_id: &str) -> bool {
        match self.tasks.get(task_id) {
            Some(held) if held.is_finished() => {
                self.tasks.remove(task_id);
                self.counters.results_released += 1;
                true
            }
            _ => false,
        }
    }

    /// Sweeps if a sweep is due; returns how many results expired.
    pub(crate) fn sweep_if_due(&mut self, now: Instant) -> u64 {
        if now < self.next_sweep {
            return 0;
        }
        self.sweep(now)
    }

    /// Drops finished results older than the retention (counted and logged); returns how many.
    pub(crate) fn sweep(&mut self, now: Instant) -> u64 {
        self.next_sweep = now + self.limits.sweep_period();
        let retention = self.limits.result_retention;
        let before = self.tasks.len();
        self.tasks.retain(|_, held| match held.finished_at {
            Some(finished_at) => now.saturating_duration_since(finished_at) < retention,
            None => true,
        });
        let expired = (before - self.tasks.len()) as u64;
        if expired > 0 {
            self.counters.results_expired += expired;
            tracing::info!(
                target: super::LOG_TARGET,
                expired,
                ?retention,
                "dropped results nobody collected within result_retention"
            );
        }
        expired
    }

    /// The counters, with the gauges filled in.
    pub(crate) fn counters(&self) -> EngineCounters {
        EngineCounters {
            tasks_held: self.tasks.len() as u64,
            checks_pending: self.queue.len() as u64,
            checks_running: self.running as u64,
            ..self.counters
        }
    }
}

fn record(held: &mut HeldTask, result: CheckResult, now: Now) {
    held.state = result.state;
    held.value = result.value;
    held.message = result.message;
    held.finished_unix_ms = now.unix_ms;
    held.finished_at = Some(now.instant);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_concurrent_checks: usize, max_held_tasks: usize) -> Limits {
        Limits {
            max_concurrent_checks,
            max_batch_tasks: 1000,
            max_held_tasks,
            result_retention: Duration::from_secs(60),
        }
    }

    fn sim_task(id: &str, duration_ms: u64) -> proto::Task {
        proto::Task {
            id: id.into(),
            attempt: 1,
            timeout_ms: 10_000,
            check: Some(proto::Check {
                kind: Some(proto::check::Kind::Sim(proto::SimCheck {
                    duration_ms,
                    outcome: TaskState::Ok as i32,
                    value: 7.0,
                })),
            }),
            ..Default::default()
        }
    }

    fn state(store: &Store, id: &str) -> TaskState {
        TaskState::try_from(store.status(id.into()).state).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn unclaimed_results_expire_after_retention_and_are_counted() {
        let mut store = Store::new(limits(4, 100));
        let mut start = Vec::new();
        store.admit(sim_task("a", 0), Now::read(), &mut start);
        assert_eq!(state(&store, "a"), TaskState::Ok);

        tokio::time::advance(Duration::from_secs(59)).await;
        store.sweep(Instant::now());
        assert_eq!(state(&store, "a"), TaskState::Ok, "kept within retention");

        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(store.sweep(Instant::now()), 1);
        assert_eq!(state(&store, "a"), TaskState::Unknown);
        assert_eq!(store.counters().results_expired, 1);
        assert_eq!(store.counters().tasks_held, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn running_and_pending_tasks_never_expire() {
        let mut store = Store::new(limits(1, 100));
        let mut start = Vec::new();
        store.admit(sim_task("run", 1000), Now::read(), &mut start);
        store.admit(sim_task("wait", 1000), Now::read(), &mut start);
        assert_eq!(start.len(), 1);
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert_eq!(store.sweep(Instant::now()), 0);
        assert_eq!(state(&store, "run"), TaskState::Running);
        assert_eq!(state(&store, "wait"), TaskState::Pending);
    }

    #[tokio::test]
    async fn a_finished_worker_takes_the_next_waiting_check() {
        let mut store = Store::new(limits(1, 100));
        let mut start = Vec::new();
        store.admit(sim_task("first", 5), Now::read(), &mut start);
        store.admit(sim_task("second", 5), Now::read(), &mut start);
        let job = start.pop().unwrap();
        assert_eq!(job.id, "first");
        let next = store
            .finish(&job, CheckResult::ok(1.0, String::new()), Now::read())
            .unwrap();
        assert_eq!(next.id, "second");
        assert_eq!(state(&store, "first"), TaskState::Ok);
        assert_eq!(state(&store, "second"), TaskState::Running);
        assert!(
            store
                .finish(&next, CheckResult::ok(1.0, String::new()), Now::read())
                .is_none()
        );
        assert_eq!(store.unfinished_checks(), 0);
        assert_eq!(store.counters().checks_running_peak, 1);
    }

    #[tokio::test]
    async fn releasing_a_running_task_is_ignored() {
        let mut store = Store::new(limits(1, 100));
        let mut start = Vec::new();
        store.admit(sim_task("r", 5), Now::read(), &mut start);
        assert!(!store.release("r"));
        assert_eq!(state(&store, "r"), TaskState::Running);
    }
}
