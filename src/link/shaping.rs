//! The pure timing arithmetic of one direction of a link: when does each byte arrive?
//!
//! Times are [`Duration`]s since an origin the caller picks (the pump uses the instant its
//! connection started), so this module needs no clock and is tested and benchmarked in isolation.
//!
//! The model, per direction, for a chunk of bytes that entered the link at instant `arrived`:
//!
//! 1. The chunk is cut into segments of at most `mtu` bytes.
//! 2. Serialisation: a segment starts transmitting at `max(arrived, link free)` and occupies the
//!    link for `bytes × 8 / bandwidth`; the next segment can only start after it (bytes leave no
//!    faster than the bandwidth, and time spent queued behind earlier bytes counts).
//! 3. Propagation: the segment then travels `latency ± jitter` (uniform, clamped at zero).
//! 4. Loss: with probability `loss` the segment is lost and arrives one retransmission timeout
//!    (`max(200 ms, 2 × round trip)`) later. The retransmission does not consume bandwidth again.
//! 5. Order: a segment never arrives before the one ahead of it, so jitter never reorders bytes
//!    and everything behind a lost segment waits for it (head-of-line blocking).
//!
//! The pump sleeps until absolute instants computed here, so timer overshoot never accumulates:
//! a late wake-up delays one write, not the model's clock.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::profile::LinkProfile;

/// The bytes of a chunk up to `end` (from the previous departure's `end`, or 0) arrive at the far
/// side at instant `at` (time since the origin).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Departure {
    /// Offset in the chunk one past the last byte of this departure.
    pub end: usize,
    /// When these bytes are delivered, as time since the origin.
    pub at: Duration,
}

/// When each part of one chunk is delivered.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChunkPlan {
    /// Departures in byte order, with non-decreasing `at`; consecutive segments due at the same
    /// instant are merged into one departure.
    pub departures: Vec<Departure>,
    /// Segments of this chunk that were lost and retransmitted.
    pub segments_lost: u64,
}

impl ChunkPlan {
    /// When the last byte of the chunk is delivered (`None` for an empty chunk).
    pub fn last_delivery(&self) -> Option<Duration> {
        self.departures.last().map(|departure| departure.at)
    }
}

/// The state of one direction of a link: when the wire is next free, when the last byte was
/// delivered, and the random source for jitter and loss.
#[derive(Clone, Debug)]
pub struct Shaper {
    latency: Duration,
    jitter: Duration,
    bandwidth_bps: Option<u64>,
    mtu: usize,
    loss: f64,
    retransmission_timeout: Duration,
    /// When the wire finishes transmitting everything handed to it so far.
    wire_free_at: Duration,
    /// When the last byte handed to the link is delivered.
    last_delivery: Duration,
    rng: StdRng,
}

