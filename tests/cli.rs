//! The command line: configuration errors, migrations, tenants, log format.

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use common::TestEnv;

fn run(env: &TestEnv, args: &[&str], vars: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let mut cmd = env.command(args);
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_bad_configuration_value_names_its_key_and_exits_2() {
    let env = TestEnv::new();
    let cases = [
        ("HERALD__HTTP__PORT", "eighty", "http.port"),
        ("HERALD__BROKER__SHARDS", "0", "broker.shards"),
        ("HERALD__HTTP__WORKERS", "0", "http.workers"),
        ("HERALD__DATABASE__URL", "mysql:://nope", "database.url"),
        ("HERALD__BROKER__URL", "http://localhost", "broker.url"),
        ("HERALD__LOG__FORMAT", "xml", "log.format"),
        ("HERALD__LIMITS__MAX_SEGMENTS", "0", "limits.max_segments"),
        (
            "HERALD__DATABASE__URL",
            "env:HERALD_TEST_SURELY_UNSET",
            "HERALD_TEST_SURELY_UNSET",
        ),
        ("HERALD__HTTP__COLOUR", "blue", "colour"),
    ];
    for (var, value, named) in cases {
        let (code, _, stderr) = run(&env, &["migrate"], &[(var, value)]);
        assert_eq!(code, Some(2), "{var}={value}: {stderr}");
        assert!(
            stderr.contains(named),
            "{var}={value} should name {named}: {stderr}"
        );
    }
    let (code, _, stderr) = run(&env, &["--profile", "nosuch", "migrate"], &[]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("nosuch.toml"), "{stderr}");
}

/// Number of migrations shipped (`migrations/V*.sql`).
fn migration_files() -> usize {
    std::fs::read_dir(common::manifest_dir().join("migrations"))
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".sql"))
        .count()
}

#[test]
fn secrets_may_come_from_env_references() {
    let env = TestEnv::new();
    let url = env.database_url();
    let (code, out, err) = run(
        &env,
        &["migrate"],
        &[
            ("HERALD__DATABASE__URL", "env:HERALD_TEST_DB"),
            ("HERALD_TEST_DB", url.as_str()),
        ],
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains(&format!("migrations applied: {}", migration_files())),
        "{out}"
    );
    assert!(!err.contains(&url), "the secret is not logged");
}

#[test]
fn migrations_apply_once_and_are_recorded() {
    let env = TestEnv::new();
    let (code, out, err) = run(&env, &["migrate"], &[]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains(&format!("migrations applied: {}", migration_files())),
        "{out}"
    );
    let (code, out, _) = run(&env, &["migrate"], &[]);
    assert_eq!(code, Some(0));
    assert!(out.contains("migrations applied: 0"), "{out}");
}

#[test]
fn tenants_are_created_with_a_key_shown_once_and_listed() {
    let env = TestEnv::new();
    let (id, key) = env.create_tenant(
        "Kigali Bank",
        &["--rate", "25", "--channels", "sms,whatsapp"],
    );
    assert!(id.starts_with("tnt_"));
    assert!(key.starts_with("hk_") && key.len() >= 46);
    let (code, out, _) = run(&env, &["tenant", "list"], &[]);
    assert_eq!(code, Some(0));
    assert!(out.contains(&id) && out.contains("Kigali Bank") && out.contains("sms,whatsapp"));
    assert!(!out.contains(&key), "the key is never shown again");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let stored: String = rt.block_on(async {
        env.db()
            .await
            .query_one("SELECT api_key_hash FROM tenants WHERE id = $1", &[&id])
            .await
            .unwrap()
            .get(0)
    });
    assert_ne!(stored, key, "only a hash is stored");
    assert_eq!(stored.len(), 64);
    let (code, _, err) = run(
        &env,
        &["tenant", "create", "--name", "x", "--channels", "fax"],
        &[],
    );
    assert_eq!(code, Some(2), "{err}");
    let (code, _, _) = run(
        &env,
        &["tenant", "create", "--name", "x", "--rate", "-1"],
        &[],
    );
    assert_eq!(code, Some(2));
}

#[test]
fn json_logs_when_asked() {
    let env = TestEnv::new();
    let mut child = env
        .command(&["serve"])
        .env("HERALD__LOG__FORMAT", "json")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let listening = lines.next().unwrap().unwrap();
    assert!(listening.starts_with("herald listening on http://127.0.0.1:"));
    std::thread::sleep(Duration::from_millis(300));
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    let mut count = 0;
    for line in stderr.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|_| panic!("not a JSON log line: {line}"));
        assert!(
            v["level"].is_string() && v["timestamp"].is_string(),
            "{line}"
        );
        count += 1;
    }
    assert!(count > 0);
}
