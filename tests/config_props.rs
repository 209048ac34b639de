//! Property tests for the configuration parser: arbitrary text never panics and its errors name
//! the file and a line inside it; a mutated or inserted key either parses or is named with its
//! line; valid configurations round-trip through TOML; engine files are accepted exactly when
//! their listen address and caps are valid; relator chains are refused exactly when they loop.
//! Last, regressions for files that took minutes to check (validation was cubic or quadratic in
//! their size).
//!
//! Case counts are modest by default so the file runs in seconds in debug; set `PROPTEST_CASES`
//! to run more (e.g. `PROPTEST_CASES=200000 cargo test --release --test config_props`).

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::sample::{Index, select};
use proptest::test_runner::{FileFailurePersistence, TestCaseError};
use turbomon::config::{
    AlertConfig, AlertKind, AlertOn, BatchSize, CatchUp, CheckKind, ConfigError, EngineConfig,
    EngineEntry, GroupConfig, Priority, RelatorConfig, RuleConfig, SimOutcome, StatusMode,
    SupervisorConfig, check_file, parse_engine, parse_supervisor,
};

const SUPERVISOR_FILE: &str = "fuzz/supervisor.toml";
const ENGINE_FILE: &str = "fuzz/engine.toml";

/// Longest a single parse may take before the case counts as a hang (debug build, busy machine).
const PARSE_TIME_LIMIT: Duration = Duration::from_secs(5);

/// `PROPTEST_CASES` when set, else `default_cases`.
fn config_with_cases(default_cases: u32) -> ProptestConfig {
    let mut config = ProptestConfig {
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/proptest-regressions/config_props.txt"
        )))),
        ..ProptestConfig::default()
    };
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = default_cases;
    }
    config
}

// === Shared checks ===

/// What `ConfigError`'s Display must be, rebuilt from its fields.
fn expected_display(error: &ConfigError) -> String {
    let mut out = error.file.display().to_string();
    if let Some(line) = error.line {
        out.push_str(&format!(":{line}"));
    }
    out.push_str(": ");
    if let Some(key) = &error.key {
        out.push_str(&format!("key `{key}`: "));
    }
    out.push_str(&error.message);
    out
}

/// The error names `file`, renders as `FILE[:LINE]: [key `KEY`: ]MESSAGE`, and any line lies in
/// the text (1..=lines, plus one for a position just after a final newline).
fn check_error_shape(error: &ConfigError, file: &Path, text: &str) -> Result<(), TestCaseError> {
    let shown = error.to_string();
    prop_assert_eq!(&error.file, file);
    prop_assert!(
        shown.starts_with(&file.display().to_string()),
        "display does not start with the file: {}",
        shown
    );
    prop_assert_eq!(&shown, &expected_display(error));
    prop_assert!(!error.message.trim().is_empty(), "empty message: {}", shown);
    if let Some(key) = &error.key {
        prop_assert!(!key.is_empty(), "empty key: {}", shown);
    }
    if let Some(line) = error.line {
        let last = text.lines().count() + 1;
        prop_assert!(
            (1..=last).contains(&line),
            "line {} outside 1..={}: {}",
            line,
            last,
            shown
        );
    }
    Ok(())
}

/// Serialising `config` and parsing it back with `parse` gives it again.
fn check_round_trip<C>(
    config: &C,
    parse: fn(&str, &Path) -> Result<C, ConfigError>,
    file: &str,
) -> Result<(), TestCaseError>
where
    C: serde::Serialize + PartialEq + std::fmt::Debug,
{
    let text = toml::to_string(config)
        .map_err(|e| TestCaseError::fail(format!("cannot serialise {config:?}: {e}")))?;
    match parse(&text, Path::new(file)) {
        Ok(parsed) => prop_assert_eq!(&parsed, config, "serialised as:\n{}", text),
        Err(error) => prop_assert!(false, "serialised form refused: {}\n{}", error, text),
    }
    Ok(())
}

fn check_supervisor_round_trip(config: &SupervisorConfig) -> Result<(), TestCaseError> {
    check_round_trip(config, parse_supervisor, SUPERVISOR_FILE)
}

fn check_engine_round_trip(config: &EngineConfig) -> Result<(), TestCaseError> {
    check_round_trip(config, parse_engine, ENGINE_FILE)
}

/// A file in this test binary's scratch directory, one per thread so parallel tests do not
/// overwrite each other's.
fn scratch_file(name: &str) -> PathBuf {
    let thread = format!("{:?}", std::thread::current().id())
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect::<String>();
    Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "config-props-{}-{thread}-{name}",
        std::process::id()
    ))
}

/// `check_file` on `text` written to disk: an error has the same shape as the parsers'; an
/// accepted file is one that one of the two parsers accepts.
fn check_check_file(text: &str) -> Result<(), TestCaseError> {
    let path = scratch_file("check.toml");
    std::fs::write(&path, text)
        .map_err(|e| TestCaseError::fail(format!("cannot write {}: {e}", path.display())))?;
    let result = check_file(&path);
    let _ = std::fs::remove_file(&path);
    match result {
        Ok(summary) => {
            prop_assert!(!summary.is_empty());
            let supervisor = parse_supervisor(text, &path).is_ok();
            let engine = parse_engine(text, &path).is_ok();
            prop_assert!(
                supervisor || engine,
                "check_file accepted what neither parser accepts"
            );
        }
        Err(error) => check_error_shape(&error, &path, text)?,
    }
    Ok(())
}

// === Property 1: arbitrary text ===

/// Pieces of TOML-ish text, so random soups reach past the first character more often.
const TOKENS: &[&str] = &[
    "\n",
    "\r\n",
    "\r",
    "\0",
    " ",
    "\t",
    "=",
    " = ",
    ".",
    ",",
    "[",
    "]",
    "[[",
    "]]",
    "{",
    "}",
    "\"",
    "'",
    "\"\"\"",
    "'''",
    "#",
    "\\",
    "\\u",
    "\\U0010FFFF",
    "é",
    "\u{feff}",
    "\u{10ffff}",
    "true",
    "false",
    "0",
    "-1",
    "1_000",
    "0x7f",
    "0o17",
    "0b101",
    "1e400",
    "-0.0",
    "nan",
    "inf",
    "99999999999999999999999999",
    "1979-05-27T07:32:00Z",
    "\"10s\"",
    "\"-5s\"",
    "\"5 parsecs\"",
    "\"1h1h\"",
    "\"\"",
    "\"127.0.0.1:7300\"",
    "[[engines]]",
    "[[groups]]",
    "[[rules]]",
    "[[relators]]",
    "[[alerts]]",
    "[engines]",
    "[engines.x]",
    "engines",
    "name",
    "address",
    "listen",
    "kind",
    "\"sim\"",
    "\"tcp\"",
    "rules",
    "group",
    "engine",
    "nodes",
    "interval",
    "on_ok",
    "on_broken",
    "task_submit_batch_size",
    "task_info_batch_size",
    "status_check_interval",
    "max_batch_tasks",
    "max_held_tasks",
    "result_retention",
];

fn arb_token_soup() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        8 => select(TOKENS).prop_map(str::to_string),
        1 => any::<char>().prop_map(String::from),
    ];
    prop::collection::vec(token, 0..120).prop_map(|tokens| tokens.concat())
}

fn arb_unicode() -> impl Strategy<Value = String> {
    prop::collection::vec(any::<char>(), 0..300).prop_map(String::from_iter)
}

fn arb_lossy_bytes() -> impl Strategy<Value = String> {
    prop::collection::vec(any::<u8>(), 0..400)
        .prop_map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
}

fn arb_long_line() -> impl Strategy<Value = String> {
    (
        select(&["name", "x", "task_submit_batch_size", "listen"][..]),
        any::<char>(),
        1usize..200_000,
        select(&["\"", "'", "", "[", "\"\"\""][..]),
        any::<bool>(),
    )
        .prop_map(|(key, fill, length, quote, closed)| {
            let body: String = std::iter::repeat_n(fill, length).collect();
            let close = if closed { quote } else { "" };
            format!("{key} = {quote}{body}{close}\n")
        })
}

