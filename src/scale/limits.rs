//! The open-files limit: raised from its soft value to the hard one at start, and the number of
//! descriptors a count of engines needs, so a process can say clearly when even the hard limit
//! is too low.

/// The open-files limit (`RLIMIT_NOFILE`) after [`raise_open_files`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenFiles {
    /// The soft limit in force now.
    pub soft: u64,
    /// The hard limit (the most the soft one can be raised to without privileges).
    pub hard: u64,
}

/// Descriptors one process needs for `engines` engines: a listener or a connection each and
/// the accepted end or a probe beside it, plus a margin for files, logs and the runtime.
pub fn needed_for(engines: usize) -> u64 {
    (engines as u64).saturating_mul(2).saturating_add(64)
}

/// Raises the soft open-files limit to the hard limit. Returns the limits now in force (the
/// old ones if the raise was refused), or `None` where they cannot be read.
pub fn raise_open_files() -> Option<OpenFiles> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, writable rlimit for the duration of the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return None;
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: `raised` is a valid rlimit read by the call.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit = raised;
        }
    }
    Some(OpenFiles {
        soft: limit.rlim_cur,
        hard: limit.rlim_max,
    })
}

/// Raises the limit and checks it against what `engines` engines need: `Err` with a sentence
/// saying so (and how to raise it) when even the hard limit is too low.
pub fn ensure_for(engines: usize, who: &str) -> Result<Option<OpenFiles>, String> {
    let limits = raise_open_files();
    let needed = needed_for(engines);
    match limits {
        Some(limits) if limits.soft < needed => Err(format!(
            "{who}: the open-files limit is {} (hard limit {}), too low for {engines} engines, \
             which need about {needed}: raise the hard limit (`ulimit -Hn`, LimitNOFILE= in a \
             systemd unit, /etc/security/limits.conf)",
            limits.soft, limits.hard
        )),
        other => Ok(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_ends_at_the_hard_limit() {
        let limits = raise_open_files().unwrap_or_else(|| panic!("getrlimit works on Linux"));
        assert_eq!(limits.soft, limits.hard);
        assert!(ensure_for(1, "test").is_ok());
        let refused = ensure_for(usize::MAX / 4, "test").unwrap_err();
        assert!(refused.contains("too low for"), "{refused}");
    }
}
