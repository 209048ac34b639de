//! The `turbomon` command line: engine, supervisor, demo, chaos, bench and tune, configuration
//! check, link proxy and certificates.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{CommandFactory, Parser, Subcommand, ValueEnum};

use turbomon::config;
use turbomon::demo::{self, DemoOptions};
use turbomon::engine::{ConfigFile, Engine};
use turbomon::link;
use turbomon::supervisor::{Supervisor, SupervisorOptions};

/// turbomon: a supervisor that batches monitoring tasks to engines over gRPC, and the engines that
/// run them, with loop-time and packet-size statistics.
#[derive(Debug, Parser)]
#[command(version = turbomon::VERSION, propagate_version = true, about, long_about = None)]
struct Cli {
    /// Log filter (tracing-subscriber syntax), e.g. `info`, `turbomon=debug` [default: `info`;
    /// `warn` for bench and tune, whose logs go to stderr].
    #[arg(long, global = true, env = "RUST_LOG")]
    log: Option<String>,
    /// Log line format: `text` for people, `json` (one object per line, fields at the top
    /// level) for log collectors.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "TURBOMON_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    /// Human-readable lines (coloured on a terminal).
    Text,
    /// One JSON object per line.
    Json,
}

/// A kind of configuration file on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Kind {
    /// The supervisor's file (engines, rules, relators, turbo keys).
    Supervisor,
    /// An engine's file (listen, limits, TLS, exec allow-list).
    Engine,
    /// Simulated link profiles.
    Links,
}

impl From<Kind> for config::FileKind {
    fn from(kind: Kind) -> Self {
        match kind {
            Kind::Supervisor => config::FileKind::Supervisor,
            Kind::Engine => config::FileKind::Engine,
            Kind::Links => config::FileKind::Links,
        }
    }
}

