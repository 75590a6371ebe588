//! The reads and writes of the tables added after the first two backends were written (users,
//! notifications, used links), written **once** for every backend: the SQL is the same on
//! both, so a backend only says where its pools are ([`Pools`]) and how its transactions reach
//! their connection ([`TxConnection`]); the values bind through its [`Dialect`].
//!
//! Locking: claiming notifications is the one statement that must not let two dispatchers take
//! the same row. It marks the rows it selects in the same statement, and PostgreSQL's subquery
//! takes them `for update skip locked` ([`Dialect::SKIP_LOCKED`]); SQLite's single writer
//! serializes the statement whole.

use std::time::Duration;

use async_trait::async_trait;
use sqlx::{Database, Encode, Executor, IntoArguments, Pool, Transaction, Type};
use uuid::Uuid;

use super::rows::{self, Columns};
use super::schedules::{live_overrides, live_rotations};
use super::statements::Dialect;
use super::{AttemptRecord, Outbox, People, Result, ScheduleLayers, StoreError};
use crate::domain::{
    ContactMethod, ContactType, Directory, Incident, IncidentStatus, Notification,
    NotificationRule, Timestamp, User,
};

/// At most this many notifications go into one multi-row insert.
const NOTIFICATIONS_PER_INSERT: usize = 500;
/// The values of one notification row in that insert.
const NOTIFICATION_COLUMNS: usize = 24;

/// `($1, …, $columns), ($columns+1, …)` in `D`'s placeholders: the values of `rows` rows.
fn placeholders<D: Dialect>(rows: usize, columns: usize) -> String {
    let row = |r: usize| {
        let numbers: Vec<String> = (1..=columns)
            .map(|c| D::placeholder(r * columns + c))
            .collect();
        format!("({})", numbers.join(", "))
    };
    (0..rows).map(row).collect::<Vec<_>>().join(", ")
}

/// A backend's pools: where the statements written here run.
pub trait Pools: Send + Sync + 'static {
    type Db: Dialect;

    /// Writes (SQLite's single writer; PostgreSQL's one pool).
    fn writer(&self) -> &Pool<Self::Db>;

    /// Reads that may run beside writes: the writer's pool unless the backend has one for reads.
    fn reader(&self) -> &Pool<Self::Db> {
        self.writer()
    }
}

/// A backend's write transaction, as a connection the statements written here can run on.
pub trait TxConnection: Send {
    type Db: Dialect;

    fn connection(&mut self) -> &mut <Self::Db as Database>::Connection;
}

