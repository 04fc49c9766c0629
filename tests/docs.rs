//! The operator documentation cannot drift from the code: the Grafana
//! dashboard (`config/grafana/herald.json`) and the README's metrics list
//! name only metrics Herald exports, with their real type and labels, and the
//! README's configuration reference lists exactly the keys of
//! `config/default.toml` with their defaults.
//!
//! What Herald exports is read twice: from the sources (every
//! `counter!`/`gauge!`/`histogram!` call naming a `herald_*` metric, with its
//! labels; a histogram has buckets when its name matches the exporter's
//! bucket matcher in `src/telemetry.rs`, and is a summary otherwise), and from
//! a live `/metrics` scrape after real traffic. The live scrape must agree
//! with the sources on every metric it shows; metrics only emitted on rare
//! events (a panic, a broken broker) are taken from the sources.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::carriers::{route, smpp_carrier, smsc};
use common::{accepted_id, carrier_bound, client, eventually, post_message, sms, TestEnv};
use herald_carriers::smpp::Behaviour;
use serde_json::{json, Value};

const DASHBOARD: &str = "config/grafana/herald.json";

/// Labels Prometheus adds to every series it scrapes.
const TARGET_LABELS: &[&str] = &["instance", "job"];

fn root() -> PathBuf {
    common::manifest_dir()
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

// ---------------------------------------------------------------- metrics

/// A Prometheus metric family as exported.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Family {
    /// `counter`, `gauge`, `histogram` or `summary`.
    kind: String,
    labels: BTreeSet<String>,
}

/// Every `herald_*` metric the sources record, with its kind and labels.
fn source_metrics() -> BTreeMap<String, Family> {
    let telemetry = read("src/telemetry.rs");
    let bucket_suffixes: Vec<String> = telemetry
        .match_indices("Matcher::Suffix(\"")
        .map(|(i, m)| {
            let rest = &telemetry[i + m.len()..];
            rest[..rest.find('"').unwrap()].to_owned()
        })
        .collect();
    assert!(
        !bucket_suffixes.is_empty(),
        "no bucket matcher found in src/telemetry.rs"
    );
    let mut files = Vec::new();
    for dir in ["src", "actors/src", "carriers/src"] {
        rust_files(&root().join(dir), &mut files);
    }
    let mut out: BTreeMap<String, Family> = BTreeMap::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for macro_name in ["counter!(", "gauge!(", "histogram!("] {
            for (i, _) in text.match_indices(macro_name) {
                // `describe_counter!(` only describes.
                if text[..i].ends_with("describe_") {
                    continue;
                }
                let args = macro_args(&text[i + macro_name.len()..]);
                let Some(name) = args
                    .trim_start()
                    .strip_prefix('"')
                    .and_then(|s| s.split('"').next())
                else {
                    continue;
                };
                if !name.starts_with("herald_") {
                    continue;
                }
                let labels: BTreeSet<String> = args
                    .match_indices("\" =>")
                    .map(|(j, _)| {
                        let before = &args[..j];
                        before[before.rfind('"').unwrap() + 1..].to_owned()
                    })
                    .collect();
                let kind = match macro_name {
                    "counter!(" => "counter",
                    "gauge!(" => "gauge",
                    _ if bucket_suffixes.iter().any(|s| name.ends_with(s.as_str())) => "histogram",
                    _ => "summary",
                };
                let family = Family {
                    kind: kind.into(),
                    labels,
                };
                match out.get(name) {
                    Some(seen) => assert_eq!(
                        seen,
                        &family,
                        "{name} is recorded with different kinds or labels ({})",
                        file.display()
                    ),
                    None => {
                        out.insert(name.to_owned(), family);
                    }
                }
            }
        }
    }
    assert!(out.len() > 20, "the source scan found too little: {out:?}");
    out
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The text of a macro's arguments: up to the `)` closing the one opened.
fn macro_args(after_paren: &str) -> &str {
    let mut depth = 1;
    let mut in_str = false;
    let mut escaped = false;
    for (i, c) in after_paren.char_indices() {
        if in_str {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_str = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_str = true,
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    return &after_paren[..i];
                }
            }
            _ => {}
        }
    }
    after_paren
}

