//! The `bench` and `tune` command lines, and their validation into a [`BenchPlan`]: every bad
//! value is refused before anything starts, with the flag named.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::bound;
use super::error::BenchError;
use super::plan::{BenchPlan, Combination, LinkChoice, NO_LINK, RunSettings, TurboMode};
use crate::link::{LinkProfile, builtin_profiles, load_profiles};

/// Largest batch size accepted (a batch of this many tasks is about 1 MB).
pub const MAX_BATCH_SIZE: usize = 10_000;
/// Most tasks per loop accepted.
pub const MAX_TASKS: usize = 1_000_000;
/// Most loops accepted.
pub const MAX_LOOPS: usize = 10_000;
/// Most tasks an engine holds during one combination (`--tasks` × `--loops`): every submission
/// loop runs before the monitor loops collect and release the results.
pub const MAX_HELD_TASKS: usize = 2_000_000;
/// Most connections (turbo off) or batches (turbo on) in flight accepted.
pub const MAX_IN_FLIGHT: usize = 10_000;
/// How long one batch or call may wait for its reply, as in the supervisor.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(30);
/// Default packet cap of the recommendation, in KB (1 KB = 1024 bytes).
pub const DEFAULT_SAFE_PACKET_KB: u64 = 64;

/// `turbomon bench`: measure loop time, packet size, wire bytes and efficiency for every
/// combination of link, turbo mode and batch size.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Link profiles to run over, comma separated (`none` = plain loopback without a simulated
    /// link; built in: lan, wan, lossy-wan, satellite, modem; more with --profiles).
    #[arg(long, value_delimiter = ',', default_value = "lan,wan")]
    pub links: Vec<String>,
    /// Tasks per batch to try, comma separated (each at least 1). Turbo off sends one task per
    /// call whatever this says, so it runs once per link and is reported at batch size 1.
    /// `auto` adds a row whose size the supervisor's automatic controller chooses per loop
    /// (starting from 30): it runs 20 learning loops before the `--loops` it reports, and its
    /// JSON carries `auto_vs_best`, its loop time over the best fixed size's.
    #[arg(long, value_delimiter = ',', default_value = "1,10,30,60,100")]
    pub batch_sizes: Vec<crate::config::BatchSize>,
    /// Turbo modes, comma separated: `on` (batches on one stream), `off` (one call per task on
    /// its own connection), `bare` (baseline: a plain tonic stream, no supervisor code; link
    /// `none` only).
    #[arg(long, value_delimiter = ',', default_value = "on,off")]
    pub turbo: Vec<TurboMode>,
    /// Tasks per loop (each loop sends new tasks with their own ids).
    #[arg(long, default_value_t = 300)]
    pub tasks: usize,
    /// Submission loops, then as many monitor loops, per combination.
    #[arg(long, default_value_t = 5)]
    pub loops: usize,
    /// Turbo off: connections open at once (the supervisor's `max_connections`).
    #[arg(long, default_value_t = crate::config::defaults::max_connections())]
    pub max_connections: usize,
    /// Turbo on and bare: batches in flight at once (the supervisor's `max_inflight_batches`).
    #[arg(long, default_value_t = crate::config::defaults::max_inflight_batches())]
    pub max_inflight_batches: usize,
    /// Refuse to start when the estimated run time exceeds this, and stop a run that takes
    /// longer (e.g. 90s, 10m).
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub max_time: Duration,
    /// Print only a JSON array of rows on stdout (no table, no progress bar).
    #[arg(long)]
    pub json: bool,
    /// Print every column of the table (25, about 230 characters wide) instead of the twelve
    /// that choose a batch size within 120 characters. No effect on --json or --csv.
    #[arg(long)]
    pub wide: bool,
    /// Also write the rows as CSV to this file.
    #[arg(long, value_name = "FILE")]
    pub csv: Option<PathBuf>,
    /// Also draw loop time and packet KB against batch size, one line per link and turbo mode
    /// with a marker at every measured point, as an SVG file with four panels (submission and
    /// monitor loop time, submission and monitor packet size) and one legend beside them.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// After the table, recommend submission and status batch sizes for each link from the
    /// turbo-on rows (see `turbomon tune`).
    #[arg(long)]
    pub recommend: bool,
    /// With --recommend: refuse batch sizes whose packets exceed this many KB.
    #[arg(long, default_value_t = DEFAULT_SAFE_PACKET_KB)]
    pub max_packet_kb: u64,
    /// Link profiles file (shape of config/links.toml) whose profiles are added to the built-in
    /// ones.
    #[arg(long, value_name = "FILE")]
    pub profiles: Option<PathBuf>,
    /// Seed for the links' jitter and loss, for repeatable runs.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Plaintext connections instead of mutual TLS (for every row, the bare baseline too).
    #[arg(long)]
    pub plaintext: bool,
    /// Limit what the supervisor side sends to the engine to this rate (e.g. `100KB/s`, as an
    /// engine entry's `max_bandwidth`); each row then reports the bytes per second the link
    /// carried to the engine during its submission loops.
    #[arg(long, value_name = "RATE")]
    pub max_bandwidth: Option<crate::config::Bandwidth>,
    /// Also measure alert latency for these status modes, comma separated (`poll`, `push`):
    /// a supervisor with a sim rule set to break, per link; turbo-on rows are given once per
    /// mode with `status_mode` and `alert_latency_s`.
    #[arg(long, value_delimiter = ',', value_parser = parse_status_mode)]
    pub status_mode: Vec<crate::config::StatusMode>,
    /// With --status-mode: broken tasks measured per link and mode.
    #[arg(long, default_value_t = 40)]
    pub alert_samples: usize,
}

