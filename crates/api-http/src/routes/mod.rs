//! The route table: one module per resource.

mod agents;
mod system;
mod tasks;

use actix_web::web;

use crate::middleware::method_not_allowed;

/// Registers every route.
pub fn configure(cfg: &mut web::ServiceConfig) {
    system::configure(cfg);
    cfg.service(web::scope("/api/v1").configure(|api| {
        api.service(
            web::resource("/health")
                .route(web::get().to(system::health))
                .default_service(method_not_allowed("GET")),
        );
        agents::configure(api);
        tasks::configure(api);
    }));
}
