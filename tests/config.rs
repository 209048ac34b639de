//! Configuration loading, validation (file, line and key named) and live reload.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::{TempDir, TestCa, capture_logs};
use turbomon::config::{
    ConfigError, SupervisorConfig, check_file, load_supervisor, parse_engine, parse_supervisor,
    watch_supervisor, watch_supervisor_every,
};

const FILE: &str = "test-supervisor.toml";

fn shipped_supervisor_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config/supervisor.toml")
}

/// 1-based number of the last line of `text` containing `needle`.
fn line_containing(text: &str, needle: &str) -> usize {
    let lines: Vec<&str> = text.lines().collect();
    lines
        .iter()
        .rposition(|line| line.contains(needle))
        .map(|i| i + 1)
        .unwrap_or_else(|| panic!("`{needle}` not in test text"))
}

fn refused_supervisor(text: &str) -> ConfigError {
    match parse_supervisor(text, Path::new(FILE)) {
        Ok(config) => panic!("accepted:\n{text}\n=> {config:?}"),
        Err(error) => error,
    }
}

/// Asserts the error names `key` at the line holding `needle`, in the struct and the message.
fn assert_refused_at(text: &str, key: &str, needle: &str) {
    let error = refused_supervisor(text);
    let line = line_containing(text, needle);
    let message = error.to_string();
    assert_eq!(error.key.as_deref(), Some(key), "{message}");
    assert_eq!(error.line, Some(line), "{message}");
    assert!(
        message.starts_with(&format!("{FILE}:{line}: key `{key}`: ")),
        "{message}"
    );
}

const ENGINES: &str = r#"
[[engines]]
name = "local"
address = "127.0.0.1:7300"

[[engines]]
name = "remote"
address = "127.0.0.1:7301"
"#;

const GROUP: &str = r#"
[[groups]]
name = "web"
engine = "local"
nodes = ["a", "b"]
"#;

const SIM_RULE: &str = r#"
[[rules]]
name = "load"
kind = "sim"
"#;

const LOG_ALERT: &str = r#"
[[alerts]]
name = "log"
kind = "log"
"#;

/// A valid document: two engines, one group, one sim rule, one log alert, plus `extra`.
fn with(extra: &str) -> String {
    format!("{ENGINES}{GROUP}{SIM_RULE}{LOG_ALERT}{extra}")
}

#[test]
fn shipped_supervisor_file_loads_with_overrides_resolved() {
    let config = load_supervisor(&shipped_supervisor_path()).unwrap_or_else(|e| panic!("{e}"));
    assert!(config.turbo_monitoring);
    assert_eq!(config.task_submit_batch_size, 30);
    assert_eq!(config.task_info_batch_size, 30);
    assert_eq!(config.status_check_interval, Duration::from_secs(10));
    assert_eq!(config.stats_interval, Duration::from_secs(300));
    let names: Vec<&str> = config.engines.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["local", "remote"]);
    let local = config.tunables(&config.engines[0]);
    let remote = config.tunables(&config.engines[1]);
    assert_eq!(local.task_submit_batch_size, 30);
    assert_eq!(remote.task_submit_batch_size, 10);
    assert_eq!(remote.task_info_batch_size, 30);
    assert_eq!(remote.status_check_interval, Duration::from_secs(15));
    let kinds: Vec<String> = config
        .rules
        .iter()
        .map(|r| format!("{:?}", r.kind))
        .collect();
    for kind in ["Tcp", "Exec", "Http", "Sim"] {
        assert!(
            kinds.iter().any(|k| k == kind),
            "no {kind} rule in {kinds:?}"
        );
    }
    assert!(!config.relators.is_empty());
    // log and notify-script; the webhook is there commented out.
    assert_eq!(config.alerts.len(), 2);
}

#[test]
fn check_file_summarises_the_shipped_supervisor_file() {
    let summary = check_file(&shipped_supervisor_path()).unwrap_or_else(|e| panic!("{e}"));
    assert!(summary.starts_with("Supervisor configuration"), "{summary}");
    assert!(summary.contains("2 engines"), "{summary}");
    assert!(summary.contains("remote at 127.0.0.1:7301"), "{summary}");
    assert!(summary.contains("batches 10/30"), "{summary}");
    // web-availability is there commented out.
    assert!(summary.contains("3 relators"), "{summary}");
    assert!(summary.contains("when chained"), "{summary}");
    // fleet-load: 2 rules × 5 nodes.
    assert!(summary.contains("= 10 tasks every 30s"), "{summary}");
}

#[test]
fn defaults_apply_to_a_file_with_only_an_engine() {
    let text = "[[engines]]\nname = \"e\"\naddress = \"127.0.0.1:1\"\n";
    let config = parse_supervisor(text, Path::new(FILE)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        config,
        SupervisorConfig {
            engines: config.engines.clone(),
            ..SupervisorConfig::default()
        }
    );
    assert_eq!(config.task_submit_batch_size, 30);
    assert_eq!(config.stats_interval, Duration::from_secs(300));
}

#[test]
fn an_empty_supervisor_file_is_refused_naming_engines() {
    let error = parse_supervisor("", Path::new(FILE)).err();
    let error = error.unwrap_or_else(|| panic!("an empty file was accepted"));
    assert_eq!(error.key.as_deref(), Some("engines"), "{error}");
    assert!(error.to_string().contains("no engines"), "{error}");
}

