//! The deployment files against the binary they deploy, without a container engine: every
//! Kubernetes manifest validates against the Kubernetes schemas (`kubernetes-validate`), the
//! compose file parses and wires what it promises, and the image's entry point, port, health
//! check and environment, and the manifests' ports, probes and settings, are what the binary
//! reads and serves: the binary is run with the manifests' own settings and probed as they
//! would probe it.

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

const BINARY: &str = env!("CARGO_BIN_EXE_agent-platform");

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The documents of a YAML file, as JSON (read by PyYAML, which `kubernetes-validate` brings).
fn yaml(path: &str) -> Vec<Value> {
    let output = Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))",
        ])
        .arg(root().join(path))
        .output()
        .unwrap_or_else(|e| panic!("python3 is needed to read YAML ({e}); install python3"));
    assert!(
        output.status.success(),
        "{path} does not parse as YAML (or PyYAML is missing: `pip install kubernetes-validate` \
         brings it): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

fn manifest(name: &str) -> Value {
    yaml(&format!("deploy/kubernetes/{name}")).remove(0)
}

fn manifests() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(root().join("deploy/kubernetes"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    names.sort();
    names
}

#[test]
fn every_kubernetes_manifest_validates_against_the_kubernetes_schemas() {
    let names = manifests();
    for wanted in [
        "namespace.yaml",
        "configmap.yaml",
        "secret.example.yaml",
        "deployment.yaml",
        "service.yaml",
        "hpa.yaml",
        "poddisruptionbudget.yaml",
        "ingress.yaml",
        "migration-job.yaml",
    ] {
        assert!(
            names.iter().any(|n| n == wanted),
            "deploy/kubernetes/{wanted} is missing"
        );
    }
    for name in names {
        let output = Command::new("kubernetes-validate")
            .arg("--strict")
            .arg(root().join("deploy/kubernetes").join(&name))
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "kubernetes-validate is not installed ({e}): `pip install kubernetes-validate`"
                )
            });
        assert!(
            output.status.success(),
            "{name} does not validate: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// The environment a container of `pod` (a pod template's spec) gets from its own `env`.
fn env_of(container: &Value) -> Vec<(String, String)> {
    container["env"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            let value = e["value"].as_str().unwrap_or_default().to_owned();
            (e["name"].as_str().unwrap().to_owned(), value)
        })
        .collect()
}

/// The settings the README documents: the names in its configuration table (a unit test of
/// the binary holds that table to exactly the settings its configuration reads).
fn documented() -> BTreeSet<String> {
    read("README.md")
        .lines()
        .skip_while(|line| *line != "## Configuration")
        .skip(1)
        .take_while(|line| !line.starts_with("## "))
        .filter_map(|line| line.strip_prefix("| `"))
        .filter_map(|rest| rest.split('`').next())
        .filter(|name| name.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_compose_stack_migrates_once_and_serves_two_replicas_behind_a_proxy() {
    let compose = yaml("deploy/docker-compose.yml").remove(0);
    let services = &compose["services"];
    for name in [
        "postgres",
        "redis",
        "migrate",
        "api-1",
        "api-2",
        "proxy",
        "prometheus",
        "grafana",
    ] {
        assert!(services[name].is_object(), "the service {name} is missing");
    }
    assert_eq!(services["migrate"]["environment"]["MIGRATIONS"], "only");
    for api in ["api-1", "api-2"] {
        let service = &services[api];
        assert_eq!(service["environment"]["MIGRATIONS"], "skip", "{api}");
        assert_eq!(
            service["depends_on"]["migrate"]["condition"], "service_completed_successfully",
            "{api} starts once the migrations are applied"
        );
        assert_eq!(service["build"]["dockerfile"], "deploy/Dockerfile");
        assert_eq!(
            service["environment"]["TRUSTED_PROXIES"],
            services["proxy"]["networks"]["default"]["ipv4_address"],
            "{api} trusts the proxy's fixed address, and no other"
        );
    }
    let documented = documented();
    for service in ["migrate", "api-1"] {
        for name in services[service]["environment"].as_object().unwrap().keys() {
            assert!(
                documented.contains(name),
                "{service} sets {name}, which the README does not document"
            );
        }
    }
    // The proxy passes WebSocket upgrades to both replicas on the port they listen on.
    let conf = read("deploy/proxy/nginx.conf");
    for line in [
        "server api-1:8000",
        "server api-2:8000",
        "proxy_set_header Upgrade $http_upgrade;",
        "proxy_set_header Connection $connection_upgrade;",
        "proxy_http_version 1.1;",
        "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
    ] {
        assert!(conf.contains(line), "nginx.conf lacks `{line}`");
    }
    assert_eq!(services["proxy"]["ports"][0], "8000:8000");
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The status `GET path` answers on `port`.
fn status(port: u16, path: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    answer.get(9..12)?.parse().ok()
}

#[test]
fn the_image_and_the_manifests_agree_with_the_binary() {
    // The image: the binary as entry point, as a numbered user that is not root, its port,
    // and its health check being the binary's own probe.
    let dockerfile = read("deploy/Dockerfile");
    assert!(dockerfile.contains(r#"ENTRYPOINT ["/usr/local/bin/agent-platform"]"#));
    let user = dockerfile
        .lines()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("the image names its user");
    let uid: u32 = user
        .split(':')
        .next()
        .unwrap()
        .trim()
        .parse()
        .expect("a numeric user");
    assert_ne!(uid, 0, "the image does not run as root");
    let exposed: u16 = dockerfile
        .lines()
        .find_map(|l| l.strip_prefix("EXPOSE "))
        .expect("the image exposes its port")
        .trim()
        .parse()
        .unwrap();
    let healthcheck = dockerfile
        .lines()
        .skip_while(|l| !l.starts_with("HEALTHCHECK"))
        .nth(1)
        .expect("the image checks its health");
    assert!(
        healthcheck.contains(r#"CMD ["/usr/local/bin/agent-platform", "probe", "/livez"]"#),
        "{healthcheck}"
    );
    // Its own settings: the port it exposes, and a wildcard address, which the health check
    // (run inside the container) turns into loopback.
    let image_env: std::collections::HashMap<String, String> = dockerfile
        .lines()
        .skip_while(|l| !l.starts_with("ENV "))
        .take_while(|l| l.starts_with("ENV ") || l.starts_with("    "))
        .filter_map(|l| {
            let l = l.trim_start_matches("ENV ").trim().trim_end_matches('\\');
            l.trim().split_once('=')
        })
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    assert_eq!(image_env["PORT"].parse::<u16>().ok(), Some(exposed));
    assert_eq!(
        image_env["HOST"], "0.0.0.0",
        "the image listens on every address"
    );

    // The manifests: one port throughout, probes on the paths the binary serves, time to drain.
    let config = manifest("configmap.yaml");
    let settings = config["data"].as_object().unwrap();
    let port: u16 = settings["PORT"].as_str().unwrap().parse().unwrap();
    assert_eq!(port, exposed, "the ConfigMap's PORT is the image's");
    let deployment = manifest("deployment.yaml");
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(container["ports"][0]["containerPort"], port);
    assert_eq!(container["ports"][0]["name"], "http");
    assert_eq!(
        manifest("service.yaml")["spec"]["ports"][0]["targetPort"],
        "http"
    );
    let mut probed = Vec::new();
    for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
        let get = &container[probe]["httpGet"];
        assert_eq!(get["port"], "http", "{probe}");
        probed.push(get["path"].as_str().expect("an HTTP probe").to_owned());
    }
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/livez");
    let seconds = |name: &str| -> u64 { settings[name].as_str().unwrap().parse().unwrap() };
    let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
    assert!(
        grace > seconds("SHUTDOWN_TIMEOUT_SECS") + seconds("SHUTDOWN_DRAIN_SECS"),
        "the pod has time to drain and finish its requests"
    );
    assert_eq!(
        settings["MIGRATIONS"], "skip",
        "replicas leave migrations to the job"
    );
    let job = manifest("migration-job.yaml");
    let migrate = &job["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        migrate["image"], container["image"],
        "the job migrates for the same release"
    );
    assert!(env_of(migrate).contains(&("MIGRATIONS".into(), "only".into())));

    // Every setting they give is one the binary documents.
    let documented = documented();
    let secret = manifest("secret.example.yaml");
    let given: Vec<String> = settings
        .keys()
        .chain(secret["stringData"].as_object().unwrap().keys())
        .cloned()
        .chain(env_of(migrate).into_iter().map(|(k, _)| k))
        .chain(
            dockerfile
                .lines()
                .skip_while(|l| !l.starts_with("ENV "))
                .take_while(|l| l.starts_with("ENV ") || l.starts_with("    "))
                .filter_map(|l| l.trim_start_matches("ENV ").trim().split('=').next())
                .map(str::to_owned),
        )
        .collect();
    for name in &given {
        assert!(
            documented.contains(name),
            "{name} is set but not documented in the README"
        );
    }

    // The binary, run with the ConfigMap's settings (on this host's loopback, and the embedded
    // store), accepts them, and answers the probes as Kubernetes and the image ask them.
    let port = free_port();
    let mut command = Command::new(BINARY);
    command.env_clear();
    for (name, value) in settings {
        command.env(name, value.as_str().unwrap());
    }
    command
        .env("HOST", "127.0.0.1")
        .env("PORT", port.to_string())
        .env("ADMIN_API_KEY", "deploy-test-admin-key-0123456789")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    /// The server, stopped however the test ends.
    struct Running(std::process::Child);
    impl Drop for Running {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = Running(command.spawn().unwrap());
    // It says when it listens (the ConfigMap logs at info, as JSON); the lines end when it exits.
    let stdout = child.0.stdout.take().unwrap();
    let (tell, listening) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if line.contains("\"listening\"") {
                let _ = tell.send(());
            }
        }
    });
    let said = listening.recv_timeout(Duration::from_secs(30));
    assert!(
        said.is_ok() && child.0.try_wait().unwrap().is_none(),
        "the binary did not start with the ConfigMap's settings"
    );
    assert_eq!(status(port, "/readyz"), Some(200));
    for path in &probed {
        assert_eq!(status(port, path), Some(200), "{path}");
    }
    let probe = Command::new(BINARY)
        .env_clear()
        .env("HOST", &image_env["HOST"])
        .env("PORT", port.to_string())
        .args(["probe", "/livez"])
        .status()
        .unwrap();
    assert!(probe.success(), "the image's health check passes");
}
