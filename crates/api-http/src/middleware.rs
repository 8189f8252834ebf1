//! Cross-cutting request handling: request IDs and access logs, security headers,
//! and the JSON answers for unknown routes and wrong methods.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::middleware::{DefaultHeaders, Next};
use actix_web::{web, HttpMessage, HttpRequest, Route};
use tracing::Instrument;

use domain::Principal;

use crate::error::{ApiError, ErrorKind};
use crate::AppState;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Accepts a client's `X-Request-Id` if it is short and printable, else makes one; runs the
/// request inside a span carrying it, echoes it back, and writes one access-log line.
pub async fn request_context(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let request_id = req
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 64 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let route = req.match_pattern().unwrap_or_else(|| "unmatched".into());
    let method = req.method().clone();
    let span = tracing::info_span!(
        "request",
        request_id = %request_id,
        method = %req.method(),
        route = %route,
    );
    let started = Instant::now();
    span.in_scope(|| tracing::debug!("request started"));
    let mut response = next.call(req).instrument(span.clone()).await?;
    let status = response.status().as_u16();
    if status == 403 {
        // Every refusal is on the audit trail, whichever layer refused.
        let refused = response.request().extensions().get::<Principal>().cloned();
        let state = response
            .request()
            .app_data::<web::Data<AppState>>()
            .cloned();
        if let (Some(principal), Some(state)) = (refused, state) {
            state
                .platform
                .record_denial(&principal, format!("{method} {route}"))
                .await;
        }
    }
    span.in_scope(|| {
        tracing::info!(
            status,
            elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
            "request finished"
        );
    });
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    Ok(response)
}

/// Headers every response carries.
pub fn security_headers() -> DefaultHeaders {
    DefaultHeaders::new()
        .add((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .add((header::X_FRAME_OPTIONS, "DENY"))
        .add((header::REFERRER_POLICY, "no-referrer"))
        .add((header::CACHE_CONTROL, "no-store"))
}

/// The answer for a route that does not exist.
pub async fn not_found(req: HttpRequest) -> ApiError {
    ApiError::not_found(format!("no route for {} {}", req.method(), req.path()))
}

/// The answer for a known route called with a method it does not have.
pub fn method_not_allowed(allow: &'static str) -> Route {
    web::to(move |req: HttpRequest| async move {
        ApiError::new(
            ErrorKind::MethodNotAllowed { allow },
            format!("{} is not allowed here; allowed: {allow}", req.method()),
        )
    })
}
