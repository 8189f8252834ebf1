//! Authentication and the role extractor.
//!
//! Every protected handler takes an [`Auth<R>`] where `R` names the role it needs; the
//! extractor authenticates the caller (JWT or API key) and checks the role, so a route only
//! declares its requirement. Object-level checks (an agent acts only for itself) happen in the
//! app layer, on the [`Principal`] this yields.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{web, FromRequest, HttpMessage, HttpRequest};
use domain::{AgentId, Principal, Role, UserId, UserToken};
use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use uuid::Uuid;

use crate::error::ApiError;
use crate::AppState;

/// The one answer to every refused token, so a caller learns nothing about which check failed.
const INVALID_TOKEN: &str = "invalid or expired token";

/// How JWTs are checked and issued to users who sign in. A token is refused unless it is
/// HS256, has an `exp` no further ahead than the maximum lifetime (and, with an `iat`, was not
/// issued for longer or in the future), has a non-empty `sub`, names no `crit` extension (none
/// is understood), and carries `iss` and `aud` when they are configured.
#[derive(Clone)]
pub struct JwtKeys {
    key: DecodingKey,
    signing: EncodingKey,
    validation: Validation,
    issuer: Option<String>,
    audience: Option<String>,
    max_lifetime: i64,
}

/// How long a token issued at sign-in is valid.
pub const LOGIN_TOKEN_SECONDS: i64 = 3600;
/// The longest lifetime a token may claim unless configured otherwise: one day.
pub const DEFAULT_MAX_TOKEN_LIFETIME_SECONDS: i64 = 86_400;
/// Clock difference tolerated between the token's issuer and this server.
const LEEWAY_SECONDS: i64 = 5;
/// Longest `sub` accepted.
const MAX_SUBJECT_CHARS: usize = 200;

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtKeys").finish_non_exhaustive()
    }
}

impl JwtKeys {
    pub fn new(secret: &SecretString, issuer: Option<&str>, audience: Option<&str>) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp"]);
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECONDS as u64;
        if let Some(issuer) = issuer {
            validation.set_issuer(&[issuer]);
            validation.required_spec_claims.insert("iss".into());
        }
        match audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                validation.required_spec_claims.insert("aud".into());
            }
            None => validation.validate_aud = false,
        }
        Self {
            key: DecodingKey::from_secret(secret.expose_secret().as_bytes()),
            signing: EncodingKey::from_secret(secret.expose_secret().as_bytes()),
            validation,
            issuer: issuer.map(str::to_owned),
            audience: audience.map(str::to_owned),
            max_lifetime: DEFAULT_MAX_TOKEN_LIFETIME_SECONDS,
        }
    }

    /// Refuses tokens that claim to be valid for longer than `seconds`.
    pub fn with_max_lifetime(mut self, seconds: i64) -> Self {
        self.max_lifetime = seconds;
        self
    }

    /// How long a token issued at sign-in is valid: [`LOGIN_TOKEN_SECONDS`], or the maximum
    /// lifetime when that is shorter.
    pub fn login_token_seconds(&self) -> i64 {
        LOGIN_TOKEN_SECONDS.min(self.max_lifetime)
    }

    /// A token for a user who signed in, valid for [`login_token_seconds`](Self::login_token_seconds)
    /// from `now`.
    pub fn issue(&self, principal: &Principal, now: i64) -> Result<String, ApiError> {
        let mut claims = serde_json::json!({
            "sub": principal.subject,
            "role": principal.role.as_str(),
            "iat": now,
            "nbf": now,
            "exp": now + self.login_token_seconds(),
        });
        if let Some(token) = principal.user_token {
            claims["uid"] = token.user.as_uuid().to_string().into();
            claims["tv"] = token.version.into();
        }
        if let Some(iss) = &self.issuer {
            claims["iss"] = iss.as_str().into();
        }
        if let Some(aud) = &self.audience {
            claims["aud"] = aud.as_str().into();
        }
        encode(&Header::new(Algorithm::HS256), &claims, &self.signing)
            .map_err(|e| ApiError::from(app::AppError::Internal(format!("signing a token: {e}"))))
    }

    /// The caller a token stands for, or why it is refused. A token issued at sign-in comes
    /// back with its user to check against the store (`authenticate` does); any other token's
    /// subject is `token:<sub>`, so no token can pass for a user, a key or the platform.
    pub fn verify(&self, token: &str) -> Result<Principal, ApiError> {
        let refused = || ApiError::unauthorized(INVALID_TOKEN);
        if names_critical_extensions(token) {
            tracing::debug!("JWT refused: it names crit extensions");
            return Err(refused());
        }
        let data = decode::<Claims>(token, &self.key, &self.validation).map_err(|e| {
            tracing::debug!(error = %e, "JWT refused");
            refused()
        })?;
        let claims = data.claims;
        let now = chrono::Utc::now().timestamp();
        let too_long = claims.exp.saturating_sub(now) > self.max_lifetime + LEEWAY_SECONDS
            || claims
                .iat
                .is_some_and(|iat| claims.exp.saturating_sub(iat) > self.max_lifetime);
        let from_the_future = claims.iat.is_some_and(|iat| iat > now + LEEWAY_SECONDS);
        let subject_ok = !claims.sub.is_empty()
            && claims.sub.chars().count() <= MAX_SUBJECT_CHARS
            && !claims.sub.chars().any(char::is_control);
        if too_long || from_the_future || !subject_ok {
            tracing::debug!(too_long, from_the_future, subject_ok, "JWT refused");
            return Err(refused());
        }
        let role = match claims.role.as_deref() {
            None => Role::Operator,
            Some(role) => role.parse::<Role>().map_err(|_| refused())?,
        };
        let agent_id = match (role, claims.agent_id) {
            (Role::Agent, Some(id)) => Some(AgentId(id)),
            (Role::Agent, None) => return Err(refused()),
            (_, _) => None,
        };
        let user_token = match (claims.uid, claims.tv) {
            (Some(user), Some(version)) => Some(UserToken {
                user: UserId(user),
                version,
            }),
            (None, None) => None,
            _ => return Err(refused()),
        };
        Ok(Principal {
            subject: format!("token:{}", claims.sub),
            role,
            agent_id,
            expires_at: chrono::DateTime::from_timestamp(claims.exp, 0),
            api_key: None,
            user_token,
        })
    }
}

