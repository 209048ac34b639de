//! The simulated link: a user-space link between a client (the supervisor) and a server (an
//! engine on loopback) with latency, jitter, bandwidth, loss and faults.
//!
//! A [`Link`] is built from a [`LinkProfile`] (named built-ins: [`profile()`]; the same profiles are
//! shipped in `config/links.toml`, read with [`load_profiles`]). Connections go through it in
//! three ways:
//!
//! - [`Link::connect`] dials a server and returns the shaped client end, a [`LinkStream`];
//! - [`Link::connector`] gives tonic a connector doing the same for every channel connection;
//! - [`Link::proxy`] shapes every connection accepted on a loopback listener.
//!
//! Each connection is a pair of byte pumps, one per direction, that deliver every
//! segment at the instant the pure arithmetic of [`shaping`] computes: serialisation at the
//! bandwidth, latency ± jitter without reordering, and for a lost segment one retransmission
//! timeout more with everything behind it waiting. A new connection costs one round trip (the
//! handshake) before its first byte.
//!
//! Faults, link-wide: [`Link::cut`] resets every live connection (both sides see the reset) and
//! refuses new ones until [`Link::heal`]; [`Link::set_blackhole`] stalls any connection that
//! sends a burst larger than the given size. A burst is the run of bytes a sender writes without
//! pausing more than 1 ms, however it happens to be read (a message written in one go is one
//! burst; request and reply one round trip apart are separate bursts); once stalled, a
//! connection delivers nothing more either way, as behind a path-MTU black hole. The link counts
//! bytes carried each way, connections opened and segments lost ([`Link::counters`]).
//!
//! `none` is not a profile: it means no link at all, which the caller handles by dialling
//! directly ([`profile()`] returns [`LinkError::NoLink`] for it).

pub mod profile;
pub mod shaping;

mod proxy;
mod pump;
mod shared;
mod stream;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use serde::{Deserialize, Serialize};
use tokio::io::DuplexStream;
use tokio::net::TcpStream;
use tokio::sync::watch;

pub use profile::{
    LinkError, LinkProfile, NO_LINK, builtin_profiles, format_bandwidth, load_profiles, lookup,
    parse_bandwidth, parse_profiles, profile,
};
pub use stream::{LinkConnector, LinkStream};

use pump::{Ending, handshake, pump_connection};
use shared::{AtomicCounters, Shared};

/// Size of the in-memory pipe between a [`LinkStream`] and its pump.
const PIPE_BYTES: usize = 64 * 1024;

/// What a link has carried since it was built.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkCounters {
    /// Bytes delivered from clients to servers.
    pub client_to_server_bytes: u64,
    /// Bytes delivered from servers to clients.
    pub server_to_client_bytes: u64,
    /// Connections that completed the handshake through the link.
    pub connections_opened: u64,
    /// Segments lost (and delivered one retransmission timeout late), both directions.
    pub segments_lost: u64,
}

impl std::fmt::Display for LinkCounters {
    /// Key=value pairs (logfmt), for log lines.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "client_to_server_bytes={} server_to_client_bytes={} connections_opened={} \
             segments_lost={}",
            self.client_to_server_bytes,
            self.server_to_client_bytes,
            self.connections_opened,
            self.segments_lost
        )
    }
}

/// A simulated link. Cheap to clone: clones share connections, faults and counters.
#[derive(Clone, Debug)]
pub struct Link {
    shared: Arc<Shared>,
}

impl Link {
    /// A link shaped by `profile`, with random jitter and loss. Refuses an invalid profile
    /// ([`LinkProfile::validate`]).
    pub fn new(profile: LinkProfile) -> Result<Link, LinkError> {
        Link::with_seed(profile, rand::random())
    }

    /// Like [`Link::new`] but jitter and loss are drawn from `seed`: the same seed and the same
    /// traffic (same chunks, same connection order) give the same timings. For tests.
    pub fn with_seed(profile: LinkProfile, seed: u64) -> Result<Link, LinkError> {
        profile.validate()?;
        let blackhole_bytes = profile.blackhole_bytes.unwrap_or(usize::MAX);
        Ok(Link {
            shared: Arc::new(Shared {
                profile,
                seed,
                next_connection: AtomicU64::new(0),
                refusing: AtomicBool::new(false),
                cuts: watch::Sender::new(0),
                blackhole_bytes: AtomicUsize::new(blackhole_bytes),
                counters: AtomicCounters::default(),
            }),
        })
    }

