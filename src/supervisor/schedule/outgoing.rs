//! A task handed to an engine's submission loop and not sent yet ([`Outgoing`]), kept compact:
//! a task of a relator's firing travels as the firing and its template's number, about 32 bytes,
//! and is built whole only when its submission loop sends it. While an engine's loop is busy,
//! everything due meanwhile waits in its inbox: at a million tasks a minute a few seconds of
//! that was tens of thousands of whole tasks (some 450 bytes each with their strings).

use std::time::SystemTime;

use crate::proto::Task;

use super::plan::{RelatorPlan, priority_rank, wire_priority};

/// A task due to be sent to an engine.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Outgoing {
    /// Template `template` of relator number `relator`, for its firing at `fired`: exactly
    /// [`RelatorPlan::task_of`]`(template, fired)`, built when sent.
    Planned {
        relator: u32,
        template: u32,
        fired: SystemTime,
    },
    /// Any other task (a retry, a chained or replayed run, one sent again), whole.
    Whole(Box<Task>),
}

impl Outgoing {
    /// Template `template` of plan number `relator` for the firing at `fired`.
    pub(crate) fn planned(relator: usize, template: u32, fired: SystemTime) -> Self {
        Self::Planned {
            // Plans are numbered well below 2^32 (an index past them builds nothing).
            relator: u32::try_from(relator).unwrap_or(u32::MAX),
            template,
            fired,
        }
    }

    /// `task`, whole.
    pub(crate) fn whole(task: Task) -> Self {
        Self::Whole(Box::new(task))
    }

    /// The task to send (`None` for a template its relator's plan does not have, which the
    /// scheduler never hands out).
    pub(crate) fn task(self, plans: &[RelatorPlan]) -> Option<Task> {
        match self {
            Self::Planned {
                relator,
                template,
                fired,
            } => {
                let plan = plans.get(relator as usize)?;
                let template = template as usize;
                (template < plan.templates.len()).then(|| plan.task_of(template, fired))
            }
            Self::Whole(task) => Some(*task),
        }
    }

    /// Its priority's sort key (high first), as [`priority_rank`] gives it for the task.
    pub(crate) fn priority_rank(&self, plans: &[RelatorPlan]) -> u8 {
        match self {
            Self::Planned { relator, .. } => plans
                .get(*relator as usize)
                .map_or(1, |plan| priority_rank(wire_priority(plan.priority) as i32)),
            Self::Whole(task) => priority_rank(task.priority),
        }
    }
}

/// The tasks of `outgoing`, in order (any the plans cannot build are logged and left out).
pub(crate) fn build(outgoing: Vec<Outgoing>, plans: &[RelatorPlan]) -> Vec<Task> {
    let mut tasks = Vec::with_capacity(outgoing.len());
    for item in outgoing {
        let named = match &item {
            Outgoing::Planned {
                relator, template, ..
            } => (*relator, *template),
            Outgoing::Whole(_) => (0, 0),
        };
        match item.task(plans) {
            Some(task) => tasks.push(task),
            None => {
                tracing::error!(target: "turbomon::supervisor", relator = named.0, template = named.1, "a due task names a template its relator's plan does not have; not sent");
            }
        }
    }
    tasks
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;
    use crate::config::Priority;
    use crate::supervisor::schedule::plan::plan_relators;

    /// The plans of `plan`'s test configuration, its relator at high priority.
    fn plans() -> Vec<RelatorPlan> {
        let mut config = crate::supervisor::schedule::plan::tests::config();
        config.relators[0].priority = Priority::High;
        plan_relators(&config).expect("plans")
    }

    #[test]
    fn a_planned_task_built_when_sent_is_the_task_of_its_firing() {
        let plans = plans();
        let fired = UNIX_EPOCH + Duration::from_millis(1_700_000_000_000);
        let whole = plans[0].tasks_at(fired);
        assert_eq!(whole.len(), 6);
        let outgoing: Vec<Outgoing> = (0..6).map(|t| Outgoing::planned(0, t, fired)).collect();
        for item in &outgoing {
            assert!(matches!(item, Outgoing::Planned { .. }));
            assert_eq!(item.priority_rank(&plans), 0, "the relator's high priority");
        }
        let built = build(outgoing, &plans);
        let expected: Vec<Task> = whole.into_iter().map(|due| due.task).collect();
        assert_eq!(built, expected);
        assert!(std::mem::size_of::<Outgoing>() <= 32);
    }

    #[test]
    fn a_whole_task_goes_as_it_is_and_an_unknown_template_is_left_out() {
        let plans = plans();
        let task = Task {
            id: "x/y/z/1".into(),
            priority: crate::proto::Priority::Low as i32,
            ..Task::default()
        };
        let whole = Outgoing::whole(task.clone());
        assert_eq!(whole.priority_rank(&plans), 2);
        let fired = UNIX_EPOCH;
        let unknown = Outgoing::Planned {
            relator: 0,
            template: 6,
            fired,
        };
        let missing = Outgoing::Planned {
            relator: 1,
            template: 0,
            fired,
        };
        assert_eq!(build(vec![unknown, whole, missing], &plans), vec![task]);
    }
}
