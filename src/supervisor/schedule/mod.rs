//! When tasks are due: relators expanded into tasks ([`plan`]), where in its start window each
//! task starts ([`splay`]), and the scheduler task that fires relators, holds tasks until due,
//! takes retries and chains, and routes around engines that are down ([`scheduler`]).

pub mod plan;
pub(crate) mod scheduler;
pub(crate) mod splay;
