//! Alert latency by status mode (`turbomon bench --status-mode poll,push`): a supervisor and an
//! engine in one process behind the link, a sim rule set to break, and the time from each
//! check's end on the engine to its alert firing, as the supervisor's lateness statistics record
//! it (stage broken→alert).

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};

use super::error::BenchError;
use super::plan::LinkChoice;
use crate::config::{
    AlertConfig, AlertKind, EngineConfig, EngineEntry, GroupConfig, RelatorConfig, RuleConfig,
    SimOutcome, StatusMode, SupervisorConfig,
};
use crate::engine::Engine;
use crate::pki::ThrowawayPki;
use crate::stats::Stage;
use crate::supervisor::{Supervisor, SupervisorOptions};

/// Status-check interval in these runs: poll mode's alert latency is bounded by it.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Alert latency figures in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AlertLatency {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Slowest.
    pub max: f64,
}

fn failed(what: &str, reason: impl std::fmt::Display) -> BenchError {
    BenchError::Combination {
        combination: what.to_string(),
        reason: reason.to_string(),
    }
}

/// Measure alert latency over `link` in `mode` with `samples` broken tasks whose ends are spread
/// over two poll intervals; over mutual TLS with a throw-away CA unless `plaintext`.
pub async fn measure(
    link: &LinkChoice,
    mode: StatusMode,
    samples: usize,
    plaintext: bool,
) -> Result<AlertLatency, BenchError> {
    let what = format!("alert latency over {} ({mode:?})", link.name);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| failed(&what, e))?;
    let address = listener.local_addr().map_err(|e| failed(&what, e))?;
    let pki = match plaintext {
        true => None,
        false => Some(ThrowawayPki::create().map_err(|e| failed(&what, e))?),
    };
    let engine = Engine::new(EngineConfig {
        tls: pki.as_ref().map(|pki| pki.engine.clone()),
        // In-process: no fixed metrics port.
        metrics_listen: String::new(),
        ..EngineConfig::default()
    });
    let (stop_engine, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(engine.serve(listener, async {
        let _ = stopped.await;
    }));
    let mut link_profiles = std::collections::BTreeMap::new();
    if let Some(profile) = &link.profile {
        link_profiles.insert("measured".to_string(), profile.clone());
    }
    let config = SupervisorConfig {
        status_mode: mode,
        status_check_interval: POLL_INTERVAL,
        stats_interval: Duration::from_secs(3600),
        // In-process: no fixed metrics port.
        metrics_listen: String::new(),
        engines: vec![EngineEntry {
            name: "e".to_string(),
            address: address.to_string(),
            link: link.profile.as_ref().map(|_| "measured".to_string()),
            ..EngineEntry::default()
        }],
        groups: vec![GroupConfig {
            name: "g".to_string(),
            engine: "e".to_string(),
            nodes: (0..samples).map(|i| format!("n{i}")).collect(),
        }],
        rules: vec![RuleConfig {
            timeout: Duration::from_secs(5),
            ..RuleConfig::sim(
                "breaks".to_string(),
                Duration::from_millis(10),
                SimOutcome::Broken,
                1.0,
            )
        }],
        relators: vec![RelatorConfig {
            name: "r".to_string(),
            group: "g".to_string(),
            rules: vec!["breaks".to_string()],
            interval: Some(Duration::from_secs(3600)),
            // Ends spread over two poll intervals, so poll mode shows its real distribution.
            start_window: Some(POLL_INTERVAL * 4),
            randomize: 50,
            alerts: vec!["quiet".to_string()],
            ..RelatorConfig::default()
        }],
        alerts: vec![AlertConfig {
            name: "quiet".to_string(),
            kind: AlertKind::Command,
            url: None,
            program: Some("true".to_string()),
            args: Vec::new(),
            ca: None,
            insecure_skip_verify: None,
            timeout: Duration::from_secs(5),
        }],
        tls: pki.as_ref().map(|pki| pki.supervisor.clone()),
        ..SupervisorConfig::default()
    };
    let (_tx, rx) = watch::channel(Arc::new(config));
    let (observer, mut done) = mpsc::unbounded_channel();
    let supervisor = Supervisor::start(
        rx,
        SupervisorOptions {
            observer: Some(observer),
            link_profiles,
            ..SupervisorOptions::default()
        },
    )
    .map_err(|e| failed(&what, e))?;
    let limit = POLL_INTERVAL * 4 + Duration::from_secs(20);
    let mut seen = 0;
    while seen < samples {
        match tokio::time::timeout(limit, done.recv()).await {
            Ok(Some(_)) => seen += 1,
            _ => break,
        }
    }
    let figures = supervisor
        .with_stats("e", |s| s.lateness.report())
        .and_then(|r| {
            r.stages
                .iter()
                .find(|(stage, _)| *stage == Stage::BrokenToAlert)
                .and_then(|(_, f)| *f)
        });
    supervisor.shutdown().await;
    let _ = stop_engine.send(());
    let _ = server.await;
    let figures = figures.ok_or_else(|| failed(&what, "no alert fired"))?;
    if seen < samples {
        return Err(failed(
            &what,
            format!("only {seen} of {samples} tasks ended"),
        ));
    }
    Ok(AlertLatency {
        p50: figures.p50.as_secs_f64(),
        p99: figures.p99.as_secs_f64(),
        max: figures.max.as_secs_f64(),
    })
}
