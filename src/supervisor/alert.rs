//! Alert actions carrying a notification out: a log line, a webhook POST with a JSON body, or a
//! command with the notification in its environment and on its standard input.

use std::collections::HashMap;
use std::time::Duration;

use crate::config::{AlertConfig, AlertKind};
use crate::supervisor::notification::Notification;
use crate::supervisor::states::NotificationKind;

/// Why an alert action did not complete.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AlertError {
    /// The webhook could not be reached or answered with an error status.
    #[error("webhook {url}: {reason}")]
    Webhook {
        /// Where it posted.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// The command could not run or exited non-zero.
    #[error("command {program}: {reason}")]
    Command {
        /// What it ran.
        program: String,
        /// What went wrong.
        reason: String,
    },
}

/// The configured alert actions, by name.
#[derive(Debug, Clone, Default)]
pub(crate) struct AlertActions {
    actions: HashMap<String, AlertConfig>,
}

impl AlertActions {
    /// Index the configured actions by name.
    pub(crate) fn new(actions: &[AlertConfig]) -> Self {
        Self {
            actions: actions
                .iter()
                .map(|a| (a.name.clone(), a.clone()))
                .collect(),
        }
    }

    /// Fire the named actions for `event` in the background; failures are logged.
    pub(crate) fn fire(&self, names: &[String], event: Notification) {
        for name in names {
            let Some(action) = self.actions.get(name).cloned() else {
                tracing::error!(target: "turbomon::alert", alert = %name, "alert action is not defined");
                continue;
            };
            let event = event.clone();
            tokio::spawn(async move {
                if let Err(e) = fire_one(&action, &event).await {
                    tracing::error!(target: "turbomon::alert", alert = %action.name, error = %e, "alert action failed");
                }
            });
        }
    }
}

/// Run one action to completion.
pub(crate) async fn fire_one(action: &AlertConfig, event: &Notification) -> Result<(), AlertError> {
    match action.kind {
        AlertKind::Log => {
            log(&action.name, event);
            Ok(())
        }
        AlertKind::Webhook => {
            let url = action.url.clone().unwrap_or_default();
            let body = serde_json::to_vec(event).unwrap_or_default();
            tokio::time::timeout(action.timeout, post_json(action, &url, body))
                .await
                .unwrap_or_else(|_| Err(format!("no answer within {}", fmt(action.timeout))))
                .map_err(|reason| AlertError::Webhook { url, reason })
        }
        AlertKind::Command => {
            let program = action.program.clone().unwrap_or_default();
            run_command(action, event)
                .await
                .map_err(|reason| AlertError::Command { program, reason })
        }
    }
}

fn fmt(d: Duration) -> humantime::FormattedDuration {
    humantime::format_duration(d)
}

/// POST `body` as JSON to an `http://` or `https://` URL, verifying an https receiver against
/// the action's `ca` (read at each alert, so a renewed file applies at once) or the system's
/// roots, or not at all with `insecure_skip_verify`; any 2xx answer is success.
async fn post_json(action: &AlertConfig, url: &str, body: Vec<u8>) -> Result<(), String> {
    use crate::check::http_client::{self, Trust, Url};
    let url = Url::parse(url).map_err(|e| format!("bad url: {e}"))?;
    let ca_pem = match &action.ca {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read ca `{}`: {e}", path.display()))?,
        None => String::new(),
    };
    let trust = Trust::from_options(&ca_pem, action.insecure_skip_verify.unwrap_or(false))
        .map_err(|e| format!("ca: {e}"))?;
    let response = http_client::post(&url, &trust, "application/json", body.into())
        .await
        .map_err(|e| e.to_string())?;
    match hyper::StatusCode::from_u16(response.status) {
        Ok(status) if status.is_success() => Ok(()),
        Ok(status) => Err(format!("answered {status}")),
        Err(_) => Err(format!("answered {}", response.status)),
    }
}

/// One log line per notification: warn for a problem or a reminder, info for a recovery.
fn log(alert: &str, event: &Notification) {
    macro_rules! line {
        ($level:ident, $($message:tt)+) => {
            tracing::$level!(
                target: "turbomon::alert",
                alert = %alert,
                kind = %event.kind.name(),
                state = %event.state.name(),
                previous_state = %event.previous_state.name(),
                engine = %event.engine,
                relator = %event.relator,
                rule = %event.rule,
                node = %event.node,
                task = %event.task_id,
                attempt = event.attempt,
                value = event.value,
                since_unix_ms = event.since_unix_ms,
                output = %event.output,
                perfdata = %event.perfdata_text(),
                $($message)+
            )
        };
    }
    let state = event.state.name();
    match event.kind {
        NotificationKind::Problem => line!(warn, "rule is {state}"),
        NotificationKind::Reminder => line!(warn, "rule is still {state}"),
        NotificationKind::Recovery => line!(info, "rule recovered"),
    }
}

/// Run the command with the notification in `TURBOMON_*` variables and as JSON on standard
/// input.
async fn run_command(action: &AlertConfig, event: &Notification) -> Result<(), String> {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new(action.program.as_deref().unwrap_or_default())
        .args(&action.args)
        .envs(event.env())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| e.to_string())?;
    if let Some(mut stdin) = child.stdin.take() {
        let body = serde_json::to_vec(event).unwrap_or_default();
        // A command that ignores its input may close it early; that is fine.
        let _ = stdin.write_all(&body).await;
    }
    match tokio::time::timeout(action.timeout, child.wait()).await {
        Ok(Ok(status)) if status.success() => Ok(()),
        Ok(Ok(status)) => Err(format!("exited with {status}")),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => {
            let _ = child.kill().await;
            Err(format!("killed after {}", fmt(action.timeout)))
        }
    }
}
