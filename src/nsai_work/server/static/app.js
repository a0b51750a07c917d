/* nsai-work dashboard: one script, no build step. It reads the server's own API (/v1/...) with
 * the session cookie that POST /ui/login set (HttpOnly: this script never sees it) and sends the
 * CSRF token on every call that changes something. Live updates come from the /v1/events stream,
 * coalesced: events are counted as they arrive and applied at most every FLUSH_MS, never one
 * repaint per event. See docs/dashboard.md. */
(function () {
  "use strict";

  const FLUSH_MS = 400; // apply buffered live events at most this often
  const POLL_MS = 5000; // refresh the page's numbers this often even without events
  const WINDOW_S = 300; // the charts' last minutes
  const BUCKET_S = 5; // one chart point per this many seconds
  const PAGE = 50; // jobs per page
  const STATUSES = ["pending", "queued", "running", "succeeded", "failed", "timeout", "canceled"];
  const PRIORITIES = ["realtime", "interactive", "batch", "offline"];
  const TERMINAL = new Set(["succeeded", "failed", "timeout", "canceled"]);
  const EVENTS = ["submitted", "queued", "started", "retry", "completed", "failed", "canceled"];

  const main = document.getElementById("main");
  const liveEl = document.getElementById("live");
  const whoEl = document.getElementById("who");
  const logoutEl = document.getElementById("logout");

  let session = null; // {key_id, tenant_id, admin, csrf}
  let source = null; // the EventSource
  let view = null; // {name, refresh(events), dispose()}
  let renderToken = 0;

  // ---- small helpers ------------------------------------------------------------------------

  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "class") el.className = value;
      else if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
      else if (name === "text") el.textContent = value;
      else el.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      el.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return el;
  }

  const fmt = {
    n: (v) => (v === null || v === undefined ? "–" : Number(v).toLocaleString("en-US")),
    usd: (v) => (v === null || v === undefined ? "–" : "$" + Number(v).toFixed(Number(v) < 1 ? 4 : 2)),
    pct: (v) => (v === null || v === undefined || !isFinite(v) ? "–" : (100 * v).toFixed(1) + "%"),
    time: (iso) => (iso ? new Date(iso).toLocaleString() : "–"),
    ago: (iso) => {
      if (!iso) return "–";
      const s = Math.max(0, (Date.now() - new Date(iso).getTime()) / 1000);
      if (s < 60) return Math.round(s) + " s ago";
      if (s < 3600) return Math.round(s / 60) + " min ago";
      if (s < 86400) return Math.round(s / 3600) + " h ago";
      return Math.round(s / 86400) + " d ago";
    },
  };

  // the API leaves out fields at their defaults
  function norm(job) {
    job.status = job.status || "pending";
    job.priority = job.priority || "batch";
    job.namespace = job.namespace || "default";
    return job;
  }

  // uuid7 ids share their time prefix: keep its start and the random end
  function shortId(id) {
    return id.length > 16 ? id.slice(0, 8) + "…" + id.slice(-6) : id;
  }

  function statusBadge(status) {
    return h("span", { class: "status s-" + status, text: status });
  }

  function bar(value, max, label, mark) {
    const frac = max > 0 ? Math.min(1, value / max) : 0;
    const el = h("div", {
      class: "bar" + (max > 0 && value > max ? " over" : ""),
      role: "meter",
      "aria-label": label,
      "aria-valuemin": 0,
      "aria-valuemax": max > 0 ? max : 1,
      "aria-valuenow": max > 0 ? Math.min(value, max) : 0,
      "aria-valuetext": label,
      title: label,
    });
    el.append(h("i", { style: "width:" + (100 * frac).toFixed(1) + "%" }));
    if (mark !== undefined && mark !== null) {
      el.append(h("span", { class: "mark", style: "left:" + (100 * Math.min(1, mark)).toFixed(1) + "%" }));
    }
    return el;
  }

  function table(caption, heads, rows, opts) {
    const t = h("table", opts && opts.id ? { id: opts.id } : {});
    t.append(h("caption", { class: "skip", text: caption }));
    t.append(h("thead", {}, h("tr", {}, heads.map((x) => h("th", { scope: "col", class: x.num ? "num" : null, text: x.label || x })))));
    const body = h("tbody");
    for (const row of rows) body.append(row);
    t.append(body);
    return h("div", { class: "scroll", tabindex: 0, role: "region", "aria-label": caption }, t);
  }

  function td(value, num) {
    return h("td", { class: num ? "num" : null }, value);
  }

  class ApiError extends Error {
    constructor(status, problem) {
      super((problem && (problem.detail || problem.title)) || "HTTP " + status);
      this.status = status;
      this.problem = problem;
    }
  }

  async function api(path, options) {
    const opts = Object.assign({ method: "GET", credentials: "same-origin", headers: {} }, options || {});
    if (opts.method !== "GET" && session) opts.headers["X-CSRF-Token"] = session.csrf;
    if (opts.json !== undefined) {
      opts.headers["Content-Type"] = "application/json";
      opts.body = JSON.stringify(opts.json);
      delete opts.json;
    }
    const answer = await fetch(path, opts);
    const type = answer.headers.get("content-type") || "";
    const body = type.includes("json") ? await answer.json() : await answer.text();
    if (!answer.ok) {
      if (answer.status === 401 && path !== "/ui/login") loggedOut();
      throw new ApiError(answer.status, typeof body === "object" ? body : null);
    }
    return body;
  }

  function setTitle(text) {
    document.title = text + " · nsai-work";
  }

  function announce(text) {
    liveEl.setAttribute("aria-label", text);
  }

  // ---- login ----------------------------------------------------------------------------------

  function showLogin(message) {
    closeStream();
    if (view && view.dispose) view.dispose();
    view = null;
    setTitle("Log in");
    whoEl.textContent = "";
    logoutEl.hidden = true;
    const error = h("p", { class: "error", role: "alert", id: "login-error" }, message || "");
    const input = h("input", {
      id: "key",
      name: "key",
      type: "password",
      autocomplete: "current-password",
      required: true,
      placeholder: "nsw_…",
      "aria-describedby": "login-help",
    });
    const form = h(
      "form",
      { class: "login card", "aria-labelledby": "login-title" },
      h("h1", { id: "login-title", text: "Log in" }),
      h("p", { id: "login-help", class: "muted" }, "Paste an API key (", h("code", { text: "nsai-work keys create" }), "). It is traded for a session cookie and is not kept by this page. A tenant's key shows its tenant only."),
      h("label", { for: "key" }, "API key", input),
      h("button", { class: "primary", type: "submit", text: "Log in" }),
      error,
    );
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      error.textContent = "";
      try {
        session = await api("/ui/login", { method: "POST", json: { key: input.value.trim() } });
        input.value = "";
        started();
      } catch (e) {
        error.textContent = e.message;
      }
    });
    main.replaceChildren(form);
    input.focus();
  }

  function loggedOut() {
    session = null;
    showLogin("Your session ended: log in again.");
  }

  logoutEl.addEventListener("click", async () => {
    try {
      await api("/ui/logout", { method: "POST" });
    } catch (e) {
      /* the session is gone either way */
    }
    session = null;
    showLogin("");
  });

  function started() {
    whoEl.textContent = session.admin ? "admin" : "tenant " + session.tenant_id;
    whoEl.setAttribute("aria-label", "Logged in as " + whoEl.textContent);
    logoutEl.hidden = false;
    openStream();
    route();
  }

  // ---- the live stream, coalesced -------------------------------------------------------------

  let pending = []; // events since the last flush
  let flushTimer = null;
  const chart = { buckets: new Map() }; // bucket start (s) -> {done, failed, started, delaySum, delayMax}

  function bucketOf(at) {
    const start = Math.floor(at / BUCKET_S) * BUCKET_S;
    let b = chart.buckets.get(start);
    if (!b) {
      b = { done: 0, failed: 0, started: 0, delaySum: 0, delayMax: 0 };
      chart.buckets.set(start, b);
    }
    return b;
  }

  function onEvent(message) {
    let data;
    try {
      data = JSON.parse(message.data);
    } catch (e) {
      return;
    }
    pending.push(data);
    if (flushTimer === null) flushTimer = setTimeout(flush, FLUSH_MS);
  }

  function flush() {
    flushTimer = null;
    const events = pending;
    pending = [];
    const now = Date.now() / 1000;
    for (const e of events) {
      const name = e.event;
      if (name === "work.job.started") {
        const b = bucketOf(e.at || now);
        b.started += 1;
        const ms = e.measurements && e.measurements.queue_time_ms;
        if (typeof ms === "number") {
          b.delaySum += ms;
          b.delayMax = Math.max(b.delayMax, ms);
        }
      } else if (name === "work.job.completed" || name === "work.job.canceled") {
        const b = bucketOf(e.at || now);
        b.done += 1;
        if (e.status === "failed" || e.status === "timeout") b.failed += 1;
      }
    }
    for (const start of chart.buckets.keys()) {
      if (start < now - WINDOW_S - BUCKET_S) chart.buckets.delete(start);
    }
    if (view && view.refresh) view.refresh(events);
  }

  function openStream() {
    closeStream();
    source = new EventSource("/v1/events");
    liveEl.dataset.state = "connecting";
    liveEl.textContent = "connecting";
    source.addEventListener("open", () => {
      liveEl.dataset.state = "open";
      liveEl.textContent = "live";
    });
    source.addEventListener("error", async () => {
      liveEl.dataset.state = "error";
      liveEl.textContent = "reconnecting";
      if (source && source.readyState === EventSource.CLOSED) {
        // a refused stream (401: the session ended; 503: no scheduler here): say so once
        try {
          const found = await api("/ui/session");
          if (found.logged_in === false) loggedOut();
          else liveEl.textContent = "no live stream";
        } catch (e) {
          liveEl.textContent = "no live stream";
        }
      }
    });
    for (const name of EVENTS) source.addEventListener("work.job." + name, onEvent);
    source.addEventListener("gap", () => {
      // events were lost: read everything again at the next flush
      pending.push({ event: "gap" });
      if (flushTimer === null) flushTimer = setTimeout(flush, FLUSH_MS);
    });
  }

  function closeStream() {
    if (source) source.close();
    source = null;
    liveEl.dataset.state = "closed";
    liveEl.textContent = "offline";
  }

  // ---- routing --------------------------------------------------------------------------------

  function parseHash() {
    const raw = location.hash.replace(/^#/, "") || "/";
    const [path, query] = raw.split("?");
    return { parts: path.split("/").filter(Boolean).map(decodeURIComponent), query: new URLSearchParams(query || "") };
  }

  function navigate(hash) {
    if (location.hash === hash) route();
    else location.hash = hash;
  }

  async function route() {
    if (!session) return;
    const { parts, query } = parseHash();
    if (view && view.dispose) view.dispose();
    view = null;
    const token = ++renderToken;
    const name = parts[0] || "overview";
    for (const a of document.querySelectorAll("#nav a")) {
      if (a.dataset.route === name) a.setAttribute("aria-current", "page");
      else a.removeAttribute("aria-current");
    }
    const pages = { overview: overviewPage, tenants: tenantsPage, jobs: jobsPage, workflows: workflowsPage, tools: toolsPage };
    const page = pages[name];
    if (!page) {
      main.replaceChildren(h("h1", { text: "Not found" }), h("p", {}, h("a", { href: "#/", text: "Back to the overview" })));
      return;
    }
    try {
      const made = await page(parts.slice(1), query, () => token === renderToken);
      if (token !== renderToken) {
        if (made && made.dispose) made.dispose();
        return;
      }
      view = made;
      if (view && view.poll !== false) {
        view.timer = setInterval(() => view.refresh && view.refresh([]), POLL_MS);
        const dispose = view.dispose;
        view.dispose = () => {
          clearInterval(view.timer);
          if (dispose) dispose();
        };
      }
    } catch (e) {
      if (token !== renderToken) return;
      if (e instanceof ApiError && e.status === 401) return;
      main.replaceChildren(h("h1", { text: "Something failed" }), h("p", { class: "error", role: "alert", text: e.message }));
    }
  }

  window.addEventListener("hashchange", () => {
    route();
    main.focus({ preventScroll: true });
  });

  // one refresh in flight at a time; a refresh asked for meanwhile runs once after it
  function serial(fn) {
    let running = false;
    let again = false;
    return async function run(arg) {
      if (running) {
        again = true;
        return;
      }
      running = true;
      try {
        await fn(arg);
      } catch (e) {
        if (!(e instanceof ApiError && e.status === 401)) console.warn("nsai-work dashboard:", e.message);
      } finally {
        running = false;
        if (again) {
          again = false;
          run(arg);
        }
      }
    };
  }

  // at most one call every `ms`; a call asked for meanwhile runs once at the end (so the last
  // events are always shown)
  function throttle(fn, ms) {
    let last = 0;
    let timer = null;
    const fire = () => {
      timer = null;
      last = Date.now();
      fn();
    };
    const call = () => {
      if (timer !== null) return;
      const wait = last + ms - Date.now();
      if (wait <= 0) fire();
      else timer = setTimeout(fire, wait);
    };
    call.cancel = () => {
      clearTimeout(timer);
      timer = null;
    };
    return call;
  }

  // ---- overview -------------------------------------------------------------------------------

  function makeChart(el, title, series) {
    if (typeof uPlot === "undefined") return null;
    const width = Math.max(260, el.clientWidth - 8);
    const style = getComputedStyle(document.documentElement);
    const color = (name) => style.getPropertyValue(name).trim() || "#888";
    const axis = { stroke: color("--muted"), grid: { stroke: color("--line"), width: 1 }, ticks: { stroke: color("--line") } };
    const opts = {
      title: title,
      width: width,
      height: 180,
      series: [{}].concat(series.map((s) => ({ label: s.label, stroke: color(s.color), width: 2, points: { show: false } }))),
      axes: [axis, Object.assign({}, axis, { size: 50 })],
      legend: { show: true },
      cursor: { show: true },
    };
    return new uPlot(opts, chartData(series), el);
  }

  function chartData(series) {
    const now = Math.floor(Date.now() / 1000 / BUCKET_S) * BUCKET_S;
    const xs = [];
    const ys = series.map(() => []);
    for (let t = now - WINDOW_S; t < now; t += BUCKET_S) {  // (the bucket filling now is left out)
      xs.push(t);
      const b = chart.buckets.get(t);
      series.forEach((s, i) => ys[i].push(b ? s.value(b) : 0));
    }
    return [xs].concat(ys);
  }

  const THROUGHPUT = [
    { label: "finished/s", color: "--ok", value: (b) => b.done / BUCKET_S },
    { label: "failed/s", color: "--bad", value: (b) => b.failed / BUCKET_S },
  ];
  const LATENCY = [
    { label: "mean submit→start (s)", color: "--accent", value: (b) => (b.started ? b.delaySum / b.started / 1000 : null) },
    { label: "max (s)", color: "--wait", value: (b) => (b.started ? b.delayMax / 1000 : null) },
  ];

  function kpi(label, value, id) {
    return h("div", { class: "kpi", id: id }, h("b", { text: value }), h("span", { text: label }));
  }

  async function overviewPage(_parts, _query, current) {
    setTitle("Overview");
    const body = h("div");
    const throughputEl = h("div", { class: "chart", role: "img", "aria-label": "Chart: jobs finished and failed per second, last 5 minutes" });
    const latencyEl = h("div", { class: "chart", role: "img", "aria-label": "Chart: submit-to-start latency in seconds, last 5 minutes" });
    main.replaceChildren(
      h("h1", { text: session.admin ? "Overview" : "Overview: tenant " + session.tenant_id }),
      body,
      h(
        "div",
        { class: "grid", style: "margin-top:12px" },
        h("section", { class: "card", "aria-label": "Throughput" }, h("h2", { text: "Throughput" }), throughputEl),
        h("section", { class: "card", "aria-label": "Submit-to-start latency" }, h("h2", { text: "Submit-to-start latency" }), latencyEl),
      ),
      h("p", { class: "muted", text: "The last 5 minutes, in 5 s points, as the server counted them (from the first time a dashboard was opened), kept current by the live stream." }),
    );
    let charts = [];
    const draw = async () => {
      const [stats, recent, waiting] = await Promise.all([
        api("/v1/stats"),
        api("/ui/api/history"),
        session.admin ? null : api("/ui/api/waiting"),
      ]);
      if (waiting) stats.waiting_reasons = waiting.by_tenant[session.tenant_id] || {};
      // the server's buckets are the truth; live events only fill in between two reads
      chart.buckets = new Map();
      for (const b of recent.buckets) {
        chart.buckets.set(b.t, { done: b.ended, failed: b.failed, started: b.started, delaySum: b.delay_sum_ms, delayMax: b.delay_max_ms });
      }
      const tenants = session.admin ? null : stats;
      if (!current()) return;
      body.replaceChildren(...overviewBody(stats, tenants));
      if (!charts.length) {
        charts = [makeChart(throughputEl, "", THROUGHPUT), makeChart(latencyEl, "", LATENCY)].filter(Boolean);
      } else {
        charts[0].setData(chartData(THROUGHPUT));
        if (charts[1]) charts[1].setData(chartData(LATENCY));
      }
    };
    // stats cost O(waiting jobs) on the server: at most once a second
    const refresh = throttle(serial(draw), 1000);
    await draw();
    return {
      refresh: refresh,
      dispose: () => {
        refresh.cancel();
        charts.forEach((c) => c.destroy());
      },
    };
  }

  function overviewBody(stats, tenantStats) {
    const totals = tenantStats || stats.totals;
    const finished = totals.succeeded + totals.failed + (totals.timeout || 0) + (totals.canceled || 0);
    const failed = (totals.failed || 0) + (totals.timeout || 0);
    const out = [];
    out.push(
      h(
        "div",
        { class: "kpis", role: "group", "aria-label": "Totals" },
        kpi("waiting", fmt.n((totals.pending || 0) + (totals.queued || 0)), "kpi-waiting"),
        kpi("running", fmt.n(totals.running || 0), "kpi-running"),
        kpi("succeeded", fmt.n(totals.succeeded || 0), "kpi-succeeded"),
        kpi("failure rate", finished ? fmt.pct(failed / finished) : "–", "kpi-failure"),
        kpi("submitted", fmt.n(totals.submitted || 0), "kpi-submitted"),
        kpi("rejected", fmt.n(totals.rejected || 0), "kpi-rejected"),
      ),
    );
    const grid = h("div", { class: "grid" });
    out.push(grid);
    // queue depth by priority
    const byPriority = (tenantStats ? tenantStats.by_priority : stats.by_priority) || {};
    const maxDepth = Math.max(1, ...PRIORITIES.map((p) => ((byPriority[p] || {}).queued || 0) + ((byPriority[p] || {}).pending || 0)));
    grid.append(
      h(
        "section",
        { class: "card", "aria-labelledby": "h-depth" },
        h("h2", { id: "h-depth", text: "Queue depth by priority" }),
        table(
          "Queue depth by priority",
          ["priority", { label: "queued", num: true }, { label: "pending", num: true }, { label: "running", num: true }, ""],
          PRIORITIES.map((p) => {
            const c = byPriority[p] || {};
            const depth = (c.queued || 0) + (c.pending || 0);
            return h("tr", {}, td(p), td(fmt.n(c.queued || 0), true), td(fmt.n(c.pending || 0), true), td(fmt.n(c.running || 0), true), td(bar(depth, maxDepth, p + ": " + depth + " waiting")));
          }),
        ),
      ),
    );
    if (!tenantStats) {
      // running by backend and pool, pool usage
      const pools = Object.entries(stats.pools || {}).sort();
      grid.append(
        h(
          "section",
          { class: "card wide", style: "order:10", "aria-labelledby": "h-pools" },
          h("h2", { id: "h-pools", text: "Pools: running and usage" }),
          table(
            "Pools",
            ["pool", "backend", { label: "running / slots", num: true }, "slots", "cpu", "memory", "GPUs"],
            pools.map(([name, p]) => {
              const cap = p.capacity || {};
              const used = p.used || {};
              const gpus = Object.entries(cap.gpus || {}).map(([t, n]) => t + " " + ((used.gpus || {})[t] || 0) + "/" + n).join(", ") || "–";
              return h(
                "tr",
                {},
                td(h("span", {}, name, p.available === false ? h("span", { class: "reason", text: " (unavailable)" }) : null)),
                td(p.backend),
                td(fmt.n(used.slots || 0) + " / " + fmt.n(cap.slots), true),
                td(bar(used.slots || 0, cap.slots || 0, name + " slots " + (used.slots || 0) + " of " + cap.slots)),
                td(cap.cpu ? bar(used.cpu || 0, cap.cpu, name + " cpu " + (used.cpu || 0) + " of " + cap.cpu) : fmt.n(used.cpu || 0) + " cpu"),
                td(cap.memory_mb ? bar(used.memory_mb || 0, cap.memory_mb, name + " memory " + (used.memory_mb || 0) + " of " + cap.memory_mb + " MB") : fmt.n(used.memory_mb || 0) + " MB"),
                td(gpus),
              );
            }),
          ),
          h(
            "p",
            { class: "muted" },
            "Running by backend: ",
            Object.entries(stats.by_backend || {})
              .map(([b, c]) => b + " " + (c.running || 0))
              .join(", ") || "none",
          ),
        ),
      );
    }
    // waiting reasons
    const reasons = Object.entries(stats.waiting_reasons || {}).sort((a, b) => b[1] - a[1]);
    grid.append(
      h(
        "section",
        { class: "card", "aria-labelledby": "h-reasons" },
        h("h2", { id: "h-reasons", text: "Why jobs wait" }),
        reasons.length ? table("Waiting reasons", ["reason", { label: "jobs", num: true }], reasons.map(([r, n]) => h("tr", {}, td(h("span", { class: "reason", text: r })), td(fmt.n(n), true)))) : h("p", { class: "muted", text: "Nothing waits." }),
      ),
    );
    // spend against budget
    const tenantRows = tenantStats ? [[session.tenant_id, tenantStats]] : Object.entries(stats.by_tenant || {}).sort();
    grid.append(
      h(
        "section",
        { class: "card", "aria-labelledby": "h-spend" },
        h("h2", { id: "h-spend", text: "Spend against budget" }),
        tenantRows.length
          ? table(
              "Spend per tenant",
              ["tenant", { label: "spent (period)", num: true }, { label: "committed", num: true }, { label: "budget", num: true }, ""],
              tenantRows.map(([id, t]) => {
                const budget = t.budget_usd !== undefined && t.budget_usd !== null ? t.budget_usd : null;
                return h("tr", {}, td(id), td(fmt.usd(t.spend_usd || 0), true), td(fmt.usd(t.committed_usd || 0), true), td(budget === null ? "none" : fmt.usd(budget), true), td(budget ? bar((t.spend_usd || 0) + (t.committed_usd || 0), budget, id + ": " + fmt.usd((t.spend_usd || 0) + (t.committed_usd || 0)) + " of " + fmt.usd(budget)) : ""));
              }),
            )
          : h("p", { class: "muted", text: "No tenant yet." }),
      ),
    );
    return out;
  }

  // ---- tenants --------------------------------------------------------------------------------

  function quotaCell(label, used, limit) {
    if (limit === undefined || limit === null) return td(h("span", {}, fmt.n(used) + " ", h("span", { class: "nolimit", text: "no limit" })));
    return td(h("div", {}, h("span", { text: fmt.n(used) + " / " + fmt.n(limit) }), bar(used, limit, label + " " + used + " of " + limit)));
  }

  async function tenantsPage(_parts, _query, current) {
    setTitle("Tenants");
    const body = h("div");
    main.replaceChildren(h("h1", { text: "Tenants" }), body);
    const draw = async () => {
      const [tenants, waiting] = await Promise.all([
        session.admin ? api("/v1/tenants") : api("/v1/tenants/" + encodeURIComponent(session.tenant_id)).then((t) => ({ [session.tenant_id]: t })),
        api("/ui/api/waiting").catch(() => ({ by_tenant: {} })),
      ]);
      if (!current()) return;
      const rows = Object.entries(tenants).sort();
      body.replaceChildren(
        rows.length
          ? table(
              "Tenants: usage against quota, fair share against weight",
              ["tenant", { label: "weight", num: true }, "share received / fair share", "running", "cpu", "queued", "rate-limit rejections", "other rejections", "waiting by reason", "spend / budget"],
              rows.map(([id, t]) => {
                const q = t.quota || {};
                const rej = t.rejections || {};
                const rateLimited = Object.entries(rej).filter(([r]) => r.includes("rate")).reduce((s, [, n]) => s + n, 0);
                const other = Object.entries(rej).filter(([r]) => !r.includes("rate"));
                const reasons = Object.entries((waiting.by_tenant || {})[id] || {}).sort((a, b) => b[1] - a[1]);
                const fair = t.fair_share || 0;
                const got = t.dominant_share || 0;
                return h(
                  "tr",
                  { "data-tenant": id },
                  td(h("a", { href: "#/jobs?tenant_id=" + encodeURIComponent(id), text: id })),
                  td(fmt.n(t.weight), true),
                  td(h("div", {}, h("span", { text: fmt.pct(got) + " / " + fmt.pct(fair) }), bar(got, Math.max(fair, got, 0.0001), id + " received " + fmt.pct(got) + ", fair share " + fmt.pct(fair), fair > 0 ? fair / Math.max(fair, got) : null))),
                  quotaCell(id + " running", (t.usage || {}).running || t.running || 0, q.max_running),
                  quotaCell(id + " cpu", (t.usage || {}).cpu || 0, q.cpu),
                  quotaCell(id + " queued", (t.queued || 0) + (t.pending || 0), q.max_queued),
                  td(fmt.n(rateLimited), true),
                  td(other.length ? other.map(([r, n]) => r + " " + n).join(", ") : "0"),
                  td(reasons.length ? h("ul", { class: "plain" }, reasons.map(([r, n]) => h("li", {}, h("span", { class: "reason", text: r }), " " + fmt.n(n)))) : "–"),
                  td(fmt.usd(t.spend_usd || 0) + " / " + (t.budget_usd === undefined || t.budget_usd === null ? "none" : fmt.usd(t.budget_usd))),
                );
              }),
            )
          : h("p", { class: "muted", text: "No tenant has work yet." }),
        h("p", { class: "muted", text: "Share received is the tenant's dominant share of all pools (weighted); fair share is its weight over the weights of tenants with work." }),
      );
    };
    await draw();
    const refresh = throttle(serial(draw), 1000);
    return { refresh: refresh, dispose: refresh.cancel };
  }

  // ---- jobs -----------------------------------------------------------------------------------

  function jobsHash(query) {
    const q = new URLSearchParams();
    for (const [k, v] of query) if (v) q.set(k, v);
    const s = q.toString();
    return "#/jobs" + (s ? "?" + s : "");
  }

  async function jobsPage(parts, query, current) {
    if (parts.length) return jobPage(parts[0], query, current);
    setTitle("Jobs");
    let known = [];
    if (session.admin) {
      // a listing is one tenant's (the store pages each tenant's jobs): an admin picks one
      // (a server that is a client of the store has no tenants to list: type one)
      known = Object.keys(await api("/v1/tenants").catch(() => ({}))).sort();
      if (!current()) return null;
      if (!query.get("tenant_id") && known.length) {
        query.set("tenant_id", known[0]);
        history.replaceState(null, "", jobsHash(query));
      }
    }
    const field = (name, label, control) => h("label", { for: "f-" + name }, label, control);
    const select = (name, options) =>
      h("select", { id: "f-" + name, name: name }, h("option", { value: "", text: "any" }), options.map((o) => h("option", { value: o, text: o, selected: query.get(name) === o })));
    const input = (name, placeholder, type) => h("input", { id: "f-" + name, name: name, type: type || "text", value: query.get(name) || "", placeholder: placeholder || "", size: 12 });
    const form = h(
      "form",
      { class: "filters", role: "search", "aria-label": "Filter jobs" },
      session.admin ? field("tenant_id", "tenant", input("tenant_id", "tenant id")) : null,
      session.admin ? h("datalist", { id: "known-tenants" }, known.map((t) => h("option", { value: t }))) : null,
      field("status", "status", select("status", STATUSES)),
      field("priority", "priority", select("priority", PRIORITIES)),
      field("kind", "kind", input("kind", "any")),
      field("namespace", "namespace", input("namespace", "any")),
      field("backend", "backend (this page)", input("backend", "any")),
      field("created_after", "created after", input("created_after", "", "datetime-local")),
      field("created_before", "created before", input("created_before", "", "datetime-local")),
      h("button", { type: "submit", class: "primary", text: "Filter" }),
      h("button", { type: "button", text: "Clear", onclick: () => navigate("#/jobs") }),
    );
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const q = new URLSearchParams();
      for (const [k, v] of new FormData(form)) if (v) q.set(k, String(v));
      navigate(jobsHash(q));
    });
    const status = h("p", { class: "muted", role: "status", "aria-live": "polite", id: "jobs-status" });
    const body = h("div", { id: "jobs-body" });
    const prev = h("button", { type: "button", text: "← Newer", disabled: true });
    const next = h("button", { type: "button", text: "Older →", disabled: true });
    main.replaceChildren(h("h1", { text: "Jobs" }), form, status, body, h("nav", { class: "pager", "aria-label": "Pages" }, prev, next));

    if (session.admin) {
      const t = form.querySelector("#f-tenant_id");
      t.setAttribute("list", "known-tenants");
      t.required = true;
    }
    if (session.admin && !query.get("tenant_id")) {
      body.append(h("p", { class: "muted", text: "No tenant has work yet: type a tenant id to list its jobs." }));
      return { refresh: () => {}, poll: false };
    }
    const params = new URLSearchParams();
    for (const name of ["tenant_id", "status", "priority", "kind", "namespace"]) if (query.get(name)) params.set(name, query.get(name));
    for (const name of ["created_after", "created_before"]) {
      const v = query.get(name);
      if (v) params.set(name, new Date(v).toISOString());
    }
    params.set("limit", String(PAGE));
    const backend = query.get("backend");
    const cursors = [null]; // the cursor of each page seen (for "newer")
    let at = 0;
    let selected = -1;

    const draw = async () => {
      const q = new URLSearchParams(params);
      if (cursors[at]) q.set("cursor", cursors[at]);
      const t0 = performance.now();
      const page = await api("/v1/jobs?" + q.toString());
      if (!current()) return;
      page.jobs.forEach(norm);
      const jobs = backend ? page.jobs.filter((j) => j.backend === backend) : page.jobs;
      cursors[at + 1] = page.next_cursor || null;
      prev.disabled = at === 0;
      next.disabled = !page.next_cursor;
      const rows = jobs.map((j, i) =>
        h(
          "tr",
          { "data-job": j.id, "data-status": j.status, class: i === selected ? "sel" : null },
          td(h("a", { href: "#/jobs/" + encodeURIComponent(j.id), text: shortId(j.id), "aria-label": shortId(j.id) + ": job " + j.id + ", " + j.kind + ", " + j.status })),
          td(j.kind),
          session.admin ? td(j.tenant_id) : null,
          td(statusBadge(j.status)),
          td(j.priority),
          td(j.backend ? j.backend + (j.pool ? "/" + j.pool : "") : "–"),
          td(h("time", { datetime: j.created_at, title: fmt.time(j.created_at), text: fmt.ago(j.created_at) })),
          td(j.waiting_reason ? h("span", { class: "reason", text: j.waiting_reason }) : ""),
        ),
      );
      const heads = ["job", "kind"].concat(session.admin ? ["tenant"] : []).concat(["status", "priority", "backend/pool", "created", "waiting reason"]);
      body.replaceChildren(jobs.length ? table("Jobs, newest first", heads, rows, { id: "jobs-table" }) : h("p", { class: "muted", text: "No job matches." }));
      status.textContent = "Page " + (at + 1) + ": " + jobs.length + " job" + (jobs.length === 1 ? "" : "s") + (page.next_cursor ? ", more older" : "") + " (" + Math.round(performance.now() - t0) + " ms)";
      main.dataset.rendered = String(Date.now());
    };
    const refresh = serial(draw);
    prev.addEventListener("click", () => {
      if (at > 0) {
        at -= 1;
        selected = -1;
        refresh();
      }
    });
    next.addEventListener("click", () => {
      if (cursors[at + 1]) {
        at += 1;
        selected = -1;
        refresh();
      }
    });
    const keys = (event) => {
      if (event.target.closest("input, select, textarea")) return;
      const rows = body.querySelectorAll("tbody tr");
      if (!rows.length) return;
      if (event.key === "j" || event.key === "k") {
        selected = Math.max(0, Math.min(rows.length - 1, selected + (event.key === "j" ? 1 : -1)));
        rows.forEach((r, i) => r.classList.toggle("sel", i === selected));
        rows[selected].querySelector("a").focus();
        event.preventDefault();
      }
    };
    document.addEventListener("keydown", keys);
    await draw();
    const live = throttle(refresh, 1000);
    return {
      refresh: (events) => {
        // the first page follows the live stream (at most once a second); older pages on poll
        if (!events.length) refresh();
        else if (at === 0) live();
      },
      dispose: () => {
        live.cancel();
        document.removeEventListener("keydown", keys);
      },
    };
  }

  async function jobPage(jobId, query, current) {
    setTitle("Job " + shortId(jobId));
    const tenantParam = query.get("tenant_id") ? "?tenant_id=" + encodeURIComponent(query.get("tenant_id")) : "";
    const body = h("div", { id: "job" });
    const message = h("p", { role: "status", "aria-live": "polite", id: "job-message" });
    main.replaceChildren(h("p", {}, h("a", { href: "#/jobs", text: "← Jobs" })), body, message);
    let job = null;
    const draw = async () => {
      job = norm(await api("/v1/jobs/" + encodeURIComponent(jobId) + tenantParam));
      if (!current()) return;
      body.replaceChildren(...jobBody(job, act));
    };
    const act = async (what) => {
      message.textContent = "";
      const tenant = "?tenant_id=" + encodeURIComponent(job.tenant_id);
      try {
        if (what === "cancel") {
          if (!confirm("Cancel job " + job.id + "?")) return;
          await api("/v1/jobs/" + encodeURIComponent(job.id) + "/cancel" + tenant, { method: "POST", json: { reason: "canceled from the dashboard" } });
          message.textContent = "Cancel sent.";
          await draw();
        } else {
          const copy = await api("/v1/jobs/" + encodeURIComponent(job.id) + "/retry" + tenant, { method: "POST" });
          message.textContent = "Retried as " + copy.id + ".";
          navigate("#/jobs/" + encodeURIComponent(copy.id));
        }
      } catch (e) {
        message.textContent = e.message;
        message.className = "error";
      }
    };
    await draw();
    const refresh = serial(draw);
    return {
      refresh: (events) => {
        if (!events.length || events.some((e) => e.job_id === jobId || e.event === "gap")) refresh();
      },
    };
  }

  function jobBody(job, act) {
    const terminal = TERMINAL.has(job.status);
    const out = [];
    out.push(h("h1", {}, "Job ", h("code", { text: job.id }), " ", statusBadge(job.status)));
    out.push(
      h(
        "div",
        { class: "actions" },
        h("button", { type: "button", id: "cancel", class: "danger", disabled: terminal, "aria-disabled": terminal, onclick: () => act("cancel"), text: "Cancel" }),
        h("button", { type: "button", id: "retry", disabled: !terminal, "aria-disabled": !terminal, onclick: () => act("retry"), text: "Retry" }),
      ),
    );
    if (job.waiting_reason && !terminal) {
      out.push(h("p", { id: "waiting-reason" }, "Waiting: ", h("span", { class: "reason", text: job.waiting_reason }), job.next_attempt_at ? " (next attempt " + fmt.time(job.next_attempt_at) + ")" : ""));
    }
    if (job.progress) {
      out.push(h("p", {}, h("label", { for: "progress" }, "Progress " + fmt.pct(job.progress.fraction) + (job.progress.message ? ": " + job.progress.message : "") + " "), h("progress", { id: "progress", max: 1, value: job.progress.fraction })));
    }
    const grid = h("div", { class: "grid" });
    out.push(grid);
    const facts = [
      ["kind", job.kind],
      ["tenant", job.tenant_id],
      ["namespace", job.namespace || "default"],
      ["priority", job.priority || "batch"],
      ["backend / pool", job.backend ? job.backend + " / " + (job.pool || "–") : "–"],
      ["attempt", String(job.attempt || 0)],
      ["created", fmt.time(job.created_at)],
      ["started", fmt.time(job.started_at)],
      ["finished", fmt.time(job.finished_at)],
      ["cost estimate", fmt.usd(job.estimated_cost_usd)],
      ["cost so far", fmt.usd(job.cost_usd || 0)],
      ["tags", (job.tags || []).join(", ") || "–"],
    ];
    if (job.retry_of) facts.push(["retry of", h("a", { href: "#/jobs/" + encodeURIComponent(job.retry_of), text: job.retry_of })]);
    if (job.cancel_reason) facts.push(["cancel reason", job.cancel_reason]);
    const wf = job.metadata && job.metadata.workflow_id;
    if (wf) facts.push(["workflow", h("a", { href: "#/workflows/" + encodeURIComponent(wf), text: (job.metadata.workflow_name || wf) + " · step " + job.metadata.workflow_step })]);
    const deps = (job.constraints && job.constraints.depends_on) || [];
    if (deps.length) facts.push(["after", h("span", {}, deps.map((d, i) => [i ? ", " : "", h("a", { href: "#/jobs/" + encodeURIComponent(d), text: shortId(d) })]))]);
    grid.append(h("section", { class: "card", "aria-labelledby": "h-facts" }, h("h2", { id: "h-facts", text: "Facts" }), h("dl", { class: "facts" }, facts.map(([k, v]) => [h("dt", { text: k }), h("dd", {}, v)]))));
    grid.append(h("section", { class: "card", "aria-labelledby": "h-payload" }, h("h2", { id: "h-payload", text: "Payload" }), h("pre", { tabindex: 0, "aria-label": "payload", text: JSON.stringify(job.payload || {}, null, 2) })));
    const attempts = job.attempts || [];
    grid.append(
      h(
        "section",
        { class: "card wide", "aria-labelledby": "h-attempts" },
        h("h2", { id: "h-attempts", text: "Attempts" }),
        attempts.length
          ? table(
              "Attempts",
              ["#", "backend / pool", "status", "started", "finished", { label: "cost", num: true }, "error"],
              attempts.map((a) =>
                h(
                  "tr",
                  {},
                  td(String(a.number)),
                  td(a.backend + " / " + a.pool),
                  td(statusBadge(a.status || "running")),
                  td(fmt.time(a.started_at)),
                  td(fmt.time(a.finished_at)),
                  td(fmt.usd(a.cost_usd || 0), true),
                  td(a.error ? h("details", {}, h("summary", { text: a.error.type + ": " + a.error.message }), h("pre", { tabindex: 0, "aria-label": "traceback of attempt " + a.number, text: a.error.traceback || "(no traceback)" })) : "–"),
                ),
              ),
            )
          : h("p", { class: "muted", text: "Not started yet." }),
      ),
    );
    const result = job.result;
    const logs = [];
    if (result && typeof result === "object" && ("stdout_tail" in result || "stderr_tail" in result)) {
      if (result.stdout_tail) logs.push(["stdout (tail)", result.stdout_tail]);
      if (result.stderr_tail) logs.push(["stderr (tail)", result.stderr_tail]);
    } else if (job.error && job.error.message && job.error.message.includes("\n")) {
      logs.push(["output (tail, from the error)", job.error.message]);
    }
    if (logs.length) {
      grid.append(h("section", { class: "card wide", "aria-labelledby": "h-logs" }, h("h2", { id: "h-logs", text: "Logs" }), logs.map(([k, v]) => [h("h3", { text: k }), h("pre", { tabindex: 0, "aria-label": k, text: v })])));
    }
    if (job.status === "succeeded") {
      grid.append(h("section", { class: "card wide", "aria-labelledby": "h-result" }, h("h2", { id: "h-result", text: "Result" }), h("pre", { tabindex: 0, "aria-label": "result", text: JSON.stringify(result, null, 2) })));
    }
    if (job.error) {
      grid.append(h("section", { class: "card wide", "aria-labelledby": "h-error" }, h("h2", { id: "h-error", text: "Error" }), h("p", { class: "error", text: job.error.type + ": " + job.error.message.split("\n")[0] })));
    }
    return out;
  }

  // ---- workflows ------------------------------------------------------------------------------

  async function workflowsPage(parts, _query, current) {
    const one = parts[0];
    setTitle(one ? "Workflow" : "Workflows");
    const body = h("div");
    main.replaceChildren(one ? h("p", {}, h("a", { href: "#/workflows", text: "← Workflows" })) : h("h1", { text: "Workflows" }), body);
    const draw = async () => {
      const found = await api("/ui/api/workflows" + (one ? "?workflow_id=" + encodeURIComponent(one) : ""));
      if (!current()) return;
      if (one) {
        const w = found.workflows[0];
        body.replaceChildren(...(w ? [h("h1", {}, "Workflow " + (w.name || w.workflow_id) + " ", statusBadge(w.status)), dag(w), stepTable(w)] : [h("p", { class: "muted", text: "No such workflow among the newest jobs." })]));
        return;
      }
      body.replaceChildren(
        found.workflows.length
          ? table(
              "Workflows",
              ["workflow", "tenant", "status", { label: "steps", num: true }, "created"],
              found.workflows.map((w) => h("tr", {}, td(h("a", { href: "#/workflows/" + encodeURIComponent(w.workflow_id), text: w.name || w.workflow_id })), td(w.tenant_id), td(statusBadge(w.status)), td(String(w.steps.length), true), td(fmt.ago(w.created_at)))),
            )
          : h("p", { class: "muted", text: "No workflow among the newest jobs." }),
        h("p", { class: "muted", text: "Workflows among each tenant's newest " + fmt.n(found.per_tenant) + " jobs (" + fmt.n(found.scanned) + " read)." }),
      );
    };
    await draw();
    const refresh = throttle(serial(draw), 3000);
    return { refresh: refresh, dispose: refresh.cancel };
  }

  function stepTable(w) {
    return table(
      "Steps",
      ["step", "status", "after", "waiting reason", "job"],
      w.steps.map((s) => h("tr", {}, td(s.step), td(statusBadge(s.status)), td(s.after.join(", ") || "–"), td(s.waiting_reason ? h("span", { class: "reason", text: s.waiting_reason }) : ""), td(h("a", { href: "#/jobs/" + encodeURIComponent(s.job_id), text: shortId(s.job_id) })))),
    );
  }

  function dag(w) {
    const SVG = "http://www.w3.org/2000/svg";
    const s = (tag, attrs, ...kids) => {
      const el = document.createElementNS(SVG, tag);
      for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
      for (const kid of kids) if (kid) el.append(kid);
      return el;
    };
    const byName = new Map(w.steps.map((x) => [x.step, x]));
    const depth = new Map();
    const depthOf = (name, seen) => {
      if (depth.has(name)) return depth.get(name);
      const step = byName.get(name);
      if (!step || seen.has(name)) return 0;
      seen.add(name);
      const d = step.after.length ? 1 + Math.max(...step.after.map((a) => depthOf(a, seen))) : 0;
      depth.set(name, d);
      return d;
    };
    const columns = [];
    for (const step of w.steps) {
      const d = depthOf(step.step, new Set());
      (columns[d] = columns[d] || []).push(step);
    }
    const W = 150, H = 44, GX = 60, GY = 18;
    const pos = new Map();
    columns.forEach((col, x) => (col || []).forEach((step, y) => pos.set(step.step, { x: 10 + x * (W + GX), y: 10 + y * (H + GY) })));
    const width = 20 + columns.length * (W + GX) - GX;
    const height = 20 + Math.max(...columns.map((c) => (c || []).length)) * (H + GY) - GY;
    const svg = s("svg", { class: "dag", viewBox: "0 0 " + width + " " + height, width: width, height: height, role: "group", "aria-label": "Workflow graph: " + w.steps.length + " steps" });
    for (const step of w.steps) {
      const to = pos.get(step.step);
      for (const a of step.after) {
        const from = pos.get(a);
        if (!from) continue;
        const x1 = from.x + W, y1 = from.y + H / 2, x2 = to.x, y2 = to.y + H / 2;
        svg.append(s("path", { d: "M" + x1 + "," + y1 + " C" + (x1 + GX / 2) + "," + y1 + " " + (x2 - GX / 2) + "," + y2 + " " + x2 + "," + y2, "aria-hidden": "true" }));
      }
    }
    for (const step of w.steps) {
      const p = pos.get(step.step);
      const label = step.step + ": " + step.status + (step.waiting_reason ? " (" + step.waiting_reason + ")" : "");
      const link = s("a", { href: "#/jobs/" + encodeURIComponent(step.job_id), class: "dag-" + step.status, "aria-label": label, "data-step": step.step, "data-status": step.status });
      link.append(s("title", {}, document.createTextNode(label)));
      link.append(s("rect", { x: p.x, y: p.y, width: W, height: H, rx: 8 }));
      const t1 = s("text", { x: p.x + 10, y: p.y + 18 });
      t1.textContent = step.step.length > 18 ? step.step.slice(0, 17) + "…" : step.step;
      const t2 = s("text", { x: p.x + 10, y: p.y + 35 });
      t2.textContent = step.status;
      link.append(t1, t2);
      svg.append(link);
    }
    return h("div", { class: "card scroll", style: "margin-bottom:12px", tabindex: 0, role: "region", "aria-label": "Workflow graph" }, svg);
  }

  // ---- tools ----------------------------------------------------------------------------------

  async function toolsPage(_parts, _query, current) {
    setTitle("Tools");
    const body = h("div");
    main.replaceChildren(h("h1", { text: "Tools (ALTAR)" }), body);
    const draw = async () => {
      const tools = await api("/ui/api/tools");
      if (!current()) return;
      body.replaceChildren(
        tools.tools.length
          ? h(
              "div",
              { class: "grid" },
              tools.tools.map((t) => {
                const limits = Object.entries(t.limits || {}).filter(([, v]) => v !== null && v !== undefined);
                const mine = t.recent || [];
                return h(
                  "section",
                  { class: "card", "aria-label": "tool " + t.declaration.name },
                  h("h2", {}, h("code", { text: t.declaration.name })),
                  h("p", { text: t.declaration.description || "" }),
                  h("p", { class: "muted", text: "Limits: " + (limits.length ? limits.map(([k, v]) => k + " " + v).join(", ") : "none") }),
                  h("details", {}, h("summary", { text: "Declaration" }), h("pre", { tabindex: 0, "aria-label": "declaration of " + t.declaration.name, text: JSON.stringify(t.declaration, null, 2) })),
                  h("h3", { text: "Recent calls" }),
                  mine.length ? h("ul", {}, mine.map((j) => h("li", {}, h("a", { href: "#/jobs/" + encodeURIComponent(j.job_id) + "?tenant_id=" + encodeURIComponent(j.tenant_id), text: fmt.ago(j.created_at) }), " ", session.admin ? j.tenant_id + " " : "", statusBadge(j.status)))) : h("p", { class: "muted", text: "None among the newest tool calls." }),
                );
              }),
            )
          : h("p", { class: "muted", text: "No tool is registered." }),
      );
    };
    await draw();
    const refresh = throttle(serial(draw), 5000);
    return { refresh: refresh, dispose: refresh.cancel };
  }

  // ---- keyboard -------------------------------------------------------------------------------

  let goPending = false;
  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (event.target.closest && event.target.closest("input, select, textarea")) return;
    if (event.key === "/") {
      const filter = document.getElementById("f-kind") || document.getElementById("f-status");
      if (filter) {
        filter.focus();
        event.preventDefault();
      }
      return;
    }
    if (goPending) {
      goPending = false;
      const to = { o: "#/", t: "#/tenants", j: "#/jobs", w: "#/workflows", a: "#/tools" }[event.key];
      if (to) {
        navigate(to);
        event.preventDefault();
        event.stopImmediatePropagation();
      }
      return;
    }
    if (event.key === "g") goPending = true;
  }, true);

  // ---- start ----------------------------------------------------------------------------------

  (async function start() {
    try {
      const found = await api("/ui/session");
      if (found.logged_in === false) {
        showLogin("");
        return;
      }
      session = found;
      started();
    } catch (e) {
      showLogin("");
    }
  })();
})();
