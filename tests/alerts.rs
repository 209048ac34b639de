//! States, not events, drive alerts: a supervisor against a fake engine whose results follow a
//! script per firing, with webhook, command and log actions. A problem is notified when the hard
//! state changes (after `max_check_attempts` bad results in a row), a recovery when it returns to
//! OK, a reminder every `renotify_interval` while it stays; never for a state that stays OK.

mod common;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use common::{
    Extra, MockEngine, TempDir, capture_logs, eventually, one_engine_config, parse, serve_http,
    serve_mock, start_supervisor, take_completions,
};
use serde_json::Value;
use tokio::sync::mpsc;
use turbomon::proto::{PerfData, TaskState};
use turbomon::supervisor::{Completion, CountersSnapshot, Supervisor};

use TaskState::{Broken, Warning};

const OK: TaskState = TaskState::Ok;

/// How often the relator fires in these tests.
const INTERVAL: &str = "150ms";

/// A fake engine whose n-th firing on each node ends in `script[n]` (the last state after the
/// script ends). A task keeps the state it was first given, however often it is asked.
fn scripted(script: &[TaskState]) -> MockEngine {
    let script = script.to_vec();
    let given: Mutex<(HashMap<String, TaskState>, HashMap<String, usize>)> = Mutex::default();
    MockEngine::with_states(move |id| {
        let mut given = given.lock().unwrap();
        let (by_id, firings) = &mut *given;
        if let Some(state) = by_id.get(id) {
            return *state;
        }
        let node = id.split('/').nth(2).unwrap_or_default().to_string();
        let firing = firings.entry(node).or_default();
        let state = script.get(*firing).or(script.last()).copied().unwrap_or(OK);
        *firing += 1;
        by_id.insert(id.to_string(), state);
        state
    })
}

/// A webhook receiver: every JSON body posted to it.
struct Hook {
    address: std::net::SocketAddr,
    bodies: mpsc::UnboundedReceiver<Value>,
    received: Vec<Value>,
}

impl Hook {
    async fn start() -> Self {
        use http_body_util::BodyExt;
        let (tx, bodies) = mpsc::unbounded_channel();
        let address = serve_http(move |request: hyper::Request<hyper::body::Incoming>| {
            let tx = tx.clone();
            async move {
                if let Ok(body) = request.into_body().collect().await
                    && let Ok(value) = serde_json::from_slice(&body.to_bytes())
                {
                    let _ = tx.send(value);
                }
                hyper::Response::new(http_body_util::Full::new(bytes::Bytes::new()))
            }
        })
        .await;
        Self {
            address,
            bodies,
            received: Vec::new(),
        }
    }

    /// The `[[alerts]]` table of this webhook, named `hook`.
    fn table(&self) -> String {
        format!(
            "\n[[alerts]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"http://{}/alert\"\n",
            self.address
        )
    }

    /// Every body posted once `expected` have come (or 5 s passed) and a little longer, in the
    /// order of the results they are about.
    async fn settle(&mut self, expected: usize) -> &[Value] {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while self.received.len() < expected {
            match tokio::time::timeout_at(deadline, self.bodies.recv()).await {
                Ok(Some(body)) => self.received.push(body),
                _ => break,
            }
        }
        // Anything more would come now.
        while let Ok(Some(body)) =
            tokio::time::timeout(Duration::from_millis(300), self.bodies.recv()).await
        {
            self.received.push(body);
        }
        self.received
            .sort_by_key(|body| body["finished_unix_ms"].as_i64().unwrap_or_default());
        &self.received
    }
}

/// One node `n0`, rule `sim` fired every [`INTERVAL`], relator `r` notifying `hook` with
/// `relator` keys added, and `alerts` tables after.
fn config_text(address: impl std::fmt::Display, relator: &str, alerts: &str) -> String {
    let relator = format!("alerts = [\"hook\"]\n{relator}");
    one_engine_config(
        address,
        &["n0"],
        Extra {
            top: "status_check_interval = \"20ms\"\nbatch_window = \"10ms\"",
            rule: "duration = \"1ms\"",
            relator: &relator,
            ..Extra::default()
        },
    )
    .replace("interval = \"1h\"", &format!("interval = \"{INTERVAL}\""))
        + alerts
}

