//! Faults survived by real processes: three replicas of the binary on one PostgreSQL and one
//! Redis, with clients and agents spread over them that move to another replica, as they would
//! behind a load balancer, when theirs does not answer or answers `503`. While 2,000 tasks
//! flow, one fault strikes: a replica killed with SIGKILL (with the agents that ran beside it,
//! holding a task each, which must come back to the queue when its lease runs out and finish
//! elsewhere), every replica restarted in turn with SIGTERM, the database cut off and back
//! through a proxy (which drops every connection and refuses new ones while down), or a
//! PostgreSQL or Redis server of the test's own really stopped and started again. Each time,
//! every acknowledged task completes exactly once, none is created twice, no attempt is assigned
//! twice, no request fails but with a retryable `503` (but where a replica is killed under it),
//! and a WebSocket subscriber sees every task event once, in order, moving to a live replica
//! with `since` when its own goes. A rolling restart does what a load balancer does when a
//! replica's readiness fails: takes it out of rotation before it stops.
//!
//! The five tests run one at a time (each starts three servers), and each replica keeps to one
//! worker and four database connections, so they fit a small machine.

use std::collections::{BTreeMap, HashMap};
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Mutex as AsyncMutex, MutexGuard as AsyncGuard, Notify};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

const BINARY: &str = env!("CARGO_BIN_EXE_agent-platform");
const ADMIN_KEY: &str = "faults-test-admin-key-0123456789";
const TASKS: usize = 2000;
const AGENTS: usize = 6;

/// One fault test at a time.
async fn one_at_a_time() -> AsyncGuard<'static, ()> {
    static TURN: std::sync::OnceLock<AsyncMutex<()>> = std::sync::OnceLock::new();
    TURN.get_or_init(|| AsyncMutex::new(())).lock().await
}

/// Where clients are routed: each replica's address, or `None` while it is out of rotation.
type Routes = Arc<Mutex<Vec<Option<SocketAddr>>>>;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Redis's URL (`TEST_REDIS_URL`), checked to answer.
fn redis_url() -> String {
    let url = std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    // The host and port: past any credentials, before any database number.
    let rest = url.trim_start_matches("redis://");
    let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    let address = rest.split('/').next().unwrap_or(rest).to_owned();
    assert!(
        std::net::TcpStream::connect(&address).is_ok(),
        "Redis is not reachable at {url}: start it with \
         `redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save \"\" --appendonly no`"
    );
    url
}

/// A TCP proxy that can be cut: while down it drops every connection it carries and refuses
/// new ones, as a dependency that stopped would.
struct Proxy {
    port: u16,
    up: Arc<AtomicBool>,
    cut: Arc<Notify>,
}

impl Proxy {
    async fn start(target: String) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (up, cut) = (Arc::new(AtomicBool::new(true)), Arc::new(Notify::new()));
        let (up2, cut2) = (up.clone(), cut.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !up2.load(Ordering::SeqCst) {
                    continue; // dropped: refused
                }
                let (target, cut) = (target.clone(), cut2.clone());
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(&target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.notified() => {}
                    }
                });
            }
        });
        Self { port, up, cut }
    }

    fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::SeqCst);
        if !up {
            self.cut.notify_waiters();
        }
    }
}

/// A PostgreSQL server of the test's own, in a directory of its own, so that it can really be
/// stopped and started while the replicas use it (the shared test server cannot be). Needs the
/// PostgreSQL server's programs (`initdb`, `pg_ctl`); run as root, it runs them as `postgres`.
struct OwnPostgres {
    bin: std::path::PathBuf,
    dir: std::path::PathBuf,
    port: u16,
}

