//! Services, escalation policies kept as data, and integration keys, written **once** for every
//! backend (as [`super::shared`] is): the SQL is the same on both; a backend says where its pools
//! are and how values bind.

use std::sync::Arc;

use async_trait::async_trait;
use sqlx::{Database, Encode, Executor, IntoArguments, Type};
use uuid::Uuid;

use super::rows::{self, Columns};
use super::shared::Pools;
use super::statements::Dialect;
use super::{Catalog, Result, Store, StoreError};
use crate::domain::{
    EscalationPolicy, EventService, Heartbeat, HeartbeatChange, Incident, IntegrationKey,
    PolicyRecord, Service, Timestamp, TokenSecret,
};

/// The policy `service`'s incidents escalate under: its own, else `default` (the configured one).
pub async fn policy_of(
    store: &dyn Store,
    service: &Service,
    default: &Arc<EscalationPolicy>,
) -> Result<Arc<EscalationPolicy>> {
    match service.escalation_policy_id {
        Some(id) => Ok(Arc::new(store.policy(id).await?.levels)),
        None => Ok(default.clone()),
    }
}

/// What an event for `service` carries into the store: the service, and, when the service
/// escalates automatically, the policy an incident it opens escalates under at once.
pub async fn event_service(
    store: &dyn Store,
    service: &Service,
    default: &Arc<EscalationPolicy>,
) -> Result<EventService> {
    let escalate = if service.auto_escalate {
        Some(policy_of(store, service, default).await?)
    } else {
        None
    };
    Ok(EventService {
        id: service.id,
        escalate,
    })
}

