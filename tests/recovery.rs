//! How the supervisor gets back to normal: tasks return to a failed-over engine as soon as it
//! answers again, and a message size cap small enough to refuse some replies still lets every
//! result be collected (or fails the one that can never fit, once, with the reason).

mod common;

use std::time::{Duration, Instant};

use common::{
    Extra, MockEngine, closed_address, failover_config, one_engine_config, parse, serve_mock,
    serve_mock_on, start_supervisor, take_completions,
};
use turbomon::proto::TaskState;
use turbomon::supervisor::Completion;

#[tokio::test]
async fn tasks_return_to_a_restarted_primary_within_two_probe_periods() {
    // The primary's port is reserved but closed for a few seconds: long enough for the reconnect
    // backoff to grow well past a second.
    let primary_address = closed_address().await;
    let backup_mock = MockEngine::new();
    let backup = serve_mock(backup_mock.clone()).await;
    let text = failover_config(primary_address, backup.address, "200ms");
    let (supervisor, _reload, _completions) = start_supervisor(parse(&text));
    common::eventually("the backup takes over", Duration::from_secs(10), || {
        !backup_mock.log().submit_batches.is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(8)).await;

    let primary_mock = MockEngine::new();
    let listener = tokio::net::TcpListener::bind(primary_address)
        .await
        .expect("rebind");
    let _primary = serve_mock_on(primary_mock.clone(), listener).await;
    let back = Instant::now();
    common::eventually(
        "tasks return to the primary",
        Duration::from_secs(30),
        || !primary_mock.log().submit_batches.is_empty(),
    )
    .await;
    let took = back.elapsed();
    let counters = supervisor.shutdown().await;
    let primary = counters.iter().find(|(n, _)| n == "primary").unwrap().1;
    assert_eq!(primary.failbacks, 1);
    // The prober asks every second, whatever the submission backoff has grown to.
    assert!(
        took < Duration::from_millis(2500),
        "tasks returned {took:?} after the primary answered"
    );
}

/// A supervisor with a 1000-byte message cap in front of a real engine, running `nodes` sim
/// tasks plus, optionally, one exec task whose output is larger than the cap.
async fn small_cap_run(nodes: usize, with_large_output: bool) -> (Vec<Completion>, u64) {
    let engine = common::RunningEngine::start(turbomon::config::EngineConfig {
        exec: turbomon::config::ExecConfig {
            allow: vec!["/bin/sh".into()],
        },
        ..common::engine_config()
    })
    .await;
    let names: Vec<String> = (0..nodes)
        .map(|i| format!("node-with-a-longish-name-{i:03}"))
        .collect();
    let large = if with_large_output {
        r#"
[[rules]]
name = "chatty"
kind = "exec"
program = "/bin/sh"
args = ["-c", "head -c 3000 /dev/zero | tr '\\0' x"]
[[relators]]
name = "talk"
group = "g"
rules = ["chatty"]
interval = "1h"
randomize = 0
"#
    } else {
        ""
    };
    let text = one_engine_config(
        engine.address,
        &names,
        Extra {
            top: "status_check_interval = \"100ms\"\nmax_message_bytes = 1000",
            ..Extra::default()
        },
    ) + large;
    let expected = nodes * if with_large_output { 2 } else { 1 };
    let (supervisor, _reload, mut done) = start_supervisor(parse(&text));
    let completions = take_completions(&mut done, expected, Duration::from_secs(20)).await;
    let counters = supervisor.shutdown().await[0].1;
    engine.stop().await;
    (completions, counters.failed_unreadable)
}

#[tokio::test]
async fn results_are_collected_when_the_message_cap_is_smaller_than_a_full_status_batch() {
    // 15 statuses of ~100 bytes make a 1.5 KB reply: over the cap unless queries are sized.
    let (completions, unreadable) = small_cap_run(15, false).await;
    assert_eq!(unreadable, 0);
    assert!(
        completions.iter().all(|c| c.state == TaskState::Ok),
        "{completions:?}"
    );
    let ids: std::collections::HashSet<_> = completions.iter().map(|c| &c.task_id).collect();
    assert_eq!(ids.len(), 15, "every task once");
}

#[tokio::test]
async fn a_result_too_large_for_the_message_cap_fails_its_task_once_and_the_rest_are_collected() {
    let (completions, unreadable) = small_cap_run(3, true).await;
    let failed: Vec<&Completion> = completions
        .iter()
        .filter(|c| c.state == TaskState::Failed)
        .collect();
    assert_eq!(
        failed.len(),
        3,
        "the chatty check on each node: {completions:?}"
    );
    assert!(
        failed
            .iter()
            .all(|c| c.message.contains("max_message_bytes")),
        "{failed:?}"
    );
    assert_eq!(unreadable, 3);
    assert_eq!(
        completions
            .iter()
            .filter(|c| c.state == TaskState::Ok)
            .count(),
        3
    );
}
