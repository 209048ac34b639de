//! The checks an engine runs, against real sockets, programs and an HTTP server on loopback.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{TempDir, TestCa, Validity, closed_address, serve_http, serve_https};
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use tokio::net::TcpListener;
use turbomon::check::{self, Check, CheckError, CheckResult, Thresholds};
use turbomon::config::SimOutcome;
use turbomon::proto::{self, PerfData, TaskState};

const OUTPUT_LIMIT_BYTES: usize = 1024;

fn tcp(host: &str, port: u16) -> Check {
    Check::Tcp {
        host: host.into(),
        port,
        thresholds: Thresholds::default(),
    }
}

fn exec(program: &str, args: &[&str]) -> Check {
    Check::Exec {
        program: program.into(),
        args: args.iter().map(|a| a.to_string()).collect(),
    }
}

fn http(url: &str, expect_status: u32) -> Result<Check, CheckError> {
    http_with(proto::HttpCheck {
        url: url.into(),
        expect_status,
        ..proto::HttpCheck::default()
    })
}

fn http_with(check: proto::HttpCheck) -> Result<Check, CheckError> {
    Check::try_from(&proto::Check {
        kind: Some(proto::check::Kind::Http(check)),
    })
}

/// The `time` performance value a tcp or http result carries.
fn time_perfdata(result: &CheckResult) -> &PerfData {
    assert_eq!(result.perfdata.len(), 1, "{:?}", result.perfdata);
    let time = &result.perfdata[0];
    assert_eq!((time.label.as_str(), time.uom.as_str()), ("time", "s"));
    assert_eq!(time.value, result.value);
    assert_eq!(time.min, Some(0.0));
    time
}

async fn run(check: &Check, timeout: Duration) -> CheckResult {
    check::run(check, timeout, OUTPUT_LIMIT_BYTES).await
}

/// A port on loopback nothing listens on.
async fn closed_port() -> u16 {
    closed_address().await.port()
}

#[tokio::test]
async fn tcp_check_is_ok_against_an_open_listener_with_connect_time_in_seconds() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let check = Check::Tcp {
        host: "127.0.0.1".into(),
        port,
        thresholds: Thresholds::from_ms(1500, 1800).unwrap(),
    };
    let result = run(&check, Duration::from_secs(2)).await;
    assert_eq!(result.state, TaskState::Ok, "{}", result.message);
    assert!(
        (0.0..1.5).contains(&result.value),
        "connect time {} s",
        result.value
    );
    assert!(result.message.contains("connected"), "{}", result.message);
    let time = time_perfdata(&result);
    assert_eq!(
        (time.warn.as_str(), time.crit.as_str(), time.max),
        ("1.5", "1.8", Some(2.0))
    );
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
async fn tcp_check_turns_warning_when_the_connect_time_reaches_its_threshold() {
    // The full backlog again, but a slot frees after 100 ms: the dropped SYN is sent again
    // (after about a second on Linux) and the connection completes late.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(1).unwrap();
    let address = listener.local_addr().unwrap();
    let mut held = Vec::new();
    loop {
        match tokio::time::timeout(
            Duration::from_millis(300),
            tokio::net::TcpStream::connect(address),
        )
        .await
        {
            Ok(Ok(stream)) => held.push(stream),
            Ok(Err(error)) => panic!("connect failed instead of hanging: {error}"),
            Err(_) => break,
        }
        assert!(held.len() < 16, "the backlog never filled");
    }
    let acceptor = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut accepted = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            accepted.push(stream);
        }
    });
    let check = Check::Tcp {
        host: "127.0.0.1".into(),
        port: address.port(),
        thresholds: Thresholds::from_ms(300, 0).unwrap(),
    };
    let result = run(&check, Duration::from_secs(10)).await;
    assert_eq!(result.state, TaskState::Warning, "{}", result.message);
    assert!(result.value >= 0.3, "{}", result.value);
    assert!(
        result
            .message
            .contains("reaches the warning threshold 0.3 s"),
        "{}",
        result.message
    );
    assert_eq!(time_perfdata(&result).warn, "0.3");
    acceptor.abort();
    drop(held);
}