/// Where `engine` and `supervisor` look for their file when `--config` is not given, in order.
const ENGINE_CONFIG_CANDIDATES: [&str; 2] = ["config/engine.toml", "/etc/turbomon/engine.toml"];
const SUPERVISOR_CONFIG_CANDIDATES: [&str; 2] =
    ["config/supervisor.toml", "/etc/turbomon/supervisor.toml"];

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a monitoring engine: a gRPC server that runs the checks it is sent.
    Engine {
        /// Engine configuration file [default: config/engine.toml, else
        /// /etc/turbomon/engine.toml, else the built-in defaults].
        #[arg(long)]
        config: Option<PathBuf>,
        /// Listen here instead of the file's `listen` (e.g. 127.0.0.1:0).
        #[arg(long)]
        listen: Option<String>,
        /// Serve /metrics here instead of the file's `metrics_listen` ("" for none): a second
        /// engine on the same host needs a port of its own.
        #[arg(long)]
        metrics_listen: Option<String>,
    },
    /// Run the supervisor: schedule relators, submit and monitor tasks, print statistics.
    Supervisor {
        /// Supervisor configuration file, re-read when it changes or on SIGHUP [default:
        /// config/supervisor.toml, else /etc/turbomon/supervisor.toml].
        #[arg(long)]
        config: Option<PathBuf>,
        /// Statistics window, over the file's `stats_interval` (and every engine's), at start
        /// and after every reload: e.g. `10s` for a first look.
        #[arg(long, value_parser = parse_interval)]
        stats_interval: Option<Duration>,
        /// Append every statistics window as one JSON object per line to this file.
        #[arg(long)]
        stats_json: Option<PathBuf>,
        /// Link profiles file (like config/links.toml) whose values replace the built-in
        /// profiles of the same names for engines with `link = "..."`.
        #[arg(long)]
        links: Option<PathBuf>,
    },
    /// Run a supervisor and two engines on loopback with a few hundred tasks (one engine behind a
    /// simulated WAN link), printing statistics at a short interval.
    Demo {
        /// Stop after this long (e.g. 20s); without it, run until Ctrl-C.
        #[arg(long, value_parser = humantime::parse_duration)]
        duration: Option<Duration>,
        /// Statistics window.
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
        stats_interval: Duration,
        /// Monitor loop period.
        #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
        status_check_interval: Duration,
        /// Turbo mode (batching) on or off.
        #[arg(long, default_value = "on", value_parser = parse_on_off)]
        turbo: bool,
        /// Link profile between the supervisor and the remote engine (`none` for plain loopback).
        #[arg(long, default_value = "wan")]
        remote_link: String,
        /// Append every statistics window as JSON to this file.
        #[arg(long)]
        stats_json: Option<PathBuf>,
        /// Plaintext instead of mutual TLS (a throw-away CA made at start).
        #[arg(long)]
        plaintext: bool,
    },
    /// Run a supervisor and a journaling engine process behind a simulated link, cut the link
    /// and kill the engine (SIGKILL, then start it again) at random moments, then report what
    /// became of every task (lost and duplicated must be 0).
    Chaos {
        /// Tasks in the run.
        #[arg(long, default_value_t = 10_000)]
        tasks: usize,
        /// Link profile between supervisor and engine (`none` for plain loopback).
        #[arg(long, default_value = "lossy-wan")]
        link: String,
        /// Times the link is cut (healed 0.2-0.8 s later).
        #[arg(long, default_value_t = 20)]
        cuts: usize,
        /// Times the engine process is killed with SIGKILL and started again on its state
        /// directory.
        #[arg(long, default_value_t = 2)]
        engine_restarts: usize,
        /// Seed for the moments of the faults.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Give up waiting for outcomes after this long.
        #[arg(long, default_value = "240s", value_parser = humantime::parse_duration)]
        max_time: Duration,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// Plaintext instead of mutual TLS (a throw-away CA made at start).
        #[arg(long)]
        plaintext: bool,
        /// Instead: run real supervisor processes in front of in-process engines and kill one
        /// with SIGKILL (then start it again) this many times; report lost, duplicated, alerts
        /// and takeover times.
        #[arg(long, default_value_t = 0)]
        supervisor_kills: usize,
        /// With --supervisor-kills: etcd endpoints (comma-separated): run --supervisors members
        /// of a cluster and kill members.
        #[arg(long, value_delimiter = ',')]
        etcd: Option<Vec<String>>,
        /// With --etcd: members of the cluster.
        #[arg(long, default_value_t = 3)]
        supervisors: usize,
        /// With --supervisor-kills: in-process engines (200 nodes each).
        #[arg(long, default_value_t = 3)]
        engines: usize,
        /// With --etcd: the members' lease_ttl (whole seconds, at least 2s).
        #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
        lease_ttl: Duration,
    },
    /// Validate a supervisor, engine or links file; exit non-zero naming the file, line and
    /// key of the first error.
    CheckConfig {
        /// The file to check.
        file: PathBuf,
        /// The kind of file [default: decided from its keys].
        #[arg(long, value_enum)]
        kind: Option<Kind>,
    },
    /// Print the annotated configuration file of a kind (every key, its default, what it does),
    /// to start from: `turbomon gen-config engine > /etc/turbomon/engine.toml`.
    GenConfig {
        /// Which file.
        #[arg(value_enum)]
        kind: Kind,
    },
    /// Print a shell completion script: `turbomon completions bash >
    /// /etc/bash_completion.d/turbomon`.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff) to stdout, or write one per command to a directory.
    Man {
        /// Write turbomon.1 and turbomon-<command>.1 here instead.
        #[arg(long)]
        out_dir: Option<PathBuf>,
    },
    /// Run a simulated link as a loopback TCP proxy in front of an engine, so separate
    /// processes can be shaped too. Prints the address it listens on.
    Link {
        /// Link profile: lan, wan, lossy-wan, satellite, modem, or one from --profiles.
        #[arg(long)]
        profile: String,
        /// Address to listen on (127.0.0.1:0 picks a free port).
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: String,
        /// The engine to forward to (host:port).
        #[arg(long)]
        upstream: String,
        /// A profiles file (like config/links.toml) with more or changed profiles.
        #[arg(long)]
        profiles: Option<PathBuf>,
    },
    /// Measure loop time, packet size, wire bytes and efficiency for every combination of link
    /// profile, turbo mode and batch size, each against a fresh in-process engine on loopback.
    Bench(turbomon::bench::BenchArgs),
    /// Sweep batch sizes on one link and recommend task_submit_batch_size and
    /// task_info_batch_size.
    Tune(turbomon::bench::TuneArgs),
    /// Measure the supervisor at scale: N engines in one child process, T sim tasks a minute
    /// over them, the supervisor in its own process for a duration; report its CPU, memory,
    /// lateness, tasks completed and lost.
    Scale(turbomon::scale::ScaleArgs),
    /// Serve many engines in one process on loopback (for `scale`): prints `engine I ADDRESS`
    /// per engine, then `ready`.
    #[command(hide = true)]
    EngineFarm {
        /// Engines to serve.
        #[arg(long)]
        count: usize,
        /// First port (the others follow); 0 picks a free port for each.
        #[arg(long, default_value_t = 0)]
        first_port: u16,
    },
    /// Certificates for mutual TLS: a CA, leaves for engines and supervisors, and a look inside.
    #[command(subcommand)]
    Pki(PkiCommand),
}