/// A write transaction of either backend (`Tx<Sqlite>`, `Tx<Postgres>`): each backend implements
/// its own statements on it ([`super::backend::WriteTx`]); those written once run on its
/// connection.
pub struct Tx<D: Database>(pub(super) Transaction<'static, D>);

impl<D: Dialect> TxConnection for Tx<D> {
    type Db = D;

    fn connection(&mut self) -> &mut D::Connection {
        &mut self.0
    }
}

#[async_trait]
impl<B> People for B
where
    B: Pools,
    for<'c> &'c mut <B::Db as Database>::Connection: Executor<'c, Database = B::Db>,
    for<'q> <B::Db as Database>::Arguments<'q>: IntoArguments<'q, B::Db>,
    for<'q> String: Encode<'q, B::Db> + Type<B::Db>,
    for<'q> Option<String>: Encode<'q, B::Db> + Type<B::Db>,
    for<'q> Option<<B::Db as Dialect>::Id>: Encode<'q, B::Db> + Type<B::Db>,
    for<'q> Option<<B::Db as Dialect>::Time>: Encode<'q, B::Db> + Type<B::Db>,
    for<'q> &'q str: Encode<'q, B::Db> + Type<B::Db>,
    for<'q> i64: Encode<'q, B::Db> + Type<B::Db>,
    for<'q> Option<i64>: Encode<'q, B::Db> + Type<B::Db>,
    for<'q> i32: Encode<'q, B::Db> + Type<B::Db>,
    for<'q> bool: Encode<'q, B::Db> + Type<B::Db>,
    <B::Db as Database>::Row: Columns,
{
    async fn create_user(&self, user: &User) -> Result<User> {
        let mut tx = self.writer().begin().await?;
        let row = sqlx::query(
            "insert into users (id, handle, name, email, phone, role, time_zone, active, created_at, updated_at)
             values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) returning *",
        )
        .bind(B::Db::id(user.id))
        .bind(user.handle.clone())
        .bind(user.name.clone())
        .bind(user.email.clone())
        .bind(user.phone.clone())
        .bind(user.role.as_str())
        .bind(user.time_zone.clone())
        .bind(user.active)
        .bind(B::Db::time(user.created_at))
        .bind(B::Db::time(user.updated_at))
        .fetch_one(&mut *tx)
        .await
        .map_err(|error| StoreError::from(error).duplicate("a user with this handle already exists"))?;
        // The email and phone given at creation become the user's first contact methods.
        for method in ContactMethod::firsts(user) {
            insert_contact_method::<B::Db>(&mut tx, &method).await?;
        }
        tx.commit().await?;
        rows::user(&row)
    }

    async fn add_contact_method(&self, method: &ContactMethod) -> Result<ContactMethod> {
        let mut conn = self.writer().acquire().await?;
        insert_contact_method::<B::Db>(&mut conn, method).await
    }

    async fn contact_methods(&self, user_id: Uuid) -> Result<Vec<ContactMethod>> {
        let mut conn = self.reader().acquire().await?;
        let found = sqlx::query(
            "select * from contact_methods where user_id = $1 and disabled_at is null order by id",
        )
        .bind(B::Db::id(user_id))
        .fetch_all(&mut *conn)
        .await?;
        found.iter().map(rows::contact_method).collect()
    }

    async fn add_rule(&self, rule: &NotificationRule) -> Result<NotificationRule> {
        let mut conn = self.writer().acquire().await?;
        let row = sqlx::query(
            "insert into notification_rules (id, user_id, contact_method_id, delay_ms,
                 repeat_every_ms, max_repeats, created_at)
             select $1, $2, $3, $4, $5, $6, $7
             where exists (select 1 from contact_methods
                           where id = $3 and user_id = $2 and disabled_at is null)
             returning *",
        )
        .bind(B::Db::id(rule.id))
        .bind(B::Db::id(rule.user_id))
        .bind(B::Db::id(rule.contact_method_id))
        .bind(millis(rule.delay))
        .bind(rule.repeat_every.map(millis))
        .bind(rule.max_repeats.map(i64::from))
        .bind(B::Db::time(rule.created_at))
        .fetch_optional(&mut *conn)
        .await?
        .ok_or(StoreError::NotFound)?;
        rows::rule(&row)
    }

    async fn rules(&self, user_id: Uuid) -> Result<Vec<NotificationRule>> {
        let mut conn = self.reader().acquire().await?;
        let found = sqlx::query(
            "select * from notification_rules where user_id = $1 and disabled_at is null order by id",
        )
        .bind(B::Db::id(user_id))
        .fetch_all(&mut *conn)
        .await?;
        found.iter().map(rows::rule).collect()
    }

    async fn users(&self) -> Result<Vec<User>> {
        let mut conn = self.reader().acquire().await?;
        let found = sqlx::query("select * from users order by handle")
            .fetch_all(&mut *conn)
            .await?;
        found.iter().map(rows::user).collect()
    }

    async fn users_by_handle(&self, handles: &[String]) -> Result<Vec<User>> {
        let rows = rows_where_in(self.reader(), "users", "handle", handles.to_vec()).await?;
        rows.iter().map(rows::user).collect()
    }

    async fn user(&self, id: Uuid) -> Result<User> {
        let mut conn = self.reader().acquire().await?;
        let row = sqlx::query("select * from users where id = $1")
            .bind(B::Db::id(id))
            .fetch_optional(&mut *conn)
            .await?
            .ok_or(StoreError::NotFound)?;
        rows::user(&row)
    }

    async fn update_user(&self, user: &User) -> Result<Option<User>> {
        let mut tx = self.writer().begin().await?;
        let before = sqlx::query("select * from users where id = $1 and version = $2")
            .bind(B::Db::id(user.id))
            .bind(user.version)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(before) = before.as_ref().map(rows::user).transpose()? else {
            return Ok(None);
        };
        let row = sqlx::query(
            "update users set name = $1, email = $2, phone = $3, role = $4, time_zone = $5,
                 active = $6, updated_at = $7, version = version + 1
             where id = $8 and version = $9 returning *",
        )
        .bind(user.name.clone())
        .bind(user.email.clone())
        .bind(user.phone.clone())
        .bind(user.role.as_str())
        .bind(user.time_zone.clone())
        .bind(user.active)
        .bind(B::Db::time(user.updated_at))
        .bind(B::Db::id(user.id))
        .bind(user.version)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(stored) = row.as_ref().map(rows::user).transpose()? else {
            return Ok(None);
        };
        // The email and phone are the user's first contact methods: a new one replaces the old
        // (which is retired, with the rules through it), so pages follow the change.
        let at = user.updated_at;
        for (kind, old, new) in [
            (ContactType::Email, Some(&before.email), Some(&stored.email)),
            (
                ContactType::Sms,
                before.phone.as_ref(),
                stored.phone.as_ref(),
            ),
            (
                ContactType::Voice,
                before.phone.as_ref(),
                stored.phone.as_ref(),
            ),
        ] {
            if old == new {
                continue;
            }
            if let Some(old) = old {
                let retired = sqlx::query(
                    "update contact_methods set disabled_at = $1
                     where user_id = $2 and type = $3 and address = $4 and disabled_at is null
                     returning id",
                )
                .bind(B::Db::time(at))
                .bind(B::Db::id(user.id))
                .bind(kind.as_str())
                .bind(old.clone())
                .fetch_optional(&mut *tx)
                .await?;
                if let Some(retired) = retired {
                    retire_rules_through::<B::Db>(&mut tx, retired.uuid("id")?, at).await?;
                }
            }
            if let Some(new) = new {
                sqlx::query(
                    "insert into contact_methods (id, user_id, type, address, created_at)
                     values ($1, $2, $3, $4, $5)
                     on conflict (user_id, type, address) do update set disabled_at = null",
                )
                .bind(B::Db::id(Uuid::now_v7()))
                .bind(B::Db::id(user.id))
                .bind(kind.as_str())
                .bind(new.clone())
                .bind(B::Db::time(at))
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(Some(stored))
    }

    async fn retire_contact_method(&self, user_id: Uuid, id: Uuid, at: Timestamp) -> Result<()> {
        let mut tx = self.writer().begin().await?;
        retire::<B::Db>(&mut tx, "contact_methods", user_id, id, at).await?;
        retire_rules_through::<B::Db>(&mut tx, id, at).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn retire_rule(&self, user_id: Uuid, id: Uuid, at: Timestamp) -> Result<()> {
        let mut conn = self.writer().acquire().await?;
        retire::<B::Db>(&mut conn, "notification_rules", user_id, id, at).await
    }
}

#[async_trait]
impl<B> Outbox for B
where
    B: Pools,
    for<'c> &'c mut <B::Db as Database>::Connection: Executor<'c, Database = B::Db>,
    for<'q> <B::Db as Database>::Arguments<'q>: IntoArguments<'q, B::Db>,
    for<'q> String: Encode<'q, B::Db> + Type<B::Db>,
    for<'q> Option<String>: Encode<'q, B::Db> + Type<B::Db>,
    for<'q> Option<<B::Db as Dialect>::Id>: Encode<'q, B::Db> + Type<B::Db>,
    for<'q> Option<<B::Db as Dialect>::Time>: Encode<'q, B::Db> + Type<B::Db>,
    for<'q> &'q str: Encode<'q, B::Db> + Type<B::Db>,
    for<'q> i64: Encode<'q, B::Db> + Type<B::Db>,
    for<'q> bool: Encode<'q, B::Db> + Type<B::Db>,
    <B::Db as Database>::Row: Columns,
{
    async fn incidents_by_id(&self, ids: &[Uuid]) -> Result<Vec<Incident>> {
        let rows = rows_by_id(self.reader(), "incidents", ids).await?;
        rows.iter().map(rows::incident).collect()
    }

    async fn users_by_id(&self, ids: &[Uuid]) -> Result<Vec<User>> {
        let rows = rows_by_id(self.reader(), "users", ids).await?;
        rows.iter().map(rows::user).collect()
    }

    async fn notification(&self, id: Uuid) -> Result<Notification> {
        let mut conn = self.reader().acquire().await?;
        let row = sqlx::query("select * from notifications where id = $1")
            .bind(B::Db::id(id))
            .fetch_optional(&mut *conn)
            .await?
            .ok_or(StoreError::NotFound)?;
        rows::notification(&row)
    }

    async fn notifications_of(&self, incident_id: Uuid) -> Result<Vec<Notification>> {
        let mut conn = self.reader().acquire().await?;
        sqlx::query("select 1 from incidents where id = $1")
            .bind(B::Db::id(incident_id))
            .fetch_optional(&mut *conn)
            .await?
            .ok_or(StoreError::NotFound)?;
        let found = sqlx::query("select * from notifications where incident_id = $1 order by id")
            .bind(B::Db::id(incident_id))
            .fetch_all(&mut *conn)
            .await?;
        found.iter().map(rows::notification).collect()
    }

    async fn inbox(
        &self,
        user_id: Uuid,
        unread_only: bool,
        limit: u32,
    ) -> Result<Vec<Notification>> {
        let mut conn = self.reader().acquire().await?;
        let found = sqlx::query(
            "select * from notifications
             where user_id = $1 and channel = 'in_app' and ($2 = false or read_at is null)
             order by id desc limit $3",
        )
        .bind(B::Db::id(user_id))
        .bind(unread_only)
        .bind(i64::from(limit))
        .fetch_all(&mut *conn)
        .await?;
        found.iter().map(rows::notification).collect()
    }

    async fn mark_read(&self, id: Uuid, user_id: Uuid, at: Timestamp) -> Result<Notification> {
        let mut conn = self.writer().acquire().await?;
        let row = sqlx::query(
            "update notifications set read_at = coalesce(read_at, $1)
             where id = $2 and user_id = $3 and channel = 'in_app' returning *",
        )
        .bind(B::Db::time(at))
        .bind(B::Db::id(id))
        .bind(B::Db::id(user_id))
        .fetch_optional(&mut *conn)
        .await?
        .ok_or(StoreError::NotFound)?;
        rows::notification(&row)
    }

    async fn claim_notifications(
        &self,
        now: Timestamp,
        lease: Duration,
        limit: u32,
    ) -> Result<Vec<Notification>> {
        let mut conn = self.writer().acquire().await?;
        let claim = format!(
            "update notifications set due_at = $1, attempts = attempts + 1, updated_at = $2
             where id in (
                 select id from notifications
                 where status = 'PENDING' and due_at <= $2
                 order by due_at limit $3 {})
             returning *",
            B::Db::SKIP_LOCKED
        );
        let found = sqlx::query(&claim)
            .bind(B::Db::time(now.after(lease)))
            .bind(B::Db::time(now))
            .bind(i64::from(limit))
            .fetch_all(&mut *conn)
            .await?;
        let mut claimed = found
            .iter()
            .map(rows::notification)
            .collect::<Result<Vec<_>>>()?;
        claimed.sort_by_key(|notification| notification.id);
        Ok(claimed)
    }

    async fn link_key(&self) -> Result<String> {
        let mut conn = self.reader().acquire().await?;
        let row = sqlx::query("select link_key from installation")
            .fetch_one(&mut *conn)
            .await?;
        row.text("link_key")
    }

    async fn next_notification_due(&self) -> Result<Option<Timestamp>> {
        let mut conn = self.reader().acquire().await?;
        let row = sqlx::query(
            "select due_at from notifications where status = 'PENDING' order by due_at limit 1",
        )
        .fetch_optional(&mut *conn)
        .await?;
        row.map(|row| row.timestamp("due_at")).transpose()
    }

    async fn message_of(&self, id: Uuid) -> Result<Vec<Notification>> {
        let mut conn = self.reader().acquire().await?;
        let found = sqlx::query(
            "select * from notifications where id = $1 or message_key = (
                 select message_key from notifications where id = $1)
             order by id",
        )
        .bind(B::Db::id(id))
        .fetch_all(&mut *conn)
        .await?;
        if found.is_empty() {
            return Err(StoreError::NotFound);
        }
        found.iter().map(rows::notification).collect()
    }

    async fn replied_to(&self, address: &str, code: &str) -> Result<Vec<Notification>> {
        let mut conn = self.reader().acquire().await?;
        let found = sqlx::query(
            "select * from notifications where message_key = (
                 select message_key from notifications
                 where address = $1 and reply_code = $2 and channel in ('sms', 'voice')
                     and sent_at is not null
                 order by sent_at desc, id desc limit 1)
             order by id",
        )
        .bind(address.to_owned())
        .bind(code.to_owned())
        .fetch_all(&mut *conn)
        .await?;
        found.iter().map(rows::notification).collect()
    }
}