fn parse_status_mode(s: &str) -> Result<crate::config::StatusMode, String> {
    match s {
        "poll" => Ok(crate::config::StatusMode::Poll),
        "push" => Ok(crate::config::StatusMode::Push),
        _ => Err(format!("expected `poll` or `push`, got `{s}`")),
    }
}

/// `turbomon tune`: sweep batch sizes for submission and for status checks on one link and
/// recommend the smallest batch whose loop time is within 5 % of the best.
#[derive(Debug, Clone, Args)]
pub struct TuneArgs {
    /// The link profile to tune for (e.g. wan, lossy-wan; `none` = plain loopback).
    #[arg(long)]
    pub link: String,
    /// Tasks per loop, as many as one engine gets due at once.
    #[arg(long, default_value_t = 300)]
    pub tasks: usize,
    /// Loops per batch size. The trimmed mean decides (the slower half and the fastest tenth of
    /// the loops left out), so retransmission timeouts on a lossy link do not.
    #[arg(long, default_value_t = 16)]
    pub loops: usize,
    /// Batch sizes to try, comma separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1,2,5,10,20,30,50,75,100,150,200,300"
    )]
    pub batch_sizes: Vec<usize>,
    /// Refuse batch sizes whose packets (request plus reply) exceed this many KB, besides the
    /// link's black-hole size.
    #[arg(long, default_value_t = DEFAULT_SAFE_PACKET_KB)]
    pub max_packet_kb: u64,
    /// Batches in flight at once (the supervisor's `max_inflight_batches`).
    #[arg(long, default_value_t = crate::config::defaults::max_inflight_batches())]
    pub max_inflight_batches: usize,
    /// Refuse to start when the estimated sweep time exceeds this, and stop one that takes
    /// longer.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub max_time: Duration,
    /// Print the recommendation as JSON.
    #[arg(long)]
    pub json: bool,
    /// Link profiles file (shape of config/links.toml) added to the built-in profiles.
    #[arg(long, value_name = "FILE")]
    pub profiles: Option<PathBuf>,
    /// Seed for the link's jitter and loss, for repeatable runs.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Plaintext connections instead of mutual TLS.
    #[arg(long)]
    pub plaintext: bool,
}

