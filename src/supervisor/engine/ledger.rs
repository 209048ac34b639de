//! The ledger of one engine: which submitted tasks the supervisor still waits to hear the end of,
//! completion notices that overtook their own acknowledgement, and finished results the engine
//! may forget. It is plain synchronous state: each call absorbs what the wire brought back and
//! returns what must happen because of it ([`Settled`]): tasks to send again, retries, chains,
//! notifications, completions, log notices. Final results go through the supervisor's
//! [`StateBook`], shared by every engine's ledger (a failover moves a relator's tasks, not its
//! states). The loops apply what was decided; nothing here touches the network, a clock or a
//! channel, so every decision is a unit test.
//!
//! A reconciliation ([`Ledger::reconciled`], in `ledger/adoption.rs` with what it remembers)
//! hands it the tasks the engine holds for this supervisor: finished ones it was waiting for go
//! the way of any status; ones it was not waiting for (sent before a restart) are adopted, then
//! monitored or absorbed like its own. An adopted id is remembered for a while, so that a copy
//! of the task still queued to be sent is not sent, and an acknowledgement of such a copy does
//! not make the task count twice. A failed task whose next attempt is scheduled is remembered
//! the same way until that attempt is acknowledged, so that a later reconciliation that lists
//! the failed attempt again (the engine holds it until the retry replaces it) neither adopts it
//! nor schedules a second copy of the same retry, which would run again once the first copy's
//! result is released.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::proto::{PerfData, Task, TaskState, TaskStatus};
use crate::stats::Stage;
use crate::supervisor::completion::Completion;
use crate::supervisor::counters::{Bump, DeliveryCounters};
use crate::supervisor::notification::{About, Notification};
use crate::supervisor::schedule::plan::{RelatorPlan, unix_ms};
use crate::supervisor::states::{NotificationKind, Observation, ServiceState, StateBook, Verdict};
use crate::wire::status::TaskId;
use crate::wire::submit::Delivery;

use super::unfinished::{Names, Unfinished};

mod adoption;

/// Completion notices kept while their task's acknowledgement is on its way; past this the
/// oldest half is dropped (the monitor loop still collects those tasks).
const MAX_EARLY_COMPLETIONS: usize = 100_000;

/// An adopted id is remembered at least this long after its adoption (and until its start
/// window is over), so that no queued copy of it is sent.
const ADOPTED_MIN_KEEP: Duration = Duration::from_secs(300);

/// Start window assumed for an adopted task whose relator is no longer planned.
const UNPLANNED_WINDOW: Duration = Duration::from_secs(3600);

/// An adopted task id: its attempt then, and until when it is remembered.
#[derive(Debug, Clone, Copy)]
struct Adopted {
    attempt: u32,
    until: SystemTime,
}

/// A failed task whose next attempt is scheduled and not acknowledged yet: that attempt, and
/// until when it is remembered.
#[derive(Debug, Clone, Copy)]
struct PendingRetry {
    attempt: u32,
    until: SystemTime,
}

/// Something worth a log line, decided here and written by the loop.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Notice {
    /// The engine refused the task for good.
    Rejected { task_id: String, reason: String },
    /// The task was running when the engine restarted.
    LostInRestart { task_id: String },
    /// The engine no longer holds a task it acknowledged; it is sent again.
    Forgotten { task_id: String },
    /// A failed task gets another attempt after its relator's retry period.
    Retrying {
        task_id: String,
        /// The attempt that will run next.
        attempt: u32,
    },
    /// A failed task would get another attempt, but it would start past its start window.
    RetryPastWindow {
        task_id: String,
        /// The attempt that failed, final now.
        attempt: u32,
    },
    /// No acknowledgement even when sent alone: failed.
    Unanswered { task_id: String, reason: String },
    /// Its status is too large to be read within the message size cap: failed.
    Unreadable { task_id: String, reason: String },
}

/// What must happen after the ledger absorbed something.
#[derive(Debug, Default)]
pub(crate) struct Settled {
    /// Tasks to submit again now (no acknowledgement, or the engine forgot them).
    pub(crate) resend: Vec<Task>,
    /// Next attempts of failed tasks, each due after the given delay.
    pub(crate) retries: Vec<(Task, Duration)>,
    /// Chained relators (plan index) to run on a node.
    pub(crate) chains: Vec<(usize, String)>,
    /// Notifications to send: the relator's plan index and what to say.
    pub(crate) alerts: Vec<(usize, Notification)>,
    /// Final outcomes, for the observer (only when one is attached).
    pub(crate) completions: Vec<Completion>,
    /// Lateness samples for the statistics.
    pub(crate) lateness: Vec<(Stage, Duration)>,
    /// Log lines to write.
    pub(crate) notices: Vec<Notice>,
    /// Performance data to export: (relator, rule, node, data) of relators with
    /// `export_perfdata`.
    pub(crate) perfdata: Vec<(String, String, String, Vec<PerfData>)>,
}

/// A task's final result, however it ended.
#[derive(Debug, Clone, Copy)]
struct Final<'a> {
    state: TaskState,
    value: f64,
    message: &'a str,
    perfdata: &'a [PerfData],
    /// When the check finished on the engine (0 if it never ran).
    finished_unix_ms: i64,
}

impl<'a> Final<'a> {
    /// A task that ended without running: failed with `reason`.
    fn failed(reason: &'a str) -> Self {
        Self {
            state: TaskState::Failed,
            value: 0.0,
            message: reason,
            perfdata: &[],
            finished_unix_ms: 0,
        }
    }
}

/// One engine's unfinished tasks and what follows from their outcomes.
pub(crate) struct Ledger {
    engine: String,
    plans: Arc<Vec<RelatorPlan>>,
    plan_index: Arc<HashMap<String, usize>>,
    /// The state of every watched (relator, rule, node), shared by all engines.
    states: Arc<Mutex<StateBook>>,
    counters: Arc<DeliveryCounters>,
    /// Whether final outcomes are wanted as [`Completion`]s (building them costs copies).
    observed: bool,
    unfinished: HashMap<TaskId, Unfinished>,
    early: HashMap<String, TaskStatus>,
    release: Vec<TaskId>,
    adopted: HashMap<TaskId, Adopted>,
    /// Failed tasks whose next attempt is scheduled and not acknowledged yet.
    retrying: HashMap<TaskId, PendingRetry>,
    /// Cluster: per relator, the engine's mark when this member last took the engine over. A
    /// first attempt scheduled at or before it was sent by a member that ran the engine before
    /// (or by this one before it lost the engine) and is never sent from here.
    taken_marks: HashMap<String, i64>,
}

