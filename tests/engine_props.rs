//! Property tests of the engine's request validation: arbitrary submission batches, status
//! queries and unary calls (huge and empty strings, huge batches, random enums, missing checks)
//! never panic, every task is answered (an ack each, or a batch error), and every refusal carries
//! a precise code: INVALID_ARGUMENT, RESOURCE_EXHAUSTED or UNAVAILABLE.
//!
//! Checks that would reach the network are kept on loopback: tcp and http targets are loopback
//! addresses or strings that fail validation, exec programs do not exist.

mod common;

use std::time::Duration;

use common::{assert_tasks_add_up, engine_config};
use proptest::prelude::*;
use tonic::Code;
use turbomon::config::EngineConfig;
use turbomon::engine::Engine;
use turbomon::proto::{self, TaskState};

/// Largest batch the engine under test accepts.
const MAX_BATCH_TASKS: usize = 40;

fn engine() -> Engine {
    Engine::new(EngineConfig {
        max_batch_tasks: MAX_BATCH_TASKS,
        max_held_tasks: 60,
        max_concurrent_checks: 4,
        result_retention: Duration::from_secs(60),
        ..engine_config()
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Short strings of any characters, empty ones, and now and then a huge one.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => ".{0,12}",
        2 => Just(String::new()),
        1 => (1usize..200_000).prop_map(|n| "é".repeat(n)),
    ]
}

/// Task ids drawn from a small set (so duplicates happen), any string, or empty.
fn task_id() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => (0u8..20).prop_map(|n| format!("task-{n}")),
        2 => text(),
        1 => Just(String::new()),
    ]
}

fn any_state() -> impl Strategy<Value = i32> {
    prop_oneof![0i32..10, any::<i32>()]
}

/// Any check, valid or not, that cannot leave the machine when run.
fn check() -> impl Strategy<Value = Option<proto::Check>> {
    use proto::check::Kind;
    let kind = prop_oneof![
        (
            prop_oneof![
                Just("127.0.0.1".to_string()),
                Just("[::1]".to_string()),
                Just(String::new()),
                // Never a resolvable name: always has a character no host name has.
                text().prop_map(|t| format!("{t} ?")),
            ],
            any::<u32>(),
        )
            .prop_map(|(host, port)| Kind::Tcp(proto::TcpCheck {
                host,
                port,
                ..proto::TcpCheck::default()
            })),
        (
            prop_oneof![
                Just(String::new()),
                text().prop_map(|t| format!("/nonexistent/turbomon/{t}")),
            ],
            prop::collection::vec(text(), 0..4),
        )
            .prop_map(|(program, args)| Kind::Exec(proto::ExecCheck { program, args })),
        (
            prop_oneof![
                text().prop_map(|t| format!("http://127.0.0.1:1/{t}")),
                text().prop_map(|t| format!("https://127.0.0.1/{t}")),
                // Never a valid http URL with a host.
                text().prop_map(|t| format!("x{t}")),
                Just(String::new()),
            ],
            any::<u32>(),
        )
            .prop_map(|(url, expect_status)| Kind::Http(proto::HttpCheck {
                url,
                expect_status,
                ..proto::HttpCheck::default()
            })),
        (
            prop_oneof![Just(0u64), 0u64..50, any::<u64>()],
            any_state(),
            any::<f64>()
        )
            .prop_map(|(duration_ms, outcome, value)| Kind::Sim(proto::SimCheck {
                duration_ms,
                outcome,
                value,
            })),
    ];
    prop_oneof![
        8 => kind.prop_map(|kind| Some(proto::Check { kind: Some(kind) })),
        1 => Just(Some(proto::Check { kind: None })),
        1 => Just(None),
    ]
}

fn task() -> impl Strategy<Value = proto::Task> {
    (
        task_id(),
        text(),
        text(),
        (
            any::<i64>(),
            prop_oneof![0u32..4, any::<u32>()],
            prop_oneof![Just(0u64), 1u64..100, any::<u64>()],
        ),
        check(),
        prop_oneof![0i32..3, any::<i32>()],
        prop_oneof![Just(String::new()), text()],
    )
        .prop_map(
            |(
                id,
                relator,
                node,
                (scheduled_unix_ms, attempt, timeout_ms),
                check,
                priority,
                supervisor_id,
            )| {
                proto::Task {
                    id,
                    relator,
                    rule: "rule".into(),
                    node,
                    scheduled_unix_ms,
                    attempt,
                    timeout_ms,
                    check,
                    priority,
                    supervisor_id,
                    assignment_epoch: 0,
                }
            },
        )
}

/// Batches of every size from empty to over the limit, and now and then a huge one.
fn submit_batch() -> impl Strategy<Value = proto::SubmitBatch> {
    let tasks = prop_oneof![
        8 => prop::collection::vec(task(), 0..MAX_BATCH_TASKS + 5),
        1 => (MAX_BATCH_TASKS..20_000).prop_map(|n| {
            (0..n)
                .map(|i| proto::Task {
                    id: format!("bulk-{i}"),
                    ..Default::default()
                })
                .collect()
        }),
    ];
    (any::<u64>(), tasks).prop_map(|(batch_id, tasks)| proto::SubmitBatch { batch_id, tasks })
}

fn id_list() -> impl Strategy<Value = Vec<String>> {
    prop_oneof![
        8 => prop::collection::vec(task_id(), 0..MAX_BATCH_TASKS + 5),
        1 => (MAX_BATCH_TASKS..20_000).prop_map(|n| (0..n).map(|i| format!("q-{i}")).collect()),
    ]
}

