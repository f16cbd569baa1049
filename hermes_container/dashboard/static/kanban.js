// Hermes dashboard, Kanban page: renders /api/kanban, keeps it live from the board's
// event stream, and drives the create form, the card view and its actions.
// No build step, no framework; every value reaches the DOM through textContent.
"use strict";
(function () {
  const { api, el } = window.Hermes;
  const TASK_BUTTONS = {
    assign: (t) => !["running", "done", "archived"].includes(t.status),
    unblock: (t) => t.status === "blocked" || t.status === "triage",
    reclaim: (t) => t.status === "running",
    archive: (t) => t.status !== "running" && t.status !== "archived",
  };

  function age(seconds) {
    // Two units at most, like the profiles table: `3m 4s`, `2h 5m`, `1d 0h`.
    let rest = Math.max(0, Math.floor(seconds));
    const parts = [];
    for (const [size, unit] of [[86400, "d"], [3600, "h"], [60, "m"], [1, "s"]]) {
      const value = Math.floor(rest / size);
      rest -= value * size;
      if (parts.length || value || unit === "s") parts.push(value + unit);
    }
    return parts.slice(0, 2).join(" ");
  }

  function when(ts) {
    if (ts === null || ts === undefined) return "-";
    return new Date(ts * 1000).toISOString().replace("T", " ").slice(0, 19) + "Z";
  }

  function details(data) {
    return Object.entries(data || {})
      .filter(([, v]) => v !== null && v !== undefined)
      .map(([k, v]) => `${k}=${typeof v === "object" ? JSON.stringify(v) : v}`)
      .join(" ");
  }

  function setResult(node, text, error) {
    node.className = "action-result" + (error ? " error" : "");
    node.textContent = text;
  }

  const page = {
    board: null,
    snapshot: null,
    fetchedAt: 0,
    openTask: null,
    lastEventId: null,
    boardTimer: null,
    taskTimer: null,
    boardSeq: 0,
    taskSeq: 0,
  };

  // -- the board --------------------------------------------------------------------------

  function nowOnBoard() {
    const snap = page.snapshot;
    return snap ? snap.now + (Date.now() - page.fetchedAt) / 1000 : Date.now() / 1000;
  }

  function cardFor(task) {
    const card = el("article", "kcard");
    card.tabIndex = 0;
    card.setAttribute("role", "button");
    card.setAttribute("data-task-id", String(task.id));
    const title = el("div", "kcard-title");
    title.append(el("span", "kcard-id", `#${task.id} `), document.createTextNode(task.title));
    card.append(title);
    const metaLine = el("div", "kcard-meta");
    metaLine.append(
      el("span", "kcard-assignee", task.assignee || "unassigned"),
      el("span", "kcard-priority", `P${task.priority}`),
      el("span", "kcard-attempts", `${task.attempts} attempt${task.attempts === 1 ? "" : "s"}`),
      el("span", "kcard-age", age(nowOnBoard() - task.created_at)),
    );
    metaLine.lastChild.setAttribute("data-created", String(task.created_at));
    card.append(metaLine);
    if (task.last_error) card.append(el("div", "kcard-error", task.last_error));
    card.addEventListener("click", () => openTask(task.id));
    card.addEventListener("keydown", (e) => {
      if (e.key === "Enter" || e.key === " ") { e.preventDefault(); openTask(task.id); }
    });
    return card;
  }

  function renderBoard(snap) {
    document.querySelectorAll("#kanban-board [data-status]").forEach((column) => {
      const status = column.getAttribute("data-status");
      const data = snap.columns[status] || { tasks: [], more: false };
      const cards = column.querySelector("[data-cards]");
      cards.replaceChildren(...data.tasks.map(cardFor));
      if (data.more) cards.append(el("div", "kcard-more", "more not shown"));
      column.querySelector("[data-count]").textContent =
        String(data.tasks.length) + (data.more ? "+" : "");
    });
    renderCaps(snap);
    const select = document.getElementById("kanban-board-select");
    if (select.options.length !== snap.boards.length) {
      select.replaceChildren(...snap.boards.map((slug) => {
        const option = el("option", null, slug);
        option.value = slug;
        option.selected = slug === snap.board;
        return option;
      }));
    }
  }

  function renderCaps(snap) {
    const rows = snap.profiles.map((p) => {
      const tr = el("tr");
      tr.setAttribute("data-profile", p.name);
      const atCap = p.cap !== null && p.running >= p.cap;
      tr.append(
        el("td", null, p.name),
        el("td", atCap ? "at-cap" : null, p.running),
        el("td", null, p.cap === null ? "no cap" : p.cap),
      );
      tr.children[1].setAttribute("data-field", "running");
      tr.children[2].setAttribute("data-field", "cap");
      return tr;
    });
    document.querySelector("#kanban-caps tbody").replaceChildren(...rows);
    const limit = snap.max_in_progress === null ? "no cap" : snap.max_in_progress;
    document.getElementById("kanban-board-cap").textContent =
      `Board ${snap.board}: ${snap.running_total} running, board-wide cap ${limit}.`;
    document.getElementById("kanban-warnings")
      .replaceChildren(...snap.warnings.map((w) => el("li", null, w)));
  }

  async function refreshBoard() {
    const seq = ++page.boardSeq; // an older answer arriving late must not win
    const { status, body } = await api(`/api/kanban/board?board=${encodeURIComponent(page.board)}`);
    if (seq !== page.boardSeq) return;
    if (status !== 200 || !body) {
      setLive(false, (body && body.detail) || `board unavailable (${status})`);
      return;
    }
    page.snapshot = body;
    page.fetchedAt = Date.now();
    renderBoard(body);
  }

  function soon(timerName, fn, delay) {
    if (page[timerName]) return;
    page[timerName] = setTimeout(() => {
      page[timerName] = null;
      fn().catch(() => {});
    }, delay);
  }

  function refreshAges() {
    document.querySelectorAll(".kcard-age[data-created]").forEach((node) => {
      node.textContent = age(nowOnBoard() - Number(node.getAttribute("data-created")));
    });
  }

  // -- the card view ----------------------------------------------------------------------

  const dialog = () => document.getElementById("kanban-task");

  function openTask(id) {
    page.openTask = id;
    setResult(document.getElementById("kanban-task-result"), "");
    const d = dialog();
    if (!d.open) d.showModal();
    if (location.hash !== `#task-${id}`) history.replaceState(null, "", `#task-${id}`);
    loadTask().catch(() => {});
  }

  function closeTask() {
    page.openTask = null;
    const d = dialog();
    if (d.open) d.close();
    history.replaceState(null, "", location.pathname + location.search);
  }

  function fact(dl, name, value, field) {
    const dd = el("dd", null, value);
    if (field) dd.setAttribute("data-field", field);
    dl.append(el("dt", null, name), dd);
    return dd;
  }

  function renderTask(task) {
    document.getElementById("kanban-task-title").textContent = `#${task.id} ${task.title}`;
    const dl = document.getElementById("kanban-task-facts");
    dl.replaceChildren();
    const status = fact(dl, "Status", "", "status");
    status.append(el("span", `state kstate-${task.status}`, task.status));
    fact(dl, "Board", task.board);
    fact(dl, "Assignee", task.assignee || "unassigned", "assignee");
    fact(dl, "Priority", task.priority, "priority");
    fact(dl, "Attempts", `${task.attempts} (consecutive failures ${task.consecutive_failures})`, "attempts");
    if (task.parents.length) fact(dl, "Parents", task.parents.map((p) => `#${p}`).join(", "));
    fact(dl, "Created", `${when(task.created_at)} (${age(task.now - task.created_at)} ago)`);
    if (task.started_at) fact(dl, "Started", when(task.started_at));
    if (task.finished_at) fact(dl, "Finished", when(task.finished_at));
    if (task.not_before) fact(dl, "Not before", when(task.not_before));
    if (task.max_retries !== null) fact(dl, "Max retries", task.max_retries);
    if (task.max_runtime !== null) fact(dl, "Max runtime", `${task.max_runtime} s`);
    if (task.idempotency_key) fact(dl, "Idempotency key", task.idempotency_key);
    if (task.last_error) fact(dl, "Last error", task.last_error, "last_error").className = "kcard-error";

    document.getElementById("kanban-task-body").textContent = task.body || "(empty)";
    document.getElementById("kanban-task-answer").textContent =
      task.result === null ? "(no result yet)" : task.result;

    document.querySelector("#kanban-task-runs tbody").replaceChildren(...task.runs.map((r) => {
      const tr = el("tr");
      tr.append(
        el("td", "mono", r.id),
        el("td", "mono", when(r.claimed_at)),
        el("td", null, `${r.host} pid ${r.pid}`),
        el("td", null, r.outcome || "open"),
        el("td", null, r.latency_ms === null ? "-" : `${r.latency_ms} ms`),
        el("td", null, r.tokens === null ? "-" : r.tokens),
        el("td", "small", r.error || ""),
      );
      return tr;
    }));
    document.querySelector("#kanban-task-events tbody").replaceChildren(...task.events.map((e) => {
      const tr = el("tr");
      const kind = el("td");
      kind.append(el("span", `event event-${e.kind}`, e.kind));
      tr.append(el("td", "mono", e.id), el("td", "mono", when(e.at)), kind,
        el("td", "small", details(e.data)));
      return tr;
    }));

    const select = document.getElementById("kanban-assign-select");
    select.value = task.assignee || "";
    document.querySelectorAll("#kanban-task [data-task-action]").forEach((button) => {
      button.disabled = !TASK_BUTTONS[button.getAttribute("data-task-action")](task);
    });
  }

  async function loadTask() {
    const id = page.openTask;
    if (id === null) return;
    const seq = ++page.taskSeq;
    const { status, body } = await api(`/api/kanban/tasks/${id}`);
    if (page.openTask !== id || seq !== page.taskSeq) return; // superseded meanwhile
    if (status === 200 && body) {
      renderTask(body);
    } else {
      setResult(document.getElementById("kanban-task-result"),
        (body && body.detail) || `cannot load task #${id} (${status})`, true);
    }
  }

  async function taskAction(action) {
    const id = page.openTask;
    const result = document.getElementById("kanban-task-result");
    const options = { method: "POST" };
    if (action === "assign") {
      const value = document.getElementById("kanban-assign-select").value;
      options.json = { assignee: value || null };
    }
    setResult(result, `${action}…`);
    try {
      const { status, body } = await api(`/api/kanban/tasks/${id}/${action}`, options);
      if (status === 200) {
        setResult(result, `${action}: done (${body.status})`);
      } else {
        setResult(result, (body && body.detail) || `${action} failed (${status})`, true);
      }
    } catch (e) {
      setResult(result, String(e.message || e), true);
    }
    await Promise.all([loadTask(), refreshBoard()]).catch(() => {});
  }

  // -- the create form and the preview ----------------------------------------------------

  function parentIds(text) {
    const parts = text.split(/[\s,]+/).filter(Boolean);
    if (!parts.every((p) => /^#?[1-9][0-9]*$/.test(p))) return null;
    return parts.map((p) => Number(p.replace("#", "")));
  }

  async function createTask() {
    // By id, not form.title: a form's own `title` property hides its field of that name.
    const field = (name) => document.getElementById(`kanban-${name}`);
    const result = document.getElementById("kanban-create-result");
    const parents = parentIds(field("parents").value);
    if (parents === null) {
      setResult(result, "parents: task ids separated by commas", true);
      return;
    }
    const payload = {
      board: page.board,
      title: field("title").value,
      body: field("body").value,
      assignee: field("assignee").value || null,
      priority: Number.parseInt(field("priority").value || "0", 10),
      parents: parents,
    };
    if (!Number.isInteger(payload.priority)) {
      setResult(result, "priority must be a whole number", true);
      return;
    }
    const button = document.getElementById("kanban-create-submit");
    button.disabled = true;
    setResult(result, "creating…");
    try {
      const { status, body } = await api("/api/kanban/tasks", { method: "POST", json: payload });
      if (status === 201) {
        setResult(result, `created #${body.id} (${body.status})`);
        for (const name of ["title", "body", "parents"]) field(name).value = "";
        await refreshBoard();
      } else {
        setResult(result, (body && body.detail) || `create failed (${status})`, true);
      }
    } catch (e) {
      setResult(result, String(e.message || e), true);
    } finally {
      button.disabled = false;
    }
  }

  const PREVIEW_LINES = [
    ["skipped_per_profile_capped", null],
    ["reclaimed", "Would reclaim"],
    ["timed_out", "Would time out"],
    ["promoted", "Would promote"],
    ["skipped_unassigned", "Skipped (no assignee, no default)"],
    ["skipped_nonspawnable", "Skipped (assignee is not a profile here)"],
    ["skipped_gateway_down", "Skipped (gateway not running)"],
    ["skipped_board_capped", "Held back (board cap)"],
  ];

  function renderPreview(report) {
    const box = document.getElementById("kanban-preview");
    const list = el("ul");
    const ids = (values) => values.map((v) => `#${v}`).join(", ");
    if (report.spawned.length) {
      list.append(el("li", null, "Would spawn: " +
        report.spawned.map((s) => `#${s.task_id} (${s.assignee})`).join(", ")));
    }
    if (report.auto_assigned_default.length) {
      list.append(el("li", null, `Would auto-assign to ${report.default_assignee}: ` +
        ids(report.auto_assigned_default)));
    }
    for (const [key, label] of PREVIEW_LINES) {
      const values = report[key] || [];
      if (!values.length) continue;
      if (key === "skipped_per_profile_capped") {
        for (const entry of values) {
          list.append(el("li", null,
            `Deferred (${entry.assignee} at per-profile cap, ${entry.current} running): #${entry.task_id}`));
        }
      } else {
        list.append(el("li", null, `${label}: ${ids(values)}`));
      }
    }
    for (const warning of report.warnings) list.append(el("li", "kcard-error", warning));
    if (!list.children.length) list.append(el("li", null, "Nothing to dispatch"));
    box.replaceChildren(el("strong", null, `Next tick (dry run, ${report.duration_ms} ms)`), list);
  }

  async function preview() {
    const box = document.getElementById("kanban-preview");
    box.textContent = "asking the dispatcher…";
    const { status, body } = await api(`/api/kanban/preview?board=${encodeURIComponent(page.board)}`);
    if (status === 200 && body) renderPreview(body);
    else box.textContent = (body && body.detail) || `preview failed (${status})`;
  }

  // -- live updates -----------------------------------------------------------------------

  function setLive(on, text) {
    const pill = document.getElementById("kanban-live");
    pill.className = "pill " + (on ? "pill-ok" : "pill-warn");
    pill.textContent = text;
  }

  function onStreamMessage(event, data) {
    if (event === "hello") {
      page.lastEventId = data.last_event_id;
      setLive(true, "live");
      soon("boardTimer", refreshBoard, 0);
      if (page.openTask !== null) soon("taskTimer", loadTask, 0);
    } else if (event === "events" && data.length) {
      page.lastEventId = data[data.length - 1].id;
      soon("boardTimer", refreshBoard, 100);
      if (data.some((e) => e.task_id === page.openTask)) soon("taskTimer", loadTask, 100);
    }
  }

  // The board's events as they are written (Hermes.follow: SSE over fetch()).
  function follow() {
    const since = page.lastEventId === null ? "" : `&since=${page.lastEventId}`;
    const url = `/api/kanban/stream?board=${encodeURIComponent(page.board)}${since}`;
    return Hermes.follow(url, (event, data) => {
      try { onStreamMessage(event, data); } catch (e) { /* skip */ }
    });
  }

  async function keepFollowing() {
    for (;;) {
      try {
        await follow();
        setLive(false, "reconnecting…");
      } catch (e) {
        setLive(false, "offline, retrying…");
      }
      await new Promise((resolve) => setTimeout(resolve, 2000));
      await refreshBoard().catch(() => {}); // nothing missed while we were away
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    const boardSection = document.getElementById("kanban-board");
    if (!boardSection) return;
    page.board = boardSection.getAttribute("data-board");

    document.getElementById("kanban-create").addEventListener("submit", (e) => {
      e.preventDefault();
      createTask().catch(() => {});
    });
    document.getElementById("kanban-preview-button")
      .addEventListener("click", () => preview().catch(() => {}));
    document.getElementById("kanban-board-select").addEventListener("change", (e) => {
      location.href = `/kanban?board=${encodeURIComponent(e.target.value)}`;
    });
    document.getElementById("kanban-task-close").addEventListener("click", closeTask);
    dialog().addEventListener("close", () => {
      if (page.openTask !== null) closeTask();
    });
    document.querySelectorAll("#kanban-task [data-task-action]").forEach((button) => {
      button.addEventListener("click", () => taskAction(button.getAttribute("data-task-action")));
    });

    refreshBoard().catch(() => {});
    keepFollowing();
    setInterval(refreshAges, 15000);
    const match = /^#task-([1-9][0-9]*)$/.exec(location.hash);
    if (match) openTask(Number(match[1]));
  });
})();
