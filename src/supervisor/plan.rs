//! Relators expanded into task templates, and the tasks of one firing: one task per (rule, node),
//! with a stable id `relator/rule/node/scheduled-ms` so a task can be sent twice but never runs
//! twice.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::config::{CheckKind, RuleConfig, SimOutcome, SupervisorConfig};
use crate::proto::{self, Task, TaskState, check::Kind};

/// A relator that cannot be expanded.
#[derive(Debug, thiserror::Error)]
#[error("relator `{relator}`: {reason}")]
pub struct PlanError {
    /// The relator.
    pub relator: String,
    /// What is wrong.
    pub reason: String,
}

/// One (rule, node) of a relator, ready to be stamped with an instant.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskTemplate {
    /// Rule name.
    pub rule: String,
    /// Node name.
    pub node: String,
    /// The check with `{node}` substituted.
    pub check: proto::Check,
    /// Per-task timeout.
    pub timeout: Duration,
}

/// A relator ready to fire.
#[derive(Debug, Clone, PartialEq)]
pub struct RelatorPlan {
    /// Relator name.
    pub name: String,
    /// Engine that runs every task of this relator (its group's engine).
    pub engine: String,
    /// How often it fires.
    pub interval: Duration,
    /// Alert actions for broken rules.
    pub alerts: Vec<String>,
    /// One template per (rule, node).
    pub templates: Vec<TaskTemplate>,
}

impl RelatorPlan {
    /// The tasks of the firing scheduled at `scheduled`.
    pub fn tasks_at(&self, scheduled: SystemTime) -> Vec<Task> {
        let scheduled_unix_ms = unix_ms(scheduled);
        self.templates
            .iter()
            .map(|t| Task {
                id: task_id(&self.name, &t.rule, &t.node, scheduled_unix_ms),
                relator: self.name.clone(),
                rule: t.rule.clone(),
                node: t.node.clone(),
                scheduled_unix_ms,
                attempt: 1,
                timeout_ms: t.timeout.as_millis().try_into().unwrap_or(u64::MAX),
                check: Some(t.check.clone()),
            })
            .collect()
    }
}

/// The stable identity of a task.
pub fn task_id(relator: &str, rule: &str, node: &str, scheduled_unix_ms: i64) -> String {
    format!("{relator}/{rule}/{node}/{scheduled_unix_ms}")
}

/// Milliseconds since the Unix epoch (negative before it).
pub fn unix_ms(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_millis().try_into().unwrap_or(i64::MAX),
        Err(e) => -(e.duration().as_millis().try_into().unwrap_or(i64::MAX)),
    }
}

/// Expand every relator of a (validated) configuration.
pub fn plan_relators(config: &SupervisorConfig) -> Result<Vec<RelatorPlan>, PlanError> {
    let groups: HashMap<&str, _> = config.groups.iter().map(|g| (g.name.as_str(), g)).collect();
    let rules: HashMap<&str, _> = config.rules.iter().map(|r| (r.name.as_str(), r)).collect();
    config
        .relators
        .iter()
        .map(|relator| {
            let error = |reason: String| PlanError {
                relator: relator.name.clone(),
                reason,
            };
            let group = groups
                .get(relator.group.as_str())
                .ok_or_else(|| error(format!("group `{}` is not defined", relator.group)))?;
            let mut templates = Vec::with_capacity(relator.rules.len() * group.nodes.len());
            for rule_name in &relator.rules {
                let rule = rules
                    .get(rule_name.as_str())
                    .ok_or_else(|| error(format!("rule `{rule_name}` is not defined")))?;
                for node in &group.nodes {
                    templates.push(TaskTemplate {
                        rule: rule.name.clone(),
                        node: node.clone(),
                        check: check_for(rule, node).map_err(&error)?,
                        timeout: rule.timeout,
                    });
                }
            }
            Ok(RelatorPlan {
                name: relator.name.clone(),
                engine: group.engine.clone(),
                interval: relator.interval,
                alerts: relator.alerts.clone(),
                templates,
            })
        })
        .collect()
}

/// The wire form of a rule's check on one node.
pub fn check_for(rule: &RuleConfig, node: &str) -> Result<proto::Check, String> {
    let on_node = |s: &str| s.replace("{node}", node);
    let missing = |key: &str| format!("rule `{}` ({:?}) needs `{key}`", rule.name, rule.kind);
    let kind = match rule.kind {
        CheckKind::Tcp => Kind::Tcp(proto::TcpCheck {
            host: on_node(rule.host.as_deref().unwrap_or("{node}")),
            port: u32::from(rule.port.ok_or_else(|| missing("port"))?),
        }),
        CheckKind::Exec => Kind::Exec(proto::ExecCheck {
            program: on_node(rule.program.as_deref().ok_or_else(|| missing("program"))?),
            args: rule.args.iter().map(|a| on_node(a)).collect(),
        }),
        CheckKind::Http => Kind::Http(proto::HttpCheck {
            url: on_node(rule.url.as_deref().ok_or_else(|| missing("url"))?),
            expect_status: u32::from(rule.expect_status.unwrap_or(200)),
        }),
        CheckKind::Sim => Kind::Sim(proto::SimCheck {
            duration_ms: rule
                .duration
                .unwrap_or_default()
                .as_millis()
                .try_into()
                .unwrap_or(u64::MAX),
            outcome: match rule.outcome.unwrap_or_default() {
                SimOutcome::Ok => TaskState::Ok,
                SimOutcome::Broken => TaskState::Broken,
                SimOutcome::Failed => TaskState::Failed,
            } as i32,
            value: rule.value.unwrap_or(0.0),
        }),
    };
    Ok(proto::Check { kind: Some(kind) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> SupervisorConfig {
        toml::from_str(
            r#"
            [[engines]]
            name = "e1"
            address = "127.0.0.1:1"
            [[groups]]
            name = "web"
            engine = "e1"
            nodes = ["a", "b", "c"]
            [[rules]]
            name = "port"
            kind = "tcp"
            port = 443
            [[rules]]
            name = "health"
            kind = "http"
            url = "http://{node}:8080/health"
            [[relators]]
            name = "r"
            group = "web"
            rules = ["port", "health"]
            interval = "10s"
            "#,
        )
        .expect("test config parses")
    }

    #[test]
    fn a_firing_expands_to_one_task_per_rule_and_node() {
        let plans = plan_relators(&config()).expect("plans");
        let at = UNIX_EPOCH + Duration::from_millis(1_700_000_000_000);
        let tasks = plans[0].tasks_at(at);
        assert_eq!(tasks.len(), 6);
        assert_eq!(tasks[0].id, "r/port/a/1700000000000");
        assert_eq!(plans[0].engine, "e1");
        let ids: std::collections::HashSet<_> = tasks.iter().map(|t| &t.id).collect();
        assert_eq!(ids.len(), 6, "ids are unique");
        match tasks[4].check.as_ref().and_then(|c| c.kind.as_ref()) {
            Some(Kind::Http(h)) => assert_eq!(h.url, "http://b:8080/health"),
            other => panic!("expected http check, got {other:?}"),
        }
    }

    #[test]
    fn the_same_instant_gives_the_same_ids() {
        let plans = plan_relators(&config()).expect("plans");
        let at = SystemTime::now();
        assert_eq!(plans[0].tasks_at(at), plans[0].tasks_at(at));
    }
}
