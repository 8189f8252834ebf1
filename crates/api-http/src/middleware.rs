//! Cross-cutting request handling: request IDs and access logs, security headers,
//! and the JSON answers for unknown routes and wrong methods.

use std::time::Instant;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::middleware::{DefaultHeaders, Next};
use actix_web::{web, HttpMessage, HttpRequest, Route};
use tracing::Instrument;

use actix_web::ResponseError;
use domain::Principal;
use ports::Admission;

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
    let took = started.elapsed();
    // Who called: as the role check saw them, or, for a request refused before it (a rate
    // limit, a bad parameter), as the rate limiter authenticated them.
    let principal = {
        let extensions = response.request().extensions();
        extensions
            .get::<Principal>()
            .or_else(|| {
                extensions
                    .get::<crate::auth::Authenticated>()
                    .and_then(|a| a.0.as_ref().ok())
            })
            .map(app::caller_key)
    };
    span.in_scope(|| {
        tracing::info!(
            status,
            elapsed_ms = took.as_secs_f64() * 1000.0,
            principal = principal.as_deref().unwrap_or("anonymous"),
            "request finished"
        );
    });
    if let Some(state) = response.request().app_data::<web::Data<AppState>>() {
        let key = app::Route {
            method: method_label(&method),
            path: route,
        };
        if let Some(series) = state.platform.metrics().http.get(&key) {
            series.duration.observe(took);
            if let Some(count) = series.statuses.get(&app::Status(status)) {
                count.inc();
            }
        }
    }
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    Ok(response)
}

/// A request's method as a metric label: the standard ones by name, any other as `OTHER`, so
/// made-up methods cannot multiply the series.
fn method_label(method: &actix_web::http::Method) -> &'static str {
    use actix_web::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

/// Largest request head (request line and headers) the application takes.
pub const MAX_HEAD_BYTES: usize = 32 * 1024;

/// Refuses a request whose head is larger than [`MAX_HEAD_BYTES`] with `431` in the envelope.
/// (Heads the HTTP server cannot take at all, over 128 KiB, it refuses itself.)
pub async fn head_limit(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let size = req.method().as_str().len()
        + req.uri().path_and_query().map_or(0, |p| p.as_str().len())
        + req
            .headers()
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + 4)
            .sum::<usize>();
    if size > MAX_HEAD_BYTES {
        let error = ApiError::new(
            ErrorKind::HeadTooLarge,
            format!("the request head is larger than {MAX_HEAD_BYTES} bytes"),
        );
        return Ok(req.into_response(error.error_response()));
    }
    next.call(req)
        .await
        .map(ServiceResponse::map_into_boxed_body)
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

/// Paths anyone may call without credentials.
const OPEN: [&str; 9] = [
    "/",
    "/dashboard",
    "/livez",
    "/readyz",
    "/metrics",
    "/openapi.json",
    "/docs",
    "/api/v1/health",
    "/api/v1/auth/login",
];

/// Whether anyone may call `path` without credentials: the paths above, and the dashboard's
/// page and files (the page asks for credentials itself).
fn is_open(path: &str) -> bool {
    OPEN.contains(&path) || path.starts_with("/dashboard/")
}

/// The answer for a known route called with a method it does not have. On a protected route,
/// a caller without valid credentials gets `401` first, as from any method that exists there:
/// the route's methods are not shown to anonymous callers.
pub fn method_not_allowed(allow: &'static str) -> Route {
    web::to(move |req: HttpRequest| async move {
        if !is_open(req.path()) {
            if let Err(refused) = crate::auth::caller(&req).await {
                return refused;
            }
        }
        ApiError::new(
            ErrorKind::MethodNotAllowed { allow },
            format!("{} is not allowed here; allowed: {allow}", req.method()),
        )
    })
}

/// Paths never limited: what orchestrators and load balancers poll.
pub(crate) const UNLIMITED: [&str; 4] = ["/", "/livez", "/readyz", "/api/v1/health"];

