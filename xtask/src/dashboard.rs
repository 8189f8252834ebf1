//! `cargo xtask dashboard-tests`: the web dashboard driven in headless Chromium against the
//! real server (the debug build, on the embedded store), as an operator and as a viewer would
//! use it. Every wait is for the page to show something (`Browser::until`), never for time.
//! Screenshots of every page are written to `target/dashboard-screenshots/`.

use std::cell::RefCell;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_json::{json, Value};

use crate::browser::{request, Browser, Proxy};
use crate::suite::{free_port, Server, ADMIN_KEY};

/// What the browser logs while the server cannot be reached: refused, reset, unconnected or
/// empty connections, and WebSocket handshakes that got no answer. (A handshake the server refused
/// with a status is not among them.)
const OUTAGE: &[&str] = &[
    "net::ERR_CONNECTION_REFUSED",
    "net::ERR_CONNECTION_RESET",
    "net::ERR_CONNECTION_CLOSED",
    "net::ERR_SOCKET_NOT_CONNECTED",
    "net::ERR_EMPTY_RESPONSE",
    "closed before receiving a handshake response",
];
const JWT_SECRET: &str = "dashboard-tests-jwt-secret-0123456789abcdef";
const PASSWORD: &str = "correct horse battery staple";

/// One scenario, run in the browser session the ones before it left.
type Step = fn(&Run) -> anyhow::Result<()>;

pub fn run() -> anyhow::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("xtask lives in the workspace")?
        .to_path_buf();
    let binary = build(&root)?;
    let shots = root.join("target/dashboard-screenshots");
    std::fs::create_dir_all(&shots)?;

    let (mut command, port) = Server::command(&binary, None)?;
    command
        .env("JWT_SECRET", JWT_SECRET)
        // The counters reach the page every second, so the charts move while the tests run.
        .env("SYSTEM_METRICS_INTERVAL_SECS", "1");
    let server = Server::spawn(command, port).context("the server did not start")?;
    // The browser reaches the server through a proxy the tests can cut; the tests' own calls
    // go straight to it.
    let proxy = Proxy::start(server.port)?;
    let browser = Browser::start(free_port()?, 1280, 900)?;
    let t = Run {
        api: Api { port: server.port },
        browser,
        base: format!("http://127.0.0.1:{}/dashboard", proxy.port),
        shots,
        proxy,
        server: RefCell::new(Some(server)),
        binary,
    };
    let steps: [(&str, Step); 12] = [
        ("signing in, and being refused", signing_in),
        ("an agent registers and a task completes, live", live_task),
        ("a conflict is resolved, another dismissed", conflicts),
        ("operators' actions on tasks and agents", actions),
        ("a workflow runs step by step", workflows),
        ("resources and the overview", resources_and_overview),
        ("the WebSocket drops and resumes with since", reconnecting),
        ("a viewer sees no actions", viewer),
        ("an expired credential signs the user out", expiry),
        ("a long-lived credential stays signed in", long_lived),
        ("10,000 tasks waiting", ten_thousand),
        ("the server restarts with an empty store", restart),
    ];
    for (name, step) in steps {
        eprintln!("dashboard: {name}");
        if let Err(e) = step(&t) {
            // What the page showed when it failed, for whoever reads the failure.
            let _ = t.shot("failed");
            return Err(e.context(format!("dashboard test failed: {name} (the page as it was: target/dashboard-screenshots/failed.png)")));
        }
        t.console_errors(&[]).with_context(|| name.to_string())?;
    }
    eprintln!(
        "dashboard tests passed; screenshots in {}",
        t.shots.display()
    );
    Ok(())
}

/// Builds the server's debug binary; returns its path.
fn build(root: &Path) -> anyhow::Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = std::process::Command::new(cargo)
        .args(["build", "-p", "server"])
        .status()
        .context("cannot run cargo")?;
    anyhow::ensure!(status.success(), "building the server failed");
    Ok(root.join("target/debug/agent-platform"))
}

/// The server's API, called as the tests' own client.
struct Api {
    port: u16,
}

impl Api {
    /// A call with `credential`; fails unless it answers 200.
    fn call(
        &self,
        credential: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let auth = format!("Bearer {credential}");
        let (status, answer) = request(
            self.port,
            method,
            &format!("/api/v1{path}"),
            &[("Authorization", &auth)],
            body.as_ref(),
        )?;
        anyhow::ensure!(status == 200, "{method} {path}: {status} {answer}");
        Ok(answer)
    }

