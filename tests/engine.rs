//! The monitoring engine as a supervisor sees it: a real gRPC client over loopback.

mod common;

use std::time::{Duration, Instant};

use common::{
    RunningEngine, Stream, assert_tasks_add_up, batch, engine_config, ok_task, sim_task, state_of,
    status_of, status_stream, submit_stream,
};
use tonic::Code;
use tonic::transport::Channel;
use turbomon::config::EngineConfig;
use turbomon::engine::Engine;
use turbomon::proto::engine_client::EngineClient;
use turbomon::proto::{self, TaskState};

/// An engine with `config`, a client of it, and a submission stream open on it.
async fn start_with_submit(
    config: EngineConfig,
) -> (
    RunningEngine,
    EngineClient<Channel>,
    Stream<proto::SubmitBatch, proto::SubmitAck>,
) {
    let running = RunningEngine::start(config).await;
    let mut client = running.client().await;
    let submit = submit_stream(&mut client).await;
    (running, client, submit)
}

fn query(batch_id: u64, ids: &[String], release: &[String]) -> proto::StatusQuery {
    proto::StatusQuery {
        batch_id,
        task_ids: ids.to_vec(),
        release_ids: release.to_vec(),
    }
}

fn states(reply: &proto::StatusBatch) -> Vec<TaskState> {
    reply
        .statuses
        .iter()
        .map(|status| TaskState::try_from(status.state).unwrap())
        .collect()
}

fn ids(prefix: &str, count: usize) -> Vec<String> {
    (0..count).map(|i| format!("{prefix}-{i}")).collect()
}

