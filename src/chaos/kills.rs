//! `turbomon chaos --supervisor-kills N`: real supervisor processes (this binary, `supervisor
//! --config`, logging JSON) killed with SIGKILL at random moments under load and started again,
//! alone or as the members of an etcd cluster (`--etcd ENDPOINTS --supervisors K`), in front of
//! in-process engines that count every task they finish. Then: what became of every task (lost,
//! run twice), the alerts (a broken tenth of the nodes alerts through a `log` action; the same
//! result alerted twice is counted), and, in a cluster, how long each takeover took (from the
//! kill to the last of the victim's engines taken over, read from the survivors' logs).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, UNIX_EPOCH};

use rand::{Rng, SeedableRng};
use serde::Serialize;
use tokio_stream::StreamExt;

use crate::config::EngineConfig;
use crate::engine::Engine;
use crate::proto::{CompletionsRequest, TaskState};

/// Nodes per engine: one sim check every 2 s each.
const NODES_PER_ENGINE: usize = 200;
const INTERVAL_MS: u64 = 2_000;
const SUPERVISOR_ID: &str = "chaos";

/// What a supervisor-kill run does.
#[derive(Debug, Clone)]
pub struct KillOptions {
    /// Run until the engines finished this many tasks.
    pub tasks: usize,
    /// Times a supervisor (a member, in a cluster) is killed with SIGKILL and started again.
    pub supervisor_kills: usize,
    /// etcd endpoints: run `supervisors` members of a cluster instead of one supervisor.
    pub etcd: Option<Vec<String>>,
    /// Members of the cluster (with `etcd`).
    pub supervisors: usize,
    /// In-process engines (200 nodes each).
    pub engines: usize,
    /// The members' `lease_ttl`.
    pub lease_ttl: Duration,
    /// Seed for the moments of the kills and the victims.
    pub seed: u64,
    /// Give up after this long.
    pub max_time: Duration,
}

/// What became of the tasks, the alerts and the takeovers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KillReport {
    /// Supervisor processes run at once (1 without a cluster).
    pub supervisors: usize,
    /// Engines.
    pub engines: usize,
    /// SIGKILLs made.
    pub supervisor_kills: u64,
    /// Tasks the engines accepted.
    pub accepted: u64,
    /// (task, attempt) pairs the engines finished.
    pub finished: u64,
    /// Accepted tasks whose result was neither collected nor held finished for the next start,
    /// plus tasks of a firing missing between the first and the last firing of a relator.
    pub lost: u64,
    /// (task, attempt) pairs finished more than once.
    pub duplicated: u64,
    /// Alert notifications logged (problems, recoveries, reminders).
    pub alerts: u64,
    /// Notifications logged again for a task already notified by the same kind.
    pub alerts_repeated: u64,
    /// Problems notified again for a (relator, node) already in a notified problem, with no
    /// recovery between: a restarted supervisor does not remember the states it notified.
    pub problems_renotified: u64,
    /// Cluster: from each kill to the last of the victim's engines taken over, in ms.
    pub takeover_ms: Vec<u64>,
    /// Without a cluster: from each restart to the supervisor reconciled with every engine, ms.
    pub restart_reconciled_ms: Vec<u64>,
    /// Wall time of the run in seconds.
    pub elapsed_s: f64,
}

