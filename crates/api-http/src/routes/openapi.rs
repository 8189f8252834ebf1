//! The API's description, generated from the handlers and the wire types so it cannot drift
//! from them: `GET /openapi.json` (OpenAPI 3.1), and Swagger UI at `/docs`, served from the
//! binary without any network access.

use std::sync::OnceLock;

use actix_web::http::header;
use actix_web::{web, HttpResponse};
use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr};
use utoipa::{Modify, OpenApi};

use super::{
    agents, conflicts, credentials, dashboard, endpoint, resources, system, tasks, ui, workflows,
};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Multi-Agent Platform API Server",
        description = "Agents register with capabilities and resources; clients submit tasks; the scheduler assigns them under leases; resource pools, conflicts and a live event stream around them. Every success is `200` with a JSON body; every failure is `application/problem+json`.",
    ),
    paths(
        system::root, system::livez, system::readyz, system::metrics, system::health,
        agents::register, agents::list, agents::get, agents::update, agents::deregister,
        agents::heartbeat, agents::tasks, agents::reports,
        tasks::submit, tasks::submit_batch, tasks::list, tasks::get, tasks::history,
        tasks::cancel, tasks::retry, tasks::start, tasks::heartbeat, tasks::complete, tasks::fail,
        resources::register, resources::list, resources::get, resources::update,
        resources::delete, resources::allocations,
        conflicts::report, conflicts::list, conflicts::get, conflicts::resolve, conflicts::dismiss,
        workflows::create, workflows::list, workflows::get, workflows::delete, workflows::execute,
        workflows::executions, workflows::execution, workflows::cancel, workflows::rerun,
        credentials::create_key, credentials::list_keys, credentials::revoke_key,
        credentials::create_user, credentials::list_users, credentials::update_user,
        credentials::delete_user, credentials::login, credentials::whoami, credentials::audit,
        dashboard::activity, dashboard::summary, dashboard::performance,
        crate::ws::connect,
        ui::page, ui::slash, ui::file,
    ),
    components(schemas(crate::error::Problem)),
    modifiers(&Conventions),
    security(("bearer" = []), ("api_key" = [])),
    tags(
        (name = "agents", description = "Registration, heartbeats, an agent's tasks and reports."),
        (name = "tasks", description = "Submission, the work protocol, operators' actions."),
        (name = "resources", description = "Shared resource pools and their allocations."),
        (name = "conflicts", description = "Contention and other conflicts, reported or detected, and their resolution."),
        (name = "workflows", description = "Definitions as DAGs of steps, their executions, cancel and rerun."),
        (name = "credentials", description = "API keys, users, sign-in and the audit trail."),
        (name = "dashboard", description = "Counters, activity and agents' performance."),
        (name = "events", description = "The live event stream."),
        (name = "system", description = "Root document, health, probes, metrics and these docs."),
    )
)]
struct ApiDoc;

/// The description, built once.
pub(crate) fn description() -> &'static utoipa::openapi::OpenApi {
    static DOC: OnceLock<utoipa::openapi::OpenApi> = OnceLock::new();
    DOC.get_or_init(ApiDoc::openapi)
}

/// The description as served, rendered once.
fn served() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| serde_json::to_string(description()).unwrap_or_default())
}

/// The routes of the docs: `/openapi.json`, and Swagger UI under `/docs/`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(endpoint("/openapi.json", "GET", |r| {
        r.route(web::get().to(|| async {
            HttpResponse::Ok()
                .content_type("application/json")
                .body(served())
        }))
    }))
    .service(endpoint("/docs", "GET", |r| {
        r.route(web::get().to(|| async {
            HttpResponse::PermanentRedirect()
                .insert_header((header::LOCATION, "/docs/"))
                .finish()
        }))
    }))
    .service(
        // The UI's files change only with the binary: browsers may keep them for an hour
        // (every other answer is `no-store`).
        web::scope("/docs")
            .wrap(
                actix_web::middleware::DefaultHeaders::new()
                    .add((header::CACHE_CONTROL, "public, max-age=3600")),
            )
            .service(
                utoipa_swagger_ui::SwaggerUi::new("/{_:.*}")
                    // No online validator badge: the page makes no request beyond this server.
                    .config(utoipa_swagger_ui::Config::from("/openapi.json").validator_url("none")),
            ),
    );
}

/// The answers every operation shares, added to each so the description lists every error a
/// client can get, in the one envelope, and the credentials the API takes.
struct Conventions;

