//! Klaxon: an incident management and escalation engine.
//!
//! Data flows one way: [`api`] → [`domain`] → [`store`]; the [`engine`] reads and writes the
//! store on time. [`server`] wires them together at start-up from one [`config::Config`].

pub mod api;
pub mod backoff;
pub mod config;
pub mod domain;
pub mod engine;
pub mod metrics;
pub mod server;
pub mod store;
pub mod telemetry;
