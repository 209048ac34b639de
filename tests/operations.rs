//! Running turbomon the way operators run their other tools: gRPC reflection, health during a
//! drain, reload on SIGHUP, JSON logs, generated configurations, completions, manual pages and
//! versions. Child processes are the real `turbomon` binary on loopback ports.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use turbomon::config::{self, EngineConfig, FileKind};
use turbomon::engine::Engine;
use turbomon::proto::{self, TaskState};

/// A JSON log line's field (top level, as `--log-format json` writes them).
fn field(line: &str, name: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(line).ok()?;
    match value.get(name)? {
        serde_json::Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

fn message_is(line: &str, start: &str) -> bool {
    field(line, "message").is_some_and(|m| m.starts_with(start))
}

async fn health_of(address: std::net::SocketAddr, service: &str) -> ServingStatus {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let status = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.to_string(),
        })
        .await
        .expect("health check")
        .into_inner()
        .status;
    ServingStatus::try_from(status).expect("known status")
}

async fn submit_one(
    client: &mut proto::engine_client::EngineClient<tonic::transport::Channel>,
    task: proto::Task,
) -> proto::TaskAck {
    client
        .submit_one(proto::SubmitOneRequest { task: Some(task) })
        .await
        .expect("submit_one")
        .into_inner()
        .ack
        .expect("an ack")
}

/// `SubmitOne` that the engine refuses: the status it answers with.
async fn submit_refused(
    client: &mut proto::engine_client::EngineClient<tonic::transport::Channel>,
    task: proto::Task,
) -> tonic::Status {
    client
        .submit_one(proto::SubmitOneRequest { task: Some(task) })
        .await
        .expect_err("the task is refused")
}

#[tokio::test]
async fn reflection_lists_the_engine_and_health_services_v1_and_v1alpha() {
    use tokio_stream::StreamExt;
    let running = serve_engine().await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", running.address))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");

    {
        use tonic_reflection::pb::v1::ServerReflectionRequest;
        use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
        let mut client = ServerReflectionClient::new(channel.clone());
        let requests = [
            MessageRequest::ListServices(String::new()),
            MessageRequest::FileContainingSymbol("turbomon.v1.Engine".into()),
        ]
        .map(|request| ServerReflectionRequest {
            host: String::new(),
            message_request: Some(request),
        });
        let mut replies = client
            .server_reflection_info(tokio_stream::iter(requests))
            .await
            .expect("reflection call")
            .into_inner();
        let Some(Ok(listed)) = replies.next().await else {
            panic!("no list reply")
        };
        let Some(MessageResponse::ListServicesResponse(list)) = listed.message_response else {
            panic!("not a service list: {listed:?}")
        };
        let names: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
        for expected in [
            "turbomon.v1.Engine",
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
        ] {
            assert!(
                names.contains(&expected),
                "{expected} missing from {names:?}"
            );
        }
        let Some(Ok(file)) = replies.next().await else {
            panic!("no file reply")
        };
        let Some(MessageResponse::FileDescriptorResponse(files)) = file.message_response else {
            panic!("not a file descriptor: {file:?}")
        };
        assert!(!files.file_descriptor_proto.is_empty());
    }
    {
        use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
        use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;
        let mut client = ServerReflectionClient::new(channel);
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut replies = client
            .server_reflection_info(tokio_stream::iter([request]))
            .await
            .expect("v1alpha reflection call")
            .into_inner();
        let Some(Ok(listed)) = replies.next().await else {
            panic!("no v1alpha list reply")
        };
        let Some(MessageResponse::ListServicesResponse(list)) = listed.message_response else {
            panic!("not a service list: {listed:?}")
        };
        assert!(list.service.iter().any(|s| s.name == "turbomon.v1.Engine"));
    }
    running.stop().await;
}

