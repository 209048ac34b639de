//! Relators expanded into task templates, and the tasks of one firing: one task per (rule, node),
//! with a stable id `relator/rule/node/scheduled-ms` so a task can be sent twice but never runs
//! twice.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::config::{CatchUp, CheckKind, Priority, RuleConfig, SimOutcome, SupervisorConfig};
use crate::proto::{self, Task, TaskState, check::Kind};
use crate::supervisor::states::{AlertPolicy, Watch};

use super::splay::splay_offset;

/// A relator that cannot be expanded.
#[derive(Debug, thiserror::Error)]
#[error("relator `{relator}`: {reason}")]
pub struct PlanError {
    /// The relator.
    pub relator: String,
    /// What is wrong.
    pub reason: String,
}

/// A rule with the file it names (`ca`) read once, when the supervisor starts.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedRule {
    /// The rule as configured.
    pub config: RuleConfig,
    /// The contents of its `ca` file (empty without one), sent as `ca_pem`.
    pub ca_pem: String,
}

impl PlannedRule {
    /// Reads the rule's `ca` file, if it has one.
    pub fn load(config: &RuleConfig) -> Result<Self, String> {
        let ca_pem = match &config.ca {
            Some(path) => std::fs::read_to_string(path).map_err(|error| {
                format!(
                    "rule `{}`: key `ca`: cannot read `{}`: {error}",
                    config.name,
                    path.display()
                )
            })?,
            None => String::new(),
        };
        Ok(Self {
            config: config.clone(),
            ca_pem,
        })
    }
}

/// One (rule, node) of a relator, ready to be stamped with an instant, borrowed from its
/// relator's [`Templates`]. The rule is its relator's (its name and timeout read from there).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TaskTemplate<'a> {
    /// Index of its rule in the relator's [`RelatorPlan::rules`].
    pub rule: u32,
    /// Node name.
    pub node: &'a Arc<str>,
    /// The check with `{node}` substituted.
    pub check: &'a Arc<proto::Check>,
}

/// The checks of one rule on every node of its relator's group.
#[derive(Debug, Clone, PartialEq)]
pub enum RuleChecks {
    /// The check does not name the node: one check serves every node.
    Shared(Arc<proto::Check>),
    /// One check per node, in the group's order (equal neighbours share one).
    PerNode(Vec<Arc<proto::Check>>),
}

/// Every (rule, node) of a relator: each of its rules on each node of its group, template `i`
/// being rule `i / nodes` on node `i % nodes`. Kept as the node names (shared by all rules) and
/// each rule's checks rather than one entry per (rule, node): a relator of 100 nodes and 10
/// rules whose checks do not name the node holds 100 names and 10 pointers, not 1,000 entries
/// of 32 bytes (32 MB at a million (rule, node)s).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Templates {
    nodes: Vec<Arc<str>>,
    rules: Vec<RuleChecks>,
}

impl Templates {
    /// No rule yet on `nodes`.
    pub fn new(nodes: Vec<Arc<str>>) -> Self {
        Self {
            nodes,
            rules: Vec::new(),
        }
    }

    /// Add the next rule, with its check on each node (in the nodes' order). One check equal
    /// for every node is kept once.
    pub fn push_rule(&mut self, checks: impl IntoIterator<Item = proto::Check>) {
        let mut per_node: Vec<Arc<proto::Check>> = Vec::with_capacity(self.nodes.len());
        for check in checks {
            match per_node.last() {
                Some(same) if **same == check => {
                    let same = Arc::clone(same);
                    per_node.push(same);
                }
                _ => per_node.push(Arc::new(check)),
            }
        }
        let shared = per_node
            .first()
            .filter(|first| per_node.iter().all(|c| Arc::ptr_eq(c, first)))
            .cloned();
        self.rules.push(match shared {
            Some(check) if per_node.len() == self.nodes.len() => RuleChecks::Shared(check),
            _ => RuleChecks::PerNode(per_node),
        });
    }

    /// How many (rule, node)s.
    pub fn len(&self) -> usize {
        self.nodes.len() * self.rules.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The node names of the templates (none without a rule).
    pub fn nodes(&self) -> &[Arc<str>] {
        if self.rules.is_empty() {
            &[]
        } else {
            &self.nodes
        }
    }

    /// Template `index`, if there is one.
    pub fn get(&self, index: usize) -> Option<TaskTemplate<'_>> {
        let count = self.nodes.len();
        if count == 0 {
            return None;
        }
        let (rule, n) = (index / count, index % count);
        let check = match self.rules.get(rule)? {
            RuleChecks::Shared(check) => check,
            RuleChecks::PerNode(checks) => checks.get(n)?,
        };
        Some(TaskTemplate {
            rule: u32::try_from(rule).ok()?,
            node: &self.nodes[n],
            check,
        })
    }

