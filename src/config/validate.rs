//! Validation after parsing: values that deserialise but make no sense (zero batch sizes, zero
//! intervals, dangling names, keys that do not belong to a rule's kind...) are refused, never
//! clamped. Each finding carries the path of its key so the loader can name the line.

use std::cell::OnceCell;
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::Duration;

use super::engine_checks::check_engine;
use super::error::{ConfigError, KeyPath};
use super::findings::Findings;
use super::model::{
    AlertConfig, AlertKind, AlertOn, BatchSize, CheckKind, EngineConfig, EngineEntry, GroupConfig,
    MAX_SUPERVISOR_ID_BYTES, RelatorConfig, RuleConfig, SupervisorConfig,
};
use super::values::{
    check_ca_file, check_host_port, check_http_url, check_metrics_listen, check_readable,
};

/// The link profile names an engine's `link` key may take: the profiles built into
/// [`crate::link`], and `none`, which means a direct connection.
pub const LINK_PROFILE_NAMES: [&str; 6] = ["lan", "wan", "lossy-wan", "satellite", "modem", "none"];

/// Largest batch size accepted; anything above is refused as absurd.
pub const MAX_BATCH_SIZE: usize = 10_000;

/// Largest `randomize` percentage: starts are spread over at most half the start window.
pub const MAX_RANDOMIZE_PERCENT: u8 = 50;

/// Largest `max_retries`.
pub const MAX_RETRIES: u32 = 100;

/// Largest `max_check_attempts`: more consecutive bad results before a problem is notified
/// would hide it for too many intervals.
pub const MAX_CHECK_ATTEMPTS: u32 = 10;

/// Largest `reserved_percent`.
pub const MAX_RESERVED_PERCENT: u8 = 90;

/// Largest `batch_window` and `push_flush_window`.
pub const MAX_BATCH_WINDOW: Duration = Duration::from_secs(5);

/// A `ca` file larger than this is accepted with a warning: every task carries it, and the
/// engine refuses tasks over its `max_task_bytes` (4 KiB by default).
const CA_WARN_BYTES: usize = 3 * 1024;

/// `task_info_batch_size` at or above this logs a warning: the replies to such queries make
/// large packets, which slow or lossy links delay or drop.
pub const INFO_BATCH_WARN_AT: usize = 100;

/// Checks several keys share. They live here, not with [`Findings`], because they are
/// validation rules rather than part of what a finding is.
impl Findings {
    fn retries(&mut self, path: KeyPath, value: u32) {
        if value > MAX_RETRIES {
            self.error(
                path,
                format!("{value} is absurd: at most {MAX_RETRIES} retries"),
            );
        }
    }

    fn batch_size(&mut self, path: KeyPath, value: BatchSize) {
        if let BatchSize::Fixed(value) = value {
            self.batch_size_bound(path, value);
        }
    }

    fn batch_size_bound(&mut self, path: KeyPath, value: usize) {
        if value == 0 {
            self.error(
                path,
                "must be at least 1 (a batch of 0 tasks sends nothing)",
            );
        } else if value > MAX_BATCH_SIZE {
            self.error(
                path,
                format!("{value} is absurd: at most {MAX_BATCH_SIZE} per batch"),
            );
        }
    }

    fn info_batch_size(&mut self, path: KeyPath, value: BatchSize) {
        self.batch_size(path.clone(), value);
        if let BatchSize::Fixed(value) = value
            && (INFO_BATCH_WARN_AT..=MAX_BATCH_SIZE).contains(&value)
        {
            self.warn(
                path,
                format!(
                    "{value} task ids per status-check batch is large (warning at \
                     {INFO_BATCH_WARN_AT} and above): big status packets are slow or dropped \
                     on poor links"
                ),
            );
        }
    }

    /// `batch_size_min` and `batch_size_max` as they apply together (`max_path` is where the
    /// maximum in force was written).
    fn batch_size_range(&mut self, max_path: KeyPath, min: usize, max: usize) {
        if min >= 1 && max >= 1 && min > max {
            self.error(
                max_path,
                format!("{max} is below batch_size_min ({min}): the automatic size has no room"),
            );
        }
    }

    fn name(&mut self, path: KeyPath, value: &str) {
        if value.trim().is_empty() {
            self.error(path, "must not be empty");
        }
    }
}

