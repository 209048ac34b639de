//! The supervising engine: expands relators into tasks on their schedules, submits them to each
//! engine in batches, checks their status, fires alerts for broken rules and keeps the loop and
//! packet statistics.
//!
//! - [`plan`]: relators expanded into task templates; task ids.
//! - [`batch`]: splitting into batches and measuring packets.
//! - [`stream`]: batches in flight on one bidirectional stream.
//! - [`submit`], [`monitor`]: the submission and monitor loops, turbo and off.
//! - [`alert`]: alert actions.

pub mod alert;
pub mod schedule;
mod worker;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::SystemTime;

use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::config::SupervisorConfig;
use crate::proto::TaskState;
use crate::stats::EngineStats;
use crate::transport::Dialer;

/// Why the supervisor cannot start.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    /// A relator cannot be expanded.
    #[error(transparent)]
    Plan(#[from] schedule::plan::PlanError),
    /// An engine's address or link is unusable.
    #[error("engine `{engine}`: {reason}")]
    Engine {
        /// The engine.
        engine: String,
        /// What is wrong.
        reason: String,
    },
}

/// The final outcome of a task as the supervisor learnt it.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    /// Engine that ran it.
    pub engine: String,
    /// The task.
    pub task_id: String,
    /// Its relator.
    pub relator: String,
    /// Its node.
    pub node: String,
    /// Which attempt this outcome is (1 unless retried).
    pub attempt: u32,
    /// Final state (ok, broken, failed, timed out); failed also for a task the engine rejected.
    pub state: TaskState,
    /// Measured value.
    pub value: f64,
    /// Engine's message.
    pub message: String,
    /// When the check finished on the engine (ms since the epoch; 0 if it never ran).
    pub finished_unix_ms: i64,
    /// When the supervisor learnt it.
    pub known_at: SystemTime,
}

/// Live counters of one engine.
#[derive(Debug, Default)]
pub struct EngineCounters {
    submitted: AtomicU64,
    accepted: AtomicU64,
    duplicates: AtomicU64,
    rejected: AtomicU64,
    retried: AtomicU64,
    completed: AtomicU64,
    broken: AtomicU64,
    alerts: AtomicU64,
    resubmitted: AtomicU64,
    shed: AtomicU64,
    unsent_at_shutdown: AtomicU64,
    retries: AtomicU64,
    splits: AtomicU64,
    failed_unanswered: AtomicU64,
    pushed: AtomicU64,
    lost_in_restart: AtomicU64,
    chained: AtomicU64,
    missed_firings: AtomicU64,
    failovers: AtomicU64,
    failbacks: AtomicU64,
    skipped_firings: AtomicU64,
    caught_up_firings: AtomicU64,
}

/// A copy of one engine's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CountersSnapshot {
    /// Tasks sent in submission loops (a resend counts again).
    pub submitted: u64,
    /// Tasks the engine acknowledged.
    pub accepted: u64,
    /// Acknowledgements saying the engine already held the task.
    pub duplicates: u64,
    /// Tasks the engine refused for good.
    pub rejected: u64,
    /// Tasks sent again after a missing acknowledgement.
    pub retried: u64,
    /// Tasks whose final outcome is known.
    pub completed: u64,
    /// Of those, broken.
    pub broken: u64,
    /// Alert firings.
    pub alerts: u64,
    /// Acknowledged tasks the engine later forgot, submitted again.
    pub resubmitted: u64,
    /// Tasks shed (low priority first) because the engine was down too long (logged).
    pub shed: u64,
    /// Tasks still waiting for an acknowledgement when the supervisor stopped (logged).
    pub unsent_at_shutdown: u64,
    /// Failed or timed-out tasks scheduled for another attempt.
    pub retries: u64,
    /// Batches split in half after going unanswered within the batch timeout.
    pub splits: u64,
    /// Tasks failed because even alone they got no acknowledgement.
    pub failed_unanswered: u64,
    /// Completion notices pushed by the engine.
    pub pushed: u64,
    /// Tasks the engine reported lost in a restart (retried under the retry policy).
    pub lost_in_restart: u64,
    /// Chained relator runs started.
    pub chained: u64,
    /// Times this engine's tasks went to its backup.
    pub failovers: u64,
    /// Times they came back.
    pub failbacks: u64,
    /// Firings that came while the engine was unreachable.
    pub missed_firings: u64,
    /// Missed firings not run (catch-up `skip`, or older than the memory of missed firings).
    pub skipped_firings: u64,
    /// Missed firings run when the engine came back (`latest`, `replay`).
    pub caught_up_firings: u64,
}

