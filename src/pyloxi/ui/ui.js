// pyloxi web view: polls the REST API once a second and draws what it finds.
// Packets/s come from the endpoints' packet counters (differences between polls), active
// flows from the conntrack table, events from what changed between two polls.
"use strict";

const API = "/netlox/v1";
const PERIOD_MS = 1000;
const HISTORY = 60;        // samples kept per chart (a minute)
const MAX_EVENTS = 200;
const MAX_CT_ROWS = 500;   // rows drawn; the count shows how many matched
const TOKEN_KEY = "pyloxi-token";

const view = {
  counters: new Map(),   // endpoint key -> {packets, at}
  series: new Map(),     // endpoint key -> {pps: [], flows: []}
  rules: null,           // rule key -> Map(endpoint address -> state); null before the first poll
  health: null,          // probe name -> currState
  events: [],
  conntrack: [],
};

class AuthNeeded extends Error {}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v;
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : String(c));
  return node;
}

function hostPort(ip, port) {
  return ip.includes(":") ? `[${ip}]:${port}` : `${ip}:${port}`;
}

function ruleKey(sa) {
  const ports = sa.portMax && sa.portMax !== sa.port ? `${sa.port}-${sa.portMax}` : `${sa.port}`;
  return `${hostPort(sa.externalIP, ports)}/${sa.protocol}`;
}

async function getJSON(path) {
  const headers = {};
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = `Bearer ${token}`;
  const r = await fetch(API + path, {headers, cache: "no-store"});
  if (r.status === 401) throw new AuthNeeded("the API wants a token");
  if (r.status === 404) return null;  // e.g. no endpoint monitoring in this daemon
  if (!r.ok) throw new Error(`${path}: HTTP ${r.status}`);
  return r.json();
}

// "dnat-10.0.1.2:80:w1", "fdnat-10.0.0.9,10.0.1.2:80:w1", "ddsr-[::1]:80:w1" -> "ip:port"
function flowEndpoint(act) {
  const m = /^(?:dnat-|fdnat-[^,]*,|ddsr-)(.+):(\d+):w\d+$/.exec(act || "");
  return m ? hostPort(m[1].replace(/^\[|\]$/g, ""), m[2]) : null;
}

function flowsPerEndpoint(ct) {
  const counts = new Map();  // "vip:port/proto ep" -> flows
  for (const c of ct) {
    if (c.conntrackState !== "est") continue;  // active: established, not closing
    const ep = flowEndpoint(c.conntrackAct);
    if (!ep) continue;
    const key = `${hostPort(c.destinationIP, c.destinationPort)}/${c.protocol} ${ep}`;
    counts.set(key, (counts.get(key) || 0) + 1);
  }
  return counts;
}

function addEvent(kind, text) {
  view.events.push({at: new Date(), kind, text});
  if (view.events.length > MAX_EVENTS) view.events.shift();
}

function diffRules(rules, health) {
  const now = new Map();
  for (const r of rules) {
    const eps = new Map();
    const port = r.serviceArguments.port;
    for (const e of r.endpoints || []) {
      eps.set(hostPort(e.endpointIP, e.targetPort || port), e.state || "");
    }
    now.set(ruleKey(r.serviceArguments), eps);
  }
  const healthNow = new Map((health || []).map(h => [h.name || h.hostName, h.currState]));
  if (view.rules === null) {
    addEvent("info", `connected: ${now.size} service(s)`);
  } else {
    for (const [key, eps] of now) {
      const before = view.rules.get(key);
      if (!before) { addEvent("rule", `service ${key} added (${eps.size} endpoints)`); continue; }
      for (const [ep, st] of eps) {
        const was = before.get(ep);
        if (was === undefined) addEvent("rule", `${key}: endpoint ${ep} added`);
        else if (was !== st) {
          addEvent(st === "inactive" ? "down" : "up",
                   `${key}: endpoint ${ep} ${st === "inactive" ? "down" : "up"} (${st})`);
        }
      }
      for (const ep of before.keys()) {
        if (!eps.has(ep)) addEvent("rule", `${key}: endpoint ${ep} removed`);
      }
    }
    for (const key of view.rules.keys()) {
      if (!now.has(key)) addEvent("rule", `service ${key} deleted`);
    }
    for (const [name, st] of healthNow) {
      const was = view.health.get(name);
      if (was !== undefined && was !== st) {
        addEvent(st === "ok" ? "up" : "down", `probe ${name}: ${was} → ${st}`);
      }
    }
  }
  view.rules = now;
  view.health = healthNow;
}

