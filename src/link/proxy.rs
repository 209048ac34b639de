//! The link as a loopback TCP proxy: accept connections on a listener and shape each one to the
//! upstream server, for programs that dial an address rather than take a connector.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::Link;
use super::pump::{Ending, handshake, pump_connection};
use super::shared::Shared;

/// Pause after a transient accept error (e.g. out of file descriptors) before accepting again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);

impl Link {
    /// Accepts connections on `listener` and shapes each one to `upstream` until `shutdown`
    /// resolves. Each accepted connection pays the handshake round trip before its first byte;
    /// while the link is cut, accepted connections are reset at once (the client sees its
    /// connection reset). On shutdown the listener is closed and live connections are closed.
    ///
    /// Returns an error only for an accept error that is not transient.
    pub async fn proxy(
        &self,
        listener: TcpListener,
        upstream: SocketAddr,
        shutdown: impl Future<Output = ()>,
    ) -> io::Result<()> {
        let mut connections = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok((client, _peer)) => {
                        let cuts = self.shared.cuts.subscribe();
                        connections.spawn(serve(Arc::clone(&self.shared), client, upstream, cuts));
                    }
                    Err(error) if is_transient(&error) => {
                        tracing::warn!(%error, "simulated link proxy: accept failed, retrying");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                    }
                    Err(error) => {
                        connections.abort_all();
                        return Err(error);
                    }
                },
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
        connections.abort_all();
        while connections.join_next().await.is_some() {}
        Ok(())
    }
}

fn is_transient(error: &io::Error) -> bool {
    use io::ErrorKind::*;
    matches!(
        error.kind(),
        ConnectionAborted
            | ConnectionReset
            | ConnectionRefused
            | Interrupted
            | WouldBlock
            | TimedOut
    ) || matches!(
        error.raw_os_error(),
        // ENOMEM, ENFILE, EMFILE, ENOBUFS: resources may come back.
        Some(12 | 23 | 24 | 105)
    )
}

/// Resets a socket: the peer sees "connection reset" rather than an orderly close.
fn reset(stream: TcpStream) {
    // Best effort: if it fails the peer sees an orderly close instead.
    let _ = stream.set_zero_linger();
}

/// One proxied connection: refuse while cut, dial upstream, pay the handshake, pump.
async fn serve(
    shared: Arc<Shared>,
    mut client: TcpStream,
    upstream: SocketAddr,
    mut cuts: watch::Receiver<u64>,
) {
    if shared.refuse_if_cut().is_err() {
        return reset(client);
    }
    let dialled = TcpStream::connect(upstream).await;
    if handshake(&shared, &mut cuts).await.is_err() {
        return reset(client);
    }
    let mut server = match dialled {
        Ok(server) => server,
        Err(error) => {
            tracing::debug!(%error, %upstream, "simulated link proxy: upstream unreachable");
            return reset(client);
        }
    };
    // Nagle would add its own delays on top of the simulated ones.
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    shared.count_opened();
    let seed = shared.connection_seed();
    if pump_connection(&shared, &mut client, &mut server, &mut cuts, seed).await == Ending::Aborted
    {
        reset(client);
        reset(server);
    }
}
