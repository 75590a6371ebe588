//! A small client of Klaxon's HTTP API: where the server is, the token to present, and every
//! error answer turned into one sentence an operator can act on.

use std::path::Path;
use std::time::Duration;

use reqwest::{Method, StatusCode, Url};
use serde_json::Value;

use klaxon::config::{Config, ConfigError};

/// How long a request may take, connecting included, before the command gives up.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the server is and who is asking: `--url`/`KLAXON_URL`, `--token`/`KLAXON_TOKEN`.
#[derive(Debug, clap::Args)]
pub struct Remote {
    /// The server's base URL [default: http:// and the configured `listen` address]
    #[arg(long, env = "KLAXON_URL", global = true)]
    url: Option<String>,
    /// An API token (`klx_…`); `klaxon token create` makes one.
    #[arg(long, env = "KLAXON_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
}

impl Remote {
    /// A client of the server named by `--url`, or else of the one this host's configuration
    /// (`config_file`, the environment) would serve, on loopback when it listens on every
    /// address.
    pub fn client(self, config_file: Option<&Path>) -> Result<Client, Box<dyn std::error::Error>> {
        let url = match self.url {
            Some(url) => url,
            None => default_url(config_file)?,
        };
        let token = self.token.filter(|token| !token.is_empty());
        Ok(Client::new(&url, token)?)
    }
}

fn default_url(config_file: Option<&Path>) -> Result<String, ConfigError> {
    let mut listen = Config::load(config_file)?.listen;
    if listen.ip().is_unspecified() {
        listen.set_ip(if listen.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    Ok(format!("http://{listen}"))
}

/// Why a request got no answer it could use. The server's own message is always kept.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("{0:?} is not an http:// or https:// URL")]
    BadUrl(String),
    #[error("no API token: pass --token or set KLAXON_TOKEN")]
    NoToken,
    #[error("cannot reach Klaxon at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("the token was refused: {0}")]
    Unauthorized(String),
    #[error("not allowed: {0}")]
    Forbidden(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("the incident is {status}, so {action} was refused: {message}")]
    InvalidTransition {
        status: String,
        action: String,
        message: String,
    },
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    #[error("the server answered {status}: {message}")]
    Answered { status: StatusCode, message: String },
}

impl RemoteError {
    /// Whether the request itself was refused (a bad URL or token, an unknown id, an action the
    /// state machine refuses): the caller must change it, not retry it.
    pub fn is_refusal(&self) -> bool {
        match self {
            Self::BadUrl(_)
            | Self::NoToken
            | Self::Unauthorized(_)
            | Self::Forbidden(_)
            | Self::NotFound(_)
            | Self::InvalidTransition { .. } => true,
            Self::Answered { status, .. } => status.is_client_error(),
            Self::Unreachable { .. } | Self::Unavailable(_) => false,
        }
    }

    /// The error an answer other than 2xx means, from its `{"error": {...}}` body.
    fn from_answer(status: StatusCode, body: &str) -> Self {
        let body: Value = serde_json::from_str(body).unwrap_or(Value::Null);
        let error = &body["error"];
        let message = error["message"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| status.to_string());
        match status {
            StatusCode::UNAUTHORIZED => Self::Unauthorized(message),
            StatusCode::FORBIDDEN => Self::Forbidden(message),
            StatusCode::NOT_FOUND => Self::NotFound(message),
            StatusCode::SERVICE_UNAVAILABLE => Self::Unavailable(message),
            StatusCode::CONFLICT if error["code"] == "invalid_transition" => {
                Self::InvalidTransition {
                    status: error["status"].as_str().unwrap_or("?").to_owned(),
                    action: error["action"].as_str().unwrap_or("?").to_owned(),
                    message,
                }
            }
            status => Self::Answered { status, message },
        }
    }
}

/// One server, one token.
pub struct Client {
    http: reqwest::Client,
    base: Url,
    token: Option<String>,
}

impl Client {
    pub fn new(url: &str, token: Option<String>) -> Result<Self, RemoteError> {
        let base = Url::parse(url)
            .ok()
            .filter(|base| matches!(base.scheme(), "http" | "https") && base.has_host())
            .ok_or_else(|| RemoteError::BadUrl(url.to_owned()))?;
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("klaxon-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|error| RemoteError::Unreachable {
                url: url.to_owned(),
                reason: error.to_string(),
            })?;
        Ok(Self { http, base, token })
    }

    /// `GET` of `path` (segments joined with `/`, each escaped) with `query`: the body as sent.
    pub async fn get(
        &self,
        path: &[&str],
        query: &[(&str, String)],
    ) -> Result<String, RemoteError> {
        self.send(Method::GET, path, query, None).await
    }

    pub async fn post(&self, path: &[&str], body: Value) -> Result<String, RemoteError> {
        self.send(Method::POST, path, &[], Some(body)).await
    }

    pub async fn delete(&self, path: &[&str]) -> Result<String, RemoteError> {
        self.send(Method::DELETE, path, &[], None).await
    }

    async fn send(
        &self,
        method: Method,
        path: &[&str],
        query: &[(&str, String)],
        body: Option<Value>,
    ) -> Result<String, RemoteError> {
        let token = self.token.as_deref().ok_or(RemoteError::NoToken)?;
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|()| RemoteError::BadUrl(self.base.to_string()))?
            .pop_if_empty()
            .extend(path);
        let mut request = self.http.request(method, url).bearer_auth(token);
        if !query.is_empty() {
            request = request.query(query);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let unreachable = |error: reqwest::Error| RemoteError::Unreachable {
            url: self.base.as_str().trim_end_matches('/').to_owned(),
            reason: plain_reason(&error),
        };
        let response = request.send().await.map_err(unreachable)?;
        let status = response.status();
        let text = response.text().await.map_err(unreachable)?;
        if status.is_success() {
            Ok(text)
        } else {
            Err(RemoteError::from_answer(status, &text))
        }
    }
}

/// The innermost cause of a failed request ("Connection refused (os error 111)"), which says
/// more than reqwest's "error sending request".
fn plain_reason(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        return format!("no answer within {REQUEST_TIMEOUT:?}");
    }
    let mut cause: &dyn std::error::Error = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}

/// `body` as JSON, or why the server's answer is not what Klaxon answers.
pub fn parse(body: &str) -> Result<Value, RemoteError> {
    serde_json::from_str(body).map_err(|error| RemoteError::Answered {
        status: StatusCode::OK,
        message: format!("the answer is not JSON ({error}); is this a Klaxon server?"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_answers_are_said_plainly() {
        let conflict = RemoteError::from_answer(
            StatusCode::CONFLICT,
            r#"{"error":{"code":"invalid_transition","message":"cannot acknowledge","status":"ACKNOWLEDGED","action":"acknowledge"}}"#,
        );
        assert_eq!(
            conflict.to_string(),
            "the incident is ACKNOWLEDGED, so acknowledge was refused: cannot acknowledge"
        );
        let refused = RemoteError::from_answer(StatusCode::UNAUTHORIZED, "not json");
        assert!(refused.to_string().starts_with("the token was refused"));
        assert!(refused.is_refusal());
        assert!(!RemoteError::from_answer(StatusCode::SERVICE_UNAVAILABLE, "").is_refusal());
    }

    #[test]
    fn only_http_urls_are_taken() {
        assert!(Client::new("http://127.0.0.1:3000", None).is_ok());
        assert!(matches!(
            Client::new("127.0.0.1:3000", None),
            Err(RemoteError::BadUrl(_))
        ));
    }
}
