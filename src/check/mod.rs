//! The checks an engine runs: `tcp` (connect within a timeout), `exec` (a Monitoring Plugins
//! program: exit code, status text and performance data), `http` (`http://` or `https://` GET,
//! status code, body text, redirects) and `sim` (a simulated check with a configurable
//! duration, outcome and value, for benchmarks and tests). tcp and http report their time in
//! seconds and turn WARNING or BROKEN when it reaches a threshold.
//!
//! A [`Check`] is validated once, when it arrives ([`TryFrom<&proto::Check>`]), so that a task
//! with a malformed check is refused with a precise [`CheckError`] instead of failing later.
//! [`run`] then executes it under a timeout and always produces a [`CheckResult`]: it never
//! panics and never returns an error, because every failure is an outcome the supervisor wants
//! to see (`WARNING`, `BROKEN`, `PLUGIN_UNKNOWN`, `FAILED` or `TIMED_OUT`, with the reason in
//! the message).

pub mod allow;
mod exec;
mod http;
pub mod http_client;
pub mod perfdata;
mod result;
mod tcp;
mod thresholds;

use std::time::Duration;

use crate::config::SimOutcome;
use crate::proto;
use crate::proto::TaskState;

pub use http::{HttpSpec, MAX_BODY_BYTES, MAX_REDIRECTS};
pub use result::{CheckError, CheckResult};
pub use thresholds::Thresholds;

/// A validated check, ready to run.
#[derive(Debug, Clone, PartialEq)]
pub enum Check {
    /// OK when a TCP connection to `host:port` is established within the timeout (and its
    /// time is below the thresholds).
    Tcp {
        /// Host name or address (an IPv6 literal without brackets).
        host: String,
        /// Port, 1..=65535.
        port: u16,
        /// Connect-time thresholds.
        thresholds: Thresholds,
    },
    /// Run a Monitoring Plugins `program` with `args` (no shell): exit 0 OK, 1 WARNING,
    /// 2 BROKEN, anything else PLUGIN_UNKNOWN.
    Exec {
        /// Program path or name looked up in `PATH`.
        program: String,
        /// Its arguments, passed as they are.
        args: Vec<String>,
    },
    /// An HTTP(S) GET; see [`HttpSpec`].
    Http(HttpSpec),
    /// A simulated check: waits `duration`, then reports `outcome` with `value`.
    Sim {
        /// How long the check takes; zero completes at once.
        duration: Duration,
        /// What it reports.
        outcome: SimOutcome,
        /// The value it reports.
        value: f64,
    },
}

impl Check {
    /// The kind's name as the configuration spells it: `tcp`, `exec`, `http` or `sim`.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Check::Tcp { .. } => "tcp",
            Check::Exec { .. } => "exec",
            Check::Http(_) => "http",
            Check::Sim { .. } => "sim",
        }
    }

    /// The result of a check that completes at once without waiting for anything (a `sim`
    /// check of zero duration), or `None` when the check has to be run.
    ///
    /// The engine uses this to complete such checks inline, without a task of their own.
    pub fn instant_result(&self) -> Option<CheckResult> {
        match self {
            Check::Sim {
                duration,
                outcome,
                value,
            } if duration.is_zero() => Some(sim_result(*outcome, *value)),
            _ => None,
        }
    }
}

impl TryFrom<&proto::Check> for Check {
    type Error = CheckError;

    fn try_from(check: &proto::Check) -> Result<Self, Self::Error> {
        Check::try_from(check.clone())
    }
}

impl TryFrom<proto::Check> for Check {
    type Error = CheckError;

    /// Validates and converts without copying the strings.
    fn try_from(check: proto::Check) -> Result<Self, Self::Error> {
        use proto::check::Kind;
        match check.kind.ok_or(CheckError::MissingKind)? {
            Kind::Tcp(tcp) => {
                let host = tcp::normalise_host(tcp.host);
                if host.is_empty() {
                    return Err(CheckError::EmptyHost);
                }
                let port = u16::try_from(tcp.port)
                    .ok()
                    .filter(|port| *port != 0)
                    .ok_or(CheckError::PortOutOfRange(tcp.port))?;
                let thresholds = Thresholds::from_ms(tcp.warning_ms, tcp.critical_ms)?;
                Ok(Check::Tcp {
                    host,
                    port,
                    thresholds,
                })
            }
            Kind::Exec(exec) => {
                if exec.program.is_empty() {
                    return Err(CheckError::EmptyProgram);
                }
                Ok(Check::Exec {
                    program: exec.program,
                    args: exec.args,
                })
            }
            Kind::Http(http) => {
                http::validate_url(&http.url)?;
                let expect_status = match http.expect_status {
                    0 => 200,
                    code @ 100..=999 => code as u16,
                    other => return Err(CheckError::ExpectStatusOutOfRange(other)),
                };
                let thresholds = Thresholds::from_ms(http.warning_ms, http.critical_ms)?;
                let trust =
                    http_client::Trust::from_options(&http.ca_pem, http.insecure_skip_verify)
                        .map_err(|error| match error {
                            http_client::TrustError::CaWithInsecure => CheckError::CaWithInsecure,
                            other => CheckError::InvalidCaPem(other.to_string()),
                        })?;
                Ok(Check::Http(HttpSpec {
                    url: http.url,
                    expect_status,
                    trust,
                    expect_body: Some(http.expect_body).filter(|text| !text.is_empty()),
                    follow_redirects: http.follow_redirects,
                    thresholds,
                }))
            }
            Kind::Sim(sim) => {
                let outcome = match TaskState::try_from(sim.outcome) {
                    Ok(TaskState::Ok) => SimOutcome::Ok,
                    Ok(TaskState::Broken) => SimOutcome::Broken,
                    Ok(TaskState::Failed) => SimOutcome::Failed,
                    Ok(other) => return Err(CheckError::SimOutcome(other.as_str_name().into())),
                    Err(_) => return Err(CheckError::SimOutcome(sim.outcome.to_string())),
                };
                Ok(Check::Sim {
                    duration: Duration::from_millis(sim.duration_ms),
                    outcome,
                    value: sim.value,
                })
            }
        }
    }
}