impl Ledger {
    /// An empty ledger for `engine`.
    pub(crate) fn new(
        engine: String,
        plans: Arc<Vec<RelatorPlan>>,
        plan_index: Arc<HashMap<String, usize>>,
        states: Arc<Mutex<StateBook>>,
        counters: Arc<DeliveryCounters>,
        observed: bool,
    ) -> Self {
        Self {
            engine,
            plans,
            plan_index,
            states,
            counters,
            observed,
            unfinished: HashMap::new(),
            early: HashMap::new(),
            release: Vec::new(),
            adopted: HashMap::new(),
            retrying: HashMap::new(),
            taken_marks: HashMap::new(),
        }
    }

    /// Cluster: another member runs the engine now. Every task waited for is forgotten (that
    /// member adopts it from the engine's listing); results recorded here and not released yet
    /// are kept, for the monitor loop to release at once. Returns how many tasks were
    /// forgotten.
    pub(crate) fn hand_over(&mut self) -> usize {
        let forgotten = self.unfinished.len();
        self.unfinished.clear();
        self.early.clear();
        self.adopted.clear();
        self.retrying.clear();
        forgotten
    }

    /// Cluster: this member took the engine over; `marks` are the engine's (the latest
    /// scheduled instant sent per relator, by whichever member).
    pub(crate) fn taken_over(&mut self, marks: &HashMap<String, i64>) {
        self.taken_marks.clone_from(marks);
    }

    /// Tasks submitted whose outcome is not known yet.
    pub(crate) fn unfinished_count(&self) -> usize {
        self.unfinished.len()
    }

    /// What the next monitor loop asks for: every unfinished id, and the results to release.
    /// The ids are shared with the ledger, not copied.
    pub(crate) fn next_query(&mut self) -> (Vec<TaskId>, Vec<TaskId>) {
        let ids = self.unfinished.keys().cloned().collect();
        (ids, std::mem::take(&mut self.release))
    }

    /// The results recorded and not yet released, to release now.
    pub(crate) fn take_release(&mut self) -> Vec<TaskId> {
        std::mem::take(&mut self.release)
    }

    /// Release ids whose query went unanswered: sent again next loop.
    pub(crate) fn unreleased(&mut self, ids: Vec<TaskId>) {
        self.release.extend(ids);
    }

    /// Absorb what became of each task of a submission loop whose first batch left at
    /// `sent_at`: accepted tasks become unfinished, refused ones are final failures, the rest
    /// are handed back to be sent again.
    pub(crate) fn submitted(
        &mut self,
        deliveries: Vec<(Task, Delivery)>,
        sent_at: SystemTime,
        now: SystemTime,
    ) -> Settled {
        let mut settled = Settled::default();
        let mut accepted: Vec<TaskId> = Vec::new();
        for (task, delivery) in deliveries {
            match delivery {
                Delivery::Accepted { duplicate } => {
                    self.counters.accepted.bump(1);
                    if duplicate {
                        self.counters.duplicates.bump(1);
                        if self.already_adopted(&task) {
                            // A copy of a task adopted at a reconciliation: the adopted one is
                            // waited for (or was collected) already.
                            continue;
                        }
                    }
                    settled.lateness.push((
                        Stage::ScheduledToSent,
                        elapsed(unix_ms_time(task.scheduled_unix_ms), sent_at),
                    ));
                    let id: TaskId = Arc::from(task.id.as_str());
                    self.retry_acknowledged(&id, task.attempt);
                    let relator = self.plan_index.get(&task.relator).copied();
                    if !self.early.is_empty() {
                        accepted.push(Arc::clone(&id));
                    }
                    let held = Unfinished::new(task, relator, Some(sent_at), &self.plans);
                    self.unfinished.insert(id, held);
                }
                Delivery::Rejected { reason } => {
                    self.counters.rejected.bump(1);
                    settled.notices.push(Notice::Rejected {
                        task_id: task.id.clone(),
                        reason: reason.clone(),
                    });
                    let relator = self.plan_index.get(&task.relator).copied();
                    self.ended(
                        &mut settled,
                        relator,
                        Names::of(&task),
                        Final::failed(&reason),
                        now,
                    );
                }
                // Another member runs the engine now: it sends or has sent the task.
                Delivery::Stale { .. } => self.counters.stale_epoch.bump(1),
                Delivery::Retry { .. } => settled.resend.push(task),
            }
        }
        // Completion notices that arrived before their acknowledgement count now.
        let early: Vec<TaskStatus> = accepted
            .iter()
            .filter_map(|id| self.early.remove(&**id))
            .collect();
        if !early.is_empty() {
            let more = self.statuses(early, false, now);
            settled.absorb(more);
        }
        settled
    }

    /// Absorb statuses from a monitor loop or pushed completion notices (`pushed`). Finished
    /// tasks leave the ledger: failed ones are retried while their relator allows, final ones
    /// are released on the engine next loop, fire alerts when broken and start chained
    /// relators. A notice may overtake the acknowledgement of its own task; such early notices
    /// are kept until the acknowledgement is absorbed.
    pub(crate) fn statuses(
        &mut self,
        statuses: Vec<TaskStatus>,
        pushed: bool,
        now: SystemTime,
    ) -> Settled {
        let mut settled = Settled::default();
        let mut statuses = statuses;
        if statuses.len() > 1 {
            // Two results of the same (relator, rule, node) count in the order they were
            // scheduled (the state book ignores one older than a result already counted).
            statuses.sort_by_cached_key(|status| {
                self.unfinished
                    .get(status.task_id.as_str())
                    .map_or(i64::MIN, Unfinished::scheduled_unix_ms)
            });
        }
        for status in statuses {
            let Some(held) = self.unfinished.get(status.task_id.as_str()) else {
                if pushed {
                    self.keep_early(status);
                }
                // A poll answer for a task no longer waited for: an older attempt's, or a
                // duplicate answer. Nothing to do.
                continue;
            };
            let state = TaskState::try_from(status.state).unwrap_or(TaskState::Unspecified);
            match state {
                TaskState::Ok
                | TaskState::Warning
                | TaskState::Broken
                | TaskState::PluginUnknown
                | TaskState::Failed
                | TaskState::TimedOut
                | TaskState::LostInRestart => {
                    // The outcome of an earlier attempt (sent before a retry replaced it) is not
                    // this attempt's; attempt 0 comes from engines that do not report attempts.
                    if status.attempt != 0 && status.attempt != held.attempt() {
                        continue;
                    }
                    if let Some(entry) = self.unfinished.remove(status.task_id.as_str()) {
                        self.finished(&mut settled, entry, state, status, now);
                    }
                }
                TaskState::Unknown => {
                    // The engine no longer holds a task it acknowledged (it restarted without a
                    // journal): send it again rather than lose it.
                    if let Some(entry) = self.unfinished.remove(status.task_id.as_str()) {
                        self.counters.resubmitted.bump(1);
                        settled
                            .resend
                            .push(entry.to_task(&status.task_id, &self.plans));
                        settled.notices.push(Notice::Forgotten {
                            task_id: status.task_id,
                        });
                    }
                }
                // Still on its way: asked again next loop.
                TaskState::Pending | TaskState::Running | TaskState::Unspecified => {}
            }
        }
        settled
    }

