//! Response-time thresholds of the tcp and http checks, and the `time` performance value both
//! report: WARNING once the time reaches the warning threshold, BROKEN once it reaches the
//! critical one (a plugin's CRITICAL), in seconds as plugins write them.

use std::time::Duration;

use crate::proto::{PerfData, TaskState};

use super::result::CheckError;

/// A check's time thresholds; `None`: no threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Thresholds {
    /// WARNING at or above this time.
    pub warning: Option<Duration>,
    /// BROKEN at or above this time.
    pub critical: Option<Duration>,
}

impl Thresholds {
    /// The thresholds as the wire sends them (0: none); a warning above the critical one is
    /// refused.
    pub fn from_ms(warning_ms: u64, critical_ms: u64) -> Result<Self, CheckError> {
        if warning_ms != 0 && critical_ms != 0 && warning_ms > critical_ms {
            return Err(CheckError::ThresholdOrder {
                warning_ms,
                critical_ms,
            });
        }
        let threshold = |ms: u64| (ms != 0).then(|| Duration::from_millis(ms));
        Ok(Self {
            warning: threshold(warning_ms),
            critical: threshold(critical_ms),
        })
    }

    /// The state a check that took `elapsed` (and otherwise held) ends in, with the reason when
    /// a threshold was reached.
    pub fn judge(&self, elapsed: Duration) -> (TaskState, Option<String>) {
        let reached = |level: &str, threshold: Duration| {
            format!(
                "{} s reaches the {level} threshold {} s",
                seconds_text(elapsed),
                threshold.as_secs_f64()
            )
        };
        match (self.critical, self.warning) {
            (Some(critical), _) if elapsed >= critical => {
                (TaskState::Broken, Some(reached("critical", critical)))
            }
            (_, Some(warning)) if elapsed >= warning => {
                (TaskState::Warning, Some(reached("warning", warning)))
            }
            _ => (TaskState::Ok, None),
        }
    }

    /// `time=ELAPSEDs;WARN;CRIT;0;TIMEOUT`, in seconds.
    pub fn time_perfdata(&self, elapsed: Duration, timeout: Duration) -> PerfData {
        let range =
            |t: Option<Duration>| t.map(|t| t.as_secs_f64().to_string()).unwrap_or_default();
        PerfData {
            label: "time".into(),
            value: elapsed.as_secs_f64(),
            uom: "s".into(),
            warn: range(self.warning),
            crit: range(self.critical),
            min: Some(0.0),
            max: Some(timeout.as_secs_f64()),
        }
    }
}

/// `elapsed` in seconds with millisecond precision, for messages.
pub(super) fn seconds_text(elapsed: Duration) -> String {
    format!("{:.3}", elapsed.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_are_reached_at_their_value() {
        let t = Thresholds::from_ms(100, 300).unwrap();
        assert_eq!(t.judge(Duration::from_millis(99)).0, TaskState::Ok);
        assert_eq!(t.judge(Duration::from_millis(100)).0, TaskState::Warning);
        let (state, why) = t.judge(Duration::from_millis(300));
        assert_eq!(state, TaskState::Broken);
        assert_eq!(why.unwrap(), "0.300 s reaches the critical threshold 0.3 s");
        let none = Thresholds::from_ms(0, 0).unwrap();
        assert_eq!(none.judge(Duration::from_secs(3600)).0, TaskState::Ok);
        let critical_only = Thresholds::from_ms(0, 50).unwrap();
        assert_eq!(
            critical_only.judge(Duration::from_millis(60)).0,
            TaskState::Broken
        );
    }

    #[test]
    fn a_warning_above_the_critical_threshold_is_refused() {
        assert_eq!(
            Thresholds::from_ms(500, 200),
            Err(CheckError::ThresholdOrder {
                warning_ms: 500,
                critical_ms: 200
            })
        );
        assert!(Thresholds::from_ms(200, 200).is_ok());
        assert!(Thresholds::from_ms(500, 0).is_ok());
    }

    #[test]
    fn the_time_perfdata_is_in_seconds() {
        let t = Thresholds::from_ms(500, 2000).unwrap();
        let p = t.time_perfdata(Duration::from_millis(12), Duration::from_secs(10));
        assert_eq!(
            (p.label.as_str(), p.value, p.uom.as_str()),
            ("time", 0.012, "s")
        );
        assert_eq!((p.warn.as_str(), p.crit.as_str()), ("0.5", "2"));
        assert_eq!((p.min, p.max), (Some(0.0), Some(10.0)));
    }
}
