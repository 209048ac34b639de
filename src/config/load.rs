//! Reading configuration files: TOML parse with the file, line and key of any error named, then
//! validation ([`super::validate`]), and `check-config`'s summary.

use std::path::Path;

use serde::de::DeserializeOwned;

use super::engine_checks::check_engine;
use super::error::{ConfigError, KeyPath};
use super::locate::SourceMap;
use super::model::{EngineConfig, SupervisorConfig};
use super::samples::FileKind;
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

/// The top-level keys of a file shape, as its defaults serialise (every field, `None` ones too).
fn top_level_keys<T: serde::Serialize + Default>() -> Vec<String> {
    match serde_json::to_value(T::default()) {
        Ok(serde_json::Value::Object(map)) => map.into_iter().map(|(key, _)| key).collect(),
        _ => Vec::new(),
    }
}

/// The key only a links file has.
const LINKS_KEY: &str = "profiles";

/// For `turbomon check-config FILE`: [`check_file_as`] with the kind decided from the file's keys.
pub fn check_file(path: &Path) -> Result<String, ConfigError> {
    check_file_as(path, None)
}

/// For `turbomon check-config [--kind K] FILE`: loads and validates `path` as a file of `kind`
/// (when `None`, decided from its top-level keys: `profiles` makes a links file, otherwise the
/// kind with more of its own keys; a tie, an empty file included, counts as a supervisor file,
/// which then needs engines), and returns a one-paragraph summary of what it configures
/// (warnings included), or the first error.
pub fn check_file_as(path: &Path, kind: Option<FileKind>) -> Result<String, ConfigError> {
    let text = read(path)?;
    let kind = kind.unwrap_or_else(|| guess_kind(&text));
    let (mut summary, warnings) = match kind {
        FileKind::Supervisor => {
            let (config, warnings) = parse_supervisor_with_warnings(&text, path)?;
            (super::summary::supervisor(&config, path), warnings)
        }
        FileKind::Engine => {
            let (config, warnings) = parse_engine_with_warnings(&text, path)?;
            (super::summary::engine(&config, path), warnings)
        }
        FileKind::Links => {
            let profiles = crate::link::parse_profiles(&text, path)
                .map_err(|error| link_error(error, path))?;
            (super::summary::links(&profiles, path), Vec::new())
        }
    };
    for warning in &warnings {
        summary.push_str(&format!(" Warning: {warning}."));
    }
    Ok(summary)
}

/// The kind of configuration `text` looks like, from its top-level keys.
fn guess_kind(text: &str) -> FileKind {
    let map = SourceMap::new(text);
    let keys = map.top_level_keys();
    if keys.iter().any(|k| k == LINKS_KEY) {
        return FileKind::Links;
    }
    // A key counts for a kind when only that kind has it (both have `tls`, `metrics_listen`...).
    let supervisor = top_level_keys::<SupervisorConfig>();
    let engine = top_level_keys::<EngineConfig>();
    let votes = |own: &[String], other: &[String]| {
        keys.iter()
            .filter(|k| own.contains(k) && !other.contains(k))
            .count()
    };
    if votes(&engine, &supervisor) > votes(&supervisor, &engine) {
        FileKind::Engine
    } else {
        FileKind::Supervisor
    }
}

/// A links file's error in the shape of the other files' errors.
fn link_error(error: crate::link::LinkError, path: &Path) -> ConfigError {
    match error {
        crate::link::LinkError::Parse { line, message, .. } => ConfigError {
            file: path.to_path_buf(),
            line: (line > 0).then_some(line),
            key: None,
            message: explain(&message),
        },
        other => ConfigError::whole_file(path, other.to_string()),
    }
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

/// serde's wording, with the expected types said the way a config file writer thinks of them,
/// and the nearest valid name suggested for a misspelt key or value.
fn explain(message: &str) -> String {
    let message = match suggestion(message) {
        Some(near) => {
            let (unknown, expected) = message.split_once(", expected").unwrap_or((message, ""));
            format!("{unknown}; did you mean `{near}`? (expected{expected})")
        }
        None => message.to_string(),
    };
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

/// For "unknown field `x`, expected one of `a`, `b`" (or "unknown variant"): the valid name
/// nearest to `x`, when one is near enough to be a likely slip (a typo, a missing suffix).
fn suggestion(message: &str) -> Option<String> {
    let unknown = backticked_after(message, "unknown field ")
        .or_else(|| backticked_after(message, "unknown variant "))?;
    let (_, expected) = message.split_once("expected")?;
    let candidates = expected.split('`').skip(1).step_by(2);
    nearest(unknown, candidates)
}

/// The candidate nearest to `word` by edit distance, if it is close: at most a third of the
/// longer name's letters differ, or one name is the start of the other.
fn nearest<'c>(word: &str, candidates: impl Iterator<Item = &'c str>) -> Option<String> {
    let word = word.to_lowercase();
    candidates
        .filter_map(|candidate| {
            let distance = strsim::damerau_levenshtein(&word, &candidate.to_lowercase());
            let longest = word.chars().count().max(candidate.chars().count());
            let prefix = word.len() >= 4
                && (candidate.starts_with(word.as_str()) || word.starts_with(candidate));
            (prefix || distance * 3 <= longest).then_some((distance, candidate))
        })
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate.to_string())
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
    fn a_misspelt_key_gets_the_nearest_one_suggested() {
        let text = "task_submit_batch = 3\n";
        let error = parse_supervisor(text, Path::new("s.toml")).err();
        let message = error.map(|e| e.message).unwrap_or_default();
        assert!(
            message.starts_with(
                "unknown field `task_submit_batch`; did you mean `task_submit_batch_size`? \
                 (expected one of `turbo_monitoring`"
            ),
            "{message}"
        );
        let text = "statsinterval = \"5s\"\n";
        let error = parse_supervisor(text, Path::new("s.toml")).err();
        let message = error.map(|e| e.message).unwrap_or_default();
        assert!(
            message.contains("did you mean `stats_interval`?"),
            "{message}"
        );
    }

    #[test]
    fn a_key_like_none_gets_no_suggestion() {
        let error = parse_engine("colour = 1\n", Path::new("e.toml")).err();
        let message = error.map(|e| e.message).unwrap_or_default();
        assert!(
            message.starts_with("unknown field `colour`, expected"),
            "{message}"
        );
        assert_eq!(nearest("kind", ["tcp", "http"].into_iter()), None);
        assert_eq!(
            nearest(
                "max_held",
                ["max_held_tasks", "max_batch_tasks"].into_iter()
            )
            .as_deref(),
            Some("max_held_tasks")
        );
        assert_eq!(
            nearest("htpp", ["tcp", "http", "exec"].into_iter()).as_deref(),
            Some("http")
        );
    }

    #[test]
    fn missing_field_names_the_field_under_its_table() {
        let text = "[[engines]]\naddress = \"127.0.0.1:1\"\n";
        let error = parse_supervisor(text, Path::new("s.toml")).err();
        let error = error.map(|e| (e.line, e.key));
        assert_eq!(error, Some((Some(1), Some("engines[0].name".to_string()))));
    }
}
