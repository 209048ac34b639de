//! (stub until the stats branch lands)
#![allow(missing_docs, unreachable_pub, dead_code)]
use std::time::{Duration, SystemTime};
pub enum Mode {
    Turbo(usize),
    Off,
}
#[derive(Default)]
pub struct LoopStats {
    pub loops: Vec<Duration>,
    pub packets: Vec<u64>,
    pub failed: u64,
}
impl LoopStats {
    pub fn record_loop(&mut self, d: Duration) {
        self.loops.push(d)
    }
    pub fn record_packet(&mut self, b: u64) {
        self.packets.push(b)
    }
    pub fn record_failed_loop(&mut self) {
        self.failed += 1
    }
    pub fn failed_loops(&self) -> u64 {
        self.failed
    }
}
pub struct EngineStats {
    pub submission: LoopStats,
    pub monitor: LoopStats,
    name: String,
}
impl EngineStats {
    pub fn new(engine: impl Into<String>, _now: SystemTime) -> Self {
        Self {
            submission: LoopStats::default(),
            monitor: LoopStats::default(),
            name: engine.into(),
        }
    }
    pub fn take_window(&mut self, _s: Mode, _m: Mode, _now: SystemTime) -> WindowReport {
        let r = WindowReport(format!(
            "{} sub loops {:?} packets {:?} mon loops {:?} packets {:?} failed {} {}",
            self.name,
            self.submission.loops,
            self.submission.packets,
            self.monitor.loops,
            self.monitor.packets,
            self.submission.failed,
            self.monitor.failed
        ));
        self.submission = LoopStats::default();
        self.monitor = LoopStats::default();
        r
    }
}
pub struct WindowReport(String);
impl WindowReport {
    pub fn log(&self) {
        tracing::info!(target: "turbomon::stats", "{}", self.0)
    }
}
pub fn append_json(_p: &std::path::Path, _r: &WindowReport) -> std::io::Result<()> {
    Ok(())
}
