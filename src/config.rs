//! One `Config`, loaded once at start-up from a TOML file and the environment, which
//! [`load_dotenv`] fills from a `.env` file first (SPEC §5), and validated before anything else
//! runs. A bad value is a [`ConfigError`] that names the key at fault; the CLI turns it into exit
//! code 2.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::domain::policy::PolicyError;
use crate::domain::{Channel, EscalationLevel, EscalationPolicy, OnlyDuring};
use crate::store::url::redact_password;
use crate::store::DatabaseUrl;

/// Where the API listens when nothing says otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:3000";
/// The embedded database a newcomer gets: `./klaxon.db`, created if missing.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://klaxon.db";
/// How often the worker scans the database for due escalations it was not woken for.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(5);
/// The largest request body accepted (SPEC §4: 1 MiB).
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;
/// How long a client has to send a request head, from its first byte (or from connecting).
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client has to send a request body, from the end of its head.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a keep-alive connection may wait for its next request.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// The most connections served at once, unless the descriptor limit allows fewer
/// (`http::connection_cap`).
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

/// The environment variables that override the file, with the key each one sets.
const ENV_OVERRIDES: [(&str, &str); 9] = [
    ("KLAXON_LISTEN", "listen"),
    ("KLAXON_METRICS_LISTEN", "metrics_listen"),
    ("KLAXON_DATABASE_URL", "database_url"),
    ("KLAXON_REDIS_URL", "redis_url"),
    ("KLAXON_REDIS_PREFIX", "redis_prefix"),
    ("KLAXON_ADMIN_TOKEN", "admin_token"),
    ("KLAXON_PUBLIC_URL", "public_url"),
    ("KLAXON_SMTP_USERNAME", "email.username"),
    ("KLAXON_SMTP_PASSWORD", "email.password"),
];

/// How many times a notification is tried before it is `FAILED`.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 8;
/// The first retry of a failed notification waits up to this long, doubling each time.
pub const DEFAULT_RETRY_BACKOFF: Duration = Duration::from_secs(1);
/// No retry of a failed notification waits longer than this.
pub const DEFAULT_RETRY_BACKOFF_CAP: Duration = Duration::from_secs(300);
/// How long a claimed notification is held before another dispatcher may take it: far longer
/// than any channel's send timeout (10 s), so a live dispatcher is never raced.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(60);
/// How long an acknowledge or resolve link in a message stays valid.
pub const DEFAULT_LINK_EXPIRY: Duration = Duration::from_secs(24 * 3600);
/// The SMTP port when `[email]` names none: submission with STARTTLS.
pub const DEFAULT_SMTP_PORT: u16 = 587;
/// Storm protection for email: at most this many mails per recipient per window.
pub const DEFAULT_EMAIL_RATE: RateLimit = RateLimit {
    count: 20,
    per: Duration::from_secs(15 * 60),
};
/// Storm protection for webhooks: at most this many posts per webhook per window.
pub const DEFAULT_WEBHOOK_RATE: RateLimit = RateLimit {
    count: 60,
    per: Duration::from_secs(60),
};
/// The loud channels' limits, per contact method (phone number, topic), as GoAlert found
/// necessary: one message a minute, and SMS at most 5 in 15 minutes and 11 an hour.
pub const DEFAULT_SMS_RATES: [RateLimit; 3] = [
    RateLimit::per_minutes(1, 1),
    RateLimit::per_minutes(5, 15),
    RateLimit::per_minutes(11, 60),
];
/// Voice: one call a minute, at most 3 in 15 minutes.
pub const DEFAULT_VOICE_RATES: [RateLimit; 2] =
    [RateLimit::per_minutes(1, 1), RateLimit::per_minutes(3, 15)];
/// Events per integration key (`/v2/enqueue`, Alertmanager) per instance: over it, 429.
pub const DEFAULT_INTEGRATION_RATE: RateLimit = RateLimit::per_minutes(1_000, 1);
/// Push: at most 20 in 15 minutes per topic, as for email.
pub const DEFAULT_PUSH_RATE: RateLimit = RateLimit::per_minutes(20, 15);

#[derive(Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// What set `listen`, for the error when the address cannot be bound.
    pub listen_from: Origin,
    /// `metrics_listen`: a second address that answers `GET /metrics` without a token; none by
    /// default.
    pub metrics_listen: Option<SocketAddr>,
    /// What set `metrics_listen`.
    pub metrics_listen_from: Origin,
    pub database_url: DatabaseUrl,
    pub redis_url: Option<String>,
    /// Put before every Redis key, ahead of the installation id (docs/engine.md, "Redis").
    pub redis_prefix: String,
    /// The bootstrap admin secret. Not `Debug`-printed: see the manual impl below.
    pub admin_token: Option<String>,
    pub max_body_bytes: usize,
    pub http: HttpConfig,
    pub escalation: EscalationConfig,
    /// The base of the links in messages (`http://<listen>` unless set).
    pub public_url: String,
    /// `[email]`: the SMTP server mail goes through; without it email notifications fail with a
    /// clear reason.
    pub email: Option<EmailConfig>,
    /// `[webhooks.<name>]`: the webhooks levels may name.
    pub webhooks: BTreeMap<String, WebhookConfig>,
    /// `[[sms.providers]]`: Twilio-compatible accounts that send SMS, tried in order.
    pub sms: Vec<TwilioProvider>,
    /// `[[voice.providers]]`: Twilio-compatible accounts that place calls, tried in order.
    pub voice: Vec<TwilioProvider>,
    /// `[push]`: the ntfy server push notifications are published to.
    pub push: Option<PushConfig>,
    pub notifications: NotificationConfig,
    /// `[integrations] rate_limit`: events per integration key, per instance.
    pub integration_rate: RateLimit,
}

