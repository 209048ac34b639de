//! Reading configuration files: TOML parse with the file, line and key of any error named, then
//! validation ([`super::validate`]), and `check-config`'s summary.

use std::path::Path;

use serde::de::DeserializeOwned;

use super::engine_checks::check_engine;
use super::error::{ConfigError, KeyPath};
use super::locate::SourceMap;
use super::model::{EngineConfig, SupervisorConfig};
use super::validate::check_supervisor;

/// Parses and validates the text of a supervisor file; `file` is only used in messages.
/// Warnings (e.g. `task_info_batch_size` at 100 or above) are logged with `tracing::warn!`.
pub fn parse_supervisor(text: &str, file: &Path) -> Result<SupervisorConfig, ConfigError> {
    let (config, warnings) = parse_supervisor_with_warnings(text, file)?;
    log_warnings(&warnings);
    Ok(config)
}

/// Reads, parses and validates a supervisor file.
pub fn load_supervisor(path: &Path) -> Result<SupervisorConfig, ConfigError> {
    parse_supervisor(&read(path)?, path)
}

/// Parses and validates the text of an engine file; `file` is only used in messages.
pub fn parse_engine(text: &str, file: &Path) -> Result<EngineConfig, ConfigError> {
    let (config, warnings) = parse_engine_with_warnings(text, file)?;
    log_warnings(&warnings);
    Ok(config)
}

/// Reads, parses and validates an engine file.
pub fn load_engine(path: &Path) -> Result<EngineConfig, ConfigError> {
    parse_engine(&read(path)?, path)
}

/// Which kind of file `check_file` decided it was looking at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FileKind {
    Supervisor,
    Engine,
}

/// Keys only a supervisor file has.
const SUPERVISOR_ONLY_KEYS: [&str; 12] = [
    "turbo_monitoring",
    "task_submit_batch_size",
    "task_info_batch_size",
    "status_check_interval",
    "stats_interval",
    "max_inflight_batches",
    "max_connections",
    "engines",
    "groups",
    "rules",
    "relators",
    "alerts",
];

/// Keys only an engine file has.
const ENGINE_ONLY_KEYS: [&str; 6] = [
    "listen",
    "max_concurrent_checks",
    "max_batch_tasks",
    "max_held_tasks",
    "result_retention",
    "output_limit_bytes",
];

/// For `turbomon check-config FILE`: decides from its keys whether `path` is a supervisor or an
/// engine file (a file with neither kind's keys counts as a supervisor file), loads and
/// validates it, and returns a one-paragraph summary of what it configures (warnings included),
/// or the first error.
pub fn check_file(path: &Path) -> Result<String, ConfigError> {
    let text = read(path)?;
    let map = SourceMap::new(&text);
    let keys = map.top_level_keys();
    let supervisor_votes = keys
        .iter()
        .filter(|k| SUPERVISOR_ONLY_KEYS.contains(&k.as_str()))
        .count();
    let engine_votes = keys
        .iter()
        .filter(|k| ENGINE_ONLY_KEYS.contains(&k.as_str()))
        .count();
    let kind = if engine_votes > supervisor_votes {
        FileKind::Engine
    } else {
        FileKind::Supervisor
    };
    let (mut summary, warnings) = match kind {
        FileKind::Supervisor => {
            let (config, warnings) = parse_supervisor_with_warnings(&text, path)?;
            (super::summary::supervisor(&config, path), warnings)
        }
        FileKind::Engine => {
            let (config, warnings) = parse_engine_with_warnings(&text, path)?;
            (super::summary::engine(&config, path), warnings)
        }
    };
    for warning in &warnings {
        summary.push_str(&format!(" Warning: {warning}."));
    }
    Ok(summary)
}

/// Parse + validate, returning the warnings instead of logging them.
pub(crate) fn parse_supervisor_with_warnings(
    text: &str,
    file: &Path,
) -> Result<(SupervisorConfig, Vec<ConfigError>), ConfigError> {
    let config: SupervisorConfig = deserialize(text, file)?;
    let warnings = check_supervisor(&config).into_result(file, Some(text))?;
    Ok((config, warnings))
}

/// Parse + validate, returning the warnings instead of logging them.
pub(crate) fn parse_engine_with_warnings(
    text: &str,
    file: &Path,
) -> Result<(EngineConfig, Vec<ConfigError>), ConfigError> {
    let config: EngineConfig = deserialize(text, file)?;
    let warnings = check_engine(&config).into_result(file, Some(text))?;
    Ok((config, warnings))
}

fn log_warnings(warnings: &[ConfigError]) {
    for warning in warnings {
        tracing::warn!(target: "turbomon::config", "{warning}");
    }
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path)
        .map_err(|error| ConfigError::whole_file(path, format!("cannot read the file: {error}")))
}

fn deserialize<T: DeserializeOwned>(text: &str, file: &Path) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|error| from_toml_error(&error, text, file))
}

/// A toml error, with its byte span turned into a line and, when the document parses, a key.
fn from_toml_error(error: &toml::de::Error, text: &str, file: &Path) -> ConfigError {
    let message = explain(error.message().trim());
    let map = SourceMap::new(text);
    let Some(span) = error.span() else {
        return ConfigError {
            file: file.to_path_buf(),
            line: None,
            key: None,
            message,
        };
    };
    let line = Some(map.line_of_offset(span.start));
    let mut path = map.path_at(span.start);
    // "missing field `x`" points at the table that lacks it: name the field under that table.
    if let Some(field) = backticked_after(&message, "missing field ") {
        path = Some(path.unwrap_or_else(KeyPath::root).key(field));
    }
    // "unknown field `x`" points at the key itself; if the document could not be re-parsed,
    // at least name the field.
    let key = match path {
        Some(path) if !path.is_root() => Some(path.to_string()),
        _ => backticked_after(&message, "unknown field ").map(str::to_string),
    };
    ConfigError {
        file: file.to_path_buf(),
        line,
        key,
        message,
    }
}

/// serde's wording, with the expected types said the way a config file writer thinks of them.
fn explain(message: &str) -> String {
    let message = message
        .replace("expected usize", "expected a whole number (0 or more)")
        .replace("expected u16", "expected a whole number from 0 to 65535")
        .replace("expected f64", "expected a number");
    if message.ends_with("expected a duration") {
        format!("{message} such as \"10s\", \"500ms\" or \"5m\"")
    } else {
        message
    }
}

/// `x` from a message that starts with "`prefix``x`...".
fn backticked_after<'m>(message: &'m str, prefix: &str) -> Option<&'m str> {
    let rest = message.strip_prefix(prefix)?.strip_prefix('`')?;
    rest.split_once('`').map(|(name, _)| name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syntax_error_has_a_line() {
        let error = parse_supervisor("stats_interval = \"5m\"\nx = 1 2\n", Path::new("s.toml"))
            .err()
            .map(|e| e.line);
        assert_eq!(error, Some(Some(2)));
    }

    #[test]
    fn missing_field_names_the_field_under_its_table() {
        let text = "[[engines]]\naddress = \"127.0.0.1:1\"\n";
        let error = parse_supervisor(text, Path::new("s.toml")).err();
        let error = error.map(|e| (e.line, e.key));
        assert_eq!(error, Some((Some(1), Some("engines[0].name".to_string()))));
    }
}