#[test]
fn zero_submit_batch_size_is_refused_naming_line_and_key() {
    let text =
        "turbo_monitoring = true\nstatus_check_interval = \"10s\"\ntask_submit_batch_size = 0\n";
    let message = refused_supervisor(text).to_string();
    assert!(message.contains(":3:"), "{message}");
    assert!(message.contains("task_submit_batch_size"), "{message}");
    assert_refused_at(text, "task_submit_batch_size", "task_submit_batch_size");
}

#[test]
fn invalid_top_level_values_are_refused_never_clamped() {
    let cases: [(&str, &str); 13] = [
        ("task_submit_batch_size = 10001", "task_submit_batch_size"),
        ("task_info_batch_size = 0", "task_info_batch_size"),
        ("task_submit_batch_size = -1", "task_submit_batch_size"),
        ("task_submit_batch_size = \"30\"", "task_submit_batch_size"),
        ("turbo_monitoring = \"yes\"", "turbo_monitoring"),
        ("status_check_interval = \"0s\"", "status_check_interval"),
        ("stats_interval = \"-5m\"", "stats_interval"),
        ("stats_interval = \"soon\"", "stats_interval"),
        ("stats_interval = 300", "stats_interval"),
        ("max_inflight_batches = 0", "max_inflight_batches"),
        ("max_connections = 0", "max_connections"),
        ("max_message_bytes = 0", "max_message_bytes"),
        ("max_message_bytes = 1.5", "max_message_bytes"),
    ];
    for (line, key) in cases {
        let text = format!("# a comment\nturbo_monitoring = true\n{line}\n{}", with(""));
        let text = if line.starts_with("turbo_monitoring") {
            format!("# a comment\n{line}\n{}", with(""))
        } else {
            text
        };
        assert_refused_at(&text, key, line);
    }
}

#[test]
fn unknown_keys_are_refused_with_their_line() {
    let text = format!("turbo_monitoring = true\nturbo_mode = false\n{}", with(""));
    assert_refused_at(&text, "turbo_mode", "turbo_mode");
    let message = refused_supervisor(&text).to_string();
    assert!(message.contains("unknown field `turbo_mode`"), "{message}");

    let text = with("").replace(
        "address = \"127.0.0.1:7301\"",
        "address = \"127.0.0.1:7301\"\nbatch = 10",
    );
    assert_refused_at(&text, "engines[1].batch", "batch = 10");
}

#[test]
fn missing_required_key_is_named_at_its_table() {
    let text = with("\n[[relators]]\nname = \"r\"\ngroup = \"web\"\nrules = [\"load\"]\n");
    let error = refused_supervisor(&text);
    assert_eq!(error.key.as_deref(), Some("relators[0].interval"));
    assert_eq!(error.line, Some(line_containing(&text, "[[relators]]")));
}

#[test]
fn per_engine_override_errors_name_the_engine_entry() {
    let text = with("").replace(
        "address = \"127.0.0.1:7301\"",
        "address = \"127.0.0.1:7301\"\ntask_submit_batch_size = 0",
    );
    assert_refused_at(
        &text,
        "engines[1].task_submit_batch_size",
        "task_submit_batch_size = 0",
    );
    let text = with("").replace(
        "address = \"127.0.0.1:7301\"",
        "address = \"127.0.0.1:7301\"\nstatus_check_interval = \"0s\"",
    );
    assert_refused_at(
        &text,
        "engines[1].status_check_interval",
        "status_check_interval",
    );
    let text = with("").replace(
        "address = \"127.0.0.1:7301\"",
        "address = \"127.0.0.1:7301\"\nmax_inflight_batches = 0",
    );
    assert_refused_at(
        &text,
        "engines[1].max_inflight_batches",
        "max_inflight_batches",
    );
}

#[test]
fn engine_entries_are_checked() {
    let text = with("").replace("127.0.0.1:7301", "localhost");
    assert_refused_at(&text, "engines[1].address", "\"localhost\"");
    let text = with("").replace("127.0.0.1:7301", "http://127.0.0.1:7301");
    assert_refused_at(&text, "engines[1].address", "http://");
    let text = with("").replace(
        "address = \"127.0.0.1:7301\"",
        "address = \"127.0.0.1:7301\"\nlink = \"dialup\"",
    );
    assert_refused_at(&text, "engines[1].link", "dialup");
    let message = refused_supervisor(&text).to_string();
    assert!(
        message.contains("lossy-wan"),
        "lists the known profiles: {message}"
    );
}

#[test]
fn known_link_profiles_are_accepted() {
    for profile in turbomon::config::LINK_PROFILE_NAMES {
        let text = with("").replace(
            "address = \"127.0.0.1:7301\"",
            &format!("address = \"127.0.0.1:7301\"\nlink = \"{profile}\""),
        );
        let config = parse_supervisor(&text, Path::new(FILE)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.engines[1].link.as_deref(), Some(profile));
    }
}

#[test]
fn duplicate_engine_name_is_refused_at_the_second_definition() {
    let text = with("").replace("name = \"remote\"", "name = \"local\"");
    let error = refused_supervisor(&text);
    assert_eq!(error.key.as_deref(), Some("engines[1].name"));
    // The second `name = "local"` line.
    let second = text
        .lines()
        .enumerate()
        .filter(|(_, l)| l.contains("name = \"local\""))
        .nth(1)
        .map(|(i, _)| i + 1);
    assert_eq!(error.line, second);
}

