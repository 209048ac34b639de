//! Tasks and batches as a supervisor would send them.

use std::time::SystemTime;

use turbomon::config::SupervisorConfig;
use turbomon::proto::{self, TaskState};

/// First attempt of a sim task (relator `r`, rule `sim`, node `n`, 60 s timeout) that takes
/// `duration_ms`, then reports `outcome` and `value`.
pub fn sim_task(id: &str, duration_ms: u64, outcome: TaskState, value: f64) -> proto::Task {
    proto::Task {
        id: id.into(),
        relator: "r".into(),
        rule: "sim".into(),
        node: "n".into(),
        scheduled_unix_ms: 0,
        attempt: 1,
        timeout_ms: 60_000,
        check: Some(proto::Check {
            kind: Some(proto::check::Kind::Sim(proto::SimCheck {
                duration_ms,
                outcome: outcome as i32,
                value,
            })),
        }),
        ..Default::default()
    }
}

/// A sim task that reports OK with value 1.
pub fn ok_task(id: &str, duration_ms: u64) -> proto::Task {
    sim_task(id, duration_ms, TaskState::Ok, 1.0)
}

pub fn batch(batch_id: u64, tasks: Vec<proto::Task>) -> proto::SubmitBatch {
    proto::SubmitBatch { batch_id, tasks }
}

/// The tasks the first relator of `config` fires now.
pub fn planned_tasks(config: &SupervisorConfig) -> Vec<proto::Task> {
    let plans = turbomon::supervisor::schedule::plan::plan_relators(config).expect("plan");
    plans[0]
        .tasks_at(SystemTime::now())
        .into_iter()
        .map(|due| due.task)
        .collect()
}
