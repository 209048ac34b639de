//! The configuration files' shape: serde structs for `supervisor.toml` and `engine.toml`, with
//! their defaults in [`defaults`] (the turbo keys: batching on, 30 tasks per submission batch, 30
//! ids per status batch, a monitor loop every 10 s, statistics every 5 min). Loading, validation
//! and reload live in sibling modules.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use super::bandwidth::{Bandwidth, BandwidthWindow, ByteSize, Pulse, TimeOfDay};
pub use super::batch_size::BatchSize;

// === supervisor.toml ===

/// The whole supervisor file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SupervisorConfig {
    /// Batching on (long-lived streams) or off (one unary call per task on a new connection).
    #[serde(default = "defaults::turbo_monitoring")]
    pub turbo_monitoring: bool,
    /// Tasks per submission batch, or `"auto"` (chosen per loop from what it measures).
    #[serde(default = "defaults::batch_size")]
    pub task_submit_batch_size: BatchSize,
    /// Task ids per status-check batch, or `"auto"`; a warning is logged at 100 and above.
    #[serde(default = "defaults::batch_size")]
    pub task_info_batch_size: BatchSize,
    /// With `"auto"`: the smallest batch size the controller may choose.
    #[serde(default = "defaults::batch_size_min")]
    pub batch_size_min: usize,
    /// With `"auto"`: the largest batch size the controller may choose (keep it within the
    /// engines' `max_batch_tasks`).
    #[serde(default = "defaults::batch_size_max")]
    pub batch_size_max: usize,
    /// How often the monitor loop queries unfinished tasks.
    #[serde(default = "defaults::status_check_interval", with = "humantime_serde")]
    pub status_check_interval: Duration,
    /// How often statistics are printed and reset.
    #[serde(default = "defaults::stats_interval", with = "humantime_serde")]
    pub stats_interval: Duration,
    /// Which statistics blocks a window prints: each engine's, one summary across all engines,
    /// or both (the summary only with two engines or more).
    #[serde(default)]
    pub stats_report: StatsReport,
    /// Batches in flight on one engine's stream at once.
    #[serde(default = "defaults::max_inflight_batches")]
    pub max_inflight_batches: usize,
    /// Turbo off: connections open to one engine at once.
    #[serde(default = "defaults::max_connections")]
    pub max_connections: usize,
    /// Largest gRPC message either side sends or accepts, in bytes.
    #[serde(default = "defaults::max_message_bytes")]
    pub max_message_bytes: usize,
    /// How long a batch (or a turbo-off call) may wait for its reply before it is sent again.
    #[serde(default = "defaults::batch_timeout", with = "humantime_serde")]
    pub batch_timeout: Duration,
    /// Tasks due within this span of each other go out in the same submission loop.
    #[serde(default = "defaults::batch_window", with = "humantime_serde")]
    pub batch_window: Duration,
    /// Default for relators: how often a failed or timed-out task is tried again.
    #[serde(default = "defaults::max_retries")]
    pub max_retries: u32,
    /// Default for relators: wait this long before a retry. Unset: the relator's start window
    /// divided by (max_retries + 1), at most 30 s, so every retry fits in the window.
    #[serde(default, with = "humantime_serde")]
    pub retry_period: Option<Duration>,
    /// How the supervisor learns that tasks finished: `poll` (status batches every
    /// `status_check_interval`) or `push` (the engine streams completions as they happen; the
    /// monitor loop still runs to reconcile).
    #[serde(default)]
    pub status_mode: StatusMode,
    /// Push mode: the engine gathers completions for this long before sending them together.
    #[serde(default = "defaults::push_flush_window", with = "humantime_serde")]
    pub push_flush_window: Duration,
    /// Batches (or turbo-off connections) in flight across all engines at once.
    #[serde(default = "defaults::max_sessions")]
    pub max_sessions: usize,
    /// Share of `max_sessions` no single engine may take, so one dead or slow engine cannot
    /// starve the others (0 to 90).
    #[serde(default = "defaults::reserved_percent")]
    pub reserved_percent: u8,
    /// Engines the supervisor sends tasks to.
    #[serde(default)]
    pub engines: Vec<EngineEntry>,
    /// Monitoring groups: named node lists.
    #[serde(default)]
    pub groups: Vec<GroupConfig>,
    /// Rules: what a task checks.
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
    /// Relators: rules × group on a schedule, with alert actions.
    #[serde(default)]
    pub relators: Vec<RelatorConfig>,
    /// Alert actions fired when a rule is broken.
    #[serde(default)]
    pub alerts: Vec<AlertConfig>,
    /// Mutual TLS to the engines. Unset: plaintext, which engines off loopback refuse.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<SupervisorTls>,
    /// HTTP/2 keep-alive pings on every engine connection, so a peer that vanished without
    /// closing (a pulled cable, a dead NAT entry) is noticed and the connection closed.
    #[serde(default = "defaults::keepalive_interval", with = "humantime_serde")]
    pub keepalive_interval: Duration,
    /// `host:port` serving Prometheus metrics over HTTP at `/metrics` (`127.0.0.1:0` picks a
    /// free port); empty: no metrics endpoint. Read at start only.
    #[serde(default = "defaults::supervisor_metrics_listen")]
    pub metrics_listen: String,
    /// This supervisor's identity, stamped on every task it sends: after a restart it lists and
    /// collects what the engines hold for it under this id. Default: the host name. Read at
    /// start only.
    #[serde(default = "defaults::supervisor_id")]
    pub supervisor_id: String,
    /// Supervisors standing in for each other through etcd. Unset: this supervisor runs every
    /// engine alone. Read at start only.
    #[serde(default)]
    pub cluster: Option<ClusterConfig>,
}