#[test]
fn duplicate_names_of_every_kind_are_refused() {
    let cases = [
        (GROUP, "groups[1].name"),
        (SIM_RULE, "rules[1].name"),
        (LOG_ALERT, "alerts[1].name"),
    ];
    for (again, key) in cases {
        let error = refused_supervisor(&with(again));
        assert_eq!(error.key.as_deref(), Some(key), "{error}");
        assert!(error.message.contains("duplicate"), "{error}");
    }
    let relator =
        "\n[[relators]]\nname = \"r\"\ngroup = \"web\"\nrules = [\"load\"]\ninterval = \"1m\"\n";
    let error = refused_supervisor(&with(&format!("{relator}{relator}")));
    assert_eq!(error.key.as_deref(), Some("relators[1].name"), "{error}");
}

#[test]
fn groups_must_name_an_engine_and_have_nodes() {
    let text = with("\n[[groups]]\nname = \"far\"\nengine = \"nowhere\"\nnodes = [\"x\"]\n");
    assert_refused_at(&text, "groups[1].engine", "engine = \"nowhere\"");
    let text = with("\n[[groups]]\nname = \"empty\"\nengine = \"local\"\nnodes = []\n");
    assert_refused_at(&text, "groups[1].nodes", "nodes = []");
}

#[test]
fn relators_must_name_existing_group_rules_and_alerts() {
    let relator = |group: &str, rules: &str, alerts: &str, interval: &str| {
        with(&format!(
            "\n[[relators]]\nname = \"r\"\ngroup = \"{group}\"\nrules = {rules}\ninterval = \"{interval}\"\nalerts = {alerts}\n"
        ))
    };
    let text = relator("nogroup", "[\"load\"]", "[]", "1m");
    assert_refused_at(&text, "relators[0].group", "nogroup");
    let text = relator("web", "[\"load\", \"norule\"]", "[]", "1m");
    assert_refused_at(&text, "relators[0].rules[1]", "norule");
    let text = relator("web", "[\"load\"]", "[\"noalert\"]", "1m");
    assert_refused_at(&text, "relators[0].alerts[0]", "noalert");
    let text = relator("web", "[\"load\"]", "[]", "0s");
    assert_refused_at(&text, "relators[0].interval", "interval");
    let text = relator("web", "[]", "[]", "1m");
    assert_refused_at(&text, "relators[0].rules", "rules = []");
    let ok = relator("web", "[\"load\"]", "[\"log\"]", "1m");
    assert!(parse_supervisor(&ok, Path::new(FILE)).is_ok());
}

#[test]
fn relator_notification_keys_are_checked_naming_the_key() {
    let relator = |keys: &str| {
        with(&format!(
            "\n[[relators]]\nname = \"r\"\ngroup = \"web\"\nrules = [\"load\"]\ninterval = \"1m\"\nalerts = [\"log\"]\n{keys}\n"
        ))
    };
    // A misspelt state is named with the nearest one.
    let text = relator("alert_on = [\"critical\", \"warn\"]");
    assert_refused_at(&text, "relators[0].alert_on[1]", "alert_on");
    let message = refused_supervisor(&text).to_string();
    assert!(message.contains("did you mean `warning`?"), "{message}");
    let text = relator("alert_on = [\"critical\", \"critical\"]");
    assert_refused_at(&text, "relators[0].alert_on[1]", "alert_on");
    let text = relator("alert_on = []");
    assert_refused_at(&text, "relators[0].alert_on", "alert_on");
    for attempts in ["0", "11"] {
        let text = relator(&format!("max_check_attempts = {attempts}"));
        assert_refused_at(
            &text,
            "relators[0].max_check_attempts",
            "max_check_attempts",
        );
    }
    let text = relator("renotify_interval = \"0s\"");
    assert_refused_at(&text, "relators[0].renotify_interval", "renotify_interval");

    let text = relator(
        "alert_on = [\"critical\", \"unknown\"]\nnotify_recovery = false\n\
         renotify_interval = \"1h\"\nmax_check_attempts = 10",
    );
    let config = parse_supervisor(&text, Path::new(FILE)).unwrap_or_else(|e| panic!("{e}"));
    let r = &config.relators[0];
    use turbomon::config::AlertOn;
    assert_eq!(r.alert_on, [AlertOn::Critical, AlertOn::Unknown]);
    assert!(!r.notify_recovery);
    assert_eq!(r.renotify_interval, Some(Duration::from_secs(3600)));
    assert_eq!(r.max_check_attempts, 10);
    // The defaults: every bad state, recoveries, no reminders, the first bad result is hard.
    let config = parse_supervisor(&relator(""), Path::new(FILE)).unwrap_or_else(|e| panic!("{e}"));
    let r = &config.relators[0];
    assert_eq!(r.alert_on, AlertOn::ALL);
    assert!(r.notify_recovery);
    assert_eq!((r.renotify_interval, r.max_check_attempts), (None, 1));
}