    fn admin(&self, method: &str, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        self.call(ADMIN_KEY, method, path, body)
    }

    fn register(&self, name: &str, capabilities: &[&str]) -> anyhow::Result<(String, String)> {
        let agent = self.admin(
            "POST",
            "/agents",
            Some(json!({"name": name, "capabilities": capabilities, "max_concurrent_tasks": 4})),
        )?;
        Ok((id(&agent, "id")?, id(&agent, "agent_key")?))
    }

    fn submit(&self, title: &str, capabilities: &[&str]) -> anyhow::Result<String> {
        let task = self.admin(
            "POST",
            "/tasks",
            Some(json!({"title": title, "priority": 5, "required_capabilities": capabilities})),
        )?;
        id(&task, "id")
    }

    /// As agent `agent` (with its `key`): waits for an assigned task (a long poll), starts it
    /// and completes it. Returns the task's ID.
    fn work_one(&self, agent: &str, key: &str) -> anyhow::Result<String> {
        let tasks = self.call(
            key,
            "GET",
            &format!("/agents/{agent}/tasks?status_filter=assigned&wait_seconds=20"),
            None,
        )?;
        let task = tasks
            .as_array()
            .and_then(|t| t.first())
            .context("no task was assigned within 20 s")?;
        let task_id = id(task, "id")?;
        let attempt = task["attempt"].clone();
        self.call(
            key,
            "POST",
            &format!("/tasks/{task_id}/start"),
            Some(json!({"attempt": attempt})),
        )?;
        self.call(
            key,
            "POST",
            &format!("/tasks/{task_id}/complete"),
            Some(json!({"attempt": attempt, "result": {"rows": 42}})),
        )?;
        Ok(task_id)
    }
}

fn id(value: &Value, field: &str) -> anyhow::Result<String> {
    value[field]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("no {field} in {value}"))
}

struct Run {
    api: Api,
    browser: Browser,
    /// The dashboard's address, through the proxy.
    base: String,
    shots: PathBuf,
    proxy: Proxy,
    server: RefCell<Option<Server>>,
    binary: PathBuf,
}

impl Run {
    /// Shows `fragment` (such as `#/tasks`) and waits for the page's heading.
    fn open(&self, fragment: &str) -> anyhow::Result<()> {
        // The same address again is no change to the browser: the page is asked to draw anew.
        self.browser.run(
            "if (location.hash === arguments[0]) window.dispatchEvent(new HashChangeEvent('hashchange'));
             else location.hash = arguments[0];",
            json!([fragment]),
        )?;
        self.browser.until(
            &format!("{fragment} to load"),
            "document.querySelector('main').dataset.route === arg && document.querySelector('main h1')
             && !document.querySelector('main[aria-busy]')",
            json!(fragment),
        )?;
        let failed = self.browser.run(
            "return document.querySelector('main').dataset.failed || null;",
            json!([]),
        )?;
        anyhow::ensure!(failed.is_null(), "{fragment} could not be loaded: {failed}");
        Ok(())
    }

    fn shot(&self, name: &str) -> anyhow::Result<()> {
        self.browser
            .screenshot(&self.shots.join(format!("{name}.png")))
    }

    fn sign_in_with_key(&self, key: &str) -> anyhow::Result<()> {
        self.browser.fill("#key-form input[name=key]", key)?;
        self.browser.click("#key-form button")
    }

    fn signed_in(&self) -> anyhow::Result<()> {
        self.browser
            .until_text("#live", "live")
            .context("the page did not go live after signing in")
    }

    fn sign_out(&self) -> anyhow::Result<()> {
        self.browser.click("#signout")?;
        self.browser.until(
            "the sign-in page",
            "document.querySelector('#key-form')",
            Value::Null,
        )
    }

