//! An engine obeys only its own supervisors: mutual TLS end to end with certificates from
//! `turbomon pki`, plaintext refused off loopback, the exec allow-list, and the bounds that hold
//! under a hostile client (oversized tasks, endless timeouts). Every test runs over real
//! loopback sockets.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use common::{
    Extra, RunningEngine, TempDir, TestCa, Validity, batch, capture_logs, engine_config,
    next_completion, node_names, ok_task, one_engine_config, parse, start_supervisor, state_of,
};
use tonic::Code;
use turbomon::config::{EngineConfig, EngineTls, ExecConfig, SupervisorTls};
use turbomon::engine::{Engine, EngineError};
use turbomon::proto::engine_client::EngineClient;
use turbomon::proto::{self, TaskState};
use turbomon::tls::{ClientTls, ClientTlsFiles};
use turbomon::transport::Dialer;

/// A CA, an engine certificate for localhost and 127.0.0.1, and a supervisor certificate,
/// made by `turbomon pki`.
fn pki() -> turbomon::pki::ThrowawayPki {
    turbomon::pki::ThrowawayPki::create().expect("throw-away PKI")
}

/// `[tls]` lines for a supervisor file.
fn supervisor_tls_lines(tls: &SupervisorTls) -> String {
    format!(
        "[tls]\nca = {:?}\ncert = {:?}\nkey = {:?}\n",
        tls.ca, tls.cert, tls.key
    )
}

/// A TLS engine with `config`'s other settings.
async fn tls_engine(tls: &EngineTls, config: EngineConfig) -> RunningEngine {
    RunningEngine::start(EngineConfig {
        tls: Some(tls.clone()),
        ..config
    })
    .await
}

/// A gRPC client speaking mutual TLS with the supervisor's files, checking the engine's
/// certificate against `server_name`.
async fn tls_client(
    files: ClientTlsFiles,
    address: SocketAddr,
    server_name: &str,
) -> EngineClient<tonic::transport::Channel> {
    let tls = ClientTls::load(&files).expect("client TLS files");
    Dialer::new(&address.to_string(), None, 4 << 20)
        .expect("address")
        .with_tls(tls, Some(server_name.to_string()))
        .connect()
        .await
        .expect("TLS connection")
        .client()
}

/// Sends `batch` on a new Submit stream and returns its ack.
async fn submit_once(
    client: &mut EngineClient<tonic::transport::Channel>,
    batch: proto::SubmitBatch,
) -> proto::SubmitAck {
    client
        .submit(tokio_stream::iter([batch]))
        .await
        .unwrap()
        .into_inner()
        .message()
        .await
        .unwrap()
        .expect("an ack")
}