/// At most this many names are listed after "known:" in a dangling-reference error.
const KNOWN_NAMES_LISTED: usize = 20;

/// Records each name's first path; reports later duplicates.
struct NameRegistry<'c> {
    what: &'static str,
    first: HashMap<&'c str, KeyPath>,
    /// The "known: ..." text, built once on the first dangling reference (a file with thousands
    /// of names and dangling references would otherwise sort and copy every name per error).
    known: OnceCell<String>,
}

impl<'c> NameRegistry<'c> {
    fn new(what: &'static str) -> Self {
        Self {
            what,
            first: HashMap::new(),
            known: OnceCell::new(),
        }
    }

    fn add(&mut self, findings: &mut Findings, name: &'c str, path: KeyPath) {
        if let Some(first) = self.first.get(name) {
            findings.error(
                path,
                format!(
                    "duplicate {} name `{name}` (already defined at `{first}`)",
                    self.what
                ),
            );
        } else {
            self.first.insert(name, path);
            self.known.take();
        }
    }

    fn contains(&self, name: &str) -> bool {
        self.first.contains_key(name)
    }

    fn known(&self) -> &str {
        self.known.get_or_init(|| {
            let mut names: Vec<&str> = self.first.keys().copied().collect();
            names.sort_unstable();
            if names.is_empty() {
                "none defined".to_string()
            } else if names.len() > KNOWN_NAMES_LISTED {
                format!(
                    "{} and {} more",
                    names[..KNOWN_NAMES_LISTED].join(", "),
                    names.len() - KNOWN_NAMES_LISTED
                )
            } else {
                names.join(", ")
            }
        })
    }

    fn require(&self, findings: &mut Findings, name: &str, path: KeyPath) {
        if !self.contains(name) {
            findings.error(
                path,
                format!("no {} named `{name}` (known: {})", self.what, self.known()),
            );
        }
    }
}

/// Validates a supervisor file's values.
pub(crate) fn check_supervisor(config: &SupervisorConfig) -> Findings {
    let mut findings = Findings::default();
    let root = KeyPath::root();

    check_supervisor_id(
        &mut findings,
        root.key("supervisor_id"),
        &config.supervisor_id,
    );
    if let Some(cluster) = &config.cluster {
        check_cluster(&mut findings, root.key("cluster"), cluster);
    }
    findings.batch_size(
        root.key("task_submit_batch_size"),
        config.task_submit_batch_size,
    );
    if let Some(tls) = &config.tls {
        let table = root.key("tls");
        for (key, path) in [("ca", &tls.ca), ("cert", &tls.cert), ("key", &tls.key)] {
            check_readable(&mut findings, table.key(key), path);
        }
    }
    findings.interval(root.key("keepalive_interval"), config.keepalive_interval);
    check_metrics_listen(
        &mut findings,
        root.key("metrics_listen"),
        &config.metrics_listen,
    );
    findings.info_batch_size(
        root.key("task_info_batch_size"),
        config.task_info_batch_size,
    );
    findings.batch_size_bound(root.key("batch_size_min"), config.batch_size_min);
    findings.batch_size_bound(root.key("batch_size_max"), config.batch_size_max);
    findings.batch_size_range(
        root.key("batch_size_max"),
        config.batch_size_min,
        config.batch_size_max,
    );
    findings.interval(
        root.key("status_check_interval"),
        config.status_check_interval,
    );
    findings.interval(root.key("stats_interval"), config.stats_interval);
    findings.count(
        root.key("max_inflight_batches"),
        config.max_inflight_batches,
    );
    findings.count(root.key("max_connections"), config.max_connections);
    findings.count(root.key("max_message_bytes"), config.max_message_bytes);
    findings.interval(root.key("batch_timeout"), config.batch_timeout);
    if let Some(period) = config.retry_period {
        findings.interval(root.key("retry_period"), period);
    }
    findings.retries(root.key("max_retries"), config.max_retries);
    if config.batch_window > MAX_BATCH_WINDOW {
        findings.error(
            root.key("batch_window"),
            format!(
                "{} is too long: tasks would start up to that much early (at most {})",
                humantime::format_duration(config.batch_window),
                humantime::format_duration(MAX_BATCH_WINDOW)
            ),
        );
    }
    if config.push_flush_window > MAX_BATCH_WINDOW {
        findings.error(
            root.key("push_flush_window"),
            format!(
                "{} would delay every completion that long (at most {})",
                humantime::format_duration(config.push_flush_window),
                humantime::format_duration(MAX_BATCH_WINDOW)
            ),
        );
    }
    findings.count(root.key("max_sessions"), config.max_sessions);
    if config.reserved_percent > MAX_RESERVED_PERCENT {
        findings.error(
            root.key("reserved_percent"),
            format!(
                "{}% would leave a single engine almost no slots (at most {MAX_RESERVED_PERCENT})",
                config.reserved_percent
            ),
        );
    }

    if config.engines.is_empty() {
        findings.error(
            root.key("engines"),
            "no engines: a supervisor needs at least one [[engines]] table with a name and an \
             address (see `turbomon gen-config supervisor`)",
        );
    }
    let mut engines = NameRegistry::new("engine");
    for (i, engine) in config.engines.iter().enumerate() {
        let path = root.key("engines").index(i);
        check_engine_entry(&mut findings, config, engine, &path);
        engines.add(&mut findings, &engine.name, path.key("name"));
    }
    check_backups(&mut findings, config, &engines);

    let mut groups = NameRegistry::new("group");
    for (i, group) in config.groups.iter().enumerate() {
        let path = root.key("groups").index(i);
        check_group(&mut findings, group, &path, &engines);
        groups.add(&mut findings, &group.name, path.key("name"));
    }

    let mut rules = NameRegistry::new("rule");
    for (i, rule) in config.rules.iter().enumerate() {
        let path = root.key("rules").index(i);
        check_rule(&mut findings, rule, &path);
        rules.add(&mut findings, &rule.name, path.key("name"));
    }

    let mut alerts = NameRegistry::new("alert");
    for (i, alert) in config.alerts.iter().enumerate() {
        let path = root.key("alerts").index(i);
        check_alert(&mut findings, alert, &path);
        alerts.add(&mut findings, &alert.name, path.key("name"));
    }

    let mut relators = NameRegistry::new("relator");
    for (i, relator) in config.relators.iter().enumerate() {
        let path = root.key("relators").index(i);
        check_relator(
            &mut findings,
            config,
            relator,
            &path,
            &groups,
            &rules,
            &alerts,
        );
        relators.add(&mut findings, &relator.name, path.key("name"));
    }
    check_chains(&mut findings, config, &relators);

    findings
}