#[derive(Debug, Subcommand)]
enum PkiCommand {
    /// Create a CA: DIR/ca.pem and DIR/ca.key (mode 0600; never overwritten).
    Init {
        /// Directory for the CA's files (created if missing).
        #[arg(long)]
        dir: PathBuf,
        /// The CA's common name.
        #[arg(long, default_value = "turbomon CA")]
        name: String,
        /// Days of validity.
        #[arg(long, default_value_t = turbomon::pki::DEFAULT_CA_DAYS)]
        days: u32,
    },
    /// Issue a certificate for an engine or a supervisor: OUT/NAME.pem, OUT/NAME.key (mode
    /// 0600) and a copy of the CA certificate, OUT/ca.pem.
    Issue {
        /// The CA's directory (from `pki init`).
        #[arg(long)]
        ca_dir: PathBuf,
        /// Common name; also the DNS name when neither --dns nor --ip is given.
        #[arg(long)]
        name: String,
        /// A DNS name the certificate is valid for (an engine: the host supervisors dial).
        #[arg(long)]
        dns: Vec<String>,
        /// An IP address the certificate is valid for.
        #[arg(long)]
        ip: Vec<std::net::IpAddr>,
        /// Directory for the files (created if missing).
        #[arg(long)]
        out: PathBuf,
        /// Days of validity.
        #[arg(long, default_value_t = turbomon::pki::DEFAULT_LEAF_DAYS)]
        days: u32,
    },
    /// Print the subject, issuer, names and expiry of the certificates in a PEM file.
    Show {
        /// The certificate file.
        file: PathBuf,
    },
}

/// A duration longer than zero, as the configuration files require of intervals.
fn parse_interval(s: &str) -> Result<Duration, String> {
    match humantime::parse_duration(s) {
        Ok(d) if d.is_zero() => Err("must be longer than zero".to_string()),
        Ok(d) => Ok(d),
        Err(e) => Err(format!("{e} (e.g. 10s, 500ms, 5m)")),
    }
}

fn parse_on_off(s: &str) -> Result<bool, String> {
    match s {
        "on" | "true" => Ok(true),
        "off" | "false" => Ok(false),
        _ => Err(format!("expected `on` or `off`, got `{s}`")),
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Logs go to stderr: bench, tune and chaos keep stdout for their table or JSON.
    let measuring = matches!(
        cli.command,
        Command::Bench(_) | Command::Tune(_) | Command::Scale(_)
    );
    let filter = cli
        .log
        .clone()
        .unwrap_or_else(|| if measuring { "warn" } else { "info" }.to_string());
    let filter = tracing_subscriber::EnvFilter::try_new(&filter)
        .with_context(|| format!("bad --log filter `{filter}`"))?;
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => logs
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
    }
    let runtime = tokio::runtime::Runtime::new().context("cannot start the tokio runtime")?;
    runtime.block_on(run(cli.command))
}

/// Writes `bytes` to stdout; a reader that went away (`| head`) is not an error.
fn write_stdout(bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(e).context("cannot write to stdout")
        }
        _ => Ok(()),
    }
}