    /// Fails on any error the console logged since the last look, but those containing one of
    /// `expected`: the browser logs each failed request, and a step that provokes some on
    /// purpose (a wrong key is a `401`) names them.
    fn console_errors(&self, expected: &[&str]) -> anyhow::Result<()> {
        let errors: Vec<String> = self
            .browser
            .console()?
            .into_iter()
            .filter(|(level, message)| {
                level == "SEVERE" && !expected.iter().any(|e| message.contains(e))
            })
            .map(|(_, message)| message)
            .collect();
        anyhow::ensure!(errors.is_empty(), "the console has errors: {errors:#?}");
        Ok(())
    }
}

fn signing_in(t: &Run) -> anyhow::Result<()> {
    let b = &t.browser;
    b.go(&t.base)?;
    b.until(
        "the sign-in page",
        "document.querySelector('#key-form')",
        Value::Null,
    )?;
    t.shot("sign-in")?;

    // A wrong key says so, and signs nobody in.
    t.sign_in_with_key("mapk_not-a-key-at-all")?;
    b.until_text("#signin-error", "Not signed in")?;
    anyhow::ensure!(
        b.count("#top[hidden]")? == 1,
        "a wrong key showed the pages"
    );

    // A wrong password says so; the right one signs in.
    t.api.admin(
        "POST",
        "/users",
        Some(json!({"username": "olivia", "password": PASSWORD, "role": "operator"})),
    )?;
    b.fill("#user-form input[name=username]", "olivia")?;
    b.fill("#user-form input[name=password]", "not the password")?;
    b.click("#user-form button")?;
    b.until_text("#signin-error", "Not signed in")?;
    t.console_errors(&["status of 401"])?;
    b.fill("#user-form input[name=password]", PASSWORD)?;
    b.click("#user-form button")?;
    t.signed_in()?;
    b.until_text("#who", "user:olivia · operator")?;
    t.sign_out()?;

    // An agent's own key is not a dashboard credential.
    let (_, agent_key) = t.api.register("lonely-agent", &["nothing"])?;
    t.sign_in_with_key(&agent_key)?;
    b.until_text("#signin-error", "belongs to an agent")?;

    t.sign_in_with_key(ADMIN_KEY)?;
    t.signed_in()?;
    b.until_text("#who", "admin")?;
    Ok(())
}

fn live_task(t: &Run) -> anyhow::Result<()> {
    let b = &t.browser;
    // The agents page shows an agent the moment it registers.
    t.open("#/agents")?;
    let (gpu, _) = t.api.register("gpu-worker-7", &["gpu"])?;
    b.until(
        "the new agent's row",
        "document.querySelector(`#agents tr[data-id='${arg}']`)",
        json!(gpu),
    )?;
    t.shot("agents")?;

    // A task nobody can take waits, and says why.
    let task = t.api.submit("render the quarterly report", &["render"])?;
    t.open(&format!("#/tasks/{task}"))?;
    b.until_text("#task-status", "pending")?;
    b.until_text("#pending-reason", "render")?;
    t.shot("task-pending")?;

    // An agent that can take it registers: the page follows it to assigned, then completed.
    let (render, render_key) = t.api.register("render-worker-1", &["render"])?;
    b.until_text("#task-status", "assigned")?;
    let done = t.api.work_one(&render, &render_key)?;
    anyhow::ensure!(done == task, "the agent was given another task");
    b.until_text("#task-status", "completed")?;
    b.until_text("#timeline", "task completed")?;
    t.shot("task-completed")?;

    // The agent's page shows its task and its figures.
    t.open(&format!("#/agents/{render}"))?;
    b.until(
        "the agent's completed task",
        "document.querySelector(`tr[data-id='${arg}']`)",
        json!(task),
    )?;
    t.shot("agent")?;

    // Drain from the page: the agent's status changes in the store.
    b.click("button[data-action=drain]")?;
    b.until_text("main h1", "draining")?;
    let agent = t.api.admin("GET", &format!("/agents/{render}"), None)?;
    anyhow::ensure!(
        agent["status"] == "draining",
        "drain did not reach the store: {agent}"
    );

    // The task list pages through the server.
    for n in 0..30 {
        t.api
            .submit(&format!("backlog item {n}"), &["nobody-has-this"])?;
    }
    t.open("#/tasks?status_filter=pending")?;
    b.until(
        "a full first page",
        "document.querySelectorAll('#tasks tbody tr').length === 25",
        Value::Null,
    )?;
    b.click("#tasks .pager button:last-child")?;
    b.until_text("#tasks .pager", "page 2")?;
    b.until(
        "the second page's rows",
        "document.querySelectorAll('#tasks tbody tr').length === 5",
        Value::Null,
    )?;
    t.shot("tasks")?;
    Ok(())
}

