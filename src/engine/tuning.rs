//! Names and sizes shared by the engine's files.

/// The log target of everything the engine logs.
pub(crate) const LOG_TARGET: &str = "turbomon::engine";

/// Messages buffered per stream between the engine and tonic's encoder.
pub(crate) const STREAM_BUFFER_MESSAGES: usize = 64;