function sample(key, pps, flows) {
  let s = view.series.get(key);
  if (!s) { s = {pps: [], flows: [], seen: 0}; view.series.set(key, s); }
  s.pps.push(pps); s.flows.push(flows);
  if (s.pps.length > HISTORY) { s.pps.shift(); s.flows.shift(); }
  return s;
}

function packetRate(key, counter, at) {
  const packets = Number((counter || "0:0").split(":")[0]) || 0;
  const prev = view.counters.get(key);
  view.counters.set(key, {packets, at});
  if (!prev || at <= prev.at || packets < prev.packets) return 0;
  return (packets - prev.packets) / ((at - prev.at) / 1000);
}

const SVG = "http://www.w3.org/2000/svg";

function sparkline(series) {
  const w = 240, h = 32;
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("class", "spark");
  svg.setAttribute("width", w); svg.setAttribute("height", h);
  svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
  for (const [cls, data] of [["pps", series.pps], ["flows", series.flows]]) {
    const top = Math.max(1, ...data);
    const step = w / (HISTORY - 1);
    const x0 = w - step * (data.length - 1);
    const pts = data.map((v, i) =>
      `${(x0 + i * step).toFixed(1)},${(h - 1 - (v / top) * (h - 2)).toFixed(1)}`);
    const line = document.createElementNS(SVG, "polyline");
    line.setAttribute("class", cls);
    line.setAttribute("points", pts.join(" "));
    svg.append(line);
  }
  return svg;
}

function probeFor(ep, proto, port, health) {
  for (const h of health || []) {
    if (h.name === `${ep.endpointIP}_${proto}_${port}`) return h;
  }
  return (health || []).find(h => h.hostName === ep.endpointIP) || null;
}

function drawServices(rules, health, flows, at) {
  const box = document.getElementById("vips");
  const cards = [];
  const live = new Set();
  for (const r of rules) {
    const sa = r.serviceArguments;
    const key = ruleKey(sa);
    const rows = [];
    let totalPps = 0, totalFlows = 0;
    for (const e of r.endpoints || []) {
      const port = e.targetPort || sa.port;
      const addr = hostPort(e.endpointIP, port);
      const skey = `${key} ${addr}`;
      live.add(skey);
      const pps = packetRate(skey, e.counter, at);
      const n = flows.get(`${hostPort(sa.externalIP, sa.port)}/${sa.protocol} ${addr}`) || 0;
      totalPps += pps; totalFlows += n;
      const series = sample(skey, pps, n);
      const probe = probeFor(e, sa.protocol, port, health);
      const st = e.state || "";
      rows.push(el("tr", {"class": st === "inactive" ? "endpoint down" : "endpoint",
                          "data-endpoint": addr, "data-state": st},
        el("td", {}, addr),
        el("td", {"class": "num"}, e.weight),
        el("td", {"class": `state ${st}`}, st || "—"),
        el("td", {"class": `health ${probe ? probe.currState : ""}`},
           probe ? `${probe.currState} (${probe.probeType || "ping"})` : "—"),
        el("td", {"class": "num pps"}, pps.toFixed(1)),
        el("td", {"class": "num flows"}, n),
        el("td", {}, sparkline(series))));
    }
    const meta = [sa.mode || "default", sa.sel || "rr"];
    if (sa.name) meta.unshift(sa.name);
    if (sa.monitor) meta.push("monitored");
    cards.push(el("div", {"class": "vip", "data-vip": key},
      el("h3", {}, el("span", {"class": "key"}, key),
         el("span", {"class": "meta"}, meta.join(" · ")),
         el("span", {"class": "meta"}, `${totalPps.toFixed(1)} pkt/s · ${totalFlows} flows`)),
      el("table", {},
        el("thead", {}, el("tr", {}, ...["endpoint", "weight", "state", "health", "pkt/s",
                                          "flows"].map(t => el("th", {}, t)),
                        el("th", {}, "last minute: ", el("span", {"class": "pps"}, "pkt/s"), " ",
                           el("span", {"class": "flows"}, "flows")))),
        el("tbody", {}, ...rows))));
  }
  for (const k of [...view.series.keys()]) {
    if (!live.has(k)) { view.series.delete(k); view.counters.delete(k); }
  }
  if (!cards.length) cards.push(el("p", {"class": "empty"}, "no load-balancer rules"));
  box.replaceChildren(...cards);
  document.getElementById("vip-count").textContent = `(${rules.length})`;
}