/// The supervisor's `[cluster]`: the etcd v3 servers its members register with, and this
/// member's name. Every member has the same engines, relators and `supervisor_id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// etcd client URLs, `host:port` or `http://host:port`.
    pub endpoints: Vec<String>,
    /// This member's name, unique in the cluster. Default: the host name.
    #[serde(default = "defaults::supervisor_id")]
    pub name: String,
    /// The member's etcd lease: a member gone is taken over about this long after its last
    /// renewal; a member that cannot renew stops its engines after two thirds of it.
    #[serde(default = "defaults::lease_ttl", with = "humantime_serde")]
    pub lease_ttl: Duration,
    /// Key prefix in etcd; members register under `PREFIX SUPERVISOR_ID/members/NAME`.
    #[serde(default = "defaults::cluster_prefix")]
    pub prefix: String,
}

/// The supervisor's `[tls]`: PEM files, re-read when they change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SupervisorTls {
    /// CA certificates an engine's certificate must chain to.
    pub ca: PathBuf,
    /// The supervisor's certificate chain, shown to engines.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
}

impl SupervisorTls {
    /// The files as the TLS layer takes them.
    pub fn client_files(&self) -> crate::tls::ClientTlsFiles {
        crate::tls::ClientTlsFiles {
            ca: self.ca.clone(),
            cert: self.cert.clone(),
            key: self.key.clone(),
        }
    }
}

/// One engine the supervisor talks to, with optional per-engine overrides of the turbo keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct EngineEntry {
    /// Name used by groups and in statistics.
    pub name: String,
    /// `host:port` of the engine's gRPC server; a host name is looked up at every connection.
    pub address: String,
    /// With `[tls]`: the name the engine's certificate must carry (default: the host of
    /// `address`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    /// Name of a simulated link profile to put between supervisor and engine (`lan`, `wan`,
    /// `lossy-wan`, `satellite`, `modem`), or `none`; see docs/DESIGN.md, The link model.
    #[serde(default)]
    pub link: Option<String>,
    /// Override of the top-level key of the same name.
    #[serde(default)]
    pub turbo_monitoring: Option<bool>,
    /// Override of the top-level key of the same name.
    #[serde(default)]
    pub task_submit_batch_size: Option<BatchSize>,
    /// Override of the top-level key of the same name.
    #[serde(default)]
    pub task_info_batch_size: Option<BatchSize>,
    /// Override of the top-level key of the same name.
    #[serde(default)]
    pub batch_size_min: Option<usize>,
    /// Override of the top-level key of the same name.
    #[serde(default)]
    pub batch_size_max: Option<usize>,
    /// Override of the top-level key of the same name.
    #[serde(default, with = "humantime_serde")]
    pub status_check_interval: Option<Duration>,
    /// Override of the top-level key of the same name.
    #[serde(default, with = "humantime_serde")]
    pub stats_interval: Option<Duration>,
    /// Override of the top-level key of the same name.
    #[serde(default)]
    pub max_inflight_batches: Option<usize>,
    /// Override of the top-level key of the same name.
    #[serde(default)]
    pub max_connections: Option<usize>,
    /// Override of the top-level key of the same name.
    #[serde(default)]
    pub status_mode: Option<StatusMode>,
    /// Another engine that takes this one's new tasks while this one is unreachable.
    #[serde(default)]
    pub backup: Option<String>,
    /// How long this engine must be unreachable before its tasks go to `backup` (default 30s).
    /// They return as soon as it answers health checks again.
    #[serde(default, with = "humantime_serde")]
    pub failover_after: Option<Duration>,
    /// Most bytes per second sent to this engine (everything on the wire: gRPC, HTTP/2 and TLS
    /// framing included), shared by its submission and monitor loops; unset: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bandwidth: Option<Bandwidth>,
    /// Pulse mode: send one `block` of bytes, wait `delay`, send the next.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pulse: Option<Pulse>,
    /// Daily windows, in the supervisor's local time, with their own `max_bandwidth`; outside
    /// them the engine's own `max_bandwidth` applies.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bandwidth_windows: Vec<BandwidthWindow>,
}

