//! Validation of an engine file: listen and metrics addresses and transport security, the exec
//! allow-list, caps, durations and the state directory.

use std::time::Duration;

use super::error::KeyPath;
use super::findings::Findings;
use super::model::EngineConfig;
use super::values::{check_metrics_listen, check_readable, check_state_dir, listen_is_loopback};

/// Validates an engine file's values.
pub(crate) fn check_engine(config: &EngineConfig) -> Findings {
    /// Longest `shutdown_grace`.
    const MAX_SHUTDOWN_GRACE: Duration = Duration::from_secs(600);
    let mut findings = Findings::default();
    let root = KeyPath::root();
    match listen_is_loopback(&config.listen) {
        Err(why) => findings.error(
            root.key("listen"),
            format!(
                "`{}` is not host:port like 127.0.0.1:7300 or engine1.example.net:7300: {why}",
                config.listen
            ),
        ),
        Ok(false) if config.tls.is_none() && !config.allow_plaintext => findings.error(
            root.key("tls"),
            format!(
                "listen `{}` is not a loopback address: set [tls] cert, key and client_ca (make \
                 them with `turbomon pki`), or allow_plaintext = true to let anyone who reaches \
                 the port run checks",
                config.listen
            ),
        ),
        Ok(_) => {}
    }
    check_metrics_listen(
        &mut findings,
        root.key("metrics_listen"),
        &config.metrics_listen,
    );
    if let Some(tls) = &config.tls {
        let table = root.key("tls");
        for (key, path) in [
            ("cert", &tls.cert),
            ("key", &tls.key),
            ("client_ca", &tls.client_ca),
        ] {
            check_readable(&mut findings, table.key(key), path);
        }
    }
    if let Err(error) = crate::check::allow::ExecAllowList::new(&config.exec.allow) {
        findings.error(root.key("exec").key("allow"), error.to_string());
    }
    findings.interval(root.key("max_check_timeout"), config.max_check_timeout);
    findings.count(root.key("max_task_bytes"), config.max_task_bytes);
    findings.count(
        root.key("max_open_connections"),
        config.max_open_connections,
    );
    findings.interval(root.key("keepalive_interval"), config.keepalive_interval);
    findings.count(
        root.key("max_concurrent_checks"),
        config.max_concurrent_checks,
    );
    findings.count(root.key("max_batch_tasks"), config.max_batch_tasks);
    findings.count(root.key("max_held_tasks"), config.max_held_tasks);
    findings.count(root.key("max_message_bytes"), config.max_message_bytes);
    findings.interval(root.key("result_retention"), config.result_retention);
    findings.count(
        root.key("completion_buffer_notices"),
        config.completion_buffer_notices,
    );
    if config.shutdown_grace > MAX_SHUTDOWN_GRACE {
        findings.error(
            root.key("shutdown_grace"),
            format!(
                "{} is absurd: at most {}",
                humantime::format_duration(config.shutdown_grace),
                humantime::format_duration(MAX_SHUTDOWN_GRACE)
            ),
        );
    }
    if let Some(state_dir) = &config.state_dir
        && let Err(why) = check_state_dir(state_dir)
    {
        findings.error(root.key("state_dir"), why);
    }
    if config.max_batch_tasks > config.max_held_tasks && config.max_held_tasks > 0 {
        findings.warn(
            root.key("max_batch_tasks"),
            format!(
                "a batch of {} tasks can never be held (max_held_tasks = {})",
                config.max_batch_tasks, config.max_held_tasks
            ),
        );
    }
    findings
}
