//! What `tracing` writes while a piece of code runs on this thread.
//!
//! One global subscriber per test binary writes every line into a buffer of the thread that
//! logged it, kept only while that thread is inside [`capture_logs`]. A per-thread scoped
//! subscriber (`tracing::subscriber::with_default`) is not used: with tests running in parallel,
//! tracing's per-callsite interest cache made it miss every line now and then.

use std::cell::RefCell;
use std::io::Write;
use std::sync::Once;

thread_local! {
    /// The lines logged on this thread while capturing.
    static CAPTURED: RefCell<Option<Vec<u8>>> = const { RefCell::new(None) };
}

/// A writer into this thread's capture buffer (nothing when not capturing).
struct ThreadBuffer;

impl Write for ThreadBuffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        CAPTURED.with(|captured| {
            if let Some(buffer) = captured.borrow_mut().as_mut() {
                buffer.extend_from_slice(bytes);
            }
        });
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

static INSTALL: Once = Once::new();

/// Runs `body` capturing the plain-text (no colours) lines `tracing` logs on this thread, with
/// level and target; returns what `body` returned and the lines. Everything `body` logs must
/// happen on this thread (a current-thread runtime does that).
pub fn capture_logs<T>(body: impl FnOnce() -> T) -> (T, String) {
    INSTALL.call_once(|| {
        let installed = tracing_subscriber::fmt()
            .with_writer(|| ThreadBuffer)
            .with_ansi(false)
            .with_target(true)
            .try_init();
        assert!(
            installed.is_ok(),
            "a global tracing subscriber was already set"
        );
    });
    CAPTURED.with(|captured| *captured.borrow_mut() = Some(Vec::new()));
    let result = body();
    let bytes = CAPTURED
        .with(|captured| captured.borrow_mut().take())
        .unwrap_or_default();
    (result, String::from_utf8(bytes).unwrap_or_default())
}
