//! Wiring: open the store, broker and Redis handles, start the group-commit
//! collector and the outbox relay, serve HTTP, and shut down in order.
//!
//! Shutdown (SIGTERM or SIGINT): actix-web stops accepting and lets requests
//! in flight finish (`http.shutdown_timeout_seconds`); then the collector
//! writes what it holds, the relay publishes what was committed, the broker
//! connection closes, and the process exits 0. Anything committed but not
//! yet published is published by the next sweep of any node.

use std::sync::Arc;
use std::time::Duration;

use actix_web::middleware::from_fn;
use actix_web::{web, App, HttpServer};
use herald_actors::broker::{Broker, BrokerConfig};
use herald_actors::carrier::NodeServices;
use herald_actors::config::Plan;
use herald_actors::root::Shutdown;
use tokio::sync::mpsc;

use crate::api::{self, AppState};
use crate::config::{Config, DatabaseConfig};
use crate::ingest::Ingest;
use crate::kv::Kv;
use crate::lane::Lane;
use crate::outbox::{Relay, RelayConfig};
use crate::store::Store;
use crate::telemetry;

/// Committed batches waiting for the outbox relay's fast path (each at most
/// `accept.max_batch` messages); beyond it the sweep publishes them. Room
/// for the commits of a few of the relay's paced rounds
/// (`herald_actors::pace::ROUND_PERIOD`) at several hundred commits a second.
const RELAY_INBOX: usize = 64;

/// The broker handle described by the configuration.
pub fn broker(config: &Config) -> Broker {
    Broker::new(BrokerConfig {
        url: config.broker.url.expose().to_owned(),
        prefix: config.broker.prefix.clone(),
        shards: config.broker.shards,
        timeout: Duration::from_millis(config.broker.timeout_ms),
        confirm_timeout: Duration::from_millis(config.broker.confirm_timeout_ms),
    })
}

