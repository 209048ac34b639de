//! The byte pumps: move one connection's bytes both ways through the link, each byte delivered at
//! the instant [`super::shaping`] computes for it.
//!
//! Each direction is a reader and a writer joined by a queue:
//!
//! - The reader reads whatever the sender has written (up to [`READ_CHUNK_BYTES`]), stamps its
//!   arrival, asks the direction's [`Shaper`] when each segment is delivered, and queues the chunk
//!   with that plan. It never waits for deliveries, so the sender is not slowed by the latency,
//!   only by the link's window: at most [`window_bytes`] may be queued in one direction (about two
//!   bandwidth-delay products), after which the reader, and so the sender, waits like a TCP
//!   sender with a full window.
//! - The writer sleeps until each departure's instant and writes the bytes. Departures already
//!   due are written together in one write, without sleeping, so a fast link (`lan`) costs about
//!   one write per chunk read.
//!
//! Timing resolution: tokio's timer ticks every millisecond and rounds deadlines up. The writer
//! sleeps until half a tick before a deadline and treats anything due within [`TIMER_SLACK`] as
//! due now, so each write lands within about ±0.5 ms of its computed instant (plus wake-up
//! latency). A delay below the slack costs no sleep at all, so `lan`'s 0.1 ms latency and 0.2 ms
//! handshake are not felt: only its bandwidth and ordering remain, and the link stays far from
//! being the bottleneck. Because deadlines are absolute, errors never accumulate: a late wake-up
//! delays one write, not the bytes behind it.
//!
//! Black hole: a *burst* is the run of bytes the reader gets without waiting for the sender more
//! than [`BURST_GAP`] (a message written in one go, even when read in several chunks, is one
//! burst; messages written one round trip apart are separate bursts). When the current burst
//! grows beyond the black-hole size, the connection stalls: from then on nothing more is
//! delivered in either direction (bytes are read and discarded, as a path-MTU black hole drops
//! every large segment and everything queued behind it). A stalled connection is reset when
//! either side closes it or the link is cut.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, SemaphorePermit, mpsc, watch};
use tokio::time::{Instant, sleep_until};

use super::profile::LinkProfile;
use super::shaping::{ChunkPlan, Shaper};
use super::shared::Shared;

/// Largest chunk one read takes from a sender.
pub(crate) const READ_CHUNK_BYTES: usize = 64 * 1024;

/// Largest number of bytes queued in one direction when the bandwidth-delay product is larger
/// or the bandwidth unlimited.
pub(crate) const MAX_WINDOW_BYTES: usize = 4 * 1024 * 1024;

/// Deliveries due within this much of now are written at once (half of tokio's 1 ms tick).
pub(crate) const TIMER_SLACK: Duration = Duration::from_micros(500);

/// A reader that waited longer than this for the sender's next bytes starts a new burst.
pub(crate) const BURST_GAP: Duration = Duration::from_millis(1);

/// How a connection's pumping ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ending {
    /// Both directions reached end of stream and were shut down in order.
    Closed,
    /// A side failed, the link was cut, or a stalled connection was given up: reset both sides.
    Aborted,
}

/// Why a direction stopped early.
#[derive(Debug, thiserror::Error)]
enum Abort {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("a side closed a connection stalled by the black hole")]
    Stalled,
    #[error("the window semaphore was closed")]
    WindowClosed,
}

/// Waits until `deadline`, give or take [`TIMER_SLACK`]: returns at once when the deadline is
/// less than the slack away, otherwise sleeps until half a timer tick before it.
pub(crate) async fn wait_until(deadline: Instant) {
    if deadline > Instant::now() + TIMER_SLACK {
        sleep_until(deadline - TIMER_SLACK).await;
    }
}

