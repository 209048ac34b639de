//! The supervisor's metrics, every one labelled by `engine`:
//!
//! - `turbomon_supervisor_loop_duration_seconds{kind}` and
//!   `turbomon_supervisor_packet_size_bytes{kind}` (`kind` = `submission` | `monitor`),
//!   `turbomon_supervisor_lateness_seconds{stage}` and
//!   `turbomon_supervisor_failed_loops_total{kind}`: recorded by the statistics window itself
//!   through its [`StatsMirror`], so they grow by exactly what each window reports;
//! - `turbomon_supervisor_<counter>_total`: one counter per field of the supervisor's
//!   `CountersSnapshot`, read from it at every scrape;
//! - gauge `turbomon_supervisor_batch_size{kind}`: the batch size the next loop runs with (the
//!   configured one, or the automatic choice), set by the statistics window's mirror;
//! - gauges `turbomon_supervisor_unfinished_tasks`, `_engine_reachable`, `_failover_active`
//!   (read at every scrape), `_open_connections` and `_batches_in_flight` (kept by the engine's
//!   dialer and streams).
//!
//! Handles are resolved once per engine ([`SupervisorMetrics::engine`]); recording never hashes
//! labels.

use std::sync::{Arc, RwLock, Weak};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

use super::histogram::AtomicHistogram;
use super::perfdata::PerfdataExport;
use super::sampled::{Sampled, SampledFamily, SampledKind};
use crate::stats::{LoopMirror, Stage, StatsMirror};
use crate::transport::ConnectionGauges;

/// What the metrics read from one engine's side of the supervisor at every scrape.
pub trait EngineProbe: Send + Sync {
    /// Every delivery and scheduling counter as (name, description, value).
    fn counters(&self) -> Vec<(&'static str, &'static str, u64)>;
    /// Tasks submitted whose outcome is not known yet.
    fn unfinished(&self) -> u64;
    /// Whether the engine answered last time it was asked.
    fn reachable(&self) -> bool;
    /// Whether the engine's new tasks go to its backup now.
    fn failover_active(&self) -> bool;
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EngineLabels {
    engine: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    engine: String,
    kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageLabels {
    engine: String,
    stage: &'static str,
}

type Histograms<L> = Family<L, AtomicHistogram, fn() -> AtomicHistogram>;

/// The probes of the engines started so far, by name.
type Probes = Arc<RwLock<Vec<(String, Weak<dyn EngineProbe>)>>>;

/// The supervisor's registry and the families recorded into.
#[derive(Debug)]
pub struct SupervisorMetrics {
    registry: Arc<Registry>,
    loop_duration: Histograms<KindLabels>,
    packet_size: Histograms<KindLabels>,
    lateness: Histograms<StageLabels>,
    failed_loops: Family<KindLabels, Counter>,
    batch_size: Family<KindLabels, Gauge>,
    open_connections: Family<EngineLabels, Gauge>,
    batches_in_flight: Family<EngineLabels, Gauge>,
    perfdata: PerfdataExport,
    probes: Probes,
}

/// One engine's handles, resolved once when its loops start.
#[derive(Debug, Clone)]
pub struct EngineMetricsHandles {
    /// For its statistics window ([`crate::stats::EngineStats::with_mirror`]).
    pub stats: StatsMirror,
    /// For its dialer ([`crate::transport::Dialer::with_gauges`]).
    pub connections: ConnectionGauges,
    /// For the performance data of relators with `export_perfdata` (shared by all engines).
    pub perfdata: PerfdataExport,
}

impl Default for SupervisorMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl SupervisorMetrics {
    /// Every family registered, no engine yet.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let loop_duration = Histograms::<KindLabels>::new_with_constructor(
            AtomicHistogram::seconds as fn() -> AtomicHistogram,
        );
        registry.register_with_unit(
            "turbomon_supervisor_loop_duration",
            "Completed submission and monitor loops: first batch sent to last reply received",
            Unit::Seconds,
            loop_duration.clone(),
        );
        let packet_size = Histograms::<KindLabels>::new_with_constructor(
            AtomicHistogram::bytes as fn() -> AtomicHistogram,
        );
        registry.register_with_unit(
            "turbomon_supervisor_packet_size",
            "Batch exchanges: request plus reply, protobuf bytes and gRPC message headers",
            Unit::Bytes,
            packet_size.clone(),
        );
        let lateness = Histograms::<StageLabels>::new_with_constructor(
            AtomicHistogram::seconds as fn() -> AtomicHistogram,
        );
        registry.register_with_unit(
            "turbomon_supervisor_lateness",
            "Time tasks spent in each stage: scheduled_to_sent, sent_to_started, \
             started_to_finished, finished_to_known, broken_to_alert",
            Unit::Seconds,
            lateness.clone(),
        );
        let failed_loops = Family::<KindLabels, Counter>::default();
        registry.register(
            "turbomon_supervisor_failed_loops",
            "Submission and monitor loops that did not complete (not timed)",
            failed_loops.clone(),
        );
        let batch_size = Family::<KindLabels, Gauge>::default();
        registry.register(
            "turbomon_supervisor_batch_size",
            "Tasks (submission) or ids (monitor) per batch in force: the configured size, or \
             the one the automatic controller chose",
            batch_size.clone(),
        );
        let open_connections = Family::<EngineLabels, Gauge>::default();
        registry.register(
            "turbomon_supervisor_open_connections",
            "Connections to the engine open now",
            open_connections.clone(),
        );
        let batches_in_flight = Family::<EngineLabels, Gauge>::default();
        registry.register(
            "turbomon_supervisor_batches_in_flight",
            "Batches (turbo off: calls) sent to the engine and not answered yet",
            batches_in_flight.clone(),
        );
        let perfdata = PerfdataExport::register(&mut registry);
        let probes = Probes::default();
        let read = Arc::clone(&probes);
        registry.register_collector(Box::new(Sampled(move || sample(&read))));
        Self {
            registry: Arc::new(registry),
            loop_duration,
            packet_size,
            lateness,
            failed_loops,
            batch_size,
            open_connections,
            batches_in_flight,
            perfdata,
            probes,
        }
    }

