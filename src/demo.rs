//! `turbomon demo`: two engines and a supervisor in one process on loopback, a few hundred tasks
//! on short intervals, statistics printed at a short interval. The remote engine sits behind a
//! simulated `wan` link, so the two statistics blocks show what a slow link does to loop time.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::{
    AlertConfig, AlertKind, CheckKind, EngineConfig, EngineEntry, GroupConfig, RelatorConfig,
    RuleConfig, SimOutcome, SupervisorConfig,
};
use crate::engine::Engine;
use crate::supervisor::{CountersSnapshot, Supervisor, SupervisorError, SupervisorOptions};

/// What the demo runs with.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Statistics window.
    pub stats_interval: Duration,
    /// Monitor loop period.
    pub status_check_interval: Duration,
    /// Batching on or off.
    pub turbo_monitoring: bool,
    /// Link profile for the remote engine (`none` for plain loopback).
    pub remote_link: String,
    /// Append statistics windows as JSON here.
    pub stats_json: Option<std::path::PathBuf>,
    /// Plaintext instead of mutual TLS with a throw-away CA.
    pub plaintext: bool,
}

impl Default for DemoOptions {
    fn default() -> Self {
        Self {
            stats_interval: Duration::from_secs(5),
            status_check_interval: Duration::from_secs(1),
            turbo_monitoring: true,
            remote_link: "wan".to_string(),
            stats_json: None,
            plaintext: false,
        }
    }
}

impl DemoOptions {
    /// Validates the options the way a configuration file is validated (the demo's
    /// configuration is built from them and checked), naming the flag of a bad value: a zero
    /// statistics window would print blocks without pause, an unknown link profile would fail
    /// at the first connection.
    pub fn check(&self) -> Result<(), DemoError> {
        let config = demo_config("127.0.0.1:1", "127.0.0.1:2", self);
        let error = match crate::config::validate_supervisor(&config, Path::new("demo")) {
            Ok(_) => return Ok(()),
            Err(error) => error,
        };
        let key = error.key.clone().unwrap_or_default();
        let flag = if key.ends_with("stats_interval") {
            "--stats-interval"
        } else if key.ends_with("status_check_interval") {
            "--status-check-interval"
        } else if key.ends_with(".link") {
            "--remote-link"
        } else {
            "demo"
        };
        Err(DemoError::Invalid {
            flag,
            reason: error.message,
        })
    }
}

