//! The state of every (relator, rule, node) the supervisor notifies about, and what one final
//! result makes it say: soft and hard states as in Nagios and Icinga, a **problem** when the
//! hard state changes to a bad one, a **recovery** when a notified problem returns to OK, a
//! **reminder** every `renotify_interval` while it stays as it was. Pure: each result comes with
//! its own instants, and nothing here reads a clock, locks or touches a channel.
//!
//! The rules, per key:
//!
//! - A key starts OK; a first OK result says nothing, a first bad one counts as a change.
//! - From a hard OK, a bad result is soft until `max_check_attempts` bad results in a row have
//!   been seen (whatever bad states they were); the last one makes the hard state and the
//!   problem. An OK result before that ends the soft state silently.
//! - From a hard bad state, a different bad state is a hard change at once (a new problem), and
//!   OK is a hard recovery at once.
//! - A problem is notified only for the states in `alert_on`; a recovery only when
//!   `notify_recovery` is set and a problem was notified since the last hard OK; a reminder only
//!   for a notified state, with the first result at least `renotify_interval` after the last
//!   notification.
//! - A result scheduled no later than the last one counted for its key (an older firing that
//!   finished late) is ignored, so states never go back in time.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use serde::Serialize;

use crate::config::AlertOn;
use crate::proto::TaskState;

/// A service state, as monitoring tools name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum ServiceState {
    /// The rule holds.
    Ok,
    /// The rule holds only just (a plugin's WARNING).
    Warning,
    /// The rule is broken (a plugin's CRITICAL).
    Critical,
    /// Nobody can tell: a plugin's UNKNOWN, or the check failed, timed out or was lost in a
    /// restart after its retries.
    Unknown,
}

impl ServiceState {
    /// The service state of a task's final state; `None` for a state that is not final.
    pub(crate) fn of(state: TaskState) -> Option<Self> {
        match state {
            TaskState::Ok => Some(Self::Ok),
            TaskState::Warning => Some(Self::Warning),
            TaskState::Broken => Some(Self::Critical),
            TaskState::PluginUnknown
            | TaskState::Failed
            | TaskState::TimedOut
            | TaskState::LostInRestart => Some(Self::Unknown),
            TaskState::Unspecified
            | TaskState::Pending
            | TaskState::Running
            | TaskState::Unknown => None,
        }
    }

    /// Its name in notifications: `ok`, `warning`, `critical`, `unknown`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Warning => "warning",
            Self::Critical => "critical",
            Self::Unknown => "unknown",
        }
    }

    fn is_bad(self) -> bool {
        self != Self::Ok
    }

    fn alert_on(self) -> Option<AlertOn> {
        match self {
            Self::Ok => None,
            Self::Warning => Some(AlertOn::Warning),
            Self::Critical => Some(AlertOn::Critical),
            Self::Unknown => Some(AlertOn::Unknown),
        }
    }
}

/// Why a notification is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum NotificationKind {
    /// The hard state changed to a bad one.
    Problem,
    /// A notified problem returned to OK.
    Recovery,
    /// A notified problem is still there after `renotify_interval`.
    Reminder,
}

impl NotificationKind {
    /// Its name in notifications: `problem`, `recovery`, `reminder`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Problem => "problem",
            Self::Recovery => "recovery",
            Self::Reminder => "reminder",
        }
    }
}

/// When one relator notifies (its `alert_on`, `notify_recovery`, `renotify_interval` and
/// `max_check_attempts`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AlertPolicy {
    /// Bad states whose hard change is a problem to notify.
    pub(crate) alert_on: Vec<AlertOn>,
    /// Notify a notified problem's return to OK.
    pub(crate) notify_recovery: bool,
    /// Remind this long after the last notification while the state stays; `None`: never.
    pub(crate) renotify_interval: Option<Duration>,
    /// Bad results in a row before a new bad state is hard (at least 1).
    pub(crate) max_check_attempts: u32,
}