/// `--config` when given, else the first candidate that exists.
fn config_file(given: Option<PathBuf>, candidates: &[&str]) -> Option<PathBuf> {
    given.or_else(|| {
        candidates
            .iter()
            .map(PathBuf::from)
            .find(|path| path.exists())
    })
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Engine {
            config,
            listen,
            metrics_listen,
        } => {
            raise_open_files("engine", None);
            let file = config_file(config, &ENGINE_CONFIG_CANDIDATES);
            let mut settings = match &file {
                Some(path) => {
                    tracing::info!(target: "turbomon::engine", version = turbomon::VERSION, config = %path.display(), "turbomon engine starting");
                    config::load_engine(path)?
                }
                None => {
                    tracing::info!(target: "turbomon::engine", version = turbomon::VERSION, config = "built-in defaults", looked_at = %ENGINE_CONFIG_CANDIDATES.join(", "), "turbomon engine starting on its built-in defaults: no configuration file");
                    config::EngineConfig::default()
                }
            };
            if let Some(listen) = &listen {
                settings.listen.clone_from(listen);
            }
            if let Some(metrics_listen) = &metrics_listen {
                settings.metrics_listen.clone_from(metrics_listen);
            }
            let listener = tokio::net::TcpListener::bind(&settings.listen)
                .await
                .with_context(|| format!("cannot listen on {}", settings.listen))?;
            tracing::info!(target: "turbomon::engine", address = %listener.local_addr()?, "engine listening");
            let engine = Engine::open(settings)?;
            let metrics = engine.serve_metrics()?;
            if let Some(metrics) = &metrics {
                tracing::info!(target: "turbomon::engine", metrics = %metrics.url(), "serving metrics");
            }
            if let Some(path) = file {
                engine.set_config_file(ConfigFile {
                    path,
                    listen_override: listen,
                    metrics_listen_override: metrics_listen,
                });
            }
            engine.serve(listener, stop_signal()).await?;
            drop(metrics);
        }
        Command::Supervisor {
            config,
            stats_interval,
            stats_json,
            links,
        } => {
            let Some(config) = config_file(config, &SUPERVISOR_CONFIG_CANDIDATES) else {
                anyhow::bail!(
                    "no supervisor configuration: pass --config FILE, or create one of {} \
                     (start from `turbomon gen-config supervisor`)",
                    SUPERVISOR_CONFIG_CANDIDATES.join(", ")
                );
            };
            tracing::info!(target: "turbomon::supervisor", version = turbomon::VERSION, config = %config.display(), "turbomon supervisor starting");
            let overrides = config::Overrides { stats_interval };
            let mut initial = config::load_supervisor(&config)?;
            overrides.apply(&mut initial);
            raise_open_files("supervisor", Some(initial.engines.len()));
            let supervisor_id = initial.supervisor_id.clone();
            let updates = config::watch_supervisor_with(config.clone(), initial, overrides);
            let supervisor = Supervisor::start(
                updates,
                SupervisorOptions {
                    stats_json,
                    link_profiles: match links {
                        Some(path) => link::load_profiles(&path)?,
                        None => Default::default(),
                    },
                    ..SupervisorOptions::default()
                },
            )?;
            tracing::info!(target: "turbomon::supervisor", config = %config.display(), %supervisor_id, engines = %supervisor.engine_names().join(", "), "supervisor running");
            if let Some(address) = supervisor.metrics_addr() {
                tracing::info!(target: "turbomon::supervisor", metrics = %format!("http://{address}/metrics"), "serving metrics");
            }
            supervisor.run_until(stop_signal()).await;
        }
        Command::Demo {
            duration,
            stats_interval,
            status_check_interval,
            turbo,
            remote_link,
            stats_json,
            plaintext,
        } => {
            let options = DemoOptions {
                stats_interval,
                status_check_interval,
                turbo_monitoring: turbo,
                remote_link,
                stats_json,
                plaintext,
            };
            let until = async move {
                match duration {
                    Some(d) => {
                        tokio::select! {
                            () = tokio::time::sleep(d) => {}
                            () = stop_signal() => {}
                        }
                    }
                    None => stop_signal().await,
                }
            };
            tracing::info!(target: "turbomon::demo", version = turbomon::VERSION, "turbomon demo starting");
            for (engine, counters) in demo::run(options, until).await? {
                tracing::info!(target: "turbomon::demo", %engine, %counters, "demo finished");
            }
        }
        Command::Link {
            profile,
            listen,
            upstream,
            profiles,
        } => {
            let mut known = link::builtin_profiles();
            if let Some(path) = profiles {
                known.extend(link::load_profiles(&path)?);
            }
            let shaped = link::Link::new(link::lookup(&known, &profile)?)?;
            let upstream = tokio::net::lookup_host(&upstream)
                .await
                .with_context(|| format!("--upstream {upstream}"))?
                .next()
                .with_context(|| format!("--upstream {upstream} resolves to no address"))?;
            let listener = tokio::net::TcpListener::bind(&listen)
                .await
                .with_context(|| format!("cannot listen on {listen}"))?;
            println!("{}", listener.local_addr()?);
            tracing::info!(target: "turbomon::link", %profile, listen = %listener.local_addr()?, %upstream, "link proxy running");
            shaped.proxy(listener, upstream, stop_signal()).await?;
            let counters = shaped.counters();
            tracing::info!(target: "turbomon::link", %counters, "link proxy stopped");
        }
        Command::Chaos {
            tasks,
            link,
            cuts,
            engine_restarts,
            seed,
            max_time,
            json,
            plaintext,
            supervisor_kills,
            etcd,
            supervisors,
            engines,
            lease_ttl,
        } => {
            if supervisor_kills > 0 {
                let report = turbomon::chaos::kills::run(turbomon::chaos::kills::KillOptions {
                    tasks,
                    supervisor_kills,
                    etcd,
                    supervisors,
                    engines,
                    lease_ttl,
                    seed,
                    max_time,
                })
                .await?;
                if json {
                    println!("{}", serde_json::to_string(&report)?);
                } else {
                    println!(
                        "supervisors: {}, engines: {}, kills: {}, accepted: {}, finished: {}, lost: {}, duplicated: {}, alerts: {}, alerts_repeated: {}, problems_renotified: {}, takeover_ms: {:?}, restart_reconciled_ms: {:?}, elapsed: {:.1}s",
                        report.supervisors,
                        report.engines,
                        report.supervisor_kills,
                        report.accepted,
                        report.finished,
                        report.lost,
                        report.duplicated,
                        report.alerts,
                        report.alerts_repeated,
                        report.problems_renotified,
                        report.takeover_ms,
                        report.restart_reconciled_ms,
                        report.elapsed_s
                    );
                }
                if report.lost > 0 || report.duplicated > 0 {
                    std::process::exit(1);
                }
                return Ok(());
            }
            let report = turbomon::chaos::run(turbomon::chaos::ChaosOptions {
                tasks,
                link,
                cuts,
                engine_restarts,
                seed,
                max_time,
                plaintext,
                engine_program: None,
            })
            .await?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                println!(
                    "submitted: {}, completed: {}, lost: {}, duplicated: {}, lost_in_restart: {}, retried: {}, splits: {}, cuts: {}, engine_restarts: {}, notices_missed: {}, elapsed: {:.1}s",
                    report.submitted,
                    report.completed,
                    report.lost,
                    report.duplicated,
                    report.lost_in_restart,
                    report.retried,
                    report.splits,
                    report.cuts,
                    report.engine_restarts,
                    report.notices_missed,
                    report.elapsed_s
                );
            }
            if report.lost > 0 || report.duplicated > 0 {
                std::process::exit(1);
            }
        }
        Command::Pki(command) => pki(command)?,
        Command::Bench(args) => turbomon::bench::run_cli(args).await?,
        Command::Tune(args) => turbomon::bench::tune_cli(args).await?,
        Command::Scale(args) => turbomon::scale::run_cli(args).await?,
        Command::EngineFarm { count, first_port } => {
            turbomon::scale::farm::run(count, first_port, stop_signal()).await?
        }
        Command::CheckConfig { file, kind } => {
            match config::check_file_as(&file, kind.map(Into::into)) {
                Ok(summary) => println!("{}: ok\n{summary}", file.display()),
                Err(e) => {
                    eprintln!("{e}");
                    std::process::exit(1);
                }
            }
        }
        Command::GenConfig { kind } => {
            write_stdout(config::FileKind::from(kind).sample().as_bytes())?
        }
        Command::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "turbomon", &mut script);
            write_stdout(&script)?;
        }
        Command::Man { out_dir } => match out_dir {
            Some(dir) => {
                std::fs::create_dir_all(&dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
                clap_mangen::generate_to(Cli::command(), &dir)
                    .with_context(|| format!("cannot write the pages to {}", dir.display()))?;
                println!("manual pages written to {}", dir.display());
            }
            None => {
                let mut page = Vec::new();
                clap_mangen::Man::new(Cli::command())
                    .render(&mut page)
                    .context("cannot render the manual page")?;
                write_stdout(&page)?;
            }
        },
    }
    Ok(())
}