    /// Tasks that got no acknowledgement even when sent alone: final failures.
    pub(crate) fn unanswered(
        &mut self,
        tasks: Vec<Task>,
        reason: &str,
        now: SystemTime,
    ) -> Settled {
        let mut settled = Settled::default();
        for task in tasks {
            self.counters.failed_unanswered.bump(1);
            settled.notices.push(Notice::Unanswered {
                task_id: task.id.clone(),
                reason: reason.to_string(),
            });
            let relator = self.plan_index.get(&task.relator).copied();
            self.ended(
                &mut settled,
                relator,
                Names::of(&task),
                Final::failed(reason),
                now,
            );
        }
        settled
    }

    /// Tasks whose status cannot be read even alone (it is over the message size cap): final
    /// failures, and released so that the engine does not keep them until retention ends.
    pub(crate) fn unreadable(&mut self, ids: &[TaskId], reason: &str, now: SystemTime) -> Settled {
        let mut settled = Settled::default();
        for id in ids {
            let Some((id, entry)) = self.unfinished.remove_entry(&**id) else {
                continue;
            };
            self.counters.failed_unreadable.bump(1);
            settled.notices.push(Notice::Unreadable {
                task_id: id.to_string(),
                reason: reason.to_string(),
            });
            let plans = Arc::clone(&self.plans);
            self.ended(
                &mut settled,
                entry.relator(),
                entry.names(&id, &plans),
                Final::failed(reason),
                now,
            );
            self.release.push(id);
        }
        settled
    }

    fn keep_early(&mut self, status: TaskStatus) {
        if self.early.len() >= MAX_EARLY_COMPLETIONS {
            // Keep memory bounded: forget an arbitrary half. The monitor loop reconciles them.
            let mut keep = false;
            self.early.retain(|_, _| {
                keep = !keep;
                keep
            });
        }
        self.early.insert(status.task_id.clone(), status);
    }

    /// One task finished on the engine: decide retry, notification, chain and release. A task
    /// that gets another attempt has no state yet.
    fn finished(
        &mut self,
        settled: &mut Settled,
        entry: Unfinished,
        state: TaskState,
        status: TaskStatus,
        now: SystemTime,
    ) {
        // A task lost in a restart while it waited for a slot never started: 0, not an instant.
        let started = (status.started_unix_ms > 0).then(|| unix_ms_time(status.started_unix_ms));
        let done = (status.finished_unix_ms > 0).then(|| unix_ms_time(status.finished_unix_ms));
        if let (Some(sent_at), Some(started)) = (entry.sent_at, started) {
            settled
                .lateness
                .push((Stage::SentToStarted, elapsed(sent_at, started)));
        }
        if let (Some(started), Some(done)) = (started, done) {
            settled
                .lateness
                .push((Stage::StartedToFinished, elapsed(started, done)));
        }
        if let Some(done) = done {
            settled
                .lateness
                .push((Stage::FinishedToKnown, elapsed(done, now)));
        }
        let plans = Arc::clone(&self.plans);
        let plan = entry.relator().and_then(|r| plans.get(r));
        let names = entry.names(&status.task_id, &plans);
        if state == TaskState::LostInRestart {
            self.counters.lost_in_restart.bump(1);
            settled.notices.push(Notice::LostInRestart {
                task_id: names.id.to_string(),
            });
        }
        let failed = matches!(
            state,
            TaskState::Failed | TaskState::TimedOut | TaskState::LostInRestart
        );
        if failed
            && let Some(plan) = plan
            && let Some((next, delay)) = self.next_attempt(settled, plan, &entry, names, now)
        {
            // Not final: the next attempt replaces this one on the engine, so nothing is
            // released or reported yet. Until it is acknowledged, the failed attempt the engine
            // still holds is this retry's, whoever lists it again.
            let window_end = unix_ms_time(next.scheduled_unix_ms) + plan.start_window;
            self.retrying.insert(
                Arc::from(status.task_id.as_str()),
                PendingRetry {
                    attempt: next.attempt,
                    until: window_end.max(now + delay + ADOPTED_MIN_KEEP),
                },
            );
            settled.retries.push((next, delay));
            return;
        }
        self.counters.completed.bump(1);
        if state == TaskState::Broken {
            self.counters.broken.bump(1);
        }
        if let Some(plan) = plan
            && plan.export_perfdata
            && !status.perfdata.is_empty()
        {
            settled.perfdata.push((
                plan.name.clone(),
                names.rule.to_string(),
                names.node.to_string(),
                status.perfdata.clone(),
            ));
        }
        let result = Final {
            state,
            value: status.value,
            message: &status.message,
            perfdata: &status.perfdata,
            finished_unix_ms: status.finished_unix_ms,
        };
        self.ended(settled, entry.relator(), names, result, now);
        if let Some(plan) = plan {
            let next = match state {
                TaskState::Ok => plan.on_ok.as_slice(),
                TaskState::Broken => plan.on_broken.as_slice(),
                _ => &[],
            };
            for &relator in next {
                self.counters.chained.bump(1);
                settled.chains.push((relator, names.node.to_string()));
            }
        }
        self.release.push(Arc::from(status.task_id));
    }

    /// The next attempt of a failed task, if its relator allows one that still starts inside
    /// the start window.
    fn next_attempt(
        &self,
        settled: &mut Settled,
        plan: &RelatorPlan,
        entry: &Unfinished,
        task: Names<'_>,
        now: SystemTime,
    ) -> Option<(Task, Duration)> {
        if task.attempt > plan.max_retries {
            return None;
        }
        let window_end = unix_ms_time(task.scheduled_unix_ms) + plan.start_window;
        if now + plan.retry_period > window_end {
            // The relator allows another attempt, but it would start after the window: say so,
            // so that an operator sees why a retry policy did not apply.
            self.counters.retries_past_window.bump(1);
            settled.notices.push(Notice::RetryPastWindow {
                task_id: task.id.to_string(),
                attempt: task.attempt,
            });
            return None;
        }
        let mut next = entry.to_task(task.id, &self.plans);
        next.attempt += 1;
        self.counters.retries.bump(1);
        settled.notices.push(Notice::Retrying {
            task_id: task.id.to_string(),
            attempt: next.attempt,
        });
        Some((next, plan.retry_period))
    }

