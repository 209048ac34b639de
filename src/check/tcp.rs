//! The `tcp` check: OK when a connection to host:port is established within the timeout.

use std::time::{Duration, Instant};

use tokio::net::TcpStream;

use super::result::CheckResult;

/// The host as `connect` wants it: an IPv6 literal loses its brackets.
pub(super) fn normalise_host(host: String) -> String {
    match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(inner) => inner.to_string(),
        None => host,
    }
}

/// Connects to `host:port` (resolving the name if needed); the value is the time to connect, in
/// milliseconds. Refused, unreachable or unresolvable → BROKEN; no answer in time → TIMED_OUT.
pub(super) async fn run(host: &str, port: u16, timeout: Duration) -> CheckResult {
    let start = Instant::now();
    match tokio::time::timeout(timeout, TcpStream::connect((host, port))).await {
        Ok(Ok(stream)) => {
            let connect_ms = start.elapsed().as_secs_f64() * 1000.0;
            drop(stream);
            CheckResult::ok(
                connect_ms,
                format!("connected to {host}:{port} in {connect_ms:.2} ms"),
            )
        }
        Ok(Err(error)) => CheckResult::broken(0.0, format!("connect to {host}:{port}: {error}")),
        Err(_) => CheckResult::timed_out(timeout, &format!("connect to {host}:{port}")),
    }
}
