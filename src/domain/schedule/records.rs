//! Schedules as they are kept: a named zone, its rotations and its overrides. Nothing is
//! deleted: a rotation or an override that no longer applies is retired (`retired_at`), and only
//! live ones make the [`Schedule`] that [`ScheduleRecord::schedule`] builds.
//!
//! Every record is checked when it is made, by the same rules [`Schedule`] applies, so a stored
//! schedule always builds; one that does not was written by something else.

use serde::Serialize;
use uuid::Uuid;

use super::{invalid, InvalidSchedule, Override, Rotation, RotationFields, Schedule, Zone};
use crate::domain::service::check_name;
use crate::domain::Timestamp;

/// A name and an IANA time zone; the rotations and overrides refer to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ScheduleRecord {
    pub id: Uuid,
    /// Unique.
    pub name: String,
    /// As the tz database spells it: `America/New_York`.
    pub time_zone: String,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// A name checked as services' and policies' are: 1 to 100 characters, not blank.
fn checked_name(field: &'static str, name: &str) -> Result<String, InvalidSchedule> {
    check_name(field, name).map_err(|problem| invalid(field, problem.reason))
}

impl ScheduleRecord {
    pub fn new(name: &str, time_zone: &str, at: Timestamp) -> Result<Self, InvalidSchedule> {
        Ok(Self {
            id: Uuid::now_v7(),
            name: checked_name("name", name)?,
            time_zone: Zone::parse(time_zone)?.name().to_owned(),
            created_at: at,
            updated_at: at,
        })
    }

    /// This schedule with the fields given changed, at `at`.
    pub fn changed(
        &self,
        new_name: Option<&str>,
        time_zone: Option<&str>,
        at: Timestamp,
    ) -> Result<Self, InvalidSchedule> {
        let mut changed = self.clone();
        if let Some(new_name) = new_name {
            changed.name = checked_name("name", new_name)?;
        }
        if let Some(time_zone) = time_zone {
            changed.time_zone = Zone::parse(time_zone)?.name().to_owned();
        }
        changed.updated_at = at;
        Ok(changed)
    }

    /// The schedule that answers who is on call: this zone, these live rotations in the order
    /// they were made, and these live overrides in the order they were made.
    pub fn schedule(
        &self,
        rotations: &[RotationRecord],
        overrides: &[OverrideRecord],
    ) -> Result<Schedule, InvalidSchedule> {
        let rotations = rotations
            .iter()
            .map(|rotation| Rotation::new(rotation.fields.clone()))
            .collect::<Result<_, _>>()?;
        let overrides: Vec<Override> = overrides.iter().map(OverrideRecord::applied).collect();
        Schedule::new(Zone::parse(&self.time_zone)?, rotations, &overrides)
    }
}

/// One layer of a schedule. Replacing it keeps its id and its place among equal priorities.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotationRecord {
    pub id: Uuid,
    pub schedule_id: Uuid,
    pub name: String,
    /// Checked by [`Rotation::new`].
    pub fields: RotationFields,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub retired_at: Option<Timestamp>,
}

impl RotationRecord {
    pub fn new(
        schedule_id: Uuid,
        name: &str,
        fields: RotationFields,
        at: Timestamp,
    ) -> Result<Self, InvalidSchedule> {
        Rotation::new(fields.clone())?;
        Ok(Self {
            id: Uuid::now_v7(),
            schedule_id,
            name: checked_name("name", name)?,
            fields,
            created_at: at,
            updated_at: at,
            retired_at: None,
        })
    }
}

/// An override as kept: [`Override`]'s range in whole milliseconds, as every backend stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverrideRecord {
    pub id: Uuid,
    pub schedule_id: Uuid,
    /// On call during the override.
    pub user: Uuid,
    /// Taken off call; `None` adds `user` beside whoever is on call.
    pub replaces: Option<Uuid>,
    pub start: Timestamp,
    /// After `start`.
    pub end: Timestamp,
    pub created_at: Timestamp,
    pub retired_at: Option<Timestamp>,
}

impl OverrideRecord {
    pub fn new(
        schedule_id: Uuid,
        user: Uuid,
        replaces: Option<Uuid>,
        (start, end): (Timestamp, Timestamp),
        at: Timestamp,
    ) -> Result<Self, InvalidSchedule> {
        let record = Self {
            id: Uuid::now_v7(),
            schedule_id,
            user,
            replaces,
            start,
            end,
            created_at: at,
            retired_at: None,
        };
        if replaces == Some(user) {
            return Err(invalid("replaces", "must name someone other than `user`"));
        }
        record.applied().check()?;
        Ok(record)
    }

    /// What the schedule applies.
    pub fn applied(&self) -> Override {
        Override {
            id: self.id,
            user: self.user,
            replaces: self.replaces,
            start: self.start.as_datetime(),
            end: self.end.as_datetime(),
        }
    }
}