#[test]
fn rules_need_their_kind_keys_and_refuse_foreign_ones() {
    let rule = |body: &str| with(&format!("\n[[rules]]\nname = \"x\"\n{body}\n"));
    // Missing keys point at the rule's `[[rules]]` header.
    let text = rule("kind = \"tcp\"");
    assert_refused_at(&text, "rules[1].port", "[[rules]]");
    let text = rule("kind = \"exec\"");
    assert_refused_at(&text, "rules[1].program", "[[rules]]");
    let text = rule("kind = \"http\"");
    assert_refused_at(&text, "rules[1].url", "[[rules]]");
    // Wrong values.
    let text = rule("kind = \"http\"\nurl = \"ftp://example.org/\"");
    assert_refused_at(&text, "rules[1].url", "ftp://");
    let text = rule("kind = \"tcp\"\nport = 0");
    assert_refused_at(&text, "rules[1].port", "port = 0");
    let text = rule("kind = \"tcp\"\nport = 70000");
    assert_refused_at(&text, "rules[1].port", "port = 70000");
    let text = rule("kind = \"sim\"\ntimeout = \"0s\"");
    assert_refused_at(&text, "rules[1].timeout", "timeout");
    let text = rule("kind = \"ping\"");
    assert_refused_at(&text, "rules[1].kind", "ping");
    // Keys of another kind.
    let text = rule("kind = \"exec\"\nprogram = \"true\"\nport = 22");
    assert_refused_at(&text, "rules[1].port", "port = 22");
    let message = refused_supervisor(&text).to_string();
    assert!(message.contains("exec"), "{message}");
    let text = rule("kind = \"tcp\"\nport = 22\nurl = \"http://x/\"");
    assert_refused_at(&text, "rules[1].url", "url");
    let text = rule("kind = \"http\"\nurl = \"http://x/\"\nduration = \"1s\"");
    assert_refused_at(&text, "rules[1].duration", "duration");
    // Sim needs nothing.
    let text = rule("kind = \"sim\"");
    assert!(parse_supervisor(&text, Path::new(FILE)).is_ok());
}

/// A scratch directory with a usable CA file (`ca.pem`... as `site-ca.pem`) and a file that is
/// not PEM (`garbage.pem`).
fn ca_files() -> (TempDir, String, String) {
    let dir = TempDir::new("config-ca");
    let ca = TestCa::new(dir.path(), "site");
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate").unwrap();
    let ca = ca.cert.display().to_string();
    let garbage = garbage.display().to_string();
    (dir, ca, garbage)
}

#[test]
fn rules_take_thresholds_and_https_options_where_they_apply() {
    let (dir, ca, garbage) = ca_files();
    let rule = |body: &str| with(&format!("\n[[rules]]\nname = \"x\"\n{body}\n"));
    let http = format!(
        "kind = \"http\"\nurl = \"https://{{node}}/health\"\nwarning = \"200ms\"\ncritical = \"1s\"\n\
         ca = \"{ca}\"\nexpect_body = \"ready\"\nfollow_redirects = true"
    );
    let config = parse_supervisor(&rule(&http), Path::new(FILE)).expect("a full https rule");
    let parsed = &config.rules[1];
    assert_eq!(parsed.warning, Some(Duration::from_millis(200)));
    assert_eq!(parsed.critical, Some(Duration::from_secs(1)));
    assert_eq!(parsed.ca.as_deref(), Some(Path::new(&ca)));
    assert_eq!(parsed.expect_body.as_deref(), Some("ready"));
    assert_eq!(parsed.follow_redirects, Some(true));
    let tcp = "kind = \"tcp\"\nport = 22\nwarning = \"100ms\"\ncritical = \"2s\"";
    assert!(parse_supervisor(&rule(tcp), Path::new(FILE)).is_ok());
    let insecure = "kind = \"http\"\nurl = \"https://x/\"\ninsecure_skip_verify = true";
    assert!(parse_supervisor(&rule(insecure), Path::new(FILE)).is_ok());

    // Keys of another kind.
    let text = rule("kind = \"exec\"\nprogram = \"true\"\nwarning = \"1s\"");
    assert_refused_at(&text, "rules[1].warning", "warning");
    let text = rule(&format!("kind = \"tcp\"\nport = 22\nca = \"{ca}\""));
    assert_refused_at(&text, "rules[1].ca", "ca =");
    let text = rule("kind = \"tcp\"\nport = 22\nexpect_body = \"x\"");
    assert_refused_at(&text, "rules[1].expect_body", "expect_body");
    let text = rule("kind = \"sim\"\nfollow_redirects = true");
    assert_refused_at(&text, "rules[1].follow_redirects", "follow_redirects");

    // Values that make no sense.
    let text = rule("kind = \"tcp\"\nport = 22\nwarning = \"2s\"\ncritical = \"1s\"");
    assert_refused_at(&text, "rules[1].warning", "warning");
    assert!(
        refused_supervisor(&text)
            .to_string()
            .contains("above critical 1s")
    );
    let text = rule("kind = \"tcp\"\nport = 22\ntimeout = \"3s\"\ncritical = \"3s\"");
    assert_refused_at(&text, "rules[1].critical", "critical");
    assert!(
        refused_supervisor(&text)
            .to_string()
            .contains("not below the rule's timeout")
    );
    let text = rule("kind = \"tcp\"\nport = 22\nwarning = \"500us\"");
    assert_refused_at(&text, "rules[1].warning", "warning");
    let missing = dir.path().join("missing.pem");
    let text = rule(&format!(
        "kind = \"http\"\nurl = \"https://x/\"\nca = \"{}\"",
        missing.display()
    ));
    assert_refused_at(&text, "rules[1].ca", "ca =");
    assert!(
        refused_supervisor(&text)
            .to_string()
            .contains("cannot read")
    );
    let text = rule(&format!(
        "kind = \"http\"\nurl = \"https://x/\"\nca = \"{garbage}\""
    ));
    assert_refused_at(&text, "rules[1].ca", "ca =");
    assert!(
        refused_supervisor(&text)
            .to_string()
            .contains("no PEM certificate")
    );
    let text = rule(&format!(
        "kind = \"http\"\nurl = \"https://x/\"\nca = \"{ca}\"\ninsecure_skip_verify = true"
    ));
    assert_refused_at(
        &text,
        "rules[1].insecure_skip_verify",
        "insecure_skip_verify",
    );
    let text = rule("kind = \"http\"\nurl = \"https://x/\"\nexpect_body = \"\"");
    assert_refused_at(&text, "rules[1].expect_body", "expect_body");
    let text =
        rule("kind = \"http\"\nurl = \"https://x/\"\nexpect_status = 301\nfollow_redirects = true");
    assert_refused_at(&text, "rules[1].expect_status", "expect_status");
}