impl OwnPostgres {
    fn start() -> Self {
        let bin = Self::programs();
        let dir = std::env::temp_dir().join(format!("faults-pg-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let port = free_port();
        let own = Self { bin, dir, port };
        if Self::as_root() {
            let owned = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&own.dir)
                .status()
                .unwrap();
            assert!(owned.success(), "cannot give {:?} to postgres", own.dir);
        }
        let data = own.dir.join("data");
        own.run(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
        );
        own.pg_ctl("start");
        own
    }

    /// Where `initdb` and `pg_ctl` are: `pg_config --bindir`, or Debian's versioned directory.
    fn programs() -> std::path::PathBuf {
        let from_config = Command::new("pg_config")
            .arg("--bindir")
            .output()
            .ok()
            .map(|o| std::path::PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
        let debian = std::fs::read_dir("/usr/lib/postgresql")
            .ok()
            .and_then(|dirs| {
                dirs.filter_map(Result::ok)
                    .map(|d| d.path().join("bin"))
                    .filter(|b| b.join("initdb").exists())
                    .max()
            });
        from_config
            .filter(|b| b.join("initdb").exists())
            .or(debian)
            .expect(
                "this test restarts a PostgreSQL server of its own and needs the server's \
                 programs (initdb, pg_ctl): install the PostgreSQL server (Debian: postgresql)",
            )
    }

    fn as_root() -> bool {
        Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
    }

    /// One of the server's programs, to be run as `postgres` when this is root.
    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if Self::as_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&path);
            c
        } else {
            Command::new(&path)
        }
    }

    /// Runs one of the server's programs and checks it succeeded.
    fn run(&self, program: &str, args: &[&str]) {
        let out = self.command(program).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{program} {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `pg_ctl start` or `stop` (fast: open sessions are ended, as in a restart), waiting for it.
    fn pg_ctl(&self, action: &str) {
        let data = self.dir.join("data");
        let log = self.dir.join("log");
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            self.port,
            self.dir.display()
        );
        let mut args = vec![
            "-D",
            data.to_str().unwrap(),
            "-w",
            "-l",
            log.to_str().unwrap(),
        ];
        match action {
            "start" => args.extend(["-o", options.as_str(), "start"]),
            _ => args.extend(["-m", "fast", "stop"]),
        }
        self.run("pg_ctl", &args);
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let data = self.dir.join("data");
        let _ = self
            .command("pg_ctl")
            .args(["-D", data.to_str().unwrap(), "-m", "immediate", "stop"])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A Redis server of the test's own, on a port of its own, so that it can really be stopped
/// and started while the replicas use it (the shared one cannot be). Keeps nothing on disk, as
/// the deployment's Redis need not: events live in the database's log.
struct OwnRedis {
    port: u16,
    server: Option<Child>,
}

impl OwnRedis {
    fn start() -> Self {
        let mut redis = Self {
            port: free_port(),
            server: None,
        };
        tokio::task::block_in_place(|| redis.run());
        redis
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Runs the server and waits until it answers.
    fn run(&mut self) {
        let server = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run redis-server ({e}): the Redis fault test needs the Redis \
                     server's program (Debian's `redis-server` package)"
                )
            });
        self.server = Some(server);
        let answers = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            let exited = self
                .server
                .as_mut()
                .and_then(|s| s.try_wait().ok().flatten());
            assert!(
                exited.is_none(),
                "redis-server exited at start ({exited:?}): is port {} taken?",
                self.port
            );
            assert!(Instant::now() < answers, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the stopped server again, on the same port.
    fn restart(&mut self) {
        tokio::task::block_in_place(|| self.run());
    }

    /// Stops the server (every connection closed, nothing answers) and waits until it has.
    fn stop(&mut self) {
        if let Some(mut server) = self.server.take() {
            let _ = server.kill();
            let _ = server.wait();
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One replica: the binary, on its own port, its output kept in a file for failure messages.
struct Replica {
    child: Child,
    port: u16,
    log: std::path::PathBuf,
    /// Fires when the replica logs that it listens.
    listening: Option<tokio::sync::oneshot::Receiver<()>>,
}

impl Replica {
    fn start(database: &str, redis: &str) -> Replica {
        let port = free_port();
        let log = std::env::temp_dir().join(format!("faults-replica-{port}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let mut child = Command::new(BINARY)
            .env_clear()
            .env("HOST", "127.0.0.1")
            .env("PORT", port.to_string())
            .env("DATABASE_URL", database)
            .env("REDIS_URL", redis)
            .env("ADMIN_API_KEY", ADMIN_KEY)
            .env("RATE_LIMIT_PER_SECOND", "0")
            // Its own start-up lines (the "listening" one), and warnings from the rest.
            .env("LOG_LEVEL", "warn,agent_platform=info")
            .env("LOG_FORMAT", "json")
            .env("SHUTDOWN_DRAIN_SECS", "1")
            .env("SHUTDOWN_TIMEOUT_SECS", "10")
            .env("DATABASE_MAX_CONNECTIONS", "4")
            .env("WORKERS", "1")
            .stdout(Stdio::piped())
            .stderr(out)
            .spawn()
            .unwrap();
        let (tell, listening) = tokio::sync::oneshot::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            use std::io::BufRead;
            let mut tell = Some(tell);
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if line.contains("\"listening\"") {
                    if let Some(tell) = tell.take() {
                        let _ = tell.send(());
                    }
                }
            }
        });
        Replica {
            child,
            port,
            log,
            listening: Some(listening),
        }
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, which: &str) {
        let status = Command::new("kill")
            .args([which, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// Three replicas on one database and one Redis (each reached as the URLs say), and the
/// routes clients take to them.
struct Stack {
    database: String,
    redis: String,
    replicas: Vec<Replica>,
    routes: Routes,
}

impl Stack {
    async fn start(database: String, redis: String) -> Self {
        let replicas: Vec<Replica> = (0..3).map(|_| Replica::start(&database, &redis)).collect();
        let routes = Arc::new(Mutex::new(
            replicas.iter().map(|r| Some(r.addr())).collect(),
        ));
        let stack = Self {
            database,
            redis,
            replicas,
            routes,
        };
        let mut stack = stack;
        for i in 0..3 {
            stack.ready(i).await;
        }
        stack
    }

    /// Waits for replica `i` to say it listens, then checks it is ready.
    async fn ready(&mut self, i: usize) {
        let replica = &mut self.replicas[i];
        let listening = replica.listening.take().expect("waited for once");
        let said = tokio::time::timeout(Duration::from_secs(30), listening).await;
        assert!(
            matches!(said, Ok(Ok(()))),
            "replica {i} did not start: {}",
            replica.output()
        );
        let ready = call(replica.addr(), "GET", "/readyz", ADMIN_KEY, &[], None).await;
        assert!(
            matches!(ready, Ok((200, _))),
            "replica {i} is not ready: {ready:?}"
        );
    }

    /// What a load balancer and an orchestrator do to restart replica `i`: take it out of
    /// rotation, stop it with SIGTERM and wait for it to drain and exit, start its successor,
    /// and route to it once it is ready.
    async fn restart(&mut self, i: usize) {
        self.routes.lock().unwrap()[i] = None;
        self.replicas[i].signal("-TERM");
        let exited = tokio::task::block_in_place(|| self.replicas[i].child.wait().unwrap());
        assert!(
            exited.success(),
            "replica {i} stopped gracefully ({exited}): {}",
            self.replicas[i].output()
        );
        self.replicas[i] = Replica::start(&self.database, &self.redis);
        self.ready(i).await;
        self.routes.lock().unwrap()[i] = Some(self.replicas[i].addr());
    }
}

/// Asks the replica at `addr` for `path` until `wanted` holds of its answer (status and body),
/// for up to 30 s; else fails, saying `what` with the last answer.
async fn until(addr: SocketAddr, path: &str, what: &str, wanted: impl Fn(u16, &Value) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let answer = call(addr, "GET", path, ADMIN_KEY, &[], None).await;
        if matches!(&answer, Ok((status, body)) if wanted(*status, body)) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: {answer:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How requests went: what a client without a load balancer's retries would have seen.
#[derive(Debug, Default, Clone)]
struct Tally {
    /// Connections refused (a replica that is not listening: a load balancer routes elsewhere).
    refused: usize,
    /// Requests sent that got no whole answer (the replica died under them).
    broken: usize,
    /// Answers by status.
    statuses: BTreeMap<u16, usize>,
    /// Answers to writes (every method but `GET`) by status.
    writes: BTreeMap<u16, usize>,
}

impl Tally {
    /// Answers that are errors of the server other than a retryable `503`.
    fn failed(&self) -> usize {
        self.statuses
            .iter()
            .filter(|(status, _)| **status >= 500 && **status != 503)
            .map(|(_, n)| n)
            .sum()
    }
}

/// One request over a connection of its own: the status and JSON body, or an error when the
/// replica did not answer (refused, reset, or no answer within 10 s), counted in `tally`.
async fn tallied(
    tally: &Mutex<Tally>,
    addr: SocketAddr,
    method: &str,
    path: &str,
    key: &str,
    headers: &[(&str, &str)],
    body: Option<&Value>,
) -> std::io::Result<(u16, Value)> {
    let Ok(stream) = tokio::net::TcpStream::connect(addr).await else {
        tally.lock().unwrap().refused += 1;
        return Err(std::io::Error::other("refused"));
    };
    let answer = exchange(stream, method, path, key, headers, body).await;
    let mut tally = tally.lock().unwrap();
    match &answer {
        Ok((status, _)) => {
            *tally.statuses.entry(*status).or_default() += 1;
            if method != "GET" {
                *tally.writes.entry(*status).or_default() += 1;
            }
        }
        Err(_) => tally.broken += 1,
    }
    answer
}

async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    key: &str,
    headers: &[(&str, &str)],
    body: Option<&Value>,
) -> std::io::Result<(u16, Value)> {
    tallied(&Mutex::default(), addr, method, path, key, headers, body).await
}

async fn exchange(
    mut stream: tokio::net::TcpStream,
    method: &str,
    path: &str,
    key: &str,
    headers: &[(&str, &str)],
    body: Option<&Value>,
) -> std::io::Result<(u16, Value)> {
    let exchange = async {
        let body = body.map(Value::to_string).unwrap_or_default();
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-API-Key: {key}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body.as_bytes()).await?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await?;
        let text = String::from_utf8_lossy(&answer);
        let status = text
            .get(9..12)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("no answer: {text:?}")))?;
        let json = text
            .split_once("\r\n\r\n")
            .and_then(|(_, b)| serde_json::from_str(b).ok())
            .unwrap_or(Value::Null);
        Ok((status, json))
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .unwrap_or_else(|_| Err(std::io::Error::other("no answer within 10 s")))
}

/// The replicas clients use, as routed, and how their requests went.
#[derive(Clone)]
struct Clients {
    routes: Routes,
    tally: Arc<Mutex<Tally>>,
    /// Told of every completion an agent or the subscriber records.
    progress: Arc<Notify>,
}

impl Clients {
    /// The replica `at` routes to: the first in rotation from `at` on.
    fn route(&self, at: usize) -> SocketAddr {
        let routes = self.routes.lock().unwrap();
        (0..routes.len())
            .find_map(|k| routes[(at + k) % routes.len()])
            .expect("a replica in rotation")
    }

    async fn call(
        &self,
        at: usize,
        method: &str,
        path: &str,
        key: &str,
        headers: &[(&str, &str)],
        body: Option<&Value>,
    ) -> std::io::Result<(u16, Value)> {
        tallied(
            &self.tally,
            self.route(at),
            method,
            path,
            key,
            headers,
            body,
        )
        .await
    }

    /// `call`, moving on to the next replica while one does not answer or answers `503`
    /// (what a load balancer and a retrying client do together), for up to 30 s.
    async fn retried(
        &self,
        at: usize,
        method: &str,
        path: &str,
        key: &str,
        headers: &[(&str, &str)],
        body: Option<&Value>,
    ) -> (u16, Value) {
        let started = Instant::now();
        for turn in 0.. {
            match self.call(at + turn, method, path, key, headers, body).await {
                Ok((503, _)) | Err(_) => {
                    assert!(
                        started.elapsed() < Duration::from_secs(30),
                        "no replica answered {method} {path} within 30 s"
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Ok(answer) => return answer,
            }
        }
        unreachable!()
    }
}

/// 2,000 tasks flowing through the stack: submitters, agents and a subscriber at work.
struct Flow {
    clients: Clients,
    stop: Arc<AtomicBool>,
    done: Arc<AtomicUsize>,
    completes: Arc<Mutex<HashMap<String, usize>>>,
    submitted: Arc<Mutex<Vec<String>>>,
    completed_seen: Arc<Mutex<Vec<String>>>,
    /// The `seq` of every task event the subscriber saw.
    events_seen: Arc<Mutex<Vec<i64>>>,
    /// What makes the agents that run beside replica 0 die.
    doom: Doom,
    /// How many agents run beside replica 0.
    mortal: usize,
    subscriber: JoinHandle<usize>,
    workers: Vec<JoinHandle<()>>,
    submitters: Vec<JoinHandle<()>>,
}

impl Flow {
    async fn start(stack: &Stack) -> Flow {
        let clients = Clients {
            routes: stack.routes.clone(),
            tally: Arc::default(),
            progress: Arc::default(),
        };
        let mut agents = Vec::new();
        for n in 0..AGENTS {
            let body = json!({"name": format!("worker-{n}"), "capabilities": ["etl"], "max_concurrent_tasks": 2});
            let (status, agent) = clients
                .retried(n, "POST", "/api/v1/agents", ADMIN_KEY, &[], Some(&body))
                .await;
            assert_eq!(status, 200);
            let id = agent["id"].as_str().unwrap().to_owned();
            let key = agent["agent_key"].as_str().unwrap().to_owned();
            agents.push((n % 3, id, key));
        }
        let stop = Arc::new(AtomicBool::new(false));
        let completed_seen: Arc<Mutex<Vec<String>>> = Arc::default();
        let events_seen: Arc<Mutex<Vec<i64>>> = Arc::default();
        let subscriber = tokio::spawn(subscribe(
            clients.clone(),
            completed_seen.clone(),
            events_seen.clone(),
            stop.clone(),
        ));
        let doom = Doom::default();
        let mortal = agents.iter().filter(|(home, _, _)| *home == 0).count();
        let completes: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let done = Arc::new(AtomicUsize::new(0));
        let workers = agents
            .into_iter()
            .map(|(home, id, key)| {
                let work = work(
                    clients.clone(),
                    home,
                    id,
                    key,
                    completes.clone(),
                    done.clone(),
                    stop.clone(),
                    (home == 0).then(|| doom.clone()),
                );
                tokio::spawn(work)
            })
            .collect();
        let submitted: Arc<Mutex<Vec<String>>> = Arc::default();
        let submitters = (0..8)
            .map(|s| {
                let (clients, submitted) = (clients.clone(), submitted.clone());
                tokio::spawn(async move {
                    for n in (s..TASKS).step_by(8) {
                        let body = json!({
                            "title": format!("job {n}"), "required_capabilities": ["etl"],
                            "lease_seconds": 5, "max_attempts": 10
                        });
                        let key = format!("job-{n}");
                        let headers = [("Idempotency-Key", key.as_str())];
                        let (status, task) = clients
                            .retried(n, "POST", "/api/v1/tasks", ADMIN_KEY, &headers, Some(&body))
                            .await;
                        assert_eq!(status, 200, "{task}");
                        submitted
                            .lock()
                            .unwrap()
                            .push(task["id"].as_str().unwrap().to_owned());
                    }
                })
            })
            .collect();
        Flow {
            clients,
            stop,
            done,
            completes,
            submitted,
            completed_seen,
            events_seen,
            doom,
            mortal,
            subscriber,
            workers,
            submitters,
        }
    }

    /// Waits until agents have completed `n` tasks.
    async fn completed(&self, n: usize) {
        let enough = async {
            loop {
                let more = self.clients.progress.notified();
                if self.done.load(Ordering::SeqCst) >= n {
                    return;
                }
                more.await;
            }
        };
        let got = tokio::time::timeout(Duration::from_secs(60), enough).await;
        assert!(got.is_ok(), "the flow did not get going");
    }

    /// Makes the agents that run beside replica 0 die, each holding a task it started, as if
    /// their machine went down; waits until they have, and returns each one's ID and task.
    async fn doom_agents_beside_replica_0(&self) -> Vec<(String, String)> {
        self.doom.doomed.store(true, Ordering::SeqCst);
        let all_dead = async {
            loop {
                let more = self.clients.progress.notified();
                if self.doom.abandoned.lock().unwrap().len() >= self.mortal {
                    return;
                }
                more.await;
            }
        };
        let died = tokio::time::timeout(Duration::from_secs(60), all_dead).await;
        assert!(died.is_ok(), "the agents beside replica 0 took no task");
        self.doom.abandoned.lock().unwrap().clone()
    }

    /// Waits until every task has completed, through the replicas that still answer, then
    /// checks the run: every acknowledged task once, completed once, no attempt assigned
    /// twice, every task event seen once, in order, by the subscriber. Returns how requests
    /// went, and each task's history.
    async fn finish(self, live: &[usize]) -> (Tally, HashMap<String, Vec<Value>>) {
        for submitter in self.submitters {
            submitter.await.unwrap();
        }
        let routes = self.clients.routes.lock().unwrap().clone();
        let live = Clients {
            routes: Arc::new(Mutex::new(live.iter().map(|&i| routes[i]).collect())),
            tally: Arc::default(),
            progress: Arc::default(),
        };
        // The subscriber hears of every completion: wait until it has heard of them all.
        let all_seen = async {
            loop {
                let more = self.clients.progress.notified();
                if self.completed_seen.lock().unwrap().len() >= TASKS {
                    return;
                }
                more.await;
            }
        };
        let seen = tokio::time::timeout(Duration::from_secs(90), all_seen).await;
        let (_, summary) = live
            .retried(0, "GET", "/api/v1/dashboard/summary", ADMIN_KEY, &[], None)
            .await;
        assert!(
            seen.is_ok(),
            "not every task completed: {}",
            summary["tasks"]
        );
        assert_eq!(summary["tasks"]["total"], TASKS, "{}", summary["tasks"]);
        assert_eq!(summary["tasks"]["completed"], TASKS, "{}", summary["tasks"]);
        self.stop.store(true, Ordering::SeqCst);
        for worker in self.workers {
            worker.await.unwrap();
        }
        let mut unique = self.submitted.lock().unwrap().clone();
        unique.sort();
        unique.dedup();
        assert_eq!(
            unique.len(),
            TASKS,
            "each acknowledged submission is its own task, none twice"
        );
        let completes = self.completes.lock().unwrap().clone();
        assert!(
            completes.values().all(|&n| n == 1),
            "a completion was accepted twice for one task"
        );
        let mut histories = HashMap::new();
        for id in &unique {
            let (status, history) = live
                .retried(
                    0,
                    "GET",
                    &format!("/api/v1/tasks/{id}/history"),
                    ADMIN_KEY,
                    &[],
                    None,
                )
                .await;
            assert_eq!(status, 200);
            let events = history.as_array().unwrap();
            let of = |kind: &str| events.iter().filter(|e| e["type"] == kind).count();
            assert_eq!(of("task_completed"), 1, "task {id}: {history}");
            let mut attempts: Vec<i64> = events
                .iter()
                .filter(|e| e["type"] == "task_assigned")
                .map(|e| e["data"]["attempt"].as_i64().unwrap())
                .collect();
            let assigned = attempts.len();
            attempts.dedup();
            assert_eq!(
                attempts.len(),
                assigned,
                "task {id} was assigned twice in one attempt"
            );
            histories.insert(id.clone(), events.clone());
        }
        self.subscriber.await.unwrap();
        // Every event of the channel subscribed to, as each task's history keeps it, reached
        // the subscriber, and nothing else did (it saw each at most once, in order, as it checked).
        let mut logged: Vec<i64> = histories
            .values()
            .flatten()
            .filter(|e| e["channel"] == "task_activity")
            .map(|e| e["seq"].as_i64().unwrap())
            .collect();
        logged.sort_unstable();
        let mut heard = self.events_seen.lock().unwrap().clone();
        heard.sort_unstable();
        assert_eq!(
            heard.len(),
            logged.len(),
            "the subscriber heard {} task events of the {} logged",
            heard.len(),
            logged.len()
        );
        assert_eq!(heard, logged, "the subscriber missed a task event");
        let seen = self.completed_seen.lock().unwrap().clone();
        let mut by_task: BTreeMap<&String, usize> = BTreeMap::new();
        for task in &seen {
            *by_task.entry(task).or_default() += 1;
        }
        assert_eq!(by_task.len(), TASKS, "the subscriber missed a completion");
        assert!(
            by_task.values().all(|&n| n == 1),
            "the subscriber saw a completion twice"
        );
        let tally = self.clients.tally.lock().unwrap().clone();
        (tally, histories)
    }
}

/// A subscriber to every task event, moving to the next replica with `since` when its own
/// closes or stops answering; it checks every event comes after the last, and records every
/// event's `seq` and the completions. Returns how many times it moved.
async fn subscribe(
    clients: Clients,
    seen: Arc<Mutex<Vec<String>>>,
    events: Arc<Mutex<Vec<i64>>>,
    stop: Arc<AtomicBool>,
) -> usize {
    let (mut at, mut last, mut moves) = (0, 0i64, 0);
    while !stop.load(Ordering::SeqCst) {
        let url = format!(
            "ws://{}/api/v1/ws/watcher?token={ADMIN_KEY}",
            clients.route(at)
        );
        if let Ok((mut socket, _)) = tokio_tungstenite::connect_async(url).await {
            let subscribe =
                json!({"type": "subscribe", "subscriptions": ["task_activity"], "since": last});
            if socket
                .send(Message::Text(subscribe.to_string().into()))
                .await
                .is_ok()
            {
                loop {
                    let next =
                        tokio::time::timeout(Duration::from_millis(500), socket.next()).await;
                    let text = match next {
                        Err(_) if stop.load(Ordering::SeqCst) => return moves,
                        Err(_) => continue,
                        Ok(Some(Ok(Message::Text(text)))) => text,
                        Ok(Some(Ok(_))) => continue,
                        Ok(_) => break,
                    };
                    let event: Value = serde_json::from_str(&text).unwrap();
                    let Some(seq) = event["seq"].as_i64() else {
                        continue;
                    };
                    assert!(
                        seq > last,
                        "an event came twice or out of order: {seq} after {last}"
                    );
                    last = seq;
                    events.lock().unwrap().push(seq);
                    if event["type"] == "task_completed" {
                        let task = event["data"]["task_id"].as_str().unwrap().to_owned();
                        seen.lock().unwrap().push(task);
                        clients.progress.notify_waiters();
                    }
                }
            }
        }
        moves += 1;
        at += 1;
    }
    moves
}

/// What makes an agent mortal: the flag that dooms it, and where it records the task it dies
/// holding (with its own ID).
#[derive(Clone, Default)]
struct Doom {
    doomed: Arc<AtomicBool>,
    abandoned: Arc<Mutex<Vec<(String, String)>>>,
}

/// A simulated agent: long-polls its replica, starts and completes what it is given; when a
/// call gets no answer or `503`, it leaves the task in hand to its lease and moves on to the
/// next replica. A mortal one (given its `doom`) dies once doomed, as soon as it has started a
/// task, recording it as abandoned.
#[allow(clippy::too_many_arguments)]
async fn work(
    clients: Clients,
    home: usize,
    id: String,
    key: String,
    completes: Arc<Mutex<HashMap<String, usize>>>,
    done: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    doom: Option<Doom>,
) {
    let mut at = home;
    let poll = format!("/api/v1/agents/{id}/tasks?status_filter=assigned&wait_seconds=1");
    while !stop.load(Ordering::SeqCst) {
        let Ok((200, tasks)) = clients.call(at, "GET", &poll, &key, &[], None).await else {
            at += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        for task in tasks.as_array().unwrap() {
            let task_id = task["id"].as_str().unwrap();
            let attempt = json!({"attempt": task["attempt"]});
            let start = format!("/api/v1/tasks/{task_id}/start");
            if !matches!(
                clients
                    .call(at, "POST", &start, &key, &[], Some(&attempt))
                    .await,
                Ok((200, _))
            ) {
                break;
            }
            if let Some(doom) = &doom {
                if doom.doomed.load(Ordering::SeqCst) {
                    doom.abandoned
                        .lock()
                        .unwrap()
                        .push((id.clone(), task_id.to_owned()));
                    clients.progress.notify_waiters();
                    return;
                }
            }
            let body = json!({"attempt": task["attempt"], "result": {"by": id}});
            let complete = format!("/api/v1/tasks/{task_id}/complete");
            match clients
                .call(at, "POST", &complete, &key, &[], Some(&body))
                .await
            {
                Ok((200, _)) => {
                    *completes
                        .lock()
                        .unwrap()
                        .entry(task_id.to_owned())
                        .or_default() += 1;
                    done.fetch_add(1, Ordering::SeqCst);
                    clients.progress.notify_waiters();
                }
                Ok((409, _)) => {} // the attempt is over (its lease ran out): not ours any more
                _ => break,        // no answer, or 503: the outcome is unknown
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_killed_mid_flow_loses_no_task_and_runs_none_twice() {
    let _turn = one_at_a_time().await;
    let database = adapters_postgres::testing::fresh_database().await;
    let redis = redis_url();
    let mut stack = Stack::start(database, redis).await;
    let flow = Flow::start(&stack).await;
    flow.completed(TASKS / 3).await;
    // The replica's machine goes down: the agents beside it with it, each holding a task it
    // started; the agents elsewhere move to the live replicas.
    let abandoned = flow.doom_agents_beside_replica_0().await;
    stack.replicas[0].child.kill().unwrap();
    stack.replicas[0].child.wait().unwrap();
    let (tally, histories) = flow.finish(&[1, 2]).await;
    eprintln!("replica killed: {tally:?}");
    // Requests the kill cut off are the only ones that failed.
    assert_eq!(tally.failed(), 0, "{tally:?}");
    assert!(!abandoned.is_empty());
    // Each task a dead agent held came back to the queue when its lease ran out, and another
    // agent ran it to the end in a later attempt.
    for (agent, task) in abandoned {
        let history = &histories[&task];
        let holder = |e: &Value| e["data"]["assigned_agent"].as_str().map(str::to_owned);
        let attempt = |e: &Value| e["data"]["attempt"].as_i64().unwrap();
        let assigned: Vec<&Value> = history
            .iter()
            .filter(|e| e["type"] == "task_assigned")
            .collect();
        let lost = assigned
            .iter()
            .rposition(|&e| holder(e).as_deref() == Some(agent.as_str()))
            .unwrap_or_else(|| panic!("task {task} was held by {agent}: {history:?}"));
        let lease_ran_out = history.iter().any(|e| {
            e["type"] == "task_retrying"
                && e["data"]["error"] == "lease expired"
                && attempt(e) > attempt(assigned[lost])
        });
        assert!(
            lease_ran_out,
            "task {task} came back when its lease ran out: {history:?}"
        );
        let completed = history
            .iter()
            .find(|e| e["type"] == "task_completed")
            .unwrap();
        let finisher = holder(completed);
        assert!(
            finisher.is_some() && finisher.as_deref() != Some(agent.as_str()),
            "task {task}, left by dead agent {agent}, was finished by another: {history:?}"
        );
        assert!(
            assigned[lost + 1..]
                .iter()
                .any(|&e| holder(e) == finisher && attempt(e) > attempt(assigned[lost])),
            "task {task} went back to the queue and was run again in a later attempt: \
             {history:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rolling_restart_fails_no_request_but_with_a_retryable_503() {
    let _turn = one_at_a_time().await;
    let database = adapters_postgres::testing::fresh_database().await;
    let redis = redis_url();
    let mut stack = Stack::start(database, redis).await;
    let flow = Flow::start(&stack).await;
    flow.completed(TASKS / 4).await;
    for i in 0..3 {
        stack.restart(i).await;
    }
    let (tally, _) = flow.finish(&[0, 1, 2]).await;
    eprintln!("rolling restart: {tally:?}");
    assert_eq!(
        tally.broken, 0,
        "a request was cut off by a graceful stop: {tally:?}"
    );
    assert_eq!(tally.failed(), 0, "{tally:?}");
}

/// What a run where no replica died must show: no request cut off, and no error but a
/// retryable `503`.
fn only_retries(fault: &str, tally: &Tally) {
    eprintln!("{fault}: {tally:?}");
    assert_eq!(
        tally.broken, 0,
        "{fault}: a request got no answer: {tally:?}"
    );
    assert_eq!(tally.failed(), 0, "{fault}: {tally:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_database_cut_off_mid_flow_costs_only_retries() {
    let _turn = one_at_a_time().await;
    let database = adapters_postgres::testing::fresh_database().await;
    let (prefix, rest) = database.split_once("://").unwrap();
    let (credentials, host_and_db) = rest
        .split_once('@')
        .expect("TEST_DATABASE_URL names its user (postgres://user@host/...)");
    let (host, db) = host_and_db.split_once('/').unwrap();
    let proxy = Proxy::start(host.to_owned()).await;
    let proxied = format!("{prefix}://{credentials}@127.0.0.1:{}/{db}", proxy.port);
    let redis = redis_url();
    let stack = Stack::start(proxied, redis).await;
    let flow = Flow::start(&stack).await;
    flow.completed(TASKS / 3).await;
    proxy.set_up(false);
    // The outage lasts 3 s.
    tokio::time::sleep(Duration::from_secs(3)).await;
    proxy.set_up(true);
    let (tally, _) = flow.finish(&[0, 1, 2]).await;
    only_retries("database cut off", &tally);
    assert!(
        tally.writes.get(&503).copied().unwrap_or(0) > 0,
        "writes during the outage were refused with 503: {tally:?}"
    );
    drop(stack);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_stopped_and_started_mid_flow_loses_no_event() {
    let _turn = one_at_a_time().await;
    let database = adapters_postgres::testing::fresh_database().await;
    let mut redis = OwnRedis::start();
    let stack = Stack::start(database, redis.url()).await;
    let flow = Flow::start(&stack).await;
    flow.completed(TASKS / 3).await;
    redis.stop();
    // Down until a replica has noticed (its health says Redis is down), then started again:
    // events committed meanwhile reach the other replicas' subscribers from the log.
    until(
        stack.replicas[1].addr(),
        "/api/v1/health",
        "no replica noticed Redis stopped",
        |_, body| body["components"]["redis"] == "unhealthy",
    )
    .await;
    // Down for 3 s from then on, while the flow goes on without it.
    let before = flow.done.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during = flow.done.load(Ordering::SeqCst) - before;
    redis.restart();
    let (tally, _) = flow.finish(&[0, 1, 2]).await;
    only_retries("Redis restarted", &tally);
    assert!(during > 0, "tasks completed while Redis was down");
    // Every replica found Redis again.
    for replica in &stack.replicas {
        until(
            replica.addr(),
            "/api/v1/health",
            "a replica did not find Redis again",
            |status, body| status == 200 && body["components"]["redis"] == "healthy",
        )
        .await;
    }
    drop(stack);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_database_restarted_mid_flow_costs_only_retries() {
    let _turn = one_at_a_time().await;
    let postgres = OwnPostgres::start();
    let redis = redis_url();
    let stack = Stack::start(postgres.url(), redis).await;
    let flow = Flow::start(&stack).await;
    flow.completed(TASKS / 3).await;
    // A real stop (every session ended, nothing accepted) and start of the server.
    tokio::task::block_in_place(|| postgres.pg_ctl("stop"));
    // Down until a replica has noticed (its readiness fails), then started again.
    until(
        stack.replicas[0].addr(),
        "/readyz",
        "no replica noticed the database stopped",
        |status, _| status == 503,
    )
    .await;
    tokio::task::block_in_place(|| postgres.pg_ctl("start"));
    let (tally, _) = flow.finish(&[0, 1, 2]).await;
    only_retries("database restarted", &tally);
    assert!(
        tally.writes.get(&503).copied().unwrap_or(0) > 0,
        "writes during the restart were refused with 503: {tally:?}"
    );
    drop(stack);
}
