//! The `/metrics` endpoint: an HTTP/1 server (hyper) on the `metrics_listen` address that
//! answers `GET /metrics` with a registry encoded by prometheus-client, `GET /health` with
//! `SERVING` (200) or, once its owner is shutting down, `NOT_SERVING` (503), and 404 for any
//! other path.
//!
//! The answer is OpenMetrics text (`application/openmetrics-text; version=1.0.0`) unless the
//! request's `Accept` header prefers `text/plain`, the Prometheus text format 0.0.4, which
//! prometheus-client also encodes from the same registry. Prometheus itself asks for
//! OpenMetrics first; `promtool check metrics` reads only the older format (it takes an
//! OpenMetrics counter's `_total` sample for a family of its own without help), so tools like it
//! ask for `text/plain`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{ACCEPT, ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::registry::Registry;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// The configuration key both files use for the endpoint's address.
pub const METRICS_LISTEN_KEY: &str = "metrics_listen";

/// The path of the metrics.
pub const METRICS_PATH: &str = "/metrics";

/// The path of the health answer (for a load balancer or a process supervisor's probe).
const HEALTH_PATH: &str = "/health";

/// `Content-Type` of an OpenMetrics answer.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// `Content-Type` of a Prometheus text format 0.0.4 answer.
pub const PROMETHEUS_TEXT_CONTENT_TYPE: &str =
    prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Scrapers served at once; a connection beyond this is closed at once.
const MAX_CONNECTIONS: usize = 64;

/// A client that has not sent its request headers within this long is disconnected.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Pause after a failed accept (out of file descriptors), so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Why the endpoint cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The `metrics_listen` address cannot be bound.
    #[error("{METRICS_LISTEN_KEY} `{address}`: cannot listen: {source}")]
    Bind {
        /// The address as configured.
        address: String,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
}

/// The text formats the endpoint speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics 1.0 text, the default.
    OpenMetrics,
    /// The Prometheus text format 0.0.4.
    PrometheusText,
}

impl Format {
    /// The `Content-Type` of an answer in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => OPENMETRICS_CONTENT_TYPE,
            Format::PrometheusText => PROMETHEUS_TEXT_CONTENT_TYPE,
        }
    }
}

/// The format an `Accept` header asks for: Prometheus text when `text/plain` has a higher
/// quality than `application/openmetrics-text` (or is named and it is not), else OpenMetrics.
pub fn negotiate(accept: Option<&str>) -> Format {
    let (mut openmetrics, mut text) = (None::<f32>, None::<f32>);
    for range in accept.unwrap_or_default().split(',') {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or_default().to_ascii_lowercase();
        let quality = parts
            .filter_map(|param| {
                let (key, value) = param.split_once('=')?;
                key.trim()
                    .eq_ignore_ascii_case("q")
                    .then(|| value.trim().parse::<f32>().ok())?
            })
            .next()
            .unwrap_or(1.0);
        let slot = match media.as_str() {
            "application/openmetrics-text" => &mut openmetrics,
            "text/plain" => &mut text,
            _ => continue,
        };
        *slot = Some(slot.map_or(quality, |q| q.max(quality)));
    }
    match (openmetrics, text) {
        (None, Some(text)) if text > 0.0 => Format::PrometheusText,
        (Some(openmetrics), Some(text)) if text > openmetrics => Format::PrometheusText,
        _ => Format::OpenMetrics,
    }
}

/// `registry` encoded in `format`.
pub fn render(registry: &Registry, format: Format) -> Result<String, std::fmt::Error> {
    let mut text = String::new();
    match format {
        Format::OpenMetrics => prometheus_client::encoding::text::encode(&mut text, registry)?,
        Format::PrometheusText => {
            prometheus_client::encoding::prometheus_text::encode(&mut text, registry)?
        }
    }
    Ok(text)
}

/// A running `/metrics` endpoint; it stops when dropped.
#[derive(Debug)]
pub struct MetricsServer {
    address: SocketAddr,
    accepting: tokio::task::JoinHandle<()>,
    /// Cleared when the owner starts shutting down: `/health` answers NOT_SERVING.
    serving: Arc<AtomicBool>,
}

impl MetricsServer {
    /// Binds `listen` (a `metrics_listen` value: `host:port`, port 0 for any free port) and
    /// serves `registry` there until dropped. `Ok(None)` when `listen` is empty (no endpoint).
    /// Must be called within a tokio runtime.
    pub fn bind(listen: &str, registry: Arc<Registry>) -> Result<Option<Self>, MetricsError> {
        if listen.is_empty() {
            return Ok(None);
        }
        let bind_error = |source| MetricsError::Bind {
            address: listen.to_string(),
            source,
        };
        let listener = std::net::TcpListener::bind(listen).map_err(bind_error)?;
        listener.set_nonblocking(true).map_err(bind_error)?;
        let listener = TcpListener::from_std(listener).map_err(bind_error)?;
        let address = listener.local_addr().map_err(bind_error)?;
        if !address.ip().is_loopback() {
            tracing::warn!(target: "turbomon::metrics", %address, "metrics served beyond loopback: anyone who reaches this port can read the counts (read-only)");
        }
        let serving = Arc::new(AtomicBool::new(true));
        let accepting = tokio::spawn(accept_loop(listener, registry, Arc::clone(&serving)));
        Ok(Some(Self {
            address,
            accepting,
            serving,
        }))
    }