#[test]
fn webhooks_take_https_with_a_ca_or_without_verification() {
    let (dir, ca, garbage) = ca_files();
    let alert = |body: &str| with(&format!("\n[[alerts]]\nname = \"a\"\n{body}\n"));
    let with_ca =
        format!("kind = \"webhook\"\nurl = \"https://hooks.example/alert\"\nca = \"{ca}\"");
    let config = parse_supervisor(&alert(&with_ca), Path::new(FILE)).expect("https webhook");
    assert_eq!(config.alerts[1].ca.as_deref(), Some(Path::new(&ca)));
    let insecure = "kind = \"webhook\"\nurl = \"https://h/\"\ninsecure_skip_verify = true";
    assert!(parse_supervisor(&alert(insecure), Path::new(FILE)).is_ok());

    let text = alert(&format!(
        "kind = \"command\"\nprogram = \"true\"\nca = \"{ca}\""
    ));
    assert_refused_at(&text, "alerts[1].ca", "ca =");
    let text = alert("kind = \"log\"\ninsecure_skip_verify = true");
    assert_refused_at(
        &text,
        "alerts[1].insecure_skip_verify",
        "insecure_skip_verify",
    );
    let text = alert(&format!(
        "kind = \"webhook\"\nurl = \"https://h/\"\nca = \"{garbage}\""
    ));
    assert_refused_at(&text, "alerts[1].ca", "ca =");
    let text = alert(&format!(
        "kind = \"webhook\"\nurl = \"https://h/\"\nca = \"{ca}\"\ninsecure_skip_verify = true"
    ));
    assert_refused_at(
        &text,
        "alerts[1].insecure_skip_verify",
        "insecure_skip_verify",
    );
    drop(dir);
}

#[test]
fn alerts_need_their_kind_keys() {
    let alert = |body: &str| with(&format!("\n[[alerts]]\nname = \"a\"\n{body}\n"));
    let text = alert("kind = \"webhook\"");
    assert_refused_at(&text, "alerts[1].url", "[[alerts]]");
    let text = alert("kind = \"command\"");
    assert_refused_at(&text, "alerts[1].program", "[[alerts]]");
    let text = alert("kind = \"log\"\nurl = \"http://x/\"");
    assert_refused_at(&text, "alerts[1].url", "url");
    let text = alert("kind = \"webhook\"\nurl = \"http://x/\"\ntimeout = \"0s\"");
    assert_refused_at(&text, "alerts[1].timeout", "timeout");
    let ok = alert("kind = \"webhook\"\nurl = \"http://127.0.0.1:9/hook\"");
    assert!(parse_supervisor(&ok, Path::new(FILE)).is_ok());
}

#[test]
fn large_info_batch_size_is_accepted_with_a_warning() {
    let text = with("").replace(
        "address = \"127.0.0.1:7301\"",
        "address = \"127.0.0.1:7301\"\ntask_info_batch_size = 150",
    );
    let config = parse_supervisor(&text, Path::new(FILE)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        config.tunables(&config.engines[1]).task_info_batch_size,
        150
    );
    assert_eq!(config.tunables(&config.engines[0]).task_info_batch_size, 30);

    let dir = TempDir::new("warning");
    let path = dir.path().join("supervisor.toml");
    std::fs::write(&path, &text).unwrap_or_else(|e| panic!("{e}"));
    let summary = check_file(&path).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        summary.contains("Warning:") && summary.contains("engines[1].task_info_batch_size"),
        "{summary}"
    );
}

#[test]
fn per_engine_overrides_resolve_through_tunables() {
    let text = format!(
        "task_submit_batch_size = 40\nturbo_monitoring = true\nmax_connections = 4\n{}",
        with("").replace(
            "address = \"127.0.0.1:7301\"",
            "address = \"127.0.0.1:7301\"\ntask_submit_batch_size = 10\nturbo_monitoring = false\nstats_interval = \"1m\""
        )
    );
    let config = parse_supervisor(&text, Path::new(FILE)).unwrap_or_else(|e| panic!("{e}"));
    let local = config.tunables(&config.engines[0]);
    let remote = config.tunables(&config.engines[1]);
    assert_eq!(local.task_submit_batch_size, 40);
    assert!(local.turbo_monitoring);
    assert_eq!(local.stats_interval, Duration::from_secs(300));
    assert_eq!(remote.task_submit_batch_size, 10);
    assert!(!remote.turbo_monitoring);
    assert_eq!(remote.stats_interval, Duration::from_secs(60));
    assert_eq!(remote.max_connections, 4);
}