    /// A task's result is final: hand it to the observer and to the state book, and notify
    /// what the book says.
    fn ended(
        &self,
        settled: &mut Settled,
        relator: Option<usize>,
        task: Names<'_>,
        result: Final<'_>,
        now: SystemTime,
    ) {
        if self.observed {
            settled.completions.push(Completion {
                engine: self.engine.clone(),
                task_id: task.id.to_string(),
                relator: task.relator.to_string(),
                node: task.node.to_string(),
                attempt: task.attempt,
                state: result.state,
                value: result.value,
                message: result.message.to_string(),
                finished_unix_ms: result.finished_unix_ms,
                known_at: now,
            });
        }
        let Some(relator) = relator else {
            return;
        };
        if self
            .plans
            .get(relator)
            .is_none_or(|plan| plan.alerts.is_empty())
        {
            return;
        }
        let Some(state) = ServiceState::of(result.state) else {
            return;
        };
        let ran = result.finished_unix_ms > 0;
        let observation = Observation {
            state,
            scheduled_unix_ms: task.scheduled_unix_ms,
            at_unix_ms: if ran {
                result.finished_unix_ms
            } else {
                unix_ms(now)
            },
        };
        let verdict = self
            .states
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .observe(relator, task.rule, task.node, observation);
        let notify = match verdict {
            Verdict::Notify(notify) => notify,
            Verdict::Soft { .. } => {
                self.counters.soft_states.bump(1);
                return;
            }
            Verdict::Quiet | Verdict::Ignored => return,
        };
        self.counters.alerts.bump(1);
        match notify.kind {
            NotificationKind::Problem if ran => {
                let done = unix_ms_time(result.finished_unix_ms);
                settled
                    .lateness
                    .push((Stage::BrokenToAlert, elapsed(done, now)));
            }
            NotificationKind::Problem => {}
            NotificationKind::Recovery => self.counters.recoveries.bump(1),
            NotificationKind::Reminder => self.counters.reminders.bump(1),
        }
        let about = About {
            engine: &self.engine,
            task_id: task.id,
            relator: task.relator,
            rule: task.rule,
            node: task.node,
            output: result.message,
            perfdata: result.perfdata,
            value: result.value,
            finished_unix_ms: result.finished_unix_ms,
        };
        settled
            .alerts
            .push((relator, Notification::new(notify, about)));
    }
}