    /// From now on `/health` answers NOT_SERVING (503); the endpoint keeps serving until
    /// dropped, so a probe sees the shutdown before the port closes.
    pub fn set_not_serving(&self) {
        self.serving.store(false, Ordering::Relaxed);
    }

    /// The address bound (the port chosen, when `listen` asked for port 0).
    pub fn addr(&self) -> SocketAddr {
        self.address
    }

    /// The endpoint's URL, `http://ADDR/metrics`.
    pub fn url(&self) -> String {
        format!("http://{}{METRICS_PATH}", self.address)
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        // Dropping the accept loop's task drops its connections' tasks with it.
        self.accepting.abort();
    }
}

async fn accept_loop(listener: TcpListener, registry: Arc<Registry>, serving: Arc<AtomicBool>) {
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        match accepted {
            Ok((stream, _)) if connections.len() < MAX_CONNECTIONS => {
                connections.spawn(serve_connection(
                    stream,
                    Arc::clone(&registry),
                    Arc::clone(&serving),
                ));
            }
            // Too many scrapers at once: closed at once.
            Ok((stream, _)) => drop(stream),
            Err(error) => {
                tracing::debug!(target: "turbomon::metrics", %error, "accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

async fn serve_connection(stream: TcpStream, registry: Arc<Registry>, serving: Arc<AtomicBool>) {
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let answer = if request.uri().path() == HEALTH_PATH {
            health(serving.load(Ordering::Relaxed))
        } else {
            answer(&registry, &request)
        };
        async move { Ok::<_, Infallible>(answer) }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

/// The answer to one request: the metrics for `GET` or `HEAD /metrics`, 404 for any other path,
/// 405 for another method.
fn answer<B>(registry: &Registry, request: &Request<B>) -> Response<Full<Bytes>> {
    if request.uri().path() != METRICS_PATH {
        return plain(
            StatusCode::NOT_FOUND,
            format!("not found: metrics are at {METRICS_PATH}\n"),
        );
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut response = plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "only GET and HEAD\n".to_string(),
        );
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    let accept = request
        .headers()
        .get(ACCEPT)
        .and_then(|value| value.to_str().ok());
    let format = negotiate(accept);
    match render(registry, format) {
        Ok(text) => {
            let mut response = Response::new(Full::new(Bytes::from(text)));
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static(format.content_type()),
            );
            response
        }
        Err(_) => plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the metrics could not be encoded\n".to_string(),
        ),
    }
}

/// `/health`: 200 `SERVING`, or 503 `NOT_SERVING` while shutting down (any method).
fn health(serving: bool) -> Response<Full<Bytes>> {
    if serving {
        plain(StatusCode::OK, "SERVING\n".to_string())
    } else {
        plain(StatusCode::SERVICE_UNAVAILABLE, "NOT_SERVING\n".to_string())
    }
}

fn plain(status: StatusCode, text: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(text)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openmetrics_unless_plain_text_is_preferred() {
        assert_eq!(negotiate(None), Format::OpenMetrics);
        assert_eq!(negotiate(Some("*/*")), Format::OpenMetrics);
        // What Prometheus sends.
        assert_eq!(
            negotiate(Some(
                "application/openmetrics-text;version=1.0.0,application/openmetrics-text;\
                 version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
            )),
            Format::OpenMetrics
        );
        assert_eq!(
            negotiate(Some("text/plain; version=0.0.4")),
            Format::PrometheusText
        );
        assert_eq!(
            negotiate(Some("application/openmetrics-text;q=0.2, TEXT/PLAIN;Q=0.9")),
            Format::PrometheusText
        );
        assert_eq!(negotiate(Some("text/plain;q=0")), Format::OpenMetrics);
        assert_eq!(negotiate(Some("text/plain;q=oops")), Format::PrometheusText);
    }

    #[test]
    fn other_paths_and_methods_are_refused() {
        let registry = Registry::default();
        let request = |method: Method, uri: &str| {
            let mut request = Request::new(());
            *request.method_mut() = method;
            *request.uri_mut() = uri.parse().expect("uri");
            answer(&registry, &request)
        };
        assert_eq!(request(Method::GET, "/").status(), StatusCode::NOT_FOUND);
        assert_eq!(
            request(Method::GET, "/metrics/x").status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            request(Method::POST, "/metrics").status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
        let ok = request(Method::GET, "/metrics?debug=1");
        assert_eq!(ok.status(), StatusCode::OK);
        assert_eq!(
            ok.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()),
            Some(OPENMETRICS_CONTENT_TYPE)
        );
    }
}