/// Retires `user_id`'s row `id` of `table` (`contact_methods`, `notification_rules`) at `at`,
/// once: `NotFound` if it is not theirs or retired already.
async fn retire<D>(
    conn: &mut D::Connection,
    table: &str,
    user_id: Uuid,
    id: Uuid,
    at: Timestamp,
) -> Result<()>
where
    D: Dialect,
    for<'c> &'c mut D::Connection: Executor<'c, Database = D>,
    for<'q> D::Arguments<'q>: IntoArguments<'q, D>,
{
    let sql = format!(
        "update {table} set disabled_at = $1
         where id = $2 and user_id = $3 and disabled_at is null returning id"
    );
    sqlx::query(&sql)
        .bind(D::time(at))
        .bind(D::id(id))
        .bind(D::id(user_id))
        .fetch_optional(conn)
        .await?
        .ok_or(StoreError::NotFound)?;
    Ok(())
}

/// Retires the rules that go through the contact method `method_id`.
async fn retire_rules_through<D>(
    conn: &mut D::Connection,
    method_id: Uuid,
    at: Timestamp,
) -> Result<()>
where
    D: Dialect,
    for<'c> &'c mut D::Connection: Executor<'c, Database = D>,
    for<'q> D::Arguments<'q>: IntoArguments<'q, D>,
{
    sqlx::query(
        "update notification_rules set disabled_at = $1
         where contact_method_id = $2 and disabled_at is null",
    )
    .bind(D::time(at))
    .bind(D::id(method_id))
    .execute(conn)
    .await?;
    Ok(())
}