/// A named list of nodes, all served by one engine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupConfig {
    /// Group name, referenced by relators.
    pub name: String,
    /// Engine that runs this group's tasks.
    pub engine: String,
    /// Node names (host names or addresses); `{node}` in a rule is replaced by each.
    pub nodes: Vec<String>,
}

/// Which kind of check a rule runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckKind {
    /// Connect to host:port within the timeout.
    Tcp,
    /// Run a program; exit 0 is ok.
    Exec,
    /// HTTP GET; the expected status is ok.
    Http,
    /// Simulated: wait `duration`, report `outcome`.
    Sim,
}

/// Outcome a `sim` rule reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SimOutcome {
    /// The rule holds.
    #[default]
    Ok,
    /// The rule is broken (alerts fire).
    Broken,
    /// The check itself failed.
    Failed,
}

/// A rule: one check with its parameters. Which keys apply depends on `kind`; `{node}` in `host`,
/// `url` and `args` is replaced by the node's name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Rule name, referenced by relators.
    pub name: String,
    /// The check to run.
    pub kind: CheckKind,
    /// Per-task timeout.
    #[serde(default = "defaults::rule_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// tcp: host to connect to (default `{node}`).
    #[serde(default)]
    pub host: Option<String>,
    /// tcp: port to connect to.
    #[serde(default)]
    pub port: Option<u16>,
    /// exec: program to run.
    #[serde(default)]
    pub program: Option<String>,
    /// exec: its arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// http: URL to GET.
    #[serde(default)]
    pub url: Option<String>,
    /// http: expected status code (default 200).
    #[serde(default)]
    pub expect_status: Option<u16>,
    /// sim: how long the check takes.
    #[serde(default, with = "humantime_serde")]
    pub duration: Option<Duration>,
    /// sim: what it reports.
    #[serde(default)]
    pub outcome: Option<SimOutcome>,
    /// sim: the value it reports.
    #[serde(default)]
    pub value: Option<f64>,
    /// tcp, http: WARNING once the connect or response time reaches this.
    #[serde(default, with = "humantime_serde")]
    pub warning: Option<Duration>,
    /// tcp, http: BROKEN once the connect or response time reaches this.
    #[serde(default, with = "humantime_serde")]
    pub critical: Option<Duration>,
    /// http: PEM file of the CA certificates an https server must chain to, instead of the
    /// system's roots; read when the supervisor starts and sent with every task.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// http: accept any certificate (said in every result's message).
    #[serde(default)]
    pub insecure_skip_verify: Option<bool>,
    /// http: text the response body must contain.
    #[serde(default)]
    pub expect_body: Option<String>,
    /// http: follow up to 5 redirects.
    #[serde(default)]
    pub follow_redirects: Option<bool>,
}