/// A `supervisor_id`: 1 to [`MAX_SUPERVISOR_ID_BYTES`] bytes, no surrounding blanks and no
/// control characters (it is matched exactly by the engines and printed in logs).
fn check_supervisor_id(findings: &mut Findings, path: KeyPath, id: &str) {
    if id.is_empty() {
        findings.error(
            path,
            "must not be empty (leave the key out to use the host name)",
        );
    } else if id.len() > MAX_SUPERVISOR_ID_BYTES {
        findings.error(
            path,
            format!(
                "is {} bytes long: at most {MAX_SUPERVISOR_ID_BYTES}",
                id.len()
            ),
        );
    } else if id.trim() != id || id.chars().any(char::is_control) {
        findings.error(
            path,
            "must not start or end with blanks or hold control characters",
        );
    }
}

/// `[cluster]`: at least one etcd endpoint, each `host:port` or `http://host:port`; a member
/// name usable in an etcd key; a lease of whole seconds from 2 s (etcd's shortest) to an hour;
/// a prefix starting and ending with `/`.
fn check_cluster(findings: &mut Findings, path: KeyPath, cluster: &super::ClusterConfig) {
    if cluster.endpoints.is_empty() {
        findings.error(
            path.key("endpoints"),
            "needs at least one etcd client URL (host:port or http://host:port)",
        );
    }
    for (i, endpoint) in cluster.endpoints.iter().enumerate() {
        if let Err(reason) = crate::cluster::etcd::endpoint_url(endpoint) {
            findings.error(
                path.key("endpoints").index(i),
                format!("`{endpoint}`: {reason}"),
            );
        }
    }
    let name = &cluster.name;
    if name.is_empty()
        || name.len() > MAX_SUPERVISOR_ID_BYTES
        || name.contains('/')
        || name.trim() != name
        || name.chars().any(char::is_control)
    {
        findings.error(
            path.key("name"),
            format!(
                "`{name}`: 1 to {MAX_SUPERVISOR_ID_BYTES} bytes, no `/`, no surrounding blanks \
                 or control characters"
            ),
        );
    }
    let ttl = cluster.lease_ttl;
    if ttl.subsec_nanos() != 0 || ttl < Duration::from_secs(2) || ttl > Duration::from_secs(3600) {
        findings.error(
            path.key("lease_ttl"),
            format!(
                "{}: whole seconds from 2s (etcd's shortest lease) to 1h",
                humantime::format_duration(ttl)
            ),
        );
    }
    let prefix = &cluster.prefix;
    if !prefix.starts_with('/') || !prefix.ends_with('/') || prefix.chars().any(char::is_control) {
        findings.error(
            path.key("prefix"),
            format!("`{prefix}`: must start and end with `/`"),
        );
    }
}

