//! The API's description: valid OpenAPI 3.1, covering every route the server has, served at
//! `/openapi.json` with Swagger UI at `/docs` from the binary. (Every answer of every scenario
//! test is checked against it by the harness, `common::spec`.)

mod common;

use std::collections::BTreeSet;

use actix_web::http::Method;
use common::*;
use serde_json::{json, Value};

#[test]
fn the_description_is_valid_openapi_3_1() {
    let meta: Value =
        serde_json::from_str(include_str!("fixtures/openapi-3.1-schema.json")).unwrap();
    let validator = jsonschema::validator_for(&meta).unwrap();
    let spec = &*spec::SPEC;
    let errors: Vec<String> = validator
        .iter_errors(spec)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
    assert!(spec["openapi"].as_str().unwrap().starts_with("3.1."));
    // Every schema is itself valid JSON Schema (2020-12, as OpenAPI 3.1 uses).
    let schemas = spec["components"]["schemas"].as_object().unwrap();
    assert!(schemas.len() > 40, "{} schemas", schemas.len());
    for (name, schema) in schemas {
        let mut root = schema.clone();
        root["components"] = json!({"schemas": spec["components"]["schemas"].clone()});
        jsonschema::validator_for(&root).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    // Every operation answers its errors in the envelope, and says who may call it.
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let responses = op["responses"].as_object().unwrap();
            assert!(responses.contains_key("500"), "{method} {path}");
            let open = op["security"]
                .as_array()
                .is_some_and(|s| s.iter().any(|r| r == &json!({})));
            if !open {
                for status in ["401", "403"] {
                    assert!(responses.contains_key(status), "{method} {path} {status}");
                }
            }
        }
    }
}

/// The routes the server registers, read from the route modules: (path template, method).
fn registered_routes() -> BTreeSet<(String, String)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/routes");
    let mut routes = BTreeSet::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let file = path.file_name().unwrap().to_str().unwrap().to_owned();
        let source = std::fs::read_to_string(&path).unwrap();
        let at_root = matches!(file.as_str(), "system.rs" | "openapi.rs" | "ui.rs");
        let mut rest = source.as_str();
        while let Some(at) = rest.find("endpoint(") {
            rest = &rest[at + "endpoint(".len()..];
            let mut strings = rest.split('"').skip(1).step_by(2);
            let (Some(route), Some(methods)) = (strings.next(), strings.next()) else {
                continue;
            };
            if !route.starts_with('/') {
                continue; // the helper's own definition
            }
            let full = if at_root {
                route.to_owned()
            } else {
                format!("/api/v1{route}")
            };
            for method in methods.split(", ") {
                routes.insert((full.clone(), method.to_ascii_lowercase()));
            }
        }
    }
    // Registered without the helper: the WebSocket upgrade and the Swagger UI's files.
    routes.insert(("/api/v1/ws/{client_id}".into(), "get".into()));
    routes.insert(("/docs/".into(), "get".into()));
    routes
}

#[actix_web::test]
async fn every_route_the_server_has_is_described_and_every_described_one_is_served() {
    let described: BTreeSet<(String, String)> = spec::SPEC["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .map(move |method| (path.clone(), method.clone()))
        })
        .collect();
    let registered = registered_routes();
    assert!(registered.len() > 45, "{registered:#?}");
    assert_eq!(
        registered.difference(&described).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "registered but not described"
    );
    assert_eq!(
        described.difference(&registered).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "described but not registered"
    );
    // And the server answers each described operation itself (not as an unknown route).
    let h = Harness::memory();
    let app = service!(h);
    for (path, method) in &described {
        let concrete = path
            .replace("{client_id}", "c1")
            .split('/')
            .map(|s| {
                if s.starts_with('{') {
                    "00000000-0000-4000-8000-000000000001"
                } else {
                    s
                }
            })
            .collect::<Vec<_>>()
            .join("/");
        let request = actix_web::test::TestRequest::default()
            .method(Method::from_bytes(method.to_ascii_uppercase().as_bytes()).unwrap())
            .uri(&concrete)
            .insert_header(("X-API-Key", ADMIN_KEY))
            .to_request();
        let response = actix_web::test::call_service(&app, request).await;
        let status = response.status().as_u16();
        let body = actix_web::test::read_body(response).await;
        let unrouted = status == 404 && String::from_utf8_lossy(&body).contains("no route for");
        assert!(!unrouted && status != 405, "{method} {concrete}: {status}");
    }
}

