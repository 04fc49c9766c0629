//! What the carrier integration tests share: a local receiver for the
//! simulators' status callbacks (HTTP SMS, WhatsApp webhooks, voice).

// Each test binary uses its own subset of this module.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};

/// One POST the receiver caught.
#[derive(Debug, Clone)]
pub struct Caught {
    /// The signature header, if it came.
    pub signature: Option<String>,
    pub content_type: String,
    pub body: Vec<u8>,
}

/// A local HTTP server on a free port that records every POST it receives
/// and answers 200.
pub struct Receiver {
    /// Where to send callbacks: the receiver's address and the given path.
    pub url: String,
    caught: Arc<Mutex<Vec<Caught>>>,
    server: actix_web::dev::ServerHandle,
}

impl Receiver {
    /// Start a receiver whose URL ends in `path` and which reads the
    /// signature from `signature_header`.
    pub async fn start(path: &str, signature_header: &'static str) -> Receiver {
        let caught: Arc<Mutex<Vec<Caught>>> = Arc::default();
        let sink = caught.clone();
        let server = HttpServer::new(move || {
            let sink = sink.clone();
            App::new().default_service(web::to(move |req: HttpRequest, body: web::Bytes| {
                let sink = sink.clone();
                async move {
                    let header = |name: &str| {
                        req.headers()
                            .get(name)
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_owned)
                    };
                    sink.lock().unwrap().push(Caught {
                        signature: header(signature_header),
                        content_type: header("content-type").unwrap_or_default(),
                        body: body.to_vec(),
                    });
                    HttpResponse::Ok().finish()
                }
            }))
        })
        .workers(1)
        .disable_signals()
        .bind("127.0.0.1:0")
        .unwrap();
        let addr = server.addrs()[0];
        let server = server.run();
        let handle = server.handle();
        tokio::spawn(server);
        Receiver {
            url: format!("http://{addr}{path}"),
            caught,
            server: handle,
        }
    }

    /// Wait (up to 5 s) until `n` POSTs were caught; all caught so far.
    pub async fn wait(&self, n: usize) -> Vec<Caught> {
        for _ in 0..500 {
            let caught = self.caught.lock().unwrap().clone();
            if caught.len() >= n {
                return caught;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!(
            "expected {n} callbacks, got {:?}",
            self.caught.lock().unwrap()
        );
    }

    pub async fn stop(self) {
        self.server.stop(false).await;
    }
}