/// Shared error answers: name, status, when.
const ERRORS: [(&str, &str, &str); 13] = [
    ("BadRequest", "400", "Malformed JSON, a path ID that is not a UUID, or a bad query parameter."),
    ("Unauthorized", "401", "No credentials, or bad, expired or revoked ones."),
    ("Forbidden", "403", "The caller's role may not do this, or an agent acts for another agent."),
    ("NotFound", "404", "No such object, or one the caller may not see."),
    ("Conflict", "409", "The object's state does not allow the change, or it kept changing under the request; nothing was changed."),
    ("PayloadTooLarge", "413", "The body is larger than allowed."),
    ("UnsupportedMediaType", "415", "A body that is not JSON."),
    ("ValidationError", "422", "A field breaks a rule, or is unknown; `errors` names each."),
    ("TooManyRequests", "429", "Over a rate limit; `Retry-After` says when to try again."),
    ("HeadTooLarge", "431", "The request head is larger than 32 KiB."),
    ("InternalError", "500", "A bug; the log has the details under the request ID."),
    ("ServiceUnavailable", "503", "The database is unreachable, the server is at a cap, or the request ran past its deadline."),
    ("MethodNotAllowed", "405", "The route exists but not with this method; `Allow` lists its methods."),
];

fn problem(status: &str, description: &str) -> Response {
    let header = |description: &str| {
        utoipa::openapi::header::HeaderBuilder::new()
            .schema(Some(
                utoipa::openapi::ObjectBuilder::new().schema_type(utoipa::openapi::Type::String),
            ))
            .description(Some(description))
            .build()
    };
    let mut response = ResponseBuilder::new().description(description);
    match status {
        "401" => {
            response = response.header(
                "WWW-Authenticate",
                header("`Bearer realm=\"agent-platform\"`."),
            )
        }
        "405" => response = response.header("Allow", header("The route's methods.")),
        "429" | "503" => {
            response = response.header(
                "Retry-After",
                header("Seconds to wait before trying again (with rate limits and caps)."),
            )
        }
        _ => {}
    }
    response
        .content(
            "application/problem+json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Problem")))
                .build(),
        )
        .build()
}

impl Modify for Conventions {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        let bearer = || {
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("A JWT, or an API key."))
                    .build(),
            )
        };
        components.add_security_scheme("bearer", bearer());
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))),
        );
        components.add_security_scheme("metrics_token", bearer());
        for (name, status, description) in ERRORS {
            components
                .responses
                .insert(name.to_owned(), RefOr::T(problem(status, description)));
        }
        let docs = |summary: &str, description: &str, content: &str| {
            let mut op = Operation::new();
            op.tags = Some(vec!["system".to_owned()]);
            op.summary = Some(summary.to_owned());
            op.security = Some(vec![Default::default()]);
            op.responses.responses.insert(
                "200".to_owned(),
                RefOr::T(
                    ResponseBuilder::new()
                        .description(description)
                        .content(content, ContentBuilder::new().build())
                        .build(),
                ),
            );
            PathItem::new(utoipa::openapi::HttpMethod::Get, op)
        };
        doc.paths.paths.insert(
            "/openapi.json".to_owned(),
            docs("This description.", "OpenAPI 3.1.", "application/json"),
        );
        doc.paths.paths.insert(
            "/docs/".to_owned(),
            docs("Interactive docs (Swagger UI).", "The page.", "text/html"),
        );
        let mut to_docs = docs("Where the interactive docs are.", "", "text/html");
        if let Some(op) = to_docs.get.as_mut() {
            op.responses.responses.clear();
            op.responses.responses.insert(
                "308".to_owned(),
                RefOr::T(
                    ResponseBuilder::new()
                        .description("To `/docs/`.")
                        .header("Location", utoipa::openapi::header::Header::default())
                        .build(),
                ),
            );
        }
        doc.paths.paths.insert("/docs".to_owned(), to_docs);
        for (path, item) in doc.paths.paths.iter_mut() {
            for (method, op) in operations(item) {
                // Open: callable without credentials. Credentials taken: the global ones, or any
                // scheme the operation names (an open one may still take a token, as /metrics).
                let open = op
                    .security
                    .as_ref()
                    .is_some_and(|s| s.iter().any(|r| *r == Default::default()));
                let takes_credentials = op
                    .security
                    .as_ref()
                    .is_none_or(|s| s.iter().any(|r| *r != Default::default()));
                let mut shared = vec!["400", "431", "500", "503"];
                if !crate::middleware::UNLIMITED.contains(&path.as_str()) {
                    shared.push("429");
                }
                if takes_credentials {
                    shared.push("401");
                }
                if !open {
                    shared.push("403");
                }
                if path.contains('{') {
                    shared.push("404");
                }
                if method != "get" {
                    shared.extend(["413", "415", "422"]);
                    // Writes to stored objects, which contention can refuse: the protected ones.
                    if !open {
                        shared.push("409");
                    }
                }
                for (name, status, _) in ERRORS {
                    if shared.contains(&status) {
                        op.responses
                            .responses
                            .entry(status.to_owned())
                            .or_insert_with(|| RefOr::Ref(Ref::from_response_name(name)));
                    }
                }
            }
        }
    }
}

/// Each operation of a path, with its method.
fn operations(item: &mut PathItem) -> Vec<(&'static str, &mut Operation)> {
    [
        ("get", item.get.as_mut()),
        ("post", item.post.as_mut()),
        ("put", item.put.as_mut()),
        ("patch", item.patch.as_mut()),
        ("delete", item.delete.as_mut()),
    ]
    .into_iter()
    .filter_map(|(method, op)| op.map(|op| (method, op)))
    .collect()
}
