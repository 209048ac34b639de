//! Firing instants anchored to the wall clock, not to the process: a relator with interval `I`
//! fires at every multiple of `I` since the Unix epoch, and each of its tasks starts at the
//! firing plus its stable splay offset. A restart (or another process with the same relators)
//! therefore continues the same timeline and builds the same task ids, which engines recognise.
//!
//! At start, the firing in progress waits for the relator's engine to say where this
//! supervisor's timeline stood: its mark, the latest scheduled instant the engine was sent for
//! the relator ([`decide_start`]). Tasks at or before the mark were the previous run's; later
//! ones already due, and whole firings since, were missed while the supervisor was down and
//! follow `catch_up`; those still ahead are scheduled. A relator the engine has no mark for is
//! new (a supervisor started for the first time, or a relator just added): nothing was missed,
//! it fires at once, as it always did at a first start, and the anchored timeline resumes at
//! the first boundary at least half an interval later. Pure arithmetic, no clock read.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::plan::{RelatorPlan, unix_ms};
use crate::config::CatchUp;
use crate::proto::Task;

/// `interval` in whole milliseconds, at least 1.
pub(crate) fn interval_ms(interval: Duration) -> i64 {
    i64::try_from(interval.as_millis())
        .unwrap_or(i64::MAX)
        .max(1)
}

/// The number of the firing at or before `unix_ms`: whole intervals since the Unix epoch.
pub(crate) fn firing_index(unix_ms: i64, interval: Duration) -> i64 {
    unix_ms.div_euclid(interval_ms(interval))
}

/// The wall-clock instant of firing number `index` (the epoch for anything before it).
pub(crate) fn firing_instant(index: i64, interval: Duration) -> SystemTime {
    let ms = index.saturating_mul(interval_ms(interval));
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// Tasks of one firing to run.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Firing {
    /// These tasks (part of a firing).
    Tasks(Vec<Task>),
    /// Every task of the firing at this instant.
    Whole(SystemTime),
}

/// What becomes of a relator's firing in progress at start, decided at the first
/// reconciliation with its engine.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct StartDecision {
    /// Tasks not yet due, each with its due instant (wall clock).
    pub(crate) ahead: Vec<(SystemTime, Task)>,
    /// A whole firing at this instant, each task due at its splay after it (a new relator
    /// firing now): the scheduler hands its tasks out as they fall due.
    pub(crate) fire_now: Option<SystemTime>,
    /// Missed firings to run now, the oldest first: the first at once, each next one a replay
    /// spacing after the one before.
    pub(crate) run: Vec<Firing>,
    /// The number of the next anchored firing, when it moves (after a first firing).
    pub(crate) next_index: Option<i64>,
    /// Firings with at least one task missed while the supervisor was down.
    pub(crate) missed: u64,
    /// Of those, not run.
    pub(crate) skipped: u64,
    /// Of those, run now.
    pub(crate) caught_up: u64,
}

