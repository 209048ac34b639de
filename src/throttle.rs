//! Bandwidth control towards one engine: a token bucket on every byte the supervisor writes to
//! the engine's connections (below TLS, so gRPC, HTTP/2 and TLS framing all count), pulse mode
//! (a block, a pause, the next block) and daily windows with their own rate, in the supervisor's
//! local time.
//!
//! One [`Throttle`] per engine is shared by all its connections, so its submission and monitor
//! loops (and turbo-off calls) draw on one budget. What the engine sends back (acknowledgements,
//! statuses, push completions) is the engine's traffic and is not limited. A reload replaces
//! the [`BandwidthPolicy`] in place ([`Throttle::set_policy`]): writes waiting for tokens see the
//! new rate at their next refill.
//!
//! The decisions are plain arithmetic on a [`BucketState`] (tested without I/O); [`Throttled`]
//! is the thin `AsyncWrite` wrapper that waits when the bucket says so.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::config::{BandwidthWindow, EngineEntry, Pulse};

/// Seconds in a day, for the time of day.
const DAY_SECONDS: u64 = 24 * 60 * 60;
/// The bucket holds this much of a second's worth of bytes: bursts stay short, so any stretch
/// of time carries at most its rate's worth plus this.
const BURST_SECONDS: f64 = 0.1;
/// The bucket always holds at least one full-size segment, so a slow rate still sends whole
/// segments rather than dribbling bytes.
const MIN_BURST_BYTES: f64 = 1460.0;

/// What limits one engine's traffic: from its entry's `max_bandwidth`, `pulse` and
/// `bandwidth_windows`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BandwidthPolicy {
    /// Bytes per second outside any window; `None`: no limit.
    pub max_bytes_per_second: Option<u64>,
    /// Pulse mode.
    pub pulse: Option<Pulse>,
    /// Daily windows with their own rate.
    pub windows: Vec<BandwidthWindow>,
}

impl BandwidthPolicy {
    /// The policy an engine entry asks for.
    pub fn of(entry: &EngineEntry) -> Self {
        Self {
            max_bytes_per_second: entry.max_bandwidth.map(|b| b.bytes_per_second),
            pulse: entry.pulse,
            windows: entry.bandwidth_windows.clone(),
        }
    }

    /// Whether nothing is limited.
    pub fn is_unlimited(&self) -> bool {
        self.max_bytes_per_second.is_none() && self.pulse.is_none() && self.windows.is_empty()
    }

    /// The rate in force at `seconds_of_day` (local): a window's, or the engine's own.
    pub fn rate_at(&self, seconds_of_day: u64) -> Option<u64> {
        let minute = u32::try_from((seconds_of_day % DAY_SECONDS) / 60).unwrap_or(0);
        self.windows
            .iter()
            .find(|w| w.contains(minute))
            .map(|w| w.max_bandwidth.bytes_per_second)
            .or(self.max_bytes_per_second)
    }
}

/// The local time of day, read from an instant: the offset of the supervisor's local clock from
/// tokio's clock is taken once, so paused test time moves the time of day too.
#[derive(Debug, Clone, Copy)]
pub struct DayClock {
    origin: Instant,
    origin_seconds_of_day: u64,
}

impl DayClock {
    /// The supervisor's local time of day (with its time zone and daylight saving as now).
    pub fn local() -> Self {
        use chrono::Timelike;
        let now = chrono::Local::now();
        Self::starting_at(u64::from(now.num_seconds_from_midnight()))
    }

    /// A clock that reads `seconds_of_day` now (for tests and `bench`).
    pub fn starting_at(seconds_of_day: u64) -> Self {
        Self {
            origin: Instant::now(),
            origin_seconds_of_day: seconds_of_day % DAY_SECONDS,
        }
    }

    /// Seconds since local midnight at `now`.
    pub fn seconds_of_day(&self, now: Instant) -> u64 {
        (self.origin_seconds_of_day + now.saturating_duration_since(self.origin).as_secs())
            % DAY_SECONDS
    }
}

/// The bucket's arithmetic: tokens, the pulse's progress, the policy.
#[derive(Debug, Clone)]
pub struct BucketState {
    policy: BandwidthPolicy,
    clock: DayClock,
    tokens: f64,
    refilled: Instant,
    /// Bytes of the current pulse block sent so far.
    block_sent: u64,
    /// No byte before this instant (the pause after a block).
    paused_until: Option<Instant>,
}