/// Whether the token's header names `crit` extensions, which this server understands none of
/// (RFC 7515 §4.1.11: such a token must be refused). An unreadable header is left to `decode`.
fn names_critical_extensions(token: &str) -> bool {
    use base64::Engine;
    let Some(header) = token.split('.').next() else {
        return false;
    };
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header.trim_end_matches('='))
        .ok()
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        .is_some_and(|header| header.get("crit").is_some())
}

#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    exp: i64,
    #[serde(default)]
    iat: Option<i64>,
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    agent_id: Option<Uuid>,
    /// Tokens issued at sign-in: the user and its token version.
    #[serde(default)]
    uid: Option<Uuid>,
    #[serde(default)]
    tv: Option<i64>,
}

/// A role requirement, named by a marker type.
pub trait Requirement {
    /// What the requirement is, for the `403` message.
    const NEEDS: &'static str;
    fn allows(role: Role) -> bool;
}

/// Reads: `viewer`, `operator`, `admin`.
#[derive(Debug)]
pub struct Viewer;
/// Changes: `operator`, `admin`.
#[derive(Debug)]
pub struct Operator;
/// Credentials and users: `admin` only.
#[derive(Debug)]
pub struct Admin;
/// Readers, or an agent for what concerns itself (the app layer checks which agent).
#[derive(Debug)]
pub struct AgentOrViewer;
/// Changes an agent makes about itself, or an operator on its behalf (the app layer checks
/// which agent, and which changes an operator may make).
#[derive(Debug)]
pub struct AgentOrOperator;
/// Any authenticated caller, whatever its role.
#[derive(Debug)]
pub struct AnyRole;

impl Requirement for Viewer {
    const NEEDS: &'static str = "the viewer role or higher";
    fn allows(role: Role) -> bool {
        role.includes(Role::Viewer)
    }
}

impl Requirement for Operator {
    const NEEDS: &'static str = "the operator role or higher";
    fn allows(role: Role) -> bool {
        role.includes(Role::Operator)
    }
}

impl Requirement for Admin {
    const NEEDS: &'static str = "the admin role";
    fn allows(role: Role) -> bool {
        role.includes(Role::Admin)
    }
}

impl Requirement for AgentOrOperator {
    const NEEDS: &'static str = "the operator role or higher, or the agent role";
    fn allows(role: Role) -> bool {
        role == Role::Agent || role.includes(Role::Operator)
    }
}

impl Requirement for AnyRole {
    const NEEDS: &'static str = "any role";
    fn allows(_: Role) -> bool {
        true
    }
}

