//! The final outcome of a task as the supervisor learnt it, handed to an observer (tests,
//! `bench`, `chaos`).

use std::time::SystemTime;

use crate::proto::TaskState;

/// The final outcome of a task as the supervisor learnt it.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    /// Engine that ran it.
    pub engine: String,
    /// The task's id.
    pub task_id: String,
    /// The relator that produced the task.
    pub relator: String,
    /// The node the rule was checked on.
    pub node: String,
    /// Which attempt this outcome is (1 unless retried).
    pub attempt: u32,
    /// Final state (ok, broken, failed, timed out); failed also for a task the engine rejected.
    pub state: TaskState,
    /// The value the check measured (a latency, an exit code, a sim value).
    pub value: f64,
    /// Engine's message.
    pub message: String,
    /// When the check finished on the engine (ms since the epoch; 0 if it never ran).
    pub finished_unix_ms: i64,
    /// When the supervisor learnt it.
    pub known_at: SystemTime,
}
