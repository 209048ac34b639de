//! Link profiles: the numbers that describe a simulated link (latency, jitter, bandwidth, segment
//! size, loss, black hole), their validation, the built-in named profiles and the
//! `config/links.toml` file that ships the same profiles for users to copy and edit.
//!
//! File shape (every key but `latency` optional):
//!
//! ```toml
//! [profiles.wan]
//! latency = "25ms"        # one-way delay
//! jitter = "0ms"          # uniform spread around the latency, never reordering bytes
//! bandwidth = "10Mbit"    # per direction: "<number><bit|kbit|Mbit|Gbit>", absent = unlimited
//! mtu = 1460              # segment size in bytes
//! loss = 0.0              # probability that one segment is lost (then retransmitted)
//! blackhole_bytes = 9000  # a burst larger than this stalls its connection; absent = off
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Name of the "profile" that means no simulated link at all (plain loopback). It is not a
/// profile: [`profile`] refuses it with [`LinkError::NoLink`] and the caller dials directly.
pub const NO_LINK: &str = "none";

/// Default segment size in bytes: an Ethernet MTU minus IP and TCP headers.
pub const DEFAULT_MTU_BYTES: usize = 1460;

/// Largest accepted segment size in bytes (the largest IPv4 packet).
pub const MAX_MTU_BYTES: usize = 65_535;

/// Largest accepted one-way latency or jitter; anything above is a typo, not a link.
pub const MAX_DELAY: Duration = Duration::from_secs(60);

/// Shortest retransmission timeout (Linux `TCP_RTO_MIN`).
pub const MIN_RETRANSMISSION_TIMEOUT: Duration = Duration::from_millis(200);

/// Errors of the link simulator: bad profiles, unreadable profile files, unknown names.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// A profile field holds a value the link cannot simulate.
    #[error("link profile field `{field}` {reason}")]
    InvalidProfile {
        /// The offending field, as named in the profiles file.
        field: &'static str,
        /// What is wrong with its value.
        reason: String,
    },
    /// The profiles file could not be read.
    #[error("cannot read link profiles file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The profiles file is not valid TOML, has an unknown key or a bad value.
    #[error("{}:{line}:{column}: {message}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line of the offending key or value (0 when the parser gave no position).
        line: usize,
        /// 1-based column of the offending key or value (0 when unknown).
        column: usize,
        /// What is wrong, naming the key.
        message: String,
    },
    /// A profile name that is neither built in nor in the file.
    #[error("unknown link profile `{name}`; known profiles: {known}")]
    UnknownProfile {
        /// The name asked for.
        name: String,
        /// The known names, comma separated (including `none`).
        known: String,
    },
    /// `none` was asked for: it means "no simulated link", which the caller handles.
    #[error("`none` is not a link profile: it means plain loopback without a simulated link")]
    NoLink,
}

/// The numbers that describe a simulated link, the same in both directions (see
/// docs/DESIGN.md, The link model).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkProfile {
    /// One-way delay added to every segment.
    #[serde(with = "humantime_serde")]
    pub latency: Duration,
    /// Uniform spread around `latency` (each segment's delay is in `latency ± jitter`, never below
    /// zero). Jitter never reorders bytes: a segment never departs before the previous one.
    #[serde(default, with = "humantime_serde")]
    pub jitter: Duration,
    /// Bandwidth of each direction in bits per second; `None` means unlimited. In the file:
    /// `bandwidth = "10Mbit"`.
    #[serde(
        rename = "bandwidth",
        default,
        serialize_with = "serialize_bandwidth",
        deserialize_with = "deserialize_bandwidth",
        skip_serializing_if = "Option::is_none"
    )]
    pub bandwidth_bps: Option<u64>,
    /// Segment size in bytes: the unit of loss.
    #[serde(default = "default_mtu", deserialize_with = "deserialize_mtu")]
    pub mtu: usize,
    /// Probability in `0..=1` that one segment is lost; a lost segment arrives one
    /// retransmission timeout late and everything behind it waits.
    #[serde(default, deserialize_with = "deserialize_loss")]
    pub loss: f64,
    /// A burst larger than this many bytes stalls its connection (path-MTU black hole);
    /// `None` disables the fault.
    #[serde(
        default,
        deserialize_with = "deserialize_blackhole",
        skip_serializing_if = "Option::is_none"
    )]
    pub blackhole_bytes: Option<usize>,
}

