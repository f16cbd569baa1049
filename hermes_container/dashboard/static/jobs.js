// Hermes dashboard, Jobs page: renders /api/jobs (the jobs, their history strips and
// the dead-letter queue), keeps it live from the jobs' event stream, and drives the
// actions, the add form with its schedule preview, and the job view.
// No build step, no framework; every value reaches the DOM through textContent.
"use strict";
(function () {
  const { api, el, stamp } = window.Hermes;
  const PREVIEW_DELAY_MS = 250;
  const WHEN = {
    cron: { label: "Cron expression", placeholder: "*/15 * * * *" },
    every: { label: "Interval", placeholder: "90s, 15m or 1h30m" },
    at: { label: "Time (ISO)", placeholder: "2030-01-02T03:00 (in the time zone)" },
  };

  const page = {
    data: null,
    fetchedAt: 0,
    openJob: null,
    lastEventId: null,
    listTimer: null,
    detailTimer: null,
    listSeq: 0,
    detailSeq: 0,
    previewSeq: 0,
    previewTimer: null,
  };

  function age(seconds) {
    // Two units at most: `3m 4s`, `2h 5m`, `1d 0h`.
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
    return ts === null || ts === undefined ? "-" : stamp(ts) + "Z";
  }

  function setResult(node, text, error) {
    node.className = "action-result" + (error ? " error" : "");
    node.textContent = text;
  }

  function stateLabel(state) {
    return state === "dead_lettered" ? "dead-lettered" : state;
  }

  function pill(state) {
    return el("span", `state jstate-${state}`, stateLabel(state));
  }

  function nowHere() {
    const data = page.data;
    return data ? data.now + (Date.now() - page.fetchedAt) / 1000 : Date.now() / 1000;
  }

  function relative(ts) {
    const delta = ts - nowHere();
    return delta >= 0 ? `in ${age(delta)}` : `due ${age(-delta)} ago`;
  }

  function kanbanLink(board, task) {
    return `/kanban?board=${encodeURIComponent(board)}#task-${task}`;
  }

  // -- the jobs table ---------------------------------------------------------------------

  function square(job, run) {
    const node = el(run.task ? "a" : "span", `jobs-square jstate-${run.state}` +
      (run.manual ? " jobs-manual" : ""));
    const tip = [`run ${run.id}`, run.slot_name, stateLabel(run.state)];
    if (run.manual) tip.push("run now");
    if (run.delivery) tip.push(`delivery ${run.delivery}`);
    if (run.error) tip.push(run.error);
    node.title = tip.join(" · ");
    node.setAttribute("aria-label", node.title);
    node.setAttribute("data-run-id", String(run.id));
    node.setAttribute("data-state", run.state);
    if (run.task) node.href = kanbanLink(job.board, run.task);
    return node;
  }

  function actionButton(label, action, name) {
    const button = el("button", "btn", label);
    button.type = "button";
    button.setAttribute("data-job-action", action);
    button.addEventListener("click", () => jobAction(name, action, button));
    return button;
  }

  function jobRow(job) {
    const tr = el("tr");
    tr.setAttribute("data-job", job.name);

    const nameCell = el("td");
    const open = el("button", "jobs-name", job.name);
    open.type = "button";
    open.addEventListener("click", () => openJob(job.name));
    nameCell.append(open, el("span", "jobs-sub",
      `${job.profiles.join(" → ")} · board ${job.board}`));

    const scheduleCell = el("td", null, job.schedule_text);
    scheduleCell.setAttribute("data-field", "schedule");

    const nextCell = el("td", "jobs-when");
    nextCell.setAttribute("data-field", "next");
    if (job.paused) {
      nextCell.append(pill("paused"));
    } else if (job.next_slot === null) {
      nextCell.textContent = "none (done)";
    } else {
      nextCell.append(el("span", "mono", when(job.next_slot)));
      const rel = el("span", "jobs-sub jobs-relative", relative(job.next_slot));
      rel.setAttribute("data-at", String(job.next_slot));
      nextCell.append(rel);
    }

    const lastCell = el("td");
    lastCell.setAttribute("data-field", "last");
    if (job.last_outcome) lastCell.append(pill(job.last_outcome));
    else lastCell.append(el("span", "muted", "no runs yet"));
    if (job.in_flight) lastCell.append(el("span", "jobs-sub", `${job.in_flight} in flight`));

    const historyCell = el("td");
    const strip = el("div", "jobs-strip");
    strip.setAttribute("data-field", "history");
    strip.append(...job.history.map((run) => square(job, run)));
    historyCell.append(strip);

    const actionsCell = el("td");
    const actions = el("div", "jobs-actions");
    actions.append(
      job.paused ? actionButton("Resume", "resume", job.name)
        : actionButton("Pause", "pause", job.name),
      actionButton("Run now", "run", job.name),
    );
    actionsCell.append(actions);

    tr.append(nameCell, scheduleCell, nextCell, lastCell, historyCell, actionsCell);
    return tr;
  }

  function renderJobs(data) {
    document.querySelector("#jobs-table tbody").replaceChildren(...data.jobs.map(jobRow));
    document.getElementById("jobs-empty").hidden = data.jobs.length > 0;
    const dead = data.dead.runs + data.dead.deliveries;
    const badge = document.getElementById("jobs-dead-count");
    badge.textContent = `dead letters: ${dead}`;
    badge.className = "pill " + (dead ? "pill-warn" : "pill-ok");
    const select = document.getElementById("jobs-board");
    const chosen = select.value;
    if (select.options.length !== data.boards.length) {
      select.replaceChildren(...data.boards.map((slug) => {
        const option = el("option", null, slug);
        option.value = slug;
        option.selected = slug === (chosen || "default");
        return option;
      }));
    }
  }

  function refreshRelative() {
    document.querySelectorAll(".jobs-relative[data-at]").forEach((node) => {
      node.textContent = relative(Number(node.getAttribute("data-at")));
    });
  }

  async function refreshJobs() {
    const seq = ++page.listSeq; // an older answer arriving late must not win
    const { status, body } = await api("/api/jobs");
    if (seq !== page.listSeq) return;
    if (status !== 200 || !body) {
      setLive(false, (body && body.detail) || `jobs unavailable (${status})`);
      return;
    }
    page.data = body;
    page.fetchedAt = Date.now();
    renderJobs(body);
  }

  // -- the dead-letter queue --------------------------------------------------------------

  function deadRow(entry) {
    const tr = el("tr");
    tr.setAttribute("data-run-id", String(entry.id));
    const what = el("td");
    what.append(el("strong", null, entry.job), el("span", "jobs-sub mono", entry.slot_name));
    let middle;
    if (entry.kind === "run") {
      middle = el("td");
      if (entry.failed_task) {
        const link = el("a", null, `#${entry.failed_task} ${entry.profile || ""}`);
        link.href = kanbanLink(entry.board, entry.failed_task);
        middle.append(link);
      }
      middle.append(el("span", "jobs-sub", `${entry.attempts} attempt${entry.attempts === 1 ? "" : "s"}`));
      if (entry.prompt) middle.append(el("span", "jobs-prompt", entry.prompt));
    } else {
      middle = el("td", null, entry.delivery_attempts);
    }
    const error = el("td", "jobs-error", entry.error || "-");
    error.setAttribute("data-field", "error");
    const retry = el("button", "btn", "Retry");
    retry.type = "button";
    retry.setAttribute("data-retry", String(entry.id));
    retry.addEventListener("click", () => retryRun(entry.id, retry));
    const buttonCell = el("td");
    buttonCell.append(retry);
    tr.append(el("td", "mono", entry.id), what, middle, error, buttonCell);
    return tr;
  }

  function renderDead(data) {
    for (const [key, id] of [["runs", "jobs-dead-runs"], ["deliveries", "jobs-dead-deliveries"]]) {
      document.querySelector(`#${id} tbody`).replaceChildren(...data[key].map(deadRow));
      document.getElementById(`${id}-empty`).hidden = data[key].length > 0;
      document.getElementById(id).hidden = data[key].length === 0;
    }
  }

  async function refreshDead() {
    const { status, body } = await api("/api/jobs/dead");
    if (status === 200 && body) renderDead(body);
  }

  async function retryRun(id, button) {
    const result = document.getElementById("jobs-dead-result");
    button.disabled = true;
    setResult(result, `retrying run ${id}…`);
    try {
      const { status, body } = await api(`/api/jobs/runs/${id}/retry`, { method: "POST" });
      if (status === 200) {
        setResult(result, `run ${id} of ${body.job}: ${body.retried} retried (${stateLabel(body.state)})`);
      } else {
        setResult(result, (body && body.detail) || `retry failed (${status})`, true);
        button.disabled = false;
      }
    } catch (e) {
      setResult(result, String(e.message || e), true);
      button.disabled = false;
    }
    await refreshAll();
  }

  // -- actions ----------------------------------------------------------------------------

  const DONE = {
    pause: (name) => `${name}: paused`,
    resume: (name, body) => `${name}: resumed, next slot ${when(body.next_slot)}`,
    run: (name, body) => `${name}: run ${body.id} ${stateLabel(body.state)}`,
  };

  async function jobAction(name, action, button) {
    const result = document.getElementById("jobs-result");
    button.disabled = true;
    setResult(result, `${name}: ${action}…`);
    try {
      const url = `/api/jobs/job/${encodeURIComponent(name)}/${action}`;
      const { status, body } = await api(url, { method: "POST" });
      if (status === 200) setResult(result, DONE[action](name, body));
      else setResult(result, (body && body.detail) || `${action} failed (${status})`, true);
    } catch (e) {
      setResult(result, String(e.message || e), true);
    } finally {
      button.disabled = false;
    }
    await refreshAll();
  }

  async function refreshAll() {
    const work = [refreshJobs(), refreshDead()];
    if (page.openJob !== null) work.push(loadJob());
    await Promise.all(work).catch(() => {});
  }

  // -- the add form and its schedule preview ----------------------------------------------

  const field = (name) => document.getElementById(`jobs-${name}`);

  function scheduleQuery() {
    const kind = field("kind").value;
    const value = field("when").value.trim();
    if (!value) return null;
    const query = { [kind]: value };
    const zone = field("timezone").value.trim();
    if (zone) query.timezone = zone;
    return query;
  }

  function slotItem(slot, zone) {
    const li = el("li");
    li.setAttribute("data-slot", String(slot.at));
    if (zone.toUpperCase() === "UTC") {
      li.append(el("span", "mono", slot.utc));
    } else {
      li.append(el("span", "mono", slot.local), document.createTextNode(" "),
        el("span", "jobs-utc mono", `(${slot.utc})`));
    }
    return li;
  }

  function showPreview(text, error, slots, zone) {
    const box = field("preview");
    box.className = "jobs-preview" + (error ? " error" : "");
    if (!slots) {
      box.textContent = text;
      return;
    }
    const list = el("ol");
    list.append(...slots.map((slot) => slotItem(slot, zone)));
    box.replaceChildren(el("strong", null, text), list);
  }

  async function preview() {
    const query = scheduleQuery();
    const seq = ++page.previewSeq;
    if (query === null) {
      showPreview("Enter a schedule to see its next five slots.");
      return;
    }
    const { status, body } = await api("/api/jobs/preview?" + new URLSearchParams(query));
    if (seq !== page.previewSeq) return; // the user typed on meanwhile
    if (status === 200 && body) {
      showPreview(`${body.schedule_text}: the next ${body.slots.length} slots`, false,
        body.slots, body.timezone);
    } else {
      showPreview((body && body.detail) || `no preview (${status})`, true);
    }
  }

  function previewSoon() {
    clearTimeout(page.previewTimer);
    page.previewTimer = setTimeout(() => preview().catch(() => {}), PREVIEW_DELAY_MS);
  }

  function kindChanged() {
    const spec = WHEN[field("kind").value];
    document.getElementById("jobs-when-label").textContent = spec.label;
    field("when").placeholder = spec.placeholder;
    previewSoon();
  }

  function addStep() {
    const template = document.getElementById("jobs-step-template");
    const step = template.content.firstElementChild.cloneNode(true);
    step.querySelector("[data-remove-step]").addEventListener("click", () => step.remove());
    document.getElementById("jobs-steps").append(step);
    step.querySelector("textarea").focus();
  }

  function formPayload() {
    const steps = Array.from(document.querySelectorAll("#jobs-steps [data-step]")).map((node) => ({
      profile: node.querySelector('[data-field="profile"]').value,
      prompt: node.querySelector('[data-field="prompt"]').value,
    }));
    const payload = { name: field("name").value.trim() };
    if (steps.length === 1) Object.assign(payload, steps[0]);
    else payload.steps = steps;
    Object.assign(payload, scheduleQuery() || {});
    const optional = {
      max_retries: "max-retries", retry_delay: "retry-delay", retry_max_delay: "retry-max-delay",
      timeout: "timeout", overlap: "overlap", catchup: "catchup", deliver: "deliver", board: "board",
    };
    for (const [key, id] of Object.entries(optional)) {
      const value = field(id).value.trim();
      if (value) payload[key] = value;
    }
    return payload;
  }

  async function addJob() {
    const result = field("add-result");
    const button = field("add-submit");
    if (scheduleQuery() === null) {
      setResult(result, "a job needs a schedule", true);
      return;
    }
    button.disabled = true;
    setResult(result, "adding…");
    try {
      const { status, body } = await api("/api/jobs", { method: "POST", json: formPayload() });
      if (status === 201) {
        const next = body.next_slot === null ? "no slot" : `next slot ${when(body.next_slot)}`;
        setResult(result, `added ${body.name}: ${body.schedule_text}, ${next}`);
        if (body.secret) {
          field("secret-value").textContent = body.secret;
          field("secret").hidden = false;
        }
        field("name").value = "";
        document.querySelectorAll("#jobs-steps [data-step]").forEach((node, index) => {
          if (index > 0) node.remove();
          else node.querySelector("textarea").value = "";
        });
        await refreshJobs();
      } else {
        setResult(result, (body && body.detail) || `add failed (${status})`, true);
      }
    } catch (e) {
      setResult(result, String(e.message || e), true);
    } finally {
      button.disabled = false;
    }
  }

  function dismissSecret() {
    // The only copy the page had: gone from the DOM, not just hidden.
    field("secret-value").textContent = "";
    field("secret").hidden = true;
  }

  // -- the job view -----------------------------------------------------------------------

  const dialog = () => document.getElementById("jobs-detail");

  function openJob(name) {
    page.openJob = name;
    const d = dialog();
    if (!d.open) d.showModal();
    const hash = `#job-${encodeURIComponent(name)}`;
    if (location.hash !== hash) history.replaceState(null, "", hash);
    loadJob().catch(() => {});
  }

  function closeJob() {
    page.openJob = null;
    const d = dialog();
    if (d.open) d.close();
    history.replaceState(null, "", location.pathname + location.search);
  }

  function fact(dl, name, value, fieldName) {
    const dd = el("dd", null, value);
    if (fieldName) dd.setAttribute("data-field", fieldName);
    dl.append(el("dt", null, name), dd);
    return dd;
  }

  function seconds(value) {
    return value === null || value === undefined ? "-" : age(value);
  }

  function renderJob(job) {
    document.getElementById("jobs-detail-title").textContent = `Job ${job.name}`;
    const dl = document.getElementById("jobs-detail-facts");
    dl.replaceChildren();
    fact(dl, "Schedule", job.schedule_text, "schedule");
    const state = fact(dl, "State", "", "state");
    state.append(job.paused ? pill("paused") : el("span", "state pill-ok", "active"));
    fact(dl, "Board", job.board);
    fact(dl, "Next slot", job.paused ? "paused" : when(job.next_slot), "next");
    fact(dl, "Last slot", when(job.last_slot));
    fact(dl, "Retries", `${job.max_retries} (delay ${seconds(job.retry_delay)} up to ${seconds(job.retry_max_delay)})`);
    fact(dl, "Timeout", job.timeout === null ? "the board's request timeout" : seconds(job.timeout));
    fact(dl, "Overlap / catch-up", `${job.overlap} / ${job.catchup}`);
    fact(dl, "Delivers to", job.deliver || "-");
    fact(dl, "Added", when(job.created_at));

    document.getElementById("jobs-detail-steps").replaceChildren(...job.steps.map((step) => {
      const li = el("li");
      li.append(el("strong", null, step.profile), el("pre", "kanban-text", step.prompt));
      return li;
    }));
    const slots = document.getElementById("jobs-detail-slots");
    if (job.next_slots.length) {
      slots.replaceChildren(...job.next_slots.map((slot) => slotItem(slot, job.schedule.timezone)));
    } else {
      slots.replaceChildren(el("li", "muted", job.paused ? "paused: no slots fire" : "none"));
    }
    document.querySelector("#jobs-detail-runs tbody").replaceChildren(...job.runs.map((run) => {
      const tr = el("tr");
      tr.setAttribute("data-run-id", String(run.id));
      const outcome = el("td");
      outcome.append(pill(run.state));
      if (run.manual) outcome.append(el("span", "jobs-sub", "run now"));
      if (run.delivery) {
        outcome.append(el("span", "jobs-sub",
          run.delivery === "delivered" ? "delivered" : `delivery ${run.delivery}`));
      }
      const tasks = el("td");
      for (const task of run.tasks) {
        const link = el("a", null, `#${task.id}`);
        link.href = kanbanLink(run.board, task.id);
        link.title = `${task.profile || "-"}: ${task.status}`;
        tasks.append(link, document.createTextNode(" "));
      }
      tr.append(
        el("td", "mono", run.id),
        el("td", "mono", run.slot_name),
        outcome,
        el("td", null, run.attempts),
        el("td", null, run.latency_seconds === null ? "-" : `${run.latency_seconds.toFixed(1)} s`),
        tasks,
        el("td", "small jobs-error", run.error || run.delivery_error || ""),
      );
      return tr;
    }));
  }

  async function loadJob() {
    const name = page.openJob;
    if (name === null) return;
    const seq = ++page.detailSeq;
    const { status, body } = await api(`/api/jobs/job/${encodeURIComponent(name)}`);
    if (page.openJob !== name || seq !== page.detailSeq) return; // superseded meanwhile
    if (status === 200 && body) {
      renderJob(body);
    } else {
      document.getElementById("jobs-detail-title").textContent =
        (body && body.detail) || `cannot load job ${name} (${status})`;
    }
  }

  // -- live updates -----------------------------------------------------------------------

  function setLive(on, text) {
    const node = document.getElementById("jobs-live");
    node.className = "pill " + (on ? "pill-ok" : "pill-warn");
    node.textContent = text;
  }

  function soon(timerName, fn, delay) {
    if (page[timerName]) return;
    page[timerName] = setTimeout(() => {
      page[timerName] = null;
      fn().catch(() => {});
    }, delay);
  }

  function onStreamMessage(event, data) {
    if (event === "hello") {
      page.lastEventId = data.last_event_id;
      setLive(true, "live");
      soon("listTimer", refreshAll, 0);
    } else if (event === "events" && data.length) {
      page.lastEventId = data[data.length - 1].id;
      soon("listTimer", () => Promise.all([refreshJobs(), refreshDead()]), 100);
      if (data.some((e) => e.job === page.openJob)) soon("detailTimer", loadJob, 100);
    }
  }

  function follow() {
    const since = page.lastEventId === null ? "" : `?since=${page.lastEventId}`;
    return Hermes.follow(`/api/jobs/stream${since}`, (event, data) => {
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
      await refreshAll(); // nothing missed while we were away
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    if (!document.getElementById("jobs-table")) return;
    field("add").addEventListener("submit", (e) => {
      e.preventDefault();
      addJob().catch(() => {});
    });
    field("add-step").addEventListener("click", addStep);
    field("kind").addEventListener("change", kindChanged);
    for (const id of ["when", "timezone"]) field(id).addEventListener("input", previewSoon);
    field("secret-dismiss").addEventListener("click", dismissSecret);
    document.getElementById("jobs-detail-close").addEventListener("click", closeJob);
    dialog().addEventListener("close", () => {
      if (page.openJob !== null) closeJob();
    });

    preview().catch(() => {});
    refreshAll();
    keepFollowing();
    setInterval(refreshRelative, 1000);
    const match = /^#job-([a-z0-9][a-z0-9_-]*)$/.exec(location.hash);
    if (match) openJob(match[1]);
  });
})();