impl RuleConfig {
    /// A `sim` rule: `duration` long, reporting `outcome` and `value`, with the default timeout.
    pub fn sim(
        name: impl Into<String>,
        duration: Duration,
        outcome: SimOutcome,
        value: f64,
    ) -> Self {
        Self {
            name: name.into(),
            kind: CheckKind::Sim,
            timeout: defaults::rule_timeout(),
            host: None,
            port: None,
            program: None,
            args: Vec::new(),
            url: None,
            expect_status: None,
            duration: Some(duration),
            outcome: Some(outcome),
            value: Some(value),
            warning: None,
            critical: None,
            ca: None,
            insecure_skip_verify: None,
            expect_body: None,
            follow_redirects: None,
        }
    }
}

/// Ties rules to a group, a schedule and alert actions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelatorConfig {
    /// Relator name; part of every task id.
    pub name: String,
    /// Monitoring group whose nodes are checked.
    pub group: String,
    /// Rules checked on every node.
    pub rules: Vec<String>,
    /// How often the relator fires. A relator without an interval runs only when another
    /// relator chains to it (`on_ok` / `on_broken`).
    #[serde(default, with = "humantime_serde")]
    pub interval: Option<Duration>,
    /// Span after each firing within which its tasks must start (default: the interval).
    /// Retries never go beyond it.
    #[serde(default, with = "humantime_serde")]
    pub start_window: Option<Duration>,
    /// Percentage (0 to 50) of the start window over which task starts are spread, by a
    /// stable hash of (relator, node), so thousands of tasks do not hit an engine at once.
    #[serde(default = "defaults::randomize")]
    pub randomize: u8,
    /// Retries of a failed or timed-out task (default: the top-level `max_retries`).
    #[serde(default)]
    pub max_retries: Option<u32>,
    /// Wait before a retry (default: the top-level `retry_period`).
    #[serde(default, with = "humantime_serde")]
    pub retry_period: Option<Duration>,
    /// Relators run on the same node as soon as a task of this one finishes ok.
    #[serde(default)]
    pub on_ok: Vec<String>,
    /// Relators run on the same node as soon as a task of this one finishes broken.
    #[serde(default)]
    pub on_broken: Vec<String>,
    /// What to do about firings missed while the engine was unreachable.
    #[serde(default)]
    pub catch_up: CatchUp,
    /// Order within a loop (high first) and shedding order under a cap (low first).
    #[serde(default)]
    pub priority: Priority,
    /// Alert actions notified when a (rule, node)'s hard state changes, recovers or stays bad
    /// past `renotify_interval`.
    #[serde(default)]
    pub alerts: Vec<String>,
    /// The bad states whose hard state change is a problem to notify (default: all three).
    #[serde(default = "defaults::alert_on")]
    pub alert_on: Vec<AlertOn>,
    /// Notify the same actions when a notified problem returns to OK.
    #[serde(default = "defaults::notify_recovery")]
    pub notify_recovery: bool,
    /// Remind every this long while a notified problem stays in the same state; unset: never.
    #[serde(default, with = "humantime_serde")]
    pub renotify_interval: Option<Duration>,
    /// Consecutive bad results (1 to 10) before a new bad state is hard and notified; until
    /// then it is soft, and a return to OK is silent.
    #[serde(default = "defaults::max_check_attempts")]
    pub max_check_attempts: u32,
    /// Keep the last value of every performance datum its checks report, per (rule, node,
    /// label), on the supervisor's metrics endpoint (`turbomon_check_perfdata`). Off by default
    /// so that series counts stay under control.
    #[serde(default)]
    pub export_perfdata: bool,
}

/// A bad state a relator notifies problems for (`alert_on`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertOn {
    /// A plugin's WARNING.
    Warning,
    /// A broken rule (a plugin's CRITICAL).
    Critical,
    /// The check could not tell: a plugin's UNKNOWN, or a task failed, timed out or lost in a
    /// restart after its retries.
    Unknown,
}

impl AlertOn {
    /// Every value, in the default order.
    pub const ALL: [AlertOn; 3] = [AlertOn::Warning, AlertOn::Critical, AlertOn::Unknown];

    /// The name in the configuration file.
    pub fn name(self) -> &'static str {
        match self {
            AlertOn::Warning => "warning",
            AlertOn::Critical => "critical",
            AlertOn::Unknown => "unknown",
        }
    }
}

/// How completions reach the supervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum StatusMode {
    /// Status batches every `status_check_interval`.
    #[default]
    Poll,
    /// The engine streams completion notices as tasks finish.
    Push,
}