    /// The node name of template `index`.
    fn node(&self, index: usize) -> &Arc<str> {
        &self.nodes[index % self.nodes.len()]
    }

    /// Every template, in order.
    pub fn iter(&self) -> impl Iterator<Item = TaskTemplate<'_>> {
        (0..self.len()).filter_map(|i| self.get(i))
    }
}

/// A relator ready to fire.
#[derive(Debug, Clone, PartialEq)]
pub struct RelatorPlan {
    /// Relator name.
    pub name: String,
    /// Engine that runs every task of this relator (its group's engine).
    pub engine: String,
    /// How often it fires; `None`: only when chained.
    pub interval: Option<Duration>,
    /// Span after a firing within which its tasks start; retries stay inside it.
    pub start_window: Duration,
    /// Percentage of the start window over which starts are spread.
    pub randomize: u8,
    /// Retries of a failed or timed-out task.
    pub max_retries: u32,
    /// Wait before a retry.
    pub retry_period: Duration,
    /// Relators (indices into the plan list) run on the same node after an ok outcome.
    pub on_ok: Vec<usize>,
    /// Relators (indices into the plan list) run on the same node after a broken outcome.
    pub on_broken: Vec<usize>,
    /// Missed firings policy.
    pub catch_up: CatchUp,
    /// Priority of its tasks.
    pub priority: Priority,
    /// Alert actions notified of its (rule, node)s' state changes.
    pub alerts: Vec<String>,
    /// When those are notified.
    pub(crate) alert_policy: AlertPolicy,
    /// Its checks' performance data go to the metrics endpoint (`export_perfdata`).
    pub export_perfdata: bool,
    /// The rules it checks (to expand chained runs on any node).
    pub rules: Vec<PlannedRule>,
    /// One template per (rule, node) of its group.
    pub templates: Templates,
    /// The supervisor's `supervisor_id`, stamped on every task.
    pub supervisor_id: String,
}

/// A task with the instant it is due to start.
#[derive(Debug, Clone, PartialEq)]
pub struct DueTask {
    /// When it should start: the firing plus its node's splay offset.
    pub due_after_firing: Duration,
    /// The task, its `scheduled_unix_ms` being that due instant.
    pub task: Task,
}

impl RelatorPlan {
    /// The tasks of the firing at `fired`, each due at its node's stable splay offset.
    pub fn tasks_at(&self, fired: SystemTime) -> Vec<DueTask> {
        self.templates
            .iter()
            .map(|t| {
                let offset = splay_offset(&self.name, t.node, self.start_window, self.randomize);
                DueTask {
                    due_after_firing: offset,
                    task: self.task(&t, fired + offset),
                }
            })
            .collect()
    }

    /// The splay offset of template `index` after a firing (as [`RelatorPlan::tasks_at`] gives
    /// it).
    pub(crate) fn offset_of(&self, index: usize) -> Duration {
        splay_offset(
            &self.name,
            self.templates.node(index),
            self.start_window,
            self.randomize,
        )
    }

    /// Template indexes in the order their tasks start after a firing (by splay offset, then
    /// position), the order [`RelatorPlan::tasks_at`]'s tasks are due in.
    pub(crate) fn start_order(&self) -> Vec<u32> {
        let mut order: Vec<(Duration, u32)> = (0..self.templates.len())
            .map(|i| (self.offset_of(i), u32::try_from(i).unwrap_or(u32::MAX)))
            .collect();
        order.sort_unstable();
        order.into_iter().map(|(_, i)| i).collect()
    }

    /// The task of template `index` for the firing at `fired` (due at `fired` plus its offset).
    pub(crate) fn task_of(&self, index: usize, fired: SystemTime) -> Task {
        let template = self
            .templates
            .get(index)
            .expect("a template index comes from the relator's start order");
        self.task(&template, fired + self.offset_of(index))
    }