/// Why a supervisor-kill run could not be made.
#[derive(Debug, thiserror::Error)]
pub enum KillError {
    /// Bad options, naming the flag.
    #[error("{flag}: {reason}")]
    Invalid {
        /// The flag.
        flag: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A file, a listener or a child process could not be made.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// An engine could not start.
    #[error("engine: {0}")]
    Engine(String),
    /// The run did not reach its task count within `--max-time`.
    #[error("only {done} of {wanted} tasks finished within {limit:?}")]
    TooSlow {
        /// Finished.
        done: usize,
        /// Asked for.
        wanted: usize,
        /// `--max-time`.
        limit: Duration,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> KillError {
    let what = what.into();
    move |source| KillError::Io { what, source }
}

/// One JSON log line of a child, with when it was read.
type Lines = Arc<Mutex<Vec<(Instant, serde_json::Value)>>>;

/// A supervisor child process; killed on drop.
struct SupervisorChild {
    name: String,
    child: Child,
    lines: Lines,
}

impl SupervisorChild {
    fn start(name: &str, config: &Path) -> Result<Self, KillError> {
        let exe = std::env::current_exe().map_err(io("this program's path"))?;
        let mut child = Command::new(exe)
            .args(["--log-format", "json", "supervisor", "--config"])
            .arg(config)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(io(format!("start supervisor {name}")))?;
        let lines: Lines = Arc::default();
        if let Some(stderr) = child.stderr.take() {
            let sink = Arc::clone(&lines);
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { return };
                    if let Ok(value) = serde_json::from_str(&line)
                        && let Ok(mut lines) = sink.lock()
                    {
                        lines.push((Instant::now(), value));
                    }
                }
            });
        }
        Ok(Self {
            name: name.to_string(),
            child,
            lines,
        })
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn terminate(&mut self, limit: Duration) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
    }

    /// The first instant at or after `since` a line with `message` about `engine` was read.
    fn logged_at(&self, since: Instant, message: &str, engine: &str) -> Option<Instant> {
        let lines = self.lines.lock().ok()?;
        lines
            .iter()
            .filter(|(at, _)| *at >= since)
            .find(|(_, line)| {
                line["fields"]["message"]
                    .as_str()
                    .or_else(|| line["message"].as_str())
                    .is_some_and(|m| m.contains(message))
                    && (line["engine"].as_str() == Some(engine)
                        || line["fields"]["engine"].as_str() == Some(engine))
            })
            .map(|(at, _)| *at)
    }

    /// `(read at, kind, task, relator, node)` of every alert line.
    fn alerts(&self) -> Vec<(Instant, String, String, String, String)> {
        let Ok(lines) = self.lines.lock() else {
            return Vec::new();
        };
        lines
            .iter()
            .filter(|(_, line)| line["target"].as_str() == Some("turbomon::alert"))
            .filter_map(|(at, line)| {
                let field = |key: &str| {
                    line[key]
                        .as_str()
                        .or_else(|| line["fields"][key].as_str())
                        .map(str::to_string)
                };
                Some((
                    *at,
                    field("kind")?,
                    field("task")?,
                    field("relator")?,
                    field("node")?,
                ))
            })
            .collect()
    }
}

