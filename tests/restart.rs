//! Restarts without loss (issue 13): tasks carry their supervisor's id, an engine lists what it
//! holds for one supervisor page by page (and nothing of another's), and a supervisor that
//! stops, gracefully or by SIGKILL, collects at its next start every result it left: counted
//! once, alerted once, run once, on the same timeline and with the same task ids.

mod common;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{
    Extra, RunningEngine, TempDir, TurbomonProcess, batch, engine_config, eventually, node_names,
    one_engine_config, parse, serve_http, sim_task, start_supervisor, take_completions,
};
use tokio::sync::mpsc;
use turbomon::proto::{self, ListTasksRequest, ListedTask, TaskState};
use turbomon::supervisor::schedule::plan::plan_relators;

/// A sim task for `supervisor` with relator `r`, rule `sim`, node `id`.
fn task_for(supervisor: &str, id: &str, duration_ms: u64, scheduled_unix_ms: i64) -> proto::Task {
    proto::Task {
        supervisor_id: supervisor.into(),
        node: id.into(),
        scheduled_unix_ms,
        ..sim_task(id, duration_ms, TaskState::Ok, 1.0)
    }
}

/// Every page of the listing for `supervisor` asked `limit` at a time: the tasks, the number of
/// pages and the first page's marks.
async fn list_all(
    engine: &RunningEngine,
    supervisor: &str,
    limit: u32,
) -> (Vec<ListedTask>, usize, Vec<proto::RelatorMark>) {
    let mut client = engine.client().await;
    let mut after_id = String::new();
    let (mut tasks, mut pages, mut marks) = (Vec::new(), 0, Vec::new());
    loop {
        let reply = client
            .list_tasks(ListTasksRequest {
                supervisor_id: supervisor.into(),
                after_id: after_id.clone(),
                limit,
            })
            .await
            .expect("a valid list request is answered")
            .into_inner();
        pages += 1;
        if after_id.is_empty() {
            marks = reply.marks;
        } else {
            assert!(reply.marks.is_empty(), "marks come on the first page only");
        }
        tasks.extend(reply.tasks);
        if reply.next_after_id.is_empty() {
            return (tasks, pages, marks);
        }
        assert!(reply.next_after_id > after_id, "the token moves forward");
        after_id = reply.next_after_id;
    }
}

