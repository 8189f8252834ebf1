//! The WebSocket API through real sockets: the seed's client flow, filtering, role scoping,
//! resuming with `since`, slow readers, bad input, and events crossing replicas through Redis.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use testkit::builders::principal;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Serves the harness's application on a real port.
fn serve(h: &Harness) -> SocketAddr {
    let state = h.state.clone();
    let server = actix_web::HttpServer::new(move || {
        api_http::app(
            state.clone(),
            api_http::BodyLimit(api_http::extract::DEFAULT_MAX_BODY_BYTES),
        )
    })
    .workers(1)
    .disable_signals()
    .on_connect(|connection, _| {
        if let Some(tcp) = connection.downcast_ref::<actix_web::rt::net::TcpStream>() {
            let _ = tcp.set_nodelay(true);
        }
    })
    .bind(("127.0.0.1", 0))
    .unwrap();
    let addr = server.addrs()[0];
    actix_web::rt::spawn(server.run());
    addr
}

async fn open(addr: SocketAddr, credential: Option<&str>) -> Socket {
    let mut request = format!("ws://{addr}/api/v1/ws/test-client")
        .into_client_request()
        .unwrap();
    if let Some(key) = credential {
        request
            .headers_mut()
            .insert("X-API-Key", key.parse().unwrap());
    }
    tokio_tungstenite::connect_async(request)
        .await
        .expect("upgrade")
        .0
}

async fn say(socket: &mut Socket, message: Value) {
    socket
        .send(Message::Text(message.to_string().into()))
        .await
        .unwrap();
}

/// The next text message, as JSON, skipping pings.
async fn next(socket: &mut Socket) -> Value {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("a message within 10 s")
            .expect("the socket is open")
            .expect("a valid frame");
        match message {
            Message::Text(text) => return serde_json::from_str(&text).unwrap(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected frame {other:?}"),
        }
    }
}

/// The next event, skipping `system_metrics`.
async fn next_event(socket: &mut Socket) -> Value {
    loop {
        let message = next(socket).await;
        if message["type"] != "system_metrics" {
            return message;
        }
    }
}

/// Waits for the server to close the socket because its credentials no longer hold: within a
/// revocation check (5 s) and some slack.
async fn closed_as_revoked(socket: &mut Socket) {
    let closed = tokio::time::timeout(Duration::from_secs(15), close_frame(socket))
        .await
        .expect("closed within seconds of the revocation")
        .expect("a close reason");
    assert_eq!(closed.code, CloseCode::Policy);
    assert_eq!(closed.reason.as_str(), "credentials revoked");
}

/// The close frame the server ends with, skipping whatever comes before it.
async fn close_frame(
    socket: &mut Socket,
) -> Option<tokio_tungstenite::tungstenite::protocol::CloseFrame> {
    loop {
        match socket.next().await {
            Some(Ok(Message::Close(frame))) => return frame,
            Some(Ok(_)) => continue,
            _ => return None,
        }
    }
}

async fn subscribe(socket: &mut Socket, message: Value) -> Value {
    say(socket, message).await;
    let confirmed = next(socket).await;
    assert_eq!(confirmed["type"], "subscription_confirmed", "{confirmed}");
    confirmed
}

fn new_agent(name: &str) -> domain::NewAgent {
    testkit::builders::new_agent(name, &["data_processing"])
}

#[actix_web::test]
async fn the_seed_client_flow_receives_typed_events() {
    let h = Harness::memory();
    let addr = serve(&h);
    let mut ws = open(addr, Some(ADMIN_KEY)).await;
    let confirmed = subscribe(
        &mut ws,
        json!({"type": "subscribe", "subscriptions": ["agent_activity", "task_activity"]}),
    )
    .await;
    assert_eq!(
        confirmed["subscriptions"],
        json!(["agent_activity", "task_activity"])
    );

    let operator = principal(domain::Role::Operator);
    let agent = h
        .state
        .platform
        .register_agent(&operator, new_agent("worker"))
        .await
        .unwrap();
    let event = next_event(&mut ws).await;
    assert_eq!(event["type"], "agent_registered");
    assert_eq!(event["channel"], "agent_activity");
    assert_eq!(event["data"]["agent_id"], agent.agent.id.to_string());
    assert!(event["seq"].as_i64().unwrap() > 0);
    assert!(event["timestamp"].as_str().unwrap().ends_with('Z'));

    let task = testkit::builders::new_task("job", 5, &["data_processing"], h.clock_now());
    h.state
        .platform
        .submit_task(&operator, task, None)
        .await
        .unwrap();
    let submitted = next_event(&mut ws).await;
    assert_eq!(submitted["type"], "task_submitted");
    assert_eq!(submitted["channel"], "task_activity");
    assert_eq!(
        submitted["seq"].as_i64().unwrap(),
        event["seq"].as_i64().unwrap() + 1
    );

    say(&mut ws, json!({"type": "ping"})).await;
    assert_eq!(next(&mut ws).await["type"], "pong");
    say(
        &mut ws,
        json!({"type": "unsubscribe", "subscriptions": ["task_activity"]}),
    )
    .await;
    let gone = next(&mut ws).await;
    assert_eq!(gone["type"], "unsubscription_confirmed");
    assert_eq!(gone["remaining"], json!(["agent_activity"]));
}