    /// The tasks of a chained run on `node` (due now).
    pub fn chained_tasks(&self, node: &str, now: SystemTime) -> Vec<Task> {
        self.rules
            .iter()
            .filter_map(|rule| match check_for(rule, node) {
                Ok(check) => Some(self.task_on(&rule.config, node, check, now)),
                Err(reason) => {
                    tracing::error!(target: "turbomon::supervisor", relator = %self.name, %reason, "chained run skipped");
                    None
                }
            })
            .collect()
    }

    /// A task an engine holds for this supervisor (listed at a reconcile), rebuilt from its
    /// parts: the check comes from the relator's rule of that name on `node`. `None` when the
    /// relator no longer has that rule (or its check cannot be built for the node).
    pub fn rebuilt_task(
        &self,
        rule: &str,
        node: &str,
        scheduled_unix_ms: i64,
        attempt: u32,
    ) -> Option<Task> {
        let planned = self.rules.iter().find(|r| r.config.name == rule)?;
        let check = check_for(planned, node).ok()?;
        let rule = &planned.config;
        Some(Task {
            id: task_id(&self.name, &rule.name, node, scheduled_unix_ms),
            relator: self.name.clone(),
            rule: rule.name.clone(),
            node: node.to_string(),
            scheduled_unix_ms,
            attempt: attempt.max(1),
            timeout_ms: rule.timeout.as_millis().try_into().unwrap_or(u64::MAX),
            check: Some(check),
            priority: wire_priority(self.priority) as i32,
            supervisor_id: self.supervisor_id.clone(),
            // Stamped when sent, by a cluster member.
            assignment_epoch: 0,
        })
    }

    fn task(&self, t: &TaskTemplate<'_>, scheduled: SystemTime) -> Task {
        let rule = &self.rules[t.rule as usize].config;
        self.task_on(rule, t.node, proto::Check::clone(t.check), scheduled)
    }

    /// The first attempt of `rule`'s `check` on `node`, scheduled at `scheduled`.
    fn task_on(
        &self,
        rule: &RuleConfig,
        node: &str,
        check: proto::Check,
        scheduled: SystemTime,
    ) -> Task {
        let scheduled_unix_ms = unix_ms(scheduled);
        Task {
            id: task_id(&self.name, &rule.name, node, scheduled_unix_ms),
            relator: self.name.clone(),
            rule: rule.name.clone(),
            node: node.to_string(),
            scheduled_unix_ms,
            attempt: 1,
            timeout_ms: rule.timeout.as_millis().try_into().unwrap_or(u64::MAX),
            check: Some(check),
            priority: wire_priority(self.priority) as i32,
            supervisor_id: self.supervisor_id.clone(),
            assignment_epoch: 0,
        }
    }
}

/// The wire form of a priority.
pub fn wire_priority(priority: Priority) -> proto::Priority {
    match priority {
        Priority::High => proto::Priority::High,
        Priority::Normal => proto::Priority::Normal,
        Priority::Low => proto::Priority::Low,
    }
}

/// Sort key of a wire priority: high first, unknown values as normal.
pub fn priority_rank(priority: i32) -> u8 {
    match proto::Priority::try_from(priority) {
        Ok(proto::Priority::High) => 0,
        Ok(proto::Priority::Low) => 2,
        _ => 1,
    }
}

