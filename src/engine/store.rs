//! The task store: every task the engine holds (pending, running, or finished and not yet
//! collected), the queue of checks waiting for a free slot (by priority), the completion
//! subscribers, and the counters. It is plain, synchronous data behind the engine's one mutex; a
//! whole batch is handled in one call, under one lock acquisition. With a journal, every change
//! worth keeping across a restart is also pushed, in order, onto the journal's queue.
//!
//! Attempts: the supervisor retries a failed task under the same id with a higher attempt
//! number. An id held with a lower attempt whose result is final is replaced by the new attempt,
//! which runs; the same or a lower attempt is a duplicate (acknowledged, not run); a higher
//! attempt while the held one is still pending or running is refused for now ("attempt N still
//! running"), and the supervisor retries later.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use prost::Message;

use crate::check::allow::ExecAllowList;
use crate::check::{Check, CheckError, CheckResult};
use crate::config::{EngineConfig, MAX_SUPERVISOR_ID_BYTES, defaults};
use crate::proto::{self, Priority, TaskState};

use super::completions::Subscribers;
use super::counters::EngineCounters;
use super::journal::{JournalOp, JournalQueue, OriginFields};
use super::supervisors::{MAX_SUPERVISORS, Origin, Supervisors};
use super::task_map::Entry;
use super::viewer::Viewer;

/// Tasks the map is sized for up front; it grows on demand beyond. Small on purpose: tasks land
/// in random slots, so a map sized for 131,072 tasks touched a page of memory per task held (a
/// `scale` farm of 100 engines took 844 MB of RSS, 96 MB with a map sized for 1,024). Growing by
/// doubling costs one rehash of the small slots per doubling.
const PRESIZED_TASKS: usize = 1 << 12;

/// The map of held tasks ([`task_map`](super::task_map): seeded hashes kept with the ids). The
/// key is the one copy of the id the engine keeps: the per-supervisor index and running checks
/// share it. Each task is boxed: a slot is 32 bytes, so that growing the map (under the lock)
/// moves 32 bytes a task rather than the whole task.
type TaskMap = super::task_map::TaskMap<Box<HeldTask>>;

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
    /// Performance data of the result: at most `check::perfdata::MAX_PERFDATA_ITEMS` items
    /// parsed from at most `output_limit_bytes` of output (one `time` item for tcp and http).
    perfdata: Vec<proto::PerfData>,
    started_unix_ms: i64,
    finished_unix_ms: i64,
    /// When it finished (monotonic), for result retention.
    finished_at: Option<Instant>,
    /// Identifies this incarnation of the id, so a late result never lands on another one.
    seq: u64,
    /// The certificate name of the supervisor that submitted it; only it may read or release
    /// the result. `None` (plaintext, in-process, or restored from the journal): anyone.
    owner: Option<Arc<str>>,
    /// What it is and which supervisor sent it, when the task named one.
    origin: Option<Arc<Origin>>,
}

impl HeldTask {
    /// A task admitted now, not yet started.
    fn pending(
        attempt: u32,
        seq: u64,
        owner: Option<Arc<str>>,
        origin: Option<Arc<Origin>>,
    ) -> Self {
        HeldTask {
            state: TaskState::Pending,
            attempt,
            value: 0.0,
            message: String::new(),
            perfdata: Vec::new(),
            started_unix_ms: 0,
            finished_unix_ms: 0,
            finished_at: None,
            seq,
            owner,
            origin,
        }
    }

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
            perfdata: self.perfdata.clone(),
        }
    }

    /// How `ListTasks` shows it: the status only once finished.
    fn listed(&self, task_id: &str) -> proto::ListedTask {
        let origin = self.origin.as_deref();
        proto::ListedTask {
            task_id: task_id.to_string(),
            state: self.state as i32,
            attempt: self.attempt,
            relator: origin.map(|o| o.relator.to_string()).unwrap_or_default(),
            rule: origin.map(|o| o.rule.to_string()).unwrap_or_default(),
            node: origin.map(|o| o.node.to_string()).unwrap_or_default(),
            scheduled_unix_ms: origin.map_or(0, |o| o.scheduled_unix_ms),
            status: self.is_finished().then(|| self.status(task_id.to_string())),
        }
    }
}

/// A `ListTasks` page scans at most this many times its limit (tasks another certificate owns
/// are skipped), so that one page never holds the lock for long.
const LIST_SCAN_FACTOR: usize = 4;

/// One `ListTasks` page to build, already validated.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PageRequest<'a> {
    pub(crate) supervisor_id: &'a str,
    pub(crate) after_id: &'a str,
    /// At least 1.
    pub(crate) limit: usize,
    /// The page's encoded tasks stop short of this (one task always goes).
    pub(crate) byte_budget: usize,
}

/// A task made ready for [`Store::admit_in_batch`] before the store's lock is taken: its size
/// measured, its id shared, its check converted and the box that will hold it allocated. The
/// engine prepares a stream's tasks in the task that decodes them, so that the lock (one at a
/// time, per engine) is held only to look a task up and keep it.
#[derive(Debug)]
pub(crate) struct Prepared {
    /// The rest of what the task says.
    task: Sent,
    /// The id as sent, which goes back in the ack.
    id: String,
    /// The map's shared copy of the id.
    key: Arc<str>,
    /// The task's encoded size, for `max_task_bytes`.
    size: usize,
    check: Result<Check, CheckError>,
    node: Box<str>,
    /// Where the task will be kept, allocated here rather than under the lock.
    held: Box<HeldTask>,
}