#[actix_web::test]
async fn filters_by_channel_and_task_and_an_agent_sees_only_itself() {
    let h = Harness::memory();
    let addr = serve(&h);
    let operator = principal(domain::Role::Operator);
    let a = h
        .state
        .platform
        .register_agent(&operator, new_agent("a"))
        .await
        .unwrap();
    let b = h
        .state
        .platform
        .register_agent(&operator, new_agent("b"))
        .await
        .unwrap();
    let first = h
        .state
        .platform
        .submit_task(
            &operator,
            testkit::builders::new_task("one", 5, &["x"], h.clock_now()),
            None,
        )
        .await
        .unwrap();

    let mut by_task = open(addr, Some(ADMIN_KEY)).await;
    subscribe(
        &mut by_task,
        json!({"type": "subscribe", "subscriptions": ["task_activity"], "filters": {"task_id": first.id.to_string()}}),
    )
    .await;
    let mut as_agent = open(addr, Some(&a.agent_key)).await;
    subscribe(
        &mut as_agent,
        json!({"type": "subscribe", "subscriptions": ["agent_activity"]}),
    )
    .await;

    // Noise first: another task, and B's status change; then what each socket should see.
    h.state
        .platform
        .submit_task(
            &operator,
            testkit::builders::new_task("two", 5, &["x"], h.clock_now()),
            None,
        )
        .await
        .unwrap();
    let suspend = domain::AgentPatch {
        status: Some(domain::StatusRequest::Suspended),
        ..Default::default()
    };
    h.state
        .platform
        .update_agent(&operator, b.agent.id, suspend.clone())
        .await
        .unwrap();
    h.state
        .platform
        .update_agent(&operator, a.agent.id, suspend)
        .await
        .unwrap();
    h.state
        .platform
        .cancel_task(&operator, first.id)
        .await
        .unwrap();

    let seen = next_event(&mut by_task).await;
    assert_eq!(seen["type"], "task_cancelled");
    assert_eq!(seen["data"]["task_id"], first.id.to_string());
    let mine = next_event(&mut as_agent).await;
    assert_eq!(
        mine["data"]["agent_id"],
        a.agent.id.to_string(),
        "B's change never reached A"
    );
    assert_eq!(mine["type"], "agent_status_changed");
}

#[actix_web::test]
async fn a_subscriber_that_drops_out_resumes_with_since_and_loses_nothing() {
    let h = Harness::memory();
    let addr = serve(&h);
    let operator = principal(domain::Role::Operator);
    let mut ws = open(addr, Some(ADMIN_KEY)).await;
    subscribe(
        &mut ws,
        json!({"type": "subscribe", "subscriptions": ["agent_activity"]}),
    )
    .await;
    h.state
        .platform
        .register_agent(&operator, new_agent("one"))
        .await
        .unwrap();
    let last = next_event(&mut ws).await["seq"].as_i64().unwrap();
    drop(ws);

    for name in ["two", "three", "four"] {
        h.state
            .platform
            .register_agent(&operator, new_agent(name))
            .await
            .unwrap();
    }
    let mut again = open(addr, Some(ADMIN_KEY)).await;
    subscribe(
        &mut again,
        json!({"type": "subscribe", "subscriptions": ["agent_activity"], "since": last}),
    )
    .await;
    let mut names = Vec::new();
    let mut seqs = Vec::new();
    for _ in 0..3 {
        let event = next_event(&mut again).await;
        names.push(event["data"]["name"].as_str().unwrap().to_owned());
        seqs.push(event["seq"].as_i64().unwrap());
    }
    assert_eq!(
        names,
        ["two", "three", "four"],
        "exactly the missed events, in order"
    );
    assert_eq!(seqs, [last + 1, last + 2, last + 3]);
    h.state
        .platform
        .register_agent(&operator, new_agent("five"))
        .await
        .unwrap();
    let live = next_event(&mut again).await;
    assert_eq!(live["data"]["name"], "five", "then live, with no duplicate");
    assert_eq!(live["seq"].as_i64().unwrap(), last + 4);
}

