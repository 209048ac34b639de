//! The `http` check: a GET on an `http://` or `https://` URL over a fresh connection (see
//! [`super::http_client`]). OK when the final response has the expected status and, if asked,
//! a body containing the expected text; BROKEN on another status, a missing text, a refused
//! certificate or a server that cannot be reached; TIMED_OUT when no answer comes in time.
//! WARNING or BROKEN too when the response time reaches a threshold. The value is the response
//! time in seconds (all redirects included), reported as `time` performance data too.

use std::time::{Duration, Instant};

use crate::proto::TaskState;

use super::http_client::{self, Trust, Url, UrlError};
use super::result::{CheckError, CheckResult, clip};
use super::thresholds::{Thresholds, seconds_text};

/// Redirects followed at most.
pub const MAX_REDIRECTS: usize = 5;

/// At most this much of a body is searched for `expect_body`.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// What a validated http check asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpSpec {
    /// The URL to GET.
    pub url: String,
    /// The final status that means OK.
    pub expect_status: u16,
    /// How https certificates are checked.
    pub trust: Trust,
    /// Text the body must contain.
    pub expect_body: Option<String>,
    /// Follow up to [`MAX_REDIRECTS`] redirects.
    pub follow_redirects: bool,
    /// Response-time thresholds.
    pub thresholds: Thresholds,
}

/// Checks that `url` is an `http://` or `https://` URL with a host.
pub(super) fn validate_url(url: &str) -> Result<(), CheckError> {
    Url::parse(url).map(|_| ()).map_err(|error| match error {
        UrlError::UnsupportedScheme => CheckError::UnsupportedScheme { url: clip(url) },
        UrlError::Invalid(reason) => CheckError::InvalidUrl {
            url: clip(url),
            reason,
        },
    })
}

/// What the request chain ended with.
struct Final {
    response: http_client::Response,
    redirects: usize,
    /// An https hop went without certificate verification.
    unverified: bool,
}

/// Runs the check; see the module documentation.
pub(super) async fn run(spec: &HttpSpec, timeout: Duration) -> CheckResult {
    let url = match Url::parse(&spec.url) {
        Ok(url) => url,
        Err(error) => {
            return CheckResult::failed(format!("invalid url `{}`: {error}", clip(&spec.url)));
        }
    };
    let start = Instant::now();
    let ended = match tokio::time::timeout(timeout, follow(spec, url)).await {
        Ok(ended) => ended,
        Err(_) => return CheckResult::timed_out(timeout, &format!("GET {}", clip(&spec.url))),
    };
    let elapsed = start.elapsed();
    let last = match ended {
        Ok(last) => last,
        Err(reason) => {
            return CheckResult::broken(0.0, format!("GET {}: {reason}", clip(&spec.url)));
        }
    };
    let mut message = format!("HTTP {}", last.response.status);
    if last.redirects > 0 {
        message.push_str(&format!(" after {} redirects", last.redirects));
    }
    let (state, detail) = if last.response.status != spec.expect_status {
        (
            TaskState::Broken,
            Some(format!("expected {}", spec.expect_status)),
        )
    } else if let Some(missing) = missing_body_text(spec, &last.response) {
        (TaskState::Broken, Some(missing))
    } else {
        spec.thresholds.judge(elapsed)
    };
    match detail {
        Some(detail) => message.push_str(&format!(", {detail}")),
        None => message.push_str(&format!(" in {} s", seconds_text(elapsed))),
    }
    if last.unverified {
        message.push_str(" (certificate not verified)");
    }
    CheckResult::new(state, elapsed.as_secs_f64(), message)
        .with_perfdata(vec![spec.thresholds.time_perfdata(elapsed, timeout)])
}

/// GETs `url`, following redirects when the check asks for it.
async fn follow(spec: &HttpSpec, mut url: Url) -> Result<Final, String> {
    let read_body = if spec.expect_body.is_some() {
        MAX_BODY_BYTES
    } else {
        0
    };
    let mut unverified = false;
    let mut redirects = 0;
    loop {
        unverified |= url.is_https() && !spec.trust.verifies();
        let response = http_client::get(&url, &spec.trust, read_body)
            .await
            .map_err(|error| error.to_string())?;
        let location = match &response.location {
            Some(location) if spec.follow_redirects && is_redirect(response.status) => location,
            _ => {
                return Ok(Final {
                    response,
                    redirects,
                    unverified,
                });
            }
        };
        if redirects == MAX_REDIRECTS {
            return Err(format!(
                "more than {MAX_REDIRECTS} redirects (the last to {})",
                clip(location)
            ));
        }
        url = url
            .join(location)
            .map_err(|error| format!("redirect to `{}`: {error}", clip(location)))?;
        redirects += 1;
    }
}

fn is_redirect(status: u16) -> bool {
    matches!(status, 301 | 302 | 303 | 307 | 308)
}

/// Why the body does not satisfy `expect_body`, if it does not.
fn missing_body_text(spec: &HttpSpec, response: &http_client::Response) -> Option<String> {
    let expected = spec.expect_body.as_deref()?;
    // `str::contains` searches in linear time whatever the body holds.
    if String::from_utf8_lossy(&response.body).contains(expected) {
        return None;
    }
    let searched = if response.body_cut {
        format!("in its first {} KiB", MAX_BODY_BYTES / 1024)
    } else {
        format!("({} bytes)", response.body.len())
    };
    Some(format!(
        "the body {searched} does not contain `{}`",
        clip(expected)
    ))
}
