//! When tasks are due: relators expanded into tasks ([`plan`]), where in its start window each
//! task starts ([`splay`]), firing instants anchored to the wall clock and what a start does
//! with the tasks due before it ([`anchor`]), and the scheduler task that fires relators, holds
//! tasks until due, takes retries and chains, and routes around engines that are down
//! ([`scheduler`]); what it hands an engine stays compact until sent ([`outgoing`]).

pub(crate) mod anchor;
pub(crate) mod outgoing;
pub mod plan;
pub(crate) mod scheduler;
pub(crate) mod splay;
