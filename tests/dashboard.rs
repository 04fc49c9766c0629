//! `make run` and the dashboard, end to end: Herald with the dev profile
//! (simulators in-process, demo tenant, open admin) on an isolated database
//! and broker prefix; the printed curl command works; headless Chromium
//! opens the dashboard, sees messages sent through the API reach
//! `delivered`, pauses and resumes a carrier with its buttons, sends a test
//! message with the form, and saves a screenshot; Ctrl-C then stops
//! everything with exit status 0.
//!
//! The dev profile listens on fixed ports (HTTP 8080; SMSCs 2775/2776 with
//! control 8775/8776; WhatsApp 9091; voice 9092): this is the only test that
//! uses them. Chromium and chromedriver come from Debian (`chromium`,
//! `chromium-driver`); the test installs them when it can and otherwise
//! skips the browser part, saying so.

mod common;

use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

const DEMO_CARRIERS: [&str; 4] = ["smsc-kigali", "smsc-kampala", "whatsapp-cloud", "voice-sim"];
const DEMO_PORTS: [u16; 7] = [8080, 2775, 2776, 8775, 8776, 9091, 9092];

fn port_open(port: u16) -> bool {
    TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(200),
    )
    .is_ok()
}

fn demo_env() -> TestEnv {
    let mut env = TestEnv::new();
    env.set("HERALD_PROFILE", "dev");
    env.carrier_ids = DEMO_CARRIERS.iter().map(|c| c.to_string()).collect();
    // The dev profile's webhook delay queues, so the environment deletes them.
    let dev = herald::config::Config::load(&common::manifest_dir().join("config"), "dev")
        .expect("the dev profile loads");
    env.webhook_delays = herald::webhooks::Settings::from(&dev.webhooks).delay_queues_ms();
    env
}

/// The value after `label` on a line of the welcome text.
fn printed(lines: &[String], label: &str) -> Option<String> {
    lines.iter().find_map(|l| {
        l.trim()
            .strip_prefix(label)
            .map(|v| v.split_whitespace().next().unwrap_or("").to_owned())
    })
}

/// chromedriver's path, installing Debian's packages when missing and
/// possible; `Err` says why the browser part cannot run.
fn chromedriver() -> Result<String, String> {
    let find = || {
        ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .map(str::to_owned)
    };
    if let Some(p) = find() {
        return Ok(p);
    }
    eprintln!("installing chromium and chromium-driver (apt-get)…");
    let installed = Command::new("apt-get")
        .args(["install", "-y", "-q", "chromium", "chromium-driver"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdout(Stdio::null())
        .status();
    match (installed, find()) {
        (_, Some(p)) => Ok(p),
        (Ok(s), None) => Err(format!("apt-get install chromium chromium-driver: {s}")),
        (Err(e), None) => Err(format!("apt-get not available: {e}")),
    }
}

struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    /// Stop chromedriver and the browsers it started (its process group),
    /// also when the test failed with the browser open.
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_driver(path: &str) -> Driver {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(path)
        .arg(format!("--port={port}"))
        .process_group(0)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
    }
}

async fn browser(driver: &Driver) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1400,1200"],
        }),
    );
    for _ in 0..50 {
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        match ClientBuilder::new(connector)
            .capabilities(caps.clone())
            .connect(&driver.url)
            .await
        {
            Ok(c) => return c,
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    panic!("could not open a chromedriver session at {}", driver.url);
}

/// Run `script` in the page until it returns `true`.
async fn page_shows(page: &Client, within: Duration, script: &str) -> bool {
    eventually(within, || async {
        page.execute(script, vec![])
            .await
            .ok()
            .and_then(|v| v.as_bool())
            .unwrap_or(false)
    })
    .await
}

/// Press a carrier's button and wait for the row to show `state`. The table
/// is redrawn every two seconds, so the button is found and clicked in one
/// step in the page (a handle kept across a redraw would be stale).
async fn press(page: &Client, carrier: &str, button: &str, state: &str) {
    let click = format!(
        "const b = [...document.querySelectorAll('#carriers tr[data-carrier=\"{carrier}\"] button')]\
           .find(b => b.textContent === '{button}'); \
         if (b) {{ b.click(); return true; }} return false;"
    );
    assert!(
        page_shows(page, Duration::from_secs(10), &click).await,
        "no {button} button for {carrier}"
    );
    let script = format!(
        "return document.querySelector('#carriers tr[data-carrier=\"{carrier}\"]').dataset.state === '{state}';"
    );
    assert!(
        page_shows(page, Duration::from_secs(10), &script).await,
        "{carrier} did not show as {state} after {button}"
    );
}

/// Wait for Herald's welcome text; all it printed so far.
async fn welcome(herald: &Herald) -> Vec<String> {
    let done = || {
        herald
            .stdout
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("Ctrl-C stops everything"))
    };
    assert!(
        eventually(Duration::from_secs(10), || async { done() }).await,
        "no welcome text"
    );
    herald.stdout.lock().unwrap().clone()
}