fn exec_task(id: &str, program: &str, args: &[&str]) -> proto::Task {
    let mut task = ok_task(id, 0);
    task.check = Some(proto::Check {
        kind: Some(proto::check::Kind::Exec(proto::ExecCheck {
            program: program.into(),
            args: args.iter().map(|a| a.to_string()).collect(),
        })),
    });
    task
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supervisor_and_engine_over_mutual_tls_deliver_every_task_by_host_name() {
    let pki = pki();
    let engine = tls_engine(&pki.engine, engine_config()).await;
    let nodes = node_names(40);
    // `localhost` is looked up at connection time and is the name the certificate must carry.
    let address = format!("localhost:{}", engine.address.port());
    let top = supervisor_tls_lines(&pki.supervisor);
    let config = parse(&one_engine_config(
        &address,
        &nodes,
        Extra {
            top: &format!("status_check_interval = \"100ms\"\n{top}"),
            ..Extra::default()
        },
    ));
    let (_supervisor, _reload, mut completions) = start_supervisor(config);
    for _ in 0..nodes.len() {
        let completion = next_completion(&mut completions, Duration::from_secs(20)).await;
        assert_eq!(completion.state, TaskState::Ok, "{completion:?}");
    }
    let counters = engine.engine.counters();
    assert_eq!(counters.tasks_accepted, nodes.len() as u64, "{counters:?}");
    engine.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_name_overrides_the_host_checked_in_the_engine_certificate() {
    let dir = TempDir::new("server-name");
    let ca = TestCa::new(dir.path(), "site");
    let engine_leaf = ca.leaf("engine1", &["engine1.branch.example.net"], Validity::Valid);
    let supervisor_leaf = ca.leaf("supervisor", &["supervisor"], Validity::Valid);
    let server = ca.server_files(&engine_leaf);
    let engine = tls_engine(
        &EngineTls {
            cert: server.cert,
            key: server.key,
            client_ca: server.client_ca,
        },
        engine_config(),
    )
    .await;
    let client = ca.client_files(&supervisor_leaf);
    let top = supervisor_tls_lines(&SupervisorTls {
        ca: client.ca,
        cert: client.cert,
        key: client.key,
    });
    let nodes = node_names(3);
    let config = parse(&one_engine_config(
        engine.address,
        &nodes,
        Extra {
            top: &format!("status_check_interval = \"100ms\"\n{top}"),
            engine: "server_name = \"engine1.branch.example.net\"",
            ..Extra::default()
        },
    ));
    let (_supervisor, _reload, mut completions) = start_supervisor(config);
    for _ in 0..nodes.len() {
        let completion = next_completion(&mut completions, Duration::from_secs(20)).await;
        assert_eq!(completion.state, TaskState::Ok, "{completion:?}");
    }
    engine.stop().await;
}

#[tokio::test]
async fn a_plaintext_engine_off_loopback_refuses_to_start_naming_tls() {
    // Bound only to be refused: serve returns before it accepts anything.
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let error = Engine::new(engine_config())
        .serve(listener, std::future::pending())
        .await
        .unwrap_err();
    assert!(
        matches!(error, EngineError::PlaintextNotAllowed { .. }),
        "{error}"
    );
    let message = error.to_string();
    assert!(
        message.contains("[tls]") && message.contains("allow_plaintext"),
        "{message}"
    );

    let refused =
        turbomon::config::parse_engine("listen = \"0.0.0.0:7300\"\n", Path::new("engine.toml"))
            .unwrap_err()
            .to_string();
    assert!(
        refused.contains("engine.toml")
            && refused.contains("tls")
            && refused.contains("turbomon pki"),
        "{refused}"
    );
    // Loopback, by address or by name, needs nothing.
    for listen in ["127.0.0.1:7300", "[::1]:7300", "localhost:7300"] {
        turbomon::config::parse_engine(&format!("listen = \"{listen}\"\n"), Path::new("e.toml"))
            .unwrap_or_else(|e| panic!("{listen}: {e}"));
    }
}

#[test]
fn allow_plaintext_serves_off_loopback_with_a_warning_at_start() {
    let config = turbomon::config::parse_engine(
        "listen = \"0.0.0.0:0\"\nallow_plaintext = true\n",
        Path::new("engine.toml"),
    )
    .expect("allowed explicitly");
    let (served, logs) = capture_logs(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
            Engine::new(config)
                .serve(listener, tokio::time::sleep(Duration::from_millis(100)))
                .await
        })
    });
    served.expect("serves, then stops");
    assert!(
        logs.contains("WARN") && logs.contains("allow_plaintext"),
        "{logs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_is_refused_by_default_and_allowed_by_pattern_with_bare_names_resolved_through_path() {
    let closed = RunningEngine::start(engine_config()).await;
    let mut client = closed.client().await;
    let error = client
        .submit_one(proto::SubmitOneRequest {
            task: Some(exec_task(
                "sh",
                "/bin/sh",
                &["-c", "touch /tmp/turbomon-pwned"],
            )),
        })
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument);
    assert_eq!(
        error.message(),
        "program not allowed on this engine: /bin/sh"
    );
    assert_eq!(closed.engine.counters().tasks_accepted, 0);
    closed.stop().await;

    let open = RunningEngine::start(EngineConfig {
        exec: ExecConfig {
            allow: vec!["/usr/bin/*".into()],
        },
        ..engine_config()
    })
    .await;
    let mut client = open.client().await;
    let ack = submit_once(
        &mut client,
        batch(
            1,
            vec![
                // A bare name, found in PATH under /usr/bin.
                exec_task("bare", "true", &[]),
                // Outside the pattern, whatever the arguments say.
                exec_task("outside", "/bin/sh", &["-c", "true"]),
                // `..` could walk out of the allowed directory: refused.
                exec_task("climb", "/usr/bin/../../bin/sh", &["-c", "true"]),
            ],
        ),
    )
    .await;
    let verdicts: Vec<(&str, bool, &str)> = ack
        .acks
        .iter()
        .map(|a| (a.task_id.as_str(), a.accepted, a.reason.as_str()))
        .collect();
    assert_eq!(
        verdicts,
        vec![
            ("bare", true, ""),
            (
                "outside",
                false,
                "program not allowed on this engine: /bin/sh"
            ),
            (
                "climb",
                false,
                "program not allowed on this engine: /usr/bin/../../bin/sh"
            ),
        ]
    );
    common::eventually("the allowed program ran", Duration::from_secs(10), || {
        state_of(&open.engine, "bare") == TaskState::Ok
    })
    .await;
    open.stop().await;
}

