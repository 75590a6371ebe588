//! People: who can be told, and who is named when they act. A user is never deleted; a
//! deactivated one keeps their history and is told nothing more.

use serde::Serialize;
use uuid::Uuid;

use super::{Role, Timestamp};

/// The longest handle, in characters.
pub const MAX_HANDLE_CHARS: usize = 64;
/// The longest name, in characters.
pub const MAX_NAME_CHARS: usize = 200;
/// The longest email address (RFC 5321's path limit).
pub const MAX_EMAIL_CHARS: usize = 254;
/// The time zone of a user created without one.
pub const DEFAULT_TIME_ZONE: &str = "UTC";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct User {
    pub id: Uuid,
    /// Unique; what policies name as targets and what the timeline shows as the actor.
    pub handle: String,
    pub name: String,
    pub email: String,
    /// E.164, such as `+14155550100`.
    pub phone: Option<String>,
    pub role: Role,
    /// An IANA time zone name, such as `Europe/Paris`.
    pub time_zone: String,
    pub active: bool,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// Bumped by every stored change; a change made from an older version is not stored.
    #[serde(skip)]
    #[schema(ignore)]
    pub version: i64,
}

/// A field of a user that is not valid, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{field}` {reason}")]
pub struct InvalidUser {
    pub field: &'static str,
    pub reason: String,
}

fn invalid(field: &'static str, reason: impl Into<String>) -> InvalidUser {
    InvalidUser {
        field,
        reason: reason.into(),
    }
}

/// What a new user is made of, checked by [`User::new`].
#[derive(Debug, Clone, Default)]
pub struct UserFields {
    pub handle: String,
    pub name: String,
    pub email: String,
    pub phone: Option<String>,
    pub role: Option<Role>,
    pub time_zone: Option<String>,
}

/// A change to a user: the fields given are set, the others kept.
#[derive(Debug, Clone, Default)]
pub struct UserChange {
    pub name: Option<String>,
    pub email: Option<String>,
    /// `Some(None)` clears the phone.
    pub phone: Option<Option<String>>,
    pub role: Option<Role>,
    pub time_zone: Option<String>,
    pub active: Option<bool>,
}

impl User {
    /// A new, active user; a responder in UTC unless the fields say otherwise.
    pub fn new(fields: UserFields, at: Timestamp) -> Result<Self, InvalidUser> {
        Ok(Self {
            id: Uuid::now_v7(),
            handle: check_handle(&fields.handle)?,
            name: check_name(&fields.name)?,
            email: check_email(&fields.email)?,
            phone: fields.phone.as_deref().map(check_phone).transpose()?,
            role: fields.role.unwrap_or(Role::Responder),
            time_zone: check_time_zone(fields.time_zone.as_deref().unwrap_or(DEFAULT_TIME_ZONE))?,
            active: true,
            created_at: at,
            updated_at: at,
            version: 1,
        })
    }

    /// This user with `change` applied at `at`; the handle never changes, since history names it.
    pub fn changed(&self, change: UserChange, at: Timestamp) -> Result<Self, InvalidUser> {
        let mut user = self.clone();
        if let Some(name) = change.name {
            user.name = check_name(&name)?;
        }
        if let Some(email) = change.email {
            user.email = check_email(&email)?;
        }
        if let Some(phone) = change.phone {
            user.phone = phone.as_deref().map(check_phone).transpose()?;
        }
        if let Some(role) = change.role {
            user.role = role;
        }
        if let Some(time_zone) = change.time_zone {
            user.time_zone = check_time_zone(&time_zone)?;
        }
        if let Some(active) = change.active {
            user.active = active;
        }
        user.updated_at = at;
        Ok(user)
    }

    /// Whether a level without targets tells this user: active responders and admins.
    pub fn is_on_duty(&self) -> bool {
        self.active && self.role.allows(Role::Responder)
    }
}

/// Lowercase letters, digits, `.`, `_` and `-`, starting with a letter or digit: a handle must
/// read the same in a config file, a URL and an SMS reply.
fn check_handle(handle: &str) -> Result<String, InvalidUser> {
    let valid = handle.chars().count() <= MAX_HANDLE_CHARS
        && handle
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && handle
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'));
    if !valid {
        return Err(invalid(
            "handle",
            format!("must be 1 to {MAX_HANDLE_CHARS} lowercase letters, digits, `.`, `_` or `-`, starting with a letter or digit"),
        ));
    }
    Ok(handle.to_owned())
}

fn check_name(name: &str) -> Result<String, InvalidUser> {
    let name = name.trim();
    if name.is_empty()
        || name.chars().count() > MAX_NAME_CHARS
        || name.chars().any(char::is_control)
    {
        return Err(invalid(
            "name",
            format!(
                "must be 1 to {MAX_NAME_CHARS} characters, not blank, without control characters"
            ),
        ));
    }
    Ok(name.to_owned())
}