#[actix_web::test]
async fn a_slow_reader_is_disconnected_while_a_fast_one_gets_everything() {
    let h = Harness::memory();
    let addr = serve(&h);
    let operator = principal(domain::Role::Operator);
    // A small, fixed receive buffer, so not reading soon backs up into the server.
    let tcp = tokio::net::TcpSocket::new_v4().unwrap();
    tcp.set_recv_buffer_size(64 * 1024).unwrap();
    let tcp = tcp.connect(addr).await.unwrap();
    let mut request = format!("ws://{addr}/api/v1/ws/slow")
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("X-API-Key", ADMIN_KEY.parse().unwrap());
    let (mut slow, _) =
        tokio_tungstenite::client_async(request, tokio_tungstenite::MaybeTlsStream::Plain(tcp))
            .await
            .unwrap();
    subscribe(
        &mut slow,
        json!({"type": "subscribe", "subscriptions": ["agent_activity"]}),
    )
    .await;
    let mut fast = open(addr, Some(ADMIN_KEY)).await;
    subscribe(
        &mut fast,
        json!({"type": "subscribe", "subscriptions": ["agent_activity"]}),
    )
    .await;

    // Frames of about 6 KB: sixty long capability names in every registration event.
    let capabilities: Vec<String> = (0..60)
        .map(|i| format!("capability-{i:03}-{}", "x".repeat(80)))
        .collect();
    let total = 3000;
    let reader = tokio::spawn(async move {
        let mut got = 0;
        while got < total {
            if next_event(&mut fast).await["type"] == "agent_registered" {
                got += 1;
            }
        }
        got
    });
    for n in 0..total {
        let new = domain::NewAgent::parse(
            &format!("bulk-{n}"),
            &capabilities,
            &serde_json::Map::new(),
            serde_json::Map::new(),
            None,
        )
        .unwrap();
        h.state
            .platform
            .register_agent(&operator, new)
            .await
            .unwrap();
        if n % 20 == 0 {
            // Give the fast reader, on this same thread, its turn to read.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    assert_eq!(
        reader.await.unwrap(),
        total,
        "the fast reader got every event"
    );

    // The slow one finds, after whatever was buffered for it, a close telling it to resume.
    let mut received = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let close = loop {
        let frame = tokio::time::timeout_at(deadline, slow.next()).await;
        match frame.expect("a close frame within 30 s") {
            Some(Ok(Message::Close(frame))) => break frame.expect("a close reason"),
            Some(Ok(Message::Text(_))) => received += 1,
            Some(Ok(_)) => {}
            other => panic!("unexpected {other:?}"),
        }
    };
    assert!(received < total, "it was cut off before the end");
    assert_eq!(close.code, CloseCode::Again);
    assert!(close.reason.contains("since="), "{}", close.reason);
    // Counted: every frame the fast reader got was sent, and what the slow one missed dropped.
    let metrics = h.state.platform.metrics();
    assert!(metrics.ws_sent.get() >= total as u64 + received as u64);
    assert!(metrics.ws_dropped.get() > 0);
}

#[actix_web::test]
async fn bad_frames_get_errors_and_the_connection_stays_open() {
    let h = Harness::memory();
    let addr = serve(&h);
    let mut ws = open(addr, Some(ADMIN_KEY)).await;
    for bad in [
        Message::Text("not json".into()),
        Message::Text(json!({"type": "dance"}).to_string().into()),
        Message::Text(json!({"type": "subscribe", "subscriptions": ["nope"]}).to_string().into()),
        Message::Text(json!({"type": "subscribe", "subscriptions": ["agent_activity"], "filters": {"agent_id": "x"}}).to_string().into()),
        Message::Text(json!({"type": "subscribe", "subscriptions": ["agent_activity"], "since": -4}).to_string().into()),
        Message::Binary(vec![1, 2, 3].into()),
    ] {
        ws.send(bad).await.unwrap();
        let reply = next(&mut ws).await;
        assert_eq!(reply["type"], "error", "{reply}");
        assert!(reply["data"]["detail"].is_string());
    }
    say(&mut ws, json!({"type": "ping"})).await;
    assert_eq!(next(&mut ws).await["type"], "pong", "still open");

    // An oversized frame closes it with 1009.
    ws.send(Message::Text("x".repeat(70 * 1024).into()))
        .await
        .unwrap();
    let closed = close_frame(&mut ws).await;
    assert_eq!(closed.map(|f| f.code), Some(CloseCode::Size));
}

#[actix_web::test]
async fn credentials_come_in_a_header_a_query_or_a_first_message() {
    let h = Harness::memory();
    let addr = serve(&h);
    // A bad credential refuses the upgrade.
    let mut request = format!("ws://{addr}/api/v1/ws/c1")
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("X-API-Key", "wrong".parse().unwrap());
    let refused = tokio_tungstenite::connect_async(request).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 401)
        }
        other => panic!("expected a 401 refusal, got {other:?}"),
    }
    // ?token= works.
    let (mut by_query, _) =
        tokio_tungstenite::connect_async(format!("ws://{addr}/api/v1/ws/c2?token={ADMIN_KEY}"))
            .await
            .unwrap();
    subscribe(
        &mut by_query,
        json!({"type": "subscribe", "subscriptions": ["task_activity"]}),
    )
    .await;

    // Without credentials: only an auth message is accepted.
    let mut late = open(addr, None).await;
    say(
        &mut late,
        json!({"type": "subscribe", "subscriptions": ["task_activity"]}),
    )
    .await;
    assert_eq!(next(&mut late).await["type"], "error");
    say(
        &mut late,
        json!({"type": "auth", "token": jwt(json!({"sub": "v", "role": "viewer"}))}),
    )
    .await;
    let ok = next(&mut late).await;
    assert_eq!(ok["type"], "authenticated");
    assert_eq!(ok["data"]["role"], "viewer");
    subscribe(
        &mut late,
        json!({"type": "subscribe", "subscriptions": ["task_activity"]}),
    )
    .await;

    // A bad token in the auth message closes with a policy violation.
    let mut bad = open(addr, None).await;
    say(&mut bad, json!({"type": "auth", "token": "forged"})).await;
    let closed = close_frame(&mut bad).await;
    assert_eq!(closed.map(|f| f.code), Some(CloseCode::Policy));
}

#[actix_web::test]
async fn a_backlog_of_thousands_is_replayed_whole_and_in_order() {
    let h = Harness::memory();
    let addr = serve(&h);
    let operator = principal(domain::Role::Operator);
    let total = 1200; // more than a page of the log, and more than the hub's backlog
    for n in 0..total {
        h.state
            .platform
            .register_agent(&operator, new_agent(&format!("a-{n}")))
            .await
            .unwrap();
    }
    let mut ws = open(addr, Some(ADMIN_KEY)).await;
    subscribe(
        &mut ws,
        json!({"type": "subscribe", "subscriptions": ["agent_activity"], "since": 0}),
    )
    .await;
    let mut last = 0;
    for n in 0..total {
        let event = next_event(&mut ws).await;
        assert_eq!(event["type"], "agent_registered");
        assert_eq!(event["data"]["name"], format!("a-{n}"));
        let seq = event["seq"].as_i64().unwrap();
        assert!(seq > last, "in order, once");
        last = seq;
    }
    say(&mut ws, json!({"type": "ping"})).await;
    assert_eq!(
        next(&mut ws).await["type"],
        "pong",
        "nothing more, and still open"
    );
}

#[actix_web::test]
async fn a_socket_opened_with_a_key_that_is_then_revoked_is_closed() {
    let h = Harness::memory();
    let addr = serve(&h);
    let app = service!(h);
    let created = send(
        &app,
        admin(actix_web::http::Method::POST, "/api/v1/api-keys")
            .set_json(json!({"name": "dashboard", "role": "viewer"})),
    )
    .await;
    let created = created.ok().clone();
    let key = created["api_key"].as_str().unwrap().to_owned();
    let mut ws = open(addr, Some(&key)).await;
    subscribe(
        &mut ws,
        json!({"type": "subscribe", "subscriptions": ["agent_activity"]}),
    )
    .await;
    let mut other = open(addr, Some(ADMIN_KEY)).await;
    subscribe(
        &mut other,
        json!({"type": "subscribe", "subscriptions": ["agent_activity"]}),
    )
    .await;

    let id = created["id"].as_str().unwrap();
    send(
        &app,
        admin(
            actix_web::http::Method::DELETE,
            &format!("/api/v1/api-keys/{id}"),
        ),
    )
    .await
    .ok();
    closed_as_revoked(&mut ws).await;
    say(&mut other, json!({"type": "ping"})).await;
    assert_eq!(
        next(&mut other).await["type"],
        "pong",
        "other sessions stay"
    );
}