    /// The registry, to serve.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// The handles of engine `name` (created now, so its series exist from the start).
    pub fn engine(&self, name: &str) -> EngineMetricsHandles {
        let mirror = |kind: &'static str| LoopMirror {
            seconds: Some(
                self.loop_duration
                    .get_or_create_owned(&kind_labels(name, kind)),
            ),
            bytes: Some(
                self.packet_size
                    .get_or_create_owned(&kind_labels(name, kind)),
            ),
            failed: Some(
                self.failed_loops
                    .get_or_create_owned(&kind_labels(name, kind)),
            ),
            batch_size: Some(
                self.batch_size
                    .get_or_create_owned(&kind_labels(name, kind)),
            ),
        };
        let engine = EngineLabels {
            engine: name.to_string(),
        };
        EngineMetricsHandles {
            stats: StatsMirror {
                submission: mirror(SUBMISSION),
                monitor: mirror(MONITOR),
                lateness: Stage::ALL.map(|stage| {
                    Some(self.lateness.get_or_create_owned(&StageLabels {
                        engine: name.to_string(),
                        stage: stage.key(),
                    }))
                }),
            },
            connections: ConnectionGauges {
                open_connections: self.open_connections.get_or_create_owned(&engine),
                in_flight: self.batches_in_flight.get_or_create_owned(&engine),
            },
            perfdata: self.perfdata.clone(),
        }
    }

    /// Read `probe` for engine `name` at every scrape, while it lives.
    pub fn watch(&self, name: &str, probe: Weak<dyn EngineProbe>) {
        self.probes
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((name.to_string(), probe));
    }
}

/// `kind` label of submission loops.
const SUBMISSION: &str = "submission";
/// `kind` label of monitor loops.
const MONITOR: &str = "monitor";

fn kind_labels(engine: &str, kind: &'static str) -> KindLabels {
    KindLabels {
        engine: engine.to_string(),
        kind,
    }
}

/// The families read from the probes now: one counter family per delivery counter, then the
/// gauges, each with one sample per live engine.
fn sample(probes: &RwLock<Vec<(String, Weak<dyn EngineProbe>)>>) -> Vec<SampledFamily> {
    let probes = probes
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let live: Vec<(&str, Arc<dyn EngineProbe>)> = probes
        .iter()
        .filter_map(|(name, probe)| Some((name.as_str(), probe.upgrade()?)))
        .collect();
    let Some((_, first)) = live.first() else {
        return Vec::new();
    };
    let labels = |engine: &str| vec![("engine", engine.to_string())];
    let mut families: Vec<SampledFamily> = first
        .counters()
        .into_iter()
        .map(|(name, description, _)| SampledFamily {
            name: format!("turbomon_supervisor_{name}"),
            help: description.trim().to_string(),
            kind: SampledKind::Counter,
            samples: Vec::new(),
        })
        .collect();
    let gauges = [
        (
            "turbomon_supervisor_unfinished_tasks",
            "Tasks submitted to the engine whose outcome is not known yet",
        ),
        (
            "turbomon_supervisor_engine_reachable",
            "1 when the engine answered last time it was asked, else 0",
        ),
        (
            "turbomon_supervisor_failover_active",
            "1 while the engine's new tasks go to its backup, else 0",
        ),
    ];
    let first_gauge = families.len();
    families.extend(gauges.iter().map(|(name, help)| SampledFamily {
        name: (*name).to_string(),
        help: (*help).to_string(),
        kind: SampledKind::Gauge,
        samples: Vec::new(),
    }));
    for (engine, probe) in &live {
        for (family, (_, _, value)) in families.iter_mut().zip(probe.counters()) {
            family.samples.push((labels(engine), value));
        }
        let values = [
            probe.unfinished(),
            u64::from(probe.reachable()),
            u64::from(probe.failover_active()),
        ];
        for (family, value) in families[first_gauge..].iter_mut().zip(values) {
            family.samples.push((labels(engine), value));
        }
    }
    families
}
