//! Every answer a test receives is checked against the API's OpenAPI description: its status
//! must be one the operation documents, and its body must validate against the schema
//! documented for that status and content type.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use serde_json::{json, Value};

/// The description, as served.
pub static SPEC: LazyLock<Value> =
    LazyLock::new(|| serde_json::to_value(api_http::openapi()).expect("the description renders"));

/// Validators compiled so far, by operation, status and content type.
static VALIDATORS: LazyLock<Mutex<HashMap<String, Arc<jsonschema::Validator>>>> =
    LazyLock::new(Mutex::default);

/// The documented path template `path` (without its query) is an instance of: the one with
/// the most literal segments, so `/tasks/batch` wins over `/tasks/{task_id}`.
pub fn template_of(path: &str) -> Option<String> {
    let segments: Vec<&str> = path.split('/').collect();
    SPEC["paths"]
        .as_object()?
        .keys()
        .filter(|template| {
            let parts: Vec<&str> = template.split('/').collect();
            parts.len() == segments.len()
                && parts
                    .iter()
                    .zip(&segments)
                    .all(|(t, s)| (t.starts_with('{') && !s.is_empty()) || t == s)
        })
        .max_by_key(|t| t.split('/').filter(|p| !p.starts_with('{')).count())
        .cloned()
}

/// Follows a `$ref` to a reusable response.
fn resolved(response: &Value) -> &Value {
    match response["$ref"].as_str() {
        Some(r) => {
            let name = r.rsplit('/').next().unwrap();
            &SPEC["components"]["responses"][name]
        }
        None => response,
    }
}

/// Checks one answer. Unknown routes (`404`) and known routes with another method (`405`, or
/// `401` first to a caller without credentials) answer in the problem envelope; CORS
/// preflights (`OPTIONS`) are the CORS layer's; anything else must be documented for its
/// operation.
pub fn check(method: &str, path: &str, status: u16, content_type: &str, body: &Value) {
    if method == "OPTIONS" {
        return;
    }
    let media = content_type.split(';').next().unwrap_or_default().trim();
    let operation = template_of(path).and_then(|t| {
        let op = &SPEC["paths"][&t][method.to_ascii_lowercase()];
        (!op.is_null()).then(|| (t.clone(), op.clone()))
    });
    let Some((template, operation)) = operation else {
        assert!(
            matches!(status, 401 | 404 | 405) && media == "application/problem+json",
            "{method} {path} is not in the description, yet answered {status}"
        );
        return validate(
            "problem",
            &json!({"$ref": "#/components/schemas/Problem"}),
            body,
        );
    };
    let response = operation["responses"]
        .get(status.to_string())
        .map(resolved)
        .unwrap_or_else(|| {
            panic!("{method} {template} answered {status}, which its description does not list")
        });
    if body.is_null() && media.is_empty() {
        return;
    }
    let schema = &response["content"][media]["schema"];
    assert!(
        !response["content"][media].is_null(),
        "{method} {template} answered {status} as {media}, which its description does not list"
    );
    if media.ends_with("json") && !schema.is_null() {
        validate(
            &format!("{method} {template} {status} {media}"),
            schema,
            body,
        );
    }
}

fn validate(key: &str, schema: &Value, body: &Value) {
    let validator = {
        let mut cache = VALIDATORS.lock().unwrap();
        cache
            .entry(key.to_owned())
            .or_insert_with(|| {
                let mut root = schema.clone();
                root["$schema"] = json!("https://json-schema.org/draft/2020-12/schema");
                root["components"] = json!({"schemas": SPEC["components"]["schemas"].clone()});
                Arc::new(
                    jsonschema::validator_for(&root)
                        .unwrap_or_else(|e| panic!("the schema of {key} compiles: {e}")),
                )
            })
            .clone()
    };
    let errors: Vec<String> = validator
        .iter_errors(body)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{key}: the answer does not match its description: {errors:#?}\nbody: {body}"
    );
}
