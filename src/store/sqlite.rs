//! The embedded backend: one SQLite file in WAL mode.
//!
//! Writes go through a pool of exactly **one** connection, so write transactions are serialized
//! in-process and never fail with `SQLITE_BUSY` on a read-to-write lock upgrade; reads use their
//! own pool and, thanks to WAL, never wait for a writer. With one writer the status a transition
//! reads cannot change before its compare-and-set, which is kept all the same as the guard the
//! SPEC asks for. `synchronous = FULL`: a `201` means the event is on disk.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row, Sqlite, Transaction};
use uuid::Uuid;

use super::{
    cancelled_detail, executed_detail, ingest_entry, into_page, joined_incidents, new_event,
    next_level, opened_incident, scheduled_detail, statement_groups, transition_detail, Backlog,
    IncidentQuery, Ingested, NextLevel, Page, Scheduled, Settled, Store, StoreError,
    TransitionOutcome, TransitionRequest, MAX_ROWS_PER_STATEMENT, NON_TERMINAL_SQL,
};
use crate::domain::timeline::SYSTEM_ACTOR;
use crate::domain::{
    Escalation, EscalationStatus, Event, Incident, IncidentStatus, NewEvent, NewToken, Role,
    Severity, TimelineEntry, TimelineKind, Timestamp, Token, Transition,
};

/// How long a statement waits for a lock held by another process before giving up (503).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a request waits for a pooled connection before the store reports itself unavailable.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);
/// Concurrent readers.
const READ_CONNECTIONS: u32 = 8;

pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
}

impl SqliteStore {
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options.clone())
            .await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(READ_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options.read_only(true))
            .await?;
        Ok(Self { writer, reader })
    }
}

