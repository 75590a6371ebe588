//! Rows into records, written once. Plain columns (text, integers) read alike on every backend;
//! ids, times and JSON as the backend's [`Dialect`] stores them (text or `uuid`, epoch
//! milliseconds or `timestamptz`, text or `jsonb`). Every record is then decoded the same way
//! from either.

use sqlx::{ColumnIndex, Decode, Row, Type};
use uuid::Uuid;

use super::backend::Claimed;
use super::statements::Dialect;
use super::{Page, Result, Scheduled, StoreError};
use std::time::Duration;

use crate::domain::schedule::{
    OverrideRecord, RestrictionFields, RotationFields, RotationKind, RotationRecord, ScheduleRecord,
};
use crate::domain::{
    Channel, ContactMethod, ContactType, Escalation, EscalationPolicy, EscalationStatus, Heartbeat,
    Incident, IncidentStatus, IntegrationKey, Notification, NotificationRule, NotificationStatus,
    PolicyRecord, Role, Service, Severity, TimelineEntry, TimelineKind, Timestamp, Token, User,
};

/// The column types Klaxon stores, read from a row.
pub(crate) trait Columns {
    fn text(&self, column: &str) -> Result<String>;
    fn optional_text(&self, column: &str) -> Result<Option<String>>;
    fn int(&self, column: &str) -> Result<i64>;
    fn optional_int(&self, column: &str) -> Result<Option<i64>>;
    fn small_int(&self, column: &str) -> Result<i32>;
    fn flag(&self, column: &str) -> Result<bool>;
    fn uuid(&self, column: &str) -> Result<Uuid>;
    fn optional_uuid(&self, column: &str) -> Result<Option<Uuid>>;
    fn optional_timestamp(&self, column: &str) -> Result<Option<Timestamp>>;
    fn optional_json(&self, column: &str) -> Result<Option<serde_json::Value>>;

    fn timestamp(&self, column: &str) -> Result<Timestamp> {
        self.optional_timestamp(column)?
            .ok_or_else(|| StoreError::corrupt(column, "null"))
    }

    fn json(&self, column: &str) -> Result<serde_json::Value> {
        self.optional_json(column)?
            .ok_or_else(|| StoreError::corrupt(column, "null"))
    }

    /// A text column holding one of a domain type's stored names.
    fn parsed<T>(&self, column: &str, parse: fn(&str) -> Option<T>) -> Result<T> {
        let text = self.text(column)?;
        parse(&text).ok_or_else(|| StoreError::corrupt(column, &text))
    }
}

impl<R> Columns for R
where
    R: Row,
    R::Database: Dialect,
    for<'c> &'c str: ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Option<String>: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Option<i64>: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i32: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> bool: Decode<'r, R::Database> + Type<R::Database>,
{
    fn text(&self, column: &str) -> Result<String> {
        Ok(self.try_get(column)?)
    }

    fn optional_text(&self, column: &str) -> Result<Option<String>> {
        Ok(self.try_get(column)?)
    }

    fn int(&self, column: &str) -> Result<i64> {
        Ok(self.try_get(column)?)
    }

    fn optional_int(&self, column: &str) -> Result<Option<i64>> {
        Ok(self.try_get(column)?)
    }

    fn small_int(&self, column: &str) -> Result<i32> {
        Ok(self.try_get(column)?)
    }

    fn flag(&self, column: &str) -> Result<bool> {
        Ok(self.try_get(column)?)
    }

    fn uuid(&self, column: &str) -> Result<Uuid> {
        R::Database::read_id(self, column)
    }

    fn optional_uuid(&self, column: &str) -> Result<Option<Uuid>> {
        R::Database::read_optional_id(self, column)
    }

    fn optional_timestamp(&self, column: &str) -> Result<Option<Timestamp>> {
        R::Database::read_time(self, column)
    }

    fn optional_json(&self, column: &str) -> Result<Option<serde_json::Value>> {
        R::Database::read_json(self, column)
    }
}

pub(crate) fn incident(row: &impl Columns) -> Result<Incident> {
    Ok(Incident {
        id: row.uuid("id")?,
        title: row.text("title")?,
        severity: row.parsed("severity", Severity::parse)?,
        status: row.parsed("status", IncidentStatus::parse)?,
        dedup_key: row.optional_text("dedup_key")?,
        event_count: row.int("event_count")?,
        escalation_level: row.small_int("escalation_level")?,
        resolution_note: row.optional_text("resolution_note")?,
        created_at: row.timestamp("created_at")?,
        updated_at: row.timestamp("updated_at")?,
        acknowledged_at: row.optional_timestamp("acknowledged_at")?,
        resolved_at: row.optional_timestamp("resolved_at")?,
        cancelled_at: row.optional_timestamp("cancelled_at")?,
        service_id: row.optional_uuid("service_id")?,
    })
}