#[test]
fn engine_files_are_validated() {
    let engine = Path::new("engine.toml");
    let config =
        parse_engine("listen = \"127.0.0.1:0\"\n", engine).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.listen, "127.0.0.1:0");
    let cases = [
        ("listen = \"nowhere\"", "listen"),
        ("max_concurrent_checks = 0", "max_concurrent_checks"),
        ("max_batch_tasks = 0", "max_batch_tasks"),
        ("max_held_tasks = 0", "max_held_tasks"),
        ("max_message_bytes = 0", "max_message_bytes"),
        ("result_retention = \"0s\"", "result_retention"),
        ("threads = 4", "threads"),
    ];
    for (line, key) in cases {
        let text = format!("# engine\n{line}\n");
        let error = match parse_engine(&text, engine) {
            Ok(config) => panic!("accepted {line}: {config:?}"),
            Err(error) => error,
        };
        assert_eq!(error.key.as_deref(), Some(key), "{error}");
        assert_eq!(error.line, Some(2), "{error}");
        assert!(
            error.to_string().starts_with("engine.toml:2: key `"),
            "{error}"
        );
    }
}

#[test]
fn check_file_recognises_engine_files_and_reports_errors() {
    let dir = TempDir::new("check");
    let engine = dir.path().join("engine.toml");
    std::fs::write(
        &engine,
        "listen = \"127.0.0.1:7300\"\nmax_concurrent_checks = 8\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let summary = check_file(&engine).unwrap_or_else(|e| panic!("{e}"));
    assert!(summary.starts_with("Engine configuration"), "{summary}");
    assert!(summary.contains("up to 8 checks"), "{summary}");

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "listen = \"127.0.0.1:7300\"\nmax_held_tasks = 0\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let error = check_file(&bad)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        error.contains("bad.toml:2: key `max_held_tasks`"),
        "{error}"
    );

    let missing = dir.path().join("missing.toml");
    let error = check_file(&missing)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(error.contains("missing.toml: cannot read"), "{error}");
}

// --- reload ---

fn file_with_batch(batch: usize) -> String {
    format!("task_submit_batch_size = {batch}\n{}", with(""))
}

async fn next_change(
    rx: &mut tokio::sync::watch::Receiver<Arc<SupervisorConfig>>,
    within: Duration,
) -> Arc<SupervisorConfig> {
    match tokio::time::timeout(within, rx.changed()).await {
        Ok(Ok(())) => rx.borrow_and_update().clone(),
        Ok(Err(_)) => panic!("watcher ended"),
        Err(_) => panic!("no new configuration within {within:?}"),
    }
}

