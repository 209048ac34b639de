//! Which programs an engine's `exec` checks may run: glob patterns over absolute paths, from the
//! engine's `[exec] allow`. Empty by default, so an engine runs no program until told which.
//! A bare program name is looked up in `PATH` first and the path found is what is matched and
//! what runs, so neither `PATH` nor the arguments can change which program runs.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;

use glob::{MatchOptions, Pattern};

/// `*` and `?` never cross a `/`: `/usr/lib/nagios/plugins/*` allows the plugins, not whatever
/// lies below another directory under them.
const MATCH: MatchOptions = MatchOptions {
    case_sensitive: true,
    require_literal_separator: true,
    require_literal_leading_dot: false,
};

/// A pattern in `[exec] allow` that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllowError {
    /// Not an absolute path.
    #[error("`{0}` is not an absolute path (patterns match absolute program paths)")]
    NotAbsolute(String),
    /// Not a glob pattern.
    #[error("`{pattern}` is not a glob pattern: {reason}")]
    BadPattern {
        /// The pattern.
        pattern: String,
        /// What is wrong.
        reason: String,
    },
}

/// Programs remembered as allowed; beyond this many, new ones are checked every time.
const REMEMBERED_PROGRAMS: usize = 4096;

/// The programs this engine may run.
#[derive(Debug, Default)]
pub struct ExecAllowList {
    patterns: Vec<Pattern>,
    /// Programs as rules name them, already allowed, with the path that runs: admission runs
    /// under the engine's lock, so a program is looked up in `PATH` and matched once, and
    /// logged once.
    allowed: Mutex<HashMap<String, PathBuf>>,
}

impl ExecAllowList {
    /// The list from `[exec] allow`.
    pub fn new(patterns: &[String]) -> Result<Self, AllowError> {
        let patterns = patterns
            .iter()
            .map(|text| {
                if !text.starts_with('/') {
                    return Err(AllowError::NotAbsolute(text.clone()));
                }
                Pattern::new(text).map_err(|e| AllowError::BadPattern {
                    pattern: text.clone(),
                    reason: e.msg.to_string(),
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            patterns,
            allowed: Mutex::new(HashMap::new()),
        })
    }

    /// The absolute path to run for `program`, or the reason it may not run here
    /// (`program not allowed on this engine: PATH`).
    pub fn permit(&self, program: &str) -> Result<PathBuf, String> {
        if self.patterns.is_empty() {
            return Err(not_allowed(program));
        }
        let mut allowed = self.allowed.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(path) = allowed.get(program) {
            return Ok(path.clone());
        }
        let path = resolve(program, std::env::var_os("PATH").as_deref())
            .ok_or_else(|| not_allowed(program))?;
        // `..` or `.` could walk out of an allowed directory while the text still matches.
        if path
            .components()
            .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
        {
            return Err(not_allowed(&path.display().to_string()));
        }
        if !self
            .patterns
            .iter()
            .any(|pattern| pattern.matches_path_with(&path, MATCH))
        {
            return Err(not_allowed(&path.display().to_string()));
        }
        tracing::info!(target: "turbomon::engine", program = %path.display(), "exec program allowed");
        if allowed.len() < REMEMBERED_PROGRAMS {
            allowed.insert(program.to_string(), path.clone());
        }
        Ok(path)
    }
}

fn not_allowed(program: &str) -> String {
    format!("program not allowed on this engine: {program}")
}

/// `program` as an absolute path: itself when absolute, the first executable file of that name
/// in `path_var` when bare; `None` for a relative path with a `/` or a name not found.
fn resolve(program: &str, path_var: Option<&std::ffi::OsStr>) -> Option<PathBuf> {
    if program.starts_with('/') {
        return Some(PathBuf::from(program));
    }
    if program.contains('/') || program.is_empty() {
        return None;
    }
    std::env::split_paths(path_var?)
        .filter(|dir| dir.is_absolute())
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable_file(candidate))
}

fn is_executable_file(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(patterns: &[&str]) -> ExecAllowList {
        ExecAllowList::new(&patterns.iter().map(|p| p.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn nothing_runs_by_default() {
        let empty = ExecAllowList::default();
        assert_eq!(
            empty.permit("/bin/sh"),
            Err("program not allowed on this engine: /bin/sh".to_string())
        );
    }

    #[test]
    fn a_pattern_allows_its_directory_and_not_below_or_beside_it() {
        let allow = list(&["/usr/lib/nagios/plugins/*", "/usr/bin/test"]);
        assert!(allow.permit("/usr/lib/nagios/plugins/check_ping").is_ok());
        assert!(allow.permit("/usr/bin/test").is_ok());
        assert!(allow.permit("/usr/lib/nagios/plugins/sub/check").is_err());
        assert!(
            allow
                .permit("/usr/lib/nagios/plugins/../../../bin/sh")
                .is_err()
        );
        assert!(allow.permit("/usr/bin/tests").is_err());
        assert!(allow.permit("./check_ping").is_err());
    }

    #[test]
    fn a_bare_name_is_resolved_through_path_before_matching() {
        let dirs =
            std::env::join_paths(["relative", "/nonexistent-dir", "/bin", "/usr/bin"]).unwrap();
        let found = resolve("sh", Some(&dirs)).expect("sh is on every system");
        assert!(found.is_absolute() && found.ends_with("sh"), "{found:?}");
        assert_eq!(resolve("no-such-program-here", Some(&dirs)), None);
        assert_eq!(resolve("sh", None), None);
    }

    #[test]
    fn patterns_must_be_absolute_and_well_formed() {
        assert_eq!(
            ExecAllowList::new(&["plugins/*".to_string()]).unwrap_err(),
            AllowError::NotAbsolute("plugins/*".into())
        );
        assert!(matches!(
            ExecAllowList::new(&["/usr/[".to_string()]),
            Err(AllowError::BadPattern { .. })
        ));
    }
}
