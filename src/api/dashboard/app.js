// Herald dashboard: plain JavaScript, no dependencies. Reads the admin API
// (GET /v1/admin/actors, GET /v1/admin/webhooks) and the admin stream
// (WebSocket /v1/admin/stream: per-second counts and live status events).
"use strict";

const TOKEN_KEY = "herald.admin.token";
const FAILED = new Set(["failed", "undelivered", "rejected", "expired", "canceled", "busy", "no_answer"]);
const DELIVERED = new Set(["delivered", "read", "completed"]);
const HISTORY = 120; // seconds on the chart
const SHOWN_MESSAGES = 15;

const $ = (id) => document.getElementById(id);
const token = () => sessionStorage.getItem(TOKEN_KEY) || "";

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

class Unauthorized extends Error {}

async function api(method, path, body) {
  const headers = {};
  if (token()) headers["Authorization"] = "Bearer " + token();
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  if (r.status === 401 || r.status === 403) throw new Unauthorized();
  const data = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error((data.error && (data.error.message || data.error.code)) || r.statusText);
  return data;
}

// ---- login ------------------------------------------------------------------

function askToken(message) {
  $("login").hidden = false;
  $("main").hidden = true;
  $("login-error").textContent = message || "";
}

$("login-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, $("token").value.trim());
  $("login").hidden = true;
  $("main").hidden = false;
  start();
});

// ---- rates chart --------------------------------------------------------------

const series = { accepted: [], sent: [], delivered: [], failed: [] };
let lastAccepted = null;

function onTick(t) {
  const counts = t.counts || {};
  let sent = 0, delivered = 0, failed = 0;
  for (const [status, n] of Object.entries(counts)) {
    if (status === "sent") sent += n;
    else if (DELIVERED.has(status)) delivered += n;
    else if (FAILED.has(status)) failed += n;
  }
  const accepted = lastAccepted === null ? 0 : Math.max(0, t.accepted_total - lastAccepted);
  lastAccepted = t.accepted_total;
  const now = { accepted, sent, delivered, failed };
  for (const k of Object.keys(series)) {
    series[k].push(now[k]);
    if (series[k].length > HISTORY) series[k].shift();
    $("rate-" + k).textContent = now[k];
  }
  drawChart();
}

function drawChart() {
  const c = $("chart");
  const ratio = window.devicePixelRatio || 1;
  const w = c.clientWidth, h = c.clientHeight;
  if (c.width !== w * ratio) { c.width = w * ratio; c.height = h * ratio; }
  const g = c.getContext("2d");
  g.setTransform(ratio, 0, 0, ratio, 0, 0);
  g.clearRect(0, 0, w, h);
  const max = Math.max(5, ...Object.values(series).flat());
  g.strokeStyle = "#e3e6ec"; g.fillStyle = "#6b7385"; g.font = "11px system-ui";
  for (let i = 0; i <= 4; i++) {
    const y = 8 + (h - 20) * i / 4;
    g.beginPath(); g.moveTo(36, y); g.lineTo(w, y); g.stroke();
    g.fillText(Math.round(max * (1 - i / 4)), 2, y + 4);
  }
  const colors = getComputedStyle(document.documentElement);
  for (const k of Object.keys(series)) {
    const s = series[k];
    g.strokeStyle = colors.getPropertyValue("--" + k).trim();
    g.lineWidth = 2;
    g.beginPath();
    s.forEach((v, i) => {
      const x = 36 + (w - 40) * (HISTORY - s.length + i) / (HISTORY - 1);
      const y = 8 + (h - 20) * (1 - v / max);
      if (i === 0) g.moveTo(x, y); else g.lineTo(x, y);
    });
    g.stroke();
  }
}

// ---- last messages ------------------------------------------------------------

const messages = new Map(); // id -> {tenant, channel, events: [{status, at, seq}]}

function onEvent(e) {
  let m = messages.get(e.message_id);
  if (!m) {
    m = { tenant: e.tenant_id, channel: e.channel, events: [] };
    messages.set(e.message_id, m);
  }
  if (!m.events.some((x) => x.seq === e.seq)) m.events.push({ status: e.status, at: e.at, seq: e.seq });
  m.events.sort((a, b) => a.seq - b.seq);
  // Newest first: re-insert to move it to the end of the map's order.
  messages.delete(e.message_id);
  messages.set(e.message_id, m);
  while (messages.size > 200) messages.delete(messages.keys().next().value);
  renderMessages();
}

let renderPending = false;
function renderMessages() {
  if (renderPending) return;
  renderPending = true;
  requestAnimationFrame(() => {
    renderPending = false;
    const body = $("messages").tBodies[0];
    body.replaceChildren();
    const ids = [...messages.keys()].reverse().slice(0, SHOWN_MESSAGES);
    for (const id of ids) {
      const m = messages.get(id);
      const last = m.events[m.events.length - 1];
      const timeline = el("td", { class: "timeline" });
      for (const ev of m.events) {
        timeline.append(el("span", { class: "pill " + ev.status }, ev.status),
          el("span", { class: "at" }, new Date(ev.at).toLocaleTimeString()));
      }
      body.append(el("tr", { "data-message-id": id, "data-status": last ? last.status : "" },
        el("td", {}, id), el("td", {}, m.tenant || ""), el("td", {}, m.channel || ""), timeline));
    }
  });
}

// ---- carriers and the tree ----------------------------------------------------