/// The `herald_*` families of a Prometheus text exposition.
fn parse_exposition(text: &str) -> BTreeMap<String, Family> {
    let mut kinds: BTreeMap<String, String> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
                continue;
            };
            kinds.insert(name.to_owned(), kind.to_owned());
        }
    }
    let mut out: BTreeMap<String, Family> = BTreeMap::new();
    for line in text.lines() {
        if line.starts_with('#') || !line.starts_with("herald_") {
            continue;
        }
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let sample = &line[..name_end];
        let family = if kinds.contains_key(sample) {
            sample.to_owned()
        } else {
            ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| {
                    let base = sample.strip_suffix(s)?;
                    kinds.contains_key(base).then(|| base.to_owned())
                })
                .unwrap_or_else(|| sample.to_owned())
        };
        let kind = kinds
            .get(&family)
            .cloned()
            .unwrap_or_else(|| "untyped".into());
        let mut labels = BTreeSet::new();
        if line[name_end..].starts_with('{') {
            for key in label_keys(&line[name_end + 1..]) {
                if !(key == "le" && kind == "histogram" || key == "quantile" && kind == "summary") {
                    labels.insert(key);
                }
            }
        }
        out.entry(family)
            .or_insert_with(|| Family {
                kind,
                labels: BTreeSet::new(),
            })
            .labels
            .extend(labels);
    }
    out
}

/// The label names of `a="x",b="y"}…` (values may hold `,`, `}` and escapes).
fn label_keys(s: &str) -> Vec<String> {
    let mut keys = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.next_if(|c| *c == ',' || c.is_whitespace()).is_some() {}
        let key: String =
            std::iter::from_fn(|| chars.next_if(|c| !matches!(c, '=' | '!' | '~' | '}'))).collect();
        // The operator (`=`, `=~`, `!=`, `!~`), then the quoted value.
        if chars.next_if(|c| *c == '=' || *c == '!').is_none() {
            return keys;
        }
        chars.next_if(|c| *c == '=' || *c == '~');
        assert_eq!(chars.next(), Some('"'), "unquoted label value after {key}");
        let mut escaped = false;
        for c in chars.by_ref() {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => break,
                _ => {}
            }
        }
        keys.push(key.trim().to_owned());
    }
}

/// A metric referenced in a PromQL expression.
#[derive(Debug)]
struct Reference {
    /// As written, e.g. `herald_http_request_duration_seconds_bucket`.
    name: String,
    /// Label names in its selector.
    labels: Vec<String>,
}