fn ten_thousand(t: &Run) -> anyhow::Result<()> {
    let b = &t.browser;
    // With 10,000 more waiting (for the drained agent's capability), the list still pages
    // through the server and the overview counts them.
    for _ in 0..10 {
        let batch: Vec<Value> = (0..1000)
            .map(
                |n| json!({"title": format!("bulk item {n}"), "required_capabilities": ["render"]}),
            )
            .collect();
        t.api
            .admin("POST", "/tasks/batch", Some(json!({ "tasks": batch })))?;
    }
    t.open("#/tasks?status_filter=pending")?;
    b.until(
        "a full first page of more than 10,000",
        "document.querySelectorAll('#tasks tbody tr').length === 25",
        Value::Null,
    )?;
    b.click("#tasks .pager button:last-child")?;
    b.until_text("#tasks .pager", "page 2")?;
    // A task an idle agent can take, queued behind all of them, is still assigned.
    t.api.register("late-shift", &["late"])?;
    let behind = t.api.admin(
        "POST",
        "/tasks",
        Some(json!({"title": "behind ten thousand", "priority": 1, "required_capabilities": ["late"]})),
    )?;
    t.open(&format!("#/tasks/{}", id(&behind, "id")?))?;
    b.until_text("#task-status", "assigned")?;
    t.open("#/")?;
    let pending = t.api.admin("GET", "/dashboard/summary", None)?["tasks"]["pending"].clone();
    b.until_text("#summary", &format!("Tasks pending{pending}"))?;
    Ok(())
}

fn conflicts(t: &Run) -> anyhow::Result<()> {
    let b = &t.browser;
    t.open("#/conflicts")?;
    let (agent, _) = t.api.register("planner-2", &["plan"])?;
    let task = t.api.submit("plan the migration", &["plan"])?;
    let conflict = t.api.admin(
        "POST",
        "/conflicts",
        Some(
            json!({"agent_id": agent, "task_id": task, "conflict_type": "goal_conflict",
                    "description": "two plans for one migration", "severity": "high"}),
        ),
    )?;
    let conflict = id(&conflict, "id")?;
    b.until(
        "the reported conflict's row",
        "document.querySelector(`#conflicts tr[data-id='${arg}']`)",
        json!(conflict),
    )?;
    t.shot("conflicts")?;
    t.open(&format!("#/conflicts/{conflict}"))?;
    // The agents and tasks involved, by name.
    b.until_text("main .panel", "planner-2")?;
    b.until_text("main .panel", "plan the migration")?;

    // A manual resolution without its text is refused: the server's reason is shown and the
    // conflict stays open.
    b.click("#resolve-form button")?;
    b.until_text("#toast", "needs a resolution text")?;
    b.until_text("#conflict-status", "open")?;
    t.console_errors(&["status of 422"])?;

    b.fill(
        "#resolve-form input[name=resolution]",
        "keep the newer plan",
    )?;
    b.click("#resolve-form button")?;
    b.until_text("#conflict-status", "resolved")?;
    t.shot("conflict-resolved")?;
    let stored = t
        .api
        .admin("GET", &format!("/conflicts/{conflict}"), None)?;
    anyhow::ensure!(
        stored["status"] == "resolved",
        "not resolved in the store: {stored}"
    );

    // Another is dismissed with a reason; "any" status then lists both (each under its type:
    // the conflicts the platform detects meanwhile may fill the first page of all of them).
    let other = t.api.admin(
        "POST",
        "/conflicts",
        Some(
            json!({"agent_id": agent, "task_id": task, "conflict_type": "priority_dispute",
                    "description": "a duplicate report", "severity": "low"}),
        ),
    )?;
    let other = id(&other, "id")?;
    t.open(&format!("#/conflicts/{other}"))?;
    b.fill("#dismiss-form input[name=reason]", "reported twice")?;
    b.click("#dismiss-form button")?;
    b.until_text("#conflict-status", "dismissed")?;
    for (shown, kind) in [(&conflict, "goal_conflict"), (&other, "priority_dispute")] {
        t.open(&format!("#/conflicts?status_filter=&type_filter={kind}"))?;
        b.until(
            "a closed conflict listed under any status",
            "document.querySelector(`#conflicts tr[data-id='${arg}']`)",
            json!(shown),
        )?;
    }
    Ok(())
}

