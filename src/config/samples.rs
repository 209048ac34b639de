//! The shipped, annotated configuration files (`config/*.toml`), embedded in the binary for
//! `turbomon gen-config`, and the kinds of configuration file.

use std::fmt;

/// The kinds of configuration file turbomon reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// `turbomon supervisor --config`: engines, rules, relators, turbo keys.
    Supervisor,
    /// `turbomon engine --config`: listen address, limits, TLS, exec allow-list.
    Engine,
    /// `--links` / `--profiles`: simulated link profiles.
    Links,
}

impl FileKind {
    /// Every kind, in the order they are documented.
    pub const ALL: [FileKind; 3] = [FileKind::Supervisor, FileKind::Engine, FileKind::Links];

    /// The kind's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            FileKind::Supervisor => "supervisor",
            FileKind::Engine => "engine",
            FileKind::Links => "links",
        }
    }

    /// The annotated file shipped as `config/<name>.toml`, every key with its default or an
    /// example and what it does.
    pub fn sample(self) -> &'static str {
        match self {
            FileKind::Supervisor => include_str!("../../config/supervisor.toml"),
            FileKind::Engine => include_str!("../../config/engine.toml"),
            FileKind::Links => include_str!("../../config/links.toml"),
        }
    }
}

impl fmt::Display for FileKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for FileKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        FileKind::ALL
            .into_iter()
            .find(|kind| kind.name() == s)
            .ok_or_else(|| format!("unknown kind `{s}` (supervisor, engine or links)"))
    }
}