#[tokio::test]
async fn a_draining_engine_reports_not_serving_and_still_answers_status() {
    let mut running = RunningEngine::start(EngineConfig {
        shutdown_grace: Duration::from_secs(10),
        ..engine_config()
    })
    .await;
    let mut client = running.client().await;
    let ack = submit_one(&mut client, ok_task("slow", 1_500)).await;
    assert!(ack.accepted, "{ack:?}");
    assert_eq!(health_of(running.address, "").await, ServingStatus::Serving);

    running.request_shutdown();
    // While the check drains, a new connection is still accepted, and sees NOT_SERVING.
    let mut statuses = Vec::new();
    for service in ["", "turbomon.v1.Engine"] {
        statuses.push(health_of(running.address, service).await);
    }
    assert_eq!(
        statuses,
        [ServingStatus::NotServing, ServingStatus::NotServing]
    );
    let mut late = engine_client(running.address).await;
    let refused = late
        .submit_one(proto::SubmitOneRequest {
            task: Some(ok_task("late", 0)),
        })
        .await
        .expect_err("a new task during the drain");
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused}");
    // Status queries are still answered over the new connection.
    let reply = late
        .status_one(proto::StatusOneRequest {
            task_id: "slow".into(),
            release_ids: Vec::new(),
        })
        .await
        .expect("status during the drain")
        .into_inner();
    assert_eq!(
        reply.status.map(|s| s.state()),
        Some(TaskState::Running),
        "the check still runs"
    );
    running.shutdown().await.expect("clean stop");
}

#[tokio::test]
async fn a_reload_applies_live_limits_and_names_the_rest() {
    let engine = Engine::new(EngineConfig {
        max_concurrent_checks: 1,
        ..engine_config()
    });
    let running = RunningEngine::serve(engine.clone()).await;
    let mut client = running.client().await;
    for id in ["a", "b", "c"] {
        assert!(submit_one(&mut client, ok_task(id, 60_000)).await.accepted);
    }
    assert_eq!(state_of(&engine, "b"), TaskState::Pending);

    let diff = engine
        .reload(&EngineConfig {
            max_concurrent_checks: 3,
            max_held_tasks: 3,
            listen: "127.0.0.1:9".into(),
            ..engine_config()
        })
        .expect("reload");
    assert_eq!(diff.applied, ["max_concurrent_checks", "max_held_tasks"]);
    assert_eq!(diff.restart_needed, ["listen"]);
    // The raised concurrency starts the waiting checks at once; the lowered cap refuses more.
    assert_eq!(state_of(&engine, "b"), TaskState::Running);
    assert_eq!(state_of(&engine, "c"), TaskState::Running);
    let refused = submit_refused(&mut client, ok_task("d", 0)).await;
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted, "{refused}");
    assert_eq!(engine.applied_config().max_held_tasks, 3);
    assert_eq!(
        engine.applied_config().listen,
        "127.0.0.1:0",
        "restart keys stay"
    );

    // An unusable allow-list changes nothing.
    let bad = EngineConfig {
        max_held_tasks: 10,
        exec: config::ExecConfig {
            allow: vec!["relative/*".into()],
        },
        ..engine_config()
    };
    assert!(engine.reload(&bad).is_err());
    assert_eq!(engine.applied_config().max_held_tasks, 3);
    running.stop().await;
}

