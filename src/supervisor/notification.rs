//! What a notification says: the webhook's JSON body (also a command's standard input), the
//! `TURBOMON_*` environment of a command, and performance data in the plugin text format.

use serde::Serialize;

use crate::proto::PerfData;
use crate::supervisor::states::{NotificationKind, Notify, ServiceState};

/// Whether a state is confirmed. Notifications are only sent for hard states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum StateType {
    /// Seen `max_check_attempts` times in a row, or a change from another hard bad state.
    Hard,
}

/// One performance value of a result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct PerfValue {
    /// Its label.
    pub label: String,
    /// The value (`null` when not a number).
    pub value: f64,
    /// Unit of measure: s, ms, us, %, B, KB, MB, TB, c, or empty.
    pub uom: String,
    /// Warning range as written; empty when absent.
    pub warn: String,
    /// Critical range as written; empty when absent.
    pub crit: String,
    /// Smallest possible value, if known.
    pub min: Option<f64>,
    /// Largest possible value, if known.
    pub max: Option<f64>,
}

impl From<&PerfData> for PerfValue {
    fn from(p: &PerfData) -> Self {
        Self {
            label: p.label.clone(),
            value: p.value,
            uom: p.uom.clone(),
            warn: p.warn.clone(),
            crit: p.crit.clone(),
            min: p.min,
            max: p.max,
        }
    }
}

/// One notification, as the webhook posts it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Notification {
    /// Engine that ran the task.
    pub engine: String,
    /// Relator that scheduled it.
    pub relator: String,
    /// The rule.
    pub rule: String,
    /// The node it was checked on.
    pub node: String,
    /// The task whose result this is.
    pub task_id: String,
    /// The hard state now.
    pub state: ServiceState,
    /// The hard state before it.
    pub previous_state: ServiceState,
    /// Always `hard`.
    pub state_type: StateType,
    /// `problem`, `recovery` or `reminder`.
    pub kind: NotificationKind,
    /// Bad results in a row that made the state hard (1 for a recovery).
    pub attempt: u32,
    /// The check's output (the engine's message).
    pub output: String,
    /// Performance data of the result.
    pub perfdata: Vec<PerfValue>,
    /// The measured value.
    pub value: f64,
    /// When the check finished, ms since the Unix epoch (0 if it never ran).
    pub finished_unix_ms: i64,
    /// When results began to show the current state, ms since the Unix epoch.
    pub since_unix_ms: i64,
}

/// The task a notification is about and its result, as the ledger knows them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct About<'a> {
    /// Engine that ran the task.
    pub engine: &'a str,
    /// The task's id.
    pub task_id: &'a str,
    /// Its relator.
    pub relator: &'a str,
    /// Its rule.
    pub rule: &'a str,
    /// Its node.
    pub node: &'a str,
    /// The check's output.
    pub output: &'a str,
    /// Its performance data.
    pub perfdata: &'a [PerfData],
    /// The measured value.
    pub value: f64,
    /// When the check finished, ms since the Unix epoch.
    pub finished_unix_ms: i64,
}

impl Notification {
    /// The notification `notify` decided about `about`.
    pub(crate) fn new(notify: Notify, about: About<'_>) -> Self {
        Self {
            engine: about.engine.to_string(),
            relator: about.relator.to_string(),
            rule: about.rule.to_string(),
            node: about.node.to_string(),
            task_id: about.task_id.to_string(),
            state: notify.state,
            previous_state: notify.previous_state,
            state_type: StateType::Hard,
            kind: notify.kind,
            attempt: notify.attempt,
            output: about.output.to_string(),
            perfdata: about.perfdata.iter().map(PerfValue::from).collect(),
            value: about.value,
            finished_unix_ms: about.finished_unix_ms,
            since_unix_ms: notify.since_unix_ms,
        }
    }

    /// The performance data as a plugin prints it: `'label'=value[uom];[warn];[crit];[min];[max]`,
    /// separated by spaces, trailing empty fields left out.
    pub(crate) fn perfdata_text(&self) -> String {
        let mut text = String::new();
        for p in &self.perfdata {
            if !text.is_empty() {
                text.push(' ');
            }
            if p.label.contains([' ', '=', '\'']) {
                text.push('\'');
                text.push_str(&p.label.replace('\'', "''"));
                text.push('\'');
            } else {
                text.push_str(&p.label);
            }
            text.push('=');
            text.push_str(&number(p.value));
            text.push_str(&p.uom);
            let bound = |b: Option<f64>| b.map(number).unwrap_or_default();
            let mut fields = vec![p.warn.clone(), p.crit.clone(), bound(p.min), bound(p.max)];
            while fields.last().is_some_and(String::is_empty) {
                fields.pop();
            }
            for field in fields {
                text.push(';');
                text.push_str(&field);
            }
        }
        text
    }

