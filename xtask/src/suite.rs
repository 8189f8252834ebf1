//! `cargo xtask bench`: the benchmarks of the durable path, each beside its baseline measured
//! in the same run on the same machine, printed as one table of ratios against the targets.
//!
//! The baselines are pgbench on the same PostgreSQL server (a task-shaped single-row `INSERT`;
//! a `SKIP LOCKED` claim and completion of one job per transaction). Our figures come from the
//! release server, started on a fresh database for each, driven by the load generator over
//! loopback. Load only ever goes to loopback, and every run is bounded in count and time.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context;
use serde_json::Value;

pub(crate) const ADMIN_KEY: &str = "bench-suite-admin-key-0123456789";
/// How long each pgbench baseline runs.
const PGBENCH_SECONDS: u64 = 10;
/// How long the idle fleet's queries are counted (B14).
const WINDOW: u64 = 20;
/// How long wrk drives each read benchmark (B4, B5), and with how many connections.
const WRK_SECONDS: u64 = 10;
const WRK_CONNECTIONS: &str = "64";

const USAGE: &str = "xtask bench: cargo xtask bench [--quick]
  Builds the release server, then measures, each beside its baseline in the same run:
  B1 single submissions, B12 batched submissions, B2 end to end (the seed's per-task calls,
  and batched reports) on PostgreSQL and on the embedded store, B3 submit to assignment at
  half of B2's rate, B10 two replicas on one database beside one, B14 the queries of an idle
  fleet, and B4 and B5 reads beside bare actix-web programs. Needs PostgreSQL
  (TEST_DATABASE_URL, default postgres://postgres@127.0.0.1:5432/postgres), Redis for B10
  (TEST_REDIS_URL, default redis://127.0.0.1:6379), pgbench, psql, curl and wrk. --quick runs
  each measurement a fifth as long.
";

/// One line of the table.
struct Row {
    id: &'static str,
    what: String,
    ours: f64,
    baseline: Option<(String, f64)>,
    target: &'static str,
}

pub async fn run(args: &[String]) -> anyhow::Result<()> {
    if args.iter().any(|a| a == "--help" || a == "-h") {
        print!("{USAGE}");
        return Ok(());
    }
    let scale = if args.iter().any(|a| a == "--quick") {
        5
    } else {
        1
    };
    for (tool, package) in [
        ("pgbench", "postgresql-client"),
        ("psql", "postgresql-client"),
        ("curl", "curl"),
        ("wrk", "wrk"),
    ] {
        let found = Command::new(tool).arg("--version").output().is_ok();
        anyhow::ensure!(
            found,
            "{tool} is needed (Debian: apt-get install {package})"
        );
    }
    redis_reachable()?;
    let binary = build_release()?;
    if cfg!(debug_assertions) {
        // The load generator must not be the bottleneck: measure from the release build.
        let status = Command::new(binary.with_file_name("xtask"))
            .arg("bench")
            .args(args)
            .status()
            .context("cannot run the release xtask")?;
        anyhow::ensure!(status.success(), "the benchmarks failed");
        return Ok(());
    }
    let mut rows = Vec::new();

    eprintln!("baselines: pgbench on the same server");
    let insert = pgbench_insert().await?;
    let claim = pgbench_claim_complete().await?;
    let insert_baseline = Some(("pgbench single-row insert".to_owned(), insert));
    let claim_baseline = Some(("pgbench claim + complete".to_owned(), claim));

    eprintln!("B1: POST /tasks, 64 at once");
    let tasks = (30_000 / scale).to_string();
    let b1 = on_postgres(&binary, |url| {
        loadtest(url, owned(&["--agents", "1", "--tasks", &tasks]))
    })
    .await?;
    rows.push(Row {
        id: "B1",
        what: "POST /tasks, 64 concurrent, submissions/s".into(),
        ours: figure(&b1, "submissions_per_second")?,
        baseline: insert_baseline.clone(),
        target: "≥ 1.5×",
    });

    eprintln!("B12: POST /tasks/batch of 1,000");
    let tasks = (200_000 / scale).to_string();
    let b12 = on_postgres(&binary, |url| {
        loadtest(
            url,
            owned(&[
                "--agents",
                "1",
                "--tasks",
                &tasks,
                "--batch-size",
                "1000",
                "--concurrency",
                "4",
            ]),
        )
    })
    .await?;
    rows.push(Row {
        id: "B12",
        what: "POST /tasks/batch of 1,000, tasks/s".into(),
        ours: figure(&b12, "submissions_per_second")?,
        baseline: None,
        target: "≥ 50,000",
    });

    let per_task = [
        "--simulate",
        "--agents",
        "32",
        "--agent-slots",
        "4",
        "--concurrency",
        "32",
    ];
    let batched = [
        "--simulate",
        "--batch-reports",
        "--agents",
        "64",
        "--agent-slots",
        "16",
        "--concurrency",
        "64",
    ];
    // The fastest documented way: the same agents, told of their assignments on their own
    // WebSockets instead of long-polling.
    let mut pushed = batched;
    pushed[1] = "--push";
    for (store, postgres) in [("PostgreSQL", true), ("embedded", false)] {
        for (how, flags, tasks) in [
            ("per-task calls", &per_task[..], 5_000),
            ("batched reports", &batched[..], 20_000),
            ("pushed assignments, batched reports", &pushed[..], 20_000),
        ] {
            eprintln!("B2 on {store}: {how}");
            let tasks = (tasks / scale).to_string();
            let mut args: Vec<&str> = flags.to_vec();
            args.extend(["--tasks", &tasks]);
            let drive = |url: String| loadtest(url, owned(&args));
            let report = if postgres {
                on_postgres(&binary, drive).await?
            } else {
                with_server(&binary, None, drive).await?
            };
            let maximum = figure(&report, "end_to_end_tasks_per_second")?;
            if postgres {
                // B3 at half of that maximum, a constant-rate load: submit to assignment.
                eprintln!("B3 on {store}: {how}, at half the rate");
                let rate = ((maximum / 2.0).max(1.0) as u64).to_string();
                let tasks = ((maximum / 2.0) as u64 * 10 / scale as u64)
                    .max(100)
                    .to_string();
                let mut args: Vec<&str> = flags.to_vec();
                args.extend(["--tasks", &tasks, "--rate", &rate]);
                let paced = on_postgres(&binary, |url| loadtest(url, owned(&args))).await?;
                figure(&paced, "end_to_end_tasks_per_second")?; // and no request failed
                let latency = &paced["latencies_ms"]["submit_to_assignment"];
                for (quantile, target) in [("p50", "≤ 10 ms"), ("p99", "≤ 50 ms")] {
                    rows.push(Row {
                        id: "B3",
                        what: format!("submit to assignment, {how}, at {rate}/s, {quantile} ms"),
                        ours: latency[quantile].as_f64().context("a latency")?,
                        baseline: None,
                        target,
                    });
                }
            }
            rows.push(Row {
                id: if postgres { "B2" } else { "B13" },
                what: format!("end to end on {store}, {how}, tasks/s"),
                ours: maximum,
                baseline: if postgres {
                    claim_baseline.clone()
                } else {
                    None
                },
                target: if postgres {
                    "≥ 2× and ≥ 8,600"
                } else {
                    "≥ 14,000"
                },
            });
        }
    }

    eprintln!("B10: two replicas on one database, beside one");
    let tasks = (6_000 / scale).to_string();
    let mut args: Vec<&str> = per_task.to_vec();
    args.extend(["--tasks", &tasks]);
    let one = replicas(&binary, 1, |urls| loadtest(urls, owned(&args))).await?;
    let two = replicas(&binary, 2, |urls| loadtest(urls, owned(&args))).await?;
    rows.push(Row {
        id: "B10",
        what: "two replicas on one database, per-task calls, tasks/s".into(),
        ours: figure(&two, "end_to_end_tasks_per_second")?,
        baseline: Some((
            "one replica".to_owned(),
            figure(&one, "end_to_end_tasks_per_second")?,
        )),
        target: "≥ 0.9×",
    });

    eprintln!("B14: queries of an idle fleet");
    let mut idle = Vec::new();
    for agents in [100, 1_000] {
        idle.push((agents, idle_queries(&binary, agents).await?));
    }
    for &(agents, rate) in &idle {
        rows.push(Row {
            id: "B14",
            what: format!("idle fleet of {agents} long-polling agents, queries/s"),
            ours: rate,
            baseline: (agents > 100).then(|| ("the same with 100 agents".to_owned(), idle[0].1)),
            target: "flat",
        });
    }

    eprintln!("B4 and B5: reads beside bare actix-web programs");
    let seconds = (WRK_SECONDS / scale as u64).max(2);
    let (ours, bare) = agent_reads(&binary, seconds)?;
    rows.push(Row {
        id: "B4",
        what: "`GET /agents/{id}` on the embedded store, requests/s".into(),
        ours: ours.per_second,
        baseline: Some(("bare actix-web JSON handler".to_owned(), bare.per_second)),
        target: "≥ 0.6×",
    });
    let (ours, bare) = task_reads(&binary, seconds).await?;
    rows.push(Row {
        id: "B5",
        what: "`GET /tasks/{id}` on PostgreSQL, requests/s".into(),
        ours: ours.per_second,
        baseline: Some((
            "bare actix-web + sqlx by primary key".to_owned(),
            bare.per_second,
        )),
        target: "≥ 0.8×",
    });
    rows.push(Row {
        id: "B5",
        what: "`GET /tasks/{id}` on PostgreSQL, p99 ms".into(),
        ours: ours.p99_ms,
        baseline: Some(("the bare program's".to_owned(), bare.p99_ms)),
        target: "≤ 10 ms",
    });

    println!("| id | what | ours | baseline, same run | ratio | target |");
    println!("|---|---|---:|---|---:|---|");
    for row in rows {
        let (baseline, ratio) = match &row.baseline {
            Some((name, value)) if *value > 0.0 => (
                format!("{name}: {value:.0}"),
                format!("{:.2}×", row.ours / value),
            ),
            _ => (String::new(), String::new()),
        };
        let ours = if row.ours < 100.0 {
            format!("{:.1}", row.ours)
        } else {
            format!("{:.0}", row.ours)
        };
        println!(
            "| {} | {} | {ours} | {baseline} | {ratio} | {} |",
            row.id, row.what, row.target
        );
    }
    Ok(())
}

/// Owned arguments.
fn owned(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// A headline figure of a load generator report.
fn figure(report: &Value, name: &str) -> anyhow::Result<f64> {
    anyhow::ensure!(
        report["failed"] == 0,
        "the run had failed requests: {report:#}"
    );
    report["summary"][name]
        .as_f64()
        .with_context(|| format!("the report has no {name}: {report:#}"))
}

/// Builds the release server and load generator; returns the server's path.
fn build_release() -> anyhow::Result<PathBuf> {
    eprintln!("building the release server and load generator");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--release", "-p", "server", "-p", "xtask"])
        .status()
        .context("cannot run cargo")?;
    anyhow::ensure!(status.success(), "the release build failed");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("xtask lives in the workspace")?;
    Ok(root.join("target/release/agent-platform"))
}

/// The load generator against `base_url` with the operator key, submitting and nothing else
/// unless `extra` asks: its report as JSON.
async fn loadtest(base_url: String, extra: Vec<String>) -> anyhow::Result<Value> {
    let mut args: Vec<String> = [
        "--base-url",
        &base_url,
        "--auth-token",
        ADMIN_KEY,
        "--list-requests",
        "0",
        "--health-requests",
        "0",
        "--dashboard-requests",
        "0",
        "--websocket-connections",
        "0",
        "--max-seconds",
        "300",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra);
    let options = loadtest::Options::parse(&args)?;
    // The load generator spreads its clients over every core, off this runtime.
    let report = tokio::task::spawn_blocking(move || {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(loadtest::run(&options))
    })
    .await??;
    Ok(report.to_json())
}

/// `drive` run against the release server on a fresh PostgreSQL database.
async fn on_postgres<F, Fut>(binary: &Path, drive: F) -> anyhow::Result<Value>
where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Value>>,
{
    let database = adapters_postgres::testing::fresh_database().await;
    with_server(binary, Some(&database), drive).await
}

/// `drive` run against the release server, on `database` or the embedded store; the server
/// is stopped afterwards.
async fn with_server<F, Fut>(
    binary: &Path,
    database: Option<&str>,
    drive: F,
) -> anyhow::Result<Value>
where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Value>>,
{
    let server = Server::start(binary, database)?;
    let result = drive(format!("http://127.0.0.1:{}", server.port)).await;
    drop(server);
    result
}

/// `drive` run against `count` replicas of the release server on one fresh PostgreSQL database
/// and the Redis at `TEST_REDIS_URL`, given their base URLs joined by commas (the load
/// generator spreads its clients over them). Fails unless every task submitted completed and
/// no attempt of any task was assigned twice, as the event log records them.
async fn replicas<F, Fut>(binary: &Path, count: usize, drive: F) -> anyhow::Result<Value>
where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Value>>,
{
    let redis = redis_url();
    let database = adapters_postgres::testing::fresh_database().await;
    let mut servers = Vec::new();
    for _ in 0..count {
        let (mut command, port) = Server::command(binary, Some(&database))?;
        command.env("REDIS_URL", &redis);
        servers.push(Server::spawn(command, port).context("a replica did not start")?);
    }
    let urls: Vec<String> = servers.iter().map(|s| s.url("")).collect();
    let report = drive(urls.join(",")).await?;
    drop(servers);
    let summary = &report["summary"];
    anyhow::ensure!(
        summary["tasks_not_completed"] == 0,
        "tasks were lost: {summary}"
    );
    let twice = psql(
        &database,
        "SELECT count(*) FROM (SELECT 1 FROM events WHERE type = 'task_assigned'
             GROUP BY task_id, data->>'attempt' HAVING count(*) > 1) AS twice",
    )?;
    anyhow::ensure!(twice == "0", "{twice} attempts were assigned twice");
    Ok(report)
}

/// The Redis B10's replicas share: `TEST_REDIS_URL`, or the local default.
fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// Fails, saying how to start it, unless the Redis at [`redis_url`] accepts connections.
fn redis_reachable() -> anyhow::Result<()> {
    let url = redis_url();
    let rest = url.trim_start_matches("redis://");
    let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    let address = rest.split('/').next().unwrap_or(rest);
    anyhow::ensure!(
        TcpStream::connect(address).is_ok(),
        "Redis (TEST_REDIS_URL) does not answer at {address}, and B10 needs it: start it with \
         `redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save \"\" --appendonly no`"
    );
    Ok(())
}

/// The release server, running until dropped.
pub(crate) struct Server {
    child: Child,
    pub(crate) port: u16,
}

impl Server {
    fn start(binary: &Path, database: Option<&str>) -> anyhow::Result<Self> {
        let (command, port) = Self::command(binary, database)?;
        Self::spawn(command, port)
    }

    /// The command that runs the release server on a free port (returned beside it), on
    /// `database` or the embedded store, with rate limits off.
    pub(crate) fn command(binary: &Path, database: Option<&str>) -> anyhow::Result<(Command, u16)> {
        let port = free_port()?;
        let mut command = Command::new(binary);
        command
            .env("HOST", "127.0.0.1")
            .env("PORT", port.to_string())
            .env("ADMIN_API_KEY", ADMIN_KEY)
            .env("RATE_LIMIT_PER_SECOND", "0")
            // Off too: B14's 1,000 agents present 1,000 new keys from one address at once,
            // which the per-address limit on key lookups would refuse.
            .env("RATE_LIMIT_ANONYMOUS_PER_SECOND", "0")
            .env_remove("DATABASE_URL")
            .env_remove("REDIS_URL");
        if let Some(url) = database {
            command.env("DATABASE_URL", url);
        }
        Ok((command, port))
    }

    /// One of the bare baseline programs (see `crate::baselines`), run by the release xtask
    /// built beside the server `binary`: `xtask <command> PORT <rest>`.
    fn baseline(binary: &Path, command: &str, rest: &[&str]) -> anyhow::Result<Self> {
        let port = free_port()?;
        let mut program = Command::new(binary.with_file_name("xtask"));
        program.arg(command).arg(port.to_string()).args(rest);
        Self::spawn(program, port)
    }

    /// Runs `command` and waits until it listens on `port`.
    pub(crate) fn spawn(mut command: Command, port: u16) -> anyhow::Result<Self> {
        command.stdout(Stdio::null()).stderr(Stdio::null());
        let child = command
            .spawn()
            .with_context(|| format!("cannot start {:?}", command.get_program()))?;
        let mut server = Self { child, port };
        for _ in 0..100 {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(server);
            }
            if let Some(status) = server.child.try_wait()? {
                anyhow::bail!(
                    "the server exited at start-up ({status}); run it by hand to see why"
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        anyhow::bail!("the server did not listen within 10 s")
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

/// A port free on loopback now.
pub(crate) fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs SQL on `database` with psql.
fn psql(database: &str, sql: &str) -> anyhow::Result<String> {
    let out = Command::new("psql")
        .args([
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            database,
            "-c",
            sql,
        ])
        .output()
        .context("cannot run psql")?;
    anyhow::ensure!(
        out.status.success(),
        "psql failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// pgbench with `script` on `database`, 64 clients: transactions per second.
fn pgbench(database: &str, script: &str) -> anyhow::Result<f64> {
    let file = std::env::temp_dir().join(format!("xtask-bench-{}.sql", std::process::id()));
    std::fs::write(&file, script)?;
    let out = Command::new("pgbench")
        .args([
            "-n",
            "-c",
            "64",
            "-j",
            "2",
            "-T",
            &PGBENCH_SECONDS.to_string(),
            "-f",
        ])
        .arg(&file)
        .arg(database)
        .output()
        .context("cannot run pgbench")?;
    let _ = std::fs::remove_file(&file);
    let text = String::from_utf8_lossy(&out.stdout);
    anyhow::ensure!(
        out.status.success(),
        "pgbench failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines()
        .find_map(|l| l.strip_prefix("tps = "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|tps| tps.parse().ok())
        .with_context(|| format!("no tps in pgbench's output: {text}"))
}

/// A single-row `INSERT` of a task-shaped row per transaction.
async fn pgbench_insert() -> anyhow::Result<f64> {
    let database = adapters_postgres::testing::fresh_database().await;
    psql(
        &database,
        "CREATE TABLE tasks_like (id uuid PRIMARY KEY, title text NOT NULL,
             priority int NOT NULL, status text NOT NULL, required_capabilities text[] NOT NULL,
             metadata jsonb NOT NULL, created_at timestamptz NOT NULL, version bigint NOT NULL)",
    )?;
    pgbench(
        &database,
        "INSERT INTO tasks_like VALUES (gen_random_uuid(), 'a task', 5, 'pending',
             ARRAY['data_processing'], '{\"customer_id\": \"12345\"}', now(), 0);\n",
    )
}

/// The durable peer's loop at its cheapest: claim the oldest pending job with `SKIP LOCKED`
/// and complete it, one job per transaction.
async fn pgbench_claim_complete() -> anyhow::Result<f64> {
    let database = adapters_postgres::testing::fresh_database().await;
    psql(
        &database,
        "CREATE TABLE jobs (id bigserial PRIMARY KEY, status text NOT NULL,
             payload jsonb NOT NULL, completed_at timestamptz);
         CREATE INDEX jobs_pending ON jobs (id) WHERE status = 'pending';
         INSERT INTO jobs (status, payload)
             SELECT 'pending', '{\"n\": 1}' FROM generate_series(1, 1000000)",
    )?;
    psql(&database, "VACUUM ANALYZE jobs")?;
    pgbench(
        &database,
        "BEGIN;
SELECT id FROM jobs WHERE status = 'pending' ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED \\gset
UPDATE jobs SET status = 'done', completed_at = now() WHERE id = :id;
COMMIT;
",
    )
}

/// The database transactions per second of the server with `agents` agents registered and
/// long-polling for work that never comes.
async fn idle_queries(binary: &Path, agents: usize) -> anyhow::Result<f64> {
    let database = adapters_postgres::testing::fresh_database().await;
    let count = |db: &str| -> anyhow::Result<f64> {
        let n = psql(
            db,
            "SELECT xact_commit + xact_rollback FROM pg_stat_database
             WHERE datname = current_database()",
        )?;
        n.parse().context("a transaction count")
    };
    let db = database.clone();
    with_server(binary, Some(&database), |url| async move {
        let agents = agents.to_string();
        let fleet = tokio::spawn(async move {
            let args = [
                "--simulate",
                "--agents",
                &agents,
                "--tasks",
                "0",
                "--hold-seconds",
                "40",
            ];
            loadtest(url, owned(&args)).await
        });
        // Registered and waiting by then; the window, inside the hold, is longer than the
        // agents' 15 s between heartbeats, so it counts theirs too.
        tokio::time::sleep(Duration::from_secs(10)).await;
        let before = count(&db)?;
        tokio::time::sleep(Duration::from_secs(WINDOW)).await;
        let after = count(&db)?;
        // The fleet's own report, with the window's rate in its summary: `figure` then also
        // refuses a run in which the agents' requests failed.
        let mut report = fleet.await??;
        report["summary"]["queries_per_second"] = ((after - before) / WINDOW as f64).into();
        Ok(report)
    })
    .await
    .and_then(|report| figure(&report, "queries_per_second"))
}

/// What wrk measured: requests per second, and the 99th percentile of latency.
#[derive(Debug, Clone, Copy)]
struct Reads {
    per_second: f64,
    p99_ms: f64,
}

/// wrk against `url` (loopback) for `seconds`, with the operator key.
fn wrk(url: &str, seconds: u64) -> anyhow::Result<Reads> {
    anyhow::ensure!(url.starts_with("http://127.0.0.1:"), "loopback only: {url}");
    let out = Command::new("wrk")
        .args(["-t", "2", "-c", WRK_CONNECTIONS, "-d"])
        .arg(format!("{seconds}s"))
        .args(["--latency", "-H"])
        .arg(format!("X-API-Key: {ADMIN_KEY}"))
        .arg(url)
        .output()
        .context("cannot run wrk")?;
    let text = String::from_utf8_lossy(&out.stdout);
    anyhow::ensure!(out.status.success(), "wrk failed: {text}");
    anyhow::ensure!(
        !text.contains("Non-2xx or 3xx responses") && !text.contains("Socket errors"),
        "wrk saw failed requests: {text}"
    );
    let per_second = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("no rate in wrk's output: {text}"))?;
    let p99 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("99%"))
        .map(str::trim)
        .with_context(|| format!("no 99th percentile in wrk's output: {text}"))?;
    Ok(Reads {
        per_second,
        p99_ms: milliseconds(p99)?,
    })
}

/// One of wrk's durations (`850.00us`, `1.23ms`, `2.00s`) in milliseconds.
fn milliseconds(text: &str) -> anyhow::Result<f64> {
    let split = text
        .find(|c: char| c.is_ascii_alphabetic())
        .with_context(|| format!("a duration without a unit: {text}"))?;
    let (value, unit) = text.split_at(split);
    let value: f64 = value.parse()?;
    Ok(match unit {
        "us" => value / 1000.0,
        "ms" => value,
        "s" => value * 1000.0,
        "m" => value * 60_000.0,
        _ => anyhow::bail!("an unknown unit: {text}"),
    })
}

/// A JSON request to `url` (loopback) with the operator key: the answer's body.
fn curl(method: &str, url: &str, body: Option<&Value>) -> anyhow::Result<Value> {
    let mut command = Command::new("curl");
    command
        .args(["-s", "-f", "-X", method, "-H"])
        .arg(format!("X-API-Key: {ADMIN_KEY}"));
    if let Some(body) = body {
        command
            .args(["-H", "Content-Type: application/json", "-d"])
            .arg(body.to_string());
    }
    let out = command.arg(url).output().context("cannot run curl")?;
    anyhow::ensure!(out.status.success(), "{method} {url} failed");
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// B4: one agent read through the whole server on the embedded store, then the same bytes from
/// a bare actix-web handler.
fn agent_reads(binary: &Path, seconds: u64) -> anyhow::Result<(Reads, Reads)> {
    let server = Server::start(binary, None)?;
    let registered = curl(
        "POST",
        &server.url("/api/v1/agents"),
        Some(&serde_json::json!({
            "name": "bench-agent",
            "capabilities": ["data_processing"],
            "resources": {"cpu": 4, "memory": "8Gi"},
            "max_concurrent_tasks": 4,
        })),
    )?;
    let id = registered["id"]
        .as_str()
        .context("the registration names the agent")?
        .to_owned();
    let path = format!("/api/v1/agents/{id}");
    let body = curl("GET", &server.url(&path), None)?;
    let ours = wrk(&server.url(&path), seconds)?;
    drop(server);
    let file = std::env::temp_dir().join(format!("xtask-bench-body-{}.json", std::process::id()));
    std::fs::write(&file, body.to_string())?;
    let bare = Server::baseline(binary, "baseline-http", &[&file.to_string_lossy()]);
    let bare = bare.and_then(|bare| wrk(&bare.url(&path), seconds));
    let _ = std::fs::remove_file(&file);
    Ok((ours, bare?))
}

/// B5: one task read through the whole server on PostgreSQL, then by a bare actix-web + sqlx
/// program on the same database.
async fn task_reads(binary: &Path, seconds: u64) -> anyhow::Result<(Reads, Reads)> {
    let database = adapters_postgres::testing::fresh_database().await;
    let server = Server::start(binary, Some(&database))?;
    let task = curl(
        "POST",
        &server.url("/api/v1/tasks"),
        Some(&serde_json::json!({
            "title": "bench task",
            "priority": 5,
            "required_capabilities": ["data_processing"],
            "metadata": {"customer_id": "12345"},
        })),
    )?;
    let id = task["id"]
        .as_str()
        .context("the task has an ID")?
        .to_owned();
    let path = format!("/api/v1/tasks/{id}");
    let ours = wrk(&server.url(&path), seconds)?;
    drop(server);
    let bare = Server::baseline(binary, "baseline-sqlx", &[&database])?;
    let bare_reads = wrk(&bare.url(&path), seconds)?;
    Ok((ours, bare_reads))
}

/// B11, `cargo xtask soak [--minutes N] [--rate R]`: the release server on a fresh PostgreSQL
/// database under a steady end-to-end load (simulated agents with per-task calls) of `R`
/// tasks a second, half of what a short run first measures as the maximum unless given, for
/// `N` minutes (default 30), a minute at a time, each with agents of its own (deregistered at
/// its end). After each minute it prints the minute's
/// throughput and submit-to-completion p99, the server's resident memory, and the size of the
/// `tasks` and `events` tables; at the end, how each moved from the first minute to the last.
pub async fn soak(args: &[String]) -> anyhow::Result<()> {
    let mut minutes: u64 = 30;
    let mut rate: Option<u64> = None;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let value = || -> anyhow::Result<u64> {
            Ok(args
                .clone()
                .next()
                .with_context(|| format!("{arg} takes a number"))?
                .parse()?)
        };
        match arg.as_str() {
            "--minutes" => minutes = value()?,
            "--rate" => rate = Some(value()?),
            other => anyhow::bail!("unknown option {other} (expected --minutes N, --rate R)"),
        }
        args.next();
    }
    anyhow::ensure!((1..=1440).contains(&minutes), "--minutes must be 1 to 1440");
    let binary = build_release()?;
    let database = adapters_postgres::testing::fresh_database().await;
    let server = Server::start(&binary, Some(&database))?;
    let rate = match rate {
        Some(rate) => rate.max(1),
        None => {
            eprintln!("measuring the maximum end-to-end rate (3,000 tasks)");
            let flags = [
                "--simulate",
                "--agents",
                "32",
                "--agent-slots",
                "4",
                "--concurrency",
                "32",
                "--tasks",
                "3000",
            ];
            let report = loadtest(server.url(""), owned(&flags)).await?;
            (figure(&report, "end_to_end_tasks_per_second")? / 2.0).max(1.0) as u64
        }
    };
    println!("soak: {minutes} min at {rate} tasks/s on PostgreSQL (per-task calls)");
    println!(
        "{:>6} {:>9} {:>11} {:>9} {:>10} {:>11}",
        "minute", "tasks/s", "p99 ms", "RSS MiB", "tasks MB", "events MB"
    );
    let mut rows: Vec<[f64; 5]> = Vec::new();
    for minute in 1..=minutes {
        let tasks = (rate * 60).to_string();
        let rate_text = rate.to_string();
        let flags = [
            "--simulate",
            "--agents",
            "16",
            "--agent-slots",
            "4",
            "--concurrency",
            "16",
            "--rate",
            &rate_text,
            "--tasks",
            &tasks,
        ];
        let report = loadtest(server.url(""), owned(&flags)).await?;
        // The minute's agents stop with it: deregistered, so the next minute's tasks are not
        // assigned to agents that no longer ask for work (they would wait out their lease).
        let agents = curl("GET", &server.url("/api/v1/agents?limit=1000"), None)?;
        for agent in agents.as_array().into_iter().flatten() {
            if let Some(id) = agent["id"].as_str() {
                curl("DELETE", &server.url(&format!("/api/v1/agents/{id}")), None)?;
            }
        }
        let throughput = figure(&report, "end_to_end_tasks_per_second")?;
        let p99 = report["latencies_ms"]["submit_to_complete"]["p99"]
            .as_f64()
            .context("a latency")?;
        let rss = resident_mib(server.child.id())?;
        let size = |table: &str| -> anyhow::Result<f64> {
            let bytes: f64 = psql(
                &database,
                &format!("SELECT pg_total_relation_size('{table}')"),
            )?
            .parse()?;
            Ok(bytes / 1e6)
        };
        let row = [throughput, p99, rss, size("tasks")?, size("events")?];
        println!(
            "{minute:>6} {:>9.0} {:>11.1} {:>9.1} {:>10.1} {:>11.1}",
            row[0], row[1], row[2], row[3], row[4]
        );
        rows.push(row);
    }
    if let (Some(first), Some(last)) = (rows.first(), rows.last()) {
        let per_minute = |i: usize| (last[i] - first[i]) / (rows.len().max(2) - 1) as f64;
        println!(
            "from the first minute to the last: throughput {:.0} → {:.0} tasks/s, p99 {:.1} → \
             {:.1} ms, RSS {:.1} → {:.1} MiB ({:+.2} MiB a minute), tasks {:.1} → {:.1} MB \
             ({:+.2} MB a minute), events {:.1} → {:.1} MB",
            first[0],
            last[0],
            first[1],
            last[1],
            first[2],
            last[2],
            per_minute(2),
            first[3],
            last[3],
            per_minute(3),
            first[4],
            last[4]
        );
    }
    Ok(())
}

/// The resident memory of process `pid`, in MiB.
fn resident_mib(pid: u32) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .context("no VmRSS")?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()?;
    Ok(kib / 1024.0)
}