impl TryFrom<Option<proto::Check>> for Check {
    type Error = CheckError;

    /// A task's optional check: `None` is [`CheckError::Missing`].
    fn try_from(check: Option<proto::Check>) -> Result<Self, Self::Error> {
        Check::try_from(check.ok_or(CheckError::Missing)?)
    }
}

/// Runs `check`, giving up after `timeout`. `exec` reads at most `output_limit_bytes` bytes of
/// the program's combined stdout and stderr: its message and performance data come from them
/// (at most [`perfdata::MAX_PERFDATA_ITEMS`] items).
///
/// The tcp, exec and http checks run boxed: inline, they made `run`'s future 7,456 bytes, and
/// the engine spawns one future per check, so every check, a simulated one too, allocated and
/// copied that much.
pub async fn run(check: &Check, timeout: Duration, output_limit_bytes: usize) -> CheckResult {
    match check {
        Check::Tcp {
            host,
            port,
            thresholds,
        } => Box::pin(tcp::run(host, *port, thresholds, timeout)).await,
        Check::Exec { program, args } => {
            Box::pin(exec::run(program, args, timeout, output_limit_bytes)).await
        }
        Check::Http(spec) => Box::pin(http::run(spec, timeout)).await,
        Check::Sim {
            duration,
            outcome,
            value,
        } => {
            if duration.is_zero() {
                return sim_result(*outcome, *value);
            }
            if *duration > timeout {
                tokio::time::sleep(timeout).await;
                return CheckResult::timed_out(timeout, "simulated check takes longer");
            }
            tokio::time::sleep(*duration).await;
            sim_result(*outcome, *value)
        }
    }
}