impl Settled {
    /// Add what `other` says must happen.
    pub(crate) fn absorb(&mut self, other: Settled) {
        self.resend.extend(other.resend);
        self.retries.extend(other.retries);
        self.chains.extend(other.chains);
        self.alerts.extend(other.alerts);
        self.completions.extend(other.completions);
        self.lateness.extend(other.lateness);
        self.notices.extend(other.notices);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{CatchUp, CheckKind, Priority, RuleConfig};
    use crate::proto::ListedTask;
    use crate::supervisor::engine::unfinished::Held;
    use crate::supervisor::schedule::plan::{Templates, watches};
    use crate::supervisor::states::AlertPolicy;
    use NotificationKind::{Problem, Recovery};
    use ServiceState::{Critical, Ok as Fine, Unknown};

    const T0_MS: i64 = 1_700_000_000_000;

    fn at(ms_after_t0: i64) -> SystemTime {
        unix_ms_time(T0_MS + ms_after_t0)
    }

    fn plan(max_retries: u32, alerts: &[&str], on_broken: Vec<usize>) -> RelatorPlan {
        RelatorPlan {
            name: "web".into(),
            engine: "e1".into(),
            interval: Some(Duration::from_secs(60)),
            start_window: Duration::from_secs(30),
            randomize: 0,
            max_retries,
            retry_period: Duration::from_secs(5),
            on_ok: Vec::new(),
            on_broken,
            catch_up: CatchUp::Skip,
            priority: Priority::Normal,
            alerts: alerts.iter().map(|a| a.to_string()).collect(),
            alert_policy: AlertPolicy::default(),
            export_perfdata: false,
            rules: vec![crate::supervisor::schedule::plan::PlannedRule {
                config: rule("http"),
                ca_pem: String::new(),
            }],
            templates: {
                let mut templates = Templates::new(["a", "b", "c"].map(Arc::from).to_vec());
                templates.push_rule([(); 3].map(|()| crate::proto::Check::default()));
                templates
            },
            supervisor_id: "sup".into(),
        }
    }

    fn rule(name: &str) -> RuleConfig {
        RuleConfig {
            name: name.into(),
            kind: CheckKind::Sim,
            timeout: Duration::from_secs(1),
            host: None,
            port: None,
            program: None,
            args: Vec::new(),
            url: None,
            expect_status: None,
            duration: None,
            outcome: None,
            value: None,
            warning: None,
            critical: None,
            ca: None,
            insecure_skip_verify: None,
            expect_body: None,
            follow_redirects: None,
        }
    }

    fn ledger(plans: Vec<RelatorPlan>) -> (Ledger, Arc<DeliveryCounters>) {
        let index = plans
            .iter()
            .enumerate()
            .map(|(i, p)| (p.name.clone(), i))
            .collect();
        let counters = Arc::new(DeliveryCounters::default());
        let states = Arc::new(Mutex::new(StateBook::new(watches(&plans))));
        let ledger = Ledger::new(
            "e1".into(),
            Arc::new(plans),
            Arc::new(index),
            states,
            Arc::clone(&counters),
            true,
        );
        (ledger, counters)
    }

    /// The task of firing `n` (0, 1, ...; one minute apart) on `node`.
    fn firing(node: &str, n: i64) -> Task {
        let scheduled_unix_ms = T0_MS + n * 60_000;
        Task {
            id: format!("web/http/{node}/{scheduled_unix_ms}"),
            scheduled_unix_ms,
            ..task(node)
        }
    }

    /// What was notified, as (kind, state, previous state).
    fn notified(settled: &Settled) -> Vec<(NotificationKind, ServiceState, ServiceState)> {
        settled
            .alerts
            .iter()
            .map(|(_, n)| (n.kind, n.state, n.previous_state))
            .collect()
    }

    fn task(node: &str) -> Task {
        Task {
            id: format!("web/http/{node}/{T0_MS}"),
            relator: "web".into(),
            rule: "http".into(),
            node: node.into(),
            scheduled_unix_ms: T0_MS,
            attempt: 1,
            ..Task::default()
        }
    }

    fn status(task: &Task, state: TaskState) -> TaskStatus {
        TaskStatus {
            task_id: task.id.clone(),
            state: state as i32,
            value: 1.0,
            message: "detail".into(),
            started_unix_ms: T0_MS + 100,
            finished_unix_ms: T0_MS + 200,
            attempt: task.attempt,
            perfdata: Vec::new(),
        }
    }

    fn accept(ledger: &mut Ledger, tasks: &[Task]) -> Settled {
        let deliveries = tasks
            .iter()
            .map(|t| (t.clone(), Delivery::Accepted { duplicate: false }))
            .collect();
        ledger.submitted(deliveries, at(10), at(10))
    }

    #[test]
    fn accepted_tasks_are_waited_for_and_unacknowledged_ones_are_handed_back() {
        let (mut ledger, counters) = ledger(vec![plan(0, &[], vec![])]);
        let (a, b, c) = (task("a"), task("b"), task("c"));
        let settled = ledger.submitted(
            vec![
                (a.clone(), Delivery::Accepted { duplicate: false }),
                (
                    b.clone(),
                    Delivery::Rejected {
                        reason: "no check".into(),
                    },
                ),
                (
                    c.clone(),
                    Delivery::Retry {
                        reason: "stream closed".into(),
                        timed_out_batch: None,
                        oversized: false,
                    },
                ),
            ],
            at(10),
            at(10),
        );
        assert_eq!(ledger.unfinished_count(), 1);
        assert_eq!(settled.resend, vec![c]);
        assert_eq!(settled.completions.len(), 1);
        assert_eq!(settled.completions[0].task_id, b.id);
        assert_eq!(settled.completions[0].state, TaskState::Failed);
        assert_eq!(
            settled.notices,
            vec![Notice::Rejected {
                task_id: b.id.clone(),
                reason: "no check".into()
            }]
        );
        let snapshot = counters.snapshot();
        assert_eq!((snapshot.accepted, snapshot.rejected), (1, 1));
        let (ids, release) = ledger.next_query();
        assert_eq!(ids, vec![Arc::<str>::from(a.id.as_str())]);
        assert!(release.is_empty());
    }

    #[test]
    fn a_broken_task_alerts_chains_and_is_released_once() {
        let mut plans = vec![plan(0, &["page"], vec![1])];
        plans.push(RelatorPlan {
            name: "deeper".into(),
            ..plan(0, &[], vec![])
        });
        let (mut ledger, counters) = ledger(plans);
        let a = task("a");
        accept(&mut ledger, std::slice::from_ref(&a));
        let settled = ledger.statuses(vec![status(&a, TaskState::Broken)], false, at(1000));
        assert_eq!(settled.alerts.len(), 1);
        assert_eq!(settled.alerts[0].0, 0);
        assert_eq!(settled.alerts[0].1.node, "a");
        assert_eq!(settled.chains, vec![(1, "a".to_string())]);
        assert_eq!(settled.completions[0].state, TaskState::Broken);
        assert!(settled.retries.is_empty());
        let (ids, release) = ledger.next_query();
        assert!(ids.is_empty());
        assert_eq!(release, vec![Arc::<str>::from(a.id.as_str())]);
        // The same answer again (a duplicate reply) changes nothing.
        let again = ledger.statuses(vec![status(&a, TaskState::Broken)], false, at(1100));
        assert!(again.alerts.is_empty() && again.completions.is_empty());
        let snapshot = counters.snapshot();
        assert_eq!(
            (
                snapshot.completed,
                snapshot.broken,
                snapshot.alerts,
                snapshot.chained
            ),
            (1, 1, 1, 1)
        );
    }

    #[test]
    fn pending_and_running_tasks_stay_waited_for() {
        let (mut ledger, _) = ledger(vec![plan(0, &[], vec![])]);
        let a = task("a");
        accept(&mut ledger, std::slice::from_ref(&a));
        for state in [TaskState::Pending, TaskState::Running] {
            let settled = ledger.statuses(vec![status(&a, state)], false, at(500));
            assert!(settled.completions.is_empty());
            assert_eq!(ledger.unfinished_count(), 1);
        }
    }

    #[test]
    fn a_failed_task_is_retried_inside_its_window_and_final_past_it() {
        let (mut ledger, counters) = ledger(vec![plan(2, &[], vec![])]);
        let a = task("a");
        accept(&mut ledger, std::slice::from_ref(&a));
        // 1 s after the firing: 5 s retry period still starts inside the 30 s window.
        let settled = ledger.statuses(vec![status(&a, TaskState::Failed)], false, at(1000));
        assert_eq!(settled.retries.len(), 1);
        let (next, delay) = &settled.retries[0];
        assert_eq!((next.id.as_str(), next.attempt), (a.id.as_str(), 2));
        assert_eq!(*delay, Duration::from_secs(5));
        assert!(settled.completions.is_empty(), "not final while retried");
        assert!(ledger.next_query().1.is_empty(), "nothing released yet");

        // The second attempt fails 27 s after the firing: a retry would start at 32 s.
        accept(&mut ledger, std::slice::from_ref(next));
        let settled = ledger.statuses(vec![status(next, TaskState::Failed)], false, at(27_000));
        assert!(settled.retries.is_empty());
        assert_eq!(settled.completions.len(), 1);
        assert_eq!(settled.completions[0].state, TaskState::Failed);
        assert_eq!(
            settled.notices,
            vec![Notice::RetryPastWindow {
                task_id: a.id.clone(),
                attempt: 2
            }]
        );
        let snapshot = counters.snapshot();
        assert_eq!((snapshot.retries, snapshot.retries_past_window), (1, 1));
    }

    #[test]
    fn an_older_attempts_outcome_does_not_finish_the_current_one() {
        let (mut ledger, _) = ledger(vec![plan(2, &[], vec![])]);
        let mut second = task("a");
        second.attempt = 2;
        accept(&mut ledger, std::slice::from_ref(&second));
        let mut old = status(&second, TaskState::Failed);
        old.attempt = 1;
        let settled = ledger.statuses(vec![old], false, at(1000));
        assert!(settled.retries.is_empty() && settled.completions.is_empty());
        assert_eq!(ledger.unfinished_count(), 1);
    }

    #[test]
    fn a_forgotten_task_is_sent_again() {
        let (mut ledger, counters) = ledger(vec![plan(0, &[], vec![])]);
        let a = task("a");
        accept(&mut ledger, std::slice::from_ref(&a));
        let settled = ledger.statuses(vec![status(&a, TaskState::Unknown)], false, at(1000));
        assert_eq!(settled.resend, vec![a.clone()]);
        assert_eq!(ledger.unfinished_count(), 0);
        assert_eq!(counters.snapshot().resubmitted, 1);
    }

    #[test]
    fn a_notice_that_overtakes_its_ack_counts_once_the_ack_arrives() {
        let (mut ledger, counters) = ledger(vec![plan(0, &[], vec![])]);
        let a = task("a");
        let early = ledger.statuses(vec![status(&a, TaskState::Ok)], true, at(50));
        assert!(early.completions.is_empty());
        let settled = accept(&mut ledger, std::slice::from_ref(&a));
        assert_eq!(settled.completions.len(), 1);
        assert_eq!(settled.completions[0].state, TaskState::Ok);
        assert_eq!(ledger.unfinished_count(), 0);
        assert_eq!(counters.snapshot().completed, 1);
    }

    #[test]
    fn lost_in_restart_is_counted_and_retried_under_the_policy() {
        let (mut ledger, counters) = ledger(vec![plan(1, &[], vec![])]);
        let a = task("a");
        accept(&mut ledger, std::slice::from_ref(&a));
        let settled = ledger.statuses(vec![status(&a, TaskState::LostInRestart)], false, at(1000));
        assert_eq!(settled.retries.len(), 1);
        assert!(settled.notices.contains(&Notice::LostInRestart {
            task_id: a.id.clone()
        }));
        assert_eq!(counters.snapshot().lost_in_restart, 1);
    }

    #[test]
    fn a_task_lost_before_it_started_adds_no_start_lateness() {
        let (mut ledger, _counters) = ledger(vec![plan(1, &[], vec![])]);
        let a = task("a");
        accept(&mut ledger, std::slice::from_ref(&a));
        let never_started = TaskStatus {
            started_unix_ms: 0,
            ..status(&a, TaskState::LostInRestart)
        };
        let settled = ledger.statuses(vec![never_started], false, at(1000));
        let stages: Vec<Stage> = settled.lateness.iter().map(|(stage, _)| *stage).collect();
        assert_eq!(stages, [Stage::FinishedToKnown], "{:?}", settled.lateness);
    }

    #[test]
    fn unreadable_results_fail_once_and_are_released() {
        let (mut ledger, counters) = ledger(vec![plan(0, &[], vec![])]);
        let a = task("a");
        accept(&mut ledger, std::slice::from_ref(&a));
        let id: TaskId = Arc::from(a.id.as_str());
        let settled = ledger.unreadable(std::slice::from_ref(&id), "too large", at(1000));
        assert_eq!(settled.completions.len(), 1);
        assert_eq!(ledger.next_query(), (Vec::new(), vec![id.clone()]));
        let again = ledger.unreadable(&[id], "too large", at(2000));
        assert!(again.completions.is_empty());
        assert_eq!(counters.snapshot().failed_unreadable, 1);
    }

    #[test]
    fn tasks_unanswered_alone_are_final_failures() {
        let (mut ledger, counters) = ledger(vec![plan(3, &[], vec![])]);
        let settled = ledger.unanswered(vec![task("a")], "no reply", at(10));
        assert_eq!(settled.completions[0].state, TaskState::Failed);
        assert!(settled.retries.is_empty());
        assert_eq!(counters.snapshot().failed_unanswered, 1);
    }

    #[test]
    fn unobserved_ledgers_build_no_completions() {
        let (mut ledger, counters) = ledger(vec![plan(0, &[], vec![])]);
        ledger.observed = false;
        let a = task("a");
        accept(&mut ledger, std::slice::from_ref(&a));
        let settled = ledger.statuses(vec![status(&a, TaskState::Ok)], false, at(1000));
        assert!(settled.completions.is_empty());
        assert_eq!(counters.snapshot().completed, 1);
    }

    #[test]
    fn a_rule_that_stays_broken_notifies_once_and_its_recovery_once() {
        let (mut ledger, counters) = ledger(vec![plan(0, &["page"], vec![])]);
        let mut seen = Vec::new();
        for (n, state) in [TaskState::Broken; 5]
            .into_iter()
            .chain([TaskState::Ok; 3])
            .enumerate()
        {
            let t = firing("a", n as i64);
            accept(&mut ledger, std::slice::from_ref(&t));
            let settled = ledger.statuses(vec![status(&t, state)], false, at(n as i64 * 60_000));
            seen.extend(notified(&settled));
        }
        assert_eq!(
            seen,
            [(Problem, Critical, Fine), (Recovery, Fine, Critical)]
        );
        let snapshot = counters.snapshot();
        assert_eq!(
            (snapshot.broken, snapshot.alerts, snapshot.recoveries),
            (5, 2, 1)
        );
    }

    #[test]
    fn a_task_that_gets_another_attempt_is_no_state_yet() {
        let (mut ledger, counters) = ledger(vec![plan(1, &["page"], vec![])]);
        let a = task("a");
        accept(&mut ledger, std::slice::from_ref(&a));
        let settled = ledger.statuses(vec![status(&a, TaskState::TimedOut)], false, at(1000));
        assert_eq!(settled.retries.len(), 1);
        assert!(settled.alerts.is_empty(), "retried: not a state");
        // The retry times out too and has no attempt left: unknown, notified once.
        let (next, _) = settled.retries[0].clone();
        accept(&mut ledger, std::slice::from_ref(&next));
        let settled = ledger.statuses(vec![status(&next, TaskState::TimedOut)], false, at(7000));
        assert_eq!(notified(&settled), [(Problem, Unknown, Fine)]);
        assert_eq!(settled.alerts[0].1.output, "detail");
        assert_eq!(counters.snapshot().alerts, 1);
    }

    #[test]
    fn soft_states_are_counted_and_not_notified() {
        let mut web = plan(0, &["page"], vec![]);
        web.alert_policy.max_check_attempts = 2;
        let (mut ledger, counters) = ledger(vec![web]);
        let first = firing("a", 0);
        accept(&mut ledger, std::slice::from_ref(&first));
        let settled = ledger.statuses(vec![status(&first, TaskState::Broken)], false, at(500));
        assert!(settled.alerts.is_empty());
        assert_eq!(counters.snapshot().soft_states, 1);
        let second = firing("a", 1);
        accept(&mut ledger, std::slice::from_ref(&second));
        let settled = ledger.statuses(vec![status(&second, TaskState::Broken)], false, at(60_500));
        assert_eq!(notified(&settled), [(Problem, Critical, Fine)]);
        assert_eq!(settled.alerts[0].1.attempt, 2);
    }

    #[test]
    fn results_answered_together_count_in_the_order_they_were_scheduled() {
        let (mut ledger, _) = ledger(vec![plan(0, &["page"], vec![])]);
        let (older, newer) = (firing("a", 0), firing("a", 1));
        accept(&mut ledger, &[older.clone(), newer.clone()]);
        // The newer firing's OK comes first in the reply; the older CRITICAL still counts
        // before it, so the problem is followed by its recovery.
        let settled = ledger.statuses(
            vec![
                status(&newer, TaskState::Ok),
                status(&older, TaskState::Broken),
            ],
            false,
            at(61_000),
        );
        assert_eq!(
            notified(&settled),
            [(Problem, Critical, Fine), (Recovery, Fine, Critical)]
        );
    }

    #[test]
    fn a_refused_task_is_unknown_and_relators_without_actions_notify_nothing() {
        let mut plans = vec![plan(0, &["page"], vec![])];
        plans.push(RelatorPlan {
            name: "quiet".into(),
            ..plan(0, &[], vec![])
        });
        let (mut ledger, counters) = ledger(plans);
        let quiet = Task {
            relator: "quiet".into(),
            id: "quiet/http/a/1".into(),
            ..task("a")
        };
        let settled = ledger.submitted(
            vec![
                (
                    task("a"),
                    Delivery::Rejected {
                        reason: "program not allowed".into(),
                    },
                ),
                (
                    quiet,
                    Delivery::Rejected {
                        reason: "program not allowed".into(),
                    },
                ),
            ],
            at(10),
            at(10),
        );
        assert_eq!(notified(&settled), [(Problem, Unknown, Fine)]);
        assert_eq!(settled.alerts[0].1.output, "program not allowed");
        assert_eq!(settled.alerts[0].1.finished_unix_ms, 0);
        assert_eq!(counters.snapshot().alerts, 1);
    }

    fn listed(task: &Task, state: TaskState) -> ListedTask {
        let finished = !matches!(state, TaskState::Pending | TaskState::Running);
        ListedTask {
            task_id: task.id.clone(),
            state: state as i32,
            attempt: task.attempt,
            relator: task.relator.clone(),
            rule: task.rule.clone(),
            node: task.node.clone(),
            scheduled_unix_ms: task.scheduled_unix_ms,
            status: finished.then(|| status(task, state)),
        }
    }

    #[test]
    fn a_result_found_at_a_reconcile_counts_alerts_and_is_released_once() {
        let (mut ledger, counters) = ledger(vec![plan(0, &["page"], vec![])]);
        let a = task("a");
        // A restarted supervisor: the ledger knows nothing of `a`, the engine holds its result.
        let settled = ledger.reconciled(vec![listed(&a, TaskState::Broken)], at(5000));
        assert_eq!(settled.alerts.len(), 1);
        assert_eq!(settled.completions.len(), 1);
        assert_eq!(settled.completions[0].state, TaskState::Broken);
        let snapshot = counters.snapshot();
        assert_eq!(
            (snapshot.adopted, snapshot.completed, snapshot.alerts),
            (1, 1, 1)
        );
        // Listed again before the release went out: left alone.
        let again = ledger.reconciled(vec![listed(&a, TaskState::Broken)], at(5100));
        assert!(again.alerts.is_empty() && again.completions.is_empty());
        assert_eq!(counters.snapshot().completed, 1);
        let (ids, release) = ledger.next_query();
        assert!(ids.is_empty());
        assert_eq!(release, vec![Arc::<str>::from(a.id.as_str())]);
    }

    #[test]
    fn an_unfinished_task_found_at_a_reconcile_is_adopted_rebuilt_and_monitored() {
        let mut web = plan(0, &[], vec![]);
        web.rules = vec![crate::supervisor::schedule::plan::PlannedRule {
            config: toml::from_str("name = \"http\"\nkind = \"sim\"").expect("rule parses"),
            ca_pem: String::new(),
        }];
        let (mut ledger, counters) = ledger(vec![web]);
        let a = task("a");
        let settled = ledger.reconciled(vec![listed(&a, TaskState::Running)], at(5000));
        assert!(settled.completions.is_empty());
        assert_eq!(ledger.unfinished_count(), 1);
        assert_eq!(counters.snapshot().adopted, 1);
        let (ids, _) = ledger.next_query();
        assert_eq!(ids, vec![Arc::<str>::from(a.id.as_str())]);
        // Rebuilt from the plan: the check and the supervisor id are back.
        let adopted = ledger.unfinished[a.id.as_str()].to_task(&a.id, &ledger.plans);
        assert!(adopted.check.is_some());
        assert_eq!(adopted.supervisor_id, "sup");
        let settled = ledger.statuses(vec![status(&a, TaskState::Ok)], false, at(6000));
        assert_eq!(settled.completions.len(), 1);
        assert_eq!(counters.snapshot().completed, 1);
    }

    #[test]
    fn a_task_already_waited_for_is_absorbed_as_if_polled_and_not_adopted() {
        let (mut ledger, counters) = ledger(vec![plan(0, &[], vec![])]);
        let a = task("a");
        accept(&mut ledger, std::slice::from_ref(&a));
        let settled = ledger.reconciled(vec![listed(&a, TaskState::Ok)], at(1000));
        assert_eq!(settled.completions.len(), 1);
        let snapshot = counters.snapshot();
        assert_eq!((snapshot.adopted, snapshot.completed), (0, 1));
        assert_eq!(ledger.unfinished_count(), 0);
    }

    #[test]
    fn an_adopted_task_is_not_sent_again_nor_counted_twice_by_a_late_duplicate_ack() {
        let (mut ledger, counters) = ledger(vec![plan(0, &[], vec![])]);
        let (a, b) = (task("a"), task("b"));
        ledger.reconciled(vec![listed(&a, TaskState::Ok)], at(1000));
        assert_eq!(counters.snapshot().completed, 1);
        // A copy of `a` still queued to be sent, beside a task the engine never had.
        let mut outbox = vec![a.clone(), b.clone()];
        assert_eq!(ledger.drop_known(&mut outbox, at(1100)), 1);
        assert_eq!(outbox, vec![b]);
        // A copy sent before the reconcile and acknowledged after it, as a duplicate.
        let settled = ledger.submitted(
            vec![(a.clone(), Delivery::Accepted { duplicate: true })],
            at(1200),
            at(1200),
        );
        assert!(settled.completions.is_empty());
        assert_eq!(ledger.unfinished_count(), 0, "not waited for a second time");
        // A later attempt is a new run, and goes.
        let mut retry = a.clone();
        retry.attempt = 2;
        let mut outbox = vec![retry];
        assert_eq!(ledger.drop_known(&mut outbox, at(1300)), 0);
        // Forgotten once its start window is over and five minutes have passed.
        let mut outbox = vec![a];
        assert_eq!(ledger.drop_known(&mut outbox, at(400_000)), 0);
    }

    #[test]
    fn a_failed_attempt_listed_again_before_its_retry_is_acknowledged_is_retried_once() {
        let (mut ledger, counters) = ledger(vec![plan(2, &[], vec![])]);
        let a = task("a");
        // The engine restarted: attempt 1 is listed lost, and retried.
        let settled = ledger.reconciled(vec![listed(&a, TaskState::LostInRestart)], at(1000));
        assert_eq!(settled.retries.len(), 1);
        let retry = settled.retries[0].0.clone();
        assert_eq!(retry.attempt, 2);
        // A reconnect before the retry went out: the engine still holds attempt 1, lost.
        let again = ledger.reconciled(vec![listed(&a, TaskState::LostInRestart)], at(1500));
        assert!(again.retries.is_empty(), "attempt 2 is scheduled once");
        assert!(again.completions.is_empty());
        let snapshot = counters.snapshot();
        assert_eq!((snapshot.adopted, snapshot.retries), (1, 1));
        // Attempt 2 is acknowledged, runs and is released.
        accept(&mut ledger, std::slice::from_ref(&retry));
        let done = ledger.statuses(vec![status(&retry, TaskState::Ok)], true, at(7000));
        assert_eq!(done.completions.len(), 1);
        assert_eq!(ledger.next_query().1, vec![Arc::<str>::from(a.id.as_str())]);
        // Acknowledged, the retry is no longer pending: attempt 2 listed (after another restart)
        // is adopted as usual.
        let later = ledger.reconciled(vec![listed(&retry, TaskState::Running)], at(8000));
        assert!(later.retries.is_empty());
        assert_eq!(counters.snapshot().adopted, 2);
    }

    #[test]
    fn a_handover_forgets_what_was_waited_for_but_keeps_the_results_to_release() {
        let (mut ledger, counters) = ledger(vec![plan(0, &[], vec![])]);
        let (a, b) = (task("a"), task("b"));
        accept(&mut ledger, &[a.clone(), b.clone()]);
        ledger.statuses(vec![status(&a, TaskState::Ok)], false, at(100));
        assert_eq!(ledger.hand_over(), 1, "b was still waited for");
        assert_eq!(ledger.unfinished_count(), 0);
        let (ids, release) = ledger.next_query();
        assert!(ids.is_empty(), "nothing asked for any more");
        assert_eq!(
            release,
            vec![Arc::<str>::from(a.id.as_str())],
            "a is released"
        );
        // A task refused for an older epoch is the other member's: no result, counted.
        let settled = ledger.submitted(
            vec![(
                b.clone(),
                Delivery::Stale {
                    reason: "epoch".into(),
                },
            )],
            at(200),
            at(200),
        );
        assert!(settled.completions.is_empty() && settled.resend.is_empty());
        assert_eq!(counters.snapshot().stale_epoch, 1);
    }

    #[test]
    fn after_a_takeover_first_attempts_at_or_before_the_marks_are_not_sent() {
        let (mut ledger, _) = ledger(vec![plan(0, &[], vec![])]);
        let marks = HashMap::from([("web".to_string(), T0_MS + 60_000)]);
        ledger.taken_over(&marks);
        let mut retry = firing("a", 0);
        retry.attempt = 2;
        let mut outbox = vec![
            firing("a", 0),
            firing("b", 1),
            firing("c", 2),
            retry.clone(),
        ];
        assert_eq!(ledger.drop_known(&mut outbox, at(0)), 2);
        assert_eq!(
            outbox,
            vec![firing("c", 2), retry],
            "later firings and retries go"
        );
    }

    /// A plan whose templates hold the checks its rule gives each node, as
    /// [`plan_relators`](crate::supervisor::schedule::plan::plan_relators) builds them (nodes
    /// with a slash in their names among them).
    fn real_plan(max_retries: u32, alerts: &[&str]) -> RelatorPlan {
        let rule = crate::supervisor::schedule::plan::PlannedRule {
            config: RuleConfig::sim(
                "http",
                Duration::from_millis(10),
                crate::config::SimOutcome::Ok,
                1.0,
            ),
            ca_pem: String::new(),
        };
        let nodes = ["a", "b/c", "d/1700000000000"];
        let mut templates = Templates::new(nodes.map(Arc::from).to_vec());
        templates.push_rule(nodes.map(|node| {
            crate::supervisor::schedule::plan::check_for(&rule, node)
                .unwrap_or_else(|e| panic!("{e}"))
        }));
        RelatorPlan {
            rules: vec![rule],
            templates,
            ..plan(max_retries, alerts, vec![])
        }
    }

    #[test]
    fn a_planned_task_is_kept_compact_and_rebuilt_as_it_was_sent() {
        let (mut ledger, _) = ledger(vec![real_plan(1, &["page"])]);
        let tasks: Vec<Task> = ledger.plans[0]
            .tasks_at(at(0))
            .into_iter()
            .map(|due| due.task)
            .collect();
        accept(&mut ledger, &tasks);
        for task in &tasks {
            let held = &ledger.unfinished[task.id.as_str()];
            assert!(
                matches!(held.held, Held::Planned { .. }),
                "{} is kept whole",
                task.id
            );
            let names = held.names(&task.id, &ledger.plans);
            assert_eq!(
                (names.relator, names.rule, names.node),
                ("web", "http", task.node.as_str())
            );
            assert_eq!(held.to_task(&task.id, &ledger.plans), *task);
        }
        assert!(
            std::mem::size_of::<Unfinished>() <= 48,
            "{} bytes",
            std::mem::size_of::<Unfinished>()
        );
        // Forgotten by the engine: sent again exactly as it was.
        let settled = ledger.statuses(vec![status(&tasks[0], TaskState::Unknown)], false, at(1000));
        assert_eq!(settled.resend, vec![tasks[0].clone()]);
        // Failed: its next attempt is the same task, one attempt later.
        let settled = ledger.statuses(vec![status(&tasks[1], TaskState::Failed)], false, at(1000));
        let retry = Task {
            attempt: 2,
            ..tasks[1].clone()
        };
        assert_eq!(settled.retries, vec![(retry, Duration::from_secs(5))]);
        // Broken: the alert names its relator, rule and node.
        let settled = ledger.statuses(vec![status(&tasks[2], TaskState::Broken)], false, at(1000));
        let (_, alert) = &settled.alerts[0];
        assert_eq!(
            (
                alert.relator.as_str(),
                alert.rule.as_str(),
                alert.node.as_str()
            ),
            ("web", "http", "d/1700000000000")
        );
        assert_eq!(alert.task_id, tasks[2].id);
        assert_eq!(settled.completions[0].node, "d/1700000000000");
    }

    #[test]
    fn a_task_the_plan_would_not_rebuild_is_kept_whole() {
        let (ledger, _) = ledger(vec![real_plan(0, &[])]);
        let planned = ledger.plans[0].task_of(0, at(0));
        let odd = [
            Task {
                id: format!("{}-copy", planned.id),
                ..planned.clone()
            },
            Task {
                timeout_ms: 1,
                ..planned.clone()
            },
            Task {
                check: None,
                ..planned.clone()
            },
            Task {
                supervisor_id: "another".into(),
                ..planned.clone()
            },
        ];
        for task in odd {
            let held = Unfinished::new(task.clone(), Some(0), None, &ledger.plans);
            assert!(matches!(held.held, Held::Whole(_)), "{task:?}");
            assert_eq!(held.to_task(&task.id, &ledger.plans), task);
        }
        let planned_held = Unfinished::new(planned.clone(), Some(0), None, &ledger.plans);
        assert!(matches!(planned_held.held, Held::Planned { .. }));
        let unplanned = Unfinished::new(planned.clone(), None, None, &ledger.plans);
        assert!(matches!(unplanned.held, Held::Whole(_)));
    }
}