impl SqliteStore {
    /// Events without a `dedup_key` cannot join anything: each opens an incident. The three
    /// inserts go to the writer's thread as one query of three statements (the driver binds `?`
    /// parameters across them in order): one hand-off where the general path takes three.
    async fn open_incidents(&self, events: &[NewEvent]) -> Result<Vec<Ingested>, StoreError> {
        let incidents: Vec<Incident> = events.iter().map(opened_incident).collect();
        let stored: Vec<Event> = events
            .iter()
            .zip(&incidents)
            .map(|(event, incident)| new_event(event, incident.id))
            .collect();
        let mut tx = self.writer.begin().await?;
        for start in (0..events.len()).step_by(MAX_ROWS_PER_STATEMENT) {
            let end = (start + MAX_ROWS_PER_STATEMENT).min(events.len());
            let (incidents, stored, events) = (
                &incidents[start..end],
                &stored[start..end],
                &events[start..end],
            );
            let mut inserts = QueryBuilder::<Sqlite>::new("");
            insert_incidents(&mut inserts, incidents);
            inserts.push("; ");
            insert_events(&mut inserts, stored);
            inserts.push("; ");
            insert_ingest_entries(
                &mut inserts,
                stored.iter().zip(events).map(|(e, new)| (e, false, new)),
            );
            inserts.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(stored
            .into_iter()
            .zip(incidents)
            .map(|(event, incident)| Ingested {
                event,
                incident,
                deduplicated: false,
            })
            .collect())
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn migrate(&self) -> Result<(), StoreError> {
        sqlx::migrate!("src/store/migrations/sqlite")
            .run(&self.writer)
            .await?;
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("select 1").execute(&self.reader).await?;
        Ok(())
    }

    async fn ingest(&self, event: NewEvent) -> Result<Ingested, StoreError> {
        let mut ingested = self.ingest_batch(std::slice::from_ref(&event)).await?;
        ingested
            .pop()
            .ok_or_else(|| StoreError::internal("an ingest stored nothing"))
    }

    async fn ingest_batch(&self, events: &[NewEvent]) -> Result<Vec<Ingested>, StoreError> {
        if events.iter().all(|e| e.dedup_key.is_none()) {
            return self.open_incidents(events).await;
        }
        let mut tx = self.writer.begin().await?;
        let mut ingested: Vec<Option<Ingested>> = vec![None; events.len()];
        for group in statement_groups(events, MAX_ROWS_PER_STATEMENT) {
            let proposed: Vec<Incident> = group
                .iter()
                .map(|index| opened_incident(&events[*index]))
                .collect();
            let joined = store_incidents(&mut tx, &proposed).await?;
            let group_events: Vec<(usize, Event)> = group
                .iter()
                .zip(&joined)
                .map(|(index, (incident, _))| (*index, new_event(&events[*index], incident.id)))
                .collect();
            let mut inserted = QueryBuilder::<Sqlite>::new("");
            insert_events(&mut inserted, group_events.iter().map(|(_, event)| event));
            inserted.build().execute(&mut *tx).await?;
            let mut timeline = QueryBuilder::<Sqlite>::new("");
            let entries = group_events
                .iter()
                .zip(&joined)
                .map(|((index, event), (_, deduplicated))| (event, *deduplicated, &events[*index]));
            insert_ingest_entries(&mut timeline, entries);
            timeline.build().execute(&mut *tx).await?;

            for ((index, event), (incident, deduplicated)) in group_events.into_iter().zip(joined) {
                ingested[index] = Some(Ingested {
                    event,
                    incident,
                    deduplicated,
                });
            }
        }
        tx.commit().await?;
        Ok(ingested.into_iter().flatten().collect())
    }

    async fn incident(&self, id: Uuid) -> Result<Incident, StoreError> {
        let row = sqlx::query("select * from incidents where id = $1")
            .bind(id.to_string())
            .fetch_optional(&self.reader)
            .await?
            .ok_or(StoreError::NotFound)?;
        incident_from_row(&row)
    }

    async fn incidents(&self, query: IncidentQuery) -> Result<Page<Incident>, StoreError> {
        let rows = sqlx::query(
            "select * from incidents
             where ($1 is null or status = $1) and ($2 is null or id < $2)
             order by id desc limit $3",
        )
        .bind(query.status.map(IncidentStatus::as_str))
        .bind(query.before.map(|id| id.to_string()))
        .bind(i64::from(query.page_size()) + 1)
        .fetch_all(&self.reader)
        .await?;
        let items = rows
            .iter()
            .map(incident_from_row)
            .collect::<Result<_, _>>()?;
        Ok(into_page(items, query.page_size()))
    }

    async fn transition(
        &self,
        request: TransitionRequest,
    ) -> Result<TransitionOutcome, StoreError> {
        let mut tx = self.writer.begin().await?;
        let id = request.incident_id.to_string();
        let row = sqlx::query("select * from incidents where id = $1")
            .bind(&id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(StoreError::NotFound)?;
        let current = incident_from_row(&row)?;
        let plan = Transition::plan(current.status, request.action)?;
        let at = request.at;
        let stamp = |status| (plan.to == status).then_some(at.as_millis());
        let policy = plan
            .schedules_first_level
            .then(|| serde_json::to_string(request.policy.as_ref()))
            .transpose()
            .map_err(StoreError::internal)?;
        let row = sqlx::query(
            "update incidents set status = $1, updated_at = $2,
                 acknowledged_at = coalesce($3, acknowledged_at),
                 resolved_at = coalesce($4, resolved_at),
                 cancelled_at = coalesce($5, cancelled_at),
                 resolution_note = coalesce($6, resolution_note),
                 escalation_policy = coalesce($7, escalation_policy)
             where id = $8 and status = $9
             returning *",
        )
        .bind(plan.to.as_str())
        .bind(at.as_millis())
        .bind(stamp(IncidentStatus::Acknowledged))
        .bind(stamp(IncidentStatus::Resolved))
        .bind(stamp(IncidentStatus::Cancelled))
        .bind(
            request
                .note
                .as_ref()
                .filter(|_| plan.to == IncidentStatus::Resolved),
        )
        .bind(policy)
        .bind(&id)
        .bind(plan.from.as_str())
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::InvalidTransition(
            crate::domain::InvalidTransition {
                status: current.status,
                action: request.action,
            },
        ))?;
        let incident = incident_from_row(&row)?;

        let kind = TimelineKind::for_transition(request.action);
        let detail = transition_detail(&request, plan.from);
        let mut entries = vec![(incident.id, kind, detail)];
        let mut cancelled = Vec::new();
        if plan.cancels_pending {
            let rows = sqlx::query(
                "update escalations set status = 'CANCELLED', cancelled_at = $1
                 where incident_id = $2 and status = 'PENDING'
                 returning id, escalation_level",
            )
            .bind(at.as_millis())
            .bind(&id)
            .fetch_all(&mut *tx)
            .await?;
            for row in rows {
                let escalation_id = uuid(&row, "id")?;
                let level: i32 = row.try_get("escalation_level")?;
                let detail = cancelled_detail(escalation_id, level, request.action.as_str());
                entries.push((incident.id, TimelineKind::EscalationCancelled, detail));
                cancelled.push(escalation_id);
            }
        }
        append_timeline(&mut tx, at, &request.actor, &entries).await?;
        let scheduled = if plan.schedules_first_level {
            let level = request.policy.first();
            let first = NextLevel {
                incident_id: incident.id,
                level: level.level,
                due: at.after(level.delay),
            };
            schedule(&mut tx, &[first], at).await?.pop()
        } else {
            None
        };
        tx.commit().await?;
        Ok(TransitionOutcome {
            incident,
            scheduled,
            cancelled,
        })
    }

    async fn settle_due(
        &self,
        clock: &(dyn Fn() -> Timestamp + Send + Sync),
        limit: u32,
        only: Option<&[Uuid]>,
    ) -> Result<Vec<Settled>, StoreError> {
        let only = only
            .map(|ids| serde_json::to_string(&ids.iter().map(Uuid::to_string).collect::<Vec<_>>()))
            .transpose()
            .map_err(StoreError::internal)?;
        let mut tx = self.writer.begin().await?;
        // Stamped once the writer is ours: the lag includes any wait for it.
        let now = clock();
        // Writing first takes SQLite's write lock at once, so another process sharing the file
        // cannot settle the same rows between this read and its update.
        let rows = sqlx::query(
            "update escalations
             set status = case when (select status from incidents where id = escalations.incident_id) = 'ESCALATING'
                              then 'EXECUTED' else 'CANCELLED' end,
                 executed_at = case when (select status from incidents where id = escalations.incident_id) = 'ESCALATING'
                                    then $1 end,
                 cancelled_at = case when (select status from incidents where id = escalations.incident_id) = 'ESCALATING'
                                     then null else $1 end
             where id in (
                 select id from escalations
                 where status = 'PENDING' and scheduled_at <= $1
                   and ($3 is null or id in (select value from json_each($3)))
                 order by scheduled_at limit $2)
             returning *, (select status from incidents where id = escalations.incident_id) as incident_status",
        )
        .bind(now.as_millis())
        .bind(i64::from(limit))
        .bind(only)
        .fetch_all(&mut *tx)
        .await?;
        let mut settled = Vec::with_capacity(rows.len());
        let mut statuses = Vec::with_capacity(rows.len());
        for row in &rows {
            settled.push(Settled {
                escalation: escalation_from_row(row)?,
                next: None,
            });
            statuses.push(row.try_get::<String, _>("incident_status")?);
        }
        let executed: Vec<(String, i32)> = settled
            .iter()
            .filter(|s| s.escalation.status == EscalationStatus::Executed)
            .map(|s| {
                (
                    s.escalation.incident_id.to_string(),
                    s.escalation.escalation_level,
                )
            })
            .collect();
        let mut snapshots = HashMap::new();
        if !executed.is_empty() {
            let raised = serde_json::to_string(&executed).map_err(StoreError::internal)?;
            let rows = sqlx::query(
                "update incidents set escalation_level = max(incidents.escalation_level, raised.level),
                     updated_at = $1
                 from (select json_extract(value, '$[0]') as id, max(json_extract(value, '$[1]')) as level
                       from json_each($2) group by 1) as raised
                 where incidents.id = raised.id
                 returning incidents.id, incidents.escalation_policy",
            )
            .bind(now.as_millis())
            .bind(raised)
            .fetch_all(&mut *tx)
            .await?;
            for row in rows {
                let snapshot: Option<String> = row.try_get("escalation_policy")?;
                let snapshot = snapshot
                    .map(|text| serde_json::from_str(&text))
                    .transpose()
                    .map_err(StoreError::internal)?;
                snapshots.insert(uuid(&row, "id")?, snapshot);
            }
        }
        let mut entries = Vec::with_capacity(settled.len());
        let mut next = Vec::new();
        let mut next_of = Vec::new();
        for (position, (Settled { escalation, .. }, status)) in
            settled.iter().zip(&statuses).enumerate()
        {
            let incident_id = escalation.incident_id;
            if escalation.status == EscalationStatus::Executed {
                entries.push((
                    incident_id,
                    TimelineKind::EscalationExecuted,
                    executed_detail(escalation),
                ));
                let snapshot = snapshots.get(&incident_id).cloned().flatten();
                if let Some((level, due)) = next_level(snapshot, escalation.escalation_level, now)?
                {
                    next.push(NextLevel {
                        incident_id,
                        level,
                        due,
                    });
                    next_of.push(position);
                }
            } else {
                let reason = format!("incident is {status}");
                let detail = cancelled_detail(escalation.id, escalation.escalation_level, &reason);
                entries.push((incident_id, TimelineKind::EscalationCancelled, detail));
            }
        }
        append_timeline(&mut tx, now, SYSTEM_ACTOR, &entries).await?;
        for (position, scheduled) in next_of
            .into_iter()
            .zip(schedule(&mut tx, &next, now).await?)
        {
            settled[position].next = Some(scheduled);
        }
        tx.commit().await?;
        Ok(settled)
    }

    async fn next_due(&self) -> Result<Option<Timestamp>, StoreError> {
        let due: Option<i64> = sqlx::query_scalar(
            "select min(scheduled_at) from escalations where status = 'PENDING'",
        )
        .fetch_one(&self.reader)
        .await?;
        Ok(due.map(Timestamp::from_millis))
    }

    async fn backlog(&self, now: Timestamp) -> Result<Backlog, StoreError> {
        let (pending, overdue): (i64, i64) = sqlx::query_as(
            "select count(*), coalesce(sum(scheduled_at <= $1), 0)
             from escalations where status = 'PENDING'",
        )
        .bind(now.as_millis())
        .fetch_one(&self.reader)
        .await?;
        Ok(Backlog { pending, overdue })
    }

    async fn pending_page(
        &self,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<Scheduled>, StoreError> {
        let rows = sqlx::query(
            // The planner would take the status index and sort; this one is already in order.
            "select id, scheduled_at from escalations indexed by escalations_pending_id
             where status = 'PENDING' and ($1 is null or id > $1)
             order by id limit $2",
        )
        .bind(after.map(|id| id.to_string()))
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(Scheduled {
                    id: uuid(row, "id")?,
                    due: timestamp(row, "scheduled_at")?,
                })
            })
            .collect()
    }

    async fn escalations(&self, incident_id: Uuid) -> Result<Vec<Escalation>, StoreError> {
        let mut conn = self.reader.acquire().await?;
        let id = incident_id.to_string();
        exists(&mut conn, &id).await?;
        let rows = sqlx::query(
            "select * from escalations where incident_id = $1 order by escalation_level, created_at",
        )
        .bind(&id)
        .fetch_all(&mut *conn)
        .await?;
        rows.iter().map(escalation_from_row).collect()
    }

    async fn timeline(&self, incident_id: Uuid) -> Result<Vec<TimelineEntry>, StoreError> {
        let mut conn = self.reader.acquire().await?;
        let id = incident_id.to_string();
        exists(&mut conn, &id).await?;
        let rows = sqlx::query("select * from timeline where incident_id = $1 order by seq")
            .bind(&id)
            .fetch_all(&mut *conn)
            .await?;
        rows.iter().map(timeline_from_row).collect()
    }

    async fn create_token(&self, token: NewToken) -> Result<Token, StoreError> {
        let row = sqlx::query(
            "insert into tokens (id, name, role, secret_hash, created_at)
             values ($1, $2, $3, $4, $5) returning *",
        )
        .bind(Uuid::now_v7().to_string())
        .bind(&token.name)
        .bind(token.role.as_str())
        .bind(&token.secret_hash)
        .bind(token.created_at.as_millis())
        .fetch_one(&self.writer)
        .await?;
        token_from_row(&row)
    }

    async fn tokens(&self) -> Result<Vec<Token>, StoreError> {
        let rows = sqlx::query("select * from tokens order by id")
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(token_from_row).collect()
    }

    async fn token_by_hash(&self, secret_hash: &str) -> Result<Option<Token>, StoreError> {
        let row = sqlx::query("select * from tokens where secret_hash = $1")
            .bind(secret_hash)
            .fetch_optional(&self.reader)
            .await?;
        row.as_ref().map(token_from_row).transpose()
    }

    async fn revoke_token(&self, id: Uuid, at: Timestamp) -> Result<Token, StoreError> {
        let row = sqlx::query(
            "update tokens set revoked_at = coalesce(revoked_at, $1) where id = $2 returning *",
        )
        .bind(at.as_millis())
        .bind(id.to_string())
        .fetch_optional(&self.writer)
        .await?
        .ok_or(StoreError::NotFound)?;
        token_from_row(&row)
    }
}

/// Schedules each level as a `PENDING` escalation with its `escalation.scheduled` entry.
async fn schedule(
    tx: &mut Transaction<'_, Sqlite>,
    levels: &[NextLevel],
    now: Timestamp,
) -> Result<Vec<Scheduled>, StoreError> {
    let scheduled: Vec<Scheduled> = levels
        .iter()
        .map(|l| Scheduled {
            id: Uuid::now_v7(),
            due: l.due,
        })
        .collect();
    for chunk in levels
        .iter()
        .zip(&scheduled)
        .collect::<Vec<_>>()
        .chunks(MAX_ROWS_PER_STATEMENT)
    {
        let mut insert = QueryBuilder::<Sqlite>::new(
            "insert into escalations (id, incident_id, escalation_level, status, scheduled_at, created_at) ",
        );
        insert.push_values(chunk, |mut row, (level, scheduled)| {
            row.push_bind(scheduled.id.to_string())
                .push_bind(level.incident_id.to_string())
                .push_bind(level.level)
                .push_bind("PENDING")
                .push_bind(scheduled.due.as_millis())
                .push_bind(now.as_millis());
        });
        insert.build().execute(&mut **tx).await?;
    }
    let entries: Vec<_> = levels
        .iter()
        .zip(&scheduled)
        .map(|(level, scheduled)| {
            (
                level.incident_id,
                TimelineKind::EscalationScheduled,
                scheduled_detail(*scheduled, level.level),
            )
        })
        .collect();
    append_timeline(tx, now, SYSTEM_ACTOR, &entries).await?;
    Ok(scheduled)
}

async fn exists(conn: &mut sqlx::SqliteConnection, id: &str) -> Result<(), StoreError> {
    sqlx::query("select 1 from incidents where id = $1")
        .bind(id)
        .fetch_optional(conn)
        .await?
        .map(|_| ())
        .ok_or(StoreError::NotFound)
}

/// Stores the incidents a group of events opens or joins: keyless ones with a plain insert
/// (nothing can conflict, nothing needs reading back), keyed ones with an upsert that returns the
/// incident each opened or joined. Returns, in the order of `proposed`, each event's incident
/// and whether it joined a live one.
async fn store_incidents(
    tx: &mut Transaction<'_, Sqlite>,
    proposed: &[Incident],
) -> Result<Vec<(Incident, bool)>, StoreError> {
    let (keyed, keyless): (Vec<&Incident>, Vec<&Incident>) = proposed
        .iter()
        .partition(|incident| incident.dedup_key.is_some());
    let values = |incidents: Vec<&Incident>| {
        let mut insert = QueryBuilder::<Sqlite>::new("");
        insert_incidents(&mut insert, incidents);
        insert
    };
    if !keyless.is_empty() {
        values(keyless).build().execute(&mut **tx).await?;
    }
    let mut returned = Vec::new();
    if !keyed.is_empty() {
        let mut upsert = values(keyed);
        upsert.push(format_args!(
            " on conflict (dedup_key) where status in {NON_TERMINAL_SQL}
              do update set event_count = incidents.event_count + 1, updated_at = excluded.updated_at
              returning *"
        ));
        for row in upsert.build().fetch_all(&mut **tx).await? {
            returned.push(incident_from_row(&row)?);
        }
    }
    joined_incidents(proposed, returned)
}

/// Appends `insert into incidents … values …` for `incidents` to `query`.
fn insert_incidents<'i>(
    query: &mut QueryBuilder<'_, Sqlite>,
    incidents: impl IntoIterator<Item = &'i Incident>,
) {
    query.push("insert into incidents (id, title, severity, status, dedup_key, event_count, created_at, updated_at) ");
    query.push_values(incidents, |mut row, incident| {
        row.push_bind(incident.id.to_string())
            .push_bind(incident.title.clone())
            .push_bind(incident.severity.as_str())
            .push_bind(incident.status.as_str())
            .push_bind(incident.dedup_key.clone())
            .push_bind(incident.event_count)
            .push_bind(incident.created_at.as_millis())
            .push_bind(incident.updated_at.as_millis());
    });
}

