//! What `tracing` writes while a piece of code runs.

use std::io::Write;
use std::sync::{Arc, Mutex};

/// A writer that keeps every byte written to it.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut buffer) = self.0.lock() {
            buffer.extend_from_slice(bytes);
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Runs `body` with a plain-text (no colours) `tracing` subscriber on this thread; returns what
/// `body` returned and the lines logged, with level and target.
pub fn capture_logs<T>(body: impl FnOnce() -> T) -> (T, String) {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_target(true)
        .finish();
    let result = tracing::subscriber::with_default(subscriber, body);
    let bytes = captured.0.lock().map(|b| b.clone()).unwrap_or_default();
    (result, String::from_utf8(bytes).unwrap_or_default())
}
