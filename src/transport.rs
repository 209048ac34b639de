//! How the supervisor reaches an engine: a [`Dialer`] opens gRPC connections over plain loopback
//! TCP or through a simulated [`Link`](crate::link::Link).

use std::net::SocketAddr;
use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;
use tokio::net::TcpStream;

use tonic::transport::{Channel, Endpoint};

use crate::tls::{ClientTls, Side};

use crate::proto::engine_client::EngineClient;

/// Errors while reaching an engine.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The engine address is not `host:port`.
    #[error("engine address `{address}` is not host:port: {reason}")]
    BadAddress {
        /// The address as configured.
        address: String,
        /// Why it was refused.
        reason: String,
    },
    /// The engine's health service does not report it serving.
    #[error("engine at {address} does not report serving")]
    NotServing {
        /// The address dialled.
        address: String,
    },
    /// The connection could not be established.
    #[error("cannot connect to engine at {address}: {reason}")]
    Connect {
        /// The address dialled.
        address: String,
        /// Why, in words: the deepest cause (a refused connection, a TLS handshake failure).
        reason: String,
    },
}

/// The gRPC service name engines report in the health service.
pub const ENGINE_SERVICE: &str = "turbomon.v1.Engine";

/// How long a keep-alive ping may go unanswered before the connection is closed.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// Gauges of one engine's connections, kept up to date by its [`Dialer`] and the streams and
/// calls made through it (the supervisor's Prometheus metrics). The default gauges are
/// registered nowhere.
#[derive(Debug, Clone, Default)]
pub struct ConnectionGauges {
    /// Connections open now (the long-lived one, turbo-off calls, health checks).
    pub open_connections: Gauge,
    /// Batches (turbo on) or calls (turbo off) sent and not answered yet.
    pub in_flight: Gauge,
}

/// One batch or call in flight, counted on a gauge while this lives.
#[derive(Debug)]
pub struct InFlight(Gauge);

impl InFlight {
    /// Count one more on `gauge` until dropped.
    pub fn enter(gauge: &Gauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Opens connections to one engine, each call a new connection. A host name in the address is
/// looked up again for every connection, so an engine that moves to a new address is found at
/// the next reconnect.
#[derive(Clone)]
pub struct Dialer {
    address: String,
    link: Option<crate::link::Link>,
    max_message_bytes: usize,
    connect_timeout: Duration,
    sessions: Option<std::sync::Arc<tokio::sync::Semaphore>>,
    tls: Option<TlsTarget>,
    keepalive: Option<Duration>,
    gauges: ConnectionGauges,
    throttle: Option<crate::throttle::Throttle>,
}

/// Mutual TLS towards one engine: the supervisor's configuration and the name the engine's
/// certificate must be valid for.
#[derive(Clone, Debug)]
struct TlsTarget {
    config: ClientTls,
    server_name: String,
}

impl std::fmt::Debug for Dialer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dialer")
            .field("address", &self.address)
            .field("link", &self.link.as_ref().map(|l| l.profile().clone()))
            .field("tls", &self.tls.as_ref().map(|t| &t.server_name))
            .finish()
    }
}

impl Dialer {
    /// A dialer for the engine at `address` (`host:port`, a name or an IP literal; looked up at
    /// each connection), optionally through `link`.
    pub fn new(
        address: &str,
        link: Option<crate::link::Link>,
        max_message_bytes: usize,
    ) -> Result<Self, TransportError> {
        split_host_port(address).map_err(|reason| TransportError::BadAddress {
            address: address.to_string(),
            reason,
        })?;
        Ok(Self {
            address: address.to_string(),
            link,
            max_message_bytes,
            connect_timeout: Duration::from_secs(5),
            sessions: None,
            tls: None,
            keepalive: None,
            gauges: ConnectionGauges::default(),
            throttle: None,
        })
    }

    /// Keep `gauges` up to date: connections open, batches and calls in flight.
    pub fn with_gauges(mut self, gauges: ConnectionGauges) -> Self {
        self.gauges = gauges;
        self
    }

    /// Draw every byte written to the engine's connections from `throttle` (its bandwidth
    /// budget, shared by every connection of this dialer and its clones).
    pub fn with_throttle(mut self, throttle: crate::throttle::Throttle) -> Self {
        self.throttle = Some(throttle);
        self
    }

    /// The bandwidth budget, if any.
    pub fn throttle(&self) -> Option<&crate::throttle::Throttle> {
        self.throttle.as_ref()
    }

    /// The gauges this dialer keeps.
    pub fn gauges(&self) -> &ConnectionGauges {
        &self.gauges
    }

    /// Send HTTP/2 keep-alive pings every `interval`, also while no call is open, and close a
    /// connection whose engine does not answer one within [`KEEPALIVE_TIMEOUT`].
    pub fn with_keepalive(mut self, interval: Duration) -> Self {
        self.keepalive = Some(interval);
        self
    }