impl Shaper {
    /// A shaper for one direction of `profile`, with jitter and loss drawn from `seed`.
    ///
    /// Expects a validated profile ([`LinkProfile::validate`]); out-of-range values are made
    /// harmless (mtu at least 1 byte, loss within 0..=1, zero bandwidth as 1 bit/s) so that
    /// nothing here panics or loops forever.
    pub fn new(profile: &LinkProfile, seed: u64) -> Shaper {
        let loss = if profile.loss.is_nan() {
            0.0
        } else {
            profile.loss.clamp(0.0, 1.0)
        };
        Shaper {
            latency: profile.latency,
            jitter: profile.jitter,
            bandwidth_bps: profile.bandwidth_bps.map(|bps| bps.max(1)),
            mtu: profile.mtu.max(1),
            loss,
            retransmission_timeout: profile.retransmission_timeout(),
            wire_free_at: Duration::ZERO,
            last_delivery: Duration::ZERO,
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// Plans the delivery of a chunk of `len` bytes that entered the link at `arrived`, and
    /// advances the direction's state past it. `arrived` should not go backwards between calls.
    pub fn plan(&mut self, arrived: Duration, len: usize) -> ChunkPlan {
        let mut plan = ChunkPlan {
            departures: Vec::with_capacity(1),
            segments_lost: 0,
        };
        let mut offset = 0;
        while offset < len {
            let segment = self.mtu.min(len - offset);
            offset += segment;
            let sent = arrived.max(self.wire_free_at) + self.serialisation_delay(segment);
            self.wire_free_at = sent;
            let mut at = sent + self.propagation_delay();
            if self.loss > 0.0 && self.rng.random_bool(self.loss) {
                plan.segments_lost += 1;
                at += self.retransmission_timeout;
            }
            let at = at.max(self.last_delivery);
            self.last_delivery = at;
            match plan.departures.last_mut() {
                Some(previous) if previous.at == at => previous.end = offset,
                _ => plan.departures.push(Departure { end: offset, at }),
            }
        }
        plan
    }

    /// When an end of stream (FIN) that entered the link at `arrived` is delivered: after every
    /// byte ahead of it and at least one latency after it was sent.
    pub fn close_at(&mut self, arrived: Duration) -> Duration {
        let at = (arrived.max(self.wire_free_at) + self.latency).max(self.last_delivery);
        self.last_delivery = at;
        at
    }

    /// How long `bytes` occupy the wire at this direction's bandwidth (zero when unlimited).
    pub fn serialisation_delay(&self, bytes: usize) -> Duration {
        match self.bandwidth_bps {
            Some(bps) => serialisation_delay(bytes, bps),
            None => Duration::ZERO,
        }
    }

    /// One segment's one-way delay: `latency` plus a uniform draw in `-jitter..=jitter`,
    /// clamped at zero.
    fn propagation_delay(&mut self) -> Duration {
        if self.jitter.is_zero() {
            return self.latency;
        }
        let spread = self.jitter.as_nanos() as f64;
        let offset = self.rng.random_range(-spread..=spread);
        let nanos = (self.latency.as_nanos() as f64 + offset).max(0.0);
        Duration::from_nanos(nanos as u64)
    }
}

/// How long `bytes` take to serialise at `bandwidth_bps` bits per second, rounded up to the
/// nanosecond (a bandwidth of 0 is treated as 1 bit/s).
pub fn serialisation_delay(bytes: usize, bandwidth_bps: u64) -> Duration {
    let bits = bytes as u128 * 8;
    let nanos = (bits * 1_000_000_000).div_ceil(bandwidth_bps.max(1) as u128);
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(millis: u64) -> Duration {
        Duration::from_millis(millis)
    }

    fn profile(latency: Duration, bandwidth_bps: Option<u64>) -> LinkProfile {
        LinkProfile {
            latency,
            bandwidth_bps,
            ..LinkProfile::default()
        }
    }

    #[test]
    fn serialisation_delay_is_bits_over_bandwidth() {
        assert_eq!(serialisation_delay(1250, 10_000_000), ms(1));
        assert_eq!(serialisation_delay(7000, 56_000), ms(1000));
        assert_eq!(
            serialisation_delay(1, 3),
            Duration::from_nanos(2_666_666_667)
        );
        assert_eq!(serialisation_delay(0, 1_000), Duration::ZERO);
    }

    #[test]
    fn chunk_takes_serialisation_time_plus_latency() {
        let mut shaper = Shaper::new(&profile(ms(25), Some(10_000_000)), 1);
        let plan = shaper.plan(ms(100), 125_000);
        // 125,000 bytes at 10 Mbit/s = 100 ms on the wire, then 25 ms of flight.
        assert_eq!(plan.last_delivery(), Some(ms(225)));
        assert_eq!(plan.departures.last().map(|d| d.end), Some(125_000));
        // The first segment only waits for its own serialisation.
        assert_eq!(
            plan.departures[0].at,
            ms(125) + serialisation_delay(1460, 10_000_000)
        );
        assert_eq!(plan.segments_lost, 0);
    }

    #[test]
    fn a_chunk_queues_behind_the_previous_one_on_a_busy_wire() {
        let mut shaper = Shaper::new(&profile(ms(10), Some(8_000)), 1); // 1 byte per ms
        let first = shaper.plan(ms(0), 100);
        assert_eq!(first.last_delivery(), Some(ms(110)));
        // Arrives at 50 ms while the wire is busy until 100 ms.
        let second = shaper.plan(ms(50), 100);
        assert_eq!(second.last_delivery(), Some(ms(210)));
        // Arrives after the wire went idle: only its own time counts.
        let third = shaper.plan(ms(500), 10);
        assert_eq!(third.last_delivery(), Some(ms(520)));
    }

    #[test]
    fn unlimited_bandwidth_delivers_a_whole_chunk_in_one_departure() {
        let mut shaper = Shaper::new(&profile(ms(5), None), 1);
        let plan = shaper.plan(ms(3), 1_000_000);
        assert_eq!(
            plan.departures,
            vec![Departure {
                end: 1_000_000,
                at: ms(8)
            }]
        );
    }

    #[test]
    fn jitter_spreads_delays_but_never_reorders() {
        let jittery = LinkProfile {
            latency: ms(20),
            jitter: ms(30),
            mtu: 100,
            ..LinkProfile::default()
        };
        let mut shaper = Shaper::new(&jittery, 7);
        let mut previous = Duration::ZERO;
        let mut off_nominal = 0;
        for step in 0..200u64 {
            let plan = shaper.plan(ms(step), 1000);
            let mut end = 0;
            for departure in &plan.departures {
                assert!(
                    departure.at >= previous,
                    "departure before the previous one"
                );
                assert!(departure.end > end);
                assert!(departure.at <= ms(step) + ms(50));
                end = departure.end;
                previous = departure.at;
                if departure.at != ms(step) + ms(20) {
                    off_nominal += 1;
                }
            }
            assert_eq!(end, 1000);
        }
        assert!(off_nominal > 100, "jitter had no effect");
    }

    #[test]
    fn a_lost_segment_arrives_one_rto_late_and_everything_behind_it_waits() {
        let lossy = LinkProfile {
            latency: ms(10),
            mtu: 100,
            loss: 0.3,
            ..LinkProfile::default()
        };
        let rto = lossy.retransmission_timeout();
        assert_eq!(rto, ms(200));
        // Find a seed whose first segment gets through but a later one is lost (bounded search).
        let mut checked = false;
        for seed in 0..100 {
            let mut shaper = Shaper::new(&lossy, seed);
            let plan = shaper.plan(Duration::ZERO, 2000);
            let on_time = plan.departures[0];
            if on_time.at != ms(10) || plan.segments_lost == 0 {
                continue;
            }
            // Bytes before the first loss arrive at the latency, every byte after waits an RTO.
            assert_eq!(plan.departures.len(), 2, "{plan:?}");
            assert!(on_time.end > 0 && on_time.end < 2000);
            assert_eq!(
                plan.departures[1],
                Departure {
                    end: 2000,
                    at: ms(210)
                }
            );
            checked = true;
            break;
        }
        assert!(checked, "no seed in 0..100 produced a mid-chunk loss");
    }

    #[test]
    fn certain_loss_delays_every_segment_by_exactly_one_rto() {
        let lost = LinkProfile {
            latency: ms(100),
            loss: 1.0,
            ..LinkProfile::default()
        };
        let mut shaper = Shaper::new(&lost, 3);
        let plan = shaper.plan(Duration::ZERO, 3 * 1460);
        assert_eq!(plan.segments_lost, 3);
        // RTO = max(200 ms, 2 × 200 ms round trip) = 400 ms.
        assert_eq!(plan.last_delivery(), Some(ms(500)));
    }

    #[test]
    fn same_seed_gives_the_same_plan() {
        let lossy = LinkProfile {
            latency: ms(10),
            jitter: ms(5),
            loss: 0.2,
            ..LinkProfile::default()
        };
        let mut a = Shaper::new(&lossy, 42);
        let mut b = Shaper::new(&lossy, 42);
        for step in 0..20 {
            assert_eq!(a.plan(ms(step), 5000), b.plan(ms(step), 5000));
        }
    }

    #[test]
    fn close_follows_the_last_byte() {
        let mut shaper = Shaper::new(&profile(ms(10), Some(8_000)), 1);
        let plan = shaper.plan(ms(0), 100);
        assert_eq!(plan.last_delivery(), Some(ms(110)));
        assert_eq!(shaper.close_at(ms(1)), ms(110));
        assert_eq!(shaper.close_at(ms(1000)), ms(1010));
    }

    #[test]
    fn invalid_values_never_loop_or_panic() {
        let broken = LinkProfile {
            mtu: 0,
            loss: f64::NAN,
            bandwidth_bps: Some(0),
            ..LinkProfile::default()
        };
        let mut shaper = Shaper::new(&broken, 1);
        let plan = shaper.plan(Duration::ZERO, 3);
        assert_eq!(plan.departures.last().map(|d| d.end), Some(3));
    }
}