fn invalid(flag: &'static str, reason: impl Into<String>) -> BenchError {
    BenchError::InvalidArgument {
        flag,
        reason: reason.into(),
    }
}

/// The built-in link profiles plus those of `file`, if given.
pub fn known_profiles(
    file: Option<&std::path::Path>,
) -> Result<BTreeMap<String, LinkProfile>, BenchError> {
    let mut profiles = builtin_profiles();
    if let Some(file) = file {
        profiles.extend(load_profiles(file).map_err(BenchError::Profiles)?);
    }
    Ok(profiles)
}

/// Resolve one link name (`none` or a known profile), naming `flag` when it is unknown.
pub fn resolve_link(
    flag: &'static str,
    name: &str,
    profiles: &BTreeMap<String, LinkProfile>,
) -> Result<LinkChoice, BenchError> {
    let name = name.trim();
    if name == NO_LINK {
        return Ok(LinkChoice::none());
    }
    match profiles.get(name) {
        Some(profile) => {
            profile
                .validate()
                .map_err(|e| invalid(flag, format!("link profile `{name}` is unusable: {e}")))?;
            Ok(LinkChoice {
                name: name.to_string(),
                profile: Some(profile.clone()),
            })
        }
        None => {
            let known: Vec<&str> = std::iter::once(NO_LINK)
                .chain(profiles.keys().map(String::as_str))
                .collect();
            Err(invalid(
                flag,
                format!("unknown link profile `{name}`; known: {}", known.join(", ")),
            ))
        }
    }
}

/// Check a batch size list: not empty, no 0, none absurd, no duplicates. Returns it sorted.
pub fn check_batch_sizes(sizes: &[usize]) -> Result<Vec<usize>, BenchError> {
    const FLAG: &str = "--batch-sizes";
    if sizes.is_empty() {
        return Err(invalid(FLAG, "give at least one batch size"));
    }
    let mut sorted = sizes.to_vec();
    sorted.sort_unstable();
    if sorted.first() == Some(&0) {
        return Err(invalid(
            FLAG,
            "batch size 0 is not allowed: every batch carries at least one task",
        ));
    }
    if let Some(&largest) = sorted.last()
        && largest > MAX_BATCH_SIZE
    {
        return Err(invalid(
            FLAG,
            format!("batch size {largest} is above the largest accepted, {MAX_BATCH_SIZE}"),
        ));
    }
    if let Some(pair) = sorted.windows(2).find(|w| w[0] == w[1]) {
        return Err(invalid(
            FLAG,
            format!("batch size {} is listed twice", pair[0]),
        ));
    }
    Ok(sorted)
}

fn check_count(flag: &'static str, value: usize, max: usize, what: &str) -> Result<(), BenchError> {
    if value == 0 {
        return Err(invalid(flag, format!("{what} must be at least 1")));
    }
    if value > max {
        return Err(invalid(
            flag,
            format!("{value} {what} is above the largest accepted, {max}"),
        ));
    }
    Ok(())
}

fn check_held(tasks: usize, loops: usize) -> Result<(), BenchError> {
    let held = tasks.saturating_mul(loops);
    if held > MAX_HELD_TASKS {
        return Err(invalid(
            "--tasks",
            format!(
                "{tasks} tasks × {loops} loops = {held} tasks held by the engine before the monitor loops release them; at most {MAX_HELD_TASKS}"
            ),
        ));
    }
    Ok(())
}

fn check_max_time(max_time: Duration, estimated: Duration) -> Result<(), BenchError> {
    if max_time.is_zero() {
        return Err(invalid("--max-time", "must be longer than 0"));
    }
    if estimated > max_time {
        return Err(invalid(
            "--max-time",
            format!(
                "this run is estimated to take about {}, more than the {} allowed; raise --max-time or run fewer links, batch sizes, tasks or loops",
                format_estimate(estimated),
                humantime::format_duration(max_time)
            ),
        ));
    }
    Ok(())
}

