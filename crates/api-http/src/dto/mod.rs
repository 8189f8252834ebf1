//! Wire DTOs: the JSON shapes of requests and responses, converted to and from domain types.

pub mod agents;
pub mod conflicts;
pub mod credentials;
pub mod resources;
pub mod system;
pub mod tasks;
pub mod workflows;

use domain::{Capability, Cursor, Limit};

use crate::error::ApiError;

/// The body of an action that takes no fields (cancel, retry, deletes): absent or `{}`, and
/// held to the same rules as every other body (`400` malformed, `415` not JSON, `422` for any
/// field, since none would do anything).
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NoFields {}

/// A bad query parameter: `400` naming it.
pub(crate) fn bad_param(name: &str, error: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request(format!("{name}: {error}"))
}

/// `capability_filter`, parsed.
pub(crate) fn capability_param(value: Option<String>) -> Result<Option<Capability>, ApiError> {
    value
        .map(|c| Capability::parse(&c))
        .transpose()
        .map_err(|e| bad_param("capability_filter", e))
}

/// `limit` and `cursor`, parsed.
pub(crate) fn page_params(
    limit: Option<u32>,
    cursor: Option<String>,
) -> Result<(Limit, Option<Cursor>), ApiError> {
    let limit = Limit::new(limit).map_err(|e| bad_param("limit", e))?;
    let after = cursor
        .map(|c| Cursor::decode(&c))
        .transpose()
        .map_err(|e| bad_param("cursor", e))?;
    Ok((limit, after))
}
