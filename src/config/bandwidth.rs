//! The values of an engine entry's bandwidth keys: `max_bandwidth = "100KB/s"` ([`Bandwidth`]),
//! `pulse = { block = "4KB", delay = "1s" }` ([`Pulse`], [`ByteSize`]) and
//! `bandwidth_windows = [{ from = "08:00", to = "18:00", max_bandwidth = "20KB/s" }]`
//! ([`BandwidthWindow`], [`TimeOfDay`]). Each parses from its text, so a value that does not
//! read is refused by the loader naming its file, line and key; [`check_engine_bandwidth`]
//! refuses values that read but make no sense (zero, empty or overlapping windows).
//!
//! Units: `B`, `KB`, `MB`, `GB` are bytes in powers of 1024 (as packets are reported);
//! `kbit`, `Mbit`, `Gbit` are bits in powers of 1000 (as link profiles are written).

use std::time::Duration;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::error::KeyPath;
use super::findings::Findings;

/// A rate in bytes per second, written `"100KB/s"`, `"2MB/s"`, `"512kbit/s"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Bandwidth {
    /// Bytes per second.
    pub bytes_per_second: u64,
}

/// A number of bytes, written `"4KB"`, `"512B"`, `"1MB"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ByteSize {
    /// Bytes.
    pub bytes: u64,
}

/// A time of day in the supervisor's local time, written `"08:00"` (`"24:00"` is the end of
/// the day).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TimeOfDay {
    /// Minutes since midnight, 0 to 1440.
    pub minutes: u32,
}

/// Pulse mode: send one block, wait, send the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pulse {
    /// Bytes sent in one go.
    pub block: ByteSize,
    /// Pause after each block.
    #[serde(with = "humantime_serde")]
    pub delay: Duration,
}

/// A daily stretch with its own bandwidth limit, in the supervisor's local time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BandwidthWindow {
    /// Start (inclusive).
    pub from: TimeOfDay,
    /// End (exclusive); before `from`, the window runs past midnight.
    pub to: TimeOfDay,
    /// The limit inside the window.
    pub max_bandwidth: Bandwidth,
}

impl BandwidthWindow {
    /// Whether `minute` (since midnight, 0 to 1439) falls inside the window.
    pub fn contains(&self, minute: u32) -> bool {
        let (from, to) = (self.from.minutes, self.to.minutes);
        if from <= to {
            (from..to).contains(&minute)
        } else {
            minute >= from || minute < to
        }
    }
}

// === parsing ===

/// Byte units (powers of 1024) and bit units (powers of 1000, divided by 8), longest first so
/// that `KB` is not read as `B`.
const UNITS: &[(&str, f64)] = &[
    ("Gbit", 1e9 / 8.0),
    ("Mbit", 1e6 / 8.0),
    ("kbit", 1e3 / 8.0),
    ("bit", 1.0 / 8.0),
    ("GB", 1024.0 * 1024.0 * 1024.0),
    ("MB", 1024.0 * 1024.0),
    ("KB", 1024.0),
    ("B", 1.0),
];

