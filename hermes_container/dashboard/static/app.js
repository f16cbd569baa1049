// Hermes dashboard: live refresh, gateway actions and the log tail. No build step.
"use strict";
(function () {
  // The page's tokens and JSON requests: hermes.js, which base.html loads first.
  const { api, headers, toLogin } = window.Hermes;

  function fill(container, row) {
    const show = {
      desired_state: row.desired_state || "-",
      ready: row.ready ? "yes" : "no",
      pid: row.pid || "-",
      uptime_s: row.uptime_text || "-", // formatted by the server, as the page is
      restarts: row.restarts === null || row.restarts === undefined ? "-" : row.restarts,
      port: row.port || "-",
      exit_reason: row.exit_reason || "-",
    };
    container.querySelectorAll("[data-field]").forEach((cell) => {
      const field = cell.getAttribute("data-field");
      if (field === "gateway_state") {
        const state = row.gateway_state || "unknown";
        let pill = cell.querySelector(".state");
        if (!pill) { pill = document.createElement("span"); cell.replaceChildren(pill); }
        pill.className = "state state-" + state;
        pill.textContent = state;
      } else if (field in show) {
        cell.textContent = show[field];
      }
    });
  }

  // The table follows the server's list: profiles made elsewhere (the CLI, another
  // tab) appear, deleted ones go, in the server's order.
  async function refreshOverview(table) {
    const { status, body } = await api("/api/profiles");
    if (status !== 200 || !body) return;
    const tbody = table.tBodies[0];
    const shown = new Map();
    tbody.querySelectorAll("tr[data-profile]").forEach((tr) => {
      shown.set(tr.getAttribute("data-profile"), tr);
    });
    const listed = new Set(body.profiles.map((row) => row.name));
    shown.forEach((tr, name) => { if (!listed.has(name)) tr.remove(); });
    let next = tbody.firstElementChild; // rows already in place are not moved
    for (const row of body.profiles) {
      let tr = shown.get(row.name);
      if (!tr) tr = window.Hermes.profileRow(row.name);
      fill(tr, row);
      if (tr === next) next = next.nextElementSibling;
      else tbody.insertBefore(tr, next);
    }
  }

  async function refreshProfile(card) {
    const name = card.getAttribute("data-profile");
    const { status, body } = await api(`/api/profiles/${encodeURIComponent(name)}`);
    if (status === 200 && body) fill(card, body.profile);
  }

  function setupActions(card) {
    const name = card.getAttribute("data-profile");
    const result = document.getElementById("action-result");
    card.querySelectorAll("button[data-action]").forEach((btn) => {
      btn.addEventListener("click", async () => {
        const action = btn.getAttribute("data-action");
        const buttons = card.querySelectorAll("button[data-action]");
        buttons.forEach((b) => (b.disabled = true));
        result.className = "action-result";
        result.textContent = `${action}ing…`;
        try {
          const { status, body } = await api(
            `/api/profiles/${encodeURIComponent(name)}/gateway/${action}`,
            { method: "POST" }
          );
          if (status === 200) {
            result.textContent = `${action}: done`;
            if (body && body.status) fill(card, body.status);
          } else {
            result.className = "action-result error";
            result.textContent = (body && body.detail) || `${action} failed (${status})`;
          }
        } catch (e) {
          result.className = "action-result error";
          result.textContent = String(e.message || e);
        } finally {
          buttons.forEach((b) => (b.disabled = false));
          refreshProfile(card).catch(() => {});
        }
      });
    });
  }

  // SSE over fetch(): EventSource cannot send the loopback token header.
  async function tailLog(pre) {
    const res = await fetch(pre.getAttribute("data-src"), {
      credentials: "same-origin", headers: headers({ Accept: "text/event-stream" }),
    });
    if (res.status === 401) { toLogin(null); return; }
    if (!res.ok || !res.body) { pre.textContent = `log unavailable (${res.status})`; return; }
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        if (block.startsWith(":") || block.startsWith("event:")) continue;
        const text = block.split("\n").filter((l) => l.startsWith("data: "))
          .map((l) => l.slice(6)).join("\n");
        const stick = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 8;
        pre.appendChild(document.createTextNode(text + "\n"));
        while (pre.childNodes.length > 2000) pre.removeChild(pre.firstChild);
        if (stick) pre.scrollTop = pre.scrollHeight;
      }
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    const table = document.querySelector('[data-live="profiles"]');
    if (table) setInterval(() => refreshOverview(table).catch(() => {}), 3000);
    const card = document.getElementById("profile");
    if (card) {
      setupActions(card);
      setInterval(() => refreshProfile(card).catch(() => {}), 3000);
    }
    const log = document.getElementById("log");
    if (log) tailLog(log).catch(() => {});
  });
})();