/// Pays the handshake round trip over `shared`'s link; fails if the link is cut meanwhile or was cut before.
pub(crate) async fn handshake(shared: &Shared, cuts: &mut watch::Receiver<u64>) -> io::Result<()> {
    shared.refuse_if_cut()?;
    let cut_meanwhile = tokio::select! {
        () = wait_until(Instant::now() + shared.profile.round_trip()) => false,
        () = cut_signal(cuts) => true,
    };
    shared.refuse_if_cut()?;
    if cut_meanwhile {
        // Cut and healed during the handshake: this attempt was reset.
        return Err(io::Error::new(
            io::ErrorKind::ConnectionReset,
            "connection reset: the simulated link was cut during the handshake",
        ));
    }
    Ok(())
}

/// Resolves when the link is cut after `cuts` was subscribed; never if the link is gone.
pub(crate) async fn cut_signal(cuts: &mut watch::Receiver<u64>) {
    if cuts.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Bytes one direction may have queued: one read chunk plus two bandwidth-delay products
/// (capped at [`MAX_WINDOW_BYTES`]; the cap when the bandwidth is unlimited).
pub(crate) fn window_bytes(profile: &LinkProfile) -> usize {
    let in_flight = match profile.bandwidth_bps {
        Some(bps) => {
            let bytes = bps as f64 / 8.0 * profile.round_trip().as_secs_f64() * 2.0;
            if bytes >= MAX_WINDOW_BYTES as f64 {
                MAX_WINDOW_BYTES
            } else {
                bytes as usize
            }
        }
        None => MAX_WINDOW_BYTES,
    };
    READ_CHUNK_BYTES + in_flight
}

/// One direction's share of the connection state.
struct Direction<'a> {
    shared: &'a Shared,
    stalled: &'a AtomicBool,
    carried_bytes: &'a AtomicU64,
    origin: Instant,
    shaper: Shaper,
}

enum Item<'a> {
    Data {
        chunk: Bytes,
        plan: ChunkPlan,
        window: SemaphorePermit<'a>,
    },
    Close {
        at: Duration,
    },
}

/// Pumps one connection until both directions close (→ [`Ending::Closed`]) or something breaks
/// or the link is cut (→ [`Ending::Aborted`]; the caller resets both sides).
pub(crate) async fn pump_connection<C>(
    shared: &Shared,
    client: &mut C,
    server: &mut TcpStream,
    cuts: &mut watch::Receiver<u64>,
    seed: u64,
) -> Ending
where
    C: AsyncRead + AsyncWrite + Unpin + Send,
{
    let origin = Instant::now();
    let stalled = AtomicBool::new(false);
    let (client_read, client_write) = tokio::io::split(client);
    let (server_read, server_write) = server.split();
    let to_server = Direction {
        shared,
        stalled: &stalled,
        carried_bytes: &shared.counters.client_to_server_bytes,
        origin,
        shaper: Shaper::new(&shared.profile, seed),
    };
    let to_client = Direction {
        shared,
        stalled: &stalled,
        carried_bytes: &shared.counters.server_to_client_bytes,
        origin,
        shaper: Shaper::new(&shared.profile, seed.rotate_left(32) ^ 0x5bd1_e995),
    };
    let both = async {
        tokio::try_join!(
            to_server.run(client_read, server_write),
            to_client.run(server_read, client_write)
        )
    };
    tokio::select! {
        result = both => match result {
            Ok(_) => Ending::Closed,
            Err(abort) => {
                tracing::debug!(%abort, "simulated link connection aborted");
                Ending::Aborted
            }
        },
        () = cut_signal(cuts) => Ending::Aborted,
    }
}

