//! Pure domain logic: no HTTP, no SQL, no clocks other than the values passed in.
//!
//! The state machine lives in [`incident`]; escalation policies in [`policy`]; the shapes of the
//! records every backend stores in [`escalation`], [`event`], [`timeline`] and [`token`].

pub mod contact;
pub mod escalation;
pub mod event;
pub mod incident;
pub mod notification;
pub mod policy;
pub mod schedule;
pub mod service;
pub mod severity;
pub mod time;
pub mod timeline;
pub mod token;
pub mod user;

pub use contact::{
    ContactMethod, ContactType, InvalidContact, NewContactMethod, NewRule, NotificationRule,
};
pub use escalation::{Escalation, EscalationStatus, NextLevel};
pub use event::{Event, EventService, NewEvent};
pub use incident::{Action, Incident, IncidentStatus, InvalidTransition, Transition};
pub use notification::{
    Attempt, Audience, Delivery, Directory, Failover, LevelNotifications, Notification,
    NotificationStatus, Outcome, Planned, RetryPolicy,
};
pub use policy::{Channel, EscalationLevel, EscalationPolicy, OnlyDuring};
pub use service::{
    Heartbeat, HeartbeatChange, IntegrationKey, InvalidService, PolicyRecord, Service,
};
pub use severity::Severity;
pub use time::Timestamp;
pub use timeline::{Actor, NewTimelineEntry, TimelineDetail, TimelineEntry, TimelineKind};
pub use token::{InvalidTokenName, NewToken, Role, Token, TokenSecret};
pub use user::{is_e164, InvalidUser, User, UserChange, UserFields};