impl BucketState {
    /// A full bucket under `policy`.
    pub fn new(policy: BandwidthPolicy, clock: DayClock, now: Instant) -> Self {
        let mut state = Self {
            policy,
            clock,
            tokens: 0.0,
            refilled: now,
            block_sent: 0,
            paused_until: None,
        };
        state.tokens = state.capacity(now).unwrap_or(0.0);
        state
    }

    fn capacity(&self, now: Instant) -> Option<f64> {
        let rate = self.policy.rate_at(self.clock.seconds_of_day(now))?;
        Some((rate as f64 * BURST_SECONDS).max(MIN_BURST_BYTES))
    }

    /// Replace the policy (a reload); the tokens held are kept within the new capacity.
    pub fn set_policy(&mut self, policy: BandwidthPolicy, now: Instant) {
        self.refill(now);
        self.policy = policy;
        if let Some(capacity) = self.capacity(now) {
            self.tokens = self.tokens.min(capacity);
        }
        if self.policy.pulse.is_none() {
            self.block_sent = 0;
            self.paused_until = None;
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.refilled = now;
        if let (Some(rate), Some(capacity)) = (
            self.policy.rate_at(self.clock.seconds_of_day(now)),
            self.capacity(now),
        ) {
            self.tokens = (self.tokens + rate as f64 * elapsed).min(capacity);
        }
    }

    /// How many of `wanted` bytes may be written now, or the instant to ask again.
    pub fn allowance(&mut self, now: Instant, wanted: usize) -> Result<usize, Instant> {
        if let Some(until) = self.paused_until {
            if now < until {
                return Err(until);
            }
            self.paused_until = None;
        }
        let mut allowed = wanted;
        if let Some(pulse) = self.policy.pulse {
            let left = pulse.block.bytes.saturating_sub(self.block_sent).max(1);
            allowed = allowed.min(usize::try_from(left).unwrap_or(usize::MAX));
        }
        self.refill(now);
        if let Some(rate) = self.policy.rate_at(self.clock.seconds_of_day(now)) {
            if self.tokens < 1.0 {
                // Wait for at least a segment's worth (or what is wanted, if less), so that
                // writes are not cut into single bytes.
                let needed = (allowed as f64).min(MIN_BURST_BYTES) - self.tokens;
                let wait = needed.max(1.0) / rate.max(1) as f64;
                return Err(now + Duration::from_secs_f64(wait));
            }
            allowed = allowed.min(self.tokens.floor() as usize);
        }
        Ok(allowed.max(1).min(wanted))
    }

    /// `bytes` were written at `now`.
    pub fn consume(&mut self, now: Instant, bytes: usize) {
        if self
            .policy
            .rate_at(self.clock.seconds_of_day(now))
            .is_some()
        {
            self.tokens -= bytes as f64;
        }
        if let Some(pulse) = self.policy.pulse {
            self.block_sent += bytes as u64;
            if self.block_sent >= pulse.block.bytes {
                self.block_sent = 0;
                self.paused_until = Some(now + pulse.delay);
            }
        }
    }
}

/// One engine's bandwidth budget, shared by all its connections. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Throttle {
    state: Arc<Mutex<BucketState>>,
}

impl Throttle {
    /// A budget under `policy`, with windows read on `clock`.
    pub fn new(policy: BandwidthPolicy, clock: DayClock) -> Self {
        Self {
            state: Arc::new(Mutex::new(BucketState::new(policy, clock, Instant::now()))),
        }
    }

    fn lock(&self) -> MutexGuard<'_, BucketState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Apply a new policy from now on (a reload); returns whether it changed.
    pub fn set_policy(&self, policy: BandwidthPolicy) -> bool {
        let mut state = self.lock();
        if state.policy == policy {
            return false;
        }
        state.set_policy(policy, Instant::now());
        true
    }

    /// The policy in force.
    pub fn policy(&self) -> BandwidthPolicy {
        self.lock().policy.clone()
    }

    /// `io` with every write drawn from this budget.
    pub fn wrap<T>(&self, io: T) -> Throttled<T> {
        Throttled {
            io,
            throttle: self.clone(),
            sleep: None,
        }
    }
}