/// Writes an engine file for the binary tests.
fn write_engine_file(path: &Path, max_held_tasks: usize, listen: &str) {
    std::fs::write(
        path,
        format!(
            "listen = \"{listen}\"\nmetrics_listen = \"\"\nmax_held_tasks = {max_held_tasks}\n\
             max_batch_tasks = 5\n"
        ),
    )
    .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

#[cfg(unix)]
#[tokio::test]
async fn the_engine_binary_reloads_on_sighup_keeps_serving_and_logs_json() {
    let dir = TempDir::new("engine-hup");
    let file = dir.path().join("engine.toml");
    write_engine_file(&file, 100, "127.0.0.1:0");
    let mut engine = TurbomonProcess::start(
        &["engine", "--config", "engine.toml", "--log-format", "json"],
        dir.path(),
    );
    let first = engine
        .wait_for_line(Duration::from_secs(20), |l| {
            message_is(l, "engine listening")
        })
        .await;
    let address: std::net::SocketAddr = field(&first, "address")
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address in {first}"));

    write_engine_file(&file, 1, "127.0.0.1:1");
    engine.signal("HUP");
    let reloaded = engine
        .wait_for_line(Duration::from_secs(10), |l| {
            message_is(l, "SIGHUP: configuration reloaded")
        })
        .await;
    assert_eq!(
        field(&reloaded, "applied").as_deref(),
        Some("max_held_tasks")
    );
    assert_eq!(
        field(&reloaded, "restart_needed").as_deref(),
        Some("listen")
    );

    // Still serving, now with the new cap.
    assert_eq!(health_of(address, "").await, ServingStatus::Serving);
    let mut client = engine_client(address).await;
    assert!(
        submit_one(&mut client, ok_task("one", 30_000))
            .await
            .accepted
    );
    let refused = submit_refused(&mut client, ok_task("two", 0)).await;
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted, "{refused}");
    assert!(refused.message().contains("max_held_tasks 1"), "{refused}");

    // A broken file is refused and the engine goes on.
    std::fs::write(&file, "max_held_tasks = \"many\"\n").expect("write");
    engine.signal("HUP");
    let error = engine
        .wait_for_line(Duration::from_secs(10), |l| {
            message_is(l, "SIGHUP: configuration not reloaded")
        })
        .await;
    assert_eq!(field(&error, "level").as_deref(), Some("ERROR"));
    assert_eq!(health_of(address, "").await, ServingStatus::Serving);

    engine.signal("TERM");
    let status = engine.wait_exit(Duration::from_secs(30)).await;
    assert!(status.success(), "{status:?}");
    let lines = engine.lines();
    assert!(lines.len() >= 5, "{lines:?}");
    for line in &lines {
        let parsed: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        for key in ["timestamp", "level", "target", "message"] {
            assert!(parsed.get(key).is_some(), "no {key} in {line}");
        }
    }
    let start = &lines[0];
    assert!(message_is(start, "turbomon engine starting"), "{start}");
    assert!(
        field(start, "version").is_some_and(|v| v.contains(turbomon::VERSION)),
        "{start}"
    );
}

#[tokio::test]
async fn the_engine_runs_on_built_in_defaults_without_a_file_and_says_so() {
    let dir = TempDir::new("engine-defaults");
    let mut engine = TurbomonProcess::start(
        &[
            "engine",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
        ],
        dir.path(),
    );
    engine
        .wait_for_line(Duration::from_secs(20), |l| message_is(l, "engine serving"))
        .await;
    let first = engine.lines().remove(0);
    assert!(
        message_is(&first, "turbomon engine starting on its built-in defaults"),
        "{first}"
    );
    assert_eq!(
        field(&first, "config").as_deref(),
        Some("built-in defaults")
    );
    engine.signal("TERM");
    assert!(engine.wait_exit(Duration::from_secs(30)).await.success());
}

/// A supervisor file with one engine at `address`, one sim relator, and `stats_interval`.
fn supervisor_file(address: std::net::SocketAddr, stats_interval: &str, batch: usize) -> String {
    format!(
        "metrics_listen = \"\"\nstats_interval = \"{stats_interval}\"\n\
         task_submit_batch_size = {batch}\n\
         status_check_interval = \"200ms\"\n\
         [[engines]]\nname = \"e1\"\naddress = \"{address}\"\n\
         [[groups]]\nname = \"g\"\nengine = \"e1\"\nnodes = [\"n1\", \"n2\"]\n\
         [[rules]]\nname = \"r\"\nkind = \"sim\"\nduration = \"1ms\"\n\
         [[relators]]\nname = \"rel\"\ngroup = \"g\"\nrules = [\"r\"]\ninterval = \"1s\"\n"
    )
}