pub(crate) fn escalation(row: &impl Columns) -> Result<Escalation> {
    Ok(Escalation {
        id: row.uuid("id")?,
        incident_id: row.uuid("incident_id")?,
        escalation_level: row.small_int("escalation_level")?,
        status: row.parsed("status", EscalationStatus::parse)?,
        scheduled_at: row.timestamp("scheduled_at")?,
        executed_at: row.optional_timestamp("executed_at")?,
        cancelled_at: row.optional_timestamp("cancelled_at")?,
        created_at: row.timestamp("created_at")?,
    })
}

pub(crate) fn timeline_entry(row: &impl Columns) -> Result<TimelineEntry> {
    Ok(TimelineEntry {
        id: row.uuid("id")?,
        incident_id: row.uuid("incident_id")?,
        at: row.timestamp("at")?,
        kind: row.parsed("kind", TimelineKind::parse)?,
        actor: row.text("actor")?,
        detail: row.json("detail")?,
    })
}

pub(crate) fn token(row: &impl Columns) -> Result<Token> {
    Ok(Token {
        id: row.uuid("id")?,
        name: row.text("name")?,
        role: row.parsed("role", Role::parse)?,
        created_at: row.timestamp("created_at")?,
        revoked_at: row.optional_timestamp("revoked_at")?,
        user_id: row.optional_uuid("user_id")?,
    })
}

pub(crate) fn user(row: &impl Columns) -> Result<User> {
    Ok(User {
        id: row.uuid("id")?,
        handle: row.text("handle")?,
        name: row.text("name")?,
        email: row.text("email")?,
        phone: row.optional_text("phone")?,
        role: row.parsed("role", Role::parse)?,
        time_zone: row.text("time_zone")?,
        active: row.flag("active")?,
        created_at: row.timestamp("created_at")?,
        updated_at: row.timestamp("updated_at")?,
        version: row.int("version")?,
    })
}

pub(crate) fn service(row: &impl Columns) -> Result<Service> {
    Ok(Service {
        id: row.uuid("id")?,
        name: row.text("name")?,
        escalation_policy_id: row.optional_uuid("escalation_policy_id")?,
        auto_escalate: row.flag("auto_escalate")?,
        created_at: row.timestamp("created_at")?,
        updated_at: row.timestamp("updated_at")?,
    })
}

pub(crate) fn integration_key(row: &impl Columns) -> Result<IntegrationKey> {
    Ok(IntegrationKey {
        id: row.uuid("id")?,
        service_id: row.uuid("service_id")?,
        name: row.text("name")?,
        created_at: row.timestamp("created_at")?,
        revoked_at: row.optional_timestamp("revoked_at")?,
    })
}

pub(crate) fn heartbeat(row: &impl Columns) -> Result<Heartbeat> {
    Ok(Heartbeat {
        id: row.uuid("id")?,
        service_id: row.uuid("service_id")?,
        name: row.text("name")?,
        interval: Duration::from_millis(u64::try_from(row.int("interval_ms")?).unwrap_or(0)),
        created_at: row.timestamp("created_at")?,
        last_ping_at: row.optional_timestamp("last_ping_at")?,
        due_at: row.optional_timestamp("due_at")?,
        incident_id: row.optional_uuid("incident_id")?,
        retired_at: row.optional_timestamp("retired_at")?,
    })
}

pub(crate) fn policy_record(row: &impl Columns) -> Result<PolicyRecord> {
    let levels = row.json("levels")?;
    let repeat = u32::try_from(row.int("repeat")?).unwrap_or(0);
    let levels: EscalationPolicy = serde_json::from_value::<EscalationPolicy>(levels)
        .map_err(|_| StoreError::corrupt("policy levels", "unreadable"))?
        .with_repeat(repeat);
    Ok(PolicyRecord {
        id: row.uuid("id")?,
        name: row.text("name")?,
        levels,
        created_at: row.timestamp("created_at")?,
        updated_at: row.timestamp("updated_at")?,
    })
}

pub(crate) fn contact_method(row: &impl Columns) -> Result<ContactMethod> {
    Ok(ContactMethod {
        id: row.uuid("id")?,
        user_id: row.uuid("user_id")?,
        kind: row.parsed("type", ContactType::parse)?,
        address: row.text("address")?,
        created_at: row.timestamp("created_at")?,
    })
}

pub(crate) fn rule(row: &impl Columns) -> Result<NotificationRule> {
    let millis = |value: i64| Duration::from_millis(u64::try_from(value).unwrap_or(0));
    Ok(NotificationRule {
        id: row.uuid("id")?,
        user_id: row.uuid("user_id")?,
        contact_method_id: row.uuid("contact_method_id")?,
        delay: millis(row.int("delay_ms")?),
        repeat_every: row.optional_int("repeat_every_ms")?.map(millis),
        max_repeats: row
            .optional_int("max_repeats")?
            .map(|n| u32::try_from(n).unwrap_or(0)),
        created_at: row.timestamp("created_at")?,
    })
}

