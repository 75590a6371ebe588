//! On-call schedules, their rotations and their overrides, written **once** for every backend
//! (as [`super::catalog`] is): the SQL is the same on both; a backend says where its pools are and
//! how values bind. A rotation's participants and restrictions are JSON (`text` on SQLite,
//! `jsonb` on PostgreSQL), bound through sqlx's `Json`, which each backend encodes its own way.
//!
//! Nothing is deleted: retiring sets `retired_at`, and only live rows are listed. Rotations and
//! overrides are listed in the order they were made, which is the order [`Schedule`] breaks
//! ties by (equal priorities; competing replacements).
//!
//! [`Schedule`]: crate::domain::schedule::Schedule

use async_trait::async_trait;
use sqlx::pool::PoolConnection;
use sqlx::types::Json;
use sqlx::{Database, Encode, Executor, IntoArguments, Type};
use uuid::Uuid;

use super::rows::{self, Columns};
use super::shared::Pools;
use super::statements::{Dialect, Statement};
use super::{Result, ScheduleLayers, Schedules, StoreError};
use crate::domain::schedule::{OverrideRecord, RestrictionFields, RotationRecord, ScheduleRecord};
use crate::domain::Timestamp;

const DUPLICATE_NAME: &str = "a schedule with this name already exists";

/// Schedule `id`, read on `conn`; `NotFound` if there is none.
async fn schedule_on<D: Dialect>(conn: &mut PoolConnection<D>, id: Uuid) -> Result<ScheduleRecord>
where
    for<'c> &'c mut D::Connection: Executor<'c, Database = D>,
    for<'q> D::Arguments<'q>: IntoArguments<'q, D>,
    D::Row: Columns,
{
    let row = sqlx::query("select * from schedules where id = $1")
        .bind(D::id(id))
        .fetch_optional(&mut **conn)
        .await?
        .ok_or(StoreError::NotFound)?;
    rows::schedule(&row)
}

