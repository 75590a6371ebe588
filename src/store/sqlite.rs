//! The embedded backend: one SQLite file in WAL mode.
//!
//! Writes go through a pool of exactly **one** connection, so write transactions are serialized
//! in-process and never fail with `SQLITE_BUSY` on a read-to-write lock upgrade; reads use their
//! own pool and, thanks to WAL, never wait for a writer. With one writer the status a transition
//! reads cannot change before its compare-and-set, which is kept all the same as the guard the
//! SPEC asks for. `synchronous = FULL`: a `201` means the event is on disk.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Row, Sqlite, Transaction};
use uuid::Uuid;

use super::{
    into_page, transition_detail, IncidentQuery, Ingested, Page, Store, StoreError,
    TransitionRequest, NON_TERMINAL_SQL,
};
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

    async fn ingest(&self, new: NewEvent) -> Result<Ingested, StoreError> {
        let mut tx = self.writer.begin().await?;
        let fresh_id = Uuid::now_v7();
        let at = new.received_at.as_millis();
        let row = sqlx::query(&format!(
            "insert into incidents (id, title, severity, status, dedup_key, event_count, created_at, updated_at)
             values ($1, $2, $3, 'OPEN', $4, 1, $5, $5)
             on conflict (dedup_key) where status in {NON_TERMINAL_SQL}
             do update set event_count = event_count + 1, updated_at = excluded.updated_at
             returning *"
        ))
        .bind(fresh_id.to_string())
        .bind(crate::domain::incident::title_from_text(&new.summary))
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
        .bind(event.id.to_string())
        .bind(event.incident_id.to_string())
        .bind(&event.source)
        .bind(&event.summary)
        .bind(event.severity.as_str())
        .bind(&event.dedup_key)
        .bind(event.payload.to_string())
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

    async fn transition(&self, request: TransitionRequest) -> Result<Incident, StoreError> {
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
        append_timeline(&mut tx, incident.id, at, kind, &request.actor, &detail).await?;
        if plan.cancels_pending {
            let cancelled = sqlx::query(
                "update escalations set status = 'CANCELLED', cancelled_at = $1
                 where incident_id = $2 and status = 'PENDING'
                 returning id, escalation_level",
            )
            .bind(at.as_millis())
            .bind(&id)
            .fetch_all(&mut *tx)
            .await?;
            for row in cancelled {
                let detail = serde_json::json!({
                    "escalation_id": row.try_get::<String, _>("id")?,
                    "escalation_level": row.try_get::<i32, _>("escalation_level")?,
                    "reason": request.action.as_str(),
                });
                append_timeline(
                    &mut tx,
                    incident.id,
                    at,
                    TimelineKind::EscalationCancelled,
                    &request.actor,
                    &detail,
                )
                .await?;
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
            .bind(escalation_id.to_string())
            .bind(&id)
            .bind(level.level)
            .bind(scheduled_at.as_millis())
            .bind(at.as_millis())
            .execute(&mut *tx)
            .await?;
            let detail = serde_json::json!({
                "escalation_id": escalation_id,
                "escalation_level": level.level,
                "scheduled_at": scheduled_at,
            });
            append_timeline(
                &mut tx,
                incident.id,
                at,
                TimelineKind::EscalationScheduled,
                crate::domain::timeline::SYSTEM_ACTOR,
                &detail,
            )
            .await?;
        }
        tx.commit().await?;
        Ok(incident)
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

async fn exists(conn: &mut sqlx::SqliteConnection, id: &str) -> Result<(), StoreError> {
    sqlx::query("select 1 from incidents where id = $1")
        .bind(id)
        .fetch_optional(conn)
        .await?
        .map(|_| ())
        .ok_or(StoreError::NotFound)
}

async fn append_timeline(
    tx: &mut Transaction<'_, Sqlite>,
    incident_id: Uuid,
    at: Timestamp,
    kind: TimelineKind,
    actor: &str,
    detail: &serde_json::Value,
) -> Result<(), StoreError> {
    sqlx::query(
        "insert into timeline (id, incident_id, at, kind, actor, detail) values ($1, $2, $3, $4, $5, $6)",
    )
    .bind(Uuid::now_v7().to_string())
    .bind(incident_id.to_string())
    .bind(at.as_millis())
    .bind(kind.as_str())
    .bind(actor)
    .bind(detail.to_string())
    .execute(&mut **tx)
    .await?;
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