impl Default for AlertPolicy {
    fn default() -> Self {
        Self {
            alert_on: AlertOn::ALL.to_vec(),
            notify_recovery: true,
            renotify_interval: None,
            max_check_attempts: 1,
        }
    }
}

impl AlertPolicy {
    fn notifies(&self, state: ServiceState) -> bool {
        state
            .alert_on()
            .is_some_and(|wanted| self.alert_on.contains(&wanted))
    }

    fn hard_after(&self) -> u32 {
        self.max_check_attempts.max(1)
    }
}

/// One final result of a (relator, rule, node).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Observation {
    /// Its state.
    pub(crate) state: ServiceState,
    /// When its task was scheduled, ms since the Unix epoch: results are taken in this order.
    pub(crate) scheduled_unix_ms: i64,
    /// When it was seen (the check's end), ms since the Unix epoch: states begin and reminders
    /// fall due on this clock.
    pub(crate) at_unix_ms: i64,
}

/// What to notify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Notify {
    /// Problem, recovery or reminder.
    pub(crate) kind: NotificationKind,
    /// The hard state now.
    pub(crate) state: ServiceState,
    /// The hard state before it.
    pub(crate) previous_state: ServiceState,
    /// Bad results in a row that made the state hard (the policy's `max_check_attempts` for a
    /// change between bad states and for reminders; 1 for a recovery).
    pub(crate) attempt: u32,
    /// When results began to show the current state, ms since the Unix epoch.
    pub(crate) since_unix_ms: i64,
}

/// What one result did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Notify the relator's actions.
    Notify(Notify),
    /// A bad result not yet hard: this is bad result `attempt` in a row.
    Soft {
        /// Bad results in a row so far.
        attempt: u32,
    },
    /// Counted, nothing to notify.
    Quiet,
    /// Not counted: older than a result already counted, or a (relator, rule, node) that is
    /// not watched.
    Ignored,
}

/// One relator to watch: its policy, and the rules and nodes its tasks can have (its group's
/// nodes, and those of every relator that chains to it). No rules: not watched.
#[derive(Debug, Clone, Default)]
pub(crate) struct Watch<'a> {
    /// When it notifies.
    pub(crate) policy: AlertPolicy,
    /// Its rules.
    pub(crate) rules: Vec<&'a str>,
    /// The nodes it can run on.
    pub(crate) nodes: Vec<&'a str>,
}

/// A watched relator, with its names interned.
#[derive(Debug)]
struct Watched {
    policy: AlertPolicy,
    rules: HashMap<Box<str>, u32>,
    nodes: HashSet<u32>,
}

/// A (relator, rule, node) by interned numbers: the relator's position, the rule's position in
/// it, the node's number in the book.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    relator: u32,
    rule: u32,
    node: u32,
}

/// The state of one key.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    /// The latest `scheduled_unix_ms` counted.
    last_scheduled_unix_ms: i64,
    /// The hard state, and the one before it.
    hard: ServiceState,
    previous_hard: ServiceState,
    /// The last result's state, and when results began to show it.
    current: ServiceState,
    current_since_unix_ms: i64,
    /// Bad results in a row while the hard state is OK.
    soft_attempts: u32,
    /// When the current hard state was last notified (problem or reminder); `None` when it was
    /// not, and so is not reminded of.
    notified_at_unix_ms: Option<i64>,
    /// A problem was notified since the last hard OK: its recovery is owed.
    recovery_owed: bool,
}

/// The states of every watched (relator, rule, node). It only ever holds keys its watches
/// allow, so its size is bounded by [`StateBook::capacity`]: rules × nodes of every watched
/// relator.
#[derive(Debug, Default)]
pub(crate) struct StateBook {
    nodes: HashMap<Box<str>, u32>,
    relators: Vec<Option<Watched>>,
    entries: HashMap<Key, Entry>,
}