#[async_trait]
impl<B> Schedules for B
where
    B: Pools,
    for<'c> &'c mut <B::Db as Database>::Connection: Executor<'c, Database = B::Db>,
    for<'q> <B::Db as Database>::Arguments<'q>: IntoArguments<'q, B::Db>,
    for<'q> String: Encode<'q, B::Db> + Type<B::Db>,
    for<'q> &'q str: Encode<'q, B::Db> + Type<B::Db>,
    for<'q> i64: Encode<'q, B::Db> + Type<B::Db>,
    for<'q> i32: Encode<'q, B::Db> + Type<B::Db>,
    for<'q> Option<<B::Db as Dialect>::Id>: Encode<'q, B::Db> + Type<B::Db>,
    for<'q> Option<<B::Db as Dialect>::Time>: Encode<'q, B::Db> + Type<B::Db>,
    for<'q> Json<Vec<Uuid>>: Encode<'q, B::Db> + Type<B::Db>,
    for<'q> Json<Vec<RestrictionFields>>: Encode<'q, B::Db> + Type<B::Db>,
    <B::Db as Database>::Row: Columns,
{
    async fn create_schedule(&self, schedule: &ScheduleRecord) -> Result<ScheduleRecord> {
        let mut conn = self.writer().acquire().await?;
        let row = sqlx::query(
            "insert into schedules (id, name, time_zone, created_at, updated_at)
             values ($1, $2, $3, $4, $5) returning *",
        )
        .bind(B::Db::id(schedule.id))
        .bind(schedule.name.clone())
        .bind(schedule.time_zone.clone())
        .bind(B::Db::time(schedule.created_at))
        .bind(B::Db::time(schedule.updated_at))
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| StoreError::from(e).duplicate(DUPLICATE_NAME))?;
        rows::schedule(&row)
    }

    async fn update_schedule(&self, schedule: &ScheduleRecord) -> Result<ScheduleRecord> {
        let mut conn = self.writer().acquire().await?;
        let row = sqlx::query(
            "update schedules set name = $1, time_zone = $2, updated_at = $3
             where id = $4 returning *",
        )
        .bind(schedule.name.clone())
        .bind(schedule.time_zone.clone())
        .bind(B::Db::time(schedule.updated_at))
        .bind(B::Db::id(schedule.id))
        .fetch_optional(&mut *conn)
        .await
        .map_err(|e| StoreError::from(e).duplicate(DUPLICATE_NAME))?
        .ok_or(StoreError::NotFound)?;
        rows::schedule(&row)
    }

    async fn schedules(&self) -> Result<Vec<ScheduleRecord>> {
        let mut conn = self.reader().acquire().await?;
        let found = sqlx::query("select * from schedules order by name")
            .fetch_all(&mut *conn)
            .await?;
        found.iter().map(rows::schedule).collect()
    }

    async fn schedule(&self, id: Uuid) -> Result<ScheduleRecord> {
        let mut conn = self.reader().acquire().await?;
        schedule_on(&mut conn, id).await
    }

    async fn add_rotation(&self, rotation: &RotationRecord) -> Result<RotationRecord> {
        let mut conn = self.writer().acquire().await?;
        let row = rotation_row::<B::Db>(
            "insert into rotations (id, schedule_id, name, kind, shift_length, start, participants,
                 priority, restrictions, created_at, updated_at)
             select $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11
             where exists (select 1 from schedules where id = $2)
             returning *",
            rotation,
        )
        .fetch_optional(&mut *conn)
        .await?
        .ok_or(StoreError::NotFound)?;
        rows::rotation(&row)
    }

    async fn replace_rotation(&self, rotation: &RotationRecord) -> Result<RotationRecord> {
        let mut conn = self.writer().acquire().await?;
        // The same parameters as the insert's; `created_at` ($10) is kept.
        let row = rotation_row::<B::Db>(
            "update rotations set name = $3, kind = $4, shift_length = $5, start = $6,
                 participants = $7, priority = $8, restrictions = $9, updated_at = $11
             where id = $1 and schedule_id = $2 and retired_at is null
             returning *",
            rotation,
        )
        .fetch_optional(&mut *conn)
        .await?
        .ok_or(StoreError::NotFound)?;
        rows::rotation(&row)
    }

    async fn rotations(&self, schedule_id: Uuid) -> Result<Vec<RotationRecord>> {
        let mut conn = self.reader().acquire().await?;
        schedule_on(&mut conn, schedule_id).await?;
        live_rotations(&mut *conn, schedule_id).await
    }

    async fn retire_rotation(
        &self,
        schedule_id: Uuid,
        id: Uuid,
        at: Timestamp,
    ) -> Result<RotationRecord> {
        let mut conn = self.writer().acquire().await?;
        let row = retire::<B::Db>(&mut conn, "rotations", schedule_id, id, at).await?;
        rows::rotation(&row)
    }

    async fn add_override(&self, taken: &OverrideRecord) -> Result<OverrideRecord> {
        let mut conn = self.writer().acquire().await?;
        let row = sqlx::query(
            "insert into overrides (id, schedule_id, user_id, replaces_user_id, start_at, end_at,
                 created_at)
             select $1, $2, $3, $4, $5, $6, $7
             where exists (select 1 from schedules where id = $2)
             returning *",
        )
        .bind(B::Db::id(taken.id))
        .bind(B::Db::id(taken.schedule_id))
        .bind(B::Db::id(taken.user))
        .bind(taken.replaces.map(B::Db::id))
        .bind(B::Db::time(taken.start))
        .bind(B::Db::time(taken.end))
        .bind(B::Db::time(taken.created_at))
        .fetch_optional(&mut *conn)
        .await?
        .ok_or(StoreError::NotFound)?;
        rows::override_record(&row)
    }

    async fn overrides(
        &self,
        schedule_id: Uuid,
        from: Option<Timestamp>,
        to: Option<Timestamp>,
    ) -> Result<Vec<OverrideRecord>> {
        let mut conn = self.reader().acquire().await?;
        schedule_on(&mut conn, schedule_id).await?;
        live_overrides(&mut *conn, schedule_id, from, to).await
    }

    async fn retire_override(
        &self,
        schedule_id: Uuid,
        id: Uuid,
        at: Timestamp,
    ) -> Result<OverrideRecord> {
        let mut conn = self.writer().acquire().await?;
        let row = retire::<B::Db>(&mut conn, "overrides", schedule_id, id, at).await?;
        rows::override_record(&row)
    }

    async fn layers(
        &self,
        schedule_id: Uuid,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<ScheduleLayers> {
        let mut conn = self.reader().acquire().await?;
        Ok(ScheduleLayers {
            schedule: schedule_on(&mut conn, schedule_id).await?,
            rotations: live_rotations(&mut *conn, schedule_id).await?,
            overrides: live_overrides(&mut *conn, schedule_id, Some(from), Some(to)).await?,
        })
    }
}

