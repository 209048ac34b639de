//! The client side of the engine protocol: the only way the supervisor and `bench` talk to an
//! engine. It turns tasks and task ids into batches (by count and by encoded size), carries them
//! on a long-lived stream with replies matched to requests, or one unary call per task on its own
//! connection (turbo off), and reports what became of each task. It decides nothing: retrying,
//! alerting and statistics are the supervisor's.
//!
//! - [`batch`]: batch splitting by count, packet sizes, batch ids.
//! - [`encode`]: requests encoded once from borrowed tasks and ids.
//! - [`stream`]: batches in flight on one bidirectional stream.
//! - [`submit`]: one submission loop (turbo or off) and what became of each task.
//! - [`status`]: one monitor loop (turbo or off) and the statuses it brought back.
//! - [`refusal`]: the refusal codes the engine answers with and the supervisor reads.
//! - [`completions`]: push mode, final statuses streamed by the engine as they happen.
//! - [`list`]: the tasks an engine holds for one supervisor, page by page (reconciliation).
//! - [`unary`]: a single call on its own new connection (turbo off).

pub mod batch;
pub mod completions;
pub(crate) mod encode;
pub mod list;
pub(crate) mod refusal;
pub mod status;
pub mod stream;
pub mod submit;
mod unary;

pub use unary::UnaryError;
