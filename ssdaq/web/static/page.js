// The shifter's live page. Read-only: it draws what ssdaq-web sends and sends nothing back.
//
// /api/geometry gives each pixel's focal-plane row and column (ssdaq.data.mapping, as ssdaq-view
// draws), /api/history the rates of the last minutes, and the WebSocket /api/live the rest:
// binary messages are SSReadouts exactly as published (32-byte header of four little-endian
// uint64: readout number, TACK ns, CPU s, CPU ns; then 32 x 64 float64 mV, NaN when absent),
// text messages the status of each poll as JSON. A readout is applied in one synchronous step,
// number and values together, so nothing can read one readout's number beside another's values.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
// matplotlib's viridis at 17 evenly spaced points, the colour map of ssdaq-view
const VIRIDIS = ["#440154", "#48186a", "#472d7b", "#424086", "#3b528b", "#33638d", "#2c728e",
  "#26828e", "#21918c", "#1fa088", "#28ae80", "#3fbc73", "#5ec962", "#84d44b", "#addc30",
  "#d8e219", "#fde725"];
const ABSENT = "#6a6f78";
const SERIES_COLOURS = { trigger: "#ef8a3c", readout: "#4fc3f7", timestamp: "#c792ea" };
const STALE_S = 3;  // a readout older than this is flagged on the page

const state = {
  pixels: [],          // the 2048 <rect>s, in readout order (64 * module + pixel)
  labels: [],          // the 32 module labels
  values: null,        // Float64Array of the shown readout
  shownAt: null,       // Date.now() when the shown readout arrived
  lastStatus: null,
  history: { window_s: 600, series: [], points: [] },
  hovered: -1,
  lut: buildLut(256),
};
// For tests and the benchmark: when each readout was applied (ms since the epoch).
window.ssdaq = { frames: [], maxFrames: 500 };

function $(id) { return document.getElementById(id); }
function el(tag, attrs, parent) {
  const e = document.createElementNS(SVG, tag);
  for (const k in attrs) e.setAttribute(k, attrs[k]);
  if (parent) parent.appendChild(e);
  return e;
}

function buildLut(n) {
  const rgb = VIRIDIS.map(h => [1, 3, 5].map(i => parseInt(h.slice(i, i + 2), 16)));
  const out = [];
  for (let i = 0; i < n; i++) {
    const x = i / (n - 1) * (rgb.length - 1), j = Math.min(Math.floor(x), rgb.length - 2), f = x - j;
    const c = rgb[j].map((v, k) => Math.round(v + (rgb[j + 1][k] - v) * f));
    out.push(`rgb(${c[0]},${c[1]},${c[2]})`);
  }
  return out;
}

// ------------------------------------------------------------------------------- the camera

function buildCamera(geo) {
  const svg = $("camera"), side = geo.module_side, rows = geo.shape[0];
  const pixelsLayer = el("g", {}, svg), outlineLayer = el("g", {}, svg);
  for (let i = 0; i < geo.row.length; i++) {
    const module = Math.floor(i / geo.pixels_per_module), pixel = i % geo.pixels_per_module;
    const r = el("rect", { class: "px", x: geo.col[i], y: rows - 1 - geo.row[i], width: 0.94,
      height: 0.94, fill: ABSENT, "data-module": module, "data-pixel": pixel, "data-value": "" },
      pixelsLayer);
    r.dataset.index = i;
    state.pixels.push(r);
  }
  geo.module_grid.forEach(([gr, gc], slot) => {
    const x = gc * side - 0.03, y = (rows / side - 1 - gr) * side - 0.03;
    el("rect", { class: "outline", x: x, y: y, width: side, height: side }, outlineLayer);
    const t = el("text", { class: "label", x: x + 0.35, y: y + 1.45 }, outlineLayer);
    t.textContent = slot;
    state.labels.push(t);
  });
  svg.addEventListener("mouseover", e => hover(e.target.dataset.index, e));
  svg.addEventListener("mousemove", e => moveTooltip(e));
  svg.addEventListener("mouseleave", () => hover(undefined));
}

