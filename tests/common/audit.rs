//! The audit every API and engine test ends with, as crates.io's test app checks on drop that no
//! background job was left behind. It reads the test's database directly, on either backend:
//!
//! - no escalation executed twice: no escalation has more than one `escalation.executed`
//!   timeline entry, and no level of an incident has more than one `EXECUTED` row;
//! - nothing due left unexecuted, when a worker ran to the end: no `PENDING` escalation is past
//!   its `scheduled_at` (after giving the worker [`CATCH_UP`] to take what has just fallen due).
//!
//! A test owes its database an [`Audit`]; dropping one that never ran fails the test.

use std::fmt;
use std::time::Duration;

use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;
use sqlx::{Connection, FromRow, PgConnection, SqliteConnection};

/// How long a running worker has to execute what is due before the audit counts it as left.
pub const CATCH_UP: Duration = Duration::from_secs(20);

/// How often the audit looks again while it waits for the worker.
const POLL: Duration = Duration::from_millis(50);

/// What the test may leave pending.
#[derive(Debug)]
pub enum Expect {
    /// A worker ran to the end: nothing due may be left pending.
    NothingDue,
    /// No worker ran, or the test left work on purpose (the reason says which): only the
    /// exactly-once half of the audit applies.
    WorkMayRemain(&'static str),
}

/// One thing the audit found wrong.
#[derive(Debug, PartialEq, Eq)]
pub enum Finding {
    /// An escalation with more than one `escalation.executed` timeline entry.
    ExecutedEntries { escalation_id: String, entries: i64 },
    /// A level of an incident with more than one `EXECUTED` escalation row.
    ExecutedRows {
        incident_id: String,
        level: i32,
        rows: i64,
    },
    /// A `PENDING` escalation past its `scheduled_at` that the worker did not take in time.
    LeftDue {
        escalation_id: String,
        incident_id: String,
        level: i32,
    },
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ExecutedEntries {
                escalation_id,
                entries,
            } => write!(
                f,
                "escalation {escalation_id} has {entries} escalation.executed entries"
            ),
            Self::ExecutedRows {
                incident_id,
                level,
                rows,
            } => write!(
                f,
                "level {level} of incident {incident_id} has {rows} EXECUTED escalations"
            ),
            Self::LeftDue {
                escalation_id,
                incident_id,
                level,
            } => write!(
                f,
                "escalation {escalation_id} (level {level} of incident {incident_id}) is due \
                 and still PENDING"
            ),
        }
    }
}

/// The audit a test owes the database at `url`: run it at the end with [`Audit::run`]. Dropped
/// without having run, it fails the test, unless the test is failing already.
pub struct Audit {
    url: String,
    ran: bool,
}

impl Audit {
    pub fn of(url: &str) -> Self {
        Self {
            url: url.to_owned(),
            ran: false,
        }
    }

    /// Fails the test with every finding. With [`Expect::NothingDue`], call it while the worker
    /// still runs, so that it can take what has just fallen due.
    pub async fn run(mut self, expect: Expect) {
        self.ran = true;
        let findings = findings(&self.url, &expect, CATCH_UP).await;
        let report: Vec<String> = findings.iter().map(Finding::to_string).collect();
        assert!(
            report.is_empty(),
            "the audit ({expect:?}) found:\n{}",
            report.join("\n")
        );
    }
}

impl Drop for Audit {
    fn drop(&mut self) {
        if !self.ran && !std::thread::panicking() {
            panic!("this test was never audited: end it with `TestApp::finish` or `Audit::run`");
        }
    }
}

/// What is wrong with the database at `url`, if anything. With [`Expect::NothingDue`], waits up
/// to `catch_up` for due escalations to leave `PENDING` before reporting those that have not.
pub async fn findings(url: &str, expect: &Expect, catch_up: Duration) -> Vec<Finding> {
    let mut db = Database::connect(url).await;
    let mut findings = Vec::new();
    if let Expect::NothingDue = expect {
        let until = tokio::time::Instant::now() + catch_up;
        loop {
            let left = db.left_due().await;
            if left.is_empty() || tokio::time::Instant::now() >= until {
                findings.extend(left);
                break;
            }
            tokio::time::sleep(POLL).await;
        }
    }
    findings.extend(db.executed_entries().await);
    findings.extend(db.executed_rows().await);
    findings
}

/// A connection to the audited database, and the SQL fragments that differ by backend.
enum Database {
    Sqlite(SqliteConnection),
    Postgres(PgConnection),
}

impl Database {
    async fn connect(url: &str) -> Self {
        if url.starts_with("sqlite:") {
            Self::Sqlite(
                SqliteConnection::connect(url)
                    .await
                    .expect("audit: connect"),
            )
        } else {
            Self::Postgres(PgConnection::connect(url).await.expect("audit: connect"))
        }
    }

    /// The escalation a timeline entry is about, as text.
    fn escalation_id(&self) -> &'static str {
        match self {
            Self::Sqlite(_) => "json_extract(detail, '$.escalation_id')",
            Self::Postgres(_) => "detail->>'escalation_id'",
        }
    }

    /// The database's clock in `scheduled_at`'s type: epoch milliseconds or `timestamptz`.
    fn now(&self) -> &'static str {
        match self {
            Self::Sqlite(_) => "cast(unixepoch('subsec') * 1000 as integer)",
            Self::Postgres(_) => "now()",
        }
    }

    async fn fetch_all<T>(&mut self, sql: &str) -> Vec<T>
    where
        T: for<'r> FromRow<'r, SqliteRow> + for<'r> FromRow<'r, PgRow> + Send + Unpin,
    {
        let rows = match self {
            Self::Sqlite(conn) => sqlx::query_as(sql).fetch_all(conn).await,
            Self::Postgres(conn) => sqlx::query_as(sql).fetch_all(conn).await,
        };
        rows.unwrap_or_else(|error| panic!("audit: {error}\n{sql}"))
    }

    async fn executed_entries(&mut self) -> Vec<Finding> {
        let sql = format!(
            "select {}, count(*) from timeline where kind = 'escalation.executed'
             group by 1 having count(*) > 1",
            self.escalation_id()
        );
        let rows: Vec<(String, i64)> = self.fetch_all(&sql).await;
        rows.into_iter()
            .map(|(escalation_id, entries)| Finding::ExecutedEntries {
                escalation_id,
                entries,
            })
            .collect()
    }

    async fn executed_rows(&mut self) -> Vec<Finding> {
        let rows: Vec<(String, i32, i64)> = self
            .fetch_all(
                "select cast(incident_id as text), escalation_level, count(*) from escalations
                 where status = 'EXECUTED'
                 group by incident_id, escalation_level having count(*) > 1",
            )
            .await;
        rows.into_iter()
            .map(|(incident_id, level, rows)| Finding::ExecutedRows {
                incident_id,
                level,
                rows,
            })
            .collect()
    }

    async fn left_due(&mut self) -> Vec<Finding> {
        let sql = format!(
            "select cast(id as text), cast(incident_id as text), escalation_level
             from escalations where status = 'PENDING' and scheduled_at <= {}
             order by scheduled_at",
            self.now()
        );
        let rows: Vec<(String, String, i32)> = self.fetch_all(&sql).await;
        rows.into_iter()
            .map(|(escalation_id, incident_id, level)| Finding::LeftDue {
                escalation_id,
                incident_id,
                level,
            })
            .collect()
    }
}