async fn dashboard(herald: &Herald, key: &str) {
    let driver_path = match chromedriver() {
        Ok(p) => p,
        Err(why) => {
            eprintln!("SKIPPED the browser part of the dashboard test: {why}");
            return;
        }
    };
    let driver = start_driver(&driver_path);
    let page = browser(&driver).await;
    page.goto(&format!("{}/", herald.url)).await.unwrap();

    // Live: the admin stream is open and the carriers are listed, bound.
    assert!(
        page_shows(
            &page,
            Duration::from_secs(20),
            "return document.getElementById('link').textContent === 'live' && \
             document.querySelectorAll('#carriers tr[data-state=\"bound\"]').length === 4",
        )
        .await,
        "the dashboard did not go live with 4 bound carriers"
    );

    // Messages sent through the API reach `delivered` on the page.
    let mut ids = Vec::new();
    for (i, to) in ["+250788123456", "+256772123456", "+243812345678"]
        .iter()
        .enumerate()
    {
        let body =
            json!({"channel": "sms", "to": to, "from": "Herald", "body": format!("dash {i}")});
        ids.push(accepted_id(post_message(&herald.url, key, &body).await).await);
    }
    for id in &ids {
        let script = format!(
            "const r = document.querySelector('tr[data-message-id=\"{id}\"]'); \
             return !!r && r.dataset.status === 'delivered' && \
             r.textContent.includes('sent');"
        );
        assert!(
            page_shows(&page, Duration::from_secs(30), &script).await,
            "message {id} did not show as delivered with its timeline; log:\n{}",
            herald.log()
        );
    }

    // Pause and resume a carrier with its buttons.
    press(&page, "smsc-kigali", "Pause", "paused").await;
    let tree = admin_tree(&herald.url).await;
    assert_eq!(tree["paused"], json!(["smsc-kigali"]));
    press(&page, "smsc-kigali", "Resume", "bound").await;

    // The test-message form sends one, and it is delivered.
    page.find(Locator::Id("send-button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert!(
        page_shows(
            &page,
            Duration::from_secs(10),
            "return !!document.getElementById('send-result').dataset.messageId;",
        )
        .await,
        "the test message was not accepted"
    );
    let sent: Value = page
        .execute(
            "return document.getElementById('send-result').dataset.messageId;",
            vec![],
        )
        .await
        .unwrap();
    let sent = sent.as_str().unwrap().to_owned();
    let script = format!(
        "const r = document.querySelector('tr[data-message-id=\"{sent}\"]'); \
         return !!r && r.dataset.status === 'delivered';"
    );
    assert!(
        page_shows(&page, Duration::from_secs(30), &script).await,
        "the dashboard's test message did not show as delivered"
    );
    // The chart has drawn what went by.
    assert!(
        page_shows(
            &page,
            Duration::from_secs(5),
            "return document.getElementById('chart').width > 0;"
        )
        .await
    );

    let png = page.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| common::manifest_dir().join("target"));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("dashboard.png");
    std::fs::write(&path, png).unwrap();
    eprintln!("dashboard screenshot: {}", path.display());
    page.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn make_run_shows_messages_flowing_on_the_dashboard_and_ctrl_c_stops_it_all() {
    let busy: Vec<u16> = DEMO_PORTS.into_iter().filter(|p| port_open(*p)).collect();
    assert!(
        busy.is_empty(),
        "ports {busy:?} are in use (a `make run` or `herald sim` running?); the demo needs them"
    );
    let env = demo_env();
    let mut herald = env.start();
    // The welcome: key, curl, URLs.
    let lines = welcome(&herald).await;
    let text = lines.join("\n");
    let key = printed(&lines, "API key:").expect("the demo tenant's API key is printed");
    assert!(key.starts_with("hk_"), "{text}");
    assert!(printed(&lines, "Demo tenant:").is_some_and(|t| t.starts_with("tnt_")));
    assert_eq!(
        printed(&lines, "Dashboard:").as_deref(),
        Some("http://127.0.0.1:8080/")
    );
    assert!(text.contains(&format!("ws://127.0.0.1:8080/v1/stream?access_token={key}")));

    // The printed curl command, run as printed, is accepted.
    let curl: String = lines
        .iter()
        .skip_while(|l| !l.trim_start().starts_with("curl "))
        .take(3)
        .map(|l| l.trim().trim_end_matches('\\').to_owned())
        .collect::<Vec<_>>()
        .join(" ");
    let out = Command::new("sh")
        .args(["-c", &format!("{curl} -o /dev/null -w '%{{http_code}}'")])
        .output()
        .expect("run curl");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "202", "{curl}");

    // Every simulated carrier is bound.
    for c in DEMO_CARRIERS {
        assert!(
            eventually(Duration::from_secs(15), || carrier_bound(
                &herald.url,
                Some(c)
            ))
            .await,
            "{c} not bound; log:\n{}",
            herald.log()
        );
    }
    dashboard(&herald, &key).await;

    // Ctrl-C: exit 0, simulators stopped, nothing listening any more.
    let status = herald.signal("INT", Duration::from_secs(45));
    assert!(
        status.success(),
        "exit status {status}; log:\n{}",
        herald.log()
    );
    let still: Vec<u16> = DEMO_PORTS.into_iter().filter(|p| port_open(*p)).collect();
    assert!(still.is_empty(), "still listening after Ctrl-C: {still:?}");
    assert!(herald.log().contains("herald stopped"));

    // The key is shown once: a second start says tenants exist, prints no key.
    let mut again = env.start();
    let lines = welcome(&again).await;
    assert!(
        printed(&lines, "API key:").is_none(),
        "the key is printed once"
    );
    assert!(lines.iter().any(|l| l.contains("Tenants exist already")));
    assert!(again.signal("INT", Duration::from_secs(45)).success());
}
