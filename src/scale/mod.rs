//! `turbomon scale`: the supervisor measured at scale. An `engine-farm` child process serves N
//! engines on loopback, a supervisor child process runs a generated configuration of T sim
//! tasks a minute over them for a duration, and the supervisor alone is reported: CPU (average
//! and the busiest 10 s), resident memory (peak and each minute), scheduled→sent lateness p99
//! from its own statistics, tasks completed and lost.
//!
//! - [`farm`]: `turbomon engine-farm`, many engines in one process.
//! - [`workload`]: the supervisor configuration generated for the run.
//! - [`sampler`]: CPU time and resident memory of a process from `/proc`.
//! - [`limits`]: the open-files limit raised to the hard limit, and what N engines need.
//! - [`report`]: the table and the JSON.

pub mod farm;
pub mod limits;
pub mod report;
pub mod sampler;
pub mod workload;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::time::Instant;

use report::ScaleReport;
use sampler::CpuWindows;
use workload::Workload;

/// CPU is reported over windows of this length.
const CPU_WINDOW: Duration = Duration::from_secs(10);
/// How often the supervisor is sampled.
const SAMPLE_EVERY: Duration = Duration::from_millis(500);
/// How long the engines and the supervisor may take to start or stop.
const START_STOP_LIMIT: Duration = Duration::from_secs(120);

/// `turbomon scale`'s flags.
#[derive(Debug, Clone, clap::Args)]
pub struct ScaleArgs {
    /// Engines, all served by one `turbomon engine-farm` child process on loopback.
    #[arg(long, default_value_t = 100)]
    pub engines: usize,
    /// Sim tasks a minute over all engines (one relator per engine firing every minute,
    /// randomized over half of it).
    #[arg(long, default_value_t = 100_000)]
    pub tasks_per_min: u64,
    /// Rules checked on each node: an engine's share of the rate is this many rules times
    /// its nodes (10: a host with ten checks; 1: a node per task, the largest file).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub rules_per_node: u64,
    /// How long the supervisor runs under load once it is up (e.g. 30s, 10m).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// The engines listen on this port and the following ones; 0 picks free ports.
    #[arg(long, default_value_t = 0)]
    pub first_port: u16,
    /// The supervisor's statistics window (its summary JSON gives the lateness).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub stats_interval: Duration,
    /// How long each sim check runs on its engine.
    #[arg(long, default_value = "10ms", value_parser = humantime::parse_duration)]
    pub check_duration: Duration,
    /// Keep the generated supervisor.toml and the statistics JSON in this directory (created
    /// if missing) instead of a temporary one removed at the end.
    #[arg(long)]
    pub keep_dir: Option<PathBuf>,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Runs `turbomon scale` and prints its report.
pub async fn run_cli(args: ScaleArgs) -> anyhow::Result<()> {
    let json = args.json;
    let report = run(args).await?;
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", report.table());
    }
    Ok(())
}

/// A child process killed (by its own pid) if still running when dropped.
struct Process {
    name: &'static str,
    child: Child,
}

impl Process {
    fn pid(&self) -> anyhow::Result<u32> {
        self.child
            .id()
            .with_context(|| format!("the {} process has already ended", self.name))
    }

    /// SIGTERM, then wait for the exit (killed after `START_STOP_LIMIT`).
    async fn stop(mut self) -> anyhow::Result<std::process::ExitStatus> {
        if let Some(pid) = self.child.id()
            && let Ok(pid) = libc::pid_t::try_from(pid)
        {
            // SAFETY: signalling our own child by its pid.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        match tokio::time::timeout(START_STOP_LIMIT, self.child.wait()).await {
            Ok(status) => Ok(status?),
            Err(_) => {
                self.child.kill().await?;
                bail!(
                    "the {} process did not stop within {START_STOP_LIMIT:?} of SIGTERM",
                    self.name
                )
            }
        }
    }
}