/// Which statistics blocks are printed every window (`stats_report`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum StatsReport {
    /// One block per engine.
    Engines,
    /// One block across all engines, after the last engine closed its window.
    Summary,
    /// Each engine's block, then the summary (with two engines or more).
    #[default]
    Both,
}

impl StatsReport {
    /// Whether each engine's block is printed.
    pub fn engines(self) -> bool {
        matches!(self, StatsReport::Engines | StatsReport::Both)
    }

    /// Whether the summary block is printed.
    pub fn summary(self) -> bool {
        matches!(self, StatsReport::Summary | StatsReport::Both)
    }
}

/// Firings missed while an engine was unreachable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum CatchUp {
    /// Run only the next due firing; missed ones are counted and dropped.
    #[default]
    Skip,
    /// Run once now for the latest missed instant.
    Latest,
    /// Run every missed instant, at most one firing per relator every `batch_window` × 10.
    Replay,
}

/// A relator's priority.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// Sent first, shed last.
    High,
    /// The default.
    #[default]
    Normal,
    /// Sent last, shed first.
    Low,
}

/// What an alert action does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertKind {
    /// A log line per notification (target `turbomon::alert`): warn for a problem or a
    /// reminder, info for a recovery.
    Log,
    /// An HTTP POST of a JSON body to `url`.
    Webhook,
    /// Run `program` with `args`; the notification is passed in `TURBOMON_*` environment
    /// variables and as JSON on standard input.
    Command,
}

/// A named alert action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertConfig {
    /// Name, referenced by relators.
    pub name: String,
    /// What it does.
    pub kind: AlertKind,
    /// webhook: where to POST.
    #[serde(default)]
    pub url: Option<String>,
    /// command: program to run.
    #[serde(default)]
    pub program: Option<String>,
    /// command: its arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// webhook: PEM file of the CA certificates an https receiver must chain to, instead of the
    /// system's roots.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// webhook: accept any certificate.
    #[serde(default)]
    pub insecure_skip_verify: Option<bool>,
    /// webhook and command: give up after this long.
    #[serde(default = "defaults::alert_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

/// The turbo keys in force for one engine: top-level values with that engine's overrides applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tunables {
    /// Batching on or off.
    pub turbo_monitoring: bool,
    /// Tasks per submission batch, or automatic.
    pub task_submit_batch_size: BatchSize,
    /// Task ids per status batch, or automatic.
    pub task_info_batch_size: BatchSize,
    /// Smallest automatic batch size.
    pub batch_size_min: usize,
    /// Largest automatic batch size.
    pub batch_size_max: usize,
    /// Monitor loop period.
    pub status_check_interval: Duration,
    /// Statistics window.
    pub stats_interval: Duration,
    /// Batches in flight per stream.
    pub max_inflight_batches: usize,
    /// Turbo off: connections at once.
    pub max_connections: usize,
    /// Poll or push.
    pub status_mode: StatusMode,
}

impl SupervisorConfig {
    /// The tunables in force for `engine`: its overrides over the top-level values.
    pub fn tunables(&self, engine: &EngineEntry) -> Tunables {
        Tunables {
            turbo_monitoring: engine.turbo_monitoring.unwrap_or(self.turbo_monitoring),
            task_submit_batch_size: engine
                .task_submit_batch_size
                .unwrap_or(self.task_submit_batch_size),
            task_info_batch_size: engine
                .task_info_batch_size
                .unwrap_or(self.task_info_batch_size),
            batch_size_min: engine.batch_size_min.unwrap_or(self.batch_size_min),
            batch_size_max: engine.batch_size_max.unwrap_or(self.batch_size_max),
            status_check_interval: engine
                .status_check_interval
                .unwrap_or(self.status_check_interval),
            stats_interval: engine.stats_interval.unwrap_or(self.stats_interval),
            max_inflight_batches: engine
                .max_inflight_batches
                .unwrap_or(self.max_inflight_batches),
            max_connections: engine.max_connections.unwrap_or(self.max_connections),
            status_mode: engine.status_mode.unwrap_or(self.status_mode),
        }
    }
}

// === engine.toml ===