fn arb_deep_nesting() -> impl Strategy<Value = String> {
    (0usize..5, 1usize..3_000, any::<bool>()).prop_map(|(shape, depth, closed)| match shape {
        0 => {
            let close = if closed {
                "]".repeat(depth)
            } else {
                String::new()
            };
            format!("x = {}{close}\n", "[".repeat(depth))
        }
        1 => {
            let close = if closed {
                "}".repeat(depth)
            } else {
                String::new()
            };
            format!("x = {}1{close}\n", "{a = ".repeat(depth))
        }
        2 => format!("{} = 1\n", vec!["a"; depth].join(".")),
        3 => format!("[{}]\nb = 1\n", vec!["a"; depth].join(".")),
        _ => format!("[[{}]]\nb = 1\n", vec!["engines"; depth].join(".")),
    })
}

fn arb_huge_number() -> impl Strategy<Value = String> {
    (
        select(
            &[
                "task_submit_batch_size",
                "max_message_bytes",
                "reserved_percent",
                "max_retries",
                "max_held_tasks",
                "output_limit_bytes",
                "status_check_interval",
            ][..],
        ),
        select(&["", "-", "+", "0x", "0o", "0b", "-0x"][..]),
        "[0-9_]{1,400}",
        select(&["", ".5", "e400", "e-400", "E+99999", ".0e308"][..]),
    )
        .prop_map(|(key, sign, digits, tail)| format!("{key} = {sign}{digits}{tail}\n"))
}

/// A valid supervisor document with a range cut out and random tokens put in (`max_cut`
/// characters at most, `max_tokens` tokens at most).
fn arb_spliced_base(max_cut: usize, max_tokens: usize) -> impl Strategy<Value = String> {
    let token = prop_oneof![
        8 => select(TOKENS).prop_map(str::to_string),
        1 => any::<char>().prop_map(String::from),
    ];
    (
        any::<Index>(),
        0..=max_cut,
        prop::collection::vec(token, 0..=max_tokens),
        any::<bool>(),
    )
        .prop_map(|(at, cut, tokens, crlf)| {
            let (base, _) = render(&base_document(), if crlf { "\r\n" } else { "\n" }, 0);
            let chars: Vec<char> = base.chars().collect();
            let start = at.index(chars.len() + 1);
            let end = (start + cut).min(chars.len());
            let mut text: String = chars[..start].iter().collect();
            text.push_str(&tokens.concat());
            text.extend(&chars[end..]);
            text
        })
}

/// A valid supervisor document with whole lines deleted, doubled or swapped: missing required
/// keys, duplicate keys, keys moved into another table.
fn arb_shuffled_lines() -> impl Strategy<Value = String> {
    prop::collection::vec((0u8..3, any::<Index>(), any::<Index>()), 1..6).prop_map(|edits| {
        let (base, _) = render(&base_document(), "\n", 0);
        let mut lines: Vec<&str> = base.lines().collect();
        for (op, a, b) in edits {
            if lines.is_empty() {
                break;
            }
            let (a, b) = (a.index(lines.len()), b.index(lines.len()));
            match op {
                0 => {
                    lines.remove(a);
                }
                1 => lines.insert(b, lines[a]),
                _ => lines.swap(a, b),
            }
        }
        lines.join("\n")
    })
}

fn arb_text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => arb_token_soup(),
        2 => arb_unicode(),
        2 => arb_lossy_bytes(),
        1 => arb_long_line(),
        1 => arb_deep_nesting(),
        2 => arb_huge_number(),
        2 => arb_spliced_base(40, 120),
        3 => arb_spliced_base(8, 3),
        3 => arb_shuffled_lines(),
    ]
}

proptest! {
    #![proptest_config(config_with_cases(256))]

    #[test]
    fn arbitrary_text_never_panics_and_errors_name_the_file_and_a_line_inside_it(
        text in arb_text()
    ) {
        let supervisor_file = Path::new(SUPERVISOR_FILE);
        let started = Instant::now();
        let supervisor = parse_supervisor(&text, supervisor_file);
        prop_assert!(started.elapsed() < PARSE_TIME_LIMIT, "parse took {:?}", started.elapsed());
        match &supervisor {
            Ok(config) => check_supervisor_round_trip(config)?,
            Err(error) => check_error_shape(error, supervisor_file, &text)?,
        }

        let engine_file = Path::new(ENGINE_FILE);
        let started = Instant::now();
        let engine = parse_engine(&text, engine_file);
        prop_assert!(started.elapsed() < PARSE_TIME_LIMIT, "parse took {:?}", started.elapsed());
        match &engine {
            Ok(config) => check_engine_round_trip(config)?,
            Err(error) => check_error_shape(error, engine_file, &text)?,
        }

        check_check_file(&text)?;
    }
}

// === Property 2: one key mutated or inserted ===

/// The root keys written as `[[headers]]`.
const ROOT_ARRAYS: [&str; 5] = ["engines", "groups", "rules", "relators", "alerts"];

/// Which table of a supervisor document an entry sits in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Root,
    Engines,
    Groups,
    Rules,
    Relators,
    Alerts,
}

impl Kind {
    /// The array-of-tables name (empty for the root).
    fn array(self) -> &'static str {
        match self {
            Kind::Root => "",
            Kind::Engines => "engines",
            Kind::Groups => "groups",
            Kind::Rules => "rules",
            Kind::Relators => "relators",
            Kind::Alerts => "alerts",
        }
    }

    /// Every key the table's struct knows.
    fn fields(self) -> &'static [&'static str] {
        match self {
            Kind::Root => &[
                "supervisor_id",
                "turbo_monitoring",
                "task_submit_batch_size",
                "task_info_batch_size",
                "status_check_interval",
                "stats_interval",
                "max_inflight_batches",
                "max_connections",
                "max_message_bytes",
                "batch_timeout",
                "batch_window",
                "max_retries",
                "retry_period",
                "status_mode",
                "push_flush_window",
                "max_sessions",
                "reserved_percent",
                "engines",
                "groups",
                "rules",
                "relators",
                "alerts",
            ],
            Kind::Engines => &[
                "name",
                "address",
                "link",
                "turbo_monitoring",
                "task_submit_batch_size",
                "task_info_batch_size",
                "status_check_interval",
                "stats_interval",
                "max_inflight_batches",
                "max_connections",
                "status_mode",
            ],
            Kind::Groups => &["name", "engine", "nodes"],
            Kind::Rules => &[
                "name",
                "kind",
                "timeout",
                "host",
                "port",
                "program",
                "args",
                "url",
                "expect_status",
                "duration",
                "outcome",
                "value",
            ],
            Kind::Relators => &[
                "name",
                "group",
                "rules",
                "interval",
                "start_window",
                "randomize",
                "max_retries",
                "retry_period",
                "on_ok",
                "on_broken",
                "catch_up",
                "priority",
                "alerts",
                "alert_on",
                "notify_recovery",
                "renotify_interval",
                "max_check_attempts",
            ],
            Kind::Alerts => &["name", "kind", "url", "program", "args", "timeout"],
        }
    }
}

/// One table of a document: its entries as (key, TOML value text), one line each.
#[derive(Debug, Clone)]
struct Table {
    kind: Kind,
    index: usize,
    entries: Vec<(String, String)>,
}