/// A duration as the milliseconds stored for it.
fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// Inserts a contact method on `conn` (a pool's connection or a transaction's).
async fn insert_contact_method<D>(
    conn: &mut D::Connection,
    method: &ContactMethod,
) -> Result<ContactMethod>
where
    D: Dialect,
    for<'c> &'c mut D::Connection: Executor<'c, Database = D>,
    for<'q> D::Arguments<'q>: IntoArguments<'q, D>,
    for<'q> String: Encode<'q, D> + Type<D>,
    for<'q> &'q str: Encode<'q, D> + Type<D>,
    D::Row: Columns,
{
    // A retired method with the same address comes back (its id kept); an enabled one is a
    // duplicate.
    let row = sqlx::query(
        "insert into contact_methods (id, user_id, type, address, created_at)
         values ($1, $2, $3, $4, $5)
         on conflict (user_id, type, address) do update set disabled_at = null
             where contact_methods.disabled_at is not null
         returning *",
    )
    .bind(D::id(method.id))
    .bind(D::id(method.user_id))
    .bind(method.kind.as_str())
    .bind(method.address.clone())
    .bind(D::time(method.created_at))
    .fetch_optional(conn)
    .await?
    .ok_or_else(|| StoreError::Duplicate("the user has this contact method already".into()))?;
    rows::contact_method(&row)
}