/// What set an address: named in the error when it cannot be bound, so the operator knows what
/// to change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Default,
    /// A key of the config file.
    File(&'static str),
    /// An environment variable (or `.env`).
    Environment(&'static str),
    /// A command-line flag.
    Flag(&'static str),
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Default => f.write_str("the default"),
            Self::File(key) => write!(f, "`{key}` in the config file"),
            Self::Environment(variable) => f.write_str(variable),
            Self::Flag(flag) => write!(f, "the {flag} flag"),
        }
    }
}

/// One Twilio-compatible account (Twilio, or a provider that copies its API). Not
/// `Debug`-printed with its token: see the manual impl below.
#[derive(Clone, PartialEq, Eq)]
pub struct TwilioProvider {
    /// Shown on notifications and the timeline as the provider that carried an attempt.
    pub name: String,
    /// `https://api.twilio.com` for Twilio; without a trailing `/`.
    pub base_url: String,
    pub account_sid: String,
    /// Authenticates requests to the provider and signs (`X-Twilio-Signature`) its requests to
    /// Klaxon.
    pub auth_token: String,
    /// The number messages and calls come from, in E.164.
    pub from: String,
}

impl std::fmt::Debug for TwilioProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TwilioProvider")
            .field("name", &self.name)
            .field("base_url", &self.base_url)
            .field("account_sid", &self.account_sid)
            .field("auth_token", &"<set>")
            .field("from", &self.from)
            .finish()
    }
}

/// `[push]`: a self-hosted ntfy server. Not `Debug`-printed with its token.
#[derive(Clone, PartialEq, Eq)]
pub struct PushConfig {
    /// The server's base URL, without a trailing `/`.
    pub ntfy_url: String,
    /// An ntfy access token (`tk_…`), sent as a bearer token when set.
    pub token: Option<String>,
}

impl std::fmt::Debug for PushConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushConfig")
            .field("ntfy_url", &self.ntfy_url)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .finish()
    }
}

/// `[email]`. Not `Debug`-printed with its password: see the manual impl below.
#[derive(Clone, PartialEq, Eq)]
pub struct EmailConfig {
    pub smtp_host: String,
    pub smtp_port: u16,
    pub tls: SmtpTls,
    pub username: Option<String>,
    pub password: Option<String>,
    /// The `From` address, `Name <addr>` or `addr`.
    pub from: String,
}

impl std::fmt::Debug for EmailConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmailConfig")
            .field("smtp_host", &self.smtp_host)
            .field("smtp_port", &self.smtp_port)
            .field("tls", &self.tls)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<set>"))
            .field("from", &self.from)
            .finish()
    }
}

/// How the SMTP connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain text: a local relay or a test sink only.
    None,
    /// Plain, then upgraded with `STARTTLS`, which must succeed (port 587).
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
}

/// `[webhooks.<name>]`. Not `Debug`-printed with its secret: see the manual impl below.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookConfig {
    pub url: String,
    pub format: WebhookFormat,
    /// The key of the `X-Klaxon-Signature` HMAC-SHA256 header; without it, none is sent.
    pub secret: Option<String>,
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("url", &self.url)
            .field("format", &self.format)
            .field("secret", &self.secret.as_ref().map(|_| "<set>"))
            .finish()
    }
}

/// The body a webhook receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WebhookFormat {
    /// Slack's incoming-webhook JSON (`text` and `blocks`), which Mattermost and others take too.
    Slack,
    /// Klaxon's own JSON, with the whole incident.
    #[default]
    Generic,
}

/// `[notifications]`: retries, links and storm protection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotificationConfig {
    pub max_attempts: u32,
    /// How long a dispatcher holds the notifications it claimed; after a crash they are sent
    /// again once it runs out.
    pub lease: Duration,
    pub retry_backoff: Duration,
    pub retry_backoff_cap: Duration,
    pub link_expiry: Duration,
    pub email_rate: RateLimit,
    pub webhook_rate: RateLimit,
    /// Every one holds, per phone number.
    pub sms_rates: Vec<RateLimit>,
    pub voice_rates: Vec<RateLimit>,
    pub push_rate: RateLimit,
}

impl Default for NotificationConfig {
    fn default() -> Self {
        Self {
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            lease: DEFAULT_LEASE,
            retry_backoff: DEFAULT_RETRY_BACKOFF,
            retry_backoff_cap: DEFAULT_RETRY_BACKOFF_CAP,
            link_expiry: DEFAULT_LINK_EXPIRY,
            email_rate: DEFAULT_EMAIL_RATE,
            webhook_rate: DEFAULT_WEBHOOK_RATE,
            sms_rates: DEFAULT_SMS_RATES.to_vec(),
            voice_rates: DEFAULT_VOICE_RATES.to_vec(),
            push_rate: DEFAULT_PUSH_RATE,
        }
    }
}

/// At most `count` messages per recipient and channel in any window of `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub count: u32,
    pub per: Duration,
}

impl RateLimit {
    pub const fn per_minutes(count: u32, minutes: u64) -> Self {
        Self {
            count,
            per: Duration::from_secs(minutes * 60),
        }
    }
}

/// `[http]`: how long clients may take, and how many may be connected at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpConfig {
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

#[derive(Debug, Clone)]
pub struct EscalationConfig {
    pub poll_interval: Duration,
    pub policy: EscalationPolicy,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("metrics_listen", &self.metrics_listen)
            .field("database_url", &self.database_url)
            .field("redis_url", &self.redis_url.as_deref().map(redact_password))
            .field("redis_prefix", &self.redis_prefix)
            .field("admin_token", &self.admin_token.as_ref().map(|_| "<set>"))
            .field("max_body_bytes", &self.max_body_bytes)
            .field("http", &self.http)
            .field("escalation", &self.escalation)
            .field("public_url", &self.public_url)
            .field("email", &self.email)
            .field("webhooks", &self.webhooks)
            .field("sms", &self.sms)
            .field("voice", &self.voice)
            .field("push", &self.push)
            .field("notifications", &self.notifications)
            .field("integration_rate", &self.integration_rate)
            .finish()
    }
}