impl Table {
    fn new(kind: Kind, index: usize, entries: &[(&str, &str)]) -> Self {
        Self {
            kind,
            index,
            entries: entries
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    /// `engines[1]`, or empty for the root.
    fn path(&self) -> String {
        match self.kind {
            Kind::Root => String::new(),
            kind => format!("{}[{}]", kind.array(), self.index),
        }
    }

    /// The error key of `key` in this table.
    fn key_path(&self, key: &str) -> String {
        match self.kind {
            Kind::Root => key.to_string(),
            _ => format!("{}.{key}", self.path()),
        }
    }

    fn value_of(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// A valid supervisor document using every table and most keys; names are cross-referenced
/// (engines by groups, groups/rules/alerts by relators, `r3` only reached by `r1`'s chain).
fn base_document() -> Vec<Table> {
    use Kind::*;
    vec![
        Table::new(
            Root,
            0,
            &[
                ("supervisor_id", "\"props-supervisor\""),
                ("turbo_monitoring", "true"),
                ("task_submit_batch_size", "30"),
                ("task_info_batch_size", "30"),
                ("status_check_interval", "\"10s\""),
                ("stats_interval", "\"5m\""),
                ("max_inflight_batches", "64"),
                ("max_connections", "10"),
                ("max_message_bytes", "4194304"),
                ("batch_timeout", "\"30s\""),
                ("batch_window", "\"100ms\""),
                ("max_retries", "2"),
                ("retry_period", "\"10s\""),
                ("status_mode", "\"poll\""),
                ("push_flush_window", "\"5ms\""),
                ("max_sessions", "256"),
                ("reserved_percent", "20"),
            ],
        ),
        Table::new(
            Engines,
            0,
            &[
                ("name", "\"local\""),
                ("address", "\"127.0.0.1:7300\""),
                ("link", "\"lan\""),
                ("turbo_monitoring", "true"),
                ("task_submit_batch_size", "10"),
                ("task_info_batch_size", "20"),
                ("status_check_interval", "\"15s\""),
                ("stats_interval", "\"1m\""),
                ("max_inflight_batches", "8"),
                ("max_connections", "4"),
                ("status_mode", "\"push\""),
            ],
        ),
        Table::new(
            Engines,
            1,
            &[("name", "\"remote\""), ("address", "\"[::1]:7301\"")],
        ),
        Table::new(
            Groups,
            0,
            &[
                ("name", "\"web\""),
                ("engine", "\"local\""),
                ("nodes", "[\"a\", \"b\"]"),
            ],
        ),
        Table::new(
            Groups,
            1,
            &[
                ("name", "\"branch\""),
                ("engine", "\"remote\""),
                ("nodes", "[\"c\"]"),
            ],
        ),
        Table::new(
            Rules,
            0,
            &[
                ("name", "\"ssh\""),
                ("kind", "\"tcp\""),
                ("host", "\"{node}\""),
                ("port", "22"),
                ("timeout", "\"3s\""),
            ],
        ),
        Table::new(
            Rules,
            1,
            &[
                ("name", "\"fs\""),
                ("kind", "\"exec\""),
                ("program", "\"test\""),
                ("args", "[\"-d\", \"/\"]"),
                ("timeout", "\"5s\""),
            ],
        ),
        Table::new(
            Rules,
            2,
            &[
                ("name", "\"health\""),
                ("kind", "\"http\""),
                ("url", "\"http://{node}:8080/health\""),
                ("expect_status", "200"),
                ("timeout", "\"5s\""),
            ],
        ),
        Table::new(
            Rules,
            3,
            &[
                ("name", "\"load\""),
                ("kind", "\"sim\""),
                ("duration", "\"20ms\""),
                ("outcome", "\"ok\""),
                ("value", "42.0"),
                ("timeout", "\"1s\""),
            ],
        ),
        Table::new(
            Relators,
            0,
            &[
                ("name", "\"r1\""),
                ("group", "\"web\""),
                ("rules", "[\"ssh\", \"health\"]"),
                ("interval", "\"1m\""),
                ("start_window", "\"30s\""),
                ("randomize", "10"),
                ("max_retries", "3"),
                ("retry_period", "\"5s\""),
                ("on_ok", "[]"),
                ("on_broken", "[\"r3\"]"),
                ("catch_up", "\"latest\""),
                ("priority", "\"high\""),
                ("alerts", "[\"log\", \"hook\"]"),
                ("alert_on", "[\"critical\", \"unknown\"]"),
                ("notify_recovery", "true"),
                ("renotify_interval", "\"1h\""),
                ("max_check_attempts", "3"),
            ],
        ),
        Table::new(
            Relators,
            1,
            &[
                ("name", "\"r2\""),
                ("group", "\"branch\""),
                ("rules", "[\"fs\", \"load\"]"),
                ("interval", "\"30s\""),
                ("alerts", "[\"cmd\"]"),
            ],
        ),
        Table::new(
            Relators,
            2,
            &[
                ("name", "\"r3\""),
                ("group", "\"web\""),
                ("rules", "[\"load\"]"),
            ],
        ),
        Table::new(Alerts, 0, &[("name", "\"log\""), ("kind", "\"log\"")]),
        Table::new(
            Alerts,
            1,
            &[
                ("name", "\"hook\""),
                ("kind", "\"webhook\""),
                ("url", "\"http://127.0.0.1:9090/a\""),
                ("timeout", "\"5s\""),
            ],
        ),
        Table::new(
            Alerts,
            2,
            &[
                ("name", "\"cmd\""),
                ("kind", "\"command\""),
                ("program", "\"logger\""),
                ("args", "[\"x\"]"),
                ("timeout", "\"5s\""),
            ],
        ),
    ]
}

/// `text` as a one-line TOML basic string (toml's own writer uses `"""` multi-line strings
/// for text with line breaks, which cannot be keys and would shift the line numbers).
fn basic_string(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A key as TOML writes it: bare when it can be, quoted otherwise.
fn render_key(key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if bare {
        key.to_string()
    } else {
        basic_string(key)
    }
}

/// The document's text with `eol` line ends and a comment line before entry `n` whenever bit
/// `n % 64` of `comments` is set, and the line of every table header and key by error path.
fn render(tables: &[Table], eol: &str, comments: u64) -> (String, HashMap<String, usize>) {
    let mut text = String::new();
    let mut lines = HashMap::new();
    let mut line = 1;
    let mut entry_number = 0u32;
    let push = |text: &mut String, line: &mut usize, content: &str| {
        text.push_str(content);
        text.push_str(eol);
        *line += 1;
    };
    for table in tables {
        if table.kind != Kind::Root {
            push(&mut text, &mut line, "");
            lines.insert(table.path(), line);
            push(&mut text, &mut line, &format!("[[{}]]", table.kind.array()));
        }
        for (key, value) in &table.entries {
            if comments >> (entry_number % 64) & 1 == 1 {
                push(&mut text, &mut line, "# a comment = [\"not a value\"]");
            }
            entry_number += 1;
            lines.insert(table.key_path(key), line);
            push(
                &mut text,
                &mut line,
                &format!("{} = {value}", render_key(key)),
            );
        }
    }
    (text, lines)
}

/// The line `key` should be reported at: its own line, else that of the nearest enclosing key
/// or table present in the document (`x[2]` is on `x`'s line; a missing key at its header).
fn expected_line(lines: &HashMap<String, usize>, key: &str) -> Option<usize> {
    let mut path = key;
    loop {
        if let Some(line) = lines.get(path) {
            return Some(*line);
        }
        let cut = path.rfind(['.', '['])?;
        path = &path[..cut];
    }
}

/// Durations, valid and not.
const DURATION_STRINGS: &[&str] = &[
    "-5s",
    "5 parsecs",
    "",
    "1h1h",
    "0s",
    "0",
    "1ns",
    "1s",
    "30s",
    "1m",
    "1h",
    "2h",
    "500ms",
    "5s 300ms",
    "99999999999999999999y",
    "584942417355y",
    "10 s",
    "s",
    " 10s",
];

/// Strings a config holds: names of the base document, enum variants, addresses, URLs.
const WORD_STRINGS: &[&str] = &[
    "local",
    "remote",
    "web",
    "branch",
    "ssh",
    "fs",
    "health",
    "load",
    "r1",
    "r2",
    "r3",
    "log",
    "hook",
    "cmd",
    "tcp",
    "exec",
    "http",
    "sim",
    "webhook",
    "command",
    "poll",
    "push",
    "skip",
    "latest",
    "replay",
    "high",
    "normal",
    "low",
    "ok",
    "broken",
    "failed",
    "lan",
    "wan",
    "lossy-wan",
    "none",
    "127.0.0.1:1",
    "[::1]:7300",
    "host:0",
    "::1:7300",
    "host:65536",
    "http://x/",
    "https://x/",
    "http://",
    "{node}",
    "   ",
    "\u{0}",
];

/// A TOML value of a random type.
fn arb_value() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        3 => prop_oneof![
            Just(0i64),
            Just(1i64),
            Just(-1i64),
            Just(i64::MAX),
            Just(i64::MIN),
            Just(65_536i64),
            Just(10_001i64),
            Just(256i64),
            -1_000i64..1_000,
            any::<i64>(),
        ]
        .prop_map(|n| n.to_string()),
        1 => Just("99999999999999999999999".to_string()),
        2 => prop_oneof![
            Just(f64::NAN),
            Just(f64::INFINITY),
            Just(f64::NEG_INFINITY),
            Just(-0.0),
            Just(0.5),
            Just(1e300),
            any::<f64>(),
        ]
        .prop_map(|f| toml::Value::Float(f).to_string()),
        1 => any::<bool>().prop_map(|b| b.to_string()),
        3 => select(DURATION_STRINGS).prop_map(basic_string),
        3 => select(WORD_STRINGS).prop_map(basic_string),
        1 => "[0-9]{1,22}(ns|us|ms|s|m|h|d|w|M|y| parsecs)?"
            .prop_map(|s| basic_string(&s)),
        1 => any::<String>().prop_map(|s| basic_string(&s)),
        1 => Just("1979-05-27T07:32:00Z".to_string()),
    ];
    leaf.prop_recursive(2, 8, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(", "))),
            prop::collection::vec(("[a-z]{1,6}", inner), 0..3).prop_map(|entries| {
                let mut seen = Vec::new();
                let body: Vec<String> = entries
                    .into_iter()
                    .filter(|(k, _)| {
                        let fresh = !seen.contains(k);
                        seen.push(k.clone());
                        fresh
                    })
                    .map(|(k, v)| format!("{k} = {v}"))
                    .collect();
                format!("{{{}}}", body.join(", "))
            }),
        ]
    })
}