#[actix_web::test]
async fn platform_counters_go_to_readers_not_to_agents() {
    let h = Harness::memory();
    let addr = serve(&h);
    let app = service!(h);
    let (_, agent_key) = register(&app, seed_agent("worker")).await;
    let mut agent = open(addr, Some(&agent_key)).await;
    subscribe(
        &mut agent,
        json!({"type": "subscribe", "subscriptions": ["system_metrics"]}),
    )
    .await;
    let mut reader = open(addr, Some(ADMIN_KEY)).await;
    subscribe(
        &mut reader,
        json!({"type": "subscribe", "subscriptions": ["system_metrics"]}),
    )
    .await;
    // Two rounds of counters reach the reader (one a second in the harness)...
    for _ in 0..2 {
        assert_eq!(next(&mut reader).await["type"], "system_metrics");
    }
    // ...and none the agent: the first thing it gets is the answer to its ping.
    say(&mut agent, json!({"type": "ping"})).await;
    assert_eq!(next(&mut agent).await["type"], "pong");
}

#[actix_web::test]
async fn a_connected_socket_is_closed_when_its_token_expires() {
    let h = Harness::memory();
    // Tokens are checked against the wall clock; the session keeps time by the platform's.
    h.clock.set(chrono::Utc::now());
    let addr = serve(&h);
    let expires = chrono::Utc::now().timestamp() + 2;
    let token = jwt(json!({"sub": "v", "role": "viewer", "exp": expires}));
    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("ws://{addr}/api/v1/ws/short?token={token}"))
            .await
            .unwrap();
    subscribe(
        &mut ws,
        json!({"type": "subscribe", "subscriptions": ["agent_activity"]}),
    )
    .await;
    say(&mut ws, json!({"type": "ping"})).await;
    assert_eq!(
        next(&mut ws).await["type"],
        "pong",
        "open while the token is valid"
    );

    let closed = tokio::time::timeout(Duration::from_secs(10), close_frame(&mut ws))
        .await
        .expect("closed within seconds of expiry")
        .expect("a close reason");
    assert!(
        chrono::Utc::now().timestamp() >= expires,
        "not before expiry"
    );
    assert_eq!(closed.code, CloseCode::Policy);
    assert!(closed.reason.contains("expired"), "{}", closed.reason);
    assert!(closed.reason.contains("since="), "{}", closed.reason);
}

#[actix_web::test]
async fn system_metrics_arrive_every_interval_and_the_activity_feed_reads_the_log() {
    let h = Harness::memory();
    let addr = serve(&h);
    let operator = principal(domain::Role::Operator);
    h.state
        .platform
        .register_agent(&operator, new_agent("worker"))
        .await
        .unwrap();
    let mut ws = open(addr, Some(ADMIN_KEY)).await;
    subscribe(
        &mut ws,
        json!({"type": "subscribe", "subscriptions": ["system_metrics"]}),
    )
    .await;
    let metrics = next(&mut ws).await;
    assert_eq!(metrics["type"], "system_metrics");
    assert_eq!(metrics["data"]["active_agents"], 1);
    assert_eq!(metrics["data"]["websocket_connections"], 1);

    let app = service!(h);
    let feed = send(
        &app,
        admin(
            actix_web::http::Method::GET,
            "/api/v1/dashboard/activity?limit=5",
        ),
    )
    .await;
    let feed = feed.ok().as_array().unwrap().clone();
    assert_eq!(feed[0]["type"], "agent_activity");
    assert_eq!(feed[0]["event"], "agent_registered");
    assert_eq!(feed[0]["data"]["name"], "worker");
    send(
        &app,
        admin(
            actix_web::http::Method::GET,
            "/api/v1/dashboard/activity?limit=0",
        ),
    )
    .await
    .problem(400);
}

/// Two replicas on one fresh PostgreSQL database, each with its own Redis bus on `redis`,
/// their hubs catching up from the log every `catch_up`.
async fn two_replicas(redis: &str, catch_up: Duration) -> (api_http::AppState, api_http::AppState) {
    let url = adapters_postgres::testing::fresh_database().await;
    let one = replica(&url, redis, None, catch_up).await;
    (one, replica(&url, redis, None, catch_up).await)
}

/// So long that only the bus can bring an event while a test runs.
const NEVER: Duration = Duration::from_secs(3600);

/// A replica on the database at `url` with a Redis bus on `redis`, under `namespace` or, as the
/// server does by default, one named after the database's log.
async fn replica(
    url: &str,
    redis: &str,
    namespace: Option<&str>,
    catch_up: Duration,
) -> api_http::AppState {
    {
        let store =
            adapters_postgres::PgStore::connect(url, &adapters_postgres::PoolSettings::default())
                .await
                .unwrap();
        let namespace = match namespace {
            Some(namespace) => namespace.to_owned(),
            None => format!(
                "agent_platform:{}",
                ports::EventLog::log_id(&store).await.unwrap().simple()
            ),
        };
        let bus =
            adapters_redis::RedisBus::new(redis, &namespace, Arc::new(store.clone())).unwrap();
        // Redis delivers only to subscriptions made before a publish.
        bus.subscribed().await;
        let settings = app::Settings {
            admin_key: Some(app::hash_key(ADMIN_KEY)),
            ..app::Settings::default()
        };
        let platform = testkit::platform(
            Arc::new(store),
            Arc::new(bus),
            testkit::ManualClock::default(),
            settings,
        );
        api_http::AppState::with_catch_up(platform, None, Duration::from_secs(60), catch_up)
    }
}