function applyReadout(buffer) {
  const head = new DataView(buffer, 0, 32);
  const number = head.getBigUint64(0, true), tack = head.getBigUint64(8, true);
  const cpuMs = Number(head.getBigUint64(16, true)) * 1000 + Number(head.getBigUint64(24, true)) / 1e6;
  const values = littleEndianFloats(buffer, 32, state.pixels.length);
  let lo = Infinity, hi = -Infinity;
  for (const v of values) if (!Number.isNaN(v)) { if (v < lo) lo = v; if (v > hi) hi = v; }
  const span = hi > lo ? hi - lo : 1, lut = state.lut, n = lut.length - 1;
  const present = new Array(state.labels.length).fill(false);
  for (let i = 0; i < values.length; i++) {
    const v = values[i], r = state.pixels[i];
    if (Number.isNaN(v)) {
      r.setAttribute("data-value", "");
      r.setAttribute("fill", ABSENT);
    } else {
      present[Math.floor(i / 64)] = true;
      r.setAttribute("data-value", String(v));
      r.setAttribute("fill", lut[Math.round((v - lo) / span * n)]);
    }
  }
  state.labels.forEach((t, m) => { t.textContent = present[m] ? `${m}` : `${m} absent`; });
  $("readout-number").textContent = number.toString();
  $("readout-tack").textContent = tack.toString();
  $("readout-time").textContent = new Date(cpuMs).toISOString().replace("T", " ").slice(0, 23) + " UTC";
  const count = present.filter(Boolean).length;
  const mods = $("readout-modules");
  mods.textContent = `${count}/${present.length} modules`;
  mods.className = count === present.length ? "ok" : "warn";
  $("scale-min").textContent = Number.isFinite(lo) ? lo.toFixed(1) : "–";
  $("scale-max").textContent = Number.isFinite(hi) ? hi.toFixed(1) : "–";
  state.values = values;
  state.shownAt = Date.now();
  if (state.hovered >= 0) hover(state.hovered);
  const log = window.ssdaq.frames;
  log.push({ number: Number(number), t_ms: performance.timeOrigin + performance.now() });
  if (log.length > window.ssdaq.maxFrames) log.splice(0, log.length - window.ssdaq.maxFrames);
}

function littleEndianFloats(buffer, offset, count) {
  const probe = new Uint8Array(new Float64Array([1]).buffer);
  if (probe[7] === 0x3f) return new Float64Array(buffer, offset, count);  // this host is little-endian
  const view = new DataView(buffer), out = new Float64Array(count);
  for (let i = 0; i < count; i++) out[i] = view.getFloat64(offset + 8 * i, true);
  return out;
}

function hover(index, event) {
  const tip = $("tooltip");
  if (index === undefined) { state.hovered = -1; tip.hidden = true; return; }
  state.hovered = Number(index);
  const r = state.pixels[state.hovered];
  const v = r.getAttribute("data-value");
  const text = `module ${r.dataset.module}, pixel ${r.dataset.pixel}: ` +
    (v === "" ? "absent" : `${Number(v).toFixed(2)} mV`);
  $("pixel-info").textContent = text;
  tip.textContent = text;
  tip.hidden = false;
  if (event) moveTooltip(event);
}

function moveTooltip(e) {
  const tip = $("tooltip");
  tip.style.left = `${e.clientX + 14}px`;
  tip.style.top = `${e.clientY + 12}px`;
}

function drawScaleBar() {
  const stops = VIRIDIS.slice().reverse().join(", ");
  $("scale-bar").style.background = `linear-gradient(${stops})`;
}

// ------------------------------------------------------------------------------- modules

function buildModules(geo) {
  const grid = $("modules"), side = geo.shape[0] / geo.module_side;
  const cells = new Map();
  geo.module_grid.forEach(([gr, gc], slot) => cells.set(`${gr},${gc}`, slot));
  for (let gr = side - 1; gr >= 0; gr--) {   // the camera's y up, as the camera is drawn
    for (let gc = 0; gc < side; gc++) {
      const d = document.createElement("div");
      const slot = cells.get(`${gr},${gc}`);
      if (slot !== undefined) {
        d.className = "cell";
        d.dataset.module = slot;
        d.dataset.present = "false";
        d.textContent = slot;
        d.title = `module ${slot}: no status yet`;
      }
      grid.appendChild(d);
    }
  }
}

