//! The supervisor against a recording mock engine: batches carry the right tasks, loops and
//! packets are measured right, turbo off bounds its connections, reloads apply to the next loop,
//! an engine that is down loses nothing, broken rules fire alerts.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{MockEngine, eventually, serve_mock, serve_mock_on, wire_bytes};
use tokio::sync::{mpsc, watch};
use turbomon::config::SupervisorConfig;
use turbomon::proto::{Task, TaskState};
use turbomon::supervisor::{Completion, Supervisor, SupervisorOptions};
use turbomon::transport::Dialer;
use turbomon::wire::batch::BatchIds;
use turbomon::wire::status::monitor_turbo;
use turbomon::wire::stream::{StatusStream, SubmitStream};
use turbomon::wire::submit::{LoopLimits, submit_turbo};

/// A supervisor config with one engine at `address`, one group of `nodes` nodes and one sim rule
/// fired once an hour (so the first firing, at start, is the only one in a test), with no splay.
fn one_engine_config(address: &str, nodes: usize, extra_top: &str, extra_engine: &str) -> String {
    let nodes: Vec<String> = (0..nodes).map(|i| format!("\"n{i}\"")).collect();
    format!(
        r#"
{extra_top}
[[engines]]
name = "e1"
address = "{address}"
{extra_engine}

[[groups]]
name = "g"
engine = "e1"
nodes = [{nodes}]

[[rules]]
name = "sim"
kind = "sim"
duration = "1ms"

[[relators]]
name = "r"
group = "g"
rules = ["sim"]
randomize = 0
interval = "1h"
"#,
        nodes = nodes.join(", ")
    )
}

fn parse(text: &str) -> SupervisorConfig {
    toml::from_str(text).expect("test config parses")
}

fn start(
    config: SupervisorConfig,
) -> (
    Supervisor,
    watch::Sender<Arc<SupervisorConfig>>,
    mpsc::UnboundedReceiver<Completion>,
) {
    let (tx, rx) = watch::channel(Arc::new(config));
    let (observer, completions) = mpsc::unbounded_channel();
    let supervisor = Supervisor::start(
        rx,
        SupervisorOptions {
            stats_json: None,
            observer: Some(observer),
            ..SupervisorOptions::default()
        },
    )
    .expect("supervisor starts");
    (supervisor, tx, completions)
}

fn batch_sizes(batches: &[Vec<String>]) -> Vec<usize> {
    let mut sizes: Vec<usize> = batches.iter().map(Vec::len).collect();
    sizes.sort_unstable_by(|a, b| b.cmp(a));
    sizes
}

#[tokio::test]
async fn sixty_due_tasks_at_batch_thirty_travel_as_exactly_two_batches() {
    let mock = MockEngine::new();
    let engine = serve_mock(mock.clone()).await;
    let (supervisor, _tx, _done) = start(parse(&one_engine_config(
        &engine.address.to_string(),
        60,
        "",
        "",
    )));
    eventually("60 tasks submitted", Duration::from_secs(10), || {
        mock.log()
            .submit_batches
            .iter()
            .map(Vec::len)
            .sum::<usize>()
            == 60
    })
    .await;
    let log = mock.log();
    assert_eq!(batch_sizes(&log.submit_batches), vec![30, 30]);
    let mut ids: Vec<String> = log.submit_batches.concat();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 60, "every task exactly once");
    assert!(ids.iter().all(|id| id.starts_with("r/sim/n")));
    supervisor.shutdown().await;
}

#[tokio::test]
async fn sixty_one_due_tasks_travel_as_three_batches() {
    let mock = MockEngine::new();
    let engine = serve_mock(mock.clone()).await;
    let (supervisor, _tx, _done) = start(parse(&one_engine_config(
        &engine.address.to_string(),
        61,
        "",
        "",
    )));
    eventually("61 tasks submitted", Duration::from_secs(10), || {
        mock.log()
            .submit_batches
            .iter()
            .map(Vec::len)
            .sum::<usize>()
            == 61
    })
    .await;
    assert_eq!(batch_sizes(&mock.log().submit_batches), vec![30, 30, 1]);
    supervisor.shutdown().await;
}

#[tokio::test]
async fn status_batches_never_exceed_task_info_batch_size_and_cover_every_task() {
    let mock = MockEngine::with_states(|_| TaskState::Ok);
    let engine = serve_mock(mock.clone()).await;
    let config = parse(&one_engine_config(
        &engine.address.to_string(),
        50,
        "task_info_batch_size = 7\nstatus_check_interval = \"100ms\"",
        "",
    ));
    let (supervisor, _tx, mut done) = start(config);
    let mut finished = std::collections::HashSet::new();
    while finished.len() < 50 {
        let completion = tokio::time::timeout(Duration::from_secs(10), done.recv())
            .await
            .expect("completions arrive")
            .expect("observer open");
        assert_eq!(completion.state, TaskState::Ok);
        assert!(
            finished.insert(completion.task_id),
            "each task completes once"
        );
    }
    let log = mock.log();
    assert!(!log.status_queries.is_empty());
    for (ids, release) in &log.status_queries {
        assert!(ids.len() <= 7, "status batch of {} ids", ids.len());
        assert!(release.len() <= 7, "release batch of {} ids", release.len());
    }
    let asked: std::collections::HashSet<_> = log
        .status_queries
        .iter()
        .flat_map(|(ids, _)| ids.clone())
        .collect();
    assert_eq!(asked.len(), 50);
    // Finished tasks are released on the engine by a later query.
    eventually("results released", Duration::from_secs(5), || {
        mock.log()
            .status_queries
            .iter()
            .map(|(_, r)| r.len())
            .sum::<usize>()
            == 50
    })
    .await;
    assert_eq!(supervisor.unfinished("e1"), Some(0));
    supervisor.shutdown().await;
}