fn default_mtu() -> usize {
    DEFAULT_MTU_BYTES
}

impl Default for LinkProfile {
    /// A link with no delay, no bandwidth limit, no loss: loopback with extra copies.
    fn default() -> Self {
        LinkProfile {
            latency: Duration::ZERO,
            jitter: Duration::ZERO,
            bandwidth_bps: None,
            mtu: DEFAULT_MTU_BYTES,
            loss: 0.0,
            blackhole_bytes: None,
        }
    }
}

impl LinkProfile {
    /// Checks every field; the error names the first bad field. Refused: zero bandwidth, loss
    /// outside `0..=1` (or NaN), mtu 0 or above [`MAX_MTU_BYTES`], latency or jitter above
    /// [`MAX_DELAY`], a black hole of 0 bytes.
    pub fn validate(&self) -> Result<(), LinkError> {
        check_delay("latency", self.latency)?;
        check_delay("jitter", self.jitter)?;
        if let Some(bps) = self.bandwidth_bps {
            check_bandwidth(bps)?;
        }
        check_mtu(self.mtu)?;
        check_loss(self.loss)?;
        if let Some(bytes) = self.blackhole_bytes {
            check_blackhole(bytes)?;
        }
        Ok(())
    }

    /// The round trip: twice the one-way latency (what a connection handshake costs).
    pub fn round_trip(&self) -> Duration {
        self.latency.saturating_mul(2)
    }

    /// How late a lost segment arrives: `max(200 ms, 2 × round trip)`.
    pub fn retransmission_timeout(&self) -> Duration {
        MIN_RETRANSMISSION_TIMEOUT.max(self.round_trip().saturating_mul(2))
    }
}

fn invalid(field: &'static str, reason: String) -> LinkError {
    LinkError::InvalidProfile { field, reason }
}

fn check_delay(field: &'static str, delay: Duration) -> Result<(), LinkError> {
    if delay > MAX_DELAY {
        return Err(invalid(
            field,
            format!(
                "must be at most {}, got {}",
                humantime::format_duration(MAX_DELAY),
                humantime::format_duration(delay)
            ),
        ));
    }
    Ok(())
}

fn check_bandwidth(bps: u64) -> Result<(), LinkError> {
    if bps == 0 {
        return Err(invalid(
            "bandwidth",
            "must be above 0 bit/s (leave it out for unlimited)".into(),
        ));
    }
    Ok(())
}

fn check_mtu(mtu: usize) -> Result<(), LinkError> {
    if mtu == 0 || mtu > MAX_MTU_BYTES {
        return Err(invalid(
            "mtu",
            format!("must be within 1..={MAX_MTU_BYTES} bytes, got {mtu}"),
        ));
    }
    Ok(())
}

fn check_loss(loss: f64) -> Result<(), LinkError> {
    if !(0.0..=1.0).contains(&loss) {
        return Err(invalid(
            "loss",
            format!("must be a probability within 0..=1, got {loss}"),
        ));
    }
    Ok(())
}

fn check_blackhole(bytes: usize) -> Result<(), LinkError> {
    if bytes == 0 {
        return Err(invalid(
            "blackhole_bytes",
            "must be above 0 bytes (leave it out to disable the black hole)".into(),
        ));
    }
    Ok(())
}

/// Parses a bandwidth such as `"10Mbit"`, `"56kbit"`, `"1Gbit"`, `"2.5Mbit"` or `"9600bit"` into
/// bits per second (decimal prefixes: k = 1000). An optional `/s` suffix is accepted.
pub fn parse_bandwidth(text: &str) -> Result<u64, LinkError> {
    let bad = |why: &str| {
        invalid(
            "bandwidth",
            format!(
                "{why}: expected \"<number><bit|kbit|Mbit|Gbit>\" such as \"10Mbit\", got {text:?}"
            ),
        )
    };
    let trimmed = text.trim();
    let trimmed = trimmed.strip_suffix("/s").unwrap_or(trimmed).trim_end();
    let unit_start = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| bad("missing unit"))?;
    let (number, unit) = trimmed.split_at(unit_start);
    let multiplier: u64 = match unit.trim() {
        "bit" => 1,
        "kbit" | "Kbit" => 1_000,
        "Mbit" => 1_000_000,
        "Gbit" => 1_000_000_000,
        _ => return Err(bad("unknown unit")),
    };
    let value: f64 = number.parse().map_err(|_| bad("bad number"))?;
    let bps = (value * multiplier as f64).round();
    if !bps.is_finite() || bps > u64::MAX as f64 {
        return Err(bad("too large"));
    }
    let bps = bps as u64;
    check_bandwidth(bps)?;
    Ok(bps)
}