/// The whole engine file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineConfig {
    /// Address the gRPC server binds (`127.0.0.1:0` picks a free port).
    #[serde(default = "defaults::listen")]
    pub listen: String,
    /// Checks running at once; the rest wait as pending.
    #[serde(default = "defaults::max_concurrent_checks")]
    pub max_concurrent_checks: usize,
    /// Largest batch accepted; a larger one is refused with INVALID_ARGUMENT.
    #[serde(default = "defaults::max_batch_tasks")]
    pub max_batch_tasks: usize,
    /// Tasks held (pending, running or finished but not yet collected); beyond it new tasks are
    /// refused with RESOURCE_EXHAUSTED.
    #[serde(default = "defaults::max_held_tasks")]
    pub max_held_tasks: usize,
    /// Finished results nobody collected are dropped (and counted) after this long.
    #[serde(default = "defaults::result_retention", with = "humantime_serde")]
    pub result_retention: Duration,
    /// Largest gRPC message sent or accepted, in bytes.
    #[serde(default = "defaults::max_message_bytes")]
    pub max_message_bytes: usize,
    /// exec: bytes of output read; the message and the performance data come from them.
    #[serde(default = "defaults::output_limit_bytes")]
    pub output_limit_bytes: usize,
    /// Directory of the engine's journal (accepted tasks and finished results, kept across
    /// restarts). `None`: memory only, and a restart forgets every task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_dir: Option<PathBuf>,
    /// At shutdown, how long running checks get to finish before they are abandoned (and, with
    /// a journal, recorded as lost in restart).
    #[serde(default = "defaults::shutdown_grace", with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Completion notices buffered per push subscriber; beyond it that subscriber's notices are
    /// dropped (counted) rather than slowing the checks down.
    #[serde(default = "defaults::completion_buffer_notices")]
    pub completion_buffer_notices: usize,
    /// Mutual TLS: only supervisors whose certificate chains to `client_ca` are served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<EngineTls>,
    /// Serve plaintext on a non-loopback `listen` (anyone who reaches the port can submit
    /// tasks); warned about at every start.
    #[serde(default)]
    pub allow_plaintext: bool,
    /// Which programs `exec` checks may run.
    #[serde(default)]
    pub exec: ExecConfig,
    /// Every task's timeout is cut to this, whatever the supervisor asks.
    #[serde(default = "defaults::max_check_timeout", with = "humantime_serde")]
    pub max_check_timeout: Duration,
    /// Largest task accepted (its id, check and arguments, encoded); a larger one is refused.
    #[serde(default = "defaults::max_task_bytes")]
    pub max_task_bytes: usize,
    /// HTTP/2 keep-alive pings on every connection; a peer that does not answer one within
    /// 20 s is disconnected.
    #[serde(default = "defaults::keepalive_interval", with = "humantime_serde")]
    pub keepalive_interval: Duration,
    /// Connections open at once; beyond it a new one is closed at once and logged, so a flood
    /// of connections cannot take every file descriptor.
    #[serde(default = "defaults::max_open_connections")]
    pub max_open_connections: usize,
    /// `host:port` serving Prometheus metrics over HTTP at `/metrics` (`127.0.0.1:0` picks a
    /// free port); empty: no metrics endpoint. Served by [`crate::engine::Engine::serve_metrics`].
    #[serde(default = "defaults::engine_metrics_listen")]
    pub metrics_listen: String,
}

/// The engine's `[tls]`: PEM files, re-read when they change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineTls {
    /// The engine's certificate chain, valid for the names supervisors dial.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
    /// CA certificates a supervisor's certificate must chain to.
    pub client_ca: PathBuf,
}

impl EngineTls {
    /// The files as the TLS layer takes them.
    pub fn server_files(&self) -> crate::tls::ServerTlsFiles {
        crate::tls::ServerTlsFiles {
            cert: self.cert.clone(),
            key: self.key.clone(),
            client_ca: self.client_ca.clone(),
        }
    }
}

/// The engine's `[exec]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ExecConfig {
    /// Glob patterns over absolute program paths (`/usr/lib/nagios/plugins/*`). Empty: every
    /// exec check is refused.
    #[serde(default)]
    pub allow: Vec<String>,
}