/// Appends `insert into events … values …` for `events` to `query`.
fn insert_events<'e>(
    query: &mut QueryBuilder<'_, Sqlite>,
    events: impl IntoIterator<Item = &'e Event>,
) {
    query.push("insert into events (id, incident_id, source, summary, severity, dedup_key, payload, received_at) ");
    query.push_values(events, |mut row, event| {
        row.push_bind(event.id.to_string())
            .push_bind(event.incident_id.to_string())
            .push_bind(event.source.clone())
            .push_bind(event.summary.clone())
            .push_bind(event.severity.as_str())
            .push_bind(event.dedup_key.clone())
            .push_bind(event.payload.to_string())
            .push_bind(event.received_at.as_millis());
    });
}

/// Appends the timeline insert of ingested events (each with whether it joined a live incident,
/// and the message it came from) to `query`.
fn insert_ingest_entries<'e>(
    query: &mut QueryBuilder<'_, Sqlite>,
    entries: impl IntoIterator<Item = (&'e Event, bool, &'e NewEvent)>,
) {
    query.push("insert into timeline (id, incident_id, at, kind, actor, detail) ");
    query.push_values(entries, |mut row, (event, deduplicated, new)| {
        let (kind, detail) = ingest_entry(event, deduplicated);
        row.push_bind(Uuid::now_v7().to_string())
            .push_bind(event.incident_id.to_string())
            .push_bind(event.received_at.as_millis())
            .push_bind(kind.as_str())
            .push_bind(new.actor.clone())
            .push_bind(detail.to_string());
    });
}

