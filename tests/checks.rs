//! The checks an engine runs, against real sockets, programs and an HTTP server on loopback.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{closed_address, serve_http};
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use tokio::net::TcpListener;
use turbomon::check::{self, Check, CheckError, CheckResult};
use turbomon::config::SimOutcome;
use turbomon::proto::{self, TaskState};

const OUTPUT_LIMIT_BYTES: usize = 1024;

fn tcp(host: &str, port: u16) -> Check {
    Check::Tcp {
        host: host.into(),
        port,
    }
}

fn exec(program: &str, args: &[&str]) -> Check {
    Check::Exec {
        program: program.into(),
        args: args.iter().map(|a| a.to_string()).collect(),
    }
}

fn http(url: &str, expect_status: u32) -> Result<Check, CheckError> {
    Check::try_from(&proto::Check {
        kind: Some(proto::check::Kind::Http(proto::HttpCheck {
            url: url.into(),
            expect_status,
            ..proto::HttpCheck::default()
        })),
    })
}

async fn run(check: &Check, timeout: Duration) -> CheckResult {
    check::run(check, timeout, OUTPUT_LIMIT_BYTES).await
}

/// A port on loopback nothing listens on.
async fn closed_port() -> u16 {
    closed_address().await.port()
}

#[tokio::test]
async fn tcp_check_is_ok_against_an_open_listener_with_connect_time_as_value() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let result = run(&tcp("127.0.0.1", port), Duration::from_secs(2)).await;
    assert_eq!(result.state, TaskState::Ok, "{}", result.message);
    assert!(
        (0.0..2000.0).contains(&result.value),
        "connect time {} ms",
        result.value
    );
    assert!(result.message.contains("connected"), "{}", result.message);
}

#[tokio::test]
async fn tcp_check_is_broken_against_a_closed_port() {
    let port = closed_port().await;
    let result = run(&tcp("127.0.0.1", port), Duration::from_secs(2)).await;
    assert_eq!(result.state, TaskState::Broken);
    assert!(
        result.message.to_lowercase().contains("refused"),
        "{}",
        result.message
    );
}

#[tokio::test]
async fn tcp_check_times_out_when_the_listeners_backlog_is_full() {
    // A listener with a backlog of 1 that never accepts: once its accept queue is full, Linux
    // drops further SYNs, so a new connect hangs -- on loopback, without any outside network.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(1).unwrap();
    let address = listener.local_addr().unwrap();
    let mut held = Vec::new();
    let mut backlog_full = false;
    for _ in 0..16 {
        match tokio::time::timeout(
            Duration::from_millis(300),
            tokio::net::TcpStream::connect(address),
        )
        .await
        {
            Ok(Ok(stream)) => held.push(stream),
            Ok(Err(error)) => panic!("connect failed instead of hanging: {error}"),
            Err(_) => {
                backlog_full = true;
                break;
            }
        }
    }
    assert!(backlog_full, "the backlog never filled");

    let started = Instant::now();
    let timeout = Duration::from_millis(200);
    let result = run(&tcp("127.0.0.1", address.port()), timeout).await;
    assert_eq!(result.state, TaskState::TimedOut, "{}", result.message);
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(
        result.message.contains("timed out after 200ms"),
        "{}",
        result.message
    );
    drop(held);
}

#[tokio::test]
async fn exec_true_is_ok_and_false_is_broken_with_its_exit_code() {
    let ok = run(&exec("true", &[]), Duration::from_secs(5)).await;
    assert_eq!((ok.state, ok.value), (TaskState::Ok, 0.0), "{}", ok.message);

    let broken = run(&exec("false", &[]), Duration::from_secs(5)).await;
    assert_eq!((broken.state, broken.value), (TaskState::Broken, 1.0));

    let three = run(&exec("sh", &["-c", "exit 3"]), Duration::from_secs(5)).await;
    assert_eq!((three.state, three.value), (TaskState::Broken, 3.0));
}

#[tokio::test]
async fn exec_is_killed_and_timed_out_at_its_timeout() {
    let started = Instant::now();
    let result = run(
        &exec("sh", &["-c", "echo started; sleep 5"]),
        Duration::from_millis(200),
    )
    .await;
    assert_eq!(result.state, TaskState::TimedOut, "{}", result.message);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        result.message.contains("started"),
        "output so far is kept: {}",
        result.message
    );
}

#[tokio::test]
async fn exec_keeps_stdout_and_stderr_up_to_the_output_limit() {
    let check = exec(
        "sh",
        &["-c", "printf 0123456789; printf abcdef >&2; exit 0"],
    );
    let result = check::run(&check, Duration::from_secs(5), 12).await;
    assert_eq!(result.state, TaskState::Ok);
    assert_eq!(result.message, "0123456789ab");

    let chatty = exec("sh", &["-c", "yes turbomon | head -c 1000000"]);
    let result = check::run(&chatty, Duration::from_secs(5), 16).await;
    assert_eq!(
        result.state,
        TaskState::Ok,
        "a full pipe never blocks the program"
    );
    assert_eq!(result.message.len(), 16);
}

