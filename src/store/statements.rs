//! The statements both backends run with the same SQL, built once. A backend says how it binds
//! the values whose column types differ ([`Dialect`]: ids as text or `uuid`, times as epoch
//! milliseconds or `timestamptz`, JSON as text or `jsonb`) and runs the query where it should
//! (the reader pool, the writer, a transaction).

use sqlx::pool::PoolConnection;
use sqlx::query::Query;
use sqlx::{Database, Encode, Executor, IntoArguments, Type};
use uuid::Uuid;

use super::backend::StatusChange;
use super::{IncidentQuery, Result, StoreError};
use crate::domain::{EscalationPolicy, IncidentStatus, NewToken, Timestamp};

/// How a backend binds and reads the values whose column types differ between backends.
pub trait Dialect: Database {
    type Id: for<'q> Encode<'q, Self> + Type<Self> + Send + 'static;
    type Time: for<'q> Encode<'q, Self> + Type<Self> + Send + 'static;
    type Json: for<'q> Encode<'q, Self> + Type<Self> + Send + 'static;

    fn id(id: Uuid) -> Self::Id;
    fn time(at: Timestamp) -> Self::Time;
    fn policy(policy: &EscalationPolicy) -> Result<Self::Json>;

    /// The `n`th (from 1) placeholder of a statement built with many parameters: numbered on
    /// PostgreSQL; anonymous (`?`) on SQLite, whose lookup of numbered ones walks the statement's
    /// list of names, once per parameter (quadratic in a multi-row insert).
    fn placeholder(n: usize) -> String;

    /// What follows a read that locks rows shared against a transition's `for update`:
    /// `for key share`, or nothing where one writer runs at a time.
    const KEY_SHARE: &'static str;
    /// Locks the rows a `select` reads until commit (`for update`; SQLite's single writer holds
    /// everything already).
    const FOR_UPDATE: &'static str;

    /// What follows the subquery that picks rows to claim, so that concurrent claimers skip the
    /// rows another holds: `for update skip locked`, or nothing where one writer runs at a time.
    const SKIP_LOCKED: &'static str;

    /// A statement that announces, at commit, that a service, policy or integration key changed,
    /// to every instance sharing the database (their caches of where keys route); `None` where
    /// one process serves the database and changes its cache itself.
    const ANNOUNCE_CATALOG_CHANGE: Option<&'static str>;

    fn read_id(row: &Self::Row, column: &str) -> Result<Uuid>;
    fn read_optional_id(row: &Self::Row, column: &str) -> Result<Option<Uuid>>;
    fn read_time(row: &Self::Row, column: &str) -> Result<Option<Timestamp>>;
    fn read_json(row: &Self::Row, column: &str) -> Result<Option<serde_json::Value>>;
}

/// A query ready to run on a backend's executor.
pub(crate) type Statement<'q, D> = Query<'q, D, <D as Database>::Arguments<'q>>;

/// Every incident, by id.
pub(crate) fn incident<'q, D: Dialect>(id: Uuid) -> Statement<'q, D> {
    sqlx::query("select * from incidents where id = $1").bind(D::id(id))
}

/// One page of `GET /incidents`, newest first, one row more than the page to tell whether a
/// next page exists.
pub(crate) fn incidents<'q, D: Dialect>(query: &IncidentQuery) -> Statement<'q, D>
where
    Option<&'static str>: Encode<'q, D> + Type<D>,
    Option<D::Id>: Encode<'q, D> + Type<D>,
    i64: Encode<'q, D> + Type<D>,
{
    sqlx::query(
        "select * from incidents
         where ($1 is null or status = $1) and ($2 is null or id < $2)
             and ($4 is null or service_id = $4)
         order by id desc limit $3",
    )
    .bind(query.status.map(IncidentStatus::as_str))
    .bind(query.before.map(D::id))
    .bind(i64::from(query.page_size()) + 1)
    .bind(query.service.map(D::id))
}

/// The rows `statement` reads about an incident, on one connection after checking that the
/// incident exists: `NotFound` if it does not.
pub(crate) async fn rows_of_incident<'q, D: Dialect>(
    mut conn: PoolConnection<D>,
    incident_id: Uuid,
    statement: Statement<'q, D>,
) -> Result<Vec<D::Row>>
where
    for<'c> &'c mut D::Connection: Executor<'c, Database = D>,
    D::Arguments<'q>: IntoArguments<'q, D>,
{
    sqlx::query("select 1 from incidents where id = $1")
        .bind(D::id(incident_id))
        .fetch_optional(&mut *conn)
        .await?
        .ok_or(StoreError::NotFound)?;
    Ok(statement.fetch_all(&mut *conn).await?)
}