/// Appends `entries` (incident, kind, detail) to the timeline, in order, all at `at` by `actor`.
async fn append_timeline(
    tx: &mut Transaction<'_, Sqlite>,
    at: Timestamp,
    actor: &str,
    entries: &[(Uuid, TimelineKind, serde_json::Value)],
) -> Result<(), StoreError> {
    for chunk in entries.chunks(MAX_ROWS_PER_STATEMENT) {
        let mut insert = QueryBuilder::<Sqlite>::new(
            "insert into timeline (id, incident_id, at, kind, actor, detail) ",
        );
        insert.push_values(chunk, |mut row, (incident_id, kind, detail)| {
            row.push_bind(Uuid::now_v7().to_string())
                .push_bind(incident_id.to_string())
                .push_bind(at.as_millis())
                .push_bind(kind.as_str())
                .push_bind(actor.to_owned())
                .push_bind(detail.to_string());
        });
        insert.build().execute(&mut **tx).await?;
    }
    Ok(())
}

fn uuid(row: &SqliteRow, column: &str) -> Result<Uuid, StoreError> {
    let text: String = row.try_get(column)?;
    Uuid::parse_str(&text).map_err(|_| StoreError::corrupt(column, &text))
}

fn timestamp(row: &SqliteRow, column: &str) -> Result<Timestamp, StoreError> {
    Ok(Timestamp::from_millis(row.try_get(column)?))
}

