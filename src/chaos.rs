//! `turbomon chaos`: a supervisor in this process and an engine process (`turbomon engine`, with
//! a journal in its `state_dir`) behind a simulated link, with the link cut at random moments and
//! the engine killed with SIGKILL and started again on its state directory, then a count of what
//! became of every task. The run must end with nothing lost and nothing run twice.
//!
//! [`kills`]: real supervisor processes killed with SIGKILL and started again, alone or as the
//! members of an etcd cluster (`--supervisor-kills`).

pub mod kills;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rand::{Rng, SeedableRng};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::config::{
    EngineConfig, EngineEntry, GroupConfig, RelatorConfig, RuleConfig, SimOutcome, StatusMode,
    SupervisorConfig,
};
use crate::proto::TaskState;
use crate::supervisor::{Supervisor, SupervisorOptions};

/// What a chaos run does.
#[derive(Debug, Clone)]
pub struct ChaosOptions {
    /// Tasks in the run (one sim task per node, one firing).
    pub tasks: usize,
    /// Link profile between supervisor and engine (`none`: plain loopback).
    pub link: String,
    /// Times the link is cut (and healed 0.2–0.8 s later).
    pub cuts: usize,
    /// Times the engine is stopped and started again on its state directory.
    pub engine_restarts: usize,
    /// Seed for the moments of the faults.
    pub seed: u64,
    /// Give up waiting for outcomes after this long.
    pub max_time: Duration,
    /// Plaintext instead of mutual TLS with a throw-away CA.
    pub plaintext: bool,
    /// The `turbomon` program the engine runs as (`engine --config FILE`); default: this
    /// program.
    pub engine_program: Option<std::path::PathBuf>,
}

impl Default for ChaosOptions {
    fn default() -> Self {
        Self {
            tasks: 10_000,
            link: "lossy-wan".to_string(),
            cuts: 20,
            engine_restarts: 2,
            seed: 1,
            max_time: Duration::from_secs(240),
            plaintext: false,
            engine_program: None,
        }
    }
}

/// What became of the tasks.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ChaosReport {
    /// Tasks scheduled.
    pub submitted: u64,
    /// Tasks whose final outcome the supervisor learnt.
    pub completed: u64,
    /// Tasks that never reached a final outcome.
    pub lost: u64,
    /// (task, attempt) pairs that ran more than once on the engine (finished from two different
    /// starts; the same result notified twice is not a second run).
    pub duplicated: u64,
    /// Tasks the engine reported lost in a restart (then retried).
    pub lost_in_restart: u64,
    /// Resends and retries by the supervisor.
    pub retried: u64,
    /// Batches split in half after going unanswered.
    pub splits: u64,
    /// Link cuts made.
    pub cuts: u64,
    /// Engine restarts made (SIGKILL, then a new process on the same state directory).
    pub engine_restarts: u64,
    /// Tasks the supervisor completed that no completion notice reported (a notice in flight
    /// when the engine was killed); a duplicate among them would go unseen.
    pub notices_missed: u64,
    /// Wall time of the run in seconds.
    pub elapsed_s: f64,
}