/// A duration rounded to whole seconds for messages.
pub fn format_estimate(d: Duration) -> String {
    humantime::format_duration(Duration::from_secs(d.as_secs().max(1))).to_string()
}

fn check_packet_cap(max_packet_kb: u64) -> Result<u64, BenchError> {
    if max_packet_kb == 0 {
        return Err(invalid("--max-packet-kb", "must be at least 1"));
    }
    max_packet_kb
        .checked_mul(1024)
        .ok_or_else(|| invalid("--max-packet-kb", "is absurdly large"))
}

/// The loop arguments `bench` and `tune` both take, validated by [`LoopArgs::check`].
struct LoopArgs<'a> {
    batch_sizes: &'a [usize],
    /// An automatic row too (then the fixed sizes may be none).
    auto: bool,
    tasks: usize,
    loops: usize,
    max_connections: usize,
    max_inflight_batches: usize,
    max_packet_kb: u64,
    max_time: Duration,
    seed: Option<u64>,
    plaintext: bool,
}

/// [`LoopArgs`] once checked: what both commands build their plan from.
struct CheckedLoops {
    /// The batch sizes, sorted.
    batch_sizes: Vec<usize>,
    settings: RunSettings,
    safe_packet_bytes: u64,
    max_time: Duration,
}

impl LoopArgs<'_> {
    /// The checks `bench` and `tune` share, naming the flag: the batch sizes, `--tasks`,
    /// `--loops`, the tasks held (`--tasks` × `--loops`), `--max-inflight-batches` and
    /// `--max-packet-kb`. `--max-time` is checked against the estimate by
    /// [`CheckedLoops::into_plan`]; `max_connections` is the caller's to check.
    fn check(&self) -> Result<CheckedLoops, BenchError> {
        let batch_sizes = if self.auto && self.batch_sizes.is_empty() {
            Vec::new()
        } else {
            check_batch_sizes(self.batch_sizes)?
        };
        check_count("--tasks", self.tasks, MAX_TASKS, "tasks")?;
        check_count("--loops", self.loops, MAX_LOOPS, "loops")?;
        let held_loops = if self.auto {
            self.loops + super::plan::AUTO_LEARNING_LOOPS
        } else {
            self.loops
        };
        check_held(self.tasks, held_loops)?;
        check_count(
            "--max-inflight-batches",
            self.max_inflight_batches,
            MAX_IN_FLIGHT,
            "batches",
        )?;
        let safe_packet_bytes = check_packet_cap(self.max_packet_kb)?;
        Ok(CheckedLoops {
            batch_sizes,
            settings: RunSettings {
                tasks: self.tasks,
                loops: self.loops,
                max_connections: self.max_connections,
                max_inflight_batches: self.max_inflight_batches,
                reply_timeout: REPLY_TIMEOUT.min(self.max_time),
                seed: self.seed,
                plaintext: self.plaintext,
                max_bandwidth: None,
            },
            safe_packet_bytes,
            max_time: self.max_time,
        })
    }
}

impl CheckedLoops {
    /// The plan running `combinations`, refused (naming `--max-time`) when its estimate exceeds
    /// the time bound.
    fn into_plan(
        self,
        combinations: Vec<Combination>,
        notes: Vec<String>,
    ) -> Result<BenchPlan, BenchError> {
        let estimated = bound::estimate_plan(&combinations, &self.settings);
        check_max_time(self.max_time, estimated)?;
        Ok(BenchPlan {
            combinations,
            settings: self.settings,
            max_time: self.max_time,
            estimated,
            safe_packet_bytes: self.safe_packet_bytes,
            notes,
        })
    }
}