#[cfg(unix)]
#[tokio::test]
async fn the_supervisor_logs_one_line_per_reload_and_applies_stats_interval_at_once() {
    let running = serve_engine().await;
    let dir = TempDir::new("supervisor-reload");
    let file = dir.path().join("supervisor.toml");
    std::fs::write(&file, supervisor_file(running.address, "1h", 30)).expect("write");
    let mut supervisor = TurbomonProcess::start(
        &[
            "supervisor",
            "--config",
            "supervisor.toml",
            "--log-format",
            "json",
        ],
        dir.path(),
    );
    supervisor
        .wait_for_line(Duration::from_secs(20), |l| {
            message_is(l, "supervisor running")
        })
        .await;
    let mut text = supervisor_file(running.address, "1s", 10);
    text.push_str("[[alerts]]\nname = \"extra\"\nkind = \"log\"\n");
    std::fs::write(&file, text).expect("write");
    supervisor.signal("HUP");
    let reload = supervisor
        .wait_for_line(Duration::from_secs(10), |l| {
            message_is(l, "configuration reloaded")
        })
        .await;
    assert_eq!(
        field(&reload, "applied").as_deref(),
        Some("stats_interval, task_submit_batch_size")
    );
    assert_eq!(
        field(&reload, "restart_needed").as_deref(),
        Some("alerts[extra]")
    );
    // The hour-long window gives way to the new one second at once: a block within seconds.
    supervisor
        .wait_for_line(Duration::from_secs(10), |l| {
            field(l, "target").as_deref() == Some("turbomon::stats")
        })
        .await;
    let about_the_reload = supervisor
        .lines()
        .iter()
        .filter(|l| {
            let message = field(l, "message").unwrap_or_default();
            message.contains("configuration") || message.contains("tunables")
        })
        .count();
    assert_eq!(about_the_reload, 1, "{:#?}", supervisor.lines());
    supervisor.signal("TERM");
    assert!(
        supervisor
            .wait_exit(Duration::from_secs(30))
            .await
            .success()
    );
    running.stop().await;
}

#[tokio::test]
async fn supervisor_stats_interval_flag_overrides_the_file() {
    let running = serve_engine().await;
    let dir = TempDir::new("supervisor-flag");
    let file = dir.path().join("s.toml");
    std::fs::write(&file, supervisor_file(running.address, "1h", 30)).expect("write");
    let mut supervisor = TurbomonProcess::start(
        &["supervisor", "--config", "s.toml", "--stats-interval", "1s"],
        dir.path(),
    );
    supervisor
        .wait_for_line(Duration::from_secs(20), |l| l.contains("turbomon::stats"))
        .await;
    supervisor.signal("TERM");
    assert!(
        supervisor
            .wait_exit(Duration::from_secs(30))
            .await
            .success()
    );
    running.stop().await;

    let (status, _, stderr) = run_turbomon(
        &["supervisor", "--config", "s.toml", "--stats-interval", "0s"],
        dir.path(),
    );
    assert!(!status.success());
    assert!(
        stderr.contains("--stats-interval") && stderr.contains("longer than zero"),
        "{stderr}"
    );
}

#[test]
fn every_generated_config_passes_check_config_and_is_recognised() {
    let dir = TempDir::new("gen-config");
    for kind in FileKind::ALL {
        let (status, sample, _) = run_turbomon(&["gen-config", kind.name()], dir.path());
        assert!(status.success(), "gen-config {kind}");
        assert_eq!(
            sample,
            kind.sample(),
            "gen-config {kind} prints the shipped file"
        );
        let shipped = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("config/{kind}.toml")),
        )
        .expect("shipped file");
        assert_eq!(sample, shipped);
        let path = dir.path().join(format!("{kind}.toml"));
        std::fs::write(&path, &sample).expect("write");
        // Recognised without --kind, and with it.
        for args in [
            vec!["check-config", path.to_str().expect("utf-8")],
            vec![
                "check-config",
                "--kind",
                kind.name(),
                path.to_str().expect("utf-8"),
            ],
        ] {
            let (status, out, err) = run_turbomon(&args, dir.path());
            assert!(status.success(), "{args:?}: {out}{err}");
            let title = match kind {
                FileKind::Supervisor => "Supervisor configuration",
                FileKind::Engine => "Engine configuration",
                FileKind::Links => "Link profiles",
            };
            assert!(out.contains(title), "{args:?}: {out}");
        }
    }
}