fn pki(command: PkiCommand) -> anyhow::Result<()> {
    use turbomon::pki;
    match command {
        PkiCommand::Init { dir, name, days } => {
            let cert = pki::init(&dir, &name, days)?;
            println!(
                "CA certificate: {}\nCA key:         {} (keep it off the engines)",
                cert.display(),
                dir.join(pki::CA_KEY).display()
            );
        }
        PkiCommand::Issue {
            ca_dir,
            name,
            dns,
            ip,
            out,
            days,
        } => {
            let leaf = pki::issue(
                &ca_dir,
                &pki::LeafRequest {
                    name,
                    dns,
                    ips: ip,
                    days,
                },
                &out,
            )?;
            println!(
                "certificate: {}\nkey:         {}\nCA:          {}",
                leaf.cert.display(),
                leaf.key.display(),
                leaf.ca.display()
            );
        }
        PkiCommand::Show { file } => print!("{}", pki::show(&file)?),
    }
    Ok(())
}

/// Raises the soft open-files limit to the hard one; with `engines`, logs an error when even
/// that is too low for them (connections would fail later, one engine at a time).
fn raise_open_files(who: &str, engines: Option<usize>) {
    use turbomon::scale::limits;
    match engines {
        Some(engines) => {
            if let Err(too_low) = limits::ensure_for(engines, who) {
                tracing::error!(target: "turbomon", "{too_low}");
            }
        }
        None => {
            let _ = limits::raise_open_files();
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM.
async fn stop_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!(target: "turbomon", "stopping");
}