fn status_query() -> impl Strategy<Value = proto::StatusQuery> {
    (any::<u64>(), id_list(), id_list()).prop_map(|(batch_id, task_ids, release_ids)| {
        proto::StatusQuery {
            batch_id,
            task_ids,
            release_ids,
        }
    })
}

const BATCH_ERROR_CODES: [i32; 3] = [
    Code::InvalidArgument as i32,
    Code::ResourceExhausted as i32,
    Code::Unavailable as i32,
];

fn assert_counters_add_up(engine: &Engine) {
    let counters = engine.counters();
    assert_tasks_add_up(&counters);
    assert!(counters.tasks_held <= 60, "never over max_held_tasks");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(48), ..ProptestConfig::default() })]

    #[test]
    fn every_submitted_task_gets_an_ack_or_its_batch_a_precise_error(
        batches in prop::collection::vec(submit_batch(), 1..4)
    ) {
        runtime().block_on(async {
            let engine = engine();
            for batch in batches {
                let batch_id = batch.batch_id;
                let ids: Vec<String> = batch.tasks.iter().map(|t| t.id.clone()).collect();
                let ack = engine.submit_batch(batch);
                assert_eq!(ack.batch_id, batch_id);
                match &ack.error {
                    Some(error) => {
                        assert!(BATCH_ERROR_CODES.contains(&error.code), "{error:?}");
                        assert!(!error.message.is_empty());
                        assert!(error.message.len() < 2_000, "messages stay short");
                        assert!(ack.acks.is_empty());
                    }
                    None => {
                        assert_eq!(ack.acks.len(), ids.len(), "one ack per task");
                        for (task_ack, id) in ack.acks.iter().zip(&ids) {
                            // In order; a task refused for its size echoes a long id clipped
                            // (to 256 bytes and an ellipsis), never all of it.
                            let echoed = task_ack.task_id.as_str();
                            let clipped = echoed
                                .strip_suffix('…')
                                .is_some_and(|kept| kept.len() <= 256 && id.starts_with(kept));
                            assert!(
                                echoed == id || (id.len() > 256 && !task_ack.accepted && clipped),
                                "ack for {id:?} echoes {echoed:?}"
                            );
                        }
                        for task_ack in &ack.acks {
                            assert!(task_ack.accepted || !task_ack.reason.is_empty());
                            assert!(task_ack.accepted || !task_ack.duplicate, "a duplicate is accepted");
                        }
                    }
                }
                assert_counters_add_up(&engine);
            }
        });
    }

    #[test]
    fn every_status_query_is_answered_in_order_or_refused_as_invalid(
        setup in submit_batch(),
        queries in prop::collection::vec(status_query(), 1..4)
    ) {
        runtime().block_on(async {
            let engine = engine();
            engine.submit_batch(setup);
            for query in queries {
                let batch_id = query.batch_id;
                let asked = query.task_ids.clone();
                let reply = engine.query_status(query);
                assert_eq!(reply.batch_id, batch_id);
                match &reply.error {
                    Some(error) => {
                        assert_eq!(error.code, Code::InvalidArgument as i32, "{error:?}");
                        assert!(reply.statuses.is_empty());
                    }
                    None => {
                        let answered: Vec<&str> =
                            reply.statuses.iter().map(|s| s.task_id.as_str()).collect();
                        assert_eq!(answered, asked);
                        for status in &reply.statuses {
                            let state = TaskState::try_from(status.state).unwrap();
                            assert_ne!(state, TaskState::Unspecified);
                        }
                    }
                }
            }
            assert_counters_add_up(&engine);
        });
    }

    #[test]
    fn unary_calls_answer_or_fail_with_a_precise_code(
        tasks in prop::collection::vec(task(), 1..12),
        lookups in prop::collection::vec((task_id(), id_list()), 1..6)
    ) {
        runtime().block_on(async {
            let engine = engine();
            for task in tasks {
                let id = task.id.clone();
                match engine.submit_one(task) {
                    Ok(ack) => {
                        assert_eq!(ack.task_id, id);
                        assert!(ack.accepted);
                    }
                    Err(status) => {
                        assert!(
                            matches!(
                                status.code(),
                                Code::InvalidArgument | Code::ResourceExhausted | Code::Unavailable
                            ),
                            "{status:?}"
                        );
                        assert!(!status.message().is_empty());
                    }
                }
            }
            for (task_id, release_ids) in lookups {
                match engine.status_one(task_id.clone(), &release_ids) {
                    Ok(status) => assert_eq!(status.task_id, task_id),
                    Err(status) => assert_eq!(status.code(), Code::InvalidArgument, "{status:?}"),
                }
            }
            assert_counters_add_up(&engine);
        });
    }

    #[test]
    fn completion_requests_are_served_or_refused_as_invalid(
        flush_window_ms in prop_oneof![0u64..100, any::<u64>()],
        max_batch in any::<u32>()
    ) {
        runtime().block_on(async {
            let engine = engine();
            let request = proto::CompletionsRequest { flush_window_ms, max_batch };
            match engine.subscribe_completions(&request) {
                Ok(_) => assert!(flush_window_ms <= 60_000),
                Err(status) => {
                    assert_eq!(status.code(), Code::InvalidArgument);
                    assert!(flush_window_ms > 60_000);
                }
            }
        });
    }
}