impl Direction<'_> {
    async fn run<R, W>(self, mut source: R, mut sink: W) -> Result<(), Abort>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let Direction {
            shared,
            stalled,
            carried_bytes,
            origin,
            mut shaper,
        } = self;
        let window = Semaphore::new(window_bytes(&shared.profile));
        let window = &window;
        let (queue, mut queued) = mpsc::unbounded_channel::<Item<'_>>();

        let reader = async move {
            let mut buffer = vec![0u8; READ_CHUNK_BYTES];
            let mut burst_bytes = 0usize;
            loop {
                let waiting_since = Instant::now();
                let read = source.read(&mut buffer).await?;
                let now = Instant::now();
                if read == 0 {
                    if stalled.load(Ordering::Acquire) {
                        return Err(Abort::Stalled);
                    }
                    let at = shaper.close_at(now.saturating_duration_since(origin));
                    // The writer is gone only if it failed, and then the join reports that.
                    let _ = queue.send(Item::Close { at });
                    return Ok(());
                }
                if now.saturating_duration_since(waiting_since) > BURST_GAP {
                    burst_bytes = 0;
                }
                burst_bytes = burst_bytes.saturating_add(read);
                if shared
                    .blackhole_bytes()
                    .is_some_and(|limit| burst_bytes > limit)
                {
                    stalled.store(true, Ordering::Release);
                }
                if stalled.load(Ordering::Acquire) {
                    continue;
                }
                let chunk = Bytes::copy_from_slice(&buffer[..read]);
                let permits = u32::try_from(read).unwrap_or(u32::MAX);
                let permit = window
                    .acquire_many(permits)
                    .await
                    .map_err(|_| Abort::WindowClosed)?;
                let arrived = Instant::now().saturating_duration_since(origin);
                let plan = shaper.plan(arrived, read);
                if plan.segments_lost > 0 {
                    shared
                        .counters
                        .segments_lost
                        .fetch_add(plan.segments_lost, Ordering::Relaxed);
                }
                let item = Item::Data {
                    chunk,
                    plan,
                    window: permit,
                };
                if queue.send(item).is_err() {
                    return Ok(());
                }
            }
        };

        let writer = async move {
            while let Some(item) = queued.recv().await {
                match item {
                    Item::Data {
                        chunk,
                        plan,
                        mut window,
                    } => {
                        let mut written = 0;
                        let mut due = 0;
                        for departure in &plan.departures {
                            let deadline = origin + departure.at;
                            if deadline > Instant::now() + TIMER_SLACK {
                                deliver(
                                    &mut sink,
                                    &chunk[written..due],
                                    stalled,
                                    carried_bytes,
                                    &mut window,
                                )
                                .await?;
                                written = due;
                                wait_until(deadline).await;
                            }
                            due = departure.end;
                        }
                        deliver(
                            &mut sink,
                            &chunk[written..due],
                            stalled,
                            carried_bytes,
                            &mut window,
                        )
                        .await?;
                    }
                    Item::Close { at } => {
                        wait_until(origin + at).await;
                        if stalled.load(Ordering::Acquire) {
                            return Err(Abort::Stalled);
                        }
                        sink.shutdown().await?;
                        return Ok(());
                    }
                }
            }
            Ok(())
        };

        tokio::try_join!(reader, writer).map(|_| ())
    }
}

/// Writes `bytes` to the far side and counts them, unless the connection is stalled, then
/// gives their share of the window back (like an acknowledgement).
async fn deliver<W: AsyncWrite + Unpin>(
    sink: &mut W,
    bytes: &[u8],
    stalled: &AtomicBool,
    carried_bytes: &AtomicU64,
    window: &mut SemaphorePermit<'_>,
) -> io::Result<()> {
    if bytes.is_empty() || stalled.load(Ordering::Acquire) {
        return Ok(());
    }
    sink.write_all(bytes).await?;
    carried_bytes.fetch_add(bytes.len() as u64, Ordering::Relaxed);
    drop(window.split(bytes.len()));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_is_one_chunk_plus_two_bandwidth_delay_products() {
        let wan = super::super::profile("wan").unwrap();
        // 10 Mbit/s × 50 ms round trip = 62,500 bytes; two of them.
        assert_eq!(window_bytes(&wan), READ_CHUNK_BYTES + 125_000);
        let unlimited = LinkProfile::default();
        assert_eq!(
            window_bytes(&unlimited),
            READ_CHUNK_BYTES + MAX_WINDOW_BYTES
        );
    }
}
