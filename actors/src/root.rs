//! The root of the supervision tree. It starts, from the carriers and routes
//! plan: the HealthMonitor, one RouteActor per route, one CarrierConnection
//! per bind (each under an actix `Supervisor`) and one IngressConsumer per
//! shard, and registers each with the monitor together with a factory that
//! recreates it.
//!
//! It also keeps the live picture: the carriers' reported status (bound,
//! breaker, rate, restarts), from which it tells the route actors which
//! carriers are usable, and answers [`Snapshot`] for the admin API.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use actix::prelude::*;
use serde::Serialize;

use crate::broker::{Broker, BrokerError};
use crate::carrier::{CarrierConnection, Crash, Drain, Hold, NodeServices};
use crate::config::{CarrierSpec, Plan, RouteSpec};
use crate::health::{HealthMonitor, Ping, Restarts, Unwatch, Watch};
use crate::ingress::IngressConsumer;
use crate::reroute::{Rerouter, StopRerouting};
use crate::route::{CarrierUsable, CrashRoute, Retire, RouteActor};
use crate::routing::Router;
use crate::telemetry;
use crate::tenant::UseRoutes;

/// Routes and the actors that serve them, shared read-only by tenant actors.
/// A new table replaces the old one (`UseRoutes`); none is ever mutated.
pub struct RouteTable {
    pub router: Router,
    pub actors: HashMap<String, Addr<RouteActor>>,
}

/// A carrier connection's periodic report.
#[derive(Message, Clone, Debug, Serialize)]
#[rtype(result = "()")]
pub struct CarrierStatus {
    pub carrier: String,
    pub bind: u32,
    pub bound: bool,
    /// The bind's lease is held by another node (which serves it).
    pub standby: bool,
    pub usable: bool,
    pub breaker_open: bool,
    pub rate: f64,
    pub configured_rate: f64,
    pub in_flight: u32,
    pub pending: u32,
    pub restarts: u64,
    /// Paused by the operator: bound, but taking nothing from its queue.
    pub paused: bool,
    /// Moving average of the carrier's answer time, milliseconds.
    pub latency_ms: Option<f64>,
}

/// A route actor (re)started.
#[derive(Message)]
#[rtype(result = "()")]
pub struct RouteStarted {
    pub id: String,
    pub addr: Addr<RouteActor>,
}

/// A carrier connection (re)started.
#[derive(Message)]
#[rtype(result = "()")]
pub struct CarrierStarted {
    pub carrier: String,
    pub bind: u32,
    pub addr: Addr<CarrierConnection>,
}

/// The live tree, for the admin API and the dashboard.
#[derive(Message)]
#[rtype(result = "TreeSnapshot")]
pub struct Snapshot;

#[derive(Debug, Clone, Serialize)]
pub struct TreeSnapshot {
    pub shards: Vec<u16>,
    pub routes: Vec<String>,
    pub carriers: Vec<CarrierStatus>,
    /// Restarts made by the HealthMonitor, by actor name.
    pub restarts: HashMap<String, u32>,
    /// Messages waiting in each carrier's queue (last reading).
    pub queue_depths: HashMap<String, u32>,
    /// Carriers paused by the operator on this node.
    pub paused: BTreeSet<String>,
    /// Paused carriers whose queues are being re-routed.
    pub draining: BTreeSet<String>,
}

/// An operator's control over a carrier (admin API, on this node).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CarrierAction {
    /// Stay bound, take nothing from the queue; routes prefer other carriers.
    Pause,
    /// Take work again (ends a drain too).
    Resume,
    /// Pause, and send what waits in the queue through its routes to other
    /// usable carriers now.
    Drain,
}

/// Why a [`Control`] was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    #[error("no carrier {0}")]
    UnknownCarrier(String),
    #[error("carrier {0} has no other usable carrier on its routes to take its queue")]
    NoAlternative(String),
}

/// Apply a [`CarrierAction`] to every bind of a carrier on this node.
#[derive(Message)]
#[rtype(result = "Result<(), ControlError>")]
pub struct Control {
    pub carrier: String,
    pub action: CarrierAction,
}

/// Make an actor panic (chaos testing). Names: `carrier:<id>:<bind>`,
/// `route:<id>`. Answers whether the actor was found.
#[derive(Message)]
#[rtype(result = "bool")]
pub struct CrashActor(pub String);