#[tokio::test]
async fn turbo_off_opens_one_connection_per_task_and_never_more_than_max_connections() {
    let mock = MockEngine::new().with_ack_delay(Duration::from_millis(20));
    let engine = serve_mock(mock.clone()).await;
    let config = parse(&one_engine_config(
        &engine.address.to_string(),
        25,
        "turbo_monitoring = false\nmax_connections = 4\nstatus_check_interval = \"200ms\"",
        "",
    ));
    let (supervisor, _tx, mut done) = start(config);
    for _ in 0..25 {
        tokio::time::timeout(Duration::from_secs(20), done.recv())
            .await
            .expect("completions arrive")
            .expect("observer open");
    }
    let log = mock.log();
    assert_eq!(log.unary_submits.len(), 25);
    assert!(
        log.submit_batches.is_empty(),
        "no stream used with turbo off"
    );
    assert!(log.unary_status.len() >= 25);
    let accepted = engine
        .connections
        .accepted
        .load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        accepted >= 25 + 25,
        "one connection per submit and per status check, got {accepted}"
    );
    let max_open = engine
        .connections
        .max_open
        .load(std::sync::atomic::Ordering::SeqCst);
    assert!(max_open <= 4, "{max_open} connections open at once");
    assert!(max_open >= 2, "calls ran concurrently ({max_open})");
    supervisor.shutdown().await;
}

fn sim_tasks(n: usize) -> Vec<Task> {
    let config = parse(&one_engine_config("127.0.0.1:1", n, "", ""));
    let plans = turbomon::supervisor::schedule::plan::plan_relators(&config).expect("plan");
    plans[0]
        .tasks_at(std::time::SystemTime::now())
        .into_iter()
        .map(|due| due.task)
        .collect()
}

#[tokio::test]
async fn loop_packet_sizes_match_the_bytes_that_crossed_and_batches_fly_together() {
    let delay = Duration::from_millis(100);
    let mock = MockEngine::new().with_ack_delay(delay);
    let engine = serve_mock(mock.clone()).await;
    let dialer = Dialer::new(&engine.address.to_string(), None, 4 << 20).expect("dialer");
    let client = dialer.connect().await.expect("connect");
    let stream = SubmitStream::open(&client).await.expect("stream");
    let limits = LoopLimits {
        batch_size: 30,
        in_flight: 64,
        reply_timeout: Duration::from_secs(10),
        max_message_bytes: 4 << 20,
    };
    let ids = BatchIds::default();
    let tasks = sim_tasks(300);
    let expected_request_bytes: u64 = tasks
        .chunks(30)
        .map(|c| {
            wire_bytes(&turbomon::proto::SubmitBatch {
                batch_id: 0,
                tasks: c.to_vec(),
            })
        })
        .sum();
    let outcome = submit_turbo(&stream, tasks, limits, &ids).await;
    assert!(outcome.completed());
    assert_eq!(outcome.packets_bytes.len(), 10);
    let mut measured = outcome.packets_bytes.clone();
    measured.sort_unstable();
    let mut crossed = mock.log().submit_packets;
    crossed.sort_unstable();
    assert_eq!(
        measured, crossed,
        "packet = framed batch + framed ack, as seen by the engine"
    );
    // batch ids are small varints here, so the requests alone must be within a few bytes a batch
    let requests_share: u64 = measured.iter().sum::<u64>();
    assert!(requests_share > expected_request_bytes);
    assert!(outcome.elapsed >= delay, "loop time covers the slowest ack");
    assert!(
        outcome.elapsed < delay * 6,
        "10 batches in flight together, not one after another ({:?})",
        outcome.elapsed
    );

    let status = StatusStream::open(&client).await.expect("status stream");
    let ids_to_check: Vec<std::sync::Arc<str>> = (0..45).map(|i| format!("t{i}").into()).collect();
    let monitor = monitor_turbo(
        &status,
        ids_to_check,
        vec!["done-1".into()],
        LoopLimits {
            batch_size: 20,
            ..limits
        },
        &ids,
    )
    .await;
    assert!(monitor.completed());
    assert_eq!(monitor.statuses.len(), 45);
    let mut measured = monitor.packets_bytes.clone();
    measured.sort_unstable();
    let mut crossed = mock.log().status_packets;
    crossed.sort_unstable();
    assert_eq!(measured, crossed);
    assert_eq!(measured.len(), 3);
}