/// Runs `script` (one state per firing) through relator `r` with `relator` keys, until
/// `firings` results are known; returns what the webhook got and the counters.
async fn run(
    script: &[TaskState],
    relator: &str,
    firings: usize,
) -> (Vec<Value>, CountersSnapshot) {
    let mut hook = Hook::start().await;
    let engine = serve_mock(scripted(script)).await;
    let text = config_text(engine.address, relator, &hook.table());
    let (supervisor, _config, mut done) = start_supervisor(parse(&text));
    take_completions(&mut done, firings, Duration::from_secs(10)).await;
    let counters = counters(&supervisor);
    let bodies = hook.settle(counters.alerts as usize).await.to_vec();
    assert_bounded(&supervisor);
    supervisor.shutdown().await;
    (bodies, counters)
}

fn counters(supervisor: &Supervisor) -> CountersSnapshot {
    supervisor.counters("e1").expect("engine e1")
}

/// The state book holds at most one state per planned (relator, rule, node): here one.
fn assert_bounded(supervisor: &Supervisor) {
    let (held, capacity) = supervisor.alert_states();
    assert_eq!(capacity, 1);
    assert!(held <= capacity, "{held} states for {capacity} keys");
}

/// (kind, state, previous_state) of each body.
fn kinds(bodies: &[Value]) -> Vec<(String, String, String)> {
    bodies
        .iter()
        .map(|b| {
            let field = |name: &str| b[name].as_str().unwrap_or("?").to_string();
            (field("kind"), field("state"), field("previous_state"))
        })
        .collect()
}

fn said(kind: &str, state: &str, previous: &str) -> (String, String, String) {
    (kind.to_string(), state.to_string(), previous.to_string())
}

#[tokio::test]
async fn a_rule_that_stays_critical_for_five_firings_alerts_once() {
    let (bodies, counters) = run(&[Broken; 5], "", 5).await;
    assert_eq!(kinds(&bodies), [said("problem", "critical", "ok")]);
    assert_eq!(counters.alerts, 1);
    assert!(counters.broken >= 5, "{counters:?}");
}

#[tokio::test]
async fn a_new_bad_state_alerts_only_at_max_check_attempts_results_in_a_row() {
    // Two bad results, an OK (a soft state ends silently), then three bad in a row.
    let script = [Broken, Broken, OK, Broken, Broken, Broken, Broken];
    let (bodies, counters) = run(&script, "max_check_attempts = 3", 7).await;
    assert_eq!(kinds(&bodies), [said("problem", "critical", "ok")]);
    assert_eq!(bodies[0]["attempt"], 3);
    // The sixth firing made it hard: its task is the one notified.
    let sixth_firing = bodies[0]["task_id"].as_str().unwrap_or_default();
    assert!(sixth_firing.starts_with("r/sim/n0/"), "{sixth_firing}");
    assert!(bodies[0]["since_unix_ms"].as_i64() < bodies[0]["finished_unix_ms"].as_i64());
    assert_eq!((counters.soft_states, counters.alerts), (4, 1));
}

#[tokio::test]
async fn no_recovery_after_a_soft_state() {
    let (bodies, counters) = run(&[Broken, OK, OK, OK], "max_check_attempts = 2", 4).await;
    assert!(bodies.is_empty(), "{bodies:?}");
    assert_eq!((counters.soft_states, counters.alerts), (1, 0));
}

#[tokio::test]
async fn warning_then_critical_alerts_again() {
    let (bodies, _) = run(&[Warning, Warning, Broken, Broken], "", 4).await;
    assert_eq!(
        kinds(&bodies),
        [
            said("problem", "warning", "ok"),
            said("problem", "critical", "warning"),
        ]
    );
}

#[tokio::test]
async fn a_recovery_is_sent_once_when_back_to_ok() {
    let (bodies, counters) = run(&[Broken, Broken, OK, OK, OK], "", 5).await;
    assert_eq!(
        kinds(&bodies),
        [
            said("problem", "critical", "ok"),
            said("recovery", "ok", "critical"),
        ]
    );
    assert_eq!(bodies[1]["since_unix_ms"], bodies[1]["finished_unix_ms"]);
    assert_eq!((counters.alerts, counters.recoveries), (2, 1));
}

#[tokio::test]
async fn notify_recovery_false_sends_no_recovery() {
    let (bodies, _) = run(&[Broken, OK, OK], "notify_recovery = false", 3).await;
    assert_eq!(kinds(&bodies), [said("problem", "critical", "ok")]);
}