/// A parked message to send through its route again (from a Rerouter).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Reroute {
    pub incoming: crate::broker::Incoming,
    pub delivery: crate::payload::Delivery,
}

/// How often carrier queue depths are read.
pub const DEPTH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);

/// Depths of the carrier queues (internal).
#[derive(Message)]
#[rtype(result = "()")]
struct QueueDepths(HashMap<String, u32>);

/// How often the root looks for carriers to re-route away from.
pub const REROUTE_CHECK: std::time::Duration = std::time::Duration::from_millis(500);

/// Apply a new plan (admin API or SIGHUP): routes and carriers that did not
/// change keep running; new ones start; removed or changed ones retire
/// (route actors stop and their waiting messages are routed again; carrier
/// connections drain and unbind). Answers what changed.
#[derive(Message)]
#[rtype(result = "Result<ReloadSummary, String>")]
pub struct Reload(pub Plan);

#[derive(Debug, Clone, Default, Serialize)]
pub struct ReloadSummary {
    pub routes_started: Vec<String>,
    pub routes_retired: Vec<String>,
    pub carriers_started: Vec<String>,
    pub carriers_retired: Vec<String>,
}

/// Stop consuming carrier queues, let submissions in flight finish, unbind.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Shutdown;

pub struct Root {
    plan: Arc<Plan>,
    broker: Broker,
    lease: NodeServices,
    monitor: Option<Addr<HealthMonitor>>,
    routes: HashMap<String, Addr<RouteActor>>,
    ingress: Vec<Addr<IngressConsumer>>,
    carriers: HashMap<(String, u32), Addr<CarrierConnection>>,
    status: HashMap<(String, u32), CarrierStatus>,
    usable: HashMap<String, bool>,
    rates: HashMap<String, f64>,
    /// Since when each unusable carrier has been unusable.
    unusable_since: HashMap<String, std::time::Instant>,
    rerouters: HashMap<String, Addr<Rerouter>>,
    depths: HashMap<String, u32>,
    /// Carriers paused by the operator, and those of them being drained.
    paused: BTreeSet<String>,
    draining: BTreeSet<String>,
    /// The thread the carrier connections run on (started with the first):
    /// a bind's submit answers are not kept waiting behind the rest of the
    /// node's work (projector, webhooks, routes) on the main thread.
    carrier_thread: Option<Arbiter>,
}

/// Declare the carriers' queues, then start the tree.
pub async fn start(
    plan: Plan,
    broker: Broker,
    lease: NodeServices,
) -> Result<Addr<Root>, BrokerError> {
    for carrier in &plan.carriers {
        broker
            .declare_carrier(&carrier.id, &carrier.retry.delays_ms)
            .await?;
    }
    let root = Root {
        plan: Arc::new(plan),
        broker,
        lease,
        monitor: None,
        routes: HashMap::new(),
        ingress: Vec::new(),
        carriers: HashMap::new(),
        status: HashMap::new(),
        usable: HashMap::new(),
        rates: HashMap::new(),
        unusable_since: HashMap::new(),
        rerouters: HashMap::new(),
        depths: HashMap::new(),
        paused: BTreeSet::new(),
        draining: BTreeSet::new(),
        carrier_thread: None,
    };
    Ok(root.start())
}

impl Root {
    fn table(&self) -> Arc<RouteTable> {
        Arc::new(RouteTable {
            router: Router::new(self.plan.routes.clone()),
            actors: self.routes.clone(),
        })
    }

    /// A carrier's usability (any bind usable) and the rate routes should
    /// release to it: its binds' current rate, less a fifth while every
    /// bound bind already holds a window's worth of waiting messages (its
    /// queue is growing), so what waits in front of other tenants' messages
    /// stays short.
    fn carrier_state(&self, carrier: &str) -> CarrierUsable {
        let binds: Vec<&CarrierStatus> = self
            .status
            .iter()
            .filter(|((c, _), _)| c == carrier)
            .map(|(_, s)| s)
            .collect();
        let usable = binds.iter().any(|s| s.usable);
        let rate: f64 = binds
            .iter()
            .filter(|s| s.bound || s.standby)
            .map(|s| s.rate)
            .sum();
        let window = self.plan.carrier(carrier).map(|c| c.window).unwrap_or(1);
        let bound: Vec<&&CarrierStatus> = binds.iter().filter(|s| s.bound).collect();
        let backlogged = !bound.is_empty() && bound.iter().all(|s| s.pending >= window);
        CarrierUsable {
            carrier: carrier.to_owned(),
            usable,
            rate: if backlogged { rate * 0.8 } else { rate },
        }
    }

