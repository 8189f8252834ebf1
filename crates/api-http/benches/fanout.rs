//! B6 and B7: WebSocket fan-out and memory per idle connection.
//!
//! `cargo bench -p api-http --bench fanout`
//!
//! The server runs in a child process (this same binary, started with `FANOUT_SERVER` set), so
//! its memory can be read from `/proc` and the clients in this process do not count towards it.
//! Two servers are measured the same way in the same run:
//!
//! - `bare`, the baseline: an actix-ws endpoint that forwards one tokio broadcast channel to
//!   every connection, nothing else;
//! - `platform`, ours: the whole application on the embedded store, events published on its
//!   bus and delivered through the hub and the sessions (authentication, subscriptions, filters,
//!   ordering by `seq`, bounded queues).
//!
//! Both send the same frame, in the shape of a stored event. For each number of subscribers the
//! bench finds the highest publishing rate at which every subscriber gets every event within
//! half a second of the last one published (deliveries per second at that rate), then measures
//! latency (publish to receipt, one clock) at half that rate. B7 opens 10 000 idle, subscribed
//! connections and divides the growth of the server's resident memory by that number.
//!
//! Long for a bench: both servers, the clients, the measurements and the report are in this one
//! file, so that what is compared is seen side by side.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

const ADMIN_KEY: &str = "bench-admin-key-0123456789";
const SUBSCRIBERS: [usize; 3] = [100, 1_000, 10_000];
/// How long each publishing trial lasts.
const TRIAL: Duration = Duration::from_secs(2);
/// How long after the last event every subscriber must have it.
const DRAIN: Duration = Duration::from_millis(500);
/// Connections opened for B7.
const IDLE: usize = 10_000;

fn main() {
    match std::env::var("FANOUT_SERVER").as_deref() {
        Ok(kind) => server::run(kind),
        Err(_) => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("a tokio runtime");
            runtime.block_on(bench());
        }
    }
}

async fn bench() {
    println!("B6 WebSocket fan-out (max rate with every event delivered; latency at half of it)");
    println!(
        "{:>11} {:>9} {:>15} {:>8} {:>8} {:>8} {:>6}",
        "subscribers", "server", "deliveries/s", "p50 ms", "p99 ms", "lost", "ratio"
    );
    for n in SUBSCRIBERS {
        let bare = measure_fanout("bare", n).await;
        let ours = measure_fanout("platform", n).await;
        for (name, r) in [("bare", &bare), ("platform", &ours)] {
            println!(
                "{n:>11} {name:>9} {:>15.0} {:>8.2} {:>8.2} {:>8} {:>6.2}",
                r.deliveries_per_sec,
                r.p50_ms,
                r.p99_ms,
                r.lost,
                r.deliveries_per_sec / bare.deliveries_per_sec
            );
        }
    }
    println!();
    println!("B7 resident memory per idle WebSocket connection ({IDLE} connections)");
    for kind in ["bare", "platform"] {
        let bytes = idle_memory(kind).await;
        println!("{kind:>9} {:>8.1} KB per connection", bytes / 1024.0);
    }
}

/// One server process and the line protocol to drive it.
struct Server {
    child: Child,
    stdin: ChildStdin,
    lines: std::io::Lines<BufReader<std::process::ChildStdout>>,
    port: u16,
}

impl Server {
    fn start(kind: &str) -> Self {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .env("FANOUT_SERVER", kind)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("the server process starts");
        let stdin = child.stdin.take().unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let port = lines
            .next()
            .and_then(Result::ok)
            .and_then(|l| l.strip_prefix("listening ").map(str::to_owned))
            .and_then(|p| p.parse().ok())
            .expect("the server reports its port");
        Self {
            child,
            stdin,
            lines,
            port,
        }
    }

    /// Sends a command and waits for its one-line answer, without holding up the clients
    /// (the runtime moves them to another thread meanwhile).
    fn ask(&mut self, command: &str) -> String {
        tokio::task::block_in_place(|| {
            writeln!(self.stdin, "{command}").unwrap();
            self.stdin.flush().unwrap();
            self.lines.next().unwrap().unwrap()
        })
    }

