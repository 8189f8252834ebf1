//! Request extractors that fail in the contract's envelope: JSON bodies, paths and queries.

use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::error::{PathError, QueryPayloadError};
use actix_web::http::header;
use actix_web::{web, FromRequest, HttpRequest};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;

use crate::error::{ApiError, ErrorKind};

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
                    ApiError::bad_request(format!("cannot read the request body: {e}"))
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
    serde_path_to_error::deserialize(value).map_err(|error| {
        let path = error.path().to_string();
        let message = error.into_inner().to_string();
        let field = field_name(&path, &message);
        ApiError::validation(domain::ValidationErrors::single(field, message))
    })
}

/// The field an error is about: the path, plus the field named in "unknown field `x`" or
/// "missing field `x`" messages, which serde reports at the enclosing object.
fn field_name(path: &str, message: &str) -> String {
    let named = ["unknown field `", "missing field `"]
        .iter()
        .find_map(|p| message.strip_prefix(p))
        .and_then(|rest| rest.split('`').next());
    let base = if path == "." { "" } else { path };
    match (base, named) {
        // serde_path_to_error already descended into an unknown field.
        (base, Some(name)) if base == name || base.ends_with(&format!(".{name}")) => {
            base.to_owned()
        }
        ("", Some(name)) => name.to_owned(),
        (base, Some(name)) => format!("{base}.{name}"),
        ("", None) => "body".to_owned(),
        (base, None) => base.to_owned(),
    }
}

/// `400` for a path segment that does not parse (an ID that is not a UUID).
pub fn path_error(error: PathError, _req: &HttpRequest) -> actix_web::Error {
    let detail = match &error {
        PathError::Deserialize(e) => format!("invalid path parameter: {e}"),
        other => format!("invalid path parameter: {other}"),
    };
    ApiError::bad_request(detail.replace("UUID parsing failed", "not a UUID")).into()
}

/// `400` for a query string that does not parse.
pub fn query_error(error: QueryPayloadError, _req: &HttpRequest) -> actix_web::Error {
    ApiError::bad_request(format!("invalid query parameter: {error}")).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_names_come_from_the_path_or_the_message() {
        assert_eq!(
            field_name(".", "unknown field `status`, expected one of"),
            "status"
        );
        assert_eq!(
            field_name("status", "unknown field `status`, expected"),
            "status"
        );
        assert_eq!(field_name(".", "missing field `name`"), "name");
        assert_eq!(field_name("resources", "invalid type"), "resources");
        assert_eq!(field_name("filters", "unknown field `x`"), "filters.x");
        assert_eq!(field_name(".", "invalid type: string"), "body");
    }

    #[test]
    fn depth_is_counted_outside_strings_only() {
        assert!(check_depth(br#"{"a": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}"#).is_ok());
        let deep = "[".repeat(MAX_JSON_DEPTH + 1);
        assert!(check_depth(deep.as_bytes()).is_err());
    }
}