    /// Start or stop rerouters: a carrier unusable for longer than its
    /// `reroute_after_ms`, with a usable alternative on one of its routes,
    /// has its parked messages sent elsewhere.
    fn check_reroutes(&mut self, ctx: &mut Context<Self>) {
        let now = std::time::Instant::now();
        for spec in &self.plan.carriers {
            let id = &spec.id;
            let usable = self.usable.get(id).copied().unwrap_or(false);
            if usable {
                self.unusable_since.remove(id);
                if let Some(r) = self.rerouters.remove(id) {
                    r.do_send(StopRerouting);
                    tracing::info!(carrier = %id, "carrier usable again; re-routing stops");
                }
                continue;
            }
            let held_here = self.status.iter().any(|((c, _), s)| c == id && !s.standby);
            // A paused carrier keeps its queue, unless it is being drained.
            let paused = self.paused.contains(id);
            let draining = self.draining.contains(id);
            if !held_here || (paused && !draining) {
                continue;
            }
            let since = *self.unusable_since.entry(id.clone()).or_insert(now);
            let overdue = draining || now.duration_since(since) >= spec.reroute_after();
            let alternative = self.has_alternative(id);
            if overdue && alternative && !self.rerouters.contains_key(id) {
                let addr = Rerouter::new(id.clone(), self.broker.clone(), ctx.address()).start();
                self.rerouters.insert(id.clone(), addr);
            }
        }
    }

    /// Read every carrier queue's depth (backpressure made visible).
    fn read_depths(&self, ctx: &mut Context<Self>) {
        let broker = self.broker.clone();
        let carriers: Vec<String> = self.plan.carriers.iter().map(|c| c.id.clone()).collect();
        let me = ctx.address();
        actix::spawn(async move {
            let mut depths = HashMap::new();
            for c in carriers {
                let queue = broker.topology().carrier_queue(&c);
                if let Ok(n) = broker.queue_depth(&queue).await {
                    depths.insert(c, n);
                }
            }
            me.do_send(QueueDepths(depths));
        });
    }

    /// Whether a route of `carrier` has another carrier usable now.
    fn has_alternative(&self, carrier: &str) -> bool {
        self.plan.routes.iter().any(|r| {
            r.carriers.iter().any(|c| c == carrier)
                && r.carriers
                    .iter()
                    .any(|c| c != carrier && self.usable.get(c).copied().unwrap_or(false))
        })
    }

    fn broadcast_routes(&self) {
        let table = self.table();
        for consumer in &self.ingress {
            consumer.do_send(UseRoutes(table.clone()));
        }
    }
}

impl Root {
    /// Start a route's actor and have the monitor watch it.
    fn start_route(&mut self, spec: &RouteSpec, monitor: &Addr<HealthMonitor>, me: &Addr<Root>) {
        let make = {
            let spec = spec.clone();
            let broker = self.broker.clone();
            let me = me.clone();
            move || {
                let addr = RouteActor::new(spec.clone(), broker.clone()).start();
                me.do_send(RouteStarted {
                    id: spec.id.clone(),
                    addr: addr.clone(),
                });
                addr
            }
        };
        let addr = RouteActor::new(spec.clone(), self.broker.clone()).start();
        for carrier in self.usable.keys() {
            addr.do_send(self.carrier_state(carrier));
        }
        self.routes.insert(spec.id.clone(), addr.clone());
        monitor.do_send(Watch {
            name: format!("route:{}", spec.id),
            kind: "route",
            ping: addr.recipient(),
            factory: Box::new(move || make().recipient()),
        });
    }