#[tokio::test]
async fn paging_returns_every_task_exactly_once_and_only_to_its_supervisor() {
    let engine = RunningEngine::start(engine_config()).await;
    let max = engine.engine.config().max_batch_tasks;
    assert_eq!(max, 1000);
    // 2,500 tasks for one supervisor, half finished at once, half running; 20 for another.
    for chunk in 0..5 {
        let tasks = (0..500)
            .map(|i| {
                let n = chunk * 500 + i;
                let duration = if n % 2 == 0 { 0 } else { 60_000 };
                task_for("sup-a", &format!("a-{n:05}"), duration, 1_000 + n as i64)
            })
            .collect();
        let ack = engine.engine.submit_batch(batch(chunk as u64, tasks));
        assert!(ack.acks.iter().all(|a| a.accepted), "{:?}", ack.error);
    }
    let other = (0..20)
        .map(|i| task_for("sup-b", &format!("b-{i:02}"), 0, 7))
        .collect();
    engine.engine.submit_batch(batch(9, other));

    for limit in [0, 7] {
        let (tasks, pages, marks) = list_all(&engine, "sup-a", limit).await;
        let per_page = if limit == 0 { max } else { limit as usize };
        assert_eq!(pages, 2_500usize.div_ceil(per_page), "limit {limit}");
        let ids: Vec<&str> = tasks.iter().map(|t| t.task_id.as_str()).collect();
        let distinct: HashSet<&str> = ids.iter().copied().collect();
        assert_eq!((ids.len(), distinct.len()), (2_500, 2_500), "each once");
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "in id order");
        for task in &tasks {
            assert_eq!(task.relator, "r");
            let finished = task.state == TaskState::Ok as i32;
            assert_eq!(task.status.is_some(), finished, "{}", task.task_id);
            assert_eq!(task.node, task.task_id, "what it is comes back");
        }
        assert_eq!(
            marks,
            vec![proto::RelatorMark {
                relator: "r".into(),
                latest_scheduled_unix_ms: 1_000 + 2_499,
            }]
        );
    }
    let (theirs, _, _) = list_all(&engine, "sup-b", 0).await;
    assert_eq!(theirs.len(), 20);
    assert!(theirs.iter().all(|t| t.task_id.starts_with("b-")));
    let (nobody, pages, marks) = list_all(&engine, "sup-c", 0).await;
    assert!(nobody.is_empty() && marks.is_empty());
    assert_eq!(pages, 1);
    assert!(engine.engine.counters().list_pages >= 3 + 358 + 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_engine_of_100_000_tasks_lists_in_pages_of_max_batch_tasks() {
    let engine = RunningEngine::start(engine_config()).await;
    let held = engine.engine.config().max_held_tasks;
    assert_eq!(held, 100_000);
    for chunk in 0..100 {
        let tasks = (0..1000)
            .map(|i| task_for("full", &format!("t-{:06}", chunk * 1000 + i), 0, i))
            .collect();
        let ack = engine.engine.submit_batch(batch(chunk as u64, tasks));
        assert!(ack.acks.iter().all(|a| a.accepted));
    }
    let (tasks, pages, _) = list_all(&engine, "full", 0).await;
    assert_eq!(pages, 100);
    assert_eq!(tasks.len(), 100_000);
    assert!(tasks.windows(2).all(|w| w[0].task_id < w[1].task_id));
}

#[tokio::test]
async fn list_requests_out_of_bounds_are_refused_with_a_reason() {
    let engine = RunningEngine::start(engine_config()).await;
    let mut client = engine.client().await;
    let cases = [
        (String::new(), String::new(), 0, "supervisor_id is empty"),
        ("s".repeat(257), String::new(), 0, "over 256"),
        ("s".into(), String::new(), 1001, "over max_batch_tasks 1000"),
        ("s".into(), "x".repeat(5000), 0, "after_id is 5000 bytes"),
    ];
    for (supervisor_id, after_id, limit, reason) in cases {
        let status = client
            .list_tasks(ListTasksRequest {
                supervisor_id,
                after_id,
                limit,
            })
            .await
            .expect_err("refused");
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{reason}");
        assert!(status.message().contains(reason), "{}", status.message());
    }
    assert_eq!(engine.engine.counters().lists_refused, 4);
    // The edges are accepted.
    client
        .list_tasks(ListTasksRequest {
            supervisor_id: "s".repeat(256),
            after_id: "x".repeat(4096),
            limit: 1000,
        })
        .await
        .expect("at the limits");
}

#[tokio::test]
async fn a_task_id_held_for_one_supervisor_is_refused_to_another() {
    let engine = RunningEngine::start(engine_config()).await;
    let first = engine
        .engine
        .submit_batch(batch(1, vec![task_for("sup-a", "shared", 0, 1)]));
    assert!(first.acks[0].accepted);
    let second = engine
        .engine
        .submit_batch(batch(2, vec![task_for("sup-b", "shared", 0, 1)]));
    assert!(!second.acks[0].accepted);
    assert_eq!(second.acks[0].refusal, proto::Refusal::Invalid as i32);
    assert!(
        second.acks[0].reason.contains("sup-a"),
        "{:?}",
        second.acks[0]
    );
    // The same supervisor gets the duplicate acknowledgement.
    let again = engine
        .engine
        .submit_batch(batch(3, vec![task_for("sup-a", "shared", 0, 1)]));
    assert!(again.acks[0].accepted && again.acks[0].duplicate);
    let (of_b, _, _) = list_all(&engine, "sup-b", 0).await;
    assert!(of_b.is_empty());
}

/// Relator `r` of rule `sim` (broken, `duration`) on `nodes` nodes every hour, starts spread
/// over `spread` (start window twice that, half randomized), alerts posted to `hook`.
fn broken_fleet(
    address: impl std::fmt::Display,
    supervisor: &str,
    nodes: usize,
    duration: &str,
    spread: Duration,
    hook: impl std::fmt::Display,
) -> String {
    one_engine_config(
        address,
        &node_names(nodes),
        Extra {
            top: &format!(
                "supervisor_id = \"{supervisor}\"\nstatus_check_interval = \"200ms\"\nmetrics_listen = \"\""
            ),
            rule: &format!("duration = \"{duration}\"\noutcome = \"broken\""),
            relator: &format!(
                "start_window = \"{}ms\"\nalerts = [\"hook\"]",
                (spread * 2).as_millis()
            ),
            ..Extra::default()
        },
    )
    .replace("randomize = 0", "randomize = 50")
        + &format!("\n[[alerts]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"http://{hook}/alert\"\n")
}

/// A webhook receiver: the task id of every alert posted.
async fn alert_receiver() -> (std::net::SocketAddr, mpsc::UnboundedReceiver<String>) {
    use http_body_util::BodyExt;
    let (ids, received) = mpsc::unbounded_channel::<String>();
    let address = serve_http(move |request: hyper::Request<hyper::body::Incoming>| {
        let ids = ids.clone();
        async move {
            if let Ok(body) = request.into_body().collect().await
                && let Ok(alert) = serde_json::from_slice::<serde_json::Value>(&body.to_bytes())
                && let Some(id) = alert["task_id"].as_str()
            {
                let _ = ids.send(id.to_string());
            }
            hyper::Response::new(http_body_util::Full::new(bytes::Bytes::new()))
        }
    })
    .await;
    (address, received)
}

#[tokio::test]
async fn a_supervisor_stopped_with_checks_running_collects_them_at_its_next_start_once() {
    let engine = RunningEngine::start(engine_config()).await;
    let (hook, mut alerts) = alert_receiver().await;
    let text = broken_fleet(
        engine.address,
        "sup-1",
        30,
        "1500ms",
        Duration::from_millis(100),
        hook,
    );
    let (first, _, mut first_done) = start_supervisor(parse(&text));
    eventually("30 tasks on the engine", Duration::from_secs(10), || {
        engine.engine.counters().tasks_accepted == 30
    })
    .await;
    // Stopped (as on SIGTERM) while every check still runs.
    let counters = first.shutdown().await[0].1;
    assert_eq!(counters.completed, 0);
    assert!(first_done.try_recv().is_err());
    let (held, _, marks) = list_all(&engine, "sup-1", 0).await;
    assert_eq!(held.len(), 30, "left on the engine for the next start");
    assert_eq!(marks.len(), 1);
    let (of_another, _, _) = list_all(&engine, "sup-2", 0).await;
    assert!(
        of_another.is_empty(),
        "another supervisor id sees none of them"
    );

    let (second, _, mut done) = start_supervisor(parse(&text));
    let collected = take_completions(&mut done, 30, Duration::from_secs(20)).await;
    let ids: HashSet<String> = collected.iter().map(|c| c.task_id.clone()).collect();
    assert_eq!(ids, held.iter().map(|t| t.task_id.clone()).collect());
    assert!(collected.iter().all(|c| c.state == TaskState::Broken));
    let mut alerted = Vec::new();
    while alerted.len() < 30 {
        let id = tokio::time::timeout(Duration::from_secs(10), alerts.recv())
            .await
            .expect("every alert within 10 s")
            .expect("receiver open");
        alerted.push(id);
    }
    eventually("released on the engine", Duration::from_secs(10), || {
        engine.engine.counters().tasks_held == 0
    })
    .await;
    // Nothing more comes: no alert, no completion, no task sent again.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(alerts.try_recv().is_err(), "an alert fired twice");
    assert!(done.try_recv().is_err(), "a result counted twice");
    let counters = second.shutdown().await[0].1;
    assert_eq!(
        (counters.adopted, counters.completed, counters.alerts),
        (30, 30, 30)
    );
    assert_eq!(alerted.iter().collect::<HashSet<_>>().len(), 30);
    let engine_counters = engine.engine.counters();
    assert_eq!(
        engine_counters.tasks_accepted, 30,
        "the restart sent nothing again"
    );
    assert_eq!(engine_counters.checks_started, 30, "each ran once");
}

#[tokio::test]
async fn a_restart_mid_firing_keeps_the_firing_instants_and_task_ids() {
    let engine = RunningEngine::start(engine_config()).await;
    // A firing every 2 s, starts spread over 1 s, missed starts caught up at the restart.
    let text = one_engine_config(
        engine.address,
        &node_names(40),
        Extra {
            top: "supervisor_id = \"sup-t\"\nstatus_check_interval = \"100ms\"\nbatch_window = \"10ms\"",
            relator: "catch_up = \"latest\"",
            ..Extra::default()
        },
    )
    .replace("interval = \"1h\"", "interval = \"2s\"")
    .replace("randomize = 0", "randomize = 50");
    let config = parse(&text);
    let plan = plan_relators(&config).expect("plan").remove(0);
    let firing_ids = |k: u64| -> HashSet<String> {
        plan.tasks_at(UNIX_EPOCH + Duration::from_millis(k * 2_000))
            .into_iter()
            .map(|due| due.task.id)
            .collect()
    };
    let (first, _, mut first_done) = start_supervisor(config.clone());
    // The first anchored firing that begins at least 2 s from now: the first supervisor is
    // stopped 0.4 s into it (its 40 starts are spread over 1 s).
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let k = now_ms / 2_000 + 2;
    let expected = firing_ids(k);
    let cut = UNIX_EPOCH + Duration::from_millis(k * 2_000 + 400);
    tokio::time::sleep(cut.duration_since(SystemTime::now()).unwrap_or_default()).await;
    first.shutdown().await;
    let mut outcomes: HashMap<String, usize> = HashMap::new();
    while let Ok(completion) = first_done.try_recv() {
        *outcomes.entry(completion.task_id).or_default() += 1;
    }
    let before = outcomes.keys().filter(|id| expected.contains(*id)).count();
    assert!(
        (1..40).contains(&before),
        "stopped mid-firing: {before} of 40 done"
    );
    let (second, _, mut second_done) = start_supervisor(config);
    // Past the end of firing k (its last start is at most 1 s in), plus collection.
    let end = UNIX_EPOCH + Duration::from_millis(k * 2_000 + 1_500);
    let wait = end.duration_since(SystemTime::now()).unwrap_or_default();
    tokio::time::sleep(wait + Duration::from_millis(500)).await;
    second.shutdown().await;

    while let Ok(completion) = second_done.try_recv() {
        *outcomes.entry(completion.task_id).or_default() += 1;
    }
    let of_k: HashSet<String> = outcomes
        .keys()
        .filter(|id| expected.contains(*id))
        .cloned()
        .collect();
    assert_eq!(
        of_k, expected,
        "every task of the firing, on its anchored instant"
    );
    assert!(
        outcomes.values().all(|&n| n == 1),
        "each outcome counted once"
    );
    let counters = engine.engine.counters();
    assert_eq!(
        counters.checks_started, counters.tasks_accepted,
        "none ran twice"
    );
}

/// `turbomon supervisor --config FILE` in `dir`.
fn supervisor_process(dir: &Path, config: &Path) -> TurbomonProcess {
    TurbomonProcess::start(
        &[
            "supervisor",
            "--config",
            config.to_str().expect("utf-8 path"),
        ],
        dir,
    )
}

/// Alerts received so far, by task id.
fn drain(alerts: &mut mpsc::UnboundedReceiver<String>, into: &mut HashMap<String, usize>) {
    while let Ok(id) = alerts.try_recv() {
        *into.entry(id).or_default() += 1;
    }
}

#[tokio::test]
async fn a_supervisor_killed_with_sigkill_mid_firing_loses_no_result_and_repeats_no_alert() {
    let engine = RunningEngine::start(engine_config()).await;
    let (hook, mut alerts) = alert_receiver().await;
    let dir = TempDir::new("restart-kill");
    let config = dir.path().join("supervisor.toml");
    // 60 broken checks of 1 s, their starts spread over 2 s.
    let text = broken_fleet(
        engine.address,
        "sup-k",
        60,
        "1s",
        Duration::from_secs(2),
        hook,
    );
    std::fs::write(&config, text).expect("write config");

    let mut first = supervisor_process(dir.path(), &config);
    eventually(
        "the firing under way, some checks done",
        Duration::from_secs(20),
        || {
            let counters = engine.engine.counters();
            counters.tasks_accepted >= 20 && counters.checks_finished >= 5
        },
    )
    .await;
    first.signal("KILL");
    first.wait_exit(Duration::from_secs(10)).await;
    let at_kill = engine.engine.counters();
    let accepted = at_kill.tasks_accepted;
    assert!(accepted < 60, "killed mid-firing ({accepted} of 60 sent)");
    assert!(
        at_kill.results_released < accepted,
        "results left on the engine for the restart"
    );
    let mut alerted = HashMap::new();
    drain(&mut alerts, &mut alerted);

    let mut second = supervisor_process(dir.path(), &config);
    let reconciled = second
        .wait_for_line(Duration::from_secs(20), |line| {
            line.contains("reconciled with the engine")
        })
        .await;
    assert!(reconciled.contains("sup-k"), "{reconciled}");
    eventually(
        "every result collected and released",
        Duration::from_secs(20),
        || engine.engine.counters().tasks_held == 0,
    )
    .await;
    // Alerts are posted in the background: give the last ones a moment.
    tokio::time::sleep(Duration::from_millis(500)).await;
    drain(&mut alerts, &mut alerted);
    second.signal("TERM");
    assert!(second.wait_exit(Duration::from_secs(20)).await.success());

    let counters = engine.engine.counters();
    assert_eq!(
        counters.tasks_accepted, accepted,
        "the restart sent nothing again"
    );
    assert_eq!(counters.checks_started, accepted, "no task ran twice");
    assert_eq!(
        counters.results_released, accepted,
        "every result collected"
    );
    assert_eq!(
        alerted.len() as u64,
        accepted,
        "one alert per broken result: {alerted:?}"
    );
    assert!(
        alerted.values().all(|&n| n == 1),
        "no alert repeated: {alerted:?}"
    );
    assert!(
        second.lines().iter().all(|line| !line.contains("ERROR")),
        "{}",
        second.lines().join("\n")
    );
}

#[tokio::test]
async fn sigterm_then_start_collects_what_was_left() {
    let engine = RunningEngine::start(engine_config()).await;
    let (hook, mut alerts) = alert_receiver().await;
    let dir = TempDir::new("restart-term");
    let config = dir.path().join("supervisor.toml");
    let text = broken_fleet(
        engine.address,
        "sup-term",
        40,
        "3s",
        Duration::from_millis(200),
        hook,
    );
    std::fs::write(&config, text).expect("write config");

    let mut first = supervisor_process(dir.path(), &config);
    eventually("40 checks running", Duration::from_secs(20), || {
        engine.engine.counters().checks_started == 40
    })
    .await;
    first.signal("TERM");
    assert!(first.wait_exit(Duration::from_secs(20)).await.success());
    let left = first
        .wait_for_line(Duration::from_secs(1), |line| {
            line.contains("stopping with submitted tasks whose outcome is not known yet")
        })
        .await;
    assert!(left.contains("tasks=40"), "{left}");
    assert!(left.contains("next start"), "{left}");
    assert_eq!(engine.engine.counters().tasks_held, 40);

    let mut second = supervisor_process(dir.path(), &config);
    eventually("every result collected", Duration::from_secs(20), || {
        engine.engine.counters().tasks_held == 0
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut alerted = HashMap::new();
    drain(&mut alerts, &mut alerted);
    second.signal("TERM");
    assert!(second.wait_exit(Duration::from_secs(20)).await.success());
    assert_eq!(alerted.len(), 40);
    assert!(alerted.values().all(|&n| n == 1), "{alerted:?}");
    let counters = engine.engine.counters();
    assert_eq!((counters.tasks_accepted, counters.checks_started), (40, 40));
}
