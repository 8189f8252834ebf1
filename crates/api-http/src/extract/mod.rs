//! Request extractors that fail in the contract's envelope: JSON bodies, paths and queries.
//!
//! Text from outside may hold any Unicode character but NUL (U+0000): PostgreSQL can store it
//! neither in `text` nor in `jsonb`, so both stores refuse it here, the same way, before anything
//! is stored (`422` naming the field in a body, `400` naming the parameter in a query).

use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::error::PathError;
use actix_web::http::header;
use actix_web::{web, FromRequest, HttpRequest};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::{ApiError, ErrorKind};
use fields::InputError;

mod fields;

/// Default upper bound on a request body.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;
/// Deepest nesting a JSON body may have.
pub const MAX_JSON_DEPTH: usize = 32;

/// The body size limit, as app data; [`DEFAULT_MAX_BODY_BYTES`] when absent.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub usize);

/// A JSON body deserialized strictly: `415` unless it is JSON, `413` past the size limit,
/// `400` when it does not parse, `422` naming the field when it parses but does not fit
/// (wrong type, missing or unknown field). An empty body reads as `{}`.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned + 'static> FromRequest for ApiJson<T> {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let limit = req
            .app_data::<BodyLimit>()
            .map_or(DEFAULT_MAX_BODY_BYTES, |l| l.0);
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap_or("").to_owned());
        let declared_length = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        let mut payload = payload.take();
        Box::pin(async move {
            if declared_length.is_some_and(|n| n > limit) {
                return Err(too_large(limit));
            }
            let mut body = web::BytesMut::new();
            while let Some(chunk) = payload.next().await {
                let chunk = chunk.map_err(|e| {
                    tracing::debug!(error = %e, "cannot read a request body");
                    ApiError::bad_request("the request body could not be read whole")
                })?;
                if body.len() + chunk.len() > limit {
                    return Err(too_large(limit));
                }
                body.extend_from_slice(&chunk);
            }
            if body.iter().all(u8::is_ascii_whitespace) {
                return parse(b"{}").map(ApiJson);
            }
            if !content_type.as_deref().is_some_and(is_json) {
                return Err(ApiError::new(
                    ErrorKind::UnsupportedMediaType,
                    "the request body must be JSON (Content-Type: application/json)",
                ));
            }
            check_depth(&body)?;
            parse(&body).map(ApiJson)
        })
    }
}

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        ErrorKind::PayloadTooLarge,
        format!("the request body is larger than {limit} bytes"),
    )
}

fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Refuses bodies nested deeper than [`MAX_JSON_DEPTH`] before they are parsed.
fn check_depth(body: &[u8]) -> Result<(), ApiError> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in body {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > MAX_JSON_DEPTH {
                    return Err(ApiError::bad_request(format!(
                        "the JSON body is nested deeper than {MAX_JSON_DEPTH} levels"
                    )));
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// Parses in two steps so the status is right: syntax first (`400`), then shape (`422`).
fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("malformed JSON: {e}")))?;
    if !value.is_object() {
        return Err(ApiError::validation(domain::ValidationErrors::single(
            "body",
            "must be a JSON object",
        )));
    }
    if let Some(field) = nul_in(&value, "") {
        return Err(ApiError::validation(domain::ValidationErrors::single(
            field,
            NUL_REFUSED,
        )));
    }
    fields::from_json(&value).map_err(|error| {
        let path = error.path().to_string();
        let error = error.into_inner();
        let field = field_name(&path, error.named_field());
        ApiError::validation(domain::ValidationErrors::single(field, error.to_string()))
    })
}

const NUL_REFUSED: &str = "must not contain the NUL character (U+0000)";

/// The path of the first key or string in `value` that holds a NUL character, if any: `title`,
/// `metadata.key`, `tasks[2].description`.
fn nul_in(value: &Value, path: &str) -> Option<String> {
    let shown = |key: &str| key.replace('\0', "\\u0000");
    let join = |key: &str| {
        if path.is_empty() {
            shown(key)
        } else {
            format!("{path}.{}", shown(key))
        }
    };
    match value {
        Value::String(text) if text.contains('\0') => Some(if path.is_empty() {
            "body".to_owned()
        } else {
            path.to_owned()
        }),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| nul_in(item, &format!("{path}[{i}]"))),
        Value::Object(map) => map.iter().find_map(|(key, item)| {
            if key.contains('\0') {
                Some(join(key))
            } else {
                nul_in(item, &join(key))
            }
        }),
        _ => None,
    }
}

/// The field an error is about: the path, plus the field a missing- or unknown-field error
/// names, which serde reports at the enclosing object.
fn field_name(path: &str, named: Option<&str>) -> String {
    let base = if path == "." { "" } else { path };
    match (base, named) {
        // The path already descended into the named field.
        (base, Some(name)) if base == name || base.ends_with(&format!(".{name}")) => {
            base.to_owned()
        }
        ("", Some(name)) => name.to_owned(),
        (base, Some(name)) => format!("{base}.{name}"),
        ("", None) => "body".to_owned(),
        (base, None) => base.to_owned(),
    }
}