impl Default for RelatorConfig {
    fn default() -> Self {
        Self {
            name: String::new(),
            group: String::new(),
            rules: Vec::new(),
            interval: None,
            start_window: None,
            randomize: defaults::randomize(),
            max_retries: None,
            retry_period: None,
            on_ok: Vec::new(),
            on_broken: Vec::new(),
            catch_up: CatchUp::default(),
            priority: Priority::default(),
            alerts: Vec::new(),
            alert_on: defaults::alert_on(),
            notify_recovery: defaults::notify_recovery(),
            renotify_interval: None,
            max_check_attempts: defaults::max_check_attempts(),
            export_perfdata: false,
        }
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            listen: defaults::listen(),
            max_concurrent_checks: defaults::max_concurrent_checks(),
            max_batch_tasks: defaults::max_batch_tasks(),
            max_held_tasks: defaults::max_held_tasks(),
            result_retention: defaults::result_retention(),
            max_message_bytes: defaults::max_message_bytes(),
            output_limit_bytes: defaults::output_limit_bytes(),
            state_dir: None,
            shutdown_grace: defaults::shutdown_grace(),
            completion_buffer_notices: defaults::completion_buffer_notices(),
            tls: None,
            allow_plaintext: false,
            exec: ExecConfig::default(),
            max_check_timeout: defaults::max_check_timeout(),
            max_task_bytes: defaults::max_task_bytes(),
            keepalive_interval: defaults::keepalive_interval(),
            max_open_connections: defaults::max_open_connections(),
            metrics_listen: defaults::engine_metrics_listen(),
        }
    }
}

impl Default for SupervisorConfig {
    fn default() -> Self {
        Self {
            supervisor_id: defaults::supervisor_id(),
            cluster: None,
            turbo_monitoring: defaults::turbo_monitoring(),
            task_submit_batch_size: defaults::batch_size(),
            task_info_batch_size: defaults::batch_size(),
            batch_size_min: defaults::batch_size_min(),
            batch_size_max: defaults::batch_size_max(),
            status_check_interval: defaults::status_check_interval(),
            stats_interval: defaults::stats_interval(),
            stats_report: StatsReport::default(),
            max_inflight_batches: defaults::max_inflight_batches(),
            max_connections: defaults::max_connections(),
            max_message_bytes: defaults::max_message_bytes(),
            batch_timeout: defaults::batch_timeout(),
            batch_window: defaults::batch_window(),
            max_retries: defaults::max_retries(),
            retry_period: None,
            status_mode: StatusMode::default(),
            push_flush_window: defaults::push_flush_window(),
            max_sessions: defaults::max_sessions(),
            reserved_percent: defaults::reserved_percent(),
            engines: Vec::new(),
            groups: Vec::new(),
            rules: Vec::new(),
            relators: Vec::new(),
            alerts: Vec::new(),
            tls: None,
            keepalive_interval: defaults::keepalive_interval(),
            metrics_listen: defaults::supervisor_metrics_listen(),
        }
    }
}

/// Default values, one function per key (serde wants functions).
pub mod defaults {
    use std::time::Duration;