/// Chains (`on_ok` / `on_broken`) name existing relators and never lead back to where they
/// started; a relator without an interval must be the target of some chain.
fn check_chains(findings: &mut Findings, config: &SupervisorConfig, relators: &NameRegistry<'_>) {
    let root = KeyPath::root();
    let index: HashMap<&str, usize> = config
        .relators
        .iter()
        .enumerate()
        .map(|(i, r)| (r.name.as_str(), i))
        .collect();
    let next = |i: usize| {
        let relator = &config.relators[i];
        relator
            .on_ok
            .iter()
            .map(|n| ("on_ok", n))
            .chain(relator.on_broken.iter().map(|n| ("on_broken", n)))
            .collect::<Vec<_>>()
    };
    let mut targeted = vec![false; config.relators.len()];
    for (i, _) in config.relators.iter().enumerate() {
        for (j, (key, name)) in next(i).into_iter().enumerate() {
            let offset = if key == "on_ok" {
                j
            } else {
                j - config.relators[i].on_ok.len()
            };
            let path = root.key("relators").index(i).key(key).index(offset);
            match index.get(name.as_str()) {
                Some(&t) => targeted[t] = true,
                None => relators.require(findings, name, path),
            }
        }
    }
    for (i, relator) in config.relators.iter().enumerate() {
        if relator.interval.is_none() && !targeted[i] {
            findings.error(
                root.key("relators").index(i).key("interval"),
                "missing: a relator without an interval runs only when another relator's \
                 on_ok/on_broken names it, and none does",
            );
        }
    }
    // Chains resolved to relator indices, once.
    let edges: Vec<Vec<(&str, usize)>> = (0..config.relators.len())
        .map(|i| {
            next(i)
                .into_iter()
                .filter_map(|(key, name)| index.get(name.as_str()).map(|&to| (key, to)))
                .collect()
        })
        .collect();
    if !has_loop(&edges) {
        return;
    }
    // A depth-first search from each relator; reaching it again is a loop. Each relator
    // remembers the one it was reached from and through which list, so the trail is only
    // built for the loop found (copying it at every step made long chains cubic). The loop
    // is reported at the starting relator's list that leads into it.
    let mut reached_from = vec![None::<(usize, &str)>; config.relators.len()];
    for start in 0..config.relators.len() {
        let mut stack = vec![start];
        let mut seen = vec![false; config.relators.len()];
        while let Some(at) = stack.pop() {
            for &(key, to) in &edges[at] {
                if to == start {
                    let mut trail = vec![config.relators[start].name.as_str()];
                    let mut first_key = key;
                    let mut step = at;
                    while step != start {
                        trail.push(config.relators[step].name.as_str());
                        let Some((from, via)) = reached_from[step] else {
                            break;
                        };
                        first_key = via;
                        step = from;
                    }
                    trail.push(config.relators[start].name.as_str());
                    trail.reverse();
                    let path = root.key("relators").index(start).key(first_key);
                    findings.error(
                        path,
                        format!("this chain loops back on itself: {}", trail.join(" -> ")),
                    );
                    return;
                }
                if !seen[to] {
                    seen[to] = true;
                    reached_from[to] = Some((at, key));
                    stack.push(to);
                }
            }
        }
    }
}

