//! One engine's side of the supervisor. Each engine gets its own loops, all sharing one
//! [`EngineHandle`](handle::EngineHandle):
//!
//! - [`submit_loop`]: tasks due from the scheduler go out in submission loops;
//! - [`monitor_loop`]: every status-check interval, the unfinished tasks are asked for;
//! - [`push_loop`]: in push mode, completion notices as they happen;
//! - [`report`]: the statistics window, printed and reset every stats interval;
//! - the prober in [`connection`], which watches an engine that stopped answering;
//! - [`reconcile`]: at start and after every reconnect, before the loops go on, what the engine
//!   holds for this supervisor is collected or adopted.
//!
//! Each loop calls [`crate::wire`] to talk to the engine, hands what came back to the
//! [`ledger`], and applies what the ledger decided through [`effects`].

mod connection;
mod effects;
mod handle;
mod ledger;
mod monitor_loop;
mod push_loop;
mod reconcile;
mod report;
mod sizing;
mod submit_loop;
mod tunables;
mod unfinished;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

pub(crate) use connection::Contact;
pub(crate) use handle::EngineHandle;

use crate::config::SupervisorConfig;
use crate::metrics::PerfdataExport;
use crate::stats::{EngineStats, StatsMirror, SummaryStats};
use crate::supervisor::alert::AlertActions;
use crate::supervisor::completion::Completion;
use crate::supervisor::counters::DeliveryCounters;
use crate::supervisor::schedule::outgoing::Outgoing;
use crate::supervisor::schedule::plan::RelatorPlan;
use crate::supervisor::schedule::scheduler::ScheduleEvent;
use crate::supervisor::states::StateBook;
use crate::transport::Dialer;
use crate::wire::batch::BatchIds;

/// What one engine's loops need to start.
pub(crate) struct Setup {
    /// The engine's name.
    pub(crate) name: String,
    /// Its position in the configuration.
    pub(crate) index: usize,
    /// How it is dialled.
    pub(crate) dialer: Dialer,
    /// Its counters (the scheduler bumps some of them too).
    pub(crate) counters: Arc<DeliveryCounters>,
    /// Every relator's plan.
    pub(crate) plans: Arc<Vec<RelatorPlan>>,
    /// Plan index by relator name.
    pub(crate) plan_index: Arc<HashMap<String, usize>>,
    /// To the scheduler.
    pub(crate) events: mpsc::UnboundedSender<ScheduleEvent>,
    /// The state of every watched (relator, rule, node), shared by all engines.
    pub(crate) states: Arc<Mutex<StateBook>>,
    /// Alert actions by name.
    pub(crate) alert_actions: AlertActions,
    /// Receives every final outcome, when attached.
    pub(crate) observer: Option<mpsc::UnboundedSender<Completion>>,
    /// Append every statistics window as JSON here.
    pub(crate) stats_json: Option<PathBuf>,
    /// The summary of every engine's windows, shared by all engines.
    pub(crate) summary: Arc<Mutex<SummaryStats>>,
    /// Where its statistics are also recorded (the Prometheus metrics).
    pub(crate) stats_mirror: StatsMirror,
    /// Where exported performance data goes (the Prometheus metrics).
    pub(crate) perfdata: PerfdataExport,
    /// The configuration, reloaded.
    pub(crate) config: watch::Receiver<Arc<SupervisorConfig>>,
    /// Turns true when the supervisor stops.
    pub(crate) stop: watch::Receiver<bool>,
    /// The supervisor's id, as it started.
    pub(crate) supervisor_id: String,
    /// Cluster: the engine's epoch while this member runs it (none: another member's). Unset
    /// without a cluster: the engine is always run here.
    pub(crate) ownership: Option<watch::Receiver<Option<u64>>>,
}

/// Start one engine's loops on `tasks`. Tasks due for the engine go into the returned sender.
pub(crate) fn start(
    setup: Setup,
    tasks: &mut JoinSet<()>,
) -> (Arc<EngineHandle>, mpsc::UnboundedSender<Vec<Outgoing>>) {
    let (due_tx, due_rx) = mpsc::unbounded_channel();
    let contact = Arc::new(Contact::new(
        setup.name.clone(),
        setup.index,
        setup.dialer,
        setup.events.clone(),
        setup.config.clone(),
        setup.stop.clone(),
    ));
    let gate = Arc::new(tokio::sync::RwLock::new(()));
    // Held from the start: no loop works before the first reconciliation.
    let first_reconcile = Arc::clone(&gate)
        .try_write_owned()
        .expect("a new lock is free");
    let engine = Arc::new(EngineHandle {
        index: setup.index,
        supervisor_id: setup.supervisor_id,
        gate,
        running: std::sync::atomic::AtomicBool::new(setup.ownership.is_none()),
        epoch: std::sync::atomic::AtomicU64::new(0),
        wake_monitor: tokio::sync::Notify::new(),
        contact: Arc::clone(&contact),
        counters: Arc::clone(&setup.counters),
        batch_ids: BatchIds::default(),
        plans: Arc::clone(&setup.plans),
        stats: Mutex::new(
            EngineStats::new(setup.name.clone(), SystemTime::now()).with_mirror(setup.stats_mirror),
        ),
        ledger: Mutex::new(ledger::Ledger::new(
            setup.name.clone(),
            setup.plans,
            setup.plan_index,
            setup.states,
            setup.counters,
            setup.observer.is_some(),
        )),
        outlets: handle::Outlets {
            resend: due_tx.clone(),
            events: setup.events,
            alert_actions: setup.alert_actions,
            observer: setup.observer,
            perfdata: setup.perfdata,
        },
    });
    tasks.spawn(connection::probe_while_unreachable(
        contact,
        setup.stop.clone(),
    ));
    let mut source = tunables::TunablesSource::new(setup.name, setup.config, true);
    let handle = Arc::clone(&engine);
    tasks.spawn(async move {
        let engine = &*handle;
        let stop = setup.stop;
        let loops = futures::future::join4(
            reconcile::run(
                engine,
                first_reconcile,
                setup.ownership,
                source.quiet(),
                stop.clone(),
            ),
            submit_loop::run(engine, due_rx, source.quiet(), stop.clone()),
            monitor_loop::run(engine, source.quiet(), stop.clone()),
            push_loop::run(engine, source.quiet(), stop.clone()),
        );
        tokio::pin!(loops);
        let stats_json = setup.stats_json.as_deref();
        let summary = &*setup.summary;
        tokio::select! {
            _ = &mut loops => {}
            () = report::run(engine, &mut source, stop, stats_json, summary) => {
                // Stopping: let the loops finish what is in flight before the final window.
                loops.await;
            }
        }
        report::print_window(engine, &mut source, stats_json, summary);
    });
    (engine, due_tx)
}
