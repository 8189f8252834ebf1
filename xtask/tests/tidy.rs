//! Checks on the workspace itself, so the architecture's rules cannot rot: the dependency rules
//! between crates, one version per dependency, a `//!` line atop every source file, a contract
//! case for every store port method, and an `ARCHITECTURE.md` whose code map names exactly the
//! crates and modules there are.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn manifest(krate: &str) -> toml::Table {
    let path = root().join("crates").join(krate).join("Cargo.toml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.parse()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn names(manifest: &toml::Table, section: &str) -> BTreeSet<String> {
    manifest
        .get(section)
        .and_then(|s| s.as_table())
        .map(|t| t.keys().cloned().collect())
        .unwrap_or_default()
}

fn crates() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(root().join("crates"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

const ADAPTERS: [&str; 3] = ["adapters-memory", "adapters-postgres", "adapters-redis"];
/// Crates that do I/O or run async code; the domain may depend on none of them.
const IO_OR_ASYNC: [&str; 14] = [
    "tokio",
    "async-trait",
    "futures",
    "futures-util",
    "sqlx",
    "actix-web",
    "actix-http",
    "actix-ws",
    "deadpool-redis",
    "redis",
    "hyper",
    "reqwest",
    "tracing",
    "rand",
];

#[test]
fn the_domain_depends_on_no_crate_of_ours_and_no_io_or_async_crate() {
    let deps = names(&manifest("domain"), "dependencies");
    for dep in &deps {
        assert!(
            !crates().contains(dep),
            "domain depends on our crate {dep}; it must depend on none"
        );
        assert!(
            !IO_OR_ASYNC.contains(&dep.as_str()),
            "domain depends on {dep}, which does I/O or is async"
        );
    }
}

/// `api-http` and the adapters' own tests may use adapters as dev-dependencies; `xtask`, the
/// project's chore runner, wires adapters for `migrate` and `seed` like a second binary.
#[test]
fn only_the_server_names_concrete_adapters() {
    let xtask: toml::Table = std::fs::read_to_string(root().join("xtask/Cargo.toml"))
        .unwrap()
        .parse()
        .unwrap();
    let xtask_adapters: BTreeSet<String> = names(&xtask, "dependencies")
        .into_iter()
        .filter(|d| d.starts_with("adapters-"))
        .collect();
    assert!(
        xtask_adapters
            .iter()
            .all(|a| a == "adapters-memory" || a == "adapters-postgres"),
        "xtask may use only the memory and PostgreSQL adapters: {xtask_adapters:?}"
    );
    for krate in crates() {
        if krate == "server" {
            continue;
        }
        let deps = names(&manifest(&krate), "dependencies");
        for adapter in ADAPTERS {
            assert!(
                !deps.contains(adapter),
                "{krate} depends on {adapter}; only server may name concrete adapters"
            );
        }
    }
}

#[test]
fn the_core_never_sees_a_web_framework_or_a_database_driver() {
    for krate in ["domain", "ports", "app"] {
        let deps = names(&manifest(krate), "dependencies");
        for forbidden in [
            "actix-web",
            "actix-http",
            "actix-ws",
            "sqlx",
            "deadpool-redis",
            "redis",
        ] {
            assert!(!deps.contains(forbidden), "{krate} depends on {forbidden}");
        }
    }
}

#[test]
fn every_dependency_version_is_set_once_in_the_workspace() {
    let mut manifests: Vec<(String, toml::Table)> = crates()
        .into_iter()
        .map(|c| (c.clone(), manifest(&c)))
        .collect();
    let xtask = std::fs::read_to_string(root().join("xtask/Cargo.toml")).unwrap();
    manifests.push(("xtask".into(), xtask.parse().unwrap()));
    for (krate, m) in manifests {
        for section in ["dependencies", "dev-dependencies", "build-dependencies"] {
            let Some(table) = m.get(section).and_then(|s| s.as_table()) else {
                continue;
            };
            for (name, spec) in table {
                let inherited = spec
                    .as_table()
                    .and_then(|t| t.get("workspace"))
                    .and_then(|w| w.as_bool())
                    == Some(true);
                assert!(
                    inherited,
                    "{krate}: [{section}] {name} must be `{name}.workspace = true`"
                );
            }
        }
    }
}

#[test]
fn every_source_file_says_what_it_is_for() {
    let mut missing = Vec::new();
    let mut stack = vec![root().join("crates"), root().join("xtask")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                if !text.trim_start().starts_with("//!") {
                    missing.push(path.display().to_string());
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "files without a `//!` opening line: {missing:?}"
    );
}

#[test]
fn each_crate_has_a_paragraph_in_the_architecture_document() {
    let doc = std::fs::read_to_string(root().join("ARCHITECTURE.md")).unwrap();
    for krate in crates() {
        assert!(
            doc.contains(&format!("`{krate}`")),
            "ARCHITECTURE.md does not describe the crate `{krate}`"
        );
    }
}

/// The store's ports, and the field of `testkit::StoreUnderTest` through which the contract
/// suite calls each.
const STORE_PORTS: [(&str, &str); 9] = [
    ("AgentRepository", "agents"),
    ("TaskRepository", "tasks"),
    ("ResourceRepository", "resources"),
    ("ConflictRepository", "conflicts"),
    ("CredentialRepository", "credentials"),
    ("WorkflowRepository", "workflows"),
    ("EventLog", "events"),
    ("HealthCheck", "health"),
    ("ReplicaRegistry", "replicas"),
];

/// The methods a trait declares in the port sources: `(trait, method, returns_unit)`, where
/// `returns_unit` says the method answers nothing but success or failure (`Result<(), _>`), so
/// only what other methods read back can show its effect.
fn port_methods() -> Vec<(String, String, bool)> {
    let mut methods = Vec::new();
    for entry in std::fs::read_dir(root().join("crates/ports/src")).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        let mut current: Option<String> = None;
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let trimmed = line.trim_start();
            if let Some(rest) = trimmed.strip_prefix("pub trait ") {
                current = Some(
                    rest.split(|c: char| !c.is_alphanumeric() && c != '_')
                        .next()
                        .unwrap()
                        .to_owned(),
                );
                continue;
            }
            if line.starts_with('}') {
                current = None;
            }
            let Some(name) = &current else { continue };
            let declared = trimmed
                .strip_prefix("async fn ")
                .or_else(|| trimmed.strip_prefix("fn "));
            if let Some(rest) = declared {
                let method: String = rest
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                let signature: String = lines[i..]
                    .iter()
                    .scan(false, |done, l| {
                        if *done {
                            return None;
                        }
                        *done = l.contains(';');
                        Some(*l)
                    })
                    .collect::<Vec<_>>()
                    .join(" ");
                let returns = squeeze(signature.rsplit("->").next().unwrap_or_default());
                methods.push((name.clone(), method, returns.starts_with("Result<(),")));
            }
        }
    }
    methods
}

/// Code with its whitespace taken out, except one space where two words would otherwise meet,
/// so a call split over lines reads as one: `store.tasks.get(`, `let mut x = ...`.
fn squeeze(code: &str) -> String {
    let mut out = String::with_capacity(code.len());
    let mut gap = false;
    for c in code.chars() {
        if c.is_whitespace() {
            gap = true;
            continue;
        }
        let word = |c: char| c.is_alphanumeric() || c == '_';
        if gap && out.chars().last().is_some_and(word) && word(c) {
            out.push(' ');
        }
        gap = false;
        out.push(c);
    }
    out
}

/// The spans of `code` inside an assertion's parentheses (`assert!`, `assert_eq!`,
/// `assert_ne!`), string literals skipped when matching parentheses.
fn assertion_spans(code: &str) -> Vec<(usize, usize)> {
    let bytes = code.as_bytes();
    let mut spans = Vec::new();
    for macro_name in ["assert!(", "assert_eq!(", "assert_ne!("] {
        for (start, _) in code.match_indices(macro_name) {
            let open = start + macro_name.len();
            let (mut depth, mut in_string, mut i) = (1usize, false, open);
            while i < bytes.len() && depth > 0 {
                match bytes[i] {
                    b'\\' if in_string => i += 1,
                    b'"' => in_string = !in_string,
                    b'(' if !in_string => depth += 1,
                    b')' if !in_string => depth -= 1,
                    _ => {}
                }
                i += 1;
            }
            spans.push((open, i));
        }
    }
    spans
}

/// Whether the port call at `at` in one case's squeezed code is checked: made inside an
/// assertion, or bound by a `let` whose names (or names later derived from them by other
/// `let`s) an assertion reads.
fn asserted(case: &str, at: usize, spans: &[(usize, usize)]) -> bool {
    if spans.iter().any(|&(from, to)| from <= at && at < to) {
        return true;
    }
    let start = case[..at].rfind([';', '{', '}']).map_or(0, |i| i + 1);
    let Some(pattern) = case[start..at].strip_prefix("let ") else {
        return false;
    };
    let mut names = bound_names(pattern);
    // Follow the answer through later bindings made from it.
    let end = case[at..].find(';').map_or(case.len(), |i| at + i);
    for statement in case[end..].split(';') {
        let statement = statement.trim_start_matches(['}', '{', ';']);
        if let Some((pattern, value)) = statement
            .strip_prefix("let ")
            .and_then(|rest| rest.split_once('='))
        {
            if names.iter().any(|name| mentions(value, name)) {
                names.extend(bound_names(pattern));
            }
        }
    }
    spans
        .iter()
        .filter(|&&(from, _)| from > at)
        .any(|&(from, to)| names.iter().any(|name| mentions(&case[from..to], name)))
}

/// The variables a `let` pattern binds.
fn bound_names(pattern: &str) -> Vec<String> {
    let pattern = pattern.split('=').next().unwrap_or_default();
    pattern
        .split(|c: char| !c.is_alphanumeric() && c != '_')
        .filter(|w| w.starts_with(|c: char| c.is_ascii_lowercase()) && !["mut", "ref"].contains(w))
        .map(str::to_owned)
        .collect()
}

/// Whether `code` uses the identifier `name` (not as part of a longer one).
fn mentions(code: &str, name: &str) -> bool {
    let word = |c: char| c.is_alphanumeric() || c == '_';
    code.match_indices(name).any(|(i, _)| {
        let before = code[..i].chars().last();
        let after = code[i + name.len()..].chars().next();
        !before.is_some_and(word) && !after.is_some_and(word)
    })
}

/// The contract files of `testkit`, each as (name, text without line comments).
fn contract_files() -> Vec<(String, String)> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(root().join("crates/testkit/src")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.contains("contract") {
            let text = std::fs::read_to_string(&path).unwrap();
            let code: Vec<&str> = text
                .lines()
                .map(|l| l.split("//").next().unwrap_or(""))
                .collect();
            files.push((name, code.join("\n")));
        }
    }
    files
}