/// Decides, at `now`, what becomes of firing number `index` of `plan` (the one in progress
/// when the supervisor started) given the relator's `mark` on its engine.
///
/// With a mark, the tasks of that firing scheduled at or before the mark were the previous
/// run's and are dropped; those still ahead are scheduled; those already due, those of the
/// mark's own firing after it, and every whole firing in between were missed while the
/// supervisor was down and follow `catch_up` (at most `max_missed` firings kept, the latest;
/// older ones counted and skipped).
///
/// Without one the relator is new: it fires now, each task at now plus its splay, and the
/// anchored timeline resumes with the first boundary at least half an interval later (never two
/// firings closer than that). `fired_since` says an anchored firing already happened since the
/// start (the reconciliation came late): that one was the first, and nothing more is done.
pub(crate) fn decide_start(
    plan: &RelatorPlan,
    interval: Duration,
    index: i64,
    mark: Option<i64>,
    now: SystemTime,
    fired_since: bool,
    max_missed: usize,
) -> StartDecision {
    let Some(mark) = mark else {
        if fired_since {
            return StartDecision::default();
        }
        // The first boundary at or after now + half an interval.
        let step = interval_ms(interval);
        let next_index = unix_ms(now)
            .saturating_add(step / 2)
            .saturating_add(step - 1)
            .div_euclid(step)
            .max(index.saturating_add(1));
        return StartDecision {
            fire_now: Some(now),
            next_index: Some(next_index),
            ..StartDecision::default()
        };
    };
    let mut decision = StartDecision::default();
    let mut current = Vec::new();
    for due in plan.tasks_at(firing_instant(index, interval)) {
        if due.task.scheduled_unix_ms <= mark {
            continue;
        }
        let at = firing_instant(index, interval) + due.due_after_firing;
        if at >= now {
            decision.ahead.push((at, due.task));
        } else {
            current.push(due.task);
        }
    }
    let mark_index = firing_index(mark, interval);
    // The mark's own firing, after the mark (only when it is an earlier firing).
    let partial: Vec<Task> = if mark_index < index {
        plan.tasks_at(firing_instant(mark_index, interval))
            .into_iter()
            .map(|due| due.task)
            .filter(|task| task.scheduled_unix_ms > mark)
            .collect()
    } else {
        Vec::new()
    };
    // Whole firings missed in between: mark_index + 1 ..= index - 1.
    let whole_first = mark_index.saturating_add(1);
    let whole_last = index.saturating_sub(1);
    let whole =
        u64::try_from(whole_last.saturating_sub(whole_first).saturating_add(1)).unwrap_or(0);
    let total = u64::from(!partial.is_empty()) + whole + u64::from(!current.is_empty());
    decision.missed = total;
    if total == 0 {
        return decision;
    }
    match plan.catch_up {
        CatchUp::Skip => decision.skipped = total,
        CatchUp::Latest => {
            let latest = if !current.is_empty() {
                Firing::Tasks(current)
            } else if whole > 0 {
                Firing::Whole(firing_instant(whole_last, interval))
            } else {
                Firing::Tasks(partial)
            };
            decision.run.push(latest);
            decision.caught_up = 1;
            decision.skipped = total - 1;
        }
        CatchUp::Replay => {
            let keep = total.min(max_missed as u64);
            // Newest first, then reversed.
            let mut run = Vec::new();
            if !current.is_empty() {
                run.push(Firing::Tasks(current));
            }
            let mut next = whole_last;
            while (run.len() as u64) < keep && whole > 0 && next >= whole_first {
                run.push(Firing::Whole(firing_instant(next, interval)));
                next -= 1;
            }
            if (run.len() as u64) < keep && !partial.is_empty() {
                run.push(Firing::Tasks(partial));
            }
            run.reverse();
            decision.caught_up = run.len() as u64;
            decision.skipped = total - decision.caught_up;
            decision.run = run;
        }
    }
    decision
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{CatchUp, SupervisorConfig};
    use crate::supervisor::schedule::plan::plan_relators;

    const MINUTE: Duration = Duration::from_secs(60);
    /// A whole minute: 2023-11-14T22:14:00Z.
    const T0_MS: i64 = 1_699_999_980_000;

    fn plan(catch_up: &str) -> RelatorPlan {
        let config: SupervisorConfig = toml::from_str(&format!(
            r#"
            supervisor_id = "s"
            [[engines]]
            name = "e"
            address = "127.0.0.1:1"
            [[groups]]
            name = "g"
            engine = "e"
            nodes = ["a", "b", "c", "d", "e", "f", "g", "h"]
            [[rules]]
            name = "u"
            kind = "sim"
            [[relators]]
            name = "r"
            group = "g"
            rules = ["u"]
            interval = "1m"
            randomize = 50
            catch_up = "{catch_up}"
            "#
        ))
        .expect("test config parses");
        plan_relators(&config).expect("plans").remove(0)
    }

    fn at(ms: i64) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap())
    }

    fn ids(tasks: &[Task]) -> Vec<String> {
        let mut ids: Vec<String> = tasks.iter().map(|t| t.id.clone()).collect();
        ids.sort();
        ids
    }

    #[test]
    fn firings_are_whole_intervals_since_the_epoch() {
        assert_eq!(T0_MS % 60_000, 0);
        assert_eq!(firing_index(T0_MS, MINUTE), T0_MS / 60_000);
        assert_eq!(firing_index(T0_MS + 59_999, MINUTE), T0_MS / 60_000);
        assert_eq!(firing_index(T0_MS - 1, MINUTE), T0_MS / 60_000 - 1);
        assert_eq!(firing_instant(T0_MS / 60_000, MINUTE), at(T0_MS));
        assert_eq!(interval_ms(Duration::from_micros(10)), 1);
    }

    /// Every task of firing `index`, ordered by start.
    fn firing(plan: &RelatorPlan, index: i64) -> Vec<Task> {
        let mut tasks: Vec<Task> = plan
            .tasks_at(firing_instant(index, MINUTE))
            .into_iter()
            .map(|due| due.task)
            .collect();
        tasks.sort_by_key(|t| t.scheduled_unix_ms);
        tasks
    }

    fn run_ids(run: &[Firing]) -> Vec<String> {
        let mut tasks = Vec::new();
        for firing in run {
            match firing {
                Firing::Tasks(some) => tasks.extend(some.iter().cloned()),
                Firing::Whole(at) => panic!("a whole firing at {at:?}"),
            }
        }
        ids(&tasks)
    }

    const K0: i64 = T0_MS / 60_000;

    #[test]
    fn a_restart_in_a_firing_splits_it_at_the_mark_and_at_now_without_a_gap_or_an_overlap() {
        let plan = plan("latest");
        let tasks = firing(&plan, K0);
        assert_eq!(tasks.len(), 8);
        assert!(tasks.iter().all(|t| t.supervisor_id == "s"));
        // The previous run sent the first three; the restart comes 1 ms before the sixth.
        let mark = tasks[2].scheduled_unix_ms;
        let now = at(tasks[5].scheduled_unix_ms - 1);
        let decision = decide_start(&plan, MINUTE, K0, Some(mark), now, false, 1000);
        let ahead: Vec<Task> = decision.ahead.iter().map(|(_, t)| t.clone()).collect();
        assert_eq!(ids(&ahead), ids(&tasks[5..]), "still ahead: scheduled");
        for (due, task) in &decision.ahead {
            assert_eq!(
                unix_ms(*due),
                task.scheduled_unix_ms,
                "at its anchored instant"
            );
        }
        assert_eq!(
            run_ids(&decision.run),
            ids(&tasks[3..5]),
            "missed: caught up"
        );
        assert_eq!(
            (decision.missed, decision.caught_up, decision.skipped),
            (1, 1, 0)
        );
        assert_eq!(decision.next_index, None, "the timeline goes on");
    }

    #[test]
    fn missed_tasks_of_the_current_firing_follow_catch_up() {
        for (policy, caught_up) in [("skip", false), ("latest", true), ("replay", true)] {
            let plan = plan(policy);
            let tasks = firing(&plan, K0);
            let mark = tasks[1].scheduled_unix_ms;
            let now = at(tasks[7].scheduled_unix_ms + 1);
            let decision = decide_start(&plan, MINUTE, K0, Some(mark), now, false, 1000);
            assert!(decision.ahead.is_empty());
            assert_eq!(decision.missed, 1, "{policy}");
            if caught_up {
                assert_eq!(run_ids(&decision.run), ids(&tasks[2..]), "{policy}");
            } else {
                assert!(decision.run.is_empty());
                assert_eq!(decision.skipped, 1);
            }
        }
    }

    #[test]
    fn a_new_relator_fires_now_and_the_timeline_resumes_at_least_half_an_interval_later() {
        let plan = plan("skip");
        for offset_ms in [1_000, 29_999, 30_000, 30_001, 59_000] {
            let now = at(T0_MS + offset_ms);
            let decision = decide_start(&plan, MINUTE, K0, None, now, false, 1000);
            assert!(decision.ahead.is_empty());
            assert_eq!(decision.fire_now, Some(now), "the whole firing, from now");
            for due in plan.tasks_at(now) {
                assert_eq!(
                    unix_ms(now + due.due_after_firing),
                    due.task.scheduled_unix_ms
                );
            }
            let next = decision.next_index.expect("the timeline moves");
            let next_at = firing_instant(next, MINUTE);
            assert!(
                next_at >= now + MINUTE / 2,
                "{offset_ms}: next at {next_at:?}"
            );
            assert!(
                next_at <= now + MINUTE * 3 / 2,
                "{offset_ms}: next at {next_at:?}"
            );
            assert_eq!((decision.missed, decision.skipped), (0, 0));
        }
        let late = decide_start(&plan, MINUTE, K0, None, at(T0_MS + 70_000), true, 1000);
        assert_eq!(
            late,
            StartDecision::default(),
            "an anchored firing came first"
        );
    }

    #[test]
    fn whole_firings_missed_since_the_mark_are_replayed_oldest_first_or_skipped() {
        // Died in the firing three minutes back; started after every task of the current one.
        let mark = T0_MS - 3 * 60_000 + 1;
        let now = at(T0_MS + 59_000);
        // The mark's firing after the mark, two whole ones, and the current one.
        let expected = 4;
        let replay = plan("replay");
        let decision = decide_start(&replay, MINUTE, K0, Some(mark), now, false, 1000);
        assert_eq!((decision.missed, decision.caught_up), (expected, expected));
        assert_eq!(decision.run[1], Firing::Whole(at(T0_MS - 2 * 60_000)));
        assert_eq!(decision.run[2], Firing::Whole(at(T0_MS - 60_000)));
        assert_eq!(run_ids(&decision.run[3..]), ids(&firing(&replay, K0)));

        let capped = decide_start(&replay, MINUTE, K0, Some(mark), now, false, 2);
        assert_eq!(capped.run.len(), 2);
        assert_eq!(capped.run[0], Firing::Whole(at(T0_MS - 60_000)));
        assert_eq!(capped.skipped, expected - 2);

        let latest = plan("latest");
        let decision = decide_start(&latest, MINUTE, K0, Some(mark), now, false, 1000);
        assert_eq!(run_ids(&decision.run), ids(&firing(&latest, K0)));
        assert_eq!((decision.caught_up, decision.skipped), (1, expected - 1));

        let skip = plan("skip");
        let decision = decide_start(&skip, MINUTE, K0, Some(mark), now, false, 1000);
        assert!(decision.run.is_empty());
        assert_eq!(decision.skipped, expected);
    }

    #[test]
    fn a_mark_past_everything_due_means_nothing_was_missed() {
        let plan = plan("replay");
        let tasks = firing(&plan, K0);
        let mark = tasks[4].scheduled_unix_ms;
        // Sent a little early by the previous run (its batch window): not sent again.
        let now = at(mark - 50);
        let decision = decide_start(&plan, MINUTE, K0, Some(mark), now, false, 1000);
        let ahead: Vec<Task> = decision.ahead.iter().map(|(_, t)| t.clone()).collect();
        assert_eq!(ids(&ahead), ids(&tasks[5..]));
        assert!(decision.run.is_empty());
        assert_eq!(decision.missed, 0);
        assert_eq!(CatchUp::default(), CatchUp::Skip);
    }
}