/// Whether the chains (`edges[i]`: the relators `i` leads to) contain a loop: peeling off
/// relators nothing leads to, then those only they led to, and so on, leaves some behind
/// exactly when there is one. Linear, so the common loop-free file skips the search above.
fn has_loop(edges: &[Vec<(&str, usize)>]) -> bool {
    let mut incoming = vec![0usize; edges.len()];
    for &(_, to) in edges.iter().flatten() {
        incoming[to] += 1;
    }
    let mut free: Vec<usize> = (0..edges.len()).filter(|&i| incoming[i] == 0).collect();
    let mut peeled = 0;
    while let Some(at) = free.pop() {
        peeled += 1;
        for &(_, to) in &edges[at] {
            incoming[to] -= 1;
            if incoming[to] == 0 {
                free.push(to);
            }
        }
    }
    peeled < edges.len()
}

fn check_engine_entry(
    findings: &mut Findings,
    config: &SupervisorConfig,
    engine: &EngineEntry,
    path: &KeyPath,
) {
    findings.name(path.key("name"), &engine.name);
    if let Err(why) = check_host_port(&engine.address) {
        findings.error(
            path.key("address"),
            format!("`{}` is not host:port: {why}", engine.address),
        );
    }
    if let Some(name) = &engine.server_name
        && (name.is_empty() || rustls_pki_types::ServerName::try_from(name.as_str()).is_err())
    {
        findings.error(
            path.key("server_name"),
            format!("`{name}` is not a DNS name or an IP address"),
        );
    }
    if let Some(link) = &engine.link
        && !LINK_PROFILE_NAMES.contains(&link.as_str())
    {
        findings.error(
            path.key("link"),
            format!(
                "unknown link profile `{link}` (known: {})",
                LINK_PROFILE_NAMES.join(", ")
            ),
        );
    }
    if let Some(value) = engine.task_submit_batch_size {
        findings.batch_size(path.key("task_submit_batch_size"), value);
    }
    if let Some(value) = engine.task_info_batch_size {
        findings.info_batch_size(path.key("task_info_batch_size"), value);
    }
    super::bandwidth::check_engine_bandwidth(
        findings,
        path,
        engine.max_bandwidth,
        engine.pulse.as_ref(),
        &engine.bandwidth_windows,
    );
    if let Some(value) = engine.batch_size_min {
        findings.batch_size_bound(path.key("batch_size_min"), value);
    }
    if let Some(value) = engine.batch_size_max {
        findings.batch_size_bound(path.key("batch_size_max"), value);
    }
    if engine.batch_size_min.is_some() || engine.batch_size_max.is_some() {
        let key = if engine.batch_size_max.is_some() {
            "batch_size_max"
        } else {
            "batch_size_min"
        };
        findings.batch_size_range(
            path.key(key),
            engine.batch_size_min.unwrap_or(config.batch_size_min),
            engine.batch_size_max.unwrap_or(config.batch_size_max),
        );
    }
    if let Some(value) = engine.status_check_interval {
        findings.interval(path.key("status_check_interval"), value);
    }
    if let Some(value) = engine.stats_interval {
        findings.interval(path.key("stats_interval"), value);
    }
    if let Some(value) = engine.max_inflight_batches {
        findings.count(path.key("max_inflight_batches"), value);
    }
    if let Some(value) = engine.max_connections {
        findings.count(path.key("max_connections"), value);
    }
    if let Some(value) = engine.failover_after {
        findings.interval(path.key("failover_after"), value);
    }
}

/// A `backup` names another defined engine.
fn check_backups(findings: &mut Findings, config: &SupervisorConfig, engines: &NameRegistry<'_>) {
    for (i, engine) in config.engines.iter().enumerate() {
        let Some(backup) = &engine.backup else {
            continue;
        };
        let path = KeyPath::root().key("engines").index(i).key("backup");
        if backup == &engine.name {
            findings.error(path, "an engine cannot be its own backup");
        } else {
            engines.require(findings, backup, path);
        }
    }
}

fn check_group(
    findings: &mut Findings,
    group: &GroupConfig,
    path: &KeyPath,
    engines: &NameRegistry<'_>,
) {
    findings.name(path.key("name"), &group.name);
    engines.require(findings, &group.engine, path.key("engine"));
    if group.nodes.is_empty() {
        findings.error(path.key("nodes"), "a group needs at least one node");
    }
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (j, node) in group.nodes.iter().enumerate() {
        let node_path = path.key("nodes").index(j);
        if node.trim().is_empty() {
            findings.error(node_path, "node name must not be empty");
        } else if let Some(first) = seen.get(node.as_str()) {
            findings.error(
                node_path,
                format!("node `{node}` is listed twice (first at nodes[{first}])"),
            );
        } else {
            seen.insert(node, j);
        }
    }
}