/// Start window of relators that only run when chained.
const CHAINED_START_WINDOW: Duration = Duration::from_secs(60);

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
    let relator_index: HashMap<&str, usize> = config
        .relators
        .iter()
        .enumerate()
        .map(|(i, r)| (r.name.as_str(), i))
        .collect();
    let rules: HashMap<&str, _> = config.rules.iter().map(|r| (r.name.as_str(), r)).collect();
    // Each rule's files are read once, however many relators use it.
    let mut loaded: HashMap<&str, PlannedRule> = HashMap::new();
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
            let mut templates =
                Templates::new(group.nodes.iter().map(|n| Arc::from(n.as_str())).collect());
            let mut relator_rules = Vec::with_capacity(relator.rules.len());
            for rule_name in &relator.rules {
                let config = rules
                    .get(rule_name.as_str())
                    .ok_or_else(|| error(format!("rule `{rule_name}` is not defined")))?;
                let rule = match loaded.get(rule_name.as_str()) {
                    Some(rule) => rule,
                    None => loaded
                        .entry(config.name.as_str())
                        .or_insert(PlannedRule::load(config).map_err(&error)?),
                };
                u32::try_from(relator_rules.len())
                    .map_err(|_| error("more than 2^32 rules".to_string()))?;
                relator_rules.push(rule.clone());
                let checks = templates
                    .nodes
                    .iter()
                    .map(|node| check_for(rule, node))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(&error)?;
                templates.push_rule(checks);
            }
            let targets = |names: &[String]| {
                names
                    .iter()
                    .map(|n| {
                        relator_index
                            .get(n.as_str())
                            .copied()
                            .ok_or_else(|| error(format!("chained relator `{n}` is not defined")))
                    })
                    .collect::<Result<Vec<_>, _>>()
            };
            let start_window = relator
                .start_window
                .or(relator.interval)
                .unwrap_or(CHAINED_START_WINDOW);
            let max_retries = relator.max_retries.unwrap_or(config.max_retries);
            let retry_period = relator
                .retry_period
                .or(config.retry_period)
                .unwrap_or_else(|| {
                    (start_window / (max_retries + 1)).min(crate::config::defaults::retry_period())
                });
            Ok(RelatorPlan {
                name: relator.name.clone(),
                engine: group.engine.clone(),
                interval: relator.interval,
                start_window,
                randomize: relator.randomize,
                max_retries,
                retry_period,
                on_ok: targets(&relator.on_ok)?,
                on_broken: targets(&relator.on_broken)?,
                catch_up: relator.catch_up,
                priority: relator.priority,
                alerts: relator.alerts.clone(),
                alert_policy: AlertPolicy {
                    alert_on: relator.alert_on.clone(),
                    notify_recovery: relator.notify_recovery,
                    renotify_interval: relator.renotify_interval,
                    max_check_attempts: relator.max_check_attempts,
                },
                export_perfdata: relator.export_perfdata,
                rules: relator_rules,
                templates,
                supervisor_id: config.supervisor_id.clone(),
            })
        })
        .collect()
}

/// What the state book watches, one entry per plan: the relators with alert actions, each with
/// its rules and every node its tasks can run on (its group's, and those of every relator that
/// chains to it, since a chained run takes its node from the task that chained it).
pub(crate) fn watches(plans: &[RelatorPlan]) -> Vec<Watch<'_>> {
    let mut nodes: Vec<HashSet<&str>> = plans
        .iter()
        .map(|p| p.templates.nodes().iter().map(|n| &**n).collect())
        .collect();
    // Nodes flow along the chains until nothing grows (at most one round per relator, even if
    // an unvalidated configuration loops).
    for _ in 0..plans.len() {
        let mut grew = false;
        for (from, plan) in plans.iter().enumerate() {
            for &to in plan.on_ok.iter().chain(&plan.on_broken) {
                if to == from || to >= plans.len() {
                    continue;
                }
                let new: Vec<&str> = nodes[from].difference(&nodes[to]).copied().collect();
                grew |= !new.is_empty();
                nodes[to].extend(new);
            }
        }
        if !grew {
            break;
        }
    }
    plans
        .iter()
        .zip(nodes)
        .map(|(plan, nodes)| match plan.alerts.is_empty() {
            true => Watch::default(),
            false => Watch {
                policy: plan.alert_policy.clone(),
                rules: plan.rules.iter().map(|r| r.config.name.as_str()).collect(),
                nodes: nodes.into_iter().collect(),
            },
        })
        .collect()
}

/// A threshold as the wire carries it: whole milliseconds, 0 for none.
fn wire_ms(threshold: Option<Duration>) -> u64 {
    threshold.map_or(0, |t| t.as_millis().try_into().unwrap_or(u64::MAX))
}