/// Runs the farm and the supervisor, samples the supervisor for `args.duration`, and reports.
pub async fn run(args: ScaleArgs) -> anyhow::Result<ScaleReport> {
    anyhow::ensure!(args.engines > 0, "--engines must be at least 1");
    anyhow::ensure!(args.tasks_per_min > 0, "--tasks-per-min must be at least 1");
    anyhow::ensure!(
        !args.duration.is_zero(),
        "--duration must be longer than zero"
    );
    // Checked here too so a limit too low is said before anything starts.
    limits::ensure_for(args.engines, "scale").map_err(anyhow::Error::msg)?;
    let exe = std::env::current_exe().context("cannot find the turbomon executable")?;
    let (dir, temporary) = match &args.keep_dir {
        Some(dir) => (dir.clone(), false),
        None => (
            std::env::temp_dir().join(format!("turbomon-scale-{}", std::process::id())),
            true,
        ),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let result = measure(&args, &exe, &dir).await;
    if temporary {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

async fn measure(args: &ScaleArgs, exe: &Path, dir: &Path) -> anyhow::Result<ScaleReport> {
    let (farm, addresses) = start_farm(exe, args).await?;
    let config = workload::supervisor_config(
        &Workload {
            tasks_per_min: args.tasks_per_min,
            rules_per_node: usize::try_from(args.rules_per_node).unwrap_or(1),
            check_duration: args.check_duration,
            stats_interval: args.stats_interval,
        },
        &addresses,
    );
    let config_path = dir.join("supervisor.toml");
    let stats_path = dir.join("stats.jsonl");
    let _ = std::fs::remove_file(&stats_path);
    std::fs::write(&config_path, toml::to_string(&config)?)
        .with_context(|| format!("cannot write {}", config_path.display()))?;
    let (supervisor, metrics_url, log_tail) =
        start_supervisor(exe, &config_path, &stats_path).await?;
    let pid = supervisor.pid()?;
    let sampled = sample(pid, args.duration, &log_tail).await?;
    let counters = scrape(&metrics_url)
        .await
        .with_context(|| format!("cannot read the supervisor's metrics at {metrics_url}"))?;
    let end = sampler::read(pid).context("the supervisor ended before the run did")?;
    let status = supervisor.stop().await?;
    if !status.success() {
        bail!(
            "the supervisor exited with {status}; its last log lines:\n{}",
            log_tail.lines().join("\n")
        );
    }
    let farm_status = farm.stop().await?;
    if !farm_status.success() {
        bail!("the engine farm exited with {farm_status}");
    }
    let (lateness_p99_s, stats_windows) = lateness_p99(&stats_path)?;
    let minutes_mb = sampled.rss_by_minute.iter().map(|b| mb(*b)).collect();
    let counter = |name: &str| counters.get(name).copied().unwrap_or(0.0) as u64;
    Ok(ScaleReport {
        engines: args.engines,
        tasks_per_min: args.tasks_per_min,
        rules_per_node: args.rules_per_node,
        duration_s: sampled.elapsed.as_secs_f64(),
        cpu_avg_cores: sampled.cpu_avg,
        // A run shorter than one window has the run itself as its only window.
        cpu_peak_cores: if sampled.cpu_windows.cores.is_empty() {
            sampled.cpu_avg
        } else {
            sampled.cpu_windows.peak()
        },
        rss_peak_mb: mb(end.peak_rss_bytes),
        rss_by_minute_mb: minutes_mb,
        rss_end_mb: mb(end.rss_bytes),
        lateness_p99_s,
        stats_windows,
        submitted: counter("turbomon_supervisor_submitted_total"),
        completed: counter("turbomon_supervisor_completed_total"),
        in_flight_at_end: counter("turbomon_supervisor_unfinished_tasks"),
        lost: [
            "turbomon_supervisor_rejected_total",
            "turbomon_supervisor_shed_total",
            "turbomon_supervisor_failed_unanswered_total",
            "turbomon_supervisor_failed_unreadable_total",
            "turbomon_supervisor_lost_in_restart_total",
            "turbomon_supervisor_unsent_at_shutdown_total",
        ]
        .iter()
        .map(|name| counter(name))
        .sum(),
    })
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Starts `engine-farm` and reads the engines' addresses from its stdout.
async fn start_farm(
    exe: &Path,
    args: &ScaleArgs,
) -> anyhow::Result<(Process, Vec<std::net::SocketAddr>)> {
    let mut child = Command::new(exe)
        .args(["--log", "warn", "engine-farm", "--count"])
        .arg(args.engines.to_string())
        .arg("--first-port")
        .arg(args.first_port.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .context("cannot start the engine farm")?;
    let stdout = child.stdout.take().context("the farm's stdout")?;
    let farm = Process {
        name: "engine farm",
        child,
    };
    let mut lines = BufReader::new(stdout).lines();
    let mut addresses = Vec::with_capacity(args.engines);
    let read = async {
        while let Some(line) = lines.next_line().await? {
            if line == farm::READY {
                return Ok(());
            }
            let address = line
                .split_whitespace()
                .nth(2)
                .and_then(|a| a.parse().ok())
                .with_context(|| format!("unexpected line from the engine farm: {line}"))?;
            addresses.push(address);
        }
        bail!("the engine farm ended before it was ready (see its messages above)")
    };
    tokio::time::timeout(START_STOP_LIMIT, read)
        .await
        .context("the engine farm did not get ready in time")??;
    anyhow::ensure!(
        addresses.len() == args.engines,
        "the engine farm announced {} engines, not {}",
        addresses.len(),
        args.engines
    );
    Ok((farm, addresses))
}

/// The last lines a child wrote on stderr, for the error when it fails.
#[derive(Debug, Clone, Default)]
struct LogTail(std::sync::Arc<std::sync::Mutex<std::collections::VecDeque<String>>>);

impl LogTail {
    const KEEP: usize = 20;

    fn push(&self, line: String) {
        let mut lines = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if lines.len() == Self::KEEP {
            lines.pop_front();
        }
        lines.push_back(line);
    }

    fn lines(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }
}

/// Starts the supervisor on `config` and waits for the line naming its metrics address.
async fn start_supervisor(
    exe: &Path,
    config: &Path,
    stats: &Path,
) -> anyhow::Result<(Process, String, LogTail)> {
    let mut child = Command::new(exe)
        .args([
            "--log",
            "warn,turbomon::supervisor=info",
            "--log-format",
            "json",
            "supervisor",
            "--config",
        ])
        .arg(config)
        .arg("--stats-json")
        .arg(stats)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("cannot start the supervisor")?;
    let stderr = child.stderr.take().context("the supervisor's stderr")?;
    let supervisor = Process {
        name: "supervisor",
        child,
    };
    let tail = LogTail::default();
    let (url_tx, url_rx) = tokio::sync::oneshot::channel();
    let keep = tail.clone();
    tokio::spawn(async move {
        let mut url_tx = Some(url_tx);
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if let Ok(value) = serde_json::from_str::<serde_json::Value>(&line)
                && let Some(url) = value.get("metrics").and_then(|m| m.as_str())
                && let Some(tx) = url_tx.take()
            {
                let _ = tx.send(url.to_string());
            }
            keep.push(line);
        }
    });
    match tokio::time::timeout(START_STOP_LIMIT, url_rx).await {
        Ok(Ok(url)) => Ok((supervisor, url, tail)),
        _ => bail!(
            "the supervisor did not start; its last log lines:\n{}",
            tail.lines().join("\n")
        ),
    }
}

/// What sampling the supervisor gave.
struct Sampled {
    elapsed: Duration,
    cpu_avg: f64,
    cpu_windows: CpuWindows,
    rss_by_minute: Vec<u64>,
}

/// Samples process `pid` for `duration`, with a progress bar on a terminal.
async fn sample(pid: u32, duration: Duration, log_tail: &LogTail) -> anyhow::Result<Sampled> {
    let gone = || {
        anyhow::anyhow!(
            "the supervisor ended during the run; its last log lines:\n{}",
            log_tail.lines().join("\n")
        )
    };
    let bar = indicatif::ProgressBar::new(duration.as_secs().max(1));
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{elapsed_precise} [{bar:30}] {pos}/{len} s  {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    let start = Instant::now();
    let first = sampler::read(pid).ok_or_else(gone)?;
    let mut samples = vec![(Duration::ZERO, first.cpu)];
    let mut rss_by_minute = Vec::new();
    let mut ticker = tokio::time::interval(SAMPLE_EVERY);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let elapsed = start.elapsed();
        let reading = sampler::read(pid).ok_or_else(gone)?;
        samples.push((elapsed, reading.cpu));
        while elapsed >= Duration::from_secs(60 * (rss_by_minute.len() as u64 + 1)) {
            rss_by_minute.push(reading.rss_bytes);
        }
        bar.set_position(elapsed.as_secs().min(duration.as_secs()));
        bar.set_message(format!(
            "supervisor rss {:.1} MB, cpu {:.3} cores",
            mb(reading.rss_bytes),
            reading.cpu.saturating_sub(first.cpu).as_secs_f64() / elapsed.as_secs_f64()
        ));
        if elapsed >= duration {
            bar.finish_and_clear();
            let cpu = reading.cpu.saturating_sub(first.cpu);
            return Ok(Sampled {
                elapsed,
                cpu_avg: cpu.as_secs_f64() / elapsed.as_secs_f64(),
                cpu_windows: CpuWindows::from_samples(&samples, CPU_WINDOW),
                rss_by_minute,
            });
        }
    }
}

/// Sums of every sample of each metric in the Prometheus text at `url` (labels summed away).
async fn scrape(url: &str) -> anyhow::Result<std::collections::HashMap<String, f64>> {
    let rest = url.strip_prefix("http://").context("not an http:// URL")?;
    let (host, path) = rest.split_once('/').unwrap_or((rest, "metrics"));
    let mut stream = tokio::net::TcpStream::connect(host).await?;
    // HTTP/1.0: the body is delimited by the connection closing, never chunked.
    stream
        .write_all(format!("GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes())
        .await?;
    let mut response = String::new();
    tokio::time::timeout(START_STOP_LIMIT, stream.read_to_string(&mut response))
        .await
        .context("no answer")??;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .context("an HTTP answer without a body")?;
    anyhow::ensure!(
        head.starts_with("HTTP/1.") && head.split_whitespace().nth(1) == Some("200"),
        "{}",
        head.lines().next().unwrap_or_default()
    );
    Ok(sum_metrics(body))
}

fn sum_metrics(text: &str) -> std::collections::HashMap<String, f64> {
    let mut sums = std::collections::HashMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let value = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok());
        if let Some(value) = value {
            *sums.entry(line[..name_end].to_string()).or_insert(0.0) += value;
        }
    }
    sums
}

/// The worst scheduled→sent p99 of the summary windows in the statistics JSON, and how many
/// windows there were.
fn lateness_p99(path: &Path) -> anyhow::Result<(Option<f64>, usize)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut worst: Option<f64> = None;
    let mut windows = 0;
    for line in text.lines() {
        let window: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("{}: not a statistics window: {line}", path.display()))?;
        if window["engine"] != crate::stats::SUMMARY_NAME {
            continue;
        }
        windows += 1;
        if let Some(p99) = window["lateness_s"]["scheduled_to_sent"]["p99"].as_f64() {
            worst = Some(worst.map_or(p99, |w| w.max(p99)));
        }
    }
    Ok((worst, windows))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_summed_over_their_labels() {
        let text = "# HELP x y\nturbomon_supervisor_completed_total{engine=\"e0\"} 5\n\
                    turbomon_supervisor_completed_total{engine=\"e1\"} 7\n\
                    turbomon_supervisor_unfinished_tasks 3\n";
        let sums = sum_metrics(text);
        assert_eq!(sums["turbomon_supervisor_completed_total"], 12.0);
        assert_eq!(sums["turbomon_supervisor_unfinished_tasks"], 3.0);
    }
}