    fn resident_bytes(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kb: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap();
        kb * 1024.0
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What one subscriber has seen.
#[derive(Default)]
struct Seen {
    received: AtomicU64,
    /// Events that arrived out of order or after a gap.
    disorder: AtomicU64,
    last: AtomicU64,
    latencies_us: Mutex<Vec<u32>>,
}

/// `n` open subscribers: what each has seen, and the tasks reading their sockets (aborted,
/// closing the sockets, when this is dropped, since the process may not hold two sets of
/// 10 000 sockets at once).
struct Subscribers {
    seen: Vec<Arc<Seen>>,
    readers: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Subscribers {
    fn drop(&mut self) {
        for reader in &self.readers {
            reader.abort();
        }
    }
}

/// Opens `n` subscribers and returns what each sees from now on.
async fn subscribers(kind: &str, port: u16, n: usize) -> Subscribers {
    let mut readers = Vec::with_capacity(n);
    let mut seen = Vec::with_capacity(n);
    let mut ready = Vec::with_capacity(n);
    for i in 0..n {
        let s = Arc::new(Seen::default());
        seen.push(s.clone());
        let url = match kind {
            "bare" => format!("ws://127.0.0.1:{port}/ws"),
            _ => format!("ws://127.0.0.1:{port}/api/v1/ws/bench-{i}?token={ADMIN_KEY}"),
        };
        let platform = kind != "bare";
        let (tx, rx) = tokio::sync::oneshot::channel();
        ready.push(rx);
        readers.push(tokio::spawn(async move {
            let (mut socket, _) = loop {
                match tokio_tungstenite::connect_async(&url).await {
                    Ok(s) => break s,
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            };
            if platform {
                let subscribe = r#"{"type":"subscribe","subscriptions":["task_activity"]}"#;
                socket.send(Message::Text(subscribe.into())).await.unwrap();
                while let Some(Ok(m)) = socket.next().await {
                    if matches!(&m, Message::Text(t) if t.contains("subscription_confirmed")) {
                        break;
                    }
                }
            }
            let _ = tx.send(());
            while let Some(Ok(message)) = socket.next().await {
                if let Message::Text(text) = message {
                    s.record(&text);
                }
            }
        }));
        if i % 200 == 199 {
            tokio::time::sleep(Duration::from_millis(20)).await; // pace the handshakes
        }
    }
    for r in ready {
        r.await.expect("every subscriber connects");
    }
    Subscribers { seen, readers }
}

impl Seen {
    fn record(&self, frame: &str) {
        let (Some(n), Some(sent)) = (
            number_after(frame, "\"n\":"),
            number_after(frame, "\"sent\":"),
        ) else {
            return; // not a bench event (system metrics)
        };
        let last = self.last.swap(n, Ordering::Relaxed);
        if last != 0 && n != last + 1 {
            self.disorder.fetch_add(1, Ordering::Relaxed);
        }
        self.received.fetch_add(1, Ordering::Relaxed);
        let micros = (now_nanos().saturating_sub(sent) / 1_000) as u32;
        self.latencies_us.lock().unwrap().push(micros);
    }
}

fn number_after(text: &str, key: &str) -> Option<u64> {
    let rest = &text[text.find(key)? + key.len()..];
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

struct Trial {
    delivered: u64,
    expected: u64,
    disorder: u64,
    seconds: f64,
    latencies_us: Vec<u32>,
}

impl Trial {
    fn clean(&self) -> bool {
        self.delivered == self.expected && self.disorder == 0
    }
}

/// Publishes at `rate` events/s for [`TRIAL`] and waits up to [`DRAIN`] for every delivery.
async fn trial(server: &mut Server, seen: &[Arc<Seen>], rate: u64) -> Trial {
    for s in seen {
        s.received.store(0, Ordering::Relaxed);
        s.disorder.store(0, Ordering::Relaxed);
        s.latencies_us.lock().unwrap().clear();
    }
    let count = (rate as f64 * TRIAL.as_secs_f64()) as u64;
    let expected = count * seen.len() as u64;
    let started = Instant::now();
    let answer = server.ask(&format!("publish {rate} {count}"));
    assert_eq!(answer, "published");
    let deadline = Instant::now() + DRAIN;
    let delivered = loop {
        let delivered: u64 = seen
            .iter()
            .map(|s| s.received.load(Ordering::Relaxed))
            .sum();
        if delivered >= expected || Instant::now() > deadline {
            break delivered;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let seconds = started.elapsed().as_secs_f64();
    let mut latencies_us = Vec::new();
    for s in seen {
        latencies_us.extend(s.latencies_us.lock().unwrap().drain(..));
    }
    Trial {
        delivered,
        expected,
        disorder: seen
            .iter()
            .map(|s| s.disorder.load(Ordering::Relaxed))
            .sum(),
        seconds,
        latencies_us,
    }
}

struct Fanout {
    deliveries_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    lost: u64,
}

/// A server and its subscribers.
struct Run {
    server: Server,
    subscribers: Subscribers,
}

impl Run {
    async fn start(kind: &str, n: usize) -> Self {
        // Sockets of an earlier run finish closing first.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let server = Server::start(kind);
        let subscribers = subscribers(kind, server.port, n).await;
        Self {
            server,
            subscribers,
        }
    }

    async fn trial(&mut self, rate: u64) -> Trial {
        trial(&mut self.server, &self.subscribers.seen, rate).await
    }
}

/// Finds the highest clean rate (doubling until a trial fails, then bisecting to within 10 %;
/// every failed trial is followed by a fresh server and subscribers, since it may have left
/// sessions dropped or behind), reports the deliveries per second of that clean trial, then
/// measures latency and loss at half of it.
async fn measure_fanout(kind: &str, n: usize) -> Fanout {
    let mut run = Run::start(kind, n).await;
    let mut good = 0u64;
    let mut deliveries_per_sec = 0.0;
    let mut bad: Option<u64> = None;
    let mut rate = (200_000 / n as u64).max(10);
    for _ in 0..16 {
        let t = run.trial(rate).await;
        if t.clean() {
            good = rate;
            deliveries_per_sec = t.delivered as f64 / t.seconds;
        } else {
            bad = Some(rate);
            drop(run);
            run = Run::start(kind, n).await;
        }
        rate = match bad {
            None => rate * 2,
            Some(b) if good == 0 => b / 2,
            Some(b) if b - good <= good / 10 => break,
            Some(b) => (good + b) / 2,
        };
        if rate == 0 {
            break;
        }
    }
    assert!(good > 0, "{kind}: no clean rate at {n} subscribers");
    let calm = run.trial((good / 2).max(1)).await;
    let mut latencies = calm.latencies_us;
    latencies.sort_unstable();
    let at = |q: f64| {
        let i = ((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1));
        latencies.get(i).copied().unwrap_or(0) as f64 / 1000.0
    };
    Fanout {
        deliveries_per_sec,
        p50_ms: at(0.50),
        p99_ms: at(0.99),
        lost: calm.expected - calm.delivered,
    }
}

async fn idle_memory(kind: &str) -> f64 {
    let server = Server::start(kind);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = server.resident_bytes();
    let open = subscribers(kind, server.port, IDLE).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = server.resident_bytes();
    drop(open);
    (after - before) / IDLE as f64
}

/// The server side, in the child process.
mod server {
    use std::io::BufRead;
    use std::sync::Arc;
    use std::time::Duration;

    use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
    use adapters_memory::{MemoryBus, MemoryStore, RandomIds, SystemClock};
    use app::{Dependencies, Platform, Settings};
    use bytestring::ByteString;
    use domain::{Event, EventKind};
    use futures_util::StreamExt;
    use ports::EventBus;
    use serde_json::json;
    use tokio::sync::broadcast;

    /// Serves on a free loopback port with two workers, and tells the parent which.
    macro_rules! listen {
        ($server:expr) => {{
            let server = $server
                .workers(2)
                .disable_signals()
                .backlog(4096)
                .max_connections(50_000)
                .bind(("127.0.0.1", 0))
                .unwrap();
            println!("listening {}", server.addrs()[0].port());
            actix_web::rt::spawn(server.run());
        }};
    }

    pub fn run(kind: &str) {
        let system = actix_web::rt::System::new();
        system.block_on(async move {
            let target = match kind {
                "bare" => {
                    let (sender, _) = broadcast::channel::<ByteString>(1024);
                    let frames = web::Data::new(sender.clone());
                    listen!(HttpServer::new(move || {
                        App::new()
                            .app_data(frames.clone())
                            .route("/ws", web::get().to(bare))
                    }));
                    Target::Bare(sender)
                }
                _ => {
                    let bus = Arc::new(MemoryBus::new());
                    let platform = Platform::new(
                        Dependencies::on_store(
                            Arc::new(MemoryStore::new()),
                            bus.clone(),
                            Arc::new(SystemClock),
                            Arc::new(RandomIds),
                        ),
                        Settings {
                            admin_key: Some(app::hash_key(super::ADMIN_KEY)),
                            ..Settings::default()
                        },
                    );
                    // Every subscriber here uses one key: no cap gets in the way.
                    let state = api_http::AppState::new(platform, None, Duration::from_secs(5))
                        .with_ws_limits(api_http::ws::WsLimits {
                            total: 1_000_000,
                            per_credential: 1_000_000,
                        });
                    listen!(HttpServer::new(move || {
                        api_http::app(
                            state.clone(),
                            api_http::BodyLimit(api_http::extract::DEFAULT_MAX_BODY_BYTES),
                        )
                    }));
                    Target::Platform(bus)
                }
            };
            commands(target).await;
        });
    }

    /// Where events are published.
    enum Target {
        Bare(broadcast::Sender<ByteString>),
        Platform(Arc<MemoryBus>),
    }

    impl Target {
        async fn publish(&self, events: Vec<Event>) {
            match self {
                // Encoded once per event, as the platform's hub does.
                Target::Bare(frames) => {
                    for event in &events {
                        let _ = frames.send(api_http::ws::encode(event));
                    }
                }
                Target::Platform(bus) => bus.publish(&events).await,
            }
        }
    }

    /// Reads `publish <rate> <count>` lines from stdin and publishes, answering `published`.
    async fn commands(target: Target) {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        std::thread::spawn(move || {
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
            std::process::exit(0);
        });
        let mut seq = 0i64;
        while let Some(line) = rx.recv().await {
            let words: Vec<u64> = line
                .split_whitespace()
                .skip(1)
                .filter_map(|w| w.parse().ok())
                .collect();
            let [rate, count] = words[..] else { continue };
            let started = tokio::time::Instant::now();
            let mut sent = 0u64;
            let mut tick = tokio::time::interval(Duration::from_millis(1));
            while sent < count {
                tick.tick().await;
                let due = ((started.elapsed().as_secs_f64() * rate as f64) as u64).min(count);
                let batch: Vec<Event> = (sent..due)
                    .map(|_| {
                        seq += 1;
                        event(seq)
                    })
                    .collect();
                sent = due;
                if !batch.is_empty() {
                    target.publish(batch).await;
                }
            }
            println!("published");
        }
    }

    fn event(seq: i64) -> Event {
        Event {
            seq,
            kind: EventKind::TaskProgress,
            agent_id: None,
            task_id: None,
            data: json!({
                "n": seq,
                "sent": super::now_nanos(),
                "task_id": "0196f2d4-8d5e-7a41-b3c2-52f1c8a0e9d7",
                "agent_id": "0196f2d4-8d5e-7a41-b3c2-52f1c8a0e9d8",
                "progress": 0.5,
                "message": "processing batch 12 of 24",
            })
            .into(),
            timestamp: chrono::Utc::now(),
        }
    }

    /// The baseline: every frame on the channel goes to the connection, nothing else.
    async fn bare(
        req: HttpRequest,
        body: web::Payload,
        frames: web::Data<broadcast::Sender<ByteString>>,
    ) -> Result<HttpResponse, actix_web::Error> {
        let (response, mut session, mut incoming) = actix_ws::handle(&req, body)?;
        let mut rx = frames.subscribe();
        actix_web::rt::spawn(async move {
            loop {
                tokio::select! {
                    frame = rx.recv() => match frame {
                        Ok(frame) => {
                            if session.text(frame).await.is_err() {
                                return;
                            }
                        }
                        Err(broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(broadcast::error::RecvError::Closed) => return,
                    },
                    message = incoming.next() => match message {
                        Some(Ok(actix_ws::Message::Ping(bytes))) => {
                            let _ = session.pong(&bytes).await;
                        }
                        Some(Ok(actix_ws::Message::Close(_))) | None | Some(Err(_)) => return,
                        _ => {}
                    },
                }
            }
        });
        Ok(response)
    }
}