/// The `herald_*` metrics a PromQL expression selects, and the label names
/// of its `by (…)`/`without (…)` clauses.
fn promql_references(expr: &str) -> (Vec<Reference>, Vec<String>) {
    let mut refs = Vec::new();
    let mut grouping = Vec::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b':';
    while i < bytes.len() {
        let c = bytes[i];
        if c == b'"' {
            i += 1;
            while i < bytes.len() && bytes[i] != b'"' {
                i += if bytes[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
        } else if c == b'$' || c == b'[' {
            // A Grafana variable or a range: not a metric.
            i += 1;
            while i < bytes.len() && (ident(bytes[i]) || bytes[i] == b']') {
                i += 1;
            }
        } else if ident(c) && !c.is_ascii_digit() {
            let start = i;
            while i < bytes.len() && ident(bytes[i]) {
                i += 1;
            }
            let word = &expr[start..i];
            let rest = expr[i..].trim_start();
            if word == "by" || word == "without" {
                if let Some(list) = rest.strip_prefix('(') {
                    let list = &list[..list.find(')').expect("unclosed by (")];
                    grouping.extend(
                        list.split(',')
                            .map(|l| l.trim().to_owned())
                            .filter(|l| !l.is_empty()),
                    );
                }
            } else if word.starts_with("herald_") {
                let labels = match rest.strip_prefix('{') {
                    Some(sel) => label_keys(sel),
                    None => Vec::new(),
                };
                refs.push(Reference {
                    name: word.to_owned(),
                    labels,
                });
            }
        } else {
            i += 1;
        }
    }
    (refs, grouping)
}

/// Check one PromQL expression against what Herald exports; the problems.
fn check_expr(where_: &str, expr: &str, exported: &BTreeMap<String, Family>) -> Vec<String> {
    let mut problems = Vec::new();
    let (refs, grouping) = promql_references(expr);
    if refs.is_empty() {
        problems.push(format!("{where_}: `{expr}` names no herald_ metric"));
    }
    let mut available: BTreeSet<String> = TARGET_LABELS.iter().map(|l| l.to_string()).collect();
    for r in &refs {
        let (family, suffix) = match exported.get(&r.name) {
            Some(f) => (f, ""),
            None => {
                let found = ["_bucket", "_sum", "_count"].iter().find_map(|s| {
                    let base = r.name.strip_suffix(s)?;
                    exported.get(base).map(|f| (f, *s))
                });
                match found {
                    Some(found) => found,
                    None => {
                        problems.push(format!(
                            "{where_}: `{}` is not a metric Herald exports",
                            r.name
                        ));
                        continue;
                    }
                }
            }
        };
        let mut allowed = family.labels.clone();
        allowed.extend(TARGET_LABELS.iter().map(|l| l.to_string()));
        match (family.kind.as_str(), suffix) {
            ("histogram", "_bucket") => {
                allowed.insert("le".into());
            }
            ("histogram" | "summary", "_sum" | "_count") => {}
            ("summary", "") => {
                allowed.insert("quantile".into());
                if !r.labels.iter().any(|l| l == "quantile") {
                    problems.push(format!(
                        "{where_}: summary `{}` selected without a quantile",
                        r.name
                    ));
                }
            }
            ("counter" | "gauge", "") => {}
            (kind, suffix) => problems.push(format!(
                "{where_}: `{}` is a {kind}; `{suffix}` does not apply (histogram_quantile needs \
                 buckets, summaries have quantile labels)",
                r.name
            )),
        }
        for l in &r.labels {
            if !allowed.contains(l) {
                problems.push(format!(
                    "{where_}: `{}` has no label `{l}` (it has {:?})",
                    r.name, family.labels
                ));
            }
        }
        available.extend(allowed);
    }
    for l in &grouping {
        if !available.contains(l) {
            problems.push(format!(
                "{where_}: grouping by `{l}`, a label none of its metrics has"
            ));
        }
    }
    problems
}

// ---------------------------------------------------------------- dashboard

fn dashboard() -> Value {
    serde_json::from_str(&read(DASHBOARD)).expect("the dashboard is JSON")
}

/// Every PromQL expression of the dashboard, with where it is.
fn dashboard_exprs(d: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in all_panels(d) {
        for t in p["targets"].as_array().into_iter().flatten() {
            let title = p["title"].as_str().unwrap_or("?");
            let expr = t["expr"].as_str().unwrap_or_else(|| {
                panic!("panel {title:?}: target without a PromQL expr: {t}");
            });
            out.push((format!("panel {title:?}"), expr.to_owned()));
        }
    }
    for v in d["templating"]["list"].as_array().into_iter().flatten() {
        if v["type"] == "query" {
            let q = v["query"]["query"]
                .as_str()
                .or(v["query"].as_str())
                .expect("a query variable has a query");
            let inner = q
                .strip_prefix("label_values(")
                .and_then(|s| s.strip_suffix(')'))
                .unwrap_or_else(|| panic!("variable {}: not label_values(…): {q}", v["name"]));
            let (metric, label) = inner.rsplit_once(',').expect("label_values(metric, label)");
            out.push((
                format!("variable {}", v["name"]),
                format!("sum by ({}) ({})", label.trim(), metric.trim()),
            ));
        }
    }
    out
}

/// Top-level panels and those inside collapsed rows.
fn all_panels(d: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().expect("panels is an array") {
        out.push(p);
        out.extend(p["panels"].as_array().into_iter().flatten());
    }
    out
}

#[test]
fn the_dashboard_is_a_grafana_dashboard_loadable_as_is() {
    let d = dashboard();
    assert_eq!(d["title"], "Herald");
    assert!(d["uid"].as_str().is_some_and(|u| !u.is_empty()));
    let schema = d["schemaVersion"].as_u64().expect("schemaVersion");
    assert!((36..=41).contains(&schema), "schemaVersion {schema}");
    assert!(d["id"].is_null(), "an exported dashboard carries no id");
    assert!(d["time"]["from"].is_string() && d["refresh"].is_string());

    // The data source is chosen on import and switchable: a `datasource`
    // variable of type prometheus, which every panel and query uses.
    let vars = d["templating"]["list"].as_array().expect("templating.list");
    let ds = vars
        .iter()
        .find(|v| v["type"] == "datasource")
        .expect("a datasource variable");
    assert_eq!(ds["query"], "prometheus");
    let ds_ref = format!("${{{}}}", ds["name"].as_str().unwrap());
    let uses_ds = |v: &Value, what: &str| {
        assert_eq!(v["datasource"]["type"], "prometheus", "{what}");
        assert_eq!(v["datasource"]["uid"], ds_ref.as_str(), "{what}");
    };
    for v in vars.iter().filter(|v| v["type"] == "query") {
        uses_ds(v, &format!("variable {}", v["name"]));
    }

    let mut ids = BTreeSet::new();
    let mut cells: BTreeMap<(u64, u64), String> = BTreeMap::new();
    let mut rows = 0;
    for p in all_panels(&d) {
        let title = p["title"].as_str().expect("every panel has a title");
        let kind = p["type"].as_str().expect("every panel has a type");
        assert!(
            [
                "row",
                "timeseries",
                "stat",
                "table",
                "gauge",
                "bargauge",
                "state-timeline"
            ]
            .contains(&kind),
            "{title}: unexpected panel type {kind}"
        );
        assert!(
            ids.insert(p["id"].as_u64().expect("numeric id")),
            "{title}: duplicate id"
        );
        let g = &p["gridPos"];
        let (x, y, w, h) = (
            g["x"].as_u64().unwrap(),
            g["y"].as_u64().unwrap(),
            g["w"].as_u64().unwrap(),
            g["h"].as_u64().unwrap(),
        );
        assert!(w >= 1 && h >= 1 && x + w <= 24, "{title}: gridPos {g}");
        for cx in x..x + w {
            for cy in y..y + h {
                if let Some(other) = cells.insert((cx, cy), title.to_owned()) {
                    panic!("panels {other:?} and {title:?} overlap at ({cx}, {cy})");
                }
            }
        }
        if kind == "row" {
            rows += 1;
            continue;
        }
        uses_ds(p, title);
        assert!(
            p["description"].as_str().is_some_and(|s| !s.is_empty()),
            "{title}: no description"
        );
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}: no queries");
        let mut refs = BTreeSet::new();
        for t in targets {
            uses_ds(t, title);
            assert!(t["expr"].is_string(), "{title}: {t}");
            assert!(refs.insert(t["refId"].as_str().expect("refId")), "{title}");
        }
    }
    assert!(rows >= 5, "the dashboard is organised in rows");

    // What the issue asks to see, by metric.
    let used: BTreeSet<String> = dashboard_exprs(&d)
        .iter()
        .flat_map(|(_, e)| promql_references(e).0)
        .map(|r| r.name)
        .collect();
    for wanted in [
        "herald_messages_accepted_total",
        "herald_messages_outcome_total",
        "herald_http_request_duration_seconds_bucket",
        "herald_carrier_submit_duration_seconds_bucket",
        "herald_carrier_state",
        "herald_carrier_bound",
        "herald_carrier_breaker_open",
        "herald_carrier_tps_limit",
        "herald_carrier_queue_depth",
        "herald_actor_restarts_total",
        "herald_webhook_attempts_total",
        "herald_outbox_published_total",
        "herald_projector_batches_total",
        "herald_http_requests_total",
    ] {
        assert!(
            used.contains(wanted),
            "the dashboard does not show {wanted}"
        );
    }
}

#[test]
fn every_dashboard_query_names_metrics_and_labels_the_sources_export() {
    let exported = source_metrics();
    let d = dashboard();
    let mut problems = Vec::new();
    let mut used = BTreeSet::new();
    for (where_, expr) in dashboard_exprs(&d) {
        problems.extend(check_expr(&where_, &expr, &exported));
        used.extend(promql_references(&expr).0.into_iter().map(|r| r.name));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    eprintln!("the dashboard uses {} metric names", used.len());
}

/// Prometheus' own parser, where installed (Debian package `prometheus`):
/// every query is valid PromQL once Grafana's variables are substituted.
#[test]
fn every_dashboard_query_is_valid_promql() {
    let rules: Vec<Value> = dashboard_exprs(&dashboard())
        .into_iter()
        .enumerate()
        .map(|(i, (_, expr))| {
            let expr = expr
                .replace("$__rate_interval", "1m")
                .replace("$instance", ".*")
                .replace("$carrier", ".*");
            json!({"record": format!("herald:dashboard:{i}"), "expr": expr})
        })
        .collect();
    // JSON is YAML: a rules file promtool reads.
    let file = std::env::temp_dir().join(format!("herald-dashboard-{}.yml", std::process::id()));
    let doc = json!({"groups": [{"name": "dashboard", "rules": rules}]});
    std::fs::write(&file, doc.to_string()).unwrap();
    let out = std::process::Command::new("promtool")
        .args(["check", "rules"])
        .arg(&file)
        .output();
    let _ = std::fs::remove_file(&file);
    match out {
        Err(_) => eprintln!("promtool not installed: PromQL syntax not checked"),
        Ok(out) => assert!(
            out.status.success(),
            "promtool rejects a dashboard query:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

// ---------------------------------------------------------------- README

/// The README section under `## {title}`, up to the next `## `.
fn readme_section(title: &str) -> String {
    let readme = read("README.md");
    let heading = format!("## {title}\n");
    let start = readme
        .find(&heading)
        .unwrap_or_else(|| panic!("README has no `## {title}`"))
        + heading.len();
    let rest = &readme[start..];
    let end = rest.find("\n## ").map(|e| e + 1).unwrap_or(rest.len());
    rest[..end].to_owned()
}

/// The rows of every Markdown table in `text` whose header starts with
/// `first_header`, as trimmed cells.
fn table_rows(text: &str, first_header: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut in_table = false;
    for line in text.lines() {
        let line = line.trim();
        if !line.starts_with('|') {
            in_table = false;
            continue;
        }
        let cells: Vec<String> = line
            .trim_matches('|')
            .split('|')
            .map(|c| c.trim().to_owned())
            .collect();
        if cells[0] == first_header {
            in_table = true;
        } else if in_table && !cells[0].starts_with("---") {
            rows.push(cells);
        }
    }
    rows
}

/// `` `x` `` -> `x`.
fn code(cell: &str) -> &str {
    cell.strip_prefix('`')
        .and_then(|c| c.strip_suffix('`'))
        .unwrap_or_else(|| panic!("expected `code` in a README cell, got {cell:?}"))
}

/// The metrics table of "Operating Herald": name -> (kind, labels).
fn readme_metrics() -> BTreeMap<String, Family> {
    let mut out = BTreeMap::new();
    for row in table_rows(&readme_section("Operating Herald"), "metric") {
        assert_eq!(row.len(), 4, "metric | type | labels | meaning: {row:?}");
        assert!(!row[3].is_empty(), "{row:?}: say what it means");
        let labels = if row[2] == "—" || row[2].is_empty() {
            BTreeSet::new()
        } else {
            row[2].split(", ").map(|l| code(l).to_owned()).collect()
        };
        let name = code(&row[0]).to_owned();
        let family = Family {
            kind: row[1].clone(),
            labels,
        };
        assert!(
            out.insert(name.clone(), family).is_none(),
            "{name} listed twice"
        );
    }
    assert!(!out.is_empty(), "no metrics table in `## Operating Herald`");
    out
}

#[test]
fn the_readme_lists_every_metric_herald_exports_with_its_type_and_labels() {
    let exported = source_metrics();
    let listed = readme_metrics();
    let mut problems = Vec::new();
    for (name, family) in &exported {
        match listed.get(name) {
            None => problems.push(format!("README does not list {name} ({family:?})")),
            Some(l) if l != family => problems.push(format!(
                "README lists {name} as {l:?}; Herald exports {family:?}"
            )),
            Some(_) => {}
        }
    }
    for name in listed.keys() {
        if !exported.contains_key(name) {
            problems.push(format!("README lists {name}, which Herald does not export"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));

    let operating = readme_section("Operating Herald");
    assert!(
        operating.contains(DASHBOARD),
        "the Operating section points at the Grafana dashboard"
    );
    assert!(operating.contains("Import"), "and says how to import it");
}

/// `config/default.toml` flattened: `section.key` -> value.
fn default_keys() -> BTreeMap<String, toml::Value> {
    fn flatten(prefix: &str, table: &toml::Table, out: &mut BTreeMap<String, toml::Value>) {
        for (k, v) in table {
            let key = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            match v {
                toml::Value::Table(t) => flatten(&key, t, out),
                v => {
                    out.insert(key, v.clone());
                }
            }
        }
    }
    let table: toml::Table = read("config/default.toml")
        .parse()
        .expect("config/default.toml parses");
    let mut out = BTreeMap::new();
    flatten("", &table, &mut out);
    out
}

#[test]
fn the_readme_configuration_reference_is_exactly_default_toml() {
    let defaults = default_keys();
    let mut listed: BTreeMap<String, String> = BTreeMap::new();
    let mut section = String::new();
    for row in table_rows(&readme_section("Configuration"), "section") {
        assert_eq!(row.len(), 4, "section | key | default | meaning: {row:?}");
        if !row[0].is_empty() {
            section = code(&row[0]).to_owned();
        }
        assert!(!section.is_empty(), "the first row names its section");
        assert!(!row[3].is_empty(), "{row:?}: say what it does");
        let key = format!("{section}.{}", code(&row[1]));
        assert!(
            listed.insert(key.clone(), row[2].clone()).is_none(),
            "{key} listed twice"
        );
    }
    let mut problems = Vec::new();
    for (key, value) in &defaults {
        let want = format!("`{value}`");
        match listed.get(key) {
            None => problems.push(format!("README's configuration reference lacks `{key}`")),
            Some(got) if *got != want => problems.push(format!(
                "README gives `{key}` the default {got}; config/default.toml has {want}"
            )),
            Some(_) => {}
        }
    }
    for key in listed.keys() {
        if !defaults.contains_key(key) {
            problems.push(format!(
                "README documents `{key}`, which config/default.toml does not have"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

// ---------------------------------------------------------------- live

/// Real traffic through a carrier (SMSC simulator), a webhook endpoint, the
/// live stream and a refused request; then `/metrics` must agree with the
/// sources, and every dashboard query and README metric must check against
/// what was scraped, with the sources standing in for metrics only rare
/// events emit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_scrape_agrees_with_the_sources_the_readme_and_the_dashboard() {
    let sim = smsc(Behaviour {
        receipt_delay_ms: 20,
        ..Default::default()
    })
    .await;
    let mut env = TestEnv::new();
    env.use_carriers(
        &smpp_carrier("sim", sim.addr(), 200.0, 10, 1),
        &route("rw", &["+250"], "failover", &["sim"]),
        &["sim"],
    );
    let (_, key) = env.create_tenant("acme", &[]);
    let herald = env.start();
    assert!(
        eventually(Duration::from_secs(15), || carrier_bound(
            &herald.url,
            Some("sim")
        ))
        .await,
        "the carrier never bound; log:\n{}",
        herald.log()
    );

    let receiver = common::receiver::start().await;
    let res = client()
        .post(format!("{}/v1/webhooks/endpoints", herald.url))
        .bearer_auth(&key)
        .json(&json!({"url": receiver.url, "description": "docs test"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let ws_url = format!(
        "{}/v1/stream?access_token={key}",
        herald.url.replacen("http://", "ws://", 1)
    );
    let (ws, _) = tokio_tungstenite::connect_async(ws_url)
        .await
        .expect("open the live stream");

    for i in 0..5 {
        let body = sms("+250788123456", &format!("docs {i}"));
        accepted_id(post_message(&herald.url, &key, &body).await).await;
    }
    let refused = post_message(&herald.url, &key, &sms("not a number", "x")).await;
    assert_eq!(refused.status(), 422);

    let wanted = [
        "herald_messages_outcome_total",
        "herald_carrier_submit_duration_seconds",
        "herald_webhook_attempts_total",
        "herald_webhook_duration_seconds",
        "herald_projector_batch_duration_seconds",
        "herald_accept_batch_size",
    ];
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let (scraped, complete) = loop {
        let scraped = parse_exposition(&common::metrics(&herald.url).await);
        let complete = wanted.iter().all(|w| scraped.contains_key(*w));
        if complete || std::time::Instant::now() > deadline {
            break (scraped, complete);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    drop(ws);
    assert!(
        complete,
        "after traffic, /metrics still lacks some of {wanted:?}: {:?}",
        scraped.keys().collect::<Vec<_>>()
    );

    // The scrape agrees with the sources on every metric it shows.
    let sources = source_metrics();
    let mut problems = Vec::new();
    for (name, family) in &scraped {
        match sources.get(name) {
            None => problems.push(format!(
                "/metrics exports {name}, which the source scan did not find"
            )),
            Some(s) if s.kind != family.kind => problems.push(format!(
                "{name} is a {} on /metrics but a {} in the sources",
                family.kind, s.kind
            )),
            // A label only appears once some series with it was recorded.
            Some(s) if !family.labels.is_subset(&s.labels) => problems.push(format!(
                "{name} has labels {:?} on /metrics; the sources say {:?}",
                family.labels, s.labels
            )),
            Some(_) => {}
        }
    }

    // Every dashboard query and README metric: live where scraped, else from the sources.
    let mut exported = sources.clone();
    exported.extend(scraped.clone());
    for (where_, expr) in dashboard_exprs(&dashboard()) {
        problems.extend(check_expr(&where_, &expr, &exported));
    }
    for (name, family) in readme_metrics() {
        if let Some(live) = scraped.get(&name) {
            if live.kind != family.kind || !live.labels.is_subset(&family.labels) {
                problems.push(format!(
                    "README lists {name} as {family:?}; /metrics shows {live:?}"
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));

    let only_sources: Vec<&String> = sources
        .keys()
        .filter(|n| !scraped.contains_key(*n))
        .collect();
    eprintln!(
        "{} metrics scraped live; taken from the sources only (rare events): {only_sources:?}",
        scraped.len()
    );
}

// ---------------------------------------------------------------- parsers

#[test]
fn the_parsers_read_what_they_claim() {
    let (refs, by) = promql_references(
        "histogram_quantile(0.99, sum by (le, route) (rate(herald_x_bucket{route=\"/v1/{id}\", \
         instance=~\"$instance\", status!=\"5\\\"}\", a!~\"b\"}[$__rate_interval]))) / on() herald_y",
    );
    assert_eq!(refs.len(), 2);
    assert_eq!(refs[0].name, "herald_x_bucket");
    assert_eq!(refs[0].labels, ["route", "instance", "status", "a"]);
    assert_eq!(refs[1].name, "herald_y");
    assert_eq!(by, ["le", "route"]);

    let text = "# TYPE herald_h histogram\nherald_h_bucket{route=\"/a/{b}\",le=\"0.1\"} 1\n\
                herald_h_sum{route=\"/a/{b}\"} 1\n# TYPE herald_s summary\n\
                herald_s{quantile=\"0.5\"} 2\nherald_s_count 1\n# TYPE herald_c counter\n\
                herald_c{a=\"x,y\",b=\"q\\\"}\"} 3\n";
    let f = parse_exposition(text);
    assert_eq!(f["herald_h"].kind, "histogram");
    assert_eq!(f["herald_h"].labels, BTreeSet::from(["route".to_owned()]));
    assert_eq!(f["herald_s"].kind, "summary");
    assert!(f["herald_s"].labels.is_empty());
    assert_eq!(
        f["herald_c"].labels,
        BTreeSet::from(["a".to_owned(), "b".to_owned()])
    );

    let exported = BTreeMap::from([
        ("herald_h".to_owned(), f["herald_h"].clone()),
        ("herald_s".to_owned(), f["herald_s"].clone()),
    ]);
    assert!(check_expr("t", "rate(herald_h_bucket[5m])", &exported).is_empty());
    assert_eq!(check_expr("t", "herald_s_bucket", &exported).len(), 1);
    assert_eq!(check_expr("t", "herald_s", &exported).len(), 1);
    assert_eq!(
        check_expr("t", "sum by (nope) (herald_h_count)", &exported).len(),
        1
    );
    assert_eq!(
        check_expr("t", "herald_h_bucket{nope=\"1\"}", &exported).len(),
        1
    );
    assert_eq!(check_expr("t", "herald_missing", &exported).len(), 1);
}