/// The fields of a task that [`Store::admit_in_batch`] reads besides its id, check and node
/// (kept apart so that a prepared task is small to move).
#[derive(Debug)]
struct Sent {
    supervisor_id: String,
    relator: String,
    rule: String,
    scheduled_unix_ms: i64,
    timeout_ms: u64,
    assignment_epoch: u64,
    attempt: u32,
    priority: i32,
}

impl Prepared {
    /// Prepares `task`; nothing is refused here: [`Store::admit_in_batch`] judges it.
    pub(crate) fn new(mut task: proto::Task) -> Self {
        let size = task.encoded_len();
        let id = std::mem::take(&mut task.id);
        let key = Arc::from(id.as_str());
        let check = Check::try_from(task.check.take());
        let node = std::mem::take(&mut task.node).into_boxed_str();
        let task = Sent {
            supervisor_id: task.supervisor_id,
            relator: task.relator,
            rule: task.rule,
            scheduled_unix_ms: task.scheduled_unix_ms,
            timeout_ms: task.timeout_ms,
            assignment_epoch: task.assignment_epoch,
            attempt: task.attempt,
            priority: task.priority,
        };
        Self {
            task,
            id,
            key,
            size,
            check,
            node,
            held: Box::new(HeldTask::pending(1, 0, None, None)),
        }
    }
}

/// What the tasks of one batch (one caller, almost always one supervisor and a few relators and
/// rules) share, kept for the batch so that each is looked up once rather than once per task.
#[derive(Debug, Default)]
pub(crate) struct BatchCache {
    /// The last supervisor id interned. Only the last: interning another one may forget an
    /// idle supervisor, which then must not be handed out from here.
    supervisor: Option<Arc<str>>,
    relator: Option<Arc<str>>,
    rule: Option<Arc<str>>,
    /// The last mark raised (or found already as high): supervisor, relator and instant.
    mark: Option<(Arc<str>, Arc<str>, i64)>,
}

impl BatchCache {
    fn supervisor(&mut self, supervisors: &mut Supervisors, id: &str) -> Result<Arc<str>, String> {
        if let Some(cached) = &self.supervisor
            && **cached == *id
        {
            return Ok(Arc::clone(cached));
        }
        let interned = supervisors.intern(id)?;
        self.supervisor = Some(Arc::clone(&interned));
        Ok(interned)
    }

    fn name(slot: &mut Option<Arc<str>>, supervisors: &mut Supervisors, name: &str) -> Arc<str> {
        if let Some(cached) = slot.as_ref()
            && **cached == *name
        {
            return Arc::clone(cached);
        }
        let shared = supervisors.name(name);
        *slot = Some(Arc::clone(&shared));
        shared
    }

    /// Whether `origin`'s mark was already raised to its instant (or later) in this batch; if
    /// not, it is remembered as raised now (the caller raises it).
    fn marked(&mut self, origin: &Origin) -> bool {
        if let Some((supervisor, relator, at)) = &self.mark
            && Arc::ptr_eq(supervisor, &origin.supervisor)
            && Arc::ptr_eq(relator, &origin.relator)
            && origin.scheduled_unix_ms <= *at
        {
            return true;
        }
        self.mark = Some((
            Arc::clone(&origin.supervisor),
            Arc::clone(&origin.relator),
            origin.scheduled_unix_ms,
        ));
        false
    }
}

/// A check to run: queued while every slot is busy, then handed to a worker.
#[derive(Debug)]
pub(crate) struct Job {
    pub(crate) id: Arc<str>,
    seq: u64,
    priority: Priority,
    pub(crate) check: Check,
    pub(crate) timeout: Duration,
    /// The journal sequence number of the change that admitted the task (0 without a journal):
    /// the check starts only once it is committed, so an engine killed before that has run
    /// nothing it will not know about at its next start.
    pub(crate) journaled: u64,
}

/// The checks waiting for a free slot: high before normal before low, first come first served
/// within a priority.
#[derive(Debug, Default)]
struct WaitingQueue {
    high: VecDeque<Job>,
    normal: VecDeque<Job>,
    low: VecDeque<Job>,
}

impl WaitingQueue {
    fn push(&mut self, job: Job) {
        match job.priority {
            Priority::High => self.high.push_back(job),
            Priority::Normal => self.normal.push_back(job),
            Priority::Low => self.low.push_back(job),
        }
    }

    fn pop(&mut self) -> Option<Job> {
        self.high
            .pop_front()
            .or_else(|| self.normal.pop_front())
            .or_else(|| self.low.pop_front())
    }

    fn len(&self) -> usize {
        self.high.len() + self.normal.len() + self.low.len()
    }

    fn clear(&mut self) {
        self.high.clear();
        self.normal.clear();
        self.low.clear();
    }
}