pub(crate) fn escalations_of<'q, D: Dialect>(incident_id: Uuid) -> Statement<'q, D> {
    sqlx::query(
        "select * from escalations where incident_id = $1 order by escalation_level, created_at",
    )
    .bind(D::id(incident_id))
}

pub(crate) fn timeline_of<'q, D: Dialect>(incident_id: Uuid) -> Statement<'q, D> {
    sqlx::query("select * from timeline where incident_id = $1 order by seq")
        .bind(D::id(incident_id))
}

/// This deployment's id: the one row of `installation`, written by the migration that created it.
pub(crate) fn installation<'q, D: Dialect>() -> Statement<'q, D> {
    sqlx::query("select id from installation")
}

pub(crate) fn create_token<'q, D: Dialect>(token: &NewToken) -> Statement<'q, D>
where
    String: Encode<'q, D> + Type<D>,
    &'static str: Encode<'q, D> + Type<D>,
    Option<D::Id>: Encode<'q, D> + Type<D>,
{
    sqlx::query(
        "insert into tokens (id, name, role, secret_hash, created_at, user_id)
         values ($1, $2, $3, $4, $5, $6) returning *",
    )
    .bind(D::id(Uuid::now_v7()))
    .bind(token.name.clone())
    .bind(token.role.as_str())
    .bind(token.secret_hash.clone())
    .bind(D::time(token.created_at))
    .bind(token.user_id.map(D::id))
}

pub(crate) fn token_by_hash<'q, D: Dialect>(secret_hash: &str) -> Statement<'q, D>
where
    String: Encode<'q, D> + Type<D>,
{
    sqlx::query("select * from tokens where secret_hash = $1").bind(secret_hash.to_owned())
}

/// The compare-and-set of a transition: see [`super::backend::WriteTx::change_status`].
pub(crate) fn change_status<'q, D: Dialect>(change: &StatusChange<'_>) -> Result<Statement<'q, D>>
where
    &'static str: Encode<'q, D> + Type<D>,
    Option<String>: Encode<'q, D> + Type<D>,
    Option<D::Time>: Encode<'q, D> + Type<D>,
    Option<D::Json>: Encode<'q, D> + Type<D>,
{
    let stamp = |status| change.stamp(status).map(D::time);
    let policy = change.policy.map(D::policy).transpose()?;
    Ok(sqlx::query(
        "update incidents set status = $1, updated_at = $2,
             acknowledged_at = coalesce($3, acknowledged_at),
             resolved_at = coalesce($4, resolved_at),
             cancelled_at = coalesce($5, cancelled_at),
             resolution_note = coalesce($6, resolution_note),
             escalation_policy = coalesce($7, escalation_policy)
         where id = $8 and status = $9
         returning *",
    )
    .bind(change.transition.to.as_str())
    .bind(D::time(change.at))
    .bind(stamp(IncidentStatus::Acknowledged))
    .bind(stamp(IncidentStatus::Resolved))
    .bind(stamp(IncidentStatus::Cancelled))
    .bind(change.resolution_note.map(str::to_owned))
    .bind(policy)
    .bind(D::id(change.incident_id))
    .bind(change.transition.from.as_str()))
}

/// See [`super::backend::WriteTx::cancel_pending`].
pub(crate) fn cancel_pending<'q, D: Dialect>(incident_id: Uuid, at: Timestamp) -> Statement<'q, D> {
    sqlx::query(
        "update escalations set status = 'CANCELLED', cancelled_at = $1
         where incident_id = $2 and status = 'PENDING'
         returning *",
    )
    .bind(D::time(at))
    .bind(D::id(incident_id))
}

/// Refuses to revoke token `id` if it is the last live admin token. The live admin tokens are
/// held until the caller's transaction ends (PostgreSQL: `for update`; SQLite: its single
/// writer), so two revocations at once cannot each leave the other as the last and revoke both.
pub(crate) async fn keep_an_admin<D: Dialect>(conn: &mut D::Connection, id: Uuid) -> Result<()>
where
    for<'c> &'c mut D::Connection: Executor<'c, Database = D>,
    for<'q> D::Arguments<'q>: IntoArguments<'q, D>,
{
    let admins = sqlx::query(&format!(
        "select id from tokens where role = 'admin' and revoked_at is null {}",
        D::FOR_UPDATE
    ))
    .fetch_all(&mut *conn)
    .await?;
    let admins = admins
        .iter()
        .map(|row| D::read_id(row, "id"))
        .collect::<Result<Vec<Uuid>>>()?;
    if admins == [id] {
        return Err(StoreError::Refused(format!(
            "token {id} is the last active admin token; create another admin token before \
             revoking this one"
        )));
    }
    Ok(())
}