/// A replacement of each type the base document's values have, so the edit usually keeps the
/// key's type and reaches validation.
#[derive(Debug, Clone)]
struct SameType {
    integer: String,
    string: String,
    strings: String,
    boolean: String,
    float: String,
}

impl SameType {
    /// The replacement with the type of `original` (TOML text).
    fn like(&self, original: &str) -> String {
        match original.chars().next() {
            Some('"') => self.string.clone(),
            Some('[') => self.strings.clone(),
            Some('t' | 'f') => self.boolean.clone(),
            _ if original.contains('.') => self.float.clone(),
            _ => self.integer.clone(),
        }
    }
}

fn arb_same_type() -> impl Strategy<Value = SameType> {
    let word = prop_oneof![
        3 => select(WORD_STRINGS).prop_map(str::to_string),
        2 => select(DURATION_STRINGS).prop_map(str::to_string),
        1 => "[0-9]{1,4}(ms|s|m|h)",
        1 => "\\PC{0,6}",
    ];
    (
        prop_oneof![
            -3i64..=3,
            0i64..=120,
            9_990i64..=10_010,
            65_530i64..=65_540,
            select(&[255i64, 256, 599, 600, 99, 100, i64::MAX, i64::MIN][..]),
            any::<i64>(),
        ],
        word.clone(),
        prop::collection::vec(word, 0..4),
        any::<bool>(),
        prop_oneof![
            Just(f64::NAN),
            Just(f64::INFINITY),
            -1e3f64..1e3,
            any::<f64>()
        ],
    )
        .prop_map(|(integer, string, strings, boolean, float)| SameType {
            integer: integer.to_string(),
            string: basic_string(&string),
            strings: format!(
                "[{}]",
                strings
                    .iter()
                    .map(|s| basic_string(s))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            boolean: boolean.to_string(),
            float: toml::Value::Float(float).to_string(),
        })
}

/// A key to insert: a known field of some table, a plausible bare key, or any text (quoted).
fn arb_inserted_key() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => select(
            [
                Kind::Root,
                Kind::Engines,
                Kind::Groups,
                Kind::Rules,
                Kind::Relators,
                Kind::Alerts,
            ]
            .iter()
            .flat_map(|k| k.fields().iter().copied())
            .collect::<Vec<_>>()
        )
        .prop_map(str::to_string),
        2 => "[A-Za-z0-9_-]{1,16}",
        1 => "\\PC{1,8}",
        1 => prop::collection::vec(any::<char>(), 1..8).prop_map(String::from_iter),
    ]
}

/// One change to the base document.
#[derive(Debug, Clone)]
enum Edit {
    /// Give an existing key another value.
    Replace { value: String },
    /// Give an existing key another value of the same type.
    ReplaceSameType { values: SameType },
    /// Add `key` (absent from the table) with `value` before entry `at`.
    Insert { key: String, value: String },
}

/// May a refusal caused by changing `key` of `table` be reported at `blamed` instead of at the
/// key itself? Only where validation checks one key against another: names referenced
/// elsewhere, a rule's or alert's kind against its other keys, a relator's interval against
/// its start window and retry period, chains against loops and unreached relators.
fn blames_another_key(tables: &[Table], table: &Table, key: &str, blamed: &str) -> bool {
    let at = |path: &str| blamed == path || blamed.starts_with(&format!("{path}["));
    let unreached_relators = || {
        tables.iter().any(|t| {
            t.kind == Kind::Relators
                && t.value_of("interval").is_none()
                && blamed == t.key_path("interval")
        })
    };
    let any_chain = || {
        tables.iter().any(|t| {
            t.kind == Kind::Relators && (at(&t.key_path("on_ok")) || at(&t.key_path("on_broken")))
        })
    };
    match (table.kind, key) {
        (Kind::Root, "retry_period" | "max_retries") => tables.iter().any(|t| {
            t.kind == Kind::Relators
                && t.value_of("retry_period").is_none()
                && blamed == t.key_path("interval")
        }),
        (Kind::Rules | Kind::Alerts, "kind") => blamed.starts_with(&format!("{}.", table.path())),
        (Kind::Relators, "interval" | "max_retries") => {
            blamed == table.key_path("start_window") || blamed == table.key_path("retry_period")
        }
        (Kind::Relators, "on_ok" | "on_broken") => any_chain() || unreached_relators(),
        (kind, "name") => {
            let old = table.value_of("name").unwrap_or_default();
            let duplicate = tables
                .iter()
                .any(|t| t.kind == kind && blamed == t.key_path("name"));
            let reference = tables.iter().any(|t| {
                t.entries.iter().any(|(k, v)| {
                    ["engine", "group", "rules", "alerts", "on_ok", "on_broken"]
                        .contains(&k.as_str())
                        && v.contains(old)
                        && at(&t.key_path(k))
                })
            });
            let chains = kind == Kind::Relators && (any_chain() || unreached_relators());
            duplicate || reference || chains
        }
        _ => false,
    }
}

fn arb_edit() -> impl Strategy<Value = (usize, Index, Edit, bool, u64)> {
    let tables = base_document().len();
    let edit = prop_oneof![
        2 => arb_value().prop_map(|value| Edit::Replace { value }),
        3 => arb_same_type().prop_map(|values| Edit::ReplaceSameType { values }),
        2 => (arb_inserted_key(), arb_value()).prop_map(|(key, value)| Edit::Insert { key, value }),
    ];
    (
        0..tables,
        any::<Index>(),
        edit,
        any::<bool>(),
        prop_oneof![Just(0u64), any::<u64>()],
    )
}

proptest! {
    #![proptest_config(config_with_cases(256))]

    #[test]
    fn a_mutated_or_inserted_key_either_parses_or_is_refused_naming_it_and_its_line(
        (table_index, entry, edit, crlf, comments) in arb_edit()
    ) {
        let original = base_document();
        let mut tables = original.clone();
        let table = &mut tables[table_index];
        let (key, must_refuse) = match &edit {
            Edit::Replace { value } => {
                let at = entry.index(table.entries.len());
                table.entries[at].1 = value.clone();
                (table.entries[at].0.clone(), false)
            }
            Edit::ReplaceSameType { values } => {
                let at = entry.index(table.entries.len());
                table.entries[at].1 = values.like(&table.entries[at].1);
                (table.entries[at].0.clone(), false)
            }
            Edit::Insert { key, value } => {
                // A key already there (the root's arrays of tables are there as headers) would
                // be a duplicate: make it a new, unknown one.
                let mut key = key.clone();
                while table.value_of(&key).is_some()
                    || (table.kind == Kind::Root && ROOT_ARRAYS.contains(&key.as_str()))
                {
                    key.push('_');
                }
                let at = entry.index(table.entries.len() + 1);
                table.entries.insert(at, (key.clone(), value.clone()));
                let unknown = !table.kind.fields().contains(&key.as_str());
                (key, unknown)
            }
        };
        let table = tables[table_index].clone();
        let mutated = table.key_path(&key);
        let (text, lines) = render(&tables, if crlf { "\r\n" } else { "\n" }, comments);
        let file = Path::new(SUPERVISOR_FILE);
        match parse_supervisor(&text, file) {
            Ok(config) => {
                prop_assert!(!must_refuse, "unknown key `{}` accepted:\n{}", mutated, text);
                check_supervisor_round_trip(&config)?;
            }
            Err(error) => {
                check_error_shape(&error, file, &text)?;
                let shown = error.to_string();
                let Some(blamed) = error.key.as_deref() else {
                    return Err(TestCaseError::fail(format!(
                        "refusal of `{mutated}` names no key: {shown}\n{text}"
                    )));
                };
                let names_it = blamed == mutated
                    || blamed.starts_with(&format!("{mutated}["))
                    || blamed.starts_with(&format!("{mutated}."));
                prop_assert!(
                    names_it || blames_another_key(&original, &original[table_index], &key, blamed),
                    "changed `{}` but the error names `{}`: {}\n{}",
                    mutated,
                    blamed,
                    shown,
                    text
                );
                prop_assert_eq!(
                    error.line,
                    expected_line(&lines, blamed),
                    "wrong line for `{}`: {}\n{}",
                    blamed,
                    shown,
                    text
                );
            }
        }
    }
}