function updateModules(states) {
  const readout = states.find(s => s.status && Array.isArray(s.status.absent_modules) && s.status.modules);
  const cells = document.querySelectorAll("#modules [data-module]");
  let present = 0;
  for (const cell of cells) {
    const slot = cell.dataset.module;
    let on = false, title = `module ${slot}: readout receiver not answering`;
    cell.classList.remove("unexpected");
    if (readout) {
      const info = readout.status.modules[slot];
      if (info === undefined) {
        cell.classList.add("unexpected");
        title = `module ${slot}: not expected by the readout receiver`;
      } else {
        on = !readout.status.absent_modules.includes(Number(slot));
        const ago = info.last_seen_s_ago;
        title = `module ${slot}: ${on ? "present" : "absent"}, last data ` +
          (ago === null ? "never" : `${ago.toFixed(1)} s ago`) + `, ${info.packets} packets`;
      }
    }
    present += on;
    cell.dataset.present = on ? "true" : "false";
    cell.title = title;
  }
  const summary = $("modules-summary");
  summary.textContent = readout ? `${present}/${readout.status.modules ? Object.keys(readout.status.modules).length : 0} present` : "(no readout receiver)";
}

// ------------------------------------------------------------------------------- receivers

function fmt(v, digits = 1) { return v === null || v === undefined ? "–" : Number(v).toFixed(digits); }

function cell(tr, key, cls) {
  let td = tr.querySelector(`td[data-field="${key}"]`);
  if (!td) {
    td = document.createElement("td");
    td.dataset.field = key;
    if (cls) td.className = cls;
    tr.appendChild(td);
  }
  return td;
}

function updateReceivers(states) {
  const body = document.querySelector("#receivers tbody");
  const seen = new Set();
  for (const s of states) {
    seen.add(s.name);
    let tr = body.querySelector(`tr[data-receiver="${CSS.escape(s.name)}"]`), extra;
    if (!tr) {
      tr = document.createElement("tr");
      tr.dataset.receiver = s.name;
      extra = document.createElement("tr");
      extra.className = "counters";
      extra.dataset.countersOf = s.name;
      extra.hidden = true;
      extra.appendChild(document.createElement("td")).colSpan = 10;
      body.append(tr, extra);
    } else {
      extra = tr.nextElementSibling;
    }
    const st = s.status || {}, counters = st.counters || {}, rates = st.rates || {};
    const name = cell(tr, "name", "name");
    name.textContent = s.name;
    name.onclick = () => { extra.hidden = !extra.hidden; };
    cell(tr, "state").textContent = s.unit_state || (s.status ? "running" : "–");
    const health = cell(tr, "health");
    health.textContent = s.health;
    health.className = s.health === "ok" ? "ok" : (s.running || s.health === "failed" ? "bad" : "warn");
    cell(tr, "in_rate", "num").textContent = fmt(rates.received);
    cell(tr, "out_rate", "num").textContent = fmt(rates.published);
    cell(tr, "received", "num").textContent = counters.received ?? "–";
    cell(tr, "published", "num").textContent = counters.published ?? "–";
    cell(tr, "last_data", "num").textContent = s.last_data_s_ago === null ? "–" : `${fmt(s.last_data_s_ago)} s`;
    const lost = cell(tr, "lost");
    const losses = Object.entries(st.lost || {}).filter(([, v]) => v > 0);
    const total = losses.reduce((a, [, v]) => a + v, 0);
    lost.textContent = st.lost ? (total ? `${total}: ` + losses.map(([k, v]) => `${k} ${v}`).join(", ") : "0") : "–";
    lost.className = total ? "bad" : "";
    lost.dataset.total = st.lost ? total : "";
    cell(tr, "status", "status").textContent = s.status_line || s.error || "";
    const td = extra.firstChild;
    td.replaceChildren(...Object.entries(counters).map(([k, v]) => {
      const span = document.createElement("span");
      span.dataset.counter = k;
      span.dataset.count = v;
      span.textContent = `${k} ${v}`;
      return span;
    }));
  }
  for (const tr of body.querySelectorAll("tr[data-receiver]")) {
    if (!seen.has(tr.dataset.receiver)) { tr.nextElementSibling.remove(); tr.remove(); }
  }
}

// ------------------------------------------------------------------------------- rates

function addRatePoint(point) {
  const h = state.history;
  h.points.push(point);
  const cut = point.t - h.window_s;
  while (h.points.length && h.points[0].t < cut) h.points.shift();
  drawRates();
}

