//! What an engine counts: tasks in and out, checks, results, journal and push notices, and a
//! few gauges of what it holds now.

use serde::Serialize;

/// What the engine has done since it started, plus a few gauges of what it holds now.
///
/// Every task received ends up in exactly one of accepted, duplicates, rejected:
/// `tasks_received == tasks_accepted + duplicates + tasks_rejected` (tasks of a batch refused as
/// a whole count as rejected).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct EngineCounters {
    /// Tasks that arrived, in batches or one by one.
    pub tasks_received: u64,
    /// New tasks taken in (each runs once).
    pub tasks_accepted: u64,
    /// Tasks whose id was already held: acknowledged again, not run again.
    pub duplicates: u64,
    /// Tasks refused: an invalid check, no room (`max_held_tasks`), an earlier attempt still
    /// running, or in a refused batch.
    pub tasks_rejected: u64,
    /// Of the accepted tasks, those that were a new attempt replacing a finished earlier one.
    pub retries_accepted: u64,
    /// Of the rejected tasks, those that were a new attempt while the earlier one was still
    /// pending or running ("attempt N still running").
    pub retries_busy: u64,
    /// Of the rejected tasks, those whose `assignment_epoch` was older than the newest seen for
    /// their supervisor (a cluster member that no longer runs this engine).
    pub stale_epochs: u64,
    /// Checks started (including instant ones completed inline).
    pub checks_started: u64,
    /// Checks finished, whatever their outcome.
    pub checks_finished: u64,
    /// Finished results forgotten because the supervisor released them.
    pub results_released: u64,
    /// Finished results dropped because nobody collected them within `result_retention`.
    pub results_expired: u64,
    /// Finished results taken back from the journal at start.
    pub results_restored: u64,
    /// Tasks this engine declared `LOST_IN_RESTART`: unfinished in the journal at start, or
    /// still unfinished at the end of the shutdown grace.
    pub lost_in_restart: u64,
    /// Completion notices put into subscribers' buffers (one per subscriber per task).
    pub completion_notices_queued: u64,
    /// Completion notices dropped because a subscriber's buffer was full.
    pub completion_notices_dropped: u64,
    /// Journal write transactions committed.
    pub journal_commits: u64,
    /// Journal write transactions that failed (retried; new tasks are refused meanwhile).
    pub journal_write_errors: u64,
    /// Submission batches refused as a whole.
    pub batches_refused: u64,
    /// Status queries refused as a whole.
    pub queries_refused: u64,
    /// `ListTasks` pages answered.
    pub list_pages: u64,
    /// `ListTasks` requests refused (INVALID_ARGUMENT).
    pub lists_refused: u64,
    /// Gauge: tasks held now (pending, running, finished and not yet released).
    pub tasks_held: u64,
    /// Gauge: checks waiting for a free slot now.
    pub checks_pending: u64,
    /// Gauge: checks running now.
    pub checks_running: u64,
    /// Most checks ever running at once.
    pub checks_running_peak: u64,
    /// Gauge: completion subscribers now.
    pub completion_subscribers: u64,
}
