//! `ApiError`: the one error type of the HTTP layer, rendered as `application/problem+json`.

use actix_web::body::BoxBody;
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, Responder, ResponseError};
use app::AppError;
use domain::{FieldError, ValidationErrors};
use serde::Serialize;

/// Why a request failed, in the contract's vocabulary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorKind {
    BadRequest,
    Unauthorized,
    Forbidden,
    NotFound,
    MethodNotAllowed {
        allow: &'static str,
    },
    Conflict,
    PayloadTooLarge,
    /// The request head (request line and headers) is larger than allowed.
    HeadTooLarge,
    UnsupportedMediaType,
    Validation(Vec<FieldError>),
    /// Rate limited; a retry may succeed after this many seconds.
    TooManyRequests {
        retry_after: u64,
    },
    Unavailable,
    /// Too busy to take this now; a retry may succeed after this many seconds (`503`).
    Overloaded {
        retry_after: u64,
    },
    Internal,
}

/// A failed request: its kind and a human-readable detail safe to show the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{detail}")]
pub struct ApiError {
    pub kind: ErrorKind,
    pub detail: String,
}

impl ApiError {
    pub fn new(kind: ErrorKind, detail: impl Into<String>) -> Self {
        Self {
            kind,
            detail: detail.into(),
        }
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadRequest, detail)
    }

    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unauthorized, detail)
    }

    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(ErrorKind::Forbidden, detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, detail)
    }

    /// `429` with `Retry-After`, in whole seconds (at least one).
    pub fn too_many(retry_after: std::time::Duration) -> Self {
        let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
        let seconds = seconds.max(1);
        Self::new(
            ErrorKind::TooManyRequests {
                retry_after: seconds,
            },
            format!("too many requests; retry after {seconds} s"),
        )
    }

    pub fn validation(errors: ValidationErrors) -> Self {
        Self::new(ErrorKind::Validation(errors.0), "the request is invalid")
    }

    /// The problem's `type` slug, `title` and status: one exhaustive mapping.
    fn describe(&self) -> (&'static str, &'static str, StatusCode) {
        match self.kind {
            ErrorKind::BadRequest => ("bad-request", "Bad Request", StatusCode::BAD_REQUEST),
            ErrorKind::Unauthorized => ("unauthorized", "Unauthorized", StatusCode::UNAUTHORIZED),
            ErrorKind::Forbidden => ("forbidden", "Forbidden", StatusCode::FORBIDDEN),
            ErrorKind::NotFound => ("not-found", "Not Found", StatusCode::NOT_FOUND),
            ErrorKind::MethodNotAllowed { .. } => (
                "method-not-allowed",
                "Method Not Allowed",
                StatusCode::METHOD_NOT_ALLOWED,
            ),
            ErrorKind::Conflict => ("conflict", "Conflict", StatusCode::CONFLICT),
            ErrorKind::PayloadTooLarge => (
                "payload-too-large",
                "Payload Too Large",
                StatusCode::PAYLOAD_TOO_LARGE,
            ),
            ErrorKind::HeadTooLarge => (
                "request-header-fields-too-large",
                "Request Header Fields Too Large",
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ),
            ErrorKind::UnsupportedMediaType => (
                "unsupported-media-type",
                "Unsupported Media Type",
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ),
            ErrorKind::Validation(_) => (
                "validation-error",
                "Unprocessable Content",
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            ErrorKind::TooManyRequests { .. } => (
                "too-many-requests",
                "Too Many Requests",
                StatusCode::TOO_MANY_REQUESTS,
            ),
            ErrorKind::Unavailable | ErrorKind::Overloaded { .. } => (
                "service-unavailable",
                "Service Unavailable",
                StatusCode::SERVICE_UNAVAILABLE,
            ),
            ErrorKind::Internal => (
                "internal-error",
                "Internal Server Error",
                StatusCode::INTERNAL_SERVER_ERROR,
            ),
        }
    }
}

/// The error envelope of every failure (`application/problem+json`).
#[derive(Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Problem<'a> {
    /// `/problems/<slug>`, one per status.
    #[serde(rename = "type")]
    kind: String,
    title: &'a str,
    status: u16,
    /// What went wrong, for people.
    detail: &'a str,
    /// With `422`: each field at fault.
    #[serde(skip_serializing_if = "Option::is_none")]
    errors: Option<Vec<FieldProblem<'a>>>,
}

/// One field a validation failure names.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct FieldProblem<'a> {
    field: &'a str,
    message: &'a str,
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.describe().2
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        let mut response = HttpResponse::build(status);
        response.insert_header((
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        ));
        match &self.kind {
            ErrorKind::Unauthorized => {
                response.insert_header((
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"agent-platform\""),
                ));
            }
            ErrorKind::MethodNotAllowed { allow } => {
                response.insert_header((header::ALLOW, HeaderValue::from_static(allow)));
            }
            ErrorKind::TooManyRequests { retry_after } | ErrorKind::Overloaded { retry_after } => {
                response.insert_header((header::RETRY_AFTER, retry_after.to_string()));
            }
            _ => {}
        }
        response.body(serde_json::to_vec(&self.problem()).unwrap_or_default())
    }
}

impl ApiError {
    /// The problem document: the body of this error's response, and how an answer that
    /// carries several outcomes reports a refused one.
    pub fn problem(&self) -> serde_json::Value {
        let (slug, title, status) = self.describe();
        let errors = match &self.kind {
            ErrorKind::Validation(errors) => Some(
                errors
                    .iter()
                    .map(|e| FieldProblem {
                        field: &e.field,
                        message: &e.message,
                    })
                    .collect(),
            ),
            _ => None,
        };
        serde_json::to_value(Problem {
            kind: format!("/problems/{slug}"),
            title,
            status: status.as_u16(),
            detail: &self.detail,
            errors,
        })
        .unwrap_or_default()
    }
}

/// Lets a handler return the error itself as its response (fallback routes do).
impl Responder for ApiError {
    type Body = BoxBody;

    fn respond_to(self, _req: &HttpRequest) -> HttpResponse {
        self.error_response()
    }
}

impl From<AppError> for ApiError {
    fn from(error: AppError) -> Self {
        match error {
            AppError::Validation(errors) => ApiError::validation(errors),
            AppError::NotFound(entity) => ApiError::not_found(format!("{entity} not found")),
            AppError::Unauthorized(detail) => ApiError::unauthorized(detail),
            AppError::Forbidden(detail) => ApiError::forbidden(detail),
            AppError::Conflict(detail) => ApiError::new(ErrorKind::Conflict, detail),
            AppError::Unavailable(internal) => {
                // Logged here, once, where it becomes a response; the client gets no internals.
                tracing::warn!(error = %internal, "a required dependency is unavailable");
                ApiError::new(
                    ErrorKind::Unavailable,
                    "a required dependency is unavailable; try again shortly",
                )
            }
            AppError::Overloaded { what, retry_after } => ApiError::new(
                ErrorKind::Overloaded { retry_after },
                format!("too many {what} under way; retry after {retry_after} s"),
            ),
            AppError::RateLimited { retry_after } => ApiError::too_many(retry_after),
            AppError::Internal(internal) => {
                tracing::error!(error = %internal, "internal error");
                ApiError::new(ErrorKind::Internal, "internal server error")
            }
        }
    }
}