// === Property 3: valid supervisor configurations round-trip ===

/// A name with awkward characters (quotes, backslashes, control characters, any script),
/// never blank, made unique by its position.
fn arb_name() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[a-z][a-z0-9-]{0,10}",
        1 => "\\PC{1,10}",
        1 => prop::collection::vec(any::<char>(), 1..10).prop_map(String::from_iter),
    ]
}

fn unique(name: String, index: usize) -> String {
    format!("{name}#{index}")
}

/// Any duration from 1 ns to about 30 years, with nanoseconds.
fn arb_positive_duration() -> impl Strategy<Value = Duration> {
    prop_oneof![
        (0u64..1_000_000_000, 1u32..1_000_000_000).prop_map(|(s, n)| Duration::new(s, n)),
        (1u64..1_000_000_000).prop_map(Duration::from_secs),
        (1u64..100_000).prop_map(Duration::from_millis),
    ]
}

fn arb_window() -> impl Strategy<Value = Duration> {
    (0u64..=5_000_000_000).prop_map(Duration::from_nanos)
}

fn arb_status_mode() -> impl Strategy<Value = StatusMode> {
    prop_oneof![Just(StatusMode::Poll), Just(StatusMode::Push)]
}

fn arb_engine_entry() -> impl Strategy<Value = EngineEntry> {
    (
        arb_name(),
        prop_oneof![
            (any::<Ipv4Addr>(), 1u16..).prop_map(|(ip, port)| format!("{ip}:{port}")),
            (any::<Ipv6Addr>(), 1u16..).prop_map(|(ip, port)| format!("[{ip}]:{port}")),
            // Host names as DNS has them, a trailing dot (fully qualified) included.
            (
                "[a-z][a-z0-9-]{0,6}[a-z0-9](\\.[a-z][a-z0-9]{0,6}){0,2}\\.?",
                1u16..
            )
                .prop_map(|(host, port)| format!("{host}:{port}")),
        ],
        prop::option::of(select(
            &["lan", "wan", "lossy-wan", "satellite", "modem", "none"][..],
        )),
        prop::option::of(any::<bool>()),
        prop::option::of(1usize..=500),
        prop::option::of(1usize..=500),
        prop::option::of(arb_positive_duration()),
        prop::option::of(arb_positive_duration()),
        prop::option::of(1usize..=i64::MAX as usize),
        prop::option::of(1usize..=1_000_000),
        prop::option::of(arb_status_mode()),
    )
        .prop_map(
            |(
                name,
                address,
                link,
                turbo,
                submit,
                info,
                status,
                stats,
                inflight,
                connections,
                mode,
            )| EngineEntry {
                name,
                address,
                link: link.map(str::to_string),
                turbo_monitoring: turbo,
                task_submit_batch_size: submit.map(BatchSize::Fixed),
                task_info_batch_size: info.map(BatchSize::Fixed),
                status_check_interval: status,
                stats_interval: stats,
                max_inflight_batches: inflight,
                max_connections: connections,
                status_mode: mode,
                ..EngineEntry::default()
            },
        )
}

fn arb_sim_rule() -> impl Strategy<Value = RuleConfig> {
    (
        arb_name(),
        arb_positive_duration(),
        prop::option::of(arb_positive_duration()),
        prop::option::of(prop_oneof![
            Just(SimOutcome::Ok),
            Just(SimOutcome::Broken),
            Just(SimOutcome::Failed)
        ]),
        prop::option::of(
            prop_oneof![
                any::<f64>(),
                Just(-0.0),
                Just(f64::MIN_POSITIVE / 2.0),
                Just(f64::MAX),
            ]
            .prop_filter("finite", |v| v.is_finite()),
        ),
    )
        .prop_map(|(name, timeout, duration, outcome, value)| RuleConfig {
            name,
            kind: CheckKind::Sim,
            timeout,
            host: None,
            port: None,
            program: None,
            args: Vec::new(),
            url: None,
            expect_status: None,
            duration,
            outcome,
            value,
            warning: None,
            critical: None,
            ca: None,
            insecure_skip_verify: None,
            expect_body: None,
            follow_redirects: None,
        })
}

fn arb_alert() -> impl Strategy<Value = AlertConfig> {
    (
        arb_name(),
        0usize..3,
        "[a-z][a-z0-9.:/{}-]{0,20}",
        prop::collection::vec(arb_name(), 0..3),
        arb_positive_duration(),
    )
        .prop_map(|(name, kind, text, args, timeout)| {
            let (kind, url, program, args) = match kind {
                0 => (AlertKind::Log, None, None, Vec::new()),
                1 => (
                    AlertKind::Webhook,
                    Some(format!("http://{text}")),
                    None,
                    Vec::new(),
                ),
                _ => (AlertKind::Command, None, Some(text), args),
            };
            AlertConfig {
                name,
                kind,
                url,
                program,
                args,
                ca: None,
                insecure_skip_verify: None,
                timeout,
            }
        })
}

/// The relator's own schedule ([`arb_relator_timing`]) and when it notifies: a non-empty set of
/// `alert_on` states in any order, recoveries or not, an optional reminder interval, 1 to 10
/// check attempts.
fn arb_relator_schedule() -> impl Strategy<Value = RelatorConfig> {
    (
        arb_relator_timing(),
        Just(AlertOn::ALL.to_vec()).prop_shuffle(),
        1usize..=3,
        any::<bool>(),
        prop::option::of(arb_positive_duration()),
        1u32..=10,
    )
        .prop_map(
            |(relator, mut alert_on, states, notify_recovery, renotify_interval, attempts)| {
                alert_on.truncate(states);
                RelatorConfig {
                    alert_on,
                    notify_recovery,
                    renotify_interval,
                    max_check_attempts: attempts,
                    ..relator
                }
            },
        )
}

/// The relator's timing: interval 1 s ..= 1 h (to the millisecond), an optional start window
/// and retry period no longer than it.
fn arb_relator_timing() -> impl Strategy<Value = RelatorConfig> {
    (1_000u64..=3_600_000)
        .prop_flat_map(|interval_ms| {
            (
                Just(interval_ms),
                any::<bool>(),
                prop::option::of(1..=interval_ms),
                0u8..=50,
                prop::option::of(0u32..=100),
                prop::option::of(1..=interval_ms),
                prop_oneof![
                    Just(CatchUp::Skip),
                    Just(CatchUp::Latest),
                    Just(CatchUp::Replay)
                ],
                prop_oneof![
                    Just(Priority::High),
                    Just(Priority::Normal),
                    Just(Priority::Low)
                ],
            )
        })
        .prop_map(
            |(interval, chained_only, window, randomize, retries, retry, catch_up, priority)| {
                RelatorConfig {
                    interval: (!chained_only).then(|| Duration::from_millis(interval)),
                    start_window: window.map(Duration::from_millis),
                    randomize,
                    max_retries: retries,
                    retry_period: retry.map(Duration::from_millis),
                    catch_up,
                    priority,
                    // A chained-only relator keeps the interval's bound on its window/retries
                    // harmlessly: without an interval they are not compared.
                    ..RelatorConfig::default()
                }
            },
        )
}

