//! Tests of the escalation engine (issue 3): on time, exactly once, across crashes, restarts,
//! instances, Redis and database faults. Policies use delays of a few hundred milliseconds.

#[path = "../common/mod.rs"]
mod common;

mod support;

mod audit;
mod crash;
mod faults;
mod redis;
mod walk;