/// The placeholders of `count` ids, numbered from `first`: what goes in `id in (…)`.
fn id_list<D: Dialect>(first: usize, count: usize) -> String {
    (first..first + count)
        .map(D::placeholder)
        .collect::<Vec<_>>()
        .join(", ")
}

/// At most this many values go into one `in (…)` read.
const IDS_PER_READ: usize = 500;

/// The rows of `table` with these ids, read in statements of at most [`IDS_PER_READ`] ids.
async fn rows_by_id<D>(pool: &Pool<D>, table: &str, ids: &[Uuid]) -> Result<Vec<D::Row>>
where
    D: Dialect,
    for<'c> &'c mut D::Connection: Executor<'c, Database = D>,
    for<'q> D::Arguments<'q>: IntoArguments<'q, D>,
{
    let ids: Vec<D::Id> = ids.iter().map(|id| D::id(*id)).collect();
    rows_where_in(pool, table, "id", ids).await
}

/// The rows of `table` whose `column` is one of `values`, read in statements of at most
/// [`IDS_PER_READ`] values.
async fn rows_where_in<D, V>(
    pool: &Pool<D>,
    table: &str,
    column: &str,
    values: Vec<V>,
) -> Result<Vec<D::Row>>
where
    D: Dialect,
    V: for<'q> Encode<'q, D> + Type<D> + Send + 'static,
    for<'c> &'c mut D::Connection: Executor<'c, Database = D>,
    for<'q> D::Arguments<'q>: IntoArguments<'q, D>,
{
    let mut conn = pool.acquire().await?;
    read_in(&mut conn, values, |list| {
        format!("select * from {table} where {column} in ({list})")
    })
    .await
}

/// The rows `sql` reads on `conn` for `values`, in statements of at most [`IDS_PER_READ`]
/// values, chunk after chunk: `sql` is given the placeholders of one chunk's `in (…)` list.
async fn read_in<D, V>(
    conn: &mut D::Connection,
    mut values: Vec<V>,
    sql: impl Fn(&str) -> String + Send,
) -> Result<Vec<D::Row>>
where
    D: Dialect,
    V: for<'q> Encode<'q, D> + Type<D> + Send + 'static,
    for<'c> &'c mut D::Connection: Executor<'c, Database = D>,
    for<'q> D::Arguments<'q>: IntoArguments<'q, D>,
{
    let mut found = Vec::with_capacity(values.len());
    while !values.is_empty() {
        let chunk: Vec<V> = values.drain(..values.len().min(IDS_PER_READ)).collect();
        let sql = sql(&id_list::<D>(1, chunk.len()));
        let mut read = sqlx::query(&sql);
        for value in chunk {
            read = read.bind(value);
        }
        found.extend(read.fetch_all(&mut *conn).await?);
    }
    Ok(found)
}

/// The outbox's statements inside a transaction that carries a rule (executing a level,
/// stopping an incident, recording an attempt): see [`super::changes`].
#[async_trait]
pub trait OutboxTx: Send {
    /// Every active user, with their enabled contact methods and rules: for resolving a level's
    /// targets when it executes.
    async fn directory(&mut self) -> Result<Directory>;

