//! What running or validating a check produces: the [`CheckResult`] of one run, the
//! [`CheckError`] that refuses a malformed check, and [`clip`] for quoting client text in either.

use std::time::Duration;

use crate::proto::TaskState;

/// Longest piece of client-supplied text (a URL, a host) quoted back in an error message.
const QUOTE_LIMIT_CHARS: usize = 200;

/// Why a check sent by the supervisor cannot be run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckError {
    /// The task carries no check at all.
    #[error("task has no check")]
    Missing,
    /// The check message has none of its `kind` fields set.
    #[error("check has no kind (expected one of tcp, exec, http, sim)")]
    MissingKind,
    /// A tcp check with an empty host.
    #[error("tcp check has an empty host")]
    EmptyHost,
    /// A tcp check whose port is 0 or above 65535.
    #[error("tcp check port {0} is out of range 1..=65535")]
    PortOutOfRange(u32),
    /// An exec check with an empty program.
    #[error("exec check has an empty program")]
    EmptyProgram,
    /// An http check whose URL cannot be parsed or has no host.
    #[error("http check url `{url}` is invalid: {reason}")]
    InvalidUrl {
        /// The URL as sent (clipped to 200 characters).
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An http check whose URL is not `http://` (`https://` needs TLS, which is not supported).
    #[error("http check url `{url}` is not http:// (only plain http is supported, no TLS)")]
    UnsupportedScheme {
        /// The URL as sent (clipped to 200 characters).
        url: String,
    },
    /// An http check whose expected status is not an HTTP status code.
    #[error("http check expect_status {0} is not an HTTP status code (100..=999)")]
    ExpectStatusOutOfRange(u32),
    /// A sim check whose outcome is not OK, BROKEN or FAILED.
    #[error(
        "sim check outcome {0} is not one of TASK_STATE_OK, TASK_STATE_BROKEN, TASK_STATE_FAILED"
    )]
    SimOutcome(String),
}

/// The outcome of one run of a check.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckResult {
    /// `Ok`, `Broken`, `Failed` or `TimedOut`.
    pub state: TaskState,
    /// The measured value: connect time in ms (tcp), exit code (exec), HTTP status (http), the
    /// configured value (sim).
    pub value: f64,
    /// Human-readable detail: error text, the first bytes of output.
    pub message: String,
}

impl CheckResult {
    /// An OK result.
    pub fn ok(value: f64, message: String) -> Self {
        Self {
            state: TaskState::Ok,
            value,
            message,
        }
    }

    /// A BROKEN result: the rule does not hold.
    pub fn broken(value: f64, message: String) -> Self {
        Self {
            state: TaskState::Broken,
            value,
            message,
        }
    }

    /// A FAILED result: the check itself could not be carried out.
    pub fn failed(message: String) -> Self {
        Self {
            state: TaskState::Failed,
            value: 0.0,
            message,
        }
    }

    /// A TIMED_OUT result after `timeout`.
    pub fn timed_out(timeout: Duration, detail: &str) -> Self {
        let mut message = format!("timed out after {}", humantime::format_duration(timeout));
        if !detail.is_empty() {
            message.push_str(": ");
            message.push_str(detail);
        }
        Self {
            state: TaskState::TimedOut,
            value: 0.0,
            message,
        }
    }
}

/// `text` cut to at most [`QUOTE_LIMIT_CHARS`] characters, for quoting in an error message.
pub(super) fn clip(text: &str) -> String {
    match text.char_indices().nth(QUOTE_LIMIT_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}
