//! Interop with SMPP code Herald did not write, both ways:
//!
//! * Herald's client against `smpp_interop_smsc.py`, whose PDUs are all
//!   encoded and decoded by the `smpp.pdu3` package from PyPI (Jasmin's PDU
//!   library);
//! * Herald's SMSC simulator against `smpp_interop_esme.py`, an ESME built on
//!   the `smpplib` package from PyPI.
//!
//! The packages are installed into a virtualenv under `$CARGO_TARGET_DIR`
//! (or the system temp dir); a test is skipped, with a message saying why,
//! only when Python or the packages cannot be installed.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use herald_carriers::smpp::{
    normalize_ref, ReceiptIdFormat, SmppClient, SmppConfig, SmscConfig, SmscSim,
};
use herald_carriers::{CarrierConnection, Channel, Content, ReceiptState, Submission};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{ChildStdout, Command};

/// This package's directory in the checkout the tests run from. Cargo and
/// nextest set it when they run a test; the compile-time value names the
/// checkout that built the binary, and a target directory shared between
/// clones (the Makefile's) may have built it in another.
fn manifest_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

const PACKAGES: [&str; 2] = ["smpp.pdu3==0.6", "smpplib==2.2.4"];

fn venv_dir() -> PathBuf {
    let base = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    base.join("herald-smpp-interop-venv")
}