    /// The schedules with these names, each with its live rotations and the live overrides in
    /// force at `at`: for finding who is on call when a level that names them executes.
    async fn schedules_named(
        &mut self,
        names: &[&str],
        at: Timestamp,
    ) -> Result<Vec<ScheduleLayers>>;

    /// Inserts notifications; one that already exists for its (escalation, recipient, channel,
    /// route) is left as it is. Returns the ids inserted.
    async fn insert_notifications(&mut self, notifications: &[Notification]) -> Result<Vec<Uuid>>;

    /// Marks the incident's `PENDING` notifications `CANCELLED` at `at`; how many.
    async fn cancel_notifications(&mut self, incident_id: Uuid, at: Timestamp) -> Result<u64>;

    /// Applies an attempt's outcome to a notification still `PENDING` (or `CANCELLED` while the
    /// message went out: it was sent all the same), and returns it; `None` if it had moved on.
    async fn record_outcome(&mut self, record: &AttemptRecord) -> Result<Option<Notification>>;

    /// The notifications a provider's message carried; locked until commit if `lock` (after
    /// their incidents, in the order transitions take them).
    async fn carried_by(
        &mut self,
        provider_message_id: &str,
        lock: bool,
    ) -> Result<Vec<Notification>>;

    /// Stores what a receipt did to a notification.
    async fn apply_receipt(&mut self, notification: &Notification) -> Result<()>;

    /// Marks a link used, once: `false` if it was used before.
    async fn use_link(&mut self, link_id: &str, incident_id: Uuid, at: Timestamp) -> Result<bool>;

    /// Locks these incidents against transitions until commit, in the order given (PostgreSQL:
    /// `for key share`, which a transition's `for update` waits for; SQLite: the single writer).
    /// Returns each one's status, read under the lock.
    async fn share_incidents(&mut self, ids: &[Uuid]) -> Result<Vec<(Uuid, IncidentStatus)>>;

    /// Holds `recipient`'s window on `channel` until commit: a concurrent transaction wanting it
    /// waits (PostgreSQL: the row lock its upsert takes; SQLite: the single writer).
    async fn lock_window(&mut self, channel: &str, recipient: &str, at: Timestamp) -> Result<()>;

    /// When each message to `recipient` on `channel` that counts in a window opened at `since`
    /// went out (or was reserved to), oldest first; a digest counts once.
    async fn window(
        &mut self,
        channel: &str,
        recipient: &str,
        since: Timestamp,
    ) -> Result<Vec<Timestamp>>;

    /// Which of `ids` are still `PENDING`, locked until commit: a notification cancelled since it
    /// was claimed (its incident acknowledged meanwhile) is not sent.
    async fn still_pending(&mut self, ids: &[Uuid]) -> Result<Vec<Uuid>>;

    /// Reserves room in the window for the message `key` carrying `ids`: they count from `at`
    /// (`sent_at`), until their outcome is recorded.
    async fn reserve(&mut self, ids: &[Uuid], key: &str, at: Timestamp) -> Result<()>;
}