/// Keys of a rule that only some kinds use, and whether `rule` sets each.
fn rule_kind_keys(rule: &RuleConfig) -> [(&'static str, bool); 16] {
    [
        ("warning", rule.warning.is_some()),
        ("critical", rule.critical.is_some()),
        ("ca", rule.ca.is_some()),
        ("insecure_skip_verify", rule.insecure_skip_verify.is_some()),
        ("expect_body", rule.expect_body.is_some()),
        ("follow_redirects", rule.follow_redirects.is_some()),
        ("host", rule.host.is_some()),
        ("port", rule.port.is_some()),
        ("program", rule.program.is_some()),
        ("args", !rule.args.is_empty()),
        ("url", rule.url.is_some()),
        ("expect_status", rule.expect_status.is_some()),
        ("duration", rule.duration.is_some()),
        ("outcome", rule.outcome.is_some()),
        ("value", rule.value.is_some()),
        ("timeout", true),
    ]
}

fn allowed_rule_keys(kind: CheckKind) -> &'static [&'static str] {
    match kind {
        CheckKind::Tcp => &["host", "port", "timeout", "warning", "critical"],
        CheckKind::Exec => &["program", "args", "timeout"],
        CheckKind::Http => &[
            "url",
            "expect_status",
            "timeout",
            "warning",
            "critical",
            "ca",
            "insecure_skip_verify",
            "expect_body",
            "follow_redirects",
        ],
        CheckKind::Sim => &["duration", "outcome", "value", "timeout"],
    }
}

fn kind_name(kind: CheckKind) -> &'static str {
    match kind {
        CheckKind::Tcp => "tcp",
        CheckKind::Exec => "exec",
        CheckKind::Http => "http",
        CheckKind::Sim => "sim",
    }
}

fn check_rule(findings: &mut Findings, rule: &RuleConfig, path: &KeyPath) {
    findings.name(path.key("name"), &rule.name);
    findings.interval(path.key("timeout"), rule.timeout);
    let allowed = allowed_rule_keys(rule.kind);
    for (key, set) in rule_kind_keys(rule) {
        if set && !allowed.contains(&key) {
            findings.error(
                path.key(key),
                format!(
                    "does not apply to a rule of kind `{}` (its keys: {})",
                    kind_name(rule.kind),
                    allowed.join(", ")
                ),
            );
        }
    }
    match rule.kind {
        CheckKind::Tcp => {
            match rule.port {
                None => findings.error(path.key("port"), "a tcp rule needs a port"),
                Some(0) => findings.error(path.key("port"), "port 0 cannot be connected to"),
                Some(_) => {}
            }
            if let Some(host) = &rule.host
                && host.trim().is_empty()
            {
                findings.error(path.key("host"), "must not be empty");
            }
            check_thresholds(findings, rule, path);
        }
        CheckKind::Exec => match &rule.program {
            None => findings.error(path.key("program"), "an exec rule needs a program"),
            Some(program) if program.trim().is_empty() => {
                findings.error(path.key("program"), "must not be empty")
            }
            Some(_) => {}
        },
        CheckKind::Http => {
            match &rule.url {
                None => findings.error(path.key("url"), "an http rule needs a url"),
                Some(url) => {
                    if let Err(why) = check_http_url(url) {
                        findings.error(path.key("url"), why);
                    }
                }
            }
            if let Some(status) = rule.expect_status
                && !(100..=599).contains(&status)
            {
                findings.error(
                    path.key("expect_status"),
                    format!("{status} is not an HTTP status code (100..=599)"),
                );
            }
            check_thresholds(findings, rule, path);
            check_tls_options(
                findings,
                rule.ca.as_deref(),
                rule.insecure_skip_verify,
                path,
            );
            if rule.expect_body.as_deref().is_some_and(str::is_empty) {
                findings.error(
                    path.key("expect_body"),
                    "must not be empty (leave the key out to not look at the body)",
                );
            }
            if rule.follow_redirects == Some(true)
                && let Some(status @ 300..=399) = rule.expect_status
            {
                findings.error(
                    path.key("expect_status"),
                    format!("{status} can never be the final status when redirects are followed"),
                );
            }
        }
        CheckKind::Sim => {
            if let Some(value) = rule.value
                && !value.is_finite()
            {
                findings.error(path.key("value"), "must be a finite number");
            }
        }
    }
}