#[tokio::test]
async fn no_alert_at_all_while_a_state_stays_ok() {
    let (bodies, counters) = run(&[OK; 5], "renotify_interval = \"100ms\"", 5).await;
    assert!(bodies.is_empty(), "{bodies:?}");
    assert_eq!(counters.alerts, 0);
}

#[tokio::test]
async fn alert_on_critical_ignores_warning() {
    let (bodies, _) = run(
        &[Warning, Warning, OK, Broken, Broken],
        "alert_on = [\"critical\"]",
        5,
    )
    .await;
    assert_eq!(kinds(&bodies), [said("problem", "critical", "ok")]);
}

#[tokio::test]
async fn reminders_come_every_renotify_interval_while_bad_and_none_after_recovery() {
    // Bad for 12 firings (about 1.7 s), then OK for 6.
    let script: Vec<TaskState> = [Broken; 12].into_iter().chain([OK; 6]).collect();
    let (bodies, counters) = run(&script, "renotify_interval = \"400ms\"", 18).await;
    let kinds: Vec<String> = kinds(&bodies).into_iter().map(|k| k.0).collect();
    assert_eq!(
        kinds.first().map(String::as_str),
        Some("problem"),
        "{kinds:?}"
    );
    assert_eq!(
        kinds.last().map(String::as_str),
        Some("recovery"),
        "{kinds:?}"
    );
    let reminders = &kinds[1..kinds.len() - 1];
    assert!(
        (2..=4).contains(&reminders.len()) && reminders.iter().all(|k| k == "reminder"),
        "{kinds:?}"
    );
    // Each reminder comes at least the interval after the notification before it.
    let times: Vec<i64> = bodies
        .iter()
        .map(|b| b["finished_unix_ms"].as_i64().unwrap_or_default())
        .collect();
    for pair in times[..times.len() - 1].windows(2) {
        assert!(pair[1] - pair[0] >= 400, "{times:?}");
    }
    let since = bodies[0]["since_unix_ms"].as_i64();
    assert!(
        bodies[1..bodies.len() - 1]
            .iter()
            .all(|b| b["since_unix_ms"].as_i64() == since && b["state"] == "critical")
    );
    assert_eq!(counters.reminders as usize, reminders.len());
}

#[tokio::test]
async fn the_webhook_body_carries_the_state_the_output_and_the_perfdata() {
    let mut hook = Hook::start().await;
    let perfdata = vec![
        PerfData {
            label: "/".into(),
            value: 97.5,
            uom: "%".into(),
            warn: "80".into(),
            crit: "90".into(),
            min: Some(0.0),
            max: Some(100.0),
        },
        PerfData {
            label: "inodes".into(),
            value: 12.0,
            uom: String::new(),
            warn: String::new(),
            crit: String::new(),
            min: None,
            max: None,
        },
    ];
    let mock = scripted(&[Broken]).with_output("DISK CRITICAL - / 97.5%", perfdata);
    let engine = serve_mock(mock).await;
    let text = config_text(engine.address, "", &hook.table());
    let (supervisor, _config, mut done) = start_supervisor(parse(&text));
    let first: Completion = take_completions(&mut done, 1, Duration::from_secs(10))
        .await
        .remove(0);
    let body = hook.settle(1).await[0].clone();
    supervisor.shutdown().await;
    let expected_fields = [
        ("engine", "e1"),
        ("relator", "r"),
        ("rule", "sim"),
        ("node", "n0"),
        ("task_id", first.task_id.as_str()),
        ("state", "critical"),
        ("previous_state", "ok"),
        ("state_type", "hard"),
        ("kind", "problem"),
        ("output", "DISK CRITICAL - / 97.5%"),
    ];
    for (field, value) in expected_fields {
        assert_eq!(body[field], value, "{field} in {body}");
    }
    assert_eq!(body["attempt"], 1);
    assert_eq!(body["value"], 1.0);
    assert_eq!(body["finished_unix_ms"], first.finished_unix_ms);
    assert_eq!(body["since_unix_ms"], first.finished_unix_ms);
    assert_eq!(
        body["perfdata"],
        serde_json::json!([
            {"label": "/", "value": 97.5, "uom": "%", "warn": "80", "crit": "90",
             "min": 0.0, "max": 100.0},
            {"label": "inodes", "value": 12.0, "uom": "", "warn": "", "crit": "",
             "min": null, "max": null},
        ])
    );
}