impl BenchArgs {
    /// Validate every argument and build the run. Refused (naming the flag): an unknown link
    /// profile, a batch size of 0, 0 tasks or loops, `bare` without link `none`, an estimated
    /// run time over `--max-time`.
    pub fn plan(&self) -> Result<BenchPlan, BenchError> {
        let profiles = known_profiles(self.profiles.as_deref())?;
        if self.links.is_empty() {
            return Err(invalid("--links", "give at least one link"));
        }
        let mut links: Vec<LinkChoice> = Vec::new();
        for name in &self.links {
            let link = resolve_link("--links", name, &profiles)?;
            if links.iter().any(|l| l.name == link.name) {
                return Err(invalid(
                    "--links",
                    format!("`{}` is listed twice", link.name),
                ));
            }
            links.push(link);
        }
        if self.turbo.is_empty() {
            return Err(invalid("--turbo", "give at least one of on, off, bare"));
        }
        let mut turbo = self.turbo.clone();
        turbo.sort_unstable();
        if let Some(pair) = turbo.windows(2).find(|w| w[0] == w[1]) {
            return Err(invalid("--turbo", format!("`{}` is listed twice", pair[0])));
        }
        let auto = self.batch_sizes.contains(&crate::config::BatchSize::Auto);
        let fixed: Vec<usize> = self
            .batch_sizes
            .iter()
            .filter_map(|size| size.fixed())
            .collect();
        if auto && self.batch_sizes.iter().filter(|s| s.is_auto()).count() > 1 {
            return Err(invalid("--batch-sizes", "`auto` is listed twice"));
        }
        let checked = LoopArgs {
            batch_sizes: &fixed,
            auto,
            tasks: self.tasks,
            loops: self.loops,
            max_connections: self.max_connections,
            max_inflight_batches: self.max_inflight_batches,
            max_packet_kb: self.max_packet_kb,
            max_time: self.max_time,
            seed: self.seed,
            plaintext: self.plaintext,
        }
        .check()?;
        if !self.status_mode.is_empty() {
            check_count("--alert-samples", self.alert_samples, 10_000, "tasks")?;
        }
        check_count(
            "--max-connections",
            self.max_connections,
            MAX_IN_FLIGHT,
            "connections",
        )?;

        let mut notes = Vec::new();
        if turbo.contains(&TurboMode::Bare) {
            let shaped: Vec<&str> = links
                .iter()
                .filter(|l| l.profile.is_some())
                .map(|l| l.name.as_str())
                .collect();
            if shaped.len() == links.len() {
                return Err(invalid(
                    "--turbo",
                    "`bare` is a plain tonic stream without a simulated link: it needs `none` in --links",
                ));
            }
            if !shaped.is_empty() {
                notes.push(format!(
                    "turbo bare runs on link none only (a plain stream without shaping); skipped for {}",
                    shaped.join(", ")
                ));
            }
        }
        if turbo.contains(&TurboMode::Off) && (checked.batch_sizes != [1] || auto) {
            notes.push(
                "turbo off sends one task per call on its own connection, so batch sizes do not apply: it runs once per link and is reported at batch size 1"
                    .to_string(),
            );
        }

        let mut combinations = Vec::new();
        for link in &links {
            for &mode in &turbo {
                match mode {
                    TurboMode::Off => combinations.push(Combination {
                        link: link.clone(),
                        turbo: mode,
                        batch_size: 1,
                        auto: false,
                    }),
                    TurboMode::Bare if link.profile.is_some() => {}
                    TurboMode::On | TurboMode::Bare => {
                        combinations.extend(checked.batch_sizes.iter().map(|&batch_size| {
                            Combination {
                                link: link.clone(),
                                turbo: mode,
                                batch_size,
                                auto: false,
                            }
                        }));
                        // The bare baseline has no supervisor, so nothing to size automatically.
                        if auto && mode == TurboMode::On {
                            combinations.push(Combination {
                                link: link.clone(),
                                turbo: mode,
                                batch_size: crate::config::defaults::batch_size()
                                    .fixed()
                                    .unwrap_or(30),
                                auto: true,
                            });
                        }
                    }
                }
            }
        }
        if self
            .max_bandwidth
            .is_some_and(|rate| rate.bytes_per_second == 0)
        {
            return Err(invalid(
                "--max-bandwidth",
                "must be more than 0 bytes per second",
            ));
        }
        let mut plan = checked.into_plan(combinations, notes)?;
        plan.settings.max_bandwidth = self.max_bandwidth.map(|rate| rate.bytes_per_second);
        Ok(plan)
    }
}