pub(crate) fn notification(row: &impl Columns) -> Result<Notification> {
    Ok(Notification {
        id: row.uuid("id")?,
        escalation_id: row.uuid("escalation_id")?,
        incident_id: row.uuid("incident_id")?,
        escalation_level: row.small_int("escalation_level")?,
        channel: row.parsed("channel", Channel::parse)?,
        recipient: row.text("recipient")?,
        user_id: row.optional_uuid("user_id")?,
        status: row.parsed("status", NotificationStatus::parse)?,
        attempts: row.small_int("attempts")?,
        last_error: row.optional_text("last_error")?,
        provider_id: row.optional_text("provider_id")?,
        provider_message_id: row.optional_text("provider_id")?,
        provider: row.optional_text("provider")?,
        provider_index: row.small_int("provider_index")?,
        address: row.optional_text("address")?,
        contact_method_id: row.optional_uuid("contact_method_id")?,
        route: row.text("route")?,
        reply_code: row.optional_text("reply_code")?,
        held: row.flag("held")?,
        message_key: row.optional_text("message_key")?,
        due_at: row.timestamp("due_at")?,
        created_at: row.timestamp("created_at")?,
        updated_at: row.timestamp("updated_at")?,
        sent_at: row.optional_timestamp("sent_at")?,
        read_at: row.optional_timestamp("read_at")?,
    })
}

pub(crate) fn schedule(row: &impl Columns) -> Result<ScheduleRecord> {
    Ok(ScheduleRecord {
        id: row.uuid("id")?,
        name: row.text("name")?,
        time_zone: row.text("time_zone")?,
        created_at: row.timestamp("created_at")?,
        updated_at: row.timestamp("updated_at")?,
    })
}

pub(crate) fn rotation(row: &impl Columns) -> Result<RotationRecord> {
    let participants: Vec<Uuid> = serde_json::from_value(row.json("participants")?)
        .map_err(|_| StoreError::corrupt("rotation participants", "unreadable"))?;
    let restrictions: Vec<RestrictionFields> = serde_json::from_value(row.json("restrictions")?)
        .map_err(|_| StoreError::corrupt("rotation restrictions", "unreadable"))?;
    Ok(RotationRecord {
        id: row.uuid("id")?,
        schedule_id: row.uuid("schedule_id")?,
        name: row.text("name")?,
        fields: RotationFields {
            kind: row.parsed("kind", RotationKind::parse)?,
            shift_length: row.int("shift_length")?,
            start: row.text("start")?,
            participants,
            priority: row.small_int("priority")?,
            restrictions,
        },
        created_at: row.timestamp("created_at")?,
        updated_at: row.timestamp("updated_at")?,
        retired_at: row.optional_timestamp("retired_at")?,
    })
}

pub(crate) fn override_record(row: &impl Columns) -> Result<OverrideRecord> {
    Ok(OverrideRecord {
        id: row.uuid("id")?,
        schedule_id: row.uuid("schedule_id")?,
        user: row.uuid("user_id")?,
        replaces: row.optional_uuid("replaces_user_id")?,
        start: row.timestamp("start_at")?,
        end: row.timestamp("end_at")?,
        created_at: row.timestamp("created_at")?,
        retired_at: row.optional_timestamp("retired_at")?,
    })
}

/// A pending escalation's id and due time (`id`, `scheduled_at`).
pub(crate) fn scheduled(row: &impl Columns) -> Result<Scheduled> {
    Ok(Scheduled {
        id: row.uuid("id")?,
        due: row.timestamp("scheduled_at")?,
    })
}

/// The deployment's id (`id` of `installation`).
pub(crate) fn installation_id(row: &impl Columns) -> Result<Uuid> {
    row.uuid("id")
}

/// A claimed escalation with its incident's `incident_status` and policy snapshot (`policy`,
/// checked as any policy is).
pub(crate) fn claimed(row: &impl Columns) -> Result<Claimed> {
    let policy: Option<EscalationPolicy> = row
        .optional_json("policy")?
        .map(|snapshot| serde_json::from_value(snapshot).map_err(StoreError::internal))
        .transpose()?;
    Ok(Claimed {
        escalation: escalation(row)?,
        incident_status: row.parsed("incident_status", IncidentStatus::parse)?,
        policy,
    })
}

/// A page of incidents from a query that fetched one more than `limit`, to know whether a next
/// page exists.
pub(crate) fn page(rows: &[impl Columns], limit: u32) -> Result<Page<Incident>> {
    let mut items = rows.iter().map(incident).collect::<Result<Vec<_>, _>>()?;
    let limit = limit as usize;
    let next = if items.len() > limit {
        items.truncate(limit);
        items.last().map(|incident| incident.id)
    } else {
        None
    };
    Ok(Page { items, next })
}