/// Everything a relator refers to, as indices, resolved to names once all lists exist.
#[derive(Debug, Clone)]
struct RelatorLinks {
    group: Index,
    rules: Vec<Index>,
    alerts: Vec<Index>,
    on_ok: Vec<Index>,
    on_broken: Vec<Index>,
}

fn arb_relator_links() -> impl Strategy<Value = RelatorLinks> {
    (
        any::<Index>(),
        prop::collection::vec(any::<Index>(), 1..4),
        prop::collection::vec(any::<Index>(), 0..3),
        prop::collection::vec(any::<Index>(), 0..3),
        prop::collection::vec(any::<Index>(), 0..3),
    )
        .prop_map(|(group, rules, alerts, on_ok, on_broken)| RelatorLinks {
            group,
            rules,
            alerts,
            on_ok,
            on_broken,
        })
}

/// Names picked by `indices` from `names`, each once, in order of first pick.
fn pick(names: &[String], indices: &[Index]) -> Vec<String> {
    let mut picked: Vec<String> = Vec::new();
    for index in indices {
        let name = &names[index.index(names.len())];
        if !picked.contains(name) {
            picked.push(name.clone());
        }
    }
    picked
}

fn arb_supervisor_config() -> impl Strategy<Value = SupervisorConfig> {
    let top = (
        (
            any::<bool>(),
            1usize..=500,
            1usize..=500,
            arb_positive_duration(),
            arb_positive_duration(),
            1usize..=i64::MAX as usize,
            1usize..=1_000_000,
            1usize..=i64::MAX as usize,
        ),
        (
            arb_positive_duration(),
            arb_window(),
            0u32..=100,
            prop::option::of((1u64..=1_000).prop_map(Duration::from_millis)),
            arb_status_mode(),
            arb_window(),
            1usize..=100_000,
            0u8..=90,
        ),
    );
    let parts = (
        prop::collection::vec(arb_engine_entry(), 1..=4),
        prop::collection::vec((arb_name(), prop::collection::vec(arb_name(), 1..4)), 1..=4),
        prop::collection::vec(any::<Index>(), 4),
        prop::collection::vec(arb_sim_rule(), 1..=4),
        prop::collection::vec(arb_alert(), 0..=3),
        prop::collection::vec(
            (arb_name(), arb_relator_schedule(), arb_relator_links()),
            1..=4,
        ),
    );
    (top, parts).prop_map(|(top, parts)| {
        let (
            (turbo, submit, info, status, stats, inflight, connections, message_bytes),
            (batch_timeout, window, retries, retry, mode, flush, sessions, reserved),
        ) = top;
        let (mut engines, groups, group_engines, mut rules, mut alerts, relators) = parts;
        for (i, engine) in engines.iter_mut().enumerate() {
            engine.name = unique(std::mem::take(&mut engine.name), i);
        }
        let engine_names: Vec<String> = engines.iter().map(|e| e.name.clone()).collect();
        let groups: Vec<GroupConfig> = groups
            .into_iter()
            .enumerate()
            .map(|(i, (name, nodes))| GroupConfig {
                name: unique(name, i),
                engine: engine_names[group_engines[i].index(engine_names.len())].clone(),
                nodes: nodes
                    .into_iter()
                    .enumerate()
                    .map(|(j, n)| unique(n, j))
                    .collect(),
            })
            .collect();
        for (i, rule) in rules.iter_mut().enumerate() {
            rule.name = unique(std::mem::take(&mut rule.name), i);
        }
        for (i, alert) in alerts.iter_mut().enumerate() {
            alert.name = unique(std::mem::take(&mut alert.name), i);
        }
        let group_names: Vec<String> = groups.iter().map(|g| g.name.clone()).collect();
        let rule_names: Vec<String> = rules.iter().map(|r| r.name.clone()).collect();
        let alert_names: Vec<String> = alerts.iter().map(|a| a.name.clone()).collect();
        let relator_names: Vec<String> = relators
            .iter()
            .enumerate()
            .map(|(i, (name, _, _))| unique(name.clone(), i))
            .collect();
        let mut relators: Vec<RelatorConfig> = relators
            .into_iter()
            .enumerate()
            .map(|(i, (_, schedule, links))| {
                // Chains only lead to later relators, so they never loop.
                let later = &relator_names[i + 1..];
                let chain = |picks: &[Index]| {
                    if later.is_empty() {
                        Vec::new()
                    } else {
                        pick(later, picks)
                    }
                };
                RelatorConfig {
                    name: relator_names[i].clone(),
                    group: group_names[links.group.index(group_names.len())].clone(),
                    rules: pick(&rule_names, &links.rules),
                    alerts: if alert_names.is_empty() {
                        Vec::new()
                    } else {
                        pick(&alert_names, &links.alerts)
                    },
                    on_ok: chain(&links.on_ok),
                    on_broken: chain(&links.on_broken),
                    ..schedule
                }
            })
            .collect();
        // A relator without an interval must be reached by a chain; give the others one back.
        let targeted: Vec<String> = relators
            .iter()
            .flat_map(|r| r.on_ok.iter().chain(&r.on_broken).cloned())
            .collect();
        for relator in &mut relators {
            if relator.interval.is_none() && !targeted.contains(&relator.name) {
                let longest = [relator.start_window, relator.retry_period]
                    .into_iter()
                    .flatten()
                    .max()
                    .unwrap_or(Duration::from_secs(1));
                relator.interval = Some(longest.max(Duration::from_secs(1)));
            }
        }
        SupervisorConfig {
            supervisor_id: "props-supervisor".to_string(),
            cluster: None,
            turbo_monitoring: turbo,
            task_submit_batch_size: BatchSize::Fixed(submit),
            task_info_batch_size: BatchSize::Fixed(info),
            batch_size_min: 1,
            batch_size_max: 1000,
            status_check_interval: status,
            stats_interval: stats,
            stats_report: Default::default(),
            max_inflight_batches: inflight,
            max_connections: connections,
            max_message_bytes: message_bytes,
            batch_timeout,
            batch_window: window,
            max_retries: retries,
            retry_period: retry,
            status_mode: mode,
            push_flush_window: flush,
            max_sessions: sessions,
            reserved_percent: reserved,
            engines,
            groups,
            rules,
            relators,
            alerts,
            tls: None,
            keepalive_interval: Duration::from_secs(30),
            metrics_listen: String::new(),
        }
    })
}

proptest! {
    #![proptest_config(config_with_cases(128))]

    #[test]
    fn valid_supervisor_configs_round_trip_through_toml_unchanged(
        config in arb_supervisor_config()
    ) {
        check_supervisor_round_trip(&config)?;
        let text = toml::to_string(&config)
            .map_err(|e| TestCaseError::fail(format!("cannot serialise: {e}")))?;
        check_check_file(&text)?;
    }
}

// === Property 4: engine files ===

/// A listen address and whether it is valid: `ip:port`, `[ipv6]:port` or `host.name:port`,
/// port 0 ..= 65535. (Documents also set `allow_plaintext`, so a non-loopback address is
/// valid without `[tls]`.)
fn arb_listen() -> impl Strategy<Value = (String, bool)> {
    prop_oneof![
        5 => (any::<Ipv4Addr>(), any::<u16>()).prop_map(|(ip, port)| (format!("{ip}:{port}"), true)),
        4 => (any::<Ipv6Addr>(), any::<u16>()).prop_map(|(ip, port)| (format!("[{ip}]:{port}"), true)),
        1 => (any::<Ipv6Addr>(), any::<u16>(), 1u32..100)
            .prop_map(|(ip, port, scope)| (format!("[{ip}%{scope}]:{port}"), true)),
        1 => any::<Ipv4Addr>().prop_map(|ip| (ip.to_string(), false)),
        1 => any::<Ipv6Addr>().prop_map(|ip| (format!("[{ip}]"), false)),
        1 => (any::<Ipv6Addr>(), any::<u16>()).prop_map(|(ip, port)| (format!("{ip}:{port}"), false)),
        1 => (any::<Ipv4Addr>(), 65_536u32..10_000_000)
            .prop_map(|(ip, port)| (format!("{ip}:{port}"), false)),
        1 => (256u32..1_000, any::<u16>()).prop_map(|(octet, port)| (format!("10.0.0.{octet}:{port}"), false)),
        1 => ("[a-z][a-z0-9]{0,12}(\\.[a-z]{2,5})?", any::<u16>())
            .prop_map(|(host, port)| (format!("{host}:{port}"), true)),
        1 => ("-[a-z0-9]{0,5}|[a-z]{1,5}\\.\\.[a-z]{1,5}|[a-z]{1,5}_[a-z]{1,5}", any::<u16>())
            .prop_map(|(host, port)| (format!("{host}:{port}"), false)),
        1 => (any::<Ipv4Addr>(), any::<u16>(), select(&[" ", "\t", "\n", "/", "x"][..]), any::<bool>())
            .prop_map(|(ip, port, junk, front)| {
                let address = format!("{ip}:{port}");
                let address = if front { format!("{junk}{address}") } else { format!("{address}{junk}") };
                (address, false)
            }),
        1 => Just((String::new(), false)),
        1 => Just((":7300".to_string(), false)),
        1 => Just(("127.0.0.1:".to_string(), false)),
        1 => Just(("127.0.0.1:-1".to_string(), false)),
    ]
}