/// Formats bits per second the way the profiles file writes them (`"10Mbit"`), choosing the
/// largest unit that represents the value exactly.
pub fn format_bandwidth(bps: u64) -> String {
    for (multiplier, unit) in [
        (1_000_000_000, "Gbit"),
        (1_000_000, "Mbit"),
        (1_000, "kbit"),
    ] {
        if bps != 0 && bps.is_multiple_of(multiplier) {
            return format!("{}{unit}", bps / multiplier);
        }
    }
    format!("{bps}bit")
}

fn serialize_bandwidth<S: Serializer>(bps: &Option<u64>, serializer: S) -> Result<S::Ok, S::Error> {
    match bps {
        Some(bps) => serializer.serialize_str(&format_bandwidth(*bps)),
        None => serializer.serialize_none(),
    }
}

fn deserialize_bandwidth<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<u64>, D::Error> {
    let text = String::deserialize(deserializer)?;
    parse_bandwidth(&text)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

fn deserialize_mtu<'de, D: Deserializer<'de>>(deserializer: D) -> Result<usize, D::Error> {
    let mtu = usize::deserialize(deserializer)?;
    check_mtu(mtu).map_err(serde::de::Error::custom)?;
    Ok(mtu)
}

fn deserialize_loss<'de, D: Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
    let loss = f64::deserialize(deserializer)?;
    check_loss(loss).map_err(serde::de::Error::custom)?;
    Ok(loss)
}

fn deserialize_blackhole<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<usize>, D::Error> {
    let bytes = usize::deserialize(deserializer)?;
    check_blackhole(bytes).map_err(serde::de::Error::custom)?;
    Ok(Some(bytes))
}

/// The named profiles built into the binary; `config/links.toml` ships the same values.
///
/// | name | one-way latency | bandwidth each way | loss |
/// |---|---|---|---|
/// | `lan` | 0.1 ms | 1 Gbit/s | 0 |
/// | `wan` | 25 ms | 10 Mbit/s | 0 |
/// | `lossy-wan` | 25 ms | 10 Mbit/s | 1 % |
/// | `satellite` | 300 ms | 2 Mbit/s | 0.5 % |
/// | `modem` | 60 ms | 56 kbit/s | 0 |
pub fn builtin_profiles() -> BTreeMap<String, LinkProfile> {
    let ms = Duration::from_millis;
    let wan = LinkProfile {
        latency: ms(25),
        bandwidth_bps: Some(10_000_000),
        ..LinkProfile::default()
    };
    [
        (
            "lan",
            LinkProfile {
                latency: Duration::from_micros(100),
                bandwidth_bps: Some(1_000_000_000),
                ..LinkProfile::default()
            },
        ),
        ("wan", wan.clone()),
        ("lossy-wan", LinkProfile { loss: 0.01, ..wan }),
        (
            "satellite",
            LinkProfile {
                latency: ms(300),
                bandwidth_bps: Some(2_000_000),
                loss: 0.005,
                ..LinkProfile::default()
            },
        ),
        (
            "modem",
            LinkProfile {
                latency: ms(60),
                bandwidth_bps: Some(56_000),
                ..LinkProfile::default()
            },
        ),
    ]
    .into_iter()
    .map(|(name, profile)| (name.to_owned(), profile))
    .collect()
}

/// The whole profiles file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfilesFile {
    #[serde(default)]
    profiles: BTreeMap<String, LinkProfile>,
}