/// Why the demo could not run.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// An engine could not bind or serve.
    #[error("engine: {0}")]
    Engine(String),
    /// The supervisor could not start.
    #[error(transparent)]
    Supervisor(#[from] SupervisorError),
    /// The throw-away certificates could not be made.
    #[error("certificates: {0}")]
    Pki(#[from] crate::pki::PkiError),
    /// An option is unusable, naming the flag.
    #[error("{flag}: {reason}")]
    Invalid {
        /// The flag.
        flag: &'static str,
        /// What is wrong.
        reason: String,
    },
}

/// Counters per engine at the end of the demo.
pub type DemoSummary = Vec<(String, CountersSnapshot)>;

/// The demo's supervisor configuration for engines listening at `local` and `remote`.
pub fn demo_config(local: &str, remote: &str, options: &DemoOptions) -> SupervisorConfig {
    let nodes = |prefix: &str, n: usize| (1..=n).map(|i| format!("{prefix}-{i:03}")).collect();
    let sim = |name: &str, ms: u64, outcome: SimOutcome, value: f64| RuleConfig {
        timeout: Duration::from_secs(5),
        ..RuleConfig::sim(name.to_string(), Duration::from_millis(ms), outcome, value)
    };
    let port = local.rsplit(':').next().and_then(|p| p.parse().ok());
    let relator =
        |name: &str, group: &str, rules: &[&str], secs: u64, alerts: &[&str]| RelatorConfig {
            name: name.to_string(),
            group: group.to_string(),
            rules: rules.iter().map(|r| r.to_string()).collect(),
            interval: Some(Duration::from_secs(secs)),
            alerts: alerts.iter().map(|a| a.to_string()).collect(),
            ..RelatorConfig::default()
        };
    let engine = |name: &str, address: &str, link: Option<String>| EngineEntry {
        name: name.to_string(),
        address: address.to_string(),
        link,
        ..EngineEntry::default()
    };
    let remote_link = Some(options.remote_link.clone()).filter(|l| l != "none");
    SupervisorConfig {
        turbo_monitoring: options.turbo_monitoring,
        status_check_interval: options.status_check_interval,
        stats_interval: options.stats_interval,
        // A free loopback port, logged at start: never a fixed one.
        metrics_listen: "127.0.0.1:0".to_string(),
        engines: vec![
            engine("local", local, None),
            engine("remote", remote, remote_link),
        ],
        groups: vec![
            GroupConfig {
                name: "datacenter".to_string(),
                engine: "local".to_string(),
                nodes: nodes("dc", 120),
            },
            GroupConfig {
                name: "branch-office".to_string(),
                engine: "remote".to_string(),
                nodes: nodes("branch", 80),
            },
            GroupConfig {
                name: "canaries".to_string(),
                engine: "remote".to_string(),
                nodes: nodes("canary", 2),
            },
        ],
        rules: vec![
            sim("cpu-load", 20, SimOutcome::Ok, 42.0),
            sim("disk-free", 5, SimOutcome::Ok, 73.0),
            sim("always-broken", 10, SimOutcome::Broken, 99.0),
            RuleConfig {
                name: "engine-port".to_string(),
                kind: CheckKind::Tcp,
                timeout: Duration::from_secs(2),
                host: Some("127.0.0.1".to_string()),
                port,
                duration: None,
                outcome: None,
                value: None,
                ..sim("engine-port", 0, SimOutcome::Ok, 0.0)
            },
        ],
        relators: vec![
            relator(
                "dc-health",
                "datacenter",
                &["cpu-load", "disk-free"],
                2,
                &[],
            ),
            relator("dc-port", "datacenter", &["engine-port"], 5, &[]),
            relator("branch-health", "branch-office", &["cpu-load"], 3, &[]),
            relator("canary", "canaries", &["always-broken"], 5, &["log"]),
        ],
        alerts: vec![AlertConfig {
            name: "log".to_string(),
            kind: AlertKind::Log,
            url: None,
            program: None,
            args: Vec::new(),
            ca: None,
            insecure_skip_verify: None,
            timeout: Duration::from_secs(5),
        }],
        ..SupervisorConfig::default()
    }
}

/// Run the demo until `shutdown` resolves; returns the counters per engine.
pub async fn run(
    options: DemoOptions,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<DemoSummary, DemoError> {
    options.check()?;
    // Mutual TLS as on a real site, with certificates that live as long as the demo.
    let pki = match options.plaintext {
        true => None,
        false => Some(crate::pki::ThrowawayPki::create()?),
    };
    let (stop_engines, engines_stopped) = watch::channel(false);
    let mut addresses = Vec::new();
    let mut servers = Vec::new();
    for _ in 0..2 {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| DemoError::Engine(e.to_string()))?;
        addresses.push(
            listener
                .local_addr()
                .map_err(|e| DemoError::Engine(e.to_string()))?
                .to_string(),
        );
        let engine = Engine::new(EngineConfig {
            tls: pki.as_ref().map(|pki| pki.engine.clone()),
            // The demo's metrics are the supervisor's; its engines serve none.
            metrics_listen: String::new(),
            ..EngineConfig::default()
        });
        let mut stopped = engines_stopped.clone();
        servers.push(tokio::spawn(engine.serve(listener, async move {
            let _ = stopped.wait_for(|s| *s).await;
        })));
    }
    let config = SupervisorConfig {
        tls: pki.as_ref().map(|pki| pki.supervisor.clone()),
        ..demo_config(&addresses[0], &addresses[1], &options)
    };
    tracing::info!(
        target: "turbomon::demo",
        local = %addresses[0],
        remote = %addresses[1],
        remote_link = %options.remote_link,
        tls = if pki.is_some() { "mutual TLS (throw-away CA)" } else { "plaintext" },
        "demo: engines `local` and `remote` listening; a few hundred tasks every few seconds, statistics every {}",
        humantime::format_duration(options.stats_interval)
    );
    let (_config_tx, config_rx) = watch::channel(Arc::new(config));
    let supervisor = Supervisor::start(
        config_rx,
        SupervisorOptions {
            stats_json: options.stats_json.clone(),
            observer: None,
            ..SupervisorOptions::default()
        },
    )?;
    if let Some(address) = supervisor.metrics_addr() {
        tracing::info!(target: "turbomon::demo", metrics = %format!("http://{address}/metrics"), "demo: supervisor metrics (Prometheus)");
    }
    shutdown.await;
    let summary = supervisor.shutdown().await;
    stop_engines.send_replace(true);
    for server in servers {
        server
            .await
            .map_err(|e| DemoError::Engine(e.to_string()))?
            .map_err(|e| DemoError::Engine(e.to_string()))?;
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_intervals_are_refused_naming_the_flag() {
        let zero_stats = DemoOptions {
            stats_interval: Duration::ZERO,
            ..DemoOptions::default()
        };
        let error = zero_stats.check().unwrap_err().to_string();
        assert!(error.starts_with("--stats-interval: "), "{error}");
        let zero_checks = DemoOptions {
            status_check_interval: Duration::ZERO,
            ..DemoOptions::default()
        };
        assert!(
            zero_checks
                .check()
                .unwrap_err()
                .to_string()
                .starts_with("--status-check-interval")
        );
        DemoOptions::default().check().unwrap();
    }

    #[test]
    fn an_unknown_link_profile_is_refused_naming_the_flag() {
        let options = DemoOptions {
            remote_link: "wann".into(),
            ..DemoOptions::default()
        };
        let error = options.check().unwrap_err().to_string();
        assert!(
            error.starts_with("--remote-link: unknown link profile `wann`"),
            "{error}"
        );
        for link in ["none", "lan", "satellite"] {
            let options = DemoOptions {
                remote_link: link.into(),
                ..DemoOptions::default()
            };
            options.check().unwrap_or_else(|e| panic!("{link}: {e}"));
        }
    }
}