fn sim_result(outcome: SimOutcome, value: f64) -> CheckResult {
    let state = match outcome {
        SimOutcome::Ok => TaskState::Ok,
        SimOutcome::Broken => TaskState::Broken,
        SimOutcome::Failed => TaskState::Failed,
    };
    CheckResult::new(state, value, String::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_running_check_is_small_whatever_its_kind() {
        // The engine spawns one of these per check: a simulated check must not carry the
        // http client's state, nor an http check keep it inline.
        let sim = Check::Sim {
            duration: Duration::ZERO,
            outcome: SimOutcome::Ok,
            value: 0.0,
        };
        let future = run(&sim, Duration::from_secs(1), 1024);
        assert!(
            std::mem::size_of_val(&future) <= 256,
            "check::run's future is {} bytes",
            std::mem::size_of_val(&future)
        );
    }

    fn tcp(host: &str, port: u32) -> proto::Check {
        proto::Check {
            kind: Some(proto::check::Kind::Tcp(proto::TcpCheck {
                host: host.into(),
                port,
                ..proto::TcpCheck::default()
            })),
        }
    }

    fn http(url: &str, expect_status: u32) -> proto::Check {
        proto::Check {
            kind: Some(proto::check::Kind::Http(proto::HttpCheck {
                url: url.into(),
                expect_status,
                ..proto::HttpCheck::default()
            })),
        }
    }

    #[test]
    fn tcp_check_needs_a_host_and_a_port_in_range() {
        assert_eq!(Check::try_from(&tcp("", 80)), Err(CheckError::EmptyHost));
        assert_eq!(
            Check::try_from(&tcp("h", 0)),
            Err(CheckError::PortOutOfRange(0))
        );
        assert_eq!(
            Check::try_from(&tcp("h", 65536)),
            Err(CheckError::PortOutOfRange(65536))
        );
        assert_eq!(
            Check::try_from(&tcp("[::1]", 22)),
            Ok(Check::Tcp {
                host: "::1".into(),
                port: 22,
                thresholds: Thresholds::default(),
            })
        );
        let mut slow = tcp("h", 22);
        if let Some(proto::check::Kind::Tcp(t)) = &mut slow.kind {
            (t.warning_ms, t.critical_ms) = (900, 100);
        }
        assert_eq!(
            Check::try_from(&slow),
            Err(CheckError::ThresholdOrder {
                warning_ms: 900,
                critical_ms: 100
            })
        );
    }

    #[test]
    fn http_check_takes_http_and_https_refuses_other_and_hostless_urls_and_defaults_to_200() {
        let err = Check::try_from(&http("ftp://example.com/", 0)).unwrap_err();
        assert!(matches!(err, CheckError::UnsupportedScheme { .. }), "{err}");
        assert!(err.to_string().contains("neither http:// nor https://"));
        assert!(matches!(
            Check::try_from(&http("example.com/x", 0)),
            Err(CheckError::InvalidUrl { .. })
        ));
        assert!(matches!(
            Check::try_from(&http("http:///x", 0)),
            Err(CheckError::InvalidUrl { .. })
        ));
        assert_eq!(
            Check::try_from(&http("http://h/", 1000)),
            Err(CheckError::ExpectStatusOutOfRange(1000))
        );
        assert_eq!(
            Check::try_from(&http("http://h:8080/health?x=1", 0)),
            Ok(Check::Http(HttpSpec {
                url: "http://h:8080/health?x=1".into(),
                expect_status: 200,
                trust: http_client::Trust::System,
                expect_body: None,
                follow_redirects: false,
                thresholds: Thresholds::default(),
            }))
        );
        assert!(Check::try_from(&http("https://example.com/", 0)).is_ok());
    }

    #[test]
    fn https_options_are_checked_when_the_check_arrives() {
        let with = |edit: fn(&mut proto::HttpCheck)| {
            let mut check = http("https://h/", 0);
            if let Some(proto::check::Kind::Http(h)) = &mut check.kind {
                edit(h);
            }
            Check::try_from(&check)
        };
        assert!(matches!(
            with(|h| h.ca_pem = "garbage".into()),
            Err(CheckError::InvalidCaPem(_))
        ));
        let err = with(|h| h.ca_pem = "garbage".into()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "http check ca_pem is unusable: no PEM certificate in it"
        );
        assert_eq!(
            with(|h| {
                h.ca_pem = "x".into();
                h.insecure_skip_verify = true;
            }),
            Err(CheckError::CaWithInsecure)
        );
        assert_eq!(
            with(|h| (h.warning_ms, h.critical_ms) = (2, 1)),
            Err(CheckError::ThresholdOrder {
                warning_ms: 2,
                critical_ms: 1
            })
        );
        let Ok(Check::Http(spec)) = with(|h| {
            h.insecure_skip_verify = true;
            h.expect_body = "ready".into();
            h.follow_redirects = true;
            h.warning_ms = 100;
        }) else {
            panic!("valid")
        };
        assert_eq!(spec.trust, http_client::Trust::Insecure);
        assert_eq!(spec.expect_body.as_deref(), Some("ready"));
        assert!(spec.follow_redirects);
        assert_eq!(spec.thresholds.warning, Some(Duration::from_millis(100)));
        assert_eq!(spec.thresholds.critical, None);
    }

    #[test]
    fn sim_check_outcome_must_be_ok_broken_or_failed() {
        let sim = |outcome: i32| proto::Check {
            kind: Some(proto::check::Kind::Sim(proto::SimCheck {
                duration_ms: 5,
                outcome,
                value: 1.5,
            })),
        };
        assert!(matches!(
            Check::try_from(&sim(TaskState::Unspecified as i32)),
            Err(CheckError::SimOutcome(_))
        ));
        assert!(matches!(
            Check::try_from(&sim(TaskState::TimedOut as i32)),
            Err(CheckError::SimOutcome(_))
        ));
        assert!(matches!(
            Check::try_from(&sim(42)),
            Err(CheckError::SimOutcome(_))
        ));
        assert_eq!(
            Check::try_from(&sim(TaskState::Broken as i32)),
            Ok(Check::Sim {
                duration: Duration::from_millis(5),
                outcome: SimOutcome::Broken,
                value: 1.5
            })
        );
    }

    #[test]
    fn missing_check_and_missing_kind_are_named() {
        assert_eq!(Check::try_from(None), Err(CheckError::Missing));
        assert_eq!(
            Check::try_from(&proto::Check { kind: None }),
            Err(CheckError::MissingKind)
        );
    }

    #[test]
    fn long_urls_are_clipped_in_errors() {
        let url = format!("ftp://{}", "x".repeat(5000));
        let err = Check::try_from(&http(&url, 0)).unwrap_err();
        assert!(err.to_string().len() < 400, "{err}");
    }
}