#[actix_web::test]
async fn an_event_made_on_one_replica_reaches_a_subscriber_on_another_through_redis() {
    let redis = std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    // Only Redis can bring the event: the hubs never catch up from the log meanwhile.
    let (one, two) = two_replicas(&redis, NEVER).await;
    let mut h = Harness::memory();
    h.state = two;
    let addr = serve(&h);
    let mut ws = open(addr, Some(ADMIN_KEY)).await;
    subscribe(
        &mut ws,
        json!({"type": "subscribe", "subscriptions": ["agent_activity"]}),
    )
    .await;

    let operator = principal(domain::Role::Operator);
    let made = one
        .platform
        .register_agent(&operator, new_agent("remote"))
        .await
        .unwrap();
    let event = next_event(&mut ws).await;
    assert_eq!(event["type"], "agent_registered");
    assert_eq!(event["data"]["agent_id"], made.agent.id.to_string());
}

/// The in-process bus, losing the events of one publish when told to (as a bus that drops a
/// notice, or a hub that falls behind it, does).
#[derive(Default)]
struct LossyBus {
    inner: adapters_memory::MemoryBus,
    lose_next: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl ports::EventBus for LossyBus {
    async fn publish(&self, events: &[domain::Event]) {
        if !self
            .lose_next
            .swap(false, std::sync::atomic::Ordering::SeqCst)
        {
            self.inner.publish(events).await;
        }
    }

    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<domain::Event> {
        self.inner.subscribe()
    }

    async fn status(&self) -> ports::ComponentStatus {
        self.inner.status().await
    }
}

/// The platform on `store` with a [`LossyBus`], served; its hub never catches up from the log on
/// its own, so only the next event can show that one is missing. Registers agent "a" and opens
/// a reader's socket and that agent's, both subscribed to `agent_activity`, each past the
/// registration.
struct OnLossyBus {
    h: Harness,
    bus: Arc<LossyBus>,
    agent: domain::AgentId,
    reader: Socket,
    as_agent: Socket,
}

impl OnLossyBus {
    async fn start<S: ports::Store + 'static>(store: Arc<S>) -> Self {
        let bus = Arc::new(LossyBus::default());
        let settings = app::Settings {
            admin_key: Some(app::hash_key(ADMIN_KEY)),
            ..app::Settings::default()
        };
        let platform = testkit::platform(
            store,
            bus.clone(),
            testkit::ManualClock::default(),
            settings,
        );
        let mut h = Harness::memory();
        h.state = api_http::AppState::with_catch_up(platform, None, Duration::from_secs(60), NEVER);
        let addr = serve(&h);
        let a = h
            .state
            .platform
            .register_agent(&principal(domain::Role::Operator), new_agent("a"))
            .await
            .unwrap();
        let mut reader = open(addr, Some(ADMIN_KEY)).await;
        let mut as_agent = open(addr, Some(&a.agent_key)).await;
        for socket in [&mut reader, &mut as_agent] {
            // From the start of the log, so the registration comes first whenever the hub
            // hears of it (from the replay, or live when the hub is late, skipped then).
            subscribe(
                socket,
                json!({"type": "subscribe", "subscriptions": ["agent_activity"], "since": 0}),
            )
            .await;
            assert_eq!(next_event(socket).await["type"], "agent_registered");
        }
        Self {
            h,
            bus,
            agent: a.agent.id,
            reader,
            as_agent,
        }
    }
}

#[actix_web::test]
async fn an_event_the_bus_lost_reaches_readers_and_its_agent_before_the_next_one() {
    let OnLossyBus {
        h,
        bus,
        agent,
        mut reader,
        mut as_agent,
    } = OnLossyBus::start(Arc::new(adapters_memory::MemoryStore::new())).await;
    let operator = principal(domain::Role::Operator);
    bus.lose_next
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let more_slots = domain::AgentPatch {
        max_concurrent_tasks: Some(7),
        ..Default::default()
    };
    let suspend = domain::AgentPatch {
        status: Some(domain::StatusRequest::Suspended),
        ..Default::default()
    };
    for patch in [more_slots, suspend] {
        h.state
            .platform
            .update_agent(&operator, agent, patch)
            .await
            .unwrap();
    }
    assert!(
        !bus.lose_next.load(std::sync::atomic::Ordering::SeqCst),
        "the bus lost the first change's event"
    );
    for (who, socket) in [("a reader", &mut reader), ("the agent", &mut as_agent)] {
        let lost = next_event(socket).await;
        assert_eq!(
            lost["type"], "agent_updated",
            "{who} got the lost event first"
        );
        let next = next_event(socket).await;
        assert_eq!(next["type"], "agent_status_changed", "{who}: {next}");
        assert_eq!(
            next["seq"],
            lost["seq"].as_i64().unwrap() + 1,
            "{who}: in order"
        );
    }
}

