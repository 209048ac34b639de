//! The `turbomon` binary run as a child process, the way an operator runs it: its stderr lines
//! collected as they come, signals sent by `kill`, and a bounded wait for its exit.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The `turbomon` binary built for these tests.
pub fn turbomon_bin() -> &'static str {
    env!("CARGO_BIN_EXE_turbomon")
}

/// `turbomon ARGS` run to completion: exit status, stdout, stderr.
pub fn run_turbomon(args: &[&str], cwd: &Path) -> (ExitStatus, String, String) {
    let output = Command::new(turbomon_bin())
        .args(args)
        .current_dir(cwd)
        .env_remove("RUST_LOG")
        .output()
        .unwrap_or_else(|e| panic!("run turbomon {args:?}: {e}"));
    (
        output.status,
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A running `turbomon` child whose stderr lines are kept. Killed on drop.
pub struct TurbomonProcess {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl TurbomonProcess {
    /// Starts `turbomon ARGS` in `cwd`.
    pub fn start(args: &[&str], cwd: &Path) -> Self {
        let mut child = Command::new(turbomon_bin())
            .args(args)
            .current_dir(cwd)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start turbomon {args:?}: {e}"));
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("stderr piped");
        let sink = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { return };
                if let Ok(mut lines) = sink.lock() {
                    lines.push(line);
                }
            }
        });
        Self { child, lines }
    }

    /// Every stderr line so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// The first line satisfying `matches`, waiting up to `limit` for it.
    pub async fn wait_for_line(&self, limit: Duration, matches: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(line) = self.lines().into_iter().find(|line| matches(line)) {
                return line;
            }
            assert!(
                Instant::now() < deadline,
                "no such line within {limit:?}; stderr so far:\n{}",
                self.lines().join("\n")
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends `signal` (`HUP`, `TERM`, ...) with `kill`.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([format!("-{signal}"), self.child.id().to_string()])
            .status()
            .unwrap_or_else(|e| panic!("kill -{signal}: {e}"));
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Waits up to `limit` for the process to exit.
    pub async fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "still running after {limit:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for TurbomonProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
