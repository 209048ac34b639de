//! Supervisor configuration text for tests, and a supervisor started on it with an observer of
//! its completions.

use std::fmt::Display;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use turbomon::config::SupervisorConfig;
use turbomon::supervisor::{Completion, Supervisor, SupervisorOptions};

/// Node names `n0`, `n1`, … for `count` nodes.
pub fn node_names(count: usize) -> Vec<String> {
    (0..count).map(|i| format!("n{i}")).collect()
}

/// Engine `e1` at `address` and group `g` of `nodes` on it.
pub fn engine_and_group(address: impl Display, nodes: &[impl AsRef<str>]) -> String {
    engine_lines_and_group(address, "", nodes)
}

fn engine_lines_and_group(
    address: impl Display,
    engine: &str,
    nodes: &[impl AsRef<str>],
) -> String {
    let nodes: Vec<String> = nodes
        .iter()
        .map(|n| format!("\"{}\"", n.as_ref()))
        .collect();
    format!(
        r#"
[[engines]]
name = "e1"
address = "{address}"
{engine}

[[groups]]
name = "g"
engine = "e1"
nodes = [{}]
"#,
        nodes.join(", ")
    )
}

/// Lines added to the tables of [`one_engine_config`].
#[derive(Debug, Default, Clone, Copy)]
pub struct Extra<'a> {
    /// Top-level keys.
    pub top: &'a str,
    /// Keys of engine `e1`.
    pub engine: &'a str,
    /// Keys of rule `sim`.
    pub rule: &'a str,
    /// Keys of relator `r`.
    pub relator: &'a str,
}

/// Engine `e1` at `address`, group `g` of `nodes`, rule `sim` (kind sim) and relator `r` running
/// it on `g` with `interval = "1h"` (so only the firing at start happens in a test) and no splay.
pub fn one_engine_config(address: impl Display, nodes: &[impl AsRef<str>], extra: Extra) -> String {
    format!(
        r#"
{top}
{fleet}
[[rules]]
name = "sim"
kind = "sim"
{rule}

[[relators]]
name = "r"
group = "g"
rules = ["sim"]
randomize = 0
interval = "1h"
{relator}
"#,
        top = extra.top,
        fleet = engine_lines_and_group(address, extra.engine, nodes),
        rule = extra.rule,
        relator = extra.relator,
    )
}

/// Parses and validates `text`.
pub fn parse(text: &str) -> SupervisorConfig {
    turbomon::config::parse_supervisor(text, Path::new("test.toml"))
        .unwrap_or_else(|e| panic!("test config is valid: {e}"))
}

/// Parses `text` without validating it: for configs that name link profiles only the test
/// defines.
pub fn parse_unvalidated(text: &str) -> SupervisorConfig {
    toml::from_str(text).expect("test config parses")
}

/// A started supervisor, the sender that reloads its configuration, and its final outcomes.
pub type Started = (
    Supervisor,
    watch::Sender<Arc<SupervisorConfig>>,
    mpsc::UnboundedReceiver<Completion>,
);

/// Starts a supervisor on `config` with default options and an observer.
pub fn start_supervisor(config: SupervisorConfig) -> Started {
    start_supervisor_with(config, SupervisorOptions::default())
}

/// Starts a supervisor on `config` with `options` and an observer (replacing any in `options`).
/// A `metrics_listen` left at its default (a fixed port) is turned off: tests run side by side
/// and never bind a fixed port; a test that scrapes sets `metrics_listen = "127.0.0.1:0"`.
pub fn start_supervisor_with(mut config: SupervisorConfig, options: SupervisorOptions) -> Started {
    if config.metrics_listen == turbomon::config::defaults::supervisor_metrics_listen() {
        config.metrics_listen = String::new();
    }
    let (tx, rx) = watch::channel(Arc::new(config));
    let (observer, completions) = mpsc::unbounded_channel();
    let supervisor = Supervisor::start(
        rx,
        SupervisorOptions {
            observer: Some(observer),
            ..options
        },
    )
    .expect("supervisor starts");
    (supervisor, tx, completions)
}

/// The next final outcome, within `limit`.
pub async fn next_completion(
    completions: &mut mpsc::UnboundedReceiver<Completion>,
    limit: Duration,
) -> Completion {
    tokio::time::timeout(limit, completions.recv())
        .await
        .unwrap_or_else(|_| panic!("no completion within {limit:?}"))
        .expect("observer open")
}

/// The next `count` final outcomes, each within `limit` of the one before.
pub async fn take_completions(
    completions: &mut mpsc::UnboundedReceiver<Completion>,
    count: usize,
    limit: Duration,
) -> Vec<Completion> {
    let mut taken = Vec::with_capacity(count);
    while taken.len() < count {
        taken.push(next_completion(completions, limit).await);
    }
    taken
}

/// Engine `primary` at `primary` with `standby` at `backup` as its backup (failing over after
/// `failover_after`), group `g` of nodes `a` and `b` on the primary, and rule `sim` run on it
/// every 100 ms; statuses asked every 50 ms.
pub fn failover_config(
    primary: impl Display,
    backup: impl Display,
    failover_after: &str,
) -> String {
    format!(
        r#"
status_check_interval = "50ms"
batch_window = "10ms"
[[engines]]
name = "primary"
address = "{primary}"
backup = "standby"
failover_after = "{failover_after}"
[[engines]]
name = "standby"
address = "{backup}"
[[groups]]
name = "g"
engine = "primary"
nodes = ["a", "b"]
[[rules]]
name = "sim"
kind = "sim"
[[relators]]
name = "r"
group = "g"
rules = ["sim"]
interval = "100ms"
randomize = 0
"#
    )
}