    /// Start a carrier's connections (one per bind, each supervised) and
    /// have the monitor watch them.
    fn start_carrier(
        &mut self,
        spec: &CarrierSpec,
        monitor: &Addr<HealthMonitor>,
        me: &Addr<Root>,
    ) {
        let spec = Arc::new(spec.clone());
        let thread = self
            .carrier_thread
            .get_or_insert_with(Arbiter::new)
            .handle();
        for bind in 0..spec.binds {
            let make = {
                let thread = thread.clone();
                let spec = spec.clone();
                let broker = self.broker.clone();
                let me = me.clone();
                let lease = self.lease.clone();
                move || {
                    let (s, b, m, l) = (spec.clone(), broker.clone(), me.clone(), lease.clone());
                    let addr = Supervisor::start_in_arbiter(&thread, move |_| {
                        CarrierConnection::new(s, bind, b, m, l)
                    });
                    me.do_send(CarrierStarted {
                        carrier: spec.id.clone(),
                        bind,
                        addr: addr.clone(),
                    });
                    addr
                }
            };
            let (s, b, m, l) = (
                spec.clone(),
                self.broker.clone(),
                me.clone(),
                self.lease.clone(),
            );
            let addr = Supervisor::start_in_arbiter(&thread, move |_| {
                CarrierConnection::new(s, bind, b, m, l)
            });
            if self.paused.contains(&spec.id) {
                addr.do_send(Hold(true));
            }
            self.carriers.insert((spec.id.clone(), bind), addr.clone());
            monitor.do_send(Watch {
                name: format!("carrier:{}:{bind}", spec.id),
                kind: "carrier_connection",
                ping: addr.recipient(),
                factory: Box::new(move || make().recipient::<Ping>()),
            });
        }
    }

    /// Retire a carrier's connections: drain, unbind, forget.
    fn retire_carrier(&mut self, spec: &CarrierSpec, monitor: &Addr<HealthMonitor>) {
        for bind in 0..spec.binds {
            monitor.do_send(Unwatch(format!("carrier:{}:{bind}", spec.id)));
            if let Some(addr) = self.carriers.remove(&(spec.id.clone(), bind)) {
                addr.do_send(Drain);
            }
            self.status.remove(&(spec.id.clone(), bind));
        }
        self.usable.remove(&spec.id);
        self.rates.remove(&spec.id);
    }
}

impl Actor for Root {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(REROUTE_CHECK, |act, ctx| act.check_reroutes(ctx));
        ctx.run_interval(DEPTH_INTERVAL, |act, ctx| act.read_depths(ctx));
        let monitor = HealthMonitor::default().start();
        let me = ctx.address();

        let routes = self.plan.routes.clone();
        for spec in &routes {
            self.start_route(spec, &monitor, &me);
        }
        let carriers = self.plan.carriers.clone();
        for spec in &carriers {
            self.start_carrier(spec, &monitor, &me);
        }

        let table = self.table();
        for shard in 0..self.broker.topology().shards() {
            let make = {
                let broker = self.broker.clone();
                let me = me.clone();
                move || {
                    let _ = &me;
                    IngressConsumer::new(
                        shard,
                        broker.clone(),
                        Arc::new(RouteTable {
                            router: Router::default(),
                            actors: HashMap::new(),
                        }),
                    )
                    .start()
                }
            };
            let addr = IngressConsumer::new(shard, self.broker.clone(), table.clone()).start();
            self.ingress.push(addr.clone());
            let me2 = me.clone();
            monitor.do_send(Watch {
                name: format!("ingress:{shard}"),
                kind: "ingress",
                ping: addr.recipient(),
                factory: Box::new(move || {
                    // A new consumer starts with an empty table and gets the
                    // current one from the root at once.
                    let addr = make();
                    me2.do_send(IngressStarted {
                        shard,
                        addr: addr.clone(),
                    });
                    addr.recipient()
                }),
            });
        }
        self.monitor = Some(monitor);
    }
}

/// An ingress consumer (re)started.
#[derive(Message)]
#[rtype(result = "()")]
pub struct IngressStarted {
    pub shard: u16,
    pub addr: Addr<IngressConsumer>,
}

impl Handler<IngressStarted> for Root {
    type Result = ();

    fn handle(&mut self, msg: IngressStarted, _: &mut Self::Context) {
        let i = usize::from(msg.shard);
        if i < self.ingress.len() {
            self.ingress[i] = msg.addr.clone();
        }
        msg.addr.do_send(UseRoutes(self.table()));
    }
}

impl Handler<RouteStarted> for Root {
    type Result = ();

    fn handle(&mut self, msg: RouteStarted, _: &mut Self::Context) {
        for carrier in self.usable.keys() {
            msg.addr.do_send(self.carrier_state(carrier));
        }
        self.routes.insert(msg.id, msg.addr);
        self.broadcast_routes();
    }
}