impl Default for Config {
    fn default() -> Self {
        let listen: SocketAddr = DEFAULT_LISTEN
            .parse()
            .expect("the default listen address parses");
        Self {
            listen,
            listen_from: Origin::Default,
            metrics_listen: None,
            metrics_listen_from: Origin::Default,
            database_url: DEFAULT_DATABASE_URL
                .parse()
                .expect("the default database_url parses"),
            redis_url: None,
            redis_prefix: String::new(),
            admin_token: None,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            http: HttpConfig::default(),
            escalation: EscalationConfig {
                poll_interval: DEFAULT_POLL_INTERVAL,
                policy: EscalationPolicy::standard(),
            },
            public_url: format!("http://{listen}"),
            email: None,
            webhooks: BTreeMap::new(),
            sms: Vec::new(),
            voice: Vec::new(),
            push: None,
            notifications: NotificationConfig::default(),
            integration_rate: DEFAULT_INTEGRATION_RATE,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid `{key}`: {message}")]
    Invalid { key: String, message: String },
    #[error("cannot read .env: {0}")]
    DotEnv(String),
    /// More than one problem: every one found, in the order of the file's keys.
    #[error("{} problems:\n{}", .0.len(), .0.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n"))]
    Several(Vec<ConfigError>),
}

impl ConfigError {
    /// Each problem on its own: the error itself, or each of [`ConfigError::Several`].
    pub fn problems(&self) -> &[ConfigError] {
        match self {
            Self::Several(problems) => problems,
            one => std::slice::from_ref(one),
        }
    }
}

/// The problems found so far, so that checking goes on past the first and a user fixes them all
/// in one round.
#[derive(Default)]
struct Problems(Vec<ConfigError>);

impl Problems {
    fn note(&mut self, error: ConfigError) {
        match error {
            ConfigError::Several(problems) => self.0.extend(problems),
            one => self.0.push(one),
        }
    }

    /// The value, or `fallback` with the problem noted.
    fn check<T>(&mut self, result: Result<T, ConfigError>, fallback: T) -> T {
        result.unwrap_or_else(|error| {
            self.note(error);
            fallback
        })
    }

    /// `value` if nothing was found; the one problem, or all of them, otherwise.
    fn finish<T>(mut self, value: T) -> Result<T, ConfigError> {
        match self.0.len() {
            0 => Ok(value),
            1 => Err(self.0.remove(0)),
            _ => Err(ConfigError::Several(self.0)),
        }
    }
}

fn invalid(key: impl Into<String>, message: impl std::fmt::Display) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.to_string(),
    }
}

