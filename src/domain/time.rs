//! Timestamps as the API shows them: UTC, millisecond precision, RFC 3339.

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use serde::{Serialize, Serializer};

/// 0000-01-01T00:00:00.000Z, the first instant RFC 3339 can write.
const RFC3339_FIRST_MILLIS: i64 = -62_167_219_200_000;
/// 9999-12-31T23:59:59.999Z, the last.
const RFC3339_LAST_MILLIS: i64 = 253_402_300_799_999;

/// A UTC instant truncated to whole milliseconds, so that it reads back from every backend
/// exactly as it was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(DateTime<Utc>);

impl Timestamp {
    pub fn now() -> Self {
        Self::from_millis(Utc::now().timestamp_millis())
    }

    /// The instant `millis` milliseconds after the Unix epoch, saturating at the range RFC 3339
    /// can write (years 0000 to 9999), so that every instant shown is one clients can read.
    pub fn from_millis(millis: i64) -> Self {
        let millis = millis.clamp(RFC3339_FIRST_MILLIS, RFC3339_LAST_MILLIS);
        Self(
            Utc.timestamp_millis_opt(millis)
                .single()
                .expect("every instant of years 0000 to 9999 is in chrono's range"),
        )
    }

    pub fn from_datetime(at: DateTime<Utc>) -> Self {
        Self::from_millis(at.timestamp_millis())
    }

    pub fn as_millis(self) -> i64 {
        self.0.timestamp_millis()
    }

    pub fn as_datetime(self) -> DateTime<Utc> {
        self.0
    }

    /// This instant plus `delay`, saturating at the last instant RFC 3339 can write rather than
    /// overflowing.
    pub fn after(self, delay: Duration) -> Self {
        let delay = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
        Self::from_millis(self.as_millis().saturating_add(delay))
    }
}

impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.to_rfc3339_opts(SecondsFormat::Millis, true))
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl utoipa::PartialSchema for Timestamp {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                utoipa::openapi::KnownFormat::DateTime,
            )))
            .examples([serde_json::json!("2026-11-27T10:00:00.123Z")])
            .into()
    }
}

impl utoipa::ToSchema for Timestamp {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_utc_with_milliseconds() {
        let at = Timestamp::from_millis(1_795_780_800_123);
        assert_eq!(at.to_string(), "2026-11-27T12:00:00.123Z");
    }

    #[test]
    fn truncates_sub_millisecond_precision() {
        let precise = Utc.timestamp_nanos(1_795_780_800_123_456_789);
        assert_eq!(
            Timestamp::from_datetime(precise).as_millis(),
            1_795_780_800_123
        );
    }

    #[test]
    fn after_adds_the_delay() {
        let at = Timestamp::from_millis(1_000);
        assert_eq!(at.after(Duration::from_millis(250)).as_millis(), 1_250);
    }

    #[test]
    fn saturates_at_what_rfc_3339_can_write() {
        let far = Timestamp::now().after(Duration::from_secs(u64::MAX));
        assert_eq!(far.to_string(), "9999-12-31T23:59:59.999Z");
        assert_eq!(Timestamp::from_millis(i64::MAX), far);
        assert_eq!(
            Timestamp::from_millis(i64::MIN).to_string(),
            "0000-01-01T00:00:00.000Z"
        );
        let last = DateTime::parse_from_rfc3339("9999-12-31T23:59:59.999Z").unwrap();
        assert_eq!(far.as_datetime(), last);
    }
}
