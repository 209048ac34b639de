//! The supervisor configuration `turbomon scale` runs: T sim tasks a minute spread evenly over
//! N engines, one relator per engine firing every minute over its own group of nodes with R
//! rules each (a host with R checks), randomized over half the minute (as a real fleet's splay
//! would).

use std::net::SocketAddr;
use std::time::Duration;

use crate::config::{
    EngineEntry, GroupConfig, RelatorConfig, RuleConfig, SimOutcome, StatsReport, SupervisorConfig,
};

/// Every relator's interval: the rate is per minute.
pub const INTERVAL: Duration = Duration::from_secs(60);

/// What to generate.
#[derive(Debug, Clone)]
pub struct Workload {
    /// Tasks a minute over all engines.
    pub tasks_per_min: u64,
    /// Rules checked on every node (tasks of a node per firing).
    pub rules_per_node: usize,
    /// How long each sim check runs.
    pub check_duration: Duration,
    /// The statistics window.
    pub stats_interval: Duration,
}

/// Tasks a minute of engine `index` of `engines`: the rate divided evenly, the remainder going
/// one each to the first engines.
pub fn tasks_of(tasks_per_min: u64, engines: usize, index: usize) -> u64 {
    let engines = engines.max(1) as u64;
    tasks_per_min / engines + u64::from((index as u64) < tasks_per_min % engines)
}

/// The supervisor configuration for `workload` over the engines at `addresses`.
pub fn supervisor_config(workload: &Workload, addresses: &[SocketAddr]) -> SupervisorConfig {
    let engines = addresses.len();
    let mut config = SupervisorConfig {
        supervisor_id: "turbomon-scale".to_string(),
        stats_interval: workload.stats_interval,
        stats_report: StatsReport::Summary,
        metrics_listen: "127.0.0.1:0".to_string(),
        // Every engine may have a loop in flight at once.
        max_sessions: engines.max(1) * 4,
        rules: (0..workload.rules_per_node.max(1))
            .map(|r| sim_rule(r, workload.check_duration))
            .collect(),
        ..SupervisorConfig::default()
    };
    let rules: Vec<String> = config.rules.iter().map(|r| r.name.clone()).collect();
    for (i, address) in addresses.iter().enumerate() {
        config.engines.push(engine_entry(i, address));
        // Tasks of this engine, as whole nodes of every rule (the rate rounded down to them).
        let nodes = tasks_of(workload.tasks_per_min, engines, i) / rules.len() as u64;
        if nodes == 0 {
            // Fewer tasks than engines: the rest carry none (and are still connected).
            continue;
        }
        config.groups.push(GroupConfig {
            name: format!("g{i}"),
            engine: format!("e{i}"),
            nodes: (0..nodes).map(|n| format!("n{n}")).collect(),
        });
        config.relators.push(RelatorConfig {
            name: format!("r{i}"),
            group: format!("g{i}"),
            rules: rules.clone(),
            interval: Some(INTERVAL),
            randomize: 50,
            ..RelatorConfig::default()
        });
    }
    config
}

/// Sim rule number `r`: ok after `duration`.
fn sim_rule(r: usize, duration: Duration) -> RuleConfig {
    RuleConfig::sim(format!("sim{r}"), duration, SimOutcome::Ok, 1.0)
}

fn engine_entry(i: usize, address: &SocketAddr) -> EngineEntry {
    EngineEntry {
        name: format!("e{i}"),
        address: address.to_string(),
        ..EngineEntry::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_is_spread_over_the_engines_to_the_task() {
        let total: u64 = (0..7).map(|i| tasks_of(1_000, 7, i)).sum();
        assert_eq!(total, 1_000);
        assert_eq!(tasks_of(1_000, 7, 0), 143);
        assert_eq!(tasks_of(1_000, 7, 6), 142);
        let addresses: Vec<SocketAddr> = (0..3)
            .map(|i| SocketAddr::from(([127, 0, 0, 1], 7000 + i)))
            .collect();
        let workload = Workload {
            tasks_per_min: 24,
            rules_per_node: 2,
            check_duration: Duration::from_millis(5),
            stats_interval: Duration::from_secs(60),
        };
        let config = supervisor_config(&workload, &addresses);
        assert_eq!(config.engines.len(), 3);
        let nodes: usize = config.groups.iter().map(|g| g.nodes.len()).sum();
        assert_eq!(nodes, 12, "24 tasks of 2 rules each: 12 nodes");
        assert_eq!(config.rules.len(), 2);
        assert!(config.relators.iter().all(|r| r.rules == ["sim0", "sim1"]));
        let text = toml::to_string(&config).unwrap_or_else(|e| panic!("{e}"));
        assert!(text.contains("stats_report = \"summary\""), "{text}");
    }
}
