//! What `/proc` says about one process: CPU time used (`/proc/PID/stat`, user plus system) and
//! resident memory now and at its peak (`/proc/PID/status`, `VmRSS` and `VmHWM`), and the
//! figures `turbomon scale` derives from samples of them.

use std::time::Duration;

/// One reading of a process.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reading {
    /// CPU time used so far (user + system).
    pub cpu: Duration,
    /// Resident set size now, bytes.
    pub rss_bytes: u64,
    /// Peak resident set size so far, bytes.
    pub peak_rss_bytes: u64,
}

/// Reads process `pid`; `None` once it is gone (or on a system without `/proc`).
pub fn read(pid: u32) -> Option<Reading> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let cpu = cpu_time(&stat, clock_ticks_per_second())?;
    Some(Reading {
        cpu,
        rss_bytes: status_kb(&status, "VmRSS:")? * 1024,
        peak_rss_bytes: status_kb(&status, "VmHWM:")? * 1024,
    })
}

fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf only reads a system constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(ticks).ok().filter(|t| *t > 0).unwrap_or(100)
}

/// utime + stime from a `/proc/PID/stat` line. The command name (field 2) is in parentheses
/// and may hold spaces, so fields are counted from the last `)`.
fn cpu_time(stat: &str, ticks_per_second: u64) -> Option<Duration> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    // After the name: state is field 3, so utime (14) and stime (15) are the 12th and 13th.
    let mut fields = after_name.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    let ticks = utime + stime;
    Some(Duration::from_nanos(
        ticks.saturating_mul(1_000_000_000) / ticks_per_second,
    ))
}

/// The value in kB of a `Key:   123 kB` line of `/proc/PID/status`.
fn status_kb(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kb| kb.parse().ok())
}

/// CPU use over consecutive windows, in cores.
#[derive(Debug, Clone, Default)]
pub struct CpuWindows {
    /// Cores used in each complete window.
    pub cores: Vec<f64>,
}

impl CpuWindows {
    /// Cores used in each `window` from readings taken at `elapsed` instants: the CPU time
    /// between the readings closest to each window's ends, over the wall time between them.
    pub fn from_samples(samples: &[(Duration, Duration)], window: Duration) -> Self {
        let mut cores = Vec::new();
        let Some(&(mut start_at, mut start_cpu)) = samples.first() else {
            return Self { cores };
        };
        for &(at, cpu) in samples {
            let wall = at.saturating_sub(start_at);
            if wall >= window {
                cores.push(cpu.saturating_sub(start_cpu).as_secs_f64() / wall.as_secs_f64());
                (start_at, start_cpu) = (at, cpu);
            }
        }
        Self { cores }
    }

    /// The busiest window, 0 without one.
    pub fn peak(&self) -> f64 {
        self.cores.iter().copied().fold(0.0, f64::max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_counts_fields_after_a_name_with_spaces() {
        let stat = "4242 (turbo mon) S 1 2 3 4 5 6 7 8 9 10 150 50 0 0 20 0 9 0 100 0 0";
        assert_eq!(cpu_time(stat, 100), Some(Duration::from_secs(2)));
    }

    #[test]
    fn status_lines_read_in_kb() {
        let status = "Name:\tx\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\n";
        assert_eq!(status_kb(status, "VmRSS:"), Some(1024));
        assert_eq!(status_kb(status, "VmHWM:"), Some(2048));
        assert_eq!(status_kb(status, "VmSwap:"), None);
    }

    #[test]
    fn this_process_can_be_read() {
        let reading = read(std::process::id()).unwrap_or_else(|| panic!("/proc is there"));
        assert!(reading.rss_bytes > 0 && reading.peak_rss_bytes >= reading.rss_bytes);
    }

    #[test]
    fn windows_divide_cpu_time_by_wall_time() {
        let s = |secs: u64, cpu_ms: u64| (Duration::from_secs(secs), Duration::from_millis(cpu_ms));
        let samples = [
            s(0, 0),
            s(5, 1_000),
            s(10, 2_000),
            s(15, 2_500),
            s(20, 7_000),
        ];
        let windows = CpuWindows::from_samples(&samples, Duration::from_secs(10));
        assert_eq!(windows.cores, vec![0.2, 0.5]);
        assert_eq!(windows.peak(), 0.5);
    }
}