#[actix_web::test]
async fn a_gap_the_log_cannot_fill_closes_sessions_with_where_to_resume() {
    let url = adapters_postgres::testing::fresh_database().await;
    let store =
        adapters_postgres::PgStore::connect(&url, &adapters_postgres::PoolSettings::default())
            .await
            .unwrap();
    let OnLossyBus {
        h,
        bus,
        agent,
        mut reader,
        mut as_agent,
    } = OnLossyBus::start(Arc::new(store)).await;
    let operator = principal(domain::Role::Operator);
    let suspend = domain::AgentPatch {
        status: Some(domain::StatusRequest::Suspended),
        ..Default::default()
    };
    h.state
        .platform
        .update_agent(&operator, agent, suspend)
        .await
        .unwrap();
    let mine = next_event(&mut as_agent).await["seq"].as_i64().unwrap();
    assert_eq!(next_event(&mut reader).await["seq"], mine);
    // An event the agent may not see: it resumes after that one too, not from its own last.
    h.state
        .platform
        .register_agent(&operator, new_agent("b"))
        .await
        .unwrap();
    let heard = next_event(&mut reader).await["seq"].as_i64().unwrap();
    assert!(heard > mine);
    // The database stops answering; then an event arrives with one missing before it, which
    // the log cannot give.
    let database = url.rsplit_once('/').unwrap().1.to_owned();
    let admin = sqlx::PgPool::connect(&adapters_postgres::testing::server_url())
        .await
        .unwrap();
    sqlx::query(&format!(
        "ALTER DATABASE \"{database}\" ALLOW_CONNECTIONS false"
    ))
    .execute(&admin)
    .await
    .unwrap();
    sqlx::query("SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE datname = $1")
        .bind(&database)
        .execute(&admin)
        .await
        .unwrap();
    let at = chrono::DateTime::from_timestamp(1_767_225_600, 0).unwrap();
    let ahead =
        domain::NewEvent::about_agent(domain::EventKind::AgentUpdated, agent, json!({}), at);
    ports::EventBus::publish(&bus.inner, &[domain::Event::stored(heard + 2, ahead)]).await;
    for (who, socket) in [("a reader", &mut reader), ("the agent", &mut as_agent)] {
        // Nothing comes before the close: not the event ahead of the gap.
        let closed = tokio::time::timeout(Duration::from_secs(30), socket.next())
            .await
            .expect("closed once the log could not be read");
        let Some(Ok(Message::Close(Some(closed)))) = closed else {
            panic!("{who}: the session closed, nothing before: {closed:?}");
        };
        assert_eq!(closed.code, CloseCode::Again, "{who}");
        assert_eq!(
            closed.reason.as_str(),
            format!("the event log cannot be read now; reconnect with since={heard}"),
            "{who}: resumes after what it had, skipping nothing"
        );
    }
    sqlx::query(&format!(
        "ALTER DATABASE \"{database}\" ALLOW_CONNECTIONS true"
    ))
    .execute(&admin)
    .await
    .unwrap();
}