fn actions(t: &Run) -> anyhow::Result<()> {
    let b = &t.browser;
    // A waiting task is cancelled from its page, then queued again.
    let task = t
        .api
        .submit("cancel me, then retry me", &["nobody-has-this"])?;
    t.open(&format!("#/tasks/{task}"))?;
    b.click("button[data-action=cancel]")?;
    b.until_text("#task-status", "cancelled")?;
    b.click("button[data-action=retry]")?;
    b.until_text("#task-status", "pending")?;
    let stored = t.api.admin("GET", &format!("/tasks/{task}"), None)?;
    anyhow::ensure!(
        stored["status"] == "pending",
        "retry did not reach the store: {stored}"
    );

    // An agent is suspended, then resumed.
    let (agent, _) = t.api.register("suspend-me", &["x"])?;
    t.open(&format!("#/agents/{agent}"))?;
    b.click("button[data-action=suspend]")?;
    b.until_text("main h1", "suspended")?;
    b.click("button[data-action=resume]")?;
    b.until_text("main h1", "idle")?;
    // A narrow window shows the agent's page without sideways scrolling.
    b.resize(420, 900)?;
    b.until(
        "the agent's page to fit a narrow window",
        "document.documentElement.scrollWidth <= window.innerWidth + 1",
        Value::Null,
    )?;
    t.shot("agent-narrow")?;
    b.resize(1280, 900)?;
    Ok(())
}

fn workflows(t: &Run) -> anyhow::Result<()> {
    let b = &t.browser;
    let (agent, key) = t.api.register("etl-worker", &["etl"])?;
    let step = |name: &str, after: &[&str]| {
        json!({"name": name, "type": "task", "parameters": {}, "depends_on": after,
               "required_capabilities": ["etl"]})
    };
    let workflow = t.api.admin(
        "POST",
        "/workflows",
        Some(json!({"name": "nightly-etl", "description": "extract, check and transform, load",
                    "steps": [step("extract", &[]), step("check", &["extract"]),
                              step("transform", &["extract"]), step("load", &["check", "transform"])]})),
    )?;
    let workflow = id(&workflow, "id")?;
    t.open("#/workflows")?;
    b.click(&format!("#workflows tr[data-id='{workflow}'] a"))?;
    b.until(
        "the steps' graph",
        "document.querySelectorAll('svg.dag g.step').length === 4",
        Value::Null,
    )?;
    t.shot("workflow")?;

    b.click("#execute-form button")?;
    b.until_text("#execution-status", "running")?;
    // The agent does the four steps' tasks; the page colours each step as it ends.
    for _ in 0..4 {
        t.api.work_one(&agent, &key)?;
    }
    for name in ["extract", "check", "transform", "load"] {
        b.until(
            &format!("step {name} completed"),
            "document.querySelector(`svg.dag g[data-step='${arg}'][data-status=completed]`)",
            json!(name),
        )?;
    }
    b.until_text("#execution-status", "completed")?;
    t.shot("execution")?;

    // A run whose first step fails for good fails; it is run again from that step.
    t.open(&format!("#/workflows/{workflow}"))?;
    b.click("#execute-form button")?;
    b.until_text("#execution-status", "running")?;
    let tasks = t.api.call(
        &key,
        "GET",
        &format!("/agents/{agent}/tasks?status_filter=assigned&wait_seconds=20"),
        None,
    )?;
    let first = &tasks[0];
    let first_id = id(first, "id")?;
    t.api.call(
        &key,
        "POST",
        &format!("/tasks/{first_id}/fail"),
        Some(
            json!({"attempt": first["attempt"], "error": "source unreachable", "retryable": false}),
        ),
    )?;
    b.until_text("#execution-status", "failed")?;
    b.until_text("main table", "source unreachable")?;
    t.shot("execution-failed")?;
    // Offered from the step that failed.
    anyhow::ensure!(
        b.count("select[name=step] option[value=extract]:checked")? == 1,
        "the rerun is not offered from the failed step"
    );
    b.click("button[data-action=rerun]")?;
    b.until_text("#execution-status", "running")?;
    for _ in 0..4 {
        t.api.work_one(&agent, &key)?;
    }
    b.until_text("#execution-status", "completed")?;

    // A run is cancelled from its page.
    t.open(&format!("#/workflows/{workflow}"))?;
    b.click("#execute-form button")?;
    b.until_text("#execution-status", "running")?;
    b.click("button[data-action=cancel]")?;
    b.until_text("#execution-status", "cancelled")?;
    Ok(())
}

