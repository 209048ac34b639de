//! [`BenchError`]: why a `bench` or `tune` run was refused or stopped. Every bench file reports
//! through it, so it lives apart from the command functions in `mod.rs`.

use std::path::PathBuf;
use std::time::Duration;

/// Why a bench or tune run was refused or stopped.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// An argument is invalid; `flag` names it.
    #[error("{flag}: {reason}")]
    InvalidArgument {
        /// The flag, e.g. `--batch-sizes`.
        flag: &'static str,
        /// What is wrong and what is accepted.
        reason: String,
    },
    /// The link profiles file could not be loaded.
    #[error("--profiles: {0}")]
    Profiles(#[source] crate::link::LinkError),
    /// A combination could not be set up or one of its loops failed.
    #[error("{combination}: {reason}")]
    Combination {
        /// Which combination (link, turbo mode, batch size).
        combination: String,
        /// What went wrong.
        reason: String,
    },
    /// The run went past `--max-time`.
    #[error(
        "stopped after {} (--max-time) during {combination}, with {done} of {total} combinations done; raise --max-time or run fewer combinations",
        humantime::format_duration(*max_time)
    )]
    TimedOut {
        /// The time bound.
        max_time: Duration,
        /// The combination that was running.
        combination: String,
        /// Combinations finished.
        done: usize,
        /// Combinations planned.
        total: usize,
    },
    /// A report file could not be written.
    #[error("cannot write {}: {reason}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        reason: String,
    },
}