/// Announces, on a backend that several instances share, that a service, policy or integration
/// key changed: at `tx`'s commit, every instance forgets where integration keys route.
async fn announce_catalog_change<D: Dialect>(tx: &mut sqlx::Transaction<'static, D>) -> Result<()>
where
    for<'c> &'c mut D::Connection: Executor<'c, Database = D>,
    for<'q> D::Arguments<'q>: IntoArguments<'q, D>,
{
    if let Some(announce) = D::ANNOUNCE_CATALOG_CHANGE {
        sqlx::query(announce).execute(&mut **tx).await?;
    }
    Ok(())
}

#[async_trait]
impl<B> Catalog for B
where
    B: Pools,
    for<'c> &'c mut <B::Db as Database>::Connection: Executor<'c, Database = B::Db>,
    for<'q> <B::Db as Database>::Arguments<'q>: IntoArguments<'q, B::Db>,
    for<'q> String: Encode<'q, B::Db> + Type<B::Db>,
    for<'q> Option<<B::Db as Dialect>::Id>: Encode<'q, B::Db> + Type<B::Db>,
    for<'q> Option<<B::Db as Dialect>::Time>: Encode<'q, B::Db> + Type<B::Db>,
    for<'q> i64: Encode<'q, B::Db> + Type<B::Db>,
    for<'q> bool: Encode<'q, B::Db> + Type<B::Db>,
    <B::Db as Database>::Row: Columns,
{
    async fn create_policy(&self, policy: &PolicyRecord) -> Result<PolicyRecord> {
        let mut conn = self.writer().acquire().await?;
        let row = sqlx::query(
            "insert into escalation_policies (id, name, repeat, levels, created_at, updated_at)
             values ($1, $2, $3, $4, $5, $6) returning *",
        )
        .bind(B::Db::id(policy.id))
        .bind(policy.name.clone())
        .bind(i64::from(policy.levels.repeat()))
        .bind(B::Db::policy(&policy.levels)?)
        .bind(B::Db::time(policy.created_at))
        .bind(B::Db::time(policy.updated_at))
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| StoreError::from(e).duplicate("a policy with this name already exists"))?;
        rows::policy_record(&row)
    }

    async fn replace_policy(&self, policy: &PolicyRecord) -> Result<PolicyRecord> {
        let mut tx = self.writer().begin().await?;
        let row = sqlx::query(
            "update escalation_policies set name = $1, repeat = $2, levels = $3, updated_at = $4
             where id = $5 returning *",
        )
        .bind(policy.name.clone())
        .bind(i64::from(policy.levels.repeat()))
        .bind(B::Db::policy(&policy.levels)?)
        .bind(B::Db::time(policy.updated_at))
        .bind(B::Db::id(policy.id))
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| StoreError::from(e).duplicate("a policy with this name already exists"))?
        .ok_or(StoreError::NotFound)?;
        announce_catalog_change::<B::Db>(&mut tx).await?;
        tx.commit().await?;
        rows::policy_record(&row)
    }

    async fn policies(&self) -> Result<Vec<PolicyRecord>> {
        let mut conn = self.reader().acquire().await?;
        let found = sqlx::query("select * from escalation_policies order by name")
            .fetch_all(&mut *conn)
            .await?;
        found.iter().map(rows::policy_record).collect()
    }

    async fn policy(&self, id: Uuid) -> Result<PolicyRecord> {
        let mut conn = self.reader().acquire().await?;
        let row = sqlx::query("select * from escalation_policies where id = $1")
            .bind(B::Db::id(id))
            .fetch_optional(&mut *conn)
            .await?
            .ok_or(StoreError::NotFound)?;
        rows::policy_record(&row)
    }

    async fn create_service(&self, service: &Service) -> Result<Service> {
        let mut conn = self.writer().acquire().await?;
        let row = sqlx::query(
            "insert into services (id, name, escalation_policy_id, auto_escalate, created_at, updated_at)
             select $1, $2, $3, $4, $5, $6
             where $3 is null or exists (select 1 from escalation_policies where id = $3)
             returning *",
        )
        .bind(B::Db::id(service.id))
        .bind(service.name.clone())
        .bind(service.escalation_policy_id.map(B::Db::id))
        .bind(service.auto_escalate)
        .bind(B::Db::time(service.created_at))
        .bind(B::Db::time(service.updated_at))
        .fetch_optional(&mut *conn)
        .await
        .map_err(|e| StoreError::from(e).duplicate("a service with this name already exists"))?
        .ok_or(StoreError::NotFound)?;
        rows::service(&row)
    }

    async fn update_service(&self, service: &Service) -> Result<Service> {
        let mut tx = self.writer().begin().await?;
        let row = sqlx::query(
            "update services set name = $1, escalation_policy_id = $2, auto_escalate = $3,
                 updated_at = $4
             where id = $5
                 and ($2 is null or exists (select 1 from escalation_policies where id = $2))
             returning *",
        )
        .bind(service.name.clone())
        .bind(service.escalation_policy_id.map(B::Db::id))
        .bind(service.auto_escalate)
        .bind(B::Db::time(service.updated_at))
        .bind(B::Db::id(service.id))
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| StoreError::from(e).duplicate("a service with this name already exists"))?
        .ok_or(StoreError::NotFound)?;
        announce_catalog_change::<B::Db>(&mut tx).await?;
        tx.commit().await?;
        rows::service(&row)
    }

    async fn services(&self) -> Result<Vec<Service>> {
        let mut conn = self.reader().acquire().await?;
        let found = sqlx::query("select * from services order by name")
            .fetch_all(&mut *conn)
            .await?;
        found.iter().map(rows::service).collect()
    }

    async fn service(&self, id: Uuid) -> Result<Service> {
        let mut conn = self.reader().acquire().await?;
        let row = sqlx::query("select * from services where id = $1")
            .bind(B::Db::id(id))
            .fetch_optional(&mut *conn)
            .await?
            .ok_or(StoreError::NotFound)?;
        rows::service(&row)
    }

    async fn create_integration_key(
        &self,
        service_id: Uuid,
        name: &str,
        secret: &TokenSecret,
        at: Timestamp,
    ) -> Result<IntegrationKey> {
        let mut conn = self.writer().acquire().await?;
        let row = sqlx::query(
            "insert into integration_keys (id, service_id, name, key_hash, created_at)
             select $1, $2, $3, $4, $5
             where exists (select 1 from services where id = $2)
             returning *",
        )
        .bind(B::Db::id(Uuid::now_v7()))
        .bind(B::Db::id(service_id))
        .bind(name.to_owned())
        .bind(secret.hash())
        .bind(B::Db::time(at))
        .fetch_optional(&mut *conn)
        .await?
        .ok_or(StoreError::NotFound)?;
        rows::integration_key(&row)
    }

    async fn integration_keys(&self, service_id: Uuid) -> Result<Vec<IntegrationKey>> {
        let mut conn = self.reader().acquire().await?;
        let found = sqlx::query("select * from integration_keys where service_id = $1 order by id")
            .bind(B::Db::id(service_id))
            .fetch_all(&mut *conn)
            .await?;
        found.iter().map(rows::integration_key).collect()
    }

    async fn revoke_integration_key(
        &self,
        service_id: Uuid,
        id: Uuid,
        at: Timestamp,
    ) -> Result<IntegrationKey> {
        let mut tx = self.writer().begin().await?;
        let row = sqlx::query(
            "update integration_keys set revoked_at = coalesce(revoked_at, $1)
             where id = $2 and service_id = $3 returning *",
        )
        .bind(B::Db::time(at))
        .bind(B::Db::id(id))
        .bind(B::Db::id(service_id))
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound)?;
        announce_catalog_change::<B::Db>(&mut tx).await?;
        tx.commit().await?;
        rows::integration_key(&row)
    }

    async fn service_by_key(&self, secret: &TokenSecret) -> Result<Option<Service>> {
        let mut conn = self.reader().acquire().await?;
        let row = sqlx::query(
            "select s.* from services s join integration_keys k on k.service_id = s.id
             where k.key_hash = $1 and k.revoked_at is null",
        )
        .bind(secret.hash())
        .fetch_optional(&mut *conn)
        .await?;
        row.as_ref().map(rows::service).transpose()
    }

    async fn create_heartbeat(
        &self,
        heartbeat: &Heartbeat,
        secret: &TokenSecret,
    ) -> Result<Heartbeat> {
        let mut conn = self.writer().acquire().await?;
        let row = sqlx::query(
            "insert into heartbeats (id, service_id, name, interval_ms, key_hash, created_at)
             select $1, $2, $3, $4, $5, $6
             where exists (select 1 from services where id = $2)
             returning *",
        )
        .bind(B::Db::id(heartbeat.id))
        .bind(B::Db::id(heartbeat.service_id))
        .bind(heartbeat.name.clone())
        .bind(i64::try_from(heartbeat.interval.as_millis()).unwrap_or(i64::MAX))
        .bind(secret.hash())
        .bind(B::Db::time(heartbeat.created_at))
        .fetch_optional(&mut *conn)
        .await?
        .ok_or(StoreError::NotFound)?;
        rows::heartbeat(&row)
    }

    async fn heartbeats(&self, service_id: Uuid) -> Result<Vec<Heartbeat>> {
        let mut conn = self.reader().acquire().await?;
        let found = sqlx::query(
            "select * from heartbeats where service_id = $1 and retired_at is null order by id",
        )
        .bind(B::Db::id(service_id))
        .fetch_all(&mut *conn)
        .await?;
        found.iter().map(rows::heartbeat).collect()
    }

    async fn change_heartbeat(
        &self,
        service_id: Uuid,
        id: Uuid,
        change: &HeartbeatChange,
    ) -> Result<Heartbeat> {
        let mut tx = self.writer().begin().await?;
        let row = sqlx::query(&format!(
            "select * from heartbeats where id = $1 and service_id = $2 and retired_at is null {}",
            B::Db::FOR_UPDATE
        ))
        .bind(B::Db::id(id))
        .bind(B::Db::id(service_id))
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound)?;
        let changed = rows::heartbeat(&row)?.changed(change);
        let row = sqlx::query(
            "update heartbeats set name = $1, interval_ms = $2, due_at = $3 where id = $4
             returning *",
        )
        .bind(changed.name.clone())
        .bind(i64::try_from(changed.interval.as_millis()).unwrap_or(i64::MAX))
        .bind(changed.due_at.map(B::Db::time))
        .bind(B::Db::id(id))
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        rows::heartbeat(&row)
    }

    async fn retire_heartbeat(
        &self,
        service_id: Uuid,
        id: Uuid,
        at: Timestamp,
    ) -> Result<Heartbeat> {
        let mut conn = self.writer().acquire().await?;
        let row = sqlx::query(
            "update heartbeats set retired_at = $1
             where id = $2 and service_id = $3 and retired_at is null
             returning *",
        )
        .bind(B::Db::time(at))
        .bind(B::Db::id(id))
        .bind(B::Db::id(service_id))
        .fetch_optional(&mut *conn)
        .await?
        .ok_or(StoreError::NotFound)?;
        rows::heartbeat(&row)
    }

    async fn ping_heartbeat(
        &self,
        secret: &TokenSecret,
        at: Timestamp,
    ) -> Result<Option<Heartbeat>> {
        let mut tx = self.writer().begin().await?;
        let row = sqlx::query(&format!(
            "select * from heartbeats where key_hash = $1 and retired_at is null {}",
            B::Db::FOR_UPDATE
        ))
        .bind(secret.hash())
        .fetch_optional(&mut *tx)
        .await?;
        let Some(before) = row.as_ref().map(rows::heartbeat).transpose()? else {
            return Ok(None);
        };
        sqlx::query(
            "update heartbeats set last_ping_at = $1, due_at = $2, incident_id = null
             where id = $3",
        )
        .bind(B::Db::time(at))
        .bind(B::Db::time(at.after(before.interval)))
        .bind(B::Db::id(before.id))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(before))
    }

    async fn missed_heartbeats(&self, now: Timestamp) -> Result<Vec<Heartbeat>> {
        let mut conn = self.reader().acquire().await?;
        let found = sqlx::query(
            "select * from heartbeats
             where due_at <= $1 and incident_id is null and retired_at is null
             order by due_at",
        )
        .bind(B::Db::time(now))
        .fetch_all(&mut *conn)
        .await?;
        found.iter().map(rows::heartbeat).collect()
    }

    async fn note_missed(&self, id: Uuid, incident_id: Uuid, now: Timestamp) -> Result<bool> {
        let mut conn = self.writer().acquire().await?;
        let noted = sqlx::query(
            "update heartbeats set incident_id = $1
             where id = $2 and incident_id is null and due_at <= $3 and retired_at is null
             returning id",
        )
        .bind(B::Db::id(incident_id))
        .bind(B::Db::id(id))
        .bind(B::Db::time(now))
        .fetch_optional(&mut *conn)
        .await?;
        Ok(noted.is_some())
    }

    async fn live_incident(&self, service_id: Uuid, dedup_key: &str) -> Result<Option<Incident>> {
        let mut conn = self.reader().acquire().await?;
        let sql = format!(
            "select * from incidents where dedup_scope = $1 and dedup_key = $2 and status in {}",
            *super::LIVE_STATUSES_SQL
        );
        let row = sqlx::query(&sql)
            .bind(service_id.to_string())
            .bind(dedup_key.to_owned())
            .fetch_optional(&mut *conn)
            .await?;
        row.as_ref().map(rows::incident).transpose()
    }
}
