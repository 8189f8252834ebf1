//! The `agent-platform` server: reads its configuration, wires the adapters, serves HTTP,
//! runs the background jobs, and shuts down gracefully on SIGTERM or SIGINT.

mod compose;
mod config;
mod telemetry;

use std::process::ExitCode;

use actix_web::HttpServer;
use api_http::BodyLimit;

use crate::config::Config;

#[actix_web::main]
async fn main() -> ExitCode {
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("agent-platform: invalid configuration: {e}");
            return ExitCode::from(2);
        }
    };
    telemetry::init(&config);
    match run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "agent-platform could not start");
            eprintln!("agent-platform: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    let runtime = compose::build(&config).await?;
    let jobs = app::spawn_background_jobs(runtime.state.platform.clone());

    let state = runtime.state.clone();
    let body_limit = BodyLimit(config.max_body_bytes);
    let mut server = HttpServer::new(move || api_http::app(state.clone(), body_limit))
        .shutdown_timeout(config.shutdown_timeout.as_secs())
        .bind((config.host, config.port))?;
    if let Some(workers) = config.workers {
        server = server.workers(workers);
    }
    for addr in server.addrs() {
        tracing::info!(%addr, "listening");
    }
    // actix-web stops accepting on SIGTERM/SIGINT and waits for in-flight requests.
    server.run().await?;

    tracing::info!("HTTP server stopped; stopping background jobs and closing connections");
    jobs.shutdown().await;
    runtime.close().await;
    tracing::info!("shutdown complete");
    Ok(())
}
