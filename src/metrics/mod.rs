//! Prometheus metrics of the supervisor and the engine (prometheus-client), served over HTTP at
//! `/metrics` on each side's `metrics_listen` address, in the OpenMetrics text format. Every
//! name starts with `turbomon_`, is in base units (seconds, bytes), and counters end in
//! `_total`.
//!
//! - `server`: the HTTP endpoint ([`MetricsServer`]), content negotiation, encoding.
//! - `histogram`: [`AtomicHistogram`], a lock-free histogram and the bucket layouts.
//! - `sampled`: families read when scraped from values kept elsewhere.
//! - `supervisor`: [`SupervisorMetrics`], per engine of the supervisor.
//! - `engine`: [`EngineMetrics`], the engine's own.

mod engine;
mod histogram;
mod perfdata;
mod sampled;
mod server;
mod supervisor;

pub use engine::{CHECK_KINDS, EngineMetrics, HeldTasks, RefusalReason};
pub use histogram::{AtomicHistogram, bytes_buckets, seconds_buckets};
pub use perfdata::{MAX_SERIES as MAX_PERFDATA_SERIES, PerfdataExport, base_unit};
pub use sampled::{Labels, Sampled, SampledFamily, SampledKind};
pub use server::{
    Format, METRICS_LISTEN_KEY, METRICS_PATH, MetricsError, MetricsServer,
    OPENMETRICS_CONTENT_TYPE, PROMETHEUS_TEXT_CONTENT_TYPE, negotiate, render,
};
pub use supervisor::{EngineMetricsHandles, EngineProbe, SupervisorMetrics};