#[tokio::test]
async fn the_command_gets_the_notification_in_its_environment() {
    let dir = TempDir::new("alert-env");
    let out = dir.path().join("env");
    let engine = serve_mock(scripted(&[Warning]).with_output(
        "LOAD WARNING",
        vec![PerfData {
            label: "load1".into(),
            value: 4.5,
            uom: String::new(),
            warn: "4".into(),
            crit: "8".into(),
            min: Some(0.0),
            max: None,
        }],
    ))
    .await;
    let table = format!(
        "\n[[alerts]]\nname = \"cmd\"\nkind = \"command\"\nprogram = \"sh\"\nargs = [\"-c\", \"env > {}.part && mv {0}.part {0}\"]\n",
        out.display()
    );
    let text = config_text(engine.address, "", &table).replace("[\"hook\"]", "[\"cmd\"]");
    let (supervisor, _config, mut done) = start_supervisor(parse(&text));
    let first = take_completions(&mut done, 1, Duration::from_secs(10))
        .await
        .remove(0);
    eventually(
        "the command wrote its environment",
        Duration::from_secs(5),
        || out.exists(),
    )
    .await;
    supervisor.shutdown().await;
    let written = std::fs::read_to_string(&out).expect("env file");
    let env: HashMap<&str, &str> = written
        .lines()
        .filter_map(|line| line.split_once('='))
        .filter(|(name, _)| name.starts_with("TURBOMON_"))
        .collect();
    let finished = first.finished_unix_ms.to_string();
    for (name, value) in [
        ("TURBOMON_STATE", "warning"),
        ("TURBOMON_PREVIOUS_STATE", "ok"),
        ("TURBOMON_STATE_TYPE", "hard"),
        ("TURBOMON_KIND", "problem"),
        ("TURBOMON_ATTEMPT", "1"),
        ("TURBOMON_OUTPUT", "LOAD WARNING"),
        ("TURBOMON_PERFDATA", "load1=4.5;4;8;0"),
        ("TURBOMON_RELATOR", "r"),
        ("TURBOMON_RULE", "sim"),
        ("TURBOMON_NODE", "n0"),
        ("TURBOMON_ENGINE", "e1"),
        ("TURBOMON_TASK_ID", first.task_id.as_str()),
        ("TURBOMON_VALUE", "1"),
        ("TURBOMON_FINISHED_UNIX_MS", finished.as_str()),
        ("TURBOMON_SINCE_UNIX_MS", finished.as_str()),
        // The names from before states.
        ("TURBOMON_TASK", first.task_id.as_str()),
        ("TURBOMON_MESSAGE", "LOAD WARNING"),
    ] {
        assert_eq!(env.get(name), Some(&value), "{name} in\n{written}");
    }
}

#[test]
fn the_log_action_writes_one_structured_line_per_notification() {
    let ((), logs) = capture_logs(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let engine = serve_mock(scripted(&[Broken, Broken, Broken, OK, OK])).await;
            let text = config_text(
                engine.address,
                "",
                "\n[[alerts]]\nname = \"log\"\nkind = \"log\"\n",
            )
            .replace("[\"hook\"]", "[\"log\"]");
            let (supervisor, _config, mut done) = start_supervisor(parse(&text));
            take_completions(&mut done, 5, Duration::from_secs(10)).await;
            // The log action runs on this thread once its task is polled.
            tokio::time::sleep(Duration::from_millis(100)).await;
            supervisor.shutdown().await;
        });
    });
    let lines: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("turbomon::alert"))
        .collect();
    assert_eq!(lines.len(), 2, "{logs}");
    let (problem, recovery) = (lines[0], lines[1]);
    assert!(
        problem.contains("WARN") && problem.contains("rule is critical"),
        "{problem}"
    );
    assert!(
        recovery.contains("INFO") && recovery.contains("rule recovered"),
        "{recovery}"
    );
    for field in [
        "alert=log",
        "kind=problem",
        "state=critical",
        "previous_state=ok",
        "engine=e1",
        "relator=r",
        "rule=sim",
        "node=n0",
        "attempt=1",
        "output=mock",
    ] {
        assert!(problem.contains(field), "{field} in {problem}");
    }
    assert!(recovery.contains("kind=recovery") && recovery.contains("previous_state=critical"));
    assert!(!logs.contains("Notification {"), "no Debug dump: {logs}");
}