/// Per-credential rate limit: a token bucket per authenticated caller (an API key by its ID, a
/// token by its subject), or per client address when no valid credential is presented, so a
/// made-up or re-spelt credential never earns a fresh bucket. `429` with `Retry-After` past the
/// limit. The authentication done here is kept for the handler's `Auth` extractor.
pub async fn rate_limit(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let state = req.app_data::<web::Data<AppState>>().cloned();
    let (Some(state), false) = (state, UNLIMITED.contains(&req.path())) else {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_boxed_body);
    };
    let address = client_address(req.request());
    // `/metrics` has a token of its own, never a credential: it is limited per address. A
    // WebSocket upgrade may carry its credential as `?token=`: it counts as the caller's.
    let presented = match req.path() {
        "/metrics" => Ok(None),
        path if path.starts_with("/api/v1/ws/") => {
            crate::auth::presented(req.request()).map(|header| {
                header.or_else(|| {
                    form_urlencoded::parse(req.query_string().as_bytes())
                        .find(|(name, _)| name == "token")
                        .map(|(_, token)| token.into_owned())
                })
            })
        }
        _ => crate::auth::presented(req.request()),
    };
    let caller = match presented {
        Ok(Some(token)) => {
            // A key the store must be read for is limited per address first, so made-up keys
            // cannot flood the store.
            let result = crate::auth::authenticate_from(&state, &token, Some(&address)).await;
            if let Err(
                e @ ApiError {
                    kind: ErrorKind::TooManyRequests { .. },
                    ..
                },
            ) = &result
            {
                return Ok(req.into_response(e.clone().error_response()));
            }
            let caller = result.as_ref().ok().cloned();
            req.extensions_mut()
                .insert(crate::auth::Authenticated(result));
            caller
        }
        _ => None,
    };
    match state
        .platform
        .admit_request(caller.as_ref(), &address)
        .await
    {
        Admission::Allowed => next
            .call(req)
            .await
            .map(ServiceResponse::map_into_boxed_body),
        Admission::Limited { retry_after } => {
            let response = ApiError::too_many(retry_after).error_response();
            Ok(req.into_response(response))
        }
    }
}

/// The address a request came from, as limits count it ([`app::address_key`]): the TCP peer,
/// or, when that is a trusted proxy, the client its `X-Forwarded-For` names (see
/// [`crate::TrustedProxies`]).
pub fn client_address(req: &HttpRequest) -> String {
    let peer = req.peer_addr().map(|a| a.ip());
    let client = match req.app_data::<web::Data<AppState>>() {
        Some(state) if !state.trusted_proxies.is_empty() => state.trusted_proxies.client(
            peer,
            req.headers()
                .get_all("x-forwarded-for")
                .map(|v| v.as_bytes())
                .collect::<Vec<_>>()
                .into_iter(),
        ),
        _ => peer,
    };
    app::address_key(client)
}

/// Longest any request may take by default, long polls (up to 30 s) included; past it the
/// client gets `503` and the handler is dropped. WebSocket sessions are not requests: they
/// outlive their upgrade.
pub const REQUEST_DEADLINE: std::time::Duration = std::time::Duration::from_secs(60);

/// Ends a request that runs past `AppState::request_deadline`. Wrapped around each resource, after
/// routing, so the request can be kept for the answer, which then passes through every outer
/// middleware (request ID, access log, CORS, security headers) like any other.
pub async fn deadline(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let request = req.request().clone();
    let limit = req
        .app_data::<web::Data<AppState>>()
        .map_or(REQUEST_DEADLINE, |s| s.request_deadline);
    match tokio::time::timeout(limit, next.call(req)).await {
        Ok(result) => result.map(ServiceResponse::map_into_boxed_body),
        Err(_) => {
            tracing::warn!("request ran past its deadline");
            let error = ApiError::new(
                ErrorKind::Unavailable,
                "the request took too long; try again",
            );
            Ok(ServiceResponse::new(request, error.error_response()))
        }
    }
}

/// Methods and request headers a permitted origin may use.
const CORS_METHODS: &str = "GET, POST, PATCH, DELETE";
const CORS_HEADERS: &str = "authorization, content-type, x-api-key, idempotency-key, x-request-id";
/// Response headers a permitted origin's script may read.
const CORS_EXPOSED: &str = "link, retry-after, x-request-id";

/// CORS for exactly the origins in `AppState::cors_origins`: a permitted origin gets its grant
/// and its preflights answered; any other origin gets no grant (so browsers keep the answers
/// from its pages) and its preflights fall through to the ordinary `405`, in the error envelope.
pub async fn cors(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let permitted = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok())
        .filter(|origin| {
            req.app_data::<web::Data<AppState>>()
                .is_some_and(|s| s.cors_origins.iter().any(|allowed| allowed == origin))
        })
        .and_then(|o| HeaderValue::from_str(o).ok());
    let Some(origin) = permitted else {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_boxed_body);
    };
    let preflight = req.method() == actix_web::http::Method::OPTIONS
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    if preflight {
        let response = actix_web::HttpResponse::Ok()
            .insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, origin))
            .insert_header((header::ACCESS_CONTROL_ALLOW_METHODS, CORS_METHODS))
            .insert_header((header::ACCESS_CONTROL_ALLOW_HEADERS, CORS_HEADERS))
            .insert_header((header::ACCESS_CONTROL_MAX_AGE, "600"))
            .insert_header((header::VARY, "Origin"))
            .json(serde_json::json!({"message": "preflight accepted"}));
        return Ok(req.into_response(response));
    }
    let mut response = next.call(req).await?.map_into_boxed_body();
    let headers = response.headers_mut();
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(CORS_EXPOSED),
    );
    headers.insert(header::VARY, HeaderValue::from_static("Origin"));
    Ok(response)
}
