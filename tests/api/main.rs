//! Black-box tests of the HTTP API (SPEC §4): the real server on port 0, spoken to over HTTP, on
//! SQLite always and on PostgreSQL when `KLAXON_TEST_DATABASE_URL` is set.

#[path = "../common/mod.rs"]
mod common;

mod alertmanager;
mod auth;
mod concurrency;
mod connections;
mod edges;
mod enqueue;
mod heartbeats;
mod input;
mod lifecycle;
mod notify;
mod on_call;
mod prototype;
mod reach;
mod schedules;
mod services;
mod state_machine;
mod users;