    /// Speak mutual TLS with `config` on every connection; the engine's certificate must be
    /// valid for `server_name`, by default the host part of the address.
    pub fn with_tls(mut self, config: ClientTls, server_name: Option<String>) -> Self {
        let server_name = server_name.unwrap_or_else(|| {
            split_host_port(&self.address)
                .map(|(host, _)| host.to_string())
                .unwrap_or_default()
        });
        self.tls = Some(TlsTarget {
            config,
            server_name,
        });
        self
    }

    /// Whether connections use TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Share `sessions` (slots for batches or calls in flight) with every other engine's dialer:
    /// streams and calls made through this dialer take a slot for each batch or call.
    pub fn with_sessions(mut self, sessions: std::sync::Arc<tokio::sync::Semaphore>) -> Self {
        self.sessions = Some(sessions);
        self
    }

    /// The shared session slots, if any.
    pub fn sessions(&self) -> Option<&std::sync::Arc<tokio::sync::Semaphore>> {
        self.sessions.as_ref()
    }

    /// The engine's address as configured (`host:port`).
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The simulated link in between, if any.
    pub fn link(&self) -> Option<&crate::link::Link> {
        self.link.as_ref()
    }

    /// Open a new long-lived connection. The channel re-dials by itself when the connection
    /// breaks.
    pub async fn connect(&self) -> Result<Connection, TransportError> {
        let (channel, _closed) = self.channel_tracked().await?;
        Ok(Connection {
            channel,
            max_message_bytes: self.max_message_bytes,
            in_flight: self.gauges.in_flight.clone(),
        })
    }

    /// Open a new connection and also return a [`ConnectionClosed`] signal that resolves once the
    /// connection's socket has been dropped, so that callers can bound how many are open at once.
    pub async fn connect_tracked(
        &self,
    ) -> Result<(EngineClient<Channel>, ConnectionClosed), TransportError> {
        let (channel, closed) = self.channel_tracked().await?;
        let client = EngineClient::new(channel)
            .max_decoding_message_size(self.max_message_bytes)
            .max_encoding_message_size(self.max_message_bytes);
        Ok((client, closed))
    }

    /// A new connection as a bare channel, with its closing signal.
    async fn channel_tracked(&self) -> Result<(Channel, ConnectionClosed), TransportError> {
        // The URI only names the :authority; the connector below does the dialling.
        let endpoint = Endpoint::from_shared(format!("http://{}", self.address))
            .map_err(|source| self.connect_error(source))?
            .connect_timeout(self.connect_timeout)
            .http2_adaptive_window(true);
        let endpoint = match self.keepalive {
            Some(interval) => endpoint
                .http2_keep_alive_interval(interval)
                .keep_alive_timeout(KEEPALIVE_TIMEOUT)
                .keep_alive_while_idle(true),
            None => endpoint,
        };
        let (closed_tx, closed_rx) = tokio::sync::watch::channel(false);
        let closed_tx = std::sync::Arc::new(closed_tx);
        let address = self.address.clone();
        let link = self.link.clone();
        let tls = self.tls.clone();
        let open = self.gauges.open_connections.clone();
        let throttle = self.throttle.clone();
        let connector = tower::service_fn(move |_uri: tonic::transport::Uri| {
            let link = link.clone();
            let address = address.clone();
            let tls = tls.clone();
            let throttle = throttle.clone();
            let closed_tx = std::sync::Arc::clone(&closed_tx);
            let open = open.clone();
            async move {
                let io: Box<dyn EngineIo> = match link {
                    None => Box::new(connect_tcp(&address).await?),
                    Some(link) => {
                        // The link dials the engine itself; it needs one concrete address.
                        let resolved = lookup(&address).await?;
                        Box::new(link.connect(resolved[0]).await?)
                    }
                };
                // Below TLS: every byte on the wire counts against the budget.
                let io: Box<dyn EngineIo> = match throttle {
                    None => io,
                    Some(throttle) => Box::new(throttle.wrap(io)),
                };
                // TLS runs over the link, so its bytes and round trips are simulated too.
                let io: Box<dyn EngineIo> = match tls {
                    None => io,
                    Some(tls) => Box::new(
                        tls.config
                            .connect(io, &tls.server_name)
                            .await
                            .map_err(std::io::Error::other)?,
                    ),
                };
                open.inc();
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(Tracked {
                    io,
                    closed: closed_tx,
                    open,
                }))
            }
        });
        let channel = endpoint
            .connect_with_connector(connector)
            .await
            .map_err(|source| self.connect_error(source))?;
        Ok((channel, ConnectionClosed(closed_rx)))
    }

    /// Ask the engine's standard gRPC health service whether `turbomon.v1.Engine` is serving,
    /// on a connection of its own.
    pub async fn health_check(&self) -> Result<(), TransportError> {
        use tonic_health::pb::health_check_response::ServingStatus;
        let (channel, closed) = self.channel_tracked().await?;
        let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
        let request = tonic_health::pb::HealthCheckRequest {
            service: ENGINE_SERVICE.to_string(),
        };
        let answer = tokio::time::timeout(self.connect_timeout, health.check(request)).await;
        drop(health);
        let serving = match answer {
            Ok(Ok(reply)) => reply.into_inner().status == ServingStatus::Serving as i32,
            _ => false,
        };
        closed.wait().await;
        if serving {
            Ok(())
        } else {
            Err(TransportError::NotServing {
                address: self.address.clone(),
            })
        }
    }

    fn connect_error(&self, source: tonic::transport::Error) -> TransportError {
        TransportError::Connect {
            address: self.address.clone(),
            reason: connect_reason(&source),
        }
    }
}

