//! The state every clone of a [`Link`](super::Link) and every connection pump shares: the
//! profile, the fault switches and the counters.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use tokio::sync::watch;

use super::profile::LinkProfile;

#[derive(Debug, Default)]
pub(super) struct AtomicCounters {
    pub(super) client_to_server_bytes: AtomicU64,
    pub(super) server_to_client_bytes: AtomicU64,
    pub(super) connections_opened: AtomicU64,
    pub(super) segments_lost: AtomicU64,
}

/// The state every clone of a [`Link`] and every connection pump shares.
#[derive(Debug)]
pub(super) struct Shared {
    pub(super) profile: LinkProfile,
    pub(super) seed: u64,
    pub(super) next_connection: AtomicU64,
    /// Set by `cut`, cleared by `heal`: new connections are refused while set.
    pub(super) refusing: AtomicBool,
    /// Bumped by every `cut`; live connections watch it and reset themselves.
    pub(super) cuts: watch::Sender<u64>,
    /// Black-hole size in bytes; `usize::MAX` when off.
    pub(super) blackhole_bytes: AtomicUsize,
    pub(super) counters: AtomicCounters,
}

impl Shared {
    pub(super) fn blackhole_bytes(&self) -> Option<usize> {
        match self.blackhole_bytes.load(Ordering::Relaxed) {
            usize::MAX => None,
            bytes => Some(bytes),
        }
    }

    pub(super) fn refuse_if_cut(&self) -> io::Result<()> {
        if self.refusing.load(Ordering::Acquire) {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                "connection refused: the simulated link is cut",
            ));
        }
        Ok(())
    }

    /// A seed for the next connection's shapers, distinct per connection, reproducible for a
    /// link built [`Link::with_seed`].
    pub(super) fn connection_seed(&self) -> u64 {
        let connection = self.next_connection.fetch_add(1, Ordering::Relaxed);
        splitmix64(self.seed ^ splitmix64(connection))
    }

    /// Counts a connection that made it through the handshake to its server.
    pub(super) fn count_opened(&self) {
        self.counters
            .connections_opened
            .fetch_add(1, Ordering::Relaxed);
    }
}

pub(super) fn splitmix64(value: u64) -> u64 {
    let mut z = value.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