/// Reads a profiles file (shape in the module header). Unknown keys, bad values and the reserved
/// name `none` are refused with the file, line, column and key in the error.
pub fn load_profiles(path: &Path) -> Result<BTreeMap<String, LinkProfile>, LinkError> {
    let text = std::fs::read_to_string(path).map_err(|source| LinkError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_profiles(&text, path)
}

/// Parses the text of a profiles file; `path` only labels errors.
pub fn parse_profiles(text: &str, path: &Path) -> Result<BTreeMap<String, LinkProfile>, LinkError> {
    let file: ProfilesFile = toml::from_str(text).map_err(|error| {
        let (line, column) = error
            .span()
            .map(|span| line_and_column(text, span.start))
            .unwrap_or((0, 0));
        LinkError::Parse {
            path: path.to_owned(),
            line,
            column,
            message: error.message().trim().to_owned(),
        }
    })?;
    for (name, profile) in &file.profiles {
        let locate = |message: String| {
            let (line, column) = text
                .find(&format!("profiles.{name}"))
                .map(|at| line_and_column(text, at))
                .unwrap_or((0, 0));
            LinkError::Parse {
                path: path.to_owned(),
                line,
                column,
                message,
            }
        };
        if name == NO_LINK || name.is_empty() {
            return Err(locate(format!(
                "`profiles.{name}`: the name {name:?} is reserved for \"no simulated link\""
            )));
        }
        profile
            .validate()
            .map_err(|error| locate(format!("`profiles.{name}`: {error}")))?;
    }
    Ok(file.profiles)
}

fn line_and_column(text: &str, byte_offset: usize) -> (usize, usize) {
    let before = text.get(..byte_offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before
        .rfind('\n')
        .map_or(before.chars().count(), |newline| {
            before[newline + 1..].chars().count()
        })
        + 1;
    (line, column)
}

/// A built-in profile by name. `none` gives [`LinkError::NoLink`] (the caller dials directly);
/// an unknown name gives [`LinkError::UnknownProfile`] listing the known names.
pub fn profile(name: &str) -> Result<LinkProfile, LinkError> {
    lookup(&builtin_profiles(), name)
}

/// A profile by name from `profiles` (e.g. built-ins merged with a loaded file), with the same
/// errors as [`profile`].
pub fn lookup(
    profiles: &BTreeMap<String, LinkProfile>,
    name: &str,
) -> Result<LinkProfile, LinkError> {
    if name == NO_LINK {
        return Err(LinkError::NoLink);
    }
    profiles
        .get(name)
        .cloned()
        .ok_or_else(|| LinkError::UnknownProfile {
            name: name.to_owned(),
            known: KnownNames(profiles).to_string(),
        })
}

struct KnownNames<'a>(&'a BTreeMap<String, LinkProfile>);

impl fmt::Display for KnownNames<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(NO_LINK)?;
        for name in self.0.keys() {
            write!(f, ", {name}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bandwidth_strings_parse_with_decimal_prefixes() {
        assert_eq!(parse_bandwidth("10Mbit").ok(), Some(10_000_000));
        assert_eq!(parse_bandwidth("56kbit").ok(), Some(56_000));
        assert_eq!(parse_bandwidth("1Gbit").ok(), Some(1_000_000_000));
        assert_eq!(parse_bandwidth("2.5Mbit/s").ok(), Some(2_500_000));
        assert_eq!(parse_bandwidth("9600bit").ok(), Some(9600));
        for bad in ["", "10", "Mbit", "10Mbyte", "0Mbit", "1.2.3Mbit", "-5Mbit"] {
            assert!(parse_bandwidth(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn bandwidth_formats_back_to_the_same_value() {
        for bps in [56_000, 10_000_000, 1_000_000_000, 2_500_000, 9600, 1] {
            assert_eq!(parse_bandwidth(&format_bandwidth(bps)).ok(), Some(bps));
        }
        assert_eq!(format_bandwidth(10_000_000), "10Mbit");
        assert_eq!(format_bandwidth(2_500_000), "2500kbit");
    }

    #[test]
    fn line_and_column_are_one_based() {
        let text = "a\nbc\nd";
        assert_eq!(line_and_column(text, 0), (1, 1));
        assert_eq!(line_and_column(text, 3), (2, 2));
        assert_eq!(line_and_column(text, 5), (3, 1));
    }

    #[test]
    fn retransmission_timeout_is_at_least_200ms_or_two_round_trips() {
        let lan = profile("lan").unwrap();
        assert_eq!(lan.retransmission_timeout(), Duration::from_millis(200));
        let satellite = profile("satellite").unwrap();
        assert_eq!(satellite.round_trip(), Duration::from_millis(600));
        assert_eq!(
            satellite.retransmission_timeout(),
            Duration::from_millis(1200)
        );
    }
}
