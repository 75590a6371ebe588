//! Which backend a `database_url` names, decided once, when the configuration is read.

use std::fmt;
use std::str::FromStr;

use sqlx::postgres::PgConnectOptions;
use sqlx::sqlite::SqliteConnectOptions;

/// A database URL, checked and sorted by backend.
#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// `sqlite://path` (or `sqlite:path`): the embedded backend, one file.
    Sqlite(String),
    /// `postgres://…` or `postgresql://…`: the production backend.
    Postgres(String),
}

impl DatabaseUrl {
    /// The URL as given, password included: for connecting, never for logs.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Sqlite(url) | Self::Postgres(url) => url,
        }
    }
}

impl DatabaseUrl {
    /// What an operator needs to find the database, with no secret: the SQLite file's absolute
    /// path, or PostgreSQL's host, port and database.
    pub fn describe(&self) -> String {
        match self {
            Self::Sqlite(url) => match SqliteConnectOptions::from_str(url) {
                Ok(options) => {
                    let file = options.get_filename();
                    let file = std::path::absolute(file).unwrap_or_else(|_| file.to_owned());
                    format!("SQLite file {}", file.display())
                }
                Err(_) => format!("SQLite {url}"),
            },
            Self::Postgres(url) => match PgConnectOptions::from_str(url) {
                Ok(options) => format!(
                    "PostgreSQL host {} port {} database {}",
                    options.get_host(),
                    options.get_port(),
                    options.get_database().unwrap_or("(the user's)")
                ),
                Err(_) => format!("PostgreSQL {}", redact_password(url)),
            },
        }
    }
}

impl FromStr for DatabaseUrl {
    type Err = String;

    fn from_str(url: &str) -> Result<Self, Self::Err> {
        if url.starts_with("sqlite:") {
            if url.contains(":memory:") || url.contains("mode=memory") {
                return Err("an in-memory SQLite database loses every incident when Klaxon stops; name a file, like sqlite://klaxon.db".to_owned());
            }
            Ok(Self::Sqlite(url.to_owned()))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Self::Postgres(url.to_owned()))
        } else {
            Err("must start with sqlite:// or postgres:// (or postgresql://)".to_owned())
        }
    }
}

/// Shows the URL with its password masked: `postgres://user:***@host/db`.
impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact_password(self.as_str()))
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// `postgres://user:secret@host/db` → `postgres://user:***@host/db`, for logs.
pub fn redact_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((userinfo, host)) = rest.split_once('@') else {
        return url.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorts_by_scheme_and_refuses_the_rest() {
        assert!(matches!(
            "sqlite://k.db".parse(),
            Ok(DatabaseUrl::Sqlite(_))
        ));
        assert!(matches!(
            "postgresql://k@db/k".parse(),
            Ok(DatabaseUrl::Postgres(_))
        ));
        assert!("mysql://x".parse::<DatabaseUrl>().is_err());
        assert!("sqlite::memory:".parse::<DatabaseUrl>().is_err());
    }

    #[test]
    fn printing_masks_the_password() {
        let url: DatabaseUrl = "postgres://k:hunter2@db/k".parse().unwrap();
        assert_eq!(url.to_string(), "postgres://k:***@db/k");
        assert_eq!(url.as_str(), "postgres://k:hunter2@db/k");
    }
}
