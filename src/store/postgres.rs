//! The production backend: PostgreSQL, shared by several instances.
//!
//! Every write runs in one transaction on a pooled connection at `read committed`.
//! - A transition reads the incident with `select … for update`, so concurrent transitions of one
//!   incident queue on its row lock and each plans from the status the previous one committed; the
//!   update keeps the compare-and-set on that status all the same.
//! - Ingest is one `insert … on conflict` against the partial unique index on live `dedup_key`s:
//!   concurrent events with one key either open the incident or wait for its row lock and join it,
//!   never fail and never open two. One that waits on an incident being resolved retries the insert
//!   and opens a new incident.
//! - `settle_due` claims due escalations with one `select … for update of e, i skip locked` that
//!   locks each escalation *and* its incident up front and skips rows another transaction holds.
//!   It never waits for a lock, so it cannot deadlock with a transition, and concurrent workers
//!   claim disjoint sets: each escalation is settled once. The rest of a batch is a fixed handful
//!   of set-based statements (`unnest` arrays), however many rows it holds.
//! - A transaction that schedules escalations notifies [`ESCALATION_CHANNEL`] once, with the
//!   earliest due time it scheduled; PostgreSQL delivers it at commit, so a listener that wakes
//!   always finds the rows.
//!
//! A transition takes row locks on the incident first, then on its escalations; the worker takes
//! both at once and never waits for either.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgPool, PgPoolOptions, PgRow};
use sqlx::types::Json;
use sqlx::{Postgres, QueryBuilder, Row, Transaction};
use uuid::Uuid;

use super::{
    cancelled_detail, executed_detail, ingest_entry, into_page, joined_incidents, new_event,
    next_level, opened_incident, scheduled_detail, statement_groups, transition_detail, Backlog,
    IncidentQuery, Ingested, NextLevel, Page, Scheduled, Settled, Store, StoreError,
    TransitionOutcome, TransitionRequest, MAX_ROWS_PER_STATEMENT, NON_TERMINAL_SQL,
};
use crate::domain::timeline::SYSTEM_ACTOR;
use crate::domain::{
    Escalation, EscalationStatus, Event, Incident, IncidentStatus, InvalidTransition, NewEvent,
    NewToken, Role, Severity, TimelineEntry, TimelineKind, Timestamp, Token, Transition,
};

/// How many times an ingest batch chosen as a deadlock victim runs before its error is returned.
const DEADLOCK_ATTEMPTS: u32 = 5;

/// Connections one instance holds at most; several instances share the server's limit.
const MAX_CONNECTIONS: u32 = 16;
/// How long a request waits for a pooled connection (or a new one to open) before the store
/// reports itself unavailable (503).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// The channel every transaction that schedules escalations notifies, with the earliest due time
/// it scheduled as epoch milliseconds in text: workers of every instance listen to it.
pub const ESCALATION_CHANNEL: &str = "klaxon_escalations";
/// The channel every token revocation is announced on (payload: the token's id), so that each
/// instance's token cache forgets it at once.
pub const TOKEN_CHANNEL: &str = "klaxon_tokens";

pub struct PostgresStore {
    pool: PgPool,
}

impl PostgresStore {
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect(url)
            .await?;
        Ok(Self { pool })
    }
}

