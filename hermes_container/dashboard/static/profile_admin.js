// Hermes dashboard: profile management. On the overview, the New profile form (the
// provider's models are asked by the dashboard, never by this page); on a profile's
// page, its settings and persona (Review changes shows the diff, Save writes exactly
// that), the key rotation (the new key shown once), the client snippets and Delete.
// Requests go through Hermes.api (hermes.js): the page's tokens on every one.
"use strict";
(function () {
  const { api, el } = window.Hermes;
  const byId = (id) => document.getElementById(id);

  function say(node, text, isError) {
    node.className = "action-result" + (isError ? " error" : "");
    node.textContent = text;
  }

  // Each field's one-line error under it; a field with no place of its own goes to
  // the form's line. Returns the first message.
  function showErrors(form, body, status) {
    const fields = (body && body.fields) || { form: (body && body.detail) || `failed (${status})` };
    const spots = new Map();
    form.querySelectorAll("[data-error-for]").forEach((spot) => {
      spot.textContent = "";
      spots.set(spot.getAttribute("data-error-for"), spot);
    });
    form.querySelectorAll(".pa-invalid").forEach((n) => n.classList.remove("pa-invalid"));
    const rest = [];
    for (const [name, text] of Object.entries(fields)) {
      const spot = spots.get(name);
      if (spot) spot.textContent = text; else rest.push(`${name}: ${text}`);
      const input = form.querySelector(`[data-key="${CSS.escape(name)}"], [name="${CSS.escape(name)}"]`);
      if (input) input.classList.add("pa-invalid");
    }
    if (rest.length && spots.has("form")) spots.get("form").textContent = rest.join("; ");
    return Object.values(fields)[0];
  }

  function clearErrors(form) {
    form.querySelectorAll("[data-error-for]").forEach((spot) => (spot.textContent = ""));
    form.querySelectorAll(".pa-invalid").forEach((n) => n.classList.remove("pa-invalid"));
  }

  async function copy(button) {
    const source = byId(button.getAttribute("data-copy"));
    if (!source) return;
    const text = source.textContent;
    try {
      await navigator.clipboard.writeText(text);
    } catch (e) { // no clipboard (plain http on a LAN address): select it instead
      const range = document.createRange();
      range.selectNodeContents(source);
      const selection = window.getSelection();
      selection.removeAllRanges();
      selection.addRange(range);
    }
    const label = button.textContent;
    button.textContent = "Copied";
    setTimeout(() => (button.textContent = label), 1500);
  }

  document.addEventListener("click", (event) => {
    const button = event.target.closest("button[data-copy]");
    if (button) copy(button);
  });

  // -- the provider's models -------------------------------------------------------

  async function listModels(payload, statusNode, onModels, form) {
    say(statusNode, "asking the provider…");
    const { status, body } = await api("/api/provider/models", { method: "POST", json: payload });
    if (status !== 200) {
      say(statusNode, showErrors(form, body, status), true);
      return;
    }
    clearErrors(form);
    const models = body.models || [];
    onModels(models);
    say(statusNode, models.length
      ? `The provider lists ${models.length} model${models.length === 1 ? "" : "s"}: pick one, or type another name.`
      : "The provider lists no models: type the model's name.");
  }

  // -- overview: New profile ---------------------------------------------------------

  function addRow(name, detail) {
    const table = document.querySelector("#profiles tbody");
    if (!table || table.querySelector(`tr[data-profile="${CSS.escape(name)}"]`)) return;
    table.append(Hermes.profileRow(name, detail));
  }

  function setupCreate(form) {
    const result = byId("np-result");
    const select = byId("np-models");
    const model = byId("np-model");
    byId("np-list-models").addEventListener("click", () => {
      listModels(
        { base_url: byId("np-base-url").value, api_key: byId("np-api-key").value },
        byId("np-models-status"),
        (models) => {
          select.replaceChildren();
          if (!models.length) { select.hidden = true; return; }
          const none = el("option", null, "Choose a model…");
          none.value = "";
          select.append(none);
          for (const id of models) {
            const option = el("option", null, id);
            option.value = id;
            select.append(option);
          }
          select.value = models.includes(model.value) ? model.value : "";
          select.hidden = false;
        },
        form,
      ).catch((e) => say(byId("np-models-status"), String(e.message || e), true));
    });
    select.addEventListener("change", () => { if (select.value) model.value = select.value; });
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const button = byId("np-create");
      button.disabled = true;
      clearErrors(form);
      say(result, byId("np-start").checked ? "creating and starting…" : "creating…");
      try {
        const { status, body } = await api("/api/profiles", {
          method: "POST",
          json: {
            name: byId("np-name").value,
            base_url: byId("np-base-url").value,
            model: model.value,
            api_key: byId("np-api-key").value,
            persona: byId("np-persona").value,
            start: byId("np-start").checked,
          },
        });
        if (status !== 201) {
          say(result, showErrors(form, body, status), true);
          return;
        }
        byId("np-api-key").value = ""; // the page keeps no copy of the key
        const name = body.profile;
        result.replaceChildren(`Profile ${name}: ${body.detail}. `);
        result.className = "action-result";
        const open = el("a", null, "Open its page");
        open.id = "np-open";
        open.href = body.url;
        const chat = el("a", null, "Chat with it");
        chat.id = "np-chat";
        chat.href = `/playground?profile=${encodeURIComponent(name)}`;
        result.append(open, " · ", chat);
        addRow(name, body.started ? "running" : "created");
      } catch (e) {
        say(result, String(e.message || e), true);
      } finally {
        button.disabled = false;
      }
    });
  }

  // -- profile page: settings and persona ------------------------------------------

  function fieldFor(spec) {
    const wrap = el("div", "pa-field");
    const id = "pa-f-" + spec.key.replace(/[^a-z0-9]/gi, "-");
    const label = el("label");
    label.htmlFor = id;
    label.append(el("code", null, spec.key));
    if (spec.restart) {
      const badge = el("span", "pa-badge", "restart");
      badge.title = "a running gateway applies this only when restarted";
      label.append(badge);
    }
    let input;
    if (spec.choices) {
      input = el("select");
      const choices = spec.value && !spec.choices.includes(spec.value)
        ? [spec.value, ...spec.choices] : spec.choices;
      if (!spec.value) {
        const unset = el("option", null, `(default: ${spec.default})`);
        unset.value = "";
        input.append(unset);
      }
      for (const choice of choices) {
        const option = el("option", null, choice);
        option.value = choice;
        input.append(option);
      }
      input.value = spec.value;
    } else {
      input = el("input");
      input.value = spec.value;
      input.spellcheck = false;
      if (spec.default !== null && spec.default !== undefined) input.placeholder = `default: ${spec.default}`;
      if (spec.key === "model.name") input.setAttribute("list", "pa-model-list");
    }
    input.id = id;
    input.setAttribute("data-key", spec.key);
    const error = el("span", "pa-error");
    error.setAttribute("data-error-for", spec.key);
    wrap.append(label, input, el("span", "pa-help", `${spec.help}: ${spec.expects}`), error);
    return wrap;
  }

  function showDiff(pre, text) {
    pre.replaceChildren();
    pre.hidden = !text;
    for (const line of (text || "").split("\n")) {
      let kind = null;
      if (line.startsWith("@@")) kind = "pa-hunk";
      else if (line.startsWith("+") && !line.startsWith("+++")) kind = "pa-add";
      else if (line.startsWith("-") && !line.startsWith("---")) kind = "pa-del";
      pre.append(el("span", kind, line + "\n"));
    }
  }

  function setupSettings(card) {
    const name = card.getAttribute("data-profile");
    const base = `/api/profiles/${encodeURIComponent(name)}/settings`;
    const form = byId("pa-form");
    const fields = byId("pa-fields");
    const persona = byId("pa-persona");
    const result = byId("pa-result");
    const save = byId("pa-save");
    let versions = null;

    function edited() {
      const values = {};
      fields.querySelectorAll("[data-key]").forEach((input) => {
        values[input.getAttribute("data-key")] = input.value;
      });
      return { ...versions, values: values, persona: persona.value };
    }

    function hideDiffs() {
      save.disabled = true;
      byId("pa-diffs").hidden = true;
    }

    async function load(message) {
      const { status, body } = await api(base);
      if (status !== 200) {
        say(result, (body && body.detail) || `settings unavailable (${status})`, true);
        return;
      }
      versions = { config_version: body.config_version, persona_version: body.persona_version };
      fields.replaceChildren(...body.fields.map(fieldFor));
      persona.value = body.persona;
      clearErrors(form);
      hideDiffs();
      say(result, message || "");
    }

    // A change after the review makes the diff out of date: review again to save.
    form.addEventListener("input", hideDiffs);
    form.addEventListener("change", hideDiffs);

    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      if (!versions) return;
      say(result, "checking…");
      const { status, body } = await api(base + "/review", { method: "POST", json: edited() });
      if (status !== 200) {
        hideDiffs();
        say(result, showErrors(form, body, status), true);
        return;
      }
      clearErrors(form);
      showDiff(byId("pa-config-diff"), body.config_diff);
      showDiff(byId("pa-persona-diff"), body.persona_diff);
      const changed = body.changed.length > 0;
      byId("pa-diffs").hidden = !changed;
      save.disabled = !changed;
      let text = changed ? `Changes: ${body.changed.join(", ")}. Save writes exactly this.` : "No changes.";
      if (body.restart.length) text += ` ${body.restart.join(", ")} needs a restart of the gateway.`;
      say(result, text);
    });

    save.addEventListener("click", async () => {
      save.disabled = true;
      say(result, "saving…");
      const { status, body } = await api(base, { method: "PUT", json: edited() });
      if (status !== 200) {
        say(result, showErrors(form, body, status), true);
        return;
      }
      let text = "Saved.";
      if (body.reload) text = body.reload.applied ? "Saved: applied without restart." : `Saved; ${body.reload.detail}.`;
      if (body.restart.length) text += ` ${body.restart.join(", ")} takes effect after a restart (Restart above).`;
      await load(text);
    });

    byId("pa-reload").addEventListener("click", () => load("Reloaded from disk.").catch(() => {}));

    byId("pa-list-models").addEventListener("click", () => {
      const url = fields.querySelector('[data-key="model.base_url"]');
      const list = byId("pa-model-list");
      listModels({ base_url: url ? url.value : "", profile: name }, result, (models) => {
        list.replaceChildren(...models.map((id) => { const o = el("option"); o.value = id; return o; }));
      }, form).catch((e) => say(result, String(e.message || e), true));
    });

    load().catch((e) => say(result, String(e.message || e), true));
  }

  // -- profile page: key, snippets, delete -----------------------------------------

  function setupRotate(card) {
    const name = card.getAttribute("data-profile");
    const result = byId("pa-rotate-result");
    byId("pa-rotate").addEventListener("click", async () => {
      const question = `Rotate the API key of profile ${name}? Clients using the current key are refused from now on.`;
      if (!window.confirm(question)) return;
      byId("pa-new-key").hidden = true;
      byId("pa-key-value").textContent = "";
      say(result, "rotating…");
      const { status, body } = await api(`/api/profiles/${encodeURIComponent(name)}/key/rotate`, { method: "POST" });
      if (status !== 200) {
        say(result, (body && body.detail) || `rotation failed (${status})`, true);
        return;
      }
      byId("pa-key-value").textContent = body.api_key;
      byId("pa-new-key").hidden = false;
      say(result, body.reload.applied
        ? "Rotated: the gateway refuses the old key from now on."
        : `Rotated; ${body.reload.detail}.`, !body.reload.applied);
    });
  }

  async function loadSnippets(card) {
    const name = card.getAttribute("data-profile");
    const box = byId("pa-snippets");
    const { status, body } = await api(`/api/profiles/${encodeURIComponent(name)}/client`);
    if (status !== 200) {
      box.replaceChildren(el("p", "muted", `snippets unavailable (${status})`));
      return;
    }
    box.replaceChildren(...body.snippets.map((snippet) => {
      const section = el("section", "pa-snippet");
      const head = el("h3", null, snippet.title);
      const button = el("button", "btn", "Copy");
      button.type = "button";
      button.setAttribute("data-copy", "snippet-" + snippet.id);
      head.append(button);
      const pre = el("pre", null, snippet.text);
      pre.id = "snippet-" + snippet.id;
      section.append(head, el("p", "muted small", snippet.note), pre);
      return section;
    }));
  }

  function setupDelete(card) {
    const name = card.getAttribute("data-profile");
    const form = byId("pa-delete-form");
    const input = byId("pa-confirm");
    const button = byId("pa-delete");
    const result = byId("pa-delete-result");
    input.addEventListener("input", () => (button.disabled = input.value !== name));
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      button.disabled = true;
      say(result, "deleting…");
      const { status, body } = await api(`/api/profiles/${encodeURIComponent(name)}`, {
        method: "DELETE", json: { confirm: input.value },
      });
      if (status !== 200) {
        say(result, showErrors(form, body, status), true);
        button.disabled = input.value !== name;
        return;
      }
      say(result, body.detail);
      location.href = "/";
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    const create = byId("np-form");
    if (create) setupCreate(create);
    const settings = byId("settings");
    if (settings) setupSettings(settings);
    const key = byId("api-key");
    if (key) setupRotate(key);
    const client = byId("client");
    if (client) loadSnippets(client).catch(() => {});
    const doomed = byId("delete-profile");
    if (doomed) setupDelete(doomed);
  });
})();