    /// The environment a command action runs with. `TURBOMON_TASK` and `TURBOMON_MESSAGE` are
    /// the names of `TURBOMON_TASK_ID` and `TURBOMON_OUTPUT` before states, kept for scripts
    /// written for them.
    pub(crate) fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("TURBOMON_ENGINE", self.engine.clone()),
            ("TURBOMON_RELATOR", self.relator.clone()),
            ("TURBOMON_RULE", self.rule.clone()),
            ("TURBOMON_NODE", self.node.clone()),
            ("TURBOMON_TASK_ID", self.task_id.clone()),
            ("TURBOMON_TASK", self.task_id.clone()),
            ("TURBOMON_STATE", self.state.name().to_string()),
            (
                "TURBOMON_PREVIOUS_STATE",
                self.previous_state.name().to_string(),
            ),
            ("TURBOMON_STATE_TYPE", "hard".to_string()),
            ("TURBOMON_KIND", self.kind.name().to_string()),
            ("TURBOMON_ATTEMPT", self.attempt.to_string()),
            ("TURBOMON_OUTPUT", self.output.clone()),
            ("TURBOMON_MESSAGE", self.output.clone()),
            ("TURBOMON_PERFDATA", self.perfdata_text()),
            ("TURBOMON_VALUE", self.value.to_string()),
            (
                "TURBOMON_FINISHED_UNIX_MS",
                self.finished_unix_ms.to_string(),
            ),
            ("TURBOMON_SINCE_UNIX_MS", self.since_unix_ms.to_string()),
        ]
    }
}

/// A number as plugins write it; `U` (undetermined) when it is not finite.
fn number(value: f64) -> String {
    if value.is_finite() {
        value.to_string()
    } else {
        "U".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::Task;

    fn perf(label: &str, value: f64, uom: &str, warn: &str, crit: &str) -> PerfData {
        PerfData {
            label: label.into(),
            value,
            uom: uom.into(),
            warn: warn.into(),
            crit: crit.into(),
            min: None,
            max: None,
        }
    }

    fn notification(perfdata: &[PerfData]) -> Notification {
        let task = Task {
            id: "web/disk/n1/1000".into(),
            relator: "web".into(),
            rule: "disk".into(),
            node: "n1".into(),
            ..Task::default()
        };
        Notification::new(
            Notify {
                kind: NotificationKind::Problem,
                state: ServiceState::Critical,
                previous_state: ServiceState::Ok,
                attempt: 2,
                since_unix_ms: 900,
            },
            About {
                engine: "e1",
                task_id: &task.id,
                relator: &task.relator,
                rule: &task.rule,
                node: &task.node,
                output: "DISK CRITICAL - / 97%",
                perfdata,
                value: 97.5,
                finished_unix_ms: 1200,
            },
        )
    }

    #[test]
    fn the_body_has_every_field_by_its_name() {
        let mut root = perf("/", 97.5, "%", "80", "90");
        root.min = Some(0.0);
        root.max = Some(100.0);
        let body = serde_json::to_value(notification(&[root])).expect("json");
        let expected = serde_json::json!({
            "engine": "e1", "relator": "web", "rule": "disk", "node": "n1",
            "task_id": "web/disk/n1/1000", "state": "critical", "previous_state": "ok",
            "state_type": "hard", "kind": "problem", "attempt": 2,
            "output": "DISK CRITICAL - / 97%",
            "perfdata": [{"label": "/", "value": 97.5, "uom": "%", "warn": "80", "crit": "90",
                          "min": 0.0, "max": 100.0}],
            "value": 97.5, "finished_unix_ms": 1200, "since_unix_ms": 900,
        });
        assert_eq!(body, expected);
    }

    #[test]
    fn perfdata_prints_as_plugins_write_it() {
        let mut time = perf("time", 0.012, "s", "", "");
        time.min = Some(0.0);
        let n = notification(&[
            perf("load", 0.5, "", "", ""),
            time,
            perf("free space", 3.0, "GB", "5:", ""),
            perf("it's", f64::NAN, "", "", "2"),
        ]);
        assert_eq!(
            n.perfdata_text(),
            "load=0.5 time=0.012s;;;0 'free space'=3GB;5: 'it''s'=U;;2"
        );
        assert_eq!(notification(&[]).perfdata_text(), "");
    }

    #[test]
    fn the_environment_keeps_the_names_scripts_used_before_states() {
        let env: std::collections::HashMap<_, _> = notification(&[perf("x", 1.0, "", "", "")])
            .env()
            .into_iter()
            .collect();
        for (name, value) in [
            ("TURBOMON_STATE", "critical"),
            ("TURBOMON_PREVIOUS_STATE", "ok"),
            ("TURBOMON_KIND", "problem"),
            ("TURBOMON_OUTPUT", "DISK CRITICAL - / 97%"),
            ("TURBOMON_MESSAGE", "DISK CRITICAL - / 97%"),
            ("TURBOMON_PERFDATA", "x=1"),
            ("TURBOMON_TASK_ID", "web/disk/n1/1000"),
            ("TURBOMON_TASK", "web/disk/n1/1000"),
            ("TURBOMON_VALUE", "97.5"),
            ("TURBOMON_SINCE_UNIX_MS", "900"),
        ] {
            assert_eq!(env.get(name).map(String::as_str), Some(value), "{name}");
        }
    }
}
