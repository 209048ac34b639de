//! What a reload changed: the keys whose values differ between two configurations, and which of
//! them a running process can apply and which need a restart. Both sides log one line per
//! reload from this.

use serde::Serialize;
use serde_json::Value;

use super::model::{EngineConfig, SupervisorConfig};

/// The outcome of comparing the configuration in force with a newly read one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadDiff {
    /// Keys whose new values are applied (`task_submit_batch_size`,
    /// `engines[remote].status_check_interval`, ...), sorted.
    pub applied: Vec<String>,
    /// Keys that changed in the file but apply only at the next start.
    pub restart_needed: Vec<String>,
}

impl ReloadDiff {
    /// True when nothing changed.
    pub fn is_empty(&self) -> bool {
        self.applied.is_empty() && self.restart_needed.is_empty()
    }

    /// `applied` joined for a log field (`-` when empty).
    pub fn applied_list(&self) -> String {
        join(&self.applied)
    }

    /// `restart_needed` joined for a log field (`-` when empty).
    pub fn restart_list(&self) -> String {
        join(&self.restart_needed)
    }
}

fn join(keys: &[String]) -> String {
    if keys.is_empty() {
        "-".to_string()
    } else {
        keys.join(", ")
    }
}

/// The keys whose values differ between `old` and `new`, as dotted paths. Arrays of tables whose
/// elements have a `name` are compared by name (`engines[remote].address`, `rules[ssh-port]`
/// for one added or removed); other arrays are compared whole.
pub fn changed_keys<T: Serialize>(old: &T, new: &T) -> Vec<String> {
    let (Ok(old), Ok(new)) = (serde_json::to_value(old), serde_json::to_value(new)) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    walk("", &old, &new, &mut out);
    out
}

fn walk(path: &str, old: &Value, new: &Value, out: &mut Vec<String>) {
    if old == new {
        return;
    }
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            for (key, value) in a {
                let child = join_path(path, key);
                walk(&child, value, b.get(key).unwrap_or(&Value::Null), out);
            }
            for (key, value) in b {
                if !a.contains_key(key) {
                    walk(&join_path(path, key), &Value::Null, value, out);
                }
            }
        }
        (Value::Array(a), Value::Array(b)) if named(a) && named(b) => {
            for item in a {
                let name = name_of(item);
                let child = format!("{path}[{name}]");
                match b.iter().find(|other| name_of(other) == name) {
                    Some(other) => walk(&child, item, other, out),
                    None => out.push(child),
                }
            }
            for item in b {
                let name = name_of(item);
                if !a.iter().any(|other| name_of(other) == name) {
                    out.push(format!("{path}[{name}]"));
                }
            }
        }
        _ => out.push(if path.is_empty() {
            "(root)".to_string()
        } else {
            path.to_string()
        }),
    }
}