#[test]
fn check_config_refuses_an_empty_file_and_suggests_the_near_key() {
    let dir = TempDir::new("check-config");
    let empty = dir.path().join("empty.toml");
    std::fs::write(&empty, "").expect("write");
    let (status, _, stderr) = run_turbomon(&["check-config", "empty.toml"], dir.path());
    assert!(!status.success());
    assert!(stderr.contains("key `engines`: no engines"), "{stderr}");

    let typo = dir.path().join("typo.toml");
    std::fs::write(&typo, "listen = \"127.0.0.1:0\"\nmax_held_task = 5\n").expect("write");
    let (status, _, stderr) = run_turbomon(&["check-config", "typo.toml"], dir.path());
    assert!(!status.success());
    assert!(
        stderr.starts_with(
            "typo.toml:2: key `max_held_task`: unknown field `max_held_task`; did you mean \
             `max_held_tasks`?"
        ),
        "{stderr}"
    );

    let links = dir.path().join("links.toml");
    std::fs::write(
        &links,
        "[profiles.slow]\nlatency = \"1s\"\nbandwith = \"1Mbit\"\n",
    )
    .expect("write");
    let (status, _, stderr) = run_turbomon(&["check-config", "links.toml"], dir.path());
    assert!(!status.success());
    assert!(
        stderr.contains("links.toml:3") && stderr.contains("did you mean `bandwidth`?"),
        "{stderr}"
    );
}

#[test]
fn completions_manual_pages_and_versions() {
    let dir = TempDir::new("cli");
    for shell in ["bash", "zsh", "fish"] {
        let (status, script, _) = run_turbomon(&["completions", shell], dir.path());
        assert!(status.success(), "{shell}");
        assert!(
            script.contains("gen-config") && script.contains("check-config"),
            "{shell}: {script}"
        );
    }
    let (status, page, _) = run_turbomon(&["man"], dir.path());
    assert!(status.success());
    assert!(page.contains(".TH turbomon 1"), "{page}");
    assert!(page.contains("supervisor"), "{page}");
    let (status, _, _) = run_turbomon(&["man", "--out-dir", "pages"], dir.path());
    assert!(status.success());
    for page in ["turbomon.1", "turbomon-engine.1", "turbomon-supervisor.1"] {
        assert!(dir.path().join("pages").join(page).exists(), "{page}");
    }
    for args in [
        &["--version"][..],
        &["engine", "--version"],
        &["bench", "--version"],
    ] {
        let (status, out, _) = run_turbomon(args, dir.path());
        assert!(status.success(), "{args:?}");
        assert!(out.contains(turbomon::VERSION), "{args:?}: {out}");
        assert!(out.contains("(rev "), "{args:?}: {out}");
    }
}