/// What became of one submitted task.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Admission {
    /// New, accepted: it will run (or has already completed, for an instant check).
    Accepted,
    /// A higher attempt of an id whose earlier attempt had finished: replaces it and runs.
    Retry,
    /// The id was already held with this attempt or a later one: acknowledged again, not run.
    Duplicate,
    /// A higher attempt while the held one is still pending or running; the reason says
    /// "attempt N still running". Not taken: the supervisor retries later.
    Busy(String),
    /// Its check is invalid; the reason says why.
    Invalid(String),
    /// The engine holds `max_held_tasks` tasks.
    Exhausted(String),
    /// An exec check whose program is not in `[exec] allow`; the reason names the program.
    NotAllowed(String),
    /// Its `assignment_epoch` is older than the newest seen for its supervisor: another member
    /// of that supervisor's cluster runs this engine now.
    StaleEpoch(String),
}

/// The limits of EngineConfig the store enforces.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) max_concurrent_checks: usize,
    pub(crate) max_batch_tasks: usize,
    pub(crate) max_held_tasks: usize,
    pub(crate) result_retention: Duration,
    pub(crate) max_task_bytes: usize,
    pub(crate) max_check_timeout: Duration,
}

impl Limits {
    pub(crate) fn from_config(config: &EngineConfig) -> Self {
        Self {
            max_concurrent_checks: config.max_concurrent_checks.max(1),
            max_batch_tasks: config.max_batch_tasks,
            max_held_tasks: config.max_held_tasks,
            result_retention: config.result_retention,
            max_task_bytes: config.max_task_bytes,
            max_check_timeout: config.max_check_timeout,
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

/// All tasks the engine holds, the queue of waiting checks, the completion subscribers and the
/// counters.
#[derive(Debug)]
pub(crate) struct Store {
    limits: Limits,
    tasks: TaskMap,
    queue: WaitingQueue,
    running: usize,
    next_seq: u64,
    next_sweep: Instant,
    /// Shutting down: new tasks are refused.
    pub(crate) draining: bool,
    counters: EngineCounters,
    journal: Option<Arc<JournalQueue>>,
    subscribers: Subscribers,
    exec_allow: ExecAllowList,
    /// Whose tasks are whose, and each supervisor's marks.
    supervisors: Supervisors,
    /// The newest `assignment_epoch` seen per supervisor id (clustered supervisors only; at
    /// most [`MAX_SUPERVISORS`] ids).
    epochs: HashMap<String, u64>,
}

impl Store {
    /// An empty store; with `journal`, changes are recorded there. Exec checks may run only the
    /// programs `exec_allow` permits.
    pub(crate) fn new(
        limits: Limits,
        journal: Option<Arc<JournalQueue>>,
        exec_allow: ExecAllowList,
    ) -> Self {
        Self {
            limits,
            tasks: TaskMap::with_capacity(limits.max_held_tasks.min(PRESIZED_TASKS)),
            queue: WaitingQueue::default(),
            running: 0,
            next_seq: 0,
            next_sweep: Instant::now() + limits.sweep_period(),
            draining: false,
            counters: EngineCounters::default(),
            journal,
            subscribers: Subscribers::default(),
            exec_allow,
            supervisors: Supervisors::default(),
            epochs: HashMap::new(),
        }
    }

    /// Takes back what a journal held at start: the supervisors' marks; final results are held
    /// again (those older than the retention are dropped), and tasks that never finished become
    /// final `LOST_IN_RESTART` results, counted. Returns how many were lost.
    pub(crate) fn restore(
        &mut self,
        statuses: Vec<(proto::TaskStatus, Option<OriginFields>)>,
        marks: Vec<(String, String, i64)>,
        now: Now,
    ) -> u64 {
        for (supervisor, relator, scheduled_unix_ms) in marks {
            self.supervisors
                .restore_mark(&supervisor, &relator, scheduled_unix_ms);
        }
        // Nothing to write back: these marks are the journal's own.
        self.supervisors.take_dirty();
        let mut lost = 0;
        for (status, origin) in statuses {
            let origin = origin.and_then(|fields| self.restored_origin(fields));
            let state = TaskState::try_from(status.state).unwrap_or(TaskState::Unspecified);
            let seq = self.next_seq;
            self.next_seq += 1;
            let mut held = HeldTask {
                state,
                attempt: status.attempt,
                value: status.value,
                message: status.message,
                perfdata: status.perfdata,
                started_unix_ms: status.started_unix_ms,
                finished_unix_ms: status.finished_unix_ms,
                finished_at: Some(now.instant),
                seq,
                // The journal keeps no owner: a restored result is anyone's.
                owner: None,
                origin,
            };
            if TaskState::is_final(state) {
                let age_ms = now.unix_ms.saturating_sub(status.finished_unix_ms).max(0);
                let age = Duration::from_millis(u64::try_from(age_ms).unwrap_or(u64::MAX));
                if age >= self.limits.result_retention {
                    self.counters.results_expired += 1;
                    self.journal_op(JournalOp::Delete(status.task_id));
                    continue;
                }
                held.finished_at = Some(now.instant.checked_sub(age).unwrap_or(now.instant));
                self.counters.results_restored += 1;
                let id: Arc<str> = Arc::from(status.task_id);
                if let Some(origin) = &held.origin {
                    // Distinct ids, none released yet: nothing to compact.
                    self.supervisors.insert(&id, origin);
                }
                self.tasks.insert(id, Box::new(held));
            } else {
                lost += 1;
                held.state = TaskState::LostInRestart;
                held.message = format!(
                    "lost in restart: the engine stopped before attempt {} finished; its outcome is unknown",
                    held.attempt
                );
                held.finished_unix_ms = now.unix_ms;
                if self.journal.is_some() {
                    self.journal_op(JournalOp::Put(
                        held.status(status.task_id.clone()),
                        held.origin.clone(),
                    ));
                }
                let id: Arc<str> = Arc::from(status.task_id);
                if let Some(origin) = &held.origin {
                    // Distinct ids, none released yet: nothing to compact.
                    self.supervisors.insert(&id, origin);
                }
                self.tasks.insert(id, Box::new(held));
            }
        }
        self.counters.lost_in_restart += lost;
        lost
    }

    /// The origin of a restored record, its supervisor id shared (`None` if the id is no longer
    /// acceptable).
    fn restored_origin(&mut self, fields: OriginFields) -> Option<Arc<Origin>> {
        if fields.supervisor_id.len() > MAX_SUPERVISOR_ID_BYTES {
            return None;
        }
        let supervisor = self.supervisors.intern(&fields.supervisor_id).ok()?;
        Some(Arc::new(Origin {
            supervisor,
            relator: self.supervisors.name(&fields.relator),
            rule: self.supervisors.name(&fields.rule),
            node: fields.node.into(),
            scheduled_unix_ms: fields.scheduled_unix_ms,
        }))
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

    /// Counts a refused `ListTasks` request.
    pub(crate) fn count_refused_list(&mut self) {
        self.counters.lists_refused += 1;
    }

    /// Why new tasks cannot be journaled now, if they cannot.
    pub(crate) fn journal_failure(&self) -> Option<String> {
        self.journal.as_ref().and_then(|journal| journal.failure())
    }

    /// The sequence number the journal must have committed for everything done so far to be
    /// durable (0 without a journal).
    pub(crate) fn journal_seq(&self) -> u64 {
        self.journal.as_ref().map_or(0, |journal| journal.pushed())
    }

    /// Adds a completion subscriber.
    pub(crate) fn subscribe(&mut self, notices: mpsc::Sender<proto::TaskStatus>, viewer: Viewer) {
        self.subscribers.add(notices, viewer);
    }

    /// Takes in one task. A check that can start now is pushed onto `start_now` (already marked
    /// running); one that cannot waits in the queue as pending. Returns the task id (moved out of
    /// the task, for the acknowledgement) and what became of the task.
    /// Why `task` comes from a member that no longer runs this engine, if it does: its epoch
    /// is older than the newest seen for its supervisor. A newer epoch becomes the newest.
    fn stale_epoch(&mut self, task: &Sent) -> Option<String> {
        let epoch = task.assignment_epoch;
        if epoch == 0 || task.supervisor_id.is_empty() {
            return None;
        }
        match self.epochs.get_mut(task.supervisor_id.as_str()) {
            Some(newest) if epoch < *newest => Some(format!(
                "assignment epoch {epoch} is older than {newest}: another member of cluster `{}` \
                 runs this engine now",
                clip_id(task.supervisor_id.clone())
            )),
            Some(newest) => {
                *newest = epoch;
                None
            }
            None => {
                if self.epochs.len() < MAX_SUPERVISORS {
                    self.epochs.insert(task.supervisor_id.clone(), epoch);
                }
                None
            }
        }
    }

    pub(crate) fn admit(
        &mut self,
        task: proto::Task,
        now: Now,
        start_now: &mut Vec<Job>,
        viewer: &Viewer,
    ) -> (String, Admission) {
        let prepared = Prepared::new(task);
        self.admit_in_batch(prepared, now, start_now, viewer, &mut BatchCache::default())
    }

    /// [`Store::admit`] for one task of a batch: what the batch's tasks share (supervisor,
    /// names, the mark raised) is looked up once, in `cache`, which lives for the batch.
    pub(crate) fn admit_in_batch(
        &mut self,
        prepared: Prepared,
        now: Now,
        start_now: &mut Vec<Job>,
        viewer: &Viewer,
        cache: &mut BatchCache,
    ) -> (String, Admission) {
        let Prepared {
            task,
            id,
            key,
            size,
            check,
            node,
            held: held_box,
        } = prepared;
        self.counters.tasks_received += 1;
        if size > self.limits.max_task_bytes {
            // Refused before anything of it is kept: memory stays bounded by max_held_tasks
            // times a small size, whatever a client sends.
            self.counters.tasks_rejected += 1;
            let reason = format!(
                "task is {size} bytes, over max_task_bytes {}",
                self.limits.max_task_bytes
            );
            return (clip_id(id), Admission::Invalid(reason));
        }
        if task.supervisor_id.len() > MAX_SUPERVISOR_ID_BYTES {
            self.counters.tasks_rejected += 1;
            let reason = format!(
                "supervisor_id is {} bytes, over {MAX_SUPERVISOR_ID_BYTES}",
                task.supervisor_id.len()
            );
            return (clip_id(id), Admission::Invalid(reason));
        }
        if let Some(reason) = self.stale_epoch(&task) {
            self.counters.tasks_rejected += 1;
            self.counters.stale_epochs += 1;
            return (clip_id(id), Admission::StaleEpoch(reason));
        }
        let attempt = task.attempt.max(1);
        let held_count = self.tasks.len();
        // The id goes back in the ack; the map keeps a shared copy.
        let entry = self.tasks.entry(key);
        let retry = match &entry {
            Entry::Occupied(occupied) => {
                let held = occupied.get();
                if !viewer.may_see(held.owner.as_ref()) {
                    self.counters.tasks_rejected += 1;
                    let reason = "task id is held for another supervisor's certificate".to_string();
                    return (id, Admission::Invalid(reason));
                }
                if let Some(origin) = &held.origin
                    && !task.supervisor_id.is_empty()
                    && *origin.supervisor != *task.supervisor_id
                {
                    // Two supervisors sharing an engine never take over each other's results.
                    self.counters.tasks_rejected += 1;
                    let reason = format!(
                        "task id is held for supervisor `{}`: give each supervisor its own \
                         relator names",
                        clip_id(origin.supervisor.to_string())
                    );
                    return (id, Admission::Invalid(reason));
                }
                if attempt <= held.attempt {
                    self.counters.duplicates += 1;
                    return (id, Admission::Duplicate);
                }
                if !held.is_finished() {
                    self.counters.tasks_rejected += 1;
                    self.counters.retries_busy += 1;
                    let reason = match held.state {
                        TaskState::Pending => format!(
                            "attempt {} still running (waiting for a check slot)",
                            held.attempt
                        ),
                        _ => format!("attempt {} still running", held.attempt),
                    };
                    return (id, Admission::Busy(reason));
                }
                true
            }
            Entry::Vacant(_) => false,
        };
        // A retry of a task indexed under its supervisor stays indexed once.
        let indexed = matches!(&entry, Entry::Occupied(held) if held.get().origin.is_some());
        let mut check = match check {
            Ok(check) => check,
            Err(error) => {
                self.counters.tasks_rejected += 1;
                return (id, Admission::Invalid(error.to_string()));
            }
        };
        if let Check::Exec { program, .. } = &mut check {
            match self.exec_allow.permit(program) {
                // What runs is the path that was matched, never a later PATH lookup.
                Ok(path) => *program = path.to_string_lossy().into_owned(),
                Err(reason) => {
                    self.counters.tasks_rejected += 1;
                    return (id, Admission::NotAllowed(reason));
                }
            }
        }
        if !retry && held_count >= self.limits.max_held_tasks {
            self.counters.tasks_rejected += 1;
            let reason = format!(
                "engine holds {held_count} tasks (max_held_tasks {})",
                self.limits.max_held_tasks
            );
            return (id, Admission::Exhausted(reason));
        }
        let origin = if task.supervisor_id.is_empty() {
            // A retry without a supervisor keeps the origin of the attempt it replaces.
            match &entry {
                Entry::Occupied(occupied) => occupied.get().origin.clone(),
                Entry::Vacant(_) => None,
            }
        } else {
            match cache.supervisor(&mut self.supervisors, &task.supervisor_id) {
                Ok(supervisor) => Some(Arc::new(Origin {
                    supervisor,
                    relator: BatchCache::name(
                        &mut cache.relator,
                        &mut self.supervisors,
                        &task.relator,
                    ),
                    rule: BatchCache::name(&mut cache.rule, &mut self.supervisors, &task.rule),
                    node,
                    scheduled_unix_ms: task.scheduled_unix_ms,
                })),
                Err(reason) => {
                    self.counters.tasks_rejected += 1;
                    return (id, Admission::Exhausted(reason));
                }
            }
        };
        self.counters.tasks_accepted += 1;
        if retry {
            self.counters.retries_accepted += 1;
        }
        let admission = if retry {
            Admission::Retry
        } else {
            Admission::Accepted
        };
        let key = Arc::clone(entry.key().id());
        let seq = self.next_seq;
        self.next_seq += 1;
        let mut held = held_box;
        *held = HeldTask::pending(attempt, seq, viewer.owner(), origin);
        let mut compact = None;
        if let Some(origin) = &held.origin {
            if !indexed && self.supervisors.insert(&key, origin) {
                compact = Some(Arc::clone(&origin.supervisor));
            }
            if !cache.marked(origin) {
                self.supervisors.mark(
                    &origin.supervisor,
                    &origin.relator,
                    origin.scheduled_unix_ms,
                    held.owner.clone(),
                );
            }
        }
        if let Some(result) = check.instant_result() {
            // Completes inline: no queue, no worker.
            self.counters.checks_started += 1;
            self.counters.checks_finished += 1;
            held.started_unix_ms = now.unix_ms;
            record(&mut held, result, now);
            entry.insert(held);
            self.compact_index(compact);
            self.publish_final(&key);
            return (id, admission);
        }
        let timeout = match task.timeout_ms {
            0 => defaults::rule_timeout(),
            ms => Duration::from_millis(ms),
        }
        .min(self.limits.max_check_timeout);
        let runs_now = self.running < self.limits.max_concurrent_checks;
        if runs_now {
            held.state = TaskState::Running;
            held.started_unix_ms = now.unix_ms;
            self.running += 1;
            self.counters.checks_started += 1;
            self.counters.checks_running_peak =
                self.counters.checks_running_peak.max(self.running as u64);
        }
        let journaled = match &self.journal {
            Some(journal) => {
                journal.push(JournalOp::Put(held.status(id.clone()), held.origin.clone()));
                journal.pushed()
            }
            None => 0,
        };
        let job = Job {
            id: key,
            seq,
            priority: Priority::try_from(task.priority).unwrap_or(Priority::Normal),
            check,
            timeout,
            journaled,
        };
        if runs_now {
            start_now.push(job);
        } else {
            self.queue.push(job);
        }
        entry.insert(held);
        self.compact_index(compact);
        (id, admission)
    }

    /// Drops the released ids from `supervisor`'s index, when it asked for it.
    fn compact_index(&mut self, supervisor: Option<Arc<str>>) {
        if let Some(supervisor) = supervisor {
            let tasks = &self.tasks;
            self.supervisors
                .compact(&supervisor, &|id| held_for(tasks, id, &supervisor));
        }
    }

    /// Records the result of `job` and hands back the next waiting job (marked running) for the
    /// same worker, or `None` when the queue is empty and the worker should stop.
    pub(crate) fn finish(&mut self, job: &Job, result: CheckResult, now: Now) -> Option<Job> {
        self.counters.checks_finished += 1;
        if let Some(held) = self.tasks.get_mut(&job.id)
            && held.seq == job.seq
        {
            record(held, result, now);
            self.publish_final(&job.id);
        }
        // A lowered max_concurrent_checks (reload) takes effect as workers finish.
        let next = if self.running > self.limits.max_concurrent_checks {
            None
        } else {
            self.queue.pop()
        };
        match next {
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

    /// Applies reloaded limits and `[exec] allow` to tasks admitted from now on. A raised
    /// `max_concurrent_checks` starts waiting checks at once: they are returned (marked running)
    /// for the caller to spawn; a lowered one takes effect as running checks finish.
    pub(crate) fn set_limits(
        &mut self,
        limits: Limits,
        exec_allow: ExecAllowList,
        now: Now,
    ) -> Vec<Job> {
        self.limits = limits;
        self.exec_allow = exec_allow;
        self.next_sweep = self.next_sweep.min(now.instant + limits.sweep_period());
        let mut start_now = Vec::new();
        while self.running < self.limits.max_concurrent_checks {
            let Some(job) = self.queue.pop() else { break };
            self.running += 1;
            self.counters.checks_started += 1;
            self.counters.checks_running_peak =
                self.counters.checks_running_peak.max(self.running as u64);
            if let Some(held) = self.tasks.get_mut(&job.id)
                && held.seq == job.seq
            {
                held.state = TaskState::Running;
                held.started_unix_ms = now.unix_ms;
            }
            start_now.push(job);
        }
        start_now
    }

    /// The limits in force.
    pub(crate) fn limits(&self) -> Limits {
        self.limits
    }

    /// At the end of a shutdown's grace: every task still pending or running becomes a final
    /// `LOST_IN_RESTART` result (journaled, so the next start reports it), the waiting queue is
    /// emptied, and results of checks still running are ignored when they come. Returns how
    /// many tasks were abandoned.
    pub(crate) fn abandon_unfinished(&mut self, now: Now) -> u64 {
        self.queue.clear();
        let mut abandoned = Vec::new();
        for (task_id, held) in self.tasks.iter_mut() {
            if held.is_finished() {
                continue;
            }
            held.state = TaskState::LostInRestart;
            held.message = format!(
                "lost in restart: the engine shut down before attempt {} finished; its outcome is unknown",
                held.attempt
            );
            held.finished_unix_ms = now.unix_ms;
            held.finished_at = Some(now.instant);
            // A new incarnation: a late result of the abandoned check is ignored.
            held.seq = self.next_seq;
            self.next_seq += 1;
            abandoned.push(task_id.clone());
        }
        for task_id in &abandoned {
            self.publish_final(task_id);
        }
        let count = abandoned.len() as u64;
        self.counters.lost_in_restart += count;
        count
    }

    /// Hands the final status of `task_id` to the completion subscribers and the journal.
    fn publish_final(&mut self, task_id: &str) {
        if self.journal.is_none() && self.subscribers.is_empty() {
            return;
        }
        let Some(held) = self.tasks.get(task_id) else {
            return;
        };
        let status = held.status(task_id.to_string());
        let origin = held.origin.clone();
        if !self.subscribers.is_empty() {
            let delivery = self.subscribers.deliver(&status, held.owner.as_ref());
            self.counters.completion_notices_queued += delivery.queued;
            self.counters.completion_notices_dropped += delivery.dropped;
        }
        self.journal_op(JournalOp::Put(status, origin));
    }

    fn journal_op(&self, op: JournalOp) {
        if let Some(journal) = &self.journal {
            journal.push(op);
        }
    }

    /// Checks neither finished nor abandoned: running plus waiting.
    pub(crate) fn unfinished_checks(&self) -> usize {
        self.running + self.queue.len()
    }

    /// The status of `task_id` (moved into the reply).
    pub(crate) fn status(&self, task_id: String, viewer: &Viewer) -> proto::TaskStatus {
        match self.tasks.get(task_id.as_str()) {
            Some(held) if viewer.may_see(held.owner.as_ref()) => held.status(task_id),
            // Another supervisor's task looks like no task at all.
            _ => proto::TaskStatus {
                task_id,
                state: TaskState::Unknown as i32,
                ..Default::default()
            },
        }
    }

    /// Forgets the finished result of `task_id`; a task still pending or running, or not held,
    /// is left alone. True when something was forgotten.
    pub(crate) fn release(&mut self, task_id: &str, viewer: &Viewer) -> bool {
        match self.tasks.get(task_id) {
            Some(held) if held.is_finished() && viewer.may_see(held.owner.as_ref()) => {
                if let Some(origin) = &held.origin {
                    self.supervisors.remove(origin);
                }
                self.tasks.remove(task_id);
                self.counters.results_released += 1;
                if self.journal.is_some() {
                    self.journal_op(JournalOp::Delete(task_id.to_string()));
                }
                true
            }
            _ => false,
        }
    }

    /// Queues the marks raised since the last call for the journal (call before reading
    /// [`Store::journal_seq`] for an acknowledgement).
    pub(crate) fn journal_marks(&mut self) {
        let dirty = self.supervisors.take_dirty();
        if let Some(journal) = &self.journal {
            for (supervisor, relator, scheduled_unix_ms) in dirty {
                journal.push(JournalOp::Mark {
                    supervisor,
                    relator,
                    scheduled_unix_ms,
                });
            }
        }
    }

    /// One `ListTasks` page: the tasks held for `page.supervisor_id` that `viewer` may see,
    /// ordered by id after `page.after_id`, the marks on the first page, and the token of the
    /// next page (empty after the last).
    pub(crate) fn list(&mut self, page: PageRequest<'_>, viewer: &Viewer) -> proto::ListTasksReply {
        self.counters.list_pages += 1;
        let mut reply = proto::ListTasksReply::default();
        let scan_limit = page.limit.saturating_mul(LIST_SCAN_FACTOR);
        let mut bytes = 0usize;
        let mut last: Option<&str> = None;
        let mut more = false;
        let tasks = &self.tasks;
        let is_live = |id: &str| held_for(tasks, id, page.supervisor_id);
        let ids = self
            .supervisors
            .ids_after(page.supervisor_id, page.after_id, &is_live);
        for (scanned, task_id) in ids.enumerate() {
            if reply.tasks.len() >= page.limit || scanned >= scan_limit {
                more = true;
                break;
            }
            let Some(held) = tasks.get(task_id) else {
                last = Some(task_id);
                continue;
            };
            // Released and taken again for another supervisor since the index was sorted.
            if !is_live(task_id) || !viewer.may_see(held.owner.as_ref()) {
                last = Some(task_id);
                continue;
            }
            let listed = held.listed(task_id);
            let size = prost::encoding::message::encoded_len(1, &listed);
            if !reply.tasks.is_empty() && bytes + size > page.byte_budget {
                more = true;
                break;
            }
            bytes += size;
            reply.tasks.push(listed);
            last = Some(task_id);
        }
        if more && let Some(last) = last {
            reply.next_after_id = last.to_string();
        }
        if page.after_id.is_empty() {
            reply.marks = self.supervisors.marks(page.supervisor_id, viewer);
        }
        reply
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
        let journaled = self.journal.is_some();
        let mut expired_ids = Vec::new();
        let mut unindex = Vec::new();
        self.tasks.retain(|task_id, held| {
            let keep = match held.finished_at {
                Some(finished_at) => now.saturating_duration_since(finished_at) < retention,
                None => true,
            };
            if !keep {
                if journaled {
                    expired_ids.push(task_id.clone());
                }
                if let Some(origin) = held.origin.take() {
                    unindex.push(origin);
                }
            }
            keep
        });
        for origin in unindex {
            self.supervisors.remove(&origin);
        }
        for task_id in expired_ids {
            self.journal_op(JournalOp::Delete(task_id.to_string()));
        }
        let expired = (before - self.tasks.len()) as u64;
        if expired > 0 {
            self.counters.results_expired += expired;
            tracing::info!(
                target: super::tuning::LOG_TARGET,
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
            completion_subscribers: self.subscribers.len() as u64,
            journal_commits: self.journal.as_ref().map_or(0, |j| j.commits()),
            journal_write_errors: self.journal.as_ref().map_or(0, |j| j.write_errors()),
            ..self.counters
        }
    }
}

/// Whether `tasks` holds `task_id` for `supervisor`.
fn held_for(tasks: &TaskMap, task_id: &str, supervisor: &str) -> bool {
    tasks
        .get(task_id)
        .and_then(|held| held.origin.as_ref())
        .is_some_and(|origin| &*origin.supervisor == supervisor)
}

/// Ids longer than this are cut when echoed in a refusal.
const MAX_ECHOED_ID_BYTES: usize = 256;

/// `id` for a refusal: cut (on a character boundary, marked with `…`) when absurdly long, so a
/// refusal never carries a client's megabytes back.
fn clip_id(mut id: String) -> String {
    if id.len() > MAX_ECHOED_ID_BYTES {
        let mut end = MAX_ECHOED_ID_BYTES;
        while !id.is_char_boundary(end) {
            end -= 1;
        }
        id.truncate(end);
        id.push('…');
    }
    id
}

fn record(held: &mut HeldTask, result: CheckResult, now: Now) {
    held.state = result.state;
    held.value = result.value;
    held.message = result.message;
    held.perfdata = result.perfdata;
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
            max_task_bytes: 4096,
            max_check_timeout: Duration::from_secs(3600),
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
        TaskState::try_from(store.status(id.into(), &Viewer::Local).state).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn unclaimed_results_expire_after_retention_and_are_counted() {
        let mut store = Store::new(limits(4, 100), None, ExecAllowList::default());
        let mut start = Vec::new();
        store.admit(sim_task("a", 0), Now::read(), &mut start, &Viewer::Local);
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
        let mut store = Store::new(limits(1, 100), None, ExecAllowList::default());
        let mut start = Vec::new();
        store.admit(
            sim_task("run", 1000),
            Now::read(),
            &mut start,
            &Viewer::Local,
        );
        store.admit(
            sim_task("wait", 1000),
            Now::read(),
            &mut start,
            &Viewer::Local,
        );
        assert_eq!(start.len(), 1);
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert_eq!(store.sweep(Instant::now()), 0);
        assert_eq!(state(&store, "run"), TaskState::Running);
        assert_eq!(state(&store, "wait"), TaskState::Pending);
    }

    #[tokio::test]
    async fn a_finished_worker_takes_the_next_waiting_check() {
        let mut store = Store::new(limits(1, 100), None, ExecAllowList::default());
        let mut start = Vec::new();
        store.admit(
            sim_task("first", 5),
            Now::read(),
            &mut start,
            &Viewer::Local,
        );
        store.admit(
            sim_task("second", 5),
            Now::read(),
            &mut start,
            &Viewer::Local,
        );
        let job = start.pop().unwrap();
        assert_eq!(&*job.id, "first");
        let next = store
            .finish(&job, CheckResult::ok(1.0, String::new()), Now::read())
            .unwrap();
        assert_eq!(&*next.id, "second");
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
        let mut store = Store::new(limits(1, 100), None, ExecAllowList::default());
        let mut start = Vec::new();
        store.admit(sim_task("r", 5), Now::read(), &mut start, &Viewer::Local);
        assert!(!store.release("r", &Viewer::Local));
        assert_eq!(state(&store, "r"), TaskState::Running);
    }

    fn page<'a>(supervisor_id: &'a str, after_id: &'a str) -> PageRequest<'a> {
        PageRequest {
            supervisor_id,
            after_id,
            limit: 100,
            byte_budget: 1 << 20,
        }
    }

    fn listed(store: &mut Store, supervisor: &str) -> Vec<String> {
        store
            .list(page(supervisor, ""), &Viewer::Local)
            .tasks
            .into_iter()
            .map(|t| t.task_id)
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn an_id_released_and_taken_for_another_supervisor_is_listed_only_for_it() {
        let mut store = Store::new(limits(4, 100), None, ExecAllowList::default());
        let mut start = Vec::new();
        let from = |supervisor: &str, id: &str| proto::Task {
            supervisor_id: supervisor.into(),
            relator: "r".into(),
            rule: "u".into(),
            node: "n".into(),
            ..sim_task(id, 0)
        };
        let now = Now::read();
        for id in ["t2", "t1", "t3"] {
            store.admit(from("a", id), now, &mut start, &Viewer::Local);
        }
        assert_eq!(listed(&mut store, "a"), ["t1", "t2", "t3"]);
        assert!(store.release("t2", &Viewer::Local));
        store.admit(from("b", "t2"), now, &mut start, &Viewer::Local);
        assert_eq!(listed(&mut store, "a"), ["t1", "t3"]);
        assert_eq!(listed(&mut store, "b"), ["t2"]);
        // The second page starts after the token, with ids added in between sorted in.
        store.admit(from("a", "t0"), now, &mut start, &Viewer::Local);
        store.admit(from("a", "t4"), now, &mut start, &Viewer::Local);
        let rest: Vec<String> = store
            .list(page("a", "t1"), &Viewer::Local)
            .tasks
            .into_iter()
            .map(|t| t.task_id)
            .collect();
        assert_eq!(rest, ["t3", "t4"]);
    }

    #[tokio::test(start_paused = true)]
    async fn tasks_of_one_batch_share_their_names_and_raise_the_mark_once() {
        let mut store = Store::new(limits(4, 100), None, ExecAllowList::default());
        let mut start = Vec::new();
        let mut cache = BatchCache::default();
        let now = Now::read();
        for (id, at) in [("t1", 200), ("t2", 100), ("t3", 300)] {
            let task = proto::Task {
                supervisor_id: "a".into(),
                relator: "r".into(),
                rule: "u".into(),
                node: id.into(),
                scheduled_unix_ms: at,
                ..sim_task(id, 0)
            };
            store.admit_in_batch(
                Prepared::new(task),
                now,
                &mut start,
                &Viewer::Local,
                &mut cache,
            );
        }
        let origins: Vec<Arc<Origin>> = ["t1", "t2", "t3"]
            .iter()
            .map(|id| store.tasks.get(id).unwrap().origin.clone().unwrap())
            .collect();
        assert!(Arc::ptr_eq(&origins[0].relator, &origins[2].relator));
        assert!(Arc::ptr_eq(&origins[0].rule, &origins[1].rule));
        assert!(Arc::ptr_eq(&origins[0].supervisor, &origins[2].supervisor));
        let marks = store.list(page("a", ""), &Viewer::Local).marks;
        assert_eq!(marks.len(), 1);
        assert_eq!(marks[0].latest_scheduled_unix_ms, 300);
    }
}
