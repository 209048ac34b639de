//! The engine's accept loop, for tonic's `serve_with_incoming_shutdown`: connections accepted
//! with a back-off on accept errors, at most `max_open_connections` open at once, handshakes run
//! side by side so a silent client blocks no one, and each refused connection logged once with
//! the peer and the reason (rate-limited per peer address).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;

use super::server::{HANDSHAKE_TIMEOUT, ServerTls};

/// Handshakes in progress at once; more connections wait in the listen backlog.
const MAX_HANDSHAKES: usize = 256;
/// One log line per peer address at most this often; the rest are counted into the next.
const REFUSAL_LOG_PERIOD: Duration = Duration::from_secs(10);
/// Peers remembered for rate-limiting before the memory is cleared.
const REFUSAL_LOG_PEERS: usize = 10_000;
/// Back-off after an accept error (out of file descriptors, say), doubling up to the maximum.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(5);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Sent to a TLS client that reached a plaintext engine, so that its TLS library reports a
/// plaintext answer instead of a bare close.
const PLAINTEXT_NOTICE: &[u8] = b"turbomon engine: this port speaks plaintext gRPC, not TLS\r\n";

/// A connection refused before gRPC saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The peer's address.
    pub peer: SocketAddr,
    /// Why.
    pub reason: String,
}

/// Where refusals go besides the log (tests, metrics).
pub type RefusalSink = Option<mpsc::UnboundedSender<Refusal>>;

/// How an accept loop runs.
#[derive(Debug, Clone)]
pub struct Accept {
    /// The engine's name in log lines (its address).
    pub engine: String,
    /// Connections open at once; beyond it a new one is closed at once, with a refusal line.
    pub max_open_connections: usize,
    /// Where refusals go besides the log.
    pub refusals: RefusalSink,
}

impl Accept {
    /// An accept loop for `engine`, with room for `max_open_connections` connections.
    pub fn new(engine: impl Into<String>, max_open_connections: usize) -> Self {
        Self {
            engine: engine.into(),
            max_open_connections,
            refusals: None,
        }
    }

    /// Also send every refusal to `sink`.
    pub fn with_refusals(mut self, sink: mpsc::UnboundedSender<Refusal>) -> Self {
        self.refusals = Some(sink);
        self
    }
}

/// An accepted connection holding one of the `max_open_connections` places until it closes.
#[derive(Debug)]
pub struct Counted<S> {
    inner: S,
    _place: OwnedSemaphorePermit,
}

impl<S> Counted<S> {
    /// The connection inside.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl<S: Connected> Connected for Counted<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

/// Accepted TLS connections with their handshake done, for `serve_with_incoming_shutdown`. The
/// accept loop ends, and the port closes, once the stream is dropped.
pub fn tls_incoming(
    listener: TcpListener,
    tls: ServerTls,
    accept: Accept,
) -> ReceiverStream<Result<Counted<TlsStream<TcpStream>>, std::io::Error>> {
    let limit = accept.max_open_connections;
    let log = Arc::new(RefusalLog::new(accept.engine, accept.refusals));
    let slots = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    spawn_accept_loop(
        listener,
        limit,
        Arc::clone(&log),
        move |tcp, peer, place, ready| {
            let tls = tls.clone();
            let log = Arc::clone(&log);
            let slots = Arc::clone(&slots);
            async move {
                let Ok(_slot) = slots.acquire_owned().await else {
                    return;
                };
                match tls.accept(tcp).await {
                    Ok(inner) => {
                        let _ = ready
                            .send(Ok(Counted {
                                inner,
                                _place: place,
                            }))
                            .await;
                    }
                    // A port check (connect, then close) is not a refusal worth a line.
                    Err(error) if error.closed_silently => {
                        tracing::debug!(target: "turbomon::engine", %peer, "connection closed before the TLS handshake");
                    }
                    Err(error) => log.refused(peer, error.reason),
                }
            }
        },
    )
}

/// Accepted plaintext connections. A TLS client is told this port is plaintext, logged and
/// closed; a client that sends nothing within the handshake time is closed too.
pub fn plaintext_incoming(
    listener: TcpListener,
    accept: Accept,
) -> ReceiverStream<Result<Counted<TcpStream>, std::io::Error>> {
    let limit = accept.max_open_connections;
    let log = Arc::new(RefusalLog::new(accept.engine, accept.refusals));
    spawn_accept_loop(
        listener,
        limit,
        Arc::clone(&log),
        move |mut tcp, peer, place, ready| {
            let log = Arc::clone(&log);
            async move {
                let mut first = [0u8; 1];
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, tcp.peek(&mut first)).await {
                    Ok(Ok(1..)) if first[0] == 0x16 => {
                        let _ = tcp.write_all(PLAINTEXT_NOTICE).await;
                        let _ = tcp.shutdown().await;
                        log.refused(
                        peer,
                        "a TLS client reached this plaintext engine (set [tls] on the engine, or \
                         remove [tls] from the supervisor)"
                            .to_string(),
                    );
                    }
                    Ok(Ok(1..)) => {
                        let _ = ready
                            .send(Ok(Counted {
                                inner: tcp,
                                _place: place,
                            }))
                            .await;
                    }
                    // Closed before saying anything: nothing to serve, nothing worth a log line.
                    Ok(Ok(0)) | Ok(Err(_)) => {}
                    Err(_) => log.refused(
                        peer,
                        format!(
                            "sent nothing within {}",
                            humantime::format_duration(HANDSHAKE_TIMEOUT)
                        ),
                    ),
                }
            }
        },
    )
}

