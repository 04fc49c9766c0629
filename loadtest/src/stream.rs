//! One live-stream client per tenant (`GET /v1/stream`): every event goes to
//! the current phase's tracker; a closed socket is resumed with
//! `after=<last cursor>` so nothing is missed.

use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio::sync::{oneshot, watch};
use tokio_tungstenite::tungstenite::Message;

use crate::tracker::Tracker;

/// Connect and follow the stream of the tenant with `key` until `stop`.
/// `after` is the cursor to resume from (`Some(0)` for a tenant with no
/// history: everything, with no gap between replay and live). `ready` fires
/// once the first connection is up.
pub async fn follow(
    base_ws: String,
    key: String,
    mut after: Option<u64>,
    tracker: Arc<RwLock<Arc<Tracker>>>,
    ready: oneshot::Sender<()>,
    mut stop: watch::Receiver<bool>,
) {
    let mut ready = Some(ready);
    loop {
        if *stop.borrow() {
            return;
        }
        let mut url = format!("{base_ws}/v1/stream?access_token={key}");
        if let Some(a) = after {
            url.push_str(&format!("&after={a}"));
        }
        let ws = match tokio_tungstenite::connect_async(url.as_str()).await {
            Ok((ws, _)) => ws,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        if let Some(r) = ready.take() {
            let _ = r.send(());
        } else {
            current(&tracker)
                .stream_reconnects
                .fetch_add(1, Ordering::Relaxed);
        }
        let (_sink, mut read) = ws.split();
        loop {
            let msg = tokio::select! {
                m = read.next() => m,
                _ = stop.changed() => return,
            };
            match msg {
                Some(Ok(Message::Text(t))) => {
                    let now = Instant::now();
                    let Ok(v) = serde_json::from_str::<serde_json::Value>(t.as_str()) else {
                        continue;
                    };
                    if let Some(c) = v["cursor"].as_u64() {
                        after = Some(after.map_or(c, |a| a.max(c)));
                    }
                    if let (Some(id), Some(status)) =
                        (v["message_id"].as_str(), v["status"].as_str())
                    {
                        let fin = v["final"].as_bool().unwrap_or(false);
                        current(&tracker).stream_event(id, status, fin, now);
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            }
        }
    }
}

fn current(t: &RwLock<Arc<Tracker>>) -> Arc<Tracker> {
    t.read().unwrap_or_else(|p| p.into_inner()).clone()
}
