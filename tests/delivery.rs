//! Delivery that loses nothing (issue 5): batches split by their encoded size, unanswered
//! batches split in half over a link that drops large packets, down to single tasks, and a task
//! that cannot pass even alone reported failed rather than dropped.

mod common;

use std::time::Duration;

use common::{
    Extra, MockEngine, closed_address, eventually, failover_config, one_engine_config, parse,
    parse_unvalidated, planned_tasks, serve_engine, serve_mock, serve_mock_at, start_supervisor,
    start_supervisor_with, take_completions,
};
use turbomon::proto::TaskState;
use turbomon::supervisor::{Completion, SupervisorOptions};
use turbomon::transport::Dialer;
use turbomon::wire::batch::BatchIds;
use turbomon::wire::stream::SubmitStream;
use turbomon::wire::submit::{Delivery, LoopLimits, submit_turbo};

/// The tasks of one sim rule on `n` nodes, each named `n{i}-` and `node_len` more characters.
fn tasks(n: usize, node_len: usize) -> Vec<turbomon::proto::Task> {
    let nodes: Vec<String> = (0..n)
        .map(|i| format!("n{i}-{}", "x".repeat(node_len)))
        .collect();
    planned_tasks(&parse(&one_engine_config(
        "127.0.0.1:1",
        &nodes,
        Extra::default(),
    )))
}

#[tokio::test]
async fn batches_over_the_message_cap_are_split_by_encoded_size() {
    let mock = MockEngine::new();
    let engine = serve_mock(mock.clone()).await;
    let dialer = Dialer::new(&engine.address.to_string(), None, 4 << 20).expect("dialer");
    let client = dialer.connect().await.expect("connect");
    let stream = SubmitStream::open(&client).await.expect("stream");
    let mut tasks = tasks(30, 20);
    // One task far over the cap on its own.
    tasks[7].node = "y".repeat(5000);
    let cap = 1200;
    let outcome = submit_turbo(
        &stream,
        tasks,
        LoopLimits {
            batch_size: 30,
            in_flight: 8,
            reply_timeout: Duration::from_secs(10),
            max_message_bytes: cap,
        },
        &BatchIds::default(),
    )
    .await;
    assert!(outcome.size_splits > 0);
    let rejected: Vec<_> = outcome
        .deliveries
        .iter()
        .filter_map(|(t, d)| match d {
            Delivery::Rejected { reason } => Some((t.node.len(), reason.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0].0, 5000);
    assert!(rejected[0].1.contains("1200-byte"), "{}", rejected[0].1);
    let accepted = outcome
        .deliveries
        .iter()
        .filter(|(_, d)| matches!(d, Delivery::Accepted { .. }))
        .count();
    assert_eq!(accepted, 29, "every other task delivered");
    // What crossed: no request over the cap, measured independently by the engine side.
    let log = mock.log();
    assert_eq!(log.submit_batches.concat().len(), 29);
    assert!(
        log.submit_batches.len() > 1,
        "the 29 tasks did not fit one message"
    );
    for bytes in &log.submit_request_bytes {
        assert!(
            *bytes <= cap as u64,
            "a {bytes}-byte request crossed a {cap}-byte cap"
        );
    }
}

/// An engine behind a link profile that stalls any connection carrying a burst over
/// `blackhole_bytes` (a path-MTU black hole).
async fn black_hole_run(
    nodes: usize,
    huge_node: bool,
    blackhole_bytes: usize,
) -> (Vec<Completion>, turbomon::supervisor::CountersSnapshot) {
    let engine = serve_engine().await;
    let mut node_names: Vec<String> = (0..nodes).map(|i| format!("node-{i:03}")).collect();
    if huge_node {
        node_names[0] = "h".repeat(3000);
    }
    let config = parse_unvalidated(&one_engine_config(
        engine.address,
        &node_names,
        Extra {
            top: "status_check_interval = \"50ms\"\nbatch_timeout = \"400ms\"",
            engine: "link = \"holey\"",
            ..Extra::default()
        },
    ));
    let holey = turbomon::link::LinkProfile {
        latency: Duration::from_millis(1),
        blackhole_bytes: Some(blackhole_bytes),
        ..turbomon::link::profile("lan").expect("lan profile")
    };
    let (supervisor, _tx, mut done) = start_supervisor_with(
        config,
        SupervisorOptions {
            link_profiles: [("holey".to_string(), holey)].into_iter().collect(),
            ..SupervisorOptions::default()
        },
    );
    // Every task reaches an outcome.
    let completions = take_completions(&mut done, nodes, Duration::from_secs(30)).await;
    let counters = supervisor.shutdown().await[0].1;
    engine.stop().await;
    (completions, counters)
}

#[tokio::test]
async fn monitoring_continues_with_smaller_batches_over_a_black_hole() {
    let (completions, counters) = black_hole_run(30, false, 1500).await;
    assert!(completions.iter().all(|c| c.state == TaskState::Ok));
    let ids: std::collections::HashSet<_> = completions.iter().map(|c| &c.task_id).collect();
    assert_eq!(ids.len(), 30, "every task once");
    assert!(counters.splits >= 1, "{counters:?}");
    assert_eq!(counters.failed_unanswered, 0);
}

#[tokio::test]
async fn a_task_that_cannot_pass_even_alone_is_reported_failed() {
    let (completions, counters) = black_hole_run(6, true, 1500).await;
    let failed: Vec<_> = completions
        .iter()
        .filter(|c| c.state == TaskState::Failed)
        .collect();
    assert_eq!(failed.len(), 1, "{completions:?}");
    assert!(
        failed[0].message.contains("even when sent alone"),
        "{}",
        failed[0].message
    );
    assert_eq!(counters.failed_unanswered, 1);
    assert_eq!(
        completions
            .iter()
            .filter(|c| c.state == TaskState::Ok)
            .count(),
        5
    );
}

#[tokio::test]
async fn tasks_fail_over_to_the_backup_and_return_without_running_on_both() {
    // The primary's port is reserved but closed until later.
    let primary_address = closed_address().await;
    let backup_mock = MockEngine::new();
    let backup = serve_mock(backup_mock.clone()).await;
    let text = failover_config(primary_address, backup.address, "300ms");
    let (supervisor, _tx, _done) = start_supervisor(parse(&text));
    eventually(
        "the backup runs the primary's tasks",
        Duration::from_secs(10),
        || backup_mock.log().submit_batches.concat().len() >= 6,
    )
    .await;
    assert_eq!(supervisor.counters("primary").unwrap().failovers, 1);
    let primary_mock = MockEngine::new();
    let _primary = serve_mock_at(primary_mock.clone(), primary_address).await;
    eventually(
        "tasks return to the primary",
        Duration::from_secs(10),
        || primary_mock.log().submit_batches.concat().len() >= 6,
    )
    .await;
    let counters = supervisor.shutdown().await;
    let primary = counters.iter().find(|(n, _)| n == "primary").unwrap().1;
    assert_eq!(primary.failbacks, 1);
    let on_primary: std::collections::HashSet<String> = primary_mock
        .log()
        .submit_batches
        .concat()
        .into_iter()
        .collect();
    let on_backup: std::collections::HashSet<String> = backup_mock
        .log()
        .submit_batches
        .concat()
        .into_iter()
        .collect();
    assert!(
        on_primary.is_disjoint(&on_backup),
        "no task is sent to both: {:?}",
        on_primary.intersection(&on_backup).collect::<Vec<_>>()
    );
}
