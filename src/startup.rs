//! The start-up block: a few info lines that say what a starting process runs with (version and
//! commit, addresses, database, Redis, the policy, each channel), and a warning for each level
//! that uses a channel the configuration does not set up. No secret is ever logged.

use std::net::SocketAddr;

use crate::config::Config;
use crate::domain::Channel;

/// The commit the binary was built from (`build.rs`), or `unknown` outside a git checkout.
pub const COMMIT: &str = env!("KLAXON_COMMIT");

/// The addresses the process bound, if it serves the API.
pub struct Bound {
    pub api: Option<SocketAddr>,
    pub metrics: Option<SocketAddr>,
}

/// Logs the start-up block. `redis_up` is whether Redis answered just now (`None`: disabled).
pub fn log_block(config: &Config, bound: Bound, redis_up: Option<bool>) {
    tracing::info!("Klaxon {} (commit {COMMIT})", env!("CARGO_PKG_VERSION"));
    match bound.api {
        Some(addr) => tracing::info!("listen: {addr} (set by {})", config.listen_from),
        None => tracing::info!("listen: none, the worker alone"),
    }
    match bound.metrics {
        Some(addr) => tracing::info!("metrics: GET /metrics without a token on {addr}"),
        None => tracing::info!("metrics: on the API only, with a token (metrics_listen unset)"),
    }
    tracing::info!("database: {}", config.database_url.describe());
    let redis = match redis_up {
        None => "disabled",
        Some(true) => "up",
        Some(false) => "down (escalations are found by polling the database until it answers)",
    };
    tracing::info!("redis: {redis}");
    log_policy(config);
    log_channels(config);
}

/// Logs the policy's levels, and warns of each level that uses a channel not set up.
pub fn log_policy(config: &Config) {
    for level in config.escalation.policy.levels() {
        let channels: Vec<&str> = level.channels.iter().map(|c| c.as_str()).collect();
        let targets = match level.targets.len() {
            0 => "every active responder and admin".to_owned(),
            _ => level.targets.join(", "),
        };
        tracing::info!(
            "escalation level {}: after {}, channels {}, targets {}",
            level.level,
            humantime::format_duration(level.delay),
            channels.join(", "),
            targets
        );
        for channel in &level.channels {
            if !configured(config, *channel) {
                tracing::warn!(
                    "escalation level {} uses the {} channel, which is not configured: its notifications will fail",
                    level.level,
                    channel.as_str()
                );
            }
        }
    }
}

/// Whether `config` sets up `channel`. A level's named webhooks are checked by the loader; the
/// channel itself always works for a person's own webhook.
fn configured(config: &Config, channel: Channel) -> bool {
    match channel {
        Channel::Email => config.email.is_some(),
        Channel::Sms => !config.sms.is_empty(),
        Channel::Voice => !config.voice.is_empty(),
        Channel::Push => config.push.is_some(),
        Channel::InApp | Channel::Webhook | Channel::Personal => true,
    }
}

fn log_channels(config: &Config) {
    let not_configured = || "not configured".to_owned();
    let email = config.email.as_ref().map_or_else(not_configured, |email| {
        format!("configured (SMTP {}:{})", email.smtp_host, email.smtp_port)
    });
    tracing::info!("channel email: {email}");
    for (channel, providers) in [("sms", &config.sms), ("voice", &config.voice)] {
        let names: Vec<&str> = providers.iter().map(|p| p.name.as_str()).collect();
        match names.len() {
            0 => tracing::info!("channel {channel}: not configured"),
            _ => tracing::info!(
                "channel {channel}: configured (providers {})",
                names.join(", ")
            ),
        }
    }
    let push = config.push.as_ref().map_or_else(not_configured, |push| {
        format!("configured (ntfy {})", push.ntfy_url)
    });
    tracing::info!("channel push: {push}");
    let webhooks: Vec<&str> = config.webhooks.keys().map(String::as_str).collect();
    match webhooks.len() {
        0 => tracing::info!("channel webhook: no [webhooks.<name>] configured"),
        _ => tracing::info!("channel webhook: configured ({})", webhooks.join(", ")),
    }
}