function drawEvents() {
  const items = view.events.slice().reverse().map(e =>
    el("li", {"class": e.kind},
       el("time", {}, e.at.toLocaleTimeString()), e.text));
  document.getElementById("events").replaceChildren(...items);
}

function drawConntrack() {
  const q = document.getElementById("ct-search").value.trim().toLowerCase();
  const match = c => !q ||
    hostPort(c.sourceIP, c.sourcePort).toLowerCase().includes(q) ||
    hostPort(c.destinationIP, c.destinationPort).toLowerCase().includes(q) ||
    (c.conntrackAct || "").toLowerCase().includes(q);
  const hits = view.conntrack.filter(match);
  const rows = hits.slice(0, MAX_CT_ROWS).map(c => el("tr", {},
    el("td", {}, c.protocol),
    el("td", {}, hostPort(c.sourceIP, c.sourcePort)),
    el("td", {}, hostPort(c.destinationIP, c.destinationPort)),
    el("td", {}, c.conntrackState),
    el("td", {}, c.conntrackAct),
    el("td", {"class": "num"}, c.packets),
    el("td", {"class": "num"}, c.bytes),
    el("td", {}, c.servName)));
  document.querySelector("#ct tbody").replaceChildren(...rows);
  const shown = hits.length > MAX_CT_ROWS ? `, first ${MAX_CT_ROWS} shown` : "";
  document.getElementById("ct-count").textContent =
    q ? `(${hits.length} of ${view.conntrack.length} match${shown})`
      : `(${view.conntrack.length}${shown})`;
}

function setStatus(text, error) {
  const s = document.getElementById("status");
  s.textContent = text;
  s.classList.toggle("error", !!error);
}

async function poll() {
  try {
    const [lb, ct, eps] = await Promise.all([
      getJSON("/config/loadbalancer/all"), getJSON("/config/conntrack/all"),
      getJSON("/config/endpoint/all")]);
    const at = Date.now();
    const rules = (lb && lb.lbAttr) || [];
    const health = (eps && eps.Attr) || [];
    view.conntrack = (ct && ct.ctAttr) || [];
    diffRules(rules, health);
    drawServices(rules, health, flowsPerEndpoint(view.conntrack), at);
    drawEvents();
    drawConntrack();
    document.getElementById("token-form").hidden = !sessionStorage.getItem(TOKEN_KEY);
    setStatus(`updated ${new Date(at).toLocaleTimeString()}`, false);
  } catch (err) {
    if (err instanceof AuthNeeded) document.getElementById("token-form").hidden = false;
    setStatus(String(err.message || err), true);
  } finally {
    setTimeout(poll, PERIOD_MS);
  }
}

function setup() {
  const form = document.getElementById("token-form");
  form.addEventListener("submit", ev => {
    ev.preventDefault();
    const t = document.getElementById("token").value.trim();
    if (t) sessionStorage.setItem(TOKEN_KEY, t);
  });
  document.getElementById("token-forget").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    document.getElementById("token").value = "";
  });
  document.getElementById("ct-search").addEventListener("input", drawConntrack);
  poll();
}

setup();