/// Accept until the returned stream is dropped, handing each connection, with its place among
/// the `limit` open ones, to `admit` on a task of its own; `admit` sends what is ready to serve.
fn spawn_accept_loop<S, F, Fut>(
    listener: TcpListener,
    limit: usize,
    log: Arc<RefusalLog>,
    admit: F,
) -> ReceiverStream<Result<S, std::io::Error>>
where
    S: Send + 'static,
    F: Fn(
            TcpStream,
            SocketAddr,
            OwnedSemaphorePermit,
            mpsc::Sender<Result<S, std::io::Error>>,
        ) -> Fut
        + Send
        + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (ready_tx, ready_rx) = mpsc::channel(64);
    let places = Arc::new(Semaphore::new(limit.max(1)));
    tokio::spawn(async move {
        let mut backoff = ACCEPT_BACKOFF_MIN;
        let mut failing = false;
        loop {
            let accepted = tokio::select! {
                // The server stopped polling: close the port.
                () = ready_tx.closed() => return,
                accepted = listener.accept() => accepted,
            };
            match accepted {
                Ok((tcp, peer)) => {
                    if failing {
                        tracing::info!(target: "turbomon::engine", engine = %log.engine, "accepting connections again");
                    }
                    failing = false;
                    backoff = ACCEPT_BACKOFF_MIN;
                    let Ok(place) = Arc::clone(&places).try_acquire_owned() else {
                        // Closing at once keeps file descriptors for the connections in use.
                        drop(tcp);
                        log.refused(
                            peer,
                            format!("too many open connections (max_open_connections {limit})"),
                        );
                        continue;
                    };
                    let _ = tcp.set_nodelay(true);
                    tokio::spawn(admit(tcp, peer, place, ready_tx.clone()));
                }
                Err(error) => {
                    // Out of file descriptors and the like: retrying at once would spin a core.
                    if !failing {
                        tracing::warn!(target: "turbomon::engine", engine = %log.engine, %error, "cannot accept connections; backing off");
                    }
                    failing = true;
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                }
            }
        }
    });
    ReceiverStream::new(ready_rx)
}

/// Logs refused connections, at most one line per peer address per period.
struct RefusalLog {
    engine: String,
    sink: RefusalSink,
    peers: Mutex<HashMap<IpAddr, (Instant, u64)>>,
}

impl RefusalLog {
    fn new(engine: String, sink: RefusalSink) -> Self {
        Self {
            engine,
            sink,
            peers: Mutex::new(HashMap::new()),
        }
    }

    fn refused(&self, peer: SocketAddr, reason: String) {
        let suppressed = {
            let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
            if peers.len() >= REFUSAL_LOG_PEERS {
                peers.clear();
            }
            let now = Instant::now();
            match peers.get_mut(&peer.ip()) {
                Some((last, count)) if now.duration_since(*last) < REFUSAL_LOG_PERIOD => {
                    *count += 1;
                    None
                }
                Some((last, count)) => {
                    let suppressed = std::mem::take(count);
                    *last = now;
                    Some(suppressed)
                }
                None => {
                    peers.insert(peer.ip(), (now, 0));
                    Some(0)
                }
            }
        };
        if let Some(suppressed) = suppressed {
            tracing::warn!(target: "turbomon::engine", engine = %self.engine, %peer, %reason, suppressed, "connection refused");
        }
        if let Some(sink) = &self.sink {
            let _ = sink.send(Refusal { peer, reason });
        }
    }
}