/// Polls the status of `ids` until none is pending or running (at most 5 s).
async fn wait_finished(
    status: &mut Stream<proto::StatusQuery, proto::StatusBatch>,
    ids: &[String],
) -> proto::StatusBatch {
    for round in 0..250 {
        let reply = status.exchange(query(10_000 + round, ids, &[])).await;
        if states(&reply)
            .iter()
            .all(|s| !matches!(s, TaskState::Pending | TaskState::Running))
        {
            return reply;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("tasks still unfinished after 5 s");
}

#[tokio::test]
async fn a_batch_of_30_sim_tasks_is_acked_in_order_and_all_report_ok() {
    let (running, mut client, mut submit) = start_with_submit(engine_config()).await;
    let task_ids = ids("thirty", 30);
    let tasks = task_ids
        .iter()
        .enumerate()
        .map(|(i, id)| sim_task(id, (i as u64 % 3) * 20, TaskState::Ok, i as f64))
        .collect();

    let ack = submit.exchange(batch(7, tasks)).await;
    assert_eq!(ack.batch_id, 7);
    assert!(ack.error.is_none(), "{:?}", ack.error);
    let acked: Vec<&str> = ack.acks.iter().map(|a| a.task_id.as_str()).collect();
    assert_eq!(acked, task_ids);
    assert!(ack.acks.iter().all(|a| a.accepted && !a.duplicate));

    let mut status = status_stream(&mut client).await;
    let reply = wait_finished(&mut status, &task_ids).await;
    assert_eq!(states(&reply), vec![TaskState::Ok; 30]);
    for (i, status) in reply.statuses.iter().enumerate() {
        assert_eq!(status.task_id, task_ids[i]);
        assert_eq!(status.value, i as f64);
        assert_eq!(status.attempt, 1);
        assert!(status.started_unix_ms > 0 && status.finished_unix_ms >= status.started_unix_ms);
    }
    let counters = running.engine.counters();
    assert_eq!(counters.tasks_accepted, 30);
    assert_eq!(counters.checks_finished, 30);
}

#[tokio::test]
async fn a_task_id_sent_twice_is_acknowledged_again_but_runs_once() {
    let (running, mut client, mut submit) = start_with_submit(engine_config()).await;

    let ack = submit
        .exchange(batch(1, vec![ok_task("twice", 0), ok_task("twice", 0)]))
        .await;
    let error = ack.error.expect("a batch with an id twice is refused");
    assert_eq!(error.code, Code::InvalidArgument as i32);
    assert!(
        error.message.contains("`twice` appears twice in batch 1"),
        "{}",
        error.message
    );
    assert!(ack.acks.is_empty());
    assert_eq!(running.engine.counters().checks_started, 0, "nothing taken");

    let first = submit.exchange(batch(2, vec![ok_task("twice", 50)])).await;
    assert!(first.acks[0].accepted && !first.acks[0].duplicate);
    let again = submit
        .exchange(batch(3, vec![ok_task("twice", 50), ok_task("other", 0)]))
        .await;
    assert!(again.acks[0].accepted && again.acks[0].duplicate);
    assert!(again.acks[1].accepted && !again.acks[1].duplicate);

    let mut status = status_stream(&mut client).await;
    wait_finished(&mut status, &["twice".to_string()]).await;
    let after = submit.exchange(batch(4, vec![ok_task("twice", 0)])).await;
    assert!(
        after.acks[0].duplicate,
        "a finished, unreleased id is still held"
    );

    let counters = running.engine.counters();
    assert_eq!(counters.checks_started, 2, "`twice` and `other`, once each");
    assert_eq!(counters.duplicates, 2);
}

#[tokio::test]
async fn malformed_batches_are_refused_whole_and_the_stream_stays_open() {
    let (running, _client, mut submit) = start_with_submit(EngineConfig {
        max_batch_tasks: 10,
        ..engine_config()
    })
    .await;

    let mut tasks: Vec<_> = ids("e", 5).iter().map(|id| ok_task(id, 0)).collect();
    tasks[4].id.clear();
    let ack = submit.exchange(batch(1, tasks)).await;
    let error = ack.error.unwrap();
    assert_eq!(error.code, Code::InvalidArgument as i32);
    assert!(
        error.message.contains("index 4 has an empty id"),
        "{}",
        error.message
    );

    let tasks = ids("big", 11).iter().map(|id| ok_task(id, 0)).collect();
    let ack = submit.exchange(batch(2, tasks)).await;
    let error = ack.error.unwrap();
    assert_eq!(error.code, Code::InvalidArgument as i32);
    assert!(
        error
            .message
            .contains("batch of 11 tasks exceeds max_batch_tasks 10"),
        "{}",
        error.message
    );
    assert_eq!(running.engine.counters().tasks_accepted, 0);

    // The same stream goes on; a task with a bad check is rejected on its own.
    let mut bad = ok_task("bad-port", 0);
    bad.check = Some(proto::Check {
        kind: Some(proto::check::Kind::Tcp(proto::TcpCheck {
            host: "127.0.0.1".into(),
            port: 70_000,
            ..proto::TcpCheck::default()
        })),
    });
    let ack = submit
        .exchange(batch(
            3,
            vec![ok_task("fine", 0), bad, ok_task("fine-too", 0)],
        ))
        .await;
    assert_eq!(ack.batch_id, 3);
    assert!(ack.error.is_none());
    let verdicts: Vec<bool> = ack.acks.iter().map(|a| a.accepted).collect();
    assert_eq!(verdicts, [true, false, true]);
    assert!(
        ack.acks[1].reason.contains("port 70000"),
        "{}",
        ack.acks[1].reason
    );

    let counters = running.engine.counters();
    assert_eq!(counters.batches_refused, 2);
    assert_eq!(counters.tasks_accepted, 2);
    assert_tasks_add_up(&counters);
}

#[tokio::test]
async fn status_answers_every_id_in_order_with_unknown_for_ids_not_held() {
    let (_running, mut client, mut submit) = start_with_submit(engine_config()).await;
    submit
        .exchange(batch(
            1,
            vec![
                sim_task("broken", 0, TaskState::Broken, 9.0),
                ok_task("slow", 5_000),
            ],
        ))
        .await;
    let mut status = status_stream(&mut client).await;
    let asked = ["never-sent", "broken", "slow", "also-never"].map(String::from);
    let reply = status.exchange(query(42, &asked, &[])).await;
    assert_eq!(reply.batch_id, 42);
    assert_eq!(
        states(&reply),
        [
            TaskState::Unknown,
            TaskState::Broken,
            TaskState::Running,
            TaskState::Unknown
        ]
    );
    let answered: Vec<&str> = reply.statuses.iter().map(|s| s.task_id.as_str()).collect();
    assert_eq!(answered, asked);
    assert_eq!(reply.statuses[1].value, 9.0);
    assert!(reply.statuses[2].started_unix_ms > 0);
    assert_eq!(reply.statuses[2].finished_unix_ms, 0);

    // A malformed query is refused; the stream stays open.
    let refused = status
        .exchange(query(43, &["x".into(), String::new()], &[]))
        .await;
    assert_eq!(refused.error.unwrap().code, Code::InvalidArgument as i32);
    let again = status.exchange(query(44, &["broken".into()], &[])).await;
    assert_eq!(states(&again), [TaskState::Broken]);
}

#[tokio::test]
async fn released_results_are_forgotten_but_running_tasks_are_not() {
    let (running, mut client, mut submit) = start_with_submit(engine_config()).await;
    submit
        .exchange(batch(1, vec![ok_task("done", 0), ok_task("busy", 5_000)]))
        .await;
    let both = ["done".to_string(), "busy".to_string()];
    let mut status = status_stream(&mut client).await;

    let reply = status.exchange(query(1, &both, &both)).await;
    assert_eq!(
        states(&reply),
        [TaskState::Ok, TaskState::Running],
        "statuses are answered before the releases apply"
    );
    let reply = status.exchange(query(2, &both, &[])).await;
    assert_eq!(states(&reply), [TaskState::Unknown, TaskState::Running]);
    let counters = running.engine.counters();
    assert_eq!(counters.results_released, 1);
    assert_eq!(counters.tasks_held, 1);

    // Once released, the id may be submitted again as a new task.
    let ack = submit.exchange(batch(2, vec![ok_task("done", 0)])).await;
    assert!(ack.acks[0].accepted && !ack.acks[0].duplicate);
}

#[tokio::test]
async fn results_nobody_collects_are_dropped_after_result_retention() {
    let (running, mut client, mut submit) = start_with_submit(EngineConfig {
        result_retention: Duration::from_millis(200),
        ..engine_config()
    })
    .await;
    submit
        .exchange(batch(
            1,
            vec![ok_task("forgotten", 0), ok_task("busy", 3_000)],
        ))
        .await;
    let mut status = status_stream(&mut client).await;
    let both = ["forgotten".to_string(), "busy".to_string()];
    let reply = status.exchange(query(1, &both, &[])).await;
    assert_eq!(states(&reply), [TaskState::Ok, TaskState::Running]);

    let mut expired = 0;
    for _ in 0..100 {
        expired = running.engine.counters().results_expired;
        if expired > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(expired, 1);
    let reply = status.exchange(query(2, &both, &[])).await;
    assert_eq!(
        states(&reply),
        [TaskState::Unknown, TaskState::Running],
        "a running task is never dropped"
    );
}

#[tokio::test]
async fn a_full_engine_rejects_with_resource_exhausted_and_loses_nothing() {
    let (running, mut client, mut submit) = start_with_submit(EngineConfig {
        max_held_tasks: 5,
        ..engine_config()
    })
    .await;

    let first_ids = ids("fill", 8);
    let ack = submit
        .exchange(batch(
            1,
            first_ids.iter().map(|id| ok_task(id, 0)).collect(),
        ))
        .await;
    assert_eq!(ack.acks.len(), 8, "every task is answered");
    assert!(ack.acks[..5].iter().all(|a| a.accepted));
    for refused in &ack.acks[5..] {
        assert!(!refused.accepted);
        assert_eq!(
            refused.refusal,
            turbomon::proto::Refusal::EngineFull as i32,
            "{}",
            refused.reason
        );
        assert!(
            refused.reason.contains("max_held_tasks"),
            "{}",
            refused.reason
        );
    }

    let ack = submit
        .exchange(batch(2, vec![ok_task("late-1", 0), ok_task("late-2", 0)]))
        .await;
    let error = ack.error.expect("nothing fits: the batch is refused");
    assert_eq!(error.code, Code::ResourceExhausted as i32);

    // Collecting the results makes room again.
    let mut status = status_stream(&mut client).await;
    status.exchange(query(1, &[], &first_ids[..5])).await;
    let ack = submit
        .exchange(batch(3, vec![ok_task("late-1", 0), ok_task("late-2", 0)]))
        .await;
    assert!(ack.acks.iter().all(|a| a.accepted && !a.duplicate));

    let counters = running.engine.counters();
    assert_eq!(counters.tasks_accepted, 7);
    assert_eq!(counters.tasks_rejected, 5);
    assert_tasks_add_up(&counters);
}

#[tokio::test]
async fn running_checks_never_exceed_max_concurrent_checks() {
    let (running, mut client, mut submit) = start_with_submit(EngineConfig {
        max_concurrent_checks: 3,
        ..engine_config()
    })
    .await;
    let task_ids = ids("slot", 10);
    let started = Instant::now();
    let ack = submit
        .exchange(batch(
            1,
            task_ids.iter().map(|id| ok_task(id, 150)).collect(),
        ))
        .await;
    assert!(ack.acks.iter().all(|a| a.accepted));

    let mut status = status_stream(&mut client).await;
    let mut saw_pending = false;
    for round in 0..200 {
        let reply = status.exchange(query(round, &task_ids, &[])).await;
        let states = states(&reply);
        let running_now = states.iter().filter(|s| **s == TaskState::Running).count();
        assert!(running_now <= 3, "{running_now} running at once");
        saw_pending |= states.contains(&TaskState::Pending);
        if states.iter().all(|s| *s == TaskState::Ok) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(saw_pending, "the tasks beyond the limit waited as PENDING");
    assert!(
        started.elapsed() >= Duration::from_millis(4 * 150),
        "10 checks of 150 ms, 3 at a time, take 4 rounds"
    );
    let counters = running.engine.counters();
    assert_eq!(counters.checks_running_peak, 3);
    assert_eq!(counters.checks_finished, 10);
    assert_eq!(counters.checks_running, 0);
}

#[tokio::test]
async fn unary_submit_one_and_status_one_work_and_refuse_bad_tasks() {
    let running = RunningEngine::start(engine_config()).await;
    let mut client = running.client().await;

    let reply = client
        .submit_one(proto::SubmitOneRequest {
            task: Some(sim_task("one", 0, TaskState::Broken, 4.0)),
        })
        .await
        .unwrap()
        .into_inner();
    let ack = reply.ack.unwrap();
    assert!(ack.accepted && !ack.duplicate);
    let reply = client
        .submit_one(proto::SubmitOneRequest {
            task: Some(sim_task("one", 0, TaskState::Broken, 4.0)),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(reply.ack.unwrap().duplicate);

    let mut bad = ok_task("bad", 0);
    bad.check = Some(proto::Check {
        kind: Some(proto::check::Kind::Exec(proto::ExecCheck {
            program: String::new(),
            args: vec![],
        })),
    });
    let error = client
        .submit_one(proto::SubmitOneRequest { task: Some(bad) })
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument);
    assert!(
        error.message().contains("empty program"),
        "{}",
        error.message()
    );
    let error = client
        .submit_one(proto::SubmitOneRequest { task: None })
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument);

    let status = client
        .status_one(proto::StatusOneRequest {
            task_id: "one".into(),
            release_ids: vec!["one".into()],
        })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    assert_eq!(status.state, TaskState::Broken as i32);
    assert_eq!(status.value, 4.0);
    let status = client
        .status_one(proto::StatusOneRequest {
            task_id: "one".into(),
            release_ids: vec![],
        })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    assert_eq!(status.state, TaskState::Unknown as i32, "released");
    let error = client
        .status_one(proto::StatusOneRequest::default())
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn health_service_reports_the_engine_serving() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;

    let running = RunningEngine::start(engine_config()).await;
    let channel = Channel::from_shared(format!("http://{}", running.address))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel);
    for service in ["turbomon.v1.Engine", ""] {
        let reply = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            reply.status,
            ServingStatus::Serving as i32,
            "service {service:?}"
        );
    }
}

#[tokio::test]
async fn graceful_shutdown_lets_a_running_check_finish_and_refuses_new_tasks() {
    let running = RunningEngine::start(engine_config()).await;
    let address = running.address;
    let engine = running.engine.clone();
    let mut client = running.client().await;
    let mut submit = submit_stream(&mut client).await;
    submit.exchange(batch(1, vec![ok_task("last", 400)])).await;
    assert_eq!(engine.counters().checks_running, 1);

    let stop_requested = Instant::now();
    let mut running = running;
    running.request_shutdown();
    // While draining, the open stream still answers, refusing new tasks.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let ack = submit
        .exchange(batch(2, vec![ok_task("too-late", 0)]))
        .await;
    assert_eq!(ack.error.unwrap().code, Code::Unavailable as i32);

    running.shutdown().await.unwrap();
    assert!(
        stop_requested.elapsed() >= Duration::from_millis(300),
        "serve waited for the running check"
    );
    let counters = engine.counters();
    assert_eq!(counters.checks_finished, 1);
    assert_eq!(counters.tasks_accepted, 1);
    assert!(
        tokio::net::TcpStream::connect(address).await.is_err(),
        "the listener is closed"
    );
}

#[tokio::test]
async fn a_message_over_max_message_bytes_ends_only_its_own_stream() {
    let (running, mut client, mut submit) = start_with_submit(EngineConfig {
        max_message_bytes: 16 * 1024,
        ..engine_config()
    })
    .await;
    let mut huge = ok_task("huge", 0);
    huge.node = "x".repeat(64 * 1024);
    submit.requests.send(batch(1, vec![huge])).await.unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(10), submit.responses.message())
        .await
        .unwrap();
    let error = answer.expect_err("the oversized message is refused");
    assert_eq!(error.code(), Code::OutOfRange, "{error}");

    let mut fresh = submit_stream(&mut client).await;
    let ack = fresh.exchange(batch(2, vec![ok_task("small", 0)])).await;
    assert!(ack.acks[0].accepted);
    assert_eq!(running.engine.counters().tasks_received, 1);
}

#[test]
fn shipped_engine_config_parses_to_the_defaults_with_the_plugins_allowed() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/engine.toml"))
        .unwrap();
    let parsed: EngineConfig = toml::from_str(&text).unwrap();
    // Every key shows its default, except the allow-list (empty by default), which shows the
    // Monitoring Plugins and `test` (the shipped supervisor's exec rule).
    assert_eq!(
        parsed.exec.allow,
        vec!["/usr/lib/nagios/plugins/*", "/usr/bin/test"]
    );
    let defaults = EngineConfig::default();
    assert!(defaults.exec.allow.is_empty());
    assert_eq!(
        EngineConfig {
            exec: defaults.exec.clone(),
            ..parsed
        },
        defaults
    );
}