fn optional_timestamp(row: &SqliteRow, column: &str) -> Result<Option<Timestamp>, StoreError> {
    Ok(row
        .try_get::<Option<i64>, _>(column)?
        .map(Timestamp::from_millis))
}

fn parsed<T>(
    row: &SqliteRow,
    column: &str,
    parse: impl Fn(&str) -> Option<T>,
) -> Result<T, StoreError> {
    let text: String = row.try_get(column)?;
    parse(&text).ok_or_else(|| StoreError::corrupt(column, &text))
}

fn json(row: &SqliteRow, column: &str) -> Result<serde_json::Value, StoreError> {
    let text: String = row.try_get(column)?;
    serde_json::from_str(&text).map_err(|_| StoreError::corrupt(column, &text))
}

fn incident_from_row(row: &SqliteRow) -> Result<Incident, StoreError> {
    Ok(Incident {
        id: uuid(row, "id")?,
        title: row.try_get("title")?,
        severity: parsed(row, "severity", Severity::parse)?,
        status: parsed(row, "status", IncidentStatus::parse)?,
        dedup_key: row.try_get("dedup_key")?,
        event_count: row.try_get("event_count")?,
        escalation_level: row.try_get("escalation_level")?,
        resolution_note: row.try_get("resolution_note")?,
        created_at: timestamp(row, "created_at")?,
        updated_at: timestamp(row, "updated_at")?,
        acknowledged_at: optional_timestamp(row, "acknowledged_at")?,
        resolved_at: optional_timestamp(row, "resolved_at")?,
        cancelled_at: optional_timestamp(row, "cancelled_at")?,
    })
}