/// One `@` with something on each side and a dot in the domain, no spaces or control characters:
/// enough to catch a typo; the mail server has the last word.
pub(crate) fn check_email(email: &str) -> Result<String, InvalidUser> {
    let email = email.trim();
    let valid = email.chars().count() <= MAX_EMAIL_CHARS
        && !email
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | ',' | '"'))
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && !domain.contains('@')
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
        });
    if !valid {
        return Err(invalid(
            "email",
            "must be an address like alice@example.com",
        ));
    }
    Ok(email.to_owned())
}

/// E.164: `+`, then 2 to 15 digits, the first not 0.
pub fn is_e164(phone: &str) -> bool {
    let digits = phone.strip_prefix('+').unwrap_or("");
    (2..=15).contains(&digits.len())
        && digits.chars().all(|c| c.is_ascii_digit())
        && !digits.starts_with('0')
}

fn check_phone(phone: &str) -> Result<String, InvalidUser> {
    if !is_e164(phone) {
        return Err(invalid(
            "phone",
            "must be in E.164 form: + and the country code, then the number, digits only (+14155550100)",
        ));
    }
    Ok(phone.to_owned())
}

/// The shape of an IANA zone name: `UTC`, or `Area/Location[/More]` of letters, digits, `_`, `-`
/// and `+`. Schedules (which compute in the zone) check it against the tz database.
fn check_time_zone(zone: &str) -> Result<String, InvalidUser> {
    let part_ok = |part: &str| {
        part.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            && part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '+'))
    };
    let valid = zone.len() <= 64 && zone.split('/').all(part_ok);
    if !valid {
        return Err(invalid(
            "time_zone",
            "must be an IANA time zone name such as UTC or Europe/Paris",
        ));
    }
    Ok(zone.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields() -> UserFields {
        UserFields {
            handle: "alice".into(),
            name: "Alice Liddell".into(),
            email: "alice@example.com".into(),
            phone: Some("+14155550100".into()),
            role: None,
            time_zone: Some("Europe/Paris".into()),
        }
    }

    fn field_at_fault(change: impl FnOnce(&mut UserFields)) -> &'static str {
        let mut fields = fields();
        change(&mut fields);
        User::new(fields, Timestamp::now()).unwrap_err().field
    }

    #[test]
    fn a_new_user_is_an_active_responder() {
        let user = User::new(fields(), Timestamp::from_millis(5)).unwrap();
        assert_eq!(user.role, Role::Responder);
        assert!(user.active && user.is_on_duty());
        assert_eq!(user.time_zone, "Europe/Paris");
        let without_zone = UserFields {
            time_zone: None,
            ..fields()
        };
        assert_eq!(
            User::new(without_zone, Timestamp::now()).unwrap().time_zone,
            "UTC"
        );
    }

    #[test]
    fn each_field_is_checked() {
        assert_eq!(field_at_fault(|f| f.handle = "Alice".into()), "handle");
        assert_eq!(field_at_fault(|f| f.handle = "".into()), "handle");
        assert_eq!(field_at_fault(|f| f.handle = "-alice".into()), "handle");
        assert_eq!(field_at_fault(|f| f.handle = "a".repeat(65)), "handle");
        assert_eq!(field_at_fault(|f| f.name = "  ".into()), "name");
        assert_eq!(field_at_fault(|f| f.email = "alice".into()), "email");
        assert_eq!(
            field_at_fault(|f| f.email = "alice@localhost".into()),
            "email"
        );
        assert_eq!(
            field_at_fault(|f| f.email = "a b@example.com".into()),
            "email"
        );
        assert_eq!(
            field_at_fault(|f| f.phone = Some("4155550100".into())),
            "phone"
        );
        assert_eq!(field_at_fault(|f| f.phone = Some("+0155".into())), "phone");
        assert_eq!(
            field_at_fault(|f| f.phone = Some("+1415555010012345".into())),
            "phone"
        );
        assert_eq!(
            field_at_fault(|f| f.time_zone = Some("Paris ".into())),
            "time_zone"
        );
        assert_eq!(
            field_at_fault(|f| f.time_zone = Some("Europe//Paris".into())),
            "time_zone"
        );
        for handle in ["a", "bob.smith", "ops_1", "9lives"] {
            let user = User::new(
                UserFields {
                    handle: handle.into(),
                    ..fields()
                },
                Timestamp::now(),
            );
            assert!(user.is_ok(), "{handle}");
        }
    }

    #[test]
    fn a_change_keeps_the_handle_and_can_deactivate() {
        let user = User::new(fields(), Timestamp::from_millis(1)).unwrap();
        let change = UserChange {
            active: Some(false),
            phone: Some(None),
            role: Some(Role::Admin),
            ..UserChange::default()
        };
        let changed = user.changed(change, Timestamp::from_millis(2)).unwrap();
        assert_eq!(changed.handle, "alice");
        assert!(!changed.active && !changed.is_on_duty());
        assert_eq!(changed.phone, None);
        assert_eq!(changed.updated_at, Timestamp::from_millis(2));
        let bad = UserChange {
            email: Some("nope".into()),
            ..UserChange::default()
        };
        assert_eq!(
            user.changed(bad, Timestamp::now()).unwrap_err().field,
            "email"
        );
    }
}