// === attempts ===

fn attempt_of(task: proto::Task, attempt: u32) -> proto::Task {
    proto::Task { attempt, ..task }
}

#[tokio::test(start_paused = true)]
async fn a_higher_attempt_replaces_a_finished_result_and_runs_as_a_retry() {
    let engine = Engine::new(engine_config());
    let first = engine.submit_batch(batch(
        1,
        vec![sim_task("flaky", 10, TaskState::Failed, 0.0)],
    ));
    assert!(first.acks[0].accepted);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let status = status_of(&engine, "flaky");
    assert_eq!(status.state, TaskState::Failed as i32);
    assert_eq!(status.attempt, 1);

    let retry = engine.submit_batch(batch(
        2,
        vec![attempt_of(sim_task("flaky", 10, TaskState::Ok, 5.0), 2)],
    ));
    assert!(retry.acks[0].accepted && !retry.acks[0].duplicate);
    let status = status_of(&engine, "flaky");
    assert_eq!(status.state, TaskState::Running as i32);
    assert_eq!(status.attempt, 2, "status reports the attempt held");
    tokio::time::sleep(Duration::from_millis(20)).await;
    let status = status_of(&engine, "flaky");
    assert_eq!(status.state, TaskState::Ok as i32);
    assert_eq!((status.attempt, status.value), (2, 5.0));

    let counters = engine.counters();
    assert_eq!(counters.checks_started, 2);
    assert_eq!(counters.retries_accepted, 1);
    assert_eq!(counters.duplicates, 0, "a retry is not a duplicate");
    assert_eq!(counters.tasks_held, 1);
}

