//! The route table: one module per resource.

mod agents;
mod conflicts;
mod credentials;
mod dashboard;
mod openapi;

pub(crate) use openapi::description as openapi_description;
mod resources;
mod system;
mod tasks;
mod ui;
mod workflows;

use actix_web::dev::HttpServiceFactory;
use actix_web::middleware::from_fn;
use actix_web::web;
use actix_web::Resource;

use crate::error::ApiError;
use crate::middleware::{deadline, method_not_allowed};

/// One path of the API: the routes `routes` adds to it, `405` with `Allow: allow` for any
/// other method, and the request deadline around all of them.
pub(crate) fn endpoint(
    path: &str,
    allow: &'static str,
    routes: impl FnOnce(Resource) -> Resource,
) -> impl HttpServiceFactory {
    routes(web::resource(path))
        .default_service(method_not_allowed(allow))
        .wrap(from_fn(deadline))
}

/// Largest body of a call that carries many items (a batch of tasks, an agent's reports): a
/// thousand of about 16 KiB each.
pub(crate) const BULK_BODY_BYTES: usize = 16 * 1024 * 1024;

/// `413` for a call carrying more items than it may.
pub(crate) fn too_many_items(what: &str, limit: usize, got: usize) -> ApiError {
    ApiError::new(
        crate::error::ErrorKind::PayloadTooLarge,
        format!("a call carries at most {limit} {what}; this one has {got}"),
    )
}

/// Registers every route.
pub fn configure(cfg: &mut web::ServiceConfig) {
    system::configure(cfg);
    openapi::configure(cfg);
    ui::configure(cfg);
    cfg.service(web::scope("/api/v1").configure(|api| {
        api.service(endpoint("/health", "GET", |r| {
            r.route(web::get().to(system::health))
        }));
        agents::configure(api);
        tasks::configure(api);
        resources::configure(api);
        conflicts::configure(api);
        workflows::configure(api);
        credentials::configure(api);
        dashboard::configure(api);
        api.service(
            web::resource("/ws/{client_id}")
                .route(web::get().to(crate::ws::connect))
                .default_service(method_not_allowed("GET")),
        );
    }));
}
