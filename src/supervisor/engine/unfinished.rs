//! What the ledger keeps of a task it waits to hear the end of ([`Unfinished`]), kept compact:
//! when its relator's plan can rebuild it, only its rule's number, attempt and instant beside
//! the id (the node is read back from the id); the whole task otherwise. [`Names`] borrows what
//! the ledger reports of it, from either form.

use std::time::SystemTime;

use crate::proto::Task;
use crate::supervisor::schedule::plan::{RelatorPlan, wire_priority};

/// A submitted task the supervisor waits to hear the end of, kept compact: an engine holds
/// every task sent since its last monitor loop (some 30,000 at 100 engines and 100,000 tasks a
/// minute, ten times that at 1,000 engines), so a whole [`Task`] here (five strings and a
/// check, some 700 bytes with the table's share) was most of the supervisor's memory. Its id is
/// the ledger's key.
#[derive(Debug)]
pub(super) struct Unfinished {
    pub(super) held: Held,
    /// Index of its relator's plan (none for tasks of relators no longer planned).
    relator: Option<u32>,
    /// When its batch left the supervisor (unknown for a task adopted at a reconciliation).
    pub(super) sent_at: Option<SystemTime>,
}

/// What the ledger keeps of an unfinished task.
#[derive(Debug)]
pub(super) enum Held {
    /// A task its relator's plan rebuilds: rule number `rule` of that relator, an id of the
    /// standard form `relator/rule/node/scheduled instant` (the node is read back from it) and
    /// the plan's timeout, priority and supervisor id. The whole task is rebuilt only when it
    /// must be sent again.
    Planned {
        rule: u16,
        attempt: u32,
        scheduled_unix_ms: i64,
    },
    /// Any other task (of a relator no longer planned, or adopted under an id or with fields
    /// the plan would not give it), whole.
    Whole(Box<Task>),
}

/// The names, instant and attempt of a task, borrowed from a whole task or from its plan and
/// id.
#[derive(Debug, Clone, Copy)]
pub(super) struct Names<'a> {
    pub(super) id: &'a str,
    pub(super) relator: &'a str,
    pub(super) rule: &'a str,
    pub(super) node: &'a str,
    pub(super) scheduled_unix_ms: i64,
    pub(super) attempt: u32,
}

impl<'a> Names<'a> {
    pub(super) fn of(task: &'a Task) -> Self {
        Self {
            id: &task.id,
            relator: &task.relator,
            rule: &task.rule,
            node: &task.node,
            scheduled_unix_ms: task.scheduled_unix_ms,
            attempt: task.attempt,
        }
    }
}

impl Unfinished {
    /// `task` of plan number `relator`, kept compact when the plan can rebuild it.
    pub(super) fn new(
        task: Task,
        relator: Option<usize>,
        sent_at: Option<SystemTime>,
        plans: &[RelatorPlan],
    ) -> Self {
        let relator = relator.and_then(|r| u32::try_from(r).ok());
        let plan = relator.and_then(|r| plans.get(r as usize));
        let held = match plan.and_then(|plan| planned_rule(plan, &task)) {
            Some(rule) => Held::Planned {
                rule,
                attempt: task.attempt,
                scheduled_unix_ms: task.scheduled_unix_ms,
            },
            None => Held::Whole(Box::new(task)),
        };
        Self {
            held,
            relator,
            sent_at,
        }
    }

    pub(super) fn relator(&self) -> Option<usize> {
        self.relator.map(|r| r as usize)
    }

    pub(super) fn attempt(&self) -> u32 {
        match &self.held {
            Held::Planned { attempt, .. } => *attempt,
            Held::Whole(task) => task.attempt,
        }
    }

    pub(super) fn scheduled_unix_ms(&self) -> i64 {
        match &self.held {
            Held::Planned {
                scheduled_unix_ms, ..
            } => *scheduled_unix_ms,
            Held::Whole(task) => task.scheduled_unix_ms,
        }
    }

    /// A later attempt than the one sent is the one waited for now.
    pub(super) fn raise_attempt(&mut self, later: u32) {
        match &mut self.held {
            Held::Planned { attempt, .. } => *attempt = (*attempt).max(later),
            Held::Whole(task) => task.attempt = task.attempt.max(later),
        }
    }