    /// The profile the link was built with (the black hole may since have been changed by
    /// [`Link::set_blackhole`]).
    pub fn profile(&self) -> &LinkProfile {
        &self.shared.profile
    }

    /// Dials `upstream` over real loopback TCP, pays the handshake round trip and returns the
    /// shaped client end. Fails with [`io::ErrorKind::ConnectionRefused`] while the link is cut,
    /// or with the dialling error after the round trip.
    pub async fn connect(&self, upstream: SocketAddr) -> io::Result<LinkStream> {
        let shared = &self.shared;
        let mut cuts = shared.cuts.subscribe();
        shared.refuse_if_cut()?;
        let dialled = TcpStream::connect(upstream).await;
        handshake(shared, &mut cuts).await?;
        let server = dialled?;
        // Nagle would add its own delays on top of the simulated ones.
        server.set_nodelay(true)?;
        shared.count_opened();
        let (client_end, pump_end) = tokio::io::duplex(PIPE_BYTES);
        let reset = Arc::new(AtomicBool::new(false));
        tokio::spawn(run_link_stream(
            Arc::clone(shared),
            pump_end,
            server,
            cuts,
            Arc::clone(&reset),
        ));
        Ok(LinkStream::new(client_end, reset))
    }

    /// A connector for tonic's `Endpoint::connect_with_connector`: every call dials `upstream`
    /// through this link (the URI is ignored).
    pub fn connector(&self, upstream: SocketAddr) -> LinkConnector {
        LinkConnector::new(self.clone(), upstream)
    }

    /// Cuts the link: every live connection is reset (clients and servers see the connection
    /// fail) and new connections are refused until [`Link::heal`].
    pub fn cut(&self) {
        self.shared.refusing.store(true, Ordering::Release);
        self.shared.cuts.send_modify(|cuts| *cuts += 1);
    }

    /// Heals a cut link: new connections are accepted again (connections reset by the cut stay
    /// closed).
    pub fn heal(&self) {
        self.shared.refusing.store(false, Ordering::Release);
    }

    /// Whether the link is cut.
    pub fn is_cut(&self) -> bool {
        self.shared.refusing.load(Ordering::Acquire)
    }

    /// Sets (or with `None` removes) the black hole: a connection whose burst exceeds `bytes`
    /// stalls. Applies to live connections from their next read; connections already stalled
    /// stay stalled.
    pub fn set_blackhole(&self, bytes: Option<usize>) {
        self.shared
            .blackhole_bytes
            .store(bytes.unwrap_or(usize::MAX), Ordering::Relaxed);
    }

    /// The black-hole size in force, if any.
    pub fn blackhole(&self) -> Option<usize> {
        self.shared.blackhole_bytes()
    }

    /// What the link has carried so far.
    pub fn counters(&self) -> LinkCounters {
        let counters = &self.shared.counters;
        LinkCounters {
            client_to_server_bytes: counters.client_to_server_bytes.load(Ordering::Relaxed),
            server_to_client_bytes: counters.server_to_client_bytes.load(Ordering::Relaxed),
            connections_opened: counters.connections_opened.load(Ordering::Relaxed),
            segments_lost: counters.segments_lost.load(Ordering::Relaxed),
        }
    }
}

/// Pumps one [`LinkStream`] connection to its end; on an abort, marks the client end reset
/// before dropping the pipe and resets the server socket.
async fn run_link_stream(
    shared: Arc<Shared>,
    mut pump_end: DuplexStream,
    mut server: TcpStream,
    mut cuts: watch::Receiver<u64>,
    reset: Arc<AtomicBool>,
) {
    let seed = shared.connection_seed();
    let ending = pump_connection(&shared, &mut pump_end, &mut server, &mut cuts, seed).await;
    if ending == Ending::Aborted {
        reset.store(true, Ordering::Release);
        // Best effort: if it fails the server sees an orderly close instead of a reset.
        let _ = server.set_zero_linger();
    }
}
