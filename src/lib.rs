//! Klaxon: an incident management and escalation engine.
//!
//! Layers point one way: [`api`] → [`domain`] and [`store`]; [`engine`] → [`store`]; [`store`] →
//! [`domain`], which asks nothing of anyone and does no I/O. [`server`] wires them together at
//! start-up from one [`config::Config`].

pub mod api;
pub mod backoff;
pub mod config;
pub mod domain;
pub mod engine;
pub mod http;
pub mod live;
pub mod metrics;
pub mod notify;
pub mod server;
pub mod startup;
pub mod store;
pub mod telemetry;