/// The venv's python with smpp.pdu3 and smpplib importable, or why not.
/// Tests run in parallel: a lock file keeps one installer at a time.
fn python_with_smpp_pdu() -> Result<PathBuf, String> {
    static INSTALL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = INSTALL.lock().unwrap_or_else(|p| p.into_inner());
    let venv = venv_dir();
    let python = venv.join("bin").join("python");
    let importable = |py: &Path| {
        std::process::Command::new(py)
            .args(["-c", "import smpp.pdu.pdu_encoding, smpplib.client"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    if importable(&python) {
        return Ok(python);
    }
    let run = |cmd: &mut std::process::Command| -> Result<(), String> {
        let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{cmd:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    };
    run(std::process::Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv))?;
    run(std::process::Command::new(&python)
        .args(["-m", "pip", "install", "-q", "--disable-pip-version-check"])
        .args(PACKAGES))?;
    if importable(&python) {
        Ok(python)
    } else {
        Err("packages installed but not importable".into())
    }
}

/// [`python_with_smpp_pdu`] off the runtime; `None` (and a message saying
/// why) when the test is to be skipped.
async fn python_or_skip() -> Option<PathBuf> {
    match tokio::task::spawn_blocking(python_with_smpp_pdu)
        .await
        .expect("setup task")
    {
        Ok(python) => Some(python),
        Err(why) => {
            eprintln!("SKIPPED smpp interop test: cannot install {PACKAGES:?}: {why}");
            None
        }
    }
}

#[tokio::test]
async fn binds_submits_and_gets_a_receipt_from_a_python_smsc() {
    let Some(python) = python_or_skip().await else {
        return;
    };
    let script = manifest_dir().join("tests/smpp_interop_smsc.py");
    let mut child = Command::new(python)
        .arg(script)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("python SMSC starts");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let first = next_line(&mut lines).await;
    let port: u16 = first
        .strip_prefix("PORT ")
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"));

    let (client, mut receipts) = SmppClient::connect(SmppConfig {
        host: "127.0.0.1".into(),
        port,
        system_id: "herald".into(),
        password: "secret".into(),
        // The receipt text carries the id in decimal; the TLV in hex.
        receipt_id_format: ReceiptIdFormat::HexInRespDecimalInReceipt,
        request_timeout: Duration::from_secs(10),
        enquire_link_interval: Duration::from_millis(300),
        ..Default::default()
    })
    .await
    .expect("binds to the python SMSC");

    let texts = ["Hello from Herald", "Muraho ✓ ж"];
    let mut refs = Vec::new();
    for (i, body) in texts.iter().enumerate() {
        let sent = client
            .submit(Submission {
                message_id: format!("msg_interop_{i}"),
                channel: Channel::Sms,
                to: "+250788123456".into(),
                from: "Herald".into(),
                content: Content::Text {
                    body: (*body).into(),
                },
                validity: None,
                receipts: true,
            })
            .await
            .expect("submitted");
        assert_eq!(sent.carrier_refs.len(), 1);
        refs.push(sent.carrier_refs[0].clone());
    }
    assert_eq!(
        refs,
        vec![normalize_ref("00000A1B"), normalize_ref("00000A1C")]
    );

    for expected in &refs {
        let r = tokio::time::timeout(Duration::from_secs(10), receipts.recv())
            .await
            .expect("receipt in time")
            .expect("receipt channel open");
        assert_eq!(&r.carrier_ref, expected);
        assert_eq!(r.state, ReceiptState::Delivered);
    }

    // Outlive a few enquire_links (answered by the python side).
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(client.health().bound);
    client.close().await;

    // What the python SMSC decoded from our PDUs.
    let mut submits = Vec::new();
    let mut resps = 0;
    loop {
        let line = next_line(&mut lines).await;
        if line == "UNBIND" {
            break;
        }
        if let Some(rest) = line.strip_prefix("SUBMIT ") {
            submits.push(rest.to_owned());
        } else if line.starts_with("DELIVER_SM_RESP ESME_ROK") {
            resps += 1;
        }
    }
    assert_eq!(resps, 2);
    assert_eq!(submits.len(), 2);
    let gsm: Vec<&str> = submits[0].split(' ').collect();
    assert_eq!(gsm[0], "250788123456");
    assert_eq!(gsm[1], "SMSC_DEFAULT_ALPHABET");
    assert_eq!(gsm[3], hex::encode(b"Hello from Herald"));
    let ucs2: Vec<&str> = submits[1].split(' ').collect();
    assert_eq!(ucs2[1], "UCS2");
    let utf16: Vec<u8> = "Muraho ✓ ж"
        .encode_utf16()
        .flat_map(u16::to_be_bytes)
        .collect();
    assert_eq!(ucs2[3], hex::encode(&utf16));
    let _ = child.kill().await;
}

#[tokio::test]
async fn an_smpplib_esme_against_the_simulator() {
    let Some(python) = python_or_skip().await else {
        return;
    };
    let sim = SmscSim::start(SmscConfig {
        credentials: vec![("herald".into(), "secret".into())],
        ..Default::default()
    })
    .await
    .expect("simulator starts");
    let script = manifest_dir().join("tests/smpp_interop_esme.py");
    let mut child = Command::new(python)
        .arg(script)
        .arg(sim.addr().port().to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("python ESME starts");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut sent = Vec::new();
    let mut receipts = Vec::new();
    loop {
        let line = next_line(&mut lines).await;
        if line == "DONE" {
            break;
        }
        let fields: Vec<&str> = line.splitn(4, ' ').collect();
        match fields[0] {
            "SENT" => sent.push(fields[1].to_owned()),
            "RECEIPT" => receipts.push((
                fields[1].to_owned(),
                fields[2].to_owned(),
                fields[3].to_owned(),
            )),
            _ => panic!("unexpected line {line:?}"),
        }
    }
    let received = sim.received();
    // One GSM-7 message and a long UCS-2 one that smpplib split into UDH parts.
    assert!(received.len() >= 3, "{received:?}");
    assert_eq!(sent.len(), received.len());
    assert_eq!(received[0].text, "Hello from smpplib");
    let reference = received[1].concat.expect("UDH").0;
    let parts = received.len() - 1;
    for (i, r) in received[1..].iter().enumerate() {
        assert_eq!(r.data_coding, 8);
        assert_eq!(r.concat, Some((reference, parts as u8, i as u8 + 1)));
    }
    let long: String = received[1..].iter().map(|r| r.text.as_str()).collect();
    assert_eq!(long, "Муракозе! ".repeat(20));
    // Every receipt names a message id the simulator answered, once.
    let mut ids: Vec<String> = received.iter().map(|r| r.message_id.clone()).collect();
    assert_eq!(sent, ids);
    let mut receipted: Vec<String> = receipts.iter().map(|r| r.0.clone()).collect();
    ids.sort();
    receipted.sort();
    assert_eq!(ids, receipted);
    for (id, state, text) in &receipts {
        assert_eq!(state, "2", "DELIVERED");
        assert!(text.starts_with(&format!("id:{id} ")), "{text}");
        assert!(text.contains("stat:DELIVRD"), "{text}");
    }
    let stats = sim.stats();
    assert_eq!(stats.deliver_sm_resp, received.len() as u64);
    assert_eq!(stats.unbind, 1);
    let _ = child.wait().await;
    sim.shutdown().await;
}

async fn next_line(lines: &mut Lines<BufReader<ChildStdout>>) -> String {
    tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("the python SMSC answers in time")
        .expect("stdout readable")
        .expect("the python SMSC is running")
}