#[tokio::test(start_paused = true)]
async fn the_same_or_a_lower_attempt_is_acknowledged_as_a_duplicate_and_not_run() {
    let engine = Engine::new(engine_config());
    engine.submit_batch(batch(
        1,
        vec![attempt_of(sim_task("t", 0, TaskState::Broken, 1.0), 2)],
    ));
    for (batch_id, attempt) in [(2, 2), (3, 1)] {
        let ack = engine.submit_batch(batch(
            batch_id,
            vec![attempt_of(sim_task("t", 0, TaskState::Ok, 9.0), attempt)],
        ));
        assert!(
            ack.acks[0].accepted && ack.acks[0].duplicate,
            "attempt {attempt}"
        );
    }
    let reply = engine.submit_one(attempt_of(ok_task("t", 0), 1)).unwrap();
    assert!(reply.duplicate);
    let status = status_of(&engine, "t");
    assert_eq!(status.state, TaskState::Broken as i32, "never re-run");
    assert_eq!(status.attempt, 2);
    let counters = engine.counters();
    assert_eq!(counters.checks_started, 1);
    assert_eq!(counters.duplicates, 3);
    assert_eq!(counters.retries_accepted, 0);
}

#[tokio::test(start_paused = true)]
async fn a_higher_attempt_while_the_held_one_still_runs_is_refused_for_later() {
    let engine = Engine::new(EngineConfig {
        max_concurrent_checks: 1,
        ..engine_config()
    });
    engine.submit_batch(batch(
        1,
        vec![ok_task("running", 1_000), ok_task("waiting", 1_000)],
    ));
    assert_eq!(state_of(&engine, "waiting"), TaskState::Pending);

    let ack = engine.submit_batch(batch(
        2,
        vec![
            attempt_of(ok_task("running", 0), 2),
            attempt_of(ok_task("waiting", 0), 3),
        ],
    ));
    assert!(ack.error.is_none());
    for (task_ack, held) in ack.acks.iter().zip([1, 1]) {
        assert!(!task_ack.accepted && !task_ack.duplicate, "{task_ack:?}");
        assert!(
            task_ack
                .reason
                .starts_with(&format!("attempt {held} still running")),
            "{}",
            task_ack.reason
        );
    }
    let error = engine
        .submit_one(attempt_of(ok_task("running", 0), 2))
        .unwrap_err();
    assert_eq!(error.code(), Code::Unavailable);
    assert!(error.message().contains("attempt 1 still running"));
    assert_eq!(status_of(&engine, "running").attempt, 1);
    assert_eq!(engine.counters().retries_busy, 3);

    // Once the first attempt is final, the retry is taken.
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    assert_eq!(state_of(&engine, "waiting"), TaskState::Ok);
    let ack = engine.submit_batch(batch(3, vec![attempt_of(ok_task("waiting", 0), 3)]));
    assert!(ack.acks[0].accepted && !ack.acks[0].duplicate);
    assert_eq!(status_of(&engine, "waiting").attempt, 3);
    let counters = engine.counters();
    assert_tasks_add_up(&counters);
}