#[tokio::test]
async fn exec_result_does_not_wait_for_a_background_process_holding_the_output() {
    let started = Instant::now();
    let result = run(
        &exec("sh", &["-c", "sleep 5 & echo done"]),
        Duration::from_secs(4),
    )
    .await;
    assert_eq!(result.state, TaskState::Ok, "{}", result.message);
    assert_eq!(result.message, "done\n");
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn exec_of_a_missing_program_fails() {
    let result = run(
        &exec("/nonexistent/turbomon-no-such-program", &[]),
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(result.state, TaskState::Failed);
    assert!(result.message.contains("cannot run"), "{}", result.message);
}

/// A tiny HTTP server: `/status/N` answers N, anything else 200.
async fn http_server() -> SocketAddr {
    serve_http(|request: Request<hyper::body::Incoming>| async move {
        let status = request
            .uri()
            .path()
            .strip_prefix("/status/")
            .and_then(|code| code.parse::<u16>().ok())
            .and_then(|code| StatusCode::from_u16(code).ok())
            .unwrap_or(StatusCode::OK);
        let mut response = Response::new(Full::new(Bytes::from_static(b"hello")));
        *response.status_mut() = status;
        response
    })
    .await
}

#[tokio::test]
async fn http_check_is_ok_on_200_and_broken_on_500() {
    let address = http_server().await;
    let ok = run(
        &http(&format!("http://{address}/health"), 0).unwrap(),
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(
        (ok.state, ok.value),
        (TaskState::Ok, 200.0),
        "{}",
        ok.message
    );

    let broken = run(
        &http(&format!("http://{address}/status/500"), 0).unwrap(),
        Duration::from_secs(5),
    )
    .await;
    assert_eq!((broken.state, broken.value), (TaskState::Broken, 500.0));
    assert!(
        broken.message.contains("expected 200"),
        "{}",
        broken.message
    );
}

#[tokio::test]
async fn http_check_honours_expect_status() {
    let address = http_server().await;
    let check = http(&format!("http://{address}/status/503"), 503).unwrap();
    let result = run(&check, Duration::from_secs(5)).await;
    assert_eq!((result.state, result.value), (TaskState::Ok, 503.0));

    let check = http(&format!("http://{address}/"), 204).unwrap();
    let result = run(&check, Duration::from_secs(5)).await;
    assert_eq!((result.state, result.value), (TaskState::Broken, 200.0));
}

#[tokio::test]
async fn http_check_is_broken_when_nothing_listens_and_times_out_on_a_silent_server() {
    let port = closed_port().await;
    let refused = run(
        &http(&format!("http://127.0.0.1:{port}/"), 0).unwrap(),
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(refused.state, TaskState::Broken, "{}", refused.message);

    // Accepts connections, never answers.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = silent.local_addr().unwrap();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            held.push(stream);
        }
    });
    let started = Instant::now();
    let result = run(
        &http(&format!("http://{address}/"), 0).unwrap(),
        Duration::from_millis(200),
    )
    .await;
    assert_eq!(result.state, TaskState::TimedOut, "{}", result.message);
    assert!(started.elapsed() < Duration::from_secs(2));
    holder.abort();
}

#[test]
fn https_urls_are_refused_with_a_clear_reason() {
    let error = http("https://127.0.0.1/", 0).unwrap_err();
    assert!(error.to_string().contains("no TLS"), "{error}");
}

#[tokio::test(start_paused = true)]
async fn sim_check_waits_its_duration_then_reports_its_outcome_and_value() {
    let check = Check::Sim {
        duration: Duration::from_millis(250),
        outcome: SimOutcome::Broken,
        value: 3.5,
    };
    let started = tokio::time::Instant::now();
    let result = run(&check, Duration::from_secs(1)).await;
    assert_eq!(started.elapsed(), Duration::from_millis(250));
    assert_eq!((result.state, result.value), (TaskState::Broken, 3.5));

    let failed = Check::Sim {
        duration: Duration::ZERO,
        outcome: SimOutcome::Failed,
        value: -1.0,
    };
    let result = run(&failed, Duration::from_secs(1)).await;
    assert_eq!((result.state, result.value), (TaskState::Failed, -1.0));
    assert_eq!(failed.instant_result(), Some(result));
}

#[tokio::test(start_paused = true)]
async fn sim_check_longer_than_its_timeout_times_out_at_the_timeout() {
    let check = Check::Sim {
        duration: Duration::from_secs(10),
        outcome: SimOutcome::Ok,
        value: 1.0,
    };
    let started = tokio::time::Instant::now();
    let result = run(&check, Duration::from_secs(2)).await;
    assert_eq!(started.elapsed(), Duration::from_secs(2));
    assert_eq!(result.state, TaskState::TimedOut);
    assert!(check.instant_result().is_none());
}

/// Whether process `pid` is still alive (a zombie awaiting its reaper counts as dead).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => !matches!(
            stat.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().chars().next()),
            Some(Some('Z' | 'X'))
        ),
        Err(_) => false,
    }
}

#[tokio::test]
async fn exec_timeout_also_kills_the_processes_the_program_started() {
    let result = run(
        &exec("sh", &["-c", "sleep 30 & echo $!; wait"]),
        Duration::from_millis(300),
    )
    .await;
    assert_eq!(result.state, TaskState::TimedOut, "{}", result.message);
    let pid: u32 = result
        .message
        .rsplit(": ")
        .next()
        .and_then(|output| output.trim().parse().ok())
        .unwrap_or_else(|| panic!("no pid in {:?}", result.message));
    let mut still_alive = true;
    for _ in 0..50 {
        still_alive = alive(pid);
        if !still_alive {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!still_alive, "background sleep {pid} survived the timeout");
}
