//! The client end of a connection through the link ([`LinkStream`]) and the connector that gives
//! tonic such streams ([`LinkConnector`]).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf};
use tonic::codegen::http::Uri;

use super::Link;

/// The client end of one connection through a [`Link`]: read and write it like a `TcpStream`.
///
/// Bytes written here reach the server shaped by the link; bytes the server sends arrive shaped.
/// When the link is cut (or the server resets the connection), reads and writes fail with
/// [`io::ErrorKind::ConnectionReset`], as they would on a reset TCP connection.
#[derive(Debug)]
pub struct LinkStream {
    io: DuplexStream,
    reset: Arc<AtomicBool>,
}

impl LinkStream {
    /// Wraps the client half of the pump's duplex pipe; `reset` is set by the pump before it
    /// drops its half when the connection is reset.
    pub(crate) fn new(io: DuplexStream, reset: Arc<AtomicBool>) -> LinkStream {
        LinkStream { io, reset }
    }

    /// Whether the connection was reset (link cut, or a side failed).
    pub fn is_reset(&self) -> bool {
        self.reset.load(Ordering::Acquire)
    }

    fn reset_error() -> io::Error {
        io::Error::new(
            io::ErrorKind::ConnectionReset,
            "connection reset by the simulated link",
        )
    }

    /// Turns the pipe's "other end gone" errors into a reset error when the pump reset us.
    fn map_result<T>(&self, result: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match result {
            Poll::Ready(Err(_)) if self.is_reset() => Poll::Ready(Err(Self::reset_error())),
            other => other,
        }
    }
}

impl AsyncRead for LinkStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.is_reset() {
            return Poll::Ready(Err(Self::reset_error()));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            // End of stream because the pump dropped its end after a reset: an error, not EOF.
            Poll::Ready(Ok(())) if buf.filled().len() == before && this.is_reset() => {
                Poll::Ready(Err(Self::reset_error()))
            }
            other => this.map_result(other),
        }
    }
}

impl AsyncWrite for LinkStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.is_reset() {
            return Poll::Ready(Err(Self::reset_error()));
        }
        let result = Pin::new(&mut this.io).poll_write(cx, buf);
        this.map_result(result)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.io).poll_flush(cx);
        this.map_result(result)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.is_reset() {
            return Poll::Ready(Err(Self::reset_error()));
        }
        let result = Pin::new(&mut this.io).poll_shutdown(cx);
        this.map_result(result)
    }
}

/// A `tower::Service<Uri>` for tonic's `Endpoint::connect_with_connector`: every call dials the
/// link's upstream through the link (paying the handshake), whatever the URI says.
#[derive(Clone, Debug)]
pub struct LinkConnector {
    link: Link,
    upstream: SocketAddr,
}

impl LinkConnector {
    pub(crate) fn new(link: Link, upstream: SocketAddr) -> LinkConnector {
        LinkConnector { link, upstream }
    }

    /// The server address every connection is dialled to.
    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }
}

impl tower::Service<Uri> for LinkConnector {
    type Response = TokioIo<LinkStream>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<TokioIo<LinkStream>>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: Uri) -> Self::Future {
        let link = self.link.clone();
        let upstream = self.upstream;
        Box::pin(async move { link.connect(upstream).await.map(TokioIo::new) })
    }
}