    /// Its names, `id` being its key in the ledger.
    pub(super) fn names<'a>(&'a self, id: &'a str, plans: &'a [RelatorPlan]) -> Names<'a> {
        match &self.held {
            Held::Whole(task) => Names::of(task),
            Held::Planned {
                rule,
                attempt,
                scheduled_unix_ms,
            } => {
                let plan = self.relator().and_then(|r| plans.get(r));
                let relator = plan.map_or("", |plan| plan.name.as_str());
                let rule = plan
                    .and_then(|plan| plan.rules.get(usize::from(*rule)))
                    .map_or("", |rule| rule.config.name.as_str());
                Names {
                    id,
                    relator,
                    rule,
                    node: node_in_id(id, relator, rule, *scheduled_unix_ms).unwrap_or(""),
                    scheduled_unix_ms: *scheduled_unix_ms,
                    attempt: *attempt,
                }
            }
        }
    }

    /// The task as it was sent (its id `id`), to send it again.
    pub(super) fn to_task(&self, id: &str, plans: &[RelatorPlan]) -> Task {
        if let Held::Whole(task) = &self.held {
            return Task::clone(task);
        }
        let names = self.names(id, plans);
        let rebuilt = self.relator().and_then(|r| plans.get(r)).and_then(|plan| {
            plan.rebuilt_task(
                names.rule,
                names.node,
                names.scheduled_unix_ms,
                names.attempt,
            )
        });
        let mut task = rebuilt.unwrap_or_else(|| Task {
            relator: names.relator.to_string(),
            rule: names.rule.to_string(),
            node: names.node.to_string(),
            scheduled_unix_ms: names.scheduled_unix_ms,
            attempt: names.attempt,
            ..Task::default()
        });
        id.clone_into(&mut task.id);
        task
    }
}

/// The number of `task`'s rule in `plan` when the plan rebuilds `task` exactly
/// ([`RelatorPlan::rebuilt_task`]): a standard id, the plan's timeout, priority and supervisor
/// id, a check, an attempt. A cluster's epoch is not kept: it is stamped again at each send.
fn planned_rule(plan: &RelatorPlan, task: &Task) -> Option<u16> {
    let index = plan
        .rules
        .iter()
        .position(|rule| rule.config.name == task.rule)?;
    let rule = &plan.rules[index].config;
    let timeout_ms: u64 = rule.timeout.as_millis().try_into().unwrap_or(u64::MAX);
    let rebuilt = task.relator == plan.name
        && task.attempt >= 1
        && task.check.is_some()
        && task.timeout_ms == timeout_ms
        && task.priority == wire_priority(plan.priority) as i32
        && task.supervisor_id == plan.supervisor_id
        && node_in_id(&task.id, &task.relator, &task.rule, task.scheduled_unix_ms)
            == Some(task.node.as_str());
    if rebuilt {
        u16::try_from(index).ok()
    } else {
        None
    }
}

/// The node named by a standard task id `relator/rule/node/scheduled_unix_ms` (see
/// [`task_id`](crate::supervisor::schedule::plan::task_id)) whose relator, rule and instant
/// are known; `None` when `id` is not of that form.
fn node_in_id<'a>(
    id: &'a str,
    relator: &str,
    rule: &str,
    scheduled_unix_ms: i64,
) -> Option<&'a str> {
    let rest = id
        .strip_prefix(relator)?
        .strip_prefix('/')?
        .strip_prefix(rule)?
        .strip_prefix('/')?;
    let (node, instant) = rest.rsplit_once('/')?;
    // The instant exactly as `i64`'s Display writes it: no sign, no leading zero.
    let canonical =
        instant == "0" || !(instant.starts_with(['+', '0']) || instant.starts_with("-0"));
    (canonical && instant.parse::<i64>().ok()? == scheduled_unix_ms).then_some(node)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_node_is_read_back_from_a_standard_id_only() {
        assert_eq!(node_in_id("web/http/a/17", "web", "http", 17), Some("a"));
        assert_eq!(
            node_in_id("web/http/a/b/17", "web", "http", 17),
            Some("a/b")
        );
        assert_eq!(node_in_id("web/http//17", "web", "http", 17), Some(""));
        assert_eq!(node_in_id("web/http/a/-17", "web", "http", -17), Some("a"));
        assert_eq!(node_in_id("web/http/a/0", "web", "http", 0), Some("a"));
        assert_eq!(node_in_id("web/http/a/017", "web", "http", 17), None);
        assert_eq!(node_in_id("web/http/a/+17", "web", "http", 17), None);
        assert_eq!(node_in_id("web/http/a/18", "web", "http", 17), None);
        assert_eq!(node_in_id("web/https/a/17", "web", "http", 17), None);
        assert_eq!(node_in_id("webs/http/a/17", "web", "http", 17), None);
        assert_eq!(node_in_id("web/http/17", "web", "http", 17), None);
    }
}
