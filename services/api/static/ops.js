// CityWatch operations centre: map, devices, alerts, charts, live updates.
// No libraries and nothing from outside: the base map is /city.json (shipped GeoJSON),
// the charts are hand-written SVG, live updates come from /stream (Server-Sent Events).
"use strict";
(function () {
  const SVG = "http://www.w3.org/2000/svg";
  const $ = (s) => document.querySelector(s);
  const devices = new Map(); // device_id -> device (as /devices gives it, updated live)
  const circles = new Map(); // device_id -> <circle>
  let selected = null;
  let proj = null;
  let view = null; // [x, y, w, h] of the SVG viewBox
  let fullView = null;
  const areaNames = {}; // area id -> name, from /areas

  function el(name, attrs, text) {
    const e = document.createElementNS(SVG, name);
    for (const k in attrs || {}) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function h(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined) e.textContent = text;
    if (cls) e.className = cls;
    return e;
  }
  async function getJSON(url) {
    const r = await fetch(url, { cache: "no-store" });
    if (!r.ok) throw new Error(url + ": HTTP " + r.status);
    return r.json();
  }
  // Day and month name, 24-hour clock: the browser's default locale printed "12/4/2026,
  // 12:49:01 PM" for 4 December, which an operations centre in Cambodia reads as 12 April.
  const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
  const two = (n) => String(n).padStart(2, "0");
  function clock(d) {
    return `${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())}`;
  }
  function fmtTime(iso) {
    if (!iso) return "—";
    const d = new Date(iso);
    return `${d.getDate()} ${MONTHS[d.getMonth()]} ${d.getFullYear()}, ${clock(d)}`;
  }
  function fmt(v) {
    return typeof v === "number" ? (Math.abs(v) >= 100 ? v.toFixed(0) : v.toFixed(2)) : String(v);
  }

  // -- projection: equirectangular, scaled by cos(latitude), fitted to the districts ----
  function makeProjection(geo) {
    let minLon = 180, maxLon = -180, minLat = 90, maxLat = -90;
    const visit = (c) => {
      if (typeof c[0] === "number") {
        minLon = Math.min(minLon, c[0]); maxLon = Math.max(maxLon, c[0]);
        minLat = Math.min(minLat, c[1]); maxLat = Math.max(maxLat, c[1]);
      } else c.forEach(visit);
    };
    geo.features.filter((f) => f.properties.layer !== "sea").forEach((f) => visit(f.geometry.coordinates));
    const k = Math.cos(((minLat + maxLat) / 2) * Math.PI / 180);
    const scale = 1000 / Math.max((maxLon - minLon) * k, maxLat - minLat);
    return {
      xy: (lon, lat) => [(lon - minLon) * k * scale, (maxLat - lat) * scale],
      box: [-20, -20, (maxLon - minLon) * k * scale + 40, (maxLat - minLat) * scale + 40],
    };
  }
  function pathOf(coords) {
    return coords.map((ring) => "M" + ring.map((c) => proj.xy(c[0], c[1]).map((v) => v.toFixed(1)).join(",")).join("L") + "Z").join("");
  }
  function drawBase(geo) {
    const base = $("#base");
    base.textContent = "";
    for (const f of geo.features) {
      const g = f.geometry, layer = f.properties.layer;
      if (g.type === "Polygon") {
        const p = el("path", { d: pathOf(g.coordinates), class: layer });
        p.appendChild(el("title", {}, f.properties.name || layer));
        base.appendChild(p);
      } else if (g.type === "LineString") {
        base.appendChild(el("path", { d: pathOf([g.coordinates]).replace(/Z$/, ""), class: layer === "coastline" ? "coast" : layer }));
      }
      if (layer === "district") {
        const c = g.coordinates[0];
        const lon = c.reduce((a, p) => a + p[0], 0) / c.length, lat = c.reduce((a, p) => a + p[1], 0) / c.length;
        const [x, y] = proj.xy(lon, lat);
        base.appendChild(el("text", { x: x, y: y, class: "label", "text-anchor": "middle" }, f.properties.name));
      }
    }
  }
  function setView(v) {
    view = v;
    $("#map").setAttribute("viewBox", v.map((n) => n.toFixed(1)).join(" "));
    const r = Math.max(1.5, v[2] / 220);
    circles.forEach((c) => c.setAttribute("r", r.toFixed(2)));
  }
  function zoom(f, cx, cy) {
    const [x, y, w, hh] = view;
    cx = cx === undefined ? x + w / 2 : cx; cy = cy === undefined ? y + hh / 2 : cy;
    setView([cx - (cx - x) * f, cy - (cy - y) * f, w * f, hh * f]);
  }
  // The registered devices' extent, centred, with a margin and a minimum size (one device
  // alone is not a 1-pixel view). A device placed off the city's sheet (a wrong position in
  // the registry) is left out of the fit unless no device is on it, so one bad entry cannot
  // open the map on empty sea.
  function fitDevices() {
    const [bx, by, bw, bh] = fullView;
    const all = [...devices.values()].filter((d) => d.lat != null && d.lon != null).map((d) => proj.xy(d.lon, d.lat));
    const onSheet = all.filter((p) => p[0] >= bx && p[0] <= bx + bw && p[1] >= by && p[1] <= by + bh);
    const pts = onSheet.length ? onSheet : all;
    if (!pts.length) return setView(fullView);
    const xs = pts.map((p) => p[0]), ys = pts.map((p) => p[1]);
    const pad = 30;
    const x0 = Math.min(...xs), x1 = Math.max(...xs), y0 = Math.min(...ys), y1 = Math.max(...ys);
    const w = Math.max(x1 - x0 + 2 * pad, 200), hh = Math.max(y1 - y0 + 2 * pad, 150);
    setView([(x0 + x1) / 2 - w / 2, (y0 + y1) / 2 - hh / 2, w, hh]);
    $("#map").dataset.fitted = String(pts.length);
  }
  function enablePanZoom() {
    const svg = $("#map");
    svg.addEventListener("wheel", (e) => {
      e.preventDefault();
      const pt = svg.createSVGPoint(); pt.x = e.clientX; pt.y = e.clientY;
      const p = pt.matrixTransform(svg.getScreenCTM().inverse());
      zoom(e.deltaY > 0 ? 1.2 : 1 / 1.2, p.x, p.y);
    }, { passive: false });
    let drag = null;
    svg.addEventListener("pointerdown", (e) => { if (e.target.tagName !== "circle") drag = [e.clientX, e.clientY, view.slice()]; });
    window.addEventListener("pointerup", () => { drag = null; });
    svg.addEventListener("pointermove", (e) => {
      if (!drag) return;
      const s = view[2] / svg.clientWidth;
      setView([drag[2][0] - (e.clientX - drag[0]) * s, drag[2][1] - (e.clientY - drag[1]) * s, view[2], view[3]]);
    });
    $("#zoom-in").onclick = () => zoom(1 / 1.5);
    $("#zoom-out").onclick = () => zoom(1.5);
    $("#zoom-fit").onclick = () => fitDevices();
  }

  // -- devices ----------------------------------------------------------------------------
  function drawDevice(d) {
    if (d.lat == null || d.lon == null) return;
    let c = circles.get(d.device_id);
    const [x, y] = proj.xy(d.lon, d.lat);
    if (!c) {
      c = el("circle", { r: 4, tabindex: 0, role: "button" });
      c.dataset.deviceId = d.device_id;
      c.appendChild(el("title"));
      c.addEventListener("click", () => select(d.device_id));
      c.addEventListener("keydown", (e) => { if (e.key === "Enter") select(d.device_id); });
      $("#devices").appendChild(c);
      circles.set(d.device_id, c);
    }
    c.setAttribute("cx", x.toFixed(1));
    c.setAttribute("cy", y.toFixed(1));
    c.setAttribute("class", "dev state-" + d.state + (selected === d.device_id ? " selected" : ""));
    c.dataset.state = d.state;
    c.dataset.lastTime = d.last_reading_at || "";
    c.setAttribute("aria-label", (d.name || d.device_id) + " (" + d.kind + "): " + d.state);
    c.firstChild.textContent = (d.name || d.device_id) + " — " + d.kind + " — " + d.state +
      (d.refused ? " — refused: " + d.refused.reason : "");
  }
  function summary() {
    const n = { normal: 0, suspect: 0, offline: 0, alert: 0 };
    let refused = 0;  // talking, but every message refused (a clock ahead, a wrong format)
    devices.forEach((d) => { n[d.state] = (n[d.state] || 0) + 1; if (d.refused) refused += 1; });
    $("#summary").textContent = devices.size + " devices: " + n.normal + " normal, " + n.suspect +
      " suspect, " + n.offline + " offline" + (refused ? " (" + refused + " sending, but refused)" : "") +
      ", " + n.alert + " in alert";
    $("#summary").dataset.devices = String(devices.size);
  }
  async function loadDevices() {
    // Every page: a city's fleet can outgrow one page of /devices.
    const all = [];
    for (let offset = 0; offset !== null && offset !== undefined;) {
      const body = await getJSON("/devices?limit=1000&offset=" + offset);
      all.push(...body.devices);
      offset = body.next_offset;
    }
    const seen = new Set();
    for (const d of all) {
      keepNewer(d, devices.get(d.device_id));
      devices.set(d.device_id, d);
      seen.add(d.device_id);
      drawDevice(d);
    }
    for (const id of [...devices.keys()]) {
      if (!seen.has(id)) { devices.delete(id); circles.get(id)?.remove(); circles.delete(id); }
    }
    summary();
    if (selected) showDetail(selected, false);
  }

  // The API answers from the database, which the processor fills a batch after the stream
  // (read from Kafka) has shown a reading: a refresh must not take back what the stream
  // already drew. Times are compared as instants, not strings (formats may differ).
  function newer(a, b) { return Date.parse(a) > Date.parse(b); }
  function keepNewer(fresh, known) {
    if (!known) return;
    fresh.latest = fresh.latest || {};
    for (const m in known.latest) {
      const f = fresh.latest[m], k = known.latest[m];
      if (!f || newer(k.time, f.time)) fresh.latest[m] = k;
    }
    if (known.last_reading_at && (!fresh.last_reading_at || newer(known.last_reading_at, fresh.last_reading_at))) {
      fresh.last_reading_at = known.last_reading_at;
    }
  }

  // -- alerts -----------------------------------------------------------------------------
  function deviceName(id) {
    const d = id ? devices.get(id) : null;
    return (d && d.name) || id || "";
  }
  async function loadAlerts() {
    const body = await getJSON("/alerts/active");
    const ul = $("#alerts");
    ul.textContent = "";
    for (const a of body.alerts) {
      const li = h("li", undefined, "sev-" + a.severity + (a.exercise ? " exercise" : ""));
      li.dataset.alertId = a.alert_id;
      li.dataset.deviceId = a.device_id || "";
      li.dataset.status = a.status;
      li.tabIndex = 0;
      if (a.exercise) li.appendChild(h("span", "EXERCISE — not a real alert", "exercise-tag"));
      li.appendChild(h("strong", a.title_en));
      // Names, not ids; and nothing rather than "null" where an alert has no device,
      // metric or area (an area's alert has no device, an offline alert no metric).
      const where = [a.device_id ? a.device_name || deviceName(a.device_id) : null, a.area_name]
        .filter((x) => x).join(", ");
      const value = a.metric ? a.metric + " " + fmt(a.last_value) + " (threshold " + fmt(a.threshold) + ")" : null;
      const parts = [a.severity, a.state, where || null, value, "since " + fmtTime(a.started_at)];
      li.appendChild(h("small", parts.filter((x) => x).join(" · ")));
      if (a.device_id) li.addEventListener("click", () => select(a.device_id));
      ul.appendChild(li);
    }
    $("#alert-count").textContent = String(body.alerts.length);
    const ex = body.alerts.some((a) => a.exercise) || body.simulated;
    $("#exercise").hidden = !ex;
  }

  // -- detail and charts --------------------------------------------------------------------
  function select(id) {
    const prev = selected;
    selected = id;
    if (prev && circles.get(prev) && devices.get(prev)) drawDevice(devices.get(prev));
    if (devices.get(id)) drawDevice(devices.get(id));
    showDetail(id, true);
  }
  function showDetail(id, charts) {
    const d = devices.get(id);
    if (!d) return;
    $("#detail").hidden = false;
    $("#detail").dataset.deviceId = id;
    $("#detail-h").textContent = d.name || d.device_id;
    const meta = $("#detail-meta");
    meta.textContent = "";
    for (const [k, v] of [["id", d.device_id], ["kind", d.kind], ["area", areaNames[d.area] || d.area || "—"], ["state", d.state],
      ["status", d.status], ["last seen", fmtTime(d.last_seen)], ["newest reading", fmtTime(d.last_reading_at)],
      ...(d.refused ? [["refused", d.refused.count + " messages, the last at " + fmtTime(d.refused.at) + ": " +
        d.refused.reason + " (" + d.refused.detail + ")"]] : [])]) {
      meta.appendChild(h("dt", k)); meta.appendChild(h("dd", v));
    }
    const tb = $("#latest tbody");
    tb.textContent = "";
    for (const m of Object.keys(d.latest).sort()) {
      const v = d.latest[m], tr = h("tr");
      tr.dataset.metric = m;
      tr.appendChild(h("td", m));
      tr.appendChild(h("td", fmt(v.value), "q" + v.quality));
      tr.appendChild(h("td", clock(new Date(v.time))));
      tr.appendChild(h("td", String(v.quality)));
      tb.appendChild(tr);
    }
    if (charts) drawCharts(id);
  }
  async function drawCharts(id) {
    const to = new Date(), from = new Date(to - 6 * 3600e3);
    const body = await getJSON("/readings?device=" + encodeURIComponent(id) + "&bucket=5m&limit=1000&from=" +
      from.toISOString() + "&to=" + to.toISOString());
    if (selected !== id) return;
    const by = {};
    for (const r of body.readings) (by[r.metric] = by[r.metric] || []).push(r);
    const box = $("#charts");
    box.textContent = "";
    for (const m of Object.keys(by).sort()) {
      if (m === "battery_pct" || m === "rssi_dbm") continue;
      box.appendChild(chart(m, by[m], from.getTime(), to.getTime()));
    }
    if (!box.childNodes.length) box.appendChild(h("p", "No readings in the last 6 hours."));
  }
  function chart(metric, rows, t0, t1) {
    const W = 340, H = 90, L = 34, B = 14;
    const lo = Math.min(...rows.map((r) => r.min)), hi = Math.max(...rows.map((r) => r.max));
    const span = hi - lo || 1;
    const x = (t) => L + (W - L - 4) * (t - t0) / (t1 - t0);
    const y = (v) => 4 + (H - B - 8) * (1 - (v - lo) / span);
    const svg = el("svg", { viewBox: "0 0 " + W + " " + H, class: "chart", role: "img", "aria-label": metric + " over the last 6 hours" });
    const ts = rows.map((r) => new Date(r.time).getTime());
    const top = rows.map((r, i) => x(ts[i]).toFixed(1) + "," + y(r.max).toFixed(1));
    const bottom = rows.map((r, i) => x(ts[i]).toFixed(1) + "," + y(r.min).toFixed(1)).reverse();
    svg.appendChild(el("polygon", { points: top.concat(bottom).join(" "), class: "band" }));
    svg.appendChild(el("polyline", { points: rows.map((r, i) => x(ts[i]).toFixed(1) + "," + y(r.avg).toFixed(1)).join(" "), class: "line" }));
    svg.appendChild(el("text", { x: 2, y: 10 }, fmt(hi)));
    svg.appendChild(el("text", { x: 2, y: H - B }, fmt(lo)));
    svg.appendChild(el("text", { x: L, y: H - 2 }, metric + " (5-min min/avg/max)"));
    return svg;
  }

  // -- live --------------------------------------------------------------------------------
  let refresh = null;
  function refreshSoon() {
    if (refresh) return;
    refresh = setTimeout(async () => { refresh = null; await Promise.all([loadDevices(), loadAlerts()]); }, 300);
  }
  function onReading(r) {
    const d = devices.get(r.device_id);
    if (!d) return refreshSoon(); // a device we have not drawn yet
    for (const m in r.metrics) {
      const old = d.latest[m];
      if (!old || !newer(old.time, r.time)) d.latest[m] = { value: r.metrics[m], time: r.time, quality: 2 };
    }
    if (!d.last_reading_at || newer(r.time, d.last_reading_at)) d.last_reading_at = r.time;
    d.last_seen = new Date().toISOString();
    if (d.state === "offline") { d.state = "normal"; d.status = "online"; }
    if (r.lat != null && r.lon != null) { d.lat = r.lat; d.lon = r.lon; }
    drawDevice(d);
    const c = circles.get(d.device_id);
    if (c) { c.classList.add("flash"); setTimeout(() => c.classList.remove("flash"), 600); }
    summary();
    if (selected === d.device_id) showDetail(d.device_id, false);
  }
  function connect() {
    const es = new EventSource("/stream");
    const live = $("#live");
    es.onopen = () => { live.textContent = "live"; live.className = "live on"; refreshSoon(); };
    es.onerror = () => { live.textContent = "live: reconnecting"; live.className = "live off"; };
    es.addEventListener("reading", (e) => onReading(JSON.parse(e.data)));
    es.addEventListener("alert", () => refreshSoon());
  }

  async function loadAreaNames() {
    const body = await getJSON("/areas");
    for (const a of body.areas) areaNames[a.id] = a.name;
  }

  async function main() {
    const geo = await getJSON("/city.json");
    proj = makeProjection(geo);
    fullView = proj.box;
    drawBase(geo);
    setView(fullView);
    enablePanZoom();
    await Promise.all([loadDevices(), loadAlerts(), loadAreaNames()]);
    fitDevices();
    connect();
    setInterval(refreshSoon, 60000); // offline is the absence of events: re-ask now and then
  }
  main().catch((e) => { $("#summary").textContent = "Error: " + e.message; });
})();
