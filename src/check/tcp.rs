//! The `tcp` check: OK when a connection to host:port is established within the timeout,
//! WARNING or BROKEN when the connect time reaches a threshold. The value is the connect time in
//! seconds, reported as `time` performance data too.

use std::time::{Duration, Instant};

use tokio::net::TcpStream;

use super::result::CheckResult;
use super::thresholds::{Thresholds, seconds_text};

/// The host as `connect` wants it: an IPv6 literal loses its brackets.
pub(super) fn normalise_host(host: String) -> String {
    match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(inner) => inner.to_string(),
        None => host,
    }
}

/// Connects to `host:port` (resolving the name if needed). Refused, unreachable or unresolvable
/// → BROKEN; no answer in time → TIMED_OUT; connected → OK, WARNING or BROKEN by `thresholds`.
pub(super) async fn run(
    host: &str,
    port: u16,
    thresholds: &Thresholds,
    timeout: Duration,
) -> CheckResult {
    let start = Instant::now();
    match tokio::time::timeout(timeout, TcpStream::connect((host, port))).await {
        Ok(Ok(stream)) => {
            let elapsed = start.elapsed();
            drop(stream);
            let (state, reached) = thresholds.judge(elapsed);
            let message = match reached {
                Some(reached) => format!("connected to {host}:{port}: {reached}"),
                None => format!("connected to {host}:{port} in {} s", seconds_text(elapsed)),
            };
            CheckResult::new(state, elapsed.as_secs_f64(), message)
                .with_perfdata(vec![thresholds.time_perfdata(elapsed, timeout)])
        }
        Ok(Err(error)) => CheckResult::broken(0.0, format!("connect to {host}:{port}: {error}")),
        Err(_) => CheckResult::timed_out(timeout, &format!("connect to {host}:{port}")),
    }
}