/// `sql` with `rotation`'s columns bound as `$1` … `$11`: id, schedule_id, name, kind,
/// shift_length, start, participants, priority, restrictions, created_at, updated_at.
fn rotation_row<'q, D: Dialect>(sql: &'q str, rotation: &RotationRecord) -> Statement<'q, D>
where
    for<'a> String: Encode<'a, D> + Type<D>,
    for<'a> &'a str: Encode<'a, D> + Type<D>,
    for<'a> i64: Encode<'a, D> + Type<D>,
    for<'a> i32: Encode<'a, D> + Type<D>,
    for<'a> Json<Vec<Uuid>>: Encode<'a, D> + Type<D>,
    for<'a> Json<Vec<RestrictionFields>>: Encode<'a, D> + Type<D>,
{
    let fields = &rotation.fields;
    sqlx::query(sql)
        .bind(D::id(rotation.id))
        .bind(D::id(rotation.schedule_id))
        .bind(rotation.name.clone())
        .bind(fields.kind.as_str())
        .bind(fields.shift_length)
        .bind(fields.start.clone())
        .bind(Json(fields.participants.clone()))
        .bind(fields.priority)
        .bind(Json(fields.restrictions.clone()))
        .bind(D::time(rotation.created_at))
        .bind(D::time(rotation.updated_at))
}

/// Retires row `id` of `table` (`rotations` or `overrides`) in schedule `schedule_id` at `at`,
/// and returns it; `NotFound` unless it is there and live.
async fn retire<D: Dialect>(
    conn: &mut PoolConnection<D>,
    table: &str,
    schedule_id: Uuid,
    id: Uuid,
    at: Timestamp,
) -> Result<D::Row>
where
    for<'c> &'c mut D::Connection: Executor<'c, Database = D>,
    for<'q> D::Arguments<'q>: IntoArguments<'q, D>,
{
    let sql = format!(
        "update {table} set retired_at = $1
         where id = $2 and schedule_id = $3 and retired_at is null
         returning *"
    );
    sqlx::query(&sql)
        .bind(D::time(at))
        .bind(D::id(id))
        .bind(D::id(schedule_id))
        .fetch_optional(&mut **conn)
        .await?
        .ok_or(StoreError::NotFound)
}

/// The schedule's live rotations, in the order they were made.
pub(super) async fn live_rotations<D: Dialect>(
    conn: &mut D::Connection,
    schedule_id: Uuid,
) -> Result<Vec<RotationRecord>>
where
    for<'c> &'c mut D::Connection: Executor<'c, Database = D>,
    for<'q> D::Arguments<'q>: IntoArguments<'q, D>,
    D::Row: Columns,
{
    let found = sqlx::query(
        "select * from rotations where schedule_id = $1 and retired_at is null
         order by created_at, id",
    )
    .bind(D::id(schedule_id))
    .fetch_all(&mut *conn)
    .await?;
    found.iter().map(rows::rotation).collect()
}

/// The schedule's live overrides that overlap `[from, to)` (unbounded where `None`), in the
/// order they were made.
pub(super) async fn live_overrides<D: Dialect>(
    conn: &mut D::Connection,
    schedule_id: Uuid,
    from: Option<Timestamp>,
    to: Option<Timestamp>,
) -> Result<Vec<OverrideRecord>>
where
    for<'c> &'c mut D::Connection: Executor<'c, Database = D>,
    for<'q> D::Arguments<'q>: IntoArguments<'q, D>,
    for<'q> Option<D::Time>: Encode<'q, D> + Type<D>,
    D::Row: Columns,
{
    let found = sqlx::query(
        "select * from overrides
         where schedule_id = $1 and retired_at is null
             and ($2 is null or end_at > $2) and ($3 is null or start_at < $3)
         order by created_at, id",
    )
    .bind(D::id(schedule_id))
    .bind(from.map(D::time))
    .bind(to.map(D::time))
    .fetch_all(&mut *conn)
    .await?;
    found.iter().map(rows::override_record).collect()
}