#[async_trait]
impl<T> OutboxTx for T
where
    T: TxConnection,
    for<'c> &'c mut <T::Db as Database>::Connection: Executor<'c, Database = T::Db>,
    for<'q> <T::Db as Database>::Arguments<'q>: IntoArguments<'q, T::Db>,
    for<'q> String: Encode<'q, T::Db> + Type<T::Db>,
    for<'q> Option<String>: Encode<'q, T::Db> + Type<T::Db>,
    for<'q> Option<<T::Db as Dialect>::Id>: Encode<'q, T::Db> + Type<T::Db>,
    for<'q> Option<<T::Db as Dialect>::Time>: Encode<'q, T::Db> + Type<T::Db>,
    for<'q> &'q str: Encode<'q, T::Db> + Type<T::Db>,
    for<'q> i32: Encode<'q, T::Db> + Type<T::Db>,
    for<'q> bool: Encode<'q, T::Db> + Type<T::Db>,
    <T::Db as Database>::Row: Columns,
{
    async fn directory(&mut self) -> Result<Directory> {
        let users = sqlx::query("select * from users where active = true order by handle")
            .fetch_all(self.connection())
            .await?;
        let methods = sqlx::query(
            "select m.* from contact_methods m join users u on u.id = m.user_id
             where u.active = true and m.disabled_at is null order by m.id",
        )
        .fetch_all(self.connection())
        .await?;
        let rules = sqlx::query(
            "select r.* from notification_rules r join users u on u.id = r.user_id
             where u.active = true and r.disabled_at is null order by r.id",
        )
        .fetch_all(self.connection())
        .await?;
        Ok(Directory {
            users: users.iter().map(rows::user).collect::<Result<_>>()?,
            methods: methods
                .iter()
                .map(rows::contact_method)
                .collect::<Result<_>>()?,
            rules: rules.iter().map(rows::rule).collect::<Result<_>>()?,
            on_call: Default::default(),
        })
    }

    async fn schedules_named(
        &mut self,
        names: &[&str],
        at: Timestamp,
    ) -> Result<Vec<ScheduleLayers>> {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "select * from schedules where name in ({}) order by name",
            id_list::<T::Db>(1, names.len())
        );
        let mut query = sqlx::query(&sql);
        for name in names {
            query = query.bind(name.to_string());
        }
        let found = query.fetch_all(self.connection()).await?;
        let mut layers = Vec::with_capacity(found.len());
        for row in &found {
            let schedule = rows::schedule(row)?;
            let rotations = live_rotations::<T::Db>(self.connection(), schedule.id).await?;
            let until = at.after(Duration::from_millis(1));
            let overrides =
                live_overrides::<T::Db>(self.connection(), schedule.id, Some(at), Some(until))
                    .await?;
            layers.push(ScheduleLayers {
                schedule,
                rotations,
                overrides,
            });
        }
        Ok(layers)
    }

    async fn insert_notifications(&mut self, notifications: &[Notification]) -> Result<Vec<Uuid>> {
        let mut inserted = Vec::with_capacity(notifications.len());
        for chunk in notifications.chunks(NOTIFICATIONS_PER_INSERT) {
            let sql = format!(
                "insert into notifications (id, escalation_id, incident_id, escalation_level,
                     channel, recipient, user_id, status, attempts, last_error, provider_id, held,
                     message_key, due_at, created_at, updated_at, sent_at, read_at, address,
                     contact_method_id, route, provider, provider_index, reply_code)
                 values {}
                 on conflict (escalation_id, recipient, channel, route) do nothing returning id",
                placeholders::<T::Db>(chunk.len(), NOTIFICATION_COLUMNS)
            );
            let mut insert = sqlx::query(&sql);
            for n in chunk {
                insert = insert
                    .bind(T::Db::id(n.id))
                    .bind(T::Db::id(n.escalation_id))
                    .bind(T::Db::id(n.incident_id))
                    .bind(n.escalation_level)
                    .bind(n.channel.as_str())
                    .bind(n.recipient.clone())
                    .bind(n.user_id.map(T::Db::id))
                    .bind(n.status.as_str())
                    .bind(n.attempts)
                    .bind(n.last_error.clone())
                    .bind(n.provider_id.clone())
                    .bind(n.held)
                    .bind(n.message_key.clone())
                    .bind(T::Db::time(n.due_at))
                    .bind(T::Db::time(n.created_at))
                    .bind(T::Db::time(n.updated_at))
                    .bind(n.sent_at.map(T::Db::time))
                    .bind(n.read_at.map(T::Db::time))
                    .bind(n.address.clone())
                    .bind(n.contact_method_id.map(T::Db::id))
                    .bind(n.route.clone())
                    .bind(n.provider.clone())
                    .bind(n.provider_index)
                    .bind(n.reply_code.clone());
            }
            for row in insert.fetch_all(self.connection()).await? {
                inserted.push(row.uuid("id")?);
            }
        }
        Ok(inserted)
    }

    async fn cancel_notifications(&mut self, incident_id: Uuid, at: Timestamp) -> Result<u64> {
        let cancelled = sqlx::query(
            "update notifications set status = 'CANCELLED', updated_at = $1
             where incident_id = $2 and status = 'PENDING' returning id",
        )
        .bind(T::Db::time(at))
        .bind(T::Db::id(incident_id))
        .fetch_all(self.connection())
        .await?;
        Ok(cancelled.len() as u64)
    }

    async fn record_outcome(&mut self, record: &AttemptRecord) -> Result<Option<Notification>> {
        let outcome = &record.outcome;
        let row = sqlx::query(
            "update notifications set status = $1, due_at = $2, last_error = coalesce($3, last_error),
                 provider_id = $4, sent_at = $5, message_key = $6, held = $7, updated_at = $8,
                 attempts = $10, provider = coalesce($11, provider), provider_index = $12,
                 reply_code = coalesce($13, reply_code)
             where id = $9 and (status = 'PENDING' or (status = 'CANCELLED' and $1 = 'SENT'))
             returning *",
        )
        .bind(outcome.status.as_str())
        .bind(T::Db::time(outcome.due_at))
        .bind(outcome.last_error.clone())
        .bind(outcome.provider_id.clone())
        .bind(outcome.sent_at.map(T::Db::time))
        .bind(record.message_key.clone())
        .bind(outcome.held)
        .bind(T::Db::time(record.at))
        .bind(T::Db::id(record.id))
        .bind(record.attempts)
        .bind(outcome.provider.clone())
        .bind(outcome.provider_index)
        .bind(record.reply_code.clone())
        .fetch_optional(self.connection())
        .await?;
        row.as_ref().map(rows::notification).transpose()
    }

    async fn share_incidents(&mut self, ids: &[Uuid]) -> Result<Vec<(Uuid, IncidentStatus)>> {
        let ids = ids.iter().map(|id| T::Db::id(*id)).collect();
        let locked = read_in(self.connection(), ids, |list| {
            format!(
                "select id, status from incidents where id in ({list}) order by id {}",
                T::Db::KEY_SHARE
            )
        })
        .await?;
        locked
            .iter()
            .map(|row| {
                Ok((
                    row.uuid("id")?,
                    row.parsed("status", IncidentStatus::parse)?,
                ))
            })
            .collect()
    }

    async fn lock_window(&mut self, channel: &str, recipient: &str, at: Timestamp) -> Result<()> {
        sqlx::query(
            "insert into rate_windows (channel, recipient, touched_at) values ($1, $2, $3)
             on conflict (channel, recipient) do update set touched_at = excluded.touched_at",
        )
        .bind(channel.to_owned())
        .bind(recipient.to_owned())
        .bind(T::Db::time(at))
        .execute(self.connection())
        .await?;
        Ok(())
    }

    async fn window(
        &mut self,
        channel: &str,
        recipient: &str,
        since: Timestamp,
    ) -> Result<Vec<Timestamp>> {
        let found = sqlx::query(
            "select min(sent_at) as sent_at from notifications
             where channel = $1 and coalesce(address, recipient) = $2 and sent_at > $3
             group by message_key order by 1",
        )
        .bind(channel.to_owned())
        .bind(recipient.to_owned())
        .bind(T::Db::time(since))
        .fetch_all(self.connection())
        .await?;
        found.iter().map(|row| row.timestamp("sent_at")).collect()
    }

    async fn still_pending(&mut self, ids: &[Uuid]) -> Result<Vec<Uuid>> {
        let ids = ids.iter().map(|id| T::Db::id(*id)).collect();
        let pending = read_in(self.connection(), ids, |list| {
            format!(
                "select id from notifications where id in ({list}) and status = 'PENDING' order by id {}",
                T::Db::FOR_UPDATE
            )
        })
        .await?;
        pending.iter().map(|row| row.uuid("id")).collect()
    }

    async fn reserve(&mut self, ids: &[Uuid], key: &str, at: Timestamp) -> Result<()> {
        for chunk in ids.chunks(IDS_PER_READ) {
            let sql = format!(
                "update notifications set sent_at = {}, message_key = {} where id in ({})",
                T::Db::placeholder(1),
                T::Db::placeholder(2),
                id_list::<T::Db>(3, chunk.len())
            );
            let mut reserve = sqlx::query(&sql).bind(T::Db::time(at)).bind(key.to_owned());
            for id in chunk {
                reserve = reserve.bind(T::Db::id(*id));
            }
            reserve.execute(self.connection()).await?;
        }
        Ok(())
    }

    async fn carried_by(
        &mut self,
        provider_message_id: &str,
        lock: bool,
    ) -> Result<Vec<Notification>> {
        let sql = format!(
            "select * from notifications where provider_id = $1 order by id {}",
            if lock { T::Db::FOR_UPDATE } else { "" }
        );
        let found = sqlx::query(&sql)
            .bind(provider_message_id.to_owned())
            .fetch_all(self.connection())
            .await?;
        found.iter().map(rows::notification).collect()
    }

    async fn apply_receipt(&mut self, n: &Notification) -> Result<()> {
        sqlx::query(
            "update notifications set status = $1, due_at = $2, last_error = $3, sent_at = $4,
                 held = $5, provider_index = $6, updated_at = $7
             where id = $8",
        )
        .bind(n.status.as_str())
        .bind(T::Db::time(n.due_at))
        .bind(n.last_error.clone())
        .bind(n.sent_at.map(T::Db::time))
        .bind(n.held)
        .bind(n.provider_index)
        .bind(T::Db::time(n.updated_at))
        .bind(T::Db::id(n.id))
        .execute(self.connection())
        .await?;
        Ok(())
    }

    async fn use_link(&mut self, link_id: &str, incident_id: Uuid, at: Timestamp) -> Result<bool> {
        let row = sqlx::query(
            "insert into used_links (id, incident_id, used_at) values ($1, $2, $3)
             on conflict (id) do nothing returning id",
        )
        .bind(link_id.to_owned())
        .bind(T::Db::id(incident_id))
        .bind(T::Db::time(at))
        .fetch_optional(self.connection())
        .await?;
        Ok(row.is_some())
    }
}
