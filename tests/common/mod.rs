//! Fixtures shared by the integration tests: a recording fake engine, a real engine on a
//! loopback port, sim tasks, supervisor configs and a supervisor started on them, scratch
//! directories, captured logs and loopback helpers.

#![allow(dead_code)]

mod certs;
mod engine;
mod etcd;
mod fake_engine;
mod logs;
mod net;
mod process;
mod supervisor;
mod tasks;
mod temp_dir;

use std::time::Duration;

// Each test binary uses only some of these.
#[allow(unused_imports)]
pub use {
    certs::*, engine::*, etcd::*, fake_engine::*, logs::*, net::*, process::*, supervisor::*,
    tasks::*, temp_dir::*,
};

/// Wait (bounded) until `check` holds, polling every 10 ms.
pub async fn eventually(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {limit:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