impl TuneArgs {
    /// Validate every argument and build the sweep: turbo on over the link for every batch size.
    /// Batch sizes refused before running (packets over a cap) are left out by the caller.
    pub fn plan(&self) -> Result<BenchPlan, BenchError> {
        let profiles = known_profiles(self.profiles.as_deref())?;
        let link = resolve_link("--link", &self.link, &profiles)?;
        let checked = LoopArgs {
            batch_sizes: &self.batch_sizes,
            auto: false,
            tasks: self.tasks,
            loops: self.loops,
            max_connections: crate::config::defaults::max_connections(),
            max_inflight_batches: self.max_inflight_batches,
            max_packet_kb: self.max_packet_kb,
            max_time: self.max_time,
            seed: self.seed,
            plaintext: self.plaintext,
        }
        .check()?;
        let combinations: Vec<Combination> = checked
            .batch_sizes
            .iter()
            .map(|&batch_size| Combination {
                link: link.clone(),
                turbo: TurboMode::On,
                batch_size,
                auto: false,
            })
            .collect();
        checked.into_plan(combinations, Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_sizes_are_sorted_and_zero_or_duplicates_are_refused() {
        assert_eq!(check_batch_sizes(&[30, 1, 10]).ok(), Some(vec![1, 10, 30]));
        let zero = check_batch_sizes(&[1, 0]).unwrap_err().to_string();
        assert!(zero.starts_with("--batch-sizes:"), "{zero}");
        assert!(zero.contains("0"), "{zero}");
        let twice = check_batch_sizes(&[5, 5]).unwrap_err().to_string();
        assert!(twice.contains("listed twice"), "{twice}");
        let huge = check_batch_sizes(&[MAX_BATCH_SIZE + 1])
            .unwrap_err()
            .to_string();
        assert!(huge.contains("largest accepted"), "{huge}");
    }

    #[derive(clap::Parser)]
    struct BenchCli {
        #[command(flatten)]
        args: BenchArgs,
    }

    #[derive(clap::Parser)]
    struct TuneCli {
        #[command(flatten)]
        args: TuneArgs,
    }

    #[test]
    fn bench_and_tune_refuse_bad_loop_arguments_with_the_same_message() {
        use clap::Parser;
        let bad: [&[&str]; 7] = [
            &["--batch-sizes", "1,0"],
            &["--tasks", "0"],
            &["--loops", "0"],
            &["--tasks", "1000000", "--loops", "3"],
            &["--max-inflight-batches", "0"],
            &["--max-packet-kb", "0"],
            &["--max-time", "0s"],
        ];
        for args in bad {
            let bench = BenchCli::try_parse_from(["bench", "--links", "none"].iter().chain(args))
                .expect("bench arguments parse")
                .args
                .plan()
                .expect_err("bench refuses")
                .to_string();
            let tune = TuneCli::try_parse_from(["tune", "--link", "none"].iter().chain(args))
                .expect("tune arguments parse")
                .args
                .plan()
                .expect_err("tune refuses")
                .to_string();
            assert_eq!(bench, tune, "{args:?}");
            assert!(bench.starts_with(&format!("{}:", args[0])), "{bench}");
        }
    }

    #[test]
    fn an_unknown_link_lists_the_known_ones() {
        let profiles = builtin_profiles();
        let error = resolve_link("--links", "moon", &profiles)
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("--links:"), "{error}");
        assert!(error.contains("`moon`"), "{error}");
        assert!(error.contains("none") && error.contains("wan"), "{error}");
        assert_eq!(
            resolve_link("--links", "none", &profiles).ok(),
            Some(LinkChoice::none())
        );
    }
}
