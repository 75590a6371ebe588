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
//!
//! Row locks are always taken on the incident first, then on its escalations.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgPool, PgPoolOptions, PgRow};
use sqlx::types::Json;
use sqlx::{Postgres, Row, Transaction};
use uuid::Uuid;

use super::{
    into_page, transition_detail, IncidentQuery, Ingested, Page, Store, StoreError,
    TransitionRequest, NON_TERMINAL_SQL,
};
use crate::domain::incident::title_from_text;
use crate::domain::timeline::SYSTEM_ACTOR;
use crate::domain::{
    Escalation, EscalationStatus, Event, Incident, IncidentStatus, InvalidTransition, NewEvent,
    NewToken, Role, Severity, TimelineEntry, TimelineKind, Timestamp, Token, Transition,
};

/// Connections one instance holds at most; several instances share the server's limit.
const MAX_CONNECTIONS: u32 = 16;
/// How long a request waits for a pooled connection (or a new one to open) before the store
/// reports itself unavailable (503).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

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

    async fn ingest(&self, new: NewEvent) -> Result<Ingested, StoreError> {
        let mut tx = self.pool.begin().await?;
        let fresh_id = Uuid::now_v7();
        let at = new.received_at.as_datetime();
        let row = sqlx::query(&format!(
            "insert into incidents (id, title, severity, status, dedup_key, event_count, created_at, updated_at)
             values ($1, $2, $3, 'OPEN', $4, 1, $5, $5)
             on conflict (dedup_key) where status in {NON_TERMINAL_SQL}
             do update set event_count = incidents.event_count + 1, updated_at = excluded.updated_at
             returning *"
        ))
        .bind(fresh_id)
        .bind(title_from_text(&new.summary))
        .bind(new.severity.as_str())
        .bind(&new.dedup_key)
        .bind(at)
        .fetch_one(&mut *tx)
        .await?;
        let incident = incident_from_row(&row)?;
        let deduplicated = incident.id != fresh_id;

        let event = Event {
            id: Uuid::now_v7(),
            incident_id: incident.id,
            source: new.source,
            summary: new.summary,
            severity: new.severity,
            dedup_key: new.dedup_key,
            payload: new.payload,
            received_at: new.received_at,
        };
        sqlx::query(
            "insert into events (id, incident_id, source, summary, severity, dedup_key, payload, received_at)
             values ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(event.id)
        .bind(event.incident_id)
        .bind(&event.source)
        .bind(&event.summary)
        .bind(event.severity.as_str())
        .bind(&event.dedup_key)
        .bind(&event.payload)
        .bind(at)
        .execute(&mut *tx)
        .await?;
        let kind = if deduplicated {
            TimelineKind::EventAppended
        } else {
            TimelineKind::IncidentCreated
        };
        let detail = serde_json::json!({ "event_id": event.id, "source": event.source });
        append_timeline(
            &mut tx,
            incident.id,
            new.received_at,
            kind,
            &new.actor,
            &detail,
        )
        .await?;
        tx.commit().await?;
        Ok(Ingested {
            event,
            incident,
            deduplicated,
        })
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

    async fn transition(&self, request: TransitionRequest) -> Result<Incident, StoreError> {
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
        append_timeline(&mut tx, id, at, kind, &request.actor, &detail).await?;
        if plan.cancels_pending {
            let cancelled = sqlx::query(
                "update escalations set status = 'CANCELLED', cancelled_at = $1
                 where incident_id = $2 and status = 'PENDING'
                 returning id, escalation_level",
            )
            .bind(at.as_datetime())
            .bind(id)
            .fetch_all(&mut *tx)
            .await?;
            for row in cancelled {
                let detail = serde_json::json!({
                    "escalation_id": row.try_get::<Uuid, _>("id")?,
                    "escalation_level": row.try_get::<i32, _>("escalation_level")?,
                    "reason": request.action.as_str(),
                });
                let kind = TimelineKind::EscalationCancelled;
                append_timeline(&mut tx, id, at, kind, &request.actor, &detail).await?;
            }
        }
        if plan.schedules_first_level {
            let level = request.policy.first();
            let escalation_id = Uuid::now_v7();
            let scheduled_at = at.after(level.delay);
            sqlx::query(
                "insert into escalations (id, incident_id, escalation_level, status, scheduled_at, created_at)
                 values ($1, $2, $3, 'PENDING', $4, $5)",
            )
            .bind(escalation_id)
            .bind(id)
            .bind(level.level)
            .bind(scheduled_at.as_datetime())
            .bind(at.as_datetime())
            .execute(&mut *tx)
            .await?;
            let detail = serde_json::json!({
                "escalation_id": escalation_id,
                "escalation_level": level.level,
                "scheduled_at": scheduled_at,
            });
            let kind = TimelineKind::EscalationScheduled;
            append_timeline(&mut tx, id, at, kind, SYSTEM_ACTOR, &detail).await?;
        }
        tx.commit().await?;
        Ok(incident)
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
        let row = sqlx::query(
            "update tokens set revoked_at = coalesce(revoked_at, $1) where id = $2 returning *",
        )
        .bind(at.as_datetime())
        .bind(id)
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

async fn append_timeline(
    tx: &mut Transaction<'_, Postgres>,
    incident_id: Uuid,
    at: Timestamp,
    kind: TimelineKind,
    actor: &str,
    detail: &serde_json::Value,
) -> Result<(), StoreError> {
    sqlx::query(
        "insert into timeline (id, incident_id, at, kind, actor, detail) values ($1, $2, $3, $4, $5, $6)",
    )
    .bind(Uuid::now_v7())
    .bind(incident_id)
    .bind(at.as_datetime())
    .bind(kind.as_str())
    .bind(actor)
    .bind(detail)
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