// === push completions ===

fn completions_request(flush_window_ms: u64, max_batch: u32) -> proto::CompletionsRequest {
    proto::CompletionsRequest {
        flush_window_ms,
        max_batch,
    }
}

async fn next_batch(stream: &mut turbomon::engine::CompletionStream) -> proto::CompletionBatch {
    use tokio_stream::StreamExt;
    tokio::time::timeout(Duration::from_secs(30), stream.next())
        .await
        .expect("a completion batch in time")
        .expect("stream open")
        .expect("no error")
}

fn batch_ids(batch: &proto::CompletionBatch) -> Vec<&str> {
    batch.statuses.iter().map(|s| s.task_id.as_str()).collect()
}

#[tokio::test(start_paused = true)]
async fn waiting_checks_run_high_priority_first_then_normal_then_low() {
    let engine = Engine::new(EngineConfig {
        max_concurrent_checks: 1,
        ..engine_config()
    });
    let mut completions = engine
        .subscribe_completions(&completions_request(1, 1))
        .unwrap();
    let with_priority = |id: &str, priority: proto::Priority| proto::Task {
        priority: priority as i32,
        ..ok_task(id, 10)
    };
    use proto::Priority::{High, Low, Normal};
    engine.submit_batch(batch(
        1,
        vec![
            with_priority("busy", Low),
            with_priority("low-1", Low),
            with_priority("normal-1", Normal),
            with_priority("high-1", High),
            with_priority("low-2", Low),
            with_priority("high-2", High),
            with_priority("normal-2", Normal),
        ],
    ));
    let mut order = Vec::new();
    for _ in 0..7 {
        let batch = next_batch(&mut completions).await;
        order.extend(batch_ids(&batch).into_iter().map(String::from));
    }
    assert_eq!(
        order,
        [
            "busy", "high-1", "high-2", "normal-1", "normal-2", "low-1", "low-2"
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn completions_finishing_together_arrive_in_one_batch_within_the_flush_window() {
    let engine = Engine::new(engine_config());
    let mut completions = engine
        .subscribe_completions(&completions_request(20, 0))
        .unwrap();
    let five = ids("together", 5);
    let submitted_at = tokio::time::Instant::now();
    engine.submit_batch(batch(1, five.iter().map(|id| ok_task(id, 100)).collect()));

    let first = next_batch(&mut completions).await;
    assert_eq!(first.batch_id, 1);
    let mut got = batch_ids(&first);
    got.sort_unstable();
    assert_eq!(got, five);
    assert!(
        first
            .statuses
            .iter()
            .all(|s| s.state == TaskState::Ok as i32)
    );
    let waited = submitted_at.elapsed();
    assert!(
        waited >= Duration::from_millis(100) && waited <= Duration::from_millis(100 + 20 + 1),
        "sent at most one flush window after the checks ended: {waited:?}"
    );

    engine.submit_batch(batch(2, vec![ok_task("later", 50)]));
    let second = next_batch(&mut completions).await;
    assert_eq!(second.batch_id, 2, "batch ids increase");
    assert_eq!(batch_ids(&second), ["later"]);
}

#[tokio::test(start_paused = true)]
async fn max_batch_caps_the_statuses_per_completion_batch() {
    let engine = Engine::new(engine_config());
    let mut completions = engine
        .subscribe_completions(&completions_request(50, 4))
        .unwrap();
    engine.submit_batch(batch(
        1,
        ids("cap", 10).iter().map(|id| ok_task(id, 0)).collect(),
    ));
    let sizes = [
        next_batch(&mut completions).await.statuses.len(),
        next_batch(&mut completions).await.statuses.len(),
        next_batch(&mut completions).await.statuses.len(),
    ];
    assert_eq!(sizes, [4, 4, 2]);
}

#[tokio::test(start_paused = true)]
async fn no_notice_comes_for_tasks_finished_before_subscribing_and_each_subscriber_gets_all() {
    let engine = Engine::new(engine_config());
    engine.submit_batch(batch(1, vec![ok_task("before", 0), ok_task("slow", 30)]));
    let mut first = engine
        .subscribe_completions(&completions_request(5, 0))
        .unwrap();
    let mut second = engine
        .subscribe_completions(&completions_request(5, 0))
        .unwrap();
    engine.submit_batch(batch(2, vec![ok_task("after", 0)]));

    for stream in [&mut first, &mut second] {
        let mut seen = Vec::new();
        while seen.len() < 2 {
            let batch = next_batch(stream).await;
            seen.extend(batch_ids(&batch).into_iter().map(String::from));
        }
        seen.sort_unstable();
        assert_eq!(seen, ["after", "slow"], "not `before`");
    }
    let counters = engine.counters();
    assert_eq!(counters.completion_subscribers, 2);
    assert_eq!(counters.completion_notices_queued, 4);
    assert_eq!(counters.completion_notices_dropped, 0);
    // Results stay held until released, notice or not.
    assert_eq!(state_of(&engine, "after"), TaskState::Ok);
}

#[tokio::test(start_paused = true)]
async fn a_subscriber_that_never_reads_loses_notices_but_never_slows_the_checks() {
    let engine = Engine::new(EngineConfig {
        completion_buffer_notices: 8,
        ..engine_config()
    });
    let stalled = engine
        .subscribe_completions(&completions_request(1, 1))
        .unwrap();
    let task_ids = ids("flood", 500);
    for (i, chunk) in task_ids.chunks(100).enumerate() {
        engine.submit_batch(batch(
            i as u64,
            chunk.iter().map(|id| ok_task(id, 0)).collect(),
        ));
        tokio::task::yield_now().await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let counters = engine.counters();
    assert_eq!(counters.checks_finished, 500, "every check ran");
    assert!(counters.completion_notices_dropped > 0, "{counters:?}");
    assert_eq!(
        counters.completion_notices_queued + counters.completion_notices_dropped,
        500
    );
    drop(stalled);
    // A subscriber that went away is forgotten at the next completion.
    engine.submit_batch(batch(99, vec![ok_task("after-drop", 0)]));
    tokio::time::sleep(Duration::from_millis(10)).await;
    engine.submit_batch(batch(100, vec![ok_task("after-drop-2", 0)]));
    assert_eq!(engine.counters().completion_subscribers, 0);
}

#[tokio::test]
async fn a_grpc_subscriber_sees_a_completion_within_the_flush_window() {
    let running = RunningEngine::start(engine_config()).await;
    let mut client = running.client().await;
    let mut completions = client
        .completions(completions_request(5, 0))
        .await
        .unwrap()
        .into_inner();
    let mut submit = submit_stream(&mut client).await;
    submit
        .exchange(batch(
            1,
            vec![sim_task("pushed", 50, TaskState::Broken, 2.0)],
        ))
        .await;
    let batch = tokio::time::timeout(Duration::from_secs(10), completions.message())
        .await
        .expect("a completion in time")
        .unwrap()
        .expect("stream open");
    let received_unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    assert_eq!(batch.batch_id, 1);
    assert_eq!(batch_ids(&batch), ["pushed"]);
    let status = &batch.statuses[0];
    assert_eq!(status.state, TaskState::Broken as i32);
    assert_eq!(status.value, 2.0);
    let latency_ms = received_unix_ms - status.finished_unix_ms;
    assert!(
        latency_ms < 1_000,
        "pushed {latency_ms} ms after the check ended (flush window 5 ms; generous bound)"
    );

    let error = client
        .completions(completions_request(3_600_000, 0))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument);

    // The stream ends when the engine shuts down.
    running.shutdown().await.unwrap();
    let end = tokio::time::timeout(Duration::from_secs(10), completions.message())
        .await
        .expect("stream ends");
    assert!(matches!(end, Ok(None) | Err(_)), "{end:?}");
}