impl PostgresStore {
    /// Events without a `dedup_key` cannot join anything: each opens an incident. All of them
    /// go in one statement (its own transaction), a single round trip where the general path
    /// takes five: the common case under load, measured in docs/PERFORMANCE.md.
    async fn open_incidents(&self, events: &[NewEvent]) -> Result<Vec<Ingested>, StoreError> {
        let incidents: Vec<Incident> = events.iter().map(opened_incident).collect();
        let stored: Vec<Event> = events
            .iter()
            .zip(&incidents)
            .map(|(event, incident)| new_event(event, incident.id))
            .collect();
        let column = |f: fn(&Incident) -> String| incidents.iter().map(f).collect::<Vec<_>>();
        let entries: Vec<_> = stored
            .iter()
            .map(|event| ingest_entry(event, false).1)
            .collect();
        sqlx::query(
            "with opened as (
                 insert into incidents (id, title, severity, status, event_count, created_at, updated_at)
                 select id, title, severity, 'OPEN', 1, at, at
                 from unnest($1::uuid[], $2::text[], $3::text[], $4::timestamptz[]) as t (id, title, severity, at)
             ), stored as (
                 insert into events (id, incident_id, source, summary, severity, payload, received_at)
                 select * from unnest($5::uuid[], $1::uuid[], $6::text[], $7::text[], $3::text[], $8::jsonb[], $4::timestamptz[])
             )
             insert into timeline (id, incident_id, at, kind, actor, detail)
             select id, incident_id, at, $9, actor, detail
             from unnest($10::uuid[], $1::uuid[], $4::timestamptz[], $11::text[], $12::jsonb[])
                 with ordinality as t (id, incident_id, at, actor, detail, n)
             order by n",
        )
        .bind(incidents.iter().map(|i| i.id).collect::<Vec<_>>())
        .bind(column(|i| i.title.clone()))
        .bind(column(|i| i.severity.as_str().to_owned()))
        .bind(incidents.iter().map(|i| i.created_at.as_datetime()).collect::<Vec<_>>())
        .bind(stored.iter().map(|e| e.id).collect::<Vec<_>>())
        .bind(stored.iter().map(|e| e.source.clone()).collect::<Vec<_>>())
        .bind(stored.iter().map(|e| e.summary.clone()).collect::<Vec<_>>())
        .bind(stored.iter().map(|e| e.payload.clone()).collect::<Vec<_>>())
        .bind(TimelineKind::IncidentCreated.as_str())
        .bind(events.iter().map(|_| Uuid::now_v7()).collect::<Vec<_>>())
        .bind(events.iter().map(|e| e.actor.clone()).collect::<Vec<_>>())
        .bind(entries)
        .execute(&self.pool)
        .await?;
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

