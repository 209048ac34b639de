//! What a reconciliation brings and what is remembered because of it: the tasks the engine
//! holds for this supervisor are absorbed or adopted ([`Ledger::reconciled`]); adopted ids and
//! retries not yet acknowledged are remembered for a while, so that a queued copy of a task is
//! not sent ([`Ledger::drop_known`]) and a failed attempt listed again is not retried twice.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::SystemTime;

use crate::proto::{ListedTask, Task};
use crate::supervisor::counters::Bump;
use crate::wire::status::TaskId;

use super::{
    ADOPTED_MIN_KEEP, Adopted, Ledger, Settled, UNPLANNED_WINDOW, Unfinished, unix_ms_time,
};

impl Ledger {
    /// Absorb the tasks the engine holds for this supervisor (one page of a reconciliation).
    /// A finished task the ledger waits for is absorbed as if polled; one it does not wait for
    /// (sent before a restart, or acknowledged on a connection that broke) is adopted: waited
    /// for from now on, and absorbed at once when finished (alerts, chains, retries, release).
    /// Results already recorded and waiting to be released are left alone.
    pub(crate) fn reconciled(&mut self, listed: Vec<ListedTask>, now: SystemTime) -> Settled {
        let mut settled = Settled::default();
        self.forget_old_adoptions(now);
        let releasing: HashSet<TaskId> = self.release.iter().cloned().collect();
        let mut finished = Vec::new();
        let mut adopted = Vec::new();
        for entry in listed {
            if releasing.contains(entry.task_id.as_str()) {
                continue;
            }
            if self.retry_pending(&entry.task_id, entry.attempt) {
                // The failed attempt a scheduled retry replaces: already absorbed.
                continue;
            }
            match self.unfinished.get_mut(entry.task_id.as_str()) {
                Some(held) => {
                    // A later attempt than the one sent (a retry the previous run made).
                    held.raise_attempt(entry.attempt);
                }
                None => adopted.push(self.adopt(&entry, now)),
            }
            finished.extend(entry.status);
        }
        for (id, unfinished) in adopted {
            self.unfinished.insert(id, unfinished);
        }
        if !finished.is_empty() {
            settled.absorb(self.statuses(finished, false, now));
        }
        settled
    }

    /// A listed task the ledger was not waiting for, as a waited-for task; remembered as
    /// adopted.
    pub(super) fn adopt(&mut self, entry: &ListedTask, now: SystemTime) -> (TaskId, Unfinished) {
        self.counters.adopted.bump(1);
        let relator = self.plan_index.get(&entry.relator).copied();
        let plan = relator.and_then(|r| self.plans.get(r));
        let mut task = plan
            .and_then(|plan| {
                plan.rebuilt_task(
                    &entry.rule,
                    &entry.node,
                    entry.scheduled_unix_ms,
                    entry.attempt,
                )
            })
            .unwrap_or_else(|| Task {
                relator: entry.relator.clone(),
                rule: entry.rule.clone(),
                node: entry.node.clone(),
                scheduled_unix_ms: entry.scheduled_unix_ms,
                attempt: entry.attempt.max(1),
                ..Task::default()
            });
        // The engine's id is the one to ask and release by.
        task.id.clone_from(&entry.task_id);
        let window = plan.map_or(UNPLANNED_WINDOW, |plan| plan.start_window);
        let until = (unix_ms_time(entry.scheduled_unix_ms) + window).max(now + ADOPTED_MIN_KEEP);
        let id: TaskId = Arc::from(entry.task_id.as_str());
        self.adopted.insert(
            Arc::clone(&id),
            Adopted {
                attempt: task.attempt,
                until,
            },
        );
        (id, Unfinished::new(task, relator, None, &self.plans))
    }

    /// Whether `task` (this attempt or an earlier one) was adopted at a reconciliation.
    pub(super) fn already_adopted(&self, task: &Task) -> bool {
        self.adopted
            .get(task.id.as_str())
            .is_some_and(|adopted| task.attempt <= adopted.attempt)
    }

    /// Takes out of `tasks` (about to be sent) those the ledger already has: adopted at a
    /// reconciliation, or waited for with this attempt or a later one. Sending them again could
    /// only make them count twice, or run twice once their result is released.
    pub(crate) fn drop_known(&mut self, tasks: &mut Vec<Task>, now: SystemTime) -> usize {
        self.forget_old_adoptions(now);
        if self.adopted.is_empty() && self.unfinished.is_empty() && self.taken_marks.is_empty() {
            return 0;
        }
        let before = tasks.len();
        tasks.retain(|task| {
            let waited = self
                .unfinished
                .get(task.id.as_str())
                .is_some_and(|held| task.attempt <= held.attempt());
            let sent_before_takeover = task.attempt <= 1
                && self
                    .taken_marks
                    .get(&task.relator)
                    .is_some_and(|&mark| task.scheduled_unix_ms <= mark);
            !waited && !sent_before_takeover && !self.already_adopted(task)
        });
        before - tasks.len()
    }

    pub(super) fn forget_old_adoptions(&mut self, now: SystemTime) {
        if !self.adopted.is_empty() {
            self.adopted.retain(|_, adopted| adopted.until > now);
        }
        if !self.retrying.is_empty() {
            self.retrying.retain(|_, retry| retry.until > now);
        }
    }

    /// Whether a retry of `task_id` later than `attempt` is scheduled and not acknowledged yet.
    pub(super) fn retry_pending(&self, task_id: &str, attempt: u32) -> bool {
        self.retrying
            .get(task_id)
            .is_some_and(|retry| attempt < retry.attempt)
    }

    /// `attempt` of `id` was acknowledged: a retry up to it is no longer pending.
    pub(super) fn retry_acknowledged(&mut self, id: &str, attempt: u32) {
        if self
            .retrying
            .get(id)
            .is_some_and(|retry| attempt >= retry.attempt)
        {
            self.retrying.remove(id);
        }
    }
}
