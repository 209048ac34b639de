//! Everything the loops of one engine share: its name, connection, counters, statistics window,
//! ledger, and where the effects of its outcomes go (scheduler, alert actions, observer).

use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{Notify, mpsc};

use super::connection::Contact;
use super::ledger::Ledger;
use crate::metrics::EngineProbe;
use crate::stats::EngineStats;
use crate::supervisor::alert::AlertActions;
use crate::supervisor::completion::Completion;
use crate::supervisor::counters::DeliveryCounters;
use crate::supervisor::schedule::outgoing::Outgoing;
use crate::supervisor::schedule::plan::RelatorPlan;
use crate::supervisor::schedule::scheduler::ScheduleEvent;
use crate::wire::batch::BatchIds;

/// One engine as the supervisor's loops see it.
pub(crate) struct EngineHandle {
    /// Position of the engine in the configuration (the scheduler's name for it).
    pub(crate) index: usize,
    /// Its connection and reachability.
    pub(crate) contact: Arc<Contact>,
    /// What has been done with its tasks.
    pub(crate) counters: Arc<DeliveryCounters>,
    /// Batch ids for its streams.
    pub(crate) batch_ids: BatchIds,
    /// The relators' plans (retry policy, alerts, chains).
    pub(crate) plans: Arc<Vec<RelatorPlan>>,
    /// The supervisor's id, as it started (what the engine lists its tasks under).
    pub(crate) supervisor_id: String,
    /// Held for reading by each loop while it works, for writing by a reconciliation: the
    /// loops wait while the engine's tasks are reconciled.
    pub(crate) gate: Arc<tokio::sync::RwLock<()>>,
    /// Whether this supervisor runs the engine now: always without a cluster; a cluster member
    /// only while the engine is assigned to it. Read by each loop under the gate: while false,
    /// nothing is sent, asked or recorded (recorded results are still released).
    pub(crate) running: AtomicBool,
    /// The assignment epoch stamped on every task sent (0 without a cluster).
    pub(crate) epoch: AtomicU64,
    /// Wakes the monitor loop at once: when the engine goes to another member, the results
    /// recorded here are released before that member can take them in again.
    pub(crate) wake_monitor: Notify,
    pub(super) stats: Mutex<EngineStats>,
    pub(super) ledger: Mutex<Ledger>,
    pub(super) outlets: Outlets,
}

/// Where the effects of outcomes go.
pub(crate) struct Outlets {
    /// Tasks to submit again to this engine (its own submission loop's inbox).
    pub(crate) resend: mpsc::UnboundedSender<Vec<Outgoing>>,
    /// Retries and chains, for the scheduler.
    pub(crate) events: mpsc::UnboundedSender<ScheduleEvent>,
    /// Alert actions by name.
    pub(crate) alert_actions: AlertActions,
    /// Receives every final outcome, when attached.
    pub(crate) observer: Option<mpsc::UnboundedSender<Completion>>,
    /// Exported performance data (relators with `export_perfdata`).
    pub(crate) perfdata: crate::metrics::PerfdataExport,
}

impl EngineHandle {
    /// The engine's name.
    pub(crate) fn name(&self) -> &str {
        self.contact.name()
    }

    /// The statistics window, locked.
    pub(crate) fn stats(&self) -> MutexGuard<'_, EngineStats> {
        lock(&self.stats)
    }

    /// The ledger, locked (once per batch or loop: never across an await).
    pub(crate) fn ledger(&self) -> MutexGuard<'_, Ledger> {
        lock(&self.ledger)
    }

    /// Tasks submitted and not yet finished.
    pub(crate) fn unfinished_count(&self) -> usize {
        self.ledger().unfinished_count()
    }
}

/// What the supervisor's metrics read at every scrape.
impl EngineProbe for EngineHandle {
    fn counters(&self) -> Vec<(&'static str, &'static str, u64)> {
        self.counters.snapshot().fields()
    }

    fn unfinished(&self) -> u64 {
        self.unfinished_count() as u64
    }

    fn reachable(&self) -> bool {
        self.contact.is_reachable()
    }

    fn failover_active(&self) -> bool {
        // Each failover is followed by at most one failback.
        let counters = self.counters.snapshot();
        counters.failovers > counters.failbacks
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic in another loop leaves plain counters and maps behind: go on with them.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