fn resources_and_overview(t: &Run) -> anyhow::Result<()> {
    let b = &t.browser;
    let pool = t.api.admin(
        "POST",
        "/resources",
        Some(json!({"name": "gpu_cluster_01", "type": "gpu", "capacity": {"gpus": 8, "memory": "64Gi"}})),
    )?;
    let pool = id(&pool, "id")?;
    let (agent, key) = t.api.register("trainer", &["train"])?;
    t.api.admin(
        "POST",
        "/tasks",
        Some(
            json!({"title": "train the ranker", "required_capabilities": ["train"],
                    "resource_claims": [{"resource_id": "gpu_cluster_01", "amount": {"gpus": 6}}]}),
        ),
    )?;
    t.open("#/resources")?;
    b.until_text(&format!("section[data-id='{pool}']"), "6 of 8 allocated")?;
    b.click(&format!("section[data-id='{pool}'] button"))?;
    b.until_text(&format!("section[data-id='{pool}'] table"), "gpus: 6")?;
    t.shot("resources")?;
    t.api.work_one(&agent, &key)?;
    b.until_text(&format!("section[data-id='{pool}']"), "0 of 8 allocated")?;

    t.open("#/")?;
    let summary = t.api.admin("GET", "/dashboard/summary", None)?;
    b.until_text(
        "#summary",
        &format!("completed: {}", summary["tasks"]["completed"]),
    )?;
    // The feed shows what happens as it happens. (Not necessarily first: the registration
    // wakes a pass whose events, a conflict it detects for one, may follow it at once.)
    t.api.register("late-arrival", &["anything"])?;
    b.until_text("#feed", "late-arrival")?;
    b.until(
        "the charts",
        "document.querySelectorAll('.uplot').length === 3",
        Value::Null,
    )?;
    t.shot("overview")?;
    // A narrow window still shows the page, and its navigation, without sideways scrolling.
    b.resize(420, 900)?;
    b.until(
        "the page to fit a narrow window",
        "document.documentElement.scrollWidth <= window.innerWidth + 1",
        Value::Null,
    )?;
    t.shot("overview-narrow")?;
    b.resize(1280, 900)?;
    Ok(())
}

fn reconnecting(t: &Run) -> anyhow::Result<()> {
    let b = &t.browser;
    t.open("#/")?;
    b.until_text("#live", "live")?;
    t.proxy.cut();
    b.until_text("#live", "reconnecting")?;
    t.shot("reconnecting")?;
    // What happens while the page is away reaches it after it reconnects, from `since`: the
    // overview does not read the activity again, so only the replay can bring it.
    t.api
        .submit("submitted while the page was away", &["nobody-has-this"])?;
    t.proxy.mend();
    b.until_text("#live", "live")?;
    b.until_text("#feed", "submitted while the page was away")?;
    // The browser logged the connections refused while the proxy was cut; only those.
    t.console_errors(OUTAGE)?;
    Ok(())
}