#[tokio::test]
async fn the_shipped_configuration_runs_without_error_logs() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let engine_file = root.join("config/engine.toml");
    let engine_text = std::fs::read_to_string(&engine_file).expect("engine.toml");
    let engine_config = EngineConfig {
        listen: "127.0.0.1:0".into(),
        ..config::parse_engine(&engine_text, &engine_file).expect("the shipped engine.toml")
    };
    let local = RunningEngine::start(engine_config.clone()).await;
    let remote = RunningEngine::start(engine_config).await;
    let text = FileKind::Supervisor
        .sample()
        .replace("127.0.0.1:7300", &local.address.to_string())
        .replace("127.0.0.1:7301", &remote.address.to_string())
        .replace("127.0.0.1:9464", "127.0.0.1:0");
    let dir = TempDir::new("shipped");
    std::fs::write(dir.path().join("supervisor.toml"), text).expect("write");
    let mut supervisor = TurbomonProcess::start(
        &[
            "supervisor",
            "--config",
            "supervisor.toml",
            "--stats-interval",
            "2s",
            "--log-format",
            "json",
        ],
        dir.path(),
    );
    // The always-broken sample rule alerts (through the log and the `logger` command), and
    // statistics come every two seconds.
    supervisor
        .wait_for_line(Duration::from_secs(30), |l| l.contains("disk-full"))
        .await;
    supervisor
        .wait_for_line(Duration::from_secs(10), |l| {
            field(l, "target").as_deref() == Some("turbomon::stats")
        })
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    supervisor.signal("TERM");
    assert!(
        supervisor
            .wait_exit(Duration::from_secs(30))
            .await
            .success()
    );
    let lines = supervisor.lines();
    let errors: Vec<&String> = lines
        .iter()
        .filter(|l| field(l, "level").as_deref() == Some("ERROR"))
        .collect();
    assert!(errors.is_empty(), "error logs: {errors:#?}");
    local.stop().await;
    remote.stop().await;
}

/// The shipped systemd units, with their command.
fn systemd_units() -> Vec<(String, String)> {
    ["engine", "supervisor"]
        .map(|kind| {
            let path = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join(format!("contrib/systemd/turbomon-{kind}.service"));
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            (kind.to_string(), text)
        })
        .into()
}

/// The value of `key=` in a unit (the last one, as systemd takes it).
fn unit_value<'t>(text: &'t str, key: &str) -> Option<&'t str> {
    text.lines()
        .rev()
        .find_map(|line| line.strip_prefix(key)?.strip_prefix('='))
}

#[test]
fn systemd_units_reload_on_hup_stop_on_term_and_are_hardened() {
    let dir = TempDir::new("units");
    for (kind, text) in systemd_units() {
        assert_eq!(
            unit_value(&text, "ExecReload"),
            Some("/bin/kill -HUP $MAINPID")
        );
        assert_eq!(unit_value(&text, "KillSignal"), Some("SIGTERM"));
        for (key, value) in [
            ("NoNewPrivileges", "yes"),
            ("ProtectSystem", "strict"),
            ("ProtectHome", "yes"),
            ("PrivateTmp", "yes"),
            ("DynamicUser", "yes"),
            ("CapabilityBoundingSet", ""),
            ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
        ] {
            assert_eq!(unit_value(&text, key), Some(value), "{kind}: {key}");
        }
        // The command line is one the binary accepts.
        let exec = unit_value(&text, "ExecStart").expect("ExecStart");
        let mut words = exec.split_whitespace();
        assert_eq!(words.next(), Some("/usr/local/bin/turbomon"));
        let mut args: Vec<&str> = words.collect();
        assert_eq!(args.first().copied(), Some(kind.as_str()));
        args.push("--help");
        let (status, _, stderr) = run_turbomon(&args, dir.path());
        assert!(status.success(), "{kind}: {args:?}: {stderr}");
    }
}

#[test]
#[ignore = "needs systemd-analyze (Debian package systemd); .ci/run runs it"]
fn systemd_analyze_verifies_the_units() {
    let dir = TempDir::new("units-verify");
    let mut paths = Vec::new();
    for (kind, text) in systemd_units() {
        // verify wants the ExecStart program to exist: the one just built.
        let path = dir.path().join(format!("turbomon-{kind}.service"));
        std::fs::write(
            &path,
            text.replace("/usr/local/bin/turbomon", turbomon_bin()),
        )
        .expect("write");
        paths.push(path);
    }
    let output = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .args(&paths)
        .output()
        .expect("systemd-analyze runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    // It only warns (exit 0) about unknown keys or bad values: any output is a fault.
    assert!(stderr.trim().is_empty(), "{stderr}");
}
