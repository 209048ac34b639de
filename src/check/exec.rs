//! The `exec` check: run a Monitoring Plugins (Nagios-compatible) program (no shell) with its
//! stdout and stderr captured through one pipe, so the kept output reads in the order it was
//! written. Exit 0 is OK, 1 WARNING, 2 BROKEN (a plugin's CRITICAL), 3 or any other code, or
//! killed by a signal, PLUGIN_UNKNOWN; the value is the exit code. The output's status line and
//! long text become the message, its performance data the result's perfdata (see
//! [`super::perfdata`]). A program that cannot be started is FAILED; at the timeout the program
//! and everything it started in its process group are killed (TIMED_OUT, the raw output kept).

use std::io::ErrorKind;
use std::os::fd::OwnedFd;
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tokio::process::{Child, Command};

use crate::proto::TaskState;

use super::perfdata::PluginOutput;
use super::result::CheckResult;

/// After the program exits, how long output still in flight is awaited. A background process it
/// left behind may hold the pipe open forever; its output is not waited for beyond this.
const OUTPUT_DRAIN_GRACE: Duration = Duration::from_millis(50);

/// Size of the buffer the output is read through.
const READ_CHUNK_BYTES: usize = 4096;

/// Runs `program` with `args`; see the module documentation.
pub(super) async fn run(
    program: &str,
    args: &[String],
    timeout: Duration,
    output_limit_bytes: usize,
) -> CheckResult {
    let (reader, writer) = match std::io::pipe() {
        Ok(pipe) => pipe,
        Err(error) => return CheckResult::failed(format!("cannot create output pipe: {error}")),
    };
    let stderr_writer = match writer.try_clone() {
        Ok(w) => w,
        Err(error) => return CheckResult::failed(format!("cannot create output pipe: {error}")),
    };
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(writer))
        .stderr(Stdio::from(stderr_writer))
        // Its own process group, so a timeout kills whatever it started too.
        .process_group(0)
        .kill_on_drop(true);
    let spawned = command.spawn();
    // The command holds the pipe's write ends; they must close here or the output never ends.
    drop(command);
    let mut child = match spawned {
        Ok(child) => child,
        Err(error) => return CheckResult::failed(format!("cannot run `{program}`: {error}")),
    };
    let reader = match pipe::Receiver::from_owned_fd(OwnedFd::from(reader)) {
        Ok(reader) => reader,
        Err(error) => {
            kill_process_group(&mut child).await;
            return CheckResult::failed(format!("cannot read output of `{program}`: {error}"));
        }
    };

    let mut output = Output {
        kept: Vec::with_capacity(output_limit_bytes.min(READ_CHUNK_BYTES)),
        cut: false,
        limit: output_limit_bytes,
    };
    let waited = tokio::time::timeout(
        timeout,
        wait_collecting_output(&mut child, reader, &mut output),
    )
    .await;
    let output_text = String::from_utf8_lossy(&output.kept).into_owned();
    match waited {
        Ok(Ok(status)) => outcome(program, status, &output_text, output.cut),
        Ok(Err(error)) => {
            kill_process_group(&mut child).await;
            CheckResult::failed(format!("waiting for `{program}`: {error}"))
        }
        Err(_) => {
            kill_process_group(&mut child).await;
            CheckResult::timed_out(timeout, &output_text)
        }
    }
}

/// The state a plugin's exit code stands for: 0 OK, 1 WARNING, 2 BROKEN (CRITICAL), anything
/// else PLUGIN_UNKNOWN.
fn plugin_state(code: i32) -> TaskState {
    match code {
        0 => TaskState::Ok,
        1 => TaskState::Warning,
        2 => TaskState::Broken,
        _ => TaskState::PluginUnknown,
    }
}

/// The result of a program that ended: its exit code mapped by [`plugin_state`], its output
/// parsed; a program killed by a signal is PLUGIN_UNKNOWN with the shell's value 128 + N.
fn outcome(program: &str, status: ExitStatus, output: &str, cut: bool) -> CheckResult {
    let parsed = PluginOutput::parse(output, cut);
    let message = parsed.message();
    let (state, value, message) = match (status.code(), status.signal()) {
        (Some(code), _) => (plugin_state(code), f64::from(code), message),
        (None, Some(signal)) => {
            let mut killed = format!("`{program}` killed by signal {signal}");
            if !message.is_empty() {
                killed.push_str(": ");
                killed.push_str(&message);
            }
            (TaskState::PluginUnknown, f64::from(128 + signal), killed)
        }
        (None, None) => {
            return CheckResult::failed(format!("`{program}` ended without an exit status"));
        }
    };
    CheckResult::new(state, value, message).with_perfdata(parsed.perfdata)
}

/// The output kept so far: its first `limit` bytes, and whether more was thrown away.
struct Output {
    kept: Vec<u8>,
    cut: bool,
    limit: usize,
}

/// Reads the output (keeping the first `limit` bytes, discarding the rest so the program never
/// blocks on a full pipe) until the program exits, then picks up what is left in the pipe.
async fn wait_collecting_output(
    child: &mut Child,
    mut reader: pipe::Receiver,
    output: &mut Output,
) -> std::io::Result<ExitStatus> {
    let mut chunk = vec![0u8; READ_CHUNK_BYTES];
    let mut output_ended = false;
    let status = loop {
        tokio::select! {
            read = reader.read(&mut chunk), if !output_ended => {
                output_ended = keep(read, &chunk, output);
            }
            status = child.wait() => break status?,
        }
    };
    if !output_ended {
        let drain = async { while !keep(reader.read(&mut chunk).await, &chunk, output) {} };
        let _ = tokio::time::timeout(OUTPUT_DRAIN_GRACE, drain).await;
    }
    Ok(status)
}

/// Appends what one read produced, up to the limit in all; true when the output has ended.
fn keep(read: std::io::Result<usize>, chunk: &[u8], output: &mut Output) -> bool {
    match read {
        Ok(0) => true,
        Ok(n) => {
            let room = output.limit.saturating_sub(output.kept.len());
            output.kept.extend_from_slice(&chunk[..n.min(room)]);
            output.cut |= n > room;
            false
        }
        Err(error) if error.kind() == ErrorKind::Interrupted => false,
        Err(_) => true,
    }
}

/// Kills the program's whole process group, then the program itself, and reaps it.
async fn kill_process_group(child: &mut Child) {
    if let Some(pid) = child.id().and_then(|pid| i32::try_from(pid).ok()) {
        // SAFETY: kill(2) with a negative pid signals the process group the child leads (it was
        // started with process_group(0)); it touches no memory of ours.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
    }
    let _ = child.kill().await;
}