    /// `turbo_monitoring`
    pub fn turbo_monitoring() -> bool {
        true
    }
    /// `task_submit_batch_size`, `task_info_batch_size`
    pub fn batch_size() -> super::BatchSize {
        super::BatchSize::Fixed(30)
    }
    /// `batch_size_min`
    pub fn batch_size_min() -> usize {
        1
    }
    /// `batch_size_max`: the engine's default `max_batch_tasks`.
    pub fn batch_size_max() -> usize {
        1000
    }
    /// `status_check_interval`
    pub fn status_check_interval() -> Duration {
        Duration::from_secs(10)
    }
    /// `stats_interval`
    pub fn stats_interval() -> Duration {
        Duration::from_secs(300)
    }
    /// `max_inflight_batches`: high enough that a normal loop is never serialised.
    pub fn max_inflight_batches() -> usize {
        64
    }
    /// `max_connections`
    pub fn max_connections() -> usize {
        10
    }
    /// `max_message_bytes`: 4 MiB, gRPC's usual cap.
    pub fn max_message_bytes() -> usize {
        4 * 1024 * 1024
    }
    /// `batch_timeout`
    pub fn batch_timeout() -> Duration {
        Duration::from_secs(30)
    }
    /// `batch_window`
    pub fn batch_window() -> Duration {
        Duration::from_millis(100)
    }
    /// `max_retries`
    pub fn max_retries() -> u32 {
        2
    }
    /// Longest `retry_period` derived when none is set.
    pub fn retry_period() -> Duration {
        Duration::from_secs(30)
    }
    /// `push_flush_window`
    pub fn push_flush_window() -> Duration {
        Duration::from_millis(5)
    }
    /// An engine's `failover_after`.
    pub fn failover_after() -> Duration {
        Duration::from_secs(30)
    }
    /// `max_sessions`
    pub fn max_sessions() -> usize {
        256
    }
    /// `reserved_percent`
    pub fn reserved_percent() -> u8 {
        20
    }
    /// A relator's `randomize`.
    pub fn randomize() -> u8 {
        25
    }
    /// A rule's `timeout`.
    pub fn rule_timeout() -> Duration {
        Duration::from_secs(10)
    }
    /// An alert's `timeout`.
    pub fn alert_timeout() -> Duration {
        Duration::from_secs(5)
    }
    /// A relator's `alert_on`: every bad state.
    pub fn alert_on() -> Vec<super::AlertOn> {
        super::AlertOn::ALL.to_vec()
    }
    /// A relator's `notify_recovery`.
    pub fn notify_recovery() -> bool {
        true
    }
    /// A relator's `max_check_attempts`.
    pub fn max_check_attempts() -> u32 {
        1
    }
    /// Engine `listen`.
    pub fn listen() -> String {
        "127.0.0.1:7300".to_string()
    }
    /// Engine `max_concurrent_checks`.
    pub fn max_concurrent_checks() -> usize {
        256
    }
    /// Engine `max_batch_tasks`.
    pub fn max_batch_tasks() -> usize {
        1000
    }
    /// Engine `max_held_tasks`.
    pub fn max_held_tasks() -> usize {
        100_000
    }
    /// Engine `result_retention`.
    pub fn result_retention() -> Duration {
        Duration::from_secs(3600)
    }
    /// Engine `shutdown_grace`.
    pub fn shutdown_grace() -> Duration {
        Duration::from_secs(10)
    }
    /// Engine `completion_buffer_notices`.
    pub fn completion_buffer_notices() -> usize {
        16_384
    }
    /// Engine `max_check_timeout`.
    pub fn max_check_timeout() -> Duration {
        Duration::from_secs(3600)
    }
    /// Engine `max_task_bytes`.
    pub fn max_task_bytes() -> usize {
        4096
    }
    /// Engine `max_open_connections`.
    pub fn max_open_connections() -> usize {
        1024
    }
    /// `keepalive_interval`, both sides.
    pub fn keepalive_interval() -> Duration {
        Duration::from_secs(30)
    }
    /// Supervisor `metrics_listen`: loopback only, so nothing is exposed unless asked for.
    pub fn supervisor_metrics_listen() -> String {
        "127.0.0.1:9464".to_string()
    }
    /// Engine `metrics_listen`: loopback only, the port after the supervisor's.
    pub fn engine_metrics_listen() -> String {
        "127.0.0.1:9465".to_string()
    }
    /// Engine `output_limit_bytes`.
    pub fn output_limit_bytes() -> usize {
        1024
    }
    /// Supervisor `supervisor_id`: this machine's host name (`supervisor` if it has none that
    /// can be used).
    pub fn supervisor_id() -> String {
        super::host_name()
            .filter(|name| !name.is_empty() && name.len() <= super::MAX_SUPERVISOR_ID_BYTES)
            .unwrap_or_else(|| "supervisor".to_string())
    }
    /// `[cluster] lease_ttl`.
    pub fn lease_ttl() -> Duration {
        Duration::from_secs(10)
    }
    /// `[cluster] prefix`.
    pub fn cluster_prefix() -> String {
        "/turbomon/".to_string()
    }
}

/// Longest `supervisor_id`, in bytes; engines refuse longer ones.
pub const MAX_SUPERVISOR_ID_BYTES: usize = 256;

/// The host name (`gethostname`), if it is valid UTF-8.
fn host_name() -> Option<String> {
    let mut buffer = [0u8; 256];
    // SAFETY: the pointer and length describe `buffer`, which outlives the call.
    let result = unsafe { libc::gethostname(buffer.as_mut_ptr().cast(), buffer.len()) };
    if result != 0 {
        return None;
    }
    let end = buffer.iter().position(|&b| b == 0).unwrap_or(buffer.len());
    let name = std::str::from_utf8(&buffer[..end]).ok()?.trim();
    Some(name.to_string())
}
