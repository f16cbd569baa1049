// Hermes dashboard, Events page: the ledger's newest events for the chosen filters
// (/api/events), then every new one as it is committed (/api/events/stream).
// No build step, no framework; every value reaches the DOM through textContent.
"use strict";
(function () {
  const { api, el, stamp, follow } = window.Hermes;
  const FIELDS = ["profile", "kind", "since", "until"];
  const MAX_ROWS = 2000;
  const RECONNECT_MS = 2000;

  function row(event) {
    const tr = el("tr", "tone-" + event.tone);
    tr.setAttribute("data-event-id", String(event.id));
    tr.setAttribute("data-kind", event.kind);
    tr.appendChild(el("td", "mono", event.id));
    tr.appendChild(el("td", "mono", stamp(event.at)));
    const kind = el("td");
    kind.appendChild(el("span", "event-kind", event.kind));
    tr.appendChild(kind);
    const profile = el("td");
    if (event.profile) {
      const link = el("a", null, event.profile);
      link.href = "/profiles/" + encodeURIComponent(event.profile);
      profile.appendChild(link);
    } else {
      profile.textContent = "-";
    }
    tr.appendChild(profile);
    tr.appendChild(el("td", "muted", event.actor));
    const what = el("td");
    what.appendChild(el("span", "event-title", event.title));
    if (event.detail) what.appendChild(el("span", "event-detail muted", event.detail));
    tr.appendChild(what);
    return tr;
  }

  function query(filters, extra) {
    const params = new URLSearchParams();
    for (const key of FIELDS) if (filters[key]) params.set(key, filters[key]);
    for (const [key, value] of Object.entries(extra || {})) params.set(key, String(value));
    return params.toString();
  }

  document.addEventListener("DOMContentLoaded", () => {
    const form = document.getElementById("events-filters");
    if (!form) return;
    const body = document.getElementById("events-body");
    const live = document.getElementById("events-live");
    const error = document.getElementById("events-error");
    const empty = document.getElementById("events-empty");
    const older = document.getElementById("events-older");
    let filters = {};
    let lastId = 0;
    let oldestId = null;
    let controller = null;
    let generation = 0;

    function setLive(text, state) {
      live.textContent = text;
      live.className = "pill" + (state ? " pill-" + state : "");
    }

    function readForm() {
      const found = {};
      for (const key of FIELDS) {
        const value = form.elements[key].value.trim();
        if (value) found[key] = value;
      }
      return found;
    }

    function fillForm(values) {
      for (const key of FIELDS) {
        const input = form.elements[key];
        const value = values[key] || "";
        if (input.tagName === "SELECT" && value &&
            !Array.from(input.options).some((o) => o.value === value)) {
          input.appendChild(el("option", null, value)).value = value;
        }
        input.value = value;
      }
    }

    function showEmpty() { empty.hidden = body.children.length > 0; }

    function prepend(events) {
      // The stream sends oldest first: each goes on top of the one before.
      for (const event of events) {
        if (body.querySelector(`tr[data-event-id="${event.id}"]`)) continue;
        body.insertBefore(row(event), body.firstChild);
        lastId = Math.max(lastId, event.id);
      }
      while (body.children.length > MAX_ROWS) body.removeChild(body.lastChild);
      showEmpty();
    }

    function stopStream() {
      if (controller) controller.abort();
      controller = null;
    }

    function startStream(mine) {
      stopStream();
      if (filters.until) { setLive("not following (until is set)", "warn"); return; }
      controller = new AbortController();
      const url = "/api/events/stream?" + query(
        { profile: filters.profile, kind: filters.kind }, { after: lastId });
      follow(url, (name, data) => {
        if (mine !== generation) return;
        if (name === "hello") setLive("live", "ok");
        else if (name === "events") prepend(data);
        else if (name === "unavailable") setLive("ledger unavailable", "warn");
      }, controller.signal).then(() => {
        if (mine === generation) {
          setLive("reconnecting…", "warn");
          setTimeout(() => { if (mine === generation) startStream(mine); }, RECONNECT_MS);
        }
      }, (e) => {
        if (e && e.name === "AbortError") return;
        if (mine === generation) {
          setLive("reconnecting…", "warn");
          setTimeout(() => { if (mine === generation) startStream(mine); }, RECONNECT_MS);
        }
      });
    }

    async function load() {
      const mine = ++generation;
      stopStream();
      error.textContent = "";
      setLive("loading…", null);
      const { status, body: data } = await api("/api/events?" + query(filters));
      if (mine !== generation) return;
      body.replaceChildren();
      if (status !== 200 || !data) {
        error.textContent = (data && data.detail) || `could not load events (${status})`;
        setLive("stopped", "warn");
        showEmpty();
        return;
      }
      for (const event of data.events) body.appendChild(row(event));
      lastId = data.last_id;
      oldestId = data.events.length ? data.events[data.events.length - 1].id : null;
      older.hidden = !data.more;
      showEmpty();
      startStream(mine);
    }

    async function loadOlder() {
      if (oldestId === null) return;
      const mine = generation;
      const { status, body: data } = await api(
        "/api/events?" + query(filters, { before: oldestId }));
      if (mine !== generation || status !== 200 || !data) return;
      for (const event of data.events) body.appendChild(row(event));
      if (data.events.length) oldestId = data.events[data.events.length - 1].id;
      older.hidden = !data.more;
      showEmpty();
    }

    function apply(values) {
      filters = values;
      const search = query(filters);
      history.replaceState(null, "", location.pathname + (search ? "?" + search : ""));
      load().catch((e) => { error.textContent = String(e.message || e); });
    }

    form.addEventListener("submit", (e) => { e.preventDefault(); apply(readForm()); });
    document.getElementById("events-reset").addEventListener("click", () => {
      fillForm({}); apply({});
    });
    ["events-profile", "events-kind"].forEach((id) => {
      document.getElementById(id).addEventListener("change", () => apply(readForm()));
    });
    older.addEventListener("click", () => { loadOlder().catch(() => {}); });

    const initial = {};
    const params = new URLSearchParams(location.search);
    for (const key of FIELDS) if (params.get(key)) initial[key] = params.get(key);
    fillForm(initial);
    apply(readForm());
  });
})();
