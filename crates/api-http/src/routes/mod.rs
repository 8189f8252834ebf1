//! The route table: one module per resource.

mod agents;
mod conflicts;
mod credentials;
mod dashboard;
mod resources;
mod system;
mod tasks;

use actix_web::middleware::from_fn;
use actix_web::web;

use actix_web::dev::HttpServiceFactory;
use actix_web::Resource;

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

/// Registers every route.
pub fn configure(cfg: &mut web::ServiceConfig) {
    system::configure(cfg);
    cfg.service(web::scope("/api/v1").configure(|api| {
        api.service(endpoint("/health", "GET", |r| {
            r.route(web::get().to(system::health))
        }));
        agents::configure(api);
        tasks::configure(api);
        resources::configure(api);
        conflicts::configure(api);
        credentials::configure(api);
        dashboard::configure(api);
        api.service(
            web::resource("/ws/{client_id}")
                .route(web::get().to(crate::ws::connect))
                .default_service(method_not_allowed("GET")),
        );
    }));
}
