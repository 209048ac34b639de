//! Carrying out what the ledger decided ([`Settled`]): lateness into the statistics, tasks back
//! into the submission inbox, retries and chains to the scheduler, alerts to their actions,
//! outcomes to the observer, notices to the log.

use tokio::time::Instant;

use super::handle::EngineHandle;
use super::ledger::{Notice, Settled};
use crate::supervisor::schedule::outgoing::Outgoing;
use crate::supervisor::schedule::scheduler::ScheduleEvent;

/// Apply `settled` for `engine`.
pub(crate) fn apply(engine: &EngineHandle, settled: Settled) {
    let Settled {
        resend,
        retries,
        chains,
        alerts,
        completions,
        lateness,
        notices,
        perfdata,
    } = settled;
    if !lateness.is_empty() {
        let mut stats = engine.stats();
        for (stage, late) in lateness {
            stats.lateness.record(stage, late);
        }
    }
    for notice in notices {
        log(engine.name(), notice);
    }
    for (relator, rule, node, data) in perfdata {
        engine
            .outlets
            .perfdata
            .record(&relator, &rule, &node, &data);
    }
    let outlets = &engine.outlets;
    if !resend.is_empty() {
        let _ = outlets
            .resend
            .send(resend.into_iter().map(Outgoing::whole).collect());
    }
    let now = Instant::now();
    for (task, delay) in retries {
        let _ = outlets.events.send(ScheduleEvent::Retry {
            engine: engine.index,
            task: Box::new(task),
            due: now + delay,
        });
    }
    for (relator, node) in chains {
        let _ = outlets.events.send(ScheduleEvent::Chain {
            engine: engine.index,
            relator,
            node,
        });
    }
    for (relator, event) in alerts {
        if let Some(plan) = engine.plans.get(relator) {
            outlets.alert_actions.fire(&plan.alerts, event);
        }
    }
    if let Some(observer) = &outlets.observer {
        for completion in completions {
            let _ = observer.send(completion);
        }
    }
}

fn log(engine: &str, notice: Notice) {
    const T: &str = "turbomon::supervisor";
    match notice {
        Notice::Rejected { task_id, reason } => {
            tracing::error!(target: T, engine, task = %task_id, %reason, "engine rejected task");
        }
        Notice::LostInRestart { task_id } => {
            tracing::warn!(target: T, engine, task = %task_id, "task was running when the engine restarted");
        }
        Notice::Forgotten { task_id } => {
            tracing::warn!(target: T, engine, task = %task_id, "engine forgot an acknowledged task; submitting it again");
        }
        Notice::Retrying { task_id, attempt } => {
            tracing::info!(target: T, engine, task = %task_id, attempt, "task failed; retrying after the retry period");
        }
        Notice::RetryPastWindow { task_id, attempt } => {
            tracing::warn!(target: T, engine, task = %task_id, attempt, "task failed; not retried because the next attempt would start after its start window");
        }
        Notice::Unanswered { task_id, reason } => {
            tracing::error!(target: T, engine, task = %task_id, %reason, "task failed");
        }
        Notice::Unreadable { task_id, reason } => {
            tracing::error!(target: T, engine, task = %task_id, %reason, "task failed: its result cannot be collected");
        }
    }
}