/// A cap value as TOML text and whether it is a valid cap (a whole number of at least 1).
fn arb_cap() -> impl Strategy<Value = (String, Validity)> {
    prop_oneof![
        10 => (1u64..=10_000_000).prop_map(|n| (n.to_string(), Validity::Valid)),
        2 => (1u64..=i64::MAX as u64).prop_map(|n| (n.to_string(), Validity::Valid)),
        2 => Just(("0".to_string(), Validity::Refused)),
        1 => (i64::MIN..0).prop_map(|n| (n.to_string(), Validity::Malformed)),
        1 => Just(("99999999999999999999".to_string(), Validity::Malformed)),
        1 => Just(("1.5".to_string(), Validity::Malformed)),
        1 => Just(("\"10\"".to_string(), Validity::Malformed)),
        1 => Just(("true".to_string(), Validity::Malformed)),
        1 => Just(("[]".to_string(), Validity::Malformed)),
    ]
}

/// `output_limit_bytes`: any whole number, 0 included, is valid.
fn arb_output_limit() -> impl Strategy<Value = (String, Validity)> {
    prop_oneof![
        4 => (0u64..=i64::MAX as u64).prop_map(|n| (n.to_string(), Validity::Valid)),
        1 => (i64::MIN..0).prop_map(|n| (n.to_string(), Validity::Malformed)),
        1 => Just(("\"1k\"".to_string(), Validity::Malformed)),
    ]
}

/// `result_retention`: a duration longer than zero.
fn arb_retention() -> impl Strategy<Value = (String, Validity)> {
    prop_oneof![
        4 => (1u64..=10_000_000).prop_map(|s| (format!("\"{s}s\""), Validity::Valid)),
        1 => select(&["\"1ns\"", "\"1h\"", "\"500ms\"", "\"2 days\"", "\"1h1h\""][..])
            .prop_map(|s| (s.to_string(), Validity::Valid)),
        1 => select(&["\"0s\"", "\"0ms\""][..]).prop_map(|s| (s.to_string(), Validity::Refused)),
        2 => select(&["\"-5s\"", "\"5 parsecs\"", "\"\"", "3600", "\"soon\""][..])
            .prop_map(|s| (s.to_string(), Validity::Malformed)),
    ]
}

/// Whether a value is accepted, refused by validation, or cannot even be read as its type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Validity {
    Valid,
    /// Read, then refused by validation.
    Refused,
    /// Cannot be read as the key's type.
    Malformed,
}

/// Engine documents: each key present or absent (then its default), in a random order.
fn arb_engine_document() -> impl Strategy<Value = Vec<(&'static str, String, Validity)>> {
    let listen = arb_listen().prop_map(|(address, valid)| {
        let validity = if valid {
            Validity::Valid
        } else {
            Validity::Refused
        };
        (basic_string(&address), validity)
    });
    (
        prop::option::of(listen),
        prop::option::of(arb_cap()),
        prop::option::of(arb_cap()),
        prop::option::of(arb_cap()),
        prop::option::of(arb_cap()),
        prop::option::of(arb_retention()),
        prop::option::of(arb_output_limit()),
    )
        .prop_map(
            |(listen, concurrent, batch, held, message, retention, output)| {
                [
                    ("listen", listen),
                    ("max_concurrent_checks", concurrent),
                    ("max_batch_tasks", batch),
                    ("max_held_tasks", held),
                    ("max_message_bytes", message),
                    ("result_retention", retention),
                    ("output_limit_bytes", output),
                ]
                .into_iter()
                .filter_map(|(key, value)| value.map(|(text, validity)| (key, text, validity)))
                .collect::<Vec<_>>()
            },
        )
        .prop_shuffle()
}

proptest! {
    #![proptest_config(config_with_cases(256))]

    #[test]
    fn engine_files_are_accepted_iff_listen_and_caps_are_valid(
        entries in arb_engine_document()
    ) {
        let text: String = entries
            .iter()
            .map(|(key, value, _)| format!("{key} = {value}\n"))
            .chain(["allow_plaintext = true\n".to_string()])
            .collect();
        let file = Path::new(ENGINE_FILE);
        // A value that cannot be read is reported before anything validation finds (reading
        // stops there), though not necessarily the first in the file: toml hands serde the keys
        // in sorted order. Otherwise the first value validation refuses, in file order.
        let blamable = |validity: Validity| {
            entries
                .iter()
                .enumerate()
                .filter(|(_, (_, _, v))| *v == validity)
                .map(|(line, (key, _, _))| (*key, line + 1))
                .collect::<Vec<_>>()
        };
        let malformed = blamable(Validity::Malformed);
        let expected = if malformed.is_empty() {
            blamable(Validity::Refused).into_iter().take(1).collect()
        } else {
            malformed
        };
        match (parse_engine(&text, file), expected.first()) {
            (Ok(config), None) => {
                prop_assert!(config.listen.rsplit_once(':').is_some_and(|(host, _)| !host.is_empty()));
                check_engine_round_trip(&config)?;
            }
            (Ok(config), Some((key, line))) => prop_assert!(
                false,
                "accepted although `{}` on line {} is invalid: {:?}\n{}",
                key,
                line,
                config,
                text
            ),
            (Err(error), None) => {
                prop_assert!(false, "refused a valid file: {}\n{}", error, text)
            }
            (Err(error), Some(_)) => {
                check_error_shape(&error, file, &text)?;
                let named = expected
                    .iter()
                    .any(|(key, line)| error.key.as_deref() == Some(*key) && error.line == Some(*line));
                prop_assert!(named, "expected one of {:?}: {}\n{}", expected, error, text);
            }
        }
    }
}

// === Chains: refused exactly when they loop, naming a real loop ===

/// For each relator, the indices its `on_ok` and `on_broken` name.
type Chains = Vec<(Vec<usize>, Vec<usize>)>;

fn arb_chains() -> impl Strategy<Value = Chains> {
    (1usize..=7).prop_flat_map(|count| {
        let targets = prop::collection::vec(0..count, 0..3);
        prop::collection::vec((targets.clone(), targets), count)
    })
}

/// Whether relator `from` leads back to itself through one or more chain steps.
fn on_a_loop(chains: &Chains, from: usize) -> bool {
    let mut seen = vec![false; chains.len()];
    let mut stack = vec![from];
    while let Some(at) = stack.pop() {
        for &to in chains[at].0.iter().chain(&chains[at].1) {
            if to == from {
                return true;
            }
            if !seen[to] {
                seen[to] = true;
                stack.push(to);
            }
        }
    }
    false
}