/// A connection whose writes wait for the engine's budget; reads pass through.
#[derive(Debug)]
pub struct Throttled<T> {
    io: T,
    throttle: Throttle,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Throttled<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Throttled<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Pin::new(&mut self.io).poll_write(cx, buf);
        }
        loop {
            if let Some(sleep) = self.sleep.as_mut() {
                if sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                self.sleep = None;
            }
            let now = Instant::now();
            let allowance = self.throttle.lock().allowance(now, buf.len());
            match allowance {
                Ok(allowed) => {
                    let this = &mut *self;
                    let written = Pin::new(&mut this.io).poll_write(cx, &buf[..allowed]);
                    if let Poll::Ready(Ok(n)) = &written {
                        this.throttle.lock().consume(now, *n);
                    }
                    return written;
                }
                Err(at) => self.sleep = Some(Box::pin(tokio::time::sleep_until(at))),
            }
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Bandwidth, ByteSize, TimeOfDay};

    fn policy(rate: Option<u64>) -> BandwidthPolicy {
        BandwidthPolicy {
            max_bytes_per_second: rate,
            ..BandwidthPolicy::default()
        }
    }

    /// Writes as much as the bucket allows, as fast as it allows, for `seconds`; returns the
    /// bytes sent in each second.
    fn drain(state: &mut BucketState, start: Instant, seconds: u64) -> Vec<u64> {
        let mut per_second = vec![0u64; seconds as usize];
        let mut now = start;
        let end = start + Duration::from_secs(seconds);
        while now < end {
            match state.allowance(now, 16 * 1024) {
                Ok(n) => {
                    state.consume(now, n);
                    let second = now.duration_since(start).as_secs() as usize;
                    per_second[second] += n as u64;
                }
                Err(at) => now = at.max(now + Duration::from_micros(1)),
            }
        }
        per_second
    }

    #[tokio::test(start_paused = true)]
    async fn the_bucket_keeps_to_its_rate_over_any_second() {
        let start = Instant::now();
        let mut state = BucketState::new(policy(Some(100 * 1024)), DayClock::starting_at(0), start);
        let per_second = drain(&mut state, start, 30);
        let burst = (100.0 * 1024.0 * BURST_SECONDS) as u64;
        for (second, bytes) in per_second.iter().enumerate() {
            assert!(*bytes <= 100 * 1024 + burst, "second {second}: {bytes}");
        }
        let total: u64 = per_second.iter().sum();
        assert!(total >= 30 * 100 * 1024 * 99 / 100, "{total}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_pulse_sends_a_block_then_pauses() {
        let start = Instant::now();
        let pulsed = BandwidthPolicy {
            pulse: Some(Pulse {
                block: ByteSize { bytes: 4096 },
                delay: Duration::from_secs(1),
            }),
            ..BandwidthPolicy::default()
        };
        let mut state = BucketState::new(pulsed, DayClock::starting_at(0), start);
        assert_eq!(state.allowance(start, 10_000), Ok(4096));
        state.consume(start, 4096);
        assert_eq!(
            state.allowance(start, 10_000),
            Err(start + Duration::from_secs(1))
        );
        let later = start + Duration::from_secs(1);
        assert_eq!(state.allowance(later, 10_000), Ok(4096));
    }

    #[tokio::test(start_paused = true)]
    async fn windows_set_the_rate_by_local_time_of_day() {
        let windowed = BandwidthPolicy {
            max_bytes_per_second: Some(100_000),
            windows: vec![BandwidthWindow {
                from: TimeOfDay { minutes: 8 * 60 },
                to: TimeOfDay { minutes: 18 * 60 },
                max_bandwidth: Bandwidth {
                    bytes_per_second: 20_000,
                },
            }],
            ..BandwidthPolicy::default()
        };
        assert_eq!(windowed.rate_at(7 * 3600 + 3599), Some(100_000));
        assert_eq!(windowed.rate_at(8 * 3600), Some(20_000));
        assert_eq!(windowed.rate_at(18 * 3600), Some(100_000));
        // 07:59:50: ten seconds at 100 KB/s, then the window's 20 KB/s.
        let start = Instant::now();
        let mut state = BucketState::new(windowed, DayClock::starting_at(8 * 3600 - 10), start);
        let per_second = drain(&mut state, start, 20);
        assert!(per_second[5] > 90_000, "{per_second:?}");
        assert!(per_second[15] <= 22_000, "{per_second:?}");
    }
}
