//! The one-paragraph summaries `turbomon check-config` prints for a valid file.

use std::path::Path;

use super::model::{EngineConfig, SupervisorConfig};

fn plural(count: usize, one: &str, many: &str) -> String {
    format!("{count} {}", if count == 1 { one } else { many })
}

/// What a valid supervisor file configures: tunables, engines with their overrides, counts,
/// and the tasks each relator fires.
pub(crate) fn supervisor(config: &SupervisorConfig, file: &Path) -> String {
    let mut out = format!(
        "Supervisor configuration {}: turbo {}, submission batches of {}, status batches of {}, \
         status check every {}, statistics every {}.",
        file.display(),
        if config.turbo_monitoring { "on" } else { "off" },
        config.task_submit_batch_size,
        config.task_info_batch_size,
        humantime::format_duration(config.status_check_interval),
        humantime::format_duration(config.stats_interval),
    );
    let engines: Vec<String> = config
        .engines
        .iter()
        .map(|engine| {
            let t = config.tunables(engine);
            let link = engine
                .link
                .as_deref()
                .map(|l| format!(" over link {l}"))
                .unwrap_or_default();
            let mode = if t.turbo_monitoring {
                format!(
                    "turbo, batches {}/{}",
                    t.task_submit_batch_size, t.task_info_batch_size
                )
            } else {
                format!("turbo off, {} connections", t.max_connections)
            };
            format!("{} at {}{link} ({mode})", engine.name, engine.address)
        })
        .collect();
    out.push_str(&format!(
        " {}{}{}.",
        plural(config.engines.len(), "engine", "engines"),
        if engines.is_empty() { "" } else { ": " },
        engines.join("; ")
    ));
    out.push_str(&format!(
        " {}, {}, {}, {}.",
        plural(config.groups.len(), "group", "groups"),
        plural(config.rules.len(), "rule", "rules"),
        plural(config.relators.len(), "relator", "relators"),
        plural(config.alerts.len(), "alert", "alerts"),
    ));
    let mut per_minute = 0.0_f64;
    let firings: Vec<String> = config
        .relators
        .iter()
        .map(|relator| {
            let group = config.groups.iter().find(|g| g.name == relator.group);
            let nodes = group.map(|g| g.nodes.len()).unwrap_or(0);
            let tasks = relator.rules.len() * nodes;
            let seconds = relator.interval.map_or(0.0, |i| i.as_secs_f64());
            if seconds > 0.0 {
                per_minute += tasks as f64 * 60.0 / seconds;
            }
            format!(
                "{} {} × {} = {} {} on engine {}",
                relator.name,
                plural(relator.rules.len(), "rule", "rules"),
                plural(nodes, "node", "nodes"),
                plural(tasks, "task", "tasks"),
                relator.interval.map_or_else(
                    || "when chained".to_string(),
                    |i| format!("every {}", humantime::format_duration(i))
                ),
                group.map(|g| g.engine.as_str()).unwrap_or("?"),
            )
        })
        .collect();
    if !firings.is_empty() {
        out.push_str(&format!(
            " Tasks per firing: {}; about {per_minute:.1} tasks per minute in all.",
            firings.join("; ")
        ));
    }
    out
}

/// What a valid engine file configures.
pub(crate) fn engine(config: &EngineConfig, file: &Path) -> String {
    format!(
        "Engine configuration {}: listens on {}, runs up to {} checks at once, accepts batches \
         of up to {} tasks, holds up to {} tasks, keeps uncollected results for {}, messages up \
         to {} bytes, keeps {} bytes of exec output.",
        file.display(),
        config.listen,
        config.max_concurrent_checks,
        config.max_batch_tasks,
        config.max_held_tasks,
        humantime::format_duration(config.result_retention),
        config.max_message_bytes,
        config.output_limit_bytes,
    ) + &format!(
        " {} Exec checks may run {}.",
        match (&config.tls, config.allow_plaintext) {
            (Some(tls), _) => format!(
                "Mutual TLS: certificate {}, supervisors' CA {}.",
                tls.cert.display(),
                tls.client_ca.display()
            ),
            (None, true) => "Plaintext, allowed beyond loopback (allow_plaintext).".to_string(),
            (None, false) => "Plaintext (loopback only).".to_string(),
        },
        if config.exec.allow.is_empty() {
            "no program".to_string()
        } else {
            config.exec.allow.join(", ")
        }
    )
}

/// What a valid links file defines.
pub(crate) fn links(
    profiles: &std::collections::BTreeMap<String, crate::link::LinkProfile>,
    file: &Path,
) -> String {
    let described: Vec<String> = profiles
        .iter()
        .map(|(name, profile)| {
            let bandwidth = profile
                .bandwidth_bps
                .map_or_else(|| "unlimited".to_string(), crate::link::format_bandwidth);
            format!(
                "{name} ({} one-way, {bandwidth}, {}% loss)",
                humantime::format_duration(profile.latency),
                profile.loss * 100.0
            )
        })
        .collect();
    format!(
        "Link profiles {}: {} profile{}: {}. Select one per engine with `link = \"<name>\"` in \
         the supervisor file and pass this file with `--links`.",
        file.display(),
        profiles.len(),
        if profiles.len() == 1 { "" } else { "s" },
        if described.is_empty() {
            "none".to_string()
        } else {
            described.join(", ")
        }
    )
}