/// `400` for a path segment that does not parse. Every path parameter of the API is an ID, so
/// the answer says that, in its own words rather than the parser's.
pub fn path_error(error: PathError, req: &HttpRequest) -> actix_web::Error {
    tracing::debug!(error = %error, "path parameter refused");
    let segment = req
        .match_info()
        .iter()
        .find(|(_, value)| uuid::Uuid::parse_str(value).is_err())
        .map(|(name, _)| name.to_owned());
    let detail = match segment {
        Some(name) => format!("path parameter '{name}' must be a UUID"),
        None => "a path parameter must be a UUID".to_owned(),
    };
    ApiError::bad_request(detail).into()
}

/// A query string deserialized strictly: `400` naming the parameter when one is unknown, has a
/// value of the wrong shape or holds a NUL character. The answer never carries parser text.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<T> ApiQuery<T> {
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> std::ops::Deref for ApiQuery<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: DeserializeOwned> FromRequest for ApiQuery<T> {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        std::future::ready(parse_query(req.query_string()).map(ApiQuery))
    }
}

fn parse_query<T: DeserializeOwned>(query: &str) -> Result<T, ApiError> {
    let pairs = form_urlencoded::parse(query.as_bytes());
    if let Some((name, _)) = pairs
        .clone()
        .find(|(k, v)| k.contains('\0') || v.contains('\0'))
    {
        return Err(ApiError::bad_request(format!(
            "query parameter '{}' {NUL_REFUSED}",
            name.replace('\0', "\\u0000")
        )));
    }
    let pairs: Vec<(String, String)> = pairs
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    fields::from_pairs(&pairs).map_err(|error| {
        let path = error.path().to_string();
        let detail = match error.into_inner() {
            InputError::Unknown { field, .. } => format!("unknown query parameter '{field}'"),
            InputError::Missing { field } => format!("missing query parameter '{field}'"),
            InputError::Invalid(_) if path != "." => {
                format!("invalid value for query parameter '{path}'")
            }
            InputError::Invalid(_) => "invalid query string".to_owned(),
        };
        ApiError::bad_request(detail)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        name: String,
        #[serde(default)]
        filters: Option<Filters>,
        #[serde(default)]
        items: Vec<Item>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Filters {
        status: Option<String>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Item {
        size: u32,
    }

    #[test]
    fn body_errors_name_the_field_at_any_depth() {
        let refused = |body: &str| match parse::<Body>(body.as_bytes()).map_err(|e| e.kind) {
            Err(ErrorKind::Validation(errors)) if errors.len() == 1 => {
                (errors[0].field.clone(), errors[0].message.clone())
            }
            other => panic!("{body}: expected one field error, got {other:?}"),
        };
        let (field, message) = refused(r#"{"name": "a", "extra": 1}"#);
        assert_eq!(field, "extra");
        assert_eq!(
            message,
            "unknown field `extra`, expected one of `name`, `filters`, `items`"
        );
        assert_eq!(
            refused("{}"),
            ("name".into(), "missing field `name`".into())
        );
        assert_eq!(
            refused(r#"{"name": "a", "filters": {"x": 1}}"#).0,
            "filters.x"
        );
        assert_eq!(
            refused(r#"{"name": "a", "items": [{}]}"#).0,
            "items[0].size"
        );
        assert_eq!(
            refused(r#"{"name": "a", "items": [{"size": "big"}]}"#).0,
            "items[0].size"
        );
        assert_eq!(refused(r#"{"name": 5}"#).0, "name");
        assert!(
            parse::<Body>(br#"{"name": "a", "filters": null, "items": [{"size": 3}]}"#).is_ok()
        );
    }

    #[test]
    fn nul_characters_are_found_in_keys_and_strings_at_any_depth() {
        let found = |v: Value| nul_in(&v, "");
        assert_eq!(found(serde_json::json!({"title": "ok", "n": 1})), None);
        assert_eq!(
            found(serde_json::json!({"description": "d\u{0}"})).as_deref(),
            Some("description")
        );
        assert_eq!(
            found(serde_json::json!({"tasks": [{"title": "a"}, {"metadata": {"k": ["x\u{0}"]}}]}))
                .as_deref(),
            Some("tasks[1].metadata.k[0]")
        );
        assert_eq!(
            found(serde_json::json!({"metadata": {"k\u{0}": 1}})).as_deref(),
            Some("metadata.k\\u0000")
        );
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Paging {
        limit: Option<u32>,
        cursor: Option<String>,
    }

    #[test]
    fn query_errors_name_the_parameter_without_parser_text() {
        let detail = |q: &str| parse_query::<Paging>(q).unwrap_err().detail;
        assert_eq!(
            detail("limit=abc"),
            "invalid value for query parameter 'limit'"
        );
        assert_eq!(detail("size=3"), "unknown query parameter 'size'");
        assert!(detail("cursor=a%00b").starts_with("query parameter 'cursor' must not contain"));
        assert!(parse_query::<Paging>("limit=5&cursor=x").is_ok());
    }

    #[test]
    fn depth_is_counted_outside_strings_only() {
        assert!(check_depth(br#"{"a": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}"#).is_ok());
        let deep = "[".repeat(MAX_JSON_DEPTH + 1);
        assert!(check_depth(deep.as_bytes()).is_err());
    }
}
