//! The `http` check: a plain `http://` GET over a fresh TCP connection with the hyper 1 client.
//! OK when the response status is the expected one, BROKEN on another status or when the server
//! cannot be reached or answers garbage; TIMED_OUT when no status arrives in time. The response
//! body is not read. There is no TLS: `https://` URLs are refused when the check is validated.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper::Uri;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::result::{CheckError, CheckResult, clip};

/// The parts of a validated URL a request needs.
struct Target<'a> {
    host: &'a str,
    port: u16,
    authority: &'a str,
    path_and_query: &'a str,
}

fn parse(uri: &Uri) -> Result<Target<'_>, String> {
    match uri.scheme_str() {
        Some("http") => {}
        Some(_) => return Err("not http://".into()),
        None => return Err("no scheme (expected http://host/path)".into()),
    }
    let authority = uri.authority().ok_or("no host")?;
    let host = authority.host();
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() {
        return Err("no host".into());
    }
    Ok(Target {
        host,
        port: authority.port_u16().unwrap_or(80),
        authority: authority.as_str(),
        path_and_query: uri.path_and_query().map_or("/", |p| p.as_str()),
    })
}

/// Checks that `url` is an `http://` URL with a host.
pub(super) fn validate_url(url: &str) -> Result<(), CheckError> {
    let uri: Uri =
        url.parse().map_err(
            |error: hyper::http::uri::InvalidUri| CheckError::InvalidUrl {
                url: clip(url),
                reason: error.to_string(),
            },
        )?;
    match uri.scheme_str() {
        Some("http") | None => {}
        Some(_) => return Err(CheckError::UnsupportedScheme { url: clip(url) }),
    }
    parse(&uri)
        .map(|_| ())
        .map_err(|reason| CheckError::InvalidUrl {
            url: clip(url),
            reason,
        })
}

/// GETs `url`; the value is the response status.
pub(super) async fn run(url: &str, expect_status: u16, timeout: Duration) -> CheckResult {
    let uri: Uri = match url.parse() {
        Ok(uri) => uri,
        Err(error) => return CheckResult::failed(format!("invalid url `{}`: {error}", clip(url))),
    };
    let target = match parse(&uri) {
        Ok(target) => target,
        Err(reason) => {
            return CheckResult::failed(format!("invalid url `{}`: {reason}", clip(url)));
        }
    };
    match tokio::time::timeout(timeout, get(&target)).await {
        Ok(Ok(status)) if status == expect_status => {
            CheckResult::ok(f64::from(status), format!("HTTP {status}"))
        }
        Ok(Ok(status)) => CheckResult::broken(
            f64::from(status),
            format!("HTTP {status}, expected {expect_status}"),
        ),
        Ok(Err(error)) => CheckResult::broken(0.0, format!("GET {}: {error}", clip(url))),
        Err(_) => CheckResult::timed_out(timeout, &format!("GET {}", clip(url))),
    }
}

/// Connects, sends the request and returns the response status. The connection is driven in
/// this future (not a spawned task), so dropping it at the timeout closes everything.
async fn get(target: &Target<'_>) -> Result<u16, String> {
    let stream = TcpStream::connect((target.host, target.port))
        .await
        .map_err(|error| format!("connect to {}: {error}", target.authority))?;
    let _ = stream.set_nodelay(true);
    let (mut sender, connection) = http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
        .await
        .map_err(|error| error.to_string())?;
    let request = hyper::Request::get(target.path_and_query)
        .header(hyper::header::HOST, target.authority)
        .header(hyper::header::USER_AGENT, "turbomon")
        .body(Empty::new())
        .map_err(|error| error.to_string())?;
    let mut connection = std::pin::pin!(connection);
    tokio::select! {
        response = sender.send_request(request) => response
            .map(|response| response.status().as_u16())
            .map_err(|error| error.to_string()),
        ended = &mut connection => Err(match ended {
            Ok(()) => "connection closed before a response".to_string(),
            Err(error) => error.to_string(),
        }),
    }
}
