//! The project's chores, in Rust: `cargo xtask <command>`.

mod baselines;
mod bench;
mod browser;
mod credentials;
mod dashboard;
mod seed;
mod suite;

use std::process::ExitCode;

use adapters_postgres::{PgStore, PoolSettings};

const USAGE: &str = "usage: cargo xtask <command>

commands:
  migrate         apply every pending migration to DATABASE_URL
  seed [--force]  fill DATABASE_URL with a realistic demo fleet (skipped if agents exist,
                  unless --force)
  bench [--quick] the durable path's benchmarks (B1, B2, B3, B4, B5, B12, B13, B14) on the
                  release server, each beside its baseline (pgbench, or a bare actix-web
                  program) in the same run, as one table
  soak [--minutes N] [--rate R]
                  B11: the release server on PostgreSQL under a steady end-to-end load (half
                  the measured maximum unless --rate) for N minutes (default 30), printing each
                  minute's throughput, p99, resident memory and table sizes
  baseline-http PORT BODY_FILE, baseline-sqlx PORT DATABASE_URL
                  the bare programs B4 and B5 are measured against (started by bench)
  bench-scheduler B9: scheduling throughput through PostgreSQL, on fresh databases of the
                  test server (TEST_DATABASE_URL, default postgres://postgres@127.0.0.1/postgres)
  create-user --username U [--role viewer|operator|admin]
                  a user in DATABASE_URL; the password is read from XTASK_PASSWORD
  create-api-key --name N [--role viewer|operator|admin|agent] [--agent-id ID]
                  an API key in DATABASE_URL, printed once on stdout
  dashboard-tests the web dashboard driven in headless Chromium (Debian's chromium and
                  chromium-driver) against the debug server; screenshots of every page go
                  to target/dashboard-screenshots/
  loadtest --auth-token T [options]
                  drive a running server over HTTP and WebSocket and report latencies,
                  status codes and throughput; --simulate runs agents that complete the
                  tasks (cargo xtask loadtest --help lists the options)
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    if args.first().map(String::as_str) == Some("loadtest") {
        // The load generator spreads its clients over every core.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        return match runtime.block_on(loadtest::main(&args[1..])) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("xtask loadtest: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    // The baselines run their own actix runtime.
    match args.first().map(String::as_str) {
        Some("baseline-http") => return report(baselines::http(&args[1..])),
        Some("baseline-sqlx") => return report(baselines::sqlx(&args[1..])),
        Some("dashboard-tests") => return report(dashboard::run()),
        _ => {}
    }
    let result = match args.first().map(String::as_str) {
        Some("migrate") => runtime.block_on(migrate()),
        Some("seed") => runtime.block_on(seed::run(args.iter().any(|a| a == "--force"))),
        Some("bench-scheduler") => runtime.block_on(bench::run()),
        Some("bench") => runtime.block_on(suite::run(&args[1..])),
        Some("soak") => runtime.block_on(suite::soak(&args[1..])),
        Some("create-user") => runtime.block_on(credentials::create_user(&args[1..])),
        Some("create-api-key") => runtime.block_on(credentials::create_api_key(&args[1..])),
        Some("help" | "--help" | "-h") => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        _ => {
            eprint!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    report(result)
}

/// A command's outcome as the process's exit code, its error printed.
fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Connects to `DATABASE_URL`.
async fn connect() -> anyhow::Result<PgStore> {
    let url = std::env::var("DATABASE_URL")
        .map_err(|_| anyhow::anyhow!("DATABASE_URL must point at the PostgreSQL database"))?;
    Ok(PgStore::connect(&url, &PoolSettings::default()).await?)
}

async fn migrate() -> anyhow::Result<()> {
    let store = connect().await?;
    store.migrate().await?;
    let applied = adapters_postgres::MIGRATOR.iter().count();
    println!("database is up to date ({applied} migrations)");
    store.close().await;
    Ok(())
}