/// `"4KB"` → 4096. The number may have decimals; the unit is required.
fn parse_amount(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (number, factor) = UNITS
        .iter()
        .find_map(|(unit, factor)| text.strip_suffix(unit).map(|n| (n.trim(), *factor)))
        .ok_or_else(|| format!("`{text}` has no unit (B, KB, MB, GB, or kbit, Mbit, Gbit)"))?;
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{number}` in `{text}` is not a number"))?;
    if !value.is_finite() || value < 0.0 {
        return Err(format!("`{text}` must be a positive amount"));
    }
    let bytes = (value * factor).round();
    if bytes > u64::MAX as f64 / 2.0 {
        return Err(format!("`{text}` is absurdly large"));
    }
    Ok(bytes as u64)
}

impl std::str::FromStr for Bandwidth {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let amount = text.trim().strip_suffix("/s").ok_or_else(|| {
            format!("`{text}` is not a rate: write it per second, e.g. \"100KB/s\"")
        })?;
        Ok(Bandwidth {
            bytes_per_second: parse_amount(amount)?,
        })
    }
}

impl std::str::FromStr for ByteSize {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        Ok(ByteSize {
            bytes: parse_amount(text)?,
        })
    }
}

impl std::str::FromStr for TimeOfDay {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || format!("`{text}` is not a time of day: write it HH:MM, e.g. \"08:00\"");
        let (hours, minutes) = text.trim().split_once(':').ok_or_else(bad)?;
        if hours.len() != 2 || minutes.len() != 2 {
            return Err(bad());
        }
        let hours: u32 = hours.parse().map_err(|_| bad())?;
        let minutes: u32 = minutes.parse().map_err(|_| bad())?;
        if minutes > 59 || hours > 24 || (hours == 24 && minutes > 0) {
            return Err(bad());
        }
        Ok(TimeOfDay {
            minutes: hours * 60 + minutes,
        })
    }
}

/// Formats `bytes` with the largest byte unit that keeps it whole (`4096` → `4KB`).
fn format_amount(bytes: u64) -> String {
    for (unit, factor) in [("GB", 1u64 << 30), ("MB", 1 << 20), ("KB", 1 << 10)] {
        if bytes >= factor && bytes.is_multiple_of(factor) {
            return format!("{}{unit}", bytes / factor);
        }
    }
    format!("{bytes}B")
}

impl std::fmt::Display for Bandwidth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/s", format_amount(self.bytes_per_second))
    }
}

impl std::fmt::Display for ByteSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&format_amount(self.bytes))
    }
}

impl std::fmt::Display for TimeOfDay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:02}:{:02}", self.minutes / 60, self.minutes % 60)
    }
}

/// Serde for a type that reads from and writes to its text.
macro_rules! text_serde {
    ($type:ty, $expecting:literal) => {
        impl Serialize for $type {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $type {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct TextVisitor;
                impl Visitor<'_> for TextVisitor {
                    type Value = $type;
                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        f.write_str($expecting)
                    }
                    fn visit_str<E: de::Error>(self, text: &str) -> Result<$type, E> {
                        text.parse().map_err(E::custom)
                    }
                }
                deserializer.deserialize_str(TextVisitor)
            }
        }
    };
}

text_serde!(Bandwidth, "a rate in quotes, e.g. \"100KB/s\"");
text_serde!(ByteSize, "a size in quotes, e.g. \"4KB\"");
text_serde!(TimeOfDay, "a time of day in quotes, e.g. \"08:00\"");

// === validation ===

/// Refuses bandwidth values that read but make no sense: a zero rate or block, a zero pulse
/// delay, a window that is empty or overlaps an earlier one.
pub(super) fn check_engine_bandwidth(
    findings: &mut Findings,
    path: &KeyPath,
    max_bandwidth: Option<Bandwidth>,
    pulse: Option<&Pulse>,
    windows: &[BandwidthWindow],
) {
    if max_bandwidth.is_some_and(|b| b.bytes_per_second == 0) {
        findings.error(
            path.key("max_bandwidth"),
            "must be more than 0 bytes per second (remove the key for no limit)",
        );
    }
    if let Some(pulse) = pulse {
        if pulse.block.bytes == 0 {
            findings.error(path.key("pulse").key("block"), "must be at least 1 byte");
        }
        if pulse.delay.is_zero() {
            findings.error(
                path.key("pulse").key("delay"),
                "must be longer than 0 (remove `pulse` to send without pauses)",
            );
        }
    }
    for (i, window) in windows.iter().enumerate() {
        let at = path.key("bandwidth_windows").index(i);
        if window.from == window.to || (window.from.minutes % 1440 == window.to.minutes % 1440) {
            findings.error(
                at.key("to"),
                "the window is empty: `from` and `to` are the same time",
            );
            continue;
        }
        if window.max_bandwidth.bytes_per_second == 0 {
            findings.error(
                at.key("max_bandwidth"),
                "must be more than 0 bytes per second",
            );
        }
        if let Some(earlier) = windows[..i]
            .iter()
            .position(|other| overlaps(other, window))
        {
            findings.error(
                at.key("from"),
                format!(
                    "overlaps bandwidth_windows[{earlier}] ({}..{}): which limit applies would be unclear",
                    windows[earlier].from, windows[earlier].to
                ),
            );
        }
    }
}

fn overlaps(a: &BandwidthWindow, b: &BandwidthWindow) -> bool {
    (0..1440).any(|minute| a.contains(minute) && b.contains(minute))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_sizes_and_times_read_in_their_units() {
        let rate = |t: &str| t.parse::<Bandwidth>().map(|b| b.bytes_per_second);
        assert_eq!(rate("100KB/s"), Ok(102_400));
        assert_eq!(rate("1.5MB/s"), Ok(1_572_864));
        assert_eq!(rate("56kbit/s"), Ok(7_000));
        assert_eq!(rate("10Mbit/s"), Ok(1_250_000));
        assert_eq!(rate("800B/s"), Ok(800));
        assert!(rate("100KB").is_err(), "a rate is per second");
        assert!(rate("fast/s").is_err());
        assert!(rate("-1KB/s").is_err());
        assert_eq!("4KB".parse::<ByteSize>().map(|b| b.bytes), Ok(4096));
        assert!("4".parse::<ByteSize>().is_err(), "the unit is required");
        assert_eq!("08:30".parse::<TimeOfDay>().map(|t| t.minutes), Ok(510));
        assert_eq!("24:00".parse::<TimeOfDay>().map(|t| t.minutes), Ok(1440));
        for bad in ["8:00", "25:00", "12:60", "noon", "24:01"] {
            assert!(bad.parse::<TimeOfDay>().is_err(), "{bad}");
        }
    }

    #[test]
    fn values_print_as_they_are_written() {
        assert_eq!(
            Bandwidth {
                bytes_per_second: 102_400
            }
            .to_string(),
            "100KB/s"
        );
        assert_eq!(ByteSize { bytes: 4096 }.to_string(), "4KB");
        assert_eq!(ByteSize { bytes: 1000 }.to_string(), "1000B");
        assert_eq!(TimeOfDay { minutes: 510 }.to_string(), "08:30");
    }

    #[test]
    fn a_window_past_midnight_wraps() {
        let window = BandwidthWindow {
            from: "22:00".parse().expect("time"),
            to: "06:00".parse().expect("time"),
            max_bandwidth: "1KB/s".parse().expect("rate"),
        };
        assert!(window.contains(23 * 60));
        assert!(window.contains(60));
        assert!(!window.contains(12 * 60));
        assert!(!window.contains(6 * 60), "the end is exclusive");
    }
}
