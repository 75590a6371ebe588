//! How a person is reached: their contact methods (an address on one channel) and their
//! personal notification rules ("push at once, SMS after a minute, call every 5 minutes").

use std::time::Duration;

use serde::Serialize;
use uuid::Uuid;

use super::user::check_email;
use super::{is_e164, Channel, Timestamp};

/// The longest a rule may wait before its first message: past a day, a page is no longer one.
pub const MAX_RULE_DELAY: Duration = Duration::from_secs(24 * 3600);
/// The shortest interval between a rule's repeats.
pub const MIN_REPEAT_EVERY: Duration = Duration::from_millis(100);
/// The most repeats a rule may ask for, after its first message.
pub const MAX_REPEATS: u32 = 20;
/// A rule that repeats without saying how often stops after this many repeats.
pub const DEFAULT_MAX_REPEATS: u32 = 3;

/// The kind of a contact method: the channel its messages go out on.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum ContactType {
    /// An email address.
    Email,
    /// A phone number (E.164) that takes text messages.
    Sms,
    /// A phone number (E.164) that is called.
    Voice,
    /// An ntfy topic on the configured server.
    Push,
    /// An `http(s)` URL that takes Klaxon's generic webhook JSON.
    Webhook,
}

impl ContactType {
    pub fn channel(self) -> Channel {
        match self {
            Self::Email => Channel::Email,
            Self::Sms => Channel::Sms,
            Self::Voice => Channel::Voice,
            Self::Push => Channel::Push,
            Self::Webhook => Channel::Webhook,
        }
    }

    pub fn of(channel: Channel) -> Option<Self> {
        match channel {
            Channel::Email => Some(Self::Email),
            Channel::Sms => Some(Self::Sms),
            Channel::Voice => Some(Self::Voice),
            Channel::Push => Some(Self::Push),
            Channel::Webhook => Some(Self::Webhook),
            Channel::InApp | Channel::Personal => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        self.channel().as_str()
    }

    pub fn parse(text: &str) -> Option<Self> {
        Channel::parse(text).and_then(Self::of)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid `{field}`: {reason}")]
pub struct InvalidContact {
    pub field: &'static str,
    pub reason: String,
}

fn invalid(field: &'static str, reason: impl Into<String>) -> InvalidContact {
    InvalidContact {
        field,
        reason: reason.into(),
    }
}

/// One address of a user on one channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ContactMethod {
    pub id: Uuid,
    pub user_id: Uuid,
    #[serde(rename = "type")]
    pub kind: ContactType,
    pub address: String,
    pub created_at: Timestamp,
}

/// A contact method as asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewContactMethod {
    pub kind: ContactType,
    pub address: String,
}

impl ContactMethod {
    /// A contact method of `user_id`, its address checked for its type.
    pub fn new(
        user_id: Uuid,
        new: NewContactMethod,
        at: Timestamp,
    ) -> Result<Self, InvalidContact> {
        let address = new.address.trim().to_owned();
        match new.kind {
            ContactType::Email => {
                check_email(&address).map_err(|e| invalid("address", e.reason))?;
            }
            ContactType::Sms | ContactType::Voice => {
                if !is_e164(&address) {
                    return Err(invalid(
                        "address",
                        "must be a phone number in E.164 form: + and the country code, then the number, digits only (+14155550100)",
                    ));
                }
            }
            ContactType::Push => {
                let valid = (1..=64).contains(&address.len())
                    && address
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
                if !valid {
                    return Err(invalid(
                        "address",
                        "must be an ntfy topic: 1 to 64 letters, digits, `-` or `_`",
                    ));
                }
            }
            ContactType::Webhook => {
                let valid = (address.starts_with("https://") || address.starts_with("http://"))
                    && !address.contains(char::is_whitespace)
                    && address.len() <= 2048;
                if !valid {
                    return Err(invalid("address", "must be an http:// or https:// URL"));
                }
            }
        }
        Ok(Self {
            id: Uuid::now_v7(),
            user_id,
            kind: new.kind,
            address,
            created_at: at,
        })
    }

    /// The first contact methods of a new user: their email, and their phone for text and for
    /// calls.
    pub fn firsts(user: &super::User) -> Vec<Self> {
        let at = user.created_at;
        let mut methods = vec![Self::first(user.id, ContactType::Email, &user.email, at)];
        if let Some(phone) = &user.phone {
            methods.push(Self::first(user.id, ContactType::Sms, phone, at));
            methods.push(Self::first(user.id, ContactType::Voice, phone, at));
        }
        methods
    }

    fn first(user_id: Uuid, kind: ContactType, address: &str, at: Timestamp) -> Self {
        Self {
            id: Uuid::now_v7(),
            user_id,
            kind,
            address: address.to_owned(),
            created_at: at,
        }
    }
}

/// A personal notification rule: tell the user through one contact method, `delay` after the
/// level that names them executes, then again every `repeat_every`, at most `max_repeats` more
/// times, until the incident is acknowledged, resolved or cancelled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct NotificationRule {
    pub id: Uuid,
    pub user_id: Uuid,
    pub contact_method_id: Uuid,
    #[serde(with = "humantime_text")]
    #[schema(value_type = String, example = "1m")]
    pub delay: Duration,
    #[serde(with = "humantime_text::option")]
    #[schema(value_type = Option<String>, example = "5m")]
    pub repeat_every: Option<Duration>,
    pub max_repeats: Option<u32>,
    pub created_at: Timestamp,
}

/// A rule as asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRule {
    pub contact_method_id: Uuid,
    pub delay: Duration,
    pub repeat_every: Option<Duration>,
    pub max_repeats: Option<u32>,
}

