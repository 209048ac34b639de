//! turbomon: a batched monitoring-engine RPC service.
//!
//! A supervisor schedules monitoring tasks (one rule checked on one node), pools them into batches
//! and sends them over long-lived gRPC streams to engines, which run the checks and keep results
//! until collected. Per-loop time and packet-size statistics are printed every stats interval.
//!
//! Layout:
//! - [`proto`]: the generated gRPC API (`proto/turbomon/v1`).
//! - [`config`]: configuration files, validation and reload.
//! - [`stats`]: loop-time and packet-size histograms and the statistics report.
//! - [`check`]: the checks an engine runs (tcp, exec, http, sim).
//! - [`engine`]: the monitoring engine's gRPC server and task store.
//! - [`transport`]: how the supervisor dials an engine (plain TCP or a simulated link).
//! - [`throttle`]: bandwidth limits, pulse mode and time windows on what is sent to an engine.
//! - [`wire`]: the client side of the engine protocol (batches, streams, unary calls).
//! - [`link`]: the simulated link (latency, bandwidth, loss, faults).
//! - [`tls`]: mutual TLS between supervisor and engines; [`pki`]: certificates for it.
//! - [`supervisor`]: scheduling, submission and monitor loops, alerts.
//! - [`cluster`]: supervisors standing in for each other through etcd (`[cluster]`).
//! - [`metrics`]: Prometheus metrics of both sides, served at `/metrics` (`metrics_listen`).
//! - [`chaos`]: link cuts and engine restarts, counting lost and duplicated tasks.
//! - [`demo`]: supervisor and engines on loopback for a first look.
//! - [`bench`]: `turbomon bench` and `turbomon tune`: the batch-size trade-off measured.
//! - [`scale`]: `turbomon scale`: one supervisor measured against many engines.

#![warn(missing_docs, unreachable_pub, rust_2018_idioms)]

/// The generated gRPC API, package `turbomon.v1`.
#[allow(missing_docs, unreachable_pub)]
pub mod proto {
    tonic::include_proto!("turbomon.v1");

    /// The encoded descriptor set of `proto/turbomon/v1`, served by the engine's gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/turbomon_descriptor.bin"));

    impl TaskState {
        /// True for the states a task ends in: a check's result (OK, WARNING, BROKEN,
        /// PLUGIN_UNKNOWN), a failure to carry it out (FAILED, TIMED_OUT), or LOST_IN_RESTART.
        pub fn is_final(self) -> bool {
            matches!(
                self,
                TaskState::Ok
                    | TaskState::Warning
                    | TaskState::Broken
                    | TaskState::PluginUnknown
                    | TaskState::Failed
                    | TaskState::TimedOut
                    | TaskState::LostInRestart
            )
        }
    }
}

/// The version and git revision (`0.1.0 (rev 1a2b3c4d5e6f)`), for `--version` and start logs.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (rev ",
    env!("TURBOMON_GIT_REVISION"),
    ")"
);

pub mod bench;
pub mod chaos;
pub mod check;
pub mod cluster;
pub mod config;
pub mod demo;
pub mod engine;
pub mod link;
pub mod metrics;
pub mod pki;
pub mod scale;
pub mod stats;
pub mod supervisor;
pub mod throttle;
pub mod tls;
pub mod transport;
pub mod wire;
