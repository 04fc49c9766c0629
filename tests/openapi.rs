//! The API's OpenAPI document (`GET /openapi.json`) and explorer (`GET /docs`).
//!
//! - The document is valid OpenAPI 3.1: checked against the OpenAPI
//!   Initiative's JSON Schema in process (`tests/data/`), plus what a schema
//!   cannot see (every `$ref` resolves, path parameters match the templates,
//!   unique operation ids, security schemes exist, request examples fit
//!   their schemas), plus `openapi-spec-validator` where Python has it.
//! - Every route registered in `src/` is documented, and every documented
//!   operation is a route the server really serves.
//! - Real answers (status, content type, body) match what the document says.
//! - `/docs` and its vendored assets are served, with nothing from a CDN.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use common::{client, TestEnv, ADMIN};
use serde_json::{json, Map, Value};

/// The HTTP methods an OpenAPI path item may hold.
const METHODS: &[&str] = &[
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// The document, built in process as the server builds it.
fn document() -> Value {
    serde_json::to_value(herald::api::openapi::document()).expect("document serialises")
}

/// Every documented (METHOD, path).
fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in METHODS {
            if item.get(*method).is_some() {
                out.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Route registrations found in the source
// ---------------------------------------------------------------------------

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The string literal at the start of `text` (after blanks), if any.
fn literal(text: &str) -> Option<&str> {
    let rest = text.trim_start().strip_prefix('"')?;
    rest.find('"').map(|end| &rest[..end])
}

/// actix patterns to OpenAPI templates: `{id:\d+}` is `{id}`.
fn template(pattern: &str) -> String {
    let mut out = String::new();
    let mut in_param = false;
    let mut skipping = false;
    for c in pattern.chars() {
        match c {
            '{' => {
                in_param = true;
                out.push(c);
            }
            '}' if in_param => {
                in_param = false;
                skipping = false;
                out.push(c);
            }
            ':' if in_param => skipping = true,
            _ if skipping => {}
            _ => out.push(c),
        }
    }
    out
}

/// Every (METHOD, path) that the service's source registers: each
/// `web::resource("…")` with the `web::<method>()` routes of its builder,
/// each `.route("…", web::<method>()…)`, and actix's `#[get("…")]`-style
/// macros. Anything the scan cannot read fails the test with a pointer here,
/// so a new way of registering routes cannot slip past it.
fn registered(src: &Path) -> BTreeSet<(String, String)> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut out = BTreeSet::new();
    for file in files {
        let full = std::fs::read_to_string(&file).expect("read source");
        // Unit tests at the foot of a module serve nothing.
        let text = full.split("#[cfg(test)]").next().unwrap_or("");
        let name = file.display();
        assert!(
            !text.contains("web::scope("),
            "{name}: web::scope is not understood by tests/openapi.rs `registered`; teach it scopes"
        );
        let bounds = |from: usize| {
            ["web::resource(", ".route(\"", ";"]
                .iter()
                .filter_map(|m| text[from..].find(m).map(|i| from + i))
                .min()
                .unwrap_or(text.len())
        };
        for (at, _) in text.match_indices("web::resource(") {
            let start = at + "web::resource(".len();
            let path = literal(&text[start..]).unwrap_or_else(|| {
                panic!("{name}: web::resource( without a string literal; tests/openapi.rs cannot read it")
            });
            let segment = &text[start..bounds(start)];
            let mut methods: Vec<&str> = METHODS
                .iter()
                .copied()
                .filter(|m| segment.contains(&format!("web::{m}()")))
                .collect();
            assert!(
                !segment.contains("web::method("),
                "{name}: web::method( on {path} is not understood by tests/openapi.rs"
            );
            if methods.is_empty() {
                // `.to(handler)` on the resource itself answers any method.
                assert!(
                    !segment.contains(".to("),
                    "{name}: {path} answers every method; register explicit web::<method>() routes"
                );
                methods = Vec::new();
            }
            for m in methods {
                out.insert((m.to_uppercase(), template(path)));
            }
        }
        for (at, _) in text.match_indices(".route(\"") {
            let start = at + ".route(".len();
            let path = literal(&text[start..]).expect("route literal");
            let after = &text[start + path.len() + 2..];
            let after = after.trim_start().trim_start_matches(',').trim_start();
            let method = METHODS
                .iter()
                .find(|m| after.starts_with(&format!("web::{m}()")))
                .unwrap_or_else(|| {
                    panic!("{name}: .route(\"{path}\", …) without web::<method>(); tests/openapi.rs cannot read it")
                });
            out.insert((method.to_uppercase(), template(path)));
        }
        for method in METHODS {
            for (at, _) in text.match_indices(&format!("#[{method}(")) {
                let start = at + method.len() + 3;
                let path = literal(&text[start..]).expect("route macro literal");
                out.insert((method.to_uppercase(), template(path)));
            }
        }
        assert!(
            !text.contains("#[route("),
            "{name}: #[route(…)] is not understood by tests/openapi.rs"
        );
    }
    out
}

const HOW_TO_DOCUMENT: &str = "document it: put #[utoipa::path(...)] on the handler, list the handler in its \
module's `Api` (#[openapi(paths(...))]; a new module also needs a line in api::openapi::document()), \
describe new answer shapes in src/api/schemas.rs; see the module docs of src/api/openapi.rs";

#[test]
fn every_registered_route_is_documented_and_every_documented_one_registered() {
    let doc = document();
    let documented = documented(&doc);
    let registered = registered(&common::manifest_dir().join("src"));
    assert!(
        registered.len() >= 20,
        "the source scan found too few routes ({registered:?}): it no longer reads the router"
    );
    let undocumented: Vec<_> = registered.difference(&documented).collect();
    let unregistered: Vec<_> = documented.difference(&registered).collect();
    assert!(
        undocumented.is_empty(),
        "routes registered but not in /openapi.json: {undocumented:?}; {HOW_TO_DOCUMENT}"
    );
    assert!(
        unregistered.is_empty(),
        "operations in /openapi.json that no route serves: {unregistered:?}"
    );
}

#[test]
fn the_scan_reads_every_way_a_route_is_written() {
    let dir = std::env::temp_dir().join(format!("herald-scan-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(dir.join("api")).unwrap();
    std::fs::write(
        dir.join("api/a.rs"),
        r#"pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(healthz))
        .service(
            web::resource("/v1/things/{id:\d+}")
                .route(web::get().to(show))
                .route(web::delete().to(delete))
                .default_service(web::to(super::method_not_allowed)),
        )
        .service(web::resource("/v1/other").route(web::post().to(make)));
}
#[get("/macro/{x}")]
async fn by_macro() {}
#[cfg(test)]
mod tests { fn t() { web::resource("/ignored").route(web::get().to(x)); } }
"#,
    )
    .unwrap();
    let found = registered(&dir);
    std::fs::remove_dir_all(&dir).unwrap();
    let expect: BTreeSet<(String, String)> = [
        ("GET", "/healthz"),
        ("GET", "/v1/things/{id}"),
        ("DELETE", "/v1/things/{id}"),
        ("POST", "/v1/other"),
        ("GET", "/macro/{x}"),
    ]
    .iter()
    .map(|(m, p)| (m.to_string(), p.to_string()))
    .collect();
    assert_eq!(found, expect);
}

// ---------------------------------------------------------------------------
// The document is valid OpenAPI 3.1
// ---------------------------------------------------------------------------

/// Follow `$ref`s to `#/components/…`.
fn resolve<'a>(doc: &'a Value, mut schema: &'a Value) -> &'a Value {
    while let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        schema = doc
            .pointer(
                r.strip_prefix('#')
                    .unwrap_or_else(|| panic!("external $ref {r}")),
            )
            .unwrap_or_else(|| panic!("$ref {r} resolves to nothing"));
    }
    schema
}

/// Every `$ref` anywhere in `v`.
fn refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                if k == "$ref" {
                    if let Some(s) = x.as_str() {
                        out.push(s.to_owned());
                    }
                }
                refs(x, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
        _ => {}
    }
}

/// A validator for one schema of the document (its `$ref`s resolved
/// against the document's components).
fn validator(doc: &Value, schema: &Value) -> jsonschema::Validator {
    let mut root = match schema {
        Value::Object(m) => m.clone(),
        other => panic!("schema is not an object: {other}"),
    };
    root.insert(
        "$schema".into(),
        json!("https://json-schema.org/draft/2020-12/schema"),
    );
    root.insert("components".into(), doc["components"].clone());
    jsonschema::validator_for(&Value::Object(root)).expect("schema compiles")
}

fn errors(validator: &jsonschema::Validator, value: &Value) -> Vec<String> {
    validator
        .iter_errors(value)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

#[test]
fn the_document_is_valid_openapi_3_1() {
    let doc = document();
    assert!(
        doc["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1.")),
        "openapi version: {}",
        doc["openapi"]
    );

    // 1. The OpenAPI Initiative's schema of 3.1 documents.
    let oas: Value = serde_json::from_str(include_str!("data/openapi-3.1-schema.json")).unwrap();
    let oas = jsonschema::validator_for(&oas).expect("the OAS 3.1 schema compiles");
    let problems = errors(&oas, &doc);
    assert!(problems.is_empty(), "not valid OpenAPI 3.1: {problems:#?}");
    // ... and that schema does refuse what is not (a validator that passes
    // everything would prove nothing).
    let mut broken = doc.clone();
    broken["paths"]["/healthz"]["get"]["parameters"] = json!([{"name": "x", "in": "body"}]);
    broken["paths"]["/healthz"]["get"]["responses"]["200"] = json!({"content": {}});
    assert!(
        errors(&oas, &broken).len() >= 2,
        "the OAS schema let a broken document pass"
    );

    // 2. What the schema cannot see.
    let mut all_refs = Vec::new();
    refs(&doc, &mut all_refs);
    for r in &all_refs {
        assert!(
            r.starts_with("#/components/") && doc.pointer(r.strip_prefix('#').unwrap()).is_some(),
            "$ref {r} resolves to nothing"
        );
    }
    let schemes = doc["components"]["securitySchemes"]
        .as_object()
        .expect("security schemes");
    assert_eq!(schemes["tenant_key"]["type"], "http");
    assert_eq!(schemes["tenant_key"]["scheme"], "bearer");
    assert_eq!(schemes["admin_token"]["scheme"], "bearer");
    assert_eq!(schemes["tenant_key_query"]["in"], "query");
    assert!(doc["components"]["schemas"]["ErrorBody"].is_object());

    let mut operation_ids = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        let in_template: BTreeSet<String> = path
            .split('{')
            .skip(1)
            .map(|s| s.split('}').next().unwrap().to_owned())
            .collect();
        for method in METHODS {
            let Some(op) = item.get(*method) else {
                continue;
            };
            let name = format!("{} {path}", method.to_uppercase());
            let id = op["operationId"]
                .as_str()
                .unwrap_or_else(|| panic!("{name}: no operationId"));
            assert!(
                operation_ids.insert(id.to_owned()),
                "{name}: operationId {id} twice"
            );
            assert!(
                op["summary"].is_string(),
                "{name}: no summary (a /// line on the handler)"
            );
            assert!(
                op["tags"].as_array().is_some_and(|t| !t.is_empty()),
                "{name}: no tag"
            );
            let responses = op["responses"].as_object().expect("responses");
            assert!(!responses.is_empty(), "{name}: no responses");
            let params = op["parameters"].as_array().cloned().unwrap_or_default();
            let in_path: BTreeSet<String> = params
                .iter()
                .filter(|p| p["in"] == "path")
                .map(|p| {
                    assert_eq!(p["required"], true, "{name}: path parameter not required");
                    p["name"].as_str().unwrap().to_owned()
                })
                .collect();
            assert_eq!(
                in_path, in_template,
                "{name}: path parameters differ from the template"
            );
            let mut seen = BTreeSet::new();
            for p in &params {
                assert!(
                    seen.insert((p["in"].to_string(), p["name"].to_string())),
                    "{name}: parameter {} twice",
                    p["name"]
                );
            }
            for requirement in op["security"].as_array().into_iter().flatten() {
                for scheme in requirement.as_object().unwrap().keys() {
                    assert!(
                        schemes.contains_key(scheme),
                        "{name}: unknown scheme {scheme}"
                    );
                }
            }
            let security: Vec<&str> = op["security"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|r| r.as_object().unwrap().keys().map(String::as_str))
                .collect();
            if path.starts_with("/v1/admin/") {
                assert_eq!(
                    security,
                    ["admin_token"],
                    "{name}: admin operations take the admin token"
                );
            } else if path.starts_with("/v1/") && !path.starts_with("/v1/callbacks/") {
                assert!(
                    security.contains(&"tenant_key"),
                    "{name}: tenant operations take the API key"
                );
                assert!(responses.contains_key("401"), "{name}: no 401 documented");
            }
            // Errors are documented with the one error shape.
            for (status, response) in responses {
                if status.starts_with('4') || status.starts_with('5') {
                    if let Some(schema) = response.pointer("/content/application~1json/schema") {
                        if path != "/readyz" {
                            assert_eq!(
                                schema["$ref"], "#/components/schemas/ErrorBody",
                                "{name} {status}: errors use ErrorBody"
                            );
                        }
                    }
                }
            }
            // Every request example fits the request schema.
            if let Some(content) = op.pointer("/requestBody/content/application~1json") {
                if let Some(schema) = content.get("schema") {
                    let v = validator(&doc, schema);
                    for (example, e) in content["examples"].as_object().into_iter().flatten() {
                        let problems = errors(&v, &e["value"]);
                        assert!(
                            problems.is_empty(),
                            "{name}: example {example}: {problems:?}"
                        );
                    }
                }
            }
        }
    }

    // The send examples the issue asks for.
    let examples = doc
        .pointer("/paths/~1v1~1messages/post/requestBody/content/application~1json/examples")
        .and_then(Value::as_object)
        .expect("send examples");
    for channel in ["sms", "whatsapp", "voice"] {
        assert!(
            examples.values().any(|e| e["value"]["channel"] == channel),
            "no {channel} send example"
        );
    }
    let stream = &doc["paths"]["/v1/stream"]["get"];
    assert!(
        stream["responses"]["101"].is_object(),
        "the WebSocket upgrade answers 101"
    );

    // 3. A second, independent validator, where Python has it.
    let python_has_it = std::process::Command::new("python3")
        .args(["-c", "import openapi_spec_validator"])
        .output()
        .is_ok_and(|o| o.status.success());
    if python_has_it {
        let file = std::env::temp_dir().join(format!(
            "herald-openapi-{}.json",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::write(&file, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
        let out = std::process::Command::new("python3")
            .args(["-m", "openapi_spec_validator"])
            .arg(&file)
            .output()
            .expect("run openapi_spec_validator");
        let _ = std::fs::remove_file(&file);
        assert!(
            out.status.success(),
            "openapi-spec-validator: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    } else {
        eprintln!(
            "openapi-spec-validator (Python) not installed: checked with the JSON Schema only"
        );
    }
}

// ---------------------------------------------------------------------------
// The running server
// ---------------------------------------------------------------------------

/// A documented operation.
fn operation<'a>(doc: &'a Value, method: &str, path: &str) -> &'a Value {
    doc["paths"]
        .get(path)
        .and_then(|item| item.get(method.to_lowercase()))
        .unwrap_or_else(|| panic!("{method} {path} is not documented"))
}

/// The object properties a schema documents (through `$ref` and `allOf`),
/// and whether it admits others (a map, or a free-form object).
fn properties(doc: &Value, schema: &Value) -> (Map<String, Value>, bool) {
    let schema = resolve(doc, schema);
    let mut props = Map::new();
    let mut open = false;
    if let Some(p) = schema.get("properties").and_then(Value::as_object) {
        props.extend(p.clone());
    }
    for part in schema
        .get("allOf")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let (p, o) = properties(doc, part);
        props.extend(p);
        open |= o;
    }
    if props.is_empty() && schema.get("allOf").is_none() {
        open = true;
    }
    if schema
        .get("additionalProperties")
        .is_some_and(|a| a != &Value::Bool(false))
    {
        open = true;
    }
    (props, open)
}

/// Fields in `value` that `schema` does not document.
fn undocumented_fields(
    doc: &Value,
    schema: &Value,
    value: &Value,
    at: &str,
    out: &mut Vec<String>,
) {
    let schema = resolve(doc, schema);
    if value.is_null() {
        return;
    }
    for key in ["oneOf", "anyOf"] {
        if let Some(branches) = schema.get(key).and_then(Value::as_array) {
            let real: Vec<&Value> = branches
                .iter()
                .filter(|b| b.get("type") != Some(&json!("null")))
                .collect();
            if let [only] = real.as_slice() {
                undocumented_fields(doc, only, value, at, out);
            }
            return;
        }
    }
    match value {
        Value::Object(map) => {
            let (props, open) = properties(doc, schema);
            for (k, v) in map {
                match props.get(k) {
                    Some(s) => undocumented_fields(doc, s, v, &format!("{at}.{k}"), out),
                    None if open => {}
                    None => out.push(format!("{at}.{k}")),
                }
            }
        }
        Value::Array(items) => {
            if let Some(s) = schema.get("items") {
                for (i, v) in items.iter().enumerate() {
                    undocumented_fields(doc, s, v, &format!("{at}[{i}]"), out);
                }
            }
        }
        _ => {}
    }
}

/// One answer of the server.
struct Answer {
    status: u16,
    content_type: String,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

async fn call(
    base: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> Answer {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = client().request(method, format!("{base}{path}"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(b);
    }
    let res = req.send().await.expect("request");
    let status = res.status().as_u16();
    let content_type = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = res.text().await.unwrap_or_default();
    Answer {
        status,
        content_type,
        body,
    }
}

/// The answer is documented for (method, template): its status, its
/// content type, and its body fits the schema, with no undocumented field.
fn conforms(doc: &Value, method: &str, template: &str, answer: &Answer) {
    let name = format!("{method} {template} -> {}", answer.status);
    let op = operation(doc, method, template);
    let response = op["responses"]
        .get(answer.status.to_string())
        .unwrap_or_else(|| panic!("{name}: status not documented; body {}", answer.body));
    let essence = answer.content_type.split(';').next().unwrap_or("").trim();
    let Some(content) = response.get("content").and_then(Value::as_object) else {
        assert!(
            answer.body.is_empty(),
            "{name}: documented without a body, got {}",
            answer.body
        );
        return;
    };
    let (_, media) = content
        .iter()
        .find(|(ct, _)| ct.split(';').next().unwrap_or("").trim() == essence)
        .unwrap_or_else(|| panic!("{name}: content type {essence} not documented"));
    if essence != "application/json" {
        return;
    }
    let schema = media.get("schema").expect("schema");
    let value: Value = serde_json::from_str(&answer.body)
        .unwrap_or_else(|e| panic!("{name}: not JSON ({e}): {}", answer.body));
    let problems = errors(&validator(doc, schema), &value);
    assert!(
        problems.is_empty(),
        "{name}: does not fit its schema: {problems:#?}\n{value:#}"
    );
    let mut extra = Vec::new();
    undocumented_fields(doc, schema, &value, "$", &mut extra);
    assert!(
        extra.is_empty(),
        "{name}: undocumented fields {extra:?}\n{value:#}"
    );
}

/// A request to make and the operation it belongs to: (method, path
/// template, concrete path, bearer token, JSON body).
type Check<'a> = (&'a str, &'a str, String, Option<&'a str>, Option<Value>);

/// A value for a documented parameter.
fn sample(doc: &Value, param: &Value) -> String {
    if let Some(e) = param.get("example") {
        return e
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| e.to_string());
    }
    let schema = resolve(doc, &param["schema"]);
    let schema = schema
        .get("oneOf")
        .and_then(Value::as_array)
        .and_then(|b| b.iter().find(|s| s.get("type") != Some(&json!("null"))))
        .map(|s| resolve(doc, s))
        .unwrap_or(schema);
    if let Some(first) = schema
        .get("enum")
        .and_then(|e| e.get(0))
        .and_then(Value::as_str)
    {
        return first.to_owned();
    }
    let types = schema["type"].to_string();
    if schema["format"] == "date-time" {
        "2026-01-01T00:00:00Z".into()
    } else if types.contains("integer") || types.contains("number") {
        "1".into()
    } else {
        "x".into()
    }
}

/// `path` with each `{param}` filled in.
fn fill(path: &str, with: &str) -> String {
    let mut out = String::new();
    let mut rest = path;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let close = rest[open..].find('}').unwrap() + open;
        out.push_str(with);
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn served_document_routes_and_answers_match() {
    let env = TestEnv::new();
    let (_tenant, key) = env.create_tenant("Docs Ltd", &["--channels", "sms,whatsapp,voice"]);
    let herald = env.start();
    let base = herald.url.as_str();
    let doc = document();

    // The served document is the one the code builds.
    let served = call(base, "GET", "/openapi.json", None, None).await;
    assert_eq!(served.status, 200);
    assert!(
        served.content_type.starts_with("application/json"),
        "{}",
        served.content_type
    );
    assert_eq!(
        served.json(),
        doc,
        "the served document differs from the code's"
    );

    // Every documented operation is served: not the unknown-route 404, not 405.
    for (method, path) in documented(&doc) {
        let answer = call(base, &method, &fill(&path, "probe"), None, None).await;
        let v = answer.json();
        let unknown = answer.status == 404 && v["error"]["message"] == "resource not found";
        let wrong_method = answer.status == 405 && v["error"]["code"] == "method_not_allowed";
        assert!(
            !unknown && !wrong_method,
            "{method} {path} is documented but not served ({} {})",
            answer.status,
            answer.body
        );
    }

    // Every documented query parameter is one the handler reads.
    for (method, path) in documented(&doc) {
        let op = operation(&doc, &method, &path);
        let token = match op["security"].to_string() {
            s if s.contains("admin_token") => Some(ADMIN),
            s if s.contains("tenant_key") => Some(key.as_str()),
            _ => None,
        };
        let Some(token) = token else { continue };
        for p in op["parameters"].as_array().into_iter().flatten() {
            if p["in"] != "query" {
                continue;
            }
            let name = p["name"].as_str().unwrap();
            let query = url::form_urlencoded::Serializer::new(String::new())
                .append_pair(name, &sample(&doc, p))
                .finish();
            let target = format!("{}?{query}", fill(&path, "probe"));
            let answer = call(base, &method, &target, Some(token), None).await;
            assert_ne!(
                answer.json()["error"]["code"],
                "unknown_parameter",
                "{method} {path}: documented query parameter `{name}` is refused as unknown"
            );
        }
    }

    // Each send example is accepted, and the answer is a documented Message.
    let examples = doc
        .pointer("/paths/~1v1~1messages/post/requestBody/content/application~1json/examples")
        .and_then(Value::as_object)
        .unwrap()
        .clone();
    let mut first_id = None;
    for (name, example) in &examples {
        let mut body = example["value"].clone();
        if body.get("scheduled_at").is_some() {
            body["scheduled_at"] =
                json!((chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339());
        }
        let res = common::post_message(base, &key, &body).await;
        let answer = Answer {
            status: res.status().as_u16(),
            content_type: res
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned(),
            body: res.text().await.unwrap(),
        };
        assert_eq!(
            answer.status, 202,
            "example {name} refused: {}",
            answer.body
        );
        conforms(&doc, "POST", "/v1/messages", &answer);
        first_id.get_or_insert(answer.json()["id"].as_str().unwrap().to_owned());
    }
    let id = first_id.expect("a message");

    let k = Some(key.as_str());
    let a = Some(ADMIN);
    let mut checks: Vec<Check> = vec![
        (
            "GET",
            "/v1/messages/{id}",
            format!("/v1/messages/{id}"),
            k,
            None,
        ),
        (
            "GET",
            "/v1/messages/{id}",
            "/v1/messages/msg_00000000000000000000000000000000".into(),
            k,
            None,
        ),
        (
            "GET",
            "/v1/messages",
            "/v1/messages?limit=2".into(),
            k,
            None,
        ),
        (
            "GET",
            "/v1/messages",
            "/v1/messages?colour=blue".into(),
            k,
            None,
        ),
        ("GET", "/v1/messages", "/v1/messages".into(), None, None),
        (
            "POST",
            "/v1/messages",
            "/v1/messages".into(),
            k,
            Some(json!({"channel": "sms", "to": "12", "from": "HERALD", "body": "x"})),
        ),
        (
            "GET",
            "/v1/events",
            "/v1/events?after=0&limit=5".into(),
            k,
            None,
        ),
        ("GET", "/v1/events", "/v1/events?limit=0".into(), k, None),
        ("GET", "/v1/stream", "/v1/stream".into(), None, None),
        (
            "GET",
            "/v1/webhooks/endpoints",
            "/v1/webhooks/endpoints".into(),
            k,
            None,
        ),
        (
            "GET",
            "/v1/webhooks/callback-secret",
            "/v1/webhooks/callback-secret".into(),
            k,
            None,
        ),
        (
            "POST",
            "/v1/webhooks/endpoints",
            "/v1/webhooks/endpoints".into(),
            k,
            Some(json!({"url": "ftp://nope"})),
        ),
        (
            "GET",
            "/v1/webhooks/endpoints/{id}",
            "/v1/webhooks/endpoints/whe_nope".into(),
            k,
            None,
        ),
        (
            "POST",
            "/v1/callbacks/{carrier_id}",
            "/v1/callbacks/nope".into(),
            None,
            Some(json!({})),
        ),
        ("GET", "/healthz", "/healthz".into(), None, None),
        ("GET", "/readyz", "/readyz".into(), None, None),
        ("GET", "/metrics", "/metrics".into(), None, None),
        (
            "GET",
            "/v1/admin/actors",
            "/v1/admin/actors".into(),
            a,
            None,
        ),
        (
            "GET",
            "/v1/admin/actors",
            "/v1/admin/actors".into(),
            Some("wrong"),
            None,
        ),
        (
            "POST",
            "/v1/admin/routing/reload",
            "/v1/admin/routing/reload".into(),
            a,
            None,
        ),
        (
            "POST",
            "/v1/admin/actors/{name}/crash",
            "/v1/admin/actors/route:nope/crash".into(),
            a,
            None,
        ),
        (
            "GET",
            "/v1/admin/receipts/unmatched",
            "/v1/admin/receipts/unmatched?limit=10".into(),
            a,
            None,
        ),
        ("GET", "/docs", "/docs".into(), None, None),
        ("GET", "/docs/{asset}", "/docs/nope.js".into(), None, None),
    ];
    // A webhook endpoint's life: created, listed, shown, replayed, deleted.
    let created = call(
        base,
        "POST",
        "/v1/webhooks/endpoints",
        k,
        Some(&json!({"url": "http://127.0.0.1:9/hook", "description": "docs test"})),
    )
    .await;
    conforms(&doc, "POST", "/v1/webhooks/endpoints", &created);
    assert_eq!(created.status, 201, "{}", created.body);
    let endpoint = created.json()["id"].as_str().unwrap().to_owned();
    checks.extend([
        (
            "GET",
            "/v1/webhooks/endpoints/{id}",
            format!("/v1/webhooks/endpoints/{endpoint}"),
            k,
            None,
        ),
        (
            "POST",
            "/v1/webhooks/endpoints/{id}/replay",
            format!("/v1/webhooks/endpoints/{endpoint}/replay?since=0"),
            k,
            None,
        ),
        (
            "POST",
            "/v1/webhooks/endpoints/{id}/replay",
            format!("/v1/webhooks/endpoints/{endpoint}/replay"),
            k,
            None,
        ),
        (
            "GET",
            "/v1/webhooks/endpoints",
            "/v1/webhooks/endpoints".into(),
            k,
            None,
        ),
        (
            "DELETE",
            "/v1/webhooks/endpoints/{id}",
            format!("/v1/webhooks/endpoints/{endpoint}"),
            k,
            None,
        ),
        (
            "DELETE",
            "/v1/webhooks/endpoints/{id}",
            format!("/v1/webhooks/endpoints/{endpoint}"),
            k,
            None,
        ),
    ]);
    let mut statuses: BTreeMap<String, BTreeSet<u16>> = BTreeMap::new();
    for (method, template, path, token, body) in &checks {
        let answer = call(base, method, path, *token, body.as_ref()).await;
        conforms(&doc, method, template, &answer);
        statuses
            .entry(format!("{method} {template}"))
            .or_default()
            .insert(answer.status);
    }
    // The checks above reach what they mean to (a 2xx and an error each).
    for (op, wanted) in [
        ("GET /v1/messages/{id}", [200, 404]),
        ("GET /v1/messages", [200, 400]),
        ("GET /v1/webhooks/endpoints/{id}", [200, 404]),
        ("DELETE /v1/webhooks/endpoints/{id}", [204, 404]),
        ("POST /v1/webhooks/endpoints/{id}/replay", [202, 400]),
    ] {
        for s in wanted {
            assert!(
                statuses[op].contains(&s),
                "{op}: never answered {s}: {statuses:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn docs_page_serves_its_vendored_assets() {
    let env = TestEnv::new();
    let herald = env.start();
    let base = herald.url.as_str();
    let assets = common::manifest_dir().join("assets/docs");

    let page = client().get(format!("{base}/docs")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let header = |r: &reqwest::Response, name: &str| {
        r.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    assert!(header(&page, "content-type").starts_with("text/html"));
    assert_eq!(header(&page, "cache-control"), "no-cache");
    let html = page.text().await.unwrap();
    assert!(html.contains("id=\"swagger-ui\""), "{html}");

    // Everything the page loads comes from Herald itself.
    let mut linked = Vec::new();
    for attr in ["src=\"", "href=\""] {
        for (at, _) in html.match_indices(attr) {
            let rest = &html[at + attr.len()..];
            linked.push(rest[..rest.find('"').unwrap()].to_owned());
        }
    }
    let mut loaded: Vec<&String> = linked.iter().filter(|l| l.starts_with("/docs/")).collect();
    loaded.sort();
    assert_eq!(
        loaded,
        [
            "/docs/init.js",
            "/docs/swagger-ui-bundle.js",
            "/docs/swagger-ui.css"
        ],
        "{linked:?}"
    );
    for l in &linked {
        assert!(
            l.starts_with('/') && !l.starts_with("//"),
            "{l} is not served by Herald"
        );
    }
    let init = std::fs::read_to_string(assets.join("init.js")).unwrap();
    assert!(
        init.contains("url: \"/openapi.json\""),
        "the page loads /openapi.json"
    );
    assert!(
        !init.contains("http://") && !init.contains("https://"),
        "no CDN"
    );

    for (path, content_type) in [
        ("/docs/init.js", "text/javascript"),
        ("/docs/swagger-ui-bundle.js", "text/javascript"),
        ("/docs/swagger-ui.css", "text/css"),
        ("/docs/LICENSE", "text/plain"),
    ] {
        let res = client().get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(res.status(), 200, "{path}");
        assert!(
            header(&res, "content-type").starts_with(content_type),
            "{path}: {}",
            header(&res, "content-type")
        );
        assert!(header(&res, "cache-control").contains("max-age="), "{path}");
        let etag = header(&res, "etag");
        assert!(
            etag.starts_with('"') && etag.len() > 10,
            "{path}: etag {etag}"
        );
        let bytes = res.bytes().await.unwrap();
        let file = assets.join(path.trim_start_matches("/docs/"));
        assert_eq!(
            bytes.as_ref(),
            std::fs::read(&file).unwrap().as_slice(),
            "{path} is the vendored file"
        );
        let again = client()
            .get(format!("{base}{path}"))
            .header("if-none-match", &etag)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), 304, "{path} revalidates");
        assert!(again.bytes().await.unwrap().is_empty());
    }

    let missing = client()
        .get(format!("{base}/docs/nope.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let v: Value = missing.json().await.unwrap();
    assert_eq!(v["error"]["code"], "not_found");

    let posted = client().post(format!("{base}/docs")).send().await.unwrap();
    assert_eq!(posted.status(), 405);
}