/// `warning` and `critical`: at least a millisecond (the wire carries milliseconds), warning
/// not above critical, both below the timeout (the check would time out first).
fn check_thresholds(findings: &mut Findings, rule: &RuleConfig, path: &KeyPath) {
    let show = |d: Duration| humantime::format_duration(d);
    for (key, threshold) in [("warning", rule.warning), ("critical", rule.critical)] {
        let Some(threshold) = threshold else { continue };
        if threshold < Duration::from_millis(1) {
            findings.error(
                path.key(key),
                "must be at least 1ms (thresholds travel in milliseconds)",
            );
        } else if threshold >= rule.timeout {
            findings.error(
                path.key(key),
                format!(
                    "{} is not below the rule's timeout {}: the check would time out first",
                    show(threshold),
                    show(rule.timeout)
                ),
            );
        }
    }
    if let (Some(warning), Some(critical)) = (rule.warning, rule.critical)
        && warning > critical
    {
        findings.error(
            path.key("warning"),
            format!("{} is above critical {}", show(warning), show(critical)),
        );
    }
}

/// `ca` (a readable PEM file of usable CA certificates) and `insecure_skip_verify`, never both.
fn check_tls_options(
    findings: &mut Findings,
    ca: Option<&Path>,
    insecure_skip_verify: Option<bool>,
    path: &KeyPath,
) {
    let Some(ca) = ca else { return };
    if insecure_skip_verify == Some(true) {
        findings.error(
            path.key("insecure_skip_verify"),
            "cannot go with `ca`: a certificate is either verified against it or not at all",
        );
    }
    if let Some(bytes) = check_ca_file(findings, path.key("ca"), ca)
        && bytes > CA_WARN_BYTES
    {
        findings.warn(
            path.key("ca"),
            format!(
                "`{}` is {bytes} bytes and every task carries it: engines refuse tasks over \
                 their max_task_bytes (4 KiB by default)",
                ca.display()
            ),
        );
    }
}

fn check_alert(findings: &mut Findings, alert: &AlertConfig, path: &KeyPath) {
    findings.name(path.key("name"), &alert.name);
    findings.interval(path.key("timeout"), alert.timeout);
    let (kind, allowed): (&str, &[&str]) = match alert.kind {
        AlertKind::Log => ("log", &[]),
        AlertKind::Webhook => ("webhook", &["url", "ca", "insecure_skip_verify"]),
        AlertKind::Command => ("command", &["program", "args"]),
    };
    let set = [
        ("url", alert.url.is_some()),
        ("program", alert.program.is_some()),
        ("args", !alert.args.is_empty()),
        ("ca", alert.ca.is_some()),
        ("insecure_skip_verify", alert.insecure_skip_verify.is_some()),
    ];
    for (key, is_set) in set {
        if is_set && !allowed.contains(&key) {
            findings.error(
                path.key(key),
                format!("does not apply to an alert of kind `{kind}`"),
            );
        }
    }
    match alert.kind {
        AlertKind::Log => {}
        AlertKind::Webhook => {
            match &alert.url {
                None => findings.error(path.key("url"), "a webhook alert needs a url"),
                Some(url) => {
                    if let Err(why) = check_http_url(url) {
                        findings.error(path.key("url"), why);
                    }
                }
            }
            check_tls_options(
                findings,
                alert.ca.as_deref(),
                alert.insecure_skip_verify,
                path,
            );
        }
        AlertKind::Command => match &alert.program {
            None => findings.error(path.key("program"), "a command alert needs a program"),
            Some(program) if program.trim().is_empty() => {
                findings.error(path.key("program"), "must not be empty")
            }
            Some(_) => {}
        },
    }
}

