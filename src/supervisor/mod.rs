//! The supervising engine: expands relators into tasks on their schedules, submits them to each
//! engine in batches, checks their status, keeps every (relator, rule, node)'s state and
//! notifies its changes, and keeps the loop and packet statistics.
//!
//! - [`schedule`]: relators expanded into tasks, the stable splay, and the scheduler task that
//!   fires relators, takes retries and chains, and routes around engines that are down.
//! - `engine`: one engine's side: its submission, monitor and push loops, its ledger of
//!   unfinished tasks, its connection and statistics window.
//! - `states`: soft and hard states per (relator, rule, node), and what to notify (pure).
//! - `notification`: what a notification says (webhook body, command environment).
//! - [`alert`]: alert actions carrying notifications out.
//! - [`autosize`]: the automatic batch size, one controller per engine and kind of loop (pure).
//! - `counters`, `completion`: what is counted per engine, and the outcome handed to an
//!   observer.
//! - `trim`: freed memory handed back to the system periodically.
//!
//! Every request to an engine goes through [`crate::wire`]; only the reachability probe (gRPC
//! health) goes through [`crate::transport`] directly.

pub(crate) mod alert;
pub mod autosize;
mod completion;
mod counters;
mod engine;
mod notification;
pub mod schedule;
mod states;
mod trim;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

pub use completion::Completion;
pub use counters::CountersSnapshot;