/// One long-lived connection to an engine, with the message size cap in force on it. Cheap to
/// clone: clones share the connection.
#[derive(Debug, Clone)]
pub struct Connection {
    channel: Channel,
    max_message_bytes: usize,
    in_flight: Gauge,
}

impl Connection {
    /// The generated engine client on this connection, with the message caps set.
    pub fn client(&self) -> EngineClient<Channel> {
        EngineClient::new(self.channel.clone())
            .max_decoding_message_size(self.max_message_bytes)
            .max_encoding_message_size(self.max_message_bytes)
    }

    /// The bare channel (for calls made without the generated client).
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// The largest message either direction may carry on this connection.
    pub fn max_message_bytes(&self) -> usize {
        self.max_message_bytes
    }

    /// The gauge of batches in flight to this engine (see [`ConnectionGauges`]).
    pub fn in_flight(&self) -> &Gauge {
        &self.in_flight
    }
}

/// Resolves once the tracked connection's socket is gone.
#[derive(Debug)]
pub struct ConnectionClosed(tokio::sync::watch::Receiver<bool>);

impl ConnectionClosed {
    /// Wait until the socket has been dropped (or the dialer is gone).
    pub async fn wait(mut self) {
        let _ = self.0.wait_for(|closed| *closed).await;
    }
}

/// Any byte stream a connection can run over.
trait EngineIo: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static> EngineIo for T {}

/// A socket that reports when it is dropped, and is counted open until then.
struct Tracked {
    io: Box<dyn EngineIo>,
    closed: std::sync::Arc<tokio::sync::watch::Sender<bool>>,
    open: Gauge,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.open.dec();
        self.closed.send_replace(true);
    }
}

impl tokio::io::AsyncRead for Tracked {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Tracked {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// The most useful sentence in a connection error's chain: a TLS handshake's reason when there
/// is one, else the deepest cause (tonic's own message is only "transport error").
fn connect_reason(error: &(dyn std::error::Error + 'static)) -> String {
    let mut deepest = error.to_string();
    let mut next = error.source();
    while let Some(cause) = next {
        if let Some(handshake) = cause.downcast_ref::<crate::tls::HandshakeError>() {
            return handshake.reason.clone();
        }
        if cause.downcast_ref::<rustls::Error>().is_some() {
            return crate::tls::reason::explain(cause, Side::Supervisor);
        }
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            if let Some(handshake) = io
                .get_ref()
                .and_then(|e| e.downcast_ref::<crate::tls::HandshakeError>())
            {
                return handshake.reason.clone();
            }
            if io.get_ref().is_some_and(|e| e.is::<rustls::Error>()) {
                return crate::tls::reason::explain(cause, Side::Supervisor);
            }
        }
        deepest = cause.to_string();
        next = cause.source();
    }
    deepest
}

/// Look `address` (`host:port`) up now: every address it names, in the resolver's order.
async fn lookup(address: &str) -> std::io::Result<Vec<SocketAddr>> {
    let found: Vec<SocketAddr> = tokio::net::lookup_host(address).await?.collect();
    if found.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("`{address}` resolves to no address"),
        ));
    }
    Ok(found)
}

/// A TCP connection to the first of `address`'s addresses that accepts one, without Nagle's
/// delay (the batches are already gathered; Nagle would only add latency).
async fn connect_tcp(address: &str) -> std::io::Result<TcpStream> {
    let mut last_error = None;
    for candidate in lookup(address).await? {
        match TcpStream::connect(candidate).await {
            Ok(stream) => {
                stream.set_nodelay(true)?;
                return Ok(stream);
            }
            Err(error) => last_error = Some(error),
        }
    }
    Err(last_error.expect("lookup returns at least one address"))
}

/// `host` and `port` of `host:port` (`[v6]:port` for IPv6), checked for shape only.
fn split_host_port(address: &str) -> Result<(&str, u16), String> {
    let (host, port) = match address.strip_prefix('[') {
        Some(rest) => rest
            .split_once("]:")
            .ok_or_else(|| "expected [ipv6]:port".to_string())?,
        None => address
            .rsplit_once(':')
            .ok_or_else(|| "missing `:port`".to_string())?,
    };
    if host.is_empty() {
        return Err("missing host".to_string());
    }
    let port = port
        .parse::<u16>()
        .map_err(|_| format!("`{port}` is not a port (1..=65535)"))?;
    Ok((host, port))
}