fn check_relator(
    findings: &mut Findings,
    config: &SupervisorConfig,
    relator: &RelatorConfig,
    path: &KeyPath,
    groups: &NameRegistry<'_>,
    rules: &NameRegistry<'_>,
    alerts: &NameRegistry<'_>,
) {
    findings.name(path.key("name"), &relator.name);
    groups.require(findings, &relator.group, path.key("group"));
    if let Some(interval) = relator.interval {
        findings.interval(path.key("interval"), interval);
    }
    if let Some(window) = relator.start_window {
        findings.interval(path.key("start_window"), window);
        if let Some(interval) = relator.interval
            && window > interval
        {
            findings.error(
                path.key("start_window"),
                format!(
                    "{} is longer than the interval {}: firings would overlap",
                    humantime::format_duration(window),
                    humantime::format_duration(interval)
                ),
            );
        }
    }
    if relator.randomize > MAX_RANDOMIZE_PERCENT {
        findings.error(
            path.key("randomize"),
            format!(
                "{}% is over {MAX_RANDOMIZE_PERCENT}%: at most half the start window may be used to spread starts",
                relator.randomize
            ),
        );
    }
    if let Some(retries) = relator.max_retries {
        findings.retries(path.key("max_retries"), retries);
    }
    if let Some(period) = relator.retry_period {
        findings.interval(path.key("retry_period"), period);
    }
    if let Some(interval) = relator.interval
        && let Some(retry_period) = relator.retry_period.or(config.retry_period)
        && relator.max_retries.unwrap_or(config.max_retries) > 0
        && retry_period > interval
    {
        let key = if relator.retry_period.is_some() {
            path.key("retry_period")
        } else {
            path.key("interval")
        };
        findings.error(
            key,
            format!(
                "retry period {} is longer than the interval {}: a retry would start after the next firing",
                humantime::format_duration(retry_period),
                humantime::format_duration(interval)
            ),
        );
    }
    if relator.rules.is_empty() {
        findings.error(path.key("rules"), "a relator needs at least one rule");
    }
    let mut listed = HashSet::new();
    for (j, rule) in relator.rules.iter().enumerate() {
        let rule_path = path.key("rules").index(j);
        if !listed.insert(rule.as_str()) {
            findings.error(rule_path, format!("rule `{rule}` is listed twice"));
        } else {
            rules.require(findings, rule, rule_path);
        }
    }
    check_notifications(findings, relator, path);
    let mut listed = HashSet::new();
    for (j, alert) in relator.alerts.iter().enumerate() {
        let alert_path = path.key("alerts").index(j);
        if !listed.insert(alert.as_str()) {
            findings.error(alert_path, format!("alert `{alert}` is listed twice"));
        } else {
            alerts.require(findings, alert, alert_path);
        }
    }
}

/// A relator's notification keys: `alert_on` names each bad state at most once and at least
/// one, `max_check_attempts` is 1 to [`MAX_CHECK_ATTEMPTS`], `renotify_interval` is not zero.
fn check_notifications(findings: &mut Findings, relator: &RelatorConfig, path: &KeyPath) {
    let known = || {
        AlertOn::ALL
            .iter()
            .map(|state| state.name())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if relator.alert_on.is_empty() {
        findings.error(
            path.key("alert_on"),
            format!(
                "names no state: give at least one of {} (a relator that should notify nothing \
                 leaves `alerts` empty)",
                known()
            ),
        );
    }
    let mut listed = HashSet::new();
    for (j, state) in relator.alert_on.iter().enumerate() {
        if !listed.insert(*state) {
            findings.error(
                path.key("alert_on").index(j),
                format!("`{}` is listed twice", state.name()),
            );
        }
    }
    if !(1..=MAX_CHECK_ATTEMPTS).contains(&relator.max_check_attempts) {
        findings.error(
            path.key("max_check_attempts"),
            format!(
                "{} is out of range: 1 (notify at the first bad result) to {MAX_CHECK_ATTEMPTS}",
                relator.max_check_attempts
            ),
        );
    }
    if let Some(interval) = relator.renotify_interval {
        findings.interval(path.key("renotify_interval"), interval);
    }
}

/// Validates `config` without its source text: errors and warnings name the key but no line.
/// Returns the warnings (not logged; the caller decides) or the first error.
pub fn validate_supervisor(
    config: &SupervisorConfig,
    file: &Path,
) -> Result<Vec<ConfigError>, ConfigError> {
    check_supervisor(config).into_result(file, None)
}

/// Validates an engine config without its source text; see [`validate_supervisor`].
pub fn validate_engine(
    config: &EngineConfig,
    file: &Path,
) -> Result<Vec<ConfigError>, ConfigError> {
    check_engine(config).into_result(file, None)
}
