// Hermes dashboard: a profile's request charts and timeline, and the overview's
// restarts and board throughput. Charts are drawn by the vendored uPlot
// (/static/vendor/uplot/, see VERSION.txt there); the data comes from the dashboard's
// API (/api/profiles/<name>/charts|timeline, /api/activity, /api/events/stream).
// Every value reaches the DOM through textContent.
"use strict";
(function () {
  const { api, el, stamp, follow } = window.Hermes;
  const TIMELINE_PREFIXES = ["gateway.", "desired.", "slot.", "profile.", "boot."];
  const REFRESH_MS = { hour: 30000, day: 300000 };
  const ACTIVITY_MS = 15000;
  const TIMELINE_MAX = 200;
  const COLORS = { a: "#4f46e5", b: "#b91c1c", c: "#15803d", d: "#b45309" };

  function number(value, digits) {
    if (value === null || value === undefined) return "-";
    return Number(value).toFixed(digits === undefined ? 0 : digits);
  }

  // One chart in a <figure data-chart>: `series` is [{key, label, values, color, bars}].
  // What uPlot is given is also left on the figure (data-points), so it can be read back.
  function draw(figure, xs, series) {
    const plot = figure.querySelector(".plot");
    if (figure._uplot) { figure._uplot.destroy(); figure._uplot = null; }
    const points = { t: xs, series: {} };
    for (const s of series) points.series[s.key] = s.values;
    figure.setAttribute("data-points", JSON.stringify(points));
    if (typeof window.uPlot !== "function") {
      plot.textContent = "chart library not loaded";
      return;
    }
    const bars = window.uPlot.paths && window.uPlot.paths.bars
      ? window.uPlot.paths.bars({ size: [0.8, 24] }) : undefined;
    const opts = {
      width: Math.max(260, plot.clientWidth || 480),
      height: 190,
      scales: { x: { time: true } },
      // The axis in UTC, like every time the dashboard shows.
      tzDate: (ts) => window.uPlot.tzDate(new Date(ts * 1000), "Etc/UTC"),
      series: [{ label: "UTC", value: (u, v) => (v === null ? "-" : stamp(v)) }].concat(
        series.map((s) => ({
          label: s.label,
          stroke: s.color,
          fill: s.bars ? s.color + "55" : undefined,
          width: s.bars ? 1 : 2,
          paths: s.bars ? bars : undefined,
          points: { show: !s.bars, size: 5 },
          spanGaps: false,
        }))
      ),
      axes: [{}, { size: 56 }],
      legend: { show: true },
    };
    figure._uplot = new window.uPlot(opts, [xs].concat(series.map((s) => s.values)), plot);
  }

  function tabs(container, onPick) {
    const buttons = container.querySelectorAll("button[data-window]");
    buttons.forEach((btn) => {
      btn.addEventListener("click", () => {
        buttons.forEach((b) => b.setAttribute("aria-pressed", String(b === btn)));
        onPick(btn.getAttribute("data-window"));
      });
    });
  }

  // -- a profile's charts -------------------------------------------------------------

  function setupCharts(card) {
    const name = card.getAttribute("data-profile");
    const status = document.getElementById("charts-status");
    const totals = document.getElementById("chart-totals");
    const note = document.getElementById("chart-note");
    const table = document.querySelector("#chart-table tbody");
    let windowName = "hour";
    let timer = null;
    let generation = 0;

    function figure(key) { return card.querySelector(`figure[data-chart="${key}"]`); }

    function render(data) {
      const xs = data.t;
      draw(figure("rate"), xs, [
        { key: "requests_per_min", label: "requests/min", values: data.rate_per_min, color: COLORS.a, bars: true },
      ]);
      draw(figure("latency"), xs, [
        { key: "p50_ms", label: "p50 ms", values: data.p50_ms, color: COLORS.c },
        { key: "p99_ms", label: "p99 ms", values: data.p99_ms, color: COLORS.d },
      ]);
      draw(figure("errors"), xs, [
        {
          key: "error_pct", label: "errors %", color: COLORS.b,
          values: data.error_rate.map((r) => (r === null ? null : Math.round(r * 10000) / 100)),
        },
      ]);
      draw(figure("tokens"), xs, [
        { key: "tokens_in", label: "tokens in", values: data.tokens_in, color: COLORS.a, bars: true },
        { key: "tokens_out", label: "tokens out", values: data.tokens_out, color: COLORS.d, bars: true },
      ]);
      const t = data.totals;
      const span = data.window === "day" ? "the last day" : "the last hour";
      totals.textContent = `${t.requests} requests, ${t.errors} errors, ` +
        `${t.tokens_in} tokens in / ${t.tokens_out} out in ${span}`;
      totals.setAttribute("data-requests", String(t.requests));
      const notes = [];
      if (!data.available) notes.push(data.reason || "sessions database unreadable");
      if (data.truncated) notes.push("only the newest exchanges of this window are counted");
      if (t.requests && t.tokens_reported < t.requests) {
        notes.push(`the provider reported token usage for ${t.tokens_reported} of ${t.requests} exchanges`);
      }
      note.textContent = notes.join("; ");
      table.replaceChildren();
      for (let i = xs.length - 1; i >= 0; i--) {
        if (!data.requests[i]) continue;
        const tr = el("tr");
        tr.setAttribute("data-bucket", String(xs[i]));
        [stamp(xs[i]), data.requests[i], data.errors[i], number(data.p50_ms[i], 1),
          number(data.p99_ms[i], 1), data.tokens_in[i], data.tokens_out[i]]
          .forEach((v) => tr.appendChild(el("td", null, v)));
        table.appendChild(tr);
      }
    }

    async function load() {
      const mine = ++generation;
      if (timer) clearTimeout(timer);
      status.textContent = "loading…";
      try {
        const { status: code, body } = await api(
          `/api/profiles/${encodeURIComponent(name)}/charts?window=${windowName}`);
        if (mine !== generation) return;
        if (code === 200 && body) {
          render(body);
          status.textContent = `updated ${stamp(Date.now() / 1000).slice(11)} UTC`;
        } else {
          status.textContent = (body && body.detail) || `charts unavailable (${code})`;
        }
      } catch (e) {
        if (mine === generation) status.textContent = String(e.message || e);
      }
      if (mine === generation) timer = setTimeout(() => load(), REFRESH_MS[windowName]);
    }

    tabs(card, (picked) => { windowName = picked; load(); });
    load();
  }

  // -- a profile's timeline -----------------------------------------------------------

  function timelineItem(entry) {
    const li = el("li", "tone-" + entry.tone);
    li.setAttribute("data-event-id", String(entry.id));
    li.setAttribute("data-kind", entry.kind);
    li.appendChild(el("span", "tl-time", stamp(entry.at)));
    const what = el("div");
    what.appendChild(el("span", "tl-title", entry.title));
    what.appendChild(el("span", "tl-kind", entry.kind));
    if (entry.detail) what.appendChild(el("span", "tl-detail", entry.detail));
    li.appendChild(what);
    return li;
  }

  function setupTimeline(card) {
    const name = card.getAttribute("data-profile");
    const list = document.getElementById("timeline");
    const live = document.getElementById("timeline-live");
    const empty = document.getElementById("timeline-empty");
    let lastId = 0;

    function add(entries) {
      for (const entry of entries) {
        if (!TIMELINE_PREFIXES.some((p) => entry.kind.startsWith(p))) continue;
        if (list.querySelector(`li[data-event-id="${entry.id}"]`)) continue;
        list.insertBefore(timelineItem(entry), list.firstChild);
      }
      while (list.children.length > TIMELINE_MAX) list.removeChild(list.lastChild);
      empty.hidden = list.children.length > 0;
    }

    function stream() {
      const url = `/api/events/stream?profile=${encodeURIComponent(name)}&after=${lastId}`;
      const again = () => { live.textContent = "reconnecting…"; setTimeout(stream, 2000); };
      follow(url, (event, data) => {
        if (event === "hello") live.textContent = "live";
        else if (event === "events") {
          for (const e of data) lastId = Math.max(lastId, e.id);
          add(data);
        }
      }).then(again, again);
    }

    async function load() {
      const { status, body } = await api(
        `/api/profiles/${encodeURIComponent(name)}/timeline?limit=100`);
      if (status !== 200 || !body) {
        live.textContent = (body && body.detail) || `timeline unavailable (${status})`;
        return;
      }
      list.replaceChildren();
      add(body.entries.slice().reverse()); // oldest first, each on top of the last
      lastId = body.last_id;
      stream();
    }

    load().catch((e) => { live.textContent = String(e.message || e); });
  }

  // -- the overview -------------------------------------------------------------------

  function setupActivity(card, table) {
    const totals = document.getElementById("throughput-total");
    let windowName = "day";
    let timer = null;

    async function load() {
      if (timer) clearTimeout(timer);
      try {
        const { status, body } = await api(`/api/activity?window=${windowName}`);
        if (status === 200 && body) {
          if (table) {
            table.querySelectorAll("tr[data-profile]").forEach((tr) => {
              const cell = tr.querySelector('[data-activity="restarts"]');
              if (cell) cell.textContent = String(body.restarts[tr.getAttribute("data-profile")] || 0);
            });
          }
          const th = body.throughput;
          draw(card.querySelector('figure[data-chart="throughput"]'), th.t, [
            { key: "completed", label: "tasks completed", values: th.completed, color: COLORS.c, bars: true },
          ]);
          const span = body.window === "day" ? "the last day" : "the last hour";
          totals.textContent = `${th.total} tasks completed in ${span}`;
          totals.setAttribute("data-total", String(th.total));
        } else {
          totals.textContent = (body && body.detail) || `activity unavailable (${status})`;
        }
      } catch (e) {
        totals.textContent = String(e.message || e);
      }
      timer = setTimeout(load, ACTIVITY_MS);
    }

    tabs(card, (picked) => { windowName = picked; load(); });
    load();
  }

  document.addEventListener("DOMContentLoaded", () => {
    const charts = document.getElementById("charts");
    if (charts) setupCharts(charts);
    const timeline = document.getElementById("timeline-card");
    if (timeline) setupTimeline(timeline);
    const activity = document.getElementById("activity");
    if (activity) setupActivity(activity, document.getElementById("profiles"));
  });
})();