function carrierState(c, snap) {
  if (snap.draining && snap.draining.includes(c.carrier)) return "draining";
  if (c.paused) return "paused";
  if (c.standby) return "standby";
  if (!c.bound) return "unbound";
  if (c.breaker_open) return "breaker";
  if (c.rate < c.configured_rate) return "throttled";
  return "bound";
}

async function control(carrier, action) {
  try {
    await api("POST", `/v1/admin/carriers/${encodeURIComponent(carrier)}/${action}`);
    $("control-result").textContent = `${carrier}: ${action} done`;
  } catch (e) {
    $("control-result").textContent = `${carrier}: ${action} refused: ${e.message}`;
  }
  refreshActors();
}

async function refreshActors() {
  let snap;
  try {
    snap = await api("GET", "/v1/admin/actors");
  } catch (e) {
    if (e instanceof Unauthorized) return askToken(token() ? "invalid token" : "");
    $("tree").textContent = "actor tree: " + e.message;
    return;
  }
  const body = $("carriers").tBodies[0];
  body.replaceChildren();
  for (const c of snap.carriers) {
    const state = carrierState(c, snap);
    const restarts = c.restarts + (snap.restarts[`carrier:${c.carrier}:${c.bind}`] || 0);
    const held = c.paused;
    body.append(el("tr", { "data-carrier": c.carrier, "data-state": state },
      el("td", {}, c.carrier), el("td", {}, c.bind),
      el("td", {}, el("span", { class: "pill " + state }, state)),
      el("td", {}, `${c.rate.toFixed(1)} / ${c.configured_rate.toFixed(1)}`),
      el("td", {}, snap.queue_depths[c.carrier] ?? "–"),
      el("td", {}, c.in_flight),
      el("td", {}, c.latency_ms == null ? "–" : c.latency_ms.toFixed(1) + " ms"),
      el("td", {}, restarts),
      el("td", {},
        held ? el("button", { onclick: () => control(c.carrier, "resume") }, "Resume")
             : el("button", { onclick: () => control(c.carrier, "pause") }, "Pause"),
        " ",
        el("button", { onclick: () => control(c.carrier, "drain") }, "Drain"))));
  }
  const restarts = Object.entries(snap.restarts).filter(([, n]) => n > 0);
  $("tree").replaceChildren(
    el("div", {}, "root"),
    el("ul", {},
      el("li", {}, `HealthMonitor: ${restarts.length ? restarts.map(([a, n]) => `${a} ×${n}`).join(", ") : "no restarts"}`),
      el("li", {}, `ingress shards: ${snap.shards.length}`),
      el("li", {}, "routes: ", snap.routes.join(", ")),
      el("li", {}, "carrier connections: ",
        snap.carriers.map((c) => `${c.carrier}#${c.bind} (${carrierState(c, snap)}, restarts ${c.restarts})`).join(", "))));
}

async function refreshWebhooks() {
  let data;
  try {
    data = await api("GET", "/v1/admin/webhooks");
  } catch (e) {
    return;
  }
  const body = $("webhooks").tBodies[0];
  body.replaceChildren();
  for (const w of data.data) {
    body.append(el("tr", {},
      el("td", {}, w.id), el("td", {}, w.tenant_id), el("td", { class: "url" }, w.url),
      el("td", {}, el("span", { class: "pill " + (w.enabled ? "on" : "off") }, w.enabled ? "yes" : "no")),
      el("td", {}, w.failures_24h), el("td", {}, w.successes_24h),
      el("td", {}, w.failing_since ? new Date(w.failing_since).toLocaleString() : "–")));
  }
  if (!data.data.length) body.append(el("tr", {}, el("td", { colspan: 7 }, "no endpoints")));
}

// ---- test message -------------------------------------------------------------

$("send-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const channel = $("send-channel").value;
  const msg = { channel, to: $("send-to").value.trim(), from: $("send-from").value.trim() };
  if (channel === "sms") msg.body = $("send-body").value;
  if (channel === "voice") msg.say = $("send-body").value;
  if (channel === "whatsapp") msg.template = { name: "hello", language: "en", params: [$("send-body").value] };
  try {
    const m = await api("POST", "/v1/admin/messages", msg);
    $("send-result").textContent = `accepted ${m.id} (${m.status})`;
    $("send-result").dataset.messageId = m.id;
  } catch (e) {
    $("send-result").textContent = e instanceof Unauthorized ? "admin token needed" : "refused: " + e.message;
  }
});

// ---- the admin stream ---------------------------------------------------------

let socket = null;
function connect() {
  const url = new URL("/v1/admin/stream", location.href);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  if (token()) url.searchParams.set("access_token", token());
  socket = new WebSocket(url);
  socket.onopen = () => { $("link").textContent = "live"; $("link").className = "pill on"; };
  socket.onmessage = (m) => {
    const frame = JSON.parse(m.data);
    if (frame.type === "tick") onTick(frame);
    else if (frame.type === "event") onEvent(frame);
  };
  socket.onclose = () => {
    $("link").textContent = "reconnecting…"; $("link").className = "pill off";
    setTimeout(connect, 2000);
  };
}

let started = false;
async function start() {
  try {
    await api("GET", "/v1/admin/actors");
  } catch (e) {
    if (e instanceof Unauthorized) return askToken(token() ? "invalid token" : "");
  }
  if (started) return;
  started = true;
  connect();
  refreshActors();
  refreshWebhooks();
  setInterval(refreshActors, 2000);
  setInterval(refreshWebhooks, 5000);
  window.addEventListener("resize", drawChart);
}

start();
