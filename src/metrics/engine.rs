//! The engine's metrics:
//!
//! - `turbomon_engine_tasks_accepted_total`, `turbomon_engine_tasks_duplicate_total` and
//!   `turbomon_engine_tasks_refused_total{reason}` (`invalid` | `engine_full` |
//!   `attempt_running` | `stale_epoch` | `unavailable`), counted where the engine answers each task;
//! - `turbomon_engine_check_duration_seconds{kind}` (`tcp` | `http` | `exec` | `sim`), each check
//!   a worker ran (instant `sim` checks, completed at admission, are not timed);
//! - `turbomon_engine_journal_commit_duration_seconds`, each journal write transaction, only
//!   with a journal;
//! - gauges `turbomon_engine_held_tasks{state}` (`pending` | `running` | `finished`) and
//!   `turbomon_engine_checks_running`, read from the task store at every scrape.
//!
//! Every handle is resolved when the engine is built: counting a task is one atomic add.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::{Registry, Unit};

use super::histogram::AtomicHistogram;
use super::sampled::{Sampled, SampledFamily, SampledKind};

/// Why a task was refused, as the `reason` label says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalReason {
    /// It can never run as sent (`REFUSAL_INVALID`, or a malformed batch).
    Invalid,
    /// `max_held_tasks` reached (`REFUSAL_ENGINE_FULL`).
    EngineFull,
    /// An earlier attempt still runs (`REFUSAL_ATTEMPT_RUNNING`).
    AttemptRunning,
    /// The engine is shutting down or cannot write its journal (`UNAVAILABLE`).
    Unavailable,
    /// An older assignment epoch than the newest seen (`REFUSAL_STALE_EPOCH`).
    StaleEpoch,
}

impl RefusalReason {
    /// Every reason, in label order.
    pub const ALL: [RefusalReason; 5] = [
        RefusalReason::Invalid,
        RefusalReason::EngineFull,
        RefusalReason::AttemptRunning,
        RefusalReason::StaleEpoch,
        RefusalReason::Unavailable,
    ];

    /// The `reason` label.
    pub fn label(self) -> &'static str {
        match self {
            RefusalReason::Invalid => "invalid",
            RefusalReason::EngineFull => "engine_full",
            RefusalReason::AttemptRunning => "attempt_running",
            RefusalReason::Unavailable => "unavailable",
            RefusalReason::StaleEpoch => "stale_epoch",
        }
    }
}

/// The check kinds timed, as the `kind` label says them.
pub const CHECK_KINDS: [&str; 4] = ["tcp", "http", "exec", "sim"];

/// Tasks the engine holds now, by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HeldTasks {
    /// Waiting for a check slot.
    pub pending: u64,
    /// Their check is running.
    pub running: u64,
    /// Finished, waiting for the supervisor to collect them.
    pub finished: u64,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

/// The engine's registry and its resolved handles.
#[derive(Debug)]
pub struct EngineMetrics {
    registry: Arc<Registry>,
    accepted: Counter,
    duplicates: Counter,
    refused: [Counter; 5],
    check_duration: [AtomicHistogram; 4],
}

impl EngineMetrics {
    /// Every family registered. `journal_commits` is the journal's commit-time histogram, when
    /// there is a journal; `held` reads the task store at each scrape (`None` once the engine is
    /// gone).
    pub fn new(
        journal_commits: Option<AtomicHistogram>,
        held: impl Fn() -> Option<HeldTasks> + Send + Sync + 'static,
    ) -> Self {
        let mut registry = Registry::default();
        let accepted = Counter::default();
        registry.register(
            "turbomon_engine_tasks_accepted",
            "New tasks taken in (each runs once), retries of finished attempts included",
            accepted.clone(),
        );
        let duplicates = Counter::default();
        registry.register(
            "turbomon_engine_tasks_duplicate",
            "Tasks whose id and attempt were already held: acknowledged again, not run again",
            duplicates.clone(),
        );
        let refused_family = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "turbomon_engine_tasks_refused",
            "Tasks refused, by reason: invalid, engine_full, attempt_running, unavailable",
            refused_family.clone(),
        );
        let refused = RefusalReason::ALL.map(|reason| {
            refused_family.get_or_create_owned(&ReasonLabels {
                reason: reason.label(),
            })
        });
        let durations =
            Family::<KindLabels, AtomicHistogram, fn() -> AtomicHistogram>::new_with_constructor(
                AtomicHistogram::seconds,
            );
        registry.register_with_unit(
            "turbomon_engine_check_duration",
            "Checks run by a worker, by kind, from start to result",
            Unit::Seconds,
            durations.clone(),
        );
        let check_duration =
            CHECK_KINDS.map(|kind| durations.get_or_create_owned(&KindLabels { kind }));
        if let Some(commits) = journal_commits {
            registry.register_with_unit(
                "turbomon_engine_journal_commit_duration",
                "Journal write transactions, from begin to durable commit",
                Unit::Seconds,
                commits,
            );
        }
        registry.register_collector(Box::new(Sampled(move || sample(held()))));
        Self {
            registry: Arc::new(registry),
            accepted,
            duplicates,
            refused,
            check_duration,
        }
    }

    /// The registry, to serve.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// `count` tasks accepted.
    pub fn accepted(&self, count: u64) {
        self.accepted.inc_by(count);
    }

    /// `count` tasks acknowledged as duplicates.
    pub fn duplicates(&self, count: u64) {
        self.duplicates.inc_by(count);
    }

    /// `count` tasks refused for `reason`.
    pub fn refused(&self, reason: RefusalReason, count: u64) {
        if count > 0 {
            self.refused[reason as usize].inc_by(count);
        }
    }

    /// A check of `kind` (`Check::kind_name`) ran for `elapsed`; an unknown kind is not timed.
    pub fn check_ran(&self, kind: &str, elapsed: Duration) {
        if let Some(index) = CHECK_KINDS.iter().position(|k| *k == kind) {
            self.check_duration[index].observe(elapsed.as_secs_f64());
        }
    }
}

fn sample(held: Option<HeldTasks>) -> Vec<SampledFamily> {
    let Some(held) = held else {
        return Vec::new();
    };
    let state = |state: &str| vec![("state", state.to_string())];
    vec![
        SampledFamily {
            name: "turbomon_engine_held_tasks".into(),
            help: "Tasks held now, by state: pending (waiting for a check slot), running, \
                   finished (waiting to be collected)"
                .into(),
            kind: SampledKind::Gauge,
            samples: vec![
                (state("pending"), held.pending),
                (state("running"), held.running),
                (state("finished"), held.finished),
            ],
        },
        SampledFamily {
            name: "turbomon_engine_checks_running".into(),
            help: "Checks running now".into(),
            kind: SampledKind::Gauge,
            samples: vec![(Vec::new(), held.running)],
        },
    ]
}
