//! `klaxon config check|show`: the configuration as `serve` would read it, through the same
//! loader ([`Config::load`]), so there is no second validator to drift from the first.

use std::path::Path;
use std::time::Duration;

use toml::{Table, Value};

use klaxon::config::{Config, ConfigError, RateLimit, TwilioProvider};
use klaxon::notify::email::EmailSender;
use klaxon::store::url::redact_password;

/// What `config show` prints in place of a secret.
const MASK: &str = "********";

/// Loads and checks the configuration as `serve` does before it opens anything: the file, the
/// environment (`.env` was read by then), the policy, and the channels set up from it. Returns
/// the configuration, or every problem found.
pub fn check(config_file: Option<&Path>) -> Result<Config, ConfigError> {
    let config = Config::load(config_file)?;
    // `serve` builds the email sender at start-up, which refuses what the loader cannot see: a
    // `from` that is no mailbox, a host no certificate can name.
    if let Some(email) = &config.email {
        EmailSender::new(email)?;
    }
    Ok(config)
}

/// A few lines that say what `serve` would do with `config`.
pub fn summary(config: &Config, config_file: Option<&Path>) -> String {
    let source = config_file.map_or_else(
        || "no config file: defaults and the environment".to_owned(),
        |path| path.display().to_string(),
    );
    let levels: Vec<String> = config
        .escalation
        .policy
        .levels()
        .iter()
        .map(|level| {
            let channels: Vec<String> = level
                .channels
                .iter()
                .map(|channel| channel_name(*channel))
                .collect();
            format!(
                "{} after {} ({})",
                level.level,
                humantime::format_duration(level.delay),
                channels.join(", ")
            )
        })
        .collect();
    let configured = |set: bool| if set { "configured" } else { "not configured" };
    let webhooks = match config.webhooks.len() {
        0 => "none".to_owned(),
        _ => config
            .webhooks
            .keys()
            .cloned()
            .collect::<Vec<_>>()
            .join(", "),
    };
    format!(
        "ok: {source}\n\
         listen      {}\n\
         database    {}\n\
         redis       {}\n\
         escalation  {}\n\
         channels    email {}, sms {}, voice {}, push {}; webhooks: {}\n",
        config.listen,
        config.database_url,
        config
            .redis_url
            .as_deref()
            .map_or_else(|| "disabled".to_owned(), redact_password),
        levels.join("; "),
        configured(config.email.is_some()),
        configured(!config.sms.is_empty()),
        configured(!config.voice.is_empty()),
        configured(config.push.is_some()),
        webhooks,
    )
}