#[tokio::test]
async fn watch_publishes_valid_changes_and_keeps_the_old_config_on_invalid_ones() {
    let dir = TempDir::new("watch");
    let path = dir.path().join("supervisor.toml");
    std::fs::write(&path, file_with_batch(30)).unwrap_or_else(|e| panic!("{e}"));
    let initial = load_supervisor(&path).unwrap_or_else(|e| panic!("{e}"));
    let mut rx = watch_supervisor_every(path.clone(), initial, Duration::from_millis(20));

    std::fs::write(&path, file_with_batch(40)).unwrap_or_else(|e| panic!("{e}"));
    let config = next_change(&mut rx, Duration::from_secs(5)).await;
    assert_eq!(config.task_submit_batch_size, 40);

    // Invalid: refused, the old configuration stays.
    std::fs::write(&path, file_with_batch(0)).unwrap_or_else(|e| panic!("{e}"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!rx.has_changed().unwrap_or(true));
    assert_eq!(rx.borrow().task_submit_batch_size, 40);
    // Unparseable: same.
    std::fs::write(&path, "task_submit_batch_size = = 3\n").unwrap_or_else(|e| panic!("{e}"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!rx.has_changed().unwrap_or(true));

    // The watcher is still alive for the next valid edit.
    std::fs::write(&path, file_with_batch(50)).unwrap_or_else(|e| panic!("{e}"));
    let config = next_change(&mut rx, Duration::from_secs(5)).await;
    assert_eq!(config.task_submit_batch_size, 50);
}

#[tokio::test]
async fn watch_with_default_polling_picks_up_an_edit() {
    let dir = TempDir::new("watch-default");
    let path = dir.path().join("supervisor.toml");
    std::fs::write(&path, file_with_batch(30)).unwrap_or_else(|e| panic!("{e}"));
    let initial = load_supervisor(&path).unwrap_or_else(|e| panic!("{e}"));
    let mut rx = watch_supervisor(path.clone(), initial);
    std::fs::write(&path, file_with_batch(25)).unwrap_or_else(|e| panic!("{e}"));
    let config = next_change(&mut rx, Duration::from_secs(5)).await;
    assert_eq!(config.task_submit_batch_size, 25);
}

#[tokio::test]
async fn watch_ignores_a_rewrite_with_the_same_meaning() {
    let dir = TempDir::new("watch-same");
    let path = dir.path().join("supervisor.toml");
    std::fs::write(&path, file_with_batch(30)).unwrap_or_else(|e| panic!("{e}"));
    let initial = load_supervisor(&path).unwrap_or_else(|e| panic!("{e}"));
    let mut rx = watch_supervisor_every(path.clone(), initial, Duration::from_millis(20));
    let text = format!("# only a comment added\n{}", file_with_batch(30));
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!rx.has_changed().unwrap_or(true));
    drop(rx.borrow_and_update());
}

#[cfg(unix)]
#[tokio::test]
async fn sighup_rereads_the_file_at_once() {
    let dir = TempDir::new("watch-hup");
    let path = dir.path().join("supervisor.toml");
    std::fs::write(&path, file_with_batch(30)).unwrap_or_else(|e| panic!("{e}"));
    let initial = load_supervisor(&path).unwrap_or_else(|e| panic!("{e}"));
    // Polling once an hour: only the signal can bring the edit in.
    let mut rx = watch_supervisor_every(path.clone(), initial, Duration::from_secs(3600));
    tokio::time::sleep(Duration::from_millis(200)).await;
    std::fs::write(&path, file_with_batch(12)).unwrap_or_else(|e| panic!("{e}"));
    let status = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(status.success());
    let config = next_change(&mut rx, Duration::from_secs(5)).await;
    assert_eq!(config.task_submit_batch_size, 12);
}

#[tokio::test]
async fn watcher_stops_when_every_receiver_is_dropped() {
    let dir = TempDir::new("watch-stop");
    let path = dir.path().join("supervisor.toml");
    std::fs::write(&path, file_with_batch(30)).unwrap_or_else(|e| panic!("{e}"));
    let initial = load_supervisor(&path).unwrap_or_else(|e| panic!("{e}"));
    let rx = watch_supervisor_every(path, initial, Duration::from_millis(20));
    let config = rx.borrow().clone();
    assert_eq!(Arc::strong_count(&config), 2);
    drop(rx);
    // The task drops the sender (and the channel's copy of the config) once it sees no receiver.
    let mut stopped = false;
    for _ in 0..100 {
        if Arc::strong_count(&config) == 1 {
            stopped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(stopped, "watcher still holds the configuration");
}

#[test]
fn info_batch_size_of_100_or_more_logs_a_warning_with_its_line() {
    let text = "turbo_monitoring = true\ntask_info_batch_size = 100\n\
                [[engines]]\nname = \"e\"\naddress = \"127.0.0.1:1\"\n";
    let (parsed, output) = capture_logs(|| parse_supervisor(text, Path::new(FILE)));
    assert_eq!(
        parsed.map(|c| c.task_info_batch_size).ok(),
        Some(100.into())
    );
    assert!(output.contains(" WARN "), "{output}");
    assert!(
        output.contains(&format!("{FILE}:2: key `task_info_batch_size`")),
        "{output}"
    );

    // 99 is quiet.
    let (parsed, output) =
        capture_logs(|| parse_supervisor(&text.replace("100", "99"), Path::new(FILE)));
    assert!(parsed.is_ok());
    assert!(output.is_empty(), "{output}");
}

// === scheduling keys (issue 4) ===

fn relator(extra: &str) -> String {
    with(&format!(
        "\n[[relators]]\nname = \"r\"\ngroup = \"web\"\nrules = [\"load\"]\ninterval = \"1m\"\n{extra}\n"
    ))
}

#[test]
fn randomize_over_fifty_percent_is_refused() {
    assert_refused_at(
        &relator("randomize = 60"),
        "relators[0].randomize",
        "randomize",
    );
}

#[test]
fn a_retry_period_longer_than_the_interval_is_refused() {
    assert_refused_at(
        &relator("retry_period = \"2m\""),
        "relators[0].retry_period",
        "retry_period",
    );
}

#[test]
fn an_unknown_priority_is_refused_naming_the_key() {
    let error = refused_supervisor(&relator("priority = \"urgent\""));
    let message = error.to_string();
    assert!(message.contains("priority"), "{message}");
    assert!(message.contains("urgent"), "{message}");
}

#[test]
fn a_chain_that_loops_back_on_itself_is_refused() {
    let text = with(
        r#"
[[relators]]
name = "a"
group = "web"
rules = ["load"]
interval = "1m"
on_ok = ["b"]

[[relators]]
name = "b"
group = "web"
rules = ["load"]
on_broken = ["a"]
"#,
    );
    let error = refused_supervisor(&text);
    let message = error.to_string();
    assert!(message.contains("loops back"), "{message}");
    assert!(message.contains("a -> b -> a"), "{message}");
}

#[test]
fn a_relator_without_interval_must_be_chained_to() {
    let text = with("\n[[relators]]\nname = \"lonely\"\ngroup = \"web\"\nrules = [\"load\"]\n");
    let error = refused_supervisor(&text);
    assert_eq!(
        error.key.as_deref(),
        Some("relators[0].interval"),
        "{error}"
    );
}

#[test]
fn a_chain_naming_a_missing_relator_is_refused() {
    assert_refused_at(
        &relator("on_ok = [\"ghost\"]"),
        "relators[0].on_ok[0]",
        "ghost",
    );
}

#[test]
fn default_retry_period_fits_short_intervals() {
    let text = relator("").replace("interval = \"1m\"", "interval = \"2s\"");
    parse_supervisor(&text, Path::new(FILE)).unwrap_or_else(|e| panic!("{e}"));
}

// === [cluster] ===

#[test]
fn a_cluster_section_is_read_with_its_defaults() {
    let text = with(
        "\n[cluster]\nendpoints = [\"127.0.0.1:2379\", \"http://etcd-2:2379\"]\nname = \"sup-a\"\n",
    );
    let config = parse_supervisor(&text, Path::new(FILE)).unwrap_or_else(|e| panic!("{e}"));
    let cluster = config.cluster.expect("[cluster]");
    assert_eq!(cluster.endpoints.len(), 2);
    assert_eq!(cluster.name, "sup-a");
    assert_eq!(cluster.lease_ttl, std::time::Duration::from_secs(10));
    assert_eq!(cluster.prefix, "/turbomon/");
    let without = parse_supervisor(&with(""), Path::new(FILE)).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        without.cluster.is_none(),
        "no [cluster]: one supervisor alone"
    );
}

#[test]
fn bad_cluster_values_are_refused_naming_line_and_key() {
    let cluster = |body: &str| with(&format!("\n[cluster]\nname = \"sup-a\"\n{body}\n"));
    assert_refused_at(&cluster("endpoints = []"), "cluster.endpoints", "endpoints");
    assert_refused_at(
        &cluster("endpoints = [\"https://etcd:2379\"]"),
        "cluster.endpoints[0]",
        "endpoints",
    );
    assert_refused_at(
        &cluster("endpoints = [\"etcd:2379\"]\nlease_ttl = \"1500ms\""),
        "cluster.lease_ttl",
        "lease_ttl",
    );
    assert_refused_at(
        &cluster("endpoints = [\"etcd:2379\"]\nprefix = \"turbomon\""),
        "cluster.prefix",
        "prefix",
    );
    let text = with("\n[cluster]\nendpoints = [\"etcd:2379\"]\nname = \"a/b\"\n");
    assert_refused_at(&text, "cluster.name", "name = \"a/b\"");
}

#[test]
fn stats_report_takes_engines_summary_or_both_and_refuses_the_rest_naming_the_key() {
    for (value, expected) in [
        ("engines", turbomon::config::StatsReport::Engines),
        ("summary", turbomon::config::StatsReport::Summary),
        ("both", turbomon::config::StatsReport::Both),
    ] {
        let text = format!("stats_report = \"{value}\"\n{}", with(""));
        let config = parse_supervisor(&text, Path::new(FILE)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.stats_report, expected);
    }
    assert_eq!(
        parse_supervisor(&with(""), Path::new(FILE))
            .unwrap_or_else(|e| panic!("{e}"))
            .stats_report,
        turbomon::config::StatsReport::Both
    );
    let text = format!("stats_report = \"all\"\n{}", with(""));
    assert_refused_at(&text, "stats_report", "stats_report");
    assert!(
        refused_supervisor(&text)
            .to_string()
            .contains("`engines`, `summary`, `both`")
    );
}

#[test]
fn auto_batch_sizes_are_accepted_globally_and_per_engine_within_their_bounds() {
    let text = format!(
        "task_submit_batch_size = \"auto\"\nbatch_size_min = 5\nbatch_size_max = 200\n{}",
        with("").replace(
            "address = \"127.0.0.1:7301\"",
            "address = \"127.0.0.1:7301\"\ntask_info_batch_size = \"auto\"\nbatch_size_max = 50",
        )
    );
    let config = parse_supervisor(&text, Path::new(FILE)).unwrap_or_else(|e| panic!("{e}"));
    let local = config.tunables(&config.engines[0]);
    let remote = config.tunables(&config.engines[1]);
    assert_eq!(
        local.task_submit_batch_size,
        turbomon::config::BatchSize::Auto
    );
    assert_eq!(local.task_info_batch_size, 30);
    assert_eq!((local.batch_size_min, local.batch_size_max), (5, 200));
    assert_eq!(
        remote.task_info_batch_size,
        turbomon::config::BatchSize::Auto
    );
    assert_eq!((remote.batch_size_min, remote.batch_size_max), (5, 50));
}

#[test]
fn bad_automatic_settings_are_refused_naming_the_key() {
    for (line, key) in [
        (
            "task_submit_batch_size = \"fast\"",
            "task_submit_batch_size",
        ),
        ("task_info_batch_size = \"Auto\"", "task_info_batch_size"),
        ("batch_size_min = 0", "batch_size_min"),
        ("batch_size_max = 10001", "batch_size_max"),
    ] {
        let text = format!("# a comment\nturbo_monitoring = true\n{line}\n{}", with(""));
        assert_refused_at(&text, key, line);
    }
    let text = format!("batch_size_min = 50\nbatch_size_max = 10\n{}", with(""));
    assert_refused_at(&text, "batch_size_max", "batch_size_max = 10");
    let text = with("").replace(
        "address = \"127.0.0.1:7301\"",
        "address = \"127.0.0.1:7301\"\nbatch_size_max = 0",
    );
    assert_refused_at(&text, "engines[1].batch_size_max", "batch_size_max = 0");
}