#[test]
fn every_store_port_method_has_a_contract_case() {
    // The ports a store provides are the bounds of `ports::Store`: each must be mapped here.
    let lib = std::fs::read_to_string(root().join("crates/ports/src/lib.rs")).unwrap();
    let bounds = lib
        .split("pub trait Store:")
        .nth(1)
        .and_then(|rest| rest.split('{').next())
        .expect("ports::Store and its bounds");
    for bound in bounds.split('+').map(str::trim).filter(|b| !b.is_empty()) {
        assert!(
            STORE_PORTS.iter().any(|(port, _)| *port == bound),
            "ports::Store has {bound}, which this check does not know: add it to STORE_PORTS"
        );
    }
    let files = contract_files();
    // Each case on its own, squeezed, with where its assertions are.
    let cases: Vec<(String, Vec<(usize, usize)>)> = files
        .iter()
        .flat_map(|(_, code)| code.split("pub async fn ").skip(1))
        .map(|case| {
            let case = squeeze(case);
            let spans = assertion_spans(&case);
            (case, spans)
        })
        .collect();
    let methods = port_methods();
    let mut missing = Vec::new();
    for (port, field) in STORE_PORTS {
        let declared: Vec<&(String, String, bool)> =
            methods.iter().filter(|(t, _, _)| t == port).collect();
        assert!(!declared.is_empty(), "no methods found for the port {port}");
        for (_, method, returns_unit) in declared {
            let call = format!(".{field}.{method}(");
            // A call only sets a case up unless its answer is asserted; a method that answers
            // nothing but success is covered by what the case then reads back.
            let checked = cases.iter().any(|(case, spans)| {
                case.match_indices(&call)
                    .any(|(at, _)| *returns_unit || asserted(case, at, spans))
            });
            if !checked {
                missing.push(format!("{port}::{method}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "port methods no contract case asserts on (a call as store.<port>.<method> inside an \
         assertion, or bound by a `let` an assertion then reads): {missing:?}"
    );
    // Every case is run: each is named in `store_contract!`.
    let (_, contract) = files
        .iter()
        .find(|(name, _)| name == "contract.rs")
        .expect("testkit/src/contract.rs");
    let registered = contract.split("macro_rules!").nth(1).unwrap_or_default();
    for (name, code) in &files {
        for case in code.split("pub async fn ").skip(1) {
            let case: String = case
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            assert!(
                registered.contains(&case),
                "{name}: the contract case {case} is not run by store_contract!"
            );
        }
    }
}

/// The top-level modules of a crate's `src`: its `.rs` files and module folders, less the root.
fn modules(src: &Path) -> BTreeSet<String> {
    std::fs::read_dir(src)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter_map(|p| {
            let name = p.file_name()?.to_string_lossy().into_owned();
            if p.is_dir() {
                Some(name)
            } else {
                name.strip_suffix(".rs").map(str::to_owned)
            }
        })
        .filter(|m| m != "lib" && m != "main")
        .collect()
}

#[test]
fn the_architecture_map_names_every_crate_and_module_and_nothing_else() {
    let map = std::fs::read_to_string(root().join("ARCHITECTURE.md")).unwrap();
    let code_map = map
        .split("## Code map")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("ARCHITECTURE.md has a Code map section");
    let mut named_crates = BTreeSet::new();
    for paragraph in code_map.split("\n- `").skip(1) {
        let name = paragraph.split('`').next().unwrap().to_owned();
        let modules_line = paragraph
            .split("Modules:")
            .nth(1)
            .unwrap_or_else(|| panic!("the map's paragraph on {name} has no Modules: line"));
        let named: BTreeSet<String> = modules_line
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect();
        let dir = if name == "xtask" {
            root().join("xtask")
        } else {
            root().join("crates").join(&name)
        };
        assert!(
            dir.is_dir(),
            "the map names a crate {name} that does not exist"
        );
        let actual = modules(&dir.join("src"));
        assert_eq!(
            named, actual,
            "the map's modules of {name} differ from the code (named, then actual)"
        );
        named_crates.insert(name);
    }
    let mut actual_crates: BTreeSet<String> = crates().into_iter().collect();
    actual_crates.insert("xtask".into());
    assert_eq!(
        named_crates, actual_crates,
        "the map names every crate, and only those"
    );
}
