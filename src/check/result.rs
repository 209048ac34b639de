//! What running or validating a check produces: the [`CheckResult`] of one run, the
//! [`CheckError`] that refuses a malformed check, and [`clip`] for quoting client text in either.

use std::time::Duration;

use crate::proto::{PerfData, TaskState};

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
    /// An http check whose URL is neither `http://` nor `https://`.
    #[error("http check url `{url}` is neither http:// nor https://")]
    UnsupportedScheme {
        /// The URL as sent (clipped to 200 characters).
        url: String,
    },
    /// An http check whose expected status is not an HTTP status code.
    #[error("http check expect_status {0} is not an HTTP status code (100..=999)")]
    ExpectStatusOutOfRange(u32),
    /// An http check whose `ca_pem` holds no usable CA certificate.
    #[error("http check ca_pem is unusable: {0}")]
    InvalidCaPem(String),
    /// An http check with both `ca_pem` and `insecure_skip_verify`.
    #[error(
        "http check has both ca_pem and insecure_skip_verify: a certificate is either verified or not"
    )]
    CaWithInsecure,
    /// A warning threshold above the critical one.
    #[error("warning_ms {warning_ms} is above critical_ms {critical_ms}")]
    ThresholdOrder {
        /// The warning threshold.
        warning_ms: u64,
        /// The critical threshold.
        critical_ms: u64,
    },
    /// A sim check whose outcome is not OK, BROKEN or FAILED.
    #[error(
        "sim check outcome {0} is not one of TASK_STATE_OK, TASK_STATE_BROKEN, TASK_STATE_FAILED"
    )]
    SimOutcome(String),
}

/// The outcome of one run of a check.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckResult {
    /// `Ok`, `Warning`, `Broken`, `PluginUnknown`, `Failed` or `TimedOut`.
    pub state: TaskState,
    /// The measured value: connect or response time in seconds (tcp, http), exit code (exec),
    /// the configured value (sim).
    pub value: f64,
    /// Human-readable detail: error text, a plugin's status line and long text.
    pub message: String,
    /// Performance data: a plugin's, or the `time` tcp and http measure.
    pub perfdata: Vec<PerfData>,
}

impl CheckResult {
    /// A result in `state` without performance data.
    pub fn new(state: TaskState, value: f64, message: String) -> Self {
        Self {
            state,
            value,
            message,
            perfdata: Vec::new(),
        }
    }

    /// An OK result.
    pub fn ok(value: f64, message: String) -> Self {
        Self::new(TaskState::Ok, value, message)
    }

    /// A BROKEN result: the rule does not hold.
    pub fn broken(value: f64, message: String) -> Self {
        Self::new(TaskState::Broken, value, message)
    }

    /// A FAILED result: the check itself could not be carried out.
    pub fn failed(message: String) -> Self {
        Self::new(TaskState::Failed, 0.0, message)
    }

    /// This result with `perfdata`.
    pub fn with_perfdata(mut self, perfdata: Vec<PerfData>) -> Self {
        self.perfdata = perfdata;
        self
    }

    /// A TIMED_OUT result after `timeout`.
    pub fn timed_out(timeout: Duration, detail: &str) -> Self {
        let mut message = format!("timed out after {}", humantime::format_duration(timeout));
        if !detail.is_empty() {
            message.push_str(": ");
            message.push_str(detail);
        }
        Self::new(TaskState::TimedOut, 0.0, message)
    }
}

/// `text` cut to at most [`QUOTE_LIMIT_CHARS`] characters, for quoting in an error message.
pub(super) fn clip(text: &str) -> String {
    match text.char_indices().nth(QUOTE_LIMIT_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}