/// Options that are not part of the configuration file.
#[derive(Debug, Default)]
pub struct SupervisorOptions {
    /// Append every statistics window as JSON to this file.
    pub stats_json: Option<PathBuf>,
    /// Receive every final outcome (tests, benchmarks).
    pub observer: Option<mpsc::UnboundedSender<Completion>>,
    /// Link profiles by name (e.g. from `config/links.toml`) over the built-in ones.
    pub link_profiles: std::collections::BTreeMap<String, crate::link::LinkProfile>,
}

/// A running supervisor.
pub struct Supervisor {
    engines: HashMap<String, Arc<worker::EngineState>>,
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl Supervisor {
    /// Start scheduling and the per-engine loops. The configuration receiver is watched for
    /// reloads: turbo mode, batch sizes and intervals apply from each engine's next loop.
    pub fn start(
        config: watch::Receiver<Arc<SupervisorConfig>>,
        options: SupervisorOptions,
    ) -> Result<Self, SupervisorError> {
        let initial = Arc::clone(&config.borrow());
        let plans = Arc::new(schedule::plan::plan_relators(&initial)?);
        let plan_index: Arc<HashMap<String, usize>> = Arc::new(
            plans
                .iter()
                .enumerate()
                .map(|(i, p)| (p.name.clone(), i))
                .collect(),
        );
        let (stop, stop_rx) = watch::channel(false);
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let mut tasks = JoinSet::new();
        let alert_actions = alert::AlertActions::new(&initial.alerts);
        let sessions = Arc::new(tokio::sync::Semaphore::new(initial.max_sessions.max(1)));
        let mut engines = HashMap::new();
        let mut outlets = Vec::new();
        let mut engine_index = HashMap::new();
        for (index, entry) in initial.engines.iter().enumerate() {
            let engine_error = |reason: String| SupervisorError::Engine {
                engine: entry.name.clone(),
                reason,
            };
            let link = match entry.link.as_deref() {
                None | Some(crate::link::NO_LINK) => None,
                Some(name) => Some(
                    options
                        .link_profiles
                        .get(name)
                        .cloned()
                        .map_or_else(|| crate::link::profile(name), Ok)
                        .and_then(crate::link::Link::new)
                        .map_err(|e| engine_error(e.to_string()))?,
                ),
            };
            let dialer = Dialer::new(&entry.address, link, initial.max_message_bytes)
                .map_err(|e| engine_error(e.to_string()))?
                .with_sessions(Arc::clone(&sessions));
            let counters = Arc::new(EngineCounters::default());
            let (state, due) = worker::start(
                worker::WorkerSetup {
                    name: entry.name.clone(),
                    index,
                    dialer,
                    counters: Arc::clone(&counters),
                    plans: Arc::clone(&plans),
                    plan_index: Arc::clone(&plan_index),
                    events: events_tx.clone(),
                    max_outbox_tasks: worker::MAX_OUTBOX_TASKS,
                    alert_actions: alert_actions.clone(),
                    observer: options.observer.clone(),
                    stats_json: options.stats_json.clone(),
                    config: config.clone(),
                    stop: stop_rx.clone(),
                },
                &mut tasks,
            );
            engines.insert(entry.name.clone(), state);
            engine_index.insert(entry.name.clone(), index);
            outlets.push(schedule::scheduler::EngineOutlet {
                name: entry.name.clone(),
                due,
                counters,
                backup: None,
                failover_after: entry
                    .failover_after
                    .unwrap_or_else(crate::config::defaults::failover_after),
            });
        }
        for (index, entry) in initial.engines.iter().enumerate() {
            if let Some(backup) = &entry.backup {
                outlets[index].backup =
                    Some(engine_index.get(backup).copied().ok_or_else(|| {
                        SupervisorError::Engine {
                            engine: entry.name.clone(),
                            reason: format!("backup `{backup}` is not defined"),
                        }
                    })?);
            }
        }
        let plan_engine = plans
            .iter()
            .map(|plan| {
                engine_index
                    .get(&plan.engine)
                    .copied()
                    .ok_or_else(|| SupervisorError::Engine {
                        engine: plan.engine.clone(),
                        reason: format!("relator `{}` needs it but it is not defined", plan.name),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        tasks.spawn(warn_about_restart_only_changes(
            config.clone(),
            Arc::clone(&initial),
            stop_rx.clone(),
        ));
        tasks.spawn(
            schedule::scheduler::Scheduler {
                plans,
                plan_engine,
                engines: outlets,
                batch_window: initial.batch_window,
                events: events_rx,
                stop: stop_rx,
            }
            .run(),
        );
        Ok(Self {
            engines,
            stop,
            tasks,
        })
    }

    /// Names of the engines.
    pub fn engine_names(&self) -> Vec<String> {
        let mut names: Vec<_> = self.engines.keys().cloned().collect();
        names.sort();
        names
    }

    /// Counters of one engine.
    pub fn counters(&self, engine: &str) -> Option<CountersSnapshot> {
        self.engines.get(engine).map(|e| e.counters.snapshot())
    }

    /// The simulated link in front of `engine`, if it has one (to cut, heal or read counters).
    pub fn link(&self, engine: &str) -> Option<crate::link::Link> {
        self.engines
            .get(engine)
            .and_then(|e| e.dialer.link().cloned())
    }

    /// Tasks submitted to `engine` whose outcome is not known yet.
    pub fn unfinished(&self, engine: &str) -> Option<usize> {
        self.engines.get(engine).map(|e| e.unfinished_count())
    }

    /// Read the current statistics window of one engine.
    pub fn with_stats<R>(&self, engine: &str, f: impl FnOnce(&EngineStats) -> R) -> Option<R> {
        self.engines.get(engine).map(|e| e.with_stats(f))
    }

    /// Stop scheduling, let the loops finish what they are doing, print a final statistics
    /// window per engine, and wait for everything to end. Returns each engine's final counters.
    pub async fn shutdown(mut self) -> Vec<(String, CountersSnapshot)> {
        self.stop.send_replace(true);
        while let Some(result) = self.tasks.join_next().await {
            if let Err(e) = result
                && e.is_panic()
            {
                tracing::error!(target: "turbomon::supervisor", error = %e, "a supervisor loop panicked");
            }
        }
        let mut counters: Vec<_> = self
            .engines
            .iter()
            .map(|(name, e)| (name.clone(), e.counters.snapshot()))
            .collect();
        counters.sort_by(|a, b| a.0.cmp(&b.0));
        counters
    }

    /// Run until `shutdown` resolves, then shut down gracefully.
    pub async fn run_until(
        self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Vec<(String, CountersSnapshot)> {
        shutdown.await;
        self.shutdown().await
    }
}

/// A reload applies the turbo keys and intervals at once; engines, groups, rules, relators and
/// alerts are read at start only. Say so when the file changes them, rather than ignore it.
async fn warn_about_restart_only_changes(
    mut config: watch::Receiver<Arc<SupervisorConfig>>,
    initial: Arc<SupervisorConfig>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            changed = config.changed() => if changed.is_err() { return },
        }
        let now = Arc::clone(&config.borrow_and_update());
        let mut needs_restart = Vec::new();
        if now.relators != initial.relators {
            needs_restart.push("relators");
        }
        if now.groups != initial.groups {
            needs_restart.push("groups");
        }
        if now.rules != initial.rules {
            needs_restart.push("rules");
        }
        if now.alerts != initial.alerts {
            needs_restart.push("alerts");
        }
        let addresses = |c: &SupervisorConfig| -> Vec<(String, String, Option<String>)> {
            c.engines
                .iter()
                .map(|e| (e.name.clone(), e.address.clone(), e.link.clone()))
                .collect()
        };
        if addresses(&now) != addresses(&initial) {
            needs_restart.push("engines (names, addresses, links)");
        }
        if !needs_restart.is_empty() {
            tracing::warn!(target: "turbomon::config", changed = %needs_restart.join(", "), "the configuration file changed parts that apply only at start; restart the supervisor to use them (turbo keys and intervals already apply)");
        }
    }
}
