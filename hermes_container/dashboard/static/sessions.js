// Hermes dashboard, Sessions page: a profile's sessions from /api/sessions (list, search,
// pages), a session's transcript, its export (a download made here, so the loopback
// token header goes with the request) and its deletion behind a confirmation dialog.
// No build step, no framework; every value reaches the DOM through textContent.
"use strict";
(function () {
  const { api, el, headers, toLogin } = window.Hermes;
  const $ = (id) => document.getElementById(id);
  const ROLE_LABELS = { user: "User", assistant: "Assistant", system: "System", error: "Error" };

  const page = {
    profile: null,
    session: null, // the session whose transcript is open
    summary: null,
    query: "",
    offset: 0,
    nextOffset: null,
    earlier: [], // offsets of the pages before this one
    seq: 0,
  };

  const enc = encodeURIComponent;
  const base = () => `/api/sessions/${enc(page.profile)}`;
  const sessionUrl = (id) => `${base()}/session/${enc(id)}`;

  function setResult(text, error) {
    const node = $("sessions-result");
    node.className = "action-result" + (error ? " error" : "");
    node.textContent = text;
  }

  function stamp(iso) {
    return iso ? String(iso).replace("T", " ").replace(/\.\d+Z$/, "").replace(/Z$/, "") : "-";
  }

  // The address bar follows the page (profile, open session, search), so a reload or a
  // shared link opens the same view.
  function remember() {
    const params = new URLSearchParams({ profile: page.profile });
    if (page.session) params.set("session", page.session);
    if (page.query) params.set("q", page.query);
    history.replaceState(null, "", `/sessions?${params}`);
    $("sessions-to-playground").href = `/playground?profile=${enc(page.profile)}`;
  }

  // `text` with every case-insensitive occurrence of the search in <mark>.
  function highlighted(node, text) {
    const needle = page.query.toLowerCase();
    const lower = text.toLowerCase();
    if (!needle || lower.length !== text.length) {
      node.textContent = text;
      return node;
    }
    let at = 0;
    for (;;) {
      const hit = lower.indexOf(needle, at);
      if (hit < 0) break;
      node.appendChild(document.createTextNode(text.slice(at, hit)));
      node.appendChild(el("mark", null, text.slice(hit, hit + needle.length)));
      at = hit + needle.length;
    }
    node.appendChild(document.createTextNode(text.slice(at)));
    return node;
  }

  // -- the list ---------------------------------------------------------------------------

  function row(item) {
    const tr = el("tr");
    tr.dataset.session = item.session_id;
    if (item.session_id === page.session) tr.className = "sessions-current";
    const first = el("td");
    const open = el("button", "sessions-open", item.session_id);
    open.type = "button";
    open.addEventListener("click", () => openSession(item.session_id));
    first.appendChild(open);
    const sub = item.snippet !== undefined ? item.snippet : item.preview;
    if (sub) first.appendChild(highlighted(el("span", "sessions-sub"), sub));
    tr.appendChild(first);
    tr.appendChild(el("td", "sessions-when", stamp(item.last_at)));
    tr.appendChild(el("td", null, item.hits !== undefined ? `${item.hits} / ${item.exchange_count}` : item.exchange_count));
    tr.appendChild(el("td", "sessions-model", item.model || "-"));
    return tr;
  }

  async function loadList() {
    const seq = ++page.seq;
    const params = new URLSearchParams({ offset: String(page.offset) });
    let url = `${base()}?${params}`;
    if (page.query) {
      params.set("q", page.query);
      url = `${base()}/search?${params}`;
    }
    const { status, body } = await api(url);
    if (seq !== page.seq) return; // a newer listing was asked for meanwhile
    const tbody = $("sessions-table").querySelector("tbody");
    if (status !== 200 || !body) {
      tbody.replaceChildren();
      setResult((body && body.detail) || `the sessions could not be read (${status})`, true);
      return;
    }
    tbody.replaceChildren(...body.sessions.map(row));
    page.nextOffset = body.next_offset;
    const empty = $("sessions-empty");
    empty.hidden = body.sessions.length > 0;
    empty.textContent = page.query
      ? `No session of ${page.profile} contains “${page.query}”.`
      : `No sessions yet: chat with ${page.profile} in the playground, or send it a request.`;
    $("sessions-heading").textContent = page.query
      ? `Sessions containing “${page.query}”`
      : `Sessions of ${page.profile}` + (body.total !== undefined ? ` (${body.total})` : "");
    $("sessions-count-head").textContent = page.query ? "Matching / exchanges" : "Exchanges";
    const shown = body.sessions.length;
    $("sessions-range").textContent = shown ? `${page.offset + 1}–${page.offset + shown}` : "";
    $("sessions-newer").disabled = page.earlier.length === 0;
    $("sessions-older").disabled = page.nextOffset === null || page.nextOffset === undefined;
  }

  function restart() {
    page.offset = 0;
    page.earlier = [];
    remember();
    return loadList();
  }

  // -- one session ------------------------------------------------------------------------

  function message(entry) {
    const li = el("li", `sessions-msg sessions-${entry.role in ROLE_LABELS ? entry.role : "other"}`);
    const head = el("div", "sessions-msg-head");
    head.appendChild(el("span", "sessions-role", ROLE_LABELS[entry.role] || entry.role));
    head.appendChild(el("span", "muted small", `${stamp(entry.at)} · exchange ${entry.exchange}`));
    if (entry.role === "assistant" && entry.status && entry.status !== 200) {
      const why = entry.status === 499 ? "cut short: the client went away" : `HTTP ${entry.status}`;
      head.appendChild(el("span", "pill pill-warn", why));
    }
    li.appendChild(head);
    li.appendChild(highlighted(el("div", "sessions-text"), entry.content || ""));
    return li;
  }

  function fact(list, label, value) {
    list.appendChild(el("dt", null, label));
    list.appendChild(el("dd", null, value));
  }

  async function openSession(id) {
    const { status, body } = await api(sessionUrl(id));
    const panel = $("sessions-transcript");
    if (status !== 200 || !body) {
      panel.hidden = true;
      page.session = null;
      remember();
      setResult((body && body.detail) || `the session could not be read (${status})`, true);
      return;
    }
    page.session = id;
    page.summary = body;
    remember();
    setResult("", false);
    document.querySelectorAll("#sessions-table tbody tr").forEach((tr) => {
      tr.className = tr.dataset.session === id ? "sessions-current" : "";
    });
    $("sessions-transcript-title").textContent = `Session ${id}`;
    const facts = $("sessions-facts");
    facts.replaceChildren();
    fact(facts, "Profile", page.profile);
    fact(facts, "First message", stamp(body.first_at));
    fact(facts, "Last answer", stamp(body.last_at));
    fact(facts, "Exchanges", body.exchange_count);
    fact(facts, "Model", body.model || "-");
    const truncated = $("sessions-truncated");
    truncated.hidden = !body.truncated;
    truncated.textContent = body.truncated
      ? `Only the newest ${body.exchanges.length} exchanges are shown; the export holds them all.`
      : "";
    $("sessions-messages").replaceChildren(...body.messages.map(message));
    $("sessions-continue").href = `/playground?profile=${enc(page.profile)}&session=${enc(id)}`;
    panel.hidden = false;
  }

  async function exportSession() {
    const id = page.session;
    const res = await fetch(`${sessionUrl(id)}/export`, {
      credentials: "same-origin",
      headers: headers(),
    });
    if (res.status === 401) { toLogin(null); return; }
    if (!res.ok) {
      let detail = null;
      try { detail = (await res.json()).detail; } catch (e) { detail = null; }
      setResult(detail || `export failed (${res.status})`, true);
      return;
    }
    const blob = await res.blob();
    const link = el("a");
    link.href = URL.createObjectURL(blob);
    link.download = `hermes-${page.profile}-${id.replace(/:/g, "_")}.json`;
    document.body.appendChild(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 10000);
    setResult(`exported ${link.download}`, false);
  }

  function askDelete() {
    $("sessions-confirm-id").textContent = page.session;
    $("sessions-confirm-profile").textContent = page.profile;
    $("sessions-confirm-count").textContent = page.summary ? page.summary.exchange_count : "?";
    $("sessions-confirm").showModal();
  }

  async function confirmDelete() {
    const id = page.session;
    const button = $("sessions-confirm-delete");
    button.disabled = true;
    try {
      const { status, body } = await api(`${sessionUrl(id)}/delete`, { method: "POST" });
      $("sessions-confirm").close();
      if (status !== 200) {
        setResult((body && body.detail) || `delete failed (${status})`, true);
        return;
      }
      page.session = null;
      page.summary = null;
      $("sessions-transcript").hidden = true;
      remember();
      setResult(`deleted session ${id} (${body.deleted} exchange${body.deleted === 1 ? "" : "s"})`, false);
      await loadList();
    } finally {
      button.disabled = false;
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    const form = $("sessions-filters");
    if (!form) return;
    page.profile = form.dataset.profile;
    page.query = form.dataset.query || "";
    $("sessions-profile").addEventListener("change", (event) => {
      page.profile = event.target.value;
      page.session = null;
      $("sessions-transcript").hidden = true;
      setResult("", false);
      restart().catch((e) => setResult(String(e.message || e), true));
    });
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      page.query = $("sessions-q").value.trim();
      restart().catch((e) => setResult(String(e.message || e), true));
      if (page.session) openSession(page.session).catch(() => {});
    });
    $("sessions-clear").addEventListener("click", () => {
      $("sessions-q").value = "";
      page.query = "";
      restart().catch((e) => setResult(String(e.message || e), true));
      if (page.session) openSession(page.session).catch(() => {});
    });
    $("sessions-older").addEventListener("click", () => {
      if (page.nextOffset === null || page.nextOffset === undefined) return;
      page.earlier.push(page.offset);
      page.offset = page.nextOffset;
      loadList().catch((e) => setResult(String(e.message || e), true));
    });
    $("sessions-newer").addEventListener("click", () => {
      if (!page.earlier.length) return;
      page.offset = page.earlier.pop();
      loadList().catch((e) => setResult(String(e.message || e), true));
    });
    $("sessions-export").addEventListener("click", () => {
      exportSession().catch((e) => setResult(String(e.message || e), true));
    });
    $("sessions-delete").addEventListener("click", askDelete);
    $("sessions-confirm-cancel").addEventListener("click", () => $("sessions-confirm").close());
    $("sessions-confirm-delete").addEventListener("click", () => {
      confirmDelete().catch((e) => setResult(String(e.message || e), true));
    });
    remember();
    loadList().catch((e) => setResult(String(e.message || e), true));
    if (form.dataset.session) openSession(form.dataset.session).catch(() => {});
  });
})();
