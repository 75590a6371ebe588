//! The audit every test ends with (`common::audit`) finds what it is there to find, and a test
//! cannot skip it silently.

use std::time::Duration;

use crate::common::app::TestApp;
use crate::common::audit::{findings, Expect, Finding};
use crate::common::{Backend, TestDatabase};
use crate::support::{execute, policy, seed_escalating};

crate::on_every_backend!(the_audit_reports_work_left_due_and_executions_twice);

/// Escalations seeded straight through the store, with no worker: level 1 is due at once and
/// stays pending. Then the database is made to say that it executed twice.
async fn the_audit_reports_work_left_due_and_executions_twice(backend: Backend) {
    let Some(db) = TestDatabase::create(backend).await else {
        return;
    };
    let incident_id = seed_escalating(&db.url, 1, &policy(&[0])).await[0].to_string();
    let no_worker = Expect::WorkMayRemain("no worker ran");
    assert_eq!(findings(&db.url, &no_worker, Duration::ZERO).await, []);

    let found = findings(&db.url, &Expect::NothingDue, Duration::from_millis(200)).await;
    let [Finding::LeftDue {
        escalation_id,
        incident_id: of,
        level: 1,
    }] = found.as_slice()
    else {
        panic!("level 1 left due, found {found:?}");
    };
    assert_eq!(*of, incident_id);

    // Two executed entries and, with the unique index that forbids it dropped, two executed rows.
    let new_id = match backend {
        Backend::Sqlite => "lower(hex(randomblob(16)))",
        Backend::Postgres => "gen_random_uuid()",
    };
    execute(&db.url, "update escalations set status = 'EXECUTED'").await;
    for _ in 0..2 {
        execute(
            &db.url,
            &format!(
                "insert into timeline (id, incident_id, at, kind, actor, detail)
                 select {new_id}, incident_id, at, 'escalation.executed', actor, detail
                 from timeline where kind = 'escalation.scheduled'"
            ),
        )
        .await;
    }
    execute(&db.url, "drop index escalations_incident_level").await;
    execute(
        &db.url,
        &format!(
            "insert into escalations (id, incident_id, escalation_level, status, scheduled_at,
             executed_at, cancelled_at, created_at)
             select {new_id}, incident_id, escalation_level, status, scheduled_at, executed_at,
             cancelled_at, created_at from escalations"
        ),
    )
    .await;
    assert_eq!(
        findings(&db.url, &Expect::NothingDue, Duration::ZERO).await,
        [
            Finding::ExecutedEntries {
                escalation_id: escalation_id.clone(),
                entries: 2,
            },
            Finding::ExecutedRows {
                incident_id,
                level: 1,
                rows: 2,
            },
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[should_panic(expected = "never audited")]
async fn a_test_app_dropped_without_finish_fails_its_test() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    drop(app);
}