/// The file's shape. Every field is optional; unknown keys are an error, so typos do not pass
/// silently.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    metrics_listen: Option<String>,
    database_url: Option<String>,
    redis_url: Option<String>,
    redis_prefix: Option<String>,
    admin_token: Option<String>,
    max_body_bytes: Option<usize>,
    #[serde(default)]
    http: FileHttp,
    #[serde(default)]
    escalation: FileEscalation,
    public_url: Option<String>,
    email: Option<FileEmail>,
    #[serde(default)]
    webhooks: BTreeMap<String, FileWebhook>,
    #[serde(default)]
    sms: FileProviders,
    #[serde(default)]
    voice: FileProviders,
    push: Option<FilePush>,
    #[serde(default)]
    notifications: FileNotifications,
    #[serde(default)]
    integrations: FileIntegrations,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileIntegrations {
    rate_limit: Option<FileRateLimit>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileProviders {
    #[serde(default)]
    providers: Vec<FileProvider>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileProvider {
    name: String,
    base_url: String,
    account_sid: String,
    auth_token: String,
    from: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FilePush {
    ntfy_url: String,
    token: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileEmail {
    smtp_host: Option<String>,
    smtp_port: Option<u16>,
    tls: Option<SmtpTls>,
    username: Option<String>,
    password: Option<String>,
    from: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileWebhook {
    url: String,
    #[serde(default)]
    format: WebhookFormat,
    secret: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileNotifications {
    max_attempts: Option<u32>,
    lease: Option<String>,
    retry_backoff: Option<String>,
    retry_backoff_cap: Option<String>,
    link_expiry: Option<String>,
    #[serde(default)]
    rate_limits: FileRateLimits,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRateLimits {
    email: Option<FileRateLimit>,
    webhook: Option<FileRateLimit>,
    sms: Option<Vec<FileRateLimit>>,
    voice: Option<Vec<FileRateLimit>>,
    push: Option<FileRateLimit>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRateLimit {
    count: u32,
    per: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileHttp {
    header_timeout: Option<String>,
    body_timeout: Option<String>,
    idle_timeout: Option<String>,
    max_connections: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileEscalation {
    poll_interval: Option<String>,
    levels: Option<Vec<FileLevel>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileLevel {
    level: i32,
    delay: String,
    channels: Vec<Channel>,
    #[serde(default)]
    targets: Vec<String>,
    #[serde(default)]
    webhooks: Vec<String>,
    #[serde(default)]
    only_during: Option<OnlyDuring>,
}

/// Sets the variables of `.env` in the working directory, if there is one, that are not set
/// already. The command runs it before anything reads the environment, so that `.env` may set
/// every variable Klaxon reads: `KLAXON_CONFIG` (read with the command line) and `RUST_LOG` (read
/// by the logs) as well as those [`Config::load`] reads.
pub fn load_dotenv() -> Result<(), ConfigError> {
    match dotenvy::dotenv() {
        Ok(_) => Ok(()),
        Err(error) if error.not_found() => Ok(()),
        Err(error) => Err(ConfigError::DotEnv(error.to_string())),
    }
}

impl Config {
    /// Loads `file` (if given), then the environment overrides, and validates the result.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut raw = match file {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let (mut listen_from, mut metrics_listen_from) = (None, None);
        for (variable, key) in ENV_OVERRIDES {
            if let Some(value) = std::env::var(variable).ok().filter(|v| !v.is_empty()) {
                let slot = match key {
                    "listen" => {
                        listen_from = Some(Origin::Environment(variable));
                        &mut raw.listen
                    }
                    "metrics_listen" => {
                        metrics_listen_from = Some(Origin::Environment(variable));
                        &mut raw.metrics_listen
                    }
                    "database_url" => &mut raw.database_url,
                    "redis_url" => &mut raw.redis_url,
                    "redis_prefix" => &mut raw.redis_prefix,
                    "public_url" => &mut raw.public_url,
                    "email.username" => {
                        &mut raw.email.get_or_insert_with(Default::default).username
                    }
                    "email.password" => {
                        &mut raw.email.get_or_insert_with(Default::default).password
                    }
                    _ => &mut raw.admin_token,
                };
                *slot = Some(value);
            }
        }
        let mut config = Self::from_raw(raw)?;
        config.listen_from = listen_from.unwrap_or(config.listen_from);
        config.metrics_listen_from = metrics_listen_from.unwrap_or(config.metrics_listen_from);
        Ok(config)
    }

    /// Listens on `addr` rather than the configured address (`serve --listen`). A `public_url`
    /// left to its default follows the address, as it would have from the file.
    pub fn listen_on(&mut self, addr: SocketAddr, from: Origin) {
        if self.public_url == format!("http://{}", self.listen) {
            self.public_url = format!("http://{addr}");
        }
        self.listen = addr;
        self.listen_from = from;
    }

    /// Parses TOML text alone, without `.env` or environment: for tests and `--check`-style use.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        Self::from_raw(parse_toml(text, Path::new("<inline>"))?)
    }

    /// Validates every key, noting each problem and going on with the default in its place, so
    /// that one run reports them all.
    fn from_raw(raw: FileConfig) -> Result<Self, ConfigError> {
        let defaults = Self::default();
        let mut problems = Problems::default();
        let listen_from = match raw.listen {
            Some(_) => Origin::File("listen"),
            None => Origin::Default,
        };
        let metrics_listen_from = match raw.metrics_listen {
            Some(_) => Origin::File("metrics_listen"),
            None => Origin::Default,
        };
        let metrics_listen = raw.metrics_listen.and_then(|text| {
            problems.check(
                text.parse().map(Some).map_err(|_| {
                    invalid(
                        "metrics_listen",
                        format!("{text:?} is not an address like 127.0.0.1:9464"),
                    )
                }),
                None,
            )
        });
        let listen = match raw.listen {
            Some(text) => problems.check(
                text.parse().map_err(|_| {
                    invalid(
                        "listen",
                        format!("{text:?} is not an address like 127.0.0.1:3000"),
                    )
                }),
                defaults.listen,
            ),
            None => defaults.listen,
        };
        let database_url = match raw.database_url {
            Some(text) => problems.check(
                text.parse()
                    .map_err(|message| invalid("database_url", message)),
                defaults.database_url,
            ),
            None => defaults.database_url,
        };
        if let Some(url) = &raw.redis_url {
            if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
                problems.note(invalid(
                    "redis_url",
                    "must start with redis:// or rediss://",
                ));
            }
        }
        let redis_prefix = raw.redis_prefix.unwrap_or_default();
        if redis_prefix.len() > MAX_REDIS_PREFIX_CHARS
            || !redis_prefix.chars().all(is_redis_prefix_char)
        {
            problems.note(invalid(
                "redis_prefix",
                format!(
                    "must be at most {MAX_REDIS_PREFIX_CHARS} letters, digits or `:._-` characters"
                ),
            ));
        }
        if let Some(token) = &raw.admin_token {
            problems.check(check_admin_token(token), ());
        }
        let max_body_bytes = raw.max_body_bytes.unwrap_or(defaults.max_body_bytes);
        if max_body_bytes == 0 {
            problems.note(invalid("max_body_bytes", "must be greater than 0"));
        }
        let poll_interval = problems.check(
            positive_duration(
                "escalation.poll_interval",
                raw.escalation.poll_interval,
                defaults.escalation.poll_interval,
            ),
            defaults.escalation.poll_interval,
        );
        let mut timeout =
            |key, text, default| problems.check(positive_duration(key, text, default), default);
        let http = HttpConfig {
            header_timeout: timeout(
                "http.header_timeout",
                raw.http.header_timeout,
                defaults.http.header_timeout,
            ),
            body_timeout: timeout(
                "http.body_timeout",
                raw.http.body_timeout,
                defaults.http.body_timeout,
            ),
            idle_timeout: timeout(
                "http.idle_timeout",
                raw.http.idle_timeout,
                defaults.http.idle_timeout,
            ),
            max_connections: raw
                .http
                .max_connections
                .unwrap_or(defaults.http.max_connections),
        };
        if http.max_connections == 0 {
            problems.note(invalid("http.max_connections", "must be greater than 0"));
        }
        // Levels are checked against every webhook the file declares, so that a webhook with a
        // problem of its own is not reported again as missing.
        let declared: Vec<String> = raw.webhooks.keys().cloned().collect();
        let mut webhooks = BTreeMap::new();
        for (name, webhook) in raw.webhooks {
            if let Some(webhook) = problems.check(webhook_from_file(&name, webhook).map(Some), None)
            {
                webhooks.insert(name, webhook);
            }
        }
        let policy = match raw.escalation.levels {
            Some(levels) => problems.check(
                policy_from_levels(levels, &declared),
                defaults.escalation.policy,
            ),
            None => defaults.escalation.policy,
        };
        let public_url = match raw.public_url {
            Some(url) => problems.check(check_public_url(url), defaults.public_url),
            None => format!("http://{listen}"),
        };
        let email = problems.check(raw.email.map(email_from_file).transpose(), None);
        let sms = problems.check(providers_from_file("sms", raw.sms.providers), Vec::new());
        let voice = problems.check(
            providers_from_file("voice", raw.voice.providers),
            Vec::new(),
        );
        let push = problems.check(raw.push.map(push_from_file).transpose(), None);
        let integration_rate = match raw.integrations.rate_limit {
            None => DEFAULT_INTEGRATION_RATE,
            Some(limit) => {
                if limit.count == 0 {
                    problems.note(invalid(
                        "integrations.rate_limit.count",
                        "must be greater than 0",
                    ));
                }
                RateLimit {
                    count: limit.count,
                    per: problems.check(
                        positive_duration(
                            "integrations.rate_limit.per",
                            Some(limit.per),
                            DEFAULT_INTEGRATION_RATE.per,
                        ),
                        DEFAULT_INTEGRATION_RATE.per,
                    ),
                }
            }
        };
        let notifications = problems.check(
            notifications_from_file(raw.notifications),
            defaults.notifications,
        );
        problems.finish(Self {
            listen,
            listen_from,
            metrics_listen,
            metrics_listen_from,
            database_url,
            redis_url: raw.redis_url,
            redis_prefix,
            admin_token: raw.admin_token,
            max_body_bytes,
            http,
            escalation: EscalationConfig {
                poll_interval,
                policy,
            },
            public_url,
            email,
            webhooks,
            sms,
            voice,
            push,
            notifications,
            integration_rate,
        })
    }
}

/// An absolute `http(s)` URL, kept without its trailing `/` so that paths join on.
fn check_public_url(url: String) -> Result<String, ConfigError> {
    let trimmed = url.trim_end_matches('/');
    let rest = trimmed
        .strip_prefix("https://")
        .or_else(|| trimmed.strip_prefix("http://"));
    match rest {
        Some(host) if !host.is_empty() && !host.contains(char::is_whitespace) => {
            Ok(trimmed.to_owned())
        }
        _ => Err(invalid(
            "public_url",
            format!("{url:?} is not an absolute http:// or https:// URL"),
        )),
    }
}

fn email_from_file(email: FileEmail) -> Result<EmailConfig, ConfigError> {
    let smtp_host = email
        .smtp_host
        .filter(|host| !host.trim().is_empty())
        .ok_or_else(|| invalid("email.smtp_host", "is required in [email]"))?;
    let from = email
        .from
        .filter(|from| from.contains('@'))
        .ok_or_else(|| {
            invalid(
                "email.from",
                "is required in [email]: an address like klaxon@example.com",
            )
        })?;
    let tls = email.tls.unwrap_or(SmtpTls::Starttls);
    let smtp_port = email.smtp_port.unwrap_or(match tls {
        SmtpTls::Tls => 465,
        SmtpTls::None => 25,
        SmtpTls::Starttls => DEFAULT_SMTP_PORT,
    });
    if email.password.is_some() && email.username.is_none() {
        return Err(invalid(
            "email.username",
            "is required when a password is set",
        ));
    }
    Ok(EmailConfig {
        smtp_host,
        smtp_port,
        tls,
        username: email.username,
        password: email.password,
        from,
    })
}

/// An `http(s)` URL without its trailing `/`, or why not.
fn http_url(key: &str, url: &str) -> Result<String, ConfigError> {
    if !(url.starts_with("http://") || url.starts_with("https://")) || url.contains(' ') {
        return Err(invalid(key, "must be an http:// or https:// URL"));
    }
    Ok(url.trim_end_matches('/').to_owned())
}

fn providers_from_file(
    channel: &str,
    providers: Vec<FileProvider>,
) -> Result<Vec<TwilioProvider>, ConfigError> {
    let mut names = std::collections::HashSet::new();
    providers
        .into_iter()
        .enumerate()
        .map(|(index, file)| {
            let key = |field: &str| format!("{channel}.providers[{index}].{field}");
            if file.name.trim().is_empty() || !names.insert(file.name.clone()) {
                return Err(invalid(key("name"), "must be set, and unique in the list"));
            }
            for (field, value) in [
                ("account_sid", &file.account_sid),
                ("auth_token", &file.auth_token),
            ] {
                if value.trim().is_empty() {
                    return Err(invalid(key(field), "must not be empty"));
                }
            }
            if !crate::domain::is_e164(&file.from) {
                return Err(invalid(
                    key("from"),
                    "must be a phone number in E.164, like +15551234567",
                ));
            }
            Ok(TwilioProvider {
                base_url: http_url(&key("base_url"), &file.base_url)?,
                name: file.name,
                account_sid: file.account_sid,
                auth_token: file.auth_token,
                from: file.from,
            })
        })
        .collect()
}

fn push_from_file(push: FilePush) -> Result<PushConfig, ConfigError> {
    if push.token.as_deref().is_some_and(|t| t.trim().is_empty()) {
        return Err(invalid(
            "push.token",
            "must not be empty; leave it out to send none",
        ));
    }
    Ok(PushConfig {
        ntfy_url: http_url("push.ntfy_url", &push.ntfy_url)?,
        token: push.token,
    })
}

fn webhook_from_file(name: &str, webhook: FileWebhook) -> Result<WebhookConfig, ConfigError> {
    let key = format!("webhooks.{name}");
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(invalid(
            key,
            "a webhook's name is letters, digits, `-` and `_`",
        ));
    }
    if !(webhook.url.starts_with("http://") || webhook.url.starts_with("https://")) {
        return Err(invalid(
            format!("{key}.url"),
            "must be an http:// or https:// URL",
        ));
    }
    if webhook.secret.as_deref().is_some_and(str::is_empty) {
        return Err(invalid(
            format!("{key}.secret"),
            "must not be empty; leave it out to send no signature",
        ));
    }
    Ok(WebhookConfig {
        url: webhook.url,
        format: webhook.format,
        secret: webhook.secret,
    })
}

fn notifications_from_file(file: FileNotifications) -> Result<NotificationConfig, ConfigError> {
    let defaults = NotificationConfig::default();
    let max_attempts = file.max_attempts.unwrap_or(defaults.max_attempts);
    if max_attempts == 0 {
        return Err(invalid(
            "notifications.max_attempts",
            "must be greater than 0",
        ));
    }
    let rate = |channel: &str, file: Option<FileRateLimit>, default: RateLimit| {
        let Some(file) = file else {
            return Ok(default);
        };
        let key = format!("notifications.rate_limits.{channel}");
        if file.count == 0 {
            return Err(invalid(format!("{key}.count"), "must be greater than 0"));
        }
        let per = positive_duration(&format!("{key}.per"), Some(file.per), default.per)?;
        Ok(RateLimit {
            count: file.count,
            per,
        })
    };
    Ok(NotificationConfig {
        max_attempts,
        lease: positive_duration("notifications.lease", file.lease, defaults.lease)?,
        retry_backoff: positive_duration(
            "notifications.retry_backoff",
            file.retry_backoff,
            defaults.retry_backoff,
        )?,
        retry_backoff_cap: positive_duration(
            "notifications.retry_backoff_cap",
            file.retry_backoff_cap,
            defaults.retry_backoff_cap,
        )?,
        link_expiry: positive_duration(
            "notifications.link_expiry",
            file.link_expiry,
            defaults.link_expiry,
        )?,
        email_rate: rate("email", file.rate_limits.email, defaults.email_rate)?,
        webhook_rate: rate("webhook", file.rate_limits.webhook, defaults.webhook_rate)?,
        push_rate: rate("push", file.rate_limits.push, defaults.push_rate)?,
        sms_rates: match file.rate_limits.sms {
            None => defaults.sms_rates,
            Some(limits) if limits.is_empty() => {
                return Err(invalid(
                    "notifications.rate_limits.sms",
                    "must list at least one limit; leave it out for the defaults",
                ))
            }
            Some(limits) => limits
                .into_iter()
                .map(|limit| rate("sms", Some(limit), DEFAULT_SMS_RATES[0]))
                .collect::<Result<_, _>>()?,
        },
        voice_rates: match file.rate_limits.voice {
            None => defaults.voice_rates,
            Some(limits) if limits.is_empty() => {
                return Err(invalid(
                    "notifications.rate_limits.voice",
                    "must list at least one limit; leave it out for the defaults",
                ))
            }
            Some(limits) => limits
                .into_iter()
                .map(|limit| rate("voice", Some(limit), DEFAULT_VOICE_RATES[0]))
                .collect::<Result<_, _>>()?,
        },
    })
}

/// A bootstrap admin token shorter than this is refused: it would be guessable.
pub const MIN_ADMIN_TOKEN_CHARS: usize = 16;

/// Refuses an admin token no client could present: a blank one, one with whitespace around it
/// (a header value loses it) or a control character (a header value cannot hold one), and a
/// guessable one.
fn check_admin_token(token: &str) -> Result<(), ConfigError> {
    if token.trim().is_empty() {
        return Err(invalid("admin_token", "must not be blank"));
    }
    if token.trim() != token || token.chars().any(char::is_control) {
        return Err(invalid(
            "admin_token",
            "must have no whitespace around it and no control characters: clients send it in an `Authorization` header",
        ));
    }
    if token.len() < MIN_ADMIN_TOKEN_CHARS {
        return Err(invalid(
            "admin_token",
            format!("must be at least {MIN_ADMIN_TOKEN_CHARS} characters"),
        ));
    }
    Ok(())
}

/// The longest `redis_prefix` accepted: a namespace, not a place for data.
pub const MAX_REDIS_PREFIX_CHARS: usize = 64;

/// What a `redis_prefix` is made of: plain characters that print the same everywhere and need no
/// quoting in `redis-cli`.
fn is_redis_prefix_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, ':' | '.' | '_' | '-')
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_toml(&text, path)
}

fn parse_toml(text: &str, path: &Path) -> Result<FileConfig, ConfigError> {
    let deserializer = toml::Deserializer::new(text);
    serde_path_to_error::deserialize(deserializer).map_err(|error| {
        let key = error.path().to_string();
        let error = error.into_inner();
        let mut message = error.message().trim().to_owned();
        if let Some(span) = error.span() {
            let (line, column) = line_and_column(text, span.start);
            message = format!("line {line}, column {column}: {message}");
        }
        if key == "." || key.is_empty() {
            ConfigError::Parse {
                path: path.to_owned(),
                message,
            }
        } else {
            ConfigError::Invalid { key, message }
        }
    })
}

/// Where byte `offset` of `text` is, as an editor counts: both from 1, columns in characters.
fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line_start = before.rfind('\n').map_or(0, |newline| newline + 1);
    (
        before.matches('\n').count() + 1,
        before[line_start..].chars().count() + 1,
    )
}

fn parse_duration(key: &str, text: &str) -> Result<Duration, ConfigError> {
    humantime::parse_duration(text).map_err(|error| {
        invalid(
            key,
            format!("{text:?} is not a duration like \"300ms\", \"5m\" or \"1h\" ({error})"),
        )
    })
}

/// `text` as a duration greater than 0, or `default` without one.
fn positive_duration(
    key: &str,
    text: Option<String>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    let Some(text) = text else {
        return Ok(default);
    };
    let duration = parse_duration(key, &text)?;
    if duration.is_zero() {
        return Err(invalid(key, "must be greater than 0"));
    }
    Ok(duration)
}

fn policy_from_levels(
    levels: Vec<FileLevel>,
    webhooks: &[String],
) -> Result<EscalationPolicy, ConfigError> {
    let mut problems = Problems::default();
    let mut parsed = Vec::with_capacity(levels.len());
    for (index, level) in levels.into_iter().enumerate() {
        let key = format!("escalation.levels[{index}]");
        let delay = problems.check(
            parse_duration(&format!("{key}.delay"), &level.delay),
            Duration::ZERO,
        );
        let level = EscalationLevel {
            level: level.level,
            delay,
            channels: level.channels,
            targets: level.targets,
            webhooks: level.webhooks,
            only_during: level.only_during,
        };
        if let Err(problem) = level.check(|name| webhooks.iter().any(|known| known == name)) {
            problems.note(invalid(format!("{key}.{}", problem.field), problem.reason));
        }
        parsed.push(level);
    }
    let policy = problems.check(
        EscalationPolicy::new(parsed)
            .map_err(|error: PolicyError| invalid("escalation.levels", error)),
        EscalationPolicy::standard(),
    );
    problems.finish(policy)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_of(text: &str) -> String {
        Config::from_toml(text).unwrap_err().to_string()
    }

    #[test]
    fn empty_file_means_defaults() {
        let config = Config::from_toml("").unwrap();
        assert_eq!(config.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(config.database_url.as_str(), DEFAULT_DATABASE_URL);
        assert_eq!(config.escalation.poll_interval, DEFAULT_POLL_INTERVAL);
        assert_eq!(config.escalation.policy, EscalationPolicy::standard());
        assert_eq!(config.redis_prefix, "");
        assert_eq!(config.http, HttpConfig::default());
    }

    #[test]
    fn reads_a_redis_prefix() {
        let config = Config::from_toml("redis_prefix = \"staging:klaxon-2.eu_1:\"").unwrap();
        assert_eq!(config.redis_prefix, "staging:klaxon-2.eu_1:");
    }

    #[test]
    fn reads_the_http_limits() {
        let config = Config::from_toml(
            "[http]\nheader_timeout = \"2s\"\nbody_timeout = \"3s\"\nidle_timeout = \"4s\"\nmax_connections = 5",
        )
        .unwrap();
        let expected = HttpConfig {
            header_timeout: Duration::from_secs(2),
            body_timeout: Duration::from_secs(3),
            idle_timeout: Duration::from_secs(4),
            max_connections: 5,
        };
        assert_eq!(config.http, expected);
    }

    #[test]
    fn reads_the_spec_example() {
        let config = Config::from_toml(
            r#"
            listen = "0.0.0.0:8080"
            database_url = "postgres://klaxon@db/klaxon"
            [escalation]
            poll_interval = "1s"
            [[escalation.levels]]
            level = 1
            delay = "300ms"
            channels = ["in_app", "webhook"]
            targets = ["alice", "bob"]
            webhooks = ["ops"]
            [[escalation.levels]]
            level = 2
            delay = "1h"
            channels = ["sms"]
            [webhooks.ops]
            url = "https://hooks.example.com/T1"
            format = "slack"
            secret = "s3cret"
            "#,
        )
        .unwrap();
        assert_eq!(config.listen.port(), 8080);
        assert_eq!(config.escalation.poll_interval, Duration::from_secs(1));
        let levels = config.escalation.policy.levels();
        assert_eq!(levels[0].delay, Duration::from_millis(300));
        assert_eq!(levels[0].channels, [Channel::InApp, Channel::Webhook]);
        assert_eq!(levels[0].targets, ["alice", "bob"]);
        assert_eq!(levels[0].webhooks, ["ops"]);
        assert_eq!(levels[1].delay, Duration::from_secs(3600));
        assert_eq!(config.webhooks["ops"].format, WebhookFormat::Slack);
        assert_eq!(config.public_url, "http://0.0.0.0:8080");
        assert!(!format!("{config:?}").contains("s3cret"));
    }

    #[test]
    fn reads_email_and_notifications() {
        let config = Config::from_toml(
            r#"
            public_url = "https://klaxon.example.com/"
            [email]
            smtp_host = "smtp.example.com"
            tls = "tls"
            username = "klaxon"
            password = "hunter22"
            from = "Klaxon <klaxon@example.com>"
            [notifications]
            max_attempts = 3
            retry_backoff = "2s"
            link_expiry = "1h"
            [notifications.rate_limits]
            email = { count = 5, per = "10m" }
            "#,
        )
        .unwrap();
        assert_eq!(config.public_url, "https://klaxon.example.com");
        let email = config.email.as_ref().unwrap();
        assert_eq!((email.smtp_port, email.tls), (465, SmtpTls::Tls));
        assert!(!format!("{config:?}").contains("hunter22"));
        let notifications = &config.notifications;
        assert_eq!(notifications.max_attempts, 3);
        assert_eq!(notifications.retry_backoff, Duration::from_secs(2));
        assert_eq!(notifications.link_expiry, Duration::from_secs(3600));
        assert_eq!(
            notifications.email_rate,
            RateLimit {
                count: 5,
                per: Duration::from_secs(600)
            }
        );
        assert_eq!(notifications.webhook_rate, DEFAULT_WEBHOOK_RATE);
        assert!(Config::from_toml("").unwrap().email.is_none());
    }

    #[test]
    fn bad_notification_settings_name_their_key() {
        let level =
            |extra: &str| format!("[[escalation.levels]]\nlevel = 1\ndelay = \"1m\"\n{extra}");
        assert!(error_of(&level("channels = [\"webhook\"]")).contains("levels[0].webhooks"));
        assert!(
            error_of(&level("channels = [\"webhook\"]\nwebhooks = [\"nope\"]"))
                .contains("no [webhooks.nope]")
        );
        assert!(
            error_of(&level("channels = [\"email\"]\ntargets = [\" \"]"))
                .contains("levels[0].targets")
        );
        assert!(error_of("public_url = \"klaxon.example.com\"").contains("`public_url`"));
        assert!(error_of("[email]\nfrom = \"a@b.c\"").contains("`email.smtp_host`"));
        assert!(error_of("[email]\nsmtp_host = \"h\"").contains("`email.from`"));
        assert!(
            error_of("[email]\nsmtp_host = \"h\"\nfrom = \"a@b.c\"\ntls = \"ssl\"")
                .contains("email.tls")
        );
        assert!(error_of("[webhooks.ops]\nurl = \"ftp://x\"").contains("`webhooks.ops.url`"));
        assert!(error_of("[notifications]\nmax_attempts = 0").contains("max_attempts"));
        assert!(
            error_of("[notifications.rate_limits]\nemail = { count = 0, per = \"1m\" }")
                .contains("rate_limits.email.count")
        );
    }

    #[test]
    fn bad_values_name_their_key() {
        assert!(error_of("listen = \"nowhere\"").contains("`listen`"));
        assert!(error_of("database_url = \"mysql://x\"").contains("`database_url`"));
        assert!(error_of("database_url = \"sqlite::memory:\"").contains("in-memory"));
        assert!(error_of("[escalation]\npoll_interval = \"soon\"")
            .contains("`escalation.poll_interval`"));
        let bad_delay =
            "[[escalation.levels]]\nlevel = 1\ndelay = \"5 parsecs\"\nchannels = [\"sms\"]";
        assert!(error_of(bad_delay).contains("`escalation.levels[0].delay`"));
        let bad_channel =
            "[[escalation.levels]]\nlevel = 1\ndelay = \"5m\"\nchannels = [\"pigeon\"]";
        assert!(
            error_of(bad_channel).contains("escalation.levels[0].channels"),
            "{}",
            error_of(bad_channel)
        );
        let gap = "[[escalation.levels]]\nlevel = 2\ndelay = \"5m\"\nchannels = [\"sms\"]";
        assert!(error_of(gap).contains("`escalation.levels`"));
        assert!(error_of("redis_prefix = \"a b\"").contains("`redis_prefix`"));
        let long_prefix = format!(
            "redis_prefix = \"{}\"",
            "p".repeat(MAX_REDIS_PREFIX_CHARS + 1)
        );
        assert!(error_of(&long_prefix).contains("`redis_prefix`"));
        assert!(error_of("lisen = \"x\"").contains("lisen"));
        assert!(error_of("[http]\nheader_timeout = \"0s\"").contains("`http.header_timeout`"));
        assert!(error_of("[http]\nidle_timeout = \"later\"").contains("`http.idle_timeout`"));
        assert!(error_of("[http]\nmax_connections = 0").contains("`http.max_connections`"));
        assert!(error_of("listen = 3000").contains("`listen`"));
    }

    #[test]
    fn a_syntax_error_names_its_line_and_column() {
        let error = error_of("listen = \"127.0.0.1:3000\"\n[http\nmax_connections = 5");
        assert!(error.contains("line 2, column 6"), "{error}");
        let error = error_of("[http]\n  max_connections = \"many\"");
        assert!(
            error.contains("`http.max_connections`") && error.contains("line 2"),
            "{error}"
        );
    }

    #[test]
    fn every_problem_is_reported_not_only_the_first() {
        let error = Config::from_toml(
            r#"
            listen = "nowhere"
            admin_token = "short"
            [http]
            max_connections = 0
            [[escalation.levels]]
            level = 1
            delay = "soon"
            channels = ["webhook"]
            webhooks = ["ops"]
            [webhooks.ops]
            url = "ftp://x"
            "#,
        )
        .unwrap_err();
        let keys: Vec<String> = error
            .problems()
            .iter()
            .map(|problem| match problem {
                ConfigError::Invalid { key, .. } => key.clone(),
                other => panic!("not a key's problem: {other}"),
            })
            .collect();
        assert_eq!(
            keys,
            [
                "listen",
                "admin_token",
                "http.max_connections",
                "webhooks.ops.url",
                "escalation.levels[0].delay"
            ]
        );
        assert!(error.to_string().starts_with("5 problems:"), "{error}");
    }

    #[test]
    fn an_admin_token_no_client_could_send_is_refused() {
        let forty_spaces = format!("admin_token = \"{}\"", " ".repeat(40));
        for (toml, says) in [
            ("admin_token = \"\"", "blank"),
            ("admin_token = \"   \"", "blank"),
            (forty_spaces.as_str(), "blank"),
            ("admin_token = \"\\t\\n \"", "blank"),
            ("admin_token = \" padded-admin-token-0123 \"", "whitespace"),
            ("admin_token = \"admin-token-\\u0000-with-nul\"", "control"),
            ("admin_token = \"short\"", "at least"),
        ] {
            let error = error_of(toml);
            assert!(
                error.contains("`admin_token`") && error.contains(says),
                "{toml}: {error}"
            );
        }
        assert!(Config::from_toml("admin_token = \"admin-token-0123456789\"").is_ok());
    }

    #[test]
    fn debug_output_hides_secrets() {
        let mut config = Config::from_toml("database_url = \"postgres://k:hunter2@db/k\"").unwrap();
        config.admin_token = Some("super-secret-admin-token".into());
        let printed = format!("{config:?}");
        assert!(
            !printed.contains("hunter2") && !printed.contains("super-secret"),
            "{printed}"
        );
    }
}