function drawRates() {
  const svg = $("rates"), h = state.history, W = 400, H = 170, pad = 18;
  svg.replaceChildren();
  const now = h.points.length ? h.points[h.points.length - 1].t : Date.now() / 1000;
  let top = 1;
  for (const p of h.points) for (const s of h.series) if (p[s] !== null && p[s] > top) top = p[s];
  top = niceCeil(top * 1.1);
  for (let k = 0; k <= 4; k++) {
    const y = pad + (H - 2 * pad) * k / 4;
    el("line", { class: "grid", x1: 0, x2: W, y1: y, y2: y }, svg);
    el("text", { x: 2, y: y - 2 }, svg).textContent = fmt(top * (1 - k / 4), top < 10 ? 1 : 0);
  }
  const minutes = h.window_s / 60;
  for (let m = 0; m <= minutes; m += Math.max(1, Math.round(minutes / 5))) {
    const x = W - W * m / minutes, anchor = m === 0 ? "end" : x < 30 ? "start" : "middle";
    el("text", { x: x, y: H - 3, "text-anchor": anchor }, svg).textContent = m ? `-${m} min` : "now";
  }
  for (const s of h.series) {
    let pts = "";
    for (const p of h.points) {
      if (p[s] === null) continue;
      const x = W - (now - p.t) / h.window_s * W, y = pad + (H - 2 * pad) * (1 - p[s] / top);
      pts += `${x.toFixed(1)},${y.toFixed(1)} `;
    }
    el("polyline", { points: pts, stroke: SERIES_COLOURS[s] || "#fff" }, svg);
  }
  const last = h.points[h.points.length - 1] || {};
  $("rates-legend").replaceChildren(...h.series.map(s => {
    const span = document.createElement("span");
    span.dataset.series = s;
    span.innerHTML = `<i style="background:${SERIES_COLOURS[s]}"></i>`;
    span.append(`${s} ${fmt(last[s])}/s`);
    return span;
  }));
}

function niceCeil(v) {
  const p = Math.pow(10, Math.floor(Math.log10(v))), m = v / p;
  return (m <= 1 ? 1 : m <= 2 ? 2 : m <= 5 ? 5 : 10) * p;
}

// ------------------------------------------------------------------------------- status

function applyStatus(msg) {
  state.lastStatus = msg;
  const states = msg.status.receivers;
  updateReceivers(states);
  updateModules(states);
  addRatePoint(msg.rates);
  const bad = states.filter(s => s.running && s.health !== "ok");
  const summary = $("summary");
  summary.textContent = bad.length ? `${bad.length} not healthy: ${bad.map(s => s.name).join(", ")}`
    : `${states.filter(s => s.health === "ok").length} receivers and writers healthy`;
  summary.className = bad.length ? "bad" : "ok";
  const w = msg.web;
  $("footer").textContent = `ssdaq-web: ${w.clients} live page(s) of at most ${w.max_clients}, ` +
    `${w.readouts} readouts received, ${w.missed_readouts} missed on the way; status polled ` +
    `${new Date(msg.status.taken_unix * 1000).toISOString().slice(11, 19)} UTC`;
}

// ------------------------------------------------------------------------------- connection

function connect(delay) {
  const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/api/live`;
  const ws = new WebSocket(url);
  ws.binaryType = "arraybuffer";
  const conn = $("connection");
  ws.onopen = () => { conn.textContent = "live"; conn.className = "ok"; conn.dataset.state = "live"; delay = 1000; };
  ws.onmessage = e => {
    if (typeof e.data === "string") applyStatus(JSON.parse(e.data));
    else applyReadout(e.data);
  };
  ws.onclose = () => {
    conn.textContent = `connection lost, retrying in ${delay / 1000} s`;
    conn.className = "bad";
    conn.dataset.state = "closed";
    setTimeout(() => connect(Math.min(delay * 2, 10000)), delay);
  };
}

function tick() {
  const now = new Date();
  $("clock").textContent = now.toISOString().replace("T", " ").slice(0, 19) + " UTC";
  const age = $("readout-age");
  if (state.shownAt === null) {
    age.textContent = "no readout yet";
    age.className = "warn";
  } else {
    const s = (Date.now() - state.shownAt) / 1000;
    age.textContent = s > STALE_S ? `no new readout for ${s.toFixed(0)} s` : "";
    age.className = s > STALE_S ? "bad" : "";
  }
}

async function start() {
  drawScaleBar();
  const [geo, hist] = await Promise.all(["/api/geometry", "/api/history"].map(
    u => fetch(u).then(r => r.json())));
  buildCamera(geo);
  buildModules(geo);
  state.history = hist;
  $("rates-window").textContent = Math.round(hist.window_s / 60);
  drawRates();
  tick();
  setInterval(tick, 1000);
  connect(1000);
}

start();
