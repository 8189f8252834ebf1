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

use crate::middleware::{deadline, method_not_allowed};

/// Registers every route.
pub fn configure(cfg: &mut web::ServiceConfig) {
    system::configure(cfg);
    cfg.service(web::scope("/api/v1").configure(|api| {
        api.service(
            web::resource("/health")
                .route(web::get().to(system::health))
                .default_service(method_not_allowed("GET"))
                .wrap(from_fn(deadline)),
        );
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