#[tokio::test]
async fn exec_exit_codes_map_to_plugin_states_with_the_code_as_value() {
    let ok = run(&exec("true", &[]), Duration::from_secs(5)).await;
    assert_eq!((ok.state, ok.value), (TaskState::Ok, 0.0), "{}", ok.message);

    let warning = run(&exec("false", &[]), Duration::from_secs(5)).await;
    assert_eq!((warning.state, warning.value), (TaskState::Warning, 1.0));

    let three = run(&exec("sh", &["-c", "exit 3"]), Duration::from_secs(5)).await;
    assert_eq!((three.state, three.value), (TaskState::PluginUnknown, 3.0));
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
    assert_eq!(result.message, "done");
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
    assert_eq!(ok.state, TaskState::Ok, "{}", ok.message);
    assert!(ok.message.starts_with("HTTP 200 in "), "{}", ok.message);
    assert!(
        (0.0..5.0).contains(&ok.value),
        "response time {} s",
        ok.value
    );
    time_perfdata(&ok);

    let broken = run(
        &http(&format!("http://{address}/status/500"), 0).unwrap(),
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(broken.state, TaskState::Broken);
    assert_eq!(broken.message, "HTTP 500, expected 200");
    time_perfdata(&broken);
}

#[tokio::test]
async fn http_check_honours_expect_status() {
    let address = http_server().await;
    let check = http(&format!("http://{address}/status/503"), 503).unwrap();
    let result = run(&check, Duration::from_secs(5)).await;
    assert_eq!(result.state, TaskState::Ok, "{}", result.message);

    let check = http(&format!("http://{address}/"), 204).unwrap();
    let result = run(&check, Duration::from_secs(5)).await;
    assert_eq!(result.state, TaskState::Broken);
    assert_eq!(result.message, "HTTP 200, expected 204");
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
fn schemes_other_than_http_and_https_are_refused_with_a_clear_reason() {
    assert!(http("https://127.0.0.1/", 0).is_ok());
    let error = http("ftp://127.0.0.1/", 0).unwrap_err();
    assert_eq!(
        error.to_string(),
        "http check url `ftp://127.0.0.1/` is neither http:// nor https://"
    );
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

/// The site the http checks below visit, plain or over TLS:
/// - `/` answers 200 `hello turbomon`; `/big` 2 MiB of `a` and then `needle`;
/// - `/slow/MS` answers 200 after MS milliseconds;
/// - `/redirect/N` redirects to `N-1` (a relative reference) down to `/redirect/0`, 200;
/// - `/slow-redirect/N` is the same with 150 ms per answer;
/// - `/loop` redirects to itself; `/to?URL` redirects to URL.
async fn test_site(request: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    let path = request.uri().path().to_string();
    let redirect = |location: String| {
        let mut response = Response::new(Full::new(Bytes::new()));
        *response.status_mut() = StatusCode::FOUND;
        response
            .headers_mut()
            .insert(hyper::header::LOCATION, location.parse().unwrap());
        response
    };
    let ok = |body: Bytes| Response::new(Full::new(body));
    let number = |prefix: &str| {
        path.strip_prefix(prefix)
            .and_then(|n| n.parse::<u64>().ok())
    };
    if let Some(ms) = number("/slow/") {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        return ok(Bytes::from_static(b"slow"));
    }
    if let Some(hops) = number("/slow-redirect/") {
        tokio::time::sleep(Duration::from_millis(150)).await;
        return match hops {
            0 => ok(Bytes::from_static(b"arrived")),
            n => redirect((n - 1).to_string()),
        };
    }
    if let Some(hops) = number("/redirect/") {
        return match hops {
            0 => ok(Bytes::from_static(b"arrived")),
            n => redirect((n - 1).to_string()),
        };
    }
    match path.as_str() {
        "/loop" => redirect("/loop".into()),
        "/to" => redirect(request.uri().query().unwrap_or("/").to_string()),
        "/big" => {
            let mut body = vec![b'a'; 2 << 20];
            body.extend_from_slice(b"needle");
            ok(Bytes::from(body))
        }
        _ => ok(Bytes::from_static(b"hello turbomon")),
    }
}

/// [`test_site`] over TLS with a certificate for 127.0.0.1 from a test CA.
struct Site {
    dir: TempDir,
    ca: TestCa,
    /// The CA certificate, PEM.
    ca_pem: String,
    address: SocketAddr,
}

impl Site {
    async fn start() -> Self {
        let dir = TempDir::new("https");
        let ca = TestCa::new(dir.path(), "site");
        let leaf = ca.leaf("site", &["127.0.0.1"], Validity::Valid);
        let address = serve_https(&leaf, test_site).await;
        let ca_pem = std::fs::read_to_string(&ca.cert).unwrap();
        Self {
            dir,
            ca,
            ca_pem,
            address,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.address)
    }

    /// A check of `path` trusting the site's CA.
    fn check(&self, path: &str) -> proto::HttpCheck {
        proto::HttpCheck {
            url: self.url(path),
            ca_pem: self.ca_pem.clone(),
            ..proto::HttpCheck::default()
        }
    }
}

#[tokio::test]
async fn https_check_verifies_the_server_against_ca_pem_and_refuses_what_does_not_verify() {
    let site = Site::start().await;
    let ok = run(&http_with(site.check("/")).unwrap(), Duration::from_secs(5)).await;
    assert_eq!(ok.state, TaskState::Ok, "{}", ok.message);
    assert!(ok.message.starts_with("HTTP 200 in "), "{}", ok.message);
    assert!(!ok.message.contains("not verified"), "{}", ok.message);
    time_perfdata(&ok);

    // Without ca_pem the system's roots are used, and they do not know the test CA.
    let system = run(&http(&site.url("/"), 0).unwrap(), Duration::from_secs(5)).await;
    assert_eq!(system.state, TaskState::Broken, "{}", system.message);
    assert!(
        system.message.contains("not signed by a trusted CA"),
        "{}",
        system.message
    );
    assert!(system.perfdata.is_empty());

    let stranger = TestCa::new(site.dir.path(), "stranger");
    let other_ca = proto::HttpCheck {
        ca_pem: std::fs::read_to_string(&stranger.cert).unwrap(),
        ..site.check("/")
    };
    let refused = run(&http_with(other_ca).unwrap(), Duration::from_secs(5)).await;
    assert_eq!(refused.state, TaskState::Broken);
    assert!(
        refused.message.contains("not signed by a trusted CA"),
        "{}",
        refused.message
    );

    let elsewhere = site
        .ca
        .leaf("elsewhere", &["elsewhere.example"], Validity::Valid);
    let wrong_name = serve_https(&elsewhere, test_site).await;
    let check = proto::HttpCheck {
        url: format!("https://{wrong_name}/"),
        ..site.check("/")
    };
    let result = run(&http_with(check).unwrap(), Duration::from_secs(5)).await;
    assert_eq!(result.state, TaskState::Broken);
    assert!(
        result.message.contains("not valid for 127.0.0.1"),
        "{}",
        result.message
    );

    let old = site.ca.leaf("old", &["127.0.0.1"], Validity::Expired);
    let expired = serve_https(&old, test_site).await;
    let check = proto::HttpCheck {
        url: format!("https://{expired}/"),
        ..site.check("/")
    };
    let result = run(&http_with(check).unwrap(), Duration::from_secs(5)).await;
    assert_eq!(result.state, TaskState::Broken);
    assert!(result.message.contains("expired"), "{}", result.message);
}

#[tokio::test]
async fn insecure_skip_verify_accepts_any_certificate_and_says_so() {
    let site = Site::start().await;
    let check = proto::HttpCheck {
        url: site.url("/"),
        insecure_skip_verify: true,
        ..proto::HttpCheck::default()
    };
    let result = run(&http_with(check).unwrap(), Duration::from_secs(5)).await;
    assert_eq!(result.state, TaskState::Ok, "{}", result.message);
    assert!(
        result.message.ends_with("(certificate not verified)"),
        "{}",
        result.message
    );
}

#[tokio::test]
async fn expect_body_is_searched_in_the_body() {
    let site = Site::start().await;
    let expecting = |path: &str, text: &str| {
        http_with(proto::HttpCheck {
            expect_body: text.into(),
            ..site.check(path)
        })
        .unwrap()
    };
    let found = run(&expecting("/", "turbo"), Duration::from_secs(5)).await;
    assert_eq!(found.state, TaskState::Ok, "{}", found.message);

    let absent = run(&expecting("/", "goodbye"), Duration::from_secs(5)).await;
    assert_eq!(absent.state, TaskState::Broken);
    assert_eq!(
        absent.message,
        "HTTP 200, the body (14 bytes) does not contain `goodbye`"
    );
    time_perfdata(&absent);

    // Only the first MiB is read.
    let beyond = run(&expecting("/big", "needle"), Duration::from_secs(10)).await;
    assert_eq!(beyond.state, TaskState::Broken);
    assert!(
        beyond.message.contains("in its first 1024 KiB"),
        "{}",
        beyond.message
    );
    let within = run(&expecting("/big", "aaaa"), Duration::from_secs(10)).await;
    assert_eq!(within.state, TaskState::Ok, "{}", within.message);
}

#[tokio::test]
async fn redirects_are_followed_only_when_asked_and_at_most_five_times() {
    let site = Site::start().await;
    let following = |path: &str, follow_redirects: bool| {
        http_with(proto::HttpCheck {
            follow_redirects,
            ..site.check(path)
        })
        .unwrap()
    };
    let not_followed = run(&following("/redirect/2", false), Duration::from_secs(5)).await;
    assert_eq!(not_followed.state, TaskState::Broken);
    assert_eq!(not_followed.message, "HTTP 302, expected 200");

    let followed = run(&following("/redirect/2", true), Duration::from_secs(5)).await;
    assert_eq!(followed.state, TaskState::Ok, "{}", followed.message);
    assert!(
        followed
            .message
            .starts_with("HTTP 200 after 2 redirects in "),
        "{}",
        followed.message
    );
    let five = run(&following("/redirect/5", true), Duration::from_secs(5)).await;
    assert_eq!(five.state, TaskState::Ok, "{}", five.message);
    let six = run(&following("/redirect/6", true), Duration::from_secs(5)).await;
    assert_eq!(six.state, TaskState::Broken);
    assert!(
        six.message.contains("more than 5 redirects"),
        "{}",
        six.message
    );
    let endless = run(&following("/loop", true), Duration::from_secs(5)).await;
    assert_eq!(endless.state, TaskState::Broken);

    // From plain http to https, the CA applying to the https hop.
    let plain = serve_http(test_site).await;
    let check = proto::HttpCheck {
        url: format!("http://{plain}/to?{}", site.url("/redirect/1")),
        follow_redirects: true,
        ..site.check("/")
    };
    let result = run(&http_with(check).unwrap(), Duration::from_secs(5)).await;
    assert_eq!(result.state, TaskState::Ok, "{}", result.message);
    assert!(
        result.message.starts_with("HTTP 200 after 2 redirects"),
        "{}",
        result.message
    );
}

#[tokio::test]
async fn response_time_thresholds_turn_the_result_warning_or_broken() {
    let site = Site::start().await;
    let timed = |path: &str, warning_ms: u64, critical_ms: u64| {
        http_with(proto::HttpCheck {
            warning_ms,
            critical_ms,
            follow_redirects: true,
            ..site.check(path)
        })
        .unwrap()
    };
    let fast = run(&timed("/", 2000, 3000), Duration::from_secs(5)).await;
    assert_eq!(fast.state, TaskState::Ok, "{}", fast.message);

    let warning = run(&timed("/slow/300", 100, 2000), Duration::from_secs(5)).await;
    assert_eq!(warning.state, TaskState::Warning, "{}", warning.message);
    assert!(warning.value >= 0.3, "{}", warning.value);
    assert!(
        warning
            .message
            .contains("reaches the warning threshold 0.1 s"),
        "{}",
        warning.message
    );
    let time = time_perfdata(&warning);
    assert_eq!(
        (time.warn.as_str(), time.crit.as_str(), time.max),
        ("0.1", "2", Some(5.0))
    );

    let critical = run(&timed("/slow/300", 50, 200), Duration::from_secs(5)).await;
    assert_eq!(critical.state, TaskState::Broken, "{}", critical.message);
    assert!(
        critical
            .message
            .contains("reaches the critical threshold 0.2 s"),
        "{}",
        critical.message
    );

    // Three answers of 150 ms each: the thresholds apply to the whole chain.
    let chain = run(&timed("/slow-redirect/2", 0, 400), Duration::from_secs(5)).await;
    assert_eq!(chain.state, TaskState::Broken, "{}", chain.message);
    assert!(chain.value >= 0.45, "{}", chain.value);
}
