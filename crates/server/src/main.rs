//! The `agent-platform` server: reads its configuration, wires the adapters, serves HTTP,
//! runs the background jobs, and shuts down gracefully on SIGTERM or SIGINT.

mod compose;
mod config;
mod files;
mod probe;
mod telemetry;

use std::process::ExitCode;

use actix_web::HttpServer;
use api_http::{BodyLimit, Phase};

use crate::config::Config;

/// mimalloc rather than the system allocator: the server allocates and frees many small
/// buffers per request (JSON, rows, events), and glibc's allocator was a fifth of its CPU time
/// under load (see docs/PERFORMANCE.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[actix_web::main]
async fn main() -> ExitCode {
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("agent-platform: invalid configuration: {e}");
            return ExitCode::from(2);
        }
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        None => {}
        Some("probe") if args.len() <= 2 => {
            return if probe::run(&config, args.get(1).map(String::as_str)) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            };
        }
        Some(_) => {
            eprintln!("usage: agent-platform [probe [PATH]]");
            return ExitCode::from(2);
        }
    }
    let _flush = match telemetry::init(&config) {
        Ok(flush) => flush,
        Err(e) => {
            eprintln!("agent-platform: cannot start the log writer: {e}");
            return ExitCode::FAILURE;
        }
    };
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
    if config.migrations == config::Migrations::Only {
        return Ok(compose::migrate_only(&config).await?);
    }
    let open_files = files::raise_limit();
    let workers = config.workers.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    let database_connections = if config.database_url.is_some() {
        config.database_max_connections
    } else {
        0
    };
    let budget = files::Budget::new(open_files, workers, database_connections);
    tracing::info!(open_files, ?budget, "open-file limit");
    let runtime = compose::build(&config, budget.websockets).await?;
    let jobs = app::spawn_background_jobs(runtime.state.platform.clone());

    let state = runtime.state.clone();
    let readiness = state.readiness.clone();
    readiness.set(Phase::Starting);
    let body_limit = BodyLimit(config.max_body_bytes);
    let mut server = HttpServer::new(move || api_http::app(state.clone(), body_limit))
        .shutdown_timeout(config.shutdown_timeout.as_secs())
        // A client must send its request head within 5 s and its body before the request
        // deadline (`api_http::REQUEST_DEADLINE`); idle keep-alive connections close after 75 s.
        .client_request_timeout(std::time::Duration::from_secs(5))
        .client_disconnect_timeout(std::time::Duration::from_secs(5))
        .keep_alive(std::time::Duration::from_secs(75))
        .max_connection_rate(1024)
        // Signals are handled below, so SIGINT drains as gracefully as SIGTERM.
        .disable_signals()
        // Events are small frames that should leave at once, not wait for more to coalesce.
        .on_connect(|connection, _| {
            if let Some(tcp) = connection.downcast_ref::<actix_web::rt::net::TcpStream>() {
                let _ = tcp.set_nodelay(true);
            }
        })
        .bind((config.host, config.port))?;
    server = server
        .workers(workers)
        // Every connection takes a descriptor: together they never take them all.
        .max_connections(budget.connections_per_worker);
    let addrs = server.addrs();
    let server = server.run();
    let handle = server.handle();
    readiness.set(Phase::Ready);
    // Said once ready, so whoever waits for this line finds `/readyz` answering 200.
    for addr in addrs {
        tracing::info!(%addr, "listening");
    }
    let drain = config.shutdown_drain;
    tokio::spawn(async move {
        let signal = shutdown_signal().await;
        readiness.set(Phase::Draining);
        if !drain.is_zero() {
            tracing::info!(
                signal,
                seconds = drain.as_secs(),
                "draining: /readyz answers 503 while requests are still taken"
            );
            tokio::time::sleep(drain).await;
        }
        tracing::info!(
            signal,
            "starting graceful shutdown: no new connections, finishing in-flight requests"
        );
        handle.stop(true).await;
    });
    server.await?;

    tracing::info!("HTTP server stopped; stopping background jobs and closing connections");
    jobs.shutdown().await;
    runtime.close().await;
    tracing::info!("shutdown complete");
    Ok(())
}

/// Resolves on the first SIGTERM or SIGINT, naming it.
async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot listen for shutdown signals; stop the process with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}
