//! One `Config`, loaded once at start-up from a TOML file and the environment, which
//! [`load_dotenv`] fills from a `.env` file first (SPEC §5), and validated before anything else
//! runs. A bad value is a [`ConfigError`] that names the key at fault; the CLI turns it into exit
//! code 2.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::domain::policy::PolicyError;
use crate::domain::{Channel, EscalationLevel, EscalationPolicy};
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
const ENV_OVERRIDES: [(&str, &str); 5] = [
    ("KLAXON_LISTEN", "listen"),
    ("KLAXON_DATABASE_URL", "database_url"),
    ("KLAXON_REDIS_URL", "redis_url"),
    ("KLAXON_REDIS_PREFIX", "redis_prefix"),
    ("KLAXON_ADMIN_TOKEN", "admin_token"),
];

#[derive(Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub database_url: DatabaseUrl,
    pub redis_url: Option<String>,
    /// Put before every Redis key, ahead of the installation id (docs/engine.md, "Redis").
    pub redis_prefix: String,
    /// The bootstrap admin secret. Not `Debug`-printed: see the manual impl below.
    pub admin_token: Option<String>,
    pub max_body_bytes: usize,
    pub http: HttpConfig,
    pub escalation: EscalationConfig,
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
            .field("database_url", &self.database_url)
            .field("redis_url", &self.redis_url.as_deref().map(redact_password))
            .field("redis_prefix", &self.redis_prefix)
            .field("admin_token", &self.admin_token.as_ref().map(|_| "<set>"))
            .field("max_body_bytes", &self.max_body_bytes)
            .field("http", &self.http)
            .field("escalation", &self.escalation)
            .finish()
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN
                .parse()
                .expect("the default listen address parses"),
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
    database_url: Option<String>,
    redis_url: Option<String>,
    redis_prefix: Option<String>,
    admin_token: Option<String>,
    max_body_bytes: Option<usize>,
    #[serde(default)]
    http: FileHttp,
    #[serde(default)]
    escalation: FileEscalation,
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
        for (variable, key) in ENV_OVERRIDES {
            if let Some(value) = std::env::var(variable).ok().filter(|v| !v.is_empty()) {
                let slot = match key {
                    "listen" => &mut raw.listen,
                    "database_url" => &mut raw.database_url,
                    "redis_url" => &mut raw.redis_url,
                    "redis_prefix" => &mut raw.redis_prefix,
                    _ => &mut raw.admin_token,
                };
                *slot = Some(value);
            }
        }
        Self::from_raw(raw)
    }

    /// Parses TOML text alone, without `.env` or environment: for tests and `--check`-style use.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        Self::from_raw(parse_toml(text, Path::new("<inline>"))?)
    }

    fn from_raw(raw: FileConfig) -> Result<Self, ConfigError> {
        let defaults = Self::default();
        let listen = match raw.listen {
            Some(text) => text.parse().map_err(|_| {
                invalid(
                    "listen",
                    format!("{text:?} is not an address like 127.0.0.1:3000"),
                )
            })?,
            None => defaults.listen,
        };
        let database_url = match raw.database_url {
            Some(text) => text
                .parse()
                .map_err(|message| invalid("database_url", message))?,
            None => defaults.database_url,
        };
        if let Some(url) = &raw.redis_url {
            if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
                return Err(invalid(
                    "redis_url",
                    "must start with redis:// or rediss://",
                ));
            }
        }
        let redis_prefix = raw.redis_prefix.unwrap_or_default();
        if redis_prefix.len() > MAX_REDIS_PREFIX_CHARS
            || !redis_prefix.chars().all(is_redis_prefix_char)
        {
            return Err(invalid(
                "redis_prefix",
                format!(
                    "must be at most {MAX_REDIS_PREFIX_CHARS} letters, digits or `:._-` characters"
                ),
            ));
        }
        if let Some(token) = &raw.admin_token {
            check_admin_token(token)?;
        }
        let max_body_bytes = raw.max_body_bytes.unwrap_or(defaults.max_body_bytes);
        if max_body_bytes == 0 {
            return Err(invalid("max_body_bytes", "must be greater than 0"));
        }
        let poll_interval = positive_duration(
            "escalation.poll_interval",
            raw.escalation.poll_interval,
            defaults.escalation.poll_interval,
        )?;
        let http = HttpConfig {
            header_timeout: positive_duration(
                "http.header_timeout",
                raw.http.header_timeout,
                defaults.http.header_timeout,
            )?,
            body_timeout: positive_duration(
                "http.body_timeout",
                raw.http.body_timeout,
                defaults.http.body_timeout,
            )?,
            idle_timeout: positive_duration(
                "http.idle_timeout",
                raw.http.idle_timeout,
                defaults.http.idle_timeout,
            )?,
            max_connections: raw
                .http
                .max_connections
                .unwrap_or(defaults.http.max_connections),
        };
        if http.max_connections == 0 {
            return Err(invalid("http.max_connections", "must be greater than 0"));
        }
        let policy = match raw.escalation.levels {
            Some(levels) => policy_from_levels(levels)?,
            None => defaults.escalation.policy,
        };
        Ok(Self {
            listen,
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
        })
    }
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
        let message = error.into_inner().message().trim().to_owned();
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

fn policy_from_levels(levels: Vec<FileLevel>) -> Result<EscalationPolicy, ConfigError> {
    let mut parsed = Vec::with_capacity(levels.len());
    for (index, level) in levels.into_iter().enumerate() {
        let key = format!("escalation.levels[{index}]");
        let delay = parse_duration(&format!("{key}.delay"), &level.delay)?;
        if level.channels.is_empty() {
            return Err(invalid(
                format!("{key}.channels"),
                "name at least one channel",
            ));
        }
        parsed.push(EscalationLevel {
            level: level.level,
            delay,
            channels: level.channels,
        });
    }
    EscalationPolicy::new(parsed).map_err(|error: PolicyError| invalid("escalation.levels", error))
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
            [[escalation.levels]]
            level = 2
            delay = "1h"
            channels = ["sms"]
            "#,
        )
        .unwrap();
        assert_eq!(config.listen.port(), 8080);
        assert_eq!(config.escalation.poll_interval, Duration::from_secs(1));
        let levels = config.escalation.policy.levels();
        assert_eq!(levels[0].delay, Duration::from_millis(300));
        assert_eq!(levels[0].channels, [Channel::InApp, Channel::Webhook]);
        assert_eq!(levels[1].delay, Duration::from_secs(3600));
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
