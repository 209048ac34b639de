//! The configuration error: which file, which line, which key, and what is wrong with it.

use std::fmt;
use std::path::{Path, PathBuf};

/// A configuration file was refused. Displays as `FILE:LINE: key `KEY`: MESSAGE`, leaving out the
/// line and the key when they are not known (for example when the file cannot be read).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", render(&self.file, self.line, self.key.as_deref(), &self.message))]
pub struct ConfigError {
    /// The file that was being read.
    pub file: PathBuf,
    /// 1-based line of the offending key or value, when known.
    pub line: Option<usize>,
    /// Path of the offending key, e.g. `engines[1].task_submit_batch_size`, when known.
    pub key: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl ConfigError {
    /// An error about `file` as a whole (no line, no key).
    pub fn whole_file(file: &Path, message: impl Into<String>) -> Self {
        Self {
            file: file.to_path_buf(),
            line: None,
            key: None,
            message: message.into(),
        }
    }
}

fn render(file: &Path, line: Option<usize>, key: Option<&str>, message: &str) -> String {
    let mut out = String::new();
    out.push_str(&file.display().to_string());
    if let Some(line) = line {
        out.push_str(&format!(":{line}"));
    }
    out.push_str(": ");
    if let Some(key) = key {
        out.push_str(&format!("key `{key}`: "));
    }
    out.push_str(message);
    out
}

/// Where a key sits in a document: `engines[1].task_submit_batch_size`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct KeyPath(Vec<Segment>);

/// One step of a [`KeyPath`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Segment {
    /// A table key.
    Key(String),
    /// An array element.
    Index(usize),
}

impl KeyPath {
    /// The document root.
    pub(crate) fn root() -> Self {
        Self(Vec::new())
    }

    /// This path followed by table key `key`.
    pub(crate) fn key(&self, key: &str) -> Self {
        let mut path = self.clone();
        path.0.push(Segment::Key(key.to_string()));
        path
    }

    /// This path followed by array element `index`.
    pub(crate) fn index(&self, index: usize) -> Self {
        let mut path = self.clone();
        path.0.push(Segment::Index(index));
        path
    }

    /// The steps from the root.
    pub(crate) fn segments(&self) -> &[Segment] {
        &self.0
    }

    /// Whether this is the root (no step).
    pub(crate) fn is_root(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, segment) in self.0.iter().enumerate() {
            match segment {
                Segment::Key(key) if i == 0 => write!(f, "{key}")?,
                Segment::Key(key) => write!(f, ".{key}")?,
                Segment::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_names_file_line_and_key() {
        let error = ConfigError {
            file: PathBuf::from("config/supervisor.toml"),
            line: Some(3),
            key: Some("task_submit_batch_size".into()),
            message: "must be at least 1".into(),
        };
        assert_eq!(
            error.to_string(),
            "config/supervisor.toml:3: key `task_submit_batch_size`: must be at least 1"
        );
        let whole = ConfigError::whole_file(Path::new("x.toml"), "cannot read");
        assert_eq!(whole.to_string(), "x.toml: cannot read");
    }

    #[test]
    fn key_path_renders_indices_and_dots() {
        let path = KeyPath::root()
            .key("engines")
            .index(1)
            .key("task_submit_batch_size");
        assert_eq!(path.to_string(), "engines[1].task_submit_batch_size");
    }
}
