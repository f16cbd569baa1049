// Hermes dashboard, Playground page: pick a profile and a session (or a new one), send a
// message, and watch the answer stream in. The page talks only to the dashboard
// (/api/playground, /api/sessions); the dashboard holds the gateway's key. Stop, or
// leaving the page, aborts the request, which ends the gateway's request too.
// No build step, no framework; every value reaches the DOM through textContent.
"use strict";
(function () {
  const { api, el, headers, toLogin } = window.Hermes;
  const $ = (id) => document.getElementById(id);
  const enc = encodeURIComponent;
  const LABELS = { user: "You", assistant: "Assistant", system: "System", error: "Error" };

  const page = { profile: null, session: null, controller: null, seq: 0 };

  function setState(text, kind) {
    const pill = $("pg-state");
    pill.className = "pill" + (kind ? ` ${kind}` : "");
    pill.textContent = text;
  }

  function setResult(text, error) {
    const node = $("pg-result");
    node.className = "action-result" + (error ? " error" : "");
    node.textContent = text;
  }

  function remember() {
    const params = new URLSearchParams({ profile: page.profile });
    if (page.session) params.set("session", page.session);
    history.replaceState(null, "", `/playground?${params}`);
    const sessions = new URLSearchParams({ profile: page.profile });
    if (page.session) sessions.set("session", page.session);
    $("pg-to-sessions").href = `/sessions?${sessions}`;
  }

  function bubble(role, text) {
    const li = el("li", `pg-msg pg-${role in LABELS ? role : "other"}`);
    li.appendChild(el("div", "pg-role", LABELS[role] || role));
    const body = el("div", "pg-text", text || "");
    li.appendChild(body);
    $("pg-messages").appendChild(li);
    $("pg-empty").hidden = true;
    li.scrollIntoView({ block: "end" });
    return { li, body };
  }

  function clearConversation() {
    $("pg-messages").replaceChildren();
    $("pg-empty").hidden = false;
  }

  // -- the session picker -----------------------------------------------------------------

  function optionFor(id, label) {
    const option = el("option", null, label);
    option.value = id;
    return option;
  }

  async function loadSessions() {
    const seq = ++page.seq;
    const select = $("pg-session");
    const { status, body } = await api(`/api/sessions/${enc(page.profile)}?limit=50`);
    if (seq !== page.seq) return;
    const options = [optionFor("", "New session")];
    if (status === 200 && body) {
      for (const s of body.sessions) {
        const when = String(s.last_at || "").replace("T", " ").slice(0, 16);
        const text = s.preview ? s.preview.slice(0, 60) : s.session_id;
        options.push(optionFor(s.session_id, `${when} · ${text}`));
      }
    } else {
      setResult((body && body.detail) || `sessions unavailable (${status})`, true);
    }
    if (page.session && !options.some((o) => o.value === page.session)) {
      options.splice(1, 0, optionFor(page.session, page.session));
    }
    select.replaceChildren(...options);
    select.value = page.session || "";
  }

  async function loadConversation() {
    clearConversation();
    if (!page.session) return;
    const url = `/api/sessions/${enc(page.profile)}/session/${enc(page.session)}`;
    const { status, body } = await api(url);
    if (status !== 200 || !body) {
      setResult((body && body.detail) || `the session could not be read (${status})`, true);
      return;
    }
    for (const m of body.messages) bubble(m.role, m.content);
  }

  // -- sending ----------------------------------------------------------------------------

  // Applies each `data:` line of the gateway's event stream to the answer bubble.
  function applyEvent(data, answer) {
    if (data === "[DONE]") return true;
    let obj;
    try { obj = JSON.parse(data); } catch (e) { return false; }
    if (obj && obj.error) {
      answer.li.classList.add("pg-failed");
      const message = typeof obj.error === "object" ? obj.error.message : obj.error;
      answer.body.appendChild(el("div", "pg-error-text", `Error: ${message}`));
      return false;
    }
    for (const choice of (obj && obj.choices) || []) {
      const piece = choice && choice.delta && choice.delta.content;
      if (typeof piece === "string") answer.body.appendChild(document.createTextNode(piece));
    }
    return false;
  }

  async function readStream(res, answer) {
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.search(/\r?\n\r?\n/)) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut).replace(/^\r?\n\r?\n/, "");
        for (const line of block.split(/\r?\n/)) {
          if (!line.startsWith("data:")) continue;
          if (applyEvent(line.slice(5).trim(), answer)) return;
        }
        answer.li.scrollIntoView({ block: "end" });
      }
    }
  }

  // A new session: the gateway's answer named it; the picker gets it, first after "New".
  function adopt(sessionId, firstMessage) {
    if (!sessionId || sessionId === page.session) return;
    page.session = sessionId;
    remember();
    const select = $("pg-session");
    if (![...select.options].some((o) => o.value === sessionId)) {
      const label = `now · ${firstMessage.replace(/\s+/g, " ").slice(0, 60)}`;
      select.insertBefore(optionFor(sessionId, label), select.options[1] || null);
    }
    select.value = sessionId;
  }

  async function send(text) {
    const controller = new AbortController();
    page.controller = controller;
    $("pg-send").disabled = true;
    $("pg-stop").disabled = false;
    setState("waiting for the answer…", "pill-warn");
    setResult("", false);
    bubble("user", text);
    const answer = bubble("assistant", "");
    answer.li.classList.add("pg-streaming");
    try {
      const res = await fetch(`/api/playground/${enc(page.profile)}/chat`, {
        method: "POST",
        credentials: "same-origin",
        signal: controller.signal,
        headers: headers({ "Content-Type": "application/json", Accept: "text/event-stream" }),
        body: JSON.stringify({ message: text, session: page.session }),
      });
      if (res.status === 401) { toLogin(null); return; }
      if (!res.ok || !res.body) {
        let detail = null;
        try { detail = (await res.json()).detail; } catch (e) { detail = null; }
        answer.li.classList.add("pg-failed");
        answer.body.textContent = detail || `the request failed (${res.status})`;
        setState("failed", "pill-warn");
        setResult(detail || `the request failed (${res.status})`, true);
        return;
      }
      adopt(res.headers.get("X-Hermes-Session"), text);
      setState("streaming…", "pill-warn");
      await readStream(res, answer);
      setState("ready", "pill-ok");
    } catch (e) {
      if (e.name === "AbortError") {
        answer.li.appendChild(el("div", "pg-note", "(stopped)"));
        setState("stopped", null);
      } else {
        answer.li.classList.add("pg-failed");
        answer.body.appendChild(el("div", "pg-error-text", String(e.message || e)));
        setState("failed", "pill-warn");
      }
    } finally {
      answer.li.classList.remove("pg-streaming");
      page.controller = null;
      $("pg-send").disabled = false;
      $("pg-stop").disabled = true;
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    const bar = $("pg-bar");
    if (!bar) return;
    page.profile = bar.dataset.profile;
    page.session = bar.dataset.session || null;
    const fail = (e) => setResult(String(e.message || e), true);
    $("pg-profile").addEventListener("change", (event) => {
      if (page.controller) page.controller.abort();
      page.profile = event.target.value;
      page.session = null;
      remember();
      clearConversation();
      loadSessions().catch(fail);
    });
    $("pg-session").addEventListener("change", (event) => {
      if (page.controller) page.controller.abort();
      page.session = event.target.value || null;
      remember();
      loadConversation().catch(fail);
    });
    $("pg-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const input = $("pg-input");
      const text = input.value;
      if (!text.trim() || page.controller) return;
      input.value = "";
      send(text).catch(fail);
    });
    $("pg-input").addEventListener("keydown", (event) => {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
        event.preventDefault();
        $("pg-form").requestSubmit();
      }
    });
    $("pg-stop").addEventListener("click", () => {
      if (page.controller) page.controller.abort();
    });
    remember();
    loadSessions().catch(fail);
    loadConversation().catch(fail);
  });
})();