fn escalation_from_row(row: &SqliteRow) -> Result<Escalation, StoreError> {
    Ok(Escalation {
        id: uuid(row, "id")?,
        incident_id: uuid(row, "incident_id")?,
        escalation_level: row.try_get("escalation_level")?,
        status: parsed(row, "status", EscalationStatus::parse)?,
        scheduled_at: timestamp(row, "scheduled_at")?,
        executed_at: optional_timestamp(row, "executed_at")?,
        cancelled_at: optional_timestamp(row, "cancelled_at")?,
        created_at: timestamp(row, "created_at")?,
    })
}

fn timeline_from_row(row: &SqliteRow) -> Result<TimelineEntry, StoreError> {
    Ok(TimelineEntry {
        id: uuid(row, "id")?,
        incident_id: uuid(row, "incident_id")?,
        at: timestamp(row, "at")?,
        kind: parsed(row, "kind", TimelineKind::parse)?,
        actor: row.try_get("actor")?,
        detail: json(row, "detail")?,
    })
}

fn token_from_row(row: &SqliteRow) -> Result<Token, StoreError> {
    Ok(Token {
        id: uuid(row, "id")?,
        name: row.try_get("name")?,
        role: parsed(row, "role", Role::parse)?,
        created_at: timestamp(row, "created_at")?,
        revoked_at: optional_timestamp(row, "revoked_at")?,
    })
}
