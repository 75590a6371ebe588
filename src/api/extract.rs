//! Request extractors that reject bad input with SPEC §4's errors instead of axum's plain text:
//! JSON bodies (415 without a JSON content type, 413 over the limit, 400 naming the field at
//! fault), UUID path ids and query strings.
//!
//! Both parsers refuse a NUL character in any string, so no handler has to remember it:
//! PostgreSQL cannot store one in `text` or `jsonb` (it would answer 500) and SQLite would keep
//! it, so every field is refused alike on both backends, with a 400 that names it.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::Value;
use uuid::Uuid;

use super::ApiError;

/// A JSON request body, required.
pub struct JsonBody<T>(pub T);

/// A JSON request body that may be left out entirely (no body, an empty one, or JSON `null`):
/// then `T::default()`.
pub struct OptionalJsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let (bytes, json) = read_body(request, state).await?;
        if bytes.is_empty() {
            return Err(ApiError::BadRequest("a JSON body is required".into()));
        }
        if !json {
            return Err(unsupported_media_type());
        }
        parse(&bytes).map(Self)
    }
}

impl<S, T> FromRequest<S> for OptionalJsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Default,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let (bytes, json) = read_body(request, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self(T::default()));
        }
        if !json {
            return Err(unsupported_media_type());
        }
        parse::<Option<T>>(&bytes).map(|body| Self(body.unwrap_or_default()))
    }
}

fn unsupported_media_type() -> ApiError {
    ApiError::UnsupportedMediaType(
        "send the body as JSON with `Content-Type: application/json`".into(),
    )
}

/// The body (within the configured limit) and whether it was declared JSON.
async fn read_body<S: Send + Sync>(request: Request, state: &S) -> Result<(Bytes, bool), ApiError> {
    let json = is_json(request.headers());
    let bytes = Bytes::from_request(request, state)
        .await
        .map_err(body_error)?;
    Ok((bytes, json))
}

fn is_json(headers: &HeaderMap) -> bool {
    let Some(content_type) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

fn body_error(rejection: BytesRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge("the request body is larger than this server accepts".into())
    } else {
        ApiError::BadRequest(format!(
            "cannot read the request body: {}",
            rejection.body_text()
        ))
    }
}

/// Why a string holding a NUL is refused, wherever it is sent.
pub(crate) const NUL_REFUSED: &str = "must not contain a NUL character (\\u0000)";

/// How a NUL is written in JSON text: as an escape, since a raw one is a syntax error.
const ESCAPED_NUL: &[u8] = b"\\u0000";

fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if let Some(path) = field_with_nul(bytes) {
        return Err(ApiError::BadRequest(if path.is_empty() {
            format!("invalid body: {NUL_REFUSED}")
        } else {
            format!("invalid `{path}`: {NUL_REFUSED}")
        }));
    }
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        ApiError::BadRequest(if inner.is_syntax() || inner.is_eof() {
            let at = if path == "." {
                String::new()
            } else {
                format!(" at `{path}`")
            };
            format!("the body is not valid JSON{at}: {inner}")
        } else if path == "." {
            format!("invalid body: {inner}")
        } else {
            format!("invalid `{path}`: {inner}")
        })
    })?;
    deserializer
        .end()
        .map_err(|error| ApiError::BadRequest(format!("the body is not valid JSON: {error}")))?;
    Ok(value)
}

/// The path of the first string or key in a JSON body that holds a NUL (`""` for the body
/// itself). Bodies without the escape, nearly all of them, are only scanned; the others are read
/// into a `Value` to find the field. A body that is not JSON is left to [`parse`] to describe.
pub(crate) fn field_with_nul(bytes: &[u8]) -> Option<String> {
    if !bytes
        .windows(ESCAPED_NUL.len())
        .any(|window| window == ESCAPED_NUL)
    {
        return None;
    }
    let value: Value = serde_json::from_slice(bytes).ok()?;
    path_to_nul(&value, "")
}

fn path_to_nul(value: &Value, path: &str) -> Option<String> {
    match value {
        Value::String(text) => text.contains('\0').then(|| path.to_owned()),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(index, item)| path_to_nul(item, &format!("{path}[{index}]"))),
        Value::Object(fields) => fields.iter().find_map(|(key, item)| {
            let escaped = key.escape_debug();
            let path = if path.is_empty() {
                escaped.to_string()
            } else {
                format!("{path}.{escaped}")
            };
            if key.contains('\0') {
                Some(path)
            } else {
                path_to_nul(item, &path)
            }
        }),
        Value::Null | Value::Bool(_) | Value::Number(_) => None,
    }
}

/// An id from the path, which must be a UUID.
pub struct IdPath(pub Uuid);

impl<S: Send + Sync> FromRequestParts<S> for IdPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let axum::extract::Path(raw) =
            axum::extract::Path::<String>::from_request_parts(parts, state)
                .await
                .map_err(|rejection| ApiError::BadRequest(rejection.body_text()))?;
        Uuid::parse_str(&raw)
            .map(Self)
            .map_err(|_| ApiError::BadRequest(format!("`id` must be a UUID, got {raw:?}")))
    }
}

/// Several values from the path (ids of a resource and its parent), with a malformed one answered
/// by a JSON 400 that names it, as every other input error is.
pub struct PathParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for PathParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(params)| Self(params))
            .map_err(|rejection| ApiError::BadRequest(rejection.body_text()))
    }
}

/// A query string, with unknown or malformed parameters answered by a 400 that names them.
pub struct QueryParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or_default();
        if let Some((name, _)) = form_urlencoded::parse(query.as_bytes())
            .find(|(name, value)| name.contains('\0') || value.contains('\0'))
        {
            return Err(ApiError::BadRequest(format!(
                "invalid query parameter `{}`: {NUL_REFUSED}",
                name.escape_debug()
            )));
        }
        let deserializer =
            serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(deserializer)
            .map(Self)
            .map_err(|error| {
                let path = error.path().to_string();
                let inner = error.into_inner();
                if path == "." {
                    ApiError::BadRequest(format!("invalid query string: {inner}"))
                } else {
                    ApiError::BadRequest(format!("invalid query parameter `{path}`: {inner}"))
                }
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nul_is_found_by_its_path_and_an_escaped_backslash_is_not_one() {
        let found = |body: &str| field_with_nul(body.as_bytes());
        assert_eq!(found(r#"{"text":"a\u0000b"}"#).as_deref(), Some("text"));
        assert_eq!(
            found(r#"{"a":{"b":["x","\u0000"]}}"#).as_deref(),
            Some("a.b[1]")
        );
        assert_eq!(found(r#"{"k\u0000":1}"#).as_deref(), Some("k\\0"));
        assert_eq!(found(r#""\u0000""#).as_deref(), Some(""));
        assert_eq!(
            found(r#"{"text":"\\u0000"}"#),
            None,
            "a backslash, then u0000"
        );
        assert_eq!(found(r#"{"text":"\u0000"#), None, "not JSON: parse says so");
    }
}