impl Requirement for AgentOrViewer {
    const NEEDS: &'static str = "the viewer role or higher, or the agent role";
    fn allows(role: Role) -> bool {
        role == Role::Agent || role.includes(Role::Viewer)
    }
}

/// The outcome of authenticating a request's credential, kept in the request's extensions by
/// the rate limiter so the `Auth` extractor does not do it twice.
#[derive(Debug, Clone)]
pub(crate) struct Authenticated(pub Result<Principal, ApiError>);

/// An authenticated caller whose role meets `R`.
#[derive(Debug)]
pub struct Auth<R> {
    pub principal: Principal,
    _requirement: PhantomData<R>,
}

/// The credential a request presents, if any.
pub(crate) fn presented(req: &HttpRequest) -> Result<Option<String>, ApiError> {
    if let Some(value) = req.headers().get(header::AUTHORIZATION) {
        let value = value
            .to_str()
            .map_err(|_| ApiError::unauthorized("malformed Authorization header"))?;
        let (scheme, token) = value
            .split_once(' ')
            .ok_or_else(|| ApiError::unauthorized("expected 'Authorization: Bearer <token>'"))?;
        if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
            return Err(ApiError::unauthorized(
                "expected 'Authorization: Bearer <token>'",
            ));
        }
        return Ok(Some(token.trim().to_owned()));
    }
    if let Some(value) = req.headers().get("x-api-key") {
        let key = value
            .to_str()
            .map_err(|_| ApiError::unauthorized("malformed X-API-Key header"))?;
        return Ok(Some(key.trim().to_owned()));
    }
    Ok(None)
}

pub(crate) use app::caller_key;

/// Whether a presented credential is a JWT (three dot-separated parts) rather than an API key.
pub(crate) fn is_jwt(token: &str) -> bool {
    token.split('.').count() == 3
}

/// Authenticates a token: three dot-separated parts make a JWT, anything else is an API key.
pub async fn authenticate(state: &AppState, token: &str) -> Result<Principal, ApiError> {
    authenticate_from(state, token, None).await
}

/// [`authenticate`] for a request from `address`, whose keys that must be read from the store
/// count against that address's lookup limit (`429` past it).
pub async fn authenticate_from(
    state: &AppState,
    token: &str,
    address: Option<&str>,
) -> Result<Principal, ApiError> {
    if token.len() > 4096 {
        return Err(ApiError::unauthorized("invalid credentials"));
    }
    if is_jwt(token) {
        let Some(verifier) = &state.jwt else {
            return Err(ApiError::unauthorized(INVALID_TOKEN));
        };
        let principal = verifier.verify(token)?;
        return match principal.user_token {
            // The user as stored now: deleted, or changed since, is refused.
            Some(user) => Ok(Principal {
                expires_at: principal.expires_at,
                ..state.platform.authenticate_user_token(user).await?
            }),
            None => Ok(principal),
        };
    }
    Ok(match address {
        Some(address) => {
            state
                .platform
                .authenticate_api_key_from(token, address)
                .await?
        }
        None => state.platform.authenticate_api_key(token).await?,
    })
}

/// The authenticated caller of a request, reusing what the rate limiter found; `401` without
/// valid credentials.
pub(crate) async fn caller(req: &HttpRequest) -> Result<Principal, ApiError> {
    let state = req
        .app_data::<web::Data<AppState>>()
        .cloned()
        .ok_or_else(|| {
            ApiError::from(app::AppError::Internal("application state missing".into()))
        })?;
    let token = presented(req)?.ok_or_else(|| {
        ApiError::unauthorized("credentials required: a Bearer token or an X-API-Key")
    })?;
    let known = req.extensions().get::<Authenticated>().cloned();
    match known {
        Some(Authenticated(result)) => result,
        None => authenticate(&state, &token).await,
    }
}

impl<R: Requirement + 'static> FromRequest for Auth<R> {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let principal = caller(&req).await?;
            // For the audit of refusals, made once the answer is known.
            req.extensions_mut().insert(principal.clone());
            if !R::allows(principal.role) {
                tracing::info!(subject = %principal.subject, role = %principal.role, "role denied");
                return Err(ApiError::forbidden(format!(
                    "this action needs {}; the caller has role {}",
                    R::NEEDS,
                    principal.role
                )));
            }
            Ok(Auth {
                principal,
                _requirement: PhantomData,
            })
        })
    }
}
