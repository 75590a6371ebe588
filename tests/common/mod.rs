//! Helpers shared by the integration tests: a fresh database per test, on either backend.
#![allow(dead_code)] // each test crate uses its own subset

pub mod app;
pub mod audit;
pub mod ntfy;
pub mod proxy;
pub mod smtp;
pub mod twilio;
pub mod webhook;

use std::path::PathBuf;

use sqlx::Connection;

/// The backends a test can run against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A database of its own for one test: a file in a temporary directory, or a PostgreSQL schema
/// created for it. Schemas are left behind; `.ci/run` drops those of earlier runs.
pub struct TestDatabase {
    pub url: String,
    /// Holds the SQLite file's directory alive for the test's duration.
    _dir: Option<tempfile::TempDir>,
}

impl TestDatabase {
    /// `None` (after printing why) when the backend is PostgreSQL and
    /// `KLAXON_TEST_DATABASE_URL` is not set.
    pub async fn create(backend: Backend) -> Option<Self> {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("a temporary directory");
                let path: PathBuf = dir.path().join("klaxon.db");
                Some(Self {
                    url: format!("sqlite://{}", path.display()),
                    _dir: Some(dir),
                })
            }
            Backend::Postgres => {
                let Ok(admin_url) = std::env::var("KLAXON_TEST_DATABASE_URL") else {
                    eprintln!("skipped: KLAXON_TEST_DATABASE_URL is not set");
                    return None;
                };
                let schema = format!("klaxon_test_{}", uuid::Uuid::now_v7().simple());
                let mut admin = sqlx::PgConnection::connect(&admin_url)
                    .await
                    .expect("KLAXON_TEST_DATABASE_URL must reach PostgreSQL");
                sqlx::query(&format!("create schema {schema}"))
                    .execute(&mut admin)
                    .await
                    .expect("create a test schema");
                Some(Self {
                    url: in_schema(&admin_url, &schema),
                    _dir: None,
                })
            }
        }
    }
}

/// `url` with every connection's `search_path` set to `schema`, so that a test's tables live in
/// a schema of its own: cheaper than a database per test, and as isolated.
pub fn in_schema(url: &str, schema: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}options=-c%20search_path%3D{schema}")
}

/// Runs one scenario against SQLite and, when configured, PostgreSQL: a module per backend with
/// a `#[tokio::test]` per scenario, each scenario an `async fn(Backend)`.
#[macro_export]
macro_rules! on_every_backend {
    ($($scenario:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario($crate::common::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario($crate::common::Backend::Postgres).await
                }
            )*
        }
    };
}

/// Polls `condition` until it holds or `deadline` passes: tests wait on events, not sleeps.
pub async fn eventually<F, Fut>(what: &str, deadline: std::time::Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let until = tokio::time::Instant::now() + deadline;
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < until,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// A loopback port that was free a moment ago: for a server that must be known before it starts
/// (or that starts later on it).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("bind a loopback port")
        .port()
}