impl Handler<CarrierStarted> for Root {
    type Result = ();

    fn handle(&mut self, msg: CarrierStarted, _: &mut Self::Context) {
        if self.paused.contains(&msg.carrier) {
            msg.addr.do_send(Hold(true));
        }
        self.carriers.insert((msg.carrier, msg.bind), msg.addr);
    }
}

impl Handler<Control> for Root {
    type Result = Result<(), ControlError>;

    fn handle(&mut self, msg: Control, ctx: &mut Self::Context) -> Self::Result {
        let id = msg.carrier;
        if self.plan.carrier(&id).is_none() {
            return Err(ControlError::UnknownCarrier(id));
        }
        match msg.action {
            CarrierAction::Pause => {
                self.paused.insert(id.clone());
            }
            CarrierAction::Resume => {
                self.paused.remove(&id);
                self.draining.remove(&id);
                // Re-routing stops now, not when the binds next report; and
                // an unusable spell starts afresh from here.
                if let Some(r) = self.rerouters.remove(&id) {
                    r.do_send(StopRerouting);
                }
                self.unusable_since.remove(&id);
            }
            CarrierAction::Drain => {
                if !self.has_alternative(&id) {
                    return Err(ControlError::NoAlternative(id));
                }
                self.paused.insert(id.clone());
                self.draining.insert(id.clone());
            }
        }
        let hold = self.paused.contains(&id);
        for ((carrier, _), addr) in &self.carriers {
            if *carrier == id {
                addr.do_send(Hold(hold));
            }
        }
        tracing::info!(carrier = %id, action = ?msg.action, "operator control");
        // Routes learn from the binds' reports; re-routing starts at once.
        if msg.action == CarrierAction::Drain {
            self.check_reroutes(ctx);
        }
        Ok(())
    }
}

impl Handler<CarrierStatus> for Root {
    type Result = ();

    fn handle(&mut self, msg: CarrierStatus, _: &mut Self::Context) {
        let carrier = msg.carrier.clone();
        telemetry::carrier_state(&carrier, msg.bind, carrier_state_name(&msg));
        self.status.insert((carrier.clone(), msg.bind), msg);
        let state = self.carrier_state(&carrier);
        let usable_changed = self.usable.get(&carrier) != Some(&state.usable);
        let rate_changed = self
            .rates
            .get(&carrier)
            .is_none_or(|r| (r - state.rate).abs() > 0.01 * state.rate.max(1.0));
        if usable_changed || rate_changed {
            self.usable.insert(carrier.clone(), state.usable);
            self.rates.insert(carrier.clone(), state.rate);
            for route in self.routes.values() {
                route.do_send(state.clone());
            }
        }
    }
}

/// The state name of a carrier connection for `herald_carrier_state`.
fn carrier_state_name(s: &CarrierStatus) -> &'static str {
    if s.standby {
        "standby"
    } else if s.paused {
        "paused"
    } else if !s.bound {
        "unbound"
    } else if s.breaker_open {
        "breaker_open"
    } else if s.rate < s.configured_rate {
        "throttled"
    } else {
        "bound"
    }
}

impl Handler<QueueDepths> for Root {
    type Result = ();

    fn handle(&mut self, msg: QueueDepths, _: &mut Self::Context) {
        for (carrier, depth) in &msg.0 {
            telemetry::carrier_queue_depth(carrier, *depth);
        }
        self.depths.extend(msg.0);
    }
}

impl Handler<Reroute> for Root {
    type Result = ();

    fn handle(&mut self, msg: Reroute, _: &mut Self::Context) {
        match self.routes.get(&msg.delivery.route) {
            Some(route) => route.do_send(crate::route::Dispatch {
                incoming: msg.incoming,
                delivery: msg.delivery,
                share: None,
            }),
            // A route that no longer exists: leave the message where it was.
            None => drop(msg.incoming),
        }
    }
}

impl Handler<Reload> for Root {
    type Result = ResponseActFuture<Self, Result<ReloadSummary, String>>;