fn join_path(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn named(items: &[Value]) -> bool {
    items
        .iter()
        .all(|item| item.get("name").and_then(Value::as_str).is_some())
}

fn name_of(item: &Value) -> &str {
    item.get("name").and_then(Value::as_str).unwrap_or_default()
}

/// Supervisor keys a running supervisor cannot apply: what the schedule and the connections were
/// built from.
const SUPERVISOR_RESTART_ONLY: &[&str] = &[
    "supervisor_id",
    "relators",
    "groups",
    "rules",
    "alerts",
    "tls",
    "keepalive_interval",
    "metrics_listen",
    "cluster",
];

/// Per-engine supervisor keys a running supervisor cannot apply.
const ENGINE_ENTRY_RESTART_ONLY: &[&str] = &["address", "link", "server_name", "backup"];

/// Compares the supervisor configuration the process started with (`start`), the one in force
/// (`current`) and a newly read one (`new`): `applied` lists what differs from `current` and
/// is applied; `restart_needed` lists what differs from `start` and is not (so every reload
/// keeps reminding of a pending restart).
pub fn supervisor_reload(
    start: &SupervisorConfig,
    current: &SupervisorConfig,
    new: &SupervisorConfig,
) -> ReloadDiff {
    let restart_only = |key: &String| {
        let top = key.split(['.', '[']).next().unwrap_or_default();
        if SUPERVISOR_RESTART_ONLY.contains(&top) {
            return true;
        }
        // An engine added or removed, or one of its connection keys.
        if let Some(rest) = key.strip_prefix("engines[") {
            return match rest.split_once("].") {
                None => true,
                Some((_, field)) => ENGINE_ENTRY_RESTART_ONLY
                    .iter()
                    .any(|k| field == *k || field.starts_with(&format!("{k}."))),
            };
        }
        false
    };
    ReloadDiff {
        applied: changed_keys(current, new)
            .into_iter()
            .filter(|key| !restart_only(key))
            .collect(),
        restart_needed: changed_keys(start, new)
            .into_iter()
            .filter(restart_only)
            .collect(),
    }
}

/// Engine keys a running engine applies on reload; every other key needs a restart.
pub const ENGINE_LIVE_KEYS: &[&str] = &[
    "max_concurrent_checks",
    "max_batch_tasks",
    "max_held_tasks",
    "result_retention",
    "max_task_bytes",
    "max_check_timeout",
    "output_limit_bytes",
    "shutdown_grace",
    "exec",
];

/// `applied` with the values of [`ENGINE_LIVE_KEYS`] taken from `new`: the configuration an
/// engine runs with after a reload. The other keys keep their values until a restart.
pub fn engine_live(applied: &EngineConfig, new: &EngineConfig) -> EngineConfig {
    let (Ok(Value::Object(mut merged)), Ok(Value::Object(new))) =
        (serde_json::to_value(applied), serde_json::to_value(new))
    else {
        return applied.clone();
    };
    for key in ENGINE_LIVE_KEYS {
        match new.get(*key) {
            Some(value) => merged.insert((*key).to_string(), value.clone()),
            None => merged.remove(*key),
        };
    }
    serde_json::from_value(Value::Object(merged)).unwrap_or_else(|_| applied.clone())
}

/// [`supervisor_reload`] for an engine's file.
pub fn engine_reload(
    start: &EngineConfig,
    current: &EngineConfig,
    new: &EngineConfig,
) -> ReloadDiff {
    let live = |key: &String| {
        let top = key.split(['.', '[']).next().unwrap_or_default();
        ENGINE_LIVE_KEYS.contains(&top)
    };
    ReloadDiff {
        applied: changed_keys(current, new)
            .into_iter()
            .filter(live)
            .collect(),
        restart_needed: changed_keys(start, new)
            .into_iter()
            .filter(|key| !live(key))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{BatchSize, EngineEntry};

    #[test]
    fn unchanged_is_empty() {
        let config = SupervisorConfig::default();
        assert!(supervisor_reload(&config, &config, &config).is_empty());
        assert_eq!(changed_keys(&config, &config), Vec::<String>::new());
    }

    #[test]
    fn engines_are_compared_by_name() {
        let old = SupervisorConfig {
            engines: vec![
                EngineEntry {
                    name: "a".into(),
                    address: "127.0.0.1:1".into(),
                    ..EngineEntry::default()
                },
                EngineEntry {
                    name: "b".into(),
                    address: "127.0.0.1:2".into(),
                    ..EngineEntry::default()
                },
            ],
            ..SupervisorConfig::default()
        };
        let mut new = old.clone();
        new.engines.reverse();
        assert!(
            changed_keys(&old, &new).is_empty(),
            "order alone is no change"
        );
        new.engines[0].task_submit_batch_size = Some(BatchSize::Fixed(7));
        new.engines[1].address = "127.0.0.1:3".into();
        new.task_info_batch_size = BatchSize::Fixed(12);
        let diff = supervisor_reload(&old, &old, &new);
        assert_eq!(
            diff.applied,
            ["engines[b].task_submit_batch_size", "task_info_batch_size"]
        );
        assert_eq!(diff.restart_needed, ["engines[a].address"]);
    }

    #[test]
    fn a_restart_stays_needed_until_restarted() {
        let start = SupervisorConfig::default();
        let mut first = start.clone();
        first.keepalive_interval = std::time::Duration::from_secs(3);
        let mut second = first.clone();
        second.stats_interval = std::time::Duration::from_secs(7);
        let diff = supervisor_reload(&start, &first, &second);
        assert_eq!(diff.applied, ["stats_interval"]);
        assert_eq!(diff.restart_needed, ["keepalive_interval"]);
    }

    #[test]
    fn stats_report_applies_at_the_next_window() {
        let start = SupervisorConfig::default();
        let mut new = start.clone();
        new.stats_report = crate::config::StatsReport::Summary;
        let diff = supervisor_reload(&start, &start, &new);
        assert_eq!(diff.applied, ["stats_report"]);
        assert!(diff.restart_needed.is_empty());
    }

    #[test]
    fn engine_live_takes_exactly_the_live_keys() {
        let start = EngineConfig::default();
        // Every key changed.
        let new = EngineConfig {
            listen: "127.0.0.1:1".into(),
            max_concurrent_checks: 3,
            max_batch_tasks: 4,
            max_held_tasks: 5,
            result_retention: std::time::Duration::from_secs(6),
            max_message_bytes: 7,
            output_limit_bytes: 8,
            state_dir: Some("/tmp/x".into()),
            shutdown_grace: std::time::Duration::from_secs(9),
            completion_buffer_notices: 10,
            tls: Some(crate::config::EngineTls {
                cert: "c".into(),
                key: "k".into(),
                client_ca: "ca".into(),
            }),
            allow_plaintext: true,
            exec: crate::config::ExecConfig {
                allow: vec!["/bin/*".into()],
            },
            max_check_timeout: std::time::Duration::from_secs(11),
            max_task_bytes: 12,
            keepalive_interval: std::time::Duration::from_secs(13),
            max_open_connections: 14,
            metrics_listen: "127.0.0.1:15".into(),
        };
        let every_key: Vec<String> = changed_keys(&start, &new)
            .iter()
            .map(|k| k.split(['.', '[']).next().unwrap_or_default().to_string())
            .collect();
        let live = engine_live(&start, &new);
        let applied: std::collections::BTreeSet<String> = changed_keys(&start, &live)
            .iter()
            .map(|k| k.split(['.', '[']).next().unwrap_or_default().to_string())
            .collect();
        let expected: std::collections::BTreeSet<String> =
            ENGINE_LIVE_KEYS.iter().map(|k| k.to_string()).collect();
        assert_eq!(applied, expected);
        assert!(
            every_key.len() > expected.len(),
            "the test changes restart keys too"
        );
        let diff = engine_reload(&start, &start, &new);
        let restart: std::collections::BTreeSet<String> = diff
            .restart_needed
            .iter()
            .map(|k| k.split(['.', '[']).next().unwrap_or_default().to_string())
            .collect();
        assert!(restart.is_disjoint(&expected));
        assert_eq!(
            restart.len() + expected.len(),
            every_key
                .iter()
                .collect::<std::collections::BTreeSet<_>>()
                .len()
        );
    }

    #[test]
    fn engine_keys_split_into_live_and_restart() {
        let start = EngineConfig::default();
        let mut new = start.clone();
        new.max_held_tasks = 5;
        new.exec.allow = vec!["/usr/bin/*".into()];
        new.listen = "127.0.0.1:9".into();
        let diff = engine_reload(&start, &start, &new);
        assert_eq!(diff.applied, ["exec.allow", "max_held_tasks"]);
        assert_eq!(diff.restart_needed, ["listen"]);
        assert_eq!(diff.applied_list(), "exec.allow, max_held_tasks");
    }
}
