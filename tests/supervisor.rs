//! The supervisor against a recording mock engine: batches carry the right tasks, loops and
//! packets are measured right, turbo off bounds its connections, reloads apply to the next loop,
//! an engine that is down loses nothing, broken rules fire alerts.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{
    Extra, MockEngine, TempDir, TestCa, Validity, closed_address, eventually, node_names,
    one_engine_config, parse, planned_tasks, serve_http, serve_https, serve_mock, serve_mock_at,
    start_supervisor, take_completions, wire_bytes,
};
use tokio::sync::mpsc;
use turbomon::config::SupervisorConfig;
use turbomon::proto::TaskState;
use turbomon::transport::Dialer;
use turbomon::wire::batch::BatchIds;
use turbomon::wire::status::monitor_turbo;
use turbomon::wire::stream::{StatusStream, SubmitStream};
use turbomon::wire::submit::{LoopLimits, submit_turbo};

/// Engine `e1` at `address`, `nodes` nodes and one sim rule of 1 ms fired once an hour (so the
/// first firing, at start, is the only one in a test), with no splay.
fn config_text(address: impl std::fmt::Display, nodes: usize, top: &str) -> String {
    one_engine_config(
        address,
        &node_names(nodes),
        Extra {
            top,
            rule: "duration = \"1ms\"",
            ..Extra::default()
        },
    )
}

fn config(address: impl std::fmt::Display, nodes: usize, top: &str) -> SupervisorConfig {
    parse(&config_text(address, nodes, top))
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
    let (supervisor, _tx, _done) = start_supervisor(config(engine.address, 60, ""));
    mock.wait_submitted(60).await;
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
    let (supervisor, _tx, _done) = start_supervisor(config(engine.address, 61, ""));
    mock.wait_submitted(61).await;
    assert_eq!(batch_sizes(&mock.log().submit_batches), vec![30, 30, 1]);
    supervisor.shutdown().await;
}