#[tokio::test]
async fn changing_the_batch_size_in_the_config_changes_the_next_loops_batches() {
    let mock = MockEngine::new();
    let engine = serve_mock(mock.clone()).await;
    let text = one_engine_config(&engine.address.to_string(), 40, "", "")
        .replace("interval = \"1h\"", "interval = \"300ms\"");
    let (supervisor, tx, _done) = start(parse(&text));
    eventually("first loop", Duration::from_secs(10), || {
        !mock.log().submit_batches.is_empty()
    })
    .await;
    let mut changed = parse(&text);
    changed.engines[0].task_submit_batch_size = Some(10);
    tx.send_replace(Arc::new(changed));
    eventually("a loop with batches of 10", Duration::from_secs(10), || {
        mock.log().submit_batches.iter().any(|b| b.len() == 10)
    })
    .await;
    let log = mock.log();
    let first_small = log
        .submit_batches
        .iter()
        .position(|b| b.len() == 10)
        .expect("small batch");
    assert!(
        log.submit_batches[first_small..]
            .iter()
            .all(|b| b.len() <= 10),
        "once changed, every later batch uses the new size"
    );
    supervisor.shutdown().await;
}

#[tokio::test]
async fn an_engine_that_is_down_keeps_its_tasks_until_it_comes_up() {
    // Reserve a port, then leave it closed while the supervisor starts.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    let (supervisor, _tx, mut done) = start(parse(&one_engine_config(
        &address.to_string(),
        45,
        "status_check_interval = \"100ms\"",
        "",
    )));
    eventually("failed attempts recorded", Duration::from_secs(5), || {
        supervisor
            .with_stats("e1", |s| s.submission.failed_loops() > 0)
            .unwrap_or(false)
    })
    .await;
    let mock = MockEngine::new();
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .expect("rebind the port");
    let _engine = serve_mock_on(mock.clone(), listener).await;
    let mut finished = std::collections::HashSet::new();
    while finished.len() < 45 {
        let c = tokio::time::timeout(Duration::from_secs(30), done.recv())
            .await
            .expect("tasks delivered after the engine came up")
            .expect("observer open");
        assert!(finished.insert(c.task_id));
    }
    let submitted: Vec<String> = mock.log().submit_batches.concat();
    assert_eq!(submitted.len(), 45, "each task delivered once");
    supervisor.shutdown().await;
}

#[tokio::test]
async fn a_broken_rule_fires_its_webhook_and_command_alerts() {
    use http_body_util::BodyExt;
    // A tiny webhook receiver.
    let hook = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook_address = hook.local_addr().unwrap();
    let (body_tx, mut bodies) = mpsc::unbounded_channel::<serde_json::Value>();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = hook.accept().await else {
                return;
            };
            let body_tx = body_tx.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let body_tx = body_tx.clone();
                        async move {
                            let bytes = req.into_body().collect().await?.to_bytes();
                            if let Ok(v) = serde_json::from_slice(&bytes) {
                                let _ = body_tx.send(v);
                            }
                            Ok::<_, hyper::Error>(hyper::Response::new(http_body_util::Full::new(
                                bytes::Bytes::new(),
                            )))
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    let marker = std::env::temp_dir().join(format!("turbomon-alert-{}", std::process::id()));
    let _ = std::fs::remove_file(&marker);
    let mock = MockEngine::with_states(|id| {
        if id.contains("/n1/") {
            TaskState::Broken
        } else {
            TaskState::Ok
        }
    });
    let engine = serve_mock(mock).await;
    let text = one_engine_config(
        &engine.address.to_string(),
        3,
        "status_check_interval = \"100ms\"",
        "",
    )
    .replace(
        "interval = \"1h\"",
        "interval = \"1h\"\nalerts = [\"hook\", \"cmd\", \"log\"]",
    ) + &format!(
        r#"
[[alerts]]
name = "hook"
kind = "webhook"
url = "http://{hook_address}/alert"

[[alerts]]
name = "cmd"
kind = "command"
program = "sh"
args = ["-c", "echo \"$TURBOMON_NODE $TURBOMON_STATE\" > {marker}"]

[[alerts]]
name = "log"
kind = "log"
"#,
        marker = marker.display()
    );
    let (supervisor, _tx, _done) = start(parse(&text));
    let body = tokio::time::timeout(Duration::from_secs(10), bodies.recv())
        .await
        .expect("webhook called")
        .expect("body");
    assert_eq!(body["node"], "n1");
    assert_eq!(body["rule"], "sim");
    assert_eq!(body["state"], "broken");
    assert_eq!(body["engine"], "e1");
    eventually("command alert ran", Duration::from_secs(5), || {
        std::fs::read_to_string(&marker).is_ok_and(|s| s.trim() == "n1 broken")
    })
    .await;
    assert!(
        tokio::time::timeout(Duration::from_millis(300), bodies.recv())
            .await
            .is_err(),
        "only the broken rule alerts"
    );
    let counters = supervisor.shutdown().await;
    assert_eq!(counters[0].1.broken, 1);
    let _ = std::fs::remove_file(&marker);
}