#[actix_web::test]
async fn the_docs_are_served_from_the_binary() {
    let h = Harness::memory();
    let app = service!(h);
    let get = |path: &'static str| {
        let app = &app;
        async move {
            let response =
                actix_web::test::call_service(app, req(Method::GET, path).to_request()).await;
            let status = response.status().as_u16();
            let location = response
                .headers()
                .get("location")
                .map(|v| v.to_str().unwrap().to_owned());
            let kind = response
                .headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default();
            let body = actix_web::test::read_body(response).await;
            (
                status,
                location,
                kind,
                String::from_utf8_lossy(&body).into_owned(),
            )
        }
    };
    let (status, location, _, _) = get("/docs").await;
    assert_eq!((status, location.as_deref()), (308, Some("/docs/")));
    let (status, _, kind, page) = get("/docs/").await;
    assert_eq!(status, 200);
    assert!(kind.starts_with("text/html"), "{kind}");
    assert!(page.contains("swagger-ui"), "{page}");
    // Everything the page loads comes from this server.
    for attribute in ["src=\"http", "href=\"http", "src='http", "href='http"] {
        assert!(!page.contains(attribute), "{page}");
    }
    let (status, _, _, script) = get("/docs/swagger-initializer.js").await;
    assert_eq!(status, 200);
    assert!(script.contains("/openapi.json"), "{script}");
    assert!(script.contains("\"validatorUrl\": \"none\""), "{script}");
    let cached =
        actix_web::test::call_service(&app, req(Method::GET, "/docs/swagger-ui.css").to_request())
            .await;
    assert_eq!(cached.status().as_u16(), 200);
    assert_eq!(
        cached.headers().get("cache-control").unwrap(),
        "public, max-age=3600"
    );
    let (status, _, _, bundle) = get("/docs/swagger-ui-bundle.js").await;
    assert_eq!(status, 200);
    assert!(bundle.len() > 100_000, "the UI itself is in the binary");

    let served = send(&app, req(Method::GET, "/openapi.json")).await;
    assert_eq!(served.ok(), &*spec::SPEC);
    send(&app, req(Method::POST, "/openapi.json"))
        .await
        .problem(405);
}

/// The harness's check is strict: an answer its operation does not list, or whose body does
/// not match, fails the test that received it.
#[test]
#[should_panic(expected = "does not list")]
fn an_undocumented_status_fails_the_check() {
    spec::check(
        "GET",
        "/livez",
        418,
        "application/json",
        &json!({"status": "ok"}),
    );
}

#[test]
#[should_panic(expected = "does not match its description")]
fn a_body_unlike_its_description_fails_the_check() {
    spec::check(
        "GET",
        "/livez",
        200,
        "application/json",
        &json!({"status": 5}),
    );
}

#[test]
fn a_body_like_its_description_passes_the_check() {
    spec::check(
        "GET",
        "/livez",
        200,
        "application/json",
        &json!({"status": "ok"}),
    );
    spec::check(
        "GET",
        "/api/v1/agents/00000000-0000-4000-8000-000000000001",
        404,
        "application/problem+json",
        &json!({"type": "/problems/not-found", "title": "Not Found", "status": 404, "detail": "Agent not found"}),
    );
}

#[test]
#[should_panic(expected = "does not match its description")]
fn a_body_with_a_field_its_description_does_not_name_fails_the_check() {
    spec::check(
        "GET",
        "/livez",
        200,
        "application/json",
        &json!({"status": "ok", "debug": "internals"}),
    );
}