    async fn try_ingest_batch(&self, events: &[NewEvent]) -> Result<Vec<Ingested>, StoreError> {
        if events.iter().all(|event| event.dedup_key.is_none()) {
            return self.open_incidents(events).await;
        }
        let mut tx = self.pool.begin().await?;

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
            let mut inserted = QueryBuilder::<Postgres>::new(
                "insert into events (id, incident_id, source, summary, severity, dedup_key, payload, received_at) ",
            );
            inserted.push_values(&group_events, |mut row, (_, event)| {
                row.push_bind(event.id)
                    .push_bind(event.incident_id)
                    .push_bind(event.source.clone())
                    .push_bind(event.summary.clone())
                    .push_bind(event.severity.as_str())
                    .push_bind(event.dedup_key.clone())
                    .push_bind(Json(event.payload.clone()))
                    .push_bind(event.received_at.as_datetime());
            });
            inserted.build().execute(&mut *tx).await?;

            let mut timeline = QueryBuilder::<Postgres>::new(
                "insert into timeline (id, incident_id, at, kind, actor, detail) ",
            );
            timeline.push_values(
                group_events.iter().zip(&joined),
                |mut row, ((index, event), (_, deduplicated))| {
                    let (kind, detail) = ingest_entry(event, *deduplicated);
                    row.push_bind(Uuid::now_v7())
                        .push_bind(event.incident_id)
                        .push_bind(event.received_at.as_datetime())
                        .push_bind(kind.as_str())
                        .push_bind(events[*index].actor.clone())
                        .push_bind(Json(detail));
                },
            );
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
}

#[async_trait]
impl Store for PostgresStore {
    async fn migrate(&self) -> Result<(), StoreError> {
        sqlx::migrate!("src/store/migrations/postgres")
            .run(&self.pool)
            .await?;
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("select 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn ingest(&self, event: NewEvent) -> Result<Ingested, StoreError> {
        let mut ingested = self.ingest_batch(std::slice::from_ref(&event)).await?;
        ingested
            .pop()
            .ok_or_else(|| StoreError::internal("an ingest stored nothing"))
    }

    async fn ingest_batch(&self, events: &[NewEvent]) -> Result<Vec<Ingested>, StoreError> {
        // Rows are locked in key order within a statement, but a batch that repeats a key spans
        // several statements, and two such batches can deadlock; the victim is rolled back whole
        // and simply runs again.
        let mut attempt = 1;
        loop {
            match self.try_ingest_batch(events).await {
                Err(StoreError::Unavailable(error))
                    if is_deadlock(&error) && attempt < DEADLOCK_ATTEMPTS =>
                {
                    attempt += 1;
                }
                outcome => return outcome,
            }
        }
    }

    async fn incident(&self, id: Uuid) -> Result<Incident, StoreError> {
        let row = sqlx::query("select * from incidents where id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
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
        .bind(query.before)
        .bind(i64::from(query.page_size()) + 1)
        .fetch_all(&self.pool)
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
        let mut tx = self.pool.begin().await?;
        let id = request.incident_id;
        let row = sqlx::query("select * from incidents where id = $1 for update")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(StoreError::NotFound)?;
        let current = incident_from_row(&row)?;
        let plan = Transition::plan(current.status, request.action)?;
        let at = request.at;
        let stamp = |status| (plan.to == status).then_some(at.as_datetime());
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
        .bind(at.as_datetime())
        .bind(stamp(IncidentStatus::Acknowledged))
        .bind(stamp(IncidentStatus::Resolved))
        .bind(stamp(IncidentStatus::Cancelled))
        .bind(
            request
                .note
                .as_ref()
                .filter(|_| plan.to == IncidentStatus::Resolved),
        )
        .bind(
            plan.schedules_first_level
                .then(|| Json(request.policy.as_ref())),
        )
        .bind(id)
        .bind(plan.from.as_str())
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(InvalidTransition {
            status: current.status,
            action: request.action,
        })?;
        let incident = incident_from_row(&row)?;

        let kind = TimelineKind::for_transition(request.action);
        let detail = transition_detail(&request, plan.from);
        let mut entries = vec![(id, kind, detail)];
        let mut cancelled = Vec::new();
        if plan.cancels_pending {
            let rows = sqlx::query(
                "update escalations set status = 'CANCELLED', cancelled_at = $1
                 where incident_id = $2 and status = 'PENDING'
                 returning id, escalation_level",
            )
            .bind(at.as_datetime())
            .bind(id)
            .fetch_all(&mut *tx)
            .await?;
            for row in rows {
                let escalation_id: Uuid = row.try_get("id")?;
                let level: i32 = row.try_get("escalation_level")?;
                let detail = cancelled_detail(escalation_id, level, request.action.as_str());
                entries.push((id, TimelineKind::EscalationCancelled, detail));
                cancelled.push(escalation_id);
            }
        }
        append_timeline(&mut tx, at, &request.actor, entries).await?;
        let scheduled = if plan.schedules_first_level {
            let level = request.policy.first();
            let first = NextLevel {
                incident_id: id,
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
        let only_filter = if only.is_some() {
            "and e.id = any($3)"
        } else {
            ""
        };
        // Locking the incident with its escalation, both skip-locked, is what keeps the worker
        // from ever waiting: a row whose incident a transition holds is skipped, not waited for
        // (and the transition cancels it anyway).
        let claim = format!(
            "select e.*, i.status as incident_status, i.escalation_policy
             from escalations e join incidents i on i.id = e.incident_id
             where e.status = 'PENDING' and e.scheduled_at <= $1 {only_filter}
             order by e.scheduled_at
             limit $2
             for update of e, i skip locked"
        );
        let mut tx = self.pool.begin().await?;
        // Stamped once a connection is ours: the lag includes any wait for one.
        let now = clock();
        let mut query = sqlx::query(&claim)
            .bind(now.as_datetime())
            .bind(i64::from(limit));
        if let Some(ids) = only {
            query = query.bind(ids);
        }
        let rows = query.fetch_all(&mut *tx).await?;

        let mut settled = Vec::with_capacity(rows.len());
        let mut entries = Vec::with_capacity(rows.len());
        let (mut executed, mut cancelled) = (Vec::new(), Vec::new());
        let (mut raised_incidents, mut raised_levels) = (Vec::new(), Vec::new());
        let (mut next_of, mut next_levels) = (Vec::new(), Vec::new());
        for row in &rows {
            let mut escalation = escalation_from_row(row)?;
            let incident_id = escalation.incident_id;
            let level = escalation.escalation_level;
            let incident_status = parsed(row, "incident_status", IncidentStatus::parse)?;
            if incident_status == IncidentStatus::Escalating {
                escalation.status = EscalationStatus::Executed;
                escalation.executed_at = Some(now);
                executed.push(escalation.id);
                entries.push((
                    incident_id,
                    TimelineKind::EscalationExecuted,
                    executed_detail(&escalation),
                ));
                raised_incidents.push(incident_id);
                raised_levels.push(level);
                if let Some((level, due)) =
                    next_level(row.try_get("escalation_policy")?, level, now)?
                {
                    next_of.push(settled.len());
                    next_levels.push(NextLevel {
                        incident_id,
                        level,
                        due,
                    });
                }
            } else {
                escalation.status = EscalationStatus::Cancelled;
                escalation.cancelled_at = Some(now);
                cancelled.push(escalation.id);
                let reason = format!("incident is {}", incident_status.as_str());
                let detail = cancelled_detail(escalation.id, level, &reason);
                entries.push((incident_id, TimelineKind::EscalationCancelled, detail));
            }
            settled.push(Settled {
                escalation,
                next: None,
            });
        }
        // By id arrays rather than a join with the claimed rows: an index scan whatever the
        // batch size, where a join's plan turns to a scan of the whole table for large batches.
        for (ids, statement) in [
            (
                &executed,
                "update escalations set status = 'EXECUTED', executed_at = $1 where id = any($2)",
            ),
            (
                &cancelled,
                "update escalations set status = 'CANCELLED', cancelled_at = $1 where id = any($2)",
            ),
        ] {
            if !ids.is_empty() {
                sqlx::query(statement)
                    .bind(now.as_datetime())
                    .bind(ids)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        if !raised_incidents.is_empty() {
            sqlx::query(
                "update incidents i
                 set escalation_level = greatest(i.escalation_level, r.level), updated_at = $3
                 from (select id, max(level) as level
                       from unnest($1::uuid[], $2::int[]) as r (id, level) group by id) r
                 where i.id = r.id",
            )
            .bind(&raised_incidents)
            .bind(&raised_levels)
            .bind(now.as_datetime())
            .execute(&mut *tx)
            .await?;
        }
        append_timeline(&mut tx, now, SYSTEM_ACTOR, entries).await?;
        let scheduled = schedule(&mut tx, &next_levels, now).await?;
        for (index, next) in next_of.into_iter().zip(scheduled) {
            settled[index].next = Some(next);
        }
        tx.commit().await?;
        Ok(settled)
    }

    async fn next_due(&self) -> Result<Option<Timestamp>, StoreError> {
        let due: Option<DateTime<Utc>> = sqlx::query_scalar(
            "select min(scheduled_at) from escalations where status = 'PENDING'",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(due.map(Timestamp::from_datetime))
    }

    async fn backlog(&self, now: Timestamp) -> Result<Backlog, StoreError> {
        let (pending, overdue): (i64, i64) = sqlx::query_as(
            "select count(*), count(*) filter (where scheduled_at <= $1)
             from escalations where status = 'PENDING'",
        )
        .bind(now.as_datetime())
        .fetch_one(&self.pool)
        .await?;
        Ok(Backlog { pending, overdue })
    }

    async fn pending_page(
        &self,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<Scheduled>, StoreError> {
        // The nil id sorts before every other, and keeps `id > $1` an index condition.
        let rows = sqlx::query(
            "select id, scheduled_at from escalations
             where status = 'PENDING' and id > $1
             order by id limit $2",
        )
        .bind(after.unwrap_or(Uuid::nil()))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(Scheduled {
                    id: row.try_get("id")?,
                    due: timestamp(row, "scheduled_at")?,
                })
            })
            .collect()
    }

    async fn escalations(&self, incident_id: Uuid) -> Result<Vec<Escalation>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        exists(&mut conn, incident_id).await?;
        let rows = sqlx::query(
            "select * from escalations where incident_id = $1 order by escalation_level, created_at",
        )
        .bind(incident_id)
        .fetch_all(&mut *conn)
        .await?;
        rows.iter().map(escalation_from_row).collect()
    }

    async fn timeline(&self, incident_id: Uuid) -> Result<Vec<TimelineEntry>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        exists(&mut conn, incident_id).await?;
        let rows = sqlx::query("select * from timeline where incident_id = $1 order by seq")
            .bind(incident_id)
            .fetch_all(&mut *conn)
            .await?;
        rows.iter().map(timeline_from_row).collect()
    }

    async fn create_token(&self, token: NewToken) -> Result<Token, StoreError> {
        let row = sqlx::query(
            "insert into tokens (id, name, role, secret_hash, created_at)
             values ($1, $2, $3, $4, $5) returning *",
        )
        .bind(Uuid::now_v7())
        .bind(&token.name)
        .bind(token.role.as_str())
        .bind(&token.secret_hash)
        .bind(token.created_at.as_datetime())
        .fetch_one(&self.pool)
        .await?;
        token_from_row(&row)
    }

    async fn tokens(&self) -> Result<Vec<Token>, StoreError> {
        let rows = sqlx::query("select * from tokens order by id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(token_from_row).collect()
    }

    async fn token_by_hash(&self, secret_hash: &str) -> Result<Option<Token>, StoreError> {
        let row = sqlx::query("select * from tokens where secret_hash = $1")
            .bind(secret_hash)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(token_from_row).transpose()
    }

    async fn revoke_token(&self, id: Uuid, at: Timestamp) -> Result<Token, StoreError> {
        // The notification is delivered on commit, to every instance's token cache.
        let row = sqlx::query(
            "with revoked as (
                 update tokens set revoked_at = coalesce(revoked_at, $1) where id = $2 returning *
             )
             select revoked.*, pg_notify($3, revoked.id::text) from revoked",
        )
        .bind(at.as_datetime())
        .bind(id)
        .bind(TOKEN_CHANNEL)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound)?;
        token_from_row(&row)
    }
}

async fn exists(conn: &mut sqlx::PgConnection, id: Uuid) -> Result<(), StoreError> {
    sqlx::query("select 1 from incidents where id = $1")
        .bind(id)
        .fetch_optional(conn)
        .await?
        .map(|_| ())
        .ok_or(StoreError::NotFound)
}

/// Schedules each level as a `PENDING` escalation with its `escalation.scheduled` entry, in one
/// statement each however many there are, and notifies [`ESCALATION_CHANNEL`] of the earliest due
/// time. Returns them in the order given.
async fn schedule(
    tx: &mut Transaction<'_, Postgres>,
    levels: &[NextLevel],
    now: Timestamp,
) -> Result<Vec<Scheduled>, StoreError> {
    let Some(earliest) = levels.iter().map(|next| next.due).min() else {
        return Ok(Vec::new());
    };
    let scheduled: Vec<_> = levels
        .iter()
        .map(|next| Scheduled {
            id: Uuid::now_v7(),
            due: next.due,
        })
        .collect();
    sqlx::query(
        "insert into escalations (id, incident_id, escalation_level, status, scheduled_at, created_at)
         select id, incident_id, level, 'PENDING', due, $5
         from unnest($1::uuid[], $2::uuid[], $3::int[], $4::timestamptz[]) as t (id, incident_id, level, due)",
    )
    .bind(scheduled.iter().map(|s| s.id).collect::<Vec<_>>())
    .bind(levels.iter().map(|next| next.incident_id).collect::<Vec<_>>())
    .bind(levels.iter().map(|next| next.level).collect::<Vec<_>>())
    .bind(levels.iter().map(|next| next.due.as_datetime()).collect::<Vec<_>>())
    .bind(now.as_datetime())
    .execute(&mut **tx)
    .await?;
    let entries = levels
        .iter()
        .zip(&scheduled)
        .map(|(next, &s)| {
            let detail = scheduled_detail(s, next.level);
            (next.incident_id, TimelineKind::EscalationScheduled, detail)
        })
        .collect();
    append_timeline(tx, now, SYSTEM_ACTOR, entries).await?;
    sqlx::query("select pg_notify($1, $2)")
        .bind(ESCALATION_CHANNEL)
        .bind(earliest.as_millis().to_string())
        .execute(&mut **tx)
        .await?;
    Ok(scheduled)
}

/// Stores the incidents a group of events opens or joins: keyless ones with a plain insert
/// (nothing can conflict, nothing needs reading back), keyed ones with an upsert that returns the
/// incident each opened or joined. Returns, in the order of `proposed`, each event's incident
/// and whether it joined a live one.
async fn store_incidents(
    tx: &mut Transaction<'_, Postgres>,
    proposed: &[Incident],
) -> Result<Vec<(Incident, bool)>, StoreError> {
    let (keyed, keyless): (Vec<&Incident>, Vec<&Incident>) = proposed
        .iter()
        .partition(|incident| incident.dedup_key.is_some());
    let columns = "insert into incidents (id, title, severity, status, dedup_key, event_count, created_at, updated_at) ";
    let values = |incidents: Vec<&Incident>| {
        let mut insert = QueryBuilder::<Postgres>::new(columns);
        insert.push_values(incidents, |mut row, incident| {
            row.push_bind(incident.id)
                .push_bind(incident.title.clone())
                .push_bind(incident.severity.as_str())
                .push_bind(incident.status.as_str())
                .push_bind(incident.dedup_key.clone())
                .push_bind(incident.event_count)
                .push_bind(incident.created_at.as_datetime())
                .push_bind(incident.updated_at.as_datetime());
        });
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

/// Appends `entries` (incident, kind, detail), all `at` by `actor`, in one statement and in their
/// order.
async fn append_timeline(
    tx: &mut Transaction<'_, Postgres>,
    at: Timestamp,
    actor: &str,
    entries: Vec<(Uuid, TimelineKind, serde_json::Value)>,
) -> Result<(), StoreError> {
    if entries.is_empty() {
        return Ok(());
    }
    let ids: Vec<_> = entries.iter().map(|_| Uuid::now_v7()).collect();
    let (incident_ids, kinds, details): (Vec<_>, Vec<_>, Vec<_>) = entries
        .into_iter()
        .map(|(incident_id, kind, detail)| (incident_id, kind.as_str(), detail))
        .collect();
    sqlx::query(
        "insert into timeline (id, incident_id, at, kind, actor, detail)
         select id, incident_id, $5, kind, $6, detail
         from unnest($1::uuid[], $2::uuid[], $3::text[], $4::jsonb[])
             with ordinality as t (id, incident_id, kind, detail, n)
         order by n",
    )
    .bind(ids)
    .bind(incident_ids)
    .bind(kinds)
    .bind(details)
    .bind(at.as_datetime())
    .bind(actor)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

fn timestamp(row: &PgRow, column: &str) -> Result<Timestamp, StoreError> {
    Ok(Timestamp::from_datetime(row.try_get(column)?))
}

fn optional_timestamp(row: &PgRow, column: &str) -> Result<Option<Timestamp>, StoreError> {
    let at: Option<DateTime<Utc>> = row.try_get(column)?;
    Ok(at.map(Timestamp::from_datetime))
}

fn parsed<T>(
    row: &PgRow,
    column: &str,
    parse: impl Fn(&str) -> Option<T>,
) -> Result<T, StoreError> {
    let text: String = row.try_get(column)?;
    parse(&text).ok_or_else(|| StoreError::corrupt(column, &text))
}

fn incident_from_row(row: &PgRow) -> Result<Incident, StoreError> {
    Ok(Incident {
        id: row.try_get("id")?,
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

fn escalation_from_row(row: &PgRow) -> Result<Escalation, StoreError> {
    Ok(Escalation {
        id: row.try_get("id")?,
        incident_id: row.try_get("incident_id")?,
        escalation_level: row.try_get("escalation_level")?,
        status: parsed(row, "status", EscalationStatus::parse)?,
        scheduled_at: timestamp(row, "scheduled_at")?,
        executed_at: optional_timestamp(row, "executed_at")?,
        cancelled_at: optional_timestamp(row, "cancelled_at")?,
        created_at: timestamp(row, "created_at")?,
    })
}

fn timeline_from_row(row: &PgRow) -> Result<TimelineEntry, StoreError> {
    Ok(TimelineEntry {
        id: row.try_get("id")?,
        incident_id: row.try_get("incident_id")?,
        at: timestamp(row, "at")?,
        kind: parsed(row, "kind", TimelineKind::parse)?,
        actor: row.try_get("actor")?,
        detail: row.try_get("detail")?,
    })
}

fn token_from_row(row: &PgRow) -> Result<Token, StoreError> {
    Ok(Token {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        role: parsed(row, "role", Role::parse)?,
        created_at: timestamp(row, "created_at")?,
        revoked_at: optional_timestamp(row, "revoked_at")?,
    })
}

fn is_deadlock(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.code().as_deref() == Some("40P01"))
}