#[actix_web::test]
async fn a_deployment_delivers_only_its_own_committed_events_whatever_is_on_its_channel() {
    let redis = std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    // Two deployments (two databases) on one Redis, even configured onto one channel.
    let namespace = format!("test-shared:{}", uuid::Uuid::new_v4().simple());
    let channel = adapters_redis::events_channel(&namespace);
    let first = adapters_postgres::testing::fresh_database().await;
    let second = adapters_postgres::testing::fresh_database().await;
    let one = replica(&first, &redis, Some(&namespace), NEVER).await;
    let mut h = Harness::memory();
    h.state = replica(&second, &redis, Some(&namespace), NEVER).await;
    let addr = serve(&h);
    let mut ws = open(addr, Some(ADMIN_KEY)).await;
    subscribe(
        &mut ws,
        json!({"type": "subscribe", "subscriptions": ["agent_activity", "task_activity"]}),
    )
    .await;

    // Anyone who reaches Redis publishes a made-up event, far ahead of the log...
    let client = deadpool_redis::redis::Client::open(redis.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let forged = json!({"seq": 1_000_000, "type": "task_assigned", "channel": "task_activity",
        "agent_id": null, "task_id": uuid::Uuid::new_v4(), "data": {"forged": true},
        "timestamp": "2026-01-01T00:00:00Z"});
    let _: () = deadpool_redis::redis::cmd("PUBLISH")
        .arg(&channel)
        .arg(forged.to_string())
        .query_async(&mut conn)
        .await
        .unwrap();
    // ...the other deployment registers an agent, and this one registers its own.
    let operator = principal(domain::Role::Operator);
    one.platform
        .register_agent(&operator, new_agent("theirs"))
        .await
        .unwrap();
    h.state
        .platform
        .register_agent(&operator, new_agent("ours"))
        .await
        .unwrap();
    // The first thing the subscriber hears is this deployment's own event, numbered 1.
    let event = next_event(&mut ws).await;
    assert_eq!(event["type"], "agent_registered", "{event}");
    assert_eq!(event["data"]["name"], "ours", "{event}");
    assert_eq!(event["seq"], 1);
}

/// A Redis server of the test's own, on a free port, that the test may stop and start.
struct OwnRedis {
    port: u16,
    child: Option<std::process::Child>,
}

impl OwnRedis {
    fn start(port: u16) -> Self {
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server is installed (it is needed by the test suite anyway)");
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Self {
            port,
            child: Some(child),
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

#[actix_web::test]
async fn events_made_while_redis_is_down_are_delivered_when_it_returns() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut redis = OwnRedis::start(port);
    let redis_url = format!("redis://127.0.0.1:{}", redis.port);
    // Catching up from the log is how events made while Redis was down arrive.
    let (one, two) = two_replicas(&redis_url, api_http::ws::CATCH_UP_EVERY).await;
    let mut h = Harness::memory();
    h.state = two;
    let addr = serve(&h);
    let mut ws = open(addr, Some(ADMIN_KEY)).await;
    subscribe(
        &mut ws,
        json!({"type": "subscribe", "subscriptions": ["agent_activity"]}),
    )
    .await;
    let operator = principal(domain::Role::Operator);
    one.platform
        .register_agent(&operator, new_agent("before"))
        .await
        .unwrap();
    assert_eq!(next_event(&mut ws).await["data"]["name"], "before");

    redis.stop();
    // The API keeps working; the events wait in the log.
    for name in ["during-1", "during-2"] {
        one.platform
            .register_agent(&operator, new_agent(name))
            .await
            .unwrap();
    }
    let _back = OwnRedis::start(port);
    one.platform
        .register_agent(&operator, new_agent("after"))
        .await
        .unwrap();

    let mut names = Vec::new();
    while names.len() < 3 {
        names.push(
            next_event(&mut ws).await["data"]["name"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    assert_eq!(
        names,
        ["during-1", "during-2", "after"],
        "nothing lost, in order, once"
    );
}

/// Tries to open a socket; the HTTP status it is refused with, if it is.
async fn try_open(addr: SocketAddr, credential: Option<&str>) -> Result<Socket, (u16, Value)> {
    let mut request = format!("ws://{addr}/api/v1/ws/test-client")
        .into_client_request()
        .unwrap();
    if let Some(key) = credential {
        request
            .headers_mut()
            .insert("X-API-Key", key.parse().unwrap());
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((socket, _)) => Ok(socket),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let status = response.status().as_u16();
            let retry = response.headers().get("retry-after").cloned();
            let body = response
                .into_body()
                .map(|b| serde_json::from_slice(&b).unwrap())
                .unwrap_or(Value::Null);
            assert!(retry.is_some(), "a refusal says when to retry");
            Err((status, body))
        }
        Err(e) => panic!("unexpected failure {e}"),
    }
}

#[actix_web::test]
async fn websocket_connections_are_capped_per_credential_and_in_total_and_health_still_answers() {
    let mut h = Harness::memory();
    h.state = h.state.clone().with_ws_limits(api_http::ws::WsLimits {
        total: 4,
        per_credential: 2,
    });
    let addr = serve(&h);
    let app = service!(h);
    let (_, agent_key) = register(&app, seed_agent("worker")).await;
    let first = try_open(addr, Some(ADMIN_KEY)).await.unwrap();
    let _second = try_open(addr, Some(ADMIN_KEY)).await.unwrap();
    let refused = try_open(addr, Some(ADMIN_KEY)).await.unwrap_err();
    assert_eq!(refused.0, 429, "{:?}", refused.1);
    assert_eq!(refused.1["status"], 429);
    // Another credential has its own two, up to the total of four.
    let _third = try_open(addr, Some(&agent_key)).await.unwrap();
    let mut anonymous = try_open(addr, None).await.unwrap();
    let full = try_open(addr, Some(&agent_key)).await.unwrap_err();
    assert_eq!(full.0, 503, "{:?}", full.1);
    // At the cap, health checks still answer.
    let client = std::net::TcpStream::connect(addr).unwrap();
    use std::io::{Read, Write};
    let mut client = client;
    client
        .write_all(b"GET /livez HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    client.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // A socket that authenticates by message is held to its credential's cap too.
    say(&mut anonymous, json!({"type": "auth", "token": ADMIN_KEY})).await;
    let closed = close_frame(&mut anonymous).await.unwrap();
    assert_eq!(closed.code, CloseCode::Policy);
    assert!(
        closed.reason.contains("WebSocket connections"),
        "{closed:?}"
    );
    // Closing gives the place back: once the server has released it, a new one opens.
    drop(first);
    let connections = h.state.connections.clone();
    let mut again = None;
    for _ in 0..100 {
        let released = connections.released();
        tokio::pin!(released);
        released.as_mut().enable();
        if let Ok(socket) = try_open(addr, Some(ADMIN_KEY)).await {
            again = Some(socket);
            break;
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), released).await;
    }
    assert!(again.is_some(), "a closed connection frees its place");
}

#[actix_web::test]
async fn a_since_ahead_of_the_log_is_an_error_naming_the_newest_seq() {
    let h = Harness::memory();
    let addr = serve(&h);
    let app = service!(h);
    register(&app, seed_agent("worker")).await;
    let mut ws = open(addr, Some(ADMIN_KEY)).await;
    for since in [1_001, i64::MAX] {
        say(
            &mut ws,
            json!({"type": "subscribe", "subscriptions": ["agent_activity"], "since": since}),
        )
        .await;
        let error = next(&mut ws).await;
        assert_eq!(error["type"], "error", "{error}");
        let detail = error["data"]["detail"].as_str().unwrap();
        assert!(detail.contains("seq 1"), "{detail}");
    }
    // The socket stays open, and a valid subscription then gets every event live.
    subscribe(
        &mut ws,
        json!({"type": "subscribe", "subscriptions": ["agent_activity"], "since": 1}),
    )
    .await;
    register(&app, seed_agent("second")).await;
    let event = next_event(&mut ws).await;
    assert_eq!(event["seq"], 2, "{event}");
    assert_eq!(event["data"]["name"], "second");
}

#[actix_web::test]
async fn invalid_utf8_in_a_text_frame_closes_with_1007() {
    let h = Harness::memory();
    let addr = serve(&h);
    let mut ws = open(addr, Some(ADMIN_KEY)).await;
    // tungstenite checks text it sends, so the bad bytes go out as a raw frame.
    let frame = tokio_tungstenite::tungstenite::protocol::frame::Frame::message(
        vec![b'{', 0xff, 0xfe, b'}'],
        tokio_tungstenite::tungstenite::protocol::frame::coding::OpCode::Data(
            tokio_tungstenite::tungstenite::protocol::frame::coding::Data::Text,
        ),
        true,
    );
    ws.send(Message::Frame(frame)).await.unwrap();
    let closed = close_frame(&mut ws).await.unwrap();
    assert_eq!(closed.code, CloseCode::Invalid);
    assert_eq!(closed.reason.as_str(), "text messages must be valid UTF-8");
}

#[actix_web::test]
async fn a_signed_in_users_socket_closes_when_the_user_is_deleted() {
    let h = Harness::memory();
    let addr = serve(&h);
    let app = service!(h);
    let bob = send(
        &app,
        admin(actix_web::http::Method::POST, "/api/v1/users").set_json(
            json!({"username": "bob", "password": "correct horse battery staple", "role": "viewer"}),
        ),
    )
    .await;
    let bob = bob.ok()["id"].as_str().unwrap().to_owned();
    let login = send(
        &app,
        req(actix_web::http::Method::POST, "/api/v1/auth/login")
            .set_json(json!({"username": "bob", "password": "correct horse battery staple"})),
    )
    .await;
    let token = login.ok()["access_token"].as_str().unwrap().to_owned();
    let mut ws = open(addr, Some(&token)).await;
    subscribe(
        &mut ws,
        json!({"type": "subscribe", "subscriptions": ["agent_activity"]}),
    )
    .await;
    send(
        &app,
        admin(
            actix_web::http::Method::DELETE,
            &format!("/api/v1/users/{bob}"),
        ),
    )
    .await
    .ok();
    closed_as_revoked(&mut ws).await;
}

#[actix_web::test]
async fn sockets_waiting_to_authenticate_are_capped_per_address() {
    let h = Harness::memory();
    let addr = serve(&h);
    let mut waiting = Vec::new();
    for _ in 0..api_http::ws::PENDING_PER_ADDRESS {
        waiting.push(try_open(addr, None).await.unwrap());
    }
    let refused = try_open(addr, None).await.unwrap_err();
    assert_eq!(refused.0, 429, "{:?}", refused.1);
    // Callers with credentials are not held back by them, and one that authenticates frees
    // its address's place.
    let _known = try_open(addr, Some(ADMIN_KEY)).await.unwrap();
    say(&mut waiting[0], json!({"type": "auth", "token": ADMIN_KEY})).await;
    assert_eq!(next(&mut waiting[0]).await["type"], "authenticated");
    let _another = try_open(addr, None).await.unwrap();
}

#[actix_web::test]
async fn a_session_keeps_time_by_the_platforms_clock() {
    let h = Harness::memory();
    // By the platform's clock the token ran out an hour ago, though the wall clock says not.
    h.clock.set(chrono::Utc::now() + chrono::Duration::hours(2));
    let addr = serve(&h);
    let token =
        jwt(json!({"sub": "v", "role": "viewer", "exp": chrono::Utc::now().timestamp() + 3600}));
    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("ws://{addr}/api/v1/ws/clock?token={token}"))
            .await
            .unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(5), close_frame(&mut ws))
        .await
        .expect("closed at once")
        .expect("a close reason");
    assert_eq!(closed.code, CloseCode::Policy);
    assert!(closed.reason.contains("expired"), "{}", closed.reason);
}

#[actix_web::test]
async fn before_authenticating_a_client_is_told_to_authenticate_and_a_bad_auth_closes() {
    let h = Harness::memory();
    let addr = serve(&h);
    let mut ws = open(addr, None).await;
    for message in [
        json!({"type": "dance"}),
        json!([1]),
        json!({"type": "ping"}),
    ] {
        say(&mut ws, message).await;
        let error = next(&mut ws).await;
        assert_eq!(error["type"], "error");
        assert!(
            error["data"]["detail"]
                .as_str()
                .unwrap()
                .starts_with("authenticate first"),
            "{error}"
        );
    }
    ws.send(Message::Text("not json".into())).await.unwrap();
    assert_eq!(
        next(&mut ws).await["data"]["detail"],
        "messages must be JSON objects"
    );
    say(&mut ws, json!({"type": "auth", "token": 5})).await;
    let closed = close_frame(&mut ws).await.unwrap();
    assert_eq!(closed.code, CloseCode::Policy);
    assert_eq!(closed.reason.as_str(), "an auth message needs a token");
}

#[actix_web::test]
async fn an_open_session_ends_when_the_platforms_clock_passes_its_expiry() {
    let h = Harness::memory();
    h.clock.set(chrono::Utc::now());
    let addr = serve(&h);
    let token =
        jwt(json!({"sub": "v", "role": "viewer", "exp": chrono::Utc::now().timestamp() + 3600}));
    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("ws://{addr}/api/v1/ws/later?token={token}"))
            .await
            .unwrap();
    subscribe(
        &mut ws,
        json!({"type": "subscribe", "subscriptions": ["agent_activity"]}),
    )
    .await;
    h.clock.advance(chrono::Duration::hours(2));
    let closed = tokio::time::timeout(Duration::from_secs(15), close_frame(&mut ws))
        .await
        .expect("closed within a check interval")
        .expect("a close reason");
    assert_eq!(closed.code, CloseCode::Policy);
    assert!(closed.reason.contains("expired"), "{}", closed.reason);
}

#[actix_web::test]
async fn a_subscriber_follows_one_workflow_execution_by_its_id() {
    let h = Harness::memory();
    let addr = serve(&h);
    let operator = principal(domain::Role::Operator);
    let platform = &h.state.platform;
    let steps = vec![domain::workflow::StepInput {
        name: "only".into(),
        ..Default::default()
    }];
    let workflow = platform
        .create_workflow(
            &operator,
            domain::workflow::WorkflowInput {
                name: "w".into(),
                steps,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let run = || platform.execute_workflow(&operator, workflow.id, Default::default());
    let (other, mine) = (run().await.unwrap(), run().await.unwrap());

    let mut socket = open(addr, Some(ADMIN_KEY)).await;
    subscribe(
        &mut socket,
        json!({"type": "subscribe", "subscriptions": ["workflow_activity", "task_activity"],
               "filters": {"execution_id": mine.id.to_string()}, "since": 0}),
    )
    .await;
    platform
        .cancel_execution(&operator, workflow.id, other.id)
        .await
        .unwrap();
    platform
        .cancel_execution(&operator, workflow.id, mine.id)
        .await
        .unwrap();
    let mut seen = Vec::new();
    while seen.last().map(String::as_str) != Some("step_failed") {
        let event = next_event(&mut socket).await;
        assert_eq!(
            event["data"]["execution_id"],
            mine.id.to_string(),
            "{event}"
        );
        seen.push(event["type"].as_str().unwrap().to_owned());
    }
    assert_eq!(
        seen,
        [
            "execution_started",
            "task_submitted",
            "step_started",
            "execution_cancelled",
            "task_cancelled",
            "step_failed"
        ]
    );
}