impl Drop for SupervisorChild {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Finished (task, attempt) pairs, with how often.
type Finished = Arc<Mutex<HashMap<(String, u32), u32>>>;

struct Served {
    engine: Engine,
    address: std::net::SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

async fn start_engine(finished: &Finished) -> Result<Served, KillError> {
    let config = EngineConfig {
        listen: "127.0.0.1:0".into(),
        metrics_listen: String::new(),
        completion_buffer_notices: 1_000_000,
        ..EngineConfig::default()
    };
    let engine = Engine::new(config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(io("engine listener"))?;
    let address = listener.local_addr().map_err(io("engine address"))?;
    let mut notices = engine
        .subscribe_completions(&CompletionsRequest {
            flush_window_ms: 5,
            max_batch: 0,
        })
        .map_err(|e| KillError::Engine(e.to_string()))?;
    let seen = Arc::clone(finished);
    tokio::spawn(async move {
        while let Some(Ok(batch)) = notices.next().await {
            let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
            for status in batch.statuses {
                let state = TaskState::try_from(status.state).unwrap_or(TaskState::Unspecified);
                if state.is_final() {
                    *seen.entry((status.task_id, status.attempt)).or_default() += 1;
                }
            }
        }
    });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = engine.clone();
    tokio::spawn(async move {
        let _ = served
            .serve(listener, async {
                let _ = stopped.await;
            })
            .await;
    });
    Ok(Served {
        engine,
        address,
        stop: Some(stop),
    })
}

fn engine_name(e: usize) -> String {
    format!("engine-{e}")
}

/// The supervisors' file: every engine with one relator of 200 sim checks every 2 s (a tenth
/// broken, alerted through a `log` action), missed firings replayed.
fn config_text(engines: &[Served], cluster: Option<(&[String], &str, Duration)>) -> String {
    let mut text = format!(
        "supervisor_id = \"{SUPERVISOR_ID}\"\nstatus_check_interval = \"500ms\"\n\
         stats_interval = \"1h\"\nmetrics_listen = \"\"\n\n"
    );
    if let Some((endpoints, name, ttl)) = cluster {
        let endpoints: Vec<String> = endpoints.iter().map(|e| format!("\"{e}\"")).collect();
        text += &format!(
            "[cluster]\nendpoints = [{}]\nname = \"{name}\"\nlease_ttl = \"{}s\"\n\n",
            endpoints.join(", "),
            ttl.as_secs()
        );
    }
    for (e, engine) in engines.iter().enumerate() {
        text += &format!(
            "[[engines]]\nname = \"{}\"\naddress = \"{}\"\n\n",
            engine_name(e),
            engine.address
        );
    }
    text += "[[rules]]\nname = \"ok\"\nkind = \"sim\"\nduration = \"200ms\"\noutcome = \"ok\"\n\n\
             [[rules]]\nname = \"broken\"\nkind = \"sim\"\nduration = \"200ms\"\noutcome = \"broken\"\n\n\
             [[alerts]]\nname = \"log\"\nkind = \"log\"\n\n";
    for e in 0..engines.len() {
        let node = |n: usize| format!("\"e{e}-n{n:03}\"");
        let ok: Vec<String> = (0..NODES_PER_ENGINE)
            .filter(|n| n % 10 != 0)
            .map(node)
            .collect();
        let broken: Vec<String> = (0..NODES_PER_ENGINE)
            .filter(|n| n % 10 == 0)
            .map(node)
            .collect();
        for (kind, nodes) in [("ok", ok), ("broken", broken)] {
            text += &format!(
                "[[groups]]\nname = \"g{e}-{kind}\"\nengine = \"{}\"\nnodes = [{}]\n\n\
                 [[relators]]\nname = \"r{e}-{kind}\"\ngroup = \"g{e}-{kind}\"\nrules = [\"{kind}\"]\n\
                 interval = \"{INTERVAL_MS}ms\"\nstart_window = \"2s\"\nrandomize = 50\n\
                 catch_up = \"replay\"\nmax_retries = 0\nalerts = [\"log\"]\n\n",
                engine_name(e),
                nodes.join(", ")
            );
        }
    }
    text
}

/// Run it.
pub async fn run(options: KillOptions) -> Result<KillReport, KillError> {
    let clustered = options.etcd.is_some();
    if options.engines == 0 {
        return Err(KillError::Invalid {
            flag: "--engines",
            reason: "at least 1".into(),
        });
    }
    if clustered && options.supervisors < 2 {
        return Err(KillError::Invalid {
            flag: "--supervisors",
            reason: "a cluster that survives a kill needs at least 2 members".into(),
        });
    }
    let started = Instant::now();
    let mut rng = rand::rngs::StdRng::seed_from_u64(options.seed);
    let dir = std::env::temp_dir().join(format!(
        "turbomon-chaos-kills-{}-{:x}",
        std::process::id(),
        rng.random::<u32>()
    ));
    std::fs::create_dir_all(&dir).map_err(io(format!("create {}", dir.display())))?;
    let finished: Finished = Arc::default();
    let mut engines = Vec::new();
    for _ in 0..options.engines {
        engines.push(start_engine(&finished).await?);
    }
    let members: Vec<String> = if clustered {
        (0..options.supervisors)
            .map(|k| format!("chaos-{k}"))
            .collect()
    } else {
        vec!["chaos".to_string()]
    };
    let mut configs = Vec::new();
    for name in &members {
        let cluster = options
            .etcd
            .as_deref()
            .map(|endpoints| (endpoints, name.as_str(), options.lease_ttl));
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(&path, config_text(&engines, cluster))
            .map_err(io(format!("write {}", path.display())))?;
        configs.push(path);
    }
    let mut children: Vec<SupervisorChild> = members
        .iter()
        .zip(&configs)
        .map(|(name, path)| SupervisorChild::start(name, path))
        .collect::<Result<_, _>>()?;
    let mut retired: Vec<SupervisorChild> = Vec::new();

    let done = |finished: &Finished| finished.lock().map(|f| f.len()).unwrap_or(0);
    let deadline = started + options.max_time;
    let mut takeover_ms = Vec::new();
    let mut restart_reconciled_ms = Vec::new();
    let mut kills = 0u64;
    for _ in 0..options.supervisor_kills {
        // Kill at a random moment: 2 to 6 s of load first (at least one whole firing).
        let pause = Duration::from_millis(rng.random_range(2_000..6_000));
        tokio::time::sleep(pause).await;
        if Instant::now() >= deadline {
            break;
        }
        // In a cluster, a member that runs at least one engine.
        let share = |k: usize| -> Vec<usize> {
            (0..options.engines)
                .filter(|&e| {
                    !clustered
                        || crate::cluster::rendezvous::owner(&engine_name(e), &members)
                            == Some(members[k].as_str())
                })
                .collect()
        };
        let candidates: Vec<usize> = (0..children.len())
            .filter(|&k| !share(k).is_empty())
            .collect();
        let victim = candidates[rng.random_range(0..candidates.len())];
        let moved = share(victim);
        children[victim].kill();
        kills += 1;
        let killed_at = Instant::now();
        tracing::info!(target: "turbomon::chaos", member = %members[victim], engines = ?moved, "supervisor killed with SIGKILL");
        if clustered {
            let survivors: Vec<String> = members
                .iter()
                .enumerate()
                .filter(|(k, _)| *k != victim)
                .map(|(_, m)| m.clone())
                .collect();
            // Wait (bounded) for every one of its engines to be taken over.
            let limit = killed_at + options.lease_ttl * 3 + Duration::from_secs(10);
            let mut last = None;
            'wait: while Instant::now() < limit {
                let mut all = Some(killed_at);
                for &e in &moved {
                    let heir = crate::cluster::rendezvous::owner(&engine_name(e), &survivors)
                        .unwrap_or_default();
                    let at = children.iter().find(|c| c.name == heir).and_then(|c| {
                        c.logged_at(
                            killed_at,
                            "taking over the engine of a member gone",
                            &engine_name(e),
                        )
                    });
                    all = match (all, at) {
                        (Some(a), Some(b)) => Some(a.max(b)),
                        _ => None,
                    };
                }
                if let Some(at) = all {
                    last = Some(at);
                    break 'wait;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if let Some(at) = last {
                takeover_ms.push(u64::try_from((at - killed_at).as_millis()).unwrap_or(0));
            }
            // The member comes back once its old lease has expired (its name is free again).
            tokio::time::sleep(options.lease_ttl).await;
        }
        let restarted_at = Instant::now();
        let fresh = SupervisorChild::start(&members[victim], &configs[victim])?;
        retired.push(std::mem::replace(&mut children[victim], fresh));
        if clustered {
            // Back in the cluster: it runs its engines again after the handover delay.
            let limit = restarted_at + options.lease_ttl * 3 + Duration::from_secs(10);
            while Instant::now() < limit
                && !moved.iter().all(|&e| {
                    children[victim]
                        .logged_at(restarted_at, "cluster: running the engine", &engine_name(e))
                        .is_some()
                })
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        } else {
            let limit = restarted_at + Duration::from_secs(30);
            while Instant::now() < limit {
                let all = (0..options.engines).all(|e| {
                    children[0]
                        .logged_at(restarted_at, "reconciled with the engine", &engine_name(e))
                        .is_some()
                });
                if all {
                    restart_reconciled_ms
                        .push(u64::try_from(restarted_at.elapsed().as_millis()).unwrap_or(0));
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    while done(&finished) < options.tasks {
        if Instant::now() >= deadline {
            for child in &mut children {
                child.kill();
            }
            return Err(KillError::TooSlow {
                done: done(&finished),
                wanted: options.tasks,
                limit: options.max_time,
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for child in &mut children {
        child.terminate(Duration::from_secs(30));
    }
    // The checks still running end within their 200 ms.
    tokio::time::sleep(Duration::from_millis(600)).await;

    let mut report = KillReport {
        supervisors: children.len(),
        engines: options.engines,
        supervisor_kills: kills,
        accepted: 0,
        finished: 0,
        lost: 0,
        duplicated: 0,
        alerts: 0,
        alerts_repeated: 0,
        problems_renotified: 0,
        takeover_ms,
        restart_reconciled_ms,
        elapsed_s: started.elapsed().as_secs_f64(),
    };
    for served in &engines {
        let counters = served.engine.counters();
        report.accepted += counters.tasks_accepted;
        let mut held_finished = 0u64;
        let mut after_id = String::new();
        while let Ok(reply) = served.engine.list_tasks(&crate::proto::ListTasksRequest {
            supervisor_id: SUPERVISOR_ID.into(),
            after_id: after_id.clone(),
            limit: 0,
        }) {
            held_finished += reply.tasks.len() as u64;
            if reply.next_after_id.is_empty() {
                break;
            }
            after_id = reply.next_after_id;
        }
        report.lost += counters
            .tasks_accepted
            .saturating_sub(counters.results_released + held_finished);
    }
    let finished = finished.lock().map(|f| f.clone()).unwrap_or_default();
    report.finished = finished.len() as u64;
    report.duplicated = finished.values().filter(|&&n| n > 1).count() as u64;
    report.lost += missing_from_firings(&finished, &configs[0]);
    let mut alerts: Vec<_> = children
        .iter()
        .chain(&retired)
        .flat_map(SupervisorChild::alerts)
        .collect();
    alerts.sort_by_key(|alert| alert.0);
    let mut notified: HashSet<(String, String)> = HashSet::new();
    let mut in_problem: HashSet<(String, String)> = HashSet::new();
    for (_, kind, task, relator, node) in alerts {
        report.alerts += 1;
        if !notified.insert((kind.clone(), task)) {
            report.alerts_repeated += 1;
        }
        let key = (relator, node);
        if kind == "problem" && !in_problem.insert(key.clone()) {
            report.problems_renotified += 1;
        } else if kind == "recovery" {
            in_problem.remove(&key);
        }
    }
    for served in &mut engines {
        if let Some(stop) = served.stop.take() {
            let _ = stop.send(());
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(report)
}

/// Tasks of the anchored firings between each relator's first and last (both left out: the
/// first may be a new supervisor's firing at once, the last cut by the final stop) that never
/// finished.
fn missing_from_firings(finished: &HashMap<(String, u32), u32>, config: &Path) -> u64 {
    let Ok(config) = crate::config::load_supervisor(config) else {
        return 0;
    };
    let Ok(plans) = crate::supervisor::schedule::plan::plan_relators(&config) else {
        return 0;
    };
    let seen: HashSet<&str> = finished.keys().map(|(id, _)| id.as_str()).collect();
    let mut missing = 0;
    for plan in &plans {
        let firing = |k: u64| -> Vec<String> {
            plan.tasks_at(UNIX_EPOCH + Duration::from_millis(k * INTERVAL_MS))
                .into_iter()
                .map(|due| due.task.id)
                .collect()
        };
        let mut candidates: BTreeMap<u64, Vec<String>> = BTreeMap::new();
        for id in &seen {
            if let Some(rest) = id.strip_prefix(&format!("{}/", plan.name))
                && let Some(ms) = rest.rsplit('/').next().and_then(|t| t.parse::<u64>().ok())
            {
                let k = ms / INTERVAL_MS;
                candidates.entry(k).or_insert_with(|| firing(k));
            }
        }
        // The anchored firings: those with at least one of their own tasks finished.
        let fired: BTreeMap<u64, Vec<String>> = candidates
            .into_iter()
            .filter(|(_, ids)| ids.iter().any(|id| seen.contains(id.as_str())))
            .collect();
        let (Some(&first), Some(&last)) = (fired.keys().next(), fired.keys().next_back()) else {
            continue;
        };
        for k in first + 1..last {
            let ids = fired.get(&k).cloned().unwrap_or_else(|| firing(k));
            missing += ids.iter().filter(|id| !seen.contains(id.as_str())).count() as u64;
        }
    }
    missing
}
