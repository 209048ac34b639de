//! Supervisors standing in for each other through etcd (issue 13, `[cluster]`): three real
//! `turbomon supervisor` processes share six engines through a real etcd server (Debian's
//! `etcd-server`; these tests are `#[ignore = "needs etcd"]` and run by `.ci/run`). A member
//! killed with SIGKILL is taken over within the lease and one loop, with no task lost and none
//! run twice; a member cut off from etcd stops before its lease expires. Engines refuse tasks of
//! an older assignment epoch (no etcd needed). `turbomon chaos --supervisor-kills` kills real
//! supervisor processes, alone and in a cluster, and counts nothing lost or run twice.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, UNIX_EPOCH};

use common::{
    Etcd, RunningEngine, TcpCut, TempDir, TurbomonProcess, batch, engine_config, eventually, parse,
    run_turbomon, sim_task,
};
use turbomon::cluster::rendezvous::owner;
use turbomon::proto::{self, CompletionsRequest, ListTasksRequest, Refusal, TaskState};
use turbomon::supervisor::schedule::plan::plan_relators;

const ENGINES: usize = 6;
const NODES: usize = 200;
const INTERVAL_MS: u64 = 2_000;
const LEASE_TTL: Duration = Duration::from_secs(3);
/// The member loop's tick for LEASE_TTL (a fifth of it).
const TICK: Duration = Duration::from_millis(600);
const SUPERVISOR_ID: &str = "cluster-test";
const MEMBERS: [&str; 3] = ["member-a", "member-b", "member-c"];

fn engine_name(e: usize) -> String {
    format!("engine-{e}")
}

/// The members' shared file (but for `name` and `endpoints`): six engines, each with one
/// relator of 200 sim checks every 2 s, their starts spread over the first second, missed
/// firings replayed.
fn cluster_config(engines: &[&RunningEngine], endpoint: &str, name: &str) -> String {
    let mut text = format!(
        "supervisor_id = \"{SUPERVISOR_ID}\"\nstatus_check_interval = \"300ms\"\n\
         metrics_listen = \"\"\n\n[cluster]\nendpoints = [\"{endpoint}\"]\nname = \"{name}\"\n\
         lease_ttl = \"{}s\"\n\n",
        LEASE_TTL.as_secs()
    );
    for (e, engine) in engines.iter().enumerate() {
        text += &format!(
            "[[engines]]\nname = \"{}\"\naddress = \"{}\"\n\n",
            engine_name(e),
            engine.address
        );
    }
    text += "[[rules]]\nname = \"sim\"\nkind = \"sim\"\nduration = \"100ms\"\noutcome = \"ok\"\n\n";
    for e in 0..ENGINES {
        let nodes: Vec<String> = (0..NODES).map(|n| format!("\"n{e}-{n:03}\"")).collect();
        text += &format!(
            "[[groups]]\nname = \"g{e}\"\nengine = \"{}\"\nnodes = [{}]\n\n\
             [[relators]]\nname = \"r{e}\"\ngroup = \"g{e}\"\nrules = [\"sim\"]\ninterval = \"{INTERVAL_MS}ms\"\n\
             start_window = \"2s\"\nrandomize = 50\ncatch_up = \"replay\"\n\n",
            engine_name(e),
            nodes.join(", ")
        );
    }
    text
}

/// `turbomon supervisor --config FILE` in `dir`.
fn member(dir: &Path, config: &str, name: &str) -> TurbomonProcess {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, config).expect("write config");
    TurbomonProcess::start(
        &["supervisor", "--config", path.to_str().expect("utf-8 path")],
        dir,
    )
}

/// The engines `member` runs among `members` (rendezvous, as the members compute it).
fn share(member: &str, members: &[String]) -> Vec<usize> {
    (0..ENGINES)
        .filter(|&e| owner(&engine_name(e), members) == Some(member))
        .collect()
}

fn names(of: &[&str]) -> Vec<String> {
    of.iter().map(|n| n.to_string()).collect()
}

/// Every completion notice of each engine, by task id (the test subscribes before any task).
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<HashMap<String, u32>>>);

