//! The escalation engine: executes due escalations on time, exactly once, across crashes,
//! restarts and instances. See docs/engine.md for the whole story.
//!
//! - [`worker`]: the loop that sleeps until something is due and settles it in batches.
//! - [`wakeup`]: wakes the worker when a commit schedules something sooner.
//! - [`redis_index`]: the optional Redis sorted set of pending escalations.
//! - [`scheduler`]: the handle through which committed changes reach all of the above.

pub mod heartbeats;
pub mod redis_index;
pub mod scheduler;
pub mod wakeup;
pub mod worker;

pub use scheduler::Scheduler;
pub use worker::{Worker, WorkerStatus};