/// Why a chaos run could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ChaosError {
    /// Bad options, naming the flag.
    #[error("{flag}: {reason}")]
    Invalid {
        /// The flag.
        flag: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The engine could not start.
    #[error("engine: {0}")]
    Engine(String),
    /// The supervisor could not start.
    #[error(transparent)]
    Supervisor(#[from] crate::supervisor::SupervisorError),
    /// The throw-away certificates could not be made.
    #[error("certificates: {0}")]
    Pki(#[from] crate::pki::PkiError),
}

/// Finished (task, attempt) pairs seen on the engine, with the start instants (unix ms) of the
/// runs that finished them.
type Finished = Arc<Mutex<HashMap<(String, u32), Vec<i64>>>>;

/// The engine process; killed on drop.
struct RunningEngine {
    child: std::process::Child,
}

impl RunningEngine {
    /// SIGKILL: no shutdown grace, no last journal write.
    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RunningEngine {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start `program engine --config FILE` listening on `address` with its journal in
/// `state_dir` (its file next to the directory, its log lines in `state_dir.log`).
fn start_engine(
    program: &std::path::Path,
    address: SocketAddr,
    tls: Option<&crate::config::EngineTls>,
    state_dir: &std::path::Path,
) -> Result<RunningEngine, ChaosError> {
    let config = EngineConfig {
        listen: address.to_string(),
        state_dir: Some(state_dir.to_path_buf()),
        shutdown_grace: Duration::ZERO,
        max_held_tasks: 1_000_000,
        completion_buffer_notices: 1_000_000,
        tls: tls.cloned(),
        metrics_listen: String::new(),
        ..EngineConfig::default()
    };
    let text = toml::to_string(&config).map_err(|e| ChaosError::Engine(e.to_string()))?;
    let file = state_dir.with_extension("toml");
    std::fs::write(&file, text)
        .map_err(|e| ChaosError::Engine(format!("{}: {e}", file.display())))?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(state_dir.with_extension("log"))
        .map_err(|e| ChaosError::Engine(e.to_string()))?;
    let child = std::process::Command::new(program)
        .arg("engine")
        .arg("--config")
        .arg(&file)
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| ChaosError::Engine(format!("start {}: {e}", program.display())))?;
    Ok(RunningEngine { child })
}

/// Waits until the completion counter has made `count` subscriptions (the engine is up and
/// pushes to it), at most [`COUNTER_WAIT`].
async fn counter_listens(
    subscribed: &mut watch::Receiver<u64>,
    count: u64,
) -> Result<(), ChaosError> {
    match tokio::time::timeout(COUNTER_WAIT, subscribed.wait_for(|made| *made >= count)).await {
        Ok(Ok(_)) => Ok(()),
        _ => Err(ChaosError::Engine(format!(
            "the engine took no completion subscription within {COUNTER_WAIT:?}"
        ))),
    }
}

/// How long the engine process gets to start and take the completion counter's subscription.
const COUNTER_WAIT: Duration = Duration::from_secs(30);

/// Records one finished run in `seen` (a final state other than lost in a restart).
fn count_finished(seen: &mut HashMap<(String, u32), Vec<i64>>, status: crate::proto::TaskStatus) {
    let state = TaskState::try_from(status.state).unwrap_or(TaskState::Unspecified);
    if state.is_final() && state != TaskState::LostInRestart {
        seen.entry((status.task_id, status.attempt))
            .or_default()
            .push(status.started_unix_ms);
    }
}

/// Counts the finished results the engine on `connection` holds for `supervisor_id`; false if
/// the listing failed (the caller connects again).
async fn count_held(
    connection: &crate::transport::Connection,
    supervisor_id: &str,
    seen: &Finished,
) -> bool {
    let mut lister =
        crate::wire::list::TaskLister::new(connection, supervisor_id, Duration::from_secs(10));
    loop {
        match lister.next_page().await {
            Ok(Some(page)) => {
                let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
                for status in page.tasks.into_iter().filter_map(|task| task.status) {
                    count_finished(&mut seen, status);
                }
            }
            Ok(None) => return true,
            Err(_) => return false,
        }
    }
}

/// Count every completion the engine at `address` pushes, subscribing again whenever it goes
/// away (killed), until `stop`; `subscribed` counts the subscriptions made. After each
/// subscription, the finished results the engine holds for `supervisor_id` are counted too:
/// a result journaled just before a kill comes back at the restart without a notice.
fn count_completions(
    address: SocketAddr,
    tls: Option<crate::tls::ClientTls>,
    supervisor_id: String,
    finished: &Finished,
    subscribed: watch::Sender<u64>,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let seen = Arc::clone(finished);
    tokio::spawn(async move {
        let Ok(mut dialer) =
            crate::transport::Dialer::new(&address.to_string(), None, 64 * 1024 * 1024)
        else {
            return;
        };
        if let Some(tls) = tls {
            dialer = dialer.with_tls(tls, None);
        }
        loop {
            if *stop.borrow() {
                return;
            }
            if let Ok(connection) = dialer.connect().await
                && let Ok(mut feed) =
                    crate::wire::completions::subscribe(&connection, Duration::from_millis(5)).await
            {
                // Without the held results counted, this subscription is not counted either:
                // connect again after the pause.
                let mut feeding = count_held(&connection, &supervisor_id, &seen).await;
                if feeding {
                    subscribed.send_modify(|count| *count += 1);
                }
                while feeding {
                    tokio::select! {
                        _ = stop.wait_for(|stop| *stop) => return,
                        next = feed.next() => match next {
                            Some(pushed) => {
                                let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
                                for status in pushed.statuses {
                                    count_finished(&mut seen, status);
                                }
                            }
                            None => feeding = false,
                        },
                    }
                }
            }
            tokio::select! {
                _ = stop.wait_for(|stop| *stop) => return,
                () = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
        }
    })
}

fn supervisor_config(address: SocketAddr, options: &ChaosOptions) -> SupervisorConfig {
    SupervisorConfig {
        status_mode: StatusMode::Push,
        status_check_interval: Duration::from_secs(1),
        stats_interval: Duration::from_secs(3600),
        // In-process: no fixed metrics port.
        metrics_listen: String::new(),
        batch_timeout: Duration::from_secs(3),
        max_retries: 5,
        retry_period: Some(Duration::from_millis(500)),
        engines: vec![EngineEntry {
            name: "far".to_string(),
            address: address.to_string(),
            link: Some(options.link.clone()).filter(|l| l != crate::link::NO_LINK),
            ..EngineEntry::default()
        }],
        groups: vec![GroupConfig {
            name: "fleet".to_string(),
            engine: "far".to_string(),
            nodes: (0..options.tasks).map(|i| format!("node-{i:05}")).collect(),
        }],
        rules: vec![RuleConfig {
            timeout: Duration::from_secs(5),
            ..RuleConfig::sim(
                "probe".to_string(),
                Duration::from_millis(200),
                SimOutcome::Ok,
                1.0,
            )
        }],
        relators: vec![RelatorConfig {
            name: "chaos".to_string(),
            group: "fleet".to_string(),
            rules: vec!["probe".to_string()],
            interval: Some(Duration::from_secs(24 * 3600)),
            start_window: Some(Duration::from_secs(600)),
            randomize: 1,
            ..RelatorConfig::default()
        }],
        ..SupervisorConfig::default()
    }
}

fn validate(options: &ChaosOptions) -> Result<(), ChaosError> {
    if options.tasks == 0 || options.tasks > 200_000 {
        return Err(ChaosError::Invalid {
            flag: "--tasks",
            reason: format!("{} is outside 1..=200000", options.tasks),
        });
    }
    if options.link != crate::link::NO_LINK {
        crate::link::profile(&options.link).map_err(|e| ChaosError::Invalid {
            flag: "--link",
            reason: e.to_string(),
        })?;
    }
    if options.cuts > 1000 || options.engine_restarts > 100 {
        return Err(ChaosError::Invalid {
            flag: if options.cuts > 1000 {
                "--cuts"
            } else {
                "--engine-restarts"
            },
            reason: "too many faults for one run".to_string(),
        });
    }
    if options.max_time.is_zero() {
        return Err(ChaosError::Invalid {
            flag: "--max-time",
            reason: "must be more than zero".to_string(),
        });
    }
    Ok(())
}

/// Run the scenario and count what became of every task.
pub async fn run(options: ChaosOptions) -> Result<ChaosReport, ChaosError> {
    validate(&options)?;
    let started = Instant::now();
    let state_dir = std::env::temp_dir().join(format!(
        "turbomon-chaos-{}-{}",
        std::process::id(),
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos()
    ));
    let address = TcpListener::bind("127.0.0.1:0")
        .await
        .and_then(|l| l.local_addr())
        .map_err(|e| ChaosError::Engine(e.to_string()))?;
    let finished: Finished = Arc::default();
    let pki = match options.plaintext {
        true => None,
        false => Some(crate::pki::ThrowawayPki::create()?),
    };
    let program = match &options.engine_program {
        Some(program) => program.clone(),
        None => std::env::current_exe().map_err(|e| ChaosError::Engine(e.to_string()))?,
    };
    std::fs::create_dir_all(&state_dir).map_err(|e| ChaosError::Engine(e.to_string()))?;
    let engine_tls = pki.as_ref().map(|pki| &pki.engine);
    let mut engine = Some(start_engine(&program, address, engine_tls, &state_dir)?);
    let counter_tls = match &pki {
        Some(pki) => Some(
            crate::tls::ClientTls::load(&pki.supervisor.client_files())
                .map_err(|e| ChaosError::Engine(e.to_string()))?,
        ),
        None => None,
    };
    let (stop_counting, counting_stop) = watch::channel(false);
    let (subscribed_tx, mut subscribed) = watch::channel(0u64);
    let supervisor_config = supervisor_config(address, &options);
    let counting = count_completions(
        address,
        counter_tls,
        supervisor_config.supervisor_id.clone(),
        &finished,
        subscribed_tx,
        counting_stop,
    );
    // Nothing reaches the engine before the counter listens (see `counter_listens`).
    counter_listens(&mut subscribed, 1).await?;

    let (_config_tx, config_rx) = watch::channel(Arc::new(SupervisorConfig {
        tls: pki.as_ref().map(|pki| pki.supervisor.clone()),
        ..supervisor_config
    }));
    let (observer, mut completions) = mpsc::unbounded_channel();
    let supervisor = Supervisor::start(
        config_rx,
        SupervisorOptions {
            observer: Some(observer),
            ..SupervisorOptions::default()
        },
    )?;
    let link = supervisor.link("far");

    // The faults, at random moments over the first part of the run.
    let mut rng = rand::rngs::StdRng::seed_from_u64(options.seed);
    let span_ms = 2_000 + options.tasks as u64 / 2;
    let mut faults: Vec<(u64, bool)> = Vec::new();
    for _ in 0..options.cuts {
        faults.push((rng.random_range(0..span_ms), true));
    }
    for _ in 0..options.engine_restarts {
        faults.push((rng.random_range(0..span_ms), false));
    }
    faults.sort_unstable();
    let mut done: HashSet<String> = HashSet::new();
    let deadline = tokio::time::Instant::now() + options.max_time;
    let begin = tokio::time::Instant::now();
    let (mut cuts, mut restarts) = (0u64, 0u64);
    let mut faults = faults.into_iter().peekable();
    while done.len() < options.tasks && tokio::time::Instant::now() < deadline {
        let next_fault = faults
            .peek()
            .map(|(at, _)| begin + Duration::from_millis(*at));
        let wake = next_fault.unwrap_or(deadline).min(deadline);
        tokio::select! {
            completion = completions.recv() => match completion {
                Some(c) => { done.insert(c.task_id); }
                None => break,
            },
            () = tokio::time::sleep_until(wake) => {
                if let Some((_, is_cut)) = faults.next() {
                    if is_cut {
                        if let Some(link) = &link {
                            link.cut();
                            cuts += 1;
                            let hold = Duration::from_millis(rng.random_range(200..800));
                            let healer = link.clone();
                            tokio::spawn(async move {
                                tokio::time::sleep(hold).await;
                                healer.heal();
                            });
                        }
                    } else if let Some(running) = engine.take() {
                        // The link stays cut from the kill until the counter has subscribed to
                        // the new process, so it misses no completion of a task sent after.
                        if let Some(link) = &link {
                            link.cut();
                        }
                        let before = *subscribed.borrow_and_update();
                        running.kill();
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        engine = Some(start_engine(&program, address, engine_tls, &state_dir)?);
                        restarts += 1;
                        counter_listens(&mut subscribed, before + 1).await?;
                        if let Some(link) = &link {
                            link.heal();
                        }
                    }
                }
            },
        }
    }
    if let Some(link) = &link {
        link.heal();
    }
    let counters = supervisor.shutdown().await;
    // The last notices arrive within the engine's flush window.
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop_counting.send_replace(true);
    let _ = counting.await;
    if let Some(running) = engine.take() {
        running.kill();
    }
    let _ = std::fs::remove_dir_all(&state_dir);
    let _ = std::fs::remove_file(state_dir.with_extension("toml"));
    let _ = std::fs::remove_file(state_dir.with_extension("log"));
    let far = counters.first().map(|(_, c)| *c).unwrap_or_default();
    let (duplicated, notices_missed) = {
        let finished = finished.lock().unwrap_or_else(|p| p.into_inner());
        let noticed: HashSet<&str> = finished.keys().map(|(id, _)| id.as_str()).collect();
        (
            finished
                .values()
                .filter(|starts| {
                    let mut starts = (*starts).clone();
                    starts.sort_unstable();
                    starts.dedup();
                    starts.len() > 1
                })
                .count() as u64,
            done.iter()
                .filter(|id| !noticed.contains(id.as_str()))
                .count() as u64,
        )
    };
    let completed = done.len() as u64;
    Ok(ChaosReport {
        submitted: options.tasks as u64,
        completed,
        lost: options.tasks as u64 - completed.min(options.tasks as u64),
        duplicated,
        lost_in_restart: far.lost_in_restart,
        retried: far.retried + far.retries + far.resubmitted,
        splits: far.splits,
        cuts,
        engine_restarts: restarts,
        notices_missed,
        elapsed_s: started.elapsed().as_secs_f64(),
    })
}