fn channel_name(channel: klaxon::domain::Channel) -> String {
    serde_json::to_value(channel)
        .ok()
        .and_then(|value| value.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// The effective configuration as TOML, in the file's keys, every secret replaced by [`MASK`]:
/// tokens, passwords, signing secrets, provider auth tokens, the password of a database or Redis
/// URL, and the path of a webhook URL (Slack's carries its secret there).
pub fn show(config: &Config) -> Result<String, toml::ser::Error> {
    let mut root = Table::new();
    root.insert("listen".into(), config.listen.to_string().into());
    if let Some(addr) = config.metrics_listen {
        root.insert("metrics_listen".into(), addr.to_string().into());
    }
    root.insert(
        "database_url".into(),
        mask_url_password(config.database_url.as_str()).into(),
    );
    if let Some(url) = &config.redis_url {
        root.insert("redis_url".into(), mask_url_password(url).into());
    }
    root.insert("redis_prefix".into(), config.redis_prefix.clone().into());
    if config.admin_token.is_some() {
        root.insert("admin_token".into(), MASK.into());
    }
    root.insert("max_body_bytes".into(), count(config.max_body_bytes));
    root.insert("public_url".into(), config.public_url.clone().into());

    let http = &config.http;
    root.insert(
        "http".into(),
        table([
            ("header_timeout", duration(http.header_timeout)),
            ("body_timeout", duration(http.body_timeout)),
            ("idle_timeout", duration(http.idle_timeout)),
            ("max_connections", count(http.max_connections)),
        ]),
    );

    let levels = config
        .escalation
        .policy
        .levels()
        .iter()
        .map(|level| {
            let mut entry = Table::new();
            entry.insert("level".into(), Value::Integer(level.level.into()));
            entry.insert("delay".into(), duration(level.delay));
            let channels = level.channels.iter().map(|c| channel_name(*c).into());
            entry.insert("channels".into(), Value::Array(channels.collect()));
            if !level.targets.is_empty() {
                entry.insert("targets".into(), level.targets.clone().into());
            }
            if !level.webhooks.is_empty() {
                entry.insert("webhooks".into(), level.webhooks.clone().into());
            }
            Value::Table(entry)
        })
        .collect();
    root.insert(
        "escalation".into(),
        table([
            ("poll_interval", duration(config.escalation.poll_interval)),
            ("levels", Value::Array(levels)),
        ]),
    );

    if let Some(email) = &config.email {
        let mut entry = table([
            ("smtp_host", email.smtp_host.clone().into()),
            ("smtp_port", Value::Integer(email.smtp_port.into())),
            ("tls", format!("{:?}", email.tls).to_lowercase().into()),
            ("from", email.from.clone().into()),
        ]);
        if let (Value::Table(entry), Some(username)) = (&mut entry, &email.username) {
            entry.insert("username".into(), username.clone().into());
            if email.password.is_some() {
                entry.insert("password".into(), MASK.into());
            }
        }
        root.insert("email".into(), entry);
    }

    if !config.webhooks.is_empty() {
        let webhooks = config
            .webhooks
            .iter()
            .map(|(name, webhook)| {
                let mut entry = table([
                    ("url", mask_url_path(&webhook.url).into()),
                    (
                        "format",
                        format!("{:?}", webhook.format).to_lowercase().into(),
                    ),
                ]);
                if let (Value::Table(entry), Some(_)) = (&mut entry, &webhook.secret) {
                    entry.insert("secret".into(), MASK.into());
                }
                (name.clone(), entry)
            })
            .collect();
        root.insert("webhooks".into(), Value::Table(webhooks));
    }

    for (key, providers) in [("sms", &config.sms), ("voice", &config.voice)] {
        if !providers.is_empty() {
            let providers = providers.iter().map(provider).collect();
            root.insert(key.into(), table([("providers", Value::Array(providers))]));
        }
    }

    if let Some(push) = &config.push {
        let mut entry = table([("ntfy_url", push.ntfy_url.clone().into())]);
        if let (Value::Table(entry), Some(_)) = (&mut entry, &push.token) {
            entry.insert("token".into(), MASK.into());
        }
        root.insert("push".into(), entry);
    }

    let notifications = &config.notifications;
    root.insert(
        "notifications".into(),
        table([
            (
                "max_attempts",
                Value::Integer(notifications.max_attempts.into()),
            ),
            ("lease", duration(notifications.lease)),
            ("retry_backoff", duration(notifications.retry_backoff)),
            (
                "retry_backoff_cap",
                duration(notifications.retry_backoff_cap),
            ),
            ("link_expiry", duration(notifications.link_expiry)),
            (
                "rate_limits",
                table([
                    ("email", rate(notifications.email_rate)),
                    ("webhook", rate(notifications.webhook_rate)),
                    ("push", rate(notifications.push_rate)),
                    ("sms", rates(&notifications.sms_rates)),
                    ("voice", rates(&notifications.voice_rates)),
                ]),
            ),
        ]),
    );
    root.insert(
        "integrations".into(),
        table([("rate_limit", rate(config.integration_rate))]),
    );
    toml::to_string(&root)
}

fn table<const N: usize>(entries: [(&str, Value); N]) -> Value {
    Value::Table(
        entries
            .into_iter()
            .map(|(key, value)| (key.to_owned(), value))
            .collect(),
    )
}

fn duration(duration: Duration) -> Value {
    humantime::format_duration(duration).to_string().into()
}

/// A count as a TOML integer; one beyond `i64` (which no limit reaches) shows as the largest.
fn count(value: usize) -> Value {
    Value::Integer(i64::try_from(value).unwrap_or(i64::MAX))
}

fn rate(limit: RateLimit) -> Value {
    table([
        ("count", Value::Integer(limit.count.into())),
        ("per", duration(limit.per)),
    ])
}

fn rates(limits: &[RateLimit]) -> Value {
    Value::Array(limits.iter().copied().map(rate).collect())
}

fn provider(provider: &TwilioProvider) -> Value {
    table([
        ("name", provider.name.clone().into()),
        ("base_url", provider.base_url.clone().into()),
        ("account_sid", provider.account_sid.clone().into()),
        ("auth_token", MASK.into()),
        ("from", provider.from.clone().into()),
    ])
}

/// `scheme://user:secret@host/…` → `scheme://user:********@host/…`.
fn mask_url_password(url: &str) -> String {
    redact_password(url).replacen(":***@", &format!(":{MASK}@"), 1)
}

/// `https://hooks.example.com/T0/B0/secret` → `https://hooks.example.com/********`.
fn mask_url_path(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return MASK.to_owned();
    };
    match rest.split_once('/') {
        Some((host, path)) if !path.is_empty() => format!("{scheme}://{host}/{MASK}"),
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn show_masks_every_secret_and_reads_back() {
        let config = Config::from_toml(
            r#"
            database_url = "postgres://klaxon:db-pass-1@db/klaxon"
            redis_url = "redis://:redis-pass-2@cache:6379/0"
            admin_token = "admin-token-secret-3"
            [[escalation.levels]]
            level = 1
            delay = "90s"
            channels = ["webhook", "email"]
            webhooks = ["ops"]
            [webhooks.ops]
            url = "https://hooks.slack.com/services/T0/B0/slack-secret-4"
            format = "slack"
            secret = "signing-secret-5"
            [email]
            smtp_host = "smtp.example.com"
            username = "klaxon"
            password = "smtp-pass-6"
            from = "klaxon@example.com"
            [[sms.providers]]
            name = "twilio"
            base_url = "https://api.twilio.com"
            account_sid = "AC123"
            auth_token = "twilio-token-7"
            from = "+15551234567"
            [push]
            ntfy_url = "https://ntfy.example.com"
            token = "tk_push-secret-8"
            "#,
        )
        .expect("a valid configuration");
        let shown = show(&config).expect("serializes");
        for secret in [
            "db-pass-1",
            "redis-pass-2",
            "admin-token-secret-3",
            "slack-secret-4",
            "signing-secret-5",
            "smtp-pass-6",
            "twilio-token-7",
            "push-secret-8",
        ] {
            assert!(!shown.contains(secret), "{secret} shown:\n{shown}");
        }
        assert!(
            shown.contains("postgres://klaxon:********@db/klaxon"),
            "{shown}"
        );
        assert!(shown.contains("delay = \"1m 30s\""), "{shown}");
        let shown: Table = toml::from_str(&shown).expect("show prints TOML");
        assert_eq!(shown["email"]["username"].as_str(), Some("klaxon"));
        assert_eq!(
            shown["sms"]["providers"][0]["auth_token"].as_str(),
            Some(MASK)
        );
    }

    #[test]
    fn the_defaults_read_back_as_themselves() {
        let defaults = Config::default();
        let shown = show(&defaults).expect("serializes");
        let read = Config::from_toml(&shown).expect("what show prints is a valid file");
        assert_eq!(show(&read).expect("serializes"), shown);
    }
}
