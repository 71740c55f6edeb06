/* mysimbdp dashboard: draws the page from the JSON calls of dashboard/views.py and polls them every few
 * seconds. Every value from the platform (and so from tenants) is put in the page as text (textContent),
 * never as HTML. A 401 from any call means the session ended: back to the login, with the reason. */
"use strict";

(function () {
  const CSRF = document.querySelector('meta[name="csrf-token"]').content;
  const REFRESH = 1000 * Math.max(1, Number(document.querySelector('meta[name="refresh-seconds"]').content) || 5);
  const OPERATOR = document.body.dataset.operator === "true";
  const TABS = ["receipts", "quarantine", "stream", "platform", "tenants"];
  const ACTION_COLORS = {
    scale_up: "#d9480f", scale_down: "#1971c2", start: "#2f9e44", stop: "#868e96", restart: "#ae3ec9",
  };
  const ACTION_MARKS = { scale_up: "\u25B2", scale_down: "\u25BC", start: "\u25B6", stop: "\u25A0", restart: "\u21BB" };

  const state = {
    tab: null,
    tenant: null, // the operator's choice
    detail: null, // {jobId, view}
    plots: null, // {key, charts: [...], decisions: []}
    timer: null,
    busy: false,
    noticeUntil: 0, // a notice of the user's own action stays this long
  };

  // --- small helpers ---------------------------------------------------------------------------------------

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") node.className = v;
      else if (k === "dataset") Object.assign(node.dataset, v);
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }

  function $(sel) { return document.querySelector(sel); }

  function fill(tbody, rows, empty, columns) {
    tbody.replaceChildren(...(rows.length ? rows : [el("tr", { class: "empty" }, el("td", { colspan: columns }, empty))]));
  }

  function when(iso) {
    if (!iso) return "-";
    return String(iso).replace("T", " ").replace(/\.\d+/, "").replace(/(\+00:00|Z)$/, "");
  }

  function epochText(s) { return when(new Date(s * 1000).toISOString()); }

  function size(n) {
    if (n === null || n === undefined) return "-";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
    return (i === 0 ? String(n) : n.toFixed(1)) + " " + units[i];
  }

  function num(v, digits) {
    if (v === null || v === undefined) return "-";
    return digits === undefined ? String(v) : Number(v).toFixed(digits);
  }

  function notice(text, kind, keepSeconds) {
    const n = $("#notice");
    state.noticeUntil = keepSeconds ? Date.now() + keepSeconds * 1000 : 0;
    if (!text) { n.hidden = true; n.textContent = ""; return; }
    n.textContent = text;
    n.className = kind || "info";
    n.hidden = false;
  }

  function withTenant(path, params) {
    const q = new URLSearchParams(params || {});
    if (OPERATOR && state.tenant) q.set("tenant", state.tenant);
    const s = q.toString();
    return s ? path + (path.includes("?") ? "&" : "?") + s : path;
  }

  class ApiError extends Error {
    constructor(status, body) {
      super((body && body.error) || "HTTP " + status);
      this.status = status;
      this.body = body;
    }
  }

  async function api(path, options) {
    const opts = Object.assign({ credentials: "same-origin", headers: {} }, options || {});
    if (opts.method && opts.method !== "GET") opts.headers["X-CSRF-Token"] = CSRF;
    const resp = await fetch(path, opts);
    let body = null;
    try { body = await resp.json(); } catch (e) { body = null; }
    if (resp.status === 401) {
      const reason = (body && body.reason) || "expired";
      window.location.assign("/login" + (reason === "none" ? "" : "?m=" + encodeURIComponent(reason)));
      throw new ApiError(401, body);
    }
    if (!resp.ok) throw new ApiError(resp.status, body);
    return body;
  }

  // --- tabs and refresh ------------------------------------------------------------------------------------

  function showTab(name) {
    if (!TABS.includes(name)) name = "receipts";
    state.tab = name;
    for (const t of TABS) $("#tab-" + t).hidden = t !== name;
    for (const b of document.querySelectorAll("#tabs button")) b.classList.toggle("active", b.dataset.tab === name);
    if (window.location.hash.split("/")[0] !== "#" + name) history.replaceState(null, "", "#" + name);
    refresh();
  }

  // #tab, or #receipts/<job id>: a receipt's own address (a job that is not the tenant's is "no such job")
  function route() {
    const [tab, job] = window.location.hash.slice(1).split("/");
    showTab(tab || "receipts");
    if (tab === "receipts" && job) openJob(decodeURIComponent(job), "receipt");
  }

  async function refresh() {
    if (state.busy) return;
    state.busy = true;
    clearTimeout(state.timer);
    try {
      if (OPERATOR && !state.tenant && !["platform", "tenants"].includes(state.tab)) {
        notice("There is no tenant to show yet.", "info");
      } else {
        await VIEWS[state.tab]();
        if (Date.now() > state.noticeUntil) notice(null);
      }
      $("#updated").textContent = "updated " + new Date().toISOString().slice(11, 19) + " UTC";
    } catch (e) {
      if (e.status !== 401) notice("Could not refresh: " + e.message, "error");
    } finally {
      state.busy = false;
      state.timer = setTimeout(refresh, REFRESH);
    }
  }

  // --- receipts --------------------------------------------------------------------------------------------

  function filters() {
    const f = new FormData($("#job-filters"));
    const out = { limit: "50" };
    for (const k of ["status", "file", "since", "until"]) {
      const v = String(f.get(k) || "").trim();
      if (v) out[k] = v;
    }
    return out;
  }

  function statusBadge(job) {
    return el("span", { class: "badge status-" + job.status }, job.status);
  }

  async function viewReceipts() {
    const data = await api(withTenant("/api/jobs", filters()));
    const rows = data.jobs.map((j) => el("tr", { dataset: { job: j.job_id }, class: state.detail && state.detail.jobId === j.job_id ? "selected" : null },
      el("td", {}, when(j.created_at)),
      el("td", {}, el("a", { href: "#", class: "job-link", onclick: (ev) => { ev.preventDefault(); openJob(j.job_id, "receipt"); } }, j.file_name),
        j.replay_of ? el("span", { class: "muted small" }, " (replay)") : null),
      el("td", {}, statusBadge(j)),
      el("td", { class: "num" }, num(j.rows_ingested)),
      el("td", { class: "num" }, j.has_rejects
        ? el("button", { type: "button", class: "link rejects-link", onclick: () => openJob(j.job_id, "rejects") }, num(j.rows_rejected))
        : num(j.rows_rejected)),
      el("td", { class: "num" }, num(j.seconds, 2)),
      el("td", { class: "num" }, size(j.size)),
      el("td", {}, j.app_name ? j.app_name + "@" + j.app_version : "-"),
      el("td", {}, j.has_log ? el("button", { type: "button", class: "link log-link", onclick: () => openJob(j.job_id, "log") }, "log") : "-"),
    ));
    fill($("#jobs-table tbody"), rows, "no receipts" + (Object.keys(filters()).length > 1 ? " match these filters" : " yet"), 9);
    const more = $("#jobs-more");
    more.hidden = !data.more;
    more.textContent = data.more ? "Only the newest " + data.jobs.length + " are shown: narrow the filters to see older ones." : "";
  }

  async function openJob(jobId, view) {
    state.detail = { jobId, view };
    const panel = $("#job-detail");
    panel.hidden = false;
    history.replaceState(null, "", "#receipts/" + encodeURIComponent(jobId));
    for (const tr of document.querySelectorAll("#jobs-table tbody tr")) tr.classList.toggle("selected", tr.dataset.job === jobId);
    try {
      const j = await api(withTenant("/api/jobs/" + encodeURIComponent(jobId)));
      $("#job-detail-title").textContent = j.file_name + " \u2014 job " + j.job_id;
      const fields = [
        ["status", j.status], ["reason", j.reason || "-"], ["rows", num(j.rows_ingested)], ["rejects", num(j.rows_rejected)],
        ["seconds", num(j.seconds, 3)], ["size", size(j.size)], ["sha256", j.sha256 || "-"], ["attempts", num(j.attempts)],
        ["app", j.app_name ? j.app_name + "@" + j.app_version : "-"], ["created", when(j.created_at)],
        ["started", when(j.started_at)], ["finished", when(j.finished_at)],
      ];
      if (j.replay_of) fields.push(["replays job", j.replay_of]);
      if (j.status === "failed") fields.push(["in quarantine", j.in_quarantine ? "yes" : (j.replayed_as ? "no: replayed as job " + j.replayed_as : "no")]);
      $("#job-detail-fields").replaceChildren(...fields.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
      $("#job-detail-actions").replaceChildren(
        el("button", { type: "button", id: "show-rejects", disabled: !j.has_rejects, onclick: () => openJob(jobId, "rejects") }, "Rejected rows"),
        el("button", { type: "button", id: "show-log", disabled: !j.has_log, onclick: () => openJob(jobId, "log") }, "Log"),
        ...(j.status === "failed" && j.in_quarantine ? [replayButton(j)] : []),
      );
      const body = $("#job-detail-body");
      if (view === "rejects" && j.has_rejects) await showRejects(jobId, body);
      else if (view === "log" && j.has_log) await showLog(jobId, body);
      else body.replaceChildren();
      panel.scrollIntoView({ block: "nearest" });
    } catch (e) {
      if (e.status === 404) {
        $("#job-detail-title").textContent = "No such job: " + jobId;
        $("#job-detail-fields").replaceChildren();
        $("#job-detail-actions").replaceChildren();
        $("#job-detail-body").replaceChildren(el("p", { class: "message" }, e.message));
      } else if (e.status !== 401) notice(e.message, "error");
    }
  }

  async function showRejects(jobId, body) {
    const r = await api(withTenant("/api/jobs/" + encodeURIComponent(jobId) + "/rejects"));
    const head = el("p", { class: "muted" }, r.truncated
      ? "The first " + size(r.shown_bytes) + " of " + size(r.size) + " of rejected rows. "
      : "All " + size(r.size) + " of rejected rows. ", el("a", { href: r.download, id: "rejects-download" }, "download the whole file"));
    let content;
    if (r.rows) {
      content = el("table", { class: "grid small", id: "rejects-table" },
        el("thead", {}, el("tr", {}, r.header.map((h) => el("th", {}, h)))),
        el("tbody", {}, r.rows.map((row) => el("tr", {}, row.map((f) => el("td", {}, f))))));
    } else {
      content = el("pre", { id: "rejects-text" }, r.text);
    }
    body.replaceChildren(el("h3", {}, "Rejected rows"), head, content);
  }

  async function showLog(jobId, body) {
    const r = await api(withTenant("/api/jobs/" + encodeURIComponent(jobId) + "/log"));
    const head = el("p", { class: "muted" }, r.truncated
      ? "The last " + size(r.shown_bytes) + " of " + size(r.size) + ". "
      : "The whole log (" + size(r.size) + "). ", el("a", { href: r.download, id: "log-download" }, "download it"));
    body.replaceChildren(el("h3", {}, "The app's log"), head, el("pre", { id: "log-text" }, r.text));
  }

  function replayButton(j) {
    return el("button", {
      type: "button", class: "replay", dataset: { job: j.job_id },
      onclick: async (ev) => {
        ev.target.disabled = true;
        try {
          const r = await api(withTenant("/api/jobs/" + encodeURIComponent(j.job_id) + "/replay"), { method: "POST" });
          notice(r.message + ": its receipt is in Receipts.", "ok", 20);
        } catch (e) {
          if (e.status !== 401) notice("Replay refused: " + e.message + (e.body && e.body.hint ? " (" + e.body.hint + ")" : ""), "error", 20);
        }
        await VIEWS[state.tab]().catch(() => null);
      },
    }, "Replay");
  }

  // --- quarantine ------------------------------------------------------------------------------------------

  async function viewQuarantine() {
    const data = await api(withTenant("/api/quarantine"));
    const rows = data.jobs.map((j) => el("tr", { dataset: { job: j.job_id } },
      el("td", {}, when(j.created_at)),
      el("td", {}, j.file_name),
      el("td", { class: "reason" }, j.reason || "-"),
      el("td", {}, j.in_quarantine ? "yes" : (j.replayed_as ? "replayed as job " + j.replayed_as : "no")),
      el("td", {}, j.in_quarantine ? replayButton(j) : null,
        el("button", { type: "button", class: "link", onclick: () => { showTab("receipts"); openJob(j.job_id, "log"); } }, "log")),
    ));
    fill($("#quarantine-table tbody"), rows, "nothing in the quarantine", 5);
  }

  // --- stream ----------------------------------------------------------------------------------------------

  function card(label, value, cls) {
    return el("div", { class: "card " + (cls || "") }, el("div", { class: "card-label" }, label), el("div", { class: "card-value" }, value));
  }

  async function viewStream() {
    const minutes = $("#window").value;
    const [st, series] = await Promise.all([
      api(withTenant("/api/stream")),
      api(withTenant("/api/stream/series", { minutes })),
    ]);
    const b = st.backlog || {};
    $("#stream-summary").replaceChildren(
      card("stream", st.running ? "running" : "stopped", st.running ? "good" : "muted"),
      card("instances wanted", String(st.desired)),
      card("autoscale", st.autoscale && st.autoscale.enabled === false ? "off" :
        "min " + (st.autoscale ? st.autoscale.min_instances : "?") + ", max " + (st.autoscale ? st.autoscale.max_instances : "?")),
      card("records waiting", b.waiting === null || b.waiting === undefined ? "unknown" : String(b.waiting)),
      card("records written", b.written === null || b.written === undefined ? "-" : String(b.written)),
      card("stream app", st.stream_app || "none"),
    );
    const rows = st.instances.map((i) => {
      const r = i.last_report || {};
      return el("tr", { dataset: { instance: i.instance } },
        el("td", {}, i.instance), el("td", {}, i.state),
        el("td", {}, el("span", { class: "badge health-" + String(i.health).split(" ")[0] }, i.health)),
        el("td", {}, when(i.started_at)), el("td", { class: "num" }, num(r.messages)),
        el("td", { class: "num" }, num(r.avg_ms, 1)), el("td", { class: "num" }, num(r.p95_ms, 1)), el("td", { class: "num" }, num(r.pending)));
    });
    fill($("#instances-table tbody"), rows, "no instance running", 8);
    drawPlots(series);
    const drows = series.decisions.slice().reverse().map((d) => el("tr", { class: "decision", dataset: { action: d.action } },
      el("td", {}, epochText(d.at)),
      el("td", {}, el("span", { class: "badge", style: null, dataset: { action: d.action } }, (ACTION_MARKS[d.action] || "") + " " + d.action)),
      el("td", {}, num(d.instances_before) + " \u2192 " + num(d.instances_after)),
      el("td", { class: "reason" }, d.reason || "-")));
    fill($("#decisions-table tbody"), drows, "no decision in this window", 4);
  }

  function decisionsPlugin() {
    return {
      hooks: {
        draw: [(u) => {
          const ds = (state.plots && state.plots.decisions) || [];
          const ctx = u.ctx;
          ctx.save();
          ctx.lineWidth = 1.5 * devicePixelRatio;
          ctx.setLineDash([5 * devicePixelRatio, 4 * devicePixelRatio]);
          for (const d of ds) {
            const x = Math.round(u.valToPos(d.at, "x", true));
            if (x < u.bbox.left || x > u.bbox.left + u.bbox.width) continue;
            ctx.strokeStyle = ACTION_COLORS[d.action] || "#495057";
            ctx.beginPath();
            ctx.moveTo(x, u.bbox.top);
            ctx.lineTo(x, u.bbox.top + u.bbox.height);
            ctx.stroke();
          }
          ctx.restore();
          let layer = u.over.querySelector(".markers");
          if (!layer) { layer = el("div", { class: "markers" }); u.over.append(layer); }
          const width = u.over.clientWidth;
          let lastX = -100, row = 0;
          layer.replaceChildren(...ds.map((d) => {
            const x = u.valToPos(d.at, "x");
            if (x < 0 || x > width) return null;
            row = x - lastX < 14 ? row + 1 : 0; // decisions close together are stacked, not drawn over each other
            lastX = x;
            const m = el("div", {
              class: "decision-marker",
              dataset: { action: d.action, at: String(d.at) },
              title: epochText(d.at) + " UTC  " + d.action + " " + d.instances_before + "\u2192" + d.instances_after + ": " + (d.reason || ""),
            }, ACTION_MARKS[d.action] || "\u25CF");
            m.style.left = x + "px";
            m.style.top = (row * 14 - 2) + "px";
            m.style.color = ACTION_COLORS[d.action] || "#495057";
            return m;
          }).filter(Boolean));
        }],
      },
    };
  }

  function plotWidth() { return Math.max(320, $("#plots").clientWidth - 8); }

  function makeChart(target, title, series, axes) {
    const opts = {
      title, width: plotWidth(), height: 190,
      tzDate: (ts) => uPlot.tzDate(new Date(ts * 1000), "Etc/UTC"),
      scales: { x: { time: true } },
      series: [{}, ...series],
      axes: [{ values: (u, splits) => splits.map((v) => new Date(v * 1000).toISOString().slice(11, 19)) }, ...axes.slice(1)],
      plugins: [decisionsPlugin()],
      legend: { live: true },
      cursor: { drag: { x: false, y: false } },
    };
    return new uPlot(opts, [[], ...series.map(() => [])], target);
  }

  function drawPlots(s) {
    const key = (state.tenant || "") + "/" + $("#window").value;
    if (!state.plots || state.plots.key !== key) {
      if (state.plots) state.plots.charts.forEach((c) => c.destroy());
      for (const id of ["#plot-rate", "#plot-latency", "#plot-backlog"]) $(id).replaceChildren();
      const axis = (label) => ({ label, size: 70 });
      // every plot keeps a right-hand axis of the same width, so that their times line up
      const blank = { side: 1, size: 50, label: " ", values: () => [], grid: { show: false }, ticks: { show: false } };
      state.plots = {
        key, decisions: [], charts: [
          makeChart($("#plot-rate"), "Records turned into rows per second", [
            { label: "records/s", stroke: "#2f9e44", width: 2, fill: "rgba(47,158,68,0.08)" },
            { label: "instances", stroke: "#868e96", width: 1.5, scale: "n", paths: uPlot.paths.stepped({ align: 1 }) },
          ], [{}, axis("records/s"), { scale: "n", side: 1, label: "instances", grid: { show: false }, size: 50 }]),
          makeChart($("#plot-latency"), "Ingestion time, publish to row (ms)", [
            { label: "average", stroke: "#1971c2", width: 2 },
            { label: "p95", stroke: "#e8590c", width: 2 },
          ], [{}, axis("ms"), blank]),
          makeChart($("#plot-backlog"), "Backlog: records waiting in the instances' lanes", [
            { label: "waiting", stroke: "#ae3ec9", width: 2, fill: "rgba(174,62,201,0.08)" },
          ], [{}, axis("records"), blank]),
        ],
      };
    }
    state.plots.decisions = s.decisions;
    const [rate, latency, backlog] = state.plots.charts;
    rate.setData([s.time, s.messages_per_s, s.instances]);
    latency.setData([s.time, s.avg_ms, s.p95_ms]);
    backlog.setData([s.time, s.backlog]);
    for (const c of state.plots.charts) c.setScale("x", { min: s.start, max: s.end });
  }

  window.addEventListener("resize", () => {
    if (state.plots) for (const c of state.plots.charts) c.setSize({ width: plotWidth(), height: 190 });
  });

  // --- platform --------------------------------------------------------------------------------------------

  async function viewPlatform() {
    const h = await api(withTenant("/api/health"));
    $("#platform-summary").replaceChildren(...[
      card("platform", h.ready ? "ready" : "NOT ready", h.ready ? "good" : "bad"),
      card("Cassandra nodes up", h.nodes.filter((n) => n.up).length + " of " + h.nodes.length),
      h.problem ? card("problem", h.problem, "bad") : null,
    ].filter(Boolean));
    const names = Object.keys(h.parts);
    const detailKeys = OPERATOR ? ["pid", "restarts", "last_death", "memory_cap", "log"] : [];
    $("#parts-table thead").replaceChildren(el("tr", {}, el("th", {}, "service"), el("th", {}, "state"),
      detailKeys.map((k) => el("th", {}, k.replace("_", " "))), OPERATOR ? el("th", {}, "details") : null));
    fill($("#parts-table tbody"), names.map((name) => {
      const p = h.parts[name];
      const other = OPERATOR ? Object.entries(p).filter(([k]) => !["ready", "running", ...detailKeys].includes(k))
        .map(([k, v]) => k + "=" + (typeof v === "object" ? JSON.stringify(v) : v)).join("  ") : null;
      return el("tr", { dataset: { part: name } }, el("td", {}, name),
        el("td", {}, el("span", { class: "badge " + (p.ready ? "up" : "down") }, p.ready ? "up" : "down")),
        detailKeys.map((k) => el("td", { class: k === "log" ? "small" : null }, p[k] === undefined || p[k] === null ? "-" : String(p[k]))),
        OPERATOR ? el("td", { class: "small" }, other) : null);
    }), "no services", 2 + detailKeys.length);
    const nodeKeys = OPERATOR ? ["address", "datacenter", "rack", "version"] : [];
    $("#nodes-table thead").replaceChildren(el("tr", {}, nodeKeys.map((k) => el("th", {}, k)), el("th", {}, "state")));
    fill($("#nodes-table tbody"), h.nodes.map((n) => el("tr", {}, nodeKeys.map((k) => el("td", {}, n[k] || "-")),
      el("td", {}, el("span", { class: "badge " + (n.up ? "up" : "down") }, n.up ? "up" : "down")))), "no node known", 5);
    const ks = Object.entries(h.keyspaces).sort((a, b) => b[1].bytes - a[1].bytes);
    fill($("#keyspaces-table tbody"), ks.map(([name, v]) => el("tr", { dataset: { keyspace: name } }, el("td", {}, name),
      el("td", { class: "num" }, (v.exact ? "" : "\u2265 ") + size(v.bytes)))), "no keyspace", 2);
  }

  // --- tenants ---------------------------------------------------------------------------------------------

  async function viewTenants() {
    const data = await api("/api/tenants");
    fill($("#tenants-table tbody"), data.tenants.map((t) => el("tr", { dataset: { tenant: t.name }, class: t.name === state.tenant ? "selected" : null },
      el("td", {}, OPERATOR && t.state === "ready"
        ? el("a", { href: "#receipts", onclick: (ev) => { ev.preventDefault(); pickTenant(t.name); showTab("receipts"); } }, t.name)
        : t.name),
      el("td", {}, el("span", { class: "badge " + (t.state === "ready" ? "up" : "down") }, t.state)),
      el("td", {}, t.batch_app || "-"), el("td", {}, t.stream_app || "-"),
      el("td", {}, t.stream.running ? "running, " + t.stream.desired + " wanted" : "stopped"),
      el("td", {}, (t.formats || []).join(", ")), el("td", {}, when(t.created_at)))), "no tenants", 7);
  }

  const VIEWS = { receipts: viewReceipts, quarantine: viewQuarantine, stream: viewStream, platform: viewPlatform, tenants: viewTenants };

  // --- the operator's tenant -------------------------------------------------------------------------------

  function pickTenant(name) {
    state.tenant = name;
    const sel = $("#tenant-select");
    if (sel) sel.value = name;
    sessionStorage.setItem("mysimbdp-tenant", name);
    state.detail = null;
    $("#job-detail").hidden = true;
  }

  async function loadTenants() {
    const s = await api("/api/session");
    if (!OPERATOR) return;
    const ready = s.tenants.filter((t) => t.state === "ready").map((t) => t.name);
    const sel = $("#tenant-select");
    sel.replaceChildren(...ready.map((n) => el("option", { value: n }, n)));
    const kept = sessionStorage.getItem("mysimbdp-tenant");
    const wanted = new URLSearchParams(window.location.search).get("tenant");
    const choice = [wanted, kept, state.tenant].find((n) => n && ready.includes(n)) || ready[0] || null;
    if (choice) pickTenant(choice);
  }

  // --- wiring ----------------------------------------------------------------------------------------------

  for (const b of document.querySelectorAll("#tabs button")) b.addEventListener("click", () => showTab(b.dataset.tab));
  $("#job-filters").addEventListener("input", () => { if (state.tab === "receipts") refresh(); });
  $("#job-filters").addEventListener("submit", (ev) => ev.preventDefault());
  $("#window").addEventListener("change", () => refresh());
  $("#job-detail-close").addEventListener("click", () => {
    state.detail = null;
    $("#job-detail").hidden = true;
    history.replaceState(null, "", "#receipts");
    for (const tr of document.querySelectorAll("#jobs-table tr.selected")) tr.classList.remove("selected");
  });
  if (OPERATOR) {
    $("#tenant-select").addEventListener("change", (ev) => { pickTenant(ev.target.value); refresh(); });
  }
  window.addEventListener("hashchange", route);

  loadTenants().catch((e) => notice("Could not load the tenants: " + e.message, "error")).finally(route);
})();