impl Seen {
    async fn subscribe(&self, engine: &RunningEngine) {
        let mut client = engine.client().await;
        let mut stream = client
            .completions(CompletionsRequest {
                flush_window_ms: 20,
                ..Default::default()
            })
            .await
            .expect("subscribe to completions")
            .into_inner();
        let seen = self.clone();
        tokio::spawn(async move {
            while let Ok(Some(batch)) = stream.message().await {
                let mut seen = seen.0.lock().expect("seen");
                for status in batch.statuses {
                    *seen.entry(status.task_id).or_default() += 1;
                }
            }
        });
    }

    fn count(&self) -> usize {
        self.0.lock().expect("seen").len()
    }

    fn snapshot(&self) -> HashMap<String, u32> {
        self.0.lock().expect("seen").clone()
    }
}

/// Whether `process` logged `message` for `engine`.
fn logged(process: &TurbomonProcess, message: &str, engine: &str) -> bool {
    let field = format!("engine={engine} ");
    process.lines().iter().any(|line| {
        line.contains(message)
            && (line.contains(&field) || line.ends_with(&field[..field.len() - 1]))
    })
}

/// Waits until each member runs its share of the engines (reconciled, logged).
async fn wait_for_shares(members: &[(&str, &TurbomonProcess)], live: &[String]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !members.iter().all(|(name, process)| {
        share(name, live)
            .into_iter()
            .all(|e| logged(process, "cluster: running the engine", &engine_name(e)))
    }) {
        if Instant::now() > deadline {
            let logs: Vec<String> = members
                .iter()
                .map(|(name, process)| format!("--- {name}:\n{}", process.lines().join("\n")))
                .collect();
            panic!(
                "not every engine run by its member within 30 s\n{}",
                logs.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Everything the engines saw, checked: every task run once, every result collected or still
/// held finished for the next start, and every anchored firing between the first and the last
/// whole (missed ones replayed), for each relator.
async fn check_no_loss_no_repeat(engines: &[RunningEngine], seen: &Seen, config: &str) -> usize {
    // The checks still running end within their 100 ms.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut accepted_total = 0;
    for (e, engine) in engines.iter().enumerate() {
        let counters = engine.engine.counters();
        accepted_total += counters.tasks_accepted;
        assert_eq!(
            counters.checks_started, counters.tasks_accepted,
            "engine {e}: no task ran twice ({counters:?})"
        );
        assert_eq!(
            counters.checks_finished, counters.tasks_accepted,
            "engine {e}: every check finished"
        );
        // What no member collected is held for the cluster's next start, finished.
        let mut client = engine.client().await;
        let listed = client
            .list_tasks(ListTasksRequest {
                supervisor_id: SUPERVISOR_ID.into(),
                after_id: String::new(),
                limit: 0,
            })
            .await
            .expect("list")
            .into_inner();
        assert!(listed.next_after_id.is_empty());
        for task in &listed.tasks {
            let state = task
                .status
                .as_ref()
                .and_then(|s| TaskState::try_from(s.state).ok());
            assert!(
                state.is_some_and(TaskState::is_final),
                "engine {e}: {} left unfinished",
                task.task_id
            );
        }
        assert_eq!(
            counters.results_released + listed.tasks.len() as u64,
            counters.tasks_accepted,
            "engine {e}: every result collected, or held for the next start"
        );
        assert_eq!(counters.results_expired, 0);
    }
    let seen = seen.snapshot();
    assert_eq!(seen.len() as u64, accepted_total, "one completion per task");
    let repeated: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(repeated.is_empty(), "completed twice: {repeated:?}");

    // Every anchored firing from the first to the one before the last (the last may be cut by
    // the final stop) is whole.
    let plans = plan_relators(&parse(config)).expect("plans");
    for plan in &plans {
        let firing = |k: u64| -> HashSet<String> {
            plan.tasks_at(UNIX_EPOCH + Duration::from_millis(k * INTERVAL_MS))
                .into_iter()
                .map(|due| due.task.id)
                .collect()
        };
        let mut fired: BTreeMap<u64, usize> = BTreeMap::new();
        for id in seen.keys() {
            let Some(rest) = id.strip_prefix(&format!("{}/", plan.name)) else {
                continue;
            };
            let ms: u64 = rest
                .rsplit('/')
                .next()
                .and_then(|t| t.parse().ok())
                .expect("id");
            *fired.entry(ms / INTERVAL_MS).or_default() += 1;
        }
        let boundaries: Vec<u64> = fired
            .keys()
            .copied()
            .filter(|&k| firing(k).iter().any(|id| seen.contains_key(id)))
            .collect();
        let (first, last) = (
            *boundaries.first().expect("fired"),
            *boundaries.last().expect("fired"),
        );
        assert!(last >= first + 3, "{}: fired {first}..={last}", plan.name);
        for k in first..last {
            let missing: Vec<String> = firing(k)
                .into_iter()
                .filter(|id| !seen.contains_key(id))
                .collect();
            assert!(
                missing.is_empty(),
                "{}: firing {k} lost {} tasks, e.g. {:?}",
                plan.name,
                missing.len(),
                missing.first()
            );
        }
    }
    accepted_total as usize
}

#[tokio::test]
#[ignore = "needs etcd"]
async fn a_member_killed_is_taken_over_within_the_lease_with_no_task_lost_or_run_twice() {
    let etcd = Etcd::start().await;
    let dir = TempDir::new("cluster-kill");
    let mut engines = Vec::new();
    for _ in 0..ENGINES {
        engines.push(RunningEngine::start(engine_config()).await);
    }
    let seen = Seen::default();
    for engine in &engines {
        seen.subscribe(engine).await;
    }
    let refs: Vec<&RunningEngine> = engines.iter().collect();
    let all = names(&MEMBERS);
    // The member with the most engines is killed.
    let victim = *MEMBERS
        .iter()
        .max_by_key(|m| share(m, &all).len())
        .expect("members");
    assert!(!share(victim, &all).is_empty());
    let config = cluster_config(&refs, &etcd.endpoint, MEMBERS[0]);
    let mut processes: Vec<(&str, TurbomonProcess)> = MEMBERS
        .iter()
        .map(|name| {
            (
                *name,
                member(
                    dir.path(),
                    &cluster_config(&refs, &etcd.endpoint, name),
                    name,
                ),
            )
        })
        .collect();
    let views: Vec<(&str, &TurbomonProcess)> = processes.iter().map(|(n, p)| (*n, p)).collect();
    wait_for_shares(&views, &all).await;
    eventually("3,000 tasks done", Duration::from_secs(60), || {
        seen.count() >= 3_000
    })
    .await;

    let index = processes
        .iter()
        .position(|(name, _)| *name == victim)
        .expect("victim");
    let (_, mut killed) = processes.remove(index);
    killed.signal("KILL");
    let killed_at = Instant::now();
    killed.wait_exit(Duration::from_secs(10)).await;
    let survivors: Vec<String> = MEMBERS
        .iter()
        .filter(|m| **m != victim)
        .map(|m| m.to_string())
        .collect();
    let moved = share(victim, &all);
    let mut taken = HashSet::new();
    let deadline = killed_at + Duration::from_secs(30);
    while taken.len() < moved.len() {
        assert!(Instant::now() < deadline, "not taken over within 30 s");
        for &e in &moved {
            let new_owner = owner(&engine_name(e), &survivors).expect("a survivor");
            let (_, process) = processes
                .iter()
                .find(|(name, _)| *name == new_owner)
                .expect("survivor running");
            if logged(
                process,
                "taking over the engine of a member gone",
                &engine_name(e),
            ) {
                taken.insert(e);
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let takeover = killed_at.elapsed();
    println!(
        "member {victim} (engines {moved:?}) taken over {} ms after SIGKILL",
        takeover.as_millis()
    );
    // The lease runs out at most LEASE_TTL after the last renewal, which came before the kill;
    // the survivors read the membership every tick. 2 s of slack for a loaded machine.
    assert!(
        takeover <= LEASE_TTL + TICK + Duration::from_secs(2),
        "taken over after {takeover:?}"
    );

    eventually("10,000 tasks done", Duration::from_secs(90), || {
        seen.count() >= 10_000
    })
    .await;
    for (_, process) in &processes {
        process.signal("TERM");
    }
    for (name, process) in &mut processes {
        assert!(
            process.wait_exit(Duration::from_secs(30)).await.success(),
            "{name} stops cleanly"
        );
    }
    let total = check_no_loss_no_repeat(&engines, &seen, &config).await;
    assert!(total >= 10_000, "{total} tasks");
    let stale: u64 = engines
        .iter()
        .map(|e| e.engine.counters().stale_epochs)
        .sum();
    println!("{total} tasks, 0 lost, 0 run twice; {stale} refused for an older epoch");
    for (name, process) in &processes {
        assert!(
            process.lines().iter().all(|line| !line.contains("ERROR")),
            "{name}:\n{}",
            process.lines().join("\n")
        );
    }
}

#[tokio::test]
#[ignore = "needs etcd"]
async fn a_member_cut_off_from_etcd_stops_its_engines_before_its_lease_expires() {
    let etcd = Etcd::start().await;
    let dir = TempDir::new("cluster-cut");
    let mut engines = Vec::new();
    for _ in 0..ENGINES {
        engines.push(RunningEngine::start(engine_config()).await);
    }
    let seen = Seen::default();
    for engine in &engines {
        seen.subscribe(engine).await;
    }
    let refs: Vec<&RunningEngine> = engines.iter().collect();
    let all = names(&MEMBERS);
    let cut_member = *MEMBERS
        .iter()
        .max_by_key(|m| share(m, &all).len())
        .expect("members");
    let proxy = TcpCut::start(etcd.endpoint.parse().expect("address")).await;
    let config = cluster_config(&refs, &etcd.endpoint, MEMBERS[0]);
    let mut processes: Vec<(&str, TurbomonProcess)> = MEMBERS
        .iter()
        .map(|name| {
            let endpoint = if *name == cut_member {
                proxy.addr.to_string()
            } else {
                etcd.endpoint.clone()
            };
            (
                *name,
                member(dir.path(), &cluster_config(&refs, &endpoint, name), name),
            )
        })
        .collect();
    let views: Vec<(&str, &TurbomonProcess)> = processes.iter().map(|(n, p)| (*n, p)).collect();
    wait_for_shares(&views, &all).await;
    eventually("2,000 tasks done", Duration::from_secs(60), || {
        seen.count() >= 2_000
    })
    .await;

    let (_, cut_process) = processes
        .iter()
        .find(|(name, _)| *name == cut_member)
        .expect("cut member");
    let client = etcd.client();
    let key = format!("/turbomon/{SUPERVISOR_ID}/members/{cut_member}");
    let registered = async || {
        client
            .list(&key)
            .await
            .expect("etcd answers the test")
            .kvs
            .iter()
            .any(|kv| kv.key == key.as_bytes())
    };
    assert!(registered().await);
    proxy.cut();
    let fenced = |process: &TurbomonProcess| {
        process
            .lines()
            .iter()
            .any(|line| line.contains("lease not renewed in time: fenced"))
    };
    // Until etcd expires the lease, the member must have stopped.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let was_fenced = fenced(cut_process);
        if !registered().await {
            assert!(
                was_fenced,
                "the lease expired before the member stopped its engines:\n{}",
                cut_process.lines().join("\n")
            );
            break;
        }
        assert!(Instant::now() < deadline, "the lease never expired");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for e in share(cut_member, &all) {
        assert!(
            logged(
                cut_process,
                "the engine is another member's now",
                &engine_name(e)
            ),
            "{} handed over:\n{}",
            engine_name(e),
            cut_process.lines().join("\n")
        );
    }
    // The others take its engines over; it sends nothing they would refuse.
    let survivors: Vec<String> = MEMBERS
        .iter()
        .filter(|m| **m != cut_member)
        .map(|m| m.to_string())
        .collect();
    eventually(
        "the cut member's engines taken over",
        Duration::from_secs(20),
        || {
            share(cut_member, &all).into_iter().all(|e| {
                let new_owner = owner(&engine_name(e), &survivors).expect("a survivor");
                processes.iter().any(|(name, process)| {
                    *name == new_owner
                        && logged(
                            process,
                            "taking over the engine of a member gone",
                            &engine_name(e),
                        )
                })
            })
        },
    )
    .await;
    let before = seen.count();
    eventually(
        "more tasks done after the takeover",
        Duration::from_secs(30),
        || seen.count() >= before + 2_000,
    )
    .await;
    for (_, process) in &processes {
        process.signal("TERM");
    }
    for (name, process) in &mut processes {
        assert!(
            process.wait_exit(Duration::from_secs(30)).await.success(),
            "{name} stops cleanly"
        );
    }
    check_no_loss_no_repeat(&engines, &seen, &config).await;
    let stale: u64 = engines
        .iter()
        .map(|e| e.engine.counters().stale_epochs)
        .sum();
    assert_eq!(
        stale, 0,
        "the fenced member sent nothing after the takeover"
    );
}

#[tokio::test]
async fn an_engine_refuses_tasks_of_an_older_assignment_epoch_from_the_same_cluster() {
    let engine = RunningEngine::start(engine_config()).await;
    let task = |id: &str, supervisor: &str, epoch: u64| proto::Task {
        supervisor_id: supervisor.into(),
        assignment_epoch: epoch,
        ..sim_task(id, 0, TaskState::Ok, 1.0)
    };
    let ack = engine.engine.submit_batch(batch(
        1,
        vec![
            task("a", "cluster-1", 7),
            // The member that took over, under a newer view.
            task("b", "cluster-1", 9),
            // The one before it, still sending under its old view: refused.
            task("c", "cluster-1", 7),
            // Another cluster's epochs are its own; 0 is never refused.
            task("d", "cluster-2", 3),
            task("e", "cluster-1", 0),
            task("f", "cluster-1", 9),
        ],
    ));
    let accepted: Vec<bool> = ack.acks.iter().map(|a| a.accepted).collect();
    assert_eq!(accepted, [true, true, false, true, true, true]);
    assert_eq!(ack.acks[2].refusal, Refusal::StaleEpoch as i32);
    assert!(
        ack.acks[2].reason.contains("epoch 7"),
        "{}",
        ack.acks[2].reason
    );
    let counters = engine.engine.counters();
    assert_eq!(counters.stale_epochs, 1);
    assert_eq!(counters.checks_started, 5);
}

/// `turbomon chaos ARGS --json`: the report, after checking the exit status.
fn chaos_report(args: &[&str]) -> serde_json::Value {
    let dir = TempDir::new("chaos-kills");
    let mut all = vec!["chaos", "--json"];
    all.extend_from_slice(args);
    let (status, stdout, stderr) = run_turbomon(&all, dir.path());
    let report: serde_json::Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("a JSON report ({e}):\n{stdout}\n{stderr}"));
    assert!(status.success(), "{report}\n{stderr}");
    report
}

#[test]
fn chaos_kills_a_real_supervisor_process_and_nothing_is_lost_or_run_twice() {
    let report = chaos_report(&[
        "--supervisor-kills",
        "1",
        "--tasks",
        "1500",
        "--engines",
        "1",
        "--max-time",
        "90s",
    ]);
    assert_eq!(report["supervisor_kills"], 1, "{report}");
    assert_eq!(report["lost"], 0, "{report}");
    assert_eq!(report["duplicated"], 0, "{report}");
    assert_eq!(report["alerts_repeated"], 0, "{report}");
    assert!(report["finished"].as_u64() >= Some(1500), "{report}");
}

#[tokio::test]
#[ignore = "needs etcd"]
async fn chaos_kills_cluster_members_and_reports_each_takeover() {
    let etcd = Etcd::start().await;
    let endpoint = etcd.endpoint.clone();
    let report = tokio::task::spawn_blocking(move || {
        chaos_report(&[
            "--supervisor-kills",
            "2",
            "--tasks",
            "4000",
            "--engines",
            "3",
            "--etcd",
            &endpoint,
            "--supervisors",
            "3",
            "--lease-ttl",
            "2s",
            "--max-time",
            "120s",
        ])
    })
    .await
    .expect("chaos run");
    assert_eq!(report["supervisor_kills"], 2, "{report}");
    assert_eq!(report["lost"], 0, "{report}");
    assert_eq!(report["duplicated"], 0, "{report}");
    let takeovers = report["takeover_ms"].as_array().expect("takeover_ms");
    assert_eq!(takeovers.len(), 2, "{report}");
}