    fn handle(&mut self, msg: Reload, _: &mut Self::Context) -> Self::Result {
        let plan = msg.0;
        let broker = self.broker.clone();
        let new_carriers: Vec<CarrierSpec> = plan
            .carriers
            .iter()
            .filter(|c| self.plan.carrier(&c.id) != Some(c))
            .cloned()
            .collect();
        Box::pin(
            async move {
                // Queues first: a route may send to a new carrier at once.
                for c in &new_carriers {
                    broker
                        .declare_carrier(&c.id, &c.retry.delays_ms)
                        .await
                        .map_err(|e| e.to_string())?;
                }
                Ok(plan)
            }
            .into_actor(self)
            .map(|declared: Result<Plan, String>, act, ctx| {
                let plan = declared?;
                let Some(monitor) = act.monitor.clone() else {
                    return Err("shutting down".to_owned());
                };
                let me = ctx.address();
                let mut summary = ReloadSummary::default();
                let old = act.plan.clone();
                for c in &old.carriers {
                    if plan.carrier(&c.id) != Some(c) {
                        act.retire_carrier(c, &monitor);
                        summary.carriers_retired.push(c.id.clone());
                    }
                }
                for r in &old.routes {
                    if !plan.routes.contains(r) {
                        monitor.do_send(Unwatch(format!("route:{}", r.id)));
                        if let Some(addr) = act.routes.remove(&r.id) {
                            addr.do_send(Retire);
                        }
                        summary.routes_retired.push(r.id.clone());
                    }
                }
                act.plan = Arc::new(plan.clone());
                for c in &plan.carriers {
                    if old.carrier(&c.id) != Some(c) {
                        act.start_carrier(c, &monitor, &me);
                        summary.carriers_started.push(c.id.clone());
                    }
                }
                for r in &plan.routes {
                    if !old.routes.contains(r) {
                        act.start_route(r, &monitor, &me);
                        summary.routes_started.push(r.id.clone());
                    }
                }
                act.broadcast_routes();
                tracing::info!(?summary, "routing reloaded");
                Ok(summary)
            }),
        )
    }
}

impl Handler<Snapshot> for Root {
    type Result = ResponseFuture<TreeSnapshot>;

    fn handle(&mut self, _: Snapshot, _: &mut Self::Context) -> Self::Result {
        let mut carriers: Vec<CarrierStatus> = self.status.values().cloned().collect();
        carriers.sort_by(|a, b| (&a.carrier, a.bind).cmp(&(&b.carrier, b.bind)));
        let mut routes: Vec<String> = self.routes.keys().cloned().collect();
        routes.sort();
        let shards = (0..self.broker.topology().shards()).collect();
        let monitor = self.monitor.clone();
        let queue_depths = self.depths.clone();
        let paused = self.paused.clone();
        let draining = self.draining.clone();
        Box::pin(async move {
            let restarts = match monitor {
                Some(m) => m.send(Restarts).await.unwrap_or_default(),
                None => HashMap::new(),
            };
            TreeSnapshot {
                shards,
                routes,
                carriers,
                restarts,
                queue_depths,
                paused,
                draining,
            }
        })
    }
}

impl Handler<CrashActor> for Root {
    type Result = bool;

    fn handle(&mut self, msg: CrashActor, _: &mut Self::Context) -> bool {
        let parts: Vec<&str> = msg.0.split(':').collect();
        match parts.as_slice() {
            ["carrier", id, bind] => {
                let Ok(bind) = bind.parse::<u32>() else {
                    return false;
                };
                match self.carriers.get(&((*id).to_owned(), bind)) {
                    Some(addr) => {
                        addr.do_send(Crash);
                        true
                    }
                    None => false,
                }
            }
            ["route", id] => match self.routes.get(*id) {
                Some(addr) => {
                    addr.do_send(CrashRoute);
                    true
                }
                None => false,
            },
            _ => false,
        }
    }
}

impl Handler<Shutdown> for Root {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: Shutdown, _: &mut Self::Context) -> Self::Result {
        // The monitor must not bring back what we stop.
        if let Some(m) = self.monitor.take() {
            drop(m);
        }
        for (_, r) in self.rerouters.drain() {
            r.do_send(StopRerouting);
        }
        let carriers: Vec<Addr<CarrierConnection>> = self.carriers.values().cloned().collect();
        let thread = self.carrier_thread.take();
        Box::pin(async move {
            let drains = carriers.iter().map(|c| c.send(Drain));
            futures::future::join_all(drains).await;
            // Drained and unbound: their thread can go.
            if let Some(thread) = thread {
                thread.stop();
            }
        })
    }
}