impl NotificationRule {
    pub fn new(user_id: Uuid, new: NewRule, at: Timestamp) -> Result<Self, InvalidContact> {
        if new.delay > MAX_RULE_DELAY {
            return Err(invalid("delay", "must be at most 24h"));
        }
        let max_repeats = match (new.repeat_every, new.max_repeats) {
            (None, Some(_)) => {
                return Err(invalid(
                    "max_repeats",
                    "needs `repeat_every`: how often to repeat",
                ))
            }
            (None, None) => None,
            (Some(every), max) => {
                if every < MIN_REPEAT_EVERY {
                    return Err(invalid("repeat_every", "must be at least 100ms"));
                }
                let max = max.unwrap_or(DEFAULT_MAX_REPEATS);
                if !(1..=MAX_REPEATS).contains(&max) {
                    return Err(invalid(
                        "max_repeats",
                        format!("must be between 1 and {MAX_REPEATS}"),
                    ));
                }
                Some(max)
            }
        };
        Ok(Self {
            id: Uuid::now_v7(),
            user_id,
            contact_method_id: new.contact_method_id,
            delay: new.delay,
            repeat_every: new.repeat_every,
            max_repeats,
            created_at: at,
        })
    }

    /// When each of the rule's messages goes out, counted from the level's execution: the first
    /// after `delay`, then each repeat.
    pub fn occurrences(&self) -> Vec<Duration> {
        let repeats = match (self.repeat_every, self.max_repeats) {
            (Some(every), Some(max)) => (1..=max).map(|k| every * k).collect(),
            _ => Vec::new(),
        };
        std::iter::once(Duration::ZERO)
            .chain(repeats)
            .map(|after| self.delay + after)
            .collect()
    }
}

/// Durations in the API as humantime text (`"300ms"`, `"1m"`, `"1h 30m"`), as in the
/// configuration.
pub mod humantime_text {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// A duration's text in the OpenAPI document: everything [`format`] writes, and a part of
    /// what [`parse`] reads (humantime's units right after their numbers, one space between
    /// parts).
    pub const PATTERN: &str = "^[0-9]+(ns|us|ms|s|m|h|days?|weeks?|months?|years?)\
                               ( [0-9]+(ns|us|ms|s|m|h|days?|weeks?|months?|years?))*$";

    pub fn format(duration: Duration) -> String {
        humantime::format_duration(duration).to_string()
    }

    pub fn parse(text: &str) -> Result<Duration, String> {
        humantime::parse_duration(text.trim())
            .map_err(|_| format!("{text:?} is not a duration like \"300ms\", \"1m\" or \"1h 30m\""))
    }

    pub fn serialize<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format(*duration))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(deserializer)?;
        parse(&text).map_err(serde::de::Error::custom)
    }

    pub mod option {
        use super::*;

        pub fn serialize<S: Serializer>(
            duration: &Option<Duration>,
            serializer: S,
        ) -> Result<S::Ok, S::Error> {
            match duration {
                Some(duration) => serializer.serialize_str(&format(*duration)),
                None => serializer.serialize_none(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(
        delay: u64,
        every: Option<u64>,
        max: Option<u32>,
    ) -> Result<NotificationRule, InvalidContact> {
        let new = NewRule {
            contact_method_id: Uuid::now_v7(),
            delay: Duration::from_secs(delay),
            repeat_every: every.map(Duration::from_secs),
            max_repeats: max,
        };
        NotificationRule::new(Uuid::now_v7(), new, Timestamp::from_millis(0))
    }

    #[test]
    fn a_repeating_rule_sends_at_its_delay_then_every_interval_up_to_its_maximum() {
        let secs = |r: NotificationRule| -> Vec<u64> {
            r.occurrences().iter().map(Duration::as_secs).collect()
        };
        assert_eq!(secs(rule(60, None, None).unwrap()), [60]);
        assert_eq!(
            secs(rule(180, Some(300), Some(2)).unwrap()),
            [180, 480, 780]
        );
        assert_eq!(secs(rule(0, Some(60), None).unwrap()), [0, 60, 120, 180]);
        assert_eq!(rule(0, None, Some(2)).unwrap_err().field, "max_repeats");
        assert_eq!(rule(0, Some(60), Some(0)).unwrap_err().field, "max_repeats");
        assert_eq!(
            rule(0, Some(60), Some(21)).unwrap_err().field,
            "max_repeats"
        );
        assert_eq!(rule(90_000, None, None).unwrap_err().field, "delay");
    }

    #[test]
    fn addresses_are_checked_for_their_type() {
        let check = |kind, address: &str| {
            ContactMethod::new(
                Uuid::now_v7(),
                NewContactMethod {
                    kind,
                    address: address.into(),
                },
                Timestamp::from_millis(0),
            )
            .is_ok()
        };
        assert!(check(ContactType::Sms, "+14155550100"));
        assert!(!check(ContactType::Voice, "0044 20 7946"));
        assert!(check(ContactType::Push, "alice-pager_7"));
        assert!(!check(ContactType::Push, "alice/../x"));
        assert!(check(ContactType::Email, "a@example.com"));
        assert!(!check(ContactType::Email, "nobody"));
        assert!(check(ContactType::Webhook, "https://hooks.example.com/x"));
        assert!(!check(ContactType::Webhook, "ftp://x"));
    }

    #[test]
    fn durations_read_and_print_as_humantime() {
        assert_eq!(
            humantime_text::parse("1h 30m").unwrap(),
            Duration::from_secs(5400)
        );
        assert_eq!(humantime_text::format(Duration::from_millis(300)), "300ms");
        assert_eq!(humantime_text::format(Duration::from_secs(60)), "1m");
        assert!(humantime_text::parse("soon").is_err());
    }
}
