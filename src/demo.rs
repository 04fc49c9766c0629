//! `make run`: what a first look needs, in the Herald process itself.
//!
//! With `demo.simulators` the carrier simulators run in-process (two SMPP
//! SMSCs, the WhatsApp Cloud API and the voice provider), on the addresses
//! `config/demo/carriers.toml` points at, and stop with Herald. With
//! `demo.tenant` a demo tenant is created when there is none, and its API key
//! is printed once (only its hash is stored), with a ready `curl` command and
//! the dashboard and stream URLs.

use std::net::SocketAddr;
use std::time::Duration;

use herald_carriers::smpp::{Behaviour, SmscConfig, SmscHandle, SmscSim};
use herald_carriers::{voice, whatsapp};

use crate::config::Config;
use crate::store::Store;
use crate::tenant::{generate_api_key, hash_api_key};
use herald_carriers::Channel;

/// SMPP SMSCs: (listen, control HTTP).
const SMSCS: [(u16, u16); 2] = [(2775, 8775), (2776, 8776)];
const WHATSAPP_PORT: u16 = 9091;
const VOICE_PORT: u16 = 9092;

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// The simulators running in this process.
pub struct Simulators {
    smscs: Vec<SmscHandle>,
    whatsapp: whatsapp::sim::Handle,
    voice: voice::sim::Handle,
}

impl Simulators {
    /// Start every simulator; `callbacks` is Herald's base URL, where the
    /// HTTP simulators send status callbacks.
    pub async fn start(callbacks: &str) -> std::io::Result<Simulators> {
        let mut smscs = Vec::new();
        for (smpp, control) in SMSCS {
            let config = SmscConfig {
                smpp_addr: local(smpp),
                http_addr: Some(local(control)),
                credentials: vec![("herald".into(), "secret".into())],
                // A long demo must not grow a record of every message.
                record: false,
                behaviour: Behaviour {
                    latency_ms: 20,
                    receipt_delay_ms: 700,
                    ..Behaviour::default()
                },
                ..SmscConfig::default()
            };
            smscs.push(SmscSim::start(config).await.map_err(|e| at(smpp, e))?);
        }
        let whatsapp = whatsapp::sim::start(whatsapp::sim::WhatsappSimConfig {
            bind: local(WHATSAPP_PORT),
            webhook_url: Some(format!("{callbacks}/v1/callbacks/whatsapp-cloud")),
            sent_after_ms: 300,
            delivered_after_ms: 900,
            read_after_ms: 2500,
            workers: 1,
            ..Default::default()
        })
        .await
        .map_err(|e| at(WHATSAPP_PORT, e))?;
        let voice = voice::sim::start(voice::sim::VoiceSimConfig {
            bind: local(VOICE_PORT),
            ringing_after_ms: 500,
            answered_after_ms: 1500,
            ended_after_ms: 4000,
            workers: 1,
            ..Default::default()
        })
        .await
        .map_err(|e| at(VOICE_PORT, e))?;
        Ok(Simulators {
            smscs,
            whatsapp,
            voice,
        })
    }

    /// Stop them all.
    pub async fn shutdown(self) {
        for s in self.smscs {
            s.shutdown().await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), self.whatsapp.shutdown()).await;
        let _ = tokio::time::timeout(Duration::from_secs(5), self.voice.shutdown()).await;
    }
}

fn at(port: u16, e: std::io::Error) -> std::io::Error {
    std::io::Error::new(
        e.kind(),
        format!(
            "simulator on 127.0.0.1:{port}: {e} (is another `make run` or `herald sim` running?)"
        ),
    )
}

/// A tenant created for the demo, with its key (shown once).
pub struct DemoTenant {
    pub id: String,
    pub key: String,
}

/// Create the demo tenant when no tenant exists.
pub async fn ensure_tenant(store: &Store, config: &Config) -> anyhow::Result<Option<DemoTenant>> {
    if !store.list_tenants().await?.is_empty() {
        return Ok(None);
    }
    let key = generate_api_key();
    let tenant = store
        .create_tenant(
            "demo",
            config.limits.default_rate,
            &[Channel::Sms, Channel::Whatsapp, Channel::Voice],
            &hash_api_key(&key),
        )
        .await?;
    Ok(Some(DemoTenant {
        id: tenant.id.to_string(),
        key,
    }))
}

/// What a new user reads first, on stdout.
pub fn welcome(base: &str, tenant: Option<&DemoTenant>) -> String {
    let ws = base.replacen("http://", "ws://", 1);
    let mut out = String::new();
    out.push_str("\n  Herald is running with simulated carriers (SMPP x2, WhatsApp, voice).\n\n");
    out.push_str(&format!("  Dashboard:   {base}/\n"));
    out.push_str(&format!("  API docs:    {base}/docs\n"));
    match tenant {
        Some(t) => {
            out.push_str(&format!("  Demo tenant: {}\n", t.id));
            out.push_str(&format!(
                "  API key:     {}   (shown once; only its hash is stored)\n\n",
                t.key
            ));
            out.push_str("  Send an SMS:\n");
            out.push_str(&format!(
                "    curl -s {base}/v1/messages -H 'Authorization: Bearer {}' \\\n      -H 'Content-Type: application/json' \\\n      -d '{{\"channel\":\"sms\",\"to\":\"+250788123456\",\"from\":\"Herald\",\"body\":\"Muraho!\"}}'\n\n",
                t.key
            ));
            out.push_str(&format!(
                "  Live events: {ws}/v1/stream?access_token={}\n",
                t.key
            ));
        }
        None => {
            out.push_str("  Tenants exist already: use your API key (`herald tenant create --name NAME` makes another).\n\n");
            out.push_str("  Send an SMS:\n");
            out.push_str(&format!(
                "    curl -s {base}/v1/messages -H \"Authorization: Bearer $HERALD_KEY\" \\\n      -H 'Content-Type: application/json' \\\n      -d '{{\"channel\":\"sms\",\"to\":\"+250788123456\",\"from\":\"Herald\",\"body\":\"Muraho!\"}}'\n\n"
            ));
            out.push_str(&format!(
                "  Live events: {ws}/v1/stream?access_token=$HERALD_KEY\n"
            ));
        }
    }
    out.push_str("\n  Ctrl-C stops everything.\n");
    out
}
