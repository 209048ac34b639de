//! What validation found: errors and warnings, each at the path of its key, and how they become
//! [`ConfigError`]s naming the file, the line (when the source text is at hand) and the key.
//! Validation records findings here; the loader and `validate_*` turn them into results, so
//! neither needs the other.

use std::path::Path;

use super::error::{ConfigError, KeyPath};
use super::locate::SourceMap;

/// One problem found, at one key.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Finding {
    /// Where.
    path: KeyPath,
    /// What.
    message: String,
}

/// Everything validation found: errors refuse the file, warnings are only logged.
#[derive(Debug, Default)]
pub(crate) struct Findings {
    /// Problems that refuse the file.
    errors: Vec<Finding>,
    /// Doubtful but accepted values.
    warnings: Vec<Finding>,
}

impl Findings {
    /// Records a problem that refuses the file.
    pub(crate) fn error(&mut self, path: KeyPath, message: impl Into<String>) {
        self.errors.push(Finding {
            path,
            message: message.into(),
        });
    }

    /// A duration that must be longer than zero.
    pub(crate) fn interval(&mut self, path: KeyPath, value: std::time::Duration) {
        if value.is_zero() {
            self.error(path, "must be longer than zero");
        }
    }

    /// A count that must be at least 1.
    pub(crate) fn count(&mut self, path: KeyPath, value: usize) {
        if value == 0 {
            self.error(path, "must be at least 1");
        }
    }

    /// Records a doubtful but accepted value.
    pub(crate) fn warn(&mut self, path: KeyPath, message: impl Into<String>) {
        self.warnings.push(Finding {
            path,
            message: message.into(),
        });
    }

    /// The first error (in file order) or the warnings, each located in `text` when given.
    /// Without `text` (a config built in code) errors name the key but no line.
    pub(crate) fn into_result(
        self,
        file: &Path,
        text: Option<&str>,
    ) -> Result<Vec<ConfigError>, ConfigError> {
        let map = text.map(SourceMap::new);
        let locate = |finding: Finding| ConfigError {
            file: file.to_path_buf(),
            line: map.as_ref().and_then(|m| m.line_of(&finding.path)),
            key: (!finding.path.is_root()).then(|| finding.path.to_string()),
            message: finding.message,
        };
        let mut errors: Vec<ConfigError> = self.errors.into_iter().map(locate).collect();
        // First in file order; errors without a line after those with one (stable otherwise).
        errors.sort_by_key(|e| e.line.unwrap_or(usize::MAX));
        match errors.into_iter().next() {
            Some(error) => Err(error),
            None => Ok(self.warnings.into_iter().map(locate).collect()),
        }
    }
}