/// Run the service until a shutdown signal. Must run inside an actix system.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let config = Arc::new(config);
    let metrics = telemetry::init_metrics()?;
    let store = Store::open(&config.database).await?;
    let kv = Kv::new(&config.redis)?;
    let broker = broker(&config);
    if let Err(e) = broker.ensure_connected().await {
        tracing::warn!(error = %e, "RabbitMQ unreachable at start; messages wait in the outbox");
    }

    // Batches of committed messages for the relay's fast path; bounded (see
    // `ingest::flush`): at most this many wait in memory.
    let (committed_tx, committed_rx) = mpsc::channel(RELAY_INBOX);
    // The accept path has connections of its own (PostgreSQL and Redis),
    // opened at start and driven, with the group commit, on the accept
    // lane's one thread (or the main runtime's); the work after it runs on
    // the deferred lane (see `lane`), and so do the connections it opens.
    let accept_store = Store::connect_as(
        &DatabaseConfig {
            pool_size: config.accept.concurrent_flushes + 1,
            ..config.database.clone()
        },
        "herald-accept",
    )?;
    let accept_lane = config
        .accept
        .own_thread
        .then(|| Lane::start("herald-accept", 1, 0))
        .transpose()?;
    // The work after an accept has a pool of its own (see
    // `accept.deferred_connections`); `store` serves the API's reads.
    let deferred_store = Store::connect_as(
        &DatabaseConfig {
            pool_size: config.accept.deferred_connections,
            ..config.database.clone()
        },
        "herald-deferred",
    )?;
    let deferred = Lane::start(
        "herald-deferred",
        config.accept.deferred_threads,
        config.accept.deferred_nice,
    )?;
    let start_ingest = {
        let (store, kv) = (accept_store, Kv::new(&config.redis)?);
        let (max_batch, flushes) = (config.accept.max_batch, config.accept.concurrent_flushes);
        async move {
            store.warm(flushes).await;
            if let Err(e) = kv.ping().await {
                tracing::warn!(error = %e, "Redis unreachable at start; accepting unthrottled");
            }
            Ingest::start(store, kv, max_batch, flushes, committed_tx)
        }
    };
    let (ingest, ingest_task) = match &accept_lane {
        Some(lane) => lane.start_here(start_ingest).await,
        None => start_ingest.await,
    };
    let (relay, projector, remember) = {
        let _lane = deferred.handle().enter();
        // Idempotency responses to remember in Redis: one pipeline per paced
        // round. A response not yet remembered (or dropped when this is
        // full) is still found by PostgreSQL's unique index.
        let remember = {
            let kv = kv.clone();
            crate::batch::Batcher::start_paced(
                config.accept.max_batch,
                2,
                Some(herald_actors::pace::ROUND_PERIOD),
                move |entries: Vec<crate::kv::Remember>| {
                    let kv = kv.clone();
                    async move {
                        if let Err(e) = kv.remember_many(&entries).await {
                            telemetry::redis_error("idempotency_put", &e);
                        }
                        vec![(); entries.len()]
                    }
                },
            )
        };
        let relay = Relay::start(
            deferred_store.clone(),
            broker.clone(),
            RelayConfig {
                sweep_interval: Duration::from_millis(config.outbox.sweep_interval_ms),
                grace: Duration::from_millis(config.outbox.grace_ms),
                sweep_batch: config.outbox.batch,
            },
            committed_rx,
        );
        // --- status projector (issue 5): consume <prefix>.events, write the event log ---
        let projector = crate::projector::Projector::start(
            deferred_store.clone(),
            broker.clone(),
            crate::projector::Settings::from(&config.projector),
        );
        // --- end status projector ---
        (relay, projector, remember)
    };
    // --- webhooks and live stream (issue 5): dispatcher, deliverer, hub ---
    let webhooks = deferred
        .start_here(crate::webhooks::Webhooks::start(
            deferred_store.clone(),
            broker.clone(),
            crate::webhooks::seal::Sealer::from_config(&config.webhooks)?,
            crate::webhooks::Settings::from(&config.webhooks),
            projector.subscribe(),
        ))
        .await;
    let hub = {
        let _lane = deferred.handle().enter();
        crate::stream::Hub::start(
            deferred_store.clone(),
            kv.clone(),
            projector.subscribe(),
            config.stream.client_buffer,
        )
    };
    // WebSocket sessions would hold the HTTP shutdown open: close them on the signal.
    let hub_closer = {
        let hub = hub.clone();
        actix_web::rt::spawn(async move {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
            }
            hub.stop();
        })
    };
    let hub_data = web::Data::new(hub.clone());
    // --- end webhooks and live stream ---
    // --- carrier callbacks (issue 5): the plan is shared with the API ---
    let plan = Arc::new(Plan::load(
        &config.routing.carriers_file,
        &config.routing.routes_file,
    )?);
    // --- end carrier callbacks ---
    // `make run`: the simulators the demo carriers point at, before binding.
    let simulators = if config.demo.simulators {
        let callbacks = format!("http://{}:{}", config.http.host, config.http.port);
        Some(crate::demo::Simulators::start(&callbacks).await?)
    } else {
        None
    };
    let tree = if plan.carriers.is_empty() && plan.routes.is_empty() {
        tracing::warn!("no carriers or routes configured: messages wait in the ingress queues");
        None
    } else {
        tracing::info!(
            carriers = plan.carriers.len(),
            routes = plan.routes.len(),
            "starting the actor tree"
        );
        let lease = NodeServices {
            leases: Arc::new(kv.clone()),
            ledger: Arc::new(kv.clone()),
            node: format!("node-{}", uuid::Uuid::new_v4().simple()),
            lease_ttl: Duration::from_millis(config.routing.lease_ttl_ms),
        };
        Some(herald_actors::root::start((*plan).clone(), broker.clone(), lease).await?)
    };
    let upkeep = {
        let handle = metrics.clone();
        actix_web::rt::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tick.tick().await;
                handle.run_upkeep();
            }
        })
    };

    let state = web::Data::new(AppState {
        config: config.clone(),
        store: store.clone(),
        kv,
        broker: broker.clone(),
        ingest,
        remember,
        auth: api::auth::AuthCache::new(Duration::from_secs(config.auth.cache_seconds)),
        metrics,
        tree: tree.clone(),
        plan: std::sync::RwLock::new(plan.clone()), // carrier callbacks (issue 5)
    });
    // SIGHUP: read the carriers and routes files again (as the admin API's
    // POST /v1/admin/routing/reload does).
    let hangup = tree.as_ref().map(|_| {
        let state = state.clone();
        actix_web::rt::spawn(async move {
            let Ok(mut hups) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            else {
                return;
            };
            while hups.recv().await.is_some() {
                match api::admin::reload_routing(&state).await {
                    Ok(summary) => tracing::info!(?summary, "SIGHUP: routing reloaded"),
                    Err(e) => tracing::error!(error = %e, "SIGHUP: routing not reloaded"),
                }
            }
        })
    });
    // The first requests would otherwise wait for the numbering plans.
    tokio::task::spawn_blocking(crate::api::v1::send::load_numbering_plans).await?;
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .app_data(hub_data.clone()) // live stream hub (issue 5)
            .wrap(from_fn(api::middleware::observe))
            .configure(api::routes)
            .default_service(web::to(api::not_found))
    })
    .workers(config.http.workers)
    .keep_alive(match config.http.keep_alive_seconds {
        0 => actix_web::http::KeepAlive::Disabled,
        n => actix_web::http::KeepAlive::Timeout(Duration::from_secs(n)),
    })
    .shutdown_timeout(config.http.shutdown_timeout_seconds)
    .bind((config.http.host.as_str(), config.http.port))?;
    for addr in server.addrs() {
        // Tests and scripts read this line to find the port.
        println!("herald listening on http://{addr}");
    }
    tracing::info!(addrs = ?server.addrs(), "herald serving");
    if config.demo.tenant {
        let tenant = crate::demo::ensure_tenant(&store, &config).await?;
        if let Some(addr) = server.addrs().first() {
            println!(
                "{}",
                crate::demo::welcome(&format!("http://{addr}"), tenant.as_ref())
            );
        }
    }
    server.run().await?;

    tracing::info!("HTTP stopped; flushing accepted messages");
    ingest_task.shutdown().await;
    if tokio::time::timeout(Duration::from_secs(15), relay.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("outbox relay did not finish in time; the next sweep publishes the rest");
    }
    // --- status projector (issue 5): commit and ack the batch in flight ---
    if tokio::time::timeout(Duration::from_secs(15), projector.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("status projector did not finish in time; its events are redelivered");
    }
    // --- end status projector ---
    // --- webhooks and live stream (issue 5) ---
    hub.stop();
    hub_closer.abort();
    if tokio::time::timeout(Duration::from_secs(10), webhooks.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("webhook deliveries did not finish in time; their tasks are redelivered");
    }
    // --- end webhooks and live stream ---
    if let Some(tree) = &tree {
        // Stop consuming carrier queues, let submissions finish, unbind.
        let _ = tokio::time::timeout(Duration::from_secs(15), tree.send(Shutdown)).await;
    }
    if let Some(simulators) = simulators {
        simulators.shutdown().await;
    }
    broker.close().await;
    upkeep.abort();
    if let Some(h) = hangup {
        h.abort();
    }
    drop(deferred);
    drop(accept_lane);
    tracing::info!("herald stopped");
    Ok(())
}