fn viewer(t: &Run) -> anyhow::Result<()> {
    let b = &t.browser;
    let key = t.api.admin(
        "POST",
        "/api-keys",
        Some(json!({"name": "wall-screen", "role": "viewer"})),
    )?;
    let key = id(&key, "api_key")?;
    let (agent, _) = t.api.register("watched-agent", &["watch"])?;
    let task = t.api.submit("watch this", &["watch"])?;
    let conflict = t.api.admin(
        "POST",
        "/conflicts",
        Some(
            json!({"agent_id": agent, "task_id": task, "conflict_type": "other",
                    "description": "for the viewer", "severity": "low"}),
        ),
    )?;
    let conflict = id(&conflict, "id")?;
    let workflows = t.api.admin("GET", "/workflows", None)?;
    let workflow = id(&workflows[0], "id")?;
    let executions = t
        .api
        .admin("GET", &format!("/workflows/{workflow}/executions"), None)?;
    let execution = id(&executions[0], "execution_id")?;
    t.sign_out()?;
    t.sign_in_with_key(&key)?;
    t.signed_in()?;
    b.until_text("#who", "viewer")?;
    for page in [
        format!("#/agents/{agent}"),
        format!("#/tasks/{task}"),
        format!("#/conflicts/{conflict}"),
        format!("#/workflows/{workflow}"),
        format!("#/workflows/{workflow}/executions/{execution}"),
    ] {
        t.open(&page)?;
        let actions = b.count("[data-action], #resolve-form, #dismiss-form, #execute-form")?;
        anyhow::ensure!(
            actions == 0,
            "a viewer is offered {actions} actions on {page}"
        );
    }
    t.shot("viewer-task")?;
    // And the server refuses a viewer's action whatever the page offers.
    let (status, _) = request(
        t.api.port,
        "POST",
        &format!("/api/v1/tasks/{task}/cancel"),
        &[("Authorization", &format!("Bearer {key}"))],
        Some(&json!({})),
    )?;
    anyhow::ensure!(status == 403, "a viewer's cancel got {status}");
    Ok(())
}

fn expiry(t: &Run) -> anyhow::Result<()> {
    let b = &t.browser;
    t.sign_out()?;
    // A key that expires in a few seconds: the page signs itself out when it does.
    let expires = chrono::Utc::now() + chrono::Duration::seconds(4);
    let key = t.api.admin(
        "POST",
        "/api-keys",
        Some(json!({"name": "short-lived", "role": "operator", "expires_at": expires})),
    )?;
    t.sign_in_with_key(&id(&key, "api_key")?)?;
    t.signed_in()?;
    b.until_text("#signin-error", "expired")?;
    t.shot("expired")?;
    // A stored token that is no longer valid sends a reloaded page to sign in too.
    b.run(
        "sessionStorage.setItem('agent-platform.session', JSON.stringify({token: arguments[0]}));",
        json!(["mapk_revoked-or-never-valid"]),
    )?;
    b.go(&t.base)?;
    b.until_text("#signin-error", "Sign in again")?;
    t.console_errors(&["status of 401"])?;
    Ok(())
}

fn long_lived(t: &Run) -> anyhow::Result<()> {
    let b = &t.browser;
    // Expiring in 30 days: further than a browser timer can wait in one go (2^31 ms, about 24.8
    // days); a timer set for it would fire at once.
    let expires = chrono::Utc::now() + chrono::Duration::days(30);
    let key = t.api.admin(
        "POST",
        "/api-keys",
        Some(json!({"name": "long-lived", "role": "operator", "expires_at": expires})),
    )?;
    t.sign_in_with_key(&id(&key, "api_key")?)?;
    t.signed_in()?;
    t.open("#/")?;
    b.until_text("#summary", "Agents")?;
    // Still signed in once something has happened since: the page shows it live.
    t.api.register("after-a-long-sign-in", &["x"])?;
    b.until_text("#feed li:first-child", "after-a-long-sign-in")?;
    anyhow::ensure!(b.count("#key-form")? == 0, "the page signed out");
    Ok(())
}

fn restart(t: &Run) -> anyhow::Result<()> {
    let b = &t.browser;
    t.sign_out()?;
    t.sign_in_with_key(ADMIN_KEY)?;
    t.signed_in()?;
    t.open("#/")?;
    // The embedded store begins again, its events numbered from the start: the page, which
    // resumes after a later number, must start over rather than wait for it.
    let port = t.api.port;
    drop(t.server.borrow_mut().take());
    b.until_text("#live", "reconnecting")?;
    let (mut command, _) = Server::command(&t.binary, None)?;
    command
        .env("PORT", port.to_string())
        .env("JWT_SECRET", JWT_SECRET)
        .env("SYSTEM_METRICS_INTERVAL_SECS", "1");
    *t.server.borrow_mut() =
        Some(Server::spawn(command, port).context("the server did not start again")?);
    b.until_text("#live", "live")?;
    t.api.register("after-the-restart", &["x"])?;
    b.until_text("#feed li:first-child", "after-the-restart")?;
    t.console_errors(OUTAGE)?;
    Ok(())
}
