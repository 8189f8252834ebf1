//! The real binary: start-up failures, serving, persistence on PostgreSQL, graceful shutdown,
//! and the load generator driving it end to end.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const BINARY: &str = env!("CARGO_BIN_EXE_agent-platform");
const ADMIN_KEY: &str = "binary-test-admin-key";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running server whose log lines arrive on a channel.
struct Server {
    child: Child,
    port: u16,
    lines: mpsc::Receiver<String>,
}

impl Server {
    fn start(env: &[(&str, &str)]) -> Server {
        Self::start_as(Command::new(BINARY), env)
    }

    /// Starts the server through `command`, which ends by running the binary.
    fn start_as(mut command: Command, env: &[(&str, &str)]) -> Server {
        let port = free_port();
        command
            .env_clear()
            .env("HOST", "127.0.0.1")
            .env("PORT", port.to_string())
            .env("ADMIN_API_KEY", ADMIN_KEY)
            .env("LOG_FORMAT", "json")
            .env("SHUTDOWN_TIMEOUT_SECS", "10")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("the binary starts");
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let server = Server { child, port, lines };
        server.wait_for("\"listening\"");
        server
    }

    /// Waits for a log line containing `needle` and returns it.
    fn wait_for(&self, needle: &str) -> String {
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(30))
                .unwrap_or_else(|_| panic!("no log line containing {needle} within 30 s"));
            if line.contains(needle) {
                return line;
            }
        }
    }

    fn terminate(&self) {
        self.signal("-TERM");
    }

    fn signal(&self, which: &str) {
        let status = Command::new("kill")
            .args([which, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Stops the server with SIGTERM and returns every log line it wrote that was not read yet.
    fn lines_until_exit(self) -> Vec<String> {
        self.terminate();
        let mut lines = Vec::new();
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(30)) {
            lines.push(line);
        }
        assert_eq!(self.wait_exit(), 0);
        lines
    }

    fn wait_exit(mut self) -> i32 {
        for _ in 0..300 {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        panic!("the server did not exit within 30 s");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 exchange over a fresh connection: (status, body).
fn http(port: u16, method: &str, path: &str, body: Option<&str>) -> (u16, serde_json::Value) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let body = body.unwrap_or("");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\nX-API-Key: {ADMIN_KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    read_response(&mut stream)
}

fn read_response(stream: &mut TcpStream) -> (u16, serde_json::Value) {
    let mut raw = String::new();
    stream.read_to_string(&mut raw).unwrap();
    let status = raw.split(' ').nth(1).unwrap().parse().unwrap();
    let body = raw.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (
        status,
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
    )
}

/// The soft and hard limits on open files of a process, from `/proc`.
fn open_file_limits(pid: &str) -> (u64, u64) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let numbers: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    (numbers[0], numbers[1])
}

#[test]
fn the_open_file_limit_is_raised_as_far_as_the_hard_limit_allows() {
    let (_, hard) = open_file_limits("self");
    let mut command = Command::new("sh");
    command.args(["-c", "ulimit -Sn 300 && exec \"$0\"", BINARY]);
    let server = Server::start_as(command, &[("WS_MAX_CONNECTIONS", "1000000")]);
    let (soft, _) = open_file_limits(&server.child.id().to_string());
    assert_eq!(
        soft, hard,
        "the soft limit was raised from 300 to the hard limit"
    );
    let (status, _) = http(server.port, "GET", "/livez", None);
    assert_eq!(status, 200);
}

/// Resident memory of a process, in KiB.
fn resident_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[test]
fn sign_in_attempts_leave_no_memory_behind() {
    let server = Server::start(&[
        ("JWT_SECRET", "binary-test-jwt-secret-0123456789abcdef"),
        ("LOGIN_RATE_LIMIT_PER_MINUTE", "0"),
        ("PASSWORD_HASH_CONCURRENCY", "1"),
    ]);
    let attempt = || {
        let (status, _) = http(
            server.port,
            "POST",
            "/api/v1/auth/login",
            Some(r#"{"username": "nobody", "password": "not the password"}"#),
        );
        assert_eq!(status, 401);
    };
    attempt();
    let after_one = resident_kib(server.child.id());
    for _ in 0..10 {
        attempt();
    }
    let after_eleven = resident_kib(server.child.id());
    // Each check fills 19 MiB of Argon2 memory; the hashing thread reuses one buffer.
    assert!(
        after_eleven < after_one + 8 * 1024,
        "resident memory grew from {after_one} KiB to {after_eleven} KiB over ten sign-ins"
    );
}

#[test]
fn invalid_configuration_exits_with_status_2_naming_the_variable() {
    let output = Command::new(BINARY)
        .env_clear()
        .env("PORT", "eighty")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("PORT"), "{stderr}");
}

#[test]
fn an_unreachable_database_at_start_up_is_a_clear_error_not_a_panic() {
    let output = Command::new(BINARY)
        .env_clear()
        .env("PORT", free_port().to_string())
        .env(
            "DATABASE_URL",
            "postgres://postgres:secret-pw@127.0.0.1:1/platform",
        )
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cannot connect to PostgreSQL"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("agent-platform could not start"),
        "the log line written last, just before the exit, is not lost: {stdout}"
    );
    let all = format!("{stderr}{stdout}");
    assert!(!all.contains("secret-pw"), "the password is never printed");
}

#[test]
fn without_configuration_it_serves_on_the_embedded_store_and_says_so() {
    let port = free_port();
    let mut child = Command::new(BINARY)
        .env_clear()
        .env("HOST", "127.0.0.1")
        .env("PORT", port.to_string())
        .env("LOG_FORMAT", "json")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let mut saw_embedded = false;
    let mut log = String::new();
    for line in stdout.lines().map_while(Result::ok) {
        saw_embedded |= line.contains("not persisted");
        log.push_str(&line);
        if line.contains("\"listening\"") {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(saw_embedded, "a log line says data is not persisted");
    let key = stderr
        .lines()
        .find_map(|l| l.strip_prefix("agent-platform: generated an admin API key (shown once): "))
        .expect("a generated admin key is printed once, on stderr");
    assert!(key.starts_with("mapk_"));
    assert!(
        log.contains(&key[..12]),
        "the log names the key by its prefix"
    );
    assert!(!log.contains(key), "the log never holds the key itself");
}

#[tokio::test(flavor = "multi_thread")]
async fn on_postgres_and_redis_data_survives_a_restart_and_shutdown_is_graceful() {
    let database = adapters_postgres::testing::fresh_database().await;
    let env = [
        ("DATABASE_URL", database.as_str()),
        ("REDIS_URL", "redis://127.0.0.1:6379"),
        ("LOG_LEVEL", "info,api_http=debug"),
    ];
    let first = Server::start(&env);
    let (status, health) = http(first.port, "GET", "/api/v1/health", None);
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["components"]["database"], "healthy");
    assert_eq!(health["components"]["redis"], "healthy");
    let (status, agent) = http(
        first.port,
        "POST",
        "/api/v1/agents",
        Some(r#"{"name": "durable", "capabilities": ["etl"]}"#),
    );
    assert_eq!(status, 200, "{agent}");
    let id = agent["id"].as_str().unwrap().to_owned();

    // A request in flight when SIGTERM arrives still gets its answer.
    let mut in_flight = TcpStream::connect(("127.0.0.1", first.port)).unwrap();
    in_flight
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let body = r#"{"name": "late-but-welcome"}"#;
    write!(
        in_flight,
        "POST /api/v1/agents HTTP/1.1\r\nHost: test\r\nConnection: close\r\nX-API-Key: {ADMIN_KEY}\r\n\
         X-Request-Id: in-flight-42\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{}",
        body.len(),
        &body[..10]
    )
    .unwrap();
    in_flight.flush().unwrap();
    // The server has read the head and is waiting for the rest of the body.
    first.wait_for("in-flight-42");
    first.terminate();
    first.wait_for("starting graceful shutdown");
    in_flight.write_all(&body.as_bytes()[10..]).unwrap();
    let (status, late) = read_response(&mut in_flight);
    assert_eq!(status, 200, "{late}");
    first.wait_for("shutdown complete");
    assert_eq!(first.wait_exit(), 0);

    let second = Server::start(&env);
    let (status, fetched) = http(second.port, "GET", &format!("/api/v1/agents/{id}"), None);
    assert_eq!(status, 200, "{fetched}");
    assert_eq!(fetched["name"], "durable");
    let (_, all) = http(second.port, "GET", "/api/v1/agents", None);
    assert_eq!(
        all.as_array().unwrap().len(),
        2,
        "the in-flight registration landed"
    );
}

/// With a drain period, a replica told to stop first turns unready while still serving, so a
/// load balancer moves traffic away before the listener closes.
#[test]
fn a_draining_replica_is_unready_but_still_serves_until_it_stops() {
    let server = Server::start(&[("SHUTDOWN_DRAIN_SECS", "3")]);
    assert_eq!(http(server.port, "GET", "/readyz", None).0, 200);
    server.terminate();
    server.wait_for("draining");
    assert_eq!(http(server.port, "GET", "/readyz", None).0, 503);
    assert_eq!(http(server.port, "GET", "/livez", None).0, 200);
    assert_eq!(http(server.port, "GET", "/api/v1/agents", None).0, 200);
    server.wait_for("shutdown complete");
    assert_eq!(server.wait_exit(), 0);
}

#[test]
fn sigint_drains_as_gracefully_as_sigterm() {
    let server = Server::start(&[]);
    let (status, _) = http(server.port, "GET", "/livez", None);
    assert_eq!(status, 200);
    server.signal("-INT");
    let line = server.wait_for("starting graceful shutdown");
    assert!(line.contains("SIGINT"), "{line}");
    server.wait_for("shutdown complete");
    assert_eq!(server.wait_exit(), 0);
}

#[test]
fn the_load_generator_drives_the_binary_end_to_end_and_accounts_for_every_request() {
    let server = Server::start(&[("RATE_LIMIT_PER_SECOND", "0")]);
    let args: Vec<String> = [
        "--base-url",
        &format!("http://127.0.0.1:{}", server.port),
        "--auth-token",
        ADMIN_KEY,
        "--simulate",
        "--agents",
        "4",
        "--tasks",
        "120",
        "--concurrency",
        "8",
        "--list-requests",
        "15",
        "--health-requests",
        "15",
        "--dashboard-requests",
        "15",
        "--websocket-connections",
        "2",
        "--websocket-duration",
        "2",
        "--max-seconds",
        "120",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let report = run_load(&args);
    let summary = &report["summary"];
    assert_eq!(summary["tasks_submitted"], 120, "{report:#}");
    assert_eq!(summary["tasks_completed"], 120, "{report:#}");
    assert_eq!(summary["tasks_not_completed"], 0);
    assert!(summary["end_to_end_tasks_per_second"].as_f64().unwrap() > 0.0);
    assert_eq!(report["failed"], 0, "{report:#}");
    let endpoints = &report["endpoints"];
    assert_eq!(endpoints["POST /agents"]["status_codes"]["200"], 4);
    assert_eq!(endpoints["POST /tasks"]["status_codes"]["200"], 120);
    assert_eq!(
        endpoints["POST /tasks/{id}/complete"]["status_codes"]["200"],
        120
    );
    assert_eq!(endpoints["GET /health"]["requests"], 15);
    assert_eq!(endpoints["GET /dashboard/summary"]["success_rate"], 1.0);
    assert_eq!(endpoints["WS connect"]["status_codes"]["101"], 2);
    let latencies = &report["latencies_ms"];
    assert_eq!(latencies["submit_to_assignment"]["count"], 120);
    assert_eq!(latencies["submit_to_complete"]["count"], 120);
    assert!(summary["websocket_events_received"].as_u64().unwrap() > 0);

    // A server that is gone is counted as errors, not as slow successes.
    drop(server);
    let gone: Vec<String> = args[..4]
        .iter()
        .cloned()
        .chain(
            [
                "--agents",
                "0",
                "--tasks",
                "3",
                "--list-requests",
                "0",
                "--health-requests",
                "2",
                "--dashboard-requests",
                "0",
                "--websocket-connections",
                "0",
            ]
            .map(String::from),
        )
        .collect();
    let report = run_load(&gone);
    assert_eq!(report["failed"], 5, "{report:#}");
    assert_eq!(report["endpoints"]["POST /tasks"]["connection_errors"], 3);
    assert_eq!(report["endpoints"]["GET /health"]["connection_errors"], 2);
}

/// With no configuration, the bursts a client written against the seed makes with one
/// operator credential (registrations, submissions, list, health and dashboard reads, a few
/// hundred at once) are all answered `200`: limits are for abuse, not for real clients.
#[test]
fn default_limits_refuse_none_of_a_real_clients_bursts() {
    let server = Server::start(&[]);
    let args: Vec<String> = [
        "--base-url",
        &format!("http://127.0.0.1:{}", server.port),
        "--auth-token",
        ADMIN_KEY,
        "--agents",
        "50",
        "--tasks",
        "300",
        "--list-requests",
        "300",
        "--health-requests",
        "300",
        "--dashboard-requests",
        "300",
        "--websocket-connections",
        "0",
        "--concurrency",
        "300",
        "--max-seconds",
        "120",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let report = run_load(&args);
    assert_eq!(report["failed"], 0, "{report:#}");
    for (endpoint, count) in [
        ("POST /agents", 50),
        ("POST /tasks", 300),
        ("GET /tasks", 300),
        ("GET /health", 300),
        ("GET /dashboard/summary", 300),
    ] {
        assert_eq!(
            report["endpoints"][endpoint]["status_codes"],
            serde_json::json!({"200": count}),
            "{endpoint}: {report:#}"
        );
    }
    // Two busy agents, each with its own key, polling for, starting and completing 750 tasks
    // as fast as the server lets them (thousands of calls each): none is refused either.
    let agents: Vec<String> = args[..4]
        .iter()
        .cloned()
        .chain(
            [
                "--simulate",
                "--agents",
                "2",
                "--agent-slots",
                "16",
                "--tasks",
                "1500",
                "--concurrency",
                "32",
                "--list-requests",
                "0",
                "--health-requests",
                "0",
                "--dashboard-requests",
                "0",
                "--websocket-connections",
                "0",
                "--max-seconds",
                "120",
            ]
            .map(String::from),
        )
        .collect();
    let report = run_load(&agents);
    assert_eq!(report["failed"], 0, "{report:#}");
    assert_eq!(report["summary"]["tasks_completed"], 1500, "{report:#}");
}

/// Every request is one structured line (route template, status, duration, request ID,
/// caller), and no credential or password a request carries is ever written, even at `debug`.
#[test]
fn each_request_is_logged_once_and_no_secret_is_ever_logged() {
    let server = Server::start(&[("LOG_LEVEL", "debug")]);
    let port = server.port;
    let missing = "00000000-0000-4000-8000-000000000001";
    assert_eq!(
        http(port, "GET", &format!("/api/v1/agents/{missing}"), None).0,
        404
    );
    let login = r#"{"username": "root", "password": "hunter2-secret-password"}"#;
    // Refused: no user exists (and without `JWT_SECRET` sign-in is off).
    assert_ne!(http(port, "POST", "/api/v1/auth/login", Some(login)).0, 200);
    http(
        port,
        "GET",
        "/api/v1/ws/c1?token=query-secret-token-0123",
        None,
    );
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        stream,
        "GET /api/v1/agents HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\
         Authorization: Bearer mapk_made-up-secret-key-0123\r\n\r\n"
    )
    .unwrap();
    assert_eq!(read_response(&mut stream).0, 401);

    let lines = server.lines_until_exit();
    for secret in [
        ADMIN_KEY,
        "hunter2-secret-password",
        "query-secret-token-0123",
        "mapk_made-up-secret-key-0123",
    ] {
        assert!(
            !lines.iter().any(|l| l.contains(secret)),
            "{secret} was logged"
        );
    }
    let finished: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("request finished"))
        .collect();
    assert_eq!(finished.len(), 4, "one line per request: {finished:#?}");
    let agent = finished
        .iter()
        .find(|l| l.contains("/api/v1/agents/{agent_id}"))
        .expect("the route template, not the path");
    for field in [
        "\"status\":404",
        "\"request_id\"",
        "\"elapsed_ms\"",
        "\"method\":\"GET\"",
    ] {
        assert!(agent.contains(field), "{field} in {agent}");
    }
    assert!(
        agent.contains("\"principal\":\"sub:admin:admin-api-key\""),
        "{agent}"
    );
    assert!(
        !agent.contains(missing),
        "the raw path is not logged: {agent}"
    );
}

/// The load generator run with `args` to its end: its report.
fn run_load(args: &[String]) -> serde_json::Value {
    let options = loadtest::Options::parse(args).expect("valid options");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime
        .block_on(loadtest::run(&options))
        .expect("the run completes")
        .to_json()
}

/// One submission with an `Idempotency-Key` over a fresh connection: the answer, or `None`
/// when the connection failed or ended without one (the server went away).
fn submit_keyed(port: u16, path: &str, key: &str, body: &str) -> Option<(u16, serde_json::Value)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .ok()?;
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\nX-API-Key: {ADMIN_KEY}\r\n\
         Idempotency-Key: {key}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut raw = String::new();
    stream.read_to_string(&mut raw).ok()?;
    let status = raw.split(' ').nth(1)?.parse().ok()?;
    let body = raw.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Some((status, serde_json::from_str(body).ok()?))
}

/// The task IDs a submission's answer names: its task, or a batch's tasks in order.
fn ids_of(answer: &serde_json::Value) -> Vec<String> {
    match answer["tasks"].as_array() {
        Some(tasks) => tasks
            .iter()
            .map(|t| t["id"].as_str().unwrap().to_owned())
            .collect(),
        None => vec![answer["id"].as_str().unwrap().to_owned()],
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_amid_group_commits_loses_no_acknowledged_task_and_a_retry_duplicates_none() {
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};

    let database = adapters_postgres::testing::fresh_database().await;
    let env = [
        ("DATABASE_URL", database.as_str()),
        ("RATE_LIMIT_PER_SECOND", "0"),
    ];
    let first = Server::start(&env);
    let port = first.port;
    // Each request: its key, path and body; and the IDs it was acknowledged with, if it was.
    type Sent = (String, &'static str, String);
    let sent: Arc<Mutex<Vec<Sent>>> = Arc::default();
    let acknowledged: Arc<Mutex<BTreeMap<String, Vec<String>>>> = Arc::default();
    // Rung once, when the 300th submission is acknowledged.
    let (enough, acknowledged_enough) = std::sync::mpsc::channel::<()>();
    let clients: Vec<_> = (0..8)
        .map(|client| {
            let (sent, acknowledged) = (sent.clone(), acknowledged.clone());
            let enough = enough.clone();
            std::thread::spawn(move || {
                for n in 0.. {
                    let key = format!("crash-{client}-{n}");
                    let (path, body) = if client == 0 {
                        let task = |i: usize| format!(r#"{{"title": "{key}/{i}", "priority": 3}}"#);
                        let tasks: Vec<String> = (0..3).map(task).collect();
                        (
                            "/api/v1/tasks/batch",
                            format!(r#"{{"tasks": [{}]}}"#, tasks.join(",")),
                        )
                    } else {
                        (
                            "/api/v1/tasks",
                            format!(r#"{{"title": "{key}", "priority": 5}}"#),
                        )
                    };
                    sent.lock().unwrap().push((key.clone(), path, body.clone()));
                    match submit_keyed(port, path, &key, &body) {
                        Some((200, answer)) => {
                            let mut acknowledged = acknowledged.lock().unwrap();
                            acknowledged.insert(key, ids_of(&answer));
                            if acknowledged.len() == 300 {
                                let _ = enough.send(());
                            }
                        }
                        _ => return, // the server is gone
                    }
                }
            })
        })
        .collect();
    // Killed without warning while submissions stream in and groups are being committed.
    acknowledged_enough
        .recv_timeout(Duration::from_secs(60))
        .expect("300 submissions are acknowledged");
    first.signal("-KILL");
    for client in clients {
        client.join().unwrap();
    }
    drop(first);

    let second = Server::start(&env);
    let acknowledged = acknowledged.lock().unwrap().clone();
    for ids in acknowledged.values() {
        for id in ids {
            let (status, task) = http(second.port, "GET", &format!("/api/v1/tasks/{id}"), None);
            assert_eq!(
                status, 200,
                "acknowledged task {id} survived the crash: {task}"
            );
        }
    }
    // Every client retries what it sent with the same key, acknowledged or not: an
    // acknowledged request gets the very same tasks, and one that was not is stored once.
    let sent = sent.lock().unwrap().clone();
    let mut expected = 0;
    for (key, path, body) in &sent {
        let (status, answer) =
            submit_keyed(second.port, path, key, body).expect("the restarted server answers");
        assert_eq!(status, 200, "{answer}");
        if let Some(ids) = acknowledged.get(key) {
            assert_eq!(
                &ids_of(&answer),
                ids,
                "a retry of {key} returns what was acknowledged"
            );
        }
        expected += ids_of(&answer).len();
    }
    let pool = sqlx::PgPool::connect(&database).await.unwrap();
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM tasks")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(stored as usize, expected, "no request was stored twice");
    let numbered: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE type = 'task_submitted'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(
        numbered as usize, expected,
        "each stored task has its one submitted event"
    );
}

/// The load generator's arguments for 3 simulated agents of 8 slots working 90 tasks on the
/// server at `port` the way `how` says, and nothing else.
fn simulated_agents(port: u16, how: &str) -> Vec<String> {
    [
        "--base-url",
        &format!("http://127.0.0.1:{port}"),
        "--auth-token",
        ADMIN_KEY,
        "--simulate",
        how,
        "--agents",
        "3",
        "--agent-slots",
        "8",
        "--tasks",
        "90",
        "--list-requests",
        "0",
        "--health-requests",
        "0",
        "--dashboard-requests",
        "0",
        "--websocket-connections",
        "0",
        "--max-seconds",
        "120",
    ]
    .map(String::from)
    .to_vec()
}

#[test]
fn the_load_generators_batched_agents_complete_every_task_through_reports() {
    let server = Server::start(&[("RATE_LIMIT_PER_SECOND", "0")]);
    let args = simulated_agents(server.port, "--batch-reports");
    let report = run_load(&args);
    assert_eq!(report["summary"]["tasks_completed"], 90, "{report:#}");
    assert_eq!(report["failed"], 0, "{report:#}");
    let endpoints = &report["endpoints"];
    let reports = endpoints["POST /agents/{id}/reports"]["status_codes"]["200"]
        .as_u64()
        .unwrap();
    assert!(reports > 0 && reports <= 90, "{report:#}");
    assert!(
        endpoints.get("POST /tasks/{id}/complete").is_none(),
        "batched agents make no per-task calls: {report:#}"
    );
}

#[test]
fn the_load_generators_pushed_agents_learn_of_every_task_on_their_websockets() {
    let server = Server::start(&[("RATE_LIMIT_PER_SECOND", "0")]);
    let args = simulated_agents(server.port, "--push");
    let report = run_load(&args);
    assert_eq!(report["summary"]["tasks_completed"], 90, "{report:#}");
    assert_eq!(report["failed"], 0, "{report:#}");
    let endpoints = &report["endpoints"];
    let sockets = endpoints["WS connect"]["status_codes"]["101"]
        .as_u64()
        .unwrap();
    assert!(sockets >= 3, "each agent holds a WebSocket: {report:#}");
    // Each asks once, after subscribing, for what it already holds; then it only listens.
    let asked = endpoints["GET /agents/{id}/tasks"]["status_codes"]["200"]
        .as_u64()
        .unwrap();
    assert!(asked <= sockets, "pushed agents do not poll: {report:#}");
    let assigned = &report["latencies_ms"]["submit_to_assignment"];
    assert!(
        assigned["count"].as_u64().unwrap() >= 90,
        "every assignment was told: {report:#}"
    );
}

/// Runs the binary once to its exit with `env`; returns its exit code and everything it wrote.
fn run_to_exit(env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut command = Command::new(BINARY);
    command
        .env_clear()
        .env("HOST", "127.0.0.1")
        .env("PORT", free_port().to_string());
    for (k, v) in env {
        command.env(k, v);
    }
    let output = command.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stderr),
        String::from_utf8_lossy(&output.stdout)
    );
    (output.status.code(), text)
}

#[tokio::test]
async fn migrations_run_in_a_job_of_their_own_and_a_schema_not_the_replicas_is_refused() {
    let url = adapters_postgres::testing::fresh_empty_database().await;
    // A replica that leaves migrations to the job refuses an unmigrated database.
    let (code, text) = run_to_exit(&[("DATABASE_URL", &url), ("MIGRATIONS", "skip")]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("older than this version needs"), "{text}");
    assert!(
        text.contains("MIGRATIONS=only"),
        "it says what to do: {text}"
    );
    // The job applies them and exits.
    let (code, text) = run_to_exit(&[("DATABASE_URL", &url), ("MIGRATIONS", "only")]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("migrations applied; exiting"), "{text}");
    // Then the replica starts and serves.
    let server = Server::start(&[("DATABASE_URL", &url), ("MIGRATIONS", "skip")]);
    assert_eq!(http(server.port, "GET", "/readyz", None).0, 200);
    server.terminate();
    // A migration applied from another file than this version's is refused too.
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let (checksum,): (Vec<u8>,) =
        sqlx::query_as("SELECT checksum FROM _sqlx_migrations WHERE version = 1")
            .fetch_one(&pool)
            .await
            .unwrap();
    sqlx::query("UPDATE _sqlx_migrations SET checksum = '\\x00' WHERE version = 1")
        .execute(&pool)
        .await
        .unwrap();
    let (code, text) = run_to_exit(&[("DATABASE_URL", &url), ("MIGRATIONS", "skip")]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("was applied from a different file"), "{text}");
    sqlx::query("UPDATE _sqlx_migrations SET checksum = $1 WHERE version = 1")
        .bind(checksum)
        .execute(&pool)
        .await
        .unwrap();
    // A later version migrated further: this one refuses to start, whatever MIGRATIONS says,
    // and changes nothing.
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
         VALUES (99999, 'from the future', true, '\\x00', 0)",
    )
    .execute(&pool)
    .await
    .unwrap();
    for mode in ["run", "skip", "only"] {
        let (code, text) = run_to_exit(&[("DATABASE_URL", &url), ("MIGRATIONS", mode)]);
        assert_eq!(code, Some(1), "{mode}: {text}");
        assert!(
            text.contains("at migration 99999, newer than this version knows"),
            "{mode}: {text}"
        );
    }
    let (bad_code, text) = run_to_exit(&[("MIGRATIONS", "only")]);
    assert_eq!(bad_code, Some(2), "only migrates a database: {text}");
    assert!(text.contains("MIGRATIONS"), "{text}");
}

#[test]
fn the_binary_probes_its_own_health() {
    let server = Server::start(&[]);
    let port = server.port.to_string();
    let probe = |args: &[&str]| {
        Command::new(BINARY)
            .env_clear()
            .env("HOST", "127.0.0.1")
            .env("PORT", &port)
            .arg("probe")
            .args(args)
            .output()
            .unwrap()
    };
    assert!(probe(&[]).status.success(), "GET /livez answers 200");
    assert!(probe(&["/readyz"]).status.success());
    let missing = probe(&["/no-such-path"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("answered 404"));
    server.terminate();
    server.wait_for("stopped");
    let gone = probe(&[]);
    assert_eq!(gone.status.code(), Some(1), "nothing listens any more");
    let usage = Command::new(BINARY)
        .env_clear()
        .arg("serve")
        .output()
        .unwrap();
    assert_eq!(usage.status.code(), Some(2));
}

#[tokio::test]
async fn replicas_started_together_on_an_empty_database_migrate_it_once_and_all_serve() {
    let url = adapters_postgres::testing::fresh_empty_database().await;
    let servers: Vec<Server> = {
        let spawned: Vec<_> = (0..3)
            .map(|_| {
                let url = url.clone();
                std::thread::spawn(move || Server::start(&[("DATABASE_URL", &url)]))
            })
            .collect();
        spawned.into_iter().map(|s| s.join().unwrap()).collect()
    };
    for server in &servers {
        assert_eq!(http(server.port, "GET", "/readyz", None).0, 200);
    }
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let (applied, distinct): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT version) FROM _sqlx_migrations WHERE success",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(applied, distinct, "each migration applied once");
    let (invalid,): (i64,) = sqlx::query_as("SELECT count(*) FROM pg_index WHERE NOT indisvalid")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(invalid, 0, "no index left half-built");
    for server in &servers {
        server.terminate();
    }
}

#[tokio::test]
async fn replicas_of_one_database_with_different_jwt_secrets_each_log_the_other() {
    let url = adapters_postgres::testing::fresh_database().await;
    let first = Server::start(&[
        ("DATABASE_URL", &url),
        ("JWT_SECRET", "the-first-replicas-secret-0123456789abcdef"),
    ]);
    let second = Server::start(&[
        ("DATABASE_URL", &url),
        ("JWT_SECRET", "the-second-replicas-secret-0123456789abcdef"),
    ]);
    // The second sees the first as it starts; the first sees the second at its next look.
    for server in [&second, &first] {
        let line = server.wait_for("runs with a different JWT_SECRET");
        assert!(line.contains("\"ERROR\""), "{line}");
        assert!(
            !line.contains("replicas-secret"),
            "no secret is logged: {line}"
        );
        let metrics = metrics_text(server.port);
        assert!(
            metrics.contains("agent_platform_replica_settings_disagreements 1"),
            "{metrics}"
        );
    }
    first.terminate();
    second.terminate();
}

/// `/metrics` as text.
fn metrics_text(port: u16) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    text
}