impl StateBook {
    /// A book for `watches`, one per relator in plan order.
    pub(crate) fn new<'a>(watches: impl IntoIterator<Item = Watch<'a>>) -> Self {
        let mut nodes: HashMap<Box<str>, u32> = HashMap::new();
        let relators = watches
            .into_iter()
            .map(|watch| {
                if watch.rules.is_empty() || watch.nodes.is_empty() {
                    return None;
                }
                let rules = watch
                    .rules
                    .iter()
                    .zip(0u32..)
                    .map(|(rule, i)| (Box::from(*rule), i))
                    .collect();
                let watched_nodes = watch
                    .nodes
                    .iter()
                    .map(|node| {
                        let next = u32::try_from(nodes.len()).unwrap_or(u32::MAX);
                        *nodes.entry(Box::from(*node)).or_insert(next)
                    })
                    .collect();
                Some(Watched {
                    policy: watch.policy,
                    rules,
                    nodes: watched_nodes,
                })
            })
            .collect();
        Self {
            nodes,
            relators,
            entries: HashMap::new(),
        }
    }

    /// Keys with a state.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// The most keys the book can hold: rules × nodes of every watched relator.
    pub(crate) fn capacity(&self) -> usize {
        self.relators
            .iter()
            .flatten()
            .map(|w| w.rules.len() * w.nodes.len())
            .sum()
    }

    /// Count one final result of `rule` on `node` for the relator at position `relator`, and
    /// say what to notify.
    pub(crate) fn observe(
        &mut self,
        relator: usize,
        rule: &str,
        node: &str,
        result: Observation,
    ) -> Verdict {
        let Some(Some(watched)) = self.relators.get(relator) else {
            return Verdict::Ignored;
        };
        let (Some(&rule), Some(&node)) = (watched.rules.get(rule), self.nodes.get(node)) else {
            return Verdict::Ignored;
        };
        if !watched.nodes.contains(&node) {
            return Verdict::Ignored;
        }
        let key = Key {
            relator: u32::try_from(relator).unwrap_or(u32::MAX),
            rule,
            node,
        };
        let entry = self.entries.entry(key).or_insert(Entry {
            last_scheduled_unix_ms: i64::MIN,
            hard: ServiceState::Ok,
            previous_hard: ServiceState::Ok,
            current: ServiceState::Ok,
            current_since_unix_ms: result.at_unix_ms,
            soft_attempts: 0,
            notified_at_unix_ms: None,
            recovery_owed: false,
        });
        entry.absorb(&watched.policy, result)
    }
}

impl Entry {
    fn absorb(&mut self, policy: &AlertPolicy, result: Observation) -> Verdict {
        if result.scheduled_unix_ms <= self.last_scheduled_unix_ms {
            return Verdict::Ignored;
        }
        self.last_scheduled_unix_ms = result.scheduled_unix_ms;
        let (state, at) = (result.state, result.at_unix_ms);
        if state != self.current {
            self.current = state;
            self.current_since_unix_ms = at;
        }
        match (self.hard.is_bad(), state.is_bad()) {
            (false, false) => {
                // Back to OK from a soft state, or still OK: nothing to say either way.
                self.soft_attempts = 0;
                Verdict::Quiet
            }
            (false, true) => {
                self.soft_attempts = self.soft_attempts.saturating_add(1);
                if self.soft_attempts < policy.hard_after() {
                    return Verdict::Soft {
                        attempt: self.soft_attempts,
                    };
                }
                let attempt = std::mem::take(&mut self.soft_attempts);
                self.hard_change(policy, state, attempt, at)
            }
            (true, false) => {
                self.previous_hard = self.hard;
                self.hard = ServiceState::Ok;
                self.notified_at_unix_ms = None;
                if std::mem::take(&mut self.recovery_owed) && policy.notify_recovery {
                    Verdict::Notify(Notify {
                        kind: NotificationKind::Recovery,
                        state,
                        previous_state: self.previous_hard,
                        attempt: 1,
                        since_unix_ms: self.current_since_unix_ms,
                    })
                } else {
                    Verdict::Quiet
                }
            }
            (true, true) if state != self.hard => {
                self.hard_change(policy, state, policy.hard_after(), at)
            }
            (true, true) => match (policy.renotify_interval, self.notified_at_unix_ms) {
                (Some(every), Some(last)) if at.saturating_sub(last) >= millis(every) => {
                    self.notified_at_unix_ms = Some(at);
                    Verdict::Notify(Notify {
                        kind: NotificationKind::Reminder,
                        state,
                        previous_state: self.previous_hard,
                        attempt: policy.hard_after(),
                        since_unix_ms: self.current_since_unix_ms,
                    })
                }
                _ => Verdict::Quiet,
            },
        }
    }

