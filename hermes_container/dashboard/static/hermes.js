// Hermes dashboard: what the page scripts of the Kanban, Events and chart views share:
// the page's tokens, JSON requests that send them, and DOM helpers. base.html loads it
// before every page script (deferred scripts run in document order).
"use strict";
window.Hermes = (function () {
  const meta = (name) => {
    const el = document.querySelector(`meta[name="${name}"]`);
    return el ? el.getAttribute("content") : null;
  };
  const sessionToken = meta("hermes-session-token"); // loopback mode only
  const csrfToken = meta("csrf-token");

  function headers(extra) {
    const h = Object.assign({ Accept: "application/json" }, extra || {});
    if (sessionToken) h["X-Hermes-Session-Token"] = sessionToken;
    if (csrfToken) h["X-CSRF-Token"] = csrfToken;
    return h;
  }

  // Back to the login page, which returns here (query string included) afterwards.
  function toLogin(body) {
    const url = (body && body.login_url) || "/login";
    const next = encodeURIComponent(location.pathname + location.search);
    location.href = url.replace(/next=[^&]*/, "next=" + next);
  }

  // fetch() with the tokens; `options.json` is sent as a JSON body. Resolves to
  // {status, body} (body: the parsed JSON or null); a 401 goes to the login page.
  async function api(path, options) {
    const opts = Object.assign({ credentials: "same-origin" }, options || {});
    opts.headers = headers(opts.headers);
    if (opts.json !== undefined) {
      opts.body = JSON.stringify(opts.json);
      opts.headers["Content-Type"] = "application/json";
      delete opts.json;
    }
    const res = await fetch(path, opts);
    let body = null;
    try { body = await res.json(); } catch (e) { body = null; }
    if (res.status === 401) { toLogin(body); throw new Error("not logged in"); }
    return { status: res.status, body: body };
  }

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  // One row of the Profiles table, as overview.html renders it, for a profile that
  // appeared after the page was rendered; app.js fills its fields from /api/profiles.
  function profileRow(name, state) {
    const tr = el("tr");
    tr.setAttribute("data-profile", name);
    const link = el("a", null, name);
    link.href = `/profiles/${encodeURIComponent(name)}`;
    const first = el("td");
    first.append(link);
    tr.append(first);
    const cell = (attr, value, text) => {
      const td = el("td", null, text);
      td.setAttribute(attr, value);
      tr.append(td);
    };
    for (const field of ["desired_state", "gateway_state", "ready", "pid", "uptime_s", "restarts"]) {
      cell("data-field", field, field === "gateway_state" ? state || "unknown" : "-");
    }
    cell("data-activity", "restarts", "-");
    cell("data-field", "port", "-");
    return tr;
  }

  // Unix seconds as `YYYY-MM-DD HH:MM:SS` (UTC).
  function stamp(at) {
    return new Date(at * 1000).toISOString().replace("T", " ").slice(0, 19);
  }

  // Server-sent events over fetch() (EventSource cannot send the token header): calls
  // onMessage(eventName, parsedJson) for each event with data; comments keep the
  // connection alive and are skipped. Returns when the server ends the stream; throws
  // when it cannot be opened (or sends something that is not JSON).
  async function follow(url, onMessage, signal) {
    const res = await fetch(url, {
      credentials: "same-origin", signal: signal,
      headers: headers({ Accept: "text/event-stream" }),
    });
    if (res.status === 401) { toLogin(null); return; }
    if (!res.ok || !res.body) throw new Error(`stream unavailable (${res.status})`);
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        let name = "message";
        const data = [];
        for (const line of block.split("\n")) {
          if (line.startsWith("event: ")) name = line.slice(7);
          else if (line.startsWith("data: ")) data.push(line.slice(6));
        }
        if (!data.length) continue; // a keep-alive comment
        onMessage(name, JSON.parse(data.join("\n")));
      }
    }
  }

  return Object.freeze({ meta, headers, toLogin, api, el, profileRow, stamp, follow });
})();
