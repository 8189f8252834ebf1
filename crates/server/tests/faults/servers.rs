//! The processes a fault test runs and breaks: the replicas (each the real binary), a
//! PostgreSQL and a Redis of the test's own that can be stopped and started, and a TCP proxy
//! that can be cut; and the routes clients take to the replicas.

use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use crate::requests::call;

pub(crate) const BINARY: &str = env!("CARGO_BIN_EXE_agent-platform");
pub(crate) const ADMIN_KEY: &str = "faults-test-admin-key-0123456789";

/// Where clients are routed: each replica's address, or `None` while it is out of rotation.
pub(crate) type Routes = Arc<Mutex<Vec<Option<SocketAddr>>>>;

pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Redis's URL (`TEST_REDIS_URL`), checked to answer.
pub(crate) fn redis_url() -> String {
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
pub(crate) struct Proxy {
    pub(crate) port: u16,
    pub(crate) up: Arc<AtomicBool>,
    pub(crate) cut: Arc<Notify>,
}

impl Proxy {
    pub(crate) async fn start(target: String) -> Self {
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

    pub(crate) fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::SeqCst);
        if !up {
            self.cut.notify_waiters();
        }
    }
}

/// A PostgreSQL server of the test's own, in a directory of its own, so that it can really be
/// stopped and started while the replicas use it (the shared test server cannot be). Needs the
/// PostgreSQL server's programs (`initdb`, `pg_ctl`); run as root, it runs them as `postgres`.
pub(crate) struct OwnPostgres {
    pub(crate) bin: std::path::PathBuf,
    pub(crate) dir: std::path::PathBuf,
    pub(crate) port: u16,
}

impl OwnPostgres {
    pub(crate) fn start() -> Self {
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
    pub(crate) fn programs() -> std::path::PathBuf {
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

    pub(crate) fn as_root() -> bool {
        Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
    }

    /// One of the server's programs, to be run as `postgres` when this is root.
    pub(crate) fn command(&self, program: &str) -> Command {
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
    pub(crate) fn run(&self, program: &str, args: &[&str]) {
        let out = self.command(program).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{program} {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `pg_ctl start` or `stop` (fast: open sessions are ended, as in a restart), waiting for it.
    pub(crate) fn pg_ctl(&self, action: &str) {
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

    pub(crate) fn url(&self) -> String {
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
pub(crate) struct OwnRedis {
    pub(crate) port: u16,
    pub(crate) server: Option<Child>,
}

impl OwnRedis {
    pub(crate) async fn start() -> Self {
        let mut redis = Self {
            port: free_port(),
            server: None,
        };
        redis.run().await;
        redis
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Runs the server and waits until it says it accepts connections.
    async fn run(&mut self) {
        let mut server = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run redis-server ({e}): the Redis fault test needs the Redis \
                     server's program (Debian's `redis-server` package)"
                )
            });
        let said = Said::follow(server.stdout.take().unwrap());
        self.server = Some(server);
        assert!(
            said.after(0, "Ready to accept connections").await,
            "redis-server did not start: is port {} taken?",
            self.port
        );
    }

    /// Starts the stopped server again, on the same port.
    pub(crate) async fn restart(&mut self) {
        self.run().await;
    }

    /// Stops the server (every connection closed, nothing answers) and waits until it has.
    pub(crate) fn stop(&mut self) {
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

/// What a process has printed so far, a line at a time, and a bell rung at each new line: a
/// test waits for a process to say something rather than asking it again and again.
#[derive(Default)]
pub(crate) struct Said {
    lines: Mutex<Vec<String>>,
    more: Notify,
    ended: AtomicBool,
}

impl Said {
    /// Reads `output` to its end, on a thread of its own.
    pub(crate) fn follow(output: impl std::io::Read + Send + 'static) -> Arc<Said> {
        let said = Arc::new(Said::default());
        let to = said.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(output)
                .lines()
                .map_while(Result::ok)
            {
                to.lines.lock().unwrap().push(line);
                to.more.notify_waiters();
            }
            to.ended.store(true, Ordering::SeqCst);
            to.more.notify_waiters();
        });
        said
    }

    /// How many lines so far: a mark to wait from.
    pub(crate) fn mark(&self) -> usize {
        self.lines.lock().unwrap().len()
    }

    /// Waits, up to 30 s, for a line after `mark` that contains `text`; false if none came
    /// (the process ended, or said nothing of the kind).
    pub(crate) async fn after(&self, mark: usize, text: &str) -> bool {
        let heard = async {
            loop {
                let more = self.more.notified();
                if self
                    .lines
                    .lock()
                    .unwrap()
                    .iter()
                    .skip(mark)
                    .any(|l| l.contains(text))
                {
                    return true;
                }
                if self.ended.load(Ordering::SeqCst) {
                    return false;
                }
                more.await;
            }
        };
        tokio::time::timeout(Duration::from_secs(30), heard)
            .await
            .unwrap_or(false)
    }
}

/// One replica: the binary, on its own port, its output kept in a file for failure messages.
pub(crate) struct Replica {
    pub(crate) child: Child,
    pub(crate) port: u16,
    pub(crate) log: std::path::PathBuf,
    /// What it logs on standard output.
    pub(crate) said: Arc<Said>,
}

impl Replica {
    pub(crate) fn start(database: &str, redis: &str) -> Replica {
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
            // Its own start-up lines (the "listening" one), Redis subscriptions made, and
            // warnings from the rest.
            .env("LOG_LEVEL", "warn,agent_platform=info,adapters_redis=info")
            .env("LOG_FORMAT", "json")
            .env("SHUTDOWN_DRAIN_SECS", "1")
            .env("SHUTDOWN_TIMEOUT_SECS", "10")
            .env("DATABASE_MAX_CONNECTIONS", "4")
            .env("WORKERS", "1")
            .stdout(Stdio::piped())
            .stderr(out)
            .spawn()
            .unwrap();
        let said = Said::follow(child.stdout.take().unwrap());
        Replica {
            child,
            port,
            log,
            said,
        }
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub(crate) fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub(crate) fn signal(&self, which: &str) {
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
pub(crate) struct Stack {
    pub(crate) database: String,
    pub(crate) redis: String,
    pub(crate) replicas: Vec<Replica>,
    pub(crate) routes: Routes,
}

impl Stack {
    pub(crate) async fn start(database: String, redis: String) -> Self {
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
    pub(crate) async fn ready(&mut self, i: usize) {
        let replica = &self.replicas[i];
        assert!(
            replica.said.after(0, "\"listening\"").await,
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
    pub(crate) async fn restart(&mut self, i: usize) {
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