    /// The hard state becomes the bad `state`: a problem if the policy notifies it.
    fn hard_change(
        &mut self,
        policy: &AlertPolicy,
        state: ServiceState,
        attempt: u32,
        at: i64,
    ) -> Verdict {
        self.previous_hard = self.hard;
        self.hard = state;
        if !policy.notifies(state) {
            self.notified_at_unix_ms = None;
            return Verdict::Quiet;
        }
        self.notified_at_unix_ms = Some(at);
        self.recovery_owed = true;
        Verdict::Notify(Notify {
            kind: NotificationKind::Problem,
            state,
            previous_state: self.previous_hard,
            attempt,
            since_unix_ms: self.current_since_unix_ms,
        })
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use NotificationKind::{Problem, Recovery, Reminder};
    use ServiceState::{Critical, Ok, Unknown, Warning};

    /// Results one firing apart: the n-th is scheduled at n × 10 s and seen 1 s later.
    const FIRING_MS: i64 = 10_000;

    struct Run {
        book: StateBook,
        firing: i64,
    }

    impl Run {
        fn new(policy: AlertPolicy) -> Self {
            Self {
                book: StateBook::new([Watch {
                    policy,
                    rules: vec!["disk"],
                    nodes: vec!["n1", "n2"],
                }]),
                firing: 0,
            }
        }

        /// The next firing's result on `n1`.
        fn next(&mut self, state: ServiceState) -> Verdict {
            self.firing += 1;
            let scheduled = self.firing * FIRING_MS;
            self.book.observe(
                0,
                "disk",
                "n1",
                Observation {
                    state,
                    scheduled_unix_ms: scheduled,
                    at_unix_ms: scheduled + 1_000,
                },
            )
        }

        /// The kinds and states notified for `states`, one firing each.
        fn notified(&mut self, states: &[ServiceState]) -> Vec<(NotificationKind, ServiceState)> {
            states
                .iter()
                .filter_map(|&s| match self.next(s) {
                    Verdict::Notify(n) => Some((n.kind, n.state)),
                    _ => None,
                })
                .collect()
        }
    }

    fn attempts(n: u32) -> AlertPolicy {
        AlertPolicy {
            max_check_attempts: n,
            ..AlertPolicy::default()
        }
    }

    fn seen(firing: i64) -> i64 {
        firing * FIRING_MS + 1_000
    }

    #[test]
    fn a_state_that_stays_ok_notifies_nothing() {
        let mut run = Run::new(AlertPolicy::default());
        assert_eq!(run.notified(&[Ok; 6]), []);
    }

    #[test]
    fn a_first_bad_result_is_a_problem_from_ok() {
        let mut run = Run::new(AlertPolicy::default());
        assert_eq!(
            run.next(Critical),
            Verdict::Notify(Notify {
                kind: Problem,
                state: Critical,
                previous_state: Ok,
                attempt: 1,
                since_unix_ms: seen(1),
            })
        );
    }

    #[test]
    fn a_state_that_stays_critical_notifies_once() {
        let mut run = Run::new(AlertPolicy::default());
        assert_eq!(run.notified(&[Critical; 5]), [(Problem, Critical)]);
    }

    #[test]
    fn a_new_bad_state_is_soft_until_max_check_attempts_in_a_row() {
        let mut run = Run::new(attempts(3));
        assert_eq!(run.next(Warning), Verdict::Soft { attempt: 1 });
        assert_eq!(run.next(Critical), Verdict::Soft { attempt: 2 });
        // The third bad result in a row is hard: its state is the one notified, since the first
        // result that showed it.
        assert_eq!(
            run.next(Critical),
            Verdict::Notify(Notify {
                kind: Problem,
                state: Critical,
                previous_state: Ok,
                attempt: 3,
                since_unix_ms: seen(2),
            })
        );
        assert_eq!(run.next(Critical), Verdict::Quiet);
    }

    #[test]
    fn ok_before_max_check_attempts_ends_the_soft_state_silently_and_restarts_the_count() {
        let mut run = Run::new(attempts(2));
        assert_eq!(run.notified(&[Critical, Ok, Critical, Ok, Ok]), []);
        assert_eq!(run.next(Critical), Verdict::Soft { attempt: 1 });
        assert_eq!(run.notified(&[Critical]), [(Problem, Critical)]);
    }

    #[test]
    fn a_change_between_bad_states_is_a_new_problem_at_once() {
        let mut run = Run::new(attempts(3));
        assert_eq!(
            run.notified(&[Warning, Warning, Warning, Warning]),
            [(Problem, Warning)]
        );
        match run.next(Critical) {
            Verdict::Notify(n) => {
                assert_eq!(
                    (n.kind, n.state, n.previous_state),
                    (Problem, Critical, Warning)
                );
                assert_eq!((n.attempt, n.since_unix_ms), (3, seen(5)));
            }
            other => panic!("expected a problem, got {other:?}"),
        }
        assert_eq!(run.notified(&[Unknown]), [(Problem, Unknown)]);
    }

    #[test]
    fn a_notified_problem_recovers_once() {
        let mut run = Run::new(AlertPolicy::default());
        run.next(Critical);
        match run.next(Ok) {
            Verdict::Notify(n) => {
                assert_eq!(
                    (n.kind, n.state, n.previous_state),
                    (Recovery, Ok, Critical)
                );
                assert_eq!(n.since_unix_ms, seen(2));
            }
            other => panic!("expected a recovery, got {other:?}"),
        }
        assert_eq!(run.notified(&[Ok, Ok]), []);
    }

    #[test]
    fn recoveries_follow_notify_recovery() {
        let mut run = Run::new(AlertPolicy {
            notify_recovery: false,
            ..AlertPolicy::default()
        });
        assert_eq!(
            run.notified(&[Critical, Ok, Critical]),
            [(Problem, Critical), (Problem, Critical)]
        );
    }

    #[test]
    fn alert_on_critical_ignores_warning_and_owes_no_recovery_for_it() {
        let mut run = Run::new(AlertPolicy {
            alert_on: vec![AlertOn::Critical],
            ..AlertPolicy::default()
        });
        assert_eq!(run.notified(&[Warning, Warning, Ok]), []);
        // A notified critical that eases to warning says nothing, and its recovery is owed.
        assert_eq!(
            run.notified(&[Critical, Warning, Ok]),
            [(Problem, Critical), (Recovery, Ok)]
        );
    }

    #[test]
    fn reminders_come_every_renotify_interval_while_bad_and_stop_at_recovery() {
        // Results every 10 s, reminders every 25 s: the first result at least 25 s after the
        // last notification reminds.
        let mut run = Run::new(AlertPolicy {
            renotify_interval: Some(Duration::from_secs(25)),
            ..AlertPolicy::default()
        });
        let mut kinds = Vec::new();
        for (firing, state) in [Critical; 8]
            .into_iter()
            .chain([Ok, Ok, Ok, Ok])
            .enumerate()
        {
            if let Verdict::Notify(n) = run.next(state) {
                kinds.push((firing + 1, n.kind));
            }
        }
        assert_eq!(
            kinds,
            [(1, Problem), (4, Reminder), (7, Reminder), (9, Recovery)]
        );
    }

    #[test]
    fn a_reminder_says_since_when_and_from_what() {
        let mut run = Run::new(AlertPolicy {
            renotify_interval: Some(Duration::from_secs(10)),
            ..AlertPolicy::default()
        });
        run.next(Warning);
        run.next(Critical);
        assert_eq!(
            run.next(Critical),
            Verdict::Notify(Notify {
                kind: Reminder,
                state: Critical,
                previous_state: Warning,
                attempt: 1,
                since_unix_ms: seen(2),
            })
        );
    }

    #[test]
    fn no_reminders_without_renotify_interval_or_for_a_state_not_notified() {
        let mut run = Run::new(AlertPolicy::default());
        assert_eq!(run.notified(&[Critical; 20]), [(Problem, Critical)]);
        let mut run = Run::new(AlertPolicy {
            alert_on: vec![AlertOn::Critical],
            renotify_interval: Some(Duration::from_secs(1)),
            ..AlertPolicy::default()
        });
        assert_eq!(run.notified(&[Warning; 5]), []);
    }

    #[test]
    fn an_older_result_than_one_counted_is_ignored() {
        let mut book = StateBook::new([Watch {
            policy: AlertPolicy::default(),
            rules: vec!["disk"],
            nodes: vec!["n1"],
        }]);
        let at = |scheduled: i64, state| Observation {
            state,
            scheduled_unix_ms: scheduled,
            at_unix_ms: scheduled + 5,
        };
        assert!(matches!(
            book.observe(0, "disk", "n1", at(200, Critical)),
            Verdict::Notify(_)
        ));
        assert_eq!(book.observe(0, "disk", "n1", at(100, Ok)), Verdict::Ignored);
        assert_eq!(book.observe(0, "disk", "n1", at(200, Ok)), Verdict::Ignored);
        assert!(matches!(
            book.observe(0, "disk", "n1", at(300, Ok)),
            Verdict::Notify(Notify { kind: Recovery, .. })
        ));
    }

    #[test]
    fn keys_are_separate_and_only_watched_ones_are_kept() {
        let mut book = StateBook::new([
            Watch {
                policy: AlertPolicy::default(),
                rules: vec!["disk", "load"],
                nodes: vec!["n1", "n2"],
            },
            // Not watched (a relator without alert actions).
            Watch::default(),
            Watch {
                policy: AlertPolicy::default(),
                rules: vec!["disk"],
                nodes: vec!["n2", "n3"],
            },
        ]);
        assert_eq!(book.capacity(), 6);
        let critical = |scheduled| Observation {
            state: Critical,
            scheduled_unix_ms: scheduled,
            at_unix_ms: scheduled,
        };
        let mut problems = 0;
        for scheduled in 1..=3 {
            for (relator, rule, node) in [
                (0, "disk", "n1"),
                (0, "load", "n1"),
                (0, "disk", "n2"),
                (0, "load", "n2"),
                (2, "disk", "n3"),
                (2, "disk", "n2"),
                // Not watched: a rule, node or relator the watches do not have.
                (0, "disk", "n3"),
                (0, "other", "n1"),
                (1, "disk", "n1"),
                (2, "load", "n2"),
                (7, "disk", "n1"),
            ] {
                if let Verdict::Notify(_) = book.observe(relator, rule, node, critical(scheduled)) {
                    problems += 1;
                }
            }
        }
        assert_eq!(problems, 6, "one problem per watched key");
        assert_eq!(book.len(), 6);
        assert!(book.len() <= book.capacity());
    }

    #[test]
    fn final_task_states_map_to_service_states() {
        assert_eq!(ServiceState::of(TaskState::Broken), Some(Critical));
        assert_eq!(ServiceState::of(TaskState::Warning), Some(Warning));
        for state in [
            TaskState::PluginUnknown,
            TaskState::Failed,
            TaskState::TimedOut,
            TaskState::LostInRestart,
        ] {
            assert_eq!(ServiceState::of(state), Some(Unknown));
        }
        for state in [TaskState::Pending, TaskState::Running, TaskState::Unknown] {
            assert_eq!(ServiceState::of(state), None);
        }
    }
}
