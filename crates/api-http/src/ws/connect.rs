//! Opening a WebSocket: the upgrade, its credentials, and the connection caps, then a
//! [`Session`] for as long as the socket lives.

use std::sync::Arc;

use actix_web::{web, HttpMessage, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::delivery::WRITE_TIMEOUT;
use super::session::{too_many_for_credential, Session, CAPPED_RETRY_AFTER};
use super::MAX_MESSAGE_BYTES;
use crate::auth::{authenticate, caller_key};
use crate::error::{ApiError, ErrorKind};
use crate::extract::ApiQuery;
use crate::AppState;

/// `?token=` on the upgrade request.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Connect {
    /// Credentials, for clients that cannot set headers on the upgrade.
    token: Option<String>,
}

/// Upgrades `GET /api/v1/ws/{client_id}`. Credentials in the `Authorization` or `X-API-Key`
/// header or in `?token=` are checked now (a bad one refuses the upgrade with `401`); without
/// them the client must send `{"type": "auth", "token": ...}` first.
#[utoipa::path(
    get,
    path = "/api/v1/ws/{client_id}",
    tag = "events",
    params(("client_id" = String, Path, description = "A name the client chooses for itself (1 to 128 printable characters)."), Connect),
    responses(
        (status = 101, description = "Switched to the WebSocket protocol: `subscribe`, `unsubscribe` and `ping` messages; events as `{type, channel, data, timestamp, seq}` frames."),
        (status = 401, description = "The credentials presented (header or `?token=`) are not valid.", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 429, description = "This credential has as many connections open as it may.", body = crate::error::Problem, content_type = "application/problem+json"),
    ),
    security((), ("bearer" = []), ("api_key" = []))
)]
pub async fn connect(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
    client_id: web::Path<String>,
    query: ApiQuery<Connect>,
) -> Result<HttpResponse, ApiError> {
    let client_id = client_id.into_inner();
    if client_id.is_empty()
        || client_id.len() > 128
        || !client_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
    {
        return Err(ApiError::bad_request(
            "client_id must be 1 to 128 letters, digits, '-', '_', '.' or ':'",
        ));
    }
    let token = match crate::auth::presented(&req)? {
        Some(token) => Some(token),
        None => query.into_inner().token,
    };
    // The rate limiter has usually authenticated these credentials already: use its finding.
    let known = req
        .extensions()
        .get::<crate::auth::Authenticated>()
        .map(|a| a.0.clone());
    let principal = match (token, known) {
        (Some(_), Some(found)) => Some(found?),
        (Some(token), None) => Some(authenticate(&state, &token).await?),
        (None, _) => None,
    };
    // Places are taken before the upgrade, so a refusal is an ordinary answer.
    let Some(slot) = state.connections.admit() else {
        return Err(ApiError::new(
            ErrorKind::Overloaded {
                retry_after: CAPPED_RETRY_AFTER,
            },
            "this server has as many WebSocket connections open as it allows; try again later",
        ));
    };
    // Until it authenticates, a connection counts against its address, so nobody can fill
    // the total without credentials.
    let credential_slot = match &principal {
        Some(principal) => state
            .connections
            .admit_credential(caller_key(principal))
            .ok_or_else(too_many_for_credential)?,
        None => state
            .connections
            .admit_pending(&crate::middleware::client_address(&req))
            .ok_or_else(|| {
                ApiError::new(
                    ErrorKind::TooManyRequests {
                        retry_after: CAPPED_RETRY_AFTER,
                    },
                    "this address has as many WebSocket connections waiting to authenticate as it may",
                )
            })?,
    };
    let (response, session, stream) = actix_ws::handle(&req, body).map_err(|e| {
        tracing::debug!(error = %e, "not a WebSocket upgrade");
        ApiError::bad_request(
            "not a WebSocket upgrade: a GET with Upgrade: websocket, Connection: Upgrade, \
             Sec-WebSocket-Version: 13 and a Sec-WebSocket-Key",
        )
    })?;
    let stream = stream
        .max_frame_size(MAX_MESSAGE_BYTES)
        .aggregate_continuations()
        .max_continuation_size(MAX_MESSAGE_BYTES);
    let state: Arc<AppState> = state.into_inner();
    actix_web::rt::spawn(async move {
        let _slot = slot;
        tracing::info!(client_id, "WebSocket connected");
        let closing = session.clone();
        let mut open = Session::new(state.clone(), principal, session);
        open.credential_slot = Some(credential_slot);
        let reason = open.run(stream).await;
        tracing::info!(client_id, reason = ?reason.as_ref().map(|r| r.code), "WebSocket closed");
        let _ = tokio::time::timeout(WRITE_TIMEOUT, closing.close(reason)).await;
    });
    Ok(response)
}