/// The wire form of a rule's check on one node.
pub fn check_for(planned: &PlannedRule, node: &str) -> Result<proto::Check, String> {
    let rule = &planned.config;
    let on_node = |s: &str| s.replace("{node}", node);
    let missing = |key: &str| format!("rule `{}` ({:?}) needs `{key}`", rule.name, rule.kind);
    let kind = match rule.kind {
        CheckKind::Tcp => Kind::Tcp(proto::TcpCheck {
            host: on_node(rule.host.as_deref().unwrap_or("{node}")),
            port: u32::from(rule.port.ok_or_else(|| missing("port"))?),
            warning_ms: wire_ms(rule.warning),
            critical_ms: wire_ms(rule.critical),
        }),
        CheckKind::Exec => Kind::Exec(proto::ExecCheck {
            program: on_node(rule.program.as_deref().ok_or_else(|| missing("program"))?),
            args: rule.args.iter().map(|a| on_node(a)).collect(),
        }),
        CheckKind::Http => Kind::Http(proto::HttpCheck {
            url: on_node(rule.url.as_deref().ok_or_else(|| missing("url"))?),
            expect_status: u32::from(rule.expect_status.unwrap_or(200)),
            ca_pem: planned.ca_pem.clone(),
            insecure_skip_verify: rule.insecure_skip_verify.unwrap_or(false),
            expect_body: rule.expect_body.clone().unwrap_or_default(),
            follow_redirects: rule.follow_redirects.unwrap_or(false),
            warning_ms: wire_ms(rule.warning),
            critical_ms: wire_ms(rule.critical),
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
pub(crate) mod tests {
    use super::*;

    /// One relator `r` over nodes a, b and c with two rules checked per node (`port`, tcp 443,
    /// and `health`, http): six templates.
    pub(crate) fn config() -> SupervisorConfig {
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
    fn a_check_that_does_not_name_the_node_is_kept_once_and_each_task_gets_its_own() {
        let mut config = config();
        config.rules.push(RuleConfig::sim(
            "sim",
            Duration::from_millis(10),
            SimOutcome::Ok,
            1.0,
        ));
        config.relators[0].rules.push("sim".into());
        let plans = plan_relators(&config).expect("plans");
        let plan = &plans[0];
        assert!(matches!(plan.templates.rules[0], RuleChecks::PerNode(_)));
        assert!(matches!(plan.templates.rules[2], RuleChecks::Shared(_)));
        assert_eq!(plan.templates.len(), 9);
        // Every task carries the check its rule gives its node, whichever way it is kept.
        let at = UNIX_EPOCH + Duration::from_millis(1_700_000_000_000);
        let tasks = plan.tasks_at(at);
        assert_eq!(tasks.len(), 9);
        for (i, due) in tasks.iter().enumerate() {
            let rule = &plan.rules[i / 3];
            assert_eq!(due.task.rule, rule.config.name);
            assert_eq!(due.task.node, ["a", "b", "c"][i % 3]);
            let check = check_for(rule, &due.task.node).expect("check");
            assert_eq!(due.task.check.as_ref(), Some(&check));
            assert_eq!(
                plan.task_of(i, at),
                due.task,
                "task_of builds the same task"
            );
        }
    }

    #[test]
    fn a_firing_expands_to_one_task_per_rule_and_node() {
        let plans = plan_relators(&config()).expect("plans");
        let at = UNIX_EPOCH + Duration::from_millis(1_700_000_000_000);
        let tasks: Vec<Task> = plans[0].tasks_at(at).into_iter().map(|d| d.task).collect();
        assert_eq!(tasks.len(), 6);
        let offset = splay_offset("r", "a", Duration::from_secs(10), 25).as_millis();
        assert_eq!(
            tasks[0].id,
            format!("r/port/a/{}", 1_700_000_000_000 + offset)
        );
        assert_eq!(plans[0].engine, "e1");
        let ids: std::collections::HashSet<_> = tasks.iter().map(|t| &t.id).collect();
        assert_eq!(ids.len(), 6, "ids are unique");
        match tasks[4].check.as_ref().and_then(|c| c.kind.as_ref()) {
            Some(Kind::Http(h)) => assert_eq!(h.url, "http://b:8080/health"),
            other => panic!("expected http check, got {other:?}"),
        }
    }

    #[test]
    fn a_template_is_its_rule_number_a_shared_node_and_a_check() {
        let plans = plan_relators(&config()).expect("plans");
        let templates = &plans[0].templates;
        assert_eq!(templates.len(), 6);
        assert_eq!(
            templates.iter().map(|t| t.rule).collect::<Vec<_>>(),
            [0, 0, 0, 1, 1, 1]
        );
        assert_eq!(
            templates.iter().map(|t| &**t.node).collect::<Vec<_>>(),
            ["a", "b", "c", "a", "b", "c"]
        );
        assert!(templates.get(6).is_none());
        // One node name for all its rules; both rules name the node (a tcp check's host is
        // the node by default), so each node has its own check.
        let (first, fourth) = (templates.get(0).expect("0"), templates.get(3).expect("3"));
        assert!(Arc::ptr_eq(first.node, fourth.node));
        let second = templates.get(1).expect("1");
        assert!(!Arc::ptr_eq(first.check, second.check));
        let fifth = templates.get(4).expect("4");
        assert!(!Arc::ptr_eq(fourth.check, fifth.check));
        let at = UNIX_EPOCH + Duration::from_millis(1_700_000_000_000);
        let task = plans[0].task_of(3, at);
        assert_eq!((task.rule.as_str(), task.node.as_str()), ("health", "a"));
        assert_eq!(task.timeout_ms, 10_000);
        let chained = plans[0].chained_tasks("z", at);
        assert_eq!(chained.len(), 2);
        assert_eq!(chained[1].id, "r/health/z/1700000000000");
        assert_eq!(chained[1].timeout_ms, 10_000);
    }

    #[test]
    fn watched_relators_reach_the_nodes_of_those_that_chain_to_them() {
        let mut config = config();
        config.groups.push(crate::config::GroupConfig {
            name: "other".into(),
            engine: "e1".into(),
            nodes: vec!["x".into()],
        });
        config.relators[0].alerts = vec!["log".into()];
        config.relators[0].on_broken = vec!["deeper".into()];
        config.relators.push(crate::config::RelatorConfig {
            name: "deeper".into(),
            group: "other".into(),
            rules: vec!["port".into()],
            alerts: vec!["log".into()],
            max_check_attempts: 3,
            ..crate::config::RelatorConfig::default()
        });
        config.relators.push(crate::config::RelatorConfig {
            name: "quiet".into(),
            group: "web".into(),
            rules: vec!["port".into()],
            interval: Some(Duration::from_secs(10)),
            ..crate::config::RelatorConfig::default()
        });
        let plans = plan_relators(&config).expect("plans");
        let watches = watches(&plans);
        fn sorted<'a>(names: &[&'a str]) -> Vec<&'a str> {
            let mut names = names.to_vec();
            names.sort_unstable();
            names
        }
        assert_eq!(sorted(&watches[0].nodes), ["a", "b", "c"]);
        assert_eq!(watches[0].rules, ["port", "health"]);
        assert_eq!(sorted(&watches[1].nodes), ["a", "b", "c", "x"]);
        assert_eq!(watches[1].policy.max_check_attempts, 3);
        assert!(watches[2].rules.is_empty(), "no alert actions: not watched");
    }

    #[test]
    fn thresholds_and_https_options_go_on_the_wire_with_the_ca_read_once() {
        let ca = std::env::temp_dir().join(format!(
            "turbomon-plan-ca-{}-{:x}.pem",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::write(&ca, "PEM TEXT").unwrap();
        let mut config = config();
        config.rules[0].warning = Some(Duration::from_millis(200));
        config.rules[0].critical = Some(Duration::from_secs(1));
        let health = &mut config.rules[1];
        health.url = Some("https://{node}/health".into());
        health.ca = Some(ca.clone());
        health.expect_body = Some("ok".into());
        health.follow_redirects = Some(true);
        health.critical = Some(Duration::from_micros(1500));
        let plans = plan_relators(&config).expect("plans");
        std::fs::remove_file(&ca).unwrap();
        // Read at start: the file is gone, chained runs still carry it.
        let tasks = plans[0].chained_tasks("b", SystemTime::now());
        match tasks[0].check.as_ref().and_then(|c| c.kind.as_ref()) {
            Some(Kind::Tcp(t)) => assert_eq!((t.warning_ms, t.critical_ms), (200, 1000)),
            other => panic!("expected tcp check, got {other:?}"),
        }
        match tasks[1].check.as_ref().and_then(|c| c.kind.as_ref()) {
            Some(Kind::Http(h)) => {
                assert_eq!(h.url, "https://b/health");
                assert_eq!(h.ca_pem, "PEM TEXT");
                assert_eq!(h.expect_body, "ok");
                assert!(h.follow_redirects && !h.insecure_skip_verify);
                assert_eq!((h.warning_ms, h.critical_ms), (0, 1));
            }
            other => panic!("expected http check, got {other:?}"),
        }

        let mut unreadable = self::config();
        unreadable.rules[1].ca = Some(ca);
        let error = plan_relators(&unreadable).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("rule `health`: key `ca`: cannot read"),
            "{error}"
        );
    }

    #[test]
    fn the_same_instant_gives_the_same_ids() {
        let plans = plan_relators(&config()).expect("plans");
        let at = SystemTime::now();
        assert_eq!(plans[0].tasks_at(at), plans[0].tasks_at(at));
    }
}