#[tokio::test]
async fn status_batches_never_exceed_task_info_batch_size_and_cover_every_task() {
    let mock = MockEngine::with_states(|_| TaskState::Ok);
    let engine = serve_mock(mock.clone()).await;
    let (supervisor, _tx, mut done) = start_supervisor(config(
        engine.address,
        50,
        "task_info_batch_size = 7\nstatus_check_interval = \"100ms\"",
    ));
    let mut finished = std::collections::HashSet::new();
    for completion in take_completions(&mut done, 50, Duration::from_secs(10)).await {
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
    let (supervisor, _tx, mut done) = start_supervisor(config(
        engine.address,
        25,
        "turbo_monitoring = false\nmax_connections = 4\nstatus_check_interval = \"200ms\"",
    ));
    take_completions(&mut done, 25, Duration::from_secs(20)).await;
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
    let tasks = planned_tasks(&config("127.0.0.1:1", 300, ""));
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
    let text =
        config_text(engine.address, 40, "").replace("interval = \"1h\"", "interval = \"300ms\"");
    let (supervisor, tx, _done) = start_supervisor(parse(&text));
    eventually("first loop", Duration::from_secs(10), || {
        !mock.log().submit_batches.is_empty()
    })
    .await;
    let mut changed = parse(&text);
    changed.engines[0].task_submit_batch_size = Some(10.into());
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
    let address = closed_address().await;
    let (supervisor, _tx, mut done) =
        start_supervisor(config(address, 45, "status_check_interval = \"100ms\""));
    eventually("failed attempts recorded", Duration::from_secs(5), || {
        supervisor
            .with_stats("e1", |s| s.submission.failed_loops() > 0)
            .unwrap_or(false)
    })
    .await;
    let mock = MockEngine::new();
    let _engine = serve_mock_at(mock.clone(), address).await;
    // Tasks are delivered after the engine came up.
    let mut finished = std::collections::HashSet::new();
    for c in take_completions(&mut done, 45, Duration::from_secs(30)).await {
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
    let (body_tx, mut bodies) = mpsc::unbounded_channel::<serde_json::Value>();
    let hook_address = serve_http(move |request: hyper::Request<hyper::body::Incoming>| {
        let body_tx = body_tx.clone();
        async move {
            if let Ok(body) = request.into_body().collect().await
                && let Ok(v) = serde_json::from_slice(&body.to_bytes())
            {
                let _ = body_tx.send(v);
            }
            hyper::Response::new(http_body_util::Full::new(bytes::Bytes::new()))
        }
    })
    .await;
    let dir = TempDir::new("alert");
    let marker = dir.path().join("marker");
    let mock = MockEngine::with_states(|id| {
        if id.contains("/n1/") {
            TaskState::Broken
        } else {
            TaskState::Ok
        }
    });
    let engine = serve_mock(mock).await;
    let text = config_text(engine.address, 3, "status_check_interval = \"100ms\"").replace(
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
    let (supervisor, _tx, _done) = start_supervisor(parse(&text));
    let body = tokio::time::timeout(Duration::from_secs(10), bodies.recv())
        .await
        .expect("webhook called")
        .expect("body");
    assert_eq!(body["node"], "n1");
    assert_eq!(body["rule"], "sim");
    assert_eq!(body["state"], "critical");
    assert_eq!(body["kind"], "problem");
    assert_eq!(body["engine"], "e1");
    eventually("command alert ran", Duration::from_secs(5), || {
        std::fs::read_to_string(&marker).is_ok_and(|s| s.trim() == "n1 critical")
    })
    .await;
    assert!(
        tokio::time::timeout(Duration::from_millis(300), bodies.recv())
            .await
            .is_err(),
        "only the broken rule alerts, once"
    );
    let counters = supervisor.shutdown().await;
    assert_eq!((counters[0].1.broken, counters[0].1.alerts), (1, 1));
}

#[tokio::test]
async fn webhooks_post_over_https_with_their_ca_or_without_verification_when_asked() {
    use http_body_util::BodyExt;
    let dir = TempDir::new("https-hook");
    let ca = TestCa::new(dir.path(), "hooks");
    let leaf = ca.leaf("receiver", &["127.0.0.1"], Validity::Valid);
    // Records each POST's path and JSON body.
    let (body_tx, mut bodies) = mpsc::unbounded_channel::<(String, serde_json::Value)>();
    let receiver = serve_https(
        &leaf,
        move |request: hyper::Request<hyper::body::Incoming>| {
            let body_tx = body_tx.clone();
            async move {
                let path = request.uri().path().to_string();
                if let Ok(body) = request.into_body().collect().await
                    && let Ok(v) = serde_json::from_slice(&body.to_bytes())
                {
                    let _ = body_tx.send((path, v));
                }
                hyper::Response::new(http_body_util::Full::new(bytes::Bytes::new()))
            }
        },
    )
    .await;
    let engine = serve_mock(MockEngine::with_states(|_| TaskState::Broken)).await;
    let text = config_text(engine.address, 1, "status_check_interval = \"100ms\"").replace(
        "interval = \"1h\"",
        "interval = \"1h\"\nalerts = [\"verified\", \"unverified\", \"untrusted\"]",
    ) + &format!(
        r#"
[[alerts]]
name = "verified"
kind = "webhook"
url = "https://{receiver}/verified"
ca = "{ca}"

[[alerts]]
name = "unverified"
kind = "webhook"
url = "https://{receiver}/unverified"
insecure_skip_verify = true

# The system's roots do not know the test CA: refused, logged, never posted.
[[alerts]]
name = "untrusted"
kind = "webhook"
url = "https://{receiver}/untrusted"
"#,
        ca = ca.cert.display()
    );
    let (supervisor, _tx, _done) = start_supervisor(parse(&text));
    let mut received = Vec::new();
    for _ in 0..2 {
        let (path, body) = tokio::time::timeout(Duration::from_secs(10), bodies.recv())
            .await
            .expect("webhook called over https")
            .expect("body");
        assert_eq!(
            (body["node"].as_str(), body["state"].as_str()),
            (Some("n0"), Some("critical"))
        );
        received.push(path);
    }
    received.sort();
    assert_eq!(received, ["/unverified", "/verified"]);
    assert!(
        tokio::time::timeout(Duration::from_millis(500), bodies.recv())
            .await
            .is_err(),
        "the receiver the system's roots do not trust gets nothing"
    );
    supervisor.shutdown().await;
}

#[tokio::test]
async fn an_engine_named_by_host_name_gets_its_tasks() {
    let mock = MockEngine::new();
    let engine = serve_mock(mock.clone()).await;
    let by_name = format!("localhost:{}", engine.address.port());
    let (supervisor, _tx, mut done) =
        start_supervisor(config(&by_name, 3, "status_check_interval = \"100ms\""));
    let completions = take_completions(&mut done, 3, Duration::from_secs(10)).await;
    assert!(completions.iter().all(|c| c.state == TaskState::Ok));
    assert_eq!(mock.log().submit_batches.concat().len(), 3);
    supervisor.shutdown().await;
}

#[tokio::test]
async fn a_host_name_is_looked_up_again_at_every_connection() {
    // Nothing answers at first: the supervisor starts anyway, and the name is looked up again
    // on the reconnect that finds the engine.
    let address = closed_address().await;
    let by_name = format!("localhost:{}", address.port());
    let (supervisor, _tx, mut done) =
        start_supervisor(config(&by_name, 2, "status_check_interval = \"100ms\""));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mock = MockEngine::new();
    let _engine = serve_mock_at(mock.clone(), address).await;
    let completions = take_completions(&mut done, 2, Duration::from_secs(20)).await;
    assert!(completions.iter().all(|c| c.state == TaskState::Ok));
    supervisor.shutdown().await;
}

#[test]
fn a_dialer_refuses_an_address_without_a_port_and_accepts_a_host_name() {
    assert!(Dialer::new("engine1.example.net", None, 4 << 20).is_err());
    let dialer = Dialer::new("engine1.example.net:7300", None, 4 << 20).expect("a name is fine");
    assert_eq!(dialer.address(), "engine1.example.net:7300");
}