use crate::config::SupervisorConfig;
use crate::metrics::{EngineProbe, MetricsError, MetricsServer, SupervisorMetrics};
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
        /// The engine's name in the configuration.
        engine: String,
        /// What is wrong.
        reason: String,
    },
    /// A file of `[tls]` cannot be used.
    #[error("[tls]: {0}")]
    Tls(#[from] crate::tls::TlsFileError),
    /// The metrics endpoint (`metrics_listen`) cannot be served.
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    /// `[cluster]` cannot be used.
    #[error("[cluster]: {0}")]
    Cluster(#[from] crate::cluster::EtcdError),
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
    engines: HashMap<String, Arc<engine::EngineHandle>>,
    states: Arc<Mutex<states::StateBook>>,
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
    /// The `/metrics` endpoint, while `metrics_listen` is set; stops when dropped.
    metrics_server: Option<MetricsServer>,
    /// This supervisor's membership of its cluster (`[cluster]`).
    member: Option<crate::cluster::Member>,
}

impl Supervisor {
    /// Start scheduling and the per-engine loops, and serve `/metrics` on `metrics_listen`
    /// (unless empty). The configuration receiver is watched for reloads: turbo mode, batch
    /// sizes and intervals apply from each engine's next loop.
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
        let metrics = SupervisorMetrics::new();
        let metrics_server =
            MetricsServer::bind(&initial.metrics_listen, Arc::clone(metrics.registry()))?;
        let (stop, stop_rx) = watch::channel(false);
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let mut tasks = JoinSet::new();
        let alert_actions = alert::AlertActions::new(&initial.alerts);
        // One book for every engine: a failover moves a relator's tasks, not its states.
        let states = Arc::new(Mutex::new(states::StateBook::new(schedule::plan::watches(
            &plans,
        ))));
        let sessions = Arc::new(tokio::sync::Semaphore::new(initial.max_sessions.max(1)));
        let tls = match &initial.tls {
            Some(files) => {
                let tls = crate::tls::ClientTls::load(&files.client_files())?;
                // Renewed files take effect for new connections, within the period or at once
                // on SIGHUP; the watcher ends with the last dialer.
                drop(tls.spawn_watcher(crate::tls::RELOAD_PERIOD));
                let hangups = tls.reload_on_hangup();
                let mut stopping = stop_rx.clone();
                tasks.spawn(async move {
                    tokio::select! {
                        () = hangups => {}
                        _ = stopping.wait_for(|stop| *stop) => {}
                    }
                });
                Some(tls)
            }
            None => None,
        };
        // A cluster member runs only the engines assigned to it, each under its epoch.
        let (member, mut ownership) = match &initial.cluster {
            Some(cluster) => {
                let names = initial.engines.iter().map(|e| e.name.clone()).collect();
                let (member, receivers) =
                    crate::cluster::Member::start(cluster, &initial.supervisor_id, names)?;
                (Some(member), receivers.into_iter().map(Some).collect())
            }
            None => (None, vec![None; initial.engines.len()]),
        };
        let summary = Arc::new(Mutex::new(crate::stats::SummaryStats::new(
            initial.engines.len(),
        )));
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
            let handles = metrics.engine(&entry.name);
            let mut dialer = Dialer::new(&entry.address, link, initial.max_message_bytes)
                .map_err(|e| engine_error(e.to_string()))?
                .with_sessions(Arc::clone(&sessions))
                .with_keepalive(initial.keepalive_interval)
                .with_gauges(handles.connections)
                .with_throttle(crate::throttle::Throttle::new(
                    crate::throttle::BandwidthPolicy::of(entry),
                    crate::throttle::DayClock::local(),
                ));
            if let Some(tls) = &tls {
                dialer = dialer.with_tls(tls.clone(), entry.server_name.clone());
            }
            let counters = Arc::new(counters::DeliveryCounters::default());
            let (state, due) = engine::start(
                engine::Setup {
                    name: entry.name.clone(),
                    index,
                    dialer,
                    counters: Arc::clone(&counters),
                    plans: Arc::clone(&plans),
                    plan_index: Arc::clone(&plan_index),
                    events: events_tx.clone(),
                    states: Arc::clone(&states),
                    alert_actions: alert_actions.clone(),
                    observer: options.observer.clone(),
                    stats_json: options.stats_json.clone(),
                    summary: Arc::clone(&summary),
                    stats_mirror: handles.stats,
                    perfdata: handles.perfdata,
                    config: config.clone(),
                    stop: stop_rx.clone(),
                    supervisor_id: initial.supervisor_id.clone(),
                    ownership: ownership[index].take(),
                },
                &mut tasks,
            );
            let probe: Arc<dyn EngineProbe> = state.clone();
            metrics.watch(&entry.name, Arc::downgrade(&probe));
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
        tasks.spawn(trim::run(stop_rx.clone()));
        tasks.spawn(
            schedule::scheduler::Scheduler {
                plans,
                plan_engine,
                engines: outlets,
                batch_window: initial.batch_window,
                events: events_rx,
                stop: stop_rx,
                start_wall: std::time::SystemTime::now(),
                clustered: member.is_some(),
            }
            .run(),
        );
        Ok(Self {
            engines,
            states,
            stop,
            tasks,
            metrics_server,
            member,
        })
    }

    /// The address `/metrics` is served on (the port chosen when `metrics_listen` asked for
    /// port 0); `None` when `metrics_listen` is empty.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_server.as_ref().map(MetricsServer::addr)
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
            .and_then(|e| e.contact.dialer().link().cloned())
    }

    /// Tasks submitted to `engine` whose outcome is not known yet.
    pub fn unfinished(&self, engine: &str) -> Option<usize> {
        self.engines.get(engine).map(|e| e.unfinished_count())
    }

    /// How many (relator, rule, node)s have a state now, and the most there can be: rules ×
    /// nodes of every relator with alert actions (with the nodes chained runs reach).
    pub fn alert_states(&self) -> (usize, usize) {
        let book = self
            .states
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        (book.len(), book.capacity())
    }

    /// Read the current statistics window of one engine.
    pub fn with_stats<R>(&self, engine: &str, f: impl FnOnce(&EngineStats) -> R) -> Option<R> {
        self.engines.get(engine).map(|e| f(&e.stats()))
    }

    /// Stop scheduling, let the loops finish what they are doing, print a final statistics
    /// window per engine, and wait for everything to end. Returns each engine's final counters.
    pub async fn shutdown(mut self) -> Vec<(String, CountersSnapshot)> {
        // `/health` turns NOT_SERVING for the whole drain; the endpoint closes with `self`.
        if let Some(server) = &self.metrics_server {
            server.set_not_serving();
        }
        self.stop.send_replace(true);
        while let Some(result) = self.tasks.join_next().await {
            if let Err(e) = result
                && e.is_panic()
            {
                tracing::error!(target: "turbomon::supervisor", error = %e, "a supervisor loop panicked");
            }
        }
        // Only now that no loop works any more: the others take the engines over at once.
        if let Some(member) = self.member.take() {
            member.leave().await;
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