proptest! {
    #![proptest_config(config_with_cases(256))]

    #[test]
    fn relator_chains_are_refused_iff_they_loop_and_the_loop_named_is_real(
        chains in arb_chains()
    ) {
        let names = |targets: &[usize]| {
            targets.iter().map(|t| format!("\"x{t}\"")).collect::<Vec<_>>().join(", ")
        };
        let mut text = SMALL_FLEET.to_string();
        for (i, (on_ok, on_broken)) in chains.iter().enumerate() {
            text.push_str(&format!(
                "\n[[relators]]\nname = \"x{i}\"\ngroup = \"g\"\nrules = [\"r\"]\n\
                 interval = \"1m\"\non_ok = [{}]\non_broken = [{}]\n",
                names(on_ok),
                names(on_broken)
            ));
        }
        // The search starts from each relator in turn: the first one on a loop is named.
        let first_on_loop = (0..chains.len()).find(|&i| on_a_loop(&chains, i));
        match (parse_supervisor(&text, Path::new(SUPERVISOR_FILE)), first_on_loop) {
            (Ok(_), None) => {}
            (Ok(_), Some(start)) => prop_assert!(false, "x{} loops but was accepted:\n{}", start, text),
            (Err(error), None) => prop_assert!(false, "refused without a loop: {}\n{}", error, text),
            (Err(error), Some(start)) => {
                let shown = error.to_string();
                let trail = error
                    .message
                    .strip_prefix("this chain loops back on itself: ")
                    .ok_or_else(|| TestCaseError::fail(format!("not a loop error: {shown}")))?;
                let trail: Vec<usize> = trail
                    .split(" -> ")
                    .map(|name| name.trim_start_matches('x').parse().unwrap_or(usize::MAX))
                    .collect();
                prop_assert!(trail.len() >= 2, "{}", shown);
                prop_assert_eq!(trail.first(), Some(&start), "{}", shown);
                prop_assert_eq!(trail.last(), Some(&start), "{}", shown);
                for step in trail.windows(2) {
                    let (from, to) = (step[0], step[1]);
                    prop_assert!(
                        from < chains.len()
                            && (chains[from].0.contains(&to) || chains[from].1.contains(&to)),
                        "x{} does not lead to x{}: {}",
                        from,
                        to,
                        shown
                    );
                }
                // The key is the starting relator's list that takes the first step, on its
                // line.
                let first = trail[1];
                let key = error.key.clone().unwrap_or_default();
                let list = key
                    .strip_prefix(&format!("relators[{start}]."))
                    .unwrap_or_default();
                let leads_in = match list {
                    "on_ok" => chains[start].0.contains(&first),
                    "on_broken" => chains[start].1.contains(&first),
                    _ => false,
                };
                prop_assert!(leads_in, "`{}` does not lead to x{}: {}", key, first, shown);
                let header = line_number(&text, &format!("name = \"x{start}\""));
                prop_assert_eq!(error.line, header.map(|l| l + 4 + usize::from(list == "on_broken")), "{}", shown);
            }
        }
    }
}

// === Regressions: large files are checked in time linear in their size ===

/// Longest a large file below may take to be checked (debug build, busy machine). Before the
/// fixes each took well over this even in release (see the tests).
const LARGE_FILE_TIME_LIMIT: Duration = Duration::from_secs(10);

/// One engine `e`, one group `g` on it, one sim rule `r`.
const SMALL_FLEET: &str = r#"
[[engines]]
name = "e"
address = "127.0.0.1:7300"

[[groups]]
name = "g"
engine = "e"
nodes = ["n"]

[[rules]]
name = "r"
kind = "sim"
"#;

/// `parse_supervisor` on `text`, failing the test if it takes longer than the limit.
fn parse_large(text: &str) -> Result<SupervisorConfig, ConfigError> {
    let started = Instant::now();
    let result = parse_supervisor(text, Path::new(SUPERVISOR_FILE));
    let took = started.elapsed();
    assert!(
        took < LARGE_FILE_TIME_LIMIT,
        "{} bytes took {took:?}",
        text.len()
    );
    result
}

/// 1-based line of the first line of `text` that is exactly `line`.
fn line_number(text: &str, line: &str) -> Option<usize> {
    text.lines().position(|l| l == line).map(|i| i + 1)
}

/// `count` relators, each chained (`on_ok`) to the next; only the first has an interval; the
/// last one's `on_ok` is `last_on_ok`.
fn relator_chain(count: usize, last_on_ok: &str) -> String {
    let mut text = SMALL_FLEET.to_string();
    for i in 0..count {
        let interval = if i == 0 { "interval = \"1m\"\n" } else { "" };
        let on_ok = if i + 1 == count {
            last_on_ok.to_string()
        } else {
            format!("[\"x{}\"]", i + 1)
        };
        text.push_str(&format!(
            "\n[[relators]]\nname = \"x{i}\"\ngroup = \"g\"\nrules = [\"r\"]\n{interval}on_ok = {on_ok}\n"
        ));
    }
    text
}

#[test]
fn a_loop_is_reported_at_the_list_that_leads_into_it() {
    // `a` has no `on_broken`: the loop used to be reported at `relators[0].on_broken` (the
    // list of the step closing the loop, `b`'s), on `a`'s header line.
    let text = format!(
        "{SMALL_FLEET}
[[relators]]
name = \"a\"
group = \"g\"
rules = [\"r\"]
interval = \"1m\"
on_ok = [\"b\"]

[[relators]]
name = \"b\"
group = \"g\"
rules = [\"r\"]
on_broken = [\"a\"]
"
    );
    let error = parse_supervisor(&text, Path::new(SUPERVISOR_FILE))
        .err()
        .map(|e| (e.key, e.line, e.message));
    assert_eq!(
        error,
        Some((
            Some("relators[0].on_ok".to_string()),
            line_number(&text, "on_ok = [\"b\"]"),
            "this chain loops back on itself: a -> b -> a".to_string()
        ))
    );
}

#[test]
fn a_long_relator_chain_is_checked_quickly_and_a_loop_at_its_end_is_found() {
    // 6,000 chained relators (430 kB): the loop search copied the whole trail at every step,
    // cubic in the chain's length (16 s in release, far longer in debug).
    let count = 6_000;
    let chain = relator_chain(count, "[]");
    let config = parse_large(&chain).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.relators.len(), count);

    let looped = relator_chain(count, "[\"x5999\"]");
    let error = parse_large(&looped)
        .err()
        .map(|e| (e.key, e.line, e.message));
    let line = looped.lines().count();
    assert_eq!(
        error,
        Some((
            Some("relators[5999].on_ok".to_string()),
            Some(line),
            "this chain loops back on itself: x5999 -> x5999".to_string()
        ))
    );
}

#[test]
fn a_relator_listing_a_hundred_thousand_unknown_rules_is_checked_quickly() {
    // Each listed rule was compared with all before it, and each of the 100,000 errors counted
    // the lines of the file up to its offset: quadratic twice (26 s in release).
    let mut text = SMALL_FLEET.to_string();
    text.push_str("\n[[relators]]\nname = \"wide\"\ngroup = \"g\"\ninterval = \"1m\"\n");
    let rules: Vec<String> = (0..100_000).map(|i| format!("\"q{i}\"")).collect();
    text.push_str(&format!("rules = [{}]\n", rules.join(", ")));
    let error = parse_large(&text).err().map(|e| (e.key, e.line));
    let line = text.lines().count();
    assert_eq!(
        error,
        Some((Some("relators[0].rules[0]".to_string()), Some(line)))
    );
}

#[test]
fn a_dangling_reference_lists_at_most_twenty_known_names() {
    // 5,000 rules and 5,000 relators naming a missing rule: every error sorted and copied all
    // 5,000 names, and the one reported was a 40 kB line.
    let mut text = SMALL_FLEET.to_string();
    for i in 0..5_000 {
        text.push_str(&format!(
            "\n[[rules]]\nname = \"rule{i:04}\"\nkind = \"sim\"\n"
        ));
    }
    for i in 0..5_000 {
        text.push_str(&format!(
            "\n[[relators]]\nname = \"y{i}\"\ngroup = \"g\"\nrules = [\"missing\"]\ninterval = \"1m\"\n"
        ));
    }
    let error = match parse_large(&text) {
        Ok(_) => panic!("dangling rule accepted"),
        Err(error) => error,
    };
    assert_eq!(error.key.as_deref(), Some("relators[0].rules[0]"));
    let first_relator = line_number(&text, "name = \"y0\"").map(|l| l + 2);
    assert_eq!(error.line, first_relator);
    let listed: Vec<String> = std::iter::once("r".to_string())
        .chain((0..19).map(|i| format!("rule{i:04}")))
        .collect();
    assert_eq!(
        error.message,
        format!(
            "no rule named `missing` (known: {} and 4981 more)",
            listed.join(", ")
        )
    );
}