#[test]
fn exec_refusals_are_logged_with_the_supervisor_certificate_name() {
    let pki = pki();
    let ((), logs) = capture_logs(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let engine = tls_engine(&pki.engine, engine_config()).await;
            let mut client =
                tls_client(pki.supervisor.client_files(), engine.address, "localhost").await;
            let error = client
                .submit_one(proto::SubmitOneRequest {
                    task: Some(exec_task("id", "/usr/bin/id", &[])),
                })
                .await
                .unwrap_err();
            assert_eq!(error.code(), Code::InvalidArgument);
            engine.stop().await;
        })
    });
    let line = logs
        .lines()
        .find(|line| line.contains("exec checks refused"))
        .unwrap_or_else(|| panic!("a refusal line in:\n{logs}"));
    assert!(
        line.contains("WARN")
            && line.contains("caller=supervisor (127.0.0.1:")
            && line.contains("/usr/bin/id"),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_tasks_are_refused_one_by_one_and_never_held() {
    let engine = RunningEngine::start(EngineConfig {
        max_task_bytes: 1024,
        ..engine_config()
    })
    .await;
    let mut client = engine.client().await;
    let huge_id = "x".repeat(1_000_000);
    let ack = submit_once(
        &mut client,
        batch(
            7,
            vec![
                ok_task("before", 0),
                ok_task(&huge_id, 0),
                ok_task("after", 0),
            ],
        ),
    )
    .await;
    assert!(ack.error.is_none(), "{ack:?}");
    assert!(ack.acks[0].accepted && ack.acks[2].accepted, "{ack:?}");
    let refused = &ack.acks[1];
    assert!(!refused.accepted);
    assert!(
        refused.reason.starts_with("task is 100")
            && refused.reason.ends_with("bytes, over max_task_bytes 1024"),
        "{}",
        refused.reason
    );
    // The id is not echoed back in full.
    assert!(refused.task_id.len() < 300, "{}", refused.task_id.len());
    let counters = engine.engine.counters();
    assert_eq!(counters.tasks_accepted, 2);
    assert_eq!(counters.tasks_rejected, 1);
    engine.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_check_timeout_frees_a_slot_held_by_an_endless_check() {
    let engine = RunningEngine::start(EngineConfig {
        max_concurrent_checks: 1,
        max_check_timeout: Duration::from_millis(300),
        ..engine_config()
    })
    .await;
    let mut endless = ok_task("endless", u64::MAX);
    endless.timeout_ms = u64::MAX;
    let ack = engine
        .engine
        .submit_batch(batch(1, vec![endless, ok_task("quick", 10)]));
    assert!(ack.acks.iter().all(|a| a.accepted), "{ack:?}");
    common::eventually(
        "the endless check times out and the quick one runs",
        Duration::from_secs(10),
        || {
            state_of(&engine.engine, "endless") == TaskState::TimedOut
                && state_of(&engine.engine, "quick") == TaskState::Ok
        },
    )
    .await;
    engine.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_over_the_engine_message_cap_are_resent_smaller_until_every_task_arrives() {
    // The engine's cap is far below the supervisor's: a full batch of 30 tasks ends the Submit
    // stream on the engine side. The supervisor must take the broken stream as "resend what is
    // unacknowledged", shrinking the batches, and lose nothing.
    let engine = RunningEngine::start(EngineConfig {
        max_message_bytes: 1000,
        ..engine_config()
    })
    .await;
    let nodes = node_names(60);
    let config = parse(&one_engine_config(
        engine.address,
        &nodes,
        Extra {
            top: "status_check_interval = \"100ms\"\nbatch_timeout = \"1s\"",
            ..Extra::default()
        },
    ));
    // A full batch of these tasks is indeed over the engine's cap.
    let full_batch: usize = common::planned_tasks(&config)
        .iter()
        .take(30)
        .map(prost::Message::encoded_len)
        .sum();
    assert!(full_batch > 1000, "{full_batch}");
    let (_supervisor, _reload, mut completions) = start_supervisor(config);
    let mut seen = std::collections::HashSet::new();
    for _ in 0..nodes.len() {
        let completion = next_completion(&mut completions, Duration::from_secs(30)).await;
        assert_eq!(completion.state, TaskState::Ok, "{completion:?}");
        assert!(seen.insert(completion.task_id.clone()), "{completion:?}");
    }
    let counters = engine.engine.counters();
    assert_eq!(counters.tasks_accepted, nodes.len() as u64, "{counters:?}");
    engine.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_belong_to_the_certificate_that_submitted_them() {
    let pki = pki();
    let intruder = turbomon::pki::issue(
        &pki.dir().join("ca"),
        &turbomon::pki::LeafRequest {
            name: "intruder".into(),
            dns: Vec::new(),
            ips: Vec::new(),
            days: 1,
        },
        &pki.dir().join("intruder"),
    )
    .expect("a second supervisor certificate from the same CA");
    let engine = tls_engine(&pki.engine, engine_config()).await;
    let mut owner = tls_client(pki.supervisor.client_files(), engine.address, "localhost").await;
    let mut other = tls_client(
        ClientTlsFiles {
            ca: intruder.ca,
            cert: intruder.cert,
            key: intruder.key,
        },
        engine.address,
        "localhost",
    )
    .await;
    let ack = owner
        .submit_one(proto::SubmitOneRequest {
            task: Some(ok_task("mine", 0)),
        })
        .await
        .unwrap()
        .into_inner()
        .ack
        .unwrap();
    assert!(ack.accepted);
    let status = |task_id: &str, release: &[&str]| proto::StatusOneRequest {
        task_id: task_id.into(),
        release_ids: release.iter().map(|r| r.to_string()).collect(),
    };
    let state = |reply: tonic::Response<proto::StatusOneReply>| {
        TaskState::try_from(reply.into_inner().status.unwrap().state).unwrap()
    };

    // The other certificate sees no such task and cannot release it...
    let seen = other.status_one(status("mine", &["mine"])).await.unwrap();
    assert_eq!(state(seen), TaskState::Unknown);
    // ...nor take its id over with a later attempt.
    let mut retry = ok_task("mine", 0);
    retry.attempt = 2;
    let error = other
        .submit_one(proto::SubmitOneRequest { task: Some(retry) })
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument);
    assert!(error.message().contains("another supervisor"), "{error}");

    // The owner still reads its result, then releases it.
    let seen = owner.status_one(status("mine", &["mine"])).await.unwrap();
    assert_eq!(state(seen), TaskState::Ok);
    let seen = owner.status_one(status("mine", &[])).await.unwrap();
    assert_eq!(state(seen), TaskState::Unknown);
    engine.stop().await;
}

#[tokio::test]
async fn a_caller_lists_only_the_tasks_its_certificate_submitted() {
    let pki = pki();
    let intruder = turbomon::pki::issue(
        &pki.dir().join("ca"),
        &turbomon::pki::LeafRequest {
            name: "intruder".into(),
            dns: Vec::new(),
            ips: Vec::new(),
            days: 1,
        },
        &pki.dir().join("intruder"),
    )
    .expect("a second supervisor certificate from the same CA");
    let engine = tls_engine(&pki.engine, engine_config()).await;
    let mut owner = tls_client(pki.supervisor.client_files(), engine.address, "localhost").await;
    let mut other = tls_client(
        ClientTlsFiles {
            ca: intruder.ca,
            cert: intruder.cert,
            key: intruder.key,
        },
        engine.address,
        "localhost",
    )
    .await;
    // Both certificates claim the same supervisor id.
    let stamped = |id: &str, scheduled_unix_ms: i64| proto::Task {
        supervisor_id: "shared".into(),
        scheduled_unix_ms,
        ..ok_task(id, 60_000)
    };
    for (client, id, at) in [(&mut owner, "mine", 10), (&mut other, "theirs", 20)] {
        let ack = client
            .submit_one(proto::SubmitOneRequest {
                task: Some(stamped(id, at)),
            })
            .await
            .unwrap()
            .into_inner()
            .ack
            .unwrap();
        assert!(ack.accepted);
    }
    let request = proto::ListTasksRequest {
        supervisor_id: "shared".into(),
        after_id: String::new(),
        limit: 0,
    };
    for (client, id, at) in [(&mut owner, "mine", 10), (&mut other, "theirs", 20)] {
        let reply = client
            .list_tasks(request.clone())
            .await
            .unwrap()
            .into_inner();
        let ids: Vec<&str> = reply.tasks.iter().map(|t| t.task_id.as_str()).collect();
        assert_eq!(ids, [id], "only what this certificate submitted");
        assert_eq!(reply.marks.len(), 1);
        assert_eq!(reply.marks[0].latest_scheduled_unix_ms, at, "its own mark");
    }
    // In process, everything is seen.
    let all = engine.engine.list_tasks(&request).unwrap();
    assert_eq!(all.tasks.len(), 2);
    engine.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_max_open_connections_are_closed_at_once() {
    use tokio::io::AsyncReadExt;
    let engine = RunningEngine::start(EngineConfig {
        max_open_connections: 2,
        ..engine_config()
    })
    .await;
    // Two silent connections take both places (the accept loop takes them in order)...
    let first = tokio::net::TcpStream::connect(engine.address)
        .await
        .unwrap();
    let second = tokio::net::TcpStream::connect(engine.address)
        .await
        .unwrap();
    // ...so a third is closed at once rather than held open.
    let mut third = tokio::net::TcpStream::connect(engine.address)
        .await
        .unwrap();
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(5), third.read(&mut byte))
        .await
        .expect("closed well before the handshake time");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    // Closing the silent ones frees their places for a real client.
    drop((first, second));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let reply = match EngineClient::connect(format!("http://{}", engine.address)).await {
            Ok(mut client) => client
                .submit_one(proto::SubmitOneRequest {
                    task: Some(ok_task("after", 0)),
                })
                .await
                .map(|_| ())
                .map_err(|status| status.to_string()),
            Err(error) => Err(error.to_string()),
        };
        if reply.is_ok() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{reply:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    engine.stop().await;
}
